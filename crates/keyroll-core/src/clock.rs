//! Injectable time: wall clocks and sleeps, so rotation, refresh and expiry are testable
//! without waiting.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use keyroll_core::{Clock, ManualClock, Sleep, TokioSleep};
//!
//! let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
//! clock.advance(Duration::from_secs(60));
//! assert_eq!(clock.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(1_060));
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! // The caches wait with a `Sleep`: tokio's timer by default, paused in tests.
//! let before = tokio::time::Instant::now();
//! TokioSleep.sleep(Duration::from_secs(3600)).await;
//! assert_eq!(before.elapsed(), Duration::from_secs(3600));
//! # });
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time rounded up: never earlier than [`now`](Self::now) would answer, at
    /// most a few milliseconds later, and cheaper to read where the system keeps a coarse
    /// clock. For hot-path deadline checks that read [`now`](Self::now) only when they are
    /// close to the deadline. Default: `now()`.
    fn now_rounded_up(&self) -> SystemTime {
        self.now()
    }
}

/// The system's clock. On Linux, [`Clock::now_rounded_up`] reads the kernel's coarse wall
/// clock (a few nanoseconds, against tens for a precise reading) plus a 50 ms slack.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    #[cfg(target_os = "linux")]
    fn now_rounded_up(&self) -> SystemTime {
        coarse::now_rounded_up()
    }
}

#[cfg(target_os = "linux")]
mod coarse {
    use std::sync::OnceLock;
    use std::time::{Duration, SystemTime};

    use rustix::time::{ClockId, Timespec, clock_getres, clock_gettime};

    /// The coarse clock lags the true time by one tick (its resolution, 1–10 ms), more when
    /// the CPU keeping time is held up (a busy virtual machine): 50 ms, or ten ticks, cover
    /// that. The cost of a large slack is nothing: a check within it of its deadline reads
    /// the precise clock.
    fn slack() -> Duration {
        static SLACK: OnceLock<Duration> = OnceLock::new();
        *SLACK.get_or_init(|| {
            let tick = to_duration(clock_getres(ClockId::RealtimeCoarse))
                .unwrap_or(Duration::from_millis(10));
            (tick * 10).max(Duration::from_millis(50))
        })
    }

    fn to_duration(time: Timespec) -> Option<Duration> {
        let seconds = u64::try_from(time.tv_sec).ok()?;
        let nanos = u32::try_from(time.tv_nsec).ok()?;
        (nanos < 1_000_000_000).then(|| Duration::new(seconds, nanos))
    }

    pub(super) fn now_rounded_up() -> SystemTime {
        match to_duration(clock_gettime(ClockId::RealtimeCoarse)) {
            Some(since_epoch) => SystemTime::UNIX_EPOCH + since_epoch + slack(),
            None => SystemTime::now(),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rounded_up_is_never_before_now_and_close_to_it() {
            for _ in 0..10_000 {
                let before = SystemTime::now();
                let rounded = now_rounded_up();
                assert!(rounded >= before);
                let ahead = rounded
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                assert!(ahead <= slack(), "{ahead:?} ahead");
            }
        }
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = crate::lock(&self.now);
        *now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: SystemTime) {
        *crate::lock(&self.now) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *crate::lock(&self.now)
    }
}

/// A wall clock driven by tokio's clock: the system time at creation plus the tokio time
/// elapsed since. Under `tokio::time::pause()` it moves with `tokio::time::advance` and with
/// auto-advance, so background refresh timers and the rotation policy see the same time.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start_wall: SystemTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock starting at the given wall time.
    pub fn starting_at(start_wall: SystemTime) -> Self {
        TokioClock {
            start_wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::starting_at(SystemTime::now())
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.start_wall + self.start.elapsed()
    }
}

/// Waits: the timer behind every delay of the caches (refresh schedules, backoff, load
/// timeouts), injected like the [`Clock`] (the aws-smithy `AsyncSleep` model).
pub trait Sleep: Send + Sync + Debug {
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
}

/// tokio's timer (`tokio::time::sleep`), so paused time moves it in tests.
///
/// Outside a tokio runtime there is no timer to wait on: the sleep then never completes (a
/// load run outside a runtime has no timeout, and nothing is scheduled), rather than panic.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioSleep;

impl Sleep for TokioSleep {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Box::pin(std::future::pending());
        }
        // `Duration::MAX` would overflow tokio's deadline: a year is "never" for a cache.
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        Box::pin(tokio::time::sleep(duration.min(YEAR)))
    }
}

/// `time + duration`, or the far future (about the year 10,700) when that does not fit: a
/// configured `Duration::MAX` means "never", not a panic.
pub(crate) fn later(time: SystemTime, duration: Duration) -> SystemTime {
    time.checked_add(duration)
        .unwrap_or_else(|| SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 38))
}

/// Seconds since the Unix epoch (0 for times before it).
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The time `seconds` after the Unix epoch.
pub fn from_unix_seconds(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}
