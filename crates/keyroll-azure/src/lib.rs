//! keyroll-azure: Azure Key Vault keys and certificates as keyroll [`KeySource`]s that sign
//! in the vault, and Entra ID access tokens for outbound calls, on the official Azure SDK 1.x.
//!
//! ```no_run
//! use std::sync::Arc;
//! use keyroll_azure::{KeyVaultCertificates, EntraTokens, KeyVaultClientAssertion};
//! use keyroll_core::{KeyCache, TokenCache};
//! use keyroll_core::jwt::TokenTemplate;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Managed identity in Azure, a client secret or the Azure CLI elsewhere.
//! let credential = keyroll_azure::credential_from_env(None)?;
//!
//! // Tokens we sign ourselves with a vault certificate (the private key stays in the vault).
//! let certificates = KeyVaultCertificates::builder("https://myvault.vault.azure.net/", "sts", credential.clone()).build()?;
//! let keys = KeyCache::builder(certificates).build();
//! let token = TokenTemplate::new("https://orders.example").mint(&keys, "https://billing.example").await?;
//!
//! // Entra ID tokens, with an assertion the vault signs: no secret anywhere.
//! let assertion = KeyVaultClientAssertion::builder("https://myvault.vault.azure.net/", "app-cert", credential)
//!     .tenant_id("00000000-0000-0000-0000-000000000000")
//!     .client_id("11111111-1111-1111-1111-111111111111")
//!     .build()?;
//! let entra = TokenCache::new(EntraTokens::new(assertion.into_credential(None)?, &["api://billing/.default"]));
//! let access = entra.get("api://billing").await?;
//! # let _ = (token, access);
//! # Ok(()) }
//! ```
//!
//! - [`KeyVaultKeys`]: the versions of a Key Vault key; kid = the versioned key id.
//! - [`KeyVaultCertificates`]: the versions of a certificate; kid = `x5t` (IdentityServer's
//!   choice), `x5t` and `x5t#S256` in the header; optional local signing from the secret.
//! - [`KeyVaultClientAssertion`]: RFC 7523 assertions signed in the vault, azure_identity's
//!   `ClientAssertion`.
//! - [`EntraTokens`]: access tokens from any credential, as a token source for keyroll-core's
//!   `TokenCache` (which refreshes them ahead in the background).
//! - [`credential_from_env`], [`client_options_with_transport`],
//!   [`credential_options_with_transport`]: credentials and transports.
//! - [`KeyVaultKeysConfig`], [`KeyVaultCertificatesConfig`], [`KeyVaultClientAssertionConfig`],
//!   [`EntraTokensConfig`]: the plain-data settings of each, from files with the `serde`
//!   feature; each makes its builder given a credential.
//!
//! Each vault request is sent once and counted ([`VaultMetrics`]; with the feature `metrics`,
//! also `keyroll_azure_requests_total` and friends through the `metrics` facade, listed in
//! `keyroll_core::metrics`): the key and token caches
//! retry with their own backoff, honouring `Retry-After`, so a vault outage costs no more
//! requests than its normal refresh rate. Errors ([`AzureError`]) name the vault, the item,
//! the operation, the status and the `Retry-After`, never a token or a secret.
//!
//! This crate depends on keyroll-core only: its sources know no middleware.
//!
//! [`KeySource`]: keyroll_core::KeySource

mod assertion;
mod certificates;
mod config;
mod entra;
mod env;
mod error;
mod keys;
#[cfg(feature = "metrics")]
mod metrics;
mod requests;
mod vault;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use assertion::{CertificateKeyInfo, KeyVaultClientAssertion, KeyVaultClientAssertionBuilder};
pub use certificates::{CertificateKid, KeyVaultCertificates, KeyVaultCertificatesBuilder};
pub use config::{
    EntraTokensConfig, KeyVaultCertificatesConfig, KeyVaultClientAssertionConfig,
    KeyVaultKeysConfig,
};
pub use entra::EntraTokens;
pub use env::{
    client_options_with_transport, credential_from_env, credential_options_with_transport,
    with_authority_host,
};
pub use error::AzureError;
pub use keys::{KeyIdFormat, KeyVaultKeys, KeyVaultKeysBuilder};
pub use requests::VaultMetrics;

/// Locks `mutex`, taking over the data when a holder panicked: the data guarded in this crate
/// is consistent between statements, so a poisoned lock is no reason to fail.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
