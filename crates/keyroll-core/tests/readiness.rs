//! Readiness of the key cache and the token cache (`status`, `is_ready`, `start_refresh`,
//! `retry_failed`) through a source's whole life: loading, ready, degraded while it fails,
//! unavailable past `max_stale` (or with no usable token), ready again when it recovers. On
//! tokio's paused time, with the caches' clocks on it.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{CountingSource, Failing, ManualTime, settle};
use keyroll_core::token::{Token, TokenCache, TokenCacheConfig, TokenError, TokenSource, from_fn};
use keyroll_core::{
    CacheState, Clock, KeyCache, KeyCacheConfig, KeyCacheError, KeyRef, TokioClock,
};

const MINUTE: Duration = Duration::from_secs(60);

fn config() -> KeyCacheConfig {
    KeyCacheConfig::default()
        .refresh_interval(5 * MINUTE)
        .refresh_jitter(0.0)
        .max_stale(60 * MINUTE)
}

#[tokio::test(start_paused = true)]
async fn a_key_cache_goes_loading_ready_degraded_unavailable_and_ready_again() {
    let clock = TokioClock::default();
    let start = clock.now();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    let keys = KeyCache::builder_arc(Arc::clone(&source) as _)
        .config(config())
        .clock(Arc::new(clock.clone()))
        .build();

    // Loading: nothing loaded, nothing failed, and nothing started yet.
    let status = keys.status();
    assert_eq!(status.state, CacheState::Loading);
    assert_eq!(
        (status.versions, status.age, status.last_error),
        (0, None, None)
    );
    assert!(!keys.is_ready());
    assert_eq!(source.loads(), 0);

    // A probe starts the cache: the background refresh loads it at once.
    keys.start_refresh();
    settle().await;
    assert_eq!(source.loads(), 1);
    let status = keys.status();
    assert_eq!(status.state, CacheState::Ready);
    assert_eq!(status.versions, 1);
    assert_eq!(status.age, Some(Duration::ZERO));
    assert_eq!(status.unavailable_in, Some(60 * MINUTE));
    assert_eq!(status.consecutive_failures, 0);
    assert!(keys.is_ready());

    // The source fails: the refresh at 5 min keeps the set, and the cache is degraded.
    source.fail(Failing::default());
    tokio::time::sleep(5 * MINUTE + Duration::from_secs(1)).await;
    assert_eq!(source.loads(), 2);
    let status = keys.status();
    assert_eq!(status.state, CacheState::Degraded);
    assert!(status.state.is_serving());
    assert_eq!(status.versions, 1);
    assert_eq!(status.age, Some(5 * MINUTE + Duration::from_secs(1)));
    assert_eq!(status.failing_since, Some(start + 5 * MINUTE));
    assert_eq!(status.stale_for, Some(Duration::from_secs(1)));
    assert_eq!(status.consecutive_failures, 1);
    assert_eq!(
        status.unavailable_in,
        Some(55 * MINUTE - Duration::from_secs(1))
    );
    assert_eq!(
        status.last_error.as_deref(),
        Some("counting source: load failed: HTTP 503")
    );
    assert!(keys.is_ready(), "within max_stale the keys still serve");
    assert!(keys.find(KeyRef::Kid("k1")).await.is_ok());

    // Past max_stale: unavailable, and lookups fail as the validator's 503 does.
    tokio::time::sleep(55 * MINUTE).await;
    let status = keys.status();
    assert_eq!(status.state, CacheState::Unavailable);
    assert!(!status.state.is_serving());
    assert_eq!(status.unavailable_in, None);
    assert_eq!(status.versions, 1, "the last set is still reported");
    assert!(status.consecutive_failures > 1);
    assert_eq!(status.failing_since, Some(start + 5 * MINUTE));
    assert!(!keys.is_ready());
    assert!(matches!(
        keys.lookup_at(KeyRef::Kid("k1"), keys.now()),
        Err(KeyCacheError::Unavailable { .. }) | Ok(None)
    ));

    // The source recovers: probes load it again within one backoff step (the background
    // refresh may get there first), and once it is ready they cost the source nothing.
    source.recover();
    keys.start_refresh();
    settle().await;
    tokio::time::sleep(MINUTE).await;
    keys.start_refresh();
    settle().await;
    let status = keys.status();
    assert_eq!(status.state, CacheState::Ready);
    assert_eq!(
        (status.failing_since, status.stale_for, status.last_error),
        (None, None, None)
    );
    assert_eq!(status.consecutive_failures, 0);
    assert!(keys.is_ready());
    let loads = source.loads();
    keys.start_refresh();
    settle().await;
    assert_eq!(source.loads(), loads);
}

#[tokio::test(start_paused = true)]
async fn a_first_load_that_fails_is_unavailable_and_probes_retry_at_the_backoff_rate() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("k1", &clock);
    source.fail(Failing::default());
    // No background refresh: only the probe (and requests) load.
    let keys = KeyCache::builder_arc(Arc::clone(&source) as _)
        .config(config().backoff(Duration::from_secs(10), Duration::from_secs(10)))
        .clock(Arc::new(clock.clone()))
        .background_refresh(false)
        .build();
    keys.start_refresh();
    settle().await;
    assert_eq!(source.loads(), 1);
    let status = keys.status();
    assert_eq!(status.state, CacheState::Unavailable);
    assert_eq!(status.versions, 0);
    assert_eq!(status.consecutive_failures, 1);
    assert!(status.last_error.unwrap().contains("HTTP 503"));

    // A probe every second for a minute: one load per backoff step (8 to 10 s, jittered).
    for _ in 0..60 {
        keys.start_refresh();
        settle().await;
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let loads = source.loads();
    assert!((6..=8).contains(&loads), "{loads} loads in a minute");
    assert_eq!(keys.status().consecutive_failures as usize, loads);

    source.recover();
    tokio::time::advance(Duration::from_secs(10)).await;
    keys.start_refresh();
    settle().await;
    assert_eq!(keys.status().state, CacheState::Ready);
    assert!(keys.is_ready());
    assert_eq!(source.loads(), loads + 1);
}

#[test]
fn outside_a_runtime_start_refresh_does_nothing_and_status_still_reads() {
    let time = ManualTime::new(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30));
    let source = Arc::new(CountingSource::default());
    let keys = KeyCache::builder_arc(Arc::clone(&source) as _)
        .clock(Arc::new(time.clone()))
        .sleep(Arc::new(time))
        .build();
    keys.start_refresh();
    assert_eq!(source.loads(), 0);
    assert_eq!(keys.status().state, CacheState::Loading);
}

/// A token cache over a source that fails while `failing` is set and counts its calls;
/// tokens live an hour.
struct Tokens {
    cache: TokenCache,
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

fn tokens(clock: &TokioClock) -> Tokens {
    let failing = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (fails, counts, now) = (Arc::clone(&failing), Arc::clone(&calls), clock.clone());
    let source = from_fn(move |audience: String| {
        counts.fetch_add(1, Ordering::SeqCst);
        let failing = fails.load(Ordering::SeqCst);
        let expires = now.now() + 60 * MINUTE;
        async move {
            if failing {
                Err(TokenError::new("the token endpoint answered 503"))
            } else {
                Ok(Token::new(format!("token-for-{audience}"), expires))
            }
        }
    });
    let cache = TokenCache::builder(Arc::new(source) as Arc<dyn TokenSource>)
        .config(TokenCacheConfig::default().refresh_jitter(0.0))
        .clock(Arc::new(clock.clone()))
        .build();
    Tokens {
        cache,
        failing,
        calls,
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_cache_is_degraded_while_tokens_outlive_failing_refreshes_then_unavailable() {
    let clock = TokioClock::default();
    let start = clock.now();
    let Tokens {
        cache,
        failing,
        calls,
    } = tokens(&clock);
    // No audience asked for yet: nothing is failing.
    let status = cache.status();
    assert_eq!(status.state, CacheState::Ready);
    assert_eq!(status.audiences, 0);

    cache.get("api://billing").await.unwrap();
    assert_eq!(cache.status().state, CacheState::Ready);
    assert_eq!(cache.status().audiences, 1);

    // At 80 % of the lifetime the refresh ahead fails: the token still serves.
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(48 * MINUTE).await;
    assert!(cache.get("api://billing").await.is_ok());
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let status = cache.status();
    assert_eq!(status.state, CacheState::Degraded);
    assert_eq!(
        (status.audiences, status.degraded_audiences),
        (1, 1),
        "{status:?}"
    );
    assert_eq!(status.unavailable_audiences, 0);
    assert_eq!(status.failing_since, Some(start + 48 * MINUTE));
    assert_eq!(status.consecutive_failures, 1);
    assert_eq!(
        status.last_error.as_deref(),
        Some("`api://billing`: the token endpoint answered 503")
    );

    // Past the token's end (its expiry less the margin): no usable token, the fetch fails.
    tokio::time::sleep(12 * MINUTE).await;
    let status = cache.status();
    assert_eq!(status.state, CacheState::Unavailable);
    assert_eq!(
        (
            status.audiences,
            status.degraded_audiences,
            status.unavailable_audiences
        ),
        (0, 0, 1)
    );
    assert_eq!(status.stale_for, Some(12 * MINUTE));
    assert!(status.consecutive_failures > 1);

    // An audience that never had a token and fails is unavailable too; the worst error wins.
    assert!(cache.get("api://reports").await.is_err());
    let status = cache.status();
    assert_eq!(status.unavailable_audiences, 2);
    assert_eq!(
        status.last_error.as_deref(),
        Some("`api://reports`: the token endpoint answered 503"),
        "the latest failure among the unavailable audiences"
    );

    // The source recovers; nobody asks for these audiences, but a probe retries them (once
    // their retry point has passed, and once per failure, however often it is called).
    failing.store(false, Ordering::SeqCst);
    tokio::time::advance(2 * MINUTE).await;
    let before = calls.load(Ordering::SeqCst);
    for _ in 0..5 {
        cache.retry_failed();
        settle().await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), before + 2);
    let status = cache.status();
    assert_eq!(status.state, CacheState::Ready);
    assert_eq!(status.audiences, 2);
    assert_eq!(
        (
            status.failing_since,
            status.consecutive_failures,
            status.last_error
        ),
        (None, 0, None)
    );
    // Ready audiences are not fetched again.
    cache.retry_failed();
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), before + 2);
}

#[tokio::test(start_paused = true)]
async fn a_probe_waits_out_a_failed_fetch_s_backoff() {
    let clock = TokioClock::default();
    let Tokens {
        cache,
        failing,
        calls,
    } = tokens(&clock);
    failing.store(true, Ordering::SeqCst);
    assert!(cache.get("api://billing").await.is_err());
    assert_eq!(cache.status().state, CacheState::Unavailable);
    // Within the first backoff step (at least 0.8 s), probes start nothing.
    cache.retry_failed();
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    cache.retry_failed();
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.status().consecutive_failures, 2);
}
