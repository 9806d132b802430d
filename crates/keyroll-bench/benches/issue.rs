//! The issuer's per-request cost with a warm token cache, interleaved with its floor and its
//! peer (see `support`).
//!
//! Cases:
//! - `pass-through`: building the request and calling the inner service without any layer;
//! - `SetRequestHeader (fixed value)`: tower-http's `SetRequestHeader::overriding` with a fixed
//!   `Authorization` value — the baseline, what attaching a header costs at the least;
//! - `IssueLayer, fixed audience`: the token cache looked up by one configured audience;
//! - `IssueLayer, audience from the URI`: the default policy (scheme and authority of each
//!   request's URI);
//! - `IssueLayer, URI audience mapped`: the same, mapped through a table to an `api://` id;
//! - `IssueLayer, two audiences alternating`: each call to another host than the one before;
//! - `IssueLayer, N audiences round-robin` (6, 100, 1,000): each call to the next of N hosts,
//!   every one found through the layer's origin index.
//!
//! The target (issue 15): `IssueLayer` at most 1.5× `SetRequestHeader` at any audience count.
//! `SWEEPS` and `SLICE_MS` tune the run (defaults 40 × 25 ms; about 1 s per case).

// A benchmark may panic on setup failures: they are not library code.
#![allow(clippy::unwrap_used)]

#[allow(unreachable_pub, missing_docs)]
mod support;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::header::AUTHORIZATION;
use http::{Request, Response, Uri};
use keyroll_tower::issue::{AudiencePolicy, IssueLayer};
use support::{Case, Settings};
use tower::{Layer as _, Service};
use tower_http::set_header::SetRequestHeaderLayer;

/// The downstream: looks at the header (so it cannot be optimised away) and answers.
#[derive(Clone)]
struct Downstream;

impl Service<Request<()>> for Downstream {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        std::hint::black_box(request.headers().get(AUTHORIZATION));
        ready(Ok(Response::new(())))
    }
}

/// One request through `service`: poll ready, call, poll the response once (it is ready).
fn one<S>(service: &mut S, uri: &Uri) -> Response<()>
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut request = Request::new(());
    *request.uri_mut() = uri.clone();
    match pin!(service.call(request)).poll(&mut cx) {
        Poll::Ready(response) => response.unwrap(),
        Poll::Pending => panic!("a warm call must not wait"),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let uri: Uri = "https://billing.internal/invoices/42".parse().unwrap();

    let cache = support::outbound_cache();
    // Warm: one token per audience the cases use.
    let warm = [
        "api://billing",
        "https://billing.internal",
        "https://payments.internal",
    ];
    let uris: Vec<Uri> = support::warm_round_robin(&runtime, &cache, &warm);
    let header = cache
        .cached("api://billing")
        .unwrap()
        .header_value()
        .clone();

    let mut pass_through = Downstream;
    let mut set_header =
        SetRequestHeaderLayer::overriding(AUTHORIZATION, header.clone()).layer(Downstream);
    let mut fixed = IssueLayer::with_cache(cache.clone())
        .audience(AudiencePolicy::fixed("api://billing"))
        .layer(Downstream);
    let mut origin = IssueLayer::with_cache(cache.clone())
        .audience(AudiencePolicy::any_origin())
        .layer(Downstream);
    let mut alternating = IssueLayer::with_cache(cache.clone())
        .audience(AudiencePolicy::any_origin())
        .layer(Downstream);
    let other: Uri = "https://payments.internal/charges/7".parse().unwrap();
    let mut flip = false;
    let round_robin = IssueLayer::with_cache(cache.clone()).audience(AudiencePolicy::any_origin());
    let mut mapped = IssueLayer::with_cache(cache.clone())
        .audience(AudiencePolicy::origin().map("https://billing.internal", "api://billing"))
        .layer(Downstream);

    assert!(header.is_sensitive());

    let cases = vec![
        Case::new("pass-through", || one(&mut pass_through, &uri)),
        Case::new("SetRequestHeader (fixed value)", || {
            one(&mut set_header, &uri)
        }),
        Case::new("IssueLayer, fixed audience", || one(&mut fixed, &uri)),
        Case::new("IssueLayer, audience from the URI", || {
            one(&mut origin, &uri)
        }),
        Case::new("IssueLayer, URI audience mapped", || one(&mut mapped, &uri)),
        Case::new("IssueLayer, two audiences alternating", || {
            flip = !flip;
            one(&mut alternating, if flip { &uri } else { &other })
        }),
        Case::new("TokenCache::cached alone (map lookup)", || {
            cache.cached("https://host1.internal").is_some()
        }),
    ];
    let mut cases = cases;
    for count in support::ROUND_ROBIN {
        let mut service = round_robin.layer(Downstream);
        let hosts = &uris[..count];
        let mut turn = 0;
        cases.push(Case::new(
            format!("IssueLayer, {count} audiences round-robin"),
            move || {
                turn = (turn + 1) % hosts.len();
                one(&mut service, &hosts[turn])
            },
        ));
    }
    support::run(
        "IssueLayer: attach a cached token, per request",
        cases,
        1,
        &Settings::from_env(),
    );
    assert_eq!(
        cache.metrics().fetches,
        (warm.len() + uris.len()) as u64,
        "the cache stayed warm"
    );
}
