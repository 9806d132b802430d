//! The refresh engine under the key and token caches: independent of any runtime, and safe
//! for a fleet of replicas sharing one source (retries at the refresh rate while keys are
//! fresh, backoff that grows, `Retry-After` honoured, recovery at the retry point, an empty
//! answer refused). Time is tokio's paused time, or a virtual clock shared across runtimes.
#![allow(clippy::unwrap_used)]

mod common;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use common::{CountingSource, Failing, FlakyRing, ManualTime, settle};
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation, Verifier, VerifyError};
use keyroll_core::token::{SelfSigned, StaticToken, Token, TokenCache, TokenCacheConfig, from_fn};
use keyroll_core::{
    Algorithm, Clock, KeyCache, KeyCacheConfig, KeyLookup, KeyRef, KeySource, LocalKeyRing,
    TokioClock,
};

const MINUTE: Duration = Duration::from_secs(60);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// A key cache over a local ring on virtual time that every runtime shares, its verifier,
/// and a token it signed.
fn ring_on_manual_time(time: &ManualTime) -> (KeyCache, Verifier, Arc<CountingRing>) {
    let ring = LocalKeyRing::builder(Algorithm::ES256)
        .clock(Arc::new(time.clone()))
        .build()
        .unwrap();
    let counted = Arc::new(CountingRing {
        ring,
        loads: AtomicUsize::new(0),
    });
    let keys = KeyCache::builder_arc(Arc::clone(&counted) as Arc<dyn KeySource>)
        .clock(Arc::new(time.clone()))
        .sleep(Arc::new(time.clone()))
        .build();
    let verifier = Verifier::new([Issuer::new(keys.clone(), Validation::new("svc", ["peer"]))]);
    (keys, verifier, counted)
}

/// A local ring that counts its loads.
#[derive(Debug)]
struct CountingRing {
    ring: LocalKeyRing,
    loads: AtomicUsize,
}

impl CountingRing {
    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

impl KeySource for CountingRing {
    fn name(&self) -> String {
        "counting ring".into()
    }
    fn load(
        &self,
    ) -> keyroll_core::BoxFuture<'_, Result<keyroll_core::LoadedKeys, keyroll_core::SourceError>>
    {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.ring.load()
    }
    fn signer<'a>(
        &'a self,
        version: &'a keyroll_core::KeyVersion,
    ) -> keyroll_core::BoxFuture<'a, Result<Arc<dyn keyroll_core::Signer>, keyroll_core::SourceError>>
    {
        self.ring.signer(version)
    }
}

// --- Runtimes -------------------------------------------------------------------------------

#[test]
fn lookups_and_verify_now_never_panic_outside_a_runtime() {
    let time = ManualTime::new(t0());
    let (keys, verifier, ring) = ring_on_manual_time(&time);
    // Cold, no runtime anywhere: "load first", never a panic.
    assert!(
        keys.lookup_at(KeyRef::Kid("k"), time.now())
            .unwrap()
            .is_none()
    );
    assert!(
        verifier.verify_now("a.b.c").is_some(),
        "a malformed token is refused at once"
    );

    let token = paused_runtime().block_on(async {
        TokenTemplate::new("svc")
            .mint(&keys, "peer")
            .await
            .unwrap()
            .token
    });
    // That runtime is gone with its background task; the hot path still answers.
    assert!(!keys.metrics().background_running);
    assert!(verifier.verify_now(&token).unwrap().is_ok());
    // A refresh is due (the first after a cold load comes at 2½–7½ min), and no task can run
    // it: the hot path sends callers the async way.
    time.advance(8 * MINUTE);
    assert!(verifier.verify_now(&token).is_none());
    assert!(
        keys.lookup_at(KeyRef::Kid("k"), time.now())
            .unwrap()
            .is_none()
    );
    assert_eq!(ring.loads(), 1);
}

#[test]
fn a_cache_shared_by_several_runtimes_keeps_refreshing() {
    // As tests sharing a static cache, or per-thread runtimes that come and go: each runtime
    // finds the background task gone with the previous one, and starts it again.
    let time = ManualTime::new(t0());
    let (keys, verifier, ring) = ring_on_manual_time(&time);
    let token = paused_runtime().block_on(async {
        TokenTemplate::new("svc")
            .lifetime(24 * 60 * MINUTE)
            .mint(&keys, "peer")
            .await
            .unwrap()
            .token
    });
    assert_eq!((ring.loads(), keys.metrics().background_starts), (1, 1));
    for round in 2..=4 {
        time.advance(8 * MINUTE);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                paused_runtime().block_on(async {
                    // The hot path defers to the async one, which restarts the task…
                    assert!(verifier.verify_now(&token).is_none());
                    verifier.verify(&token).await.unwrap();
                    assert!(keys.metrics().background_running);
                    // …and the task refreshes the set that was due.
                    settle().await;
                    assert_eq!(ring.loads(), round);
                    assert!(verifier.verify_now(&token).unwrap().is_ok());
                });
            });
        });
        assert!(!keys.metrics().background_running, "its runtime is gone");
    }
    assert_eq!(keys.metrics().background_starts, 4);
}

#[test]
fn the_background_refresh_runs_on_the_runtime_given_at_build() {
    let owned = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("keyroll-owned")
        .enable_all()
        .build()
        .unwrap();
    let time = ManualTime::new(t0());
    let source = Arc::new(CountingSource::default());
    source.add("k1", &time);
    let (loaded, loads) = std::sync::mpsc::channel();
    *source.notify.lock().unwrap() = Some(loaded);
    let keys = KeyCache::builder_arc(Arc::clone(&source) as Arc<dyn KeySource>)
        .clock(Arc::new(time.clone()))
        .sleep(Arc::new(time.clone()))
        .runtime(owned.handle().clone())
        .build();
    // Used from a short-lived runtime: the load and the task run on the owned one.
    paused_runtime().block_on(keys.ready()).unwrap();
    assert_eq!(loads.recv_timeout(Duration::from_secs(60)).unwrap(), 1);
    assert!(
        keys.metrics().background_running,
        "it outlives the caller's runtime"
    );
    // With no caller at all, the refresh happens on schedule (2½–7½ min after a cold load).
    // Time moves a minute at a time: the task, on another thread, may go to sleep after a
    // step, and then wakes at a later one.
    let mut waited = Duration::ZERO;
    let second = loop {
        assert!(waited < 10 * MINUTE, "no refresh after {waited:?}");
        time.advance(MINUTE);
        waited += MINUTE;
        if let Ok(load) = loads.recv_timeout(Duration::from_millis(200)) {
            break load;
        }
    };
    assert_eq!(second, 2);
    assert!(waited >= 2 * MINUTE, "{waited:?}");
    let threads = source.threads.lock().unwrap().clone();
    assert!(
        threads
            .iter()
            .all(|t| t.as_deref() == Some("keyroll-owned")),
        "{threads:?}"
    );
    assert_eq!(keys.metrics().background_starts, 1);
}

#[test]
fn token_refresh_ahead_survives_the_runtime_that_started_it() {
    let time = ManualTime::new(t0());
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fetches);
    let clock = time.clone();
    let cache = TokenCache::builder(from_fn(move |_audience: String| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let expires = clock.now() + 60 * MINUTE;
        async move { Ok(Token::new(format!("t{n}"), expires)) }
    }))
    .config(TokenCacheConfig::default().refresh_jitter(0.0))
    .clock(Arc::new(time.clone()))
    .sleep(Arc::new(time.clone()))
    .build();
    paused_runtime().block_on(cache.get("a")).unwrap();
    assert!(!cache.metrics().background_running);
    // Due for its refresh, but no task can run it: the read sends the caller the async way,
    // while the token itself is still good.
    time.advance(50 * MINUTE);
    assert!(cache.lookup("a").is_none());
    assert!(cache.cached("a").is_some());
    paused_runtime().block_on(async {
        let token = cache.get("a").await.unwrap();
        assert_eq!(token.header_value(), "Bearer t1", "served at once");
        settle().await;
        assert_eq!(cache.lookup("a").unwrap().header_value(), "Bearer t2");
    });
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[test]
fn async_calls_outside_tokio_load_in_the_callers_future() {
    let ring = LocalKeyRing::in_memory(Algorithm::ES256).unwrap();
    let keys = KeyCache::builder(ring).build();
    let mut context = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(set)) = pin!(keys.keys()).poll(&mut context) else {
        panic!("a ready source loads in the first poll, with no runtime");
    };
    assert_eq!(set.versions().len(), 1);
    let tokens = TokenCache::new(StaticToken::new("k"));
    let Poll::Ready(Ok(token)) = pin!(tokens.get("a")).poll(&mut context) else {
        panic!("a ready source fetches in the first poll, with no runtime");
    };
    assert_eq!(token.header_value(), "Bearer k");
}

// --- A fleet sharing one source ---------------------------------------------------------------

fn cache_over(source: &Arc<CountingSource>, config: KeyCacheConfig) -> KeyCache {
    KeyCache::builder_arc(Arc::clone(source) as Arc<dyn KeySource>)
        .config(config)
        .clock(Arc::new(TokioClock::default()))
        .build()
}

#[tokio::test(start_paused = true)]
async fn an_outage_costs_the_refresh_rate_while_the_keys_are_fresh() {
    let source = Arc::new(CountingSource::default());
    source.add("k1", &TokioClock::default());
    let keys = cache_over(&source, KeyCacheConfig::default());
    keys.ready().await.unwrap();
    source.fail(Failing::default());
    let before = source.loads();
    for _ in 0..60 {
        tokio::time::sleep(MINUTE).await;
        assert!(matches!(
            keys.find(KeyRef::Kid("k1")).await.unwrap(),
            KeyLookup::Valid(_)
        ));
    }
    // The normal refresh, then retries 5, 6¼, then 7½ minutes apart (± 10 %): 9 in an hour,
    // fewer than the 12 refreshes of a working hour.
    let attempts = source.loads() - before;
    assert!((8..=11).contains(&attempts), "{attempts} attempts in 1 h");
    // After the first refresh (spread over 2½–7½ min after a cold load), none sooner than the
    // refresh rate.
    assert!(
        source
            .gaps()
            .iter()
            .skip(1)
            .all(|gap| *gap >= Duration::from_secs(270)),
        "{:?}",
        source.gaps()
    );
}

#[tokio::test(start_paused = true)]
async fn urgent_retries_back_off_growing_across_failures() {
    // A cold start against a failing source: urgent, so faster, but with backoff that keeps
    // growing up to its cap, whoever asks (background, requests).
    let source = Arc::new(CountingSource::default());
    source.fail(Failing::default());
    let keys = cache_over(&source, KeyCacheConfig::default());
    for _ in 0..20 * 60 {
        let _ = keys.find(KeyRef::Kid("k1")).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let gaps = source.gaps();
    assert!(
        gaps.len() >= 15 && gaps.len() <= 30,
        "{} loads in 20 min",
        gaps.len()
    );
    for pair in gaps.windows(2) {
        // Each delay is 1 s × 2ⁿ capped at 60 s, shortened by up to a fifth at random.
        assert!(
            pair[1] >= pair[0].mul_f64(0.75) || pair[0] >= Duration::from_secs(45),
            "{gaps:?}"
        );
    }
    assert!(
        gaps.iter().all(|gap| *gap <= Duration::from_secs(61)),
        "{gaps:?}"
    );
    assert!(gaps.last().unwrap() >= &Duration::from_secs(45));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_beyond_backoff_max_and_up_to_its_cap() {
    let source = Arc::new(CountingSource::default());
    source.add("k1", &TokioClock::default());
    source.fail(Failing {
        status: Some(503),
        retry_after: Some(Duration::from_secs(90)),
    });
    let keys = cache_over(&source, KeyCacheConfig::default());
    let error = keys.keys().await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(90)));
    tokio::time::sleep(Duration::from_secs(89)).await;
    assert!(keys.keys().await.is_err());
    assert_eq!(source.loads(), 1, "not asked again at backoff_max (60 s)");
    // Next it asks for two hours: asked again at max_retry_after (10 min).
    source.fail(Failing {
        status: Some(503),
        retry_after: Some(Duration::from_secs(7200)),
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        source.loads(),
        2,
        "the background task asked at the retry point"
    );
    let error = keys.keys().await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(599)));
    source.recover();
    tokio::time::sleep(Duration::from_secs(598)).await;
    assert!(keys.keys().await.is_err());
    assert_eq!(source.loads(), 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    keys.ready().await.unwrap();
    assert_eq!(source.loads(), 3);
}

#[tokio::test(start_paused = true)]
async fn past_max_stale_a_request_recovers_at_the_retry_point() {
    let source = Arc::new(CountingSource::default());
    source.add("k1", &TokioClock::default());
    let keys = KeyCache::builder_arc(Arc::clone(&source) as Arc<dyn KeySource>)
        .config(KeyCacheConfig::default().max_stale(10 * MINUTE))
        .clock(Arc::new(TokioClock::default()))
        .background_refresh(false)
        .build();
    keys.ready().await.unwrap();
    source.fail(Failing {
        status: Some(503),
        retry_after: Some(Duration::from_secs(20)),
    });
    tokio::time::sleep(11 * MINUTE).await;
    // Stale: the first request tries a load (nothing else would), fails, and says when.
    assert!(
        keys.lookup_at(KeyRef::Kid("k1"), keys.now())
            .unwrap()
            .is_none()
    );
    let error = keys.find(KeyRef::Kid("k1")).await.unwrap_err();
    assert!(error.is_unavailable());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(20)));
    assert_eq!(source.loads(), 2);
    // The vault is back; until the retry point, requests get 503 at once, with no load.
    source.recover();
    tokio::time::sleep(Duration::from_secs(19)).await;
    assert!(
        keys.lookup_at(KeyRef::Kid("k1"), keys.now())
            .unwrap_err()
            .is_unavailable()
    );
    assert_eq!(source.loads(), 2);
    // At the retry point, the next request loads and is served: recovery took the Retry-After.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        keys.lookup_at(KeyRef::Kid("k1"), keys.now())
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        keys.find(KeyRef::Kid("k1")).await.unwrap(),
        KeyLookup::Valid(_)
    ));
    assert_eq!(source.loads(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_load_with_no_keys_after_a_good_set_keeps_the_good_set() {
    let source = Arc::new(CountingSource::default());
    source.add("k1", &TokioClock::default());
    let keys = cache_over(&source, KeyCacheConfig::default());
    keys.ready().await.unwrap();
    source.empty.store(true, Ordering::SeqCst);
    let error = keys.refresh_now().await.unwrap_err();
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(
        cause.contains("counting source") && cause.contains("no usable key"),
        "{cause}"
    );
    // The background refresh meets the same: the last good set serves, never a 401.
    tokio::time::sleep(60 * MINUTE).await;
    assert!(matches!(
        keys.find(KeyRef::Kid("k1")).await.unwrap(),
        KeyLookup::Valid(_)
    ));
    assert!(keys.metrics().consecutive_failures >= 8);
    // A source that never had keys is taken at its word: an empty set, not an outage.
    let fresh = Arc::new(CountingSource::default());
    fresh.empty.store(true, Ordering::SeqCst);
    let empty = cache_over(&fresh, KeyCacheConfig::default());
    assert!(empty.keys().await.unwrap().versions().is_empty());
}

#[tokio::test(start_paused = true)]
async fn unknown_kids_during_an_outage_wait_for_the_backoff() {
    let source = Arc::new(CountingSource::default());
    source.add("k1", &TokioClock::default());
    let keys = cache_over(&source, KeyCacheConfig::default());
    keys.ready().await.unwrap();
    source.fail(Failing {
        status: Some(503),
        retry_after: Some(Duration::from_secs(120)),
    });
    // One unknown kid a second for 10 minutes: the cooldown alone would allow 20 loads, the
    // source's Retry-After says one per 2 minutes.
    for i in 0..600 {
        let kid = format!("random-{i}");
        assert!(matches!(
            keys.find(KeyRef::Kid(&kid)).await.unwrap(),
            KeyLookup::Unknown
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let loads = source.loads() - 1;
    assert!((4..=7).contains(&loads), "{loads} loads in 10 min");
}

#[tokio::test(start_paused = true)]
async fn settings_that_would_overflow_mean_never_not_a_panic() {
    let source = Arc::new(CountingSource::default());
    source.add("k1", &TokioClock::default());
    let mut config = KeyCacheConfig::default()
        .negative_cache(Duration::MAX, 10)
        .max_stale(Duration::MAX)
        .max_retry_after(Duration::MAX)
        .throttle_spread(Duration::MAX)
        .backoff(Duration::MAX, Duration::MAX);
    config.refresh_interval = Duration::MAX;
    config.unknown_kid_cooldown = Duration::MAX;
    config.load_timeout = Duration::MAX;
    let keys = cache_over(&source, config);
    keys.ready().await.unwrap();
    for kid in ["ghost", "ghost", "other"] {
        assert!(matches!(
            keys.find(KeyRef::Kid(kid)).await.unwrap(),
            KeyLookup::Unknown
        ));
    }
    source.fail(Failing {
        status: Some(429),
        retry_after: Some(Duration::MAX),
    });
    assert!(keys.refresh_now().await.is_err());
    assert!(matches!(
        keys.lookup_at(KeyRef::Kid("k1"), keys.now()).unwrap(),
        Some(KeyLookup::Valid(_))
    ));

    // The token cache, with public fields set out of range.
    let mut config = TokenCacheConfig::default();
    config.refresh_ratio = -1.0;
    config.refresh_jitter = f64::NAN;
    config.expiry_margin = Duration::MAX;
    config.backoff_min = Duration::MAX;
    config.max_audiences = 0;
    let start = TokioClock::default().now();
    let tokens = TokenCache::builder(from_fn(move |_audience: String| async move {
        Ok(Token::new("t", start + 60 * MINUTE))
    }))
    .config(config)
    .clock(Arc::new(TokioClock::default()))
    .build();
    assert_eq!(tokens.config().refresh_ratio, 0.1);
    for audience in ["a", "b", "a"] {
        tokens.get(audience).await.unwrap();
    }
    assert_eq!(tokens.metrics().audiences, 1);
}

fn flaky_vault() -> (Arc<FlakyRing>, KeyCache) {
    let clock = TokioClock::default();
    let ring = LocalKeyRing::builder(Algorithm::ES256)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let vault = Arc::new(FlakyRing::new(ring));
    let keys = KeyCache::builder_arc(Arc::clone(&vault) as Arc<dyn KeySource>)
        .clock(Arc::new(clock))
        .build();
    (vault, keys)
}

#[tokio::test(start_paused = true)]
async fn while_the_vault_is_down_token_caches_ask_it_nothing() {
    let hour = 60 * MINUTE;
    let (vault, keys) = flaky_vault();
    let tokens = TokenCache::builder(SelfSigned::new(
        keys.clone(),
        TokenTemplate::new("svc").lifetime(hour),
    ))
    .clock(Arc::new(TokioClock::default()))
    .build();
    tokens.get("peer").await.unwrap();
    assert_eq!(vault.signs(), 1);

    // A one-hour outage, with a request a second: the token is refreshed ahead, fails, then
    // expires, and every request wants a new one.
    vault.down(true);
    let loads = vault.loads.load(Ordering::SeqCst);
    let mut failed_requests = 0;
    for _ in 0..3600 {
        if tokens.get("peer").await.is_err() {
            failed_requests += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(failed_requests > 0, "the token expired during the outage");
    assert_eq!(
        vault.signs(),
        1,
        "the refreshes found the vault down: no sign was even tried"
    );
    let refreshes = vault.loads.load(Ordering::SeqCst) - loads;
    assert!(
        (8..=11).contains(&refreshes),
        "{refreshes} refreshes in 1 h"
    );

    // The vault is back: the next refresh (within one retry interval, 7½ min + 10 %) lifts the
    // hold, and the next request after it gets a token.
    vault.down(false);
    let back = tokio::time::Instant::now();
    while tokens.get("peer").await.is_err() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        back.elapsed() <= Duration::from_secs(510),
        "{:?}",
        back.elapsed()
    );
    assert_eq!(vault.signs(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_vault_down_between_refreshes_costs_one_sign_and_one_refresh_until_it_is_back() {
    let (vault, keys) = flaky_vault();
    keys.ready().await.unwrap();
    let active = keys.active_signer().await.unwrap();
    assert!(active.signer.is_remote());
    vault.down(true);
    let loads = vault.loads.load(Ordering::SeqCst);
    // The first failed sign refreshes once, to tell an outage from a blip: the vault is down.
    let failed = active.signer.sign(b"x").await.unwrap_err();
    assert_eq!(failed.status(), Some(503));
    assert_eq!(vault.loads.load(Ordering::SeqCst), loads + 1);
    // From then on signs wait for the next good refresh, whoever asks, however often.
    let mut until_back = Duration::MAX;
    for _ in 0..100 {
        let held = active.signer.sign(b"x").await.unwrap_err();
        assert!(held.to_string().contains("not asked to sign"), "{held}");
        until_back = held.retry_after().unwrap();
    }
    assert_eq!(vault.signs(), 1);
    assert!(until_back > Duration::from_secs(60), "{until_back:?}");
    // The vault is back; the background refresh finds it so, and signing resumes.
    vault.down(false);
    tokio::time::sleep(until_back).await;
    active.signer.sign(b"x").await.unwrap();
    assert_eq!(vault.signs(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_sign_that_found_the_vault_down_holds_signs_with_growing_backoff_until_a_good_refresh() {
    let (vault, keys) = flaky_vault();
    keys.ready().await.unwrap();
    let active = keys.active_signer().await.unwrap();
    // The vault answers the refreshes but not the signs. The first failed sign refreshes
    // once, which answers: a blip, so nothing is held.
    vault.sign_failing.store(true, Ordering::SeqCst);
    let loads = vault.loads.load(Ordering::SeqCst);
    assert_eq!(
        active.signer.sign(b"x").await.unwrap_err().status(),
        Some(503)
    );
    assert_eq!(vault.loads.load(Ordering::SeqCst), loads + 1);
    // Not a blip: each further failed sign holds the next ones (no request) for a backoff
    // that doubles, 2 s up to 60 s (less up to a fifth), without refreshing again.
    let mut holds = Vec::new();
    for attempt in 2..=8 {
        let failed = active.signer.sign(b"x").await.unwrap_err();
        assert_eq!(failed.status(), Some(503));
        assert_eq!(vault.signs(), attempt);
        for _ in 0..10 {
            let held = active.signer.sign(b"x").await.unwrap_err();
            assert!(
                std::error::Error::source(&held).is_some(),
                "names the failed sign"
            );
            assert_eq!(vault.signs(), attempt, "a held sign asks nothing");
        }
        let wait = active
            .signer
            .sign(b"x")
            .await
            .unwrap_err()
            .retry_after()
            .unwrap();
        holds.push(wait.as_secs_f64());
        tokio::time::sleep(wait).await;
    }
    assert_eq!(vault.loads.load(Ordering::SeqCst), loads + 1);
    for (step, wait) in holds.iter().enumerate() {
        let full = 60f64.min(2f64.powi(step as i32 + 1));
        assert!(
            (full * 0.8 - 0.01..=full + 0.01).contains(wait),
            "{holds:?}"
        );
    }
    // A good refresh (the vault answered) lifts the hold at once.
    active.signer.sign(b"x").await.unwrap_err();
    assert!(active.signer.sign(b"x").await.is_err());
    vault.sign_failing.store(false, Ordering::SeqCst);
    keys.refresh_now().await.unwrap();
    active.signer.sign(b"x").await.unwrap();
    assert_eq!(vault.signs(), 10);
    // A good sign ends the growth: the next failure is a first one again, refreshes once and
    // holds nothing.
    vault.sign_failing.store(true, Ordering::SeqCst);
    let loads = vault.loads.load(Ordering::SeqCst);
    active.signer.sign(b"x").await.unwrap_err();
    assert_eq!(vault.loads.load(Ordering::SeqCst), loads + 1);
    vault.sign_failing.store(false, Ordering::SeqCst);
    active.signer.sign(b"x").await.unwrap();
    assert_eq!(vault.signs(), 12);
    // A throttled sign holds nothing: the next one goes to the vault.
    vault.sign_status.store(429, Ordering::SeqCst);
    vault.sign_failing.store(true, Ordering::SeqCst);
    assert_eq!(
        active.signer.sign(b"x").await.unwrap_err().status(),
        Some(429)
    );
    vault.sign_failing.store(false, Ordering::SeqCst);
    active.signer.sign(b"x").await.unwrap();
    assert_eq!(vault.signs(), 14);
}

#[tokio::test(start_paused = true)]
async fn a_verifier_answers_503_not_401_while_a_failed_cold_start_backs_off() {
    let source = Arc::new(CountingSource::default());
    source.fail(Failing::default());
    let keys = cache_over(&source, KeyCacheConfig::default());
    let verifier = Verifier::new([Issuer::new(keys.clone(), Validation::new("svc", ["peer"]))]);
    let header = base64_url(r#"{"alg":"ES256","kid":"k1"}"#);
    let claims = base64_url(r#"{"iss":"svc","aud":"peer","exp":99999999999}"#);
    let token = format!("{header}.{claims}.c2ln");
    for _ in 0..100 {
        assert!(matches!(
            verifier.verify(&token).await,
            Err(VerifyError::KeysUnavailable(_))
        ));
    }
    assert_eq!(
        source.loads(),
        1,
        "requests during the backoff do not reach the source"
    );
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test(start_paused = true)]
async fn a_remote_signature_that_does_not_verify_never_leaves() {
    let (vault, keys) = flaky_vault();
    let tokens = TokenCache::builder(SelfSigned::new(keys.clone(), TokenTemplate::new("svc")))
        .clock(Arc::new(TokioClock::default()))
        .build();
    for (mode, bad) in [(1, 1), (2, 2)] {
        // The vault answers garbage, then signs with a key that is not the listed version's.
        vault.sign_wrongly.store(mode, Ordering::SeqCst);
        let error = TokenTemplate::new("svc")
            .mint(&keys, "peer")
            .await
            .unwrap_err();
        assert!(
            matches!(error, keyroll_core::jwt::MintError::SelfVerification { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("does not verify"), "{error}");
        assert_eq!(keys.metrics().bad_signatures, bad);
    }
    // Through the token cache: an error, never the token.
    let error = tokens.get("peer").await.unwrap_err();
    assert!(error.to_string().contains("does not verify"), "{error}");
    assert_eq!(keys.metrics().bad_signatures, 3);
    // A right signature is checked once and handed out.
    vault.sign_wrongly.store(0, Ordering::SeqCst);
    let minted = TokenTemplate::new("svc").mint(&keys, "peer").await.unwrap();
    let verifier = Verifier::new([Issuer::new(keys.clone(), Validation::new("svc", ["peer"]))]);
    verifier.verify(&minted.token).await.unwrap();
    assert_eq!(keys.metrics().bad_signatures, 3);
}

#[tokio::test(start_paused = true)]
async fn refresh_now_on_a_cold_cache_is_the_one_cold_load() {
    let source = Arc::new(CountingSource::default());
    source.add("k1", &TokioClock::default());
    let keys = cache_over(&source, KeyCacheConfig::default());
    keys.refresh_now().await.unwrap();
    settle().await;
    assert_eq!(source.loads(), 1, "the background task found the set fresh");
    assert!(keys.metrics().background_running);
}
