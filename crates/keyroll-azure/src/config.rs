//! The plain-data parts of the vault sources, the client assertion and Entra tokens, for
//! configuration files (with the `serde` feature): each makes its builder given the one part a
//! file cannot hold, the credential. The builders check the values as they always do.
//!
//! ```no_run
//! use keyroll_azure::{CertificateKid, KeyVaultCertificatesConfig};
//! use keyroll_core::KeyCache;
//!
//! # fn demo() -> Result<(), keyroll_azure::AzureError> {
//! let mut config = KeyVaultCertificatesConfig::new("https://myvault.vault.azure.net/", "sts-signing");
//! config.kid = CertificateKid::Thumbprint;
//! let certificates = config.builder(keyroll_azure::credential_from_env(None)?).build()?;
//! let keys = KeyCache::builder(certificates).build();
//! # let _ = keys; Ok(()) }
//! ```
//!
//! In a file (feature `serde`), keys are named as the fields; `vault_url` and the item's name
//! are required, the rest default as the builders do; an unknown key is an error that names
//! it:
//!
//! ```toml
//! vault_url = "https://myvault.vault.azure.net/"
//! certificate_name = "sts-signing"
//! kid = "thumbprint"        # or "key_id"
//! local_signing = false
//! algorithm = "PS256"
//! ```

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use keyroll_core::Algorithm;

use crate::{
    CertificateKeyInfo, CertificateKid, EntraTokens, KeyIdFormat, KeyVaultCertificates,
    KeyVaultCertificatesBuilder, KeyVaultClientAssertion, KeyVaultClientAssertionBuilder,
    KeyVaultKeys, KeyVaultKeysBuilder,
};

/// What a [`KeyVaultKeys`] source reads: the vault, the key, how kids are written, the RSA
/// signing algorithm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(deny_unknown_fields)
)]
#[non_exhaustive]
pub struct KeyVaultKeysConfig {
    /// The vault, `https://myvault.vault.azure.net/`.
    pub vault_url: String,
    /// The key's name.
    pub key_name: String,
    /// What the `kid` is (default [`KeyIdFormat::VersionedId`]; in files `versioned_id` or
    /// `version`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub kid: KeyIdFormat,
    /// The signing algorithm for RSA keys (default RS256).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub algorithm: Option<Algorithm>,
}

impl KeyVaultKeysConfig {
    /// The key `key_name` in the vault at `vault_url`, with the defaults.
    pub fn new(vault_url: impl Into<String>, key_name: impl Into<String>) -> Self {
        KeyVaultKeysConfig {
            vault_url: vault_url.into(),
            key_name: key_name.into(),
            kid: KeyIdFormat::default(),
            algorithm: None,
        }
    }

    /// A builder with these settings, reaching the vault with `credential`.
    pub fn builder(&self, credential: Arc<dyn TokenCredential>) -> KeyVaultKeysBuilder {
        let builder =
            KeyVaultKeys::builder(&self.vault_url, &self.key_name, credential).kid(self.kid);
        match self.algorithm {
            Some(algorithm) => builder.algorithm(algorithm),
            None => builder,
        }
    }
}

/// What a [`KeyVaultCertificates`] source reads: the vault, the certificate, how kids are
/// written, whether to sign locally, the RSA signing algorithm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(deny_unknown_fields)
)]
#[non_exhaustive]
pub struct KeyVaultCertificatesConfig {
    /// The vault, `https://myvault.vault.azure.net/`.
    pub vault_url: String,
    /// The certificate's name.
    pub certificate_name: String,
    /// What the `kid` is (default [`CertificateKid::Thumbprint`]; in files `thumbprint` or
    /// `key_id`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub kid: CertificateKid,
    /// Sign locally with the private key from the certificate's secret (default false; see
    /// [`KeyVaultCertificatesBuilder::local_signing`]).
    #[cfg_attr(feature = "serde", serde(default))]
    pub local_signing: bool,
    /// The signing algorithm for RSA certificates (default RS256).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub algorithm: Option<Algorithm>,
}

impl KeyVaultCertificatesConfig {
    /// The certificate `certificate_name` in the vault at `vault_url`, with the defaults.
    pub fn new(vault_url: impl Into<String>, certificate_name: impl Into<String>) -> Self {
        KeyVaultCertificatesConfig {
            vault_url: vault_url.into(),
            certificate_name: certificate_name.into(),
            kid: CertificateKid::default(),
            local_signing: false,
            algorithm: None,
        }
    }

    /// A builder with these settings, reaching the vault with `credential`.
    pub fn builder(&self, credential: Arc<dyn TokenCredential>) -> KeyVaultCertificatesBuilder {
        let builder =
            KeyVaultCertificates::builder(&self.vault_url, &self.certificate_name, credential)
                .kid(self.kid)
                .local_signing(self.local_signing);
        match self.algorithm {
            Some(algorithm) => builder.algorithm(algorithm),
            None => builder,
        }
    }
}

/// What a [`KeyVaultClientAssertion`] reads: the vault and certificate, the application, the
/// assertion's algorithm and lifetime, and optionally known key info.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(deny_unknown_fields)
)]
#[non_exhaustive]
pub struct KeyVaultClientAssertionConfig {
    /// The vault, `https://myvault.vault.azure.net/`.
    pub vault_url: String,
    /// The certificate's name.
    pub certificate_name: String,
    /// The tenant; `AZURE_TENANT_ID` when unset.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub tenant_id: Option<String>,
    /// The application (client) id; `AZURE_CLIENT_ID` when unset.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub client_id: Option<String>,
    /// The Entra authority host; `AZURE_AUTHORITY_HOST`, else Microsoft's, when unset.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub authority_host: Option<String>,
    /// RS256 (the default) or PS256.
    #[cfg_attr(feature = "serde", serde(default = "assertion_defaults::algorithm"))]
    pub algorithm: Algorithm,
    /// Assertion lifetime (default 10 minutes; in files `"10m"`).
    #[cfg_attr(
        feature = "serde",
        serde(default = "assertion_defaults::lifetime", with = "humantime_serde")
    )]
    pub lifetime: Duration,
    /// Known key id and thumbprints (skips the certificate lookup), a table with `key_id`,
    /// `x5t` and `x5t_s256`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub key_info: Option<CertificateKeyInfo>,
    /// How long looked-up key info is used (default 1 hour).
    #[cfg_attr(
        feature = "serde",
        serde(default = "assertion_defaults::key_info_ttl", with = "humantime_serde")
    )]
    pub key_info_ttl: Duration,
}

/// The defaults of [`KeyVaultClientAssertion::builder`], for configuration files.
mod assertion_defaults {
    use std::time::Duration;

    use keyroll_core::Algorithm;

    pub(super) fn algorithm() -> Algorithm {
        Algorithm::RS256
    }

    pub(super) fn lifetime() -> Duration {
        Duration::from_secs(600)
    }

    pub(super) fn key_info_ttl() -> Duration {
        Duration::from_secs(3600)
    }
}

impl KeyVaultClientAssertionConfig {
    /// Assertions signed with the certificate `certificate_name` in the vault at `vault_url`,
    /// with the defaults.
    pub fn new(vault_url: impl Into<String>, certificate_name: impl Into<String>) -> Self {
        KeyVaultClientAssertionConfig {
            vault_url: vault_url.into(),
            certificate_name: certificate_name.into(),
            tenant_id: None,
            client_id: None,
            authority_host: None,
            algorithm: assertion_defaults::algorithm(),
            lifetime: assertion_defaults::lifetime(),
            key_info: None,
            key_info_ttl: assertion_defaults::key_info_ttl(),
        }
    }

    /// A builder with these settings, reaching the vault with `credential`.
    pub fn builder(&self, credential: Arc<dyn TokenCredential>) -> KeyVaultClientAssertionBuilder {
        let mut builder =
            KeyVaultClientAssertion::builder(&self.vault_url, &self.certificate_name, credential)
                .algorithm(self.algorithm)
                .lifetime(self.lifetime)
                .key_info_ttl(self.key_info_ttl);
        if let Some(tenant_id) = &self.tenant_id {
            builder = builder.tenant_id(tenant_id.clone());
        }
        if let Some(client_id) = &self.client_id {
            builder = builder.client_id(client_id.clone());
        }
        if let Some(authority_host) = &self.authority_host {
            builder = builder.authority_host(authority_host.clone());
        }
        if let Some(key_info) = &self.key_info {
            builder = builder.key_info(key_info.clone());
        }
        builder
    }
}

/// What [`EntraTokens`] reads: the scopes (none: each audience's `/.default`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct EntraTokensConfig {
    /// The scopes tokens are for, `api://billing/.default`.
    pub scopes: Vec<String>,
}

impl EntraTokensConfig {
    /// Tokens for `scopes`.
    pub fn new<S: Into<String>>(scopes: impl IntoIterator<Item = S>) -> Self {
        EntraTokensConfig {
            scopes: scopes.into_iter().map(Into::into).collect(),
        }
    }

    /// The token source, from `credential`.
    pub fn tokens(&self, credential: Arc<dyn TokenCredential>) -> EntraTokens {
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        EntraTokens::new(credential, &scopes)
    }
}
