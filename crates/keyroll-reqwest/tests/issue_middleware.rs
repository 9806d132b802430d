//! `IssueMiddleware` on a `ClientWithMiddleware` against a real axum server on loopback guarded
//! by keyroll-tower's `ValidateLayer`, which validates the tokens `SelfSigned` mints over a key
//! cache of a local key ring. Times that matter (the `401` floor) are the token cache's
//! injected clock; nothing sleeps.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::Request as AxumRequest;
use axum::middleware::Next as AxumNext;
use axum::routing::{any, post};
use http::header::AUTHORIZATION;
use http::{Extensions, HeaderValue, StatusCode};
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation};
use keyroll_core::{Algorithm, KeyCache, LocalKeyRing, ManualClock};
use keyroll_reqwest::{
    AudiencePolicy, IssueErrorKind, IssueMiddleware, SelfSigned, Token, TokenCache, TokenError,
    TokenSource, from_fn, issue_error,
};
use keyroll_tower::validate::{ValidateLayer, VerifiedClaims};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use serde_json::{Value, json};

const ISSUER: &str = "https://orders.internal";
const AUDIENCE: &str = "api://billing";

/// What the server saw: every request that reached it (before validation), with its header.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<AtomicUsize>,
    authorizations: Arc<Mutex<Vec<Option<HeaderValue>>>>,
}

impl Seen {
    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn authorizations(&self) -> Vec<Option<HeaderValue>> {
        self.authorizations.lock().unwrap().clone()
    }
}

/// billing: validates every request, echoes `/orders`, refuses everything on `/refuse`.
struct Billing {
    origin: String,
    seen: Seen,
    validate: ValidateLayer,
}

async fn billing(keys: &KeyCache) -> Billing {
    let validate = ValidateLayer::builder()
        .issuer(Issuer::new(
            keys.clone(),
            Validation::new(ISSUER, [AUDIENCE]),
        ))
        .realm("billing")
        .build();
    let seen = Seen::default();
    let counted = seen.clone();
    let app = Router::new()
        .route("/orders", post(echo))
        // A downstream that refuses the (valid) token, as a peer out of step would.
        .route("/refuse", any(|| async { StatusCode::UNAUTHORIZED }))
        .layer(validate.clone())
        .layer(axum::middleware::from_fn(
            move |request: AxumRequest, next: AxumNext| {
                let seen = counted.clone();
                async move {
                    seen.requests.fetch_add(1, Ordering::SeqCst);
                    let authorization = request.headers().get(AUTHORIZATION).cloned();
                    seen.authorizations.lock().unwrap().push(authorization);
                    next.run(request).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Billing {
        origin,
        seen,
        validate,
    }
}

async fn echo(
    method: http::Method,
    claims: axum::Extension<VerifiedClaims>,
    body: axum::Json<Value>,
) -> axum::Json<Value> {
    let claims: Value = claims.deserialize().unwrap();
    axum::Json(json!({
        "method": method.as_str(),
        "sub": claims["sub"],
        "aud": claims["aud"],
        "jti": claims["jti"],
        "body": body.0,
    }))
}

/// orders' keys, and its tokens for billing: a cache on a clock the test moves.
struct Orders {
    keys: KeyCache,
    clock: Arc<ManualClock>,
}

impl Orders {
    fn new() -> Orders {
        let ring = LocalKeyRing::in_memory(Algorithm::ES256).unwrap();
        Orders {
            keys: KeyCache::builder(ring).build(),
            clock: Arc::new(ManualClock::new(SystemTime::now())),
        }
    }

    fn source(&self) -> SelfSigned {
        let template = TokenTemplate::new(ISSUER).lifetime(Duration::from_secs(600));
        SelfSigned::new(self.keys.clone(), template)
    }

    fn cache<T: TokenSource>(&self, source: T) -> TokenCache<T> {
        TokenCache::builder(source)
            .clock(self.clock.clone())
            .build()
    }
}

fn client_with<T: TokenSource>(middleware: IssueMiddleware<T>) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

#[tokio::test]
async fn a_post_with_a_json_body_is_accepted_end_to_end() {
    let orders = Orders::new();
    let billing = billing(&orders.keys).await;
    let issue = IssueMiddleware::with_cache(orders.cache(orders.source()))
        .audience(AudiencePolicy::origin().map(&billing.origin, AUDIENCE));
    let client = client_with(issue.clone());

    let order = json!({"item": "invoice-7", "quantity": 3, "notes": "two words"});
    for _ in 0..2 {
        let response = client
            .post(format!("{}/orders", billing.origin))
            .json(&order)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let echoed: Value = response.json().await.unwrap();
        assert_eq!(echoed["method"], "POST");
        assert_eq!(echoed["body"], order, "the body arrived as sent");
        assert_eq!(echoed["sub"], ISSUER);
        assert_eq!(echoed["aud"], AUDIENCE);
    }
    assert_eq!(billing.seen.count(), 2);
    assert_eq!(billing.validate.metrics().accepted, 2);
    assert_eq!(
        issue.cache().metrics().fetches,
        1,
        "one token for both requests"
    );
}

#[tokio::test]
async fn origins_not_in_the_table_get_no_token_and_are_never_sent() {
    let orders = Orders::new();
    let billing = billing(&orders.keys).await;
    let issue = IssueMiddleware::with_cache(orders.cache(orders.source()))
        .audience(AudiencePolicy::origin().map(&billing.origin, AUDIENCE));
    let client = client_with(issue.clone());

    // The same server under another name is another origin, which nobody listed.
    let port = billing.origin.rsplit(':').next().unwrap();
    let other_names = [
        format!("http://localhost:{port}/orders"),
        format!("https://127.0.0.1:{port}/orders"),
        "http://127.0.0.1:1/orders".to_owned(),
    ];
    for url in &other_names {
        let error = client.post(url).json(&json!({})).send().await.unwrap_err();
        let issue_error = issue_error(&error).expect("an IssueError");
        assert_eq!(issue_error.kind(), IssueErrorKind::NoAudience, "{url}");
    }
    assert_eq!(billing.seen.count(), 0, "no request reached the server");
    assert_eq!(issue.cache().metrics().fetches, 0, "nothing was signed");

    let response = client
        .post(format!("{}/orders", billing.origin))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(billing.seen.count(), 1);

    // The default policy lists nothing: no request gets a token.
    let unconfigured = client_with(IssueMiddleware::with_cache(orders.cache(orders.source())));
    let error = unconfigured
        .post(format!("{}/orders", billing.origin))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        issue_error(&error).unwrap().kind(),
        IssueErrorKind::NoAudience
    );
    assert_eq!(billing.seen.count(), 1);
}

#[tokio::test]
async fn a_401_drops_the_token_at_most_once_per_floor() {
    let orders = Orders::new();
    let billing = billing(&orders.keys).await;
    let issue = IssueMiddleware::with_cache(orders.cache(orders.source()))
        .audience(AudiencePolicy::origin().map(&billing.origin, AUDIENCE));
    let floor = issue.cache().config().min_age_to_invalidate;
    assert_eq!(floor, Duration::from_secs(30));
    let client = client_with(issue.clone());
    let refuse = format!("{}/refuse", billing.origin);
    let call = || async {
        let response = client.get(&refuse).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    };

    // A young token refused: kept (a new one would most likely be refused the same way).
    call().await;
    call().await;
    let metrics = issue.cache().metrics();
    assert_eq!(
        (
            metrics.fetches,
            metrics.invalidations,
            metrics.invalidations_deferred
        ),
        (1, 0, 2)
    );

    // Once it is as old as the floor, the next 401 drops it, and the next request carries a
    // new token, which a 401 cannot drop before it is that old in turn.
    orders.clock.advance(floor);
    call().await;
    assert_eq!(issue.cache().metrics().invalidations, 1);
    call().await;
    call().await;
    let metrics = issue.cache().metrics();
    assert_eq!(
        (
            metrics.fetches,
            metrics.invalidations,
            metrics.invalidations_deferred
        ),
        (2, 1, 4)
    );
    let seen = billing.seen.authorizations();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(Option::is_some));
    assert_eq!(seen[0], seen[1]);
    assert_eq!(
        seen[1], seen[2],
        "the token refused at the floor was the first one"
    );
    assert_ne!(seen[2], seen[3], "a new token after the drop");
    assert_eq!(seen[3], seen[4]);

    // 200s never drop a token, however old.
    orders.clock.advance(floor * 2);
    let response = client
        .post(format!("{}/orders", billing.origin))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(issue.cache().metrics().invalidations, 1);
    assert_eq!(billing.seen.authorizations()[5], seen[4]);
}

#[tokio::test]
async fn a_failing_source_fails_the_request_with_the_typed_error_and_sends_nothing() {
    let orders = Orders::new();
    let billing = billing(&orders.keys).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let failing = from_fn(move |_audience: String| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Err::<Token, _>(
                TokenError::new("vault unreachable").with_retry_after(Duration::from_secs(7)),
            )
        }
    });
    let issue = IssueMiddleware::with_cache(orders.cache(failing))
        .audience(AudiencePolicy::origin().map(&billing.origin, AUDIENCE));
    let client = client_with(issue.clone());

    let error = client
        .post(format!("{}/orders", billing.origin))
        .json(&json!({"item": 1}))
        .send()
        .await
        .unwrap_err();
    let typed = issue_error(&error).expect("an IssueError");
    assert_eq!(typed.kind(), IssueErrorKind::TokenUnavailable);
    assert_eq!(typed.audience(), Some(AUDIENCE));
    assert_eq!(
        typed.token_error().unwrap().to_string(),
        "vault unreachable"
    );
    assert_eq!(
        typed.token_error().unwrap().retry_after(),
        Some(Duration::from_secs(7))
    );
    // When the cache asks again: never sooner than the source said (the clock stands still).
    assert_eq!(typed.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(
        error.to_string(),
        "no token for audience `api://billing`: vault unreachable"
    );
    let source = std::error::Error::source(&error).expect("the source's error below");
    assert_eq!(source.to_string(), "vault unreachable");

    // During the backoff the cache does not call the source again: the request fails at once.
    let again = client
        .post(format!("{}/orders", billing.origin))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        issue_error(&again).unwrap().kind(),
        IssueErrorKind::TokenUnavailable
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(issue.cache().metrics().cooldown_rejections, 1);
    assert_eq!(billing.seen.count(), 0, "nothing was sent without a token");
}

/// Records what each request carries when it leaves the middleware chain.
#[derive(Clone, Default)]
struct Outgoing {
    sensitive: Arc<Mutex<Vec<bool>>>,
    debug: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Middleware for Outgoing {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let header = request.headers().get(AUTHORIZATION).unwrap();
        self.sensitive.lock().unwrap().push(header.is_sensitive());
        self.debug.lock().unwrap().push(format!("{request:?}"));
        next.run(request, extensions).await
    }
}

#[tokio::test]
async fn the_authorization_header_is_sensitive() {
    let orders = Orders::new();
    let billing = billing(&orders.keys).await;
    let issue = IssueMiddleware::with_cache(orders.cache(orders.source()))
        .audience(AudiencePolicy::origin().map(&billing.origin, AUDIENCE));
    let outgoing = Outgoing::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(issue)
        .with(outgoing.clone())
        .build();
    for _ in 0..2 {
        let response = client
            .post(format!("{}/orders", billing.origin))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(*outgoing.sensitive.lock().unwrap(), [true, true]);
    let sent = billing.seen.authorizations()[0].clone().unwrap();
    let token = sent.to_str().unwrap().strip_prefix("Bearer ").unwrap();
    for debug in outgoing.debug.lock().unwrap().iter() {
        assert!(debug.contains("Sensitive"), "{debug}");
        assert!(
            !debug.contains(token),
            "Debug of the request shows no token"
        );
    }
}

#[tokio::test]
async fn concurrent_first_requests_share_one_fetch() {
    const REQUESTS: usize = 16;
    let orders = Orders::new();
    let billing = billing(&orders.keys).await;
    // The source waits until every request is in flight, so that all of them miss the cache.
    let (open, gate) = tokio::sync::watch::channel(false);
    let calls = Arc::new(AtomicUsize::new(0));
    let signing = orders.source();
    let counted = Arc::clone(&calls);
    let gated = from_fn(move |audience: String| {
        counted.fetch_add(1, Ordering::SeqCst);
        let (mut gate, signing) = (gate.clone(), signing.clone());
        async move {
            gate.wait_for(|open| *open).await.unwrap();
            signing.token(&audience).await
        }
    });
    let issue = IssueMiddleware::with_cache(orders.cache(gated))
        .audience(AudiencePolicy::origin().map(&billing.origin, AUDIENCE));
    let entered = Arc::new(AtomicUsize::new(0));
    let counting = Arc::clone(&entered);
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(Entered(counting))
        .with(issue.clone())
        .build();

    let url = format!("{}/orders", billing.origin);
    let requests = (0..REQUESTS).map(|i| {
        let request = client.post(&url).json(&json!({ "n": i }));
        async move { request.send().await.unwrap().status() }
    });
    let opener = async {
        while entered.load(Ordering::SeqCst) < REQUESTS {
            tokio::task::yield_now().await;
        }
        // Every request has reached the token cache and waits for the one fetch.
        open.send(true).unwrap();
    };
    let (statuses, ()) = tokio::join!(futures_util::future::join_all(requests), opener);
    assert!(statuses.iter().all(|status| *status == StatusCode::OK));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one source call");
    assert_eq!(issue.cache().metrics().fetches, 1);
    assert_eq!(billing.seen.count(), REQUESTS);
    let authorizations = billing.seen.authorizations();
    assert!(authorizations.iter().all(|a| *a == authorizations[0]));
}

/// Counts the requests that entered the chain.
struct Entered(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Middleware for Entered {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.0.fetch_add(1, Ordering::SeqCst);
        next.run(request, extensions).await
    }
}
