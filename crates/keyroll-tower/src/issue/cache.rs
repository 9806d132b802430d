//! The per-audience token cache behind [`IssueLayer`](super::IssueLayer): refresh-ahead,
//! single flight, stale-but-valid on failure, backoff.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use keyroll_tower::issue::{Token, TokenCache, from_fn};
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
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt as _;
use futures_util::future::Shared;
use http::HeaderValue;
use keyroll_core::{Backoff, BoxFuture, Clock, SystemClock};

use crate::lock;

use super::error::IssueError;
use super::source::{Token, TokenError, TokenSource};

/// How a [`TokenCache`] refreshes and retries.
///
/// | setting | default |
/// |---|---|
/// | `refresh_ratio` | 0.8 of the lifetime |
/// | `refresh_jitter` | up to 0.05 of the lifetime earlier |
/// | `expiry_margin` | 5 s (at most a tenth of the lifetime) |
/// | `backoff_min` … `backoff_max` | 1 s … 60 s |
/// | `fetch_timeout` | 30 s |
/// | `max_audiences` | 10,000 |
/// | `min_age_to_invalidate` | 30 s |
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TokenCacheConfig {
    /// When a token is refreshed, as a fraction of its lifetime, unless its source says.
    pub refresh_ratio: f64,
    /// Random advance of the refresh, as a fraction of the lifetime (spreads replicas out).
    pub refresh_jitter: f64,
    /// A token is not attached once it expires within this margin (capped at a tenth of its
    /// lifetime), so it does not expire in flight.
    pub expiry_margin: Duration,
    /// First retry delay after a failed fetch; doubles per consecutive failure.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// A source call taking longer fails.
    pub fetch_timeout: Duration,
    /// How many audiences are cached at most.
    pub max_audiences: u64,
    /// A downstream `401` drops the token it carried only once that token is at least this old
    /// (counted from its fetch). A peer that refuses every token (it has not learnt a new key
    /// yet, or expects another `aud`) then costs at most one new token per audience per this
    /// period, not one source call (a vault `sign`) per request. Zero drops on every `401`.
    /// [`TokenCache::invalidate`] is not limited.
    pub min_age_to_invalidate: Duration,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        TokenCacheConfig {
            refresh_ratio: 0.8,
            refresh_jitter: 0.05,
            expiry_margin: Duration::from_secs(5),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(30),
            max_audiences: 10_000,
            min_age_to_invalidate: Duration::from_secs(30),
        }
    }
}

impl TokenCacheConfig {
    /// Sets the refresh point as a fraction of the lifetime (clamped to 0.1…1).
    pub fn with_refresh_ratio(mut self, ratio: f64) -> Self {
        self.refresh_ratio = ratio.clamp(0.1, 1.0);
        self
    }

    /// Sets the refresh jitter (clamped to 0…0.5 and to below the refresh ratio).
    pub fn with_refresh_jitter(mut self, jitter: f64) -> Self {
        self.refresh_jitter = jitter.clamp(0.0, 0.5);
        self
    }

    /// Sets the expiry margin.
    pub fn with_expiry_margin(mut self, margin: Duration) -> Self {
        self.expiry_margin = margin;
        self
    }

    /// Sets the retry backoff bounds.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// Sets the source call timeout.
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Sets how many audiences are cached at most.
    pub fn with_max_audiences(mut self, max: u64) -> Self {
        self.max_audiences = max.max(1);
        self
    }

    /// Sets how old a token must be for a downstream `401` to drop it.
    pub fn with_min_age_to_invalidate(mut self, age: Duration) -> Self {
        self.min_age_to_invalidate = age;
        self
    }

    fn backoff(&self, failures: u32, asked: Option<Duration>) -> Duration {
        Backoff::new(self.backoff_min, self.backoff_max)
            .delay(failures)
            .max(asked.unwrap_or_default())
    }
}

/// A token as cached for one audience: the ready `Authorization` header value and its times.
/// `Debug` prints no secret.
pub struct CachedToken {
    audience: Arc<str>,
    header: HeaderValue,
    fetched_at: SystemTime,
    expires_at: SystemTime,
    usable_until: SystemTime,
    refresh_at: SystemTime,
    refreshing: AtomicBool,
    /// The cache it belongs to, for a downstream `401` to drop it.
    owner: Option<Weak<dyn InvalidateToken>>,
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
        let usable_until = expires_at - margin;
        if usable_until <= now {
            return Err(TokenError::new(
                "the token source returned a token that expires too soon",
            ));
        }
        let jitter = config.refresh_jitter.min(config.refresh_ratio / 2.0) * fastrand::f64();
        let default_refresh = fetched_at + lifetime.mul_f64(config.refresh_ratio - jitter);
        // Never refresh again at once (a source's refresh-at in the past would loop).
        let earliest = now + (usable_until.duration_since(now).unwrap_or_default() / 10);
        let refresh_at = token
            .refresh_at()
            .unwrap_or(default_refresh)
            .clamp(earliest, usable_until);
        let mut header = HeaderValue::try_from(format!("Bearer {}", token.secret()))
            .map_err(|_| TokenError::new("the token is not a valid HTTP header value"))?;
        header.set_sensitive(true);
        Ok(CachedToken {
            audience,
            header,
            fetched_at,
            expires_at,
            usable_until,
            refresh_at,
            refreshing: AtomicBool::new(false),
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

    /// Drops this token from its cache if it is still the cached one for its audience (a
    /// downstream `401` on a request that carried it). A newer token is left alone.
    pub(crate) fn invalidate(self: &Arc<Self>) {
        if let Some(owner) = self.owner.as_ref().and_then(Weak::upgrade) {
            owner.invalidate_token(self);
        }
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

/// Counters of a [`TokenCache`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenCacheMetrics {
    /// Source calls started.
    pub fetches: u64,
    /// Source calls that failed (or returned an unusable token).
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
    /// Audiences with a cached token (approximate).
    pub audiences: u64,
}

#[derive(Default)]
struct Counters {
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
    refreshes: AtomicU64,
    invalidations: AtomicU64,
    invalidations_deferred: AtomicU64,
    cooldown_rejections: AtomicU64,
}

type FetchResult = Result<Arc<CachedToken>, Arc<TokenError>>;
type Flight = Shared<BoxFuture<'static, FetchResult>>;

#[derive(Default)]
struct AudienceState {
    flight: Option<Flight>,
    failures: u32,
    retry_at: Option<SystemTime>,
    last_error: Option<Arc<TokenError>>,
}

/// Tokens per audience from a [`TokenSource`]. Cheap to clone: clones share everything.
///
/// # How tokens are kept
///
/// - **One token per audience**, in a bounded [`moka`] cache whose entries expire with their
///   token. Every read also checks the token's expiry against the injected [`Clock`], so an
///   expired token is never returned, whatever moka's own clock says.
/// - **Refresh ahead.** Once a token reaches its refresh-at (the source's own, or by default
///   80 % of its lifetime, up to 5 % earlier at random so that replicas spread out), the next
///   read starts a refresh in the background and still returns the current token: no caller
///   waits for a source call while a valid token is cached.
/// - **Never expired.** A token is used only until `expires_at` minus a small margin
///   ([`TokenCacheConfig::expiry_margin`], at most a tenth of its lifetime). Past that, callers
///   wait for a new token, and fail with [`IssueError`] if none can be had.
/// - **Failures.** A failed fetch keeps the cached token while it is valid and retries with
///   exponential backoff (never sooner than the source's `retry_after`). While a failure's
///   backoff runs and no valid token is cached, callers fail at once with the last error
///   instead of calling the source again.
/// - **Invalidation.** [`TokenCache::invalidate`] drops an audience's token; the next caller
///   fetches a new one. A `401` seen by [`Issue`](super::Issue) does the same, but only for a
///   token at least [`TokenCacheConfig::min_age_to_invalidate`] old (30 s by default): a
///   younger token is kept, so a peer that refuses every token costs at most one source call
///   per audience per that period, never one per request.
///
/// # Coalescing, cancellation and panics
///
/// - **Single flight.** At most one source call runs per audience at a time. Every caller that
///   needs a token for that audience while one runs (cold cache, expired token, background
///   refresh) waits for that same call: N concurrent misses on one audience cost one call.
/// - **Cancellation.** The source call runs in its own tokio task. A caller that stops waiting
///   (its request was dropped or timed out) does not cancel it: the token is fetched and cached
///   for the others. A call that takes longer than [`TokenCacheConfig::fetch_timeout`] fails.
/// - **Panics.** A panicking source counts as a failed fetch: waiting callers get an error,
///   the backoff applies, and the next fetch starts afresh. A panic never leaves an audience
///   stuck.
///
/// The cache needs a tokio runtime (with the `time` driver) to fetch and refresh; background
/// retries sleep with `tokio::time`, so give it a [`TokioClock`](keyroll_core::TokioClock) in
/// tests that pause time.
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
            .field("source", &self.inner.source)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner<T> {
    source: T,
    config: TokenCacheConfig,
    clock: Arc<dyn Clock>,
    tokens: moka::sync::Cache<Arc<str>, Arc<CachedToken>>,
    /// Bumped after every change of `tokens`: a service may reuse the token it looked up last
    /// while the epoch is unchanged, without a cache lookup.
    epoch: Arc<AtomicU64>,
    states: Mutex<HashMap<Arc<str>, AudienceState>>,
    counters: Counters,
}

/// Builds a [`TokenCache`].
pub struct TokenCacheBuilder<T> {
    source: T,
    config: TokenCacheConfig,
    clock: Arc<dyn Clock>,
}

impl<T: TokenSource> TokenCacheBuilder<T> {
    /// Sets the configuration.
    pub fn config(mut self, config: TokenCacheConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the clock tokens' expiry and refresh times are read with (default: the system's).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the cache. Nothing is fetched until first use.
    pub fn build(self) -> TokenCache<T> {
        let epoch = Arc::new(AtomicU64::new(0));
        let evicted = Arc::clone(&epoch);
        let tokens = moka::sync::Cache::builder()
            .max_capacity(self.config.max_audiences)
            .expire_after(ExpireWithToken(Arc::clone(&self.clock)))
            .eviction_listener(move |_audience, _token, _cause| {
                evicted.fetch_add(1, Ordering::AcqRel);
            })
            .build();
        TokenCache {
            inner: Arc::new(Inner {
                source: self.source,
                config: self.config,
                clock: self.clock,
                tokens,
                epoch,
                states: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        }
    }
}

/// moka expiry: an entry lives until its token expires (memory housekeeping only: reads check
/// the expiry against the injected clock themselves).
struct ExpireWithToken(Arc<dyn Clock>);

impl moka::Expiry<Arc<str>, Arc<CachedToken>> for ExpireWithToken {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Arc<CachedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        Some(
            value
                .expires_at
                .duration_since(self.0.now())
                .unwrap_or_default()
                .min(YEAR),
        )
    }

    fn expire_after_update(
        &self,
        key: &Arc<str>,
        value: &Arc<CachedToken>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, updated_at)
    }
}

enum Start {
    Cached(Arc<CachedToken>),
    Flight(Flight),
    CoolingDown(Duration, Option<Arc<TokenError>>),
    Failed(Arc<TokenError>),
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
            config: TokenCacheConfig::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The source.
    pub fn source(&self) -> &T {
        &self.inner.source
    }

    /// The configuration.
    pub fn config(&self) -> &TokenCacheConfig {
        &self.inner.config
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// A valid token for `audience`: the cached one, or (single-flight) a new one from the
    /// source. Starts a background refresh when the cached one is due.
    pub async fn get(&self, audience: &str) -> Result<Arc<CachedToken>, IssueError> {
        if let Some(token) = self.lookup(audience) {
            return Ok(token);
        }
        self.fetch(audience.into()).await
    }

    /// The cached token for `audience` if it is still usable, without fetching or refreshing.
    pub fn cached(&self, audience: &str) -> Option<Arc<CachedToken>> {
        let now = self.inner.clock.now();
        self.inner.valid(audience, now)
    }

    /// Drops the cached token for `audience`; the next caller fetches a new one.
    pub fn invalidate(&self, audience: &str) {
        if self.inner.tokens.remove(audience).is_some() {
            self.inner.epoch.fetch_add(1, Ordering::AcqRel);
            self.inner
                .counters
                .invalidations
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counters.
    pub fn metrics(&self) -> TokenCacheMetrics {
        let counters = &self.inner.counters;
        TokenCacheMetrics {
            fetches: counters.fetches.load(Ordering::Relaxed),
            fetch_failures: counters.fetch_failures.load(Ordering::Relaxed),
            refreshes: counters.refreshes.load(Ordering::Relaxed),
            invalidations: counters.invalidations.load(Ordering::Relaxed),
            invalidations_deferred: counters.invalidations_deferred.load(Ordering::Relaxed),
            cooldown_rejections: counters.cooldown_rejections.load(Ordering::Relaxed),
            audiences: self.inner.tokens.entry_count(),
        }
    }

    /// The hot path: a usable cached token, starting a background refresh when it is due.
    pub(crate) fn lookup(&self, audience: &str) -> Option<Arc<CachedToken>> {
        let token = self.inner.tokens.get(audience)?;
        self.admit(&token).then_some(token)
    }

    /// The current epoch: unchanged since a lookup means the token it found is still the
    /// cached one (read it before the lookup).
    pub(crate) fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Acquire)
    }

    /// Whether `token` may be attached now, starting its background refresh when it is due.
    pub(crate) fn admit(&self, token: &Arc<CachedToken>) -> bool {
        let now = self.inner.clock.now();
        if now >= token.usable_until {
            return false;
        }
        if now >= token.refresh_at
            && !token.refreshing.load(Ordering::Relaxed)
            && !token.refreshing.swap(true, Ordering::AcqRel)
        {
            self.spawn_refresh(Arc::clone(token));
        }
        true
    }

    fn spawn_refresh(&self, token: Arc<CachedToken>) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                self.inner
                    .counters
                    .refreshes
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(audience = %token.audience, "refreshing a token ahead of expiry");
                runtime.spawn(refresh_ahead(Arc::downgrade(&self.inner), token));
            }
            // Outside a runtime: the next read in one tries again.
            Err(_) => token.refreshing.store(false, Ordering::Release),
        }
    }

    /// The slow path, as a `'static` future.
    pub(crate) fn fetch(
        &self,
        audience: Arc<str>,
    ) -> impl Future<Output = Result<Arc<CachedToken>, IssueError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move {
            let flight = match inner.join_or_start(&audience, None) {
                Start::Cached(token) => return Ok(token),
                Start::Flight(flight) => flight,
                Start::CoolingDown(retry_after, last_error) => {
                    inner
                        .counters
                        .cooldown_rejections
                        .fetch_add(1, Ordering::Relaxed);
                    let error = last_error
                        .unwrap_or_else(|| Arc::new(TokenError::new("the token source failed")));
                    return Err(IssueError::unavailable(audience, error, Some(retry_after)));
                }
                Start::Failed(error) => return Err(IssueError::unavailable(audience, error, None)),
            };
            flight.await.map_err(|error| {
                let retry_after = inner.retry_in(&audience);
                IssueError::unavailable(audience, error, retry_after)
            })
        }
    }
}

/// Drops a token after a downstream `401`, without knowing the source type.
trait InvalidateToken: Send + Sync {
    /// Drops `token` if it is still the cached one for its audience (a 401 on a request that
    /// carried it). A newer token is left alone.
    fn invalidate_token(&self, token: &Arc<CachedToken>);
}

impl<T: Send + Sync> InvalidateToken for Inner<T> {
    fn invalidate_token(&self, token: &Arc<CachedToken>) {
        // Rate limit: a token fetched less than the floor ago stays (a new one would most
        // likely be refused the same way, and would cost a source call per request).
        let age = self
            .clock
            .now()
            .duration_since(token.fetched_at)
            .unwrap_or_default();
        if age < self.config.min_age_to_invalidate {
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
        let result = self
            .tokens
            .entry(Arc::clone(&token.audience))
            .and_compute_with(|current| match current {
                Some(entry) if Arc::ptr_eq(entry.value(), token) => moka::ops::compute::Op::Remove,
                _ => moka::ops::compute::Op::Nop,
            });
        if matches!(result, moka::ops::compute::CompResult::Removed(_)) {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(audience = %token.audience, "downstream answered 401; token dropped");
        }
    }
}

impl<T> Inner<T> {
    fn valid(&self, audience: &str, now: SystemTime) -> Option<Arc<CachedToken>> {
        self.tokens
            .get(audience)
            .filter(|token| now < token.usable_until)
    }

    fn retry_in(&self, audience: &str) -> Option<Duration> {
        let now = self.clock.now();
        lock(&self.states)
            .get(audience)
            .and_then(|state| state.retry_at)
            .and_then(|at| at.duration_since(now).ok())
    }
}

impl<T: TokenSource> Inner<T> {
    /// Joins the audience's running fetch or starts one, unless a usable token other than
    /// `replacing` is cached, or a failure's backoff is running.
    fn join_or_start(
        self: &Arc<Self>,
        audience: &Arc<str>,
        replacing: Option<&Arc<CachedToken>>,
    ) -> Start {
        let now = self.clock.now();
        let mut states = lock(&self.states);
        let state = states.get(audience);
        if let Some(flight) = state.and_then(|s| s.flight.clone()) {
            return Start::Flight(flight);
        }
        // A fetch may have finished since the caller looked: it inserts before it clears.
        if let Some(token) = self.valid(audience, now)
            && replacing.is_none_or(|old| !Arc::ptr_eq(old, &token))
        {
            return Start::Cached(token);
        }
        if let Some(state) = state
            && let Some(wait) = state.retry_at.and_then(|at| at.duration_since(now).ok())
            && !wait.is_zero()
        {
            return Start::CoolingDown(wait, state.last_error.clone());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Start::Failed(Arc::new(TokenError::new(
                "fetching a token needs a tokio runtime",
            )));
        };
        let task = runtime.spawn(fetch_once(Arc::clone(self), Arc::clone(audience)));
        let flight: BoxFuture<'static, FetchResult> = Box::pin(async move {
            task.await.unwrap_or_else(|_| {
                Err(Arc::new(TokenError::new(
                    "the token source panicked or was cancelled",
                )))
            })
        });
        let flight = flight.shared();
        states.entry(Arc::clone(audience)).or_default().flight = Some(flight.clone());
        Start::Flight(flight)
    }
}

/// One source call for one audience, in its own task.
async fn fetch_once<T: TokenSource>(inner: Arc<Inner<T>>, audience: Arc<str>) -> FetchResult {
    let mut guard = FlightGuard {
        inner: &inner,
        audience: &audience,
        outcome: None,
    };
    inner.counters.fetches.fetch_add(1, Ordering::Relaxed);
    let fetched_at = inner.clock.now();
    let timeout = inner.config.fetch_timeout;
    let result = match tokio::time::timeout(timeout, inner.source.token(&audience)).await {
        Ok(Ok(token)) => CachedToken::new(
            Arc::clone(&audience),
            token,
            fetched_at,
            inner.clock.now(),
            &inner.config,
        )
        .map(|mut token| {
            let owner: Weak<Inner<T>> = Arc::downgrade(&inner);
            let owner: Weak<dyn InvalidateToken> = owner;
            token.owner = Some(owner);
            token
        }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(TokenError::new(format!(
            "the token source did not answer within {timeout:?}"
        ))),
    };
    match result {
        Ok(token) => {
            let token = Arc::new(token);
            inner
                .tokens
                .insert(Arc::clone(&audience), Arc::clone(&token));
            inner.epoch.fetch_add(1, Ordering::AcqRel);
            guard.outcome = Some(Ok(()));
            Ok(token)
        }
        Err(error) => {
            let error = Arc::new(error);
            guard.outcome = Some(Err(Arc::clone(&error)));
            Err(error)
        }
    }
}

/// Clears the audience's flight when the fetch task ends (even by panic) and records the
/// outcome: success resets the backoff, failure extends it.
struct FlightGuard<'a, T> {
    inner: &'a Inner<T>,
    audience: &'a Arc<str>,
    outcome: Option<Result<(), Arc<TokenError>>>,
}

impl<T> Drop for FlightGuard<'_, T> {
    fn drop(&mut self) {
        let inner = self.inner;
        let now = inner.clock.now();
        let mut states = lock(&inner.states);
        let error = match self.outcome.take() {
            Some(Ok(())) => {
                states.remove(self.audience);
                return;
            }
            Some(Err(error)) => error,
            None => Arc::new(TokenError::new("the token source panicked")),
        };
        inner
            .counters
            .fetch_failures
            .fetch_add(1, Ordering::Relaxed);
        let state = states.entry(Arc::clone(self.audience)).or_default();
        state.flight = None;
        state.failures = state.failures.saturating_add(1);
        let delay = inner.config.backoff(state.failures, error.retry_after());
        state.retry_at = Some(now + delay);
        tracing::warn!(
            audience = %self.audience,
            failures = state.failures,
            retry_in = ?delay,
            error = %error,
            "token fetch failed"
        );
        state.last_error = Some(error);
        // Forget old failures of audiences nobody asks for any more.
        if states.len() > 1024 {
            states.retain(|_, s| s.flight.is_some() || s.retry_at.is_some_and(|at| at > now));
        }
    }
}

/// Refreshes `stale`'s audience in the background until a new token is cached, the token
/// becomes unusable, or it is dropped; failures wait for the backoff between attempts.
async fn refresh_ahead<T: TokenSource>(weak: Weak<Inner<T>>, stale: Arc<CachedToken>) {
    loop {
        let flight = {
            let Some(inner) = weak.upgrade() else { return };
            let current = inner.tokens.get(&*stale.audience);
            if !current.is_some_and(|current| Arc::ptr_eq(&current, &stale)) {
                return;
            }
            let now = inner.clock.now();
            let Ok(left) = stale.usable_until.duration_since(now) else {
                return;
            };
            match inner.join_or_start(&stale.audience, Some(&stale)) {
                Start::Cached(_) | Start::Failed(_) => return,
                Start::Flight(flight) => Ok(flight),
                Start::CoolingDown(wait, _) => Err(wait.min(left)),
            }
        };
        match flight {
            Ok(flight) => {
                if flight.await.is_ok() {
                    return;
                }
            }
            Err(wait) => tokio::time::sleep(wait).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::source::from_fn;
    use keyroll_core::TokioClock;

    fn config() -> TokenCacheConfig {
        TokenCacheConfig::default().with_refresh_jitter(0.0)
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = config().with_backoff(Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<u64> = (1..=6).map(|n| config.backoff(n, None).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(
            config.backoff(1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn refresh_and_usable_times() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        let token = Token::new("x", t0 + hour);
        let cached = CachedToken::new("a".into(), token, t0, t0, &config()).unwrap();
        assert_eq!(cached.refresh_at(), t0 + hour.mul_f64(0.8));
        assert_eq!(cached.usable_until(), t0 + hour - Duration::from_secs(5));
        // A source's own refresh-at wins, within the lifetime.
        let token = Token::new("x", t0 + hour).with_refresh_at(t0 + hour / 2);
        let cached = CachedToken::new("a".into(), token, t0, t0, &config()).unwrap();
        assert_eq!(cached.refresh_at(), t0 + hour / 2);
        // Expired, empty or non-header tokens are refused.
        assert!(CachedToken::new("a".into(), Token::new("x", t0), t0, t0, &config()).is_err());
        assert!(
            CachedToken::new("a".into(), Token::new("", t0 + hour), t0, t0, &config()).is_err()
        );
        assert!(
            CachedToken::new("a".into(), Token::new("a\nb", t0 + hour), t0, t0, &config()).is_err()
        );
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
        assert_eq!(error.kind(), crate::issue::IssueErrorKind::TokenUnavailable);
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
        first.invalidate();
        assert!(cache.cached("a").is_some_and(|t| Arc::ptr_eq(&t, &first)));
        assert_eq!(cache.metrics().invalidations_deferred, 1);
        tokio::time::advance(Duration::from_secs(30)).await;
        first.invalidate();
        assert!(cache.cached("a").is_none());
        let second = cache.get("a").await.unwrap();
        // A 401 for a request that carried the old token leaves the new one alone.
        tokio::time::advance(Duration::from_secs(30)).await;
        first.invalidate();
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
            cache.get("a").await.unwrap().invalidate();
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
        .config(config().with_min_age_to_invalidate(Duration::ZERO))
        .clock(Arc::new(TokioClock::default()))
        .build();
        for _ in 0..10 {
            eager.get("a").await.unwrap().invalidate();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 10);
    }
}
