//! Counters: accepted, rejected by reason, cache hits.

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
const LABELS: [&str; 24] = [
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
    accepted: AtomicU64,
    cache_hits: AtomicU64,
    unavailable: AtomicU64,
    rejected: [AtomicU64; LABELS.len()],
}

fn index(failure: &Failure) -> usize {
    let label = failure.label();
    LABELS
        .iter()
        .position(|l| *l == label)
        .unwrap_or(LABELS.len() - 1)
}

impl Counters {
    pub(crate) fn accepted(&self, cache_hit: bool) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        if cache_hit {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn refused(&self, failure: &Failure) {
        match failure {
            Failure::Unavailable(_) => self.unavailable.fetch_add(1, Ordering::Relaxed),
            other => self.rejected[index(other)].fetch_add(1, Ordering::Relaxed),
        };
    }

    pub(crate) fn snapshot(&self) -> ValidateMetrics {
        ValidateMetrics {
            accepted: self.accepted.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
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
}
