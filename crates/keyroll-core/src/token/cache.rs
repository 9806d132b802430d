//! The per-audience token cache behind every outbound integration: refresh-ahead, single
//! flight, stale-but-valid on failure, backoff.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use keyroll_core::token::{Token, TokenCache, from_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache = TokenCache::new(from_fn(|audience: String| async move {
//!     Ok(Token::new(format!("t-{audience}"), SystemTime::now() + Duration::from_secs(3600)))
//! }));
//! let first = cache.get("api://billing").await.unwrap();
//! let again = cache.get("api://billing").await.unwrap();
//! assert_eq!(first.header_value(), again.header_value());
//! assert_eq!(first.header_value().to_str().unwrap(), "Bearer t-api://billing");
//! assert!(first.header_value().is_sensitive());
//! assert_eq!(cache.metrics().fetches, 1);
//! # });
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::runtime::Handle;

#[cfg(feature = "metrics")]
mod metrics;

use super::config::TokenCacheConfig;
use super::source::{Token, TokenError, TokenSource};
use crate::clock::{Clock, Sleep, later};
use crate::lock;
use crate::refresh::{
    Background, Engine, Errors, Expiring, Failure, Need, Outcome, Slot, Start, Tick, Time, scale,
};
use crate::source::BoxFuture;
use crate::status::{CacheState, TokenCacheStatus};

/// A token as cached for one audience: the ready `Authorization` header value and its times.
/// `Debug` prints no secret.
pub struct CachedToken {
    audience: Arc<str>,
    header: HeaderValue,
    fetched_at: SystemTime,
    expires_at: SystemTime,
    usable_until: SystemTime,
    refresh_at: SystemTime,
    /// Set once its refresh-ahead was asked for, so each token asks once.
    refreshing: AtomicBool,
    /// The key version that signed it, if its source said.
    key_id: Option<Arc<str>>,
    /// The cache it belongs to, for a downstream `401` to drop it.
    owner: Option<Weak<dyn Reject>>,
}

impl CachedToken {
    fn new(
        audience: Arc<str>,
        token: Token,
        fetched_at: SystemTime,
        now: SystemTime,
        config: &TokenCacheConfig,
    ) -> Result<CachedToken, TokenError> {
        let expires_at = token.expires_at();
        if token.secret().is_empty() {
            return Err(TokenError::new("the token source returned an empty token"));
        }
        let Ok(remaining) = expires_at.duration_since(now) else {
            return Err(TokenError::new(
                "the token source returned an expired token",
            ));
        };
        let lifetime = expires_at.duration_since(fetched_at).unwrap_or(remaining);
        let margin = config.expiry_margin.min(lifetime / 10);
        let usable_until = expires_at.checked_sub(margin).unwrap_or(expires_at);
        if usable_until <= now {
            return Err(TokenError::new(
                "the token source returned a token that expires too soon",
            ));
        }
        let jitter = config.refresh_jitter * fastrand::f64();
        let default_refresh = later(fetched_at, scale(lifetime, config.refresh_ratio - jitter));
        // Never refresh again at once (a source's refresh-at in the past would loop).
        let earliest = later(
            now,
            usable_until.duration_since(now).unwrap_or_default() / 10,
        );
        let refresh_at = token
            .refresh_at()
            .unwrap_or(default_refresh)
            .clamp(earliest, usable_until);
        let mut header = HeaderValue::try_from(format!("Bearer {}", token.secret()))
            .map_err(|_| TokenError::new("the token is not a valid HTTP header value"))?;
        header.set_sensitive(true);
        let key_id = token.key_id().map(Arc::from);
        Ok(CachedToken {
            audience,
            header,
            fetched_at,
            expires_at,
            usable_until,
            refresh_at,
            refreshing: AtomicBool::new(false),
            key_id,
            owner: None,
        })
    }

    /// The audience.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// `Bearer <token>`, marked sensitive.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }

    /// When the source call that produced it started.
    pub fn fetched_at(&self) -> SystemTime {
        self.fetched_at
    }

    /// When the token expires.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// Until when it is attached (its expiry minus the margin).
    pub fn usable_until(&self) -> SystemTime {
        self.usable_until
    }

    /// When it is refreshed in the background.
    pub fn refresh_at(&self) -> SystemTime {
        self.refresh_at
    }

    /// Tells its cache that a downstream answered `401` to a request that carried it: the
    /// cache drops it, if it is still the cached one for its audience and at least
    /// [`TokenCacheConfig::min_age_to_invalidate`] old, so the next request gets a new one.
    pub fn rejected(self: &Arc<Self>) {
        if let Some(owner) = self.owner.as_ref().and_then(Weak::upgrade) {
            owner.reject(self);
        }
    }
}

impl Expiring for CachedToken {
    fn usable_until(&self) -> SystemTime {
        self.usable_until
    }
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("audience", &self.audience)
            .field("header", &"Bearer <redacted>")
            .field("expires_at", &self.expires_at)
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

/// No token could be had for an audience: the source failed (or a failure's backoff runs)
/// and no unexpired token is cached.
#[derive(Clone, Debug, thiserror::Error)]
#[error("no token for audience `{audience}`: {error}")]
pub struct TokenUnavailable {
    audience: Arc<str>,
    #[source]
    error: Arc<TokenError>,
    retry_after: Option<Duration>,
}

impl TokenUnavailable {
    /// The audience.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The audience, shared.
    pub fn audience_arc(&self) -> &Arc<str> {
        &self.audience
    }

    /// The source's error.
    pub fn token_error(&self) -> &Arc<TokenError> {
        &self.error
    }

    /// When the cache will ask the source again (a caller may retry then).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// Counters of a [`TokenCache`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenCacheMetrics {
    /// Source calls started.
    pub fetches: u64,
    /// Source calls that failed (or returned an unusable token, or panicked, or timed out).
    pub fetch_failures: u64,
    /// Background refreshes started.
    pub refreshes: u64,
    /// Tokens dropped by [`TokenCache::invalidate`] or a downstream `401`.
    pub invalidations: u64,
    /// Downstream `401`s that left their token cached because it was younger than
    /// [`TokenCacheConfig::min_age_to_invalidate`].
    pub invalidations_deferred: u64,
    /// Callers failed at once during a failure's backoff.
    pub cooldown_rejections: u64,
    /// Audiences with a usable cached token.
    pub audiences: u64,
    /// Whether the background refresh task runs now.
    pub background_running: bool,
}

#[derive(Default)]
struct Counters {
    refreshes: AtomicU64,
    invalidations: AtomicU64,
    invalidations_deferred: AtomicU64,
    cooldown_rejections: AtomicU64,
}

/// One audience's token (and its fetches). An evicted audience's slot is retired, so that a
/// holder of it (an [`OutboundTokens`](super::OutboundTokens) route) asks the cache again.
pub(super) type TokenSlot = Slot<CachedToken, TokenError>;
type Slots = HashMap<Arc<str>, Arc<TokenSlot>>;

/// Tokens per audience from a [`TokenSource`]. Cheap to clone: clones share everything.
///
/// # How tokens are kept
///
/// - **One token per audience**, at most [`TokenCacheConfig::max_audiences`] audiences (past
///   that, expired tokens go first, then the one that expires first). Reads take no lock:
///   one atomic load of the audience table, a hash lookup, an atomic load of the token.
/// - **Refresh ahead.** Once a token reaches its refresh-at (the source's own, or by default
///   80 % of its lifetime, up to 5 % earlier at random so that replicas spread out), the next
///   read asks the background task to refresh it and still returns the current token: no
///   caller waits for a source call while a valid token is cached.
/// - **Never expired.** A token is used only until `expires_at` minus a small margin
///   ([`TokenCacheConfig::expiry_margin`], at most a tenth of its lifetime). Past that, callers
///   wait for a new token, and fail with [`TokenUnavailable`] if none can be had.
/// - **Failures.** A failed fetch keeps the cached token while it is valid and retries with
///   exponential backoff that grows across consecutive failures (never sooner than the
///   source's `retry_after`, up to [`TokenCacheConfig::max_retry_after`]). While a failure's
///   backoff runs and no valid token is cached, callers fail at once with the last error
///   instead of calling the source again.
/// - **Invalidation.** [`TokenCache::invalidate`] drops an audience's token; the next caller
///   fetches a new one. [`CachedToken::rejected`] (a downstream `401`) does the same, but only
///   for a token at least [`TokenCacheConfig::min_age_to_invalidate`] old (30 s by default):
///   a peer that refuses every token costs at most one source call per audience per that
///   period, never one per request.
///
/// # Coalescing, cancellation and panics
///
/// - **Single flight.** At most one source call runs per audience at a time. Every caller that
///   needs a token for that audience while one runs (cold cache, expired token, background
///   refresh) waits for that same call: N concurrent misses on one audience cost one call.
/// - **Cancellation.** The source call runs in its own task on the cache's runtime. A caller
///   that stops waiting (its request was dropped or timed out) does not cancel it: the token
///   is fetched and cached for the others. A call that takes longer than
///   [`TokenCacheConfig::fetch_timeout`] fails.
/// - **Panics.** A panicking source counts as a failed fetch: waiting callers get an error,
///   the backoff applies, and the next fetch starts afresh. A panic never leaves an audience
///   stuck.
///
/// # Runtimes
///
/// Reads ([`lookup`](Self::lookup), [`admit`](Self::admit)) never spawn and need no runtime.
/// Refreshes ahead run from one background task the cache owns, started by the first async
/// use ([`get`](Self::get), [`fetch`](Self::fetch)) on the runtime given with
/// [`TokenCacheBuilder::runtime`], else on the caller's; when that runtime has gone away, a
/// read of a token that is due answers `None`, and the async path it leads to starts the task
/// again. Outside any runtime, fetches run inside the caller's future.
pub struct TokenCache<T = Arc<dyn TokenSource>> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for TokenCache<T> {
    fn clone(&self) -> Self {
        TokenCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for TokenCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("source", &self.inner.fetching.source)
            .field("name", &self.inner.name)
            .field("config", &self.inner.fetching.config)
            .finish_non_exhaustive()
    }
}

struct Inner<T> {
    fetching: Arc<Fetching<T>>,
    engine: Arc<Engine>,
    /// Replaced whole when an audience is added or evicted; read lock-free.
    slots: ArcSwap<Slots>,
    /// Serialises the writers of `slots`.
    writer: Mutex<()>,
    /// Tokens whose refresh-ahead a read asked for, for the background task.
    requested: Mutex<Vec<Arc<CachedToken>>>,
    background: Background,
    counters: Counters,
    /// The cache's name in metrics labels.
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    metrics: metrics::TokenMetrics,
}

/// What a fetch needs: no reference back to the cache, so a running fetch keeps none alive.
struct Fetching<T> {
    source: T,
    config: TokenCacheConfig,
    clock: Arc<dyn Clock>,
}

/// Builds a [`TokenCache`].
pub struct TokenCacheBuilder<T> {
    source: T,
    name: Option<String>,
    config: TokenCacheConfig,
    time: Time,
}

impl<T: TokenSource> TokenCacheBuilder<T> {
    /// Names the cache in metrics labels (`source="…"`, see [`metrics`](crate::metrics));
    /// default: the source's [`name`](TokenSource::name). Give each cache its own: caches that
    /// share a name count as one.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the configuration.
    pub fn config(mut self, config: TokenCacheConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the clock tokens' expiry and refresh times are read with (default: the system's).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.time.clock = clock;
        self
    }

    /// Sets the timer the cache waits with (default [`TokioSleep`](crate::TokioSleep)).
    pub fn sleep(mut self, sleep: Arc<dyn Sleep>) -> Self {
        self.time.sleep = sleep;
        self
    }

    /// Runs fetches and the background refresh on this runtime, whatever runtime the callers
    /// are on (default: the runtime of the async call that needs them).
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.time.runtime = Some(runtime);
        self
    }

    /// Builds the cache, bringing the configuration into range (see [`TokenCacheConfig`]).
    /// Nothing is fetched until first use.
    pub fn build(self) -> TokenCache<T> {
        let config = self.config.sanitized();
        let engine = Engine::new(
            self.time.clone(),
            config.retry_schedule(),
            config.fetch_timeout,
        );
        let name: Arc<str> = self.name.unwrap_or_else(|| self.source.name()).into();
        let inner = Arc::new(Inner {
            #[cfg(feature = "metrics")]
            metrics: metrics::TokenMetrics::new(Arc::clone(&name)),
            fetching: Arc::new(Fetching {
                source: self.source,
                config,
                clock: self.time.clock,
            }),
            engine: Arc::new(engine),
            slots: ArcSwap::default(),
            writer: Mutex::new(()),
            requested: Mutex::new(Vec::new()),
            background: Background::default(),
            counters: Counters::default(),
            name,
        });
        #[cfg(feature = "metrics")]
        crate::metrics::register(Arc::downgrade(&inner) as Weak<dyn crate::metrics::Publish>);
        TokenCache { inner }
    }
}

impl<T: TokenSource> TokenCache<T> {
    /// A cache over `source` with the default configuration and the system clock.
    pub fn new(source: T) -> Self {
        TokenCache::builder(source).build()
    }

    /// A builder over `source`.
    pub fn builder(source: T) -> TokenCacheBuilder<T> {
        TokenCacheBuilder {
            source,
            name: None,
            config: TokenCacheConfig::default(),
            time: Time::default(),
        }
    }

    /// The source.
    pub fn source(&self) -> &T {
        &self.inner.fetching.source
    }

    /// The cache's name in metrics labels ([`TokenCacheBuilder::name`], else the source's name).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration (as brought into range at build).
    pub fn config(&self) -> &TokenCacheConfig {
        &self.inner.fetching.config
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.engine.clock
    }

    /// A valid token for `audience`: the cached one, or (single-flight) a new one from the
    /// source. Asks for a background refresh when the cached one is due.
    pub async fn get(&self, audience: &str) -> Result<Arc<CachedToken>, TokenUnavailable> {
        if let Some(token) = self.lookup(audience) {
            return Ok(token);
        }
        self.fetch(audience.into()).await
    }

    /// The cached token for `audience` if it is still usable, without fetching or refreshing.
    pub fn cached(&self, audience: &str) -> Option<Arc<CachedToken>> {
        let token = self.inner.slots.load().get(audience)?.value_full()?;
        let clock = &self.inner.engine.clock;
        let usable =
            clock.now_rounded_up() < token.usable_until || clock.now() < token.usable_until;
        (usable && !self.inner.drop_if_revoked(&token)).then_some(token)
    }

    /// Drops the cached token for `audience`; the next caller fetches a new one.
    pub fn invalidate(&self, audience: &str) {
        let slots = self.inner.slots.load();
        if let Some(slot) = slots.get(audience)
            && let Some(token) = slot.value_full()
        {
            self.inner.discard(slot, &token);
        }
    }

    /// Counters.
    pub fn metrics(&self) -> TokenCacheMetrics {
        let counters = &self.inner.counters;
        let engine = &self.inner.engine;
        let now = engine.clock.now();
        let audiences = self
            .inner
            .slots
            .load()
            .values()
            .filter(|slot| slot.value().as_ref().is_some_and(|t| now < t.usable_until))
            .count();
        TokenCacheMetrics {
            fetches: engine.loads.load(Ordering::Relaxed),
            fetch_failures: engine.failures.load(Ordering::Relaxed),
            refreshes: counters.refreshes.load(Ordering::Relaxed),
            invalidations: counters.invalidations.load(Ordering::Relaxed),
            invalidations_deferred: counters.invalidations_deferred.load(Ordering::Relaxed),
            cooldown_rejections: counters.cooldown_rejections.load(Ordering::Relaxed),
            audiences: u64::try_from(audiences).unwrap_or(u64::MAX),
            background_running: self.inner.background.is_running(),
        }
    }

    /// How the cache stands over every audience it holds, for readiness probes: read without
    /// fetching (see [`TokenCacheStatus`] for the states). An audience whose fetch failed
    /// while it had no usable token stays unavailable until a fetch works: nothing retries it
    /// unless it is asked for, so a probe calls [`retry_failed`](Self::retry_failed) first.
    pub fn status(&self) -> TokenCacheStatus {
        let now = self.inner.engine.clock.now();
        let mut status = TokenCacheStatus {
            state: CacheState::Ready,
            audiences: 0,
            degraded_audiences: 0,
            unavailable_audiences: 0,
            failing_since: None,
            stale_for: None,
            consecutive_failures: 0,
            last_error: None,
        };
        // The latest failure among the worst-off audiences: (state, when, audience, error).
        let mut reported: Option<(CacheState, SystemTime, Arc<str>, Arc<TokenError>)> = None;
        for (audience, slot) in self.inner.slots.load().iter() {
            let usable = slot.value().as_ref().is_some_and(|t| now < t.usable_until);
            status.audiences += usize::from(usable);
            let failures = slot.failures_since_good();
            if failures.count == 0 {
                continue;
            }
            let state = if usable {
                status.degraded_audiences += 1;
                CacheState::Degraded
            } else {
                status.unavailable_audiences += 1;
                CacheState::Unavailable
            };
            status.state = status.state.max(state);
            status.consecutive_failures = status.consecutive_failures.max(failures.count);
            status.failing_since = match (status.failing_since, failures.since) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let (Some(at), Some(error)) = (failures.last_at, failures.last_error)
                && reported
                    .as_ref()
                    .is_none_or(|(worst, latest, ..)| (state, at) > (*worst, *latest))
            {
                reported = Some((state, at, Arc::clone(audience), error));
            }
        }
        status.stale_for = status
            .failing_since
            .map(|since| now.duration_since(since).unwrap_or_default());
        status.last_error =
            reported.map(|(_, _, audience, error)| format!("`{audience}`: {error}"));
        status
    }

    /// Starts a new fetch, without waiting for it, for every audience that has no usable
    /// token and whose last fetch failed, once that failure's retry point has passed (so a
    /// readiness probe calling this costs the source no more than callers would). An
    /// unavailable audience nobody asks for then recovers when its source does. Needs a
    /// runtime (the one given at build, else the caller's): outside one it does nothing.
    pub fn retry_failed(&self) {
        let inner = &self.inner;
        if inner.engine.runtime().is_none() {
            return;
        }
        let now = inner.engine.clock.now();
        for (audience, slot) in inner.slots.load().iter() {
            let usable = slot.value().as_ref().is_some_and(|t| now < t.usable_until);
            if usable || slot.failures() == 0 || !slot.would_load(Need::Urgent, now) {
                continue;
            }
            // The fetch runs as a task of the runtime and caches what it gets.
            let _started = slot.start(&inner.engine, Need::Urgent, &inner.loader(audience));
        }
    }

    /// The hot path: a usable cached token, asking for its background refresh when it is due.
    /// `None`: go through [`fetch`](Self::fetch) (nothing usable is cached, or a refresh is
    /// due and the background task is not running).
    pub fn lookup(&self, audience: &str) -> Option<Arc<CachedToken>> {
        let slots = self.inner.slots.load();
        let token = slots.get(audience)?.value_full()?;
        self.admit(&token).then_some(token)
    }

    /// The audience's slot, added on first use (for a caller that keeps it, to skip the
    /// audience lookup next time: see [`Slot::versioned`]; a slot the cache let go of is
    /// retired).
    pub(super) fn slot_of(&self, audience: &Arc<str>) -> Arc<TokenSlot> {
        self.inner.slot(audience)
    }

    /// Whether `token` may be attached now, asking for its background refresh when it is due
    /// (`false` too when it is due and the background task is not running: go through
    /// [`fetch`](Self::fetch), which starts it).
    pub fn admit(&self, token: &Arc<CachedToken>) -> bool {
        let clock = &self.inner.engine.clock;
        // The common case, on the cheap clock: before its refresh point, so usable and not due.
        if clock.now_rounded_up() < token.refresh_at {
            return !self.inner.drop_if_revoked(token);
        }
        let now = clock.now();
        if now >= token.usable_until || self.inner.drop_if_revoked(token) {
            return false;
        }
        if now < token.refresh_at || token.refreshing.load(Ordering::Relaxed) {
            return true;
        }
        if !self.inner.background.is_running() {
            return false;
        }
        self.inner.request_refresh(token);
        true
    }

    /// A usable token for `audience`: the cached one (asking for its refresh when it is due),
    /// else one from the source (single flight; waits out nothing: during a failure's backoff
    /// it fails at once). The future is `'static`: it owns what it needs.
    pub fn fetch(
        &self,
        audience: Arc<str>,
    ) -> impl Future<Output = Result<Arc<CachedToken>, TokenUnavailable>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move {
            let running = inner.ensure_background();
            let slot = inner.slot(&audience);
            if let Some(token) = slot.value_full()
                && inner.engine.clock.now() < token.usable_until
                && !inner.drop_if_revoked(&token)
            {
                if running && inner.engine.clock.now() >= token.refresh_at {
                    inner.request_refresh(&token);
                }
                return Ok(token);
            }
            let loader = inner.loader(&audience);
            let mut loaded = slot.load(&inner.engine, Need::Urgent, &loader).await;
            // Signed by a version revoked while it was fetched: dropped, fetched again (the
            // key cache no longer signs with it).
            if let Ok(token) = &loaded
                && inner.drop_if_revoked(token)
            {
                loaded = slot.load(&inner.engine, Need::Urgent, &loader).await;
            }
            match loaded {
                Ok(token) if !inner.drop_if_revoked(&token) => Ok(token),
                Ok(_) => Err(TokenUnavailable {
                    audience,
                    error: Arc::new(TokenError::new(
                        "every token fetched was signed by a revoked key version",
                    )),
                    retry_after: None,
                }),
                Err(failure) => {
                    if matches!(failure, Failure::Waiting { .. }) {
                        inner
                            .counters
                            .cooldown_rejections
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    let error = failure
                        .error()
                        .unwrap_or_else(|| Arc::new(TokenError::new("the token source failed")));
                    let retry_after = slot
                        .retry_at(Need::Urgent)
                        .and_then(|at| at.duration_since(inner.engine.clock.now()).ok());
                    Err(TokenUnavailable {
                        audience,
                        error,
                        retry_after,
                    })
                }
            }
        }
    }
}

/// Drops a token after a downstream `401`, without knowing the source type.
trait Reject: Send + Sync {
    fn reject(&self, token: &Arc<CachedToken>);
}

impl<T: Send + Sync> Reject for Inner<T> {
    fn reject(&self, token: &Arc<CachedToken>) {
        // Rate limit: a token fetched less than the floor ago stays (a new one would most
        // likely be refused the same way, and would cost a source call per request).
        let age = self
            .engine
            .clock
            .now()
            .duration_since(token.fetched_at)
            .unwrap_or_default();
        if age < self.fetching.config.min_age_to_invalidate {
            self.counters
                .invalidations_deferred
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                audience = %token.audience,
                age = ?age,
                "downstream answered 401; token kept (too young to drop)"
            );
            return;
        }
        let slots = self.slots.load();
        if let Some(slot) = slots.get(&*token.audience)
            && self.discard(slot, token)
        {
            tracing::debug!(audience = %token.audience, "downstream answered 401; token dropped");
        }
    }
}

impl<T> Inner<T> {
    /// Drops `token` if it is still `slot`'s; whether it was.
    fn discard(&self, slot: &TokenSlot, token: &Arc<CachedToken>) -> bool {
        let dropped = slot.discard(token);
        if dropped {
            self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        }
        dropped
    }

    /// Queues `token`'s refresh-ahead for the background task, once per token.
    fn request_refresh(&self, token: &Arc<CachedToken>) {
        if token.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(audience = %token.audience, "refreshing a token ahead of expiry");
        lock(&self.requested).push(Arc::clone(token));
        self.background.wake();
    }

    /// The audience's slot, added (and the table trimmed to `max_audiences`) on first use.
    fn slot(&self, audience: &Arc<str>) -> Arc<TokenSlot> {
        if let Some(slot) = self.slots.load().get(audience) {
            return Arc::clone(slot);
        }
        let _writer = lock(&self.writer);
        let current = self.slots.load_full();
        if let Some(slot) = current.get(audience) {
            return Arc::clone(slot);
        }
        let mut slots: Slots = (*current).clone();
        let max = usize::try_from(self.fetching.config.max_audiences).unwrap_or(usize::MAX);
        if slots.len() >= max {
            self.evict(&mut slots, max);
        }
        let errors = Errors {
            timed_out: |_, after| {
                TokenError::new(format!("the token source did not answer within {after:?}"))
            },
            lost: |_, why| TokenError::new(format!("the token source failed: {why}")),
        };
        let slot = Slot::new(format!("token for `{audience}`"), errors);
        #[cfg(feature = "metrics")]
        let slot = slot.observed(self.metrics.observer());
        let slot = Arc::new(slot);
        slots.insert(Arc::clone(audience), Arc::clone(&slot));
        self.slots.store(Arc::new(slots));
        slot
    }

    /// Makes room for one more audience: unusable tokens go first, then the ones that expire
    /// first. An audience whose fetch runs stays, and so does one whose failed fetch waits out
    /// its backoff while there is anything else to drop: a new slot for it would call the
    /// source at once.
    fn evict(&self, slots: &mut Slots, max: usize) {
        let now = self.engine.clock.now();
        let backing_off = |slot: &TokenSlot| slot.retry_at(Need::Urgent).is_some_and(|at| now < at);
        slots.retain(|_, slot| {
            let keep = slot.is_loading()
                || backing_off(slot)
                || slot.value().as_ref().is_some_and(|t| now < t.usable_until);
            if !keep {
                slot.retire();
            }
            keep
        });
        while slots.len() >= max {
            let first_to_expire = slots
                .iter()
                .filter(|(_, slot)| !slot.is_loading())
                .min_by_key(|(_, slot)| {
                    let expires = slot.value().as_ref().map(|t| t.expires_at);
                    (backing_off(slot), expires)
                })
                .map(|(audience, _)| Arc::clone(audience));
            let Some(audience) = first_to_expire else {
                break;
            };
            if let Some(slot) = slots.remove(&audience) {
                slot.retire();
            }
        }
    }
}

impl<T: TokenSource> Inner<T> {
    /// Whether `token` was signed by a version its source revoked; if so it is dropped from
    /// its slot, so that no path hands it out again.
    fn drop_if_revoked(&self, token: &Arc<CachedToken>) -> bool {
        let Some(key_id) = &token.key_id else {
            return false;
        };
        if !self.fetching.source.is_revoked(key_id) {
            return false;
        }
        let slots = self.slots.load();
        if let Some(slot) = slots.get(&*token.audience)
            && self.discard(slot, token)
        {
            tracing::info!(audience = %token.audience, kid = %key_id, "token signed by a revoked key version dropped");
        }
        true
    }

    fn loader(
        self: &Arc<Self>,
        audience: &Arc<str>,
    ) -> impl Fn(Option<Arc<CachedToken>>) -> BoxFuture<'static, Result<CachedToken, TokenError>>
    + Send
    + Sync
    + 'static {
        let fetching = Arc::clone(&self.fetching);
        let owner: Weak<dyn Reject> = Arc::downgrade(self) as Weak<Inner<T>>;
        let audience = Arc::clone(audience);
        move |_current| {
            let fetching = Arc::clone(&fetching);
            let owner = owner.clone();
            let audience = Arc::clone(&audience);
            Box::pin(async move { fetching.fetch(audience, owner).await })
        }
    }

    /// Starts the background task unless it runs; whether it runs.
    fn ensure_background(self: &Arc<Self>) -> bool {
        let weak: Weak<Inner<T>> = Arc::downgrade(self);
        self.background.ensure(&self.engine, weak)
    }
}

impl<T: TokenSource> Fetching<T> {
    async fn fetch(
        &self,
        audience: Arc<str>,
        owner: Weak<dyn Reject>,
    ) -> Result<CachedToken, TokenError> {
        let fetched_at = self.clock.now();
        let token = self.source.token(&audience).await?;
        let mut cached =
            CachedToken::new(audience, token, fetched_at, self.clock.now(), &self.config)?;
        cached.owner = Some(owner);
        Ok(cached)
    }
}

impl<T: TokenSource> Tick for Inner<T> {
    fn tick(self: Arc<Self>) -> BoxFuture<'static, Option<SystemTime>> {
        Box::pin(async move {
            let requested = std::mem::take(&mut *lock(&self.requested));
            let runtime = self.engine.runtime();
            for token in requested {
                match &runtime {
                    Some(runtime) => {
                        drop(runtime.spawn(refresh_ahead(Arc::downgrade(&self), token)))
                    }
                    None => token.refreshing.store(false, Ordering::Release),
                }
            }
            None
        })
    }
}

/// Lets a token be asked for again once its refresh-ahead ended without replacing it (its
/// task was dropped with its runtime, say).
struct AskAgain(Arc<CachedToken>);

impl Drop for AskAgain {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
    }
}

/// Refreshes `stale`'s audience until a new token is cached, `stale` is no longer usable or
/// no longer the cached one, or the cache is dropped; failures wait for the backoff.
async fn refresh_ahead<T: TokenSource>(weak: Weak<Inner<T>>, stale: Arc<CachedToken>) {
    let _ask_again = AskAgain(Arc::clone(&stale));
    loop {
        let step = {
            let Some(inner) = weak.upgrade() else { return };
            let Some(slot) = inner.slots.load().get(&*stale.audience).cloned() else {
                return;
            };
            if !slot
                .value()
                .as_ref()
                .is_some_and(|t| Arc::ptr_eq(t, &stale))
            {
                return;
            }
            let now = inner.engine.clock.now();
            // Past its end (not just at it: a zero wait would never let paused time move).
            let left = match stale.usable_until.duration_since(now) {
                Ok(left) if !left.is_zero() => left,
                _ => return,
            };
            match slot.start(&inner.engine, Need::Urgent, &inner.loader(&stale.audience)) {
                Start::Flight(flight) => Ok(flight),
                Start::Waiting { until, .. } => {
                    let wait = until.duration_since(now).unwrap_or_default().min(left);
                    Err((Arc::clone(&inner.engine.sleep), wait))
                }
            }
        };
        match step {
            Ok(flight) => {
                if matches!(flight.await, Outcome::Loaded(_)) {
                    return;
                }
            }
            Err((sleep, wait)) => sleep.sleep(wait).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokioClock;
    use crate::token::from_fn;

    fn config() -> TokenCacheConfig {
        TokenCacheConfig::default().refresh_jitter(0.0)
    }

    #[test]
    fn refresh_and_usable_times() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        let token = Token::new("x", t0 + hour);
        let config = config().sanitized();
        let cached = CachedToken::new("a".into(), token, t0, t0, &config).unwrap();
        assert_eq!(cached.refresh_at(), t0 + hour.mul_f64(0.8));
        assert_eq!(cached.usable_until(), t0 + hour - Duration::from_secs(5));
        // A source's own refresh-at wins, within the lifetime.
        let token = Token::new("x", t0 + hour).with_refresh_at(t0 + hour / 2);
        let cached = CachedToken::new("a".into(), token, t0, t0, &config).unwrap();
        assert_eq!(cached.refresh_at(), t0 + hour / 2);
        // Expired, empty or non-header tokens are refused.
        assert!(CachedToken::new("a".into(), Token::new("x", t0), t0, t0, &config).is_err());
        assert!(CachedToken::new("a".into(), Token::new("", t0 + hour), t0, t0, &config).is_err());
        assert!(
            CachedToken::new("a".into(), Token::new("a\nb", t0 + hour), t0, t0, &config).is_err()
        );
        // A non-expiring token, with a huge margin: no overflow anywhere.
        let forever = TokenCacheConfig::default()
            .expiry_margin(Duration::MAX)
            .sanitized();
        let cached =
            CachedToken::new("a".into(), Token::non_expiring("k"), t0, t0, &forever).unwrap();
        assert!(cached.refresh_at() > t0 + 1000 * 365 * 24 * hour);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_source_does_not_stick() {
        let clock = Arc::new(TokioClock::default());
        let calls = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&calls);
        let start = clock.now();
        let cache = TokenCache::builder(from_fn(move |_aud: String| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("source bug");
                }
                Ok(Token::new("ok", start + Duration::from_secs(3600)))
            }
        }))
        .config(config())
        .clock(clock)
        .build();
        let error = cache.get("a").await.unwrap_err();
        assert_eq!(error.audience(), "a");
        // During the backoff: the last error at once, no source call.
        assert!(cache.get("a").await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(cache.get("a").await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.metrics().fetch_failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_drops_only_the_current_token() {
        let clock = Arc::new(TokioClock::default());
        let start = clock.now();
        let cache = TokenCache::builder(from_fn(move |_aud: String| async move {
            Ok(Token::new("t", start + Duration::from_secs(3600)))
        }))
        .clock(clock)
        .build();
        let first = cache.get("a").await.unwrap();
        // Younger than the floor (30 s): a 401 keeps it.
        first.rejected();
        assert!(cache.cached("a").is_some_and(|t| Arc::ptr_eq(&t, &first)));
        assert_eq!(cache.metrics().invalidations_deferred, 1);
        tokio::time::advance(Duration::from_secs(30)).await;
        first.rejected();
        assert!(cache.cached("a").is_none());
        let second = cache.get("a").await.unwrap();
        // A 401 for a request that carried the old token leaves the new one alone.
        tokio::time::advance(Duration::from_secs(30)).await;
        first.rejected();
        assert!(cache.cached("a").is_some_and(|t| Arc::ptr_eq(&t, &second)));
        assert_eq!(cache.metrics().invalidations, 1);
        assert_eq!(cache.metrics().fetches, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_401_on_every_request_fetches_once_per_floor() {
        let clock = Arc::new(TokioClock::default());
        let start = clock.now();
        let calls = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&calls);
        let cache = TokenCache::builder(from_fn(move |_aud: String| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok(Token::new("t", start + Duration::from_secs(3600))) }
        }))
        .config(config())
        .clock(clock)
        .build();
        // 1,000 requests, 100 ms apart, each answered 401: 100 s, so one fetch at first and
        // one per 30 s after.
        for _ in 0..1000 {
            cache.get("a").await.unwrap().rejected();
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // With no floor, every 401 costs a source call.
        let calls = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&calls);
        let eager = TokenCache::builder(from_fn(move |_aud: String| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok(Token::new("t", start + Duration::from_secs(3600))) }
        }))
        .config(config().min_age_to_invalidate(Duration::ZERO))
        .clock(Arc::new(TokioClock::default()))
        .build();
        for _ in 0..10 {
            eager.get("a").await.unwrap().rejected();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_audience_table_is_bounded() {
        let clock = Arc::new(TokioClock::default());
        let start = clock.now();
        let cache = TokenCache::builder(from_fn(move |audience: String| async move {
            let lifetime = Duration::from_secs(3600 + audience.len() as u64);
            Ok(Token::new(audience, start + lifetime))
        }))
        .config(config().max_audiences(3))
        .clock(clock)
        .build();
        for audience in ["a", "bb", "ccc", "dddd"] {
            cache.get(audience).await.unwrap();
        }
        assert_eq!(cache.metrics().audiences, 3);
        assert!(cache.cached("a").is_none(), "the first to expire went");
        assert!(cache.cached("dddd").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_audience_table_keeps_a_failing_audience_in_its_backoff() {
        let clock = Arc::new(TokioClock::default());
        let start = clock.now();
        let calls = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&calls);
        let cache = TokenCache::builder(from_fn(move |audience: String| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if audience == "down" {
                    return Err(TokenError::new("the source is down"));
                }
                Ok(Token::new(audience, start + Duration::from_secs(3600)))
            }
        }))
        .config(config().max_audiences(2))
        .clock(clock)
        .build();
        assert!(cache.get("down").await.is_err());
        for audience in ["a", "b", "c"] {
            cache.get(audience).await.unwrap();
        }
        // The others made room for each other; the failing audience kept its slot.
        assert_eq!(cache.metrics().audiences, 1);
        assert!(cache.cached("c").is_some());
        // Still in its backoff: the last error at once, no source call.
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert!(cache.get("down").await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(cache.metrics().cooldown_rejections, 1);
        // Past its backoff it is an unusable audience like any other.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(cache.get("down").await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }
}
