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
//!   background refresh) waits for that same load and gets its result: N concurrent misses
//!   cost one source call.
//! - **Cancellation.** The load runs in its own task on the cache's runtime. A caller that
//!   stops waiting (its request was dropped, a timeout fired) does not cancel it: the load
//!   completes and publishes its result for everyone else. A load that takes longer than
//!   `load_timeout` fails.
//! - **Panics.** If the source panics, the load counts as failed: waiting callers get a
//!   [`KeyCacheError::Unavailable`] (or keep the last good set), the backoff applies, and the
//!   next load starts afresh. A panic never leaves the cache stuck.
//!
//! # Runtimes
//!
//! The synchronous paths ([`KeyCache::lookup_at`], and the validator's `verify_now` over it)
//! never spawn and never need a runtime. The background refresh is one task the cache owns.
//! It is started by the first async use (`keys`, `find`, `ready`, `active_signer`,
//! `refresh_now`) on the runtime given with [`KeyCacheBuilder::runtime`], else on the
//! caller's, and it starts again, from the next async use, when its runtime has gone away: a
//! cache shared by several runtimes (per-thread runtimes, tests sharing a static cache) keeps
//! refreshing. When a refresh is due and the task is not running, `lookup_at` answers `None`
//! (load through the async path), so the next request restarts it. Outside any runtime a due
//! refresh runs inside the async call that finds it due.
//!
//! # Signing while the source is down
//!
//! The signers [`KeyCache::active_signer`] hands out share the cache's view of its source:
//! once a sign fails for want of the source (no answer, a timeout, a 5xx), the next signs fail
//! at once, without a request, for a backoff that grows with each further failed sign
//! (`backoff_min` … `backoff_max`), or until a good refresh. A remote signer (a vault's) also
//! holds while the cache's last refresh found the source down, until the next good refresh,
//! which the background refresh attempts at its refresh rate anyway. A held sign's error says
//! when to try again (its `retry_after`). So an outage costs the vault the refresh rate and a
//! few probes per replica, not a sign retry per token cache per backoff step.
//!
//! # Staleness
//!
//! A failed refresh keeps the last good set and retries as [`KeyCacheConfig`] describes
//! (routine retries at the refresh rate while the set is fresh, urgent ones with backoff
//! otherwise, `Retry-After` honoured). A load that lists no key at all after a set that had
//! some is a failure too, not a new, empty set. Past `max_stale` without a good refresh,
//! lookups fail with [`KeyCacheError::Unavailable`], which the validator answers with 503, not
//! 401; from then on requests themselves start a load once the retry point has passed, so
//! the cache recovers as soon as the source does, not at the next timer.

mod config;
mod key_set;
mod ledger;
#[cfg(feature = "metrics")]
mod metrics;
mod signing;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::runtime::Handle;

pub use self::config::KeyCacheConfig;
pub(crate) use self::key_set::Found;
use self::key_set::Schedule;
pub use self::key_set::{KeyLookup, KeyRef, KeySet};
pub use self::ledger::SignedBy;
use crate::clock::{Clock, Sleep, later};
use crate::error::SourceError;
use crate::key::{KeyFingerprint, KeyVersion};
use crate::lock;
use crate::policy::NoActiveKey;
use crate::refresh::{
    Background, Engine, Errors, Failure, Flight, Loader, Need, Outcome, RetryHint, Slot, Start,
    Tick, Time,
};
use crate::source::{BoxFuture, KeySource, Signer};
use crate::status::{CacheState, KeyCacheStatus};
use crate::{Algorithm, Backoff};

/// A shared, refresh-coordinated view of one [`KeySource`]. Cheap to clone: clones share
/// everything. The background refresh starts with the first async use and stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct KeyCache {
    inner: Arc<Inner>,
}

struct Inner {
    loading: Arc<Loading>,
    loader: Box<Loader<KeySet, SourceError>>,
    engine: Arc<Engine>,
    slot: Arc<Slot<KeySet, SourceError>>,
    /// `None` when background refresh is off.
    background: Option<Background>,
    misses: Mutex<MissState>,
    /// Unknown kids a refresh did not find, with when each stops being remembered. Read
    /// without a lock (a flood of such kids is refused writing nothing shared but counters);
    /// written under `misses`, so the bound holds. Hashed with a per-process key: the kids come
    /// from untrusted tokens.
    negative: papaya::HashMap<Box<str>, SystemTime>,
    signers: Mutex<Signers>,
    /// A failed sign holding the others (see `signing`).
    held: Mutex<Option<signing::Hold>>,
    counters: Counters,
    /// The cache's name in metrics labels.
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    published: crate::metrics::CounterDeltas,
}

/// What a load needs: no reference back to the cache, so a running load keeps none alive.
struct Loading {
    source: Arc<dyn KeySource>,
    source_name: String,
    config: KeyCacheConfig,
    clock: Arc<dyn Clock>,
    ledger: ledger::Ledger,
    /// Kids revoked here ([`KeyCache::revoke`]): disabled in every set, whatever the source says.
    revoked: ArcSwap<Vec<Arc<str>>>,
    /// Whether `revoked` is not empty: what [`KeyCache::is_revoked`] reads first, since the
    /// outbound path asks for every token it attaches and revocations are rare.
    any_revoked: AtomicBool,
}

/// See [`KeyCache::classify_miss`].
enum Miss {
    Negative,
    Cooling(Option<Flight<KeySet, SourceError>>),
    Due,
}

#[derive(Default)]
struct MissState {
    last_refresh: Option<SystemTime>,
}

/// Signers by kid, for the versions of the set with this generation.
#[derive(Default)]
struct Signers {
    generation: u64,
    by_kid: HashMap<String, Arc<dyn Signer>>,
}

#[derive(Default)]
struct Counters {
    kid_misses: AtomicU64,
    kid_refreshes: AtomicU64,
    negative_hits: AtomicU64,
    bad_signatures: AtomicU64,
}

/// Counters and state of a [`KeyCache`], for metrics and health endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheMetrics {
    /// Source loads started (successful or not).
    pub loads: u64,
    /// Source loads that failed (timed out and panicked ones included).
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
    /// Whether the background refresh task runs now.
    pub background_running: bool,
    /// How often the background task was started (more than once: a runtime went away).
    pub background_starts: u64,
    /// Remote signatures that did not verify with the listed version's public key (a wrong
    /// signature, or a key that is not the listed one): refused before any token left.
    pub bad_signatures: u64,
    /// Versions that stopped validating (disabled, expired or removed at the source) while
    /// tokens they signed here were alive.
    pub versions_retired_early: u64,
    /// Live tokens those versions had signed: peers refuse them from then on.
    pub tokens_orphaned: u64,
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
    name: Option<String>,
    config: KeyCacheConfig,
    time: Time,
    background: bool,
}

impl fmt::Debug for KeyCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCacheBuilder")
            .field("source", &self.source.name())
            .field("name", &self.name)
            .field("config", &self.config)
            .field("time", &self.time)
            .field("background", &self.background)
            .finish()
    }
}

impl KeyCacheBuilder {
    /// Names the cache in metrics labels (`source="…"`, see [`metrics`](crate::metrics));
    /// default: the source's [`name`](KeySource::name). Give each cache its own: caches that
    /// share a name count as one.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the configuration.
    pub fn config(mut self, config: KeyCacheConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the clock (the rotation policy, staleness, schedules and cooldowns read it).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.time.clock = clock;
        self
    }

    /// Sets the timer the cache waits with (default [`TokioSleep`](crate::TokioSleep)).
    pub fn sleep(mut self, sleep: Arc<dyn Sleep>) -> Self {
        self.time.sleep = sleep;
        self
    }

    /// Runs loads and the background refresh on this runtime, whatever runtime the callers
    /// are on (default: the runtime of the async call that needs them).
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.time.runtime = Some(runtime);
        self
    }

    /// Whether to refresh in the background (default true). Without it the set is refreshed
    /// only on unknown kids, past `max_stale`, and by [`KeyCache::refresh_now`].
    pub fn background_refresh(mut self, enabled: bool) -> Self {
        self.background = enabled;
        self
    }

    /// Builds the cache, bringing the configuration into range (see [`KeyCacheConfig`]).
    /// Nothing is loaded until first use (or [`KeyCache::refresh_now`]).
    pub fn build(self) -> KeyCache {
        let config = self.config.sanitized();
        let source_name = self.source.name();
        let name: Arc<str> = self.name.unwrap_or_else(|| source_name.clone()).into();
        let engine = Engine::new(
            self.time.clone(),
            config.retry_schedule(),
            config.load_timeout,
        );
        let loading = Arc::new(Loading {
            source: self.source,
            source_name: source_name.clone(),
            config,
            clock: self.time.clock,
            ledger: ledger::Ledger::default(),
            revoked: ArcSwap::default(),
            any_revoked: AtomicBool::new(false),
        });
        let for_loads = Arc::clone(&loading);
        let loader: Box<Loader<KeySet, SourceError>> = Box::new(move |previous| {
            let loading = Arc::clone(&for_loads);
            Box::pin(async move { loading.load(previous).await })
        });
        let errors = Errors {
            timed_out: |name, after| {
                SourceError::new(
                    name,
                    "load keys",
                    format!("timed out after {}s", after.as_secs_f32()),
                )
            },
            lost: |name, why| SourceError::new(name, "load keys", why),
        };
        let slot = Slot::new(source_name, errors);
        #[cfg(feature = "metrics")]
        let slot = slot.observed(metrics::load_observer(Arc::clone(&name)));
        let inner = Arc::new(Inner {
            loading,
            loader,
            engine: Arc::new(engine),
            slot: Arc::new(slot),
            background: self.background.then(Background::default),
            misses: Mutex::new(MissState::default()),
            negative: papaya::HashMap::new(),
            signers: Mutex::new(Signers::default()),
            held: Mutex::new(None),
            counters: Counters::default(),
            name,
            #[cfg(feature = "metrics")]
            published: crate::metrics::CounterDeltas::default(),
        });
        #[cfg(feature = "metrics")]
        crate::metrics::register(Arc::downgrade(&inner) as Weak<dyn crate::metrics::Publish>);
        KeyCache { inner }
    }
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("source", &self.inner.loading.source_name)
            .field("name", &self.inner.name)
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl RetryHint for SourceError {
    fn retry_after(&self) -> Option<Duration> {
        SourceError::retry_after(self)
    }

    fn throttled(&self) -> bool {
        self.status() == Some(429)
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
            name: None,
            config: KeyCacheConfig::default(),
            time: Time::default(),
            background: true,
        }
    }

    /// The source's name.
    pub fn source_name(&self) -> &str {
        &self.inner.loading.source_name
    }

    /// The cache's name in metrics labels ([`KeyCacheBuilder::name`], else the source's name).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration (as brought into range at build).
    pub fn config(&self) -> &KeyCacheConfig {
        &self.inner.loading.config
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.engine.clock
    }

    /// The current time on the cache's clock.
    pub fn now(&self) -> SystemTime {
        self.inner.engine.clock.now()
    }

    /// Whether the cache serves keys: a set is loaded and younger than `max_stale` (a
    /// [`status`](Self::status) that [`is_serving`](CacheState::is_serving)). Past
    /// `max_stale` it is false again, as lookups then fail with
    /// [`KeyCacheError::Unavailable`].
    pub fn is_ready(&self) -> bool {
        let now = self.now();
        self.inner
            .slot
            .value()
            .as_deref()
            .is_some_and(|set| now < set.schedule().stale_at)
    }

    /// How the cache stands, for readiness probes: read without loading or waiting (see
    /// [`KeyCacheStatus`] for the states). A cache nobody has used yet stays
    /// [`Loading`](CacheState::Loading) until something starts it: a probe calls
    /// [`start_refresh`](Self::start_refresh) first.
    pub fn status(&self) -> KeyCacheStatus {
        let now = self.now();
        let set = self.inner.slot.value_full();
        let failures = self.inner.slot.failures_since_good();
        let stale_at = set.as_ref().map(|set| set.schedule().stale_at);
        let state = match stale_at {
            None if failures.count == 0 => CacheState::Loading,
            None => CacheState::Unavailable,
            Some(stale_at) if now >= stale_at => CacheState::Unavailable,
            Some(_) if failures.count > 0 => CacheState::Degraded,
            Some(_) => CacheState::Ready,
        };
        KeyCacheStatus {
            state,
            versions: set.as_ref().map_or(0, |set| set.versions().len()),
            age: set.as_ref().map(|set| self.age(set, now)),
            unavailable_in: stale_at
                .filter(|_| state.is_serving())
                .and_then(|at| at.duration_since(now).ok()),
            failing_since: failures.since,
            stale_for: failures
                .since
                .map(|since| now.duration_since(since).unwrap_or_default()),
            consecutive_failures: failures.count,
            last_error: failures.last_error.map(|error| error.to_string()),
        }
    }

    /// Starts what keeps the cache loaded, without waiting for it: the background refresh
    /// (which loads a cold cache at once), and, when no set is loaded or it is past
    /// `max_stale`, a load (joining one that runs). A failed load's retry point still holds,
    /// so calling this on every readiness probe costs the source nothing more, and a cache
    /// that no request reaches (a load balancer took it out) recovers as soon as its source
    /// does. Needs a runtime (the one given at build, else the caller's): outside one it does
    /// nothing.
    pub fn start_refresh(&self) {
        self.ensure_background();
        let inner = &self.inner;
        if self.is_ready() || inner.engine.runtime().is_none() {
            return;
        }
        // The load runs as a task of the runtime; nobody needs to wait for it here.
        let _started = inner
            .slot
            .start(&inner.engine, Need::Urgent, &*inner.loader);
    }

    /// The current snapshot, without loading, waiting or checking staleness.
    pub fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.inner.slot.value_full()
    }

    /// The current set: lock-free when one is loaded and younger than `max_stale`; on a cold
    /// cache, or past `max_stale`, waits for a (single-flight) load, unless a failed one's
    /// retry point has not come yet.
    pub async fn keys(&self) -> Result<Arc<KeySet>, KeyCacheError> {
        let background = self.ensure_background();
        let now = self.now();
        let current = self.inner.slot.value_full();
        if let Some(set) = current.as_ref()
            && now < set.schedule().stale_at
        {
            // No runtime for the background task: a due refresh runs here instead.
            if !background && self.inner.background.is_some() && now >= set.schedule().refresh_at {
                let need = self.inner.need(now);
                if let Ok(fresh) = self.load(need).await {
                    return Ok(fresh);
                }
            }
            return Ok(Arc::clone(set));
        }
        let reason = match &current {
            None => "never loaded".to_owned(),
            Some(set) => format!("stale for {}s", self.age(set, now).as_secs()),
        };
        self.load(Need::Urgent)
            .await
            .map_err(|failure| self.unavailable(reason, failure.error()))
    }

    /// Waits until the first load is done (readiness), returning its error if it failed.
    pub async fn ready(&self) -> Result<(), KeyCacheError> {
        self.keys().await.map(|_| ())
    }

    /// Looks a version up in the current set without waiting. This is the validator's hot
    /// path: one atomic load and a hash lookup, no lock, no spawn, no runtime needed. `now` is
    /// the cache's clock ([`now`](Self::now)), read once by the caller for all its checks.
    ///
    /// - `Ok(Some(_))`: the lookup; on [`KeyLookup::Unknown`], [`find`](Self::find) may refresh.
    /// - `Ok(None)`: go through [`find`](Self::find): no set is loaded yet, or the set is
    ///   past `max_stale` and a load may start, or a refresh is due and the background task is
    ///   not running (its runtime went away).
    /// - [`KeyCacheError::Unavailable`]: past `max_stale`, and a failed load's retry point
    ///   has not come yet.
    pub fn lookup_at(
        &self,
        key: KeyRef<'_>,
        now: SystemTime,
    ) -> Result<Option<KeyLookup>, KeyCacheError> {
        self.in_served_set(now, |set| set.lookup(key, &self.config().policy, now))
    }

    /// Whether a token verified by the key with `fingerprint` would verify with that same key
    /// at `now` in the set [`lookup_at`](Self::lookup_at) would serve
    /// ([`KeySet::still_verifies`]; `false` whenever no set is served: none loaded, past
    /// `max_stale`, a refresh due with the background task down). What a cache of verified
    /// tokens asks on each hit: it clones nothing, so hits on many threads write no shared
    /// cache line.
    pub fn still_verifies_at(
        &self,
        kid: &str,
        algorithm: Algorithm,
        fingerprint: &KeyFingerprint,
        now: SystemTime,
    ) -> bool {
        let policy = &self.config().policy;
        matches!(
            self.in_served_set(now, |set| set.still_verifies(
                kid,
                algorithm,
                fingerprint,
                policy,
                now
            )),
            Ok(Some(true))
        )
    }

    /// [`lookup_at`](Self::lookup_at), the answer lent to `read` (the version is not cloned).
    pub(crate) fn lookup_lent_at<T>(
        &self,
        key: KeyRef<'_>,
        now: SystemTime,
        read: impl FnOnce(Found<'_>) -> T,
    ) -> Result<Option<T>, KeyCacheError> {
        self.in_served_set(now, |set| {
            read(set.find_lent(key, &self.config().policy, now))
        })
    }

    /// `read` over the set served at `now`, as [`lookup_at`](Self::lookup_at) describes.
    fn in_served_set<T>(
        &self,
        now: SystemTime,
        read: impl FnOnce(&KeySet) -> T,
    ) -> Result<Option<T>, KeyCacheError> {
        let snapshot = self.inner.slot.value();
        let Some(set) = snapshot.as_deref() else {
            return Ok(None);
        };
        let schedule = set.schedule();
        if now >= schedule.stale_at {
            if self.inner.slot.would_load(Need::Urgent, now) {
                return Ok(None);
            }
            let reason = format!("stale for {}s", self.age(set, now).as_secs());
            return Err(self.unavailable(reason, self.inner.slot.last_error()));
        }
        if now >= schedule.refresh_at
            && self
                .inner
                .background
                .as_ref()
                .is_some_and(|background| !background.is_running())
        {
            return Ok(None);
        }
        Ok(Some(read(set)))
    }

    fn age(&self, set: &KeySet, now: SystemTime) -> Duration {
        now.duration_since(set.loaded_at()).unwrap_or_default()
    }

    /// The newest version with this id whose key verifies `algorithm`, from the current
    /// snapshot (no load): for keys of different types that share an id. `None`: nothing is
    /// loaded. See [`KeySet::lookup_for_algorithm`].
    pub fn lookup_for_algorithm_at(
        &self,
        key: KeyRef<'_>,
        algorithm: Algorithm,
        now: SystemTime,
    ) -> Option<KeyLookup> {
        let snapshot = self.inner.slot.value();
        let set = snapshot.as_deref()?;
        Some(set.lookup_for_algorithm(key, algorithm, &self.config().policy, now))
    }

    /// Finds a version by kid or `x5t`. On a miss, refreshes once (coalesced with any load
    /// already running) unless an unknown-kid refresh ran within the cooldown, a refresh
    /// already failed to find this kid within `negative_ttl`, or a failed load's backoff
    /// runs, so a flood of random kids cannot become a flood of source calls.
    pub async fn find(&self, key: KeyRef<'_>) -> Result<KeyLookup, KeyCacheError> {
        let set = self.keys().await?;
        let policy = &self.config().policy;
        let found = set.lookup(key, policy, self.now());
        if !matches!(found, KeyLookup::Unknown) {
            return Ok(found);
        }
        let counters = &self.inner.counters;
        counters.kid_misses.fetch_add(1, Ordering::Relaxed);
        let id = key_id(key);
        let refresh = {
            let now = self.now();
            let mut misses = lock(&self.inner.misses);
            match self.classify_miss(&misses, id, now) {
                Miss::Negative => {
                    counters.negative_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(KeyLookup::Unknown);
                }
                // No new refresh, but a load that is already running is free to wait for.
                Miss::Cooling(running) => running,
                Miss::Due => {
                    let inner = &self.inner;
                    match inner
                        .slot
                        .start(&inner.engine, Need::Urgent, &*inner.loader)
                    {
                        Start::Flight(flight) => {
                            misses.last_refresh = Some(now);
                            counters.kid_refreshes.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(source = %self.source_name(), kid = %id, "unknown kid: refreshing");
                            Some(flight)
                        }
                        // A failed load's backoff holds: answer from what is cached.
                        Start::Waiting { .. } => None,
                    }
                }
            }
        };
        let Some(flight) = refresh else {
            return Ok(KeyLookup::Unknown);
        };
        let set = match flight.await {
            Outcome::Loaded(set) => set,
            // The refresh failed: answer from the last good set (still fresh enough).
            Outcome::Failed(_) | Outcome::Cancelled => self.keys().await?,
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
        let counters = &self.inner.counters;
        let id = key_id(key);
        // The flood case first, without the lock: a kid a refresh already missed.
        let settled = if self.is_negative(id, now) {
            counters.negative_hits.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.settled_without_load(&lock(&self.inner.misses), id, now)
        };
        if settled {
            counters.kid_misses.fetch_add(1, Ordering::Relaxed);
        }
        settled
    }

    /// For [`miss_is_settled_at`](Self::miss_is_settled_at), under the miss lock.
    fn settled_without_load(&self, misses: &MissState, id: &str, now: SystemTime) -> bool {
        match self.classify_miss(misses, id, now) {
            Miss::Negative => {
                let counters = &self.inner.counters;
                counters.negative_hits.fetch_add(1, Ordering::Relaxed);
                true
            }
            Miss::Cooling(running) => running.is_none(),
            Miss::Due => false,
        }
    }

    /// Whether a refresh missed `id` within `negative_ttl` of `now`.
    fn is_negative(&self, id: &str, now: SystemTime) -> bool {
        self.inner
            .negative
            .pin()
            .get(id)
            .is_some_and(|until| now < *until)
    }

    /// What a miss on `id` calls for: the negative cache answers, the cooldown holds (and
    /// whether a load runs, to wait for), or a refresh is due.
    fn classify_miss(&self, misses: &MissState, id: &str, now: SystemTime) -> Miss {
        if self.is_negative(id, now) {
            return Miss::Negative;
        }
        let cooldown = self.config().unknown_kid_cooldown;
        let cooling = misses
            .last_refresh
            .is_some_and(|last| now.duration_since(last).is_ok_and(|since| since < cooldown));
        if cooling {
            Miss::Cooling(self.inner.slot.flight())
        } else {
            Miss::Due
        }
    }

    fn remember_unknown(&self, id: &str) {
        let config = self.config();
        let now = self.now();
        // Writers take the miss lock, so that the bound holds between the count and the insert.
        let _writing = lock(&self.inner.misses);
        let negative = self.inner.negative.pin();
        if negative.len() >= config.negative_capacity {
            negative.retain(|_, until| now < *until);
            if negative.len() >= config.negative_capacity {
                // Still full of live entries: start over. The cooldown still bounds source calls.
                negative.clear();
            }
        }
        if config.negative_capacity > 0 {
            negative.insert(id.into(), later(now, config.negative_ttl));
        }
    }

    /// The version that signs now under the rotation policy, and its signer. The choice is
    /// made from the snapshot and the clock at each call, so the switch to a new version
    /// happens on time without a refresh. A sign that fails for want of the source (no
    /// answer, a 5xx) holds further signs for a while: see
    /// [the module docs](self#signing-while-the-source-is-down).
    pub async fn active_signer(&self) -> Result<ActiveSigner, KeyCacheError> {
        let set = self.keys().await?;
        let version = self
            .config()
            .policy
            .active(set.versions(), self.now())
            .map_err(|error| KeyCacheError::NoActiveKey {
                source_name: self.source_name().to_owned(),
                error,
            })?
            .clone();
        let cached = {
            let mut signers = lock(&self.inner.signers);
            if signers.generation != set.generation() {
                // Signers of versions the source no longer lists go.
                signers.by_kid.retain(|kid, _| set.contains_kid(kid));
                signers.generation = set.generation();
            }
            signers.by_kid.get(&version.kid).cloned()
        };
        let signer = match cached {
            Some(signer) => signer,
            None => {
                let source = self
                    .inner
                    .loading
                    .source
                    .signer(&version)
                    .await
                    .map_err(KeyCacheError::Signer)?;
                let signer: Arc<dyn Signer> = Arc::new(signing::HeldSigner {
                    inner: source,
                    cache: Arc::downgrade(&self.inner),
                });
                lock(&self.inner.signers)
                    .by_kid
                    .insert(version.kid.clone(), Arc::clone(&signer));
                signer
            }
        };
        Ok(ActiveSigner { version, signer })
    }

    /// The versions that validate now (what a JWKS endpoint publishes).
    pub async fn validation_set(&self) -> Result<Vec<Arc<KeyVersion>>, KeyCacheError> {
        let set = self.keys().await?;
        Ok(set.validation_set(&self.config().policy, self.now()))
    }

    /// Reloads from the source now, whatever a failure's backoff says. A load already running
    /// is awaited first, so the result reflects the source as it is after this call started.
    pub async fn refresh_now(&self) -> Result<Arc<KeySet>, KeyCacheError> {
        // Cold, the background task starts after this load (it would load at once too).
        let cold = self.inner.slot.value().is_none();
        if !cold {
            self.ensure_background();
        }
        if let Some(running) = self.inner.slot.flight() {
            let _ = running.await;
        }
        let loaded = self
            .load(Need::Now)
            .await
            .map_err(|failure| self.unavailable("refresh failed".to_owned(), failure.error()));
        if cold {
            self.ensure_background();
        }
        loaded
    }

    /// Notes a token that `kid` signed (see [`signed_by`](Self::signed_by)), and tells the
    /// source ([`KeySource::signed`]).
    pub(crate) fn record_signed(
        &self,
        version: &KeyVersion,
        issued: SystemTime,
        expires: SystemTime,
    ) {
        self.inner
            .loading
            .ledger
            .record(&version.kid, issued, expires);
        self.inner.loading.source.signed(version, expires);
    }

    /// What version `kid` signed in this process (through
    /// [`TokenTemplate::mint`](crate::jwt::TokenTemplate::mint)): when last, the longest
    /// lifetime, the latest expiry. It must keep validating until that expiry plus leeway: a
    /// refresh that finds it disabled, expired or gone earlier logs a warning and counts it
    /// ([`CacheMetrics::versions_retired_early`], [`CacheMetrics::tokens_orphaned`]).
    pub fn signed_by(&self, kid: &str) -> Option<SignedBy> {
        self.inner.loading.ledger.signed_by(kid)
    }

    /// Revokes version `kid` here, at once: when this returns, the validator refuses its tokens
    /// (as from a disabled version), the published JWKS leaves it out, it never signs again,
    /// and token caches over this key cache ([`SelfSigned`](crate::token::SelfSigned)) drop
    /// the tokens it signed before attaching any. It stays revoked whatever later refreshes
    /// say (disable it in the vault too: `keyroll revoke`). Returns the set now served.
    pub async fn revoke(&self, kid: &str) -> Result<Arc<KeySet>, KeyCacheError> {
        let loading = &self.inner.loading;
        loading.revoked.rcu(|revoked| {
            let mut revoked = Vec::clone(revoked);
            if !revoked.iter().any(|known| **known == *kid) {
                revoked.push(Arc::from(kid));
            }
            revoked
        });
        loading.any_revoked.store(true, Ordering::Release);
        // A load that started before the revocation may publish a set without it: let it
        // finish, then mark the current set.
        if let Some(running) = self.inner.slot.flight() {
            let _ = running.await;
        }
        let revoked = loading.revoked.load_full();
        let set =
            loop {
                let current = self.keys().await?;
                if current.versions().iter().all(|version| {
                    !version.enabled || revoked.iter().all(|kid| **kid != *version.kid)
                }) {
                    break current;
                }
                let marked = Arc::new(current.with_revoked(&revoked));
                if self.inner.slot.replace(&current, Arc::clone(&marked)) {
                    break marked;
                }
            };
        lock(&self.inner.signers).by_kid.remove(kid);
        tracing::warn!(source = %loading.source_name, kid, "key version revoked");
        Ok(set)
    }

    /// Whether version `kid` was [revoked](Self::revoke) here.
    pub fn is_revoked(&self, kid: &str) -> bool {
        let loading = &self.inner.loading;
        loading.any_revoked.load(Ordering::Acquire)
            && loading
                .revoked
                .load()
                .iter()
                .any(|revoked| **revoked == *kid)
    }

    /// Counts a remote signature that did not verify (see [`CacheMetrics::bad_signatures`]).
    pub(crate) fn count_bad_signature(&self) {
        self.inner
            .counters
            .bad_signatures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counters and state.
    pub fn metrics(&self) -> CacheMetrics {
        let counters = &self.inner.counters;
        let engine = &self.inner.engine;
        let snapshot = self.snapshot();
        let background = self.inner.background.as_ref();
        let ledger = &self.inner.loading.ledger;
        CacheMetrics {
            loads: engine.loads.load(Ordering::Relaxed),
            load_failures: engine.failures.load(Ordering::Relaxed),
            kid_misses: counters.kid_misses.load(Ordering::Relaxed),
            kid_refreshes: counters.kid_refreshes.load(Ordering::Relaxed),
            negative_hits: counters.negative_hits.load(Ordering::Relaxed),
            versions: snapshot.as_ref().map_or(0, |s| s.versions().len()),
            age: snapshot.map(|s| self.age(&s, self.now())),
            consecutive_failures: self.inner.slot.failures(),
            background_running: background.is_some_and(Background::is_running),
            background_starts: background.map_or(0, Background::starts),
            bad_signatures: counters.bad_signatures.load(Ordering::Relaxed),
            versions_retired_early: ledger.retired_early.load(Ordering::Relaxed),
            tokens_orphaned: ledger.orphaned_tokens.load(Ordering::Relaxed),
        }
    }

    fn load(&self, need: Need) -> impl Future<Output = Result<Arc<KeySet>, Failure<SourceError>>> {
        self.inner
            .slot
            .load(&self.inner.engine, need, &*self.inner.loader)
    }

    /// Starts the background task unless it runs or is off; whether it runs.
    fn ensure_background(&self) -> bool {
        let Some(background) = &self.inner.background else {
            return false;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        background.ensure(&self.inner.engine, weak)
    }

    fn unavailable(&self, reason: String, cause: Option<Arc<SourceError>>) -> KeyCacheError {
        let config = self.config();
        let now = self.now();
        // When the next on-demand load may start, else the next backoff delay; in whole
        // seconds, rounded up, so a client that waits that long finds the cache ready to retry.
        let wait = self
            .inner
            .slot
            .retry_at(Need::Urgent)
            .and_then(|at| at.duration_since(now).ok())
            .unwrap_or_else(|| {
                Backoff::new(config.backoff_min, config.backoff_max)
                    .delay(self.inner.slot.failures())
            });
        let retry_after = Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
        KeyCacheError::Unavailable {
            source_name: self.source_name().to_owned(),
            reason,
            retry_after: retry_after.max(Duration::from_secs(1)),
            cause,
        }
    }
}

fn key_id<'a>(key: KeyRef<'a>) -> &'a str {
    match key {
        KeyRef::Kid(kid) => kid,
        KeyRef::X5t(x5t) => x5t,
    }
}

impl Inner {
    /// Routine while the current set is fresh; urgent when there is none or it nears
    /// `max_stale`.
    fn need(&self, now: SystemTime) -> Need {
        match self.slot.value().as_deref() {
            Some(set) if now < set.schedule().urgent_at => Need::Routine,
            _ => Need::Urgent,
        }
    }

    /// When the background task should load next: the retry point after a failure, else
    /// the set's planned refresh (now, on a cold cache); while the set is fresh, no later
    /// than when it turns urgent (a routine retry may fall after that, even after
    /// `max_stale`, and the urgent retries must start on time).
    fn next_load(&self, need: Need, now: SystemTime) -> SystemTime {
        let set = self.slot.value();
        let planned = self
            .slot
            .retry_at(need)
            .unwrap_or_else(|| set.as_deref().map_or(now, |set| set.schedule().refresh_at));
        match (need, set.as_deref()) {
            (Need::Routine, Some(set)) => planned.min(set.schedule().urgent_at),
            _ => planned,
        }
    }
}

impl Tick for Inner {
    fn tick(self: Arc<Self>) -> BoxFuture<'static, Option<SystemTime>> {
        Box::pin(async move {
            let now = self.engine.clock.now();
            let need = self.need(now);
            if now >= self.next_load(need, now) || self.slot.is_loading() {
                let _ = self.slot.load(&self.engine, need, &*self.loader).await;
            }
            let now = self.engine.clock.now();
            Some(self.next_load(self.need(now), now))
        })
    }
}

impl Loading {
    async fn load(&self, previous: Option<Arc<KeySet>>) -> Result<KeySet, SourceError> {
        let mut loaded = self.source.load().await?;
        key_set::disable_revoked(&mut loaded.versions, &self.revoked.load());
        if loaded.versions.is_empty() && previous.as_ref().is_some_and(|p| !p.versions().is_empty())
        {
            return Err(SourceError::new(
                self.source_name.clone(),
                "load keys",
                "the source listed no usable key (none, or every one skipped); the last good set is kept",
            )
            .with_empty_answer());
        }
        let now = self.clock.now();
        let set = KeySet::new(
            loaded.versions,
            now,
            loaded.max_age,
            previous.as_ref().map_or(1, |p| p.generation() + 1),
            self.schedule(now, loaded.max_age, previous.is_none()),
        );
        if let Some(previous) = &previous {
            let policy = &self.config.policy;
            self.ledger
                .check_retired(&self.source_name, previous, &set, policy, now);
        }
        if previous.is_none_or(|p| !p.same_content(&set)) {
            tracing::info!(
                source = %self.source_name,
                versions = set.versions().len(),
                kids = ?set.versions().iter().map(|v| v.kid.as_str()).collect::<Vec<_>>(),
                "key set changed"
            );
        }
        Ok(set)
    }

    /// When the set loaded at `now` is refreshed, and how long it serves. The first refresh
    /// after a cold load is spread five times wider (±50 % by default): it then falls
    /// anywhere in a whole interval, so replicas that started together (a fleet restart)
    /// refresh apart from the first round on, instead of drifting apart over hours.
    fn schedule(&self, now: SystemTime, max_age: Option<Duration>, cold: bool) -> Schedule {
        let config = &self.config;
        let interval = match max_age {
            // Never later than the interval, never sooner than the cooldown (nor the interval,
            // when that is the shorter).
            Some(max_age) => max_age
                .min(config.refresh_interval)
                .max(config.unknown_kid_cooldown.min(config.refresh_interval)),
            None => config.refresh_interval,
        };
        let jitter = if cold {
            (config.refresh_jitter * 5.0).min(0.5)
        } else {
            config.refresh_jitter
        };
        Schedule {
            refresh_at: later(now, crate::refresh::spread(interval, jitter)),
            urgent_at: later(now, config.urgent_age()),
            stale_at: later(now, config.max_stale),
        }
    }
}
