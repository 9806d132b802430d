//! [`EntraTokens`]: Entra ID access tokens for outbound calls, from any azure_identity
//! credential, refreshed ahead of expiry in the background.
//!
//! ```no_run
//! use keyroll_azure::EntraTokens;
//!
//! # async fn demo() -> Result<(), keyroll_azure::AzureError> {
//! let credential = keyroll_azure::credential_from_env(None)?; // managed identity in Azure
//! let tokens = EntraTokens::new(credential, &["api://billing/.default"]);
//! let token = tokens.access_token().await?; // fetched once, then served from memory
//! println!("expires at {:?}", token.expires_at());
//! # Ok(()) }
//! ```
//!
//! # Refreshing
//!
//! A token is refreshed in the background at its refresh point: half its lifetime for tokens
//! of two hours or more (what Entra's `refresh_in` says for those; azure_identity 1.x does not
//! pass `refresh_in` on), otherwise 80 % of it ([`EntraTokensBuilder::refresh_ratio`]).
//! Callers never wait while the current token is valid: past its refresh point they get it
//! at once and the refresh runs beside them. When a refresh fails, the current token is kept
//! while it is valid (stale-but-valid) and the refresh is retried with exponential backoff.
//! Only when no valid token is left do callers wait for (and share) one request.
//!
//! The SDK's credentials keep their own cache and hand out the same token until five minutes
//! before it expires; a refresh that gets the same token back tries again then.
//!
//! # Coalescing, cancellation and panics
//!
//! At most one credential call runs at a time per scope set (single flight): concurrent
//! callers wait for the same one. It runs in its own tokio task, so a caller that stops
//! waiting does not cancel it. A panicking credential fails that one refresh; the next starts
//! afresh.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use azure_core::credentials::{Secret, TokenCredential};
use futures_util::FutureExt as _;
use futures_util::future::Shared;
use keyroll_core::{Backoff, BoxFuture, Clock, SystemClock};
use keyroll_tower::issue::{Token, TokenError, TokenSource};

use crate::error::AzureError;
use crate::lock;

/// An Entra ID access token. `Debug` prints no secret.
#[derive(Clone)]
pub struct EntraToken {
    secret: Secret,
    expires_at: SystemTime,
    fetched_at: SystemTime,
    refresh_at: SystemTime,
}

impl EntraToken {
    /// The access token (without `Bearer `).
    pub fn secret(&self) -> &str {
        self.secret.secret()
    }

    /// When it expires.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// When it was obtained.
    pub fn fetched_at(&self) -> SystemTime {
        self.fetched_at
    }

    /// When it is refreshed in the background.
    pub fn refresh_at(&self) -> SystemTime {
        self.refresh_at
    }
}

impl fmt::Debug for EntraToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraToken")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

/// Counters of an [`EntraTokens`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntraMetrics {
    /// Credential calls started.
    pub fetches: u64,
    /// Credential calls that failed (or panicked).
    pub failures: u64,
    /// Calls answered with the current token while its refresh was due or failing.
    pub served_while_refreshing: u64,
    /// Calls that waited for a credential call (no valid token).
    pub waited: u64,
}

/// Builds an [`EntraTokens`].
pub struct EntraTokensBuilder {
    credential: Arc<dyn TokenCredential>,
    scopes: Vec<String>,
    clock: Arc<dyn Clock>,
    refresh_ratio: f64,
    expiry_margin: Duration,
    backoff: Backoff,
}

impl fmt::Debug for EntraTokensBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraTokensBuilder")
            .field("scopes", &self.scopes)
            .field("refresh_ratio", &self.refresh_ratio)
            .finish_non_exhaustive()
    }
}

impl EntraTokensBuilder {
    /// The clock that expiry and refresh points are read on (default: the system clock; use
    /// [`keyroll_core::TokioClock`] with paused tokio time in tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The refresh point of tokens shorter than two hours, as a fraction of their lifetime
    /// (default 0.8, clamped to 0.1…0.95).
    pub fn refresh_ratio(mut self, ratio: f64) -> Self {
        self.refresh_ratio = ratio.clamp(0.1, 0.95);
        self
    }

    /// A token counts as expired this long before its `expires_on` (default 30 s, at most a
    /// tenth of its lifetime).
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.expiry_margin = margin;
        self
    }

    /// Retry delays after failed refreshes (default 1 s doubling to 60 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(min, max.max(min)).with_jitter(0.2);
        self
    }

    /// Makes the token source. Nothing is fetched until the first call.
    pub fn build(self) -> EntraTokens {
        EntraTokens {
            inner: Arc::new(Inner {
                credential: self.credential,
                scopes: self.scopes,
                clock: self.clock,
                refresh_ratio: self.refresh_ratio,
                expiry_margin: self.expiry_margin,
                backoff: self.backoff,
                entries: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        }
    }
}

/// Entra ID access tokens from any `TokenCredential` (managed identity, workload identity,
/// client secret, [`KeyVaultClientAssertion`](crate::KeyVaultClientAssertion), developer
/// tools), refreshed ahead of expiry in the background. Cheap to clone; the background
/// refresh stops when the last clone is dropped.
///
/// As keyroll-tower's `TokenSource`, the token is for the scopes given at construction; with
/// no scopes, each audience `aud` gets a token for `aud/.default`.
#[derive(Clone)]
pub struct EntraTokens {
    inner: Arc<Inner>,
}

struct Inner {
    credential: Arc<dyn TokenCredential>,
    scopes: Vec<String>,
    clock: Arc<dyn Clock>,
    refresh_ratio: f64,
    expiry_margin: Duration,
    /// Retry delays after failed refreshes (with jitter).
    backoff: Backoff,
    /// Per scope set: the current token, the running fetch, the retry state.
    entries: Mutex<HashMap<Vec<String>, Entry>>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    fetches: AtomicU64,
    failures: AtomicU64,
    served_while_refreshing: AtomicU64,
    waited: AtomicU64,
}

/// What a shared fetch gives every waiter.
type FetchResult = Result<Arc<EntraToken>, Failure>;
type Flight = Shared<BoxFuture<'static, FetchResult>>;

#[derive(Clone, Debug)]
struct Failure {
    message: String,
    source: Option<Arc<azure_core::Error>>,
}

#[derive(Default)]
struct Entry {
    token: Option<Arc<EntraToken>>,
    flight: Option<Flight>,
    failures: u32,
    /// When the next background refresh is due (the token's refresh point, or a retry).
    next_refresh: Option<SystemTime>,
    refresher: bool,
}

impl fmt::Debug for EntraTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraTokens")
            .field("credential", &self.inner.credential)
            .field("scopes", &self.inner.scopes)
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl EntraTokens {
    /// Tokens for `scopes` (`api://billing/.default`) from `credential`, with the defaults.
    pub fn new(credential: Arc<dyn TokenCredential>, scopes: &[&str]) -> EntraTokens {
        EntraTokens::builder(credential, scopes).build()
    }

    /// A builder, to set the clock, refresh ratio and backoff.
    pub fn builder(credential: Arc<dyn TokenCredential>, scopes: &[&str]) -> EntraTokensBuilder {
        EntraTokensBuilder {
            credential,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            clock: Arc::new(SystemClock),
            refresh_ratio: 0.8,
            expiry_margin: Duration::from_secs(30),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).with_jitter(0.2),
        }
    }

    /// The scopes given at construction.
    pub fn scopes(&self) -> &[String] {
        &self.inner.scopes
    }

    /// Counters.
    pub fn metrics(&self) -> EntraMetrics {
        let c = &self.inner.counters;
        EntraMetrics {
            fetches: c.fetches.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            served_while_refreshing: c.served_while_refreshing.load(Ordering::Relaxed),
            waited: c.waited.load(Ordering::Relaxed),
        }
    }

    /// A valid token for the configured scopes.
    pub async fn access_token(&self) -> Result<Arc<EntraToken>, AzureError> {
        self.token_for(self.inner.scopes.clone()).await
    }

    /// A valid token for `scopes`.
    pub async fn token_for_scopes(&self, scopes: &[&str]) -> Result<Arc<EntraToken>, AzureError> {
        self.token_for(scopes.iter().map(|s| (*s).to_owned()).collect())
            .await
    }

    /// Fetches a new token now (joining a fetch already running), whatever the current one.
    pub async fn refresh_now(&self) -> Result<Arc<EntraToken>, AzureError> {
        let scopes = self.inner.scopes.clone();
        let flight = self.inner.start_fetch(&scopes);
        self.inner.ensure_refresher(&scopes);
        flight.await.map_err(|f| self.inner.error(&scopes, f))
    }

    async fn token_for(&self, scopes: Vec<String>) -> Result<Arc<EntraToken>, AzureError> {
        if scopes.is_empty() {
            return Err(AzureError::config("no scopes to ask Entra ID for"));
        }
        let inner = &self.inner;
        let now = inner.clock.now();
        let flight = {
            let mut entries = lock(&inner.entries);
            let entry = entries.entry(scopes.clone()).or_default();
            if let Some(token) = &entry.token
                && now < inner.usable_until(token)
            {
                let due = entry.next_refresh.is_some_and(|at| now >= at);
                if due {
                    inner
                        .counters
                        .served_while_refreshing
                        .fetch_add(1, Ordering::Relaxed);
                }
                let token = Arc::clone(token);
                drop(entries);
                if due {
                    // The background refresher normally does this; a caller that notices
                    // first starts it (the fetch is shared, so this costs nothing extra).
                    drop(inner.start_fetch(&scopes));
                }
                inner.ensure_refresher(&scopes);
                return Ok(token);
            }
            inner.counters.waited.fetch_add(1, Ordering::Relaxed);
            entry.flight.clone()
        };
        let flight = match flight {
            Some(flight) => flight,
            None => inner.start_fetch(&scopes),
        };
        inner.ensure_refresher(&scopes);
        flight.await.map_err(|f| inner.error(&scopes, f))
    }
}

impl Inner {
    fn usable_until(&self, token: &EntraToken) -> SystemTime {
        let lifetime = token
            .expires_at
            .duration_since(token.fetched_at)
            .unwrap_or_default();
        token.expires_at - self.expiry_margin.min(lifetime / 10)
    }

    fn error(&self, scopes: &[String], failure: Failure) -> AzureError {
        AzureError::Credential {
            scopes: scopes.join(" "),
            message: failure.message,
            source: failure.source,
        }
    }

    /// The refresh point of a token fetched at `fetched_at`.
    fn refresh_point(&self, fetched_at: SystemTime, expires_at: SystemTime) -> SystemTime {
        let lifetime = expires_at.duration_since(fetched_at).unwrap_or_default();
        let ratio = if lifetime >= Duration::from_secs(2 * 3600) {
            0.5
        } else {
            self.refresh_ratio
        };
        fetched_at + lifetime.mul_f64(ratio)
    }

    /// Joins the running fetch for `scopes` or starts one.
    fn start_fetch(self: &Arc<Self>, scopes: &[String]) -> Flight {
        let mut entries = lock(&self.entries);
        let entry = entries.entry(scopes.to_vec()).or_default();
        if let Some(flight) = &entry.flight {
            return flight.clone();
        }
        self.counters.fetches.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(self);
        let owned = scopes.to_vec();
        let task = tokio::spawn(async move { inner.fetch_once(owned).await });
        let weak = Arc::downgrade(self);
        let owned = scopes.to_vec();
        let future: BoxFuture<'static, FetchResult> = Box::pin(async move {
            match task.await {
                Ok(result) => result,
                Err(_) => {
                    // The credential panicked: count it, clear the flight, retry later.
                    let failure = Failure {
                        message: "the credential panicked".to_owned(),
                        source: None,
                    };
                    if let Some(inner) = weak.upgrade() {
                        inner.record(&owned, Err(failure.clone()));
                    }
                    Err(failure)
                }
            }
        });
        let shared = future.shared();
        entry.flight = Some(shared.clone());
        shared
    }

    async fn fetch_once(self: Arc<Self>, scopes: Vec<String>) -> FetchResult {
        let refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let result = match self.credential.get_token(&refs, None).await {
            Ok(access) => {
                let fetched_at = self.clock.now();
                let expires_at = SystemTime::from(access.expires_on);
                Ok((access.token, fetched_at, expires_at))
            }
            Err(error) => Err(Failure {
                message: crate::retry::error_message(&error),
                source: Some(Arc::new(error)),
            }),
        };
        let result = result.map(|(secret, fetched_at, expires_at)| {
            Arc::new(EntraToken {
                refresh_at: self.refresh_point(fetched_at, expires_at),
                secret,
                expires_at,
                fetched_at,
            })
        });
        self.record(&scopes, result.clone());
        result
    }

    /// Publishes a fetch's result and schedules the next refresh.
    fn record(&self, scopes: &[String], result: FetchResult) {
        let now = self.clock.now();
        let mut entries = lock(&self.entries);
        let entry = entries.entry(scopes.to_vec()).or_default();
        entry.flight = None;
        match result {
            Ok(token) => {
                let same = entry
                    .token
                    .as_ref()
                    .is_some_and(|old| old.secret == token.secret);
                entry.failures = 0;
                entry.next_refresh = Some(if same {
                    // The credential's own cache answered: it renews 5 minutes before expiry.
                    let renewal = token.expires_at - Duration::from_secs(295);
                    renewal.max(now + self.backoff.min)
                } else {
                    token.refresh_at
                });
                if !same {
                    tracing::debug!(scopes = ?scopes, expires_at = ?token.expires_at, "Entra ID token refreshed");
                }
                entry.token = Some(token);
            }
            Err(failure) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                entry.failures += 1;
                let delay = self.backoff.delay(entry.failures);
                entry.next_refresh = Some(now + delay);
                let keeping = entry
                    .token
                    .as_ref()
                    .is_some_and(|t| now < self.usable_until(t));
                tracing::warn!(
                    scopes = ?scopes,
                    failures = entry.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    keeping_current_token = keeping,
                    error = %failure.message,
                    "Entra ID token refresh failed"
                );
            }
        }
    }

    /// Starts the background refresher of `scopes` once.
    fn ensure_refresher(self: &Arc<Self>, scopes: &[String]) {
        {
            let mut entries = lock(&self.entries);
            let entry = entries.entry(scopes.to_vec()).or_default();
            if entry.refresher {
                return;
            }
            entry.refresher = true;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(refresh_loop(Arc::downgrade(self), scopes.to_vec()));
        }
    }

    /// How long until the next refresh of `scopes` is due.
    fn delay(&self, scopes: &[String]) -> Duration {
        let now = self.clock.now();
        let entries = lock(&self.entries);
        let next = entries.get(scopes).and_then(|e| e.next_refresh);
        match next {
            Some(at) => at.duration_since(now).unwrap_or_default(),
            // Nothing fetched yet: the caller that started us is fetching.
            None => self.backoff.min,
        }
    }
}

async fn refresh_loop(weak: Weak<Inner>, scopes: Vec<String>) {
    loop {
        let Some(delay) = weak.upgrade().map(|inner| inner.delay(&scopes)) else {
            return;
        };
        tokio::time::sleep(delay.max(Duration::from_millis(1))).await;
        let Some(inner) = weak.upgrade() else { return };
        let due = {
            let now = inner.clock.now();
            let entries = lock(&inner.entries);
            entries
                .get(&scopes)
                .and_then(|e| e.next_refresh)
                .is_some_and(|at| now >= at)
        };
        if due {
            let flight = inner.start_fetch(&scopes);
            drop(inner);
            let _ = flight.await;
        }
    }
}

impl TokenSource for EntraTokens {
    /// A token for the configured scopes, or for `{audience}/.default` when none were given.
    /// Its refresh point is a little after this source's own, so keyroll-tower's token cache
    /// asks again once the background refresh here has had its chance.
    fn token<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<Token, TokenError>> {
        Box::pin(async move {
            let scopes = if self.inner.scopes.is_empty() {
                vec![format!("{}/.default", audience.trim_end_matches('/'))]
            } else {
                self.inner.scopes.clone()
            };
            let token = self
                .token_for(scopes)
                .await
                .map_err(|e| TokenError::new(e.to_string()).with_cause(e))?;
            let slack = token
                .expires_at
                .duration_since(token.refresh_at)
                .unwrap_or_default()
                / 4;
            let refresh_at =
                (token.refresh_at + slack.min(Duration::from_secs(30))).max(self.inner.clock.now());
            Ok(Token::new(token.secret(), token.expires_at).with_refresh_at(refresh_at))
        })
    }
}
