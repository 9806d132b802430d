//! Counters: accepted, rejected by reason, cache hits; with the feature `metrics`, published
//! through the `metrics` facade (`keyroll_validations_total`, see `keyroll_core::metrics`).
//!
//! Each request adds one to one plain atomic here, as without the feature: what the facade
//! records is read from these counters at `keyroll_core::metrics::publish`, so a validation
//! does no registry lookup and writes no other shared memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

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

#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Accepted after a verification (not from the verified-token cache).
    verified: AtomicU64,
    cache_hits: AtomicU64,
    unavailable: AtomicU64,
    rejected: [AtomicU64; LABELS.len()],
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
    pub(crate) fn accepted(&self, cache_hit: bool) {
        let counter = if cache_hit {
            &self.cache_hits
        } else {
            &self.verified
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, failure: &Failure) {
        match failure {
            Failure::Unavailable(_) => self.unavailable.fetch_add(1, Ordering::Relaxed),
            other => self.rejected[index(other)].fetch_add(1, Ordering::Relaxed),
        };
    }

    pub(crate) fn snapshot(&self) -> ValidateMetrics {
        let cache_hits = self.cache_hits.load(Ordering::Relaxed);
        ValidateMetrics {
            accepted: self.verified.load(Ordering::Relaxed) + cache_hits,
            cache_hits,
            unavailable: self.unavailable.load(Ordering::Relaxed),
            rejected: LABELS
                .iter()
                .zip(&self.rejected)
                .map(|(label, count)| (*label, count.load(Ordering::Relaxed)))
                .filter(|(_, count)| *count > 0)
                .collect(),
        }
    }
}

/// `keyroll_validations_total` and the token-cache gauge, published from the counters.
#[cfg(feature = "metrics")]
mod published {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    use keyroll_core::metrics::{
        LABEL_OUTCOME, LABEL_REASON, LABEL_VALIDATOR, Publish, VALIDATIONS,
        VALIDATOR_TOKEN_CACHE_ENTRIES,
    };
    use metrics::{counter, gauge};

    use super::LABELS;
    use crate::validate::layer::Shared;

    /// The counters in a fixed order: verified, cache hits, unavailable, then refusals by label.
    const COUNTERS: usize = 3 + LABELS.len();

    impl Shared {
        fn publish_counters(&self) {
            let counters = &self.counters;
            let mut current = [0; COUNTERS];
            current[0] = counters.verified.load(Relaxed);
            current[1] = counters.cache_hits.load(Relaxed);
            current[2] = counters.unavailable.load(Relaxed);
            for (slot, count) in current[3..].iter_mut().zip(&counters.rejected) {
                *slot = count.load(Relaxed);
            }
            let deltas = self.published.advance(current);
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
