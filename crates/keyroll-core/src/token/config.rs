//! Token cache settings.

use std::time::Duration;

use crate::Backoff;
use crate::refresh::RetrySchedule;

/// How a [`TokenCache`](super::TokenCache) refreshes and retries.
///
/// | setting | default | |
/// |---|---|---|
/// | `refresh_ratio` | 0.8 | refresh point, as a fraction of the lifetime (0.1…1) |
/// | `refresh_jitter` | 0.05 | up to this fraction of the lifetime earlier, at random (0…0.5) |
/// | `expiry_margin` | 5 s | not attached this close to expiry (at most a tenth of the lifetime) |
/// | `backoff_min` … `backoff_max` | 1 s … 60 s | retries after failed fetches (at least 10 ms) |
/// | `max_retry_after` | 10 min | longest `Retry-After` honoured |
/// | `fetch_timeout` | 30 s | a source call taking longer fails (at least 100 ms) |
/// | `max_audiences` | 10,000 | audiences cached at most (at least 1) |
/// | `min_age_to_invalidate` | 30 s | a downstream `401` drops only a token this old |
///
/// Values outside a setting's range are brought into it when the cache is built (the fields
/// are public, so the setters' clamps can be bypassed): no value can make the cache panic.
///
/// From a file (feature `serde`): every field is a key of the same name, each optional;
/// durations as `"5s"`, `"10m"`; an unknown key is an error that names it.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct TokenCacheConfig {
    /// When a token is refreshed, as a fraction of its lifetime, unless its source says.
    pub refresh_ratio: f64,
    /// Random advance of the refresh, as a fraction of the lifetime (spreads replicas out).
    pub refresh_jitter: f64,
    /// A token is not attached once it expires within this margin (capped at a tenth of its
    /// lifetime), so it does not expire in flight.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub expiry_margin: Duration,
    /// First retry delay after a failed fetch; doubles per consecutive failure.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub backoff_min: Duration,
    /// Longest retry delay (a source's `Retry-After` may ask for longer).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_retry_after: Duration,
    /// A source call taking longer fails.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub fetch_timeout: Duration,
    /// How many audiences are cached at most.
    pub max_audiences: u64,
    /// A downstream `401` drops the token it carried only once that token is at least this old
    /// (counted from its fetch). A peer that refuses every token (it has not learnt a new key
    /// yet, or expects another `aud`) then costs at most one new token per audience per this
    /// period, not one source call (a vault `sign`) per request. Zero drops on every `401`.
    /// [`TokenCache::invalidate`](super::TokenCache::invalidate) is not limited.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub min_age_to_invalidate: Duration,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        TokenCacheConfig {
            refresh_ratio: 0.8,
            refresh_jitter: 0.05,
            expiry_margin: Duration::from_secs(5),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(600),
            fetch_timeout: Duration::from_secs(30),
            max_audiences: 10_000,
            min_age_to_invalidate: Duration::from_secs(30),
        }
    }
}

impl TokenCacheConfig {
    /// Sets the refresh point as a fraction of the lifetime (clamped to 0.1…1).
    pub fn refresh_ratio(mut self, ratio: f64) -> Self {
        self.refresh_ratio = ratio;
        self
    }

    /// Sets the refresh jitter (clamped to 0…0.5, and to half the refresh ratio).
    pub fn refresh_jitter(mut self, jitter: f64) -> Self {
        self.refresh_jitter = jitter;
        self
    }

    /// Sets the expiry margin.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.expiry_margin = margin;
        self
    }

    /// Sets the retry backoff bounds (`max` is at least `min`).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Sets the longest `Retry-After` honoured.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Sets the source call timeout (at least 100 ms).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Sets how many audiences are cached at most (at least 1).
    pub fn max_audiences(mut self, max: u64) -> Self {
        self.max_audiences = max;
        self
    }

    /// Sets how old a token must be for a downstream `401` to drop it.
    pub fn min_age_to_invalidate(mut self, age: Duration) -> Self {
        self.min_age_to_invalidate = age;
        self
    }

    /// The configuration with every value brought into its documented range.
    pub(crate) fn sanitized(mut self) -> Self {
        let finite = |value: f64, default: f64| if value.is_finite() { value } else { default };
        self.refresh_ratio = finite(self.refresh_ratio, 0.8).clamp(0.1, 1.0);
        self.refresh_jitter = finite(self.refresh_jitter, 0.0)
            .clamp(0.0, 0.5)
            .min(self.refresh_ratio / 2.0);
        self.backoff_min = self.backoff_min.max(Duration::from_millis(10));
        self.backoff_max = self.backoff_max.max(self.backoff_min);
        self.fetch_timeout = self.fetch_timeout.max(Duration::from_millis(100));
        self.max_audiences = self.max_audiences.max(1);
        self
    }

    /// Retries: every one is urgent (a token that is due has a fifth of its life left), and a
    /// throttled answer spreads them over `backoff_max`.
    pub(crate) fn retry_schedule(&self) -> RetrySchedule {
        RetrySchedule {
            backoff: Backoff::new(self.backoff_min, self.backoff_max),
            routine: None,
            routine_jitter: 0.0,
            max_retry_after: self.max_retry_after,
            throttle_spread: self.backoff_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_out_of_range_are_brought_into_it() {
        let config = TokenCacheConfig::default()
            .refresh_ratio(-1.0)
            .refresh_jitter(f64::INFINITY)
            .backoff(Duration::ZERO, Duration::ZERO)
            .fetch_timeout(Duration::ZERO)
            .max_audiences(0)
            .sanitized();
        assert_eq!(config.refresh_ratio, 0.1);
        assert_eq!(config.refresh_jitter, 0.0);
        assert_eq!(config.backoff_min, Duration::from_millis(10));
        assert_eq!(config.backoff_max, Duration::from_millis(10));
        assert_eq!(config.fetch_timeout, Duration::from_millis(100));
        assert_eq!(config.max_audiences, 1);
        let nan = TokenCacheConfig::default()
            .refresh_ratio(f64::NAN)
            .refresh_jitter(0.5)
            .sanitized();
        assert_eq!((nan.refresh_ratio, nan.refresh_jitter), (0.8, 0.4));
    }
}
