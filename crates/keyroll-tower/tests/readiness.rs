//! Readiness: `/readyz` served by axum on loopback follows a key cache from loading through
//! ready, degraded and unavailable back to ready (status codes and JSON fields); the whole is
//! the worst of several caches; token caches' states; the validator's issuers by name;
//! `wait_ready`; methods and paths.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyroll_core::jwt::{Issuer, Validation};
use keyroll_core::token::{Token, TokenCache, TokenCacheConfig, TokenError, TokenSource, from_fn};
use keyroll_core::{
    Algorithm, BoxFuture, CacheState, Clock, KeyCache, KeyCacheConfig, KeySource, KeyVersion,
    LoadedKeys, LocalKey, ManualClock, Signer, SourceError, TokioClock,
};
use keyroll_tower::readiness::{Readiness, ReadinessSource, SourceStatus};
use keyroll_tower::validate::ValidateLayer;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt as _;

const MINUTE: Duration = Duration::from_secs(60);

/// A vault of one key: it can be held (loads wait until it opens), taken down (loads fail
/// with 503), and it tells of each load as it starts.
#[derive(Debug)]
struct Vault {
    version: KeyVersion,
    key: Arc<LocalKey>,
    down: AtomicBool,
    open: watch::Receiver<bool>,
    loads: AtomicUsize,
    started: Mutex<Option<mpsc::UnboundedSender<usize>>>,
}

struct VaultControl {
    vault: Arc<Vault>,
    open: watch::Sender<bool>,
    started: mpsc::UnboundedReceiver<usize>,
}

impl VaultControl {
    fn new(clock: &dyn Clock, open: bool) -> VaultControl {
        let key = Arc::new(LocalKey::generate(Algorithm::ES256).unwrap());
        let (open_tx, open_rx) = watch::channel(open);
        let (started_tx, started_rx) = mpsc::unbounded_channel();
        let vault = Arc::new(Vault {
            version: KeyVersion::new("k1", key.public_jwk(), clock.now()).unwrap(),
            key,
            down: AtomicBool::new(false),
            open: open_rx,
            loads: AtomicUsize::new(0),
            started: Mutex::new(Some(started_tx)),
        });
        VaultControl {
            vault,
            open: open_tx,
            started: started_rx,
        }
    }

    fn down(&self, down: bool) {
        self.vault.down.store(down, Ordering::SeqCst);
    }

    fn loads(&self) -> usize {
        self.vault.loads.load(Ordering::SeqCst)
    }
}

impl KeySource for Vault {
    fn name(&self) -> String {
        "test vault".into()
    }

    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        Box::pin(async move {
            let n = self.loads.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(started) = self.started.lock().unwrap().as_ref() {
                let _ = started.send(n);
            }
            let mut open = self.open.clone();
            let _ = open.wait_for(|open| *open).await;
            if self.down.load(Ordering::SeqCst) {
                return Err(SourceError::new(self.name(), "load keys", "HTTP 503").with_status(503));
            }
            Ok(LoadedKeys::new(vec![self.version.clone()]))
        })
    }

    fn signer<'a>(
        &'a self,
        _version: &'a KeyVersion,
    ) -> BoxFuture<'a, Result<Arc<dyn Signer>, SourceError>> {
        Box::pin(async move { Ok(Arc::clone(&self.key) as Arc<dyn Signer>) })
    }
}

fn config() -> KeyCacheConfig {
    KeyCacheConfig::default()
        .refresh_interval(5 * MINUTE)
        .max_stale(60 * MINUTE)
}

fn cache(vault: &Arc<Vault>, clock: Arc<dyn Clock>) -> KeyCache {
    KeyCache::builder_arc(Arc::clone(vault) as Arc<dyn KeySource>)
        .config(config())
        .clock(clock)
        .build()
}

/// Serves `readiness` as an axum route on loopback; its `/readyz` URL.
async fn serve(readiness: &Readiness) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().route_service("/readyz", readiness.service());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/readyz")
}

struct Probe {
    client: Client<HttpConnector, Empty<Bytes>>,
    url: String,
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

impl Probe {
    fn new(url: String) -> Probe {
        Probe {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url,
        }
    }

    async fn get(&self) -> Answer {
        self.send(Method::GET).await
    }

    async fn send(&self, method: Method) -> Answer {
        let request = Request::builder()
            .method(method)
            .uri(&self.url)
            .body(Empty::new())
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let body = if body.is_empty() {
            Value::Null
        } else if parts.headers[header::CONTENT_TYPE] == "application/json" {
            serde_json::from_slice(&body).unwrap()
        } else {
            Value::String(String::from_utf8(body.to_vec()).unwrap())
        };
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_over_http_goes_loading_ready_degraded_unavailable_and_ready_again() {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let mut control = VaultControl::new(&clock, false);
    let keys = cache(&control.vault, Arc::new(clock.clone()));
    let readiness = Readiness::builder().key_cache("orders keys", &keys).build();
    let probe = Probe::new(serve(&readiness).await);

    // Loading: nothing loaded yet. The probe itself starts the first load (no request has
    // used the cache), which the vault holds.
    let answer = probe.get().await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(answer.body["state"], "loading");
    let source = &answer.body["sources"][0];
    assert_eq!(source["name"], "orders keys");
    assert_eq!(source["kind"], "keys");
    assert_eq!(source["state"], "loading");
    assert_eq!(source["versions"], 0);
    assert_eq!(source["age_seconds"], Value::Null);
    assert_eq!(source["last_error"], Value::Null);
    assert_eq!(control.started.recv().await, Some(1));

    // Ready once the vault answers.
    control.open.send(true).unwrap();
    keys.ready().await.unwrap();
    let answer = probe.get().await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["state"], "ready");
    let source = &answer.body["sources"][0];
    assert_eq!(source["state"], "ready");
    assert_eq!(source["versions"], 1);
    assert_eq!(source["age_seconds"], 0);
    assert_eq!(source["unavailable_in_seconds"], 3600);
    assert_eq!(source["stale_for_seconds"], Value::Null);
    assert_eq!(source["consecutive_failures"], 0);
    assert_eq!(control.loads(), 1);

    // Degraded: the vault fails a refresh; the last good set still serves (200).
    control.down(true);
    clock.advance(MINUTE);
    assert!(keys.refresh_now().await.is_err());
    clock.advance(Duration::from_secs(30));
    let answer = probe.get().await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["state"], "degraded");
    let source = &answer.body["sources"][0];
    assert_eq!(source["state"], "degraded");
    assert_eq!(source["versions"], 1);
    assert_eq!(source["age_seconds"], 90);
    assert_eq!(source["stale_for_seconds"], 30);
    assert_eq!(source["unavailable_in_seconds"], 3600 - 90);
    assert_eq!(source["consecutive_failures"], 1);
    assert_eq!(
        source["last_error"],
        "test vault: load keys failed: HTTP 503"
    );
    assert_eq!(
        control.loads(),
        2,
        "a degraded cache's probe costs the vault nothing"
    );

    // Unavailable: past max_stale (503), the last set still reported.
    clock.advance(60 * MINUTE);
    let answer = probe.get().await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["state"], "unavailable");
    let source = &answer.body["sources"][0];
    assert_eq!(source["state"], "unavailable");
    assert_eq!(source["versions"], 1);
    assert_eq!(source["age_seconds"], 3690);
    assert_eq!(source["unavailable_in_seconds"], Value::Null);
    assert_eq!(source["stale_for_seconds"], 3630);
    // (Load 2 was the refresh that failed.) That probe found the retry point passed and
    // tried the vault again.
    assert_eq!(control.started.recv().await, Some(2));
    assert_eq!(control.started.recv().await, Some(3));
    // Its failure is recorded before the clock moves on (joined, or in its backoff).
    assert!(keys.keys().await.is_err());

    // The vault comes back: the next probe past the backoff starts the load that recovers
    // it, with no request reaching the service.
    control.down(false);
    clock.advance(MINUTE);
    let _ = probe.get().await;
    assert_eq!(control.started.recv().await, Some(4));
    keys.ready().await.unwrap();
    let answer = probe.get().await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["state"], "ready");
    let source = &answer.body["sources"][0];
    assert_eq!(source["age_seconds"], 0);
    assert_eq!(source["stale_for_seconds"], Value::Null);
    assert_eq!(source["consecutive_failures"], 0);
    assert_eq!(source["last_error"], Value::Null);
    assert_eq!(control.loads(), 4);

    // HEAD: the same status and headers, no body; other methods: 405.
    let answer = probe.send(Method::HEAD).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, Value::Null);
    assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
    let answer = probe.send(Method::POST).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers[header::ALLOW], "GET, HEAD");
    assert_eq!(answer.body, "method not allowed\n");
}

#[tokio::test]
async fn other_paths_are_not_found_and_the_path_is_configurable() {
    let readiness = Readiness::builder().build();
    let get = |path: &str| Request::get(path).body(()).unwrap();
    let response = readiness.service().oneshot(get("/healthz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let moved = readiness.service().path("/health/ready");
    assert_eq!(
        moved
            .clone()
            .oneshot(get("/readyz"))
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let response = moved.oneshot(get("/health/ready")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body, serde_json::json!({"state": "ready", "sources": []}));
}

/// A token cache over a source that fails while `failing` is set; tokens live an hour.
fn token_cache(clock: &TokioClock, failing: &Arc<AtomicBool>) -> TokenCache {
    let (failing, clock_for_source) = (Arc::clone(failing), clock.clone());
    let source = from_fn(move |audience: String| {
        let failing = failing.load(Ordering::SeqCst);
        let expires = clock_for_source.now() + 60 * MINUTE;
        async move {
            if failing {
                Err(TokenError::new("the token endpoint answered 503"))
            } else {
                Ok(Token::new(format!("t-{audience}"), expires))
            }
        }
    });
    TokenCache::builder(Arc::new(source) as Arc<dyn TokenSource>)
        .config(TokenCacheConfig::default().refresh_jitter(0.0))
        .clock(Arc::new(clock.clone()))
        .build()
}

fn state_of(readiness: &Readiness, name: &str) -> CacheState {
    readiness.check().source(name).unwrap().status.state()
}

#[tokio::test(start_paused = true)]
async fn the_whole_is_the_worst_of_its_sources() {
    let clock = TokioClock::default();
    let ready = VaultControl::new(&clock, true);
    let degraded = VaultControl::new(&clock, true);
    let held = VaultControl::new(&clock, false);
    let ready_keys = cache(&ready.vault, Arc::new(clock.clone()));
    let degraded_keys = cache(&degraded.vault, Arc::new(clock.clone()));
    let held_keys = cache(&held.vault, Arc::new(clock.clone()));
    ready_keys.ready().await.unwrap();
    degraded_keys.ready().await.unwrap();
    degraded.down(true);
    assert!(degraded_keys.refresh_now().await.is_err());
    let failing = Arc::new(AtomicBool::new(true));
    let tokens = token_cache(&clock, &failing);
    assert!(tokens.get("api://billing").await.is_err());

    let both = Readiness::builder()
        .key_cache("ready", &ready_keys)
        .key_cache("degraded", &degraded_keys)
        .build();
    let report = both.check();
    assert_eq!(report.state, CacheState::Degraded);
    assert!(report.is_ready(), "degraded still serves");
    assert_eq!(state_of(&both, "ready"), CacheState::Ready);
    let Some(SourceStatus::Keys(status)) = report.source("degraded").map(|s| &s.status) else {
        panic!("{report:?}");
    };
    assert_eq!(status.consecutive_failures, 1);

    // A cache still loading makes the whole loading (503); an unavailable one is worse.
    let with_held = Readiness::builder()
        .key_cache("ready", &ready_keys)
        .key_cache("degraded", &degraded_keys)
        .key_cache("held", &held_keys)
        .build();
    assert_eq!(with_held.check().state, CacheState::Loading);
    assert!(!with_held.is_ready());
    let everything = Readiness::builder()
        .key_cache("held", &held_keys)
        .token_cache("tokens", &tokens)
        .key_cache("ready", &ready_keys)
        .build();
    let report = everything.check();
    assert_eq!(report.state, CacheState::Unavailable);
    let names: Vec<&str> = report.sources.iter().map(|s| &*s.name).collect();
    assert_eq!(names, ["held", "tokens", "ready"], "in the order added");
    let response = everything
        .service()
        .oneshot(Request::get("/readyz").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["state"], "unavailable");
    assert_eq!(body["sources"][1]["kind"], "tokens");
    assert_eq!(body["sources"][1]["state"], "unavailable");
    assert_eq!(body["sources"][1]["unavailable_audiences"], 1);
    assert_eq!(
        body["sources"][1]["last_error"],
        "`api://billing`: the token endpoint answered 503"
    );

    // Advisory sources are reported, but make the whole degraded at worst.
    let advisory = Readiness::builder()
        .key_cache("ready", &ready_keys)
        .source("tokens", ReadinessSource::token_cache(&tokens).advisory())
        .source("held", ReadinessSource::key_cache(&held_keys).advisory())
        .build();
    let report = advisory.check();
    assert_eq!(report.state, CacheState::Degraded);
    assert!(!report.source("tokens").unwrap().required);
    assert_eq!(
        report.source("tokens").unwrap().status.state(),
        CacheState::Unavailable
    );
    let response = advisory
        .service()
        .oneshot(Request::get("/readyz").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_token_cache_is_ready_degraded_unavailable_and_recovers_through_probes() {
    let clock = TokioClock::default();
    let failing = Arc::new(AtomicBool::new(false));
    let tokens = token_cache(&clock, &failing);
    let readiness = Readiness::builder()
        .token_cache("outbound", &tokens)
        .build();
    // No audience asked for yet: ready.
    assert_eq!(readiness.check().state, CacheState::Ready);
    tokens.get("api://billing").await.unwrap();
    assert_eq!(readiness.check().state, CacheState::Ready);

    // The refresh ahead (at 80 % of the hour) fails: degraded while the token lives.
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(48 * MINUTE).await;
    tokens.get("api://billing").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = readiness.check();
    assert_eq!(report.state, CacheState::Degraded);
    assert!(report.is_ready());
    let Some(SourceStatus::Tokens(status)) = report.source("outbound").map(|s| &s.status) else {
        panic!("{report:?}");
    };
    assert_eq!((status.audiences, status.degraded_audiences), (1, 1));

    // Past the token's end: unavailable (503).
    tokio::time::sleep(12 * MINUTE).await;
    let report = readiness.check();
    assert_eq!(report.state, CacheState::Unavailable);
    assert!(!report.is_ready());

    // The source recovers: probes fetch the token again, with no caller asking for it.
    failing.store(false, Ordering::SeqCst);
    let ready = tokio::time::timeout(5 * MINUTE, readiness.wait_ready())
        .await
        .unwrap();
    assert_eq!(ready.state, CacheState::Ready);
    assert!(tokens.cached("api://billing").is_some());
}

#[tokio::test(start_paused = true)]
async fn wait_ready_waits_for_a_failing_first_load_at_the_backoff_rate() {
    let clock = TokioClock::default();
    let control = VaultControl::new(&clock, true);
    control.down(true);
    let keys = cache(&control.vault, Arc::new(clock.clone()));
    let readiness = Readiness::builder().key_cache("keys", &keys).build();
    let waiting = tokio::spawn({
        let readiness = readiness.clone();
        async move { readiness.wait_ready().await }
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!waiting.is_finished());
    // Backoff from 1 s, doubling (shortened by up to a fifth): 4 or 5 loads in 10 s.
    assert!(
        (4..=5).contains(&control.loads()),
        "{} loads",
        control.loads()
    );
    assert_eq!(readiness.check().state, CacheState::Unavailable);
    control.down(false);
    let report = tokio::time::timeout(MINUTE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.state, CacheState::Ready);
    assert!(keys.is_ready());
}

#[tokio::test]
async fn the_validators_issuers_are_watched_under_their_names() {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let orders = VaultControl::new(&clock, true);
    let billing = VaultControl::new(&clock, true);
    let layer = ValidateLayer::builder()
        .issuer(Issuer::new(
            cache(&orders.vault, Arc::new(clock.clone())),
            Validation::new("https://orders.internal", ["api://me"]),
        ))
        .issuer(Issuer::new(
            cache(&billing.vault, Arc::new(clock.clone())),
            Validation::new("https://billing.internal", ["api://me"]),
        ))
        .build();
    let readiness = Readiness::builder().validator(&layer).build();
    let report = readiness.wait_ready().await;
    let mut names: Vec<&str> = report.sources.iter().map(|s| &*s.name).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["https://billing.internal", "https://orders.internal"]
    );
    assert_eq!(report.state, CacheState::Ready);
    assert_eq!((orders.loads(), billing.loads()), (1, 1));
}
