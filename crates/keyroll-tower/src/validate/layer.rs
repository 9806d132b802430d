//! [`ValidateLayer`] and its builder.

use std::sync::Arc;

use http::HeaderName;
use keyroll_core::jwt::{Issuer, Verifier};
use tower_layer::Layer;

use super::cache::{TokenCache, TokenCacheConfig};
use super::extract::VerifiedClaims;
use super::metrics::{Counters, ValidateMetrics};
use super::response::{Responses, sanitize};
use super::service::Validate;
use super::thread_slot;
use super::token::TokenSources;

/// The default realm in `WWW-Authenticate` challenges.
pub(crate) const DEFAULT_REALM: &str = "keyroll";

/// Validates inbound bearer tokens against one or more issuers' key caches; see the
/// [module docs](super).
///
/// The layer holds only its configuration (behind an `Arc`): cloning it, or applying it to many
/// services, shares one verifier, one token cache and one set of counters.
#[derive(Clone, Debug)]
pub struct ValidateLayer {
    shared: Arc<Shared>,
}

/// What every [`Validate`] service built from one layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) verifier: Verifier,
    pub(crate) sources: TokenSources,
    /// The realm once per thread slot, for the claims of accepted requests: each thread
    /// clones its own `Arc`, so accepting writes no reference count that threads share.
    realms: Box<[Arc<str>]>,
    /// Refusal responses, built once per reason.
    pub(crate) responses: Responses,
    pub(crate) cache: Option<TokenCache>,
    pub(crate) counters: Counters,
    /// The layer's name in metrics labels.
    pub(crate) name: Arc<str>,
    #[cfg(feature = "metrics")]
    pub(crate) published: keyroll_core::metrics::CounterDeltas,
}

impl Shared {
    /// Wraps a verified token, remembering it in the token cache.
    pub(crate) fn accept(
        &self,
        token: &[u8],
        verified: keyroll_core::jwt::VerifiedToken,
    ) -> VerifiedClaims {
        let realm = Arc::clone(&self.realms[thread_slot::current() % self.realms.len()]);
        let Some(cache) = &self.cache else {
            return VerifiedClaims::new(verified, realm);
        };
        let claims = VerifiedClaims::shareable(verified, realm);
        if let Some(issuer) = self.verifier.issuer(claims.issuer()) {
            cache.insert(token, &claims, Arc::clone(issuer));
        }
        claims
    }
}

impl ValidateLayer {
    /// A layer trusting one issuer, with the defaults (realm `keyroll`, 8 KiB tokens, token
    /// from `Authorization: Bearer` only, no token cache).
    pub fn new(issuer: Issuer) -> Self {
        ValidateLayer::builder().issuer(issuer).build()
    }

    /// A builder.
    pub fn builder() -> ValidateLayerBuilder {
        ValidateLayerBuilder {
            issuers: Vec::new(),
            realm: DEFAULT_REALM.to_owned(),
            max_token_len: keyroll_core::jwt::DEFAULT_MAX_TOKEN_LEN,
            header: None,
            cookie: None,
            cache: None,
            name: None,
        }
    }

    /// The counters of every service built from this layer.
    pub fn metrics(&self) -> ValidateMetrics {
        self.shared.counters.snapshot()
    }

    /// The issuers this layer trusts, each with its key cache (for readiness probes:
    /// [`ReadinessBuilder::validator`](crate::readiness::ReadinessBuilder::validator)).
    pub fn issuers(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.shared.verifier.issuers()
    }

    /// The layer's name in metrics labels ([`ValidateLayerBuilder::name`], else the realm).
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

impl<S> Layer<S> for ValidateLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Validate::from_shared(inner, Arc::clone(&self.shared))
    }
}

/// Builds a [`ValidateLayer`].
#[derive(Debug)]
#[must_use]
pub struct ValidateLayerBuilder {
    issuers: Vec<Issuer>,
    realm: String,
    max_token_len: usize,
    header: Option<HeaderName>,
    cookie: Option<String>,
    cache: Option<TokenCacheConfig>,
    name: Option<String>,
}

impl ValidateLayerBuilder {
    /// Trusts an issuer (its key cache and rules); tokens are routed to it by their `iss`. A
    /// later issuer with the same `iss` replaces an earlier one. With no issuer at all, every
    /// token is refused as untrusted.
    pub fn issuer(mut self, issuer: Issuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// Trusts several issuers.
    pub fn issuers(mut self, issuers: impl IntoIterator<Item = Issuer>) -> Self {
        self.issuers.extend(issuers);
        self
    }

    /// The realm in challenges (default `keyroll`). Quotes, backslashes and non-printable
    /// characters are dropped.
    pub fn realm(mut self, realm: &str) -> Self {
        self.realm = sanitize(realm);
        self
    }

    /// The largest token accepted, in bytes (default 8 KiB). A larger credentials header is
    /// refused before any parsing.
    pub fn max_token_len(mut self, max: usize) -> Self {
        self.max_token_len = max;
        self
    }

    /// Also looks for the token in this header (a bare token or `Bearer <token>`), when there is
    /// no `Authorization: Bearer`.
    pub fn token_header(mut self, name: HeaderName) -> Self {
        self.header = Some(name);
        self
    }

    /// Also looks for the token in this cookie, when no header carries one.
    pub fn token_cookie(mut self, name: impl Into<String>) -> Self {
        self.cookie = Some(name.into());
        self
    }

    /// Enables the verified-token cache.
    pub fn token_cache(mut self, config: TokenCacheConfig) -> Self {
        self.cache = Some(config);
        self
    }

    /// Names the layer in metrics labels (`validator="…"`, see `keyroll_core::metrics`, with
    /// the feature `metrics`); default: the realm. Layers that share a name count as one.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Builds the layer.
    pub fn build(self) -> ValidateLayer {
        let verifier = Verifier::new(self.issuers).max_token_len(self.max_token_len);
        let name: Arc<str> = self.name.unwrap_or_else(|| self.realm.clone()).into();
        let realm: Arc<str> = self.realm.into();
        let shared = Arc::new(Shared {
            verifier,
            sources: TokenSources {
                header: self.header,
                cookie: self.cookie,
                max_len: self.max_token_len,
            },
            responses: Responses::new(Arc::clone(&realm)),
            realms: (0..thread_slot::count())
                .map(|_| Arc::from(&*realm))
                .collect(),
            cache: self.cache.map(TokenCache::new),
            counters: Counters::default(),
            name,
            #[cfg(feature = "metrics")]
            published: keyroll_core::metrics::CounterDeltas::default(),
        });
        #[cfg(feature = "metrics")]
        keyroll_core::metrics::register(
            Arc::downgrade(&shared) as std::sync::Weak<dyn keyroll_core::metrics::Publish>
        );
        ValidateLayer { shared }
    }
}
