//! Configuration from a file, fully offline: `examples/keyroll.toml` (or the file given) is read
//! into keyroll's configuration types (feature `serde`), and a key cache, an outbound token
//! cache and a validator are built from it; a token the service mints for itself goes
//! through the validator.
//!
//! An in-memory key ring stands in for the vault; the file's `[vault]` table, which names a
//! Key Vault certificate, is read and shown but reaches no vault.
//!
//! ```sh
//! cargo run --example config_file                       # examples/keyroll.toml
//! cargo run --example config_file -- my-keyroll.toml    # another file
//! ```

use std::convert::Infallible;
use std::process::ExitCode;

use http::{Request, Response, StatusCode, header::AUTHORIZATION};
use keyroll::jwt::{Issuer, TokenTemplate, Validation};
use keyroll::token::{SelfSigned, TokenCache, TokenCacheConfig};
use keyroll::tower::validate::{self, ValidateLayer, VerifiedClaims};
use keyroll::{Algorithm, KeyCache, KeyCacheConfig, LocalKeyRing};
use keyroll_azure::KeyVaultCertificatesConfig;
use serde::Deserialize;
use tower::{ServiceBuilder, ServiceExt as _};

/// The whole file: one table per configuration type. A table left out keeps its defaults,
/// except `validation` and `template`, which name the issuer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    keys: KeyCacheConfig,
    validation: Validation,
    #[serde(default)]
    verified_tokens: validate::TokenCacheConfig,
    template: TokenTemplate,
    #[serde(default)]
    outbound: TokenCacheConfig,
    vault: Option<KeyVaultCertificatesConfig>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/examples/keyroll.toml").into());
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // A typo'd key or a bad duration is refused here, naming the key and its line.
    let settings: Settings = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;

    // The key cache: the file's settings, brought into range as the setters' are.
    let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256)?)
        .config(settings.keys)
        .build();
    let effective = keys.config();
    println!(
        "key cache: refresh every {:?}, stale after {:?}, propagation {:?}",
        effective.refresh_interval, effective.max_stale, effective.policy.propagation
    );

    // The outbound side: tokens minted from the template, cached per audience.
    let audience = settings
        .validation
        .audiences
        .first()
        .cloned()
        .ok_or("the validation table names no audience")?;
    let outbound = TokenCache::builder(SelfSigned::new(keys.clone(), settings.template))
        .config(settings.outbound)
        .build();
    let token = outbound.get(&audience).await?;

    // The inbound side: the validator, with its verified-token cache.
    let validate = ValidateLayer::builder()
        .issuer(Issuer::new(keys, settings.validation))
        .token_cache(settings.verified_tokens)
        .build();
    let app = ServiceBuilder::new()
        .layer(validate)
        .service_fn(|request: Request<()>| async move {
            let claims = request.extensions().get::<VerifiedClaims>().cloned();
            Ok::<_, Infallible>(Response::new(claims))
        });
    let request = Request::get("/invoices")
        .header(AUTHORIZATION, token.header_value().clone())
        .body(())?;
    let response = app.oneshot(request).await?;
    let status = response.status();
    let claims = response
        .into_body()
        .into_inner()
        .flatten()
        .ok_or("the token was refused")?;
    assert_eq!(status, StatusCode::OK);
    println!(
        "a token for {audience} from {} verified (kid {}, scope {:?})",
        claims.issuer(),
        claims.kid(),
        claims.registered().scope,
    );

    if let Some(vault) = settings.vault {
        println!(
            "in Azure the keys would come from {} certificates/{} (kid {:?}): \
             KeyVaultCertificatesConfig::builder(credential)",
            vault.vault_url, vault.certificate_name, vault.kid
        );
    }
    Ok(())
}
