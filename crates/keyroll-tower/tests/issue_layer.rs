//! IssueLayer over an in-process service, under paused tokio time: single flight,
//! refresh-ahead, outages, 401s, readiness.

#![allow(clippy::unwrap_used)]

mod issue_support;

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt as _;
use http::{HeaderValue, Request, Response, StatusCode, header::AUTHORIZATION};
use issue_support::{Fixture, FixtureConfig, bearer, settle};
use keyroll_core::BoxError;
use keyroll_tower::issue::{
    AudiencePolicy, Issue, IssueError, IssueErrorKind, IssueLayer, SelfSigned, StaticToken,
    TokenCache,
};
use tower::{Layer, Service, ServiceExt, service_fn};

/// The downstream: answers with the Authorization header it got (and counts requests).
#[derive(Clone)]
struct Echo {
    received: Arc<AtomicUsize>,
}

fn echo(received: Arc<AtomicUsize>) -> Echo {
    Echo { received }
}

impl Service<Request<()>> for Echo {
    type Response = Response<Option<HeaderValue>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        self.received.fetch_add(1, Ordering::SeqCst);
        let header = request.headers().get(AUTHORIZATION).cloned();
        assert!(header.as_ref().is_some_and(HeaderValue::is_sensitive));
        std::future::ready(Ok(Response::new(header)))
    }
}

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_concurrent_calls_to_three_audiences_sign_three_times() {
    let fixture = Fixture::new(FixtureConfig::default());
    // Each sign takes a while, so every call arrives while the first signs are in flight.
    fixture.controls.delay(Duration::from_millis(50));
    let received = Arc::new(AtomicUsize::new(0));
    let service = IssueLayer::with_cache(fixture.tokens.clone())
        .audience(AudiencePolicy::any_origin())
        .layer(echo(received.clone()));
    let hosts = [
        "http://a.internal",
        "http://b.internal",
        "http://c.internal",
    ];

    let mut tasks = Vec::new();
    for i in 0..10_000 {
        let host = hosts[i % 3];
        let call = service.clone().oneshot(get(&format!("{host}/call/{i}")));
        tasks.push(tokio::spawn(async move { (host, call.await) }));
    }
    let verifier = fixture.verifier(&hosts);
    let mut tokens: BTreeMap<&str, HashSet<String>> = BTreeMap::new();
    for task in tasks {
        let (host, response) = task.await.unwrap();
        let token = bearer(&response.unwrap().into_body().unwrap());
        tokens.entry(host).or_default().insert(token);
    }
    assert_eq!(fixture.controls.signs(), 3);
    assert_eq!(received.load(Ordering::SeqCst), 10_000);
    // One token per audience, for that audience.
    for (host, tokens) in tokens {
        assert_eq!(tokens.len(), 1);
        let token = tokens.into_iter().next().unwrap();
        let verified = verifier.verify(&token).await.unwrap();
        assert!(
            verified
                .claims()
                .aud
                .as_ref()
                .unwrap()
                .matches_any(&[host.to_owned()])
        );
    }
    assert_eq!(fixture.tokens.metrics().fetches, 3);
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_never_makes_a_caller_wait() {
    let lifetime = Duration::from_secs(100);
    let fixture = Fixture::new(FixtureConfig {
        lifetime,
        ..FixtureConfig::default()
    });
    let received = Arc::new(AtomicUsize::new(0));
    let mut service = IssueLayer::with_cache(fixture.tokens.clone())
        .audience(AudiencePolicy::any_origin())
        .layer(echo(received));
    let hosts = [
        "http://a.internal",
        "http://b.internal",
        "http://c.internal",
    ];
    let verifier = fixture.verifier(&hosts);

    // The first token per audience: the only time callers wait for a sign.
    for host in hosts {
        service
            .ready()
            .await
            .unwrap()
            .call(get(host))
            .await
            .unwrap();
    }
    assert_eq!(fixture.controls.signs(), 3);
    // From now on each sign takes 2 s, so a caller that waited for one would not be ready.
    fixture.controls.delay(Duration::from_secs(2));

    let lifetimes = 10;
    let mut seen: BTreeMap<&str, Vec<(String, u64, u64)>> = BTreeMap::new();
    for _second in 0..lifetimes * lifetime.as_secs() {
        for host in hosts {
            // Ready at the first poll: the call did not wait for anything.
            let response = service
                .ready()
                .now_or_never()
                .unwrap()
                .unwrap()
                .call(get(&format!("{host}/x")))
                .now_or_never()
                .expect("a caller waited for a token")
                .unwrap();
            let token = bearer(&response.into_body().unwrap());
            let history = seen.entry(host).or_default();
            if history.last().is_none_or(|(last, _, _)| *last != token) {
                let claims = verifier.verify(&token).await.unwrap().claims().clone();
                history.push((token, claims.iat.unwrap(), claims.exp.unwrap()));
            }
            // Never an expired token.
            let now = keyroll_core::unix_seconds(fixture.now());
            assert!(now < history.last().unwrap().2);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
    }
    // One background sign per audience per lifetime (refreshed at 80 %), no more.
    let per_audience: Vec<usize> = seen.values().map(Vec::len).collect();
    for history in seen.values() {
        for pair in history.windows(2) {
            let gap = pair[1].1 - pair[0].1;
            assert!((79..=82).contains(&gap), "refreshed after {gap} s");
        }
    }
    let expected = (lifetimes * 100 / 81) as usize;
    assert!(
        per_audience
            .iter()
            .all(|&n| n == per_audience[0] && n >= expected),
        "{per_audience:?}"
    );
    assert_eq!(fixture.controls.signs(), per_audience.iter().sum::<usize>());
}

#[tokio::test(start_paused = true)]
async fn an_outage_is_ridden_out_with_the_cached_token_then_fails_typed_then_recovers() {
    let fixture = Fixture::new(FixtureConfig::default()); // lifetime 100 s, backoff 1…8 s
    let received = Arc::new(AtomicUsize::new(0));
    let mut service = IssueLayer::with_cache(fixture.tokens.clone())
        .audience(AudiencePolicy::any_origin())
        .layer(echo(received.clone()));
    let call =
        |service: &mut Issue<Echo, SelfSigned>| service.call(get("http://billing.internal/x"));

    let first = call(&mut service).await.unwrap().into_body().unwrap();
    let cached = fixture.tokens.cached("http://billing.internal").unwrap();
    let usable_until = cached.usable_until();
    fixture.controls.fail(true);

    // The vault fails from before the refresh point until after expiry: every call before
    // the token becomes unusable still goes out, with the cached token.
    while fixture.now() < usable_until {
        let response = call(&mut service).await.unwrap();
        assert_eq!(response.into_body().unwrap(), first);
        tokio::time::advance(Duration::from_millis(500)).await;
        settle().await;
    }
    let signs_during_outage = fixture.controls.signs() - 1;
    assert!(signs_during_outage >= 2, "the refresh was retried");
    assert!(
        signs_during_outage <= 8,
        "with backoff: {signs_during_outage}"
    );
    let sent = received.load(Ordering::SeqCst);

    // Unusable now: the typed error, and nothing is sent.
    let error: BoxError = call(&mut service).await.unwrap_err();
    let error = error
        .downcast_ref::<IssueError>()
        .expect("a typed IssueError");
    assert_eq!(error.kind(), IssueErrorKind::TokenUnavailable);
    assert_eq!(error.audience(), Some("http://billing.internal"));
    assert!(error.to_string().contains("vault unavailable"), "{error}");
    assert_eq!(received.load(Ordering::SeqCst), sent);

    // The vault comes back: after the token cache's backoff (8 s at most) and the key
    // cache's sign hold (its backoff, 16 s after five failed signs), calls succeed with a new
    // token; none is sent before.
    fixture.controls.fail(false);
    let back = fixture.now();
    let response = loop {
        tokio::time::advance(Duration::from_secs(1)).await;
        if let Ok(response) = call(&mut service).await {
            break response;
        }
        assert_eq!(received.load(Ordering::SeqCst), sent);
    };
    let waited = fixture.now().duration_since(back).unwrap();
    assert!(waited <= Duration::from_secs(25), "{waited:?}");
    assert_ne!(response.into_body().unwrap(), first);
    assert_eq!(received.load(Ordering::SeqCst), sent + 1);
}

#[tokio::test(start_paused = true)]
async fn a_401_drops_the_token_it_carried() {
    let fixture = Fixture::new(FixtureConfig::default());
    let rejected = Arc::new(std::sync::Mutex::new(None::<HeaderValue>));
    let reject = Arc::clone(&rejected);
    // The downstream refuses the first token it sees (a key it does not know yet, say).
    let downstream = service_fn(move |request: Request<()>| {
        let header = request.headers()[AUTHORIZATION].clone();
        let mut rejected = reject.lock().unwrap();
        let status = match &*rejected {
            None => {
                *rejected = Some(header);
                StatusCode::UNAUTHORIZED
            }
            Some(first) if *first == request.headers()[AUTHORIZATION] => StatusCode::UNAUTHORIZED,
            Some(_) => StatusCode::OK,
        };
        let mut response = Response::new(());
        *response.status_mut() = status;
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let service = IssueLayer::with_cache(fixture.tokens.clone())
        .audience(AudiencePolicy::any_origin())
        .layer(downstream);
    let first = service
        .clone()
        .oneshot(get("http://billing.internal/"))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    // A token younger than the floor (30 s) is kept: the retry is refused the same way.
    let again = service
        .clone()
        .oneshot(get("http://billing.internal/"))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(fixture.controls.signs(), 1);
    assert_eq!(fixture.tokens.metrics().invalidations_deferred, 2);
    // Once it is old enough, a 401 drops it.
    tokio::time::advance(Duration::from_secs(30)).await;
    let dropped = service
        .clone()
        .oneshot(get("http://billing.internal/"))
        .await
        .unwrap();
    assert_eq!(dropped.status(), StatusCode::UNAUTHORIZED);
    let second = service
        .clone()
        .oneshot(get("http://billing.internal/"))
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(fixture.controls.signs(), 2);
    assert_eq!(fixture.tokens.metrics().invalidations, 1);
    // A 200 keeps the token.
    service
        .oneshot(get("http://billing.internal/"))
        .await
        .unwrap();
    assert_eq!(fixture.controls.signs(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_refuses_every_token_costs_a_handful_of_signs() {
    let fixture = Fixture::new(FixtureConfig::default());
    // A peer that has not learnt our new key (or expects another `aud`): 401 for everything.
    let refused = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&refused);
    let downstream = service_fn(move |_: Request<()>| {
        count.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let mut service = IssueLayer::with_cache(fixture.tokens.clone())
        .audience(AudiencePolicy::origin().allow("http://billing.internal"))
        .layer(downstream);
    // 1,000 requests, 50 ms apart (50 s in all), each answered 401.
    for _ in 0..1000 {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(get("http://billing.internal/invoices"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        tokio::time::advance(Duration::from_millis(50)).await;
    }
    assert_eq!(refused.load(Ordering::SeqCst), 1000);
    // One sign at first, one more once the token is 30 s old: not one per request.
    assert_eq!(fixture.controls.signs(), 2);
    assert_eq!(fixture.tokens.metrics().fetches, 2);
    assert_eq!(fixture.tokens.metrics().invalidations, 1);
}

#[tokio::test]
async fn no_audience_fails_typed_and_sends_nothing() {
    let received = Arc::new(AtomicUsize::new(0));
    let layer = IssueLayer::new(StaticToken::new("secret")).audience(
        AudiencePolicy::origin()
            .map("https://billing.internal", "api://billing")
            .only_mapped(true),
    );
    let service = layer.layer(echo(received.clone()));
    for uri in ["/relative", "https://elsewhere.example/"] {
        let error = service.clone().oneshot(get(uri)).await.unwrap_err();
        let error = error.downcast_ref::<IssueError>().unwrap();
        assert_eq!(error.kind(), IssueErrorKind::NoAudience);
    }
    assert_eq!(received.load(Ordering::SeqCst), 0);
    let response = service
        .oneshot(get("https://billing.internal/x"))
        .await
        .unwrap();
    assert_eq!(response.into_body().unwrap(), "Bearer secret");
    assert_eq!(received.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_inner_error_is_boxed_and_kept() {
    let failing = service_fn(|_: Request<()>| async {
        Err::<Response<()>, _>(std::io::Error::other("connection refused"))
    });
    let service = IssueLayer::new(StaticToken::new("t"))
        .audience(AudiencePolicy::fixed("api://x"))
        .layer(failing);
    let error = service.oneshot(get("/")).await.unwrap_err();
    assert!(error.downcast_ref::<std::io::Error>().is_some());
}

/// A service that is ready only after `poll_ready`, and whose clones are not ready.
struct MustBeReady {
    ready: bool,
    polls: Arc<AtomicUsize>,
}

impl Clone for MustBeReady {
    fn clone(&self) -> Self {
        MustBeReady {
            ready: false,
            polls: Arc::clone(&self.polls),
        }
    }
}

impl Service<Request<()>> for MustBeReady {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        assert!(self.ready, "called without poll_ready");
        self.ready = false;
        std::future::ready(Ok(Response::new(())))
    }
}

#[tokio::test]
async fn poll_ready_is_forwarded_and_the_ready_service_is_the_one_called() {
    let polls = Arc::new(AtomicUsize::new(0));
    let inner = MustBeReady {
        ready: false,
        polls: Arc::clone(&polls),
    };
    let cache = TokenCache::new(StaticToken::new("t"));
    let mut service = IssueLayer::with_cache(cache)
        .audience(AudiencePolicy::any_origin())
        .layer(inner);
    // Cold cache: the call waits for the token, then calls the instance that was made ready.
    service.ready().await.unwrap();
    assert_eq!(polls.load(Ordering::SeqCst), 1);
    let pending = service.call(get("http://a.internal/"));
    // Warm cache: the call goes straight through the ready service.
    service.ready().await.unwrap();
    let direct = service.call(get("http://a.internal/"));
    let (pending, direct) = tokio::join!(pending, direct);
    pending.unwrap();
    direct.unwrap();
    assert_eq!(polls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_service_reuses_its_recent_tokens_only_while_the_cache_is_unchanged() {
    let fixture = Fixture::new(FixtureConfig::default());
    let received = Arc::new(AtomicUsize::new(0));
    let mut service = IssueLayer::with_cache(fixture.tokens.clone())
        .audience(AudiencePolicy::any_origin())
        .layer(echo(received));
    let mut call = async |uri: &str| {
        let response = service.ready().await.unwrap().call(get(uri)).await.unwrap();
        bearer(&response.into_body().unwrap())
    };
    // More hosts than a service remembers, twice round: one sign per host.
    let hosts: Vec<String> = (0..6).map(|i| format!("http://h{i}.internal/")).collect();
    let mut first = Vec::new();
    for host in &hosts {
        first.push(call(host).await);
    }
    for (host, token) in hosts.iter().zip(&first) {
        assert_eq!(&call(host).await, token);
    }
    assert_eq!(fixture.controls.signs(), 6);
    // Dropping one audience's token is seen at once, also by a service that just used it.
    assert_eq!(call(&hosts[5]).await, first[5]);
    fixture.tokens.invalidate("http://h5.internal");
    let renewed = call(&hosts[5]).await;
    assert_ne!(renewed, first[5]);
    assert_eq!(call(&hosts[4]).await, first[4]);
    assert_eq!(fixture.controls.signs(), 7);
    // And a token is never reused past its usable time.
    let usable_until = fixture
        .tokens
        .cached("http://h4.internal")
        .unwrap()
        .usable_until();
    tokio::time::advance(usable_until.duration_since(fixture.now()).unwrap()).await;
    assert_ne!(call(&hosts[4]).await, first[4]);
}

#[tokio::test]
async fn a_custom_audience_function_chooses_the_token() {
    let received = Arc::new(AtomicUsize::new(0));
    let source = keyroll_tower::issue::from_fn(|audience: String| async move {
        Ok(keyroll_tower::issue::Token::non_expiring(format!(
            "for-{audience}"
        )))
    });
    let service = IssueLayer::new(source)
        .audience(AudiencePolicy::from_fn(|head| {
            head.uri
                .path()
                .strip_prefix("/tenant/")
                .and_then(|rest| rest.split('/').next())
                .map(|tenant| format!("api://{tenant}"))
        }))
        .layer(echo(received));
    let response = service
        .clone()
        .oneshot(get("http://gateway.internal/tenant/blue/orders"))
        .await
        .unwrap();
    assert_eq!(response.into_body().unwrap(), "Bearer for-api://blue");
    let error = service
        .oneshot(get("http://gateway.internal/health"))
        .await
        .unwrap_err();
    assert_eq!(
        error.downcast_ref::<IssueError>().unwrap().kind(),
        IssueErrorKind::NoAudience
    );
}

#[tokio::test]
async fn a_custom_audience_function_runs_once_per_request() {
    let selections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&selections);
    let source = keyroll_tower::issue::from_fn(|audience: String| async move {
        Ok(keyroll_tower::issue::Token::non_expiring(format!(
            "for-{audience}"
        )))
    });
    let mut service = IssueLayer::new(source)
        .audience(AudiencePolicy::from_fn(move |head| {
            counted.fetch_add(1, Ordering::SeqCst);
            head.uri
                .path()
                .strip_prefix("/")
                .map(|t| format!("api://{t}"))
        }))
        .layer(echo(Arc::new(AtomicUsize::new(0))));
    // The second and third requests find a remembered token for another audience first.
    for (n, tenant) in ["blue", "green", "green"].into_iter().enumerate() {
        let request = get(&format!("http://gateway.internal/{tenant}"));
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(
            response.into_body().unwrap(),
            format!("Bearer for-api://{tenant}")
        );
        assert_eq!(selections.load(Ordering::SeqCst), n + 1);
    }
}
