//! The one error type of keyroll-azure.

use std::time::Duration;

use keyroll_core::{BoxError, SourceError};

/// Why an Azure operation failed.
///
/// Messages name the vault, the item, the operation and the HTTP status; they never contain a
/// token, a secret or key material. [`std::error::Error::source`] chains to the Azure SDK error.
///
/// ```
/// use keyroll_azure::AzureError;
///
/// let error = AzureError::config("KEYROLL_VAULT_URL is not set");
/// assert_eq!(error.to_string(), "configuration: KEYROLL_VAULT_URL is not set");
/// assert_eq!(error.status(), None);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
    /// A Key Vault request failed (after the retries 429 and 5xx answers get).
    #[error("Key Vault {vault}: {operation} {item} failed ({}): {message}", describe_status(*.status, .code.as_deref()))]
    Vault {
        /// The vault host (`myvault.vault.azure.net`).
        vault: Box<str>,
        /// The item: `keys/{name}[/{version}]`, `certificates/…` or `secrets/…`.
        item: Box<str>,
        /// The operation (`list versions`, `get`, `sign`, `get secret`).
        operation: &'static str,
        /// The HTTP status, when the vault answered.
        status: Option<u16>,
        /// The service's error code (`KeyNotFound`, `Throttled`, `Forbidden`), when it sent one.
        code: Option<Box<str>>,
        /// What went wrong.
        message: Box<str>,
        /// The `Retry-After` the vault asked for, if any.
        retry_after: Option<Duration>,
        /// The Azure SDK error.
        #[source]
        source: Option<Box<azure_core::Error>>,
    },
    /// The vault answered with something keyroll cannot use (a key of an unsupported type, a
    /// certificate that does not parse, a secret without a private key).
    #[error("Key Vault {vault}: {item}: {message}")]
    InvalidResponse {
        /// The vault host.
        vault: String,
        /// The item.
        item: String,
        /// What is wrong with it.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// Getting an Entra ID token failed.
    #[error("Entra ID: getting a token for {scopes} failed: {message}")]
    Credential {
        /// The scopes asked for.
        scopes: String,
        /// What went wrong.
        message: String,
        /// The Azure SDK error (shared by every caller that waited for the same request).
        #[source]
        source: Option<std::sync::Arc<azure_core::Error>>,
    },
    /// Configuration is missing or invalid (an environment variable, a URL, an option).
    #[error("configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

fn describe_status(status: Option<u16>, code: Option<&str>) -> String {
    match (status, code) {
        (Some(status), Some(code)) => format!("status {status} {code}"),
        (Some(status), None) => format!("status {status}"),
        (None, Some(code)) => format!("no response: {code}"),
        (None, None) => "no response".to_owned(),
    }
}

impl AzureError {
    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        AzureError::Config {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn config_with(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        AzureError::Config {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The HTTP status of a failed vault request.
    pub fn status(&self) -> Option<u16> {
        match self {
            AzureError::Vault { status, .. } => *status,
            _ => None,
        }
    }

    /// The delay the vault asked for before retrying (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AzureError::Vault { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The operation that failed, for [`SourceError`]s.
    fn operation_name(&self) -> String {
        match self {
            AzureError::Vault {
                operation, item, ..
            } => format!("{operation} {item}"),
            AzureError::InvalidResponse { item, .. } => format!("read {item}"),
            AzureError::Credential { .. } => "get token".to_owned(),
            AzureError::Config { .. } => "configure".to_owned(),
        }
    }

    /// Converts to the [`SourceError`] a [`KeySource`](keyroll_core::KeySource) returns,
    /// keeping the status, the `Retry-After` and this error as the cause.
    pub fn into_source_error(self, source_name: impl Into<String>) -> SourceError {
        let operation = self.operation_name();
        let status = self.status();
        let retry_after = self.retry_after();
        // The source name already says which vault and item: keep only what is new here.
        let message = match &self {
            AzureError::Vault {
                status,
                code,
                message,
                ..
            } => {
                format!("{}: {message}", describe_status(*status, code.as_deref()))
            }
            AzureError::InvalidResponse { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let mut error = SourceError::new(source_name, operation, message);
        if let Some(status) = status {
            error = error.with_status(status);
        }
        if let Some(retry_after) = retry_after {
            error = error.with_retry_after(retry_after);
        }
        error.with_cause(self)
    }
}
