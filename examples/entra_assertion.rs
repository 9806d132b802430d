//! Entra ID access tokens for outbound calls, with no secret anywhere: the client proves its
//! identity with an RFC 7523 assertion that Key Vault signs with the app's certificate, whose
//! private key never leaves the vault. Fully offline, against the emulator.
//!
//! - `orders` is a confidential client (`orders-app`) whose certificate lives in the vault; it
//!   reaches the vault with its own credential (a managed identity in Azure; a client secret here).
//! - `EntraTokens` gets access tokens for `api://billing` and refreshes them ahead of expiry;
//!   keyroll-reqwest's `IssueMiddleware` attaches them to every call a reqwest client makes.
//! - `billing` is an API registered for v2 tokens (their `aud` is its application id); it
//!   validates them with `ValidateLayer` against Entra ID's keys (OIDC discovery).
//!
//! ```sh
//! cargo run --example entra_assertion
//! ```

use axum::Router;
use axum::routing::get;
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use base64::Engine as _;
use keyroll::jwt::{Issuer, Validation};
use keyroll::token::AudiencePolicy;
use keyroll::tower::validate::{ValidateLayer, VerifiedClaims};
use keyroll::{JwksSource, KeyCache};
use keyroll_azure::{
    EntraTokens, KeyVaultClientAssertion, client_options_with_transport,
    credential_options_with_transport,
};
use keyroll_emulator::{Api, CertificateVersionOptions, TokenVersion};
use keyroll_reqwest::IssueMiddleware;
use keyroll_reqwest::reqwest_middleware::ClientBuilder;
use reqwest::StatusCode;
use tower::BoxError;

const VAULT: &str = "orders";
const CERTIFICATE: &str = "orders-app";
const CLIENT_ID: &str = "orders-app";
const SCOPE: &str = "api://billing/.default";
const AUDIENCE: &str = "api://billing";
/// billing's application id: the `aud` of the v2 tokens Entra issues for it.
const BILLING_APP_ID: &str = "6b1f4e3a-0000-4000-a000-00000000b111";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The emulator: Key Vault, Entra ID with billing's API registration, and a credential for
    // orders' own identity.
    let emu = keyroll_emulator::Emulator::builder()
        .client_secret("orders-identity", "identity-secret")
        .api(
            Api::new(AUDIENCE)
                .app_id(BILLING_APP_ID)
                .access_token_version(TokenVersion::V2),
        )
        .start()
        .await?;
    let tenant = emu.tenant_id().to_owned();
    let authority = emu.authority_host().to_string();

    // The app's certificate is created in the vault and registered with Entra ID (its public
    // part only: that is all an app registration holds).
    let certificate = emu.admin().create_certificate_version(
        VAULT,
        CERTIFICATE,
        CertificateVersionOptions::new(),
    )?;
    let cer = certificate.bundle["cer"].as_str().unwrap_or_default();
    emu.register_client_certificate(
        CLIENT_ID,
        &base64::engine::general_purpose::STANDARD.decode(cer)?,
    )?;
    println!(
        "certificate `{CERTIFICATE}` created in {} (x5t {})",
        emu.vault_url(VAULT),
        certificate.x5t.unwrap_or_default()
    );

    // orders: assertions signed in the vault → Entra tokens → attached to every call.
    let identity = ClientSecretCredential::new(
        &tenant,
        "orders-identity".into(),
        "identity-secret".to_owned().into(),
        Some(ClientSecretCredentialOptions {
            client_options: credential_options_with_transport(emu.http_client(), &authority),
        }),
    )?;
    let assertion =
        KeyVaultClientAssertion::builder(emu.vault_url(VAULT).as_str(), CERTIFICATE, identity)
            .client_options(client_options_with_transport(emu.http_client()))
            .tenant_id(&tenant)
            .client_id(CLIENT_ID)
            .authority_host(&authority)
            .build()?;
    let info = assertion.key_info().await?;
    println!(
        "assertions are signed by {} (x5t {})",
        info.key_id, info.x5t
    );
    let credential = assertion.into_credential(Some(credential_options_with_transport(
        emu.http_client(),
        &authority,
    )))?;
    let tokens = EntraTokens::new(credential, &[SCOPE]);

    // billing: accepts Entra v2 tokens for its application id, keys found through OIDC discovery.
    let entra_keys = JwksSource::discover(&emu.issuer(&tenant))?.with_client(emu.http_client());
    let validate = ValidateLayer::builder()
        .issuer(Issuer::new(
            KeyCache::builder(entra_keys).build(),
            Validation::new(emu.issuer(&tenant), [BILLING_APP_ID]),
        ))
        .realm("billing")
        .build();
    let billing = Router::new()
        .route(
            "/invoices",
            get(|claims: axum::Extension<VerifiedClaims>| async move {
                let caller: serde_json::Value = claims.deserialize().unwrap_or_default();
                format!(
                    "invoices for {}",
                    caller["azp"]
                        .as_str()
                        .or(caller["appid"].as_str())
                        .unwrap_or("?")
                )
            }),
        )
        .layer(validate);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let billing_origin = format!("http://{}", listener.local_addr()?);
    let url = format!("{billing_origin}/invoices");
    tokio::spawn(async move { axum::serve(listener, billing).await });

    // Only billing's origin gets the token, with billing's application id as its audience.
    let issue = IssueMiddleware::new(tokens)
        .audience(AudiencePolicy::origin().map(&billing_origin, AUDIENCE));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(issue)
        .build();

    let mut failed = 0;
    for call in 1..=3 {
        let response = client.get(&url).send().await?;
        let status = response.status();
        println!("call {call}: {status} {}", response.text().await?);
        if status != StatusCode::OK {
            failed += 1;
        }
    }
    let counters = emu.admin().counters();
    println!(
        "vault signatures: {} (one assertion, for one access token reused by every call); Entra token \
         requests: {} (orders' identity to reach the vault, then the token for billing)",
        counters.get("keys.sign").copied().unwrap_or_default(),
        counters.get("entra.token").copied().unwrap_or_default(),
    );
    if failed > 0 {
        eprintln!("FAILED: {failed} calls were refused");
        std::process::exit(1);
    }
    Ok(())
}
