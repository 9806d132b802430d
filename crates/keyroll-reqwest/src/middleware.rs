//! The [`IssueMiddleware`].
//!
//! ```
//! use keyroll_reqwest::{AudiencePolicy, IssueMiddleware, StaticToken, TokenCache};
//!
//! // One token cache, shared by every client built with this middleware (and any other user).
//! let cache = TokenCache::new(StaticToken::new("api-key"));
//! let middleware = IssueMiddleware::with_cache(cache.clone())
//!     .audience(AudiencePolicy::fixed("api://billing"));
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(middleware.clone())
//!     .build();
//! assert!(std::ptr::eq(middleware.cache().source(), cache.source()));
//! # let _ = client;
//! ```

use std::fmt;
use std::sync::Arc;

use http::{Extensions, StatusCode, header::AUTHORIZATION};
use keyroll_core::token::{
    AudiencePolicy, CachedToken, IssueError, Lookup, OutboundTokens, TokenCache, TokenSource,
};
use reqwest::{Request, Response};
use reqwest_middleware::{Error, Middleware, Next, Result};

use crate::outgoing::Outgoing;

/// Attaches `Authorization: Bearer <token>` (marked sensitive) to every request, with a token
/// for the request's audience from a [`TokenCache`]; see the [crate docs](crate).
///
/// - **Audience**: chosen by the [`AudiencePolicy`] ([`audience`](Self::audience)); the
///   default, [`AudiencePolicy::origin`] with an empty table, gives no request a token: list
///   the origins. A function policy sees the request's method, URL (as an `http::Uri`, parsed
///   for each request), headers and the middleware chain's extensions
///   (`RequestBuilder::with_extension`).
/// - **No token**: the request is not sent; the error is
///   [`reqwest_middleware::Error::Middleware`] holding an [`IssueError`] ([`issue_error`]
///   finds it): [`NoAudience`](keyroll_core::token::IssueErrorKind::NoAudience), or
///   [`TokenUnavailable`](keyroll_core::token::IssueErrorKind::TokenUnavailable) with the
///   source's error and when the cache will try again.
/// - **`401`**: a response `401 Unauthorized` drops the token the request carried, once that
///   token is [`min_age_to_invalidate`](keyroll_core::token::TokenCacheConfig::min_age_to_invalidate)
///   old, so the next request gets a new one.
/// - **Cost**: with a token cached, a request costs one lock-free read of the origin index
///   ([`OutboundTokens`], shared by clones: the policy runs once per origin), a read of the
///   audience's token and a header insert. Concurrent requests that find no token share one
///   source call.
///
/// Put it after middlewares that retry (each attempt then carries a current token).
pub struct IssueMiddleware<T = Arc<dyn TokenSource>> {
    tokens: OutboundTokens<T>,
}

impl<T> Clone for IssueMiddleware<T> {
    fn clone(&self) -> Self {
        IssueMiddleware {
            tokens: self.tokens.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for IssueMiddleware<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssueMiddleware")
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl<T: TokenSource> IssueMiddleware<T> {
    /// Tokens from `source`, cached with the default
    /// [`TokenCacheConfig`](keyroll_core::token::TokenCacheConfig) and the system clock, for
    /// the origin of each request ([`AudiencePolicy::origin`]) when it is in the policy's
    /// table: with the default (empty) table no request gets a token, so set the audiences
    /// with [`audience`](Self::audience).
    pub fn new(source: T) -> Self {
        IssueMiddleware::with_cache(TokenCache::new(source))
    }

    /// Tokens from an existing cache (shared with other middlewares or layers, or configured
    /// with a clock).
    pub fn with_cache(cache: TokenCache<T>) -> Self {
        IssueMiddleware::with_tokens(OutboundTokens::new(cache, AudiencePolicy::default()))
    }

    /// Tokens looked up through `tokens` (sharing its origin index with its other users).
    pub fn with_tokens(tokens: OutboundTokens<T>) -> Self {
        IssueMiddleware { tokens }
    }

    /// Sets how each request's audience is chosen.
    pub fn audience(self, audience: AudiencePolicy) -> Self {
        let cache = self.tokens.cache().clone();
        IssueMiddleware::with_tokens(OutboundTokens::new(cache, audience))
    }

    /// The token cache.
    pub fn cache(&self) -> &TokenCache<T> {
        self.tokens.cache()
    }

    /// The audience `request` would get a token for (with no middleware extensions), or
    /// `None` when it gets none and would not be sent.
    pub fn audience_of(&self, request: &Request) -> Option<String> {
        let extensions = Extensions::new();
        let outgoing = Outgoing {
            request,
            extensions: &extensions,
        };
        self.tokens
            .policy()
            .select(&outgoing)
            .map(|audience| audience.as_str().to_owned())
    }

    /// The token for `request`: the cached one, else one fetched (single flight).
    async fn token_for(
        &self,
        request: &Request,
        extensions: &Extensions,
    ) -> std::result::Result<Arc<CachedToken>, IssueError> {
        let outgoing = Outgoing {
            request,
            extensions,
        };
        match self.tokens.lookup(&outgoing) {
            Lookup::Cached(token) => Ok(token),
            Lookup::Fetch(audience) => Ok(self.tokens.cache().fetch(audience).await?),
            _ => Err(IssueError::no_audience()),
        }
    }
}

#[async_trait::async_trait]
impl<T: TokenSource> Middleware for IssueMiddleware<T> {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let token = self
            .token_for(&request, extensions)
            .await
            .map_err(Error::middleware)?;
        request
            .headers_mut()
            .insert(AUTHORIZATION, token.header_value().clone());
        let response = next.run(request, extensions).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            token.rejected();
        }
        Ok(response)
    }
}

/// The [`IssueError`] in `error`, if [`IssueMiddleware`] failed the request (it was then not
/// sent).
///
/// ```
/// use keyroll_reqwest::{IssueErrorKind, issue_error};
///
/// fn retry_later(error: &reqwest_middleware::Error) -> Option<std::time::Duration> {
///     issue_error(error)
///         .filter(|e| e.kind() == IssueErrorKind::TokenUnavailable)
///         .and_then(|e| e.retry_after())
/// }
/// # let _ = retry_later;
/// ```
pub fn issue_error(error: &Error) -> Option<&IssueError> {
    match error {
        Error::Middleware(error) => error.downcast_ref::<IssueError>(),
        Error::Reqwest(_) => None,
    }
}
