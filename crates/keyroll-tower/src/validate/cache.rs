//! The optional verified-token cache.
//!
//! Keyed by the whole token: moka hashes it (SipHash with a per-process random key) and a hit
//! compares the full token, so a hash collision can never serve another token's claims. An
//! entry lives until the token's `exp`, at most `max_ttl`; on every hit, `exp` is checked again
//! on the issuer's clock, and the verifying key version must still be in the issuer's current
//! set and valid, with the set fresh enough (a key that left the set, or keys that went stale,
//! send the request down the full path, which answers 401 or 503).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyroll_core::jwt::Issuer;
use keyroll_core::{KeyLookup, KeyRef, unix_seconds};

use super::extract::VerifiedClaims;

/// Settings of the verified-token cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenCacheConfig {
    /// The most tokens kept.
    pub capacity: u64,
    /// The longest an entry is kept, whatever its `exp`.
    pub max_ttl: Duration,
}

impl Default for TokenCacheConfig {
    /// 10,000 tokens, 5 minutes.
    fn default() -> Self {
        TokenCacheConfig {
            capacity: 10_000,
            max_ttl: Duration::from_secs(300),
        }
    }
}

impl TokenCacheConfig {
    /// A cache of at most `capacity` tokens, each kept at most `max_ttl`.
    pub fn new(capacity: u64, max_ttl: Duration) -> Self {
        TokenCacheConfig { capacity, max_ttl }
    }
}

pub(crate) struct Entry {
    claims: VerifiedClaims,
    issuer: Arc<Issuer>,
    ttl: Duration,
}

struct EntryExpiry;

impl moka::Expiry<Arc<str>, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub(crate) struct TokenCache {
    entries: moka::sync::Cache<Arc<str>, Arc<Entry>>,
    max_ttl: Duration,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.entries.entry_count())
            .field("max_ttl", &self.max_ttl)
            .finish()
    }
}

impl TokenCache {
    pub(crate) fn new(config: TokenCacheConfig) -> Self {
        TokenCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(config.capacity)
                .expire_after(EntryExpiry)
                .build(),
            max_ttl: config.max_ttl,
        }
    }

    /// The claims of a cached token that is still good to serve.
    pub(crate) fn get(&self, token: &str) -> Option<VerifiedClaims> {
        let entry = self.entries.get(token)?;
        if servable(&entry) {
            Some(entry.claims.clone())
        } else {
            self.entries.invalidate(token);
            None
        }
    }

    /// Remembers a verified token.
    pub(crate) fn insert(&self, token: &str, claims: &VerifiedClaims, issuer: Arc<Issuer>) {
        let now = unix_seconds(issuer.keys().now());
        let ttl = match claims.registered().exp {
            Some(exp) if exp <= now => return,
            Some(exp) => Duration::from_secs(exp - now).min(self.max_ttl),
            None => self.max_ttl,
        };
        let entry = Entry {
            claims: claims.clone(),
            issuer,
            ttl,
        };
        self.entries.insert(token.into(), Arc::new(entry));
    }
}

fn servable(entry: &Entry) -> bool {
    let keys = entry.issuer.keys();
    let now = keys.now();
    // exp, with the same leeway as the full check.
    let leeway = entry.issuer.validation().leeway.as_secs();
    if entry
        .claims
        .registered()
        .exp
        .is_some_and(|exp| exp.saturating_add(leeway) <= unix_seconds(now))
    {
        return false;
    }
    // The key must still be in a fresh-enough set, and valid.
    let Some(set) = keys.snapshot() else {
        return false;
    };
    let age = now.duration_since(set.loaded_at()).unwrap_or_default();
    if age > keys.config().max_stale {
        return false;
    }
    matches!(
        set.lookup(KeyRef::Kid(entry.claims.kid()), &keys.config().policy, now),
        KeyLookup::Valid(_)
    )
}
