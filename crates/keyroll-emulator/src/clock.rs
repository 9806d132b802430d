//! The emulator's clock: the real time plus an offset that the admin API can move, so tests can
//! make versions old enough to roll over without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A movable clock shared by every part of one emulator.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clock {
    offset_ms: Arc<AtomicI64>,
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
        real_now_ms().saturating_add(self.offset_ms.load(Ordering::SeqCst))
    }

    /// Sets the emulated time (Unix seconds); it keeps running from there.
    pub(crate) fn set(&self, unix_seconds: i64) {
        let target = unix_seconds.saturating_mul(1000);
        self.offset_ms
            .store(target.saturating_sub(real_now_ms()), Ordering::SeqCst);
    }

    /// Moves the emulated time forward (or backward with a negative amount).
    pub(crate) fn advance(&self, seconds: i64) {
        self.offset_ms
            .fetch_add(seconds.saturating_mul(1000), Ordering::SeqCst);
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
}
