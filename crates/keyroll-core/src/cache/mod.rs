//! The refresh-coordinated key cache that the issuer and the validator share.
//!
//! ```
//! use std::sync::Arc;
//! use keyroll_core::{Algorithm, KeyCache, KeyCacheConfig, KeyLookup, KeyRef, LocalKeyRing};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let ring = Arc::new(LocalKeyRing::in_memory(Algorithm::ES256).unwrap());
//! let cache = KeyCache::builder(ring).config(KeyCacheConfig::default()).build();
//!
//! // The issuer side: the version that signs now, and its signer.
//! let active = cache.active_signer().await.unwrap();
//! // The validator side: a lookup by kid, refreshing (coalesced, cooled down) on a miss.
//! match cache.find(KeyRef::Kid(&active.version.kid)).await.unwrap() {
//!     KeyLookup::Valid(version) => assert_eq!(version.kid, active.version.kid),
//!     other => panic!("{other:?}"),
//! }
//! # });
//! ```
//!
//! # Coalescing, cancellation and panics
//!
//! - **Single flight.** At most one `load` of the source runs at a time per cache. Every caller
//!   that needs a load while one runs (a cold start, an unknown kid, `refresh_now`, the
//!   background timer) waits for that same load and gets its result: N concurrent misses cost
//!   one source call.
//! - **Cancellation.** The load runs in its own tokio task. A caller that stops waiting (its
//!   request was dropped, a timeout fired) does not cancel it: the load completes and publishes
//!   its result for everyone else.
//! - **Panics.** If the source panics, the waiting callers get a [`KeyCacheError::Unavailable`]
//!   (or keep the last good set) and the next load starts afresh: a panic never leaves the cache
//!   stuck.
//!
//! # Staleness
//!
//! A failed refresh keeps the last good set and retries with exponential backoff and jitter.
//! Past `max_stale` without a good refresh, lookups fail with [`KeyCacheError::Unavailable`],
//! which the validator answers with 503, not 401.

mod config;
mod key_set;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use futures_util::FutureExt as _;
use futures_util::future::Shared;

pub use self::config::KeyCacheConfig;
pub use self::key_set::{KeyLookup, KeyRef, KeySet};
use crate::clock::{Clock, SystemClock};
use crate::error::SourceError;
use crate::key::KeyVersion;
use crate::lock;
use crate::policy::NoActiveKey;
use crate::source::{BoxFuture, KeySource, Signer};

type LoadResult = Result<Arc<KeySet>, Arc<SourceError>>;
type SharedLoad = Shared<BoxFuture<'static, LoadResult>>;

/// A shared, refresh-coordinated view of one [`KeySource`]. Cheap to clone: clones share
/// everything. The background refresh starts with the first use and stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct KeyCache {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn KeySource>,
    source_name: String,
    config: KeyCacheConfig,
    clock: Arc<dyn Clock>,
    background: bool,
    refresher_started: AtomicBool,
    snapshot: ArcSwapOption<KeySet>,
    flight: Mutex<Flight>,
    misses: Mutex<MissState>,
    signers: Mutex<HashMap<String, Arc<dyn Signer>>>,
    counters: Counters,
}

#[derive(Default)]
struct Flight {
    current: Option<SharedLoad>,
    consecutive_failures: u32,
    last_error: Option<Arc<SourceError>>,
    /// After a failure, no load is started on demand before this time (background and
    /// `refresh_now` loads still run), so a failing cold start cannot hammer the source.
    retry_at: Option<SystemTime>,
    generation: u64,
}

/// See [`KeyCache::classify_miss`].
enum Miss {
    Negative,
    Cooling(Option<SharedLoad>),
    Due,
}

#[derive(Default)]
struct MissState {
    last_refresh: Option<SystemTime>,
    negative: HashMap<String, SystemTime>,
}

#[derive(Default)]
struct Counters {
    loads: AtomicU64,
    load_failures: AtomicU64,
    kid_misses: AtomicU64,
    kid_refreshes: AtomicU64,
    negative_hits: AtomicU64,
}

/// Counters and state of a [`KeyCache`], for metrics and health endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheMetrics {
    /// Source loads started (successful or not).
    pub loads: u64,
    /// Source loads that failed.
    pub load_failures: u64,
    /// Lookups of a kid the current set did not have.
    pub kid_misses: u64,
    /// Refreshes triggered by unknown kids.
    pub kid_refreshes: u64,
    /// Unknown-kid lookups answered from the negative cache.
    pub negative_hits: u64,
    /// Versions in the current set.
    pub versions: usize,
    /// Age of the current set (since the source last answered), if one was ever loaded.
    pub age: Option<Duration>,
    /// Failed refreshes since the last good one.
    pub consecutive_failures: u32,
}

/// Why the cache could not give keys or a signer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyCacheError {
    /// No set was ever loaded, or the last good one is older than `max_stale`. The validator
    /// answers 503 with `Retry-After`.
    #[error("keys from {source_name} are unavailable ({reason})")]
    Unavailable {
        /// The source.
        source_name: String,
        /// Why: never loaded, or stale for how long.
        reason: String,
        /// When to try again.
        retry_after: Duration,
        /// The last refresh error.
        #[source]
        cause: Option<Arc<SourceError>>,
    },
    /// Every version is disabled, expired or not yet valid.
    #[error("{source_name}: {error}")]
    NoActiveKey {
        /// The source.
        source_name: String,
        /// Details.
        #[source]
        error: NoActiveKey,
    },
    /// The source could not give a signer for the active version.
    #[error(transparent)]
    Signer(SourceError),
}

impl KeyCacheError {
    /// Whether this is [`KeyCacheError::Unavailable`] (a 503, not a 401).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, KeyCacheError::Unavailable { .. })
    }

    /// A suggested retry delay for the caller.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            KeyCacheError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The version that signs now, with its signer.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ActiveSigner {
    /// The active version (its kid, algorithm and thumbprints go into the JWT header).
    pub version: Arc<KeyVersion>,
    /// Its signer.
    pub signer: Arc<dyn Signer>,
}

/// Builds a [`KeyCache`].
pub struct KeyCacheBuilder {
    source: Arc<dyn KeySource>,
    config: KeyCacheConfig,
    clock: Arc<dyn Clock>,
    background: bool,
}

impl fmt::Debug for KeyCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCacheBuilder")
            .field("source", &self.source.name())
            .field("config", &self.config)
            .finish()
    }
}

impl KeyCacheBuilder {
    /// Sets the configuration.
    pub fn config(mut self, config: KeyCacheConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the clock (the rotation policy, staleness and cooldowns read it).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether to refresh in the background (default true). Without it the set is refreshed
    /// only on unknown kids and by [`KeyCache::refresh_now`].
    pub fn background_refresh(mut self, enabled: bool) -> Self {
        self.background = enabled;
        self
    }

    /// Builds the cache. Nothing is loaded until first use (or [`KeyCache::refresh_now`]).
    pub fn build(self) -> KeyCache {
        KeyCache {
            inner: Arc::new(Inner {
                source_name: self.source.name(),
                source: self.source,
                config: self.config.sanitized(),
                clock: self.clock,
                background: self.background,
                refresher_started: AtomicBool::new(false),
                snapshot: ArcSwapOption::empty(),
                flight: Mutex::new(Flight::default()),
                misses: Mutex::new(MissState::default()),
                signers: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        }
    }
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("source", &self.inner.source_name)
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl KeyCache {
    /// A builder over `source`.
    pub fn builder(source: impl KeySource + 'static) -> KeyCacheBuilder {
        Self::builder_arc(Arc::new(source))
    }

    /// A builder over a shared source.
    pub fn builder_arc(source: Arc<dyn KeySource>) -> KeyCacheBuilder {
        KeyCacheBuilder {
            source,
            config: KeyCacheConfig::default(),
            clock: Arc::new(SystemClock),
            background: true,
        }
    }

    /// The source's name.
    pub fn source_name(&self) -> &str {
        &self.inner.source_name
    }

    /// The configuration.
    pub fn config(&self) -> &KeyCacheConfig {
        &self.inner.config
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The current time on the cache's clock.
    pub fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    /// Whether a set has been loaded (readiness).
    pub fn is_ready(&self) -> bool {
        self.inner.snapshot.load().is_some()
    }

    /// The current snapshot, without loading, waiting or checking staleness.
    pub fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.inner.snapshot.load_full()
    }

    /// The current set: lock-free when one is loaded and fresh enough; on a cold cache, waits
    /// for the (single-flight) first load.
    pub async fn keys(&self) -> Result<Arc<KeySet>, KeyCacheError> {
        self.ensure_refresher();
        let set = match self.inner.snapshot.load_full() {
            Some(set) => set,
            None => {
                let backing_off = {
                    let flight = lock(&self.inner.flight);
                    let waiting = flight.retry_at.is_some_and(|at| self.now() < at);
                    (flight.current.is_none() && waiting).then(|| flight.last_error.clone())
                };
                if let Some(cause) = backing_off {
                    return Err(self.unavailable("never loaded", cause));
                }
                self.start_load()
                    .await
                    .map_err(|cause| self.unavailable("never loaded", Some(cause)))?
            }
        };
        self.check_fresh(&set, self.now())?;
        Ok(set)
    }

    /// Waits until the first load is done (readiness), returning its error if it failed.
    pub async fn ready(&self) -> Result<(), KeyCacheError> {
        self.keys().await.map(|_| ())
    }

    /// Looks a version up in the current set without waiting: `Ok(None)` when no set is
    /// loaded yet, [`KeyLookup::Unknown`] on a miss (then [`find`](Self::find) may refresh),
    /// and [`KeyCacheError::Unavailable`] when the set is stale past `max_stale`. This is the
    /// validator's hot path: one atomic load and a hash lookup. `now` is the cache's clock
    /// ([`now`](Self::now)), read once by the caller for all its checks.
    pub fn lookup_at(
        &self,
        key: KeyRef<'_>,
        now: SystemTime,
    ) -> Result<Option<KeyLookup>, KeyCacheError> {
        self.ensure_refresher();
        let snapshot = self.inner.snapshot.load();
        let Some(set) = snapshot.as_deref() else {
            return Ok(None);
        };
        self.check_fresh(set, now)?;
        Ok(Some(set.lookup(key, &self.inner.config.policy, now)))
    }

    /// Fails with [`KeyCacheError::Unavailable`] when `set` is older than `max_stale`.
    fn check_fresh(&self, set: &KeySet, now: SystemTime) -> Result<(), KeyCacheError> {
        let age = now.duration_since(set.loaded_at()).unwrap_or_default();
        if age > self.inner.config.max_stale {
            let cause = lock(&self.inner.flight).last_error.clone();
            return Err(self.unavailable(&format!("stale for {}s", age.as_secs()), cause));
        }
        Ok(())
    }

    /// Finds a version by kid or `x5t`. On a miss, refreshes once (coalesced with any load
    /// already running) unless an unknown-kid refresh ran within the cooldown or a refresh
    /// already failed to find this kid within `negative_ttl`, so a flood of random kids cannot
    /// become a flood of source calls.
    pub async fn find(&self, key: KeyRef<'_>) -> Result<KeyLookup, KeyCacheError> {
        let set = self.keys().await?;
        let policy = &self.inner.config.policy;
        let found = set.lookup(key, policy, self.now());
        if !matches!(found, KeyLookup::Unknown) {
            return Ok(found);
        }
        let counters = &self.inner.counters;
        counters.kid_misses.fetch_add(1, Ordering::Relaxed);
        let id = match key {
            KeyRef::Kid(kid) => kid,
            KeyRef::X5t(x5t) => x5t,
        };
        let refresh = {
            let mut misses = lock(&self.inner.misses);
            match self.classify_miss(&misses, id, self.now()) {
                Miss::Negative => {
                    counters.negative_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(KeyLookup::Unknown);
                }
                // No new refresh, but a load that is already running is free to wait for.
                Miss::Cooling(running) => running,
                Miss::Due => {
                    misses.last_refresh = Some(self.now());
                    counters.kid_refreshes.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(source = %self.inner.source_name, kid = %id, "unknown kid: refreshing");
                    Some(self.start_load())
                }
            }
        };
        let Some(load) = refresh else {
            return Ok(KeyLookup::Unknown);
        };
        let set = match load.await {
            Ok(set) => set,
            // The refresh failed: answer from the last good set (still fresh enough).
            Err(_) => self.keys().await?,
        };
        let found = set.lookup(key, policy, self.now());
        if matches!(found, KeyLookup::Unknown) {
            self.remember_unknown(id);
        }
        Ok(found)
    }

    /// For a kid the current set lacks: whether [`find`](Self::find) would answer
    /// [`KeyLookup::Unknown`] without loading anything (the kid is in the negative cache, or
    /// an unknown-kid refresh ran within the cooldown and no load is running). Counted as a
    /// miss when it is; never starts a load, so it is safe outside a runtime. `now` as for
    /// [`lookup_at`](Self::lookup_at).
    pub fn miss_is_settled_at(&self, key: KeyRef<'_>, now: SystemTime) -> bool {
        let id = match key {
            KeyRef::Kid(kid) => kid,
            KeyRef::X5t(x5t) => x5t,
        };
        let counters = &self.inner.counters;
        let settled = match self.classify_miss(&lock(&self.inner.misses), id, now) {
            Miss::Negative => {
                counters.negative_hits.fetch_add(1, Ordering::Relaxed);
                true
            }
            Miss::Cooling(running) => running.is_none(),
            Miss::Due => false,
        };
        if settled {
            counters.kid_misses.fetch_add(1, Ordering::Relaxed);
        }
        settled
    }

    /// What a miss on `id` calls for: the negative cache answers, the cooldown holds (with the
    /// load already running, if any), or a refresh is due.
    fn classify_miss(&self, misses: &MissState, id: &str, now: SystemTime) -> Miss {
        if misses.negative.get(id).is_some_and(|until| now < *until) {
            return Miss::Negative;
        }
        let cooling = misses.last_refresh.is_some_and(|last| {
            now.duration_since(last)
                .is_ok_and(|since| since < self.inner.config.unknown_kid_cooldown)
        });
        if cooling {
            Miss::Cooling(lock(&self.inner.flight).current.clone())
        } else {
            Miss::Due
        }
    }

    fn remember_unknown(&self, id: &str) {
        let config = &self.inner.config;
        let now = self.now();
        let mut misses = lock(&self.inner.misses);
        if misses.negative.len() >= config.negative_capacity {
            misses.negative.retain(|_, until| now < *until);
            if misses.negative.len() >= config.negative_capacity {
                // Still full of live entries: start over. The cooldown still bounds source calls.
                misses.negative.clear();
            }
        }
        if config.negative_capacity > 0 {
            misses
                .negative
                .insert(id.to_owned(), now + config.negative_ttl);
        }
    }

    /// The version that signs now under the rotation policy, and its signer. The choice is
    /// made from the snapshot and the clock at each call, so the switch to a new version
    /// happens on time without a refresh.
    pub async fn active_signer(&self) -> Result<ActiveSigner, KeyCacheError> {
        let set = self.keys().await?;
        let version = self
            .inner
            .config
            .policy
            .active(set.versions(), self.now())
            .map_err(|error| KeyCacheError::NoActiveKey {
                source_name: self.inner.source_name.clone(),
                error,
            })?
            .clone();
        let cached = lock(&self.inner.signers).get(&version.kid).cloned();
        let signer = match cached {
            Some(signer) => signer,
            None => {
                let signer = self
                    .inner
                    .source
                    .signer(&version)
                    .await
                    .map_err(KeyCacheError::Signer)?;
                lock(&self.inner.signers).insert(version.kid.clone(), Arc::clone(&signer));
                signer
            }
        };
        Ok(ActiveSigner { version, signer })
    }

    /// The versions that validate now (what a JWKS endpoint publishes).
    pub async fn validation_set(&self) -> Result<Vec<Arc<KeyVersion>>, KeyCacheError> {
        let set = self.keys().await?;
        Ok(set.validation_set(&self.inner.config.policy, self.now()))
    }

    /// Reloads from the source now. A load already running is awaited first, so the result
    /// reflects the source as it is after this call started.
    pub async fn refresh_now(&self) -> Result<Arc<KeySet>, KeyCacheError> {
        self.ensure_refresher();
        let running = lock(&self.inner.flight).current.clone();
        if let Some(running) = running {
            let _ = running.await;
        }
        self.start_load()
            .await
            .map_err(|cause| self.unavailable("refresh failed", Some(cause)))
    }

    /// Counters and state.
    pub fn metrics(&self) -> CacheMetrics {
        let counters = &self.inner.counters;
        let snapshot = self.snapshot();
        CacheMetrics {
            loads: counters.loads.load(Ordering::Relaxed),
            load_failures: counters.load_failures.load(Ordering::Relaxed),
            kid_misses: counters.kid_misses.load(Ordering::Relaxed),
            kid_refreshes: counters.kid_refreshes.load(Ordering::Relaxed),
            negative_hits: counters.negative_hits.load(Ordering::Relaxed),
            versions: snapshot.as_ref().map_or(0, |s| s.versions().len()),
            age: snapshot.map(|s| self.now().duration_since(s.loaded_at()).unwrap_or_default()),
            consecutive_failures: lock(&self.inner.flight).consecutive_failures,
        }
    }

    fn unavailable(&self, reason: &str, cause: Option<Arc<SourceError>>) -> KeyCacheError {
        let (failures, retry_at) = {
            let flight = lock(&self.inner.flight);
            (flight.consecutive_failures.max(1), flight.retry_at)
        };
        // When the next on-demand load may start, else the next backoff delay; in whole
        // seconds, rounded up, so a client that waits that long finds the cache ready to retry.
        let wait = retry_at
            .and_then(|at| at.duration_since(self.now()).ok())
            .unwrap_or_else(|| self.inner.config.backoff(failures));
        let retry_after = Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
        KeyCacheError::Unavailable {
            source_name: self.inner.source_name.clone(),
            reason: reason.to_owned(),
            retry_after: retry_after.max(Duration::from_secs(1)),
            cause,
        }
    }

    /// Starts a load unless one is running (then joins it).
    fn start_load(&self) -> SharedLoad {
        let mut flight = lock(&self.inner.flight);
        if let Some(running) = &flight.current {
            return running.clone();
        }
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(async move {
            let _clear = ClearFlight(Arc::clone(&inner));
            inner.load_once().await
        });
        let source_name = self.inner.source_name.clone();
        let load: BoxFuture<'static, LoadResult> = Box::pin(async move {
            task.await.unwrap_or_else(|_| {
                Err(Arc::new(SourceError::new(
                    source_name,
                    "load keys",
                    "the source panicked",
                )))
            })
        });
        let shared = load.shared();
        flight.current = Some(shared.clone());
        shared
    }

    fn ensure_refresher(&self) {
        // A plain load first: the hot path must not write a shared cache line on every call.
        if !self.inner.background
            || self.inner.refresher_started.load(Ordering::Acquire)
            || self.inner.refresher_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(refresh_loop(weak));
    }
}

/// Clears the in-flight marker when the load task ends, even by panic.
struct ClearFlight(Arc<Inner>);

impl Drop for ClearFlight {
    fn drop(&mut self) {
        let mut flight = lock(&self.0.flight);
        flight.current = None;
        if std::thread::panicking() {
            flight.consecutive_failures += 1;
            flight.retry_at =
                Some(self.0.clock.now() + self.0.config.backoff(flight.consecutive_failures));
            self.0
                .counters
                .load_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Inner {
    async fn load_once(&self) -> LoadResult {
        self.counters.loads.fetch_add(1, Ordering::Relaxed);
        let timeout = self.config.load_timeout;
        let loaded = tokio::time::timeout(timeout, self.source.load())
            .await
            .unwrap_or_else(|_| {
                Err(SourceError::new(
                    self.source_name.clone(),
                    "load keys",
                    format!("timed out after {}s", timeout.as_secs_f32()),
                ))
            });
        match loaded {
            Ok(loaded) => {
                let generation = {
                    let mut flight = lock(&self.flight);
                    flight.generation += 1;
                    flight.consecutive_failures = 0;
                    flight.last_error = None;
                    flight.retry_at = None;
                    flight.generation
                };
                let set = Arc::new(KeySet::new(
                    loaded.versions,
                    self.clock.now(),
                    loaded.max_age,
                    generation,
                ));
                let previous = self.snapshot.swap(Some(Arc::clone(&set)));
                if previous.as_ref().is_none_or(|p| !p.same_content(&set)) {
                    tracing::info!(
                        source = %self.source_name,
                        versions = set.versions().len(),
                        kids = ?set.versions().iter().map(|v| v.kid.as_str()).collect::<Vec<_>>(),
                        "key set changed"
                    );
                }
                lock(&self.signers).retain(|kid, _| set.contains_kid(kid));
                lock(&self.misses)
                    .negative
                    .retain(|kid, _| !set.contains_kid(kid));
                Ok(set)
            }
            Err(error) => {
                self.counters.load_failures.fetch_add(1, Ordering::Relaxed);
                let error = Arc::new(error);
                let mut flight = lock(&self.flight);
                flight.consecutive_failures += 1;
                flight.last_error = Some(Arc::clone(&error));
                let wait = self.config.backoff(flight.consecutive_failures).max(
                    error
                        .retry_after()
                        .unwrap_or_default()
                        .min(self.config.backoff_max),
                );
                flight.retry_at = Some(self.clock.now() + wait);
                tracing::warn!(
                    source = %self.source_name,
                    failures = flight.consecutive_failures,
                    error = %error,
                    "key refresh failed; serving the last good set"
                );
                Err(error)
            }
        }
    }

    fn next_delay(&self) -> Duration {
        // After a failure, the retry point the failed load set (the one `Retry-After`
        // announces too), not a fresh draw of the backoff.
        let retry_at = lock(&self.flight).retry_at;
        if let Some(at) = retry_at {
            return at.duration_since(self.clock.now()).unwrap_or_default();
        }
        let hint = self.snapshot.load().as_ref().and_then(|s| s.max_age());
        let interval = match hint {
            // Never later than the interval, never sooner than the cooldown (nor the interval,
            // when that is the shorter).
            Some(max_age) => max_age.min(self.config.refresh_interval).max(
                self.config
                    .unknown_kid_cooldown
                    .min(self.config.refresh_interval),
            ),
            None => self.config.refresh_interval,
        };
        self.config.jittered(interval)
    }
}

async fn refresh_loop(weak: Weak<Inner>) {
    loop {
        // Let a running load finish first: the next delay depends on its outcome.
        let running = weak
            .upgrade()
            .and_then(|inner| lock(&inner.flight).current.clone());
        if let Some(running) = running {
            let _ = running.await;
        }
        let Some(delay) = weak.upgrade().map(|inner| inner.next_delay()) else {
            return;
        };
        tokio::time::sleep(delay).await;
        let Some(inner) = weak.upgrade() else { return };
        let load = KeyCache { inner }.start_load();
        let _ = load.await;
    }
}
