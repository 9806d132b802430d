//! The background refresher: one owned task per cache, restarted when its runtime is gone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use futures_util::future::select;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::Engine;
use crate::lock;
use crate::source::BoxFuture;

/// What the background task runs: everything due now, then when to run again (`None`: only
/// when woken).
pub(crate) trait Tick: Send + Sync + 'static {
    fn tick(self: Arc<Self>) -> BoxFuture<'static, Option<SystemTime>>;
}

/// Owns a cache's background task.
///
/// The task is started from an async path of the cache (never from a synchronous one, which
/// may run outside any runtime), on the engine's runtime: the handle given at build, else
/// the caller's. It holds only a weak reference to its owner, so it ends when the cache is
/// dropped (and is aborted then); when its runtime shuts down, its future is dropped and
/// [`is_running`](Self::is_running) turns false, so the next async use starts it again on a
/// runtime that is alive. Synchronous paths only [`wake`](Self::wake) it.
#[derive(Debug, Default)]
pub(crate) struct Background {
    wake: Arc<Notify>,
    running: Arc<AtomicBool>,
    task: Mutex<Option<AbortHandle>>,
    starts: AtomicU64,
}

impl Background {
    /// Whether the task runs (a plain load: cheap on a hot path).
    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// How many times the task was started (more than once: a runtime went away under it).
    pub(crate) fn starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }

    /// Makes the task tick soon; safe anywhere, with or without a runtime.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Starts the task unless it runs; `false` when there is no runtime to run it on.
    pub(crate) fn ensure(&self, engine: &Arc<Engine>, owner: Weak<dyn Tick>) -> bool {
        if self.is_running() {
            return true;
        }
        let mut task = lock(&self.task);
        if self.is_running() {
            return true;
        }
        let Some(runtime) = engine.runtime() else {
            return false;
        };
        self.running.store(true, Ordering::Release);
        let running = Running(Arc::clone(&self.running));
        let handle = runtime.spawn(run(
            owner,
            Arc::clone(&self.wake),
            Arc::clone(engine),
            running,
        ));
        if let Some(old) = task.replace(handle.abort_handle()) {
            old.abort();
        }
        self.starts.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// Marks the task stopped when its future is dropped: it returned, was aborted, or its
/// runtime shut down.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn run(owner: Weak<dyn Tick>, wake: Arc<Notify>, engine: Arc<Engine>, _running: Running) {
    loop {
        let Some(tick) = owner.upgrade().map(Tick::tick) else {
            return;
        };
        let next = tick.await;
        // A wake that came while ticking left a permit: this completes at once then.
        let woken = wake.notified();
        match next {
            Some(at) => {
                // A floor, so that a tick that found nothing to do yet cannot spin.
                let wait = at
                    .duration_since(engine.clock.now())
                    .unwrap_or_default()
                    .max(Duration::from_millis(10));
                let _ = select(Box::pin(woken), engine.sleep.sleep(wait)).await;
            }
            None => woken.await,
        }
    }
}
