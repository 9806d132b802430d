//! The [`IssueLayer`].
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, header::AUTHORIZATION};
//! use keyroll_tower::issue::{AudiencePolicy, IssueLayer, StaticToken};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let layer = IssueLayer::new(StaticToken::new("api-key"))
//!     .audience(AudiencePolicy::fixed("api://billing"));
//! let service = layer.layer(service_fn(|request: Request<()>| async move {
//!     Ok::<_, Infallible>(Response::new(request.headers()[AUTHORIZATION].clone()))
//! }));
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.into_body(), "Bearer api-key");
//! # });
//! ```

use std::sync::Arc;

use tower_layer::Layer;

use keyroll_core::token::{AudiencePolicy, OutboundTokens, TokenCache, TokenSource};

use super::service::Issue;

/// Applies [`Issue`] to a service: the audience policy and a handle to the shared
/// [`TokenCache`] ([`OutboundTokens`]), so every service the layer makes shares one cache and
/// one origin index.
pub struct IssueLayer<T = Arc<dyn TokenSource>> {
    tokens: OutboundTokens<T>,
}

impl<T> Clone for IssueLayer<T> {
    fn clone(&self) -> Self {
        IssueLayer {
            tokens: self.tokens.clone(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for IssueLayer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssueLayer")
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl<T: TokenSource> IssueLayer<T> {
    /// Tokens from `source`, cached with the default [`TokenCacheConfig`](super::TokenCacheConfig)
    /// and the system clock, for the origin of each request ([`AudiencePolicy::origin`]) when
    /// it is in the policy's table: with the default (empty) table no request gets a token, so
    /// set the audiences with [`audience`](Self::audience).
    pub fn new(source: T) -> Self {
        IssueLayer::with_cache(TokenCache::new(source))
    }

    /// Tokens from an existing cache (shared with other layers, or configured with a clock).
    pub fn with_cache(cache: TokenCache<T>) -> Self {
        IssueLayer::with_tokens(OutboundTokens::new(cache, AudiencePolicy::default()))
    }

    /// Tokens looked up through `tokens` (sharing its origin index with its other users).
    pub fn with_tokens(tokens: OutboundTokens<T>) -> Self {
        IssueLayer { tokens }
    }

    /// Sets how each request's audience is chosen.
    pub fn audience(self, audience: AudiencePolicy) -> Self {
        let cache = self.tokens.cache().clone();
        IssueLayer::with_tokens(OutboundTokens::new(cache, audience))
    }

    /// The token cache.
    pub fn cache(&self) -> &TokenCache<T> {
        self.tokens.cache()
    }
}

impl<S, T: TokenSource> Layer<S> for IssueLayer<T> {
    type Service = Issue<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Issue::with_tokens(inner, self.tokens.clone())
    }
}
