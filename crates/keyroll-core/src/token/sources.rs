//! The token sources shipped here: [`SelfSigned`] (JWTs signed with a key cache's active key),
//! [`StaticToken`], and [`from_fn`] for anything else.
//!
//! ```
//! use keyroll_core::token::{StaticToken, TokenSource};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let source = StaticToken::new("api-key");
//! assert_eq!(source.token("https://billing.internal").await.unwrap().secret(), "api-key");
//! # });
//! ```

use std::fmt;
use std::future::Future;

use super::source::{Token, TokenError, TokenSource};
use crate::cache::KeyCache;
use crate::jwt::TokenTemplate;
use crate::source::BoxFuture;

/// Self-signed JWTs: minted from a [`TokenTemplate`] with the key cache's active signer
/// (header `alg`, `kid`, `typ: JWT`, optionally `x5t`; claims `iss`, `sub`, `aud`, `iat`,
/// `nbf`, `exp`, `jti` and the template's extra claims; lifetime 1 hour unless the template
/// says otherwise). The key version is chosen at each mint, so a rotation takes effect at the
/// next token.
///
/// ```
/// use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
/// use keyroll_core::jwt::TokenTemplate;
/// use keyroll_core::token::{SelfSigned, TokenSource};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap()).build();
/// let source = SelfSigned::new(keys, TokenTemplate::new("https://orders.internal"));
/// let token = source.token("https://billing.internal").await.unwrap();
/// assert_eq!(token.secret().split('.').count(), 3);
/// # });
/// ```
#[derive(Clone)]
pub struct SelfSigned {
    keys: KeyCache,
    template: TokenTemplate,
}

impl SelfSigned {
    /// Tokens minted from `template` with `keys`' active version.
    pub fn new(keys: KeyCache, template: TokenTemplate) -> Self {
        SelfSigned { keys, template }
    }

    /// The key cache.
    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// The claims template.
    pub fn template(&self) -> &TokenTemplate {
        &self.template
    }
}

impl fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("keys", &self.keys.source_name())
            .field("template", &self.template)
            .finish()
    }
}

impl TokenSource for SelfSigned {
    fn token<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<Token, TokenError>> {
        Box::pin(async move {
            let minted = self.template.mint(&self.keys, audience).await?;
            Ok(Token::new(minted.token, minted.expires_at).with_key_id(minted.kid))
        })
    }

    fn is_revoked(&self, key_id: &str) -> bool {
        self.keys.is_revoked(key_id)
    }

    /// The key cache's [name](KeyCache::name).
    fn name(&self) -> String {
        self.keys.name().to_owned()
    }
}

/// The same token for every audience (an API key, a token obtained elsewhere).
#[derive(Clone)]
pub struct StaticToken {
    token: Token,
}

impl StaticToken {
    /// A non-expiring static token.
    pub fn new(secret: impl Into<String>) -> Self {
        StaticToken {
            token: Token::non_expiring(secret),
        }
    }

    /// A static token with an expiry: past it, calls fail instead of sending it.
    pub fn from_token(token: Token) -> Self {
        StaticToken { token }
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticToken")
            .field("token", &self.token)
            .finish()
    }
}

impl TokenSource for StaticToken {
    fn token<'a>(&'a self, _audience: &'a str) -> BoxFuture<'a, Result<Token, TokenError>> {
        let token = self.token.clone();
        Box::pin(async move { Ok(token) })
    }

    /// `static`.
    fn name(&self) -> String {
        "static".to_owned()
    }
}

/// A source from an async closure of the audience; see [`from_fn`].
#[derive(Clone)]
pub struct FnSource<F> {
    f: F,
}

/// A [`TokenSource`] from an async closure taking the audience.
pub fn from_fn<F, Fut>(f: F) -> FnSource<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, TokenError>> + Send + 'static,
{
    FnSource { f }
}

impl<F> fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnSource").finish_non_exhaustive()
    }
}

impl<F, Fut> TokenSource for FnSource<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, TokenError>> + Send + 'static,
{
    fn token<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<Token, TokenError>> {
        Box::pin((self.f)(audience.to_owned()))
    }

    /// `from_fn` (name the cache with [`TokenCacheBuilder::name`](super::TokenCacheBuilder::name)).
    fn name(&self) -> String {
        "from_fn".to_owned()
    }
}
