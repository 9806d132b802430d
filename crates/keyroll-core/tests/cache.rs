//! Key cache behaviour under load, rotation and outages, on tokio's paused time.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::CountingSource;
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation, Verifier};
use keyroll_core::{
    Algorithm, BoxFuture, Clock, KeyCache, KeyCacheConfig, KeyCacheError, KeyFingerprint,
    KeyLookup, KeyRef, KeySource, KeyVersion, LoadedKeys, LocalKey, LocalKeyRing, RotationPolicy,
    SourceError, TokioClock, VerifyingKey,
};

fn cache(source: Arc<CountingSource>, clock: &TokioClock, config: KeyCacheConfig) -> KeyCache {
    KeyCache::builder_arc(source)
        .config(config)
        .clock(Arc::new(clock.clone()))
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_thousand_cold_lookups_make_one_source_call() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::with_delay(Duration::from_millis(50)));
    source.add("k1", &clock);
    let cache = cache(Arc::clone(&source), &clock, KeyCacheConfig::default());

    let lookups = (0..1000).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.find(KeyRef::Kid("k1")).await })
    });
    for lookup in futures_util::future::join_all(lookups).await {
        assert!(matches!(lookup.unwrap().unwrap(), KeyLookup::Valid(v) if v.kid == "k1"));
    }
    assert_eq!(source.loads(), 1);
    assert!(cache.is_ready());
}

#[tokio::test(start_paused = true)]
async fn unknown_kid_flood_costs_at_most_one_refresh_per_cooldown() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    let config = KeyCacheConfig::default();
    let cooldown = config.unknown_kid_cooldown;
    let cache = cache(Arc::clone(&source), &clock, config);
    cache.ready().await.unwrap();
    assert_eq!(source.loads(), 1);

    for i in 0..10_000 {
        let kid = format!("random-{i}-{}", fastrand::u64(..));
        assert!(matches!(
            cache.find(KeyRef::Kid(&kid)).await.unwrap(),
            KeyLookup::Unknown
        ));
    }
    assert!(source.loads() <= 2, "{} loads", source.loads());
    assert_eq!(cache.metrics().kid_misses, 10_000);

    // A rotation adds k2; within the cooldown it may not be seen, after it the first lookup finds it.
    source.add("k2", &clock);
    tokio::time::advance(cooldown).await;
    let before = source.loads();
    assert!(matches!(
        cache.find(KeyRef::Kid("k2")).await.unwrap(),
        KeyLookup::Valid(_)
    ));
    assert_eq!(source.loads(), before + 1);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_does_not_find_a_kid_remembers_it() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    let cache = cache(Arc::clone(&source), &clock, KeyCacheConfig::default());
    cache.ready().await.unwrap();
    assert!(matches!(
        cache.find(KeyRef::Kid("ghost")).await.unwrap(),
        KeyLookup::Unknown
    ));
    let loads = source.loads();
    // After the cooldown the same kid is still answered from the negative cache…
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(matches!(
        cache.find(KeyRef::Kid("ghost")).await.unwrap(),
        KeyLookup::Unknown
    ));
    assert_eq!(source.loads(), loads);
    assert_eq!(cache.metrics().negative_hits, 1);
    // …while a different unknown kid may refresh.
    assert!(matches!(
        cache.find(KeyRef::Kid("other")).await.unwrap(),
        KeyLookup::Unknown
    ));
    assert_eq!(source.loads(), loads + 1);
}

#[tokio::test(start_paused = true)]
async fn outage_serves_last_good_set_until_max_stale_then_recovers() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    let config = KeyCacheConfig::default().max_stale(Duration::from_secs(3600));
    let cache = cache(Arc::clone(&source), &clock, config);
    cache.ready().await.unwrap();

    source.failing.store(true, Ordering::SeqCst);
    // Background refreshes fail for 59 minutes: the last good set is still served.
    tokio::time::sleep(Duration::from_secs(59 * 60)).await;
    assert!(matches!(
        cache.find(KeyRef::Kid("k1")).await.unwrap(),
        KeyLookup::Valid(_)
    ));
    let metrics = cache.metrics();
    // The keys are fresh, so retries keep to about the refresh rate (5 to 7½ minutes apart):
    // they go on, and never come one a second.
    assert!(metrics.load_failures >= 8, "{metrics:?}");
    assert!(metrics.load_failures <= 70, "{metrics:?}");

    // Past max_stale: unavailable, a distinct error with a retry hint.
    tokio::time::sleep(Duration::from_secs(2 * 60)).await;
    let error = cache.find(KeyRef::Kid("k1")).await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    assert!(error.retry_after().is_some());
    assert!(
        std::error::Error::source(&error).is_some(),
        "the refresh error is the source"
    );

    // Recovery: the next background refresh brings it back.
    source.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(matches!(
        cache.find(KeyRef::Kid("k1")).await.unwrap(),
        KeyLookup::Valid(_)
    ));
    assert_eq!(cache.metrics().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn urgent_retries_start_on_time_when_a_routine_retry_would_come_after_max_stale() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    // Refresh every 5 minutes, serve at most 10: urgent from 9 minutes (nine tenths).
    let config = KeyCacheConfig::default()
        .refresh_interval(Duration::from_secs(300))
        .refresh_jitter(0.0)
        .max_stale(Duration::from_secs(600));
    let cache = cache(Arc::clone(&source), &clock, config);
    cache.ready().await.unwrap();
    source.failing.store(true, Ordering::SeqCst);
    // The refresh at 5 minutes fails; its routine retry would come at 10, when the set goes
    // stale. The background task wakes at 9 instead and retries with backoff (1 s, 2 s, …).
    tokio::time::sleep(Duration::from_secs(539)).await;
    assert_eq!(source.loads(), 2, "the first load and the failed refresh");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(source.loads() >= 5, "urgent retries from 9 minutes on");
    // The vault comes back before 10 minutes: the next urgent retry refreshes in time.
    source.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert!(cache.is_ready(), "never stale");
    assert_eq!(cache.metrics().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn never_loaded_is_unavailable() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.failing.store(true, Ordering::SeqCst);
    let cache = cache(Arc::clone(&source), &clock, KeyCacheConfig::default());
    let error = cache.keys().await.unwrap_err();
    assert!(matches!(error, KeyCacheError::Unavailable { .. }));
    assert!(!cache.is_ready());
    assert!(error.to_string().contains("counting source"));
}

#[tokio::test(start_paused = true)]
async fn background_refresh_runs_on_schedule_with_jitter() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    let config = KeyCacheConfig::default().refresh_interval(Duration::from_secs(300));
    let cache = cache(Arc::clone(&source), &clock, config);
    cache.ready().await.unwrap();
    let loaded = tokio::time::Instant::now();
    // The first refresh after a cold load falls anywhere in ±50 % of the interval, so that a
    // fleet started together refreshes apart…
    tokio::time::sleep(Duration::from_secs(149)).await;
    assert_eq!(source.loads(), 1, "no refresh before interval − 50 %");
    while source.loads() < 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let first = loaded.elapsed();
    assert!(
        first <= Duration::from_secs(451),
        "one refresh by interval + 50 %: {first:?}"
    );
    // …and the next ones at the interval ± 10 %.
    while source.loads() < 7 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let gaps = source.gaps();
    for gap in &gaps[1..] {
        assert!(
            *gap >= Duration::from_secs(270) && *gap <= Duration::from_secs(330),
            "{gaps:?}"
        );
    }
    let loads = source.loads();
    drop(cache);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        source.loads(),
        loads,
        "the refresh stops with the last cache handle"
    );
}

#[tokio::test(start_paused = true)]
async fn a_disabled_version_stops_validating_at_refresh_now() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    source.add("k2", &clock);
    let cache = cache(Arc::clone(&source), &clock, KeyCacheConfig::default());
    assert!(matches!(
        cache.find(KeyRef::Kid("k1")).await.unwrap(),
        KeyLookup::Valid(_)
    ));
    source.versions.lock().unwrap()[0].enabled = false;
    cache.refresh_now().await.unwrap();
    assert!(matches!(
        cache.find(KeyRef::Kid("k1")).await.unwrap(),
        KeyLookup::NotValid(_)
    ));
    assert_eq!(cache.validation_set().await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn still_verifies_at_agrees_with_lookup_at_for_the_same_key() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    source.add("k2", &clock);
    let fingerprint = |kid: &str| {
        let jwk = source.keys.lock().unwrap()[kid].public_jwk();
        VerifyingKey::from_jwk(&jwk).unwrap().fingerprint()
    };
    let (k1, k2) = (fingerprint("k1"), fingerprint("k2"));
    let cache = cache(Arc::clone(&source), &clock, KeyCacheConfig::default());
    let agree = |kid: &str, key: &KeyFingerprint| {
        let now = cache.now();
        let valid = matches!(
            cache.lookup_at(KeyRef::Kid(kid), now),
            Ok(Some(KeyLookup::Valid(_)))
        );
        assert_eq!(
            cache.still_verifies_at(kid, Algorithm::ES256, key, now),
            valid,
            "{kid}"
        );
        valid
    };
    // Nothing loaded yet: no version validates.
    assert!(!agree("k1", &k1));
    cache.ready().await.unwrap();
    assert!(agree("k1", &k1));
    assert!(agree("k2", &k2));
    assert!(!agree("unknown", &k1));
    // The kid's version validates, but it is not the key that verified, or not for this
    // algorithm.
    let now = cache.now();
    assert!(!cache.still_verifies_at("k1", Algorithm::ES256, &k2, now));
    assert!(!cache.still_verifies_at("k1", Algorithm::ES384, &k1, now));
    source.disable("k1");
    cache.refresh_now().await.unwrap();
    assert!(!agree("k1", &k1));
    assert!(agree("k2", &k2));
    // Past max_stale with the source down: nothing validates.
    source.failing.store(true, Ordering::SeqCst);
    tokio::time::advance(KeyCacheConfig::default().max_stale + Duration::from_secs(1)).await;
    assert!(!agree("k2", &k2));
}

#[tokio::test(start_paused = true)]
async fn still_verifies_follows_a_kid_to_new_key_material_and_keys_sharing_it() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    let rsa = LocalKey::generate(Algorithm::RS256).unwrap();
    let ec = LocalKey::generate(Algorithm::ES256).unwrap();
    let version =
        |key: &LocalKey| KeyVersion::new("shared", key.public_jwk(), clock.now()).unwrap();
    let fingerprint = |key: &LocalKey| {
        VerifyingKey::from_jwk(&key.public_jwk())
            .unwrap()
            .fingerprint()
    };
    *source.versions.lock().unwrap() = vec![version(&rsa), version(&ec)];
    let cache = cache(Arc::clone(&source), &clock, KeyCacheConfig::default());
    cache.ready().await.unwrap();
    let verifies = |algorithm, key: &LocalKey| {
        cache.still_verifies_at("shared", algorithm, &fingerprint(key), cache.now())
    };
    // Two keys share the kid: each verifies its own algorithm, neither the other's.
    assert!(verifies(Algorithm::RS256, &rsa));
    assert!(verifies(Algorithm::ES256, &ec));
    assert!(!verifies(Algorithm::ES256, &rsa));
    // The EC key leaves: the kid now names only the RSA key.
    *source.versions.lock().unwrap() = vec![version(&rsa)];
    cache.refresh_now().await.unwrap();
    assert!(!verifies(Algorithm::ES256, &ec));
    assert!(verifies(Algorithm::RS256, &rsa));
    // The kid is reused for new material: the old key no longer verifies under it.
    let renewed = LocalKey::generate(Algorithm::RS256).unwrap();
    *source.versions.lock().unwrap() = vec![version(&renewed)];
    cache.refresh_now().await.unwrap();
    assert!(!verifies(Algorithm::RS256, &rsa));
    assert!(verifies(Algorithm::RS256, &renewed));
}

#[tokio::test(start_paused = true)]
async fn the_negative_cache_keeps_its_bound() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    let config = KeyCacheConfig::default().negative_cache(Duration::from_secs(3600), 2);
    let cooldown = config.unknown_kid_cooldown;
    let cache = cache(Arc::clone(&source), &clock, config);
    cache.ready().await.unwrap();
    let unknown = async |kid: &str| {
        assert!(matches!(
            cache.find(KeyRef::Kid(kid)).await.unwrap(),
            KeyLookup::Unknown
        ));
    };
    // Three refreshes miss three kids; the third finds the cache full of live entries and
    // starts over, keeping only itself.
    for kid in ["ghost-1", "ghost-2", "ghost-3"] {
        tokio::time::advance(cooldown).await;
        unknown(kid).await;
    }
    let loads = source.loads();
    assert_eq!(loads, 4);
    tokio::time::advance(cooldown).await;
    unknown("ghost-3").await;
    assert_eq!((source.loads(), cache.metrics().negative_hits), (loads, 1));
    // ghost-1 was let go: past the cooldown it may refresh again.
    unknown("ghost-1").await;
    assert_eq!(source.loads(), loads + 1);
}

#[tokio::test(start_paused = true)]
async fn negative_hits_on_the_sync_path_are_counted_exactly_across_threads() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    let cache = cache(Arc::clone(&source), &clock, KeyCacheConfig::default());
    cache.ready().await.unwrap();
    assert!(matches!(
        cache.find(KeyRef::Kid("ghost")).await.unwrap(),
        KeyLookup::Unknown
    ));
    let now = cache.now();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..1000 {
                    assert!(cache.miss_is_settled_at(KeyRef::Kid("ghost"), now));
                }
            });
        }
    });
    let metrics = cache.metrics();
    assert_eq!((metrics.negative_hits, metrics.kid_misses), (4000, 4001));
    assert_eq!(source.loads(), 2);
}

#[derive(Debug)]
struct PanickingSource;

impl KeySource for PanickingSource {
    fn name(&self) -> String {
        "panicking source".into()
    }
    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        Box::pin(async { panic!("boom") })
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_source_does_not_wedge_the_cache() {
    let cache = KeyCache::builder(PanickingSource)
        .clock(Arc::new(TokioClock::default()))
        .background_refresh(false)
        .build();
    assert!(cache.keys().await.unwrap_err().is_unavailable());
    // The next on-demand load waits out the backoff, then starts afresh.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(
        cache.keys().await.unwrap_err().is_unavailable(),
        "a second load starts afresh"
    );
    assert_eq!(cache.metrics().loads, 2);
}

#[tokio::test(start_paused = true)]
async fn tokens_minted_across_ten_rotations_all_verify() {
    let clock = TokioClock::default();
    let hour = Duration::from_secs(3600);
    let ring = LocalKeyRing::builder(Algorithm::ES256)
        .rotate_every(6 * hour)
        .retain(4)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let config = KeyCacheConfig::default()
        .refresh_interval(Duration::from_secs(300))
        .policy(RotationPolicy::default().propagation(hour));
    let keys = KeyCache::builder(ring)
        .config(config)
        .clock(Arc::new(clock.clone()))
        .build();
    let template = TokenTemplate::new("svc").lifetime(hour);
    let verifier = Verifier::new([Issuer::new(keys.clone(), Validation::new("svc", ["peer"]))]);

    let mut kids = Vec::new();
    let mut tokens = Vec::new();
    // 65 hours in half-hour steps: 10 rotations after the first key, each signing after propagation.
    for _ in 0..=130 {
        let minted = template.mint(&keys, "peer").await.unwrap();
        verifier.verify(&minted.token).await.unwrap();
        if kids.last() != Some(&minted.kid) {
            kids.push(minted.kid.clone());
        }
        tokens.push(minted.token);
        // Each token still verifies half an hour later, whatever rotated meanwhile.
        tokio::time::sleep(hour / 2).await;
        let previous = tokens.last().unwrap();
        verifier.verify(previous).await.unwrap();
    }
    assert_eq!(kids.len(), 11, "{kids:?}");
}

#[tokio::test(start_paused = true)]
async fn a_new_version_validates_at_once_and_signs_after_propagation() {
    let clock = TokioClock::default();
    let hour = Duration::from_secs(3600);
    let ring = Arc::new(
        LocalKeyRing::builder(Algorithm::RS256)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
    );
    let config = KeyCacheConfig::default().policy(RotationPolicy::default().propagation(hour));
    let keys = KeyCache::builder_arc(Arc::clone(&ring) as Arc<dyn KeySource>)
        .config(config)
        .clock(Arc::new(clock.clone()))
        .build();
    let first = keys.active_signer().await.unwrap().version.kid.clone();
    tokio::time::sleep(2 * hour).await;
    let second = ring.rotate_now().unwrap();
    keys.refresh_now().await.unwrap();
    assert_eq!(keys.validation_set().await.unwrap().len(), 2);
    assert_eq!(keys.active_signer().await.unwrap().version.kid, first);
    tokio::time::sleep(hour).await;
    let active = keys.active_signer().await.unwrap();
    assert_eq!(active.version.kid, second);
    let signature = active.signer.sign(b"x").await.unwrap();
    active
        .version
        .verifying_key()
        .verify(Algorithm::RS256, b"x", &signature)
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_max_age_hint_shortens_the_refresh_but_never_below_the_cooldown() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource {
        max_age: Some(Duration::from_secs(10)),
        ..Default::default()
    });
    source.add("k1", &clock);
    let config = KeyCacheConfig::default().refresh_jitter(0.0);
    let slow = cache(Arc::clone(&source), &clock, config);
    slow.ready().await.unwrap();
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(source.loads(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        source.loads(),
        2,
        "refreshed at the 30 s cooldown, not at max-age 10 s"
    );

    // An interval shorter than the cooldown wins over a longer max-age.
    let source = Arc::new(CountingSource {
        max_age: Some(Duration::from_secs(120)),
        ..Default::default()
    });
    source.add("k1", &clock);
    let config = KeyCacheConfig::default()
        .refresh_jitter(0.0)
        .refresh_interval(Duration::from_secs(1));
    let fast = cache(Arc::clone(&source), &clock, config);
    fast.ready().await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(source.loads(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_failing_cold_start_backs_off_instead_of_hammering_the_source() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.failing.store(true, Ordering::SeqCst);
    let cache = KeyCache::builder_arc(Arc::clone(&source) as Arc<dyn KeySource>)
        .clock(Arc::new(clock.clone()))
        .background_refresh(false)
        .build();
    for _ in 0..100 {
        let error = cache.keys().await.unwrap_err();
        assert!(error.is_unavailable());
        assert!(error.retry_after().is_some());
    }
    assert_eq!(
        source.loads(),
        1,
        "requests during the backoff do not reach the source"
    );
    source.failing.store(false, Ordering::SeqCst);
    source.add("k1", &clock);
    tokio::time::advance(Duration::from_secs(2)).await;
    cache.ready().await.unwrap();
    assert_eq!(source.loads(), 2);
}

#[derive(Debug)]
struct HangingSource;

impl KeySource for HangingSource {
    fn name(&self) -> String {
        "hanging source".into()
    }
    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_load_times_out_and_releases_its_waiters() {
    let cache = KeyCache::builder(HangingSource)
        .config(KeyCacheConfig::default().load_timeout(Duration::from_secs(5)))
        .clock(Arc::new(TokioClock::default()))
        .build();
    let error = cache.keys().await.unwrap_err();
    assert!(error.is_unavailable());
    assert!(error.to_string().contains("hanging source"), "{error}");
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(cause.contains("timed out"), "{cause}");
    assert_eq!(cache.metrics().load_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn an_oversized_kid_is_refused_without_a_refresh() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    let keys = cache(Arc::clone(&source), &clock, KeyCacheConfig::default());
    let verifier = Verifier::new([Issuer::new(keys.clone(), Validation::new("svc", ["peer"]))]);
    keys.ready().await.unwrap();
    let header = base64_url(&format!(r#"{{"alg":"ES256","kid":"{}"}}"#, "k".repeat(300)));
    let claims = base64_url(r#"{"iss":"svc","aud":"peer","exp":99999999999}"#);
    let token = format!("{header}.{claims}.c2ln");
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(error.to_string().contains("unknown"), "{error}");
    assert_eq!(source.loads(), 1);
    assert_eq!(keys.metrics().kid_misses, 0);
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}
