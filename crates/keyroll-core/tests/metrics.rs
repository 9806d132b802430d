//! The key and token caches' metrics through the `metrics` facade (feature `metrics`), read
//! back from a test recorder: exact counts per name and labels, on tokio's paused time.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

mod common;
mod recording;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{CountingSource, Failing, FlakyRing};
use keyroll_core::jwt::TokenTemplate;
use keyroll_core::metrics::{self as names, publish};
use keyroll_core::token::{StaticToken, Token, TokenCache, TokenCacheConfig, TokenError, from_fn};
use keyroll_core::{
    Algorithm, Clock, KeyCache, KeyCacheConfig, KeyLookup, KeyRef, LocalKeyRing, TokioClock,
};
use recording::{Recorded, Recording};

fn cache(source: &Arc<CountingSource>, name: &str, config: KeyCacheConfig) -> KeyCache {
    KeyCache::builder_arc(Arc::clone(source) as Arc<dyn keyroll_core::KeySource>)
        .name(name)
        .config(config)
        .clock(Arc::new(TokioClock::default()))
        .build()
}

#[tokio::test(start_paused = true)]
async fn key_loads_are_counted_by_outcome() {
    let recording = Recording::start();
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    let keys = cache(&source, "orders", KeyCacheConfig::default());

    keys.ready().await.unwrap();
    source.fail(Failing::default());
    assert!(keys.refresh_now().await.is_err());
    source.fail(Failing {
        status: Some(429),
        retry_after: Some(Duration::from_secs(30)),
    });
    assert!(keys.refresh_now().await.is_err());
    source.recover();
    source.empty.store(true, Ordering::SeqCst);
    assert!(keys.refresh_now().await.is_err(), "empty after a good set");
    source.empty.store(false, Ordering::SeqCst);
    keys.refresh_now().await.unwrap();

    // A load that outlives `load_timeout` is an error too.
    let slow = Arc::new(CountingSource::with_delay(Duration::from_secs(60)));
    slow.add("k1", &clock);
    let timing_out = cache(
        &slow,
        "slow",
        KeyCacheConfig::default().load_timeout(Duration::from_secs(1)),
    );
    assert!(timing_out.ready().await.is_err());

    let recorded = recording.take();
    let loads = |source, outcome| {
        recorded.counter(
            names::KEY_LOADS,
            &[("source", source), ("outcome", outcome)],
        )
    };
    assert_eq!(
        [
            loads("orders", "ok"),
            loads("orders", "error"),
            loads("orders", "throttled"),
            loads("orders", "empty"),
        ],
        [2, 1, 1, 1]
    );
    assert_eq!((loads("slow", "error"), loads("slow", "ok")), (1, 0));
    assert_eq!(keys.metrics().loads, 5);
    assert_eq!(
        recorded.histogram_count(names::KEY_LOAD_DURATION, &[("source", "orders")]),
        5
    );
    assert_eq!(
        recorded.histogram_count(names::KEY_LOAD_DURATION, &[("source", "slow")]),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_source_that_never_had_keys_loads_empty() {
    let recording = Recording::start();
    let source = Arc::new(CountingSource::default());
    let keys = cache(&source, "nothing-yet", KeyCacheConfig::default());
    keys.ready().await.unwrap();
    let recorded = recording.take();
    assert_eq!(
        recorded.counter(
            names::KEY_LOADS,
            &[("source", "nothing-yet"), ("outcome", "empty")]
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn kid_misses_and_negative_hits_are_published_as_increments() {
    let recording = Recording::start();
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    let keys = cache(&source, "peers", KeyCacheConfig::default());
    keys.ready().await.unwrap();

    // A refresh that does not find it, then the negative cache, then the sync path.
    for _ in 0..3 {
        assert!(matches!(
            keys.find(KeyRef::Kid("nope")).await.unwrap(),
            KeyLookup::Unknown
        ));
    }
    assert!(keys.miss_is_settled_at(KeyRef::Kid("nope"), keys.now()));
    // Counted, but not recorded until published.
    let peers = [("source", "peers")];
    assert_eq!(recording.take().counter(names::KEY_KID_MISSES, &peers), 0);
    publish();
    let recorded = recording.take();
    assert_eq!(recorded.counter(names::KEY_KID_MISSES, &peers), 4);
    assert_eq!(recorded.counter(names::KEY_KID_REFRESHES, &peers), 1);
    assert_eq!(recorded.counter(names::KEY_NEGATIVE_CACHE_HITS, &peers), 3);
    let snapshot = keys.metrics();
    assert_eq!(
        (
            snapshot.kid_misses,
            snapshot.kid_refreshes,
            snapshot.negative_hits
        ),
        (4, 1, 3)
    );

    // The next publish records only what was counted since.
    assert!(matches!(
        keys.find(KeyRef::Kid("nope")).await.unwrap(),
        KeyLookup::Unknown
    ));
    publish();
    let recorded = recording.take();
    assert_eq!(recorded.counter(names::KEY_KID_MISSES, &peers), 1);
    assert_eq!(recorded.counter(names::KEY_NEGATIVE_CACHE_HITS, &peers), 1);
    assert_eq!(recorded.counter(names::KEY_KID_REFRESHES, &peers), 0);
}

#[tokio::test(start_paused = true)]
async fn caches_sharing_a_name_add_up_and_a_dropped_one_keeps_its_counts() {
    let recording = Recording::start();
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    let first = cache(&source, "shared", KeyCacheConfig::default());
    let second = cache(&source, "shared", KeyCacheConfig::default());
    for keys in [&first, &second] {
        keys.ready().await.unwrap();
        keys.find(KeyRef::Kid("nope")).await.unwrap();
    }
    publish();
    // One more miss on the first, which is then dropped before any publish.
    first.find(KeyRef::Kid("nope")).await.unwrap();
    drop(first);
    publish();
    let recorded = recording.take();
    let shared = [("source", "shared")];
    assert_eq!(recorded.counter(names::KEY_KID_MISSES, &shared), 3);
    assert_eq!(
        recorded.counter(names::KEY_LOADS, &[("source", "shared"), ("outcome", "ok")]),
        2 + 2,
        "two cold loads and two unknown-kid refreshes"
    );
}

#[tokio::test(start_paused = true)]
async fn gauges_show_age_staleness_and_unavailability() {
    let recording = Recording::start();
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    source.add("k2", &clock);
    let config = KeyCacheConfig::default()
        .refresh_interval(Duration::from_secs(300))
        .refresh_jitter(0.0)
        .max_stale(Duration::from_secs(1200));
    let keys = cache(&source, "vault", config);
    keys.ready().await.unwrap();
    let vault = [("source", "vault")];
    let gauges = |recorded: &Recorded| {
        [
            names::KEY_SET_VERSIONS,
            names::KEY_SET_AGE,
            names::KEY_SET_STALE,
            names::KEY_SET_STALE_SECONDS,
            names::KEY_SET_UNAVAILABLE,
        ]
        .map(|name| recorded.gauge(name, &vault))
    };

    tokio::time::advance(Duration::from_secs(10)).await;
    publish();
    let fresh = recording.take();
    assert_eq!(
        gauges(&fresh),
        [Some(2.0), Some(10.0), Some(0.0), Some(0.0), Some(0.0)]
    );

    // The source goes down; the refresh at 300 s fails and the set is served stale.
    source.fail(Failing::default());
    tokio::time::advance(Duration::from_secs(350)).await;
    common::settle().await;
    assert!(source.loads() >= 2);
    publish();
    let stale = recording.take();
    assert_eq!(
        gauges(&stale),
        [Some(2.0), Some(360.0), Some(1.0), Some(60.0), Some(0.0)]
    );
    assert_eq!(
        stale.gauge(names::KEY_CONSECUTIVE_FAILURES, &vault),
        Some(f64::from(keys.metrics().consecutive_failures))
    );

    // Past max_stale nothing is served.
    tokio::time::advance(Duration::from_secs(900)).await;
    common::settle().await;
    publish();
    let gone = recording.take();
    assert_eq!(gone.gauge(names::KEY_SET_UNAVAILABLE, &vault), Some(1.0));
    assert_eq!(gone.gauge(names::KEY_SET_STALE, &vault), Some(0.0));
    assert_eq!(gone.gauge(names::KEY_SET_AGE, &vault), Some(1260.0));
    assert!(
        gone.counter(
            names::KEY_LOADS,
            &[("source", "vault"), ("outcome", "error")]
        ) >= 1
    );

    // A cache whose first load failed is unavailable; one never asked is not.
    let down = Arc::new(CountingSource::default());
    down.fail(Failing::default());
    let cold = cache(&down, "cold", KeyCacheConfig::default());
    let idle = cache(&down, "idle", KeyCacheConfig::default());
    assert!(cold.ready().await.is_err());
    publish();
    let recorded = recording.take();
    assert_eq!(
        recorded.gauge(names::KEY_SET_UNAVAILABLE, &[("source", "cold")]),
        Some(1.0)
    );
    assert_eq!(
        recorded.gauge(names::KEY_SET_UNAVAILABLE, &[("source", "idle")]),
        Some(0.0)
    );
    assert_eq!(
        recorded.gauge(names::KEY_SET_AGE, &[("source", "cold")]),
        None
    );
    drop(idle);
}

#[tokio::test(start_paused = true)]
async fn signs_are_counted_with_their_outcome() {
    let recording = Recording::start();
    let ring = Arc::new(FlakyRing::new(
        LocalKeyRing::in_memory(Algorithm::ES256).unwrap(),
    ));
    let keys = KeyCache::builder_arc(Arc::clone(&ring) as Arc<dyn keyroll_core::KeySource>)
        .name("sts")
        .clock(Arc::new(TokioClock::default()))
        .build();
    let template = TokenTemplate::new("https://orders");
    template.mint(&keys, "https://billing").await.unwrap();
    ring.down(true);
    // The first failed sign probes the vault with a refresh (which fails too); then signs hold.
    assert!(template.mint(&keys, "https://billing").await.is_err());
    assert!(template.mint(&keys, "https://billing").await.is_err());
    assert_eq!(ring.signs(), 2);

    let recorded = recording.take();
    let signs =
        |outcome| recorded.counter(names::KEY_SIGNS, &[("source", "sts"), ("outcome", outcome)]);
    assert_eq!([signs("ok"), signs("error"), signs("held")], [1, 1, 1]);
    assert_eq!(
        recorded.histogram_count(names::KEY_SIGN_DURATION, &[("source", "sts")]),
        2
    );
    let loads =
        |outcome| recorded.counter(names::KEY_LOADS, &[("source", "sts"), ("outcome", outcome)]);
    assert_eq!((loads("ok"), loads("error")), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn token_fetches_renewals_and_failures_are_counted_per_source() {
    let recording = Recording::start();
    let clock = Arc::new(TokioClock::default());
    let fetch_clock = TokioClock::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let lifetime = Duration::from_secs(1000);
    let tokens = TokenCache::builder(from_fn(move |_audience: String| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let expires_at = fetch_clock.now() + lifetime;
        async move {
            match n {
                0 => Err(TokenError::new("down")),
                1 => Err(TokenError::new("busy")
                    .with_throttling()
                    .with_retry_after(Duration::from_secs(5))),
                _ => Ok(Token::new(format!("t{n}"), expires_at)),
            }
        }
    }))
    .name("billing")
    .config(TokenCacheConfig::default().refresh_jitter(0.0))
    .clock(clock)
    .build();
    assert_eq!(tokens.name(), "billing");

    assert!(tokens.get("api://billing").await.is_err());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(tokens.get("api://billing").await.is_err());
    // During the throttled answer's backoff: refused at once, no call.
    assert!(tokens.get("api://billing").await.is_err());
    tokio::time::advance(Duration::from_secs(400)).await;
    let first = tokens.get("api://billing").await.unwrap();
    // At 80 % of its lifetime the next read asks for a renewal, done in the background.
    tokio::time::advance(Duration::from_secs(900)).await;
    let still = tokens.get("api://billing").await.unwrap();
    assert_eq!(still.header_value(), first.header_value());
    common::settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    publish();

    let recorded = recording.take();
    let billing = [("source", "billing")];
    let fetches = |outcome| {
        recorded.counter(
            names::TOKEN_FETCHES,
            &[("source", "billing"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        [fetches("ok"), fetches("error"), fetches("throttled")],
        [2, 1, 1]
    );
    assert_eq!(recorded.counter(names::TOKEN_RENEWALS, &billing), 1);
    assert_eq!(
        recorded.counter(names::TOKEN_COOLDOWN_REJECTIONS, &billing),
        1
    );
    assert_eq!(
        recorded.histogram_count(names::TOKEN_FETCH_DURATION, &billing),
        4
    );
    assert_eq!(recorded.gauge(names::TOKEN_AUDIENCES, &billing), Some(1.0));
    let snapshot = tokens.metrics();
    assert_eq!(
        (
            snapshot.fetches,
            snapshot.fetch_failures,
            snapshot.refreshes
        ),
        (4, 2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_cache_is_named_after_its_source_by_default() {
    let recording = Recording::start();
    let tokens = TokenCache::new(StaticToken::new("api-key"));
    assert_eq!(tokens.name(), "static");
    tokens.get("https://billing").await.unwrap();
    let ring = LocalKeyRing::in_memory(Algorithm::ES256).unwrap();
    let keys = KeyCache::builder(ring).build();
    assert_eq!(keys.name(), keys.source_name());
    let recorded = recording.take();
    assert_eq!(
        recorded.counter(
            names::TOKEN_FETCHES,
            &[("source", "static"), ("outcome", "ok")]
        ),
        1
    );
}
