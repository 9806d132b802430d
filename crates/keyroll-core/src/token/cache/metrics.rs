//! The token cache's metrics (feature `metrics`; names and meaning in [`crate::metrics`]).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ::metrics::{counter, gauge, histogram};

use super::{CachedToken, Inner};
use crate::metrics::{self as names, CounterDeltas, LABEL_OUTCOME, LABEL_SOURCE, Publish};
use crate::refresh::{Observer, RetryHint};
use crate::token::TokenError;

/// What a token cache keeps for its metrics.
pub(super) struct TokenMetrics {
    /// Given to every audience's slot.
    observer: Arc<Observer<CachedToken, TokenError>>,
    published: CounterDeltas,
}

impl TokenMetrics {
    pub(super) fn new(label: Arc<str>) -> TokenMetrics {
        let observer: Arc<Observer<CachedToken, TokenError>> = Arc::new(move |result, took| {
            let outcome = match result {
                Ok(_) => "ok",
                Err(error) if error.throttled() => "throttled",
                Err(_) => "error",
            };
            counter!(names::TOKEN_FETCHES, LABEL_SOURCE => Arc::clone(&label), LABEL_OUTCOME => outcome)
                .increment(1);
            if let Some(took) = took {
                histogram!(names::TOKEN_FETCH_DURATION, LABEL_SOURCE => Arc::clone(&label))
                    .record(took.as_secs_f64());
            }
        });
        TokenMetrics {
            observer,
            published: CounterDeltas::default(),
        }
    }

    pub(super) fn observer(&self) -> Arc<Observer<CachedToken, TokenError>> {
        Arc::clone(&self.observer)
    }
}

impl<T> Inner<T> {
    /// Records what the per-request counters counted since the last publish.
    fn publish_counters(&self) {
        let counters = &self.counters;
        let deltas = self.metrics.published.advance([
            counters.refreshes.load(Relaxed),
            counters.invalidations.load(Relaxed),
            counters.invalidations_deferred.load(Relaxed),
            counters.cooldown_rejections.load(Relaxed),
        ]);
        let series = [
            names::TOKEN_RENEWALS,
            names::TOKEN_INVALIDATIONS,
            names::TOKEN_INVALIDATIONS_DEFERRED,
            names::TOKEN_COOLDOWN_REJECTIONS,
        ];
        for (name, delta) in series.into_iter().zip(deltas) {
            counter!(name, LABEL_SOURCE => Arc::clone(&self.name)).increment(delta);
        }
    }
}

impl<T: Send + Sync> Publish for Inner<T> {
    fn publish(&self) {
        self.publish_counters();
        let now = self.engine.clock.now();
        let audiences = self
            .slots
            .load()
            .values()
            .filter(|slot| slot.value().as_ref().is_some_and(|t| now < t.usable_until))
            .count();
        gauge!(names::TOKEN_AUDIENCES, LABEL_SOURCE => Arc::clone(&self.name))
            .set(audiences as f64);
    }
}

impl<T> Drop for Inner<T> {
    /// What was counted since the last publish stays in the recorder.
    fn drop(&mut self) {
        self.publish_counters();
    }
}
