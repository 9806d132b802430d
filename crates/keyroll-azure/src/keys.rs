//! [`KeyVaultKeys`]: the versions of one Key Vault key as a [`KeySource`], signing in the vault.
//!
//! ```no_run
//! use std::sync::Arc;
//! use keyroll_azure::{KeyIdFormat, KeyVaultKeys};
//! use keyroll_core::KeyCache;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let credential = keyroll_azure::credential_from_env(None)?;
//! let keys = KeyVaultKeys::builder("https://myvault.vault.azure.net/", "token-signing", credential)
//!     .kid(KeyIdFormat::VersionedId)
//!     .build()?;
//! // One cache, shared by the issuer and the validator.
//! let cache = KeyCache::builder(keys).build();
//! let active = cache.active_signer().await?; // the vault signs; the key never leaves it
//! println!("signing with {}", active.version.kid);
//! # Ok(()) }
//! ```
//!
//! `load` lists the versions (one paged request) and fetches the public key of each version it
//! has not seen before, once: a version's key material never changes. A disabled version
//! whose key was never fetched is left out (it neither signs nor validates); one that was
//! fetched stays listed, disabled.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use keyroll_core::{
    Algorithm, BoxFuture, Jwk, KeySource, KeyType, KeyVersion, LoadedKeys, Signer, SourceError,
};

use crate::error::AzureError;
use crate::lock;
use crate::requests::VaultMetrics;
use crate::vault::{self, RemoteSigner, Vault, VaultConfig};

/// What the `kid` of a Key Vault key version is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum KeyIdFormat {
    /// The full versioned key id, `https://{vault}/keys/{name}/{version}` (the default).
    #[default]
    VersionedId,
    /// The version alone (32 hex characters).
    Version,
}

/// Builds a [`KeyVaultKeys`].
pub struct KeyVaultKeysBuilder {
    vault: VaultConfig,
    key_name: String,
    kid: KeyIdFormat,
    algorithm: Option<Algorithm>,
}

impl fmt::Debug for KeyVaultKeysBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultKeysBuilder")
            .field("vault_url", &self.vault.url)
            .field("key_name", &self.key_name)
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl KeyVaultKeysBuilder {
    /// Client options for the vault clients (a custom transport, a cloud). Their retry policy
    /// is replaced: each vault request is sent once, and the key cache retries with its own
    /// backoff.
    pub fn client_options(mut self, options: ClientOptions) -> Self {
        self.vault.client_options = Some(options);
        self
    }

    /// What the `kid` is (default [`KeyIdFormat::VersionedId`]).
    pub fn kid(mut self, format: KeyIdFormat) -> Self {
        self.kid = format;
        self
    }

    /// The signing algorithm for RSA keys (default RS256; PS256/384/512 and RS384/512 also
    /// work). EC keys sign with the algorithm of their curve.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = Some(algorithm);
        self
    }

    /// Makes the source. No request is sent until the first `load`.
    pub fn build(self) -> Result<KeyVaultKeys, AzureError> {
        if self.key_name.is_empty() {
            return Err(AzureError::config("the key name is empty"));
        }
        vault::check_rsa_algorithm(self.algorithm)?;
        let vault = Vault::new(self.vault)?;
        Ok(KeyVaultKeys {
            inner: Arc::new(Inner {
                name: format!("Key Vault {}: keys/{}", vault.host, self.key_name),
                vault: Arc::new(vault),
                key_name: self.key_name,
                kid: self.kid,
                algorithm: self.algorithm,
                public_keys: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// The versions of one Key Vault key, as a [`KeySource`]: every version with its metadata
/// (enabled, created, nbf, exp) and public key; signers that have the vault `sign` the
/// SHA-256/384/512 digest of the JWS signing input. Cheap to clone.
#[derive(Clone)]
pub struct KeyVaultKeys {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    vault: Arc<Vault>,
    key_name: String,
    kid: KeyIdFormat,
    algorithm: Option<Algorithm>,
    /// Public keys by version: fetched once, kept while the version is listed.
    public_keys: Mutex<HashMap<String, (Jwk, KeyType)>>,
}

impl fmt::Debug for KeyVaultKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultKeys")
            .field("name", &self.inner.name)
            .field("kid", &self.inner.kid)
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl KeyVaultKeys {
    /// A builder for the key `key_name` in the vault at `vault_url`
    /// (`https://myvault.vault.azure.net/`).
    pub fn builder(
        vault_url: &str,
        key_name: &str,
        credential: Arc<dyn TokenCredential>,
    ) -> KeyVaultKeysBuilder {
        KeyVaultKeysBuilder {
            vault: VaultConfig::new(vault_url, credential),
            key_name: key_name.to_owned(),
            kid: KeyIdFormat::default(),
            algorithm: None,
        }
    }

    /// The source `KEYROLL_VAULT_URL` and `KEYROLL_KEY_NAME` name, with the credential
    /// [`credential_from_env`](crate::credential_from_env) picks.
    pub fn from_env() -> Result<KeyVaultKeys, AzureError> {
        let vault_url = crate::env::required("KEYROLL_VAULT_URL")?;
        let key_name = crate::env::required("KEYROLL_KEY_NAME")?;
        let credential = crate::credential_from_env(None)?;
        KeyVaultKeys::builder(&vault_url, &key_name, credential).build()
    }

    /// The vault request counters (lists, gets, signs, retries).
    pub fn metrics(&self) -> VaultMetrics {
        self.inner.vault.metrics()
    }

    /// Disables one version in the vault (`keyroll revoke` does this after
    /// [`KeyCache::revoke`](keyroll_core::KeyCache::revoke) has stopped it here): one `PATCH`.
    pub async fn disable_version(&self, version: &str) -> Result<(), AzureError> {
        self.inner
            .vault
            .disable_key_version(&self.inner.key_name, version)
            .await
    }

    /// Lists the versions, as [`KeySource::load`] does, with the Azure error.
    pub async fn versions(&self) -> Result<Vec<KeyVersion>, AzureError> {
        let inner = &self.inner;
        let listed = inner.vault.list_key_versions(&inner.key_name).await?;
        let mut versions = Vec::with_capacity(listed.len());
        let mut seen = Vec::with_capacity(listed.len());
        for properties in listed {
            let Some(kid) = properties.kid.clone() else {
                continue;
            };
            let Some(version) = vault::version_of(&kid).map(str::to_owned) else {
                continue;
            };
            let attributes = properties.attributes.unwrap_or_default();
            let enabled = attributes.enabled.unwrap_or(true);
            seen.push(version.clone());
            let cached = lock(&inner.public_keys).get(&version).cloned();
            let (jwk, key_type) = match cached {
                Some(found) => found,
                None if !enabled => continue,
                None => {
                    let key = inner.vault.get_key(&inner.key_name, &version).await?;
                    let item = format!("keys/{}/{version}", inner.key_name);
                    let found = key
                        .key
                        .as_ref()
                        .ok_or_else(|| inner.vault.invalid(&item, "no key material"))
                        .and_then(|k| {
                            vault::public_jwk(k).map_err(|m| inner.vault.invalid(&item, m))
                        });
                    let found = match found {
                        Ok(found) => found,
                        Err(error) => {
                            // One unusable version (an oct key, an unknown curve) must not
                            // hide the others.
                            tracing::warn!(error = %error, "skipping a Key Vault key version");
                            continue;
                        }
                    };
                    lock(&inner.public_keys).insert(version.clone(), found.clone());
                    found
                }
            };
            let algorithm = match vault::algorithm_for(key_type, inner.algorithm) {
                Ok(alg) => alg,
                Err(message) => {
                    tracing::warn!(version, message, "skipping a Key Vault key version");
                    continue;
                }
            };
            let kid = match inner.kid {
                KeyIdFormat::VersionedId => kid,
                KeyIdFormat::Version => version.clone(),
            };
            let created =
                vault::system_time(attributes.created).unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            let item = format!("keys/{}/{version}", inner.key_name);
            let mut key_version = KeyVersion::new(kid, jwk, created)
                .map_err(|e| {
                    inner
                        .vault
                        .invalid_because(&item, "the public key does not parse", e)
                })?
                .with_version(version)
                .with_enabled(enabled)
                .with_algorithm(algorithm);
            if let Some(nbf) = vault::system_time(attributes.not_before) {
                key_version = key_version.with_not_before(nbf);
            }
            if let Some(exp) = vault::system_time(attributes.expires) {
                key_version = key_version.with_expires(exp);
            }
            versions.push(key_version);
        }
        lock(&inner.public_keys).retain(|version, _| seen.contains(version));
        Ok(versions)
    }

    /// A remote signer for one version.
    pub fn remote_signer(&self, version: &KeyVersion) -> Arc<dyn Signer> {
        Arc::new(RemoteSigner {
            vault: Arc::clone(&self.inner.vault),
            source_name: self.inner.name.clone(),
            key_name: self.inner.key_name.clone(),
            version: version.version.clone(),
            algorithm: version.signing_algorithm(),
        })
    }
}

impl KeySource for KeyVaultKeys {
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
        Box::pin(async move { Ok(self.remote_signer(version)) })
    }
}
