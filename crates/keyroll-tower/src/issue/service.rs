//! The [`Issue`] service.

use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, header::AUTHORIZATION};
use keyroll_core::BoxError;
use tower_service::Service;

use super::audience::AudiencePolicy;
use super::cache::{CachedToken, TokenCache};
use super::error::IssueError;
use super::future::{Deferred, ResponseFuture};
use super::layer::IssueLayer;
use super::source::TokenSource;

/// Attaches `Authorization: Bearer <token>` (marked sensitive) to every request, with a token
/// for the request's audience from a [`TokenCache`]; see the [module docs](super).
///
/// The error type is [`BoxError`]: the inner service's error, boxed, or an [`IssueError`]
/// when no token can be had (the request is then not sent). Find it with
/// `error.downcast_ref::<IssueError>()`.
///
/// With a token cached, the inner service is called at once. Otherwise the ready inner service
/// is swapped out for a clone (so `poll_ready`'s reservation goes with the request) and called
/// once the token arrives.
pub struct Issue<S, T = Arc<dyn TokenSource>> {
    inner: S,
    cache: TokenCache<T>,
    audience: AudiencePolicy,
}

impl<S: Clone, T> Clone for Issue<S, T> {
    fn clone(&self) -> Self {
        Issue {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            audience: self.audience.clone(),
        }
    }
}

impl<S: std::fmt::Debug, T: std::fmt::Debug> std::fmt::Debug for Issue<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issue")
            .field("inner", &self.inner)
            .field("cache", &self.cache)
            .field("audience", &self.audience)
            .finish()
    }
}

impl<S, T: TokenSource> Issue<S, T> {
    /// Wraps `inner`.
    pub fn new(inner: S, cache: TokenCache<T>, audience: AudiencePolicy) -> Self {
        Issue {
            inner,
            cache,
            audience,
        }
    }

    /// A layer with a token cache over `source` and the default audience policy.
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
        &self.cache
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
        let invalidator = self.cache.invalidator();
        let Some(audience) = self.audience.select(&request) else {
            return ResponseFuture::failed(IssueError::no_audience(), invalidator);
        };
        if let Some(token) = self.cache.lookup(audience.as_str()) {
            attach(&mut request, &token);
            return ResponseFuture::calling(self.inner.call(request), token, invalidator);
        }
        // No usable token: wait for one, then call the service that was made ready.
        let clone = self.inner.clone();
        let mut ready = mem::replace(&mut self.inner, clone);
        let fetch = self.cache.fetch(audience.into_arc());
        let deferred: Deferred<S::Future> = Box::pin(async move {
            let token = fetch.await?;
            attach(&mut request, &token);
            Ok((ready.call(request), token))
        });
        ResponseFuture::fetching(deferred, invalidator)
    }
}
