//! Key cache settings.

use std::time::Duration;

use crate::Backoff;
use crate::policy::RotationPolicy;

/// How a [`KeyCache`](crate::KeyCache) refreshes, and how long it trusts what it has.
///
/// | setting | default |
/// |---|---|
/// | `refresh_interval` | 5 min |
/// | `refresh_jitter` | ±10 % |
/// | `unknown_kid_cooldown` | 30 s |
/// | `negative_ttl` / `negative_capacity` | 5 min / 10,000 kids |
/// | `backoff_min` … `backoff_max` | 1 s … 60 s |
/// | `max_stale` | 24 h |
/// | `load_timeout` | 30 s |
/// | `policy` | propagation 1 h, leeway 60 s |
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KeyCacheConfig {
    /// Time between background refreshes.
    pub refresh_interval: Duration,
    /// Random spread of each refresh delay, as a fraction (0.1 = ±10 %), so replicas spread out.
    pub refresh_jitter: f64,
    /// At most one refresh triggered by unknown kids per this period.
    pub unknown_kid_cooldown: Duration,
    /// How long a kid that a refresh did not find is remembered as unknown.
    pub negative_ttl: Duration,
    /// How many unknown kids are remembered at most.
    pub negative_capacity: usize,
    /// First retry delay after a failed refresh; doubles per failure.
    pub backoff_min: Duration,
    /// Longest retry delay after failed refreshes.
    pub backoff_max: Duration,
    /// How long the last good set is served while refreshes fail; past it, keys are unavailable.
    pub max_stale: Duration,
    /// Longest a source load may take before it counts as failed (a hung connection must
    /// not hold every waiting request).
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
            max_stale: Duration::from_secs(24 * 3600),
            load_timeout: Duration::from_secs(30),
            policy: RotationPolicy::default(),
        }
    }
}

impl KeyCacheConfig {
    /// Sets the refresh interval.
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Sets the jitter fraction (clamped to 0…0.5).
    pub fn with_refresh_jitter(mut self, jitter: f64) -> Self {
        self.refresh_jitter = jitter.clamp(0.0, 0.5);
        self
    }

    /// Sets the unknown-kid cooldown.
    pub fn with_unknown_kid_cooldown(mut self, cooldown: Duration) -> Self {
        self.unknown_kid_cooldown = cooldown;
        self
    }

    /// Sets how long and how many unknown kids are remembered.
    pub fn with_negative_cache(mut self, ttl: Duration, capacity: usize) -> Self {
        self.negative_ttl = ttl;
        self.negative_capacity = capacity;
        self
    }

    /// Sets the retry backoff bounds.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// Sets how long the last good set is served while refreshes fail.
    pub fn with_max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// Sets the load timeout.
    pub fn with_load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }

    /// Sets the rotation policy.
    pub fn with_policy(mut self, policy: RotationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The configuration with values that would hot-loop or panic brought into range (fields
    /// are public, so the builders' clamps can be bypassed).
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
        self
    }

    /// `delay` spread by ±jitter.
    pub(crate) fn jittered(&self, delay: Duration) -> Duration {
        let spread = (fastrand::f64() * 2.0 - 1.0) * self.refresh_jitter;
        delay.mul_f64(1.0 + spread)
    }

    /// The retry delay after `failures` consecutive failures (≥ 1).
    /// (The exponential part is [`Backoff`]; the spread is this cache's ±`refresh_jitter`.)
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let delay = Backoff::new(self.backoff_min, self.backoff_max).delay(failures);
        self.jittered(delay)
            .clamp(self.backoff_min, self.backoff_max)
    }
}
