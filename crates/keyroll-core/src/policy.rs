//! Which version signs, and which versions validate.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use keyroll_core::{Algorithm, KeyVersion, LocalKey, RotationPolicy};
//!
//! let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let hour = Duration::from_secs(3600);
//! let version = |kid: &str, created| {
//!     KeyVersion::new(kid, LocalKey::generate(Algorithm::ES256).unwrap().public_jwk(), created).unwrap()
//! };
//! let versions = vec![version("old", t0), version("new", t0 + 10 * hour)];
//! let policy = RotationPolicy::default().propagation(hour);
//!
//! // Half an hour after "new" appeared it validates, but "old" still signs…
//! let now = t0 + 10 * hour + hour / 2;
//! assert_eq!(policy.active(&versions, now).unwrap().kid, "old");
//! assert_eq!(policy.validation_set(&versions, now).count(), 2);
//! // …and once it has been published for the whole propagation window, it signs.
//! assert_eq!(policy.active(&versions, now + hour).unwrap().kid, "new");
//! ```

use std::time::{Duration, SystemTime};

use crate::clock::later;
use crate::key::KeyVersion;

/// The rollover rules, applied to a snapshot of versions and a time.
///
/// - The **active** (signing) version is the newest usable version (enabled, inside its
///   not-before/expires window) published at least `propagation` ago (published: created, or
///   its not-before when that is later), so every validator has had the time to learn it
///   before it signs anything.
/// - If none is old enough, the newest usable version signs (a brand-new deployment works at once).
/// - The **validation set** is every enabled version inside its window widened by `leeway`;
///   new versions are included the moment they appear. Any leeway is safe (`Duration::MAX`:
///   the window never closes).
///
/// The choice is a pure function of the versions and the time, so the switch happens on time
/// without a refresh, and every replica that sees the same vault state chooses the same key.
///
/// From a file (feature `serde`): keys `propagation` and `leeway`, each optional, durations as
/// `"1h"`, `"90s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct RotationPolicy {
    /// How long a new version is published for validation before it signs. Default 1 hour.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub propagation: Duration,
    /// Clock skew tolerated on versions' not-before and expiry when validating. Default 60 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub leeway: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            propagation: Duration::from_secs(3600),
            leeway: Duration::from_secs(60),
        }
    }
}

/// No version can sign: every version is disabled, expired or not yet valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no usable key version: all {total} versions are disabled, expired or not yet valid")]
#[non_exhaustive]
pub struct NoActiveKey {
    /// How many versions there were.
    pub total: usize,
}

impl RotationPolicy {
    /// Sets the propagation (rollover) window.
    pub fn propagation(mut self, propagation: Duration) -> Self {
        self.propagation = propagation;
        self
    }

    /// Sets the leeway.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The version that signs at `now`.
    pub fn active<'a, V: AsRef<KeyVersion>>(
        &self,
        versions: &'a [V],
        now: SystemTime,
    ) -> Result<&'a V, NoActiveKey> {
        let usable = || versions.iter().filter(|v| v.as_ref().is_usable_at(now));
        let newest = |candidates: &mut dyn Iterator<Item = &'a V>| {
            candidates.max_by(|a, b| a.as_ref().age_order(b.as_ref()))
        };
        // Published from its creation or its not-before, whichever is later.
        let propagated = |v: &&V| {
            let v = v.as_ref();
            let published = v.not_before.map_or(v.created, |nbf| nbf.max(v.created));
            now.duration_since(published)
                .is_ok_and(|age| age >= self.propagation)
        };
        newest(&mut usable().filter(propagated))
            .or_else(|| newest(&mut usable()))
            .ok_or(NoActiveKey {
                total: versions.len(),
            })
    }

    /// Whether `version` validates at `now`.
    pub fn validates(&self, version: &KeyVersion, now: SystemTime) -> bool {
        version.enabled
            && version
                .not_before
                .is_none_or(|nbf| nbf <= later(now, self.leeway))
            && version
                .expires
                .is_none_or(|exp| now < later(exp, self.leeway))
    }

    /// The versions that validate at `now`.
    pub fn validation_set<'a, V: AsRef<KeyVersion>>(
        &'a self,
        versions: &'a [V],
        now: SystemTime,
    ) -> impl Iterator<Item = &'a V> + 'a {
        versions
            .iter()
            .filter(move |v| self.validates(v.as_ref(), now))
    }
}

impl AsRef<KeyVersion> for KeyVersion {
    fn as_ref(&self) -> &KeyVersion {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, LocalKey};
    use std::sync::OnceLock;

    const HOUR: Duration = Duration::from_secs(3600);

    fn t(hours: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + HOUR * hours as u32
    }

    fn version(kid: &str, created: SystemTime) -> KeyVersion {
        static JWK: OnceLock<crate::Jwk> = OnceLock::new();
        let jwk = JWK.get_or_init(|| LocalKey::generate(Algorithm::ES256).unwrap().public_jwk());
        KeyVersion::new(kid, jwk.clone(), created).unwrap()
    }

    fn policy() -> RotationPolicy {
        RotationPolicy::default().propagation(HOUR)
    }

    fn active(versions: &[KeyVersion], now: SystemTime) -> Result<&str, NoActiveKey> {
        policy().active(versions, now).map(|v| v.kid.as_str())
    }

    #[test]
    fn one_new_version_signs_at_once_by_fallback() {
        let versions = [version("a", t(10))];
        assert_eq!(active(&versions, t(10)), Ok("a"));
    }

    #[test]
    fn newest_propagated_version_signs() {
        let versions = [version("a", t(0)), version("b", t(10)), version("c", t(20))];
        // c is inside its propagation window: b (the newest old-enough one) signs.
        assert_eq!(active(&versions, t(20)), Ok("b"));
        // Exactly `propagation` later, c signs: no refresh needed for the switch.
        assert_eq!(active(&versions, t(21)), Ok("c"));
        assert_eq!(policy().validation_set(&versions, t(20)).count(), 3);
    }

    #[test]
    fn order_of_listing_does_not_matter() {
        let versions = [version("c", t(20)), version("a", t(0)), version("b", t(10))];
        assert_eq!(active(&versions, t(25)), Ok("c"));
    }

    #[test]
    fn disabled_newest_is_skipped_and_does_not_validate() {
        let versions = [version("a", t(0)), version("b", t(10)).with_enabled(false)];
        assert_eq!(active(&versions, t(30)), Ok("a"));
        let set: Vec<_> = policy()
            .validation_set(&versions, t(30))
            .map(|v| v.kid.clone())
            .collect();
        assert_eq!(set, ["a"]);
    }

    #[test]
    fn not_before_in_the_future_neither_signs_nor_validates_yet() {
        let versions = [
            version("a", t(0)),
            version("b", t(0)).with_not_before(t(50)),
        ];
        assert_eq!(active(&versions, t(10)), Ok("a"));
        assert_eq!(policy().validation_set(&versions, t(10)).count(), 1);
        // Inside the leeway before its not-before, it validates already.
        let almost = t(50) - Duration::from_secs(30);
        assert_eq!(policy().validation_set(&versions, almost).count(), 2);
        // It signs one propagation window after its not-before, not after its creation.
        assert_eq!(active(&versions, t(50)), Ok("a"));
        assert_eq!(active(&versions, t(51)), Ok("b"));
    }

    #[test]
    fn expired_version_stops_signing_and_validating_after_leeway() {
        let versions = [version("a", t(0)), version("b", t(5)).with_expires(t(10))];
        assert_eq!(active(&versions, t(9)), Ok("b"));
        assert_eq!(active(&versions, t(10)), Ok("a"));
        assert_eq!(policy().validation_set(&versions, t(10)).count(), 2);
        assert_eq!(
            policy()
                .validation_set(&versions, t(10) + Duration::from_secs(61))
                .count(),
            1
        );
    }

    #[test]
    fn all_disabled_is_a_typed_error() {
        let versions = [
            version("a", t(0)).with_enabled(false),
            version("b", t(1)).with_enabled(false),
        ];
        assert_eq!(active(&versions, t(10)), Err(NoActiveKey { total: 2 }));
        assert_eq!(active(&[], t(10)), Err(NoActiveKey { total: 0 }));
    }

    #[test]
    fn the_longest_leeway_overflows_nothing() {
        let forever = RotationPolicy::default().leeway(Duration::MAX);
        let windowed = version("a", t(0)).with_not_before(t(5)).with_expires(t(10));
        assert!(forever.validates(&windowed, t(0)));
        assert!(forever.validates(&windowed, t(1000)));
        assert_eq!(forever.validation_set(&[windowed], t(20)).count(), 1);
    }

    #[test]
    fn equal_created_times_break_ties_by_kid() {
        let versions = [version("b", t(0)), version("a", t(0))];
        assert_eq!(active(&versions, t(5)), Ok("b"));
    }
}
