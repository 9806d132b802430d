//! Memory: live heap bytes per verified-token-cache entry, per key version held, per cached
//! outbound token and per route in an outbound middleware's origin index, counted by an instrumented global allocator (`stats_alloc`) around filling
//! each structure with many entries (the structure's own growth included), divided by the count.
//! aws-lc allocates a parsed public key with C `malloc`, outside Rust's allocator, so the figure
//! for a key version leaves that part out (the key's JWK, its metadata and keyroll's
//! structures are in).

// A benchmark may panic on setup failures: they are not library code.
#![allow(clippy::unwrap_used)]

use std::alloc::System;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation};
use keyroll_core::token::{AudiencePolicy, Lookup, OutboundTokens, SelfSigned, TokenCache};
use keyroll_core::{Algorithm, KeyCache, LocalKey, LocalKeyRing, StaticKeys};
use keyroll_tower::validate::{TokenCacheConfig, ValidateLayer};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer as _, Service as _, ServiceExt as _};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ISS: &str = "https://orders.example";
const AUD: &str = "https://billing.example";

/// Live heap bytes allocated while `f` ran (allocated − freed, reallocations included).
fn live_bytes_during<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let region = Region::new(GLOBAL);
    let result = f();
    let change = region.change();
    let live = change.bytes_allocated as f64 - change.bytes_deallocated as f64
        + change.bytes_reallocated as f64;
    (result, live)
}

fn verified_token_cache(runtime: &tokio::runtime::Runtime, count: usize) {
    let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap())
        .background_refresh(false)
        .build();
    let template = TokenTemplate::new(ISS);
    let tokens: Vec<HeaderValue> = (0..=count)
        .map(|_| {
            let token = runtime.block_on(template.mint(&keys, AUD)).unwrap().token;
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
        })
        .collect();
    let token_len = tokens[0].len() - "Bearer ".len();
    let layer = ValidateLayer::builder()
        .issuer(Issuer::new(keys.clone(), Validation::new(ISS, [AUD])))
        .token_cache(TokenCacheConfig::new(
            count as u64 * 2,
            Duration::from_secs(300),
        ))
        .build();
    let inner = tower::service_fn(|_: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
    });
    let mut service = layer.layer(inner);
    let mut send = |bearer: &HeaderValue| {
        let request = Request::builder()
            .header(AUTHORIZATION, bearer.clone())
            .body(Body::empty())
            .unwrap();
        runtime.block_on(async {
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            assert!(response.status().is_success());
        });
    };
    // The first request sets up everything shared (the header cache, the cache's tables).
    send(&tokens[count]);
    let ((), live) = live_bytes_during(|| tokens[..count].iter().for_each(&mut send));
    println!(
        "| verified-token cache entry (ES256 token of {token_len} bytes) | {:.0} B |",
        live / count as f64
    );
}

fn key_versions(runtime: &tokio::runtime::Runtime, algorithm: Algorithm, count: usize) {
    let keys: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            let mut jwk =
                serde_json::to_value(LocalKey::generate(algorithm).unwrap().public_jwk()).unwrap();
            jwk["kid"] = format!("key-{i:04}").into();
            jwk["alg"] = algorithm.as_str().into();
            jwk
        })
        .collect();
    let jwks = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap();
    let source = StaticKeys::new().with_jwk_json(&jwks).unwrap();
    // The source holds the parsed set too: measure the cache's own copy, loaded from it.
    let cache = KeyCache::builder(source).background_refresh(false).build();
    let (set, live) = live_bytes_during(|| runtime.block_on(cache.refresh_now()).unwrap());
    assert_eq!(set.versions().len(), count);
    println!(
        "| key version held ({algorithm}, public key parsed) | {:.0} B |",
        live / count as f64
    );
}

fn outbound_tokens(runtime: &tokio::runtime::Runtime, count: usize) {
    let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap())
        .background_refresh(false)
        .build();
    let cache = TokenCache::new(SelfSigned::new(keys, TokenTemplate::new(ISS)));
    let audiences: Vec<Arc<str>> = (0..=count)
        .map(|i| Arc::from(format!("https://service-{i:05}.internal")))
        .collect();
    let first = runtime
        .block_on(cache.fetch(Arc::clone(&audiences[count])))
        .unwrap();
    let token_len = first.header_value().len() - "Bearer ".len();
    let ((), live) = live_bytes_during(|| {
        for audience in &audiences[..count] {
            runtime.block_on(cache.fetch(Arc::clone(audience))).unwrap();
        }
    });
    println!(
        "| cached outbound token (ES256 token of {token_len} bytes) | {:.0} B |",
        live / count as f64
    );
    // The origin index of a middleware over that cache: one route per origin, to its token.
    let tokens = OutboundTokens::new(cache, AudiencePolicy::any_origin());
    let requests: Vec<Request<()>> = audiences[..count]
        .iter()
        .map(|origin| Request::get(format!("{origin}/x")).body(()).unwrap())
        .collect();
    let ((), live) = live_bytes_during(|| {
        for request in &requests {
            assert!(matches!(tokens.lookup(request), Lookup::Cached(_)));
        }
    });
    println!(
        "| outbound route (an origin in `OutboundTokens`' index) | {:.0} B |",
        live / count as f64
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("\n## Memory (live heap bytes per entry)");
    println!("| what | bytes |");
    println!("|---|---:|");
    verified_token_cache(&runtime, 5_000);
    key_versions(&runtime, Algorithm::ES256, 1_000);
    key_versions(&runtime, Algorithm::RS256, 100);
    outbound_tokens(&runtime, 5_000);
}
