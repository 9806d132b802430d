//! The first request, on a cold cache, against the emulator over HTTPS (in process): the
//! round trips to Entra ID and Key Vault before the first answer, and its latency against a
//! warm request through the same layer.
//!
//! - validator: a new `ValidateLayer` over a new key cache of a Key Vault key (a fresh
//!   credential too), the first inbound request carrying a token the vault signed;
//! - issuer: a new `IssueLayer` signing in the vault with a new key cache and credential, the
//!   first outbound request.
//!
//! `RUNS` (default 15) cold starts each; medians.

// A benchmark may panic on setup failures: they are not library code.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use keyroll_azure::{
    KeyVaultKeys, client_options_with_transport, credential_options_with_transport,
};
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation};
use keyroll_core::{KeyCache, KeyCacheConfig, RotationPolicy};
use keyroll_emulator::{EmulatorHandle, KeySpec, KeyVersionOptions};
use keyroll_tower::issue::{AudiencePolicy, IssueLayer, SelfSigned};
use keyroll_tower::validate::ValidateLayer;
use tower::{Layer as _, ServiceExt as _};

const VAULT: &str = "bench";
const KEY: &str = "signing";
const ISS: &str = "https://orders.example";
const AUD: &str = "https://billing.example";
const CLIENT_ID: &str = "keyroll-bench";
const CLIENT_SECRET: &str = "keyroll-bench-secret";

/// A key cache of the vault key through a fresh credential: nothing cached anywhere.
fn cold_keys(emu: &EmulatorHandle) -> KeyCache {
    let options = ClientSecretCredentialOptions {
        client_options: credential_options_with_transport(
            emu.http_client(),
            emu.authority_host().as_str(),
        ),
    };
    let credential = ClientSecretCredential::new(
        emu.tenant_id(),
        CLIENT_ID.to_owned(),
        CLIENT_SECRET.to_owned().into(),
        Some(options),
    )
    .unwrap();
    let source = KeyVaultKeys::builder(emu.vault_url(VAULT).as_str(), KEY, credential)
        .client_options(client_options_with_transport(emu.http_client()))
        .build()
        .unwrap();
    // The key version is older than the propagation window, so it signs at once.
    let policy = RotationPolicy::default().propagation(Duration::from_secs(60));
    KeyCache::builder(source)
        .config(KeyCacheConfig::default().policy(policy))
        .build()
}

/// The emulator's per-operation request counts that grew since `before`.
fn round_trips(emu: &EmulatorHandle, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    emu.admin()
        .counters()
        .into_iter()
        .filter_map(|(operation, count)| {
            let grew = count - before.get(&operation).copied().unwrap_or(0);
            (grew > 0).then_some((operation, grew))
        })
        .collect()
}

/// The downstream handler: 200 when the request carries a token, else 400.
async fn handler(request: Request<()>) -> Result<Response<()>, Infallible> {
    let mut response = Response::new(());
    if !request.headers().contains_key(AUTHORIZATION) {
        *response.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(response)
}

struct Run {
    first: Duration,
    warm: Duration,
    round_trips: BTreeMap<String, u64>,
}

/// Sends a first request through a service built on cold caches, then a warm one: their
/// times, and the round trips the first one cost.
async fn first_and_warm<S, B>(
    emu: &EmulatorHandle,
    before: &BTreeMap<String, u64>,
    mut service: S,
    request: impl Fn() -> Request<()>,
) -> Run
where
    S: tower::Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let mut timed = async || {
        let started = Instant::now();
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        started.elapsed()
    };
    let first = timed().await;
    let round_trips = round_trips(emu, before);
    let warm = timed().await;
    Run {
        first,
        warm,
        round_trips,
    }
}

async fn validator_run(emu: &EmulatorHandle, token: &str) -> Run {
    let before = emu.admin().counters();
    let layer = ValidateLayer::new(Issuer::new(cold_keys(emu), Validation::new(ISS, [AUD])));
    let service = layer.layer(tower::service_fn(handler));
    let request = || {
        Request::get("/")
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(())
            .unwrap()
    };
    first_and_warm(emu, &before, service, request).await
}

async fn issuer_run(emu: &EmulatorHandle) -> Run {
    let before = emu.admin().counters();
    let layer = IssueLayer::new(SelfSigned::new(cold_keys(emu), TokenTemplate::new(ISS)))
        .audience(AudiencePolicy::fixed(AUD));
    let service = layer.layer(tower::service_fn(handler));
    let request = || Request::get("https://billing.example/").body(()).unwrap();
    first_and_warm(emu, &before, service, request).await
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn report(side: &str, runs: Vec<Run>) {
    let trips = runs[0].round_trips.clone();
    assert!(
        runs.iter().all(|run| run.round_trips == trips),
        "every cold start makes the same round trips"
    );
    let trips_text = trips
        .iter()
        .map(|(operation, count)| format!("{operation} ×{count}"))
        .collect::<Vec<_>>()
        .join(", ");
    let total: u64 = trips.values().sum();
    let first = median(runs.iter().map(|run| run.first).collect());
    let warm = median(runs.iter().map(|run| run.warm).collect());
    println!(
        "| {side} | {total}: {trips_text} | {:.2} ms | {:.1} µs | {:.0}× |",
        first.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e6,
        first.as_secs_f64() / warm.as_secs_f64()
    );
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let emu = keyroll_emulator::Emulator::builder()
            .client_secret(CLIENT_ID, CLIENT_SECRET)
            .start()
            .await
            .unwrap();
        let created = emu.admin().now() - 86_400;
        emu.admin()
            .create_key_version(
                VAULT,
                KEY,
                KeyVersionOptions::new(KeySpec::RSA_2048).created(created),
            )
            .unwrap();
        let token = TokenTemplate::new(ISS)
            .mint(&cold_keys(&emu), AUD)
            .await
            .unwrap()
            .token;
        // One of each untimed, so the first timed run pays no process-wide set-up (TLS
        // provider, DNS resolver threads).
        validator_run(&emu, &token).await;
        issuer_run(&emu).await;
        let mut validators = Vec::new();
        let mut issuers = Vec::new();
        for _ in 0..runs {
            validators.push(validator_run(&emu, &token).await);
            issuers.push(issuer_run(&emu).await);
        }
        println!("\n## The first request on a cold cache (emulator over HTTPS, {runs} cold starts, medians)");
        println!("| side | round trips before the first answer | first request | warm request | first / warm |");
        println!("|---|---|---:|---:|---:|");
        report("validator (RS256 vault key)", validators);
        report("issuer (RS256, signed in the vault)", issuers);
    });
}
