//! What each version signed in this process: when last, for how long at most, and until
//! when its tokens may be alive, so that a version retired while its tokens live is noticed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::KeySet;
use crate::lock;
use crate::policy::RotationPolicy;

/// Expiry times kept per version: beyond this many live tokens, the count is a lower bound.
const MAX_TRACKED: usize = 10_000;

/// What one version signed, as [`KeyCache::signed_by`](super::KeyCache::signed_by) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedBy {
    /// When it last signed a token.
    pub last_signed: SystemTime,
    /// The longest lifetime (`exp` − `iat`) it signed for.
    pub longest_lifetime: Duration,
    /// The latest `exp` among its tokens: it must validate until then (plus leeway).
    pub last_expiry: SystemTime,
}

#[derive(Default)]
struct Record {
    last_signed: Option<SystemTime>,
    longest_lifetime: Duration,
    last_expiry: Option<SystemTime>,
    /// `exp` of the tokens that may still be alive, pruned as they pass.
    live: Vec<SystemTime>,
}

#[derive(Default)]
pub(super) struct Ledger {
    by_kid: Mutex<HashMap<String, Record>>,
    pub(super) retired_early: AtomicU64,
    pub(super) orphaned_tokens: AtomicU64,
}

impl Ledger {
    pub(super) fn record(&self, kid: &str, issued: SystemTime, expires: SystemTime) {
        let mut by_kid = lock(&self.by_kid);
        let record = by_kid.entry(kid.to_owned()).or_default();
        record.last_signed = Some(record.last_signed.map_or(issued, |last| last.max(issued)));
        let lifetime = expires.duration_since(issued).unwrap_or_default();
        record.longest_lifetime = record.longest_lifetime.max(lifetime);
        record.last_expiry = Some(record.last_expiry.map_or(expires, |last| last.max(expires)));
        record.live.retain(|exp| *exp > issued);
        if record.live.len() < MAX_TRACKED {
            record.live.push(expires);
        }
    }

    pub(super) fn signed_by(&self, kid: &str) -> Option<SignedBy> {
        let by_kid = lock(&self.by_kid);
        let record = by_kid.get(kid)?;
        Some(SignedBy {
            last_signed: record.last_signed?,
            longest_lifetime: record.longest_lifetime,
            last_expiry: record.last_expiry?,
        })
    }

    /// Versions that validated in `previous` and do not in `next` (the source disabled,
    /// expired or removed them) while tokens they signed may be alive: each is logged and
    /// counted, with those tokens, which peers will now refuse.
    pub(super) fn check_retired(
        &self,
        source: &str,
        previous: &KeySet,
        next: &KeySet,
        policy: &RotationPolicy,
        now: SystemTime,
    ) {
        let by_kid = lock(&self.by_kid);
        for version in previous.versions() {
            let Some(record) = by_kid.get(&version.kid) else {
                continue;
            };
            let still = next
                .versions()
                .iter()
                .any(|v| v.kid == version.kid && policy.validates(v, now));
            if still || !policy.validates(version, now) {
                continue;
            }
            let live = record.live.iter().filter(|exp| **exp > now).count();
            if live == 0 {
                continue;
            }
            self.retired_early.fetch_add(1, Ordering::Relaxed);
            self.orphaned_tokens
                .fetch_add(live as u64, Ordering::Relaxed);
            let until = record
                .last_expiry
                .and_then(|at| at.duration_since(now).ok())
                .unwrap_or_default();
            tracing::warn!(
                source = %source,
                kid = %version.kid,
                live_tokens = live,
                valid_for_s = until.as_secs(),
                "a version stopped validating while tokens it signed are alive: peers will refuse them; retire a version only after its last token expired"
            );
        }
    }
}
