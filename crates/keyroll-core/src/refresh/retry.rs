//! When a failed load may be tried again.

use std::time::{Duration, SystemTime};

use crate::backoff::Backoff;
use crate::clock::later;

/// What a failed load says about trying again.
pub(crate) trait RetryHint {
    /// The delay the source asked for (`Retry-After`).
    fn retry_after(&self) -> Option<Duration>;
    /// Whether the source refused for load (HTTP 429): it is shared, and busy.
    fn throttled(&self) -> bool;
}

/// The retry delays after consecutive failures, for the two kinds of need.
///
/// - **Urgent** (nothing usable is cached, or what is cached is near its end): exponential
///   backoff from `backoff.min` to `backoff.max`, shortened by up to a fifth at random.
/// - **Routine** (what is cached still serves): `routine` after the first failure, a quarter
///   more after each further one up to one and a half times it, spread by ±`routine_jitter`:
///   an outage costs a source less than its normal refresh rate.
///
/// Both honour the source's `Retry-After` up to `max_retry_after`. After a throttled answer
/// (the source is shared and busy), urgent retries are spread at random over
/// `throttle_spread` (doubling for each further throttled answer, up to four times), so that
/// replicas throttled together do not come back together.
#[derive(Clone, Debug)]
pub(crate) struct RetrySchedule {
    pub(crate) backoff: Backoff,
    pub(crate) routine: Option<Duration>,
    pub(crate) routine_jitter: f64,
    pub(crate) max_retry_after: Duration,
    pub(crate) throttle_spread: Duration,
}

/// The earliest times of the next attempt, by need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPoints {
    pub(crate) urgent: SystemTime,
    pub(crate) routine: SystemTime,
}

impl RetrySchedule {
    /// The retry points after the `failures`-th consecutive failure at `now`, the last
    /// `throttled` of which were throttled answers.
    pub(crate) fn after_failure(
        &self,
        now: SystemTime,
        failures: u32,
        throttled: u32,
        retry_after: Option<Duration>,
    ) -> RetryPoints {
        let asked = retry_after.map_or(Duration::ZERO, |d| d.min(self.max_retry_after));
        let urgent = if throttled > 0 {
            let doublings = (throttled - 1).min(2);
            let spread = self.throttle_spread.saturating_mul(1 << doublings);
            asked
                .max(self.backoff.min)
                .saturating_add(scale(spread, fastrand::f64()))
        } else {
            self.backoff.with_jitter(0.2).delay(failures).max(asked)
        };
        let routine = match self.routine {
            Some(interval) => {
                let growth = (1.0 + 0.25 * f64::from(failures.saturating_sub(1))).min(1.5);
                spread(scale(interval, growth), self.routine_jitter).max(urgent)
            }
            None => urgent,
        };
        RetryPoints {
            urgent: later(now, urgent),
            routine: later(now, routine),
        }
    }
}

/// `delay` spread at random by ±`jitter` (a fraction, taken as 0…1).
pub(crate) fn spread(delay: Duration, jitter: f64) -> Duration {
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    scale(delay, 1.0 + (fastrand::f64() * 2.0 - 1.0) * jitter)
}

/// `delay × factor`, saturating (`Duration::mul_f64` panics on overflow).
pub(crate) fn scale(delay: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor.max(0.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn schedule() -> RetrySchedule {
        RetrySchedule {
            backoff: Backoff::new(S, 60 * S),
            routine: Some(300 * S),
            routine_jitter: 0.1,
            max_retry_after: 600 * S,
            throttle_spread: 120 * S,
        }
    }

    fn delays(points: RetryPoints, now: SystemTime) -> (Duration, Duration) {
        (
            points.urgent.duration_since(now).unwrap(),
            points.routine.duration_since(now).unwrap(),
        )
    }

    #[test]
    fn urgent_backs_off_and_routine_stays_near_the_refresh_rate() {
        let now = SystemTime::UNIX_EPOCH + 1000 * S;
        for failures in 1..=10 {
            let (urgent, routine) = delays(schedule().after_failure(now, failures, 0, None), now);
            let exact = Backoff::new(S, 60 * S).delay(failures);
            assert!(
                urgent <= exact && urgent >= exact.mul_f64(0.8),
                "{urgent:?}"
            );
            // 5 min, then a quarter more per failure up to 7.5 min, ±10 %.
            let planned = (300.0 * (1.0 + 0.25 * f64::from(failures - 1)).min(1.5)) as u64;
            let (low, high) = (planned * 9 / 10, planned * 11 / 10 + 1);
            let (low, high) = (Duration::from_secs(low), Duration::from_secs(high));
            assert!(routine >= low && routine <= high, "{failures}: {routine:?}");
        }
        // Without a routine interval, every retry is urgent.
        let urgent_only = RetrySchedule {
            routine: None,
            ..schedule()
        };
        let (urgent, routine) = delays(urgent_only.after_failure(now, 3, 0, None), now);
        assert_eq!(urgent, routine);
    }

    #[test]
    fn retry_after_is_honoured_up_to_its_cap_not_the_backoff() {
        let now = SystemTime::UNIX_EPOCH + 1000 * S;
        let (urgent, routine) = delays(schedule().after_failure(now, 1, 0, Some(90 * S)), now);
        assert_eq!(urgent, 90 * S, "not cut to backoff_max (60 s)");
        assert!(routine >= 270 * S);
        let (urgent, routine) = delays(schedule().after_failure(now, 1, 0, Some(7200 * S)), now);
        assert_eq!(
            (urgent, routine),
            (600 * S, 600 * S),
            "capped at max_retry_after"
        );
    }

    #[test]
    fn throttled_retries_spread_wider_each_time() {
        let now = SystemTime::UNIX_EPOCH + 1000 * S;
        for throttled in 1..=5 {
            let spread = 120 * S * (1 << (throttled - 1).min(2));
            for _ in 0..50 {
                let (urgent, _) = delays(
                    schedule().after_failure(now, throttled, throttled, Some(10 * S)),
                    now,
                );
                assert!(urgent >= 10 * S && urgent <= 10 * S + spread, "{urgent:?}");
            }
        }
    }

    #[test]
    fn huge_settings_saturate() {
        let now = SystemTime::UNIX_EPOCH + 1000 * S;
        let huge = RetrySchedule {
            backoff: Backoff::new(Duration::MAX, Duration::MAX),
            routine: Some(Duration::MAX),
            routine_jitter: 0.0,
            max_retry_after: Duration::MAX,
            throttle_spread: Duration::MAX,
        };
        let points = huge.after_failure(now, u32::MAX, 0, Some(Duration::MAX));
        assert!(points.urgent > now + 1_000_000_000 * S);
        assert_eq!(spread(S, f64::NAN), S);
        assert!(
            spread(Duration::MAX, 0.5) >= Duration::MAX / 3,
            "no overflow"
        );
        assert_eq!(scale(Duration::MAX, 2.0), Duration::MAX);
    }
}
