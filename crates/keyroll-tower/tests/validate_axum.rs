//! The validator in an axum router (typed and raw claims extractors, scope checks) and under a
//! bare hyper server.
#![allow(clippy::unwrap_used)]

mod validate_support;

use std::convert::Infallible;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode, header::AUTHORIZATION};
use http_body_util::{BodyExt as _, Full};
use keyroll_tower::validate::{
    Claims, ClaimsRejection, RawClaims, RequireScopeLayer, VerifiedClaims,
};
use serde::Deserialize;
use tower::ServiceExt as _;
use validate_support::*;

#[derive(Deserialize)]
struct Caller {
    sub: String,
    tenant: String,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct NeedsRoles {
    roles: Vec<String>,
}

async fn me(Claims(caller): Claims<Caller>) -> String {
    format!("{} of {}", caller.sub, caller.tenant)
}

async fn raw(RawClaims(claims): RawClaims) -> String {
    claims["iss"].as_str().unwrap().to_owned()
}

#[derive(serde::Deserialize)]
struct Wide {
    big: u128,
    nested: Vec<i128>,
}

async fn wide(Claims(wide): Claims<Wide>) -> String {
    format!("{} {}", wide.big, wide.nested[0])
}

async fn raw_reason(claims: VerifiedClaims) -> String {
    match claims.raw() {
        Ok(_) => "accepted".to_owned(),
        Err(rejection) => std::error::Error::source(&rejection)
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

async fn floats(RawClaims(claims): RawClaims) -> String {
    claims["f"].to_string()
}

async fn strict(Claims(_): Claims<NeedsRoles>) -> &'static str {
    "unreachable without roles"
}

async fn in_handler(claims: VerifiedClaims) -> Result<&'static str, ClaimsRejection> {
    claims.require_scope("invoices.write")?;
    Ok("written")
}

async fn optional(claims: Option<Claims<Caller>>) -> String {
    claims.map_or_else(|| "anonymous".to_owned(), |Claims(c)| c.sub)
}

fn router(fixture: &Fixture) -> Router {
    Router::new()
        .route("/me", get(me))
        .route("/raw", get(raw))
        .route("/floats", get(floats))
        .route("/wide", get(wide))
        .route("/raw-reason", get(raw_reason))
        .route("/strict", get(strict))
        .route("/write", get(in_handler))
        .route("/optional", get(optional))
        .route(
            "/admin",
            get(|| async { "admin" }).route_layer(RequireScopeLayer::any(["admin", "Admin.All"])),
        )
        .route(
            "/invoices",
            get(|| async { "invoices" }).route_layer(RequireScopeLayer::all(["invoices.read"])),
        )
        .layer(fixture.layer.clone())
        .route("/public", get(optional))
        .route("/unprotected", get(me))
}

async fn get_path(router: &Router, path: &str, token: Option<&str>) -> Answer {
    let mut request = Request::builder().uri(path);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn token_with(fixture: &Fixture, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut claims = fixture.claims();
    claims["tenant"] = "contoso".into();
    edit(&mut claims);
    sign(&fixture.source.key("ec"), &header("ES256", "ec"), &claims)
}

#[tokio::test]
async fn typed_and_raw_claims_reach_handlers() {
    let fixture = Fixture::new();
    let router = router(&fixture);
    let token = token_with(&fixture, |_| {});
    let answer = get_path(&router, "/me", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "orders of contoso");
    assert_eq!(get_path(&router, "/raw", Some(&token)).await.body, ISS);
    assert_eq!(
        get_path(&router, "/optional", Some(&token)).await.body,
        "orders"
    );
    // Routes behind the layer still refuse requests without a token.
    let answer = get_path(&router, "/me", None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.challenge().unwrap(), bare());
}

#[tokio::test]
async fn claims_of_the_wrong_shape_are_401_without_echo() {
    let fixture = Fixture::new();
    let router = router(&fixture);
    let answer = get_path(&router, "/strict", Some(&token_with(&fixture, |_| {}))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.challenge().unwrap(),
        invalid("the token's claims do not have the expected form")
    );
    assert!(!String::from_utf8_lossy(&answer.body).contains("contoso"));
}

#[tokio::test]
async fn scope_layer_and_scope_helper() {
    let fixture = Fixture::new();
    let router = router(&fixture);
    // The token has `scope: invoices.read`.
    let token = token_with(&fixture, |_| {});
    assert_eq!(
        get_path(&router, "/invoices", Some(&token)).await.status,
        StatusCode::OK
    );

    let answer = get_path(&router, "/admin", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        answer.challenge().unwrap(),
        format!(
            "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", error_description=\"the token lacks a required scope\", scope=\"admin Admin.All\""
        )
    );
    assert_eq!(answer.json()["error"], "insufficient_scope");

    // An Entra app role counts as well (`roles`), and so does `scp`.
    let admin = token_with(&fixture, |c| c["roles"] = serde_json::json!(["Admin.All"]));
    assert_eq!(
        get_path(&router, "/admin", Some(&admin)).await.status,
        StatusCode::OK
    );
    let scp = token_with(&fixture, |c| {
        c.as_object_mut().unwrap().remove("scope");
        c["scp"] = "admin other".into();
    });
    assert_eq!(
        get_path(&router, "/admin", Some(&scp)).await.status,
        StatusCode::OK
    );

    let answer = get_path(&router, "/write", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(
        answer
            .challenge()
            .unwrap()
            .ends_with("scope=\"invoices.write\"")
    );
    let writer = token_with(&fixture, |c| {
        c["scope"] = "invoices.read invoices.write".into()
    });
    assert_eq!(
        get_path(&router, "/write", Some(&writer)).await.body,
        "written"
    );
}

#[tokio::test]
async fn routes_outside_the_layer() {
    let fixture = Fixture::new();
    let router = router(&fixture);
    // Optional claims without the layer: none.
    assert_eq!(get_path(&router, "/public", None).await.body, "anonymous");
    // A required extractor without the layer is a server misconfiguration, said loudly.
    let answer = get_path(&router, "/unprotected", None).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.json()["error"], "server_error");
}

#[tokio::test]
async fn scope_layer_without_claims_is_401() {
    let service = tower::ServiceBuilder::new()
        .layer(RequireScopeLayer::any(["x"]))
        .service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(Full::<Bytes>::default()))
        });
    let response = service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"keyroll\""
    );
}

#[tokio::test]
async fn works_under_a_bare_hyper_server() {
    use hyper::body::Incoming;
    use tower::{Service, ServiceBuilder};

    let fixture = Fixture::new();
    let service = ServiceBuilder::new()
        .layer(fixture.layer.clone())
        .service_fn(|request: Request<Incoming>| async move {
            let sub = request
                .extensions()
                .get::<VerifiedClaims>()
                .unwrap()
                .registered()
                .sub
                .clone();
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                sub.unwrap_or_default(),
            ))))
        });
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let hyper_service = hyper::service::service_fn(move |request| {
            let mut service = service.clone();
            async move { service.ready().await?.call(request).await }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server_io), hyper_service)
            .await
    });
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client_io))
            .await
            .unwrap();
    tokio::spawn(connection);

    let token = fixture.token("rsa");
    for (authorization, status, body) in [
        (Some(format!("Bearer {token}")), StatusCode::OK, "orders"),
        (
            None,
            StatusCode::UNAUTHORIZED,
            r#"{"error":"missing_token","error_description":"a bearer token is required"}"#,
        ),
    ] {
        let mut request = Request::builder().uri("/").header("host", "test");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let response = sender
            .send_request(request.body(Full::<Bytes>::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            body
        );
    }
    drop(sender);
    server.await.unwrap().unwrap();
}

/// A float claim reaches the handler as the very number the token carries (parsed correctly
/// rounded, not best effort): random doubles, written shortest, come back bit for bit.
#[tokio::test]
async fn float_claims_reach_handlers_exactly() {
    let fixture = Fixture::new();
    let router = router(&fixture);
    fastrand::seed(7);
    for _ in 0..20 {
        let sent: Vec<f64> = (0..100)
            .map(|_| f64::from_bits(fastrand::u64(..)))
            .filter(|f| f.is_finite())
            .collect();
        let token = token_with(&fixture, |claims| claims["f"] = serde_json::json!(sent));
        let answer = get_path(&router, "/floats", Some(&token)).await;
        let received: Vec<f64> = serde_json::from_slice(&answer.body).unwrap();
        let bits = |values: &[f64]| values.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&received), bits(&sent));
    }
}

/// An integer beyond 64 bits is never handed over rounded: `RawClaims` refuses it with a
/// reason (a `serde_json::Value` cannot hold it), a typed field takes it exactly.
#[cfg(not(feature = "exact-numbers"))]
#[tokio::test]
async fn wide_integer_claims_are_exact_or_refused_never_rounded() {
    let fixture = Fixture::new();
    let router = router(&fixture);
    let big = "123456789012345678901234567890";
    let payload = |claims: &serde_json::Value| {
        // serde_json::Value cannot carry the literal: splice it into the JSON text.
        claims
            .to_string()
            .replace("\"BIG\"", big)
            .replace("\"NEG\"", "-170141183460469231731687303715884105727")
    };
    let mut claims = fixture.claims();
    claims["tenant"] = "contoso".into();
    claims["big"] = "BIG".into();
    claims["nested"] = serde_json::json!(["NEG"]);
    let ec = fixture.source.key("ec");
    let input = format!(
        "{}.{}",
        b64(header("ES256", "ec").to_string().as_bytes()),
        b64(payload(&claims).as_bytes())
    );
    let token = format!("{input}.{}", b64(&ec.sign_now(input.as_bytes()).unwrap()));
    let answer = get_path(&router, "/raw", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.challenge().unwrap(),
        invalid("the token's claims do not have the expected form")
    );
    // The handler (or its log) learns why, naming the claim.
    let answer = get_path(&router, "/raw-reason", Some(&token)).await;
    let reason = String::from_utf8_lossy(&answer.body);
    assert!(
        reason.contains("claim `big` holds an integer beyond 64 bits"),
        "{reason}"
    );
    // Typed, it is exact.
    let answer = get_path(&router, "/wide", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body,
        format!("{big} -170141183460469231731687303715884105727")
    );
}
