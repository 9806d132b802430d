//! An immutable snapshot of a source's versions, indexed for lookups on the hot path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustc_hash::FxBuildHasher;

use crate::Algorithm;
use crate::key::{KeyFingerprint, KeyVersion};
use crate::policy::RotationPolicy;
use crate::refresh::Expiring;

/// Ids from a source's key set. Lookups hash an id from an untrusted token, but the table is
/// fixed and built from trusted keys, so a fast non-keyed hash cannot be flooded.
type ById = HashMap<String, Arc<KeyVersion>, FxBuildHasher>;

/// Every version a source listed at one load, newest first, indexed by kid and by `x5t`.
///
/// Snapshots never change; a refresh publishes a new one.
#[derive(Debug)]
pub struct KeySet {
    versions: Vec<Arc<KeyVersion>>,
    by_kid: ById,
    by_x5t: ById,
    loaded_at: SystemTime,
    max_age: Option<Duration>,
    generation: u64,
    schedule: Schedule,
}

/// When the cache that loaded a set refreshes it, and how long it serves it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    /// The next background refresh.
    pub(crate) refresh_at: SystemTime,
    /// From here on, failed refreshes are retried urgently (the set nears `max_stale`).
    pub(crate) urgent_at: SystemTime,
    /// Past `max_stale`: the set is no longer served.
    pub(crate) stale_at: SystemTime,
}

/// What a lookup found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum KeyLookup {
    /// A version that validates now.
    Valid(Arc<KeyVersion>),
    /// A known version that must not validate now (disabled, expired or not yet valid).
    NotValid(Arc<KeyVersion>),
    /// No version has this id.
    Unknown,
}

/// A lookup's answer with the version lent from the snapshot instead of cloned: the
/// verifier's hot path, which so writes no reference count that threads share.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Found<'a> {
    Valid(&'a KeyVersion),
    NotValid,
    Unknown,
}

impl KeyLookup {
    /// This answer, lent.
    pub(crate) fn lent(&self) -> Found<'_> {
        match self {
            KeyLookup::Valid(version) => Found::Valid(version),
            KeyLookup::NotValid(_) => Found::NotValid,
            KeyLookup::Unknown => Found::Unknown,
        }
    }
}

/// A version reference from a token header.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum KeyRef<'a> {
    /// By `kid`.
    Kid(&'a str),
    /// By certificate SHA-1 thumbprint (`x5t`), for tokens without a kid.
    X5t(&'a str),
}

impl KeySet {
    pub(crate) fn new(
        mut versions: Vec<KeyVersion>,
        loaded_at: SystemTime,
        max_age: Option<Duration>,
        generation: u64,
        schedule: Schedule,
    ) -> Self {
        versions.sort_by(|a, b| b.age_order(a)); // newest first
        let versions: Vec<Arc<KeyVersion>> = versions.into_iter().map(Arc::new).collect();
        let mut by_kid = ById::with_capacity_and_hasher(versions.len(), FxBuildHasher);
        let mut by_x5t = ById::default();
        // Newest first, so on a duplicate id the newest version wins.
        for version in &versions {
            by_kid
                .entry(version.kid.clone())
                .or_insert_with(|| Arc::clone(version));
            if let Some(x5t) = &version.x5t {
                by_x5t
                    .entry(x5t.trim_end_matches('=').to_owned())
                    .or_insert_with(|| Arc::clone(version));
            }
        }
        KeySet {
            versions,
            by_kid,
            by_x5t,
            loaded_at,
            max_age,
            generation,
            schedule,
        }
    }

    /// This set with the versions named in `revoked` disabled, as the next generation.
    pub(crate) fn with_revoked(&self, revoked: &[Arc<str>]) -> KeySet {
        let mut versions: Vec<KeyVersion> =
            self.versions.iter().map(|v| KeyVersion::clone(v)).collect();
        disable_revoked(&mut versions, revoked);
        KeySet::new(
            versions,
            self.loaded_at,
            self.max_age,
            self.generation + 1,
            self.schedule,
        )
    }

    pub(crate) fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Every version, newest first (disabled and expired ones included).
    pub fn versions(&self) -> &[Arc<KeyVersion>] {
        &self.versions
    }

    /// When the source last answered with this content.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// The freshness hint the source gave.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// A counter that grows with every successful load.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Looks a version up and classifies it under `policy` at `now`.
    pub fn lookup(&self, key: KeyRef<'_>, policy: &RotationPolicy, now: SystemTime) -> KeyLookup {
        classify(self.find(key), policy, now)
    }

    /// [`lookup`](Self::lookup), the version lent.
    pub(crate) fn find_lent(
        &self,
        key: KeyRef<'_>,
        policy: &RotationPolicy,
        now: SystemTime,
    ) -> Found<'_> {
        match self.find(key) {
            Some(version) if policy.validates(version, now) => Found::Valid(version),
            Some(_) => Found::NotValid,
            None => Found::Unknown,
        }
    }

    /// Whether a token with this `kid` and `algorithm`, verified by the key with `fingerprint`,
    /// would verify with that same key now: the version the verifier picks for it (the newest
    /// with the kid, or the newest with the kid that allows the algorithm) allows the
    /// algorithm, has that fingerprint and validates under `policy` at `now`. What a cache of
    /// verified tokens asks on a hit; nothing is cloned, so no reference count is written and
    /// threads asking at once share no written cache line.
    pub fn still_verifies(
        &self,
        kid: &str,
        algorithm: Algorithm,
        fingerprint: &KeyFingerprint,
        policy: &RotationPolicy,
        now: SystemTime,
    ) -> bool {
        let picked = match self.by_kid.get(kid) {
            Some(version) if version.allows(algorithm) => Some(version),
            Some(_) => self.newest_allowing(KeyRef::Kid(kid), algorithm),
            None => None,
        };
        picked.is_some_and(|version| {
            version.verifying_key().fingerprint() == *fingerprint && policy.validates(version, now)
        })
    }

    fn find(&self, key: KeyRef<'_>) -> Option<&Arc<KeyVersion>> {
        match key {
            KeyRef::Kid(kid) => self.by_kid.get(kid),
            KeyRef::X5t(x5t) => self.by_x5t.get(x5t.trim_end_matches('=')),
        }
    }

    /// Looks up the newest version with this id whose key verifies `algorithm`, and
    /// classifies it. RFC 7517 lets keys of different types share a kid (an RSA and an EC key
    /// named alike): [`lookup`](Self::lookup) finds the newest of them, this one the one the
    /// token's algorithm needs. A scan, for the rare token whose first match does not fit.
    pub fn lookup_for_algorithm(
        &self,
        key: KeyRef<'_>,
        algorithm: Algorithm,
        policy: &RotationPolicy,
        now: SystemTime,
    ) -> KeyLookup {
        classify(self.newest_allowing(key, algorithm), policy, now)
    }

    /// The newest version with this id whose key verifies `algorithm` (a scan).
    fn newest_allowing(&self, key: KeyRef<'_>, algorithm: Algorithm) -> Option<&Arc<KeyVersion>> {
        let named = |version: &&Arc<KeyVersion>| match key {
            KeyRef::Kid(kid) => version.kid == kid,
            KeyRef::X5t(x5t) => version
                .x5t
                .as_deref()
                .is_some_and(|own| own.trim_end_matches('=') == x5t.trim_end_matches('=')),
        };
        self.versions
            .iter()
            .filter(named)
            .find(|version| version.allows(algorithm))
    }

    /// The versions that validate at `now`, newest first.
    pub fn validation_set(&self, policy: &RotationPolicy, now: SystemTime) -> Vec<Arc<KeyVersion>> {
        policy
            .validation_set(&self.versions, now)
            .cloned()
            .collect()
    }

    pub(crate) fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    pub(crate) fn same_content(&self, other: &KeySet) -> bool {
        self.versions.len() == other.versions.len()
            && self.versions.iter().zip(&other.versions).all(|(a, b)| {
                a.kid == b.kid
                    && a.enabled == b.enabled
                    && a.not_before == b.not_before
                    && a.expires == b.expires
            })
    }
}

/// `found`, classified under `policy` at `now`.
fn classify(
    found: Option<&Arc<KeyVersion>>,
    policy: &RotationPolicy,
    now: SystemTime,
) -> KeyLookup {
    match found {
        Some(version) if policy.validates(version, now) => KeyLookup::Valid(Arc::clone(version)),
        Some(version) => KeyLookup::NotValid(Arc::clone(version)),
        None => KeyLookup::Unknown,
    }
}

/// Disables the versions whose kid is in `revoked` ([`KeyCache::revoke`](super::KeyCache::revoke)).
pub(crate) fn disable_revoked(versions: &mut [KeyVersion], revoked: &[Arc<str>]) {
    for version in versions {
        if revoked.iter().any(|kid| **kid == *version.kid) {
            version.enabled = false;
        }
    }
}

impl Expiring for KeySet {
    fn usable_until(&self) -> SystemTime {
        self.schedule.stale_at
    }
}
