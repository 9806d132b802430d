//! keyroll's main job, fully offline: two services authenticate to each other with a key that
//! lives in (an emulated) Azure Key Vault, while an operator rotates it.
//!
//! - `orders` calls `billing` with reqwest through keyroll-reqwest's `IssueMiddleware`: every
//!   call carries a JWT signed *in the
//!   vault* with the certificate's key (the private key never leaves the vault).
//! - `orders` publishes its validation keys as JWKS (`JwksService`), a third endpoint.
//! - `billing` checks every call with `ValidateLayer`, learning orders' keys from that JWKS.
//! - Meanwhile the certificate is rotated four times and an old version is disabled. No call
//!   may fail: the example exits non-zero if one does.
//!
//! ```sh
//! cargo run --example quickstart
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use keyroll::jwt::{Issuer, TokenTemplate, Validation};
use keyroll::token::{AudiencePolicy, SelfSigned};
use keyroll::tower::jwks::{DEFAULT_JWKS_PATH, JwksService};
use keyroll::tower::validate::{ValidateLayer, VerifiedClaims};
use keyroll::{JwksSource, KeyCache, KeyCacheConfig, RotationPolicy};
use keyroll_azure::{
    KeyVaultCertificates, client_options_with_transport, credential_options_with_transport,
};
use keyroll_emulator::{CertificateVersionOptions, EmulatorHandle};
use keyroll_reqwest::IssueMiddleware;
use keyroll_reqwest::reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest::StatusCode;
use tower::BoxError;

const VAULT: &str = "quickstart";
const CERTIFICATE: &str = "orders-sts";
const ISSUER: &str = "https://orders.localhost";
const AUDIENCE: &str = "api://billing";
/// A new version is published this long before it signs (production: about an hour).
const PROPAGATION: Duration = Duration::from_secs(3);
/// How often each service re-reads its keys (production: 5 minutes).
const REFRESH: Duration = Duration::from_secs(1);
/// Lifetime of the tokens orders attaches (production: about an hour).
const TOKEN_LIFETIME: Duration = Duration::from_secs(6);
const RUN_FOR: Duration = Duration::from_secs(30);
/// When the operator creates new certificate versions, and when it disables the first one
/// (long after it stopped signing and its last token expired).
const ROTATIONS: [u64; 4] = [5, 11, 17, 23];
const DISABLE_FIRST_AT: u64 = 20;

#[derive(Default)]
struct Traffic {
    calls: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    by_version: Mutex<BTreeMap<String, u64>>,
}

/// Version names (`v1`, `v2`…) by kid: the certificate's x5t thumbprint.
#[derive(Default)]
struct Labels(Mutex<Vec<String>>);

impl Labels {
    fn add(&self, kid: String) -> String {
        let mut kids = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kids.push(kid);
        format!("v{}", kids.len())
    }
    fn of(&self, kid: &str) -> String {
        let kids = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kids.iter()
            .position(|k| k == kid)
            .map_or_else(|| "?".to_owned(), |i| format!("v{}", i + 1))
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    println!(
        "keyroll quickstart: two services, one vault, a key that rotates under live traffic\n"
    );

    // An offline Key Vault + Entra ID. `orders` reaches the vault with a client secret.
    let emu = keyroll_emulator::Emulator::builder()
        .client_secret("orders", "orders-secret")
        .start()
        .await?;
    let labels = Arc::new(Labels::default());
    let first = emu.admin().create_certificate_version(
        VAULT,
        CERTIFICATE,
        CertificateVersionOptions::new(),
    )?;
    labels.add(first.x5t.clone().unwrap_or_default());

    // ── orders: signs with the vault certificate, publishes its keys ─────────────────────
    let config = KeyCacheConfig::default()
        .refresh_interval(REFRESH)
        .unknown_kid_cooldown(REFRESH)
        .policy(RotationPolicy::default().propagation(PROPAGATION));
    let certificates = KeyVaultCertificates::builder(
        emu.vault_url(VAULT).as_str(),
        CERTIFICATE,
        credential(&emu)?,
    )
    .client_options(client_options_with_transport(emu.http_client()))
    .build()?;
    let orders_keys = KeyCache::builder(certificates)
        .config(config.clone())
        .build();
    orders_keys.ready().await?;
    let orders_origin = serve(
        Router::new().route_service(DEFAULT_JWKS_PATH, JwksService::new(orders_keys.clone())),
    )
    .await?;
    let jwks_url = format!("{}{DEFAULT_JWKS_PATH}", orders_origin.trim_end_matches('/'));

    // ── billing: accepts what orders' published keys verify ──────────────────────────────
    let billing_keys = KeyCache::builder(JwksSource::new(&jwks_url)?)
        .config(config)
        .build();
    let validate = ValidateLayer::builder()
        .issuer(Issuer::new(
            billing_keys.clone(),
            Validation::new(ISSUER, [AUDIENCE]),
        ))
        .realm("billing")
        .build();
    let billing = Router::new()
        .route(
            "/invoices",
            get(|claims: axum::Extension<VerifiedClaims>| async move { claims.kid().to_owned() }),
        )
        .layer(validate.clone());
    let billing_origin = serve(billing).await?.trim_end_matches('/').to_owned();
    let billing_url = format!("{billing_origin}/invoices");

    // ── orders' outbound client: IssueMiddleware attaches a vault-signed token to each call
    let template = TokenTemplate::new(ISSUER)
        .lifetime(TOKEN_LIFETIME)
        .include_x5t(true);
    let issue = IssueMiddleware::new(SelfSigned::new(orders_keys.clone(), template))
        .audience(AudiencePolicy::origin().map(&billing_origin, AUDIENCE));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(issue)
        .build();

    println!(
        "  vault      {}  (certificate `{CERTIFICATE}`, its key never leaves the vault)",
        emu.vault_url(VAULT)
    );
    println!(
        "  orders  →  billing  {billing_url}   IssueMiddleware: a JWT signed in the vault on every call"
    );
    println!("  orders' JWKS        {jwks_url}   JwksService: what billing validates against");
    println!(
        "  rollover window     {}s: a new version is published {}s before it signs",
        PROPAGATION.as_secs(),
        PROPAGATION.as_secs()
    );
    println!(
        "  tokens              live {}s, renewed ahead of expiry; keys re-read every {}s\n",
        TOKEN_LIFETIME.as_secs(),
        REFRESH.as_secs()
    );
    println!(
        "  time   calls  accepted  rejected   signing   published (* = not signing yet)  vault signs"
    );

    // Steady traffic from four workers.
    let traffic = Arc::new(Traffic::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (client, traffic, stop) = (client.clone(), Arc::clone(&traffic), Arc::clone(&stop));
            let (url, labels) = (billing_url.clone(), Arc::clone(&labels));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    call(&client, &url, &traffic, &labels).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();

    // The operator's script, and a live view once a second.
    let start = Instant::now();
    let (mut rotations, mut disabled) = (ROTATIONS.iter().peekable(), false);
    for second in 1..=RUN_FOR.as_secs() {
        tokio::time::sleep_until((start + Duration::from_secs(second)).into()).await;
        if rotations.next_if(|&&at| at == second).is_some() {
            let version = emu.admin().create_certificate_version(
                VAULT,
                CERTIFICATE,
                CertificateVersionOptions::new(),
            )?;
            let label = labels.add(version.x5t.unwrap_or_default());
            println!(
                "  ── {second:>2}s  operator rotates the certificate: {label} is created; published at the next refresh, signs {}s after creation",
                PROPAGATION.as_secs()
            );
        }
        if second == DISABLE_FIRST_AT && !disabled {
            emu.admin()
                .set_version_enabled(VAULT, CERTIFICATE, &first.version, false);
            disabled = true;
            println!(
                "  ── {second:>2}s  operator disables v1 (it stopped signing long ago; its last token has expired)"
            );
        }
        print_status(second, &traffic, &orders_keys, &labels, &emu).await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await?;
    }

    summarize(&traffic, &labels, &emu, &validate);
    let rejected = traffic.rejected.load(Ordering::Relaxed);
    if rejected > 0 {
        eprintln!("\nFAILED: {rejected} legitimate calls were rejected");
        std::process::exit(1);
    }
    Ok(())
}

fn credential(emu: &EmulatorHandle) -> Result<Arc<ClientSecretCredential>, BoxError> {
    let options = ClientSecretCredentialOptions {
        client_options: credential_options_with_transport(
            emu.http_client(),
            emu.authority_host().as_str(),
        ),
    };
    Ok(ClientSecretCredential::new(
        emu.tenant_id(),
        "orders".into(),
        "orders-secret".to_owned().into(),
        Some(options),
    )?)
}

/// Serves `app` on a loopback port; returns its base URL.
async fn serve(app: Router) -> Result<String, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

async fn call(client: &ClientWithMiddleware, url: &str, traffic: &Traffic, labels: &Labels) {
    traffic.calls.fetch_add(1, Ordering::Relaxed);
    let answer: Result<(StatusCode, String), BoxError> = match client.get(url).send().await {
        Ok(response) => {
            let status = response.status();
            response
                .text()
                .await
                .map(|kid| (status, kid))
                .map_err(Into::into)
        }
        Err(error) => Err(error.into()),
    };
    match answer {
        Ok((StatusCode::OK, kid)) => {
            traffic.accepted.fetch_add(1, Ordering::Relaxed);
            let label = labels.of(&kid);
            *traffic
                .by_version
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(label)
                .or_default() += 1;
        }
        Ok((status, body)) => {
            traffic.rejected.fetch_add(1, Ordering::Relaxed);
            eprintln!("  !! rejected: {status} {body}");
        }
        Err(error) => {
            traffic.rejected.fetch_add(1, Ordering::Relaxed);
            eprintln!("  !! call failed: {error}");
        }
    }
}

async fn print_status(
    second: u64,
    traffic: &Traffic,
    keys: &KeyCache,
    labels: &Labels,
    emu: &EmulatorHandle,
) {
    let signing = match keys.active_signer().await {
        Ok(active) => labels.of(&active.version.kid),
        Err(_) => "-".to_owned(),
    };
    // Versions newer than the signer are marked: published for validation, not signing yet.
    let number = |label: &str| label.trim_start_matches('v').parse::<u32>().unwrap_or(0);
    let published = keys
        .validation_set()
        .await
        .map(|versions| {
            let mut names: Vec<String> = versions.iter().map(|v| labels.of(&v.kid)).collect();
            names.sort_by_key(|name| number(name));
            let marked: Vec<String> = names
                .into_iter()
                .map(|name| {
                    if number(&name) > number(&signing) {
                        name + "*"
                    } else {
                        name
                    }
                })
                .collect();
            marked.join(" ")
        })
        .unwrap_or_default();
    println!(
        "  {second:>3}s  {:>6}  {:>8}  {:>8}   {signing:>7}   {published:<30}  {:>6}",
        traffic.calls.load(Ordering::Relaxed),
        traffic.accepted.load(Ordering::Relaxed),
        traffic.rejected.load(Ordering::Relaxed),
        emu.admin().counter("keys.sign"),
    );
}

fn summarize(traffic: &Traffic, labels: &Labels, emu: &EmulatorHandle, validate: &ValidateLayer) {
    let calls = traffic.calls.load(Ordering::Relaxed);
    let accepted = traffic.accepted.load(Ordering::Relaxed);
    let rejected = traffic.rejected.load(Ordering::Relaxed);
    let counters = emu.admin().counters();
    let reads: u64 = counters
        .iter()
        .filter(|(op, _)| op.starts_with("certificates.") || op.starts_with("keys.get"))
        .map(|(_, n)| n)
        .sum();
    let versions = labels.0.lock().map(|kids| kids.len()).unwrap_or_default();
    println!("\nSummary");
    println!("  calls made           {calls}");
    println!("  accepted / rejected  {accepted} / {rejected}");
    let by_version = traffic.by_version.lock().unwrap_or_else(|e| e.into_inner());
    let spread: Vec<String> = by_version
        .iter()
        .map(|(label, n)| format!("{label}: {n}"))
        .collect();
    println!("  calls per signing version  {}", spread.join(", "));
    println!("  certificate versions {versions} created, 1 disabled, 0 restarts");
    println!(
        "  vault signatures     {}  (one per token, not one per call: tokens are cached and renewed ahead)",
        counters.get("keys.sign").copied().unwrap_or_default()
    );
    println!(
        "  vault reads          {reads}  (version lists and certificates, every {}s)",
        REFRESH.as_secs()
    );
    let metrics = validate.metrics();
    println!(
        "  billing's validator  {} accepted, {} refused, {} unavailable (503)",
        metrics.accepted,
        metrics.rejected_total(),
        metrics.unavailable
    );
    println!();
    println!(
        "What happened: each new version was published in orders' JWKS (and so trusted by billing)"
    );
    println!(
        "for the {}s rollover window before orders signed with it, so no token ever reached billing",
        PROPAGATION.as_secs()
    );
    println!(
        "signed by a key billing did not know. Disabling v1 removed it from the published set; it was"
    );
    println!("safe because v1 had stopped signing more than one token lifetime earlier.");
}
