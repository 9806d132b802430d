//! The emulator's clock: the real time plus an offset that the admin API can move, so tests can
//! make versions old enough to roll over without waiting; it can also be frozen, so a test that
//! counts requests in a window never sees the window end while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A movable clock shared by every part of one emulator.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    offset_ms: Arc<AtomicI64>,
    /// The frozen time in Unix milliseconds; `NOT_FROZEN` while the clock runs.
    frozen_ms: Arc<AtomicI64>,
}

const NOT_FROZEN: i64 = i64::MIN;

impl Default for Clock {
    fn default() -> Self {
        Clock {
            offset_ms: Arc::default(),
            frozen_ms: Arc::new(AtomicI64::new(NOT_FROZEN)),
        }
    }
}

/// The real time in Unix milliseconds.
pub(crate) fn real_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Clock {
    /// The emulated time in Unix seconds.
    pub(crate) fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// The emulated time in Unix milliseconds.
    pub(crate) fn now_ms(&self) -> i64 {
        match self.frozen_ms.load(Ordering::SeqCst) {
            NOT_FROZEN => real_now_ms().saturating_add(self.offset_ms.load(Ordering::SeqCst)),
            frozen => frozen,
        }
    }

    /// Sets the emulated time (Unix seconds); it keeps running from there unless frozen.
    pub(crate) fn set(&self, unix_seconds: i64) {
        let target = unix_seconds.saturating_mul(1000);
        self.offset_ms
            .store(target.saturating_sub(real_now_ms()), Ordering::SeqCst);
        if self.is_frozen() {
            self.frozen_ms.store(target, Ordering::SeqCst);
        }
    }

    /// Moves the emulated time forward (or backward with a negative amount).
    pub(crate) fn advance(&self, seconds: i64) {
        let by = seconds.saturating_mul(1000);
        self.offset_ms.fetch_add(by, Ordering::SeqCst);
        if self.is_frozen() {
            self.frozen_ms.fetch_add(by, Ordering::SeqCst);
        }
    }

    /// Stops the emulated time where it is (`true`) or lets it run on from there (`false`).
    pub(crate) fn freeze(&self, frozen: bool) {
        let now = self.now_ms();
        if frozen {
            self.frozen_ms.store(now, Ordering::SeqCst);
        } else if self.is_frozen() {
            self.offset_ms
                .store(now.saturating_sub(real_now_ms()), Ordering::SeqCst);
            self.frozen_ms.store(NOT_FROZEN, Ordering::SeqCst);
        }
    }

    pub(crate) fn is_frozen(&self) -> bool {
        self.frozen_ms.load(Ordering::SeqCst) != NOT_FROZEN
    }

    /// The current offset from the real time, in whole seconds (negative when behind).
    pub(crate) fn offset_seconds(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_advance_move_the_emulated_time() {
        let c = Clock::default();
        c.set(1_000_000);
        let t = c.now();
        assert!((1_000_000..1_000_002).contains(&t));
        c.advance(86_400);
        assert!((1_086_400..1_086_402).contains(&c.now()));
        assert!(c.offset_seconds() < -86_400, "1970 is behind the real time");
        c.advance(-86_400);
        assert!((1_000_000..1_000_002).contains(&c.now()));
    }

    #[test]
    fn a_frozen_clock_moves_only_when_told() {
        let c = Clock::default();
        c.set(2_000_000);
        c.freeze(true);
        let t = c.now_ms();
        assert!(c.is_frozen());
        assert_eq!(c.now_ms(), t, "frozen");
        c.advance(10);
        assert_eq!(c.now_ms(), t + 10_000);
        c.set(3_000_000);
        assert_eq!(c.now_ms(), 3_000_000_000);
        c.freeze(false);
        assert!(!c.is_frozen());
        assert!(
            (3_000_000_000..3_000_002_000).contains(&c.now_ms()),
            "runs on from there"
        );
    }
}
