//! The key cache's metrics (feature `metrics`; names and meaning in [`crate::metrics`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::metrics::{counter, gauge, histogram};

use super::{Inner, KeySet};
use crate::error::SourceError;
use crate::metrics::{self as names, LABEL_OUTCOME, LABEL_SOURCE, Publish};
use crate::refresh::Observer;

/// Records how each load of the cache named `name` ended, and how long it took.
pub(super) fn load_observer(name: Arc<str>) -> Arc<Observer<KeySet, SourceError>> {
    Arc::new(move |result, took| {
        let outcome = match result {
            Ok(set) if set.versions().is_empty() => "empty",
            Ok(_) => "ok",
            Err(error) if error.status() == Some(429) => "throttled",
            Err(error) if error.is_empty_answer() => "empty",
            Err(_) => "error",
        };
        counter!(names::KEY_LOADS, LABEL_SOURCE => Arc::clone(&name), LABEL_OUTCOME => outcome)
            .increment(1);
        if let Some(took) = took {
            histogram!(names::KEY_LOAD_DURATION, LABEL_SOURCE => Arc::clone(&name))
                .record(took.as_secs_f64());
        }
    })
}

/// Records a sign that was refused without asking the source.
pub(super) fn sign_held(cache: &Inner) {
    counter!(names::KEY_SIGNS, LABEL_SOURCE => Arc::clone(&cache.name), LABEL_OUTCOME => "held")
        .increment(1);
}

/// Records a sign the source was asked for, started at `started` on the cache's clock.
pub(super) fn signed<T>(cache: &Inner, result: &Result<T, SourceError>, started: SystemTime) {
    let outcome = if result.is_ok() { "ok" } else { "error" };
    let took = cache
        .engine
        .clock
        .now()
        .duration_since(started)
        .unwrap_or_default();
    counter!(names::KEY_SIGNS, LABEL_SOURCE => Arc::clone(&cache.name), LABEL_OUTCOME => outcome)
        .increment(1);
    histogram!(names::KEY_SIGN_DURATION, LABEL_SOURCE => Arc::clone(&cache.name))
        .record(took.as_secs_f64());
}

impl Inner {
    /// Records what the per-lookup counters counted since the last publish.
    fn publish_counters(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let counters = &self.counters;
        let ledger = &self.loading.ledger;
        let deltas = self.published.advance([
            counters.kid_misses.load(Relaxed),
            counters.kid_refreshes.load(Relaxed),
            counters.negative_hits.load(Relaxed),
            counters.bad_signatures.load(Relaxed),
            ledger.retired_early.load(Relaxed),
            ledger.orphaned_tokens.load(Relaxed),
        ]);
        let series = [
            names::KEY_KID_MISSES,
            names::KEY_KID_REFRESHES,
            names::KEY_NEGATIVE_CACHE_HITS,
            names::KEY_BAD_SIGNATURES,
            names::KEY_VERSIONS_RETIRED_EARLY,
            names::KEY_TOKENS_ORPHANED,
        ];
        for (name, delta) in series.into_iter().zip(deltas) {
            counter!(name, LABEL_SOURCE => Arc::clone(&self.name)).increment(delta);
        }
    }
}

/// What the gauges of a cache say at one instant.
struct Gauges {
    versions: usize,
    age: Option<Duration>,
    stale_for: Option<Duration>,
    unavailable: bool,
    failures: u32,
}

impl Gauges {
    fn of(set: Option<&KeySet>, failures: u32, now: SystemTime) -> Gauges {
        let Some(set) = set else {
            return Gauges {
                versions: 0,
                age: None,
                stale_for: None,
                unavailable: failures > 0,
                failures,
            };
        };
        let schedule = set.schedule();
        let served = now < schedule.stale_at;
        let stale_for = (failures > 0 && served)
            .then(|| now.duration_since(schedule.refresh_at).ok())
            .flatten();
        Gauges {
            versions: set.versions().len(),
            age: Some(now.duration_since(set.loaded_at()).unwrap_or_default()),
            stale_for,
            unavailable: !served,
            failures,
        }
    }
}

impl Publish for Inner {
    fn publish(&self) {
        self.publish_counters();
        let snapshot = self.slot.value_full();
        let gauges = Gauges::of(
            snapshot.as_deref(),
            self.slot.failures(),
            self.engine.clock.now(),
        );
        let source = &self.name;
        let set = |name: &'static str, value: f64| {
            gauge!(name, LABEL_SOURCE => Arc::clone(source)).set(value);
        };
        set(names::KEY_SET_VERSIONS, gauges.versions as f64);
        if let Some(age) = gauges.age {
            set(names::KEY_SET_AGE, age.as_secs_f64());
        }
        set(names::KEY_SET_STALE, flag(gauges.stale_for.is_some()));
        set(
            names::KEY_SET_STALE_SECONDS,
            gauges.stale_for.unwrap_or_default().as_secs_f64(),
        );
        set(names::KEY_SET_UNAVAILABLE, flag(gauges.unavailable));
        set(names::KEY_CONSECUTIVE_FAILURES, f64::from(gauges.failures));
    }
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

impl Drop for Inner {
    /// What was counted since the last publish stays in the recorder.
    fn drop(&mut self) {
        self.publish_counters();
    }
}
