//! How a cache stands, for readiness probes: [`KeyCache::status`](crate::KeyCache::status) and
//! [`TokenCache::status`](crate::TokenCache::status) read it without loading or waiting.
//!
//! ```
//! use keyroll_core::{Algorithm, CacheState, KeyCache, LocalKeyRing};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap()).build();
//! assert_eq!(keys.status().state, CacheState::Loading); // nothing loaded yet
//! keys.ready().await.unwrap();
//! let status = keys.status();
//! assert_eq!(status.state, CacheState::Ready);
//! assert!(status.state.is_serving());
//! assert_eq!(status.versions, 1);
//! // Worse states order after better ones: the worst of several caches is their maximum.
//! assert_eq!(CacheState::Ready.max(CacheState::Degraded), CacheState::Degraded);
//! # });
//! ```

use std::fmt;
use std::time::{Duration, SystemTime};

/// The readiness of one cache. Ordered from best to worst, so the state of several caches
/// together is the greatest of theirs ([`Ord::max`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CacheState {
    /// Loaded, and the source answered the last time it was asked.
    Ready,
    /// Serving what it has while the source fails: a key set younger than `max_stale`, or
    /// tokens that have not expired. Requests are still served.
    Degraded,
    /// Nothing loaded yet, and no load has failed: the first load is pending or running.
    Loading,
    /// Nothing to serve: never loaded and the load failed, keys past `max_stale`, or an
    /// audience with no usable token whose fetch fails. The validator answers 503.
    Unavailable,
}

impl CacheState {
    /// Whether requests can be served ([`Ready`](Self::Ready) or [`Degraded`](Self::Degraded)).
    pub fn is_serving(self) -> bool {
        matches!(self, CacheState::Ready | CacheState::Degraded)
    }

    /// `ready`, `degraded`, `loading` or `unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Ready => "ready",
            CacheState::Degraded => "degraded",
            CacheState::Loading => "loading",
            CacheState::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for CacheState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`KeyCache::status`](crate::KeyCache::status) found.
///
/// | state | when |
/// |---|---|
/// | `Loading` | no set yet, no load failed |
/// | `Ready` | a set younger than `max_stale`, the last load worked |
/// | `Degraded` | a set younger than `max_stale`, loads failing since `failing_since` |
/// | `Unavailable` | no set and the load failed, or the set is past `max_stale` |
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyCacheStatus {
    /// The state.
    pub state: CacheState,
    /// Versions in the current set (0 when none is loaded).
    pub versions: usize,
    /// Age of the current set: since the source last answered with it.
    pub age: Option<Duration>,
    /// How long until the set passes `max_stale` and the cache is unavailable, while it serves.
    pub unavailable_in: Option<Duration>,
    /// When the first load failed since the last good one (`None` while loads work).
    pub failing_since: Option<SystemTime>,
    /// How long loads have been failing (since `failing_since`).
    pub stale_for: Option<Duration>,
    /// Failed loads since the last good one.
    pub consecutive_failures: u32,
    /// The last failed load's error, as displayed (sources' errors carry no secret).
    pub last_error: Option<String>,
}

/// What [`TokenCache::status`](crate::TokenCache::status) found, over every audience it holds.
///
/// | state | when |
/// |---|---|
/// | `Ready` | no audience's fetch is failing (an audience never asked for is no failure) |
/// | `Degraded` | some audiences' refreshes fail, but their tokens are still usable |
/// | `Unavailable` | some audience has no usable token and its fetch fails |
///
/// A token cache is never `Loading`: tokens are fetched when first asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenCacheStatus {
    /// The state.
    pub state: CacheState,
    /// Audiences with a usable token.
    pub audiences: usize,
    /// Audiences whose token is still usable while its refresh fails.
    pub degraded_audiences: usize,
    /// Audiences with no usable token whose fetch fails.
    pub unavailable_audiences: usize,
    /// The earliest first failure among the failing audiences.
    pub failing_since: Option<SystemTime>,
    /// How long the longest-failing audience has been failing.
    pub stale_for: Option<Duration>,
    /// The most failed fetches in a row of any audience.
    pub consecutive_failures: u32,
    /// The error of the latest failed fetch of the worst-off audiences, prefixed with its
    /// audience (token sources' errors carry no token).
    pub last_error: Option<String>,
}
