//! The subcommands.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use keyroll_azure::{
    CertificateKeyInfo, KeyVaultCertificates, KeyVaultClientAssertion, KeyVaultKeys,
};
use keyroll_core::jwt::{Issuer, TokenTemplate, UntrustedToken, Validation, Verifier, VerifyError};
use keyroll_core::{
    JwkSet, JwksSource, KeyCache, KeyCacheConfig, KeySource, RotationPolicy, unix_seconds,
};

use crate::connection::Connection;

/// A command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error("{0}")]
    Usage(&'static str),
    #[cfg(feature = "emulator")]
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    #[error(transparent)]
    Azure(#[from] keyroll_azure::AzureError),
    #[error(transparent)]
    AzureCore(#[from] azure_core::Error),
    #[cfg(feature = "emulator")]
    #[error(transparent)]
    Emulator(#[from] keyroll_emulator::Error),
    #[error(transparent)]
    Key(#[from] keyroll_core::KeyError),
    #[error(transparent)]
    Keys(#[from] keyroll_core::KeyCacheError),
    #[error(transparent)]
    Mint(#[from] keyroll_core::jwt::MintError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The item in the vault whose versions are the keys.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct VaultItem {
    /// A Key Vault key.
    #[arg(long)]
    key: Option<String>,
    /// A Key Vault certificate.
    #[arg(long)]
    certificate: Option<String>,
}

/// The vault key or certificate that `item` names.
enum VaultSource {
    Keys(KeyVaultKeys),
    Certificates(KeyVaultCertificates),
}

impl VaultSource {
    fn open(connection: &Connection, item: &VaultItem) -> std::result::Result<Self, CliError> {
        let vault = connection.vault()?;
        let (options, credential) = connection.connect()?;
        Ok(match (&item.key, &item.certificate) {
            (Some(key), _) => VaultSource::Keys(
                KeyVaultKeys::builder(vault, key, credential)
                    .client_options(options)
                    .build()?,
            ),
            (None, Some(certificate)) => VaultSource::Certificates(
                KeyVaultCertificates::builder(vault, certificate, credential)
                    .client_options(options)
                    .build()?,
            ),
            (None, None) => {
                return Err(CliError::Usage(
                    "--key NAME or --certificate NAME is required",
                ));
            }
        })
    }

    fn into_source(self) -> Arc<dyn KeySource> {
        match self {
            VaultSource::Keys(keys) => Arc::new(keys),
            VaultSource::Certificates(certificates) => Arc::new(certificates),
        }
    }

    async fn versions(&self) -> std::result::Result<Vec<keyroll_core::KeyVersion>, CliError> {
        Ok(match self {
            VaultSource::Keys(keys) => keys.versions().await?,
            VaultSource::Certificates(certificates) => certificates.versions().await?,
        })
    }

    async fn disable_version(&self, version: &str) -> std::result::Result<(), CliError> {
        match self {
            VaultSource::Keys(keys) => keys.disable_version(version).await?,
            VaultSource::Certificates(certificates) => {
                certificates.disable_version(version).await?;
            }
        }
        Ok(())
    }
}

fn vault_source(
    connection: &Connection,
    item: &VaultItem,
) -> std::result::Result<Arc<dyn KeySource>, CliError> {
    Ok(VaultSource::open(connection, item)?.into_source())
}

fn print_json(value: &serde_json::Value) -> std::result::Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `keyroll token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    connection: Connection,
    /// The Entra ID tenant.
    #[arg(long, env = "AZURE_TENANT_ID")]
    tenant: String,
    /// The application (client) id the certificate is registered for.
    #[arg(long)]
    client_id: String,
    /// The vault certificate whose key signs the assertion.
    #[arg(long)]
    certificate: String,
    /// The scope, e.g. api://billing/.default.
    #[arg(long)]
    scope: String,
    /// The certificate's versioned key id (from `keyroll key-info`), with --x5t: skips a vault call.
    #[arg(long, requires = "x5t", allow_hyphen_values = true)]
    key_id: Option<String>,
    /// The certificate's x5t thumbprint (from `keyroll key-info`), with --key-id.
    // A base64url thumbprint may start with `-`.
    #[arg(long, requires = "key_id", allow_hyphen_values = true)]
    x5t: Option<String>,
    /// The Entra ID authority host.
    #[arg(
        long,
        env = "AZURE_AUTHORITY_HOST",
        default_value = "https://login.microsoftonline.com"
    )]
    authority: String,
    /// Print JSON with the token and its expiry instead of the bare token.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn token(args: TokenArgs) -> Result<()> {
    let vault = args.connection.vault()?;
    let (options, credential) = args.connection.connect()?;
    let mut builder = KeyVaultClientAssertion::builder(vault, &args.certificate, credential)
        .client_options(options.clone())
        .tenant_id(&args.tenant)
        .client_id(&args.client_id)
        .authority_host(args.authority.as_str());
    if let (Some(key_id), Some(x5t)) = (&args.key_id, &args.x5t) {
        // x5t#S256 is only needed for PS256 assertions; the RS256 default names the certificate by x5t.
        builder = builder.key_info(CertificateKeyInfo::new(
            key_id.clone(),
            x5t.clone(),
            String::new(),
        ));
    }
    let assertion = builder.build()?;
    let credential = assertion.into_credential(Some(options))?;
    let token = credential.get_token(&[args.scope.as_str()], None).await?;
    if args.json {
        print_json(&serde_json::json!({
            "access_token": token.token.secret(),
            "token_type": "Bearer",
            "expires_on": token.expires_on.unix_timestamp(),
        }))?;
    } else {
        println!("{}", token.token.secret());
    }
    Ok(())
}

/// `keyroll key-info`.
#[derive(Debug, Args)]
pub(crate) struct KeyInfoArgs {
    #[command(flatten)]
    connection: Connection,
    /// The vault certificate.
    #[arg(long)]
    certificate: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The key id and thumbprints of a certificate's current version: one `GET` of the latest
/// certificate with whatever credential reaches the vault (a managed identity needs neither a
/// tenant nor a client id: no client assertion is made).
async fn current_key_info(
    connection: &Connection,
    certificate: &str,
) -> std::result::Result<CertificateKeyInfo, CliError> {
    let (options, credential) = connection.connect()?;
    let source = KeyVaultCertificates::builder(connection.vault()?, certificate, credential)
        .client_options(options)
        .build()?;
    Ok(source.current_key_info().await?)
}

pub(crate) async fn key_info(args: KeyInfoArgs) -> Result<()> {
    let info = current_key_info(&args.connection, &args.certificate).await?;
    if args.json {
        print_json(
            &serde_json::json!({"key_id": info.key_id, "x5t": info.x5t, "x5t#S256": info.x5t_s256}),
        )?;
    } else {
        println!(
            "key id:   {}\nx5t:      {}\nx5t#S256: {}",
            info.key_id, info.x5t, info.x5t_s256
        );
        println!(
            "\nfaster tokens: keyroll token --key-id {} --x5t {} …",
            info.key_id, info.x5t
        );
    }
    Ok(())
}

/// `keyroll mint`.
#[derive(Debug, Args)]
pub(crate) struct MintArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    item: VaultItem,
    /// The audience (`aud`).
    #[arg(long)]
    aud: String,
    /// The issuer (`iss`); default: the vault URL.
    #[arg(long)]
    iss: Option<String>,
    /// The subject (`sub`); default: the issuer.
    #[arg(long)]
    sub: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    lifetime: u64,
    /// An extra claim, `name=value` (value parsed as JSON when it is JSON, else a string); repeatable.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// Print JSON with the token, its kid and expiry.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn mint(args: MintArgs) -> Result<()> {
    let source = vault_source(&args.connection, &args.item)?;
    // A developer wants the newest version at once: no propagation wait for a one-off token.
    let config =
        KeyCacheConfig::default().policy(RotationPolicy::default().propagation(Duration::ZERO));
    let keys = KeyCache::builder_arc(source)
        .config(config)
        .background_refresh(false)
        .build();
    let issuer = args
        .iss
        .clone()
        .unwrap_or_else(|| args.connection.vault.clone().unwrap_or_default());
    let mut template = TokenTemplate::new(issuer)
        .lifetime(Duration::from_secs(args.lifetime))
        .include_x5t(args.item.certificate.is_some());
    if let Some(sub) = &args.sub {
        template = template.subject(sub);
    }
    for claim in &args.claims {
        let (name, value) = claim
            .split_once('=')
            .ok_or(CliError::Usage("--claim takes NAME=VALUE"))?;
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
        template = template.claim(name, value);
    }
    let minted = template
        .mint(&keys, &args.aud)
        .await
        .map_err(CliError::from)?;
    if args.json {
        print_json(&serde_json::json!({
            "token": minted.token,
            "kid": minted.kid,
            "expires_at": unix_seconds(minted.expires_at),
        }))?;
    } else {
        println!("{}", minted.token);
    }
    Ok(())
}

/// `keyroll verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The token.
    token: String,
    /// Check against the keys at this JWKS URL.
    #[arg(long, conflicts_with_all = ["issuer", "key", "certificate"])]
    jwks: Option<String>,
    /// Check against an OIDC issuer's keys (discovery); also the expected `iss` unless --iss.
    #[arg(long, conflicts_with_all = ["key", "certificate"])]
    issuer: Option<String>,
    /// Check against a vault key's versions (with --vault).
    #[arg(long, conflicts_with = "certificate")]
    key: Option<String>,
    /// Check against a vault certificate's versions (with --vault).
    #[arg(long)]
    certificate: Option<String>,
    #[command(flatten)]
    connection: Connection,
    /// Require this audience.
    #[arg(long)]
    aud: Option<String>,
    /// Require this issuer (default: --issuer, else whatever the token says).
    #[arg(long)]
    iss: Option<String>,
    /// Refuse tokens longer than this, in bytes: by default the limit services apply
    /// (`ValidateLayer`, `Verifier`), so a token this command accepts, they accept too.
    #[arg(long, default_value_t = keyroll_core::jwt::DEFAULT_MAX_TOKEN_LEN)]
    max_token_len: usize,
}

pub(crate) async fn verify(args: VerifyArgs) -> Result<()> {
    let source: Arc<dyn KeySource> = match (&args.jwks, &args.issuer) {
        (Some(jwks), _) => {
            Arc::new(JwksSource::new(jwks)?.with_client(args.connection.http_client()?))
        }
        (None, Some(issuer)) => {
            Arc::new(JwksSource::discover(issuer)?.with_client(args.connection.http_client()?))
        }
        (None, None) => {
            let item = VaultItem {
                key: args.key.clone(),
                certificate: args.certificate.clone(),
            };
            vault_source(&args.connection, &item)?
        }
    };
    let claimed_issuer = UntrustedToken::parse(&args.token, args.max_token_len)
        .map_err(VerifyError::from)?
        .claims
        .iss
        .unwrap_or_default();
    let issuer = args
        .iss
        .clone()
        .or_else(|| args.issuer.clone())
        .unwrap_or(claimed_issuer);
    let keys = KeyCache::builder_arc(source)
        .background_refresh(false)
        .build();
    let mut validation = Validation::new(issuer, args.aud.iter().cloned());
    if args.aud.is_none() {
        validation = validation.any_audience();
    }
    let verifier = Verifier::new([Issuer::new(keys, validation)]).max_token_len(args.max_token_len);
    let verified = verifier.verify(&args.token).await?;
    let claims: serde_json::Value = verified.deserialize()?;
    print_json(&claims)?;
    Ok(())
}

/// `keyroll jwks`.
#[derive(Debug, Args)]
pub(crate) struct JwksArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    item: VaultItem,
}

pub(crate) async fn jwks(args: JwksArgs) -> Result<()> {
    let source = vault_source(&args.connection, &args.item)?;
    let keys = KeyCache::builder_arc(source)
        .background_refresh(false)
        .build();
    let set = JwkSet {
        keys: keys
            .validation_set()
            .await?
            .iter()
            .map(|v| v.jwk.clone())
            .collect(),
    };
    print_json(&serde_json::to_value(set)?)?;
    Ok(())
}

/// `keyroll revoke`.
#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    item: VaultItem,
    /// The version to disable: its kid (as in tokens' headers) or its vault version id.
    version: String,
}

/// Disables one version in the vault. Services stop validating it at their next refresh
/// (`KeyCache::revoke` stops it in a process at once).
pub(crate) async fn revoke(args: RevokeArgs) -> Result<()> {
    let source = VaultSource::open(&args.connection, &args.item)?;
    let revoked = source
        .versions()
        .await?
        .into_iter()
        .find(|v| v.kid == args.version || v.version == args.version)
        .ok_or(CliError::Usage("no version of that kid or id"))?;
    source.disable_version(&revoked.version).await?;
    print_json(&serde_json::json!({
        "disabled": {"kid": revoked.kid, "version": revoked.version},
        "was_enabled": revoked.enabled,
    }))?;
    Ok(())
}
