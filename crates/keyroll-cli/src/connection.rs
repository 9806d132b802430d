//! How the command reaches Azure (or the emulator): the HTTP transport and the credential.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use clap::Args;

use crate::commands::CliError;

/// Options shared by every command that talks to a vault.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// The vault, e.g. `https://myvault.vault.azure.net`.
    #[arg(long, env = "KEYROLL_VAULT_URL")]
    pub(crate) vault: Option<String>,
    /// Trust this CA (PEM) and resolve *.localhost to loopback: for the keyroll emulator.
    #[cfg(feature = "emulator")]
    #[arg(long, value_name = "FILE", env = "KEYROLL_INSECURE_CA")]
    pub(crate) insecure_ca: Option<std::path::PathBuf>,
}

impl Connection {
    /// The vault URL, required.
    pub(crate) fn vault(&self) -> Result<&str, CliError> {
        self.vault.as_deref().ok_or(CliError::Usage(
            "--vault URL (or KEYROLL_VAULT_URL) is required",
        ))
    }

    /// The HTTP client: the default one, or one trusting `--insecure-ca`.
    #[cfg(feature = "emulator")]
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, CliError> {
        match &self.insecure_ca {
            None => Ok(reqwest::Client::new()),
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| CliError::Io(format!("cannot read {}", path.display()), e))?;
                Ok(keyroll_emulator::localhost_http_client(&pem)?)
            }
        }
    }

    /// The HTTP client.
    #[cfg(not(feature = "emulator"))]
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, CliError> {
        Ok(reqwest::Client::new())
    }

    /// Azure client options over that HTTP client.
    pub(crate) fn client_options(&self) -> Result<ClientOptions, CliError> {
        Ok(keyroll_azure::client_options_with_transport(
            self.http_client()?,
        ))
    }

    /// The client options and the credential that reaches the vault, sharing one HTTP client
    /// (the `--insecure-ca` file is read once). The credential is as azure_identity finds it
    /// in the environment (`AZURE_*` variables, workload identity, managed identity, developer
    /// tools).
    pub(crate) fn connect(&self) -> Result<(ClientOptions, Arc<dyn TokenCredential>), CliError> {
        let options = self.client_options()?;
        let credential = keyroll_azure::credential_from_env(Some(options.clone()))?;
        Ok((options, credential))
    }
}
