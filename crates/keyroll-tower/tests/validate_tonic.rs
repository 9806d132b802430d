//! `ValidateLayer` in front of a gRPC service written with tonic's body type: accepted calls
//! reach the service with their claims, refused ones get the HTTP status gRPC clients map to
//! `UNAUTHENTICATED` (401) or `UNAVAILABLE` (503).
#![allow(clippy::unwrap_used)]

mod validate_support;

use std::convert::Infallible;

use http::{Request, Response, StatusCode, header::AUTHORIZATION};
use http_body_util::BodyExt as _;
use keyroll_tower::validate::VerifiedClaims;
use tower::{ServiceBuilder, ServiceExt as _};
use validate_support::*;

/// A unary gRPC handler's shape: `http::Request<tonic::body::Body>` in, the same body type out.
async fn grpc_handler(
    request: Request<tonic::body::Body>,
) -> Result<Response<tonic::body::Body>, Infallible> {
    let subject = request
        .extensions()
        .get::<VerifiedClaims>()
        .and_then(|claims| claims.registered().sub.clone())
        .unwrap_or_default();
    let response = Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", "0")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(subject),
        )))
        .unwrap();
    Ok(response)
}

fn grpc_request(authorization: Option<String>) -> Request<tonic::body::Body> {
    let mut request =
        Request::post("/billing.Invoices/List").header("content-type", "application/grpc");
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    request.body(tonic::body::Body::empty()).unwrap()
}

#[tokio::test]
async fn tonic_services_are_guarded() {
    let fixture = Fixture::new();
    let service = ServiceBuilder::new()
        .layer(fixture.layer.clone())
        .service(tower::service_fn(grpc_handler));

    let token = fixture.token("ec");
    let response = service
        .clone()
        .oneshot(grpc_request(Some(format!("Bearer {token}"))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "0");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body,
        "orders".as_bytes(),
        "the handler saw the verified claims (sub)"
    );

    let refused = service.clone().oneshot(grpc_request(None)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=")
    );

    fixture.source.set_failing(true);
    fixture.keys.refresh_now().await.unwrap_err();
    fixture
        .clock
        .advance(std::time::Duration::from_secs(25 * 3600));
    // A fresh token (an expired one would be refused first, with a 401).
    let token = fixture.token("ec");
    let unavailable = service
        .oneshot(grpc_request(Some(format!("Bearer {token}"))))
        .await
        .unwrap();
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
}
