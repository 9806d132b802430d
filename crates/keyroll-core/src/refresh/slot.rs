//! One refreshed value: single-flight loads, stale-if-error, and when to try again.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwapOption, Guard};
use futures_util::FutureExt as _;
use futures_util::future::{Either, Shared, select};

use super::Engine;
use super::retry::{RetryHint, RetryPoints};
use crate::lock;
use crate::source::BoxFuture;

/// What the engine needs to know of a loaded value.
pub(crate) trait Expiring {
    /// Until when it may be served; past this, callers wait for a new one or fail.
    fn usable_until(&self) -> SystemTime;
}

/// Why a load is wanted, which decides which retry point holds it back after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// The cached value still serves: retry at about the normal refresh rate.
    Routine,
    /// Nothing usable is cached, or it is near its end: retry with backoff.
    Urgent,
    /// Asked for explicitly (`refresh_now`): no retry point holds it back.
    Now,
}

/// What every waiter of one load gets.
pub(crate) enum Outcome<V, E> {
    Loaded(Arc<V>),
    Failed(Arc<E>),
    /// The load's task was dropped before it finished (its runtime shut down).
    Cancelled,
}

impl<V, E> Clone for Outcome<V, E> {
    fn clone(&self) -> Self {
        match self {
            Outcome::Loaded(value) => Outcome::Loaded(Arc::clone(value)),
            Outcome::Failed(error) => Outcome::Failed(Arc::clone(error)),
            Outcome::Cancelled => Outcome::Cancelled,
        }
    }
}

/// A running load, shared by everyone who waits for it.
pub(crate) type Flight<V, E> = Shared<BoxFuture<'static, Outcome<V, E>>>;

/// Loads a new value, given the current one (if any).
pub(crate) type Loader<V, E> =
    dyn Fn(Option<Arc<V>>) -> BoxFuture<'static, Result<V, E>> + Send + Sync;

/// Told how each load of a slot ended (the result, and how long it took on the engine's clock;
/// `None` for a load that panicked): the metrics hook.
pub(crate) type Observer<V, E> = dyn Fn(&Result<Arc<V>, Arc<E>>, Option<Duration>) + Send + Sync;

/// What [`Slot::start`] did.
pub(crate) enum Start<V, E> {
    /// A load runs (started now, or joined): await it.
    Flight(Flight<V, E>),
    /// A failure's retry point has not come yet: no load until `until`.
    Waiting {
        until: SystemTime,
        error: Option<Arc<E>>,
    },
}

/// Why [`Slot::load`] has no new value.
pub(crate) enum Failure<E> {
    /// The load failed (or timed out, or panicked).
    Failed(Arc<E>),
    /// A failure's retry point has not come yet; the last error, if any.
    Waiting { error: Option<Arc<E>> },
}

impl<E> Failure<E> {
    /// The error behind it, if there was one.
    pub(crate) fn error(self) -> Option<Arc<E>> {
        match self {
            Failure::Failed(error) => Some(error),
            Failure::Waiting { error, .. } => error,
        }
    }
}

/// How a slot names its failures that are not the source's own.
#[derive(Clone, Copy)]
pub(crate) struct Errors<E> {
    /// The load took longer than the engine's timeout.
    pub(crate) timed_out: fn(&str, Duration) -> E,
    /// The load panicked, or its runtime shut down under it twice.
    pub(crate) lost: fn(&str, &'static str) -> E,
}

/// One value, refreshed by single-flight loads: read lock-free, replaced whole by each
/// successful load, kept when a load fails (stale-if-error: the owner decides how long it
/// serves, through [`Expiring::usable_until`]).
pub(crate) struct Slot<V, E> {
    label: Arc<str>,
    value: ArcSwapOption<V>,
    /// Bumped after every change of `value` (and on retiring): a reader that remembered the
    /// value with the version it read before it may keep using it while this is unchanged.
    version: AtomicU64,
    /// Set when the owner let go of the slot (the token cache evicted its audience).
    retired: AtomicBool,
    state: Mutex<State<V, E>>,
    errors: Errors<E>,
    observer: Option<Arc<Observer<V, E>>>,
}

struct State<V, E> {
    flight: Option<Flight<V, E>>,
    failures: u32,
    throttled: u32,
    last_error: Option<Arc<E>>,
    failed_at: Option<SystemTime>,
    /// The first failure since the last good load.
    failing_since: Option<SystemTime>,
    retry: Option<RetryPoints>,
}

/// The failures of a slot since its last good load, read at once.
pub(crate) struct Failures<E> {
    /// How many loads failed in a row.
    pub(crate) count: u32,
    /// When the first of them failed.
    pub(crate) since: Option<SystemTime>,
    /// When the last of them failed.
    pub(crate) last_at: Option<SystemTime>,
    /// The last one's error.
    pub(crate) last_error: Option<Arc<E>>,
}

impl<V, E> fmt::Debug for Slot<V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Slot")
            .field("label", &self.label)
            .field("loaded", &self.value.load().is_some())
            .field("loading", &state.flight.is_some())
            .field("failures", &state.failures)
            .finish()
    }
}

impl<V, E> Slot<V, E>
where
    V: Expiring + Send + Sync + 'static,
    E: RetryHint + std::error::Error + Send + Sync + 'static,
{
    /// An empty slot; `label` names it in logs and in the errors it makes itself.
    pub(crate) fn new(label: impl Into<Arc<str>>, errors: Errors<E>) -> Self {
        Slot {
            label: label.into(),
            value: ArcSwapOption::empty(),
            version: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            state: Mutex::new(State {
                flight: None,
                failures: 0,
                throttled: 0,
                last_error: None,
                failed_at: None,
                failing_since: None,
                retry: None,
            }),
            errors,
            observer: None,
        }
    }

    /// Tells `observer` how each load ends.
    #[cfg(feature = "metrics")]
    pub(crate) fn observed(mut self, observer: Arc<Observer<V, E>>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The current value, lock-free, whether or not it is still usable.
    pub(crate) fn value(&self) -> Guard<Option<Arc<V>>> {
        self.value.load()
    }

    /// The current value, as an owned reference.
    pub(crate) fn value_full(&self) -> Option<Arc<V>> {
        self.value.load_full()
    }

    /// The current value with the version it is at least as new as (the version is read
    /// first): while [`version`](Self::version) still answers that, the value is current.
    pub(crate) fn versioned(&self) -> (u64, Option<Arc<V>>) {
        let version = self.version();
        (version, self.value.load_full())
    }

    /// See [`versioned`](Self::versioned).
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks the slot let go of by its owner (and changes its version).
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.changed();
    }

    /// Whether [`retire`](Self::retire) was called.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Replaces `current` with `with` if it is still the current value; whether it was.
    pub(crate) fn replace(&self, current: &Arc<V>, with: Arc<V>) -> bool {
        let previous = self.value.compare_and_swap(current, Some(with));
        let replaced = previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, current));
        if replaced {
            self.changed();
        }
        replaced
    }

    /// Drops `value` if it is still the current one: the next caller loads anew.
    pub(crate) fn discard(&self, value: &Arc<V>) -> bool {
        let previous = self.value.compare_and_swap(value, None::<Arc<V>>);
        let dropped = previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, value));
        if dropped {
            self.changed();
        }
        dropped
    }

    /// Failed loads since the last good one.
    pub(crate) fn failures(&self) -> u32 {
        lock(&self.state).failures
    }

    /// The error of the last load, if it failed.
    pub(crate) fn last_error(&self) -> Option<Arc<E>> {
        lock(&self.state).last_error.clone()
    }

    /// When the last load failed, if it did.
    pub(crate) fn failed_at(&self) -> Option<SystemTime> {
        lock(&self.state).failed_at
    }

    /// The failures since the last good load (none: `count` 0).
    pub(crate) fn failures_since_good(&self) -> Failures<E> {
        let state = lock(&self.state);
        Failures {
            count: state.failures,
            since: state.failing_since,
            last_at: state.failed_at,
            last_error: state.last_error.clone(),
        }
    }

    /// Whether a load runs now.
    pub(crate) fn is_loading(&self) -> bool {
        lock(&self.state).flight.is_some()
    }

    /// The load running now, to wait for.
    pub(crate) fn flight(&self) -> Option<Flight<V, E>> {
        lock(&self.state).flight.clone()
    }

    /// When a load for `need` may start, after a failure (`None`: at once).
    pub(crate) fn retry_at(&self, need: Need) -> Option<SystemTime> {
        lock(&self.state).retry_at(need)
    }

    /// Whether [`start`](Self::start) for `need` at `now` would load (or join a load).
    pub(crate) fn would_load(&self, need: Need, now: SystemTime) -> bool {
        let state = lock(&self.state);
        state.flight.is_some() || state.retry_at(need).is_none_or(|at| now >= at)
    }

    /// Joins the running load, or starts one unless a failure's retry point for `need` has
    /// not come. The load runs as a task of the engine's runtime (the one given at build, else
    /// the caller's), so a waiter that gives up does not cancel it; outside any runtime it
    /// runs inside the waiters' own polls.
    pub(crate) fn start(
        self: &Arc<Self>,
        engine: &Arc<Engine>,
        need: Need,
        load: &Loader<V, E>,
    ) -> Start<V, E> {
        let now = engine.clock.now();
        let mut state = lock(&self.state);
        if let Some(flight) = &state.flight {
            return Start::Flight(flight.clone());
        }
        if let Some(until) = state.retry_at(need)
            && now < until
        {
            return Start::Waiting {
                until,
                error: state.last_error.clone(),
            };
        }
        let work = load(self.value.load_full());
        let slot = Arc::clone(self);
        let context = Arc::clone(engine);
        let task = async move {
            let mut guard = FlightGuard {
                slot: &slot,
                engine: &context,
                finished: false,
            };
            context.loads.fetch_add(1, Ordering::Relaxed);
            let started = context.clock.now();
            let timeout = context.timeout;
            let result = match select(work, context.sleep.sleep(timeout)).await {
                Either::Left((result, _)) => result.map(Arc::new).map_err(Arc::new),
                Either::Right(((), _)) => {
                    Err(Arc::new((slot.errors.timed_out)(&slot.label, timeout)))
                }
            };
            guard.finished = true;
            slot.record(&context, &result);
            if let Some(observe) = &slot.observer {
                let took = context
                    .clock
                    .now()
                    .duration_since(started)
                    .unwrap_or_default();
                observe(&result, Some(took));
            }
            match result {
                Ok(value) => Outcome::Loaded(value),
                Err(error) => Outcome::Failed(error),
            }
        };
        let flight: BoxFuture<'static, Outcome<V, E>> = match engine.runtime() {
            Some(runtime) => {
                let joined = runtime.spawn(task);
                let label = Arc::clone(&self.label);
                let lost = self.errors.lost;
                Box::pin(async move {
                    match joined.await {
                        Ok(outcome) => outcome,
                        Err(error) if error.is_panic() => {
                            Outcome::Failed(Arc::new(lost(&label, "the load panicked")))
                        }
                        Err(_) => Outcome::Cancelled,
                    }
                })
            }
            None => Box::pin(task),
        };
        let flight = flight.shared();
        state.flight = Some(flight.clone());
        Start::Flight(flight)
    }

    /// [`start`](Self::start), then the outcome. A load whose runtime shut down under it is
    /// started once more (here, on the caller's runtime).
    pub(crate) async fn load(
        self: &Arc<Self>,
        engine: &Arc<Engine>,
        need: Need,
        load: &Loader<V, E>,
    ) -> Result<Arc<V>, Failure<E>> {
        for _ in 0..2 {
            match self.start(engine, need, load) {
                Start::Waiting { error, .. } => return Err(Failure::Waiting { error }),
                Start::Flight(flight) => match flight.await {
                    Outcome::Loaded(value) => return Ok(value),
                    Outcome::Failed(error) => return Err(Failure::Failed(error)),
                    Outcome::Cancelled => {}
                },
            }
        }
        let lost = (self.errors.lost)(&self.label, "the load's runtime shut down");
        Err(Failure::Failed(Arc::new(lost)))
    }

    /// Publishes a finished load (the value first, so whoever sees no load running finds it)
    /// and sets the retry points after a failure.
    fn record(&self, engine: &Engine, result: &Result<Arc<V>, Arc<E>>) {
        match result {
            Ok(value) => {
                self.value.store(Some(Arc::clone(value)));
                self.changed();
                let mut state = lock(&self.state);
                state.flight = None;
                state.failures = 0;
                state.throttled = 0;
                state.last_error = None;
                state.failed_at = None;
                state.failing_since = None;
                state.retry = None;
            }
            Err(error) => self.fail(engine, Arc::clone(error)),
        }
    }

    fn fail(&self, engine: &Engine, error: Arc<E>) {
        engine.failures.fetch_add(1, Ordering::Relaxed);
        let now = engine.clock.now();
        let mut state = lock(&self.state);
        state.flight = None;
        state.failures = state.failures.saturating_add(1);
        state.throttled = if error.throttled() {
            state.throttled.saturating_add(1)
        } else {
            0
        };
        let retry =
            engine
                .retry
                .after_failure(now, state.failures, state.throttled, error.retry_after());
        state.retry = Some(retry);
        let serving = self
            .value
            .load()
            .as_ref()
            .is_some_and(|value| now < value.usable_until());
        tracing::warn!(
            source = %self.label,
            failures = state.failures,
            serving_last_good = serving,
            urgent_retry_in = ?retry.urgent.duration_since(now).unwrap_or_default(),
            routine_retry_in = ?retry.routine.duration_since(now).unwrap_or_default(),
            error = %error,
            "refresh failed"
        );
        state.last_error = Some(error);
        state.failed_at = Some(now);
        state.failing_since.get_or_insert(now);
    }
}

impl<V, E> State<V, E> {
    fn retry_at(&self, need: Need) -> Option<SystemTime> {
        match need {
            Need::Routine => self.retry.map(|r| r.routine),
            Need::Urgent => self.retry.map(|r| r.urgent),
            Need::Now => None,
        }
    }
}

/// Clears the flight when a load's task ends without recording (it panicked, or its future
/// was dropped with its runtime), so a load never stays "running" for ever. A panic counts as
/// a failed load.
struct FlightGuard<'a, V, E>
where
    V: Expiring + Send + Sync + 'static,
    E: RetryHint + std::error::Error + Send + Sync + 'static,
{
    slot: &'a Slot<V, E>,
    engine: &'a Engine,
    finished: bool,
}

impl<V, E> Drop for FlightGuard<'_, V, E>
where
    V: Expiring + Send + Sync + 'static,
    E: RetryHint + std::error::Error + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if std::thread::panicking() {
            let error = Arc::new((self.slot.errors.lost)(
                &self.slot.label,
                "the load panicked",
            ));
            self.slot.fail(self.engine, Arc::clone(&error));
            if let Some(observe) = &self.slot.observer {
                observe(&Err(error), None);
            }
        } else {
            lock(&self.slot.state).flight = None;
        }
    }
}
