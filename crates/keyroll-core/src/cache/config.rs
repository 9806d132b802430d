//! Key cache settings.

use std::time::Duration;

use crate::Backoff;
use crate::policy::RotationPolicy;
use crate::refresh::{RetrySchedule, scale};

/// How a [`KeyCache`](crate::KeyCache) refreshes, retries, and how long it trusts what it has.
///
/// | setting | default | |
/// |---|---|---|
/// | `refresh_interval` | 5 min | time between background refreshes (at least 100 ms) |
/// | `refresh_jitter` | ±10 % | spread of each refresh and routine retry (0…50 %); five times that for the first refresh after a cold load |
/// | `unknown_kid_cooldown` | 30 s | at most one unknown-kid refresh per this (at least 100 ms) |
/// | `negative_ttl` / `negative_capacity` | 5 min / 10,000 kids | unknown kids remembered |
/// | `backoff_min` … `backoff_max` | 1 s … 60 s | urgent retries (at least 10 ms) |
/// | `max_retry_after` | 10 min | longest `Retry-After` honoured |
/// | `throttle_spread` | 6 min | urgent retries after a 429 are spread over this |
/// | `max_stale` | 24 h | last good set served while refreshes fail (at least the interval) |
/// | `load_timeout` | 30 s | a load taking longer fails (at least 100 ms) |
/// | `policy` | propagation 1 h, leeway 60 s | which version signs, which validate |
///
/// Values outside a setting's range are brought into it when the cache is built (the fields
/// are public, so the setters' clamps can be bypassed), so no value can make the cache panic
/// or spin; `Duration::MAX` means "never" where a duration is a limit.
///
/// # Retries
///
/// After a failed load the cache keeps the last good set and tries again:
/// - **routine**, while that set is fresh (younger than nine tenths of `max_stale`):
///   `refresh_interval` after the first failure, a quarter more after each further one, up
///   to one and a half intervals, so a fleet of replicas asks a failing vault less often than
///   a working one;
/// - **urgent**, when nothing is loaded yet, an unknown kid asks for a refresh, or the set
///   nears `max_stale`: exponential backoff from `backoff_min` to `backoff_max`, growing
///   across consecutive failures. A throttled answer (429) spreads urgent retries at random
///   over `throttle_spread` (doubling for each further 429, up to four times): replicas
///   throttled together, say a fleet restarting at once, come back apart.
///
/// Both wait at least the source's `Retry-After`, up to `max_retry_after`.
///
/// # From a file (feature `serde`)
///
/// Every field is a key of the same name, each optional (a missing one keeps its default);
/// durations are written as `"30s"`, `"5m"`, `"1h 30m"`; an unknown key is an error that names
/// it. The values are brought into range when the cache is built, as the setters' are.
///
/// ```toml
/// refresh_interval = "5m"
/// max_stale = "12h"
/// [policy]
/// propagation = "2h"
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct KeyCacheConfig {
    /// Time between background refreshes.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub refresh_interval: Duration,
    /// Random spread of each refresh delay, as a fraction (0.1 = ±10 %), so replicas spread out.
    pub refresh_jitter: f64,
    /// At most one refresh triggered by unknown kids per this period.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub unknown_kid_cooldown: Duration,
    /// How long a kid that a refresh did not find is remembered as unknown.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub negative_ttl: Duration,
    /// How many unknown kids are remembered at most.
    pub negative_capacity: usize,
    /// First urgent retry delay after a failed load; doubles per consecutive failure.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub backoff_min: Duration,
    /// Longest urgent retry delay (a source's `Retry-After` may ask for longer).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured; a source asking for longer is asked again after this.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_retry_after: Duration,
    /// After a throttled answer (429), urgent retries are spread at random over this.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub throttle_spread: Duration,
    /// How long the last good set is served while refreshes fail; past it, keys are unavailable.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_stale: Duration,
    /// Longest a source load may take before it counts as failed (a hung connection must
    /// not hold every waiting request).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub load_timeout: Duration,
    /// Which version signs and which validate.
    pub policy: RotationPolicy,
}

impl Default for KeyCacheConfig {
    fn default() -> Self {
        KeyCacheConfig {
            refresh_interval: Duration::from_secs(300),
            refresh_jitter: 0.1,
            unknown_kid_cooldown: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(300),
            negative_capacity: 10_000,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(600),
            throttle_spread: Duration::from_secs(360),
            max_stale: Duration::from_secs(24 * 3600),
            load_timeout: Duration::from_secs(30),
            policy: RotationPolicy::default(),
        }
    }
}

impl KeyCacheConfig {
    /// Sets the refresh interval (at least 100 ms).
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Sets the jitter fraction (clamped to 0…0.5).
    pub fn refresh_jitter(mut self, jitter: f64) -> Self {
        self.refresh_jitter = jitter;
        self
    }

    /// Sets the unknown-kid cooldown (at least 100 ms).
    pub fn unknown_kid_cooldown(mut self, cooldown: Duration) -> Self {
        self.unknown_kid_cooldown = cooldown;
        self
    }

    /// Sets how long and how many unknown kids are remembered (capacity 0: none).
    pub fn negative_cache(mut self, ttl: Duration, capacity: usize) -> Self {
        self.negative_ttl = ttl;
        self.negative_capacity = capacity;
        self
    }

    /// Sets the urgent retry backoff bounds (`max` is at least `min`).
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

    /// Sets how widely urgent retries are spread after a throttled answer (zero: not at all).
    pub fn throttle_spread(mut self, spread: Duration) -> Self {
        self.throttle_spread = spread;
        self
    }

    /// Sets how long the last good set is served while refreshes fail (at least the
    /// refresh interval).
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// Sets the load timeout (at least 100 ms).
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }

    /// Sets the rotation policy.
    pub fn policy(mut self, policy: RotationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The configuration with every value brought into its documented range.
    pub(crate) fn sanitized(mut self) -> Self {
        const FLOOR: Duration = Duration::from_millis(100);
        self.refresh_jitter = if self.refresh_jitter.is_finite() {
            self.refresh_jitter.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self.refresh_interval = self.refresh_interval.max(FLOOR);
        self.unknown_kid_cooldown = self.unknown_kid_cooldown.max(FLOOR);
        self.backoff_min = self.backoff_min.max(Duration::from_millis(10));
        self.backoff_max = self.backoff_max.max(self.backoff_min);
        self.load_timeout = self.load_timeout.max(FLOOR);
        self.max_stale = self.max_stale.max(self.refresh_interval);
        self
    }

    /// Past this age a set is near `max_stale`, and retries become urgent.
    pub(crate) fn urgent_age(&self) -> Duration {
        scale(self.max_stale, 0.9)
    }

    pub(crate) fn retry_schedule(&self) -> RetrySchedule {
        RetrySchedule {
            backoff: Backoff::new(self.backoff_min, self.backoff_max),
            routine: Some(self.refresh_interval),
            routine_jitter: self.refresh_jitter,
            max_retry_after: self.max_retry_after,
            throttle_spread: self.throttle_spread,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_out_of_range_are_brought_into_it() {
        let mut config = KeyCacheConfig::default()
            .refresh_interval(Duration::ZERO)
            .refresh_jitter(f64::NAN)
            .backoff(Duration::from_secs(9), Duration::ZERO)
            .max_stale(Duration::ZERO)
            .load_timeout(Duration::ZERO);
        config.unknown_kid_cooldown = Duration::ZERO;
        let config = config.sanitized();
        assert_eq!(config.refresh_interval, Duration::from_millis(100));
        assert_eq!(config.refresh_jitter, 0.0);
        assert_eq!(config.backoff_max, Duration::from_secs(9));
        assert_eq!(config.max_stale, config.refresh_interval);
        assert_eq!(config.load_timeout, Duration::from_millis(100));
        assert_eq!(config.unknown_kid_cooldown, Duration::from_millis(100));
        let huge = KeyCacheConfig::default().refresh_jitter(7.0).sanitized();
        assert_eq!(huge.refresh_jitter, 0.5);
        assert_eq!(
            KeyCacheConfig::default()
                .max_stale(Duration::MAX)
                .urgent_age(),
            Duration::MAX.mul_f64(0.9)
        );
    }
}
