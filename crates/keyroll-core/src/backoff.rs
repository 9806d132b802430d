//! Exponential retry delays with optional jitter.
//!
//! ```
//! use std::time::Duration;
//! use keyroll_core::Backoff;
//!
//! let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
//! let delays: Vec<u64> = (1..=6).map(|n| backoff.delay(n).as_secs()).collect();
//! assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
//!
//! // With jitter 0.5, each delay is shortened by a random 0–50 %.
//! let jittered = backoff.with_jitter(0.5);
//! let first = jittered.delay(1);
//! assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
//! ```

use std::time::Duration;

/// Exponential backoff: `min` after the first failure, doubled per further failure, capped at
/// `max`, then shortened by a random fraction of up to `jitter` (so that replicas that failed
/// together do not retry together).
///
/// Jitter only ever shortens a delay, so no delay exceeds `max`; with jitter, one may be
/// shorter than `min`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The delay after the first failure (before jitter).
    pub min: Duration,
    /// The longest delay.
    pub max: Duration,
    /// The largest fraction (0…1) by which a delay is randomly shortened; 0 for none.
    pub jitter: f64,
}

impl Backoff {
    /// Delays from `min` to `max`, without jitter.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            jitter: 0.0,
        }
    }

    /// Sets the jitter fraction (taken as 0…1 when used).
    pub const fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay after `failures` consecutive failures (1 for the first; 0 counts as 1):
    /// `min × 2^(failures − 1)`, at most `max`, shortened by a random fraction up to `jitter`.
    pub fn delay(&self, failures: u32) -> Duration {
        let mut delay = self.min;
        for _ in 1..failures {
            if delay >= self.max || delay.is_zero() {
                break;
            }
            delay = delay.saturating_mul(2);
        }
        let delay = delay.min(self.max);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if jitter == 0.0 {
            delay
        } else {
            delay.mul_f64(1.0 - jitter * fastrand::f64())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_max() {
        let backoff = Backoff::new(100 * MS, 1000 * MS);
        let delays: Vec<Duration> = (0..=6).map(|n| backoff.delay(n)).collect();
        assert_eq!(
            delays,
            [
                100 * MS,
                100 * MS,
                200 * MS,
                400 * MS,
                800 * MS,
                1000 * MS,
                1000 * MS
            ]
        );
        assert_eq!(backoff.delay(u32::MAX), 1000 * MS);
    }

    #[test]
    fn large_ratios_and_edges() {
        let backoff = Backoff::new(Duration::from_nanos(1), Duration::from_secs(3600));
        assert_eq!(backoff.delay(33), Duration::from_nanos(1 << 32));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(3600));
        assert_eq!(
            Backoff::new(Duration::ZERO, MS).delay(u32::MAX),
            Duration::ZERO
        );
        // `max` below `min` caps.
        assert_eq!(Backoff::new(10 * MS, 5 * MS).delay(1), 5 * MS);
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.delay(u32::MAX), Duration::MAX);
    }

    #[test]
    fn jitter_only_shortens() {
        let backoff = Backoff::new(100 * MS, 400 * MS).with_jitter(0.2);
        for failures in 1..=5 {
            let exact = Backoff::new(100 * MS, 400 * MS).delay(failures);
            for _ in 0..100 {
                let delay = backoff.delay(failures);
                assert!(delay <= exact && delay >= exact.mul_f64(0.8), "{delay:?}");
            }
        }
        for jitter in [f64::NAN, f64::INFINITY, -1.0] {
            let plain = Backoff::new(100 * MS, 400 * MS).with_jitter(jitter);
            assert_eq!(plain.delay(2), 200 * MS, "{jitter}");
        }
        let full = Backoff::new(100 * MS, 400 * MS).with_jitter(5.0);
        assert!(full.delay(1) <= 100 * MS);
    }
}
