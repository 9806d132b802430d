//! The validator's counters through the `metrics` facade (feature `metrics`): exact counts of
//! `keyroll_validations_total` per outcome and reason, read back from a test recorder.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

#[path = "../../keyroll-core/tests/recording/mod.rs"]
mod recording;
mod validate_support;

use http::StatusCode;
use keyroll_core::jwt::{Issuer, Validation};
use keyroll_core::metrics::{self as names, publish};
use std::sync::Arc;

use keyroll_core::{Algorithm, KeyCache, KeySource, LocalKey};
use keyroll_tower::validate::{TokenCacheConfig, ValidateLayer};
use recording::{Recorded, Recording};
use validate_support::*;

fn validations(recorded: &Recorded, validator: &str, outcome: &str, reason: &str) -> u64 {
    recorded.counter(
        names::VALIDATIONS,
        &[
            ("validator", validator),
            ("outcome", outcome),
            ("reason", reason),
        ],
    )
}

#[tokio::test]
async fn validations_are_counted_by_outcome_and_reason() {
    let recording = Recording::start();
    let fixture = Fixture::with(|layer| {
        layer
            .name("billing-api")
            .token_cache(TokenCacheConfig::default())
    });
    assert_eq!(fixture.layer.name(), "billing-api");

    let token = fixture.token("ec");
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK); // from the token cache
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    assert_eq!(fixture.send(None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        fixture.bearer("not-a-token").await.status,
        StatusCode::UNAUTHORIZED
    );
    let key = fixture.source.key("ec");
    let expired = sign(
        &key,
        &header("ES256", "ec"),
        &claims_at(fixture.now() - 3600),
    );
    assert_eq!(
        fixture.bearer(&expired).await.status,
        StatusCode::UNAUTHORIZED
    );
    let stranger = LocalKey::generate(Algorithm::ES256).unwrap();
    let forged = sign(&stranger, &header("ES256", "ec"), &fixture.claims());
    let unknown = sign(&key, &header("ES256", "no-such-kid"), &fixture.claims());
    for _ in 0..2 {
        assert_eq!(
            fixture.bearer(&forged).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            fixture.bearer(&unknown).await.status,
            StatusCode::UNAUTHORIZED
        );
    }

    // Counted per request, recorded at publish; the key loads were recorded as they happened:
    // one cold load and one unknown-kid refresh.
    let before = recording.take();
    assert_eq!(
        validations(&before, "billing-api", "accepted", "verified"),
        0
    );
    assert_eq!(
        before.counter(
            names::KEY_LOADS,
            &[("source", "test source"), ("outcome", "ok")]
        ),
        2
    );
    publish();
    let recorded = recording.take();
    let count = |outcome, reason| validations(&recorded, "billing-api", outcome, reason);
    assert_eq!(count("accepted", "verified"), 1);
    assert_eq!(count("accepted", "cache_hit"), 2);
    assert_eq!(count("rejected", "missing_token"), 1);
    assert_eq!(count("rejected", "malformed"), 1);
    assert_eq!(count("rejected", "expired"), 1);
    assert_eq!(count("rejected", "bad_signature"), 2);
    assert_eq!(count("rejected", "unknown_key"), 2);
    // Every reason has its series from the first publish on, at zero when it never happened.
    assert!(
        recorded
            .value(
                names::VALIDATIONS,
                &[
                    ("validator", "billing-api"),
                    ("outcome", "rejected"),
                    ("reason", "too_large")
                ]
            )
            .is_some()
    );
    assert_eq!(count("rejected", "too_large"), 0);
    assert_eq!(count("unavailable", "keys_unavailable"), 0);
    assert_eq!(
        recorded.gauge(
            names::VALIDATOR_TOKEN_CACHE_ENTRIES,
            &[("validator", "billing-api")]
        ),
        Some(1.0)
    );
    // The snapshot counters agree.
    let snapshot = fixture.layer.metrics();
    assert_eq!((snapshot.accepted, snapshot.cache_hits), (3, 2));
    assert_eq!(snapshot.rejected_total(), 7);
    // The issuer's key cache: two misses, the second answered by the negative cache.
    let source = [("source", "test source")];
    assert_eq!(recorded.counter(names::KEY_KID_MISSES, &source), 2);
    assert_eq!(recorded.counter(names::KEY_NEGATIVE_CACHE_HITS, &source), 1);
}

#[tokio::test]
async fn keys_that_cannot_load_count_as_unavailable_under_the_realm() {
    let recording = Recording::start();
    let fixture = Fixture::new();
    let source = TestSource::new();
    source.set_failing(true);
    let down = KeyCache::builder_arc(source as Arc<dyn KeySource>)
        .name("payments keys")
        .clock(Arc::new(fixture.clock.clone()))
        .background_refresh(false)
        .build();
    let layer = ValidateLayer::builder()
        .issuer(Issuer::new(down, Validation::new(ISS, [AUD])))
        .realm("payments")
        .build();
    assert_eq!(layer.name(), "payments");
    let token = fixture.token("ec");
    let request = http::Request::builder()
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .unwrap();
    assert_eq!(
        send(&layer, request).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    publish();
    let recorded = recording.take();
    assert_eq!(
        validations(&recorded, "payments", "unavailable", "keys_unavailable"),
        1
    );
    assert_eq!(
        validations(&recorded, "payments", "accepted", "verified"),
        0
    );
    assert_eq!(
        recorded.gauge(names::KEY_SET_UNAVAILABLE, &[("source", "payments keys")]),
        Some(1.0)
    );
}
