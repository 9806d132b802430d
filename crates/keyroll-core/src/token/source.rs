//! Where outbound tokens come from: the [`TokenSource`] trait, the [`Token`] it returns, and
//! the [`TokenError`] it fails with.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use keyroll_core::token::{Token, TokenSource, from_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // A custom source: anything async that turns an audience into a token.
//! let source = from_fn(|audience: String| async move {
//!     let expires_at = SystemTime::now() + Duration::from_secs(600);
//!     Ok(Token::new(format!("token-for-{audience}"), expires_at))
//! });
//! let token = source.token("https://billing.internal").await.unwrap();
//! assert_eq!(token.secret(), "token-for-https://billing.internal");
//! // Debug never prints the secret.
//! assert!(!format!("{token:?}").contains("token-for"));
//! # });
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::BoxError;
use crate::jwt::MintError;
use crate::refresh::RetryHint;
use crate::source::BoxFuture;

/// A token for one audience: the secret value, when it expires, and optionally when the source
/// wants it refreshed (an Entra ID `refresh_in`). `Debug` prints no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    secret: String,
    expires_at: SystemTime,
    refresh_at: Option<SystemTime>,
    key_id: Option<String>,
}

impl Token {
    /// A token valid until `expires_at`.
    pub fn new(secret: impl Into<String>, expires_at: SystemTime) -> Self {
        Token {
            secret: secret.into(),
            expires_at,
            refresh_at: None,
            key_id: None,
        }
    }

    /// A token that never expires (an API key): it expires in the far future and is never
    /// refreshed ahead.
    pub fn non_expiring(secret: impl Into<String>) -> Self {
        Token::new(secret, far_future())
    }

    /// Sets when the token should be refreshed (clamped by the cache to its lifetime).
    pub fn with_refresh_at(mut self, refresh_at: SystemTime) -> Self {
        self.refresh_at = Some(refresh_at);
        self
    }

    /// Names the key version that signed it, so that a [revoked](TokenSource::is_revoked)
    /// version's tokens are dropped from the cache at once.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// The key version that signed it, if the source said.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// The secret value (without the `Bearer ` prefix).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// When the token stops being valid.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// When the source wants it refreshed, if it says.
    pub fn refresh_at(&self) -> Option<SystemTime> {
        self.refresh_at
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

/// About 10,000 years from the epoch: "never" for a token.
fn far_future() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 38)
}

/// A [`TokenSource`] could not give a token. The message names what failed; it never contains
/// a secret.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TokenError {
    message: String,
    retry_after: Option<Duration>,
    throttled: bool,
    #[source]
    cause: Option<BoxError>,
}

impl TokenError {
    /// A new error.
    pub fn new(message: impl Into<String>) -> Self {
        TokenError {
            message: message.into(),
            retry_after: None,
            throttled: false,
            cause: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_cause(mut self, cause: impl Into<BoxError>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// Attaches the delay the source asked for before retrying (a `Retry-After`).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Marks the error as the source refusing for load (an HTTP 429): the cache then spreads
    /// its retries, as replicas throttled together must not come back together.
    pub fn with_throttling(mut self) -> Self {
        self.throttled = true;
        self
    }

    /// The delay the source asked for, if any. The cache never retries sooner.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the source refused for load.
    pub fn is_throttled(&self) -> bool {
        self.throttled
    }
}

impl RetryHint for TokenError {
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    fn throttled(&self) -> bool {
        self.throttled
    }
}

impl From<MintError> for TokenError {
    fn from(error: MintError) -> Self {
        let (retry_after, throttled) = match &error {
            MintError::Keys(keys) => (keys.retry_after(), false),
            MintError::Sign(sign) => (sign.retry_after(), sign.status() == Some(429)),
            MintError::SelfVerification { .. } => (None, false),
        };
        let mut converted = TokenError::new(format!("could not mint a token: {error}"));
        converted.retry_after = retry_after;
        converted.throttled = throttled;
        converted.with_cause(error)
    }
}

/// Gives tokens for audiences: asynchronous, object safe (use it as `Arc<dyn TokenSource>`).
///
/// A source is called by the [`TokenCache`](super::TokenCache) about once per audience per
/// token lifetime, never once per request, and at most once at a time per audience. Sources
/// know no middleware: `IssueLayer`, the reqwest middleware and a plain caller all take one.
pub trait TokenSource: Send + Sync + fmt::Debug + 'static {
    /// A token for `audience`.
    fn token<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<Token, TokenError>>;

    /// Whether tokens signed by key version `key_id` ([`Token::key_id`]) must no longer be
    /// attached (default `false`): the token cache asks before it hands out such a token,
    /// and drops it. [`SelfSigned`](super::SelfSigned) answers from its key cache's
    /// [revocations](crate::KeyCache::revoke).
    fn is_revoked(&self, key_id: &str) -> bool {
        let _ = key_id;
        false
    }

    /// A short, secret-free name: the [`TokenCache`](super::TokenCache)'s name in metrics
    /// labels unless it is given one ([`TokenCacheBuilder::name`](super::TokenCacheBuilder::name)).
    /// Default: the type's name without its path and generics (`MyTokens`).
    fn name(&self) -> String {
        short_type_name(std::any::type_name::<Self>()).to_owned()
    }
}

/// `a::b::Name<c::D>` → `Name`.
fn short_type_name(full: &str) -> &str {
    let path = full.split('<').next().unwrap_or(full);
    path.rsplit("::").next().unwrap_or(path)
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn token<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<Token, TokenError>> {
        (**self).token(audience)
    }
    fn is_revoked(&self, key_id: &str) -> bool {
        (**self).is_revoked(key_id)
    }
    fn name(&self) -> String {
        (**self).name()
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Box<T> {
    fn token<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<Token, TokenError>> {
        (**self).token(audience)
    }
    fn is_revoked(&self, key_id: &str) -> bool {
        (**self).is_revoked(key_id)
    }
    fn name(&self) -> String {
        (**self).name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::StaticToken;

    #[test]
    fn debug_redacts_the_secret() {
        let token = Token::new("s3cr3t", SystemTime::UNIX_EPOCH);
        assert!(!format!("{token:?}").contains("s3cr3t"));
        let source = StaticToken::new("s3cr3t");
        assert!(!format!("{source:?}").contains("s3cr3t"));
    }

    #[derive(Debug)]
    struct Revoking;

    impl TokenSource for Revoking {
        fn token<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Token, TokenError>> {
            Box::pin(async { Err(TokenError::new("unused")) })
        }
        fn is_revoked(&self, key_id: &str) -> bool {
            key_id == "gone"
        }
    }

    #[test]
    fn shared_and_boxed_sources_keep_their_revocations_and_names() {
        let shared: Arc<dyn TokenSource> = Arc::new(Revoking);
        let boxed: Box<dyn TokenSource> = Box::new(Revoking);
        assert!(shared.is_revoked("gone") && boxed.is_revoked("gone"));
        assert!(!shared.is_revoked("kept"));
        assert_eq!(
            (shared.name(), boxed.name()),
            ("Revoking".into(), "Revoking".into())
        );
        let static_token: Arc<dyn TokenSource> = Arc::new(StaticToken::new("k"));
        assert_eq!(static_token.name(), "static");
        assert_eq!(
            short_type_name("a::b::FnSource<c::{{closure}}>"),
            "FnSource"
        );
    }

    #[tokio::test]
    async fn static_token_is_the_same_for_every_audience() {
        let source: Arc<dyn TokenSource> = Arc::new(StaticToken::new("abc"));
        assert_eq!(source.token("a").await.unwrap().secret(), "abc");
        assert_eq!(source.token("b").await.unwrap().secret(), "abc");
        assert!(source.token("b").await.unwrap().expires_at() > SystemTime::now());
    }

    #[test]
    fn token_error_keeps_retry_after_and_cause() {
        let error = TokenError::new("vault throttled")
            .with_retry_after(Duration::from_secs(7))
            .with_cause(std::io::Error::other("429"));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(
            std::error::Error::source(&error).map(ToString::to_string),
            Some("429".to_owned())
        );
        assert!(!error.is_throttled());
        assert!(TokenError::new("busy").with_throttling().is_throttled());
    }
}
