//! Key lifecycle: what each version signed, retirement while its tokens live, and the local
//! ring keeping a version until its last token expired.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::CountingSource;
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation, Verifier};
use keyroll_core::{
    Algorithm, KeyCache, KeyCacheConfig, KeySource, LocalKeyRing, RotationPolicy, TokioClock,
};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn a_version_disabled_while_its_tokens_live_is_warned_and_counted() {
    let clock = TokioClock::default();
    let source = Arc::new(CountingSource::default());
    source.add("old", &clock);
    let keys = KeyCache::builder_arc(Arc::clone(&source) as Arc<dyn KeySource>)
        .clock(Arc::new(clock.clone()))
        .build();
    let template = TokenTemplate::new("svc").lifetime(HOUR);
    let mut tokens = Vec::new();
    for audience in ["a", "b", "c"] {
        tokens.push(template.mint(&keys, audience).await.unwrap());
    }
    let signed = keys.signed_by("old").unwrap();
    assert_eq!(signed.longest_lifetime, HOUR);
    assert_eq!(signed.last_expiry, tokens[2].expires_at);
    assert_eq!(signed.last_signed, tokens[2].issued_at);
    assert!(keys.signed_by("new").is_none());

    // A rotation done too early: the vault disables `old` while its tokens live.
    source.add("new", &clock);
    source.disable("old");
    keys.refresh_now().await.unwrap();
    let metrics = keys.metrics();
    assert_eq!(
        (metrics.versions_retired_early, metrics.tokens_orphaned),
        (1, 3)
    );
    // A disabled version stops validating all the same: the warning does not overrule it.
    let verifier = Verifier::new([Issuer::new(keys.clone(), Validation::new("svc", ["a"]))]);
    assert!(verifier.verify(&tokens[0].token).await.is_err());

    // Retired after its last token expired: nothing to count.
    let later = template.mint(&keys, "a").await.unwrap();
    assert_eq!(later.kid, "new");
    tokio::time::sleep(HOUR + Duration::from_secs(1)).await;
    source.add("newer", &clock);
    source.disable("new");
    keys.refresh_now().await.unwrap();
    assert_eq!(keys.metrics().versions_retired_early, 1);
    assert_eq!(keys.metrics().tokens_orphaned, 3);
}

#[tokio::test(start_paused = true)]
async fn the_local_ring_keeps_a_version_until_its_last_token_expired() {
    let clock = Arc::new(TokioClock::default());
    let ring = LocalKeyRing::builder(Algorithm::ES256)
        .rotate_every(Duration::from_secs(600))
        .retain(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    let keys = KeyCache::builder(ring)
        .config(
            KeyCacheConfig::default().policy(RotationPolicy::default().propagation(Duration::ZERO)),
        )
        .clock(clock.clone())
        .build();
    let first = TokenTemplate::new("svc")
        .lifetime(HOUR)
        .mint(&keys, "peer")
        .await
        .unwrap();
    let verifier = Verifier::new([Issuer::new(keys.clone(), Validation::new("svc", ["peer"]))]);
    // Rotations every 10 minutes with `retain(1)`: the first version stays while its token
    // lives, the ones that signed nothing go.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(600)).await;
        let set = keys.refresh_now().await.unwrap();
        assert!(set.versions().iter().any(|v| v.kid == first.kid));
        assert!(set.versions().len() <= 2, "{}", set.versions().len());
        verifier.verify(&first.token).await.unwrap();
    }
    // Past its expiry plus the leeway, the next rotation prunes it.
    tokio::time::sleep(Duration::from_secs(1200)).await;
    let set = keys.refresh_now().await.unwrap();
    assert!(set.versions().iter().all(|v| v.kid != first.kid));
    assert_eq!(set.versions().len(), 1);
}
