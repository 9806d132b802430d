//! The publish point: every live component's counters and gauges, recorded on demand.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::lock;

/// A component whose metrics are recorded at each [`publish`]: a key cache, a token cache, a
/// validator, or one of your own ([`register`] it).
pub trait Publish: Send + Sync {
    /// Records the component's counters (as the increments since its last call: see
    /// [`CounterDeltas`]) and sets its gauges, into the current recorder.
    fn publish(&self);
}

/// The components [`publish`] visits: weak, so a registration keeps nothing alive.
static COMPONENTS: Mutex<Components> = Mutex::new(Components {
    live: Vec::new(),
    pruned_len: 0,
});

struct Components {
    live: Vec<Weak<dyn Publish>>,
    /// How many were left at the last pruning: the next comes once that many more registered,
    /// so a process that builds many caches (a fleet simulation) prunes in amortized O(1).
    pruned_len: usize,
}

impl Components {
    fn prune(&mut self) {
        self.live.retain(|known| known.strong_count() > 0);
        self.pruned_len = self.live.len();
    }
}

/// Adds `component` to those [`publish`] visits, until it is dropped. Key caches, token caches
/// and validators register themselves when they are built.
pub fn register(component: Weak<dyn Publish>) {
    let mut components = lock(&COMPONENTS);
    if components.live.len() >= (2 * components.pruned_len).max(64) {
        components.prune();
    }
    components.live.push(component);
}

/// Records the counters and gauges of every live key cache, token cache and validator (and
/// every other [registered](register) component) into the current recorder, and describes
/// every metric (help text and unit). Call it before each scrape, or run
/// [`publish_every`]. Events off the hot path (loads, fetches, signs, vault requests) are
/// recorded when they happen, whether or not this runs.
pub fn publish() {
    describe();
    // Upgraded first, so that no component is published (or dropped) under the lock.
    let live: Vec<Arc<dyn Publish>> = {
        let mut components = lock(&COMPONENTS);
        components.prune();
        components.live.iter().filter_map(Weak::upgrade).collect()
    };
    for component in live {
        component.publish();
    }
}

/// Runs [`publish`] now and then every `period` (at least 100 ms), for ever: spawn it next to
/// the exporter (`tokio::spawn(keyroll_core::metrics::publish_every(Duration::from_secs(10)))`)
/// and abort it, or drop its runtime, to stop it.
pub async fn publish_every(period: Duration) {
    let period = period.max(Duration::from_millis(100));
    loop {
        publish();
        tokio::time::sleep(period).await;
    }
}

/// The values a component's counters had when it last published, so that each [`publish`]
/// records what was counted since: components that share labels add up, and what a dropped
/// component counted stays in the recorder.
#[derive(Debug, Default)]
pub struct CounterDeltas {
    last: Mutex<Vec<u64>>,
}

impl CounterDeltas {
    /// The increments of `current` (each counter's value now, always in the same order) since
    /// the last call; a counter that went down (it cannot, unless it was replaced) adds 0.
    pub fn advance<const N: usize>(&self, current: [u64; N]) -> [u64; N] {
        let mut last = lock(&self.last);
        if last.len() < N {
            last.resize(N, 0);
        }
        let mut deltas = [0; N];
        for ((delta, now), before) in deltas.iter_mut().zip(current).zip(last.iter_mut()) {
            *delta = now.saturating_sub(*before);
            *before = (*before).max(now);
        }
        deltas
    }
}

/// Describes every metric keyroll records (help text and unit) to the current recorder.
/// [`publish`] calls it; call it yourself if you never publish.
pub fn describe() {
    use super::*;
    for (name, help) in [
        (KEY_LOADS, "Key source loads, by how they ended."),
        (
            KEY_KID_MISSES,
            "Lookups of a kid the current key set did not have.",
        ),
        (
            KEY_KID_REFRESHES,
            "Key refreshes triggered by unknown kids.",
        ),
        (
            KEY_NEGATIVE_CACHE_HITS,
            "Unknown-kid lookups answered from the negative cache.",
        ),
        (
            KEY_SIGNS,
            "Signs with the active key version, by how they ended.",
        ),
        (
            KEY_BAD_SIGNATURES,
            "Remote signatures that did not verify with the listed key.",
        ),
        (
            KEY_VERSIONS_RETIRED_EARLY,
            "Versions that stopped validating while tokens they signed were alive.",
        ),
        (
            KEY_TOKENS_ORPHANED,
            "Live tokens signed by versions retired early.",
        ),
        (TOKEN_FETCHES, "Token source calls, by how they ended."),
        (
            TOKEN_RENEWALS,
            "Background renewals of tokens ahead of expiry.",
        ),
        (
            TOKEN_INVALIDATIONS,
            "Cached tokens dropped (invalidate or a downstream 401).",
        ),
        (
            TOKEN_INVALIDATIONS_DEFERRED,
            "Downstream 401s that kept a token younger than min_age_to_invalidate.",
        ),
        (
            TOKEN_COOLDOWN_REJECTIONS,
            "Token requests failed at once during a failure's backoff.",
        ),
        (
            VALIDATIONS,
            "Inbound requests validated, by outcome and reason.",
        ),
        (
            AZURE_REQUESTS,
            "Azure requests, by operation and status class.",
        ),
        (AZURE_THROTTLED, "Azure requests answered 429."),
    ] {
        describe_counter!(name, Unit::Count, help);
    }
    for (name, unit, help) in [
        (
            KEY_SET_VERSIONS,
            Unit::Count,
            "Versions in the current key set.",
        ),
        (
            KEY_SET_AGE,
            Unit::Seconds,
            "Age of the current key set (since the source last answered).",
        ),
        (
            KEY_SET_STALE,
            Unit::Count,
            "1 while a set past its refresh point is served because refreshing failed.",
        ),
        (
            KEY_SET_STALE_SECONDS,
            Unit::Seconds,
            "How long past its refresh point the served set is (0 when fresh).",
        ),
        (
            KEY_SET_UNAVAILABLE,
            Unit::Count,
            "1 while no key set can be served (stale past max_stale, or never loaded after a failure).",
        ),
        (
            KEY_CONSECUTIVE_FAILURES,
            Unit::Count,
            "Failed key loads since the last good one.",
        ),
        (
            TOKEN_AUDIENCES,
            Unit::Count,
            "Audiences with a usable cached token.",
        ),
        (
            VALIDATOR_TOKEN_CACHE_ENTRIES,
            Unit::Count,
            "Entries of the verified-token cache.",
        ),
    ] {
        describe_gauge!(name, unit, help);
    }
    for (name, help) in [
        (KEY_LOAD_DURATION, "How long key source loads took."),
        (
            KEY_SIGN_DURATION,
            "How long signs with the active key version took.",
        ),
        (TOKEN_FETCH_DURATION, "How long token source calls took."),
        (AZURE_REQUEST_DURATION, "How long Azure requests took."),
        (
            AZURE_RETRY_AFTER,
            "Retry-After delays Azure asked for on failed answers.",
        ),
    ] {
        describe_histogram!(name, Unit::Seconds, help);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn deltas_are_what_was_counted_since_the_last_call() {
        let deltas = CounterDeltas::default();
        assert_eq!(deltas.advance([3, 0]), [3, 0]);
        assert_eq!(deltas.advance([5, 2]), [2, 2]);
        assert_eq!(deltas.advance([5, 2]), [0, 0]);
        // A counter that went down adds nothing, and is not counted twice when it comes back.
        assert_eq!(deltas.advance([4, 2]), [0, 0]);
        assert_eq!(deltas.advance([6, 2]), [1, 0]);
    }

    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl Publish for Counted {
        fn publish(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn publish_visits_live_components_and_pruning_drops_the_others() {
        let live = Arc::new(Counted::default());
        register(Arc::downgrade(&live) as Weak<dyn Publish>);
        publish();
        assert!(live.0.load(Ordering::SeqCst) >= 1);

        let mut components = Components {
            live: Vec::new(),
            pruned_len: 0,
        };
        let dropped = Arc::new(Counted::default());
        components
            .live
            .push(Arc::downgrade(&dropped) as Weak<dyn Publish>);
        components
            .live
            .push(Arc::downgrade(&live) as Weak<dyn Publish>);
        drop(dropped);
        components.prune();
        assert_eq!((components.live.len(), components.pruned_len), (1, 1));
    }
}
