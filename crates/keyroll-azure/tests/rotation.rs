//! End to end through keyroll-tower's issuer and validator layers, with the keys in the
//! emulated vault: rotations, the sign budget, throttling and an outage. Time is a
//! `ManualClock` moved by the test (and versions are created at chosen times); the scheduled
//! refreshes a key cache would run are `refresh_now` calls at the matching clock times.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::{Request, Response, StatusCode};
use keyroll_azure::KeyVaultCertificates;
use keyroll_core::jwt::{Issuer, JwtHeader, TokenTemplate, Validation, encode};
use keyroll_core::{KeyCache, KeyCacheConfig, KeySource, ManualClock, RotationPolicy};
use keyroll_emulator::{EmulatorHandle, Fault, FaultKind};
use keyroll_tower::issue::{AudiencePolicy, IssueLayer, SelfSigned, TokenCache};
use keyroll_tower::validate::ValidateBody;
use keyroll_tower::validate::{ValidateLayer, VerifiedClaims};
use tower::util::BoxCloneService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

type Client = BoxCloneService<Request<()>, Response<String>, BoxError>;
type InProcess = BoxCloneService<Request<()>, Response<ValidateBody<String>>, BoxError>;

const ISS: &str = "https://orders.internal";
const PROPAGATION: Duration = Duration::from_secs(3600);

fn cache(source: KeyVaultCertificates, clock: &Arc<ManualClock>) -> KeyCache {
    let policy = RotationPolicy::default().propagation(PROPAGATION);
    KeyCache::builder(source)
        .config(KeyCacheConfig::default().policy(policy))
        .clock(clock.clone())
        .background_refresh(false)
        .build()
}

/// The issuing side: SelfSigned tokens from `keys`, cached per audience on `clock`.
fn issue_layer(
    keys: &KeyCache,
    clock: &Arc<ManualClock>,
    lifetime: Duration,
) -> IssueLayer<SelfSigned> {
    let template = TokenTemplate::new(ISS).lifetime(lifetime).include_x5t(true);
    let cache = TokenCache::builder(SelfSigned::new(keys.clone(), template))
        .clock(clock.clone())
        .build();
    IssueLayer::with_cache(cache)
}

fn validate_layer(keys: &KeyCache, audiences: &[&str]) -> ValidateLayer {
    ValidateLayer::builder()
        .issuer(Issuer::new(
            keys.clone(),
            Validation::new(ISS, audiences.iter().copied()),
        ))
        .realm("tests")
        .build()
}

async fn setup(emu: &EmulatorHandle, vault: &str) -> (Arc<ManualClock>, KeyCache, KeyCache, u64) {
    let t0 = common::t0(emu);
    common::new_certificate_version(emu, vault, "sts", t0);
    let clock = common::manual_clock(t0 + 2 * 3600);
    // Two services: one issues, one validates; each has its own source and cache.
    let issuer = cache(common::certificates(emu, vault, "sts"), &clock);
    let validator = cache(common::certificates(emu, vault, "sts"), &clock);
    (clock, issuer, validator, t0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rotations_on_loopback_without_a_failed_call() {
    let emu = common::start().await;
    let (clock, issuer_keys, validator_keys, _) = setup(&emu, "rot").await;
    let audience = "api://billing";

    // The validating service, on loopback.
    let app = Router::new()
        .route(
            "/",
            get(|claims: axum::Extension<VerifiedClaims>| async move { claims.kid().to_owned() }),
        )
        .layer(validate_layer(&validator_keys, &[audience]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The calling service: IssueLayer over a reqwest transport.
    let http = reqwest::Client::new();
    let client: Client = ServiceBuilder::new()
        .layer(
            issue_layer(&issuer_keys, &clock, Duration::from_secs(600))
                .audience(AudiencePolicy::fixed(audience)),
        )
        .service(tower::service_fn(move |request: Request<()>| {
            let http = http.clone();
            async move {
                let answer = http
                    .get(request.uri().to_string())
                    .headers(request.headers().clone())
                    .send()
                    .await?;
                let status = answer.status();
                let body = answer.text().await?;
                Ok::<_, reqwest::Error>(Response::builder().status(status).body(body).unwrap())
            }
        }))
        .boxed_clone();
    let (mut calls, mut failed) = (0u32, 0u32);
    let mut call = async |client: &Client| -> String {
        let response = client
            .clone()
            .oneshot(Request::get(url.as_str()).body(()).unwrap())
            .await
            .unwrap();
        calls += 1;
        if response.status() != StatusCode::OK {
            failed += 1;
        }
        response.into_body()
    };

    let first = issuer_keys.active_signer().await.unwrap().version;
    assert_eq!(call(&client).await, first.kid);
    let source = common::certificates(&emu, "rot", "sts");
    let mut current = first.kid.clone();
    for rotation in 1..=5 {
        // A new version appears in the vault…
        let now = common::unix(keyroll_core::Clock::now(clock.as_ref()));
        let version = common::new_certificate_version(&emu, "rot", "sts", now);
        // …the issuer's scheduled refresh sees it five minutes later…
        clock.advance(Duration::from_secs(300));
        issuer_keys.refresh_now().await.unwrap();
        let new = issuer_keys
            .snapshot()
            .unwrap()
            .versions()
            .iter()
            .find(|v| v.version == version)
            .cloned()
            .unwrap();
        // …the validator accepts it at once (a token another replica signs with it now:
        // unknown kid, one coalesced refresh)…
        let signer = source.signer(&new).await.unwrap();
        let claims = serde_json::json!({
            "iss": ISS, "sub": ISS, "aud": audience,
            "iat": now + 300, "nbf": now + 300, "exp": now + 900,
        });
        let early = encode(
            signer.as_ref(),
            &JwtHeader::for_version(&new, true),
            &claims,
        )
        .await
        .unwrap();
        let response = reqwest::Client::new()
            .get(url.as_str())
            .bearer_auth(&early)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "rotation {rotation}: new version accepted at once"
        );
        // …but does not sign before the propagation window has passed.
        for _ in 0..5 {
            assert_eq!(
                call(&client).await,
                current,
                "rotation {rotation}: old version still signs"
            );
        }
        assert_eq!(
            issuer_keys.active_signer().await.unwrap().version.kid,
            current
        );
        clock.advance(PROPAGATION);
        for _ in 0..5 {
            assert_eq!(
                call(&client).await,
                new.kid,
                "rotation {rotation}: new version signs"
            );
        }
        current = new.kid.clone();
        clock.advance(Duration::from_secs(600));
    }
    assert_eq!(
        (calls, failed),
        (51, 0),
        "zero failed calls across 5 rotations"
    );
    assert_eq!(
        issuer_keys.validation_set().await.unwrap().len(),
        6,
        "every enabled version still validates"
    );
    server.abort();
    emu.shutdown().await;
}

/// In-process: IssueLayer → ValidateLayer → handler (no network), for call-heavy tests.
fn in_process(
    issuer: &KeyCache,
    validator: &KeyCache,
    clock: &Arc<ManualClock>,
    audiences: &[&str],
) -> InProcess {
    let validated = ServiceBuilder::new()
        .layer(validate_layer(validator, audiences))
        .service(tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::from("ok")))
        }));
    ServiceBuilder::new()
        .layer(
            issue_layer(issuer, clock, Duration::from_secs(3600)).audience(
                AUDIENCES
                    .iter()
                    .fold(AudiencePolicy::origin(), |policy, origin| {
                        policy.allow(*origin)
                    }),
            ),
        )
        .service(validated)
        .boxed_clone()
}

const AUDIENCES: [&str; 3] = [
    "https://a.internal",
    "https://b.internal",
    "https://c.internal",
];

/// Sends `n` calls spread over the three audiences, 100 at a time; returns the failures.
async fn burst(service: &InProcess, n: usize) -> usize {
    let failed = Arc::new(AtomicU64::new(0));
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let calls = chunk.iter().map(|i| {
            let service = service.clone();
            let failed = failed.clone();
            let uri = format!("{}/call/{i}", AUDIENCES[i % 3]);
            async move {
                match service.oneshot(Request::get(uri).body(()).unwrap()).await {
                    Ok(response) if response.status() == StatusCode::OK => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        futures_util::future::join_all(calls).await;
    }
    failed.load(Ordering::Relaxed) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_over_three_audiences_cost_three_signs() {
    let emu = common::start().await;
    let (clock, issuer, validator, _) = setup(&emu, "budget").await;
    let service = in_process(&issuer, &validator, &clock, &AUDIENCES);
    issuer.ready().await.unwrap();
    let before = emu.admin().counter("keys.sign");
    let failed = burst(&service, 10_000).await;
    assert_eq!(failed, 0);
    assert_eq!(
        emu.admin().counter("keys.sign") - before,
        3,
        "one vault sign per audience"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_a_two_minute_outage_fail_no_request() {
    let emu = common::start().await;
    let admin = emu.admin();
    let (clock, issuer, validator, _) = setup(&emu, "storm").await;
    let issuer_source = common::certificates(&emu, "storm", "sts");
    let service = in_process(&issuer, &validator, &clock, &AUDIENCES);
    assert_eq!(
        burst(&service, 300).await,
        0,
        "warm: keys loaded, one token per audience"
    );
    let signs = admin.counter("keys.sign");
    // An unrelated source on the same vault, to read the counters of a refresh.
    issuer_source.versions().await.unwrap();

    // A 429 burst without Retry-After on every vault operation: refreshes fail (each one
    // vault request, no retry underneath), the last good keys and tokens serve.
    let lists = admin.counter("certificates.versions");
    let throttle = admin
        .inject_fault(Fault::new("*", FaultKind::Throttle { retry_after: None }).vault("storm"));
    for _ in 0..3 {
        clock.advance(Duration::from_secs(60));
        assert!(issuer.refresh_now().await.is_err());
        assert!(validator.refresh_now().await.is_err());
        assert!(issuer_source.versions().await.is_err());
        assert_eq!(burst(&service, 300).await, 0);
    }
    let during = admin.counter("certificates.versions") - lists;
    assert_eq!(during, 3 * 3, "3 refreshes × 3 sources × 1 request");
    let m = issuer_source.metrics();
    assert_eq!((m.throttled, m.failures), (3, 3));
    admin.clear_fault(throttle);

    // A two-minute outage (connections cut): the same, and no request fails.
    let outage = admin.inject_fault(Fault::new("*", FaultKind::Outage).vault("storm"));
    for _ in 0..12 {
        clock.advance(Duration::from_secs(10));
        assert!(issuer.refresh_now().await.is_err());
        assert!(validator.refresh_now().await.is_err());
        assert_eq!(burst(&service, 100).await, 0);
    }
    assert!(issuer.metrics().consecutive_failures >= 15);
    admin.clear_fault(outage);
    assert_eq!(
        admin.counter("keys.sign"),
        signs,
        "tokens were served from the cache throughout"
    );

    // The vault is back: refreshes succeed and calls keep working.
    issuer.refresh_now().await.unwrap();
    validator.refresh_now().await.unwrap();
    assert_eq!(issuer.metrics().consecutive_failures, 0);
    assert_eq!(burst(&service, 300).await, 0);
    emu.shutdown().await;
}
