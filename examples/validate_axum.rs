//! Validating inbound bearer tokens in an axum 0.8 app, fully offline.
//!
//! An in-memory key ring stands in for the vault (any `KeySource` works the same: a Key Vault
//! key or certificate, a peer's JWKS, an OIDC issuer). The "orders" service mints a token with
//! it; the "billing" app validates it with `ValidateLayer` and reads typed claims with
//! `Claims<T>`; one route also requires a scope.
//!
//! ```sh
//! cargo run --example validate_axum            # sends a few requests through the app and exits
//! cargo run --example validate_axum -- --serve # serves on 127.0.0.1:3000; prints curl commands
//! ```

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode, header::AUTHORIZATION};
use http_body_util::BodyExt as _;
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation};
use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
use keyroll_tower::validate::{Claims, RequireScopeLayer, TokenCacheConfig, ValidateLayer};
use serde::Deserialize;
use tower::ServiceExt as _;

const ORDERS: &str = "https://orders.example";
const BILLING: &str = "https://billing.example";

/// The claims the billing app needs from a caller's token.
#[derive(Deserialize)]
struct Caller {
    sub: String,
    tenant: String,
}

async fn whoami(Claims(caller): Claims<Caller>) -> String {
    format!("hello {} of tenant {}\n", caller.sub, caller.tenant)
}

async fn invoices(Claims(caller): Claims<Caller>) -> String {
    format!("invoices of tenant {}\n", caller.tenant)
}

fn app(keys: &KeyCache) -> Router {
    let validate = ValidateLayer::builder()
        .issuer(Issuer::new(
            keys.clone(),
            Validation::new(ORDERS, [BILLING]).algorithms([Algorithm::ES256]),
        ))
        .realm("billing")
        .token_cache(TokenCacheConfig::default())
        .build();
    Router::new()
        .route("/whoami", get(whoami))
        .route(
            "/invoices",
            get(invoices).route_layer(RequireScopeLayer::any(["invoices.read"])),
        )
        .layer(validate)
        .route("/health", get(|| async { "ok\n" }))
}

async fn show(
    app: &Router,
    path: &str,
    token: Option<&str>,
) -> Result<StatusCode, Box<dyn std::error::Error>> {
    let mut request = Request::builder().uri(path);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app.clone().oneshot(request.body(Body::empty())?).await?;
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| format!("  WWW-Authenticate: {}\n", v.to_str().unwrap_or("?")))
        .unwrap_or_default();
    let body = response.into_body().collect().await?.to_bytes();
    println!(
        "GET {path} ({}) -> {status}\n{challenge}  {}",
        if token.is_some() { "token" } else { "no token" },
        String::from_utf8_lossy(&body).trim()
    );
    Ok(status)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One key cache over the key source; in a real deployment the issuer and the validator
    // are different services, each with a cache over the same vault key or JWKS.
    let ring = LocalKeyRing::builder(Algorithm::ES256)
        .rotate_every(Duration::from_secs(24 * 3600))
        .build()?;
    let keys = KeyCache::builder(ring).build();
    let app = app(&keys);

    let caller = TokenTemplate::new(ORDERS)
        .subject("orders-worker")
        .claim("tenant", "contoso");
    let plain = caller.mint(&keys, BILLING).await?.token;
    let reader = caller
        .clone()
        .claim("scope", "invoices.read")
        .mint(&keys, BILLING)
        .await?
        .token;

    if std::env::args().any(|arg| arg == "--serve") {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
        println!("listening on http://127.0.0.1:3000");
        println!("curl -i http://127.0.0.1:3000/whoami -H 'Authorization: Bearer {plain}'");
        println!(
            "curl -i http://127.0.0.1:3000/invoices -H 'Authorization: Bearer {plain}'   # 403"
        );
        println!("curl -i http://127.0.0.1:3000/invoices -H 'Authorization: Bearer {reader}'");
        axum::serve(listener, app).await?;
        return Ok(());
    }

    assert_eq!(show(&app, "/whoami", Some(&plain)).await?, StatusCode::OK);
    assert_eq!(show(&app, "/whoami", None).await?, StatusCode::UNAUTHORIZED);
    assert_eq!(
        show(&app, "/whoami", Some("not.a.token")).await?,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        show(&app, "/invoices", Some(&plain)).await?,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        show(&app, "/invoices", Some(&reader)).await?,
        StatusCode::OK
    );
    let wrong_audience = caller.mint(&keys, "https://elsewhere.example").await?.token;
    assert_eq!(
        show(&app, "/whoami", Some(&wrong_audience)).await?,
        StatusCode::UNAUTHORIZED
    );
    Ok(())
}
