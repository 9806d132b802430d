//! `JwksSource` against a JWKS server on loopback.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use keyroll_core::{Algorithm, JwksSource, KeySource, LocalKey};

#[derive(Default)]
struct Server {
    body: Mutex<String>,
    requests: AtomicUsize,
    not_modified: AtomicUsize,
}

async fn jwks(State(server): State<Arc<Server>>, headers: HeaderMap) -> impl IntoResponse {
    server.requests.fetch_add(1, Ordering::SeqCst);
    let body = server.body.lock().unwrap().clone();
    let etag = format!("\"{}\"", body.len());
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        server.not_modified.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag)],
            String::new(),
        )
            .into_response();
    }
    (
        [
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "public, max-age=120".into()),
        ],
        body,
    )
        .into_response()
}

async fn discovery(State(server): State<Arc<Server>>, headers: HeaderMap) -> impl IntoResponse {
    let _ = server;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    axum::Json(
        serde_json::json!({"issuer": format!("http://{host}/tenant/v2.0"), "jwks_uri": format!("http://{host}/keys")}),
    )
}

async fn serve(server: Arc<Server>) -> String {
    let app = axum::Router::new()
        .route("/keys", get(jwks))
        .route(
            "/tenant/v2.0/.well-known/openid-configuration",
            get(discovery),
        )
        .with_state(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

fn jwk_json(kid: &str) -> serde_json::Value {
    let mut jwk =
        serde_json::to_value(LocalKey::generate(Algorithm::ES256).unwrap().public_jwk()).unwrap();
    jwk["kid"] = kid.into();
    jwk
}

#[tokio::test]
async fn not_modified_keeps_the_set_and_a_malformed_key_is_skipped() {
    let server = Arc::new(Server::default());
    let malformed =
        serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "bad", "x": "!!", "y": "AA"});
    let symmetric = serde_json::json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
    *server.body.lock().unwrap() =
        serde_json::json!({"keys": [jwk_json("a"), malformed, symmetric, jwk_json("b")]})
            .to_string();
    let base = serve(Arc::clone(&server)).await;
    let source = JwksSource::new(&format!("{base}/keys")).unwrap();

    let first = source.load().await.unwrap();
    let kids: Vec<_> = first.versions.iter().map(|v| v.kid.as_str()).collect();
    assert_eq!(kids, ["a", "b"]);
    assert_eq!(first.max_age, Some(Duration::from_secs(120)));

    let second = source.load().await.unwrap();
    assert_eq!(server.not_modified.load(Ordering::SeqCst), 1);
    assert_eq!(second.versions.len(), 2);
    assert_eq!(second.versions[0].jwk, first.versions[0].jwk);

    // The set changes: the new content is fetched.
    *server.body.lock().unwrap() = serde_json::json!({"keys": [jwk_json("c")]}).to_string();
    let third = source.load().await.unwrap();
    assert_eq!(third.versions[0].kid, "c");
}

#[tokio::test]
async fn discovery_finds_the_jwks_and_errors_name_the_source() {
    let server = Arc::new(Server::default());
    *server.body.lock().unwrap() = serde_json::json!({"keys": [jwk_json("k")]}).to_string();
    let base = serve(Arc::clone(&server)).await;
    let source = JwksSource::discover(&format!("{base}/tenant/v2.0")).unwrap();
    assert_eq!(source.load().await.unwrap().versions[0].kid, "k");

    let missing = JwksSource::new(&format!("{base}/nowhere")).unwrap();
    let error = missing.load().await.unwrap_err();
    assert_eq!(error.status(), Some(404));
    assert!(error.to_string().contains("/nowhere"), "{error}");

    *server.body.lock().unwrap() = "<html>not json</html>".into();
    let error = JwksSource::new(&format!("{base}/keys"))
        .unwrap()
        .load()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not a JWK set"), "{error}");
}

#[tokio::test]
async fn urls_must_be_https_off_loopback_and_bodies_are_bounded() {
    assert!(JwksSource::new("http://keys.example/jwks.json").is_err());
    assert!(JwksSource::discover("http://login.example/tenant").is_err());
    assert!(JwksSource::new("https://keys.example/jwks.json").is_ok());
    assert!(JwksSource::new("http://127.0.0.1:1/jwks.json").is_ok());
    assert!(JwksSource::new("http://vault.localhost:1/jwks.json").is_ok());

    let server = Arc::new(Server::default());
    *server.body.lock().unwrap() =
        format!("{{\"keys\":[],\"padding\":\"{}\"}}", "x".repeat(2 << 20));
    let base = serve(Arc::clone(&server)).await;
    let error = JwksSource::new(&format!("{base}/keys"))
        .unwrap()
        .load()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("larger than"), "{error}");

    // A discovery document that names another issuer is refused.
    let other = axum::Router::new().route(
        "/evil/.well-known/openid-configuration",
        get(|| async { axum::Json(serde_json::json!({"issuer": "https://login.example/", "jwks_uri": "http://127.0.0.1:1/keys"})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, other).await.unwrap() });
    let error = JwksSource::discover(&format!("http://{address}/evil"))
        .unwrap()
        .load()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("another issuer"), "{error}");
}

/// This machine's address on its outbound interface (not loopback), if it has one: a host
/// that serves plain http here yet breaks the https rule.
fn outbound_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?; // TEST-NET-1: nothing is sent
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn redirects_keep_the_https_rule() {
    // The keys behind the redirect, on plain http off loopback.
    let target = Arc::new(Server::default());
    *target.body.lock().unwrap() = serde_json::json!({"keys": [jwk_json("k")]}).to_string();
    let app = axum::Router::new()
        .route("/keys", get(jwks))
        .with_state(Arc::clone(&target));
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let host = outbound_address().map_or_else(|| "keys.example".to_owned(), |ip| ip.to_string());
    let off_loopback = format!("http://{host}:{port}/keys");

    let to = off_loopback.clone();
    let redirecting = axum::Router::new().route(
        "/keys",
        get(move || {
            let to = to.clone();
            async move { axum::response::Redirect::temporary(&to) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, redirecting).await.unwrap() });
    let url = format!("http://{address}/keys");

    // The default client refuses the redirect before following it.
    let error = JwksSource::new(&url).unwrap().load().await.unwrap_err();
    let chain = format!("{error} {:?}", std::error::Error::source(&error));
    assert!(chain.contains("breaks the https rule"), "{chain}");
    assert_eq!(target.requests.load(Ordering::SeqCst), 0);

    // A client of the user's own, following every redirect: the keys that answer from the
    // plain-http URL are refused all the same.
    if outbound_address().is_some() {
        let error = JwksSource::new(&url)
            .unwrap()
            .with_client(reqwest::Client::new())
            .load()
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("redirected to `{off_loopback}`")),
            "{error}"
        );
        assert_eq!(target.requests.load(Ordering::SeqCst), 1);
    }
    // A redirect that keeps the rule (here loopback to loopback) is followed.
    let server = Arc::new(Server::default());
    *server.body.lock().unwrap() = serde_json::json!({"keys": [jwk_json("k")]}).to_string();
    let base = serve(Arc::clone(&server)).await;
    let keys = format!("{base}/keys");
    let moved = axum::Router::new().route(
        "/moved",
        get(move || {
            let keys = keys.clone();
            async move { axum::response::Redirect::permanent(&keys) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, moved).await.unwrap() });
    let loaded = JwksSource::new(&format!("http://{address}/moved"))
        .unwrap()
        .load()
        .await
        .unwrap();
    assert_eq!(loaded.versions.len(), 1);
}
