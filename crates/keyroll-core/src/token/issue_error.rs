//! The error an outbound middleware (keyroll-tower's `Issue`, keyroll-reqwest's
//! `IssueMiddleware`) fails a call with when it cannot attach a token: the call is not sent.
//!
//! ```
//! use keyroll_core::token::{IssueError, IssueErrorKind, TokenCache, from_fn, TokenError};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache = TokenCache::new(from_fn(|_audience: String| async {
//!     Err(TokenError::new("vault unreachable"))
//! }));
//! let error = IssueError::from(cache.get("api://billing").await.unwrap_err());
//! assert_eq!(error.kind(), IssueErrorKind::TokenUnavailable);
//! assert_eq!(error.audience(), Some("api://billing"));
//! assert!(error.retry_after().is_some());
//! assert_eq!(error.to_string(), "no token for audience `api://billing`: vault unreachable");
//! # });
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::cache::TokenUnavailable;
use super::source::TokenError;

/// Why a request was not sent: no token could be attached to it.
///
/// Middlewares return it inside their own error type: keyroll-tower's `Issue` fails with a
/// [`BoxError`](crate::BoxError), keyroll-reqwest's `IssueMiddleware` with
/// `reqwest_middleware::Error::Middleware`; find it with `downcast_ref::<IssueError>()`. The
/// request is never sent without its `Authorization` header.
///
/// ```
/// use keyroll_core::token::{IssueError, IssueErrorKind};
///
/// fn is_missing_token(error: &keyroll_core::BoxError) -> bool {
///     error
///         .downcast_ref::<IssueError>()
///         .is_some_and(|e| e.kind() == IssueErrorKind::TokenUnavailable)
/// }
/// # let _ = is_missing_token;
/// ```
#[derive(Clone, Debug)]
pub struct IssueError {
    kind: IssueErrorKind,
    audience: Option<Arc<str>>,
    source: Option<Arc<TokenError>>,
    retry_after: Option<Duration>,
}

/// What went wrong, in an [`IssueError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssueErrorKind {
    /// No audience could be chosen for the request: the URI has no scheme or authority, the
    /// audience function returned none, or the origin (value) is not in the
    /// [`AudiencePolicy`](super::AudiencePolicy) table and only mapped ones get a token (the
    /// default for [`AudiencePolicy::origin`](super::AudiencePolicy::origin)); or
    /// [`AudiencePolicy::for_endpoint`](super::AudiencePolicy::for_endpoint) was given such an
    /// endpoint.
    NoAudience,
    /// The source failed (or is cooling down after a failure) and no unexpired token is cached.
    TokenUnavailable,
}

impl IssueError {
    /// No audience could be chosen for a request (kind [`IssueErrorKind::NoAudience`]).
    pub fn no_audience() -> Self {
        IssueError {
            kind: IssueErrorKind::NoAudience,
            audience: None,
            source: None,
            retry_after: None,
        }
    }

    /// No audience for `value` (an origin, an endpoint), which the error then names: an
    /// origin or URI is configuration, never a secret.
    pub fn no_audience_for(value: impl Into<Arc<str>>) -> Self {
        IssueError {
            audience: Some(value.into()),
            ..IssueError::no_audience()
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> IssueErrorKind {
        self.kind
    }

    /// The audience no token could be had for ([`IssueErrorKind::TokenUnavailable`]), or the
    /// value no audience was found for ([`IssueErrorKind::NoAudience`], when it is known).
    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// The source's error.
    pub fn token_error(&self) -> Option<&TokenError> {
        self.source.as_deref()
    }

    /// When the cache will ask the source again (a caller may retry then).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for IssueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.audience, &self.source) {
            (IssueErrorKind::TokenUnavailable, Some(audience), Some(source)) => {
                write!(f, "no token for audience `{audience}`: {source}")
            }
            (IssueErrorKind::TokenUnavailable, _, _) => f.write_str("no token available"),
            (IssueErrorKind::NoAudience, Some(value), _) => write!(
                f,
                "no token audience for `{value}` (no origin, or not in the audience table)"
            ),
            (IssueErrorKind::NoAudience, None, _) => f.write_str(
                "no token audience for the request's URI (no origin, or not in the audience table)",
            ),
        }
    }
}

impl From<TokenUnavailable> for IssueError {
    fn from(unavailable: TokenUnavailable) -> Self {
        IssueError {
            kind: IssueErrorKind::TokenUnavailable,
            audience: Some(Arc::clone(unavailable.audience_arc())),
            source: Some(Arc::clone(unavailable.token_error())),
            retry_after: unavailable.retry_after(),
        }
    }
}

impl std::error::Error for IssueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
