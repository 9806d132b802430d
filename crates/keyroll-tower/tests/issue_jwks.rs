//! JwksService: what it serves verifies what the issuer mints; ETag, 304, Cache-Control;
//! identical bytes on replicas; 503; and a peer `JwksSource` follows a rotation over HTTP.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation, Verifier};
use keyroll_core::{
    Algorithm, BoxFuture, JwkSet, JwksSource, KeyCache, KeyCacheConfig, KeySource, LoadedKeys,
    LocalKeyRing, ManualClock, RotationPolicy, SourceError,
};
use keyroll_tower::issue::{SelfSigned, TokenSource};
use keyroll_tower::jwks::{DISCOVERY_PATH, JwksService};
use tower::{Service, ServiceExt};

const ISSUER: &str = "https://orders.internal";

async fn call(service: &JwksService, request: Request<()>) -> (Response<()>, Bytes) {
    let response = service.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (Response::from_parts(parts, ()), body)
}

fn get(path: &str) -> Request<()> {
    Request::get(path).body(()).unwrap()
}

fn keys_over(source: impl KeySource + 'static, clock: &ManualClock) -> KeyCache {
    KeyCache::builder(source)
        .config(
            KeyCacheConfig::default()
                .refresh_interval(Duration::from_secs(600))
                .policy(RotationPolicy::default().propagation(Duration::from_secs(60))),
        )
        .clock(Arc::new(clock.clone()))
        .build()
}

/// An in-memory ES256 ring on a manual clock, and a key cache over it.
fn in_memory_ring() -> (ManualClock, Arc<LocalKeyRing>, KeyCache) {
    let clock = ManualClock::new(t0());
    let ring = Arc::new(
        LocalKeyRing::builder(Algorithm::ES256)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
    );
    let keys = keys_over(Arc::clone(&ring), &clock);
    (clock, ring, keys)
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

#[tokio::test]
async fn the_published_set_verifies_issued_tokens_with_etag_and_cache_control() {
    let (_clock, ring, keys) = in_memory_ring();
    let jwks = JwksService::new(keys.clone());
    let token = SelfSigned::new(keys.clone(), TokenTemplate::new(ISSUER))
        .token("api://billing")
        .await
        .unwrap();

    let (response, body) = call(&jwks, get("/.well-known/jwks.json")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=600"
    );
    let etag = response.headers()[header::ETAG].clone();

    // Verify the token with nothing but the published document.
    let published = JwkSet::parse_lenient(&body).unwrap();
    assert!(published.skipped.is_empty());
    let parts: Vec<&str> = token.secret().split('.').collect();
    let header: serde_json::Value = serde_json::from_slice(&b64(parts[0])).unwrap();
    let (jwk, key) = published
        .keys
        .iter()
        .find(|(jwk, _)| jwk.kid.as_deref() == header["kid"].as_str())
        .unwrap();
    assert_eq!(jwk.alg.as_deref(), Some("ES256"));
    assert_eq!(jwk.key_use.as_deref(), Some("sig"));
    let signing_input = format!("{}.{}", parts[0], parts[1]);
    key.verify(Algorithm::ES256, signing_input.as_bytes(), &b64(parts[2]))
        .unwrap();

    // Same content: 304 with the same ETag, no body. A weak or listed validator matches too.
    for validator in [
        etag.to_str().unwrap().to_owned(),
        format!("W/{}", etag.to_str().unwrap()),
        format!("\"other\", {}", etag.to_str().unwrap()),
    ] {
        let request = Request::get("/.well-known/jwks.json")
            .header(header::IF_NONE_MATCH, validator)
            .body(())
            .unwrap();
        let (response, body) = call(&jwks, request).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[header::ETAG], etag);
        assert!(body.is_empty());
    }
    // HEAD: headers only.
    let head = Request::head("/.well-known/jwks.json").body(()).unwrap();
    let (response, body) = call(&jwks, head).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(response.headers()[header::ETAG], etag);

    // A rotation changes the document and its ETag.
    let stale = Request::get("/.well-known/jwks.json")
        .header(header::IF_NONE_MATCH, etag.clone())
        .body(())
        .unwrap();
    let rotated = ring.rotate_now().unwrap();
    keys.refresh_now().await.unwrap();
    let (response, body) = call(&jwks, stale).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(response.headers()[header::ETAG], etag);
    let kids: Vec<_> = JwkSet::parse_lenient(&body)
        .unwrap()
        .keys
        .into_iter()
        .map(|(jwk, _)| jwk.kid.unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&rotated));
    assert!(kids.windows(2).all(|w| w[0] < w[1]), "sorted by kid");
}

fn b64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn replicas_with_the_same_vault_state_serve_the_same_bytes() {
    let directory = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let ring = || {
        LocalKeyRing::builder(Algorithm::ES256)
            .directory(directory.path())
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap()
    };
    let first = ring();
    first.rotate_now().unwrap();
    first.rotate_now().unwrap();
    let replica_a = JwksService::new(keys_over(first, &clock));
    let replica_b = JwksService::new(keys_over(ring(), &clock));
    let (a, body_a) = call(&replica_a, get("/.well-known/jwks.json")).await;
    let (b, body_b) = call(&replica_b, get("/.well-known/jwks.json")).await;
    assert_eq!(body_a, body_b);
    assert_eq!(a.headers()[header::ETAG], b.headers()[header::ETAG]);
    assert_eq!(JwkSet::parse_lenient(&body_a).unwrap().keys.len(), 2);
}

#[derive(Debug)]
struct Down;

impl KeySource for Down {
    fn name(&self) -> String {
        "down".into()
    }
    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        Box::pin(async {
            Err(SourceError::new("down", "load", "vault unreachable")
                .with_retry_after(Duration::from_secs(7)))
        })
    }
}

#[tokio::test]
async fn routing_and_unavailable_keys() {
    let down = JwksService::new(KeyCache::builder(Down).build());
    let (response, _) = call(&down, get("/.well-known/jwks.json")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "7");

    let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap()).build();
    let jwks = JwksService::new(keys)
        .path("/keys")
        .max_age(Duration::from_secs(42));
    assert_eq!(
        call(&jwks, get("/.well-known/jwks.json")).await.0.status(),
        StatusCode::NOT_FOUND
    );
    // No discovery document unless asked for.
    assert_eq!(
        call(&jwks, get(DISCOVERY_PATH)).await.0.status(),
        StatusCode::NOT_FOUND
    );
    let (response, _) = call(&jwks, get("/keys")).await;
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=42"
    );
    let post = Request::builder()
        .method(Method::POST)
        .uri("/keys")
        .body(())
        .unwrap();
    let (response, _) = call(&jwks, post).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");

    let jwks = jwks
        .openid_configuration("https://orders.internal/")
        .jwks_uri("https://keys.orders.internal/keys");
    let (response, body) = call(&jwks, get(DISCOVERY_PATH)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(document["issuer"], "https://orders.internal/");
    assert_eq!(document["jwks_uri"], "https://keys.orders.internal/keys");
}

/// Serves the JWKS service `make` builds for the server's origin on loopback, recording each
/// response status.
async fn serve(
    make: impl FnOnce(&str) -> JwksService,
    statuses: Arc<Mutex<Vec<StatusCode>>>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let jwks = make(&origin);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (jwks, statuses) = (jwks.clone(), statuses.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let (mut jwks, statuses) = (jwks.clone(), statuses.clone());
                    async move {
                        let response = jwks.call(request).await?;
                        statuses.lock().unwrap().push(response.status());
                        Ok::<Response<Full<Bytes>>, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_jwks_consumer_follows_a_rotation() {
    let (clock, ring, keys) = in_memory_ring();
    let statuses = Arc::new(Mutex::new(Vec::new()));
    // The peer finds the JWKS through our discovery document, as it would an OIDC issuer's.
    let origin = serve(
        |origin| JwksService::new(keys.clone()).openid_configuration(origin),
        statuses.clone(),
    )
    .await;
    let peer_source = JwksSource::discover(&origin).unwrap();
    let peer = KeyCache::builder(peer_source)
        .config(KeyCacheConfig::default().unknown_kid_cooldown(Duration::from_secs(30)))
        .clock(Arc::new(clock.clone()))
        .build();
    let verifier = Verifier::new([Issuer::new(
        peer.clone(),
        Validation::new(ISSUER, ["api://billing"]),
    )]);
    let issuer = SelfSigned::new(keys.clone(), TokenTemplate::new(ISSUER));

    let first = issuer.token("api://billing").await.unwrap();
    let first_kid = verifier
        .verify(first.secret())
        .await
        .unwrap()
        .kid()
        .to_owned();

    // Unchanged: the peer's conditional refresh gets a 304 and keeps the set.
    peer.refresh_now().await.unwrap();
    // (Each load reads the discovery document, then the JWKS.)
    assert_eq!(
        *statuses.lock().unwrap(),
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::NOT_MODIFIED
        ]
    );

    // Rotate; once the new version has propagated it signs, and the peer learns it.
    clock.advance(Duration::from_secs(10));
    let new_kid = ring.rotate_now().unwrap();
    keys.refresh_now().await.unwrap();
    clock.advance(Duration::from_secs(61));
    let second = issuer.token("api://billing").await.unwrap();
    let verified = verifier.verify(second.secret()).await.unwrap();
    assert_eq!(verified.kid(), new_kid);
    assert_ne!(new_kid, first_kid);
    assert_eq!(statuses.lock().unwrap().last(), Some(&StatusCode::OK));
    // The old token still verifies: the old version is still published.
    verifier.verify(first.secret()).await.unwrap();
}

#[tokio::test]
async fn a_revoked_version_leaves_the_published_set_at_once() {
    let (_clock, ring, keys) = in_memory_ring();
    let jwks = JwksService::new(keys.clone());
    keys.ready().await.unwrap();
    ring.rotate_now().unwrap();
    keys.refresh_now().await.unwrap();
    let (_, body) = call(&jwks, get("/.well-known/jwks.json")).await;
    let published: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(published["keys"].as_array().unwrap().len(), 2);
    let doomed = published["keys"][0]["kid"].as_str().unwrap().to_owned();
    keys.revoke(&doomed).await.unwrap();
    let (_, body) = call(&jwks, get("/.well-known/jwks.json")).await;
    let published: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let kids: Vec<&str> = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 1);
    assert!(!kids.contains(&doomed.as_str()));
}
