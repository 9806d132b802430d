//! keyroll-reqwest's per-request cost with a warm token cache, interleaved with its floor (see
//! `support`). Every case runs a reqwest-middleware chain that ends in a middleware answering
//! at once (no network), so the figures are the middleware's own cost.
//!
//! Cases:
//! - `chain only`: the chain without a middleware that touches the header;
//! - `fixed header middleware`: a middleware inserting a fixed `Authorization` value — the
//!   baseline, what attaching a header in reqwest-middleware costs at the least (tower-http's
//!   `SetRequestHeader` for a reqwest client);
//! - `IssueMiddleware, fixed audience`: the token cache looked up by one configured audience;
//! - `IssueMiddleware, URL origin mapped`: the default policy, the URL's origin mapped through
//!   the table to an `api://` id;
//! - `IssueMiddleware, URL origin as audience`: `any_origin()`, the origin borrowed from the URL;
//! - `IssueMiddleware, N audiences round-robin` (6, 100, 1,000): each call to the next of N
//!   hosts.
//!
//! `SWEEPS` and `SLICE_MS` tune the run (defaults 40 × 25 ms).

// A benchmark may panic on setup failures: they are not library code.
#![allow(clippy::unwrap_used)]

#[allow(unreachable_pub, missing_docs)]
mod support;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::header::AUTHORIZATION;
use http::{Extensions, HeaderValue};
use keyroll_reqwest::reqwest_middleware::{
    ClientBuilder, ClientWithMiddleware, Middleware, Next, Result,
};
use keyroll_reqwest::{AudiencePolicy, IssueMiddleware};
use reqwest::{Method, Request, Response, Url};
use support::{Case, Settings};

/// The end of every chain: looks at the header (so it cannot be optimised away) and answers.
struct Answer;

#[async_trait::async_trait]
impl Middleware for Answer {
    async fn handle(&self, request: Request, _: &mut Extensions, _: Next<'_>) -> Result<Response> {
        std::hint::black_box(request.headers().get(AUTHORIZATION));
        Ok(Response::from(http::Response::new("")))
    }
}

/// Inserts a fixed `Authorization` value.
struct FixedHeader(HeaderValue);

#[async_trait::async_trait]
impl Middleware for FixedHeader {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        request.headers_mut().insert(AUTHORIZATION, self.0.clone());
        next.run(request, extensions).await
    }
}

fn chain(middleware: Option<Arc<dyn Middleware>>) -> ClientWithMiddleware {
    let builder = ClientBuilder::new(reqwest::Client::new());
    let builder = match middleware {
        Some(middleware) => builder.with_arc(middleware),
        None => builder,
    };
    builder.with(Answer).build()
}

/// One request through `client`: the future is polled once (a warm call never waits).
fn one(client: &ClientWithMiddleware, url: &Url) -> Response {
    let mut cx = Context::from_waker(Waker::noop());
    let request = Request::new(Method::GET, url.clone());
    match pin!(client.execute(request)).poll(&mut cx) {
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
    let url: Url = "https://billing.internal/invoices/42".parse().unwrap();

    let cache = support::outbound_cache();
    let warm = ["api://billing", "https://billing.internal"];
    let urls: Vec<Url> = support::warm_round_robin(&runtime, &cache, &warm);
    let header = cache
        .cached("api://billing")
        .unwrap()
        .header_value()
        .clone();
    let issue = |policy: AudiencePolicy| -> Option<Arc<dyn Middleware>> {
        Some(Arc::new(
            IssueMiddleware::with_cache(cache.clone()).audience(policy),
        ))
    };

    let chain_only = chain(None);
    let fixed_header = chain(Some(Arc::new(FixedHeader(header))));
    let fixed = chain(issue(AudiencePolicy::fixed("api://billing")));
    let mapped = chain(issue(
        AudiencePolicy::origin().map("https://billing.internal", "api://billing"),
    ));
    let origin = chain(issue(AudiencePolicy::any_origin()));

    let cases = vec![
        Case::new("chain only", || one(&chain_only, &url)),
        Case::new("fixed header middleware", || one(&fixed_header, &url)),
        Case::new("IssueMiddleware, fixed audience", || one(&fixed, &url)),
        Case::new("IssueMiddleware, URL origin mapped", || one(&mapped, &url)),
        Case::new("IssueMiddleware, URL origin as audience", || {
            one(&origin, &url)
        }),
    ];
    let mut cases = cases;
    for count in support::ROUND_ROBIN {
        // One middleware shared by the chains of every count, as one client's would be.
        let client = chain(issue(AudiencePolicy::any_origin()));
        let hosts = &urls[..count];
        let mut turn = 0;
        cases.push(Case::new(
            format!("IssueMiddleware, {count} audiences round-robin"),
            move || {
                turn = (turn + 1) % hosts.len();
                one(&client, &hosts[turn])
            },
        ));
    }
    support::run(
        "IssueMiddleware: attach a cached token, per request",
        cases,
        1,
        &Settings::from_env(),
    );
    assert_eq!(
        cache.metrics().fetches,
        (warm.len() + urls.len()) as u64,
        "the cache stayed warm"
    );
}
