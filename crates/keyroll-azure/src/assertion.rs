//! [`KeyVaultClientAssertion`]: an RFC 7523 client assertion signed by a vault-held
//! certificate's key, so a confidential client gets Entra ID tokens with no secret anywhere.
//!
//! ```no_run
//! use std::sync::Arc;
//! use keyroll_azure::{EntraTokens, KeyVaultClientAssertion};
//! use keyroll_core::Algorithm;
//!
//! # async fn demo() -> Result<(), keyroll_azure::AzureError> {
//! // The vault is reached with a managed identity; the app authenticates with the certificate.
//! let vault_credential = keyroll_azure::credential_from_env(None)?;
//! let assertion = KeyVaultClientAssertion::builder("https://myvault.vault.azure.net/", "app-cert", vault_credential)
//!     .tenant_id("00000000-0000-0000-0000-000000000000")
//!     .client_id("11111111-1111-1111-1111-111111111111")
//!     .algorithm(Algorithm::PS256)
//!     .build()?;
//! let info = assertion.key_info().await?; // key id and thumbprints, looked up once
//! println!("{} {}", info.key_id, info.x5t);
//! let credential = assertion.into_credential(None)?; // azure_identity's ClientAssertionCredential
//! let tokens = EntraTokens::new(credential, &["api://orders/.default"]);
//! # let _ = tokens;
//! # Ok(()) }
//! ```
//!
//! Every call of [`KeyVaultClientAssertion::assertion`] (and of the `ClientAssertion` trait's
//! `secret`) makes a new assertion with a fresh `jti`: authorization servers may refuse a
//! replayed one, and token requests are rare because the credential caches tokens.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientMethodOptions, ClientOptions};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
};
use keyroll_core::jwt::random_id;
use keyroll_core::{Algorithm, Clock, SystemClock, unix_seconds};
use serde_json::json;

use crate::error::AzureError;
use crate::lock;
use crate::requests::VaultMetrics;
use crate::vault::{self, RemoteSigner, Vault, VaultConfig};

const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";

/// What an assertion needs to know about the certificate: the versioned id of its key (which
/// signs) and its thumbprints (which name it in the header).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(deny_unknown_fields)
)]
#[non_exhaustive]
pub struct CertificateKeyInfo {
    /// The versioned key id, `https://{vault}/keys/{name}/{version}`.
    pub key_id: String,
    /// SHA-1 thumbprint of the certificate, base64url (`x5t`).
    pub x5t: String,
    /// SHA-256 thumbprint of the certificate, base64url (`x5t#S256`).
    pub x5t_s256: String,
}

impl CertificateKeyInfo {
    /// Key info from known values (from an earlier [`KeyVaultClientAssertion::key_info`]).
    pub fn new(
        key_id: impl Into<String>,
        x5t: impl Into<String>,
        x5t_s256: impl Into<String>,
    ) -> Self {
        CertificateKeyInfo {
            key_id: key_id.into(),
            x5t: x5t.into(),
            x5t_s256: x5t_s256.into(),
        }
    }

    /// The current version's key info: one `GET` of the latest certificate.
    pub(crate) async fn current(
        vault: &Vault,
        certificate_name: &str,
    ) -> Result<CertificateKeyInfo, AzureError> {
        let item = format!("certificates/{certificate_name}");
        let bundle = vault.get_certificate(certificate_name, None).await?;
        let cer = bundle
            .cer
            .ok_or_else(|| vault.invalid(&item, "no `cer` in the certificate"))?;
        let key_id = bundle
            .kid
            .ok_or_else(|| vault.invalid(&item, "no `kid` in the certificate"))?;
        let (x5t, x5t_s256) = keyroll_core::certificate_thumbprints(&cer);
        Ok(CertificateKeyInfo {
            key_id,
            x5t,
            x5t_s256,
        })
    }
}

/// Builds a [`KeyVaultClientAssertion`].
pub struct KeyVaultClientAssertionBuilder {
    vault: VaultConfig,
    certificate_name: String,
    tenant_id: Option<String>,
    client_id: Option<String>,
    authority_host: Option<String>,
    algorithm: Algorithm,
    lifetime: Duration,
    key_info: Option<CertificateKeyInfo>,
    key_info_ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for KeyVaultClientAssertionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultClientAssertionBuilder")
            .field("vault_url", &self.vault.url)
            .field("certificate_name", &self.certificate_name)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl KeyVaultClientAssertionBuilder {
    /// Client options for the vault clients (a custom transport). Their retry policy is
    /// replaced: each vault request is sent once (the credential's caller retries).
    pub fn client_options(mut self, options: ClientOptions) -> Self {
        self.vault.client_options = Some(options);
        self
    }

    /// The tenant; `AZURE_TENANT_ID` when not set.
    pub fn tenant_id(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// The application (client) id: `iss` and `sub`; `AZURE_CLIENT_ID` when not set.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// The Entra authority host; `AZURE_AUTHORITY_HOST`, else `https://login.microsoftonline.com/`.
    pub fn authority_host(mut self, authority_host: impl Into<String>) -> Self {
        self.authority_host = Some(authority_host.into());
        self
    }

    /// RS256 (the default; header `x5t`) or PS256 (header `x5t#S256`).
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Assertion lifetime, `exp` − `nbf` (default 10 minutes).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Known key id and thumbprints: skips the certificate lookup (the development proxy's
    /// "faster" path). They are then used until this assertion is dropped.
    pub fn key_info(mut self, info: CertificateKeyInfo) -> Self {
        self.key_info = Some(info);
        self
    }

    /// How long looked-up key info is used before it is looked up again, so a new certificate
    /// version is picked up (default 1 hour).
    pub fn key_info_ttl(mut self, ttl: Duration) -> Self {
        self.key_info_ttl = ttl;
        self
    }

    /// The clock for `nbf`, `iat` and `exp` (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Makes the assertion source. No request is sent until the first assertion.
    pub fn build(self) -> Result<KeyVaultClientAssertion, AzureError> {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let tenant_id = self
            .tenant_id
            .or_else(|| from_env("AZURE_TENANT_ID"))
            .ok_or_else(|| AzureError::config("no tenant id (set it, or AZURE_TENANT_ID)"))?;
        let client_id = self
            .client_id
            .or_else(|| from_env("AZURE_CLIENT_ID"))
            .ok_or_else(|| AzureError::config("no client id (set it, or AZURE_CLIENT_ID)"))?;
        if !matches!(self.algorithm, Algorithm::RS256 | Algorithm::PS256) {
            return Err(AzureError::config(format!(
                "client assertions are signed with RS256 or PS256, not {}",
                self.algorithm
            )));
        }
        if self.certificate_name.is_empty() {
            return Err(AzureError::config("the certificate name is empty"));
        }
        let authority_host = self
            .authority_host
            .or_else(|| from_env("AZURE_AUTHORITY_HOST"))
            .unwrap_or_else(|| DEFAULT_AUTHORITY_HOST.to_owned());
        let authority = url::Url::parse(&authority_host).map_err(|e| {
            AzureError::config_with(
                format!("the authority host `{authority_host}` is not a URL"),
                e,
            )
        })?;
        if authority.scheme() != "https" {
            return Err(AzureError::config(format!(
                "the authority host `{authority_host}` must use https"
            )));
        }
        let token_endpoint = authority
            .join(&format!("{tenant_id}/oauth2/v2.0/token"))
            .map_err(|e| AzureError::config_with("the token endpoint is not a URL", e))?
            .to_string();
        let vault = Vault::new(self.vault)?;
        Ok(KeyVaultClientAssertion {
            inner: Arc::new(Inner {
                name: format!(
                    "Key Vault {}: certificates/{}",
                    vault.host, self.certificate_name
                ),
                vault: Arc::new(vault),
                certificate_name: self.certificate_name,
                tenant_id,
                client_id,
                authority_host,
                token_endpoint,
                algorithm: self.algorithm,
                lifetime: self.lifetime,
                fixed_key_info: self.key_info.is_some(),
                key_info: Mutex::new(
                    self.key_info
                        .map(|info| (info, tokio::time::Instant::now())),
                ),
                key_info_ttl: self.key_info_ttl,
                clock: self.clock,
            }),
        })
    }
}

/// Makes RFC 7523 client assertions signed in Key Vault with a certificate's key. Implements
/// azure_identity's [`ClientAssertion`]; cheap to clone.
#[derive(Clone)]
pub struct KeyVaultClientAssertion {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    vault: Arc<Vault>,
    certificate_name: String,
    tenant_id: String,
    client_id: String,
    authority_host: String,
    token_endpoint: String,
    algorithm: Algorithm,
    lifetime: Duration,
    fixed_key_info: bool,
    key_info: Mutex<Option<(CertificateKeyInfo, tokio::time::Instant)>>,
    key_info_ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for KeyVaultClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultClientAssertion")
            .field("certificate", &self.inner.name)
            .field("client_id", &self.inner.client_id)
            .field("token_endpoint", &self.inner.token_endpoint)
            .field("algorithm", &self.inner.algorithm)
            .finish_non_exhaustive()
    }
}

impl KeyVaultClientAssertion {
    /// A builder for assertions signed with the certificate `certificate_name` in the vault at
    /// `vault_url`, reached with `credential` (a managed identity, typically).
    pub fn builder(
        vault_url: &str,
        certificate_name: &str,
        credential: Arc<dyn TokenCredential>,
    ) -> KeyVaultClientAssertionBuilder {
        KeyVaultClientAssertionBuilder {
            vault: VaultConfig::new(vault_url, credential),
            certificate_name: certificate_name.to_owned(),
            tenant_id: None,
            client_id: None,
            authority_host: None,
            algorithm: Algorithm::RS256,
            lifetime: Duration::from_secs(600),
            key_info: None,
            key_info_ttl: Duration::from_secs(3600),
            clock: Arc::new(SystemClock),
        }
    }

    /// The token endpoint the assertions are for (their `aud`).
    pub fn token_endpoint(&self) -> &str {
        &self.inner.token_endpoint
    }

    /// The client id (`iss` and `sub`).
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The tenant id.
    pub fn tenant_id(&self) -> &str {
        &self.inner.tenant_id
    }

    /// The vault request counters.
    pub fn metrics(&self) -> VaultMetrics {
        self.inner.vault.metrics()
    }

    /// The key id and thumbprints of the certificate's current version: given at build, or
    /// looked up (one `GET` of the latest certificate) and kept for the key-info TTL.
    pub async fn key_info(&self) -> Result<CertificateKeyInfo, AzureError> {
        let inner = &self.inner;
        if let Some((info, fetched)) = lock(&inner.key_info).clone()
            && (inner.fixed_key_info || fetched.elapsed() < inner.key_info_ttl)
        {
            return Ok(info);
        }
        let info = CertificateKeyInfo::current(&inner.vault, &inner.certificate_name).await?;
        *lock(&inner.key_info) = Some((info.clone(), tokio::time::Instant::now()));
        Ok(info)
    }

    /// A new signed assertion: header `alg`, `typ` and `x5t` (RS256) or `x5t#S256` (PS256);
    /// claims `aud` = the token endpoint, `iss` = `sub` = the client id, a fresh `jti`, `nbf`,
    /// `iat`, `exp`. One vault `sign` (plus the certificate lookup when not known yet).
    pub async fn assertion(&self) -> Result<String, AzureError> {
        let inner = &self.inner;
        let info = self.key_info().await?;
        let (key_name, version) = vault::key_name_and_version(&info.key_id).ok_or_else(|| {
            AzureError::config(format!(
                "`{}` is not a versioned Key Vault key id",
                info.key_id
            ))
        })?;
        let now = unix_seconds(inner.clock.now());
        let header = if inner.algorithm == Algorithm::PS256 {
            json!({"alg": "PS256", "typ": "JWT", "x5t#S256": info.x5t_s256})
        } else {
            json!({"alg": "RS256", "typ": "JWT", "x5t": info.x5t})
        };
        let jti = random_id().map_err(|e| AzureError::config_with("no random jti", e))?;
        let claims = json!({
            "aud": inner.token_endpoint,
            "iss": inner.client_id,
            "sub": inner.client_id,
            "jti": jti,
            "nbf": now,
            "iat": now,
            "exp": now.saturating_add(inner.lifetime.as_secs()),
        });
        let signer = RemoteSigner {
            vault: Arc::clone(&inner.vault),
            source_name: inner.name.clone(),
            key_name,
            version,
            algorithm: inner.algorithm,
        };
        let mut token = b64url(header.to_string().as_bytes());
        token.push('.');
        token.push_str(&b64url(claims.to_string().as_bytes()));
        let signature = match signer.sign_input(token.as_bytes()).await {
            Ok(signature) => signature,
            Err(error) if error.status() == Some(403) && !inner.fixed_key_info => {
                // The version was disabled or expired: look the certificate up again next time.
                *lock(&inner.key_info) = None;
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        token.push('.');
        token.push_str(&b64url(&signature));
        Ok(token)
    }

    /// azure_identity's `ClientAssertionCredential` over these assertions, for the same tenant
    /// and client, at the same authority host. `options` is its HTTP pipeline's (a custom
    /// transport); its authority host is this assertion's when it sets no cloud.
    pub fn into_credential(
        self,
        options: Option<ClientOptions>,
    ) -> Result<Arc<dyn TokenCredential>, AzureError> {
        let mut client_options = options.unwrap_or_default();
        if client_options.cloud.is_none() {
            client_options =
                crate::env::with_authority_host(client_options, &self.inner.authority_host);
        }
        let tenant_id = self.inner.tenant_id.clone();
        let client_id = self.inner.client_id.clone();
        let credential = ClientAssertionCredential::new(
            tenant_id,
            client_id,
            self,
            Some(ClientAssertionCredentialOptions { client_options }),
        )
        .map_err(|e| AzureError::config_with("cannot make a client assertion credential", e))?;
        Ok(credential)
    }
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[async_trait::async_trait]
impl ClientAssertion for KeyVaultClientAssertion {
    async fn secret(
        &self,
        _options: Option<ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        self.assertion().await.map_err(|e| {
            azure_core::Error::with_error(
                azure_core::error::ErrorKind::Credential,
                e,
                "the Key Vault client assertion failed",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct NoCredential;

    #[async_trait::async_trait]
    impl TokenCredential for NoCredential {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "no credential in unit tests",
            ))
        }
    }

    #[test]
    fn configuration_is_checked() {
        let build = |alg: Algorithm, host: &str| {
            KeyVaultClientAssertion::builder(
                "https://v.vault.azure.net/",
                "cert",
                Arc::new(NoCredential),
            )
            .tenant_id("tenant")
            .client_id("app")
            .authority_host(host)
            .algorithm(alg)
            .build()
        };
        let ok = build(Algorithm::PS256, "https://login.example/").unwrap();
        assert_eq!(
            ok.token_endpoint(),
            "https://login.example/tenant/oauth2/v2.0/token"
        );
        assert!(build(Algorithm::ES256, "https://login.example/").is_err());
        assert!(build(Algorithm::RS256, "http://login.example/").is_err());
        let error = KeyVaultClientAssertion::builder(
            "http://v.vault.azure.net/",
            "cert",
            Arc::new(NoCredential),
        )
        .tenant_id("t")
        .client_id("c")
        .build()
        .unwrap_err();
        assert!(error.to_string().contains("https"), "{error}");
    }
}
