//! Helpers shared by the issuer's integration tests.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use keyroll_core::jwt::{Issuer, TokenTemplate, Validation, Verifier};
use keyroll_core::{
    Algorithm, BoxFuture, Clock, KeyCache, KeyCacheConfig, KeySource, KeyVersion, LoadedKeys,
    LocalKeyRing, RotationPolicy, Signer, SourceError, TokioClock,
};
use keyroll_tower::issue::{SelfSigned, TokenCache, TokenCacheConfig};

/// Switches and counters shared by a [`Controlled`] source and its signers.
#[derive(Debug, Default)]
pub struct Controls {
    /// Sign calls (attempts, failed or not).
    pub sign_calls: AtomicUsize,
    /// When set, signing fails (a vault outage).
    pub failing: AtomicBool,
    /// How long each sign takes, in milliseconds (tokio time).
    pub delay_ms: AtomicUsize,
}

impl Controls {
    pub fn signs(&self) -> usize {
        self.sign_calls.load(Ordering::SeqCst)
    }

    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as usize, Ordering::SeqCst);
    }
}

/// A key source over a local key ring whose signers count, delay and fail on demand.
#[derive(Debug)]
pub struct Controlled {
    pub ring: Arc<LocalKeyRing>,
    pub controls: Arc<Controls>,
}

impl KeySource for Controlled {
    fn name(&self) -> String {
        "controlled ring".into()
    }

    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        self.ring.load()
    }

    fn signer<'a>(
        &'a self,
        version: &'a KeyVersion,
    ) -> BoxFuture<'a, Result<Arc<dyn Signer>, SourceError>> {
        Box::pin(async move {
            let inner = self.ring.signer(version).await?;
            Ok(Arc::new(ControlledSigner {
                inner,
                controls: Arc::clone(&self.controls),
            }) as Arc<dyn Signer>)
        })
    }
}

#[derive(Debug)]
struct ControlledSigner {
    inner: Arc<dyn Signer>,
    controls: Arc<Controls>,
}

impl Signer for ControlledSigner {
    fn algorithm(&self) -> Algorithm {
        self.inner.algorithm()
    }

    fn sign<'a>(&'a self, input: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, SourceError>> {
        Box::pin(async move {
            self.controls.sign_calls.fetch_add(1, Ordering::SeqCst);
            let delay = self.controls.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay as u64)).await;
            }
            if self.controls.failing.load(Ordering::SeqCst) {
                return Err(
                    SourceError::new("controlled ring", "sign", "vault unavailable")
                        .with_status(503),
                );
            }
            self.inner.sign(input).await
        })
    }
}

pub const ISSUER: &str = "https://orders.internal";

/// Everything an issuer test needs, on one tokio-driven clock (pause time to control it).
pub struct Fixture {
    pub clock: Arc<TokioClock>,
    pub ring: Arc<LocalKeyRing>,
    pub controls: Arc<Controls>,
    pub keys: KeyCache,
    pub tokens: TokenCache<SelfSigned>,
}

pub struct FixtureConfig {
    pub lifetime: Duration,
    pub rotate_every: Duration,
    pub propagation: Duration,
    pub key_refresh: Duration,
    pub tokens: TokenCacheConfig,
}

impl Default for FixtureConfig {
    fn default() -> Self {
        FixtureConfig {
            lifetime: Duration::from_secs(100),
            rotate_every: Duration::from_secs(24 * 3600),
            propagation: Duration::from_secs(3600),
            key_refresh: Duration::from_secs(300),
            tokens: TokenCacheConfig::default()
                .refresh_jitter(0.0)
                .backoff(Duration::from_secs(1), Duration::from_secs(8)),
        }
    }
}

impl Fixture {
    pub fn new(config: FixtureConfig) -> Fixture {
        let clock = Arc::new(TokioClock::default());
        let ring = Arc::new(
            LocalKeyRing::builder(Algorithm::ES256)
                .rotate_every(config.rotate_every)
                .retain(4)
                .clock(clock.clone())
                .build()
                .unwrap(),
        );
        let controls = Arc::new(Controls::default());
        let source = Controlled {
            ring: Arc::clone(&ring),
            controls: Arc::clone(&controls),
        };
        let keys = KeyCache::builder(source)
            .config(
                KeyCacheConfig::default()
                    .refresh_interval(config.key_refresh)
                    .refresh_jitter(0.0)
                    .policy(RotationPolicy::default().propagation(config.propagation)),
            )
            .clock(clock.clone())
            .build();
        let template = TokenTemplate::new(ISSUER).lifetime(config.lifetime);
        let tokens = TokenCache::builder(SelfSigned::new(keys.clone(), template))
            .config(config.tokens)
            .clock(clock.clone())
            .build();
        Fixture {
            clock,
            ring,
            controls,
            keys,
            tokens,
        }
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// A verifier for our tokens with `audiences`, over the same key cache.
    pub fn verifier(&self, audiences: &[&str]) -> Verifier {
        Verifier::new([Issuer::new(
            self.keys.clone(),
            Validation::new(ISSUER, audiences.iter().copied()),
        )])
    }
}

/// Lets spawned tasks (background refreshes) run.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// The token of an `Authorization: Bearer` header value.
pub fn bearer(value: &http::HeaderValue) -> String {
    value
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned()
}
