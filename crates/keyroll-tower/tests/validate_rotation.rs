//! Key rotation, unknown-kid floods, unavailable keys, and the verified-token cache.
#![allow(clippy::unwrap_used)]

mod validate_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use http::StatusCode;
use keyroll_core::jwt::{Issuer, Validation};
use keyroll_core::{
    Algorithm, Clock, KeyCache, KeyCacheConfig, KeySource, LocalKey, TokioClock, unix_seconds,
};
use keyroll_tower::validate::{TokenCacheConfig, ValidateLayer};
use validate_support::*;

#[tokio::test]
async fn a_freshly_rotated_key_is_accepted_on_its_first_request() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.bearer(&fixture.token("ec")).await.status,
        StatusCode::OK
    );
    assert_eq!(fixture.source.loads(), 1);

    // The vault gets a new version after the cache's last load; a peer signs with it at once.
    fixture.source.add("v2", Algorithm::ES256);
    let answer = fixture.bearer(&fixture.token("v2")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(fixture.source.loads(), 2);
    assert_eq!(fixture.keys.metrics().kid_refreshes, 1);
    // And the next one needs no refresh at all.
    assert_eq!(
        fixture.bearer(&fixture.token("v2")).await.status,
        StatusCode::OK
    );
    assert_eq!(fixture.source.loads(), 2);
}

#[tokio::test]
async fn concurrent_first_requests_with_a_new_key_share_one_refresh() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.bearer(&fixture.token("ec")).await.status,
        StatusCode::OK
    );
    fixture.source.add("v2", Algorithm::ES256);
    let token = fixture.token("v2");
    let answers = join_all((0..50).map(|_| fixture.bearer(&token))).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK));
    assert_eq!(fixture.source.loads(), 2);
}

#[tokio::test]
async fn an_unknown_kid_flood_costs_at_most_one_source_call_per_cooldown() {
    let cooldown = Duration::from_secs(30);
    let fixture = Fixture::new();
    assert_eq!(
        fixture.bearer(&fixture.token("ec")).await.status,
        StatusCode::OK
    );
    let attacker = LocalKey::generate(Algorithm::ES256).unwrap();
    let flood = |round: usize| {
        let claims = fixture.claims();
        (0..300)
            .map(|i| {
                sign(
                    &attacker,
                    &header("ES256", &format!("random-{round}-{i}")),
                    &claims,
                )
            })
            .collect::<Vec<_>>()
    };

    for round in 0..3 {
        let before = fixture.source.loads();
        let tokens = flood(round);
        let answers = join_all(tokens.iter().map(|t| fixture.bearer(t))).await;
        for answer in &answers {
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
            assert_eq!(
                answer.challenge().unwrap(),
                invalid("the token's signing key is unknown")
            );
        }
        // A second wave within the same cooldown: no call at all.
        let answers = join_all(flood(round + 100).iter().map(|t| fixture.bearer(t))).await;
        assert!(answers.iter().all(|a| a.status == StatusCode::UNAUTHORIZED));
        assert_eq!(fixture.source.loads() - before, 1, "round {round}");
        fixture.clock.advance(cooldown);
    }
    assert_eq!(fixture.layer.metrics().rejected_for("unknown_key"), 3 * 600);
}

#[tokio::test]
async fn keys_never_loaded_give_503_then_200_once_the_source_recovers() {
    let fixture = Fixture::new();
    fixture.source.set_failing(true);
    let token = fixture.token("ec");
    let answer = fixture.bearer(&token).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert!(answer.challenge().is_none());
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
    assert_eq!(fixture.layer.metrics().unavailable, 1);
    // Bad input is still 401, not 503: it is refused before any key is needed.
    assert_eq!(
        fixture.bearer("not-a-token").await.status,
        StatusCode::UNAUTHORIZED
    );

    fixture.source.set_failing(false);
    // Within the cache's backoff the source is left alone (still 503)…
    assert_eq!(
        fixture.bearer(&token).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // …and once the retry delay has passed, the next request loads the keys.
    fixture.clock.advance(Duration::from_secs(retry_after));
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn keys_stale_past_max_stale_give_503_then_200_after_recovery() {
    let source = TestSource::new();
    source.add("ec", Algorithm::ES256);
    let clock = TokioClock::starting_at(SystemTime::UNIX_EPOCH + Duration::from_secs(T0));
    let config = KeyCacheConfig::default()
        .refresh_interval(Duration::from_secs(60))
        .backoff(Duration::from_secs(1), Duration::from_secs(5))
        .max_stale(Duration::from_secs(300));
    let keys = KeyCache::builder_arc(Arc::clone(&source) as Arc<dyn KeySource>)
        .clock(Arc::new(clock.clone()) as Arc<dyn Clock>)
        .config(config)
        .build();
    let layer = ValidateLayer::builder()
        .issuer(Issuer::new(keys.clone(), Validation::new(ISS, [AUD])))
        .realm(REALM)
        .build();
    let bearer = |layer: ValidateLayer| {
        let token = sign(
            &source.key("ec"),
            &header("ES256", "ec"),
            &claims_at(unix_seconds(clock.now())),
        );
        async move {
            let request = http::Request::builder()
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap();
            send(&layer, request).await
        }
    };
    assert_eq!(bearer(layer.clone()).await.status, StatusCode::OK);

    // The source goes down; the last good set is served until max_stale…
    source.set_failing(true);
    tokio::time::sleep(Duration::from_secs(240)).await;
    assert_eq!(bearer(layer.clone()).await.status, StatusCode::OK);
    // …then the keys count as unavailable.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let answer = bearer(layer.clone()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers.contains_key("retry-after"));

    // The source recovers: the background refresh (backoff ≤ 5 s) picks it up.
    source.set_failing(false);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(bearer(layer.clone()).await.status, StatusCode::OK);
    assert_eq!(layer.metrics().unavailable, 1);
}

fn cached_fixture() -> Fixture {
    Fixture::with(|b| b.token_cache(TokenCacheConfig::new(1000, Duration::from_secs(3600))))
}

#[tokio::test]
async fn token_cache_hits_skip_verification() {
    let fixture = cached_fixture();
    let token = fixture.token("rsa");
    for _ in 0..5 {
        let answer = fixture.bearer(&token).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "orders");
    }
    let metrics = fixture.layer.metrics();
    assert_eq!((metrics.accepted, metrics.cache_hits), (5, 4));
    // A different token (even for the same subject) is verified on its own.
    let mut claims = fixture.claims();
    claims["jti"] = "another".into();
    let other = sign(&fixture.source.key("rsa"), &header("RS256", "rsa"), &claims);
    assert_eq!(fixture.bearer(&other).await.status, StatusCode::OK);
    assert_eq!(fixture.layer.metrics().cache_hits, 4);
    // A cached token with a changed signature is not a hit.
    let mut tampered = token.clone().into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'x' { b'y' } else { b'x' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        fixture.bearer(&tampered).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(fixture.layer.metrics().cache_hits, 4);
}

#[tokio::test]
async fn token_cache_rechecks_exp_on_every_hit() {
    let fixture = cached_fixture();
    let mut claims = fixture.claims();
    claims["exp"] = (fixture.now() + 120).into();
    let token = sign(&fixture.source.key("ec"), &header("ES256", "ec"), &claims);
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    assert_eq!(fixture.layer.metrics().cache_hits, 1);
    // Past exp + leeway on the issuer's clock (the cache entry itself would live an hour).
    fixture.clock.advance(Duration::from_secs(181));
    let answer = fixture.bearer(&token).await;
    assert_eq!(
        answer.challenge().unwrap(),
        invalid("the token has expired")
    );
    assert_eq!(fixture.layer.metrics().cache_hits, 1);
}

#[tokio::test]
async fn token_cache_does_not_serve_tokens_whose_key_left_the_set() {
    let fixture = cached_fixture();
    let token = fixture.token("ec");
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    fixture.source.remove("ec");
    fixture.keys.refresh_now().await.unwrap();
    let answer = fixture.bearer(&token).await;
    assert_eq!(
        answer.challenge().unwrap(),
        invalid("the token's signing key is unknown")
    );
    assert_eq!(fixture.layer.metrics().cache_hits, 0);

    // A disabled version is not served from the cache either.
    let token = fixture.token("rsa");
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    fixture.source.edit("rsa", |v| v.with_enabled(false));
    fixture.keys.refresh_now().await.unwrap();
    let answer = fixture.bearer(&token).await;
    assert_eq!(
        answer.challenge().unwrap(),
        invalid("the token's signing key is disabled or expired")
    );
    assert_eq!(fixture.layer.metrics().cache_hits, 0);
}

#[tokio::test]
async fn token_cache_does_not_serve_tokens_whose_kid_names_another_key_now() {
    let fixture = cached_fixture();
    let hits = || fixture.layer.metrics().cache_hits;
    // The kid is reused for new key material: the old key's token is checked in full again.
    let token = fixture.token("ec");
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    assert_eq!(hits(), 1);
    fixture.source.remove("ec");
    fixture.source.add("ec", Algorithm::ES256);
    fixture.keys.refresh_now().await.unwrap();
    let answer = fixture.bearer(&token).await;
    assert_eq!(
        answer.challenge().unwrap(),
        invalid("the token's signature is invalid")
    );
    assert_eq!(hits(), 1);
    // A token of the new key is cached as usual.
    let renewed = fixture.token("ec");
    assert_eq!(fixture.bearer(&renewed).await.status, StatusCode::OK);
    assert_eq!(fixture.bearer(&renewed).await.status, StatusCode::OK);
    assert_eq!(hits(), 2);

    // An RSA and an EC key share a kid (RFC 7517 allows it); the EC key's token is cached,
    // then the EC key leaves while the RSA key stays.
    let rsa = fixture.source.key("rsa");
    let ec = Arc::new(LocalKey::generate(Algorithm::ES256).unwrap());
    fixture.source.add_key("rsa", Arc::clone(&ec), |v| v);
    fixture.keys.refresh_now().await.unwrap();
    let token = sign(&ec, &header("ES256", "rsa"), &fixture.claims());
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    assert_eq!(hits(), 3);
    fixture.source.remove("rsa");
    fixture.source.add_key("rsa", rsa, |v| v);
    fixture.keys.refresh_now().await.unwrap();
    let answer = fixture.bearer(&token).await;
    assert_eq!(
        answer.challenge().unwrap(),
        invalid("the token's algorithm does not match its key")
    );
    assert_eq!(hits(), 3);
    // The RSA key's own tokens still verify.
    assert_eq!(
        fixture.bearer(&fixture.token("rsa")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn token_cache_does_not_serve_when_keys_are_stale() {
    let fixture =
        Fixture::with(|b| b.token_cache(TokenCacheConfig::new(10, Duration::from_secs(86_400))));
    // max_stale is 24 h by default; let the set go stale with the source down.
    let token = {
        let mut claims = fixture.claims();
        claims["exp"] = (fixture.now() + 200_000).into();
        sign(&fixture.source.key("ec"), &header("ES256", "ec"), &claims)
    };
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    fixture.source.set_failing(true);
    fixture.clock.advance(Duration::from_secs(25 * 3600));
    let answer = fixture.bearer(&token).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fixture.layer.metrics().cache_hits, 0);
}

#[tokio::test]
async fn token_cache_honours_the_issuers_max_age() {
    let fixture = Fixture::new();
    let layer = ValidateLayer::builder()
        .issuer(Issuer::new(
            fixture.keys.clone(),
            Validation::new(ISS, [AUD])
                .max_age(Duration::from_secs(60))
                .leeway(Duration::from_secs(10)),
        ))
        .realm(REALM)
        .token_cache(TokenCacheConfig::new(1000, Duration::from_secs(3600)))
        .build();
    let request = |token: &str| {
        http::Request::builder()
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(())
            .unwrap()
    };
    // Issued now, expires in an hour: the cache would keep it an hour by exp alone.
    let token = fixture.token("ec");
    assert_eq!(send(&layer, request(&token)).await.status, StatusCode::OK);
    fixture.clock.advance(Duration::from_secs(70));
    assert_eq!(send(&layer, request(&token)).await.status, StatusCode::OK);
    assert_eq!(layer.metrics().cache_hits, 1);
    // Older than max_age + leeway on the issuer's clock: refused, not served from the cache.
    fixture.clock.advance(Duration::from_secs(1));
    let answer = send(&layer, request(&token)).await;
    assert_eq!(answer.challenge().unwrap(), invalid("the token is too old"));
    assert_eq!(layer.metrics().cache_hits, 1);
}

#[tokio::test]
async fn token_cache_keeps_at_most_its_capacity_dropping_the_oldest_first() {
    let fixture =
        Fixture::with(|b| b.token_cache(TokenCacheConfig::new(3, Duration::from_secs(3600))));
    let tokens: Vec<String> = (0..5)
        .map(|i| {
            let mut claims = fixture.claims();
            claims["jti"] = format!("token-{i}").into();
            sign(&fixture.source.key("ec"), &header("ES256", "ec"), &claims)
        })
        .collect();
    for token in &tokens {
        assert_eq!(fixture.bearer(token).await.status, StatusCode::OK);
    }
    assert_eq!(fixture.layer.metrics().cache_hits, 0);
    // The three newest are cached.
    for token in tokens[2..].iter().rev() {
        assert_eq!(fixture.bearer(token).await.status, StatusCode::OK);
    }
    assert_eq!(fixture.layer.metrics().cache_hits, 3);
    // The two oldest went: verified again, each taking the place of the oldest cached one.
    assert_eq!(fixture.bearer(&tokens[0]).await.status, StatusCode::OK);
    assert_eq!(fixture.layer.metrics().cache_hits, 3);
    assert_eq!(fixture.bearer(&tokens[0]).await.status, StatusCode::OK);
    assert_eq!(fixture.layer.metrics().cache_hits, 4);
    // tokens[2] was the oldest cached: it made room for tokens[0].
    assert_eq!(fixture.bearer(&tokens[2]).await.status, StatusCode::OK);
    assert_eq!(fixture.layer.metrics().cache_hits, 4);
    let metrics = fixture.layer.metrics();
    assert_eq!((metrics.accepted, metrics.rejected_total()), (11, 0));
}

#[tokio::test]
async fn token_cache_entries_live_at_most_max_ttl_on_the_issuers_clock() {
    let fixture =
        Fixture::with(|b| b.token_cache(TokenCacheConfig::new(10, Duration::from_secs(60))));
    // Valid for an hour; the cache keeps it a minute.
    let token = fixture.token("ec");
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    fixture.clock.advance(Duration::from_secs(60));
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    assert_eq!(fixture.layer.metrics().cache_hits, 1);
    // Past the minute: verified again (and cached again), not served from the old entry.
    fixture.clock.advance(Duration::from_secs(1));
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    assert_eq!(fixture.layer.metrics().cache_hits, 1);
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    assert_eq!(fixture.layer.metrics().cache_hits, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_cache_hits_on_many_threads_are_counted_exactly() {
    let fixture = Arc::new(cached_fixture());
    let token: Arc<str> = fixture.token("ec").into();
    assert_eq!(fixture.bearer(&token).await.status, StatusCode::OK);
    let tasks = (0..4).map(|_| {
        let (fixture, token) = (Arc::clone(&fixture), Arc::clone(&token));
        tokio::spawn(async move {
            for _ in 0..250 {
                let answer = fixture.bearer(&token).await;
                assert_eq!(answer.status, StatusCode::OK);
                assert_eq!(answer.body, "orders");
            }
        })
    });
    for task in join_all(tasks).await {
        task.unwrap();
    }
    let metrics = fixture.layer.metrics();
    assert_eq!((metrics.accepted, metrics.cache_hits), (1001, 1000));
}
