//! The optional verified-token cache.
//!
//! Keyed by the whole token: moka hashes it (SipHash with a per-process random key) and a hit
//! compares the full token, so a hash collision can never serve another token's claims. An
//! entry lives until the token's `exp`, or until it gets older than the issuer's
//! [`Validation::max_age`](keyroll_core::jwt::Validation::max_age) (`iat` + `max_age` +
//! leeway), at most `max_ttl`; on every hit, `exp` and the maximum age are checked again on the
//! issuer's clock, and the verifying key version must still be in the issuer's current set and
//! valid, with the set fresh enough (a key that left the set, or keys that went stale, send the
//! request down the full path, which answers 401 or 503).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyroll_core::jwt::{Issuer, RegisteredClaims, Validation};
use keyroll_core::{KeyLookup, KeyRef, unix_seconds};

use super::extract::VerifiedClaims;

/// Settings of the verified-token cache.
///
/// From a file (feature `serde`): keys `capacity` and `max_ttl` (`"5m"`), each optional; an
/// unknown key is an error that names it. Any value is safe: a huge `max_ttl` is capped by
/// each token's `exp` and by moka's own limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct TokenCacheConfig {
    /// The most tokens kept.
    pub capacity: u64,
    /// The longest an entry is kept, whatever its `exp`.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
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

impl moka::Expiry<Arc<[u8]>, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Arc<[u8]>,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub(crate) struct TokenCache {
    entries: moka::sync::Cache<Arc<[u8]>, Arc<Entry>>,
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
    pub(crate) fn get(&self, token: &[u8]) -> Option<VerifiedClaims> {
        let entry = self.entries.get(token)?;
        if servable(&entry) {
            Some(entry.claims.clone())
        } else {
            self.entries.invalidate(token);
            None
        }
    }

    /// How many tokens are cached, after moka's pending maintenance (at publish, never on a
    /// request).
    #[cfg(feature = "metrics")]
    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Remembers a verified token.
    pub(crate) fn insert(&self, token: &[u8], claims: &VerifiedClaims, issuer: Arc<Issuer>) {
        let now = unix_seconds(issuer.keys().now());
        let Some(ttl) = entry_ttl(claims.registered(), issuer.validation(), now, self.max_ttl)
        else {
            return;
        };
        let entry = Entry {
            claims: claims.clone(),
            issuer,
            ttl,
        };
        self.entries.insert(token.into(), Arc::new(entry));
    }
}

/// How long a token verified at `now` may be served from the cache: until its `exp`, and until
/// it gets older than the issuer's `max_age` (`iat` + `max_age` + leeway, the full check's
/// limit), at most `max_ttl`. `None`: not worth caching (no time left).
fn entry_ttl(
    claims: &RegisteredClaims,
    validation: &Validation,
    now: u64,
    max_ttl: Duration,
) -> Option<Duration> {
    let mut ttl = max_ttl;
    if let Some(exp) = claims.exp {
        ttl = ttl.min(Duration::from_secs(exp.checked_sub(now)?));
    }
    if let Some(max_age) = validation.max_age {
        // The full check refuses a token without `iat` when a maximum age is set.
        let until = claims
            .iat?
            .saturating_add(max_age.as_secs())
            .saturating_add(validation.leeway.as_secs());
        ttl = ttl.min(Duration::from_secs(until.checked_sub(now)?));
    }
    (!ttl.is_zero()).then_some(ttl)
}

/// Whether a cached entry may still be served: the rules that time can break (`exp`, the
/// maximum age) hold, and the key that verified it is still valid in a fresh-enough set.
fn servable(entry: &Entry) -> bool {
    let keys = entry.issuer.keys();
    let now = keys.now();
    let claims = entry.claims.registered();
    let validation = entry.issuer.validation();
    if validation.is_expired(claims.exp, unix_seconds(now))
        || validation.is_too_old(claims.iat, unix_seconds(now))
    {
        return false;
    }
    matches!(
        keys.lookup_at(KeyRef::Kid(entry.claims.kid()), now),
        Ok(Some(KeyLookup::Valid(_)))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iat: Option<u64>, exp: Option<u64>) -> RegisteredClaims {
        let mut claims = RegisteredClaims::default();
        claims.iat = iat;
        claims.exp = exp;
        claims
    }

    #[test]
    fn ttl_is_capped_by_exp_max_age_and_max_ttl() {
        let hour = Duration::from_secs(3600);
        let now = 1_000_000;
        let plain = Validation::new("iss", ["aud"]);
        // exp in an hour, cap 5 min: 5 min; cap 2 h: the hour left.
        let token = claims(Some(now), Some(now + 3600));
        assert_eq!(
            entry_ttl(&token, &plain, now, Duration::from_secs(300)),
            Some(Duration::from_secs(300))
        );
        assert_eq!(entry_ttl(&token, &plain, now, 2 * hour), Some(hour));
        assert_eq!(entry_ttl(&claims(None, Some(now)), &plain, now, hour), None);
        // max_age 60 s, leeway 10 s, issued 30 s ago: 40 s left, whatever exp says.
        let strict = Validation::new("iss", ["aud"])
            .max_age(Duration::from_secs(60))
            .leeway(Duration::from_secs(10));
        let token = claims(Some(now - 30), Some(now + 3600));
        assert_eq!(
            entry_ttl(&token, &strict, now, hour),
            Some(Duration::from_secs(40))
        );
        // Already at the limit, or no iat: not cached.
        assert_eq!(
            entry_ttl(
                &claims(Some(now - 70), Some(now + 3600)),
                &strict,
                now,
                hour
            ),
            None
        );
        assert_eq!(
            entry_ttl(&claims(None, Some(now + 3600)), &strict, now, hour),
            None
        );
        // The hit check agrees with the full check's rule.
        assert!(!strict.is_too_old(token.iat, now + 40));
        assert!(strict.is_too_old(token.iat, now + 41));
        assert!(strict.is_too_old(claims(None, None).iat, now));
        assert!(!plain.is_too_old(claims(None, None).iat, now));
    }
}
