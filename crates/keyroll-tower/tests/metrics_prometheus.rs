//! End to end: metrics-exporter-prometheus installed with its HTTP listener on loopback, real
//! requests through `ValidateLayer` on a real hyper server, then the scrape endpoint read over
//! HTTP, with the expected series and values in it (feature `metrics`). The recorder is the
//! process's global one: this file holds one test.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header::AUTHORIZATION};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation};
use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
use keyroll_tower::validate::ValidateLayer;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tower::{ServiceBuilder, ServiceExt as _};

const ISS: &str = "https://orders.example";
const AUD: &str = "https://billing.example";

/// Installs the exporter on a free loopback port (asked of the OS, then given to the exporter,
/// which binds it itself: tried again should another process take it in between).
fn install_exporter() -> SocketAddr {
    for _ in 0..5 {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = free.local_addr().unwrap();
        drop(free);
        let built = PrometheusBuilder::new()
            .with_http_listener(address)
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[0.001, 0.01, 0.1, 1.0, 10.0],
            )
            .unwrap()
            .build();
        if let Ok((recorder, exporter)) = built {
            metrics::set_global_recorder(recorder).unwrap();
            tokio::spawn(exporter);
            return address;
        }
    }
    panic!("no free loopback port for the exporter");
}

/// A server on loopback with `layer` in front of a handler that answers 200.
async fn serve(layer: ValidateLayer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let service = ServiceBuilder::new().layer(layer).service_fn(
        |_request: Request<hyper::body::Incoming>| async move {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        },
    );
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request| service.clone().oneshot(request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// The scrape's samples: `name{labels}` (labels sorted) → value.
fn samples(scrape: &str) -> BTreeMap<String, f64> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let series = match series.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                    labels.sort_unstable();
                    format!("{name}{{{}}}", labels.join(","))
                }
                None => series.to_owned(),
            };
            (series, value.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn the_scrape_endpoint_shows_the_validations_and_the_key_cache() {
    let exporter = install_exporter();
    let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap())
        .name("orders-keys")
        .build();
    let layer = ValidateLayer::builder()
        .issuer(Issuer::new(keys.clone(), Validation::new(ISS, [AUD])))
        .name("billing")
        .build();
    let server = serve(layer).await;
    let token = TokenTemplate::new(ISS)
        .mint(&keys, AUD)
        .await
        .unwrap()
        .token;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let call = |authorization: Option<String>| {
        let client = client.clone();
        async move {
            let mut request = Request::get(format!("http://{server}/invoices"));
            if let Some(value) = authorization {
                request = request.header(AUTHORIZATION, value);
            }
            client
                .request(request.body(Empty::new()).unwrap())
                .await
                .unwrap()
                .status()
        }
    };
    for _ in 0..3 {
        assert_eq!(call(Some(format!("Bearer {token}"))).await, StatusCode::OK);
    }
    assert_eq!(call(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(Some("Bearer not.a.token".into())).await,
        StatusCode::UNAUTHORIZED
    );

    keyroll_core::metrics::publish();
    let response = client
        .request(
            Request::get(format!("http://{exporter}/metrics"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let scrape = response.into_body().collect().await.unwrap().to_bytes();
    let scrape = std::str::from_utf8(&scrape).unwrap();
    assert!(
        scrape.contains("# TYPE keyroll_validations_total counter"),
        "{scrape}"
    );
    assert!(
        scrape.contains("# HELP keyroll_validations_total "),
        "{scrape}"
    );
    assert!(
        scrape.contains("# TYPE keyroll_key_set_age_seconds gauge"),
        "{scrape}"
    );

    let samples = samples(scrape);
    let expected = [
        (
            r#"keyroll_validations_total{outcome="accepted",reason="verified",validator="billing"}"#,
            3.0,
        ),
        (
            r#"keyroll_validations_total{outcome="rejected",reason="missing_token",validator="billing"}"#,
            1.0,
        ),
        (
            r#"keyroll_validations_total{outcome="rejected",reason="malformed",validator="billing"}"#,
            1.0,
        ),
        (
            r#"keyroll_validations_total{outcome="rejected",reason="bad_signature",validator="billing"}"#,
            0.0,
        ),
        (
            r#"keyroll_key_loads_total{outcome="ok",source="orders-keys"}"#,
            1.0,
        ),
        (
            r#"keyroll_key_load_duration_seconds_count{source="orders-keys"}"#,
            1.0,
        ),
        (
            r#"keyroll_key_signs_total{outcome="ok",source="orders-keys"}"#,
            1.0,
        ),
        (
            r#"keyroll_key_sign_duration_seconds_count{source="orders-keys"}"#,
            1.0,
        ),
        (r#"keyroll_key_set_versions{source="orders-keys"}"#, 1.0),
        (r#"keyroll_key_set_stale{source="orders-keys"}"#, 0.0),
        (r#"keyroll_key_set_unavailable{source="orders-keys"}"#, 0.0),
        (r#"keyroll_key_kid_misses_total{source="orders-keys"}"#, 0.0),
    ];
    for (series, value) in expected {
        assert_eq!(samples.get(series), Some(&value), "{series} in\n{scrape}");
    }
    assert!(
        samples.contains_key(r#"keyroll_key_set_age_seconds{source="orders-keys"}"#),
        "{scrape}"
    );
}
