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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_version_is_neither_attached_nor_accepted_once_revoke_returns() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use keyroll_core::token::{SelfSigned, TokenCache};

    let ring = Arc::new(LocalKeyRing::in_memory(Algorithm::ES256).unwrap());
    let keys = KeyCache::builder_arc(Arc::clone(&ring) as Arc<dyn KeySource>)
        .config(
            KeyCacheConfig::default().policy(RotationPolicy::default().propagation(Duration::ZERO)),
        )
        .build();
    keys.ready().await.unwrap();
    ring.rotate_now().unwrap();
    let set = keys.refresh_now().await.unwrap();
    assert_eq!(set.versions().len(), 2);
    let doomed = keys.active_signer().await.unwrap().version.kid.clone();
    let tokens = TokenCache::new(SelfSigned::new(keys.clone(), TokenTemplate::new("svc")));
    let verifier = Arc::new(Verifier::new([Issuer::new(
        keys.clone(),
        Validation::new("svc", ["a", "b", "c"]),
    )]));
    let before = tokens.get("a").await.unwrap();
    let before = before.header_value().to_str().unwrap()[7..].to_owned();
    verifier.verify(&before).await.unwrap();

    let revoked = Arc::new(AtomicBool::new(false));
    let checked_after = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (tokens, verifier, revoked, checked_after, doomed) = (
            tokens.clone(),
            Arc::clone(&verifier),
            Arc::clone(&revoked),
            Arc::clone(&checked_after),
            doomed.clone(),
        );
        workers.push(tokio::spawn(async move {
            for round in 0..2_000 {
                let after = revoked.load(Ordering::SeqCst);
                let audience = ["a", "b", "c"][(worker + round) % 3];
                let token = tokens.get(audience).await.unwrap();
                let token = token.header_value().to_str().unwrap()[7..].to_owned();
                let verified = verifier.verify(&token).await;
                if after {
                    // Asked for after revoke returned: never the revoked version, always good.
                    let verified = verified.unwrap();
                    assert_ne!(verified.kid(), doomed);
                    checked_after.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let set = keys.revoke(&doomed).await.unwrap();
    revoked.store(true, Ordering::SeqCst);
    assert!(keys.is_revoked(&doomed));
    // Not published, not accepted, never the signer.
    let now = keys.now();
    let policy = RotationPolicy::default().propagation(Duration::ZERO);
    assert!(
        set.validation_set(&policy, now)
            .iter()
            .all(|v| v.kid != doomed)
    );
    assert!(verifier.verify(&before).await.is_err());
    assert_ne!(keys.active_signer().await.unwrap().version.kid, doomed);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(checked_after.load(Ordering::SeqCst) > 0);
    // A later refresh (the ring still lists it enabled) keeps it revoked.
    let set = keys.refresh_now().await.unwrap();
    assert!(set.versions().iter().any(|v| v.kid == doomed && !v.enabled));
    assert!(verifier.verify(&before).await.is_err());
}
