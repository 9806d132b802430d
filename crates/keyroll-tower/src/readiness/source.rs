//! [`ReadinessSource`]: one cache a [`Readiness`](super::Readiness) handle watches.

use std::fmt;
use std::sync::Arc;

use keyroll_core::token::{TokenCache, TokenSource};
use keyroll_core::{KeyCache, TokenCacheStatus};

use super::report::SourceStatus;

/// One cache a [`Readiness`](super::Readiness) handle watches: a key cache or a token cache,
/// required (the default: its state counts in full) or [advisory](Self::advisory). Cheap to
/// clone.
#[derive(Clone)]
pub struct ReadinessSource {
    probe: Probe,
    required: bool,
}

#[derive(Clone)]
enum Probe {
    Keys(KeyCache),
    Tokens(Arc<dyn TokenProbe>),
}

/// What a readiness check needs of a token cache, whatever its source type.
trait TokenProbe: Send + Sync {
    fn status(&self) -> TokenCacheStatus;
    fn retry_failed(&self);
}

impl<T: TokenSource> TokenProbe for TokenCache<T> {
    fn status(&self) -> TokenCacheStatus {
        TokenCache::status(self)
    }

    fn retry_failed(&self) {
        TokenCache::retry_failed(self);
    }
}

impl ReadinessSource {
    /// A key cache (an issuer's keys, the signing keys).
    pub fn key_cache(cache: &KeyCache) -> Self {
        ReadinessSource {
            probe: Probe::Keys(cache.clone()),
            required: true,
        }
    }

    /// A token cache (an `IssueLayer`'s, Entra ID tokens).
    pub fn token_cache<T: TokenSource + 'static>(cache: &TokenCache<T>) -> Self {
        ReadinessSource {
            probe: Probe::Tokens(Arc::new(cache.clone())),
            required: true,
        }
    }

    /// Reported, but never makes the service unready: when it is loading or unavailable,
    /// the whole counts as degraded. For a cache that only some requests need (one peer's
    /// tokens, say), so that its failure does not take every replica out of the load
    /// balancer.
    pub fn advisory(mut self) -> Self {
        self.required = false;
        self
    }

    /// Whether its state counts in full.
    pub fn is_required(&self) -> bool {
        self.required
    }

    /// Starts what keeps the cache loaded ([`KeyCache::start_refresh`],
    /// [`TokenCache::retry_failed`]), then reads its status.
    pub(crate) fn check(&self) -> SourceStatus {
        match &self.probe {
            Probe::Keys(cache) => {
                cache.start_refresh();
                SourceStatus::Keys(cache.status())
            }
            Probe::Tokens(cache) => {
                cache.retry_failed();
                SourceStatus::Tokens(cache.status())
            }
        }
    }

    /// Its key cache, if it is one.
    pub(crate) fn keys(&self) -> Option<&KeyCache> {
        match &self.probe {
            Probe::Keys(cache) => Some(cache),
            Probe::Tokens(_) => None,
        }
    }
}

impl fmt::Debug for ReadinessSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ReadinessSource");
        match &self.probe {
            Probe::Keys(cache) => debug.field("keys", &cache.source_name()),
            Probe::Tokens(_) => debug.field("tokens", &".."),
        };
        debug.field("required", &self.required).finish()
    }
}
