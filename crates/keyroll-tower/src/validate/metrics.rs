//! Counters: accepted, rejected by reason, cache hits; with the feature `metrics`, published
//! through the `metrics` facade (`keyroll_validations_total`, see `keyroll_core::metrics`).
//!
//! Each request adds one to one plain atomic of its own thread's tally, as without the
//! feature: the totals are the sums over the threads' tallies, read at
//! [`ValidateLayer::metrics`](super::ValidateLayer::metrics) and, for the facade, at
//! `keyroll_core::metrics::publish`. So a validation does no registry lookup and writes no
//! memory another thread writes: two cores validating at once never wait on a counter's
//! cache line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use thread_local::ThreadLocal;

use super::response::Failure;

/// A snapshot of a validator's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValidateMetrics {
    /// Requests let through.
    pub accepted: u64,
    /// Accepted requests answered from the verified-token cache (included in `accepted`).
    pub cache_hits: u64,
    /// Requests refused with 503 because the keys were unavailable.
    pub unavailable: u64,
    /// Requests refused with 400/401, by reason label (`missing_token`, `expired`,
    /// `bad_signature`, `invalid_request`, …).
    pub rejected: BTreeMap<&'static str, u64>,
}

impl ValidateMetrics {
    /// All 400/401 refusals.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// The refusals for one reason label.
    pub fn rejected_for(&self, label: &str) -> u64 {
        self.rejected.get(label).copied().unwrap_or(0)
    }
}

// Every label a refusal can have, in a fixed order (the index of its counter).
pub(crate) const LABELS: [&str; 24] = [
    "missing_token",
    "invalid_request",
    "malformed",
    "too_large",
    "encrypted",
    "unsupported_algorithm",
    "algorithm_not_allowed",
    "critical_header",
    "untrusted_issuer",
    "missing_claim",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "too_old",
    "wrong_audience",
    "wrong_type",
    "no_key_id",
    "unknown_key",
    "key_not_valid",
    "algorithm_key_mismatch",
    "bad_signature",
    "invalid_claims",
    "insufficient_scope",
    "other",
];

/// The counters in a fixed order: verified, cache hits, unavailable, then refusals by label.
pub(crate) const COUNTERS: usize = 3 + LABELS.len();
const VERIFIED: usize = 0;
const CACHE_HITS: usize = 1;
const UNAVAILABLE: usize = 2;
const REJECTED: usize = 3;

/// A layer's counters: one tally per thread that validated, each on cache lines of its own.
#[derive(Default)]
pub(crate) struct Counters {
    threads: ThreadLocal<CachePadded<Tally>>,
}

/// One thread's counts, in the order of [`COUNTERS`]. Only its thread adds to it (a thread
/// that starts after another exited may take over its tally, counts included); any thread
/// reads it.
struct Tally([AtomicU64; COUNTERS]);

impl Default for Tally {
    fn default() -> Self {
        Tally(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("totals", &self.snapshot())
            .finish()
    }
}

/// The index of `failure`'s label in [`LABELS`] (the last, `other`, for a label not listed): a
/// match, not a search, since it runs on every refusal.
pub(crate) fn index(failure: &Failure) -> usize {
    use keyroll_core::jwt::InvalidReason as R;
    const OTHER: usize = LABELS.len() - 1;
    match failure {
        Failure::Missing => 0,
        Failure::BadRequest(_) => 1,
        Failure::Invalid(reason) => match reason {
            R::Malformed(_) => 2,
            R::TooLarge => 3,
            R::Encrypted => 4,
            R::UnsupportedAlgorithm => 5,
            R::AlgorithmNotAllowed => 6,
            R::CriticalHeader => 7,
            R::UntrustedIssuer => 8,
            R::MissingClaim => 9,
            R::Expired => 10,
            R::NotYetValid => 11,
            R::IssuedInFuture => 12,
            R::TooOld => 13,
            R::WrongAudience => 14,
            R::WrongType => 15,
            R::NoKeyId => 16,
            R::UnknownKey => 17,
            R::KeyNotValid => 18,
            R::AlgorithmKeyMismatch => 19,
            R::BadSignature => 20,
            // A reason added to keyroll-core later.
            _ => LABELS
                .iter()
                .position(|l| *l == reason.label())
                .unwrap_or(OTHER),
        },
        Failure::InvalidClaims => 21,
        Failure::InsufficientScope(_) => 22,
        Failure::Unavailable(_) | Failure::Misconfigured => OTHER,
    }
}

impl Counters {
    /// Adds one to this thread's counter `at`.
    fn add(&self, at: usize) {
        self.threads.get_or_default().0[at].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn accepted(&self, cache_hit: bool) {
        self.add(if cache_hit { CACHE_HITS } else { VERIFIED });
    }

    pub(crate) fn refused(&self, failure: &Failure) {
        match failure {
            Failure::Unavailable(_) => self.add(UNAVAILABLE),
            other => self.add(REJECTED + index(other)),
        }
    }

    /// Every counter, summed over the threads. (A sum read while other threads count is
    /// each counter's value at some instant of the read.)
    pub(crate) fn totals(&self) -> [u64; COUNTERS] {
        let mut totals = [0; COUNTERS];
        for tally in self.threads.iter() {
            for (total, count) in totals.iter_mut().zip(&tally.0) {
                *total += count.load(Ordering::Relaxed);
            }
        }
        totals
    }

    pub(crate) fn snapshot(&self) -> ValidateMetrics {
        let totals = self.totals();
        ValidateMetrics {
            accepted: totals[VERIFIED] + totals[CACHE_HITS],
            cache_hits: totals[CACHE_HITS],
            unavailable: totals[UNAVAILABLE],
            rejected: LABELS
                .iter()
                .zip(&totals[REJECTED..])
                .map(|(label, count)| (*label, *count))
                .filter(|(_, count)| *count > 0)
                .collect(),
        }
    }
}

/// `keyroll_validations_total` and the token-cache gauge, published from the counters.
#[cfg(feature = "metrics")]
mod published {
    use std::sync::Arc;

    use keyroll_core::metrics::{
        LABEL_OUTCOME, LABEL_REASON, LABEL_VALIDATOR, Publish, VALIDATIONS,
        VALIDATOR_TOKEN_CACHE_ENTRIES,
    };
    use metrics::{counter, gauge};

    use super::LABELS;
    use crate::validate::layer::Shared;

    impl Shared {
        fn publish_counters(&self) {
            let deltas = self.published.advance(self.counters.totals());
            let kinds = [
                ("accepted", "verified"),
                ("accepted", "cache_hit"),
                ("unavailable", "keys_unavailable"),
            ]
            .into_iter()
            .chain(LABELS.iter().map(|label| ("rejected", *label)));
            for ((outcome, reason), delta) in kinds.zip(deltas) {
                // Every series from the first publish on, so that rates start at zero.
                counter!(
                    VALIDATIONS,
                    LABEL_VALIDATOR => Arc::clone(&self.name),
                    LABEL_OUTCOME => outcome,
                    LABEL_REASON => reason,
                )
                .increment(delta);
            }
        }
    }

    impl Publish for Shared {
        fn publish(&self) {
            self.publish_counters();
            if let Some(cache) = &self.cache {
                gauge!(VALIDATOR_TOKEN_CACHE_ENTRIES, LABEL_VALIDATOR => Arc::clone(&self.name))
                    .set(cache.entry_count() as f64);
            }
        }
    }

    impl Drop for Shared {
        /// What was counted since the last publish stays in the recorder.
        fn drop(&mut self) {
            self.publish_counters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyroll_core::jwt::InvalidReason;

    #[test]
    fn counts_by_reason() {
        let counters = Counters::default();
        counters.accepted(false);
        counters.accepted(true);
        counters.refused(&Failure::Missing);
        counters.refused(&Failure::Invalid(InvalidReason::Expired));
        counters.refused(&Failure::Invalid(InvalidReason::Expired));
        counters.refused(&Failure::Invalid(InvalidReason::Malformed("x")));
        counters.refused(&Failure::Unavailable(std::time::Duration::from_secs(1)));
        let metrics = counters.snapshot();
        assert_eq!(
            (metrics.accepted, metrics.cache_hits, metrics.unavailable),
            (2, 1, 1)
        );
        assert_eq!(metrics.rejected_for("expired"), 2);
        assert_eq!(metrics.rejected_for("malformed"), 1);
        assert_eq!(metrics.rejected_for("missing_token"), 1);
        assert_eq!(metrics.rejected_total(), 4);
    }

    #[test]
    fn totals_are_exact_sums_over_threads_that_come_and_go() {
        let counters = Counters::default();
        for round in 1..=2u64 {
            // New threads each round: some take over the tallies of the exited ones.
            std::thread::scope(|scope| {
                for thread in 0..8 {
                    let counters = &counters;
                    scope.spawn(move || {
                        for i in 0..10_000 {
                            counters.accepted(i % 4 == 0);
                            if i % 10 == 0 {
                                counters.refused(&Failure::Invalid(InvalidReason::Expired));
                            }
                        }
                        if thread == 0 {
                            counters.refused(&Failure::Unavailable(std::time::Duration::ZERO));
                        }
                    });
                }
            });
            let metrics = counters.snapshot();
            assert_eq!(metrics.accepted, round * 80_000);
            assert_eq!(metrics.cache_hits, round * 20_000);
            assert_eq!(metrics.unavailable, round);
            assert_eq!(metrics.rejected_for("expired"), round * 8_000);
            assert_eq!(metrics.rejected_total(), round * 8_000);
        }
    }

    #[test]
    fn the_index_of_a_failure_is_its_label() {
        use InvalidReason as R;
        let reasons = [
            R::Malformed("x"),
            R::TooLarge,
            R::Encrypted,
            R::UnsupportedAlgorithm,
            R::AlgorithmNotAllowed,
            R::CriticalHeader,
            R::UntrustedIssuer,
            R::MissingClaim,
            R::Expired,
            R::NotYetValid,
            R::IssuedInFuture,
            R::TooOld,
            R::WrongAudience,
            R::WrongType,
            R::NoKeyId,
            R::UnknownKey,
            R::KeyNotValid,
            R::AlgorithmKeyMismatch,
            R::BadSignature,
        ];
        let failures = reasons.into_iter().map(Failure::Invalid).chain([
            Failure::Missing,
            Failure::BadRequest("x"),
            Failure::InvalidClaims,
            Failure::InsufficientScope("s".into()),
        ]);
        for failure in failures {
            assert_eq!(LABELS[index(&failure)], failure.label(), "{failure:?}");
        }
        assert_eq!(LABELS[index(&Failure::Misconfigured)], "other");
    }
}
