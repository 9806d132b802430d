//! [`KeyVaultCertificates`]: the versions of one Key Vault certificate as a [`KeySource`] (the
//! IdentityServer signing-credential case).
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use keyroll_azure::{CertificateKid, KeyVaultCertificates};
//! use keyroll_core::{KeyCache, KeyCacheConfig, RotationPolicy};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let credential = keyroll_azure::credential_from_env(None)?;
//! let certificates = KeyVaultCertificates::builder("https://myvault.vault.azure.net/", "sts-signing", credential)
//!     .kid(CertificateKid::Thumbprint) // kid = x5t, as IdentityServer writes it
//!     .build()?;
//! // A new version validates at once and signs after two days.
//! let policy = RotationPolicy::default().propagation(Duration::from_secs(2 * 86_400));
//! let cache = KeyCache::builder(certificates)
//!     .config(KeyCacheConfig::default().policy(policy))
//!     .build();
//! let validation_keys = cache.validation_set().await?; // every enabled, unexpired version
//! # let _ = validation_keys;
//! # Ok(()) }
//! ```
//!
//! Each version carries `x5t` (from the vault) and `x5t#S256` and `x5c` (computed from its
//! `cer`); its `created`, `enabled`, `nbf` and `exp` come from the vault's attributes. The
//! signer has the vault `sign` with the certificate's key (same name and version), or, with
//! [`KeyVaultCertificatesBuilder::local_signing`] and an exportable key, signs locally with the
//! private key read once per version from the certificate's secret (as PEM); the key is
//! zeroized when the version leaves the set.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use keyroll_core::{
    Algorithm, BoxFuture, Jwk, KeySource, KeyType, KeyVersion, LoadedKeys, LocalKey, Signer,
    SourceError, version_from_certificate,
};
use zeroize::Zeroizing;

use crate::CertificateKeyInfo;
use crate::error::AzureError;
use crate::lock;
use crate::requests::VaultMetrics;
use crate::vault::{self, RemoteSigner, Vault, VaultConfig};

/// What the `kid` of a certificate version is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum CertificateKid {
    /// The certificate's SHA-1 thumbprint, base64url (`x5t`), as IdentityServer does (default).
    #[default]
    Thumbprint,
    /// The versioned id of the certificate's key, `https://{vault}/keys/{name}/{version}`.
    KeyId,
}

/// Builds a [`KeyVaultCertificates`].
pub struct KeyVaultCertificatesBuilder {
    vault: VaultConfig,
    certificate_name: String,
    kid: CertificateKid,
    local_signing: bool,
    algorithm: Option<Algorithm>,
}

impl fmt::Debug for KeyVaultCertificatesBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultCertificatesBuilder")
            .field("vault_url", &self.vault.url)
            .field("certificate_name", &self.certificate_name)
            .field("kid", &self.kid)
            .field("local_signing", &self.local_signing)
            .finish_non_exhaustive()
    }
}

impl KeyVaultCertificatesBuilder {
    /// Client options for the vault clients (a custom transport, a cloud). Their retry policy
    /// is replaced: keyroll retries and counts itself.
    pub fn client_options(mut self, options: ClientOptions) -> Self {
        self.vault.client_options = Some(options);
        self
    }

    /// What the `kid` is (default [`CertificateKid::Thumbprint`]).
    pub fn kid(mut self, kid: CertificateKid) -> Self {
        self.kid = kid;
        self
    }

    /// Signs locally with the private key from the certificate's secret (default false).
    /// Only for exportable keys: a version whose secret holds no private key signs remotely,
    /// with a warning. Local signing costs one secret read per version instead of one vault
    /// `sign` per token, and puts the private key in this process's memory.
    pub fn local_signing(mut self, enabled: bool) -> Self {
        self.local_signing = enabled;
        self
    }

    /// The signing algorithm for RSA certificates (default RS256). EC certificates sign with
    /// the algorithm of their curve.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = Some(algorithm);
        self
    }

    /// Makes the source. No request is sent until the first `load`.
    pub fn build(self) -> Result<KeyVaultCertificates, AzureError> {
        if self.certificate_name.is_empty() {
            return Err(AzureError::config("the certificate name is empty"));
        }
        vault::check_rsa_algorithm(self.algorithm)?;
        let vault = Vault::new(self.vault)?;
        Ok(KeyVaultCertificates {
            inner: Arc::new(Inner {
                name: format!(
                    "Key Vault {}: certificates/{}",
                    vault.host, self.certificate_name
                ),
                vault: Arc::new(vault),
                certificate_name: self.certificate_name,
                kid: self.kid,
                local_signing: self.local_signing,
                algorithm: self.algorithm,
                certificates: Mutex::new(HashMap::new()),
                local_keys: tokio::sync::Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// What a certificate version's `cer` gives, kept per version (it never changes).
#[derive(Clone)]
struct CertificateFacts {
    key_id: String,
    jwk: Jwk,
    key_type: KeyType,
    x5t: String,
    x5t_s256: String,
    x5c: Vec<String>,
    not_before: Option<SystemTime>,
    expires: Option<SystemTime>,
}

/// The versions of one Key Vault certificate, as a [`KeySource`]. Cheap to clone.
#[derive(Clone)]
pub struct KeyVaultCertificates {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    vault: Arc<Vault>,
    certificate_name: String,
    kid: CertificateKid,
    local_signing: bool,
    algorithm: Option<Algorithm>,
    certificates: Mutex<HashMap<String, CertificateFacts>>,
    /// Private keys read from secrets (local signing), by version. The async lock makes
    /// concurrent first uses of a version read its secret once.
    local_keys: tokio::sync::Mutex<HashMap<String, Arc<LocalKey>>>,
}

impl fmt::Debug for KeyVaultCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultCertificates")
            .field("name", &self.inner.name)
            .field("kid", &self.inner.kid)
            .field("local_signing", &self.inner.local_signing)
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl KeyVaultCertificates {
    /// A builder for the certificate `certificate_name` in the vault at `vault_url`.
    pub fn builder(
        vault_url: &str,
        certificate_name: &str,
        credential: Arc<dyn TokenCredential>,
    ) -> KeyVaultCertificatesBuilder {
        KeyVaultCertificatesBuilder {
            vault: VaultConfig::new(vault_url, credential),
            certificate_name: certificate_name.to_owned(),
            kid: CertificateKid::default(),
            local_signing: false,
            algorithm: None,
        }
    }

    /// The source `KEYROLL_VAULT_URL` and `KEYROLL_CERTIFICATE_NAME` name, with the
    /// credential [`credential_from_env`](crate::credential_from_env) picks.
    pub fn from_env() -> Result<KeyVaultCertificates, AzureError> {
        let vault_url = crate::env::required("KEYROLL_VAULT_URL")?;
        let name = crate::env::required("KEYROLL_CERTIFICATE_NAME")?;
        let credential = crate::credential_from_env(None)?;
        KeyVaultCertificates::builder(&vault_url, &name, credential).build()
    }

    /// The vault request counters (lists, gets, secret reads, signs, retries).
    pub fn metrics(&self) -> VaultMetrics {
        self.inner.vault.metrics()
    }

    /// The key id and thumbprints of the certificate's current version (one `GET` of the
    /// latest certificate), as a [`KeyVaultClientAssertion`](crate::KeyVaultClientAssertion)
    /// may be given them at build to skip its own lookup.
    pub async fn current_key_info(&self) -> Result<CertificateKeyInfo, AzureError> {
        CertificateKeyInfo::current(&self.inner.vault, &self.inner.certificate_name).await
    }

    async fn facts(&self, version: &str) -> Result<CertificateFacts, AzureError> {
        let inner = &self.inner;
        if let Some(found) = lock(&inner.certificates).get(version).cloned() {
            return Ok(found);
        }
        let item = format!("certificates/{}/{version}", inner.certificate_name);
        let bundle = inner
            .vault
            .get_certificate(&inner.certificate_name, Some(version))
            .await?;
        let cer = bundle
            .cer
            .ok_or_else(|| inner.vault.invalid(&item, "no `cer` in the certificate"))?;
        let parsed = version_from_certificate(&cer).map_err(|e| {
            inner
                .vault
                .invalid_because(&item, "the certificate does not parse", e)
        })?;
        let mut jwk = parsed.jwk.clone();
        jwk.kid = None;
        jwk.alg = None;
        jwk.key_use = None;
        jwk.x5t = None;
        jwk.x5t_s256 = None;
        jwk.x5c = None;
        let facts = CertificateFacts {
            key_id: bundle.kid.unwrap_or_else(|| {
                format!(
                    "{}/keys/{}/{version}",
                    inner.vault.url.trim_end_matches('/'),
                    inner.certificate_name
                )
            }),
            jwk,
            // What `version_from_certificate` computed: the parsed key, the thumbprints (always
            // set for a certificate) and the chain.
            key_type: parsed.verifying_key().key_type(),
            x5t: parsed.x5t.clone().unwrap_or_default(),
            x5t_s256: parsed.x5t_s256.clone().unwrap_or_default(),
            x5c: parsed.x5c.clone(),
            not_before: parsed.not_before,
            expires: parsed.expires,
        };
        lock(&inner.certificates).insert(version.to_owned(), facts.clone());
        Ok(facts)
    }

    /// Disables one version in the vault, and with it its key (`keyroll revoke` does this
    /// after [`KeyCache::revoke`](keyroll_core::KeyCache::revoke) has stopped it here): one
    /// `PATCH`.
    pub async fn disable_version(&self, version: &str) -> Result<(), AzureError> {
        self.inner
            .vault
            .disable_certificate_version(&self.inner.certificate_name, version)
            .await
    }

    /// Lists the versions, as [`KeySource::load`] does, with the Azure error.
    pub async fn versions(&self) -> Result<Vec<KeyVersion>, AzureError> {
        let inner = &self.inner;
        let listed = inner
            .vault
            .list_certificate_versions(&inner.certificate_name)
            .await?;
        let mut versions = Vec::with_capacity(listed.len());
        let mut seen = Vec::with_capacity(listed.len());
        for properties in listed {
            let Some(version) = properties
                .id
                .as_deref()
                .and_then(vault::version_of)
                .map(str::to_owned)
            else {
                continue;
            };
            let attributes = properties.attributes.unwrap_or_default();
            let enabled = attributes.enabled.unwrap_or(true);
            seen.push(version.clone());
            let known = lock(&inner.certificates).contains_key(&version);
            if !known && !enabled {
                continue;
            }
            let facts = match self.facts(&version).await {
                Ok(facts) => facts,
                Err(error @ AzureError::InvalidResponse { .. }) => {
                    tracing::warn!(error = %error, "skipping a Key Vault certificate version");
                    continue;
                }
                Err(error) => return Err(error),
            };
            let algorithm = match vault::algorithm_for(facts.key_type, inner.algorithm) {
                Ok(alg) => alg,
                Err(message) => {
                    tracing::warn!(version, message, "skipping a Key Vault certificate version");
                    continue;
                }
            };
            let kid = match inner.kid {
                CertificateKid::Thumbprint => facts.x5t.clone(),
                CertificateKid::KeyId => facts.key_id.clone(),
            };
            let created = vault::system_time(attributes.created).unwrap_or(SystemTime::UNIX_EPOCH);
            let item = format!("certificates/{}/{version}", inner.certificate_name);
            let mut key_version = KeyVersion::new(kid, facts.jwk.clone(), created)
                .map_err(|e| {
                    inner
                        .vault
                        .invalid_because(&item, "the public key does not parse", e)
                })?
                .with_version(version)
                .with_enabled(enabled)
                .with_algorithm(algorithm)
                .with_certificate(
                    Some(facts.x5t.clone()),
                    Some(facts.x5t_s256.clone()),
                    facts.x5c.clone(),
                );
            if let Some(nbf) = vault::system_time(attributes.not_before).or(facts.not_before) {
                key_version = key_version.with_not_before(nbf);
            }
            if let Some(exp) = vault::system_time(attributes.expires).or(facts.expires) {
                key_version = key_version.with_expires(exp);
            }
            versions.push(key_version);
        }
        lock(&inner.certificates).retain(|version, _| seen.contains(version));
        inner
            .local_keys
            .lock()
            .await
            .retain(|version, _| seen.contains(version));
        Ok(versions)
    }

    /// The signer for one version: remote, or local when opted in and the key is exportable.
    pub async fn version_signer(
        &self,
        version: &KeyVersion,
    ) -> Result<Arc<dyn Signer>, AzureError> {
        let inner = &self.inner;
        let algorithm = version.signing_algorithm();
        if inner.local_signing {
            let mut keys = inner.local_keys.lock().await;
            if let Some(key) = keys.get(&version.version) {
                return Ok(Arc::clone(key) as Arc<dyn Signer>);
            }
            match self.read_private_key(version, algorithm).await? {
                Some(key) => {
                    let key = Arc::new(key);
                    keys.insert(version.version.clone(), Arc::clone(&key));
                    return Ok(key);
                }
                None => tracing::warn!(
                    source = %inner.name,
                    version = %version.version,
                    "local signing asked for, but the certificate's secret holds no private key \
                     (not exportable): signing in the vault"
                ),
            }
        }
        Ok(Arc::new(RemoteSigner {
            vault: Arc::clone(&inner.vault),
            source_name: inner.name.clone(),
            key_name: inner.certificate_name.clone(),
            version: version.version.clone(),
            algorithm,
        }))
    }

    /// The private key from the certificate's secret, or `None` when it holds none.
    async fn read_private_key(
        &self,
        version: &KeyVersion,
        algorithm: Algorithm,
    ) -> Result<Option<LocalKey>, AzureError> {
        let inner = &self.inner;
        let item = format!("secrets/{}/{}", inner.certificate_name, version.version);
        let pem_text = inner
            .vault
            .get_secret_pem(&inner.certificate_name, &version.version)
            .await?;
        // Wiped on drop, whichever way this returns: the blocks hold the private key.
        let blocks = PemBlocks(pem::parse_many(pem_text.as_bytes()).map_err(|e| {
            inner
                .vault
                .invalid_because(&item, "the secret is not PEM", e)
        })?);
        let Some(block) = blocks.0.iter().find(|b| b.tag().ends_with("PRIVATE KEY")) else {
            return Ok(None);
        };
        let single = Zeroizing::new(pem::encode(block));
        let key = LocalKey::from_pem(algorithm, &single).map_err(|e| {
            inner.vault.invalid_because(
                &item,
                format!("the private key cannot sign {algorithm}"),
                e,
            )
        })?;
        // The key must be the certificate's: a mismatch would mint tokens nobody can verify.
        let public = key.public_jwk();
        let matches = (public.n == version.jwk.n && public.e == version.jwk.e)
            && (public.x == version.jwk.x && public.y == version.jwk.y);
        if !matches {
            return Err(inner.vault.invalid(
                &item,
                "the secret's private key is not the certificate's key",
            ));
        }
        Ok(Some(key))
    }
}

/// Parsed PEM blocks whose contents are zeroized when dropped, on every path (`pem::Pem` does
/// not implement `Zeroize`, so `Zeroizing<Vec<Pem>>` is not available).
struct PemBlocks(Vec<pem::Pem>);

impl PemBlocks {
    /// Zeroizes and drops every block.
    fn wipe(&mut self) {
        for block in self.0.drain(..) {
            drop(Zeroizing::new(block.into_contents()));
        }
    }
}

impl Drop for PemBlocks {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl KeySource for KeyVaultCertificates {
    fn name(&self) -> String {
        self.inner.name.clone()
    }

    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        Box::pin(async move {
            self.versions()
                .await
                .map(LoadedKeys::new)
                .map_err(|e| e.into_source_error(self.inner.name.clone()))
        })
    }

    fn signer<'a>(
        &'a self,
        version: &'a KeyVersion,
    ) -> BoxFuture<'a, Result<Arc<dyn Signer>, SourceError>> {
        Box::pin(async move {
            self.version_signer(version)
                .await
                .map_err(|e| e.into_source_error(self.inner.name.clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_wiped_block_by_block() {
        let text = pem::encode_many(&[
            pem::Pem::new("CERTIFICATE", vec![1u8; 32]),
            pem::Pem::new("PRIVATE KEY", vec![7u8; 48]),
        ]);
        let mut blocks = PemBlocks(pem::parse_many(text.as_bytes()).unwrap());
        assert_eq!(blocks.0.len(), 2);
        // Freed memory cannot be read back without `unsafe` (forbidden here); what can be
        // checked is that every block goes through the zeroizing drop, which `Drop` calls.
        blocks.wipe();
        assert!(blocks.0.is_empty());
    }
}
