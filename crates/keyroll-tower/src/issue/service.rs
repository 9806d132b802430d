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

use http::uri::{Authority, Scheme};
use http::{Request, Response, header::AUTHORIZATION};
use keyroll_core::BoxError;
use tower_service::Service;

use keyroll_core::token::{
    AudiencePolicy, CachedToken, IssueError, SelectedAudience, TokenCache, TokenSource,
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
/// With a token cached, the inner service is called at once. Otherwise the ready inner service
/// is swapped out for a clone (so `poll_ready`'s reservation goes with the request) and called
/// once the token arrives.
pub struct Issue<S, T = Arc<dyn TokenSource>> {
    inner: S,
    cache: TokenCache<T>,
    audience: AudiencePolicy,
    recent: Recent,
}

/// How many audiences a service remembers its last token for.
const RECENT: usize = 4;

/// The tokens this service attached last (for up to [`RECENT`] audiences), reused without a
/// cache lookup while the cache's epoch is unchanged: any change to the cache (a new token, an
/// invalidation, an eviction) bumps the epoch and empties this.
#[derive(Clone, Default)]
struct Recent {
    epoch: u64,
    entries: Vec<Last>,
}

#[derive(Clone)]
struct Last {
    /// Under the origin policy, the request URI's scheme and authority it was chosen for.
    origin: Option<(Scheme, Authority)>,
    token: Arc<CachedToken>,
}

impl<S: Clone, T> Clone for Issue<S, T> {
    fn clone(&self) -> Self {
        Issue {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            audience: self.audience.clone(),
            recent: self.recent.clone(),
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
            recent: Recent::default(),
        }
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
        &self.cache
    }
}

impl<S, T: TokenSource> Issue<S, T> {
    /// A remembered token for the request's audience, if the cache has not changed since
    /// (same scheme and authority under the origin policy, else the same audience value).
    /// `selected` keeps the audience chosen for the request, if this had to choose it, so the
    /// policy (perhaps a user's function) runs once per request.
    fn reuse_recent<'a, B>(
        &self,
        audience: &'a AudiencePolicy,
        epoch: u64,
        request: &'a Request<B>,
        selected: &mut Option<Option<SelectedAudience<'a>>>,
    ) -> Option<Arc<CachedToken>> {
        if self.recent.epoch != epoch || self.recent.entries.is_empty() {
            return None;
        }
        let uri = request.uri();
        let last = self.recent.entries.iter().find(|last| match &last.origin {
            Some((scheme, authority)) => {
                uri.scheme() == Some(scheme) && uri.authority() == Some(authority)
            }
            None => selected
                .get_or_insert_with(|| audience.select(request))
                .as_ref()
                .is_some_and(|audience| audience.as_str() == last.token.audience()),
        })?;
        self.cache
            .admit(&last.token)
            .then(|| Arc::clone(&last.token))
    }

    fn remember(
        &mut self,
        epoch: u64,
        origin: Option<(Scheme, Authority)>,
        token: &Arc<CachedToken>,
    ) {
        let recent = &mut self.recent;
        if recent.epoch != epoch {
            recent.epoch = epoch;
            recent.entries.clear();
        }
        recent
            .entries
            .retain(|last| last.token.audience() != token.audience());
        if recent.entries.len() == RECENT {
            recent.entries.remove(0);
        }
        recent.entries.push(Last {
            origin,
            token: Arc::clone(token),
        });
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
        // Read before any lookup: a token found afterwards is current at least as of it.
        let epoch = self.cache.epoch();
        let mut selected = None;
        if let Some(token) = self.reuse_recent(&self.audience, epoch, &request, &mut selected) {
            attach(&mut request, &token);
            return ResponseFuture::calling(self.inner.call(request), token);
        }
        let selected = selected.unwrap_or_else(|| self.audience.select(&request));
        let Some(audience) = selected else {
            return ResponseFuture::failed(IssueError::no_audience());
        };
        if let Some(token) = self.cache.lookup(audience.as_str()) {
            let origin = self.audience.is_origin().then(|| {
                let uri = request.uri();
                uri.scheme().cloned().zip(uri.authority().cloned())
            });
            self.remember(epoch, origin.flatten(), &token);
            attach(&mut request, &token);
            return ResponseFuture::calling(self.inner.call(request), token);
        }
        // No usable token: wait for one, then call the service that was made ready.
        let clone = self.inner.clone();
        let mut ready = mem::replace(&mut self.inner, clone);
        let fetch = self.cache.fetch(audience.into_arc());
        let deferred: Deferred<S::Future> = Box::pin(async move {
            let token = fetch.await.map_err(IssueError::from)?;
            attach(&mut request, &token);
            Ok((ready.call(request), token))
        });
        ResponseFuture::fetching(deferred)
    }
}
