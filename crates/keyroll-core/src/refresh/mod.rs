//! The one refresh engine that [`KeyCache`](crate::KeyCache) and
//! [`TokenCache`](crate::TokenCache) (and through it Entra ID tokens) are built on.
//!
//! - [`Slot`]: one value with single-flight loads, stale-if-error and retry points.
//! - [`RetrySchedule`]: backoff that grows across consecutive failures, routine retries at
//!   about the refresh rate, `Retry-After` honoured up to a cap, throttled answers spread.
//! - [`Background`]: the owned background task, started from async paths only, restarted
//!   when its runtime went away.
//! - [`Engine`]: what these share per cache: clock, sleep, runtime, schedule, timeout, counters.
//!
//! Nothing here spawns from a synchronous path: hot paths read the slot lock-free and at most
//! wake the background task, which works with or without a runtime.

mod background;
mod retry;
mod slot;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::runtime::Handle;

pub(crate) use self::background::{Background, Tick};
pub(crate) use self::retry::{RetryHint, RetrySchedule, scale, spread};
#[cfg(feature = "metrics")]
pub(crate) use self::slot::Observer;
pub(crate) use self::slot::{
    Errors, Expiring, Failure, Flight, Loader, Need, Outcome, Slot, Start,
};
use crate::clock::{Clock, Sleep};

/// What the slots and the background task of one cache share.
pub(crate) struct Engine {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sleep: Arc<dyn Sleep>,
    runtime: Option<Handle>,
    pub(crate) retry: RetrySchedule,
    /// A load taking longer fails.
    pub(crate) timeout: Duration,
    /// Loads started.
    pub(crate) loads: AtomicU64,
    /// Loads that failed (timed out and panicked ones included).
    pub(crate) failures: AtomicU64,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("clock", &self.clock)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub(crate) fn new(time: Time, retry: RetrySchedule, timeout: Duration) -> Engine {
        Engine {
            clock: time.clock,
            sleep: time.sleep,
            runtime: time.runtime,
            retry,
            timeout,
            loads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Where loads and the background task run: the runtime given at build, else the
    /// caller's; `None` outside any runtime.
    pub(crate) fn runtime(&self) -> Option<Handle> {
        self.runtime.clone().or_else(|| Handle::try_current().ok())
    }
}

/// The clock, the sleep and the runtime a cache's builder collects.
#[derive(Clone)]
pub(crate) struct Time {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sleep: Arc<dyn Sleep>,
    pub(crate) runtime: Option<Handle>,
}

impl Default for Time {
    fn default() -> Self {
        Time {
            clock: Arc::new(crate::SystemClock),
            sleep: Arc::new(crate::TokioSleep),
            runtime: None,
        }
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Time")
            .field("clock", &self.clock)
            .field("sleep", &self.sleep)
            .field("runtime", &self.runtime.is_some())
            .finish()
    }
}
