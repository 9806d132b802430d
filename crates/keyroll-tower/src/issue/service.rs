//! The [`Issue`] service.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use keyroll_tower::issue::{AudiencePolicy, Issue, StaticToken, TokenCache};
//! use tower::{ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache = TokenCache::new(StaticToken::new("t"));
//! let inner = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
//! let policy = AudiencePolicy::origin().allow("https://billing.internal");
//! let service = Issue::new(inner, cache.clone(), policy);
//! service.oneshot(Request::get("https://billing.internal/").body(()).unwrap()).await.unwrap();
//! assert!(cache.cached("https://billing.internal").is_some());
//! # });
//! ```

use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, header::AUTHORIZATION};
use keyroll_core::BoxError;
use tower_service::Service;

use keyroll_core::token::{
    AudiencePolicy, CachedToken, IssueError, Lookup, OutboundTokens, TokenCache, TokenSource,
};

use super::future::{Deferred, ResponseFuture};
use super::layer::IssueLayer;

/// Attaches `Authorization: Bearer <token>` (marked sensitive) to every request, with a token
/// for the request's audience from a [`TokenCache`]; see the [module docs](super).
///
/// The error type is [`BoxError`]: the inner service's error, boxed, or an [`IssueError`]
/// when no token can be had (the request is then not sent). Find it with
/// `error.downcast_ref::<IssueError>()`.
///
/// With a token cached, the inner service is called at once: the token is found through
/// [`OutboundTokens`]' origin index, shared by every service the layer makes and their clones
/// (each service reads it through its own snapshot, [`OutboundTokens::lookup_local`]).
/// Otherwise the ready inner service is swapped out for a clone (so `poll_ready`'s reservation
/// goes with the request) and called once the token arrives.
pub struct Issue<S, T = Arc<dyn TokenSource>> {
    inner: S,
    tokens: OutboundTokens<T>,
}

impl<S: Clone, T> Clone for Issue<S, T> {
    fn clone(&self) -> Self {
        Issue {
            inner: self.inner.clone(),
            tokens: self.tokens.clone(),
        }
    }
}

impl<S: std::fmt::Debug, T: std::fmt::Debug> std::fmt::Debug for Issue<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issue")
            .field("inner", &self.inner)
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl<S, T: TokenSource> Issue<S, T> {
    /// Wraps `inner`.
    pub fn new(inner: S, cache: TokenCache<T>, audience: AudiencePolicy) -> Self {
        Issue::with_tokens(inner, OutboundTokens::new(cache, audience))
    }

    /// Wraps `inner`, sharing `tokens` (and its origin index) with its other users.
    pub fn with_tokens(inner: S, tokens: OutboundTokens<T>) -> Self {
        Issue { inner, tokens }
    }

    /// A layer with a token cache over `source` and the default audience policy
    /// ([`AudiencePolicy::origin`] with an empty table: set one with
    /// [`IssueLayer::audience`]).
    pub fn layer(source: T) -> IssueLayer<T> {
        IssueLayer::new(source)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The token cache.
    pub fn cache(&self) -> &TokenCache<T> {
        self.tokens.cache()
    }
}

fn attach<B>(request: &mut Request<B>, token: &CachedToken) {
    request
        .headers_mut()
        .insert(AUTHORIZATION, token.header_value().clone());
}

impl<S, T, B, ResBody> Service<Request<B>> for Issue<S, T>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
    T: TokenSource,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let audience = match self.tokens.lookup_local(&request) {
            Lookup::Cached(token) => {
                attach(&mut request, &token);
                return ResponseFuture::calling(self.inner.call(request), token);
            }
            Lookup::Fetch(audience) => audience,
            _ => return ResponseFuture::failed(IssueError::no_audience()),
        };
        // No usable token: wait for one, then call the service that was made ready.
        let clone = self.inner.clone();
        let mut ready = mem::replace(&mut self.inner, clone);
        let fetch = self.tokens.cache().fetch(audience);
        let deferred: Deferred<S::Future> = Box::pin(async move {
            let token = fetch.await.map_err(IssueError::from)?;
            attach(&mut request, &token);
            Ok((ready.call(request), token))
        });
        ResponseFuture::fetching(deferred)
    }
}
