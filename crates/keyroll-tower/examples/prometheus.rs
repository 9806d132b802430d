//! keyroll's metrics scraped by Prometheus, fully offline: metrics-exporter-prometheus serves
//! them on loopback, a billing app validates tokens that an orders client attaches, and the
//! scrape is printed.
//!
//! ```sh
//! cargo run --example prometheus
//! ```

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation};
use keyroll_core::token::{SelfSigned, TokenCache};
use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
use keyroll_tower::validate::ValidateLayer;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

const ORDERS: &str = "https://orders.example";
const BILLING: &str = "https://billing.example";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The exporter, with buckets for the `_seconds` histograms, on a free loopback port.
    let scrape_address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    PrometheusBuilder::new()
        .with_http_listener(scrape_address)
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.001, 0.01, 0.1, 1.0, 10.0],
        )?
        .install()?;
    // Per-request counts are published from keyroll's own counters (no cost per request).
    tokio::spawn(keyroll_core::metrics::publish_every(Duration::from_secs(5)));

    // One key cache (a vault in production), named in the labels.
    let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256)?)
        .name("orders-keys")
        .build();
    let validate = ValidateLayer::builder()
        .issuer(Issuer::new(
            keys.clone(),
            Validation::new(ORDERS, [BILLING]),
        ))
        .name("billing")
        .build();
    let app = Router::new()
        .route("/invoices", get(|| async { "invoices\n" }))
        .layer(validate);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let billing = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The orders side: tokens from the same key cache, cached per audience.
    let tokens = TokenCache::builder(SelfSigned::new(keys, TokenTemplate::new(ORDERS)))
        .name("orders-to-billing")
        .build();
    let client = reqwest::Client::new();
    let url = format!("http://{billing}/invoices");
    for _ in 0..5 {
        let token = tokens.get(BILLING).await?;
        let response = client
            .get(&url)
            .header(http::header::AUTHORIZATION, token.header_value().clone())
            .send()
            .await?;
        assert_eq!(response.status(), http::StatusCode::OK);
    }
    let refused = client.get(&url).send().await?;
    assert_eq!(refused.status(), http::StatusCode::UNAUTHORIZED);

    keyroll_core::metrics::publish(); // or wait for the next `publish_every` round
    let scrape = client
        .get(format!("http://{scrape_address}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for line in scrape.lines().filter(|line| line.starts_with("keyroll_")) {
        println!("{line}");
    }
    Ok(())
}
