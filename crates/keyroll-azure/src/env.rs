//! Credentials and client options from the environment, and transports for tests and private
//! endpoints.
//!
//! ```no_run
//! use keyroll_azure::{client_options_with_transport, credential_from_env, credential_options_with_transport};
//!
//! # fn demo(http: reqwest::Client) -> Result<(), keyroll_azure::AzureError> {
//! // Production: whatever the standard AZURE_* variables (or managed identity) say.
//! let credential = credential_from_env(None)?;
//! // An emulator or a private endpoint: a reqwest client trusting its CA, with its resolver.
//! let vault_options = client_options_with_transport(http.clone());
//! let credential_options = credential_options_with_transport(http, "https://localhost:8443/");
//! # let _ = (credential, vault_options, credential_options);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use crate::error::AzureError;

/// Client options whose transport is `http` (a client that trusts a private CA, resolves
/// private names, goes through a proxy). For vault clients, and for managed identity.
pub fn client_options_with_transport(http: reqwest::Client) -> ClientOptions {
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        ..ClientOptions::default()
    }
}

/// Client options for an Entra ID credential: the transport `http` and the authority host
/// `authority_host` (`https://login.microsoftonline.com/`, or an emulator's).
pub fn credential_options_with_transport(
    http: reqwest::Client,
    authority_host: &str,
) -> ClientOptions {
    with_authority_host(client_options_with_transport(http), authority_host)
}

/// Sets the authority host of credential options.
pub fn with_authority_host(mut options: ClientOptions, authority_host: &str) -> ClientOptions {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = authority_host.to_owned();
    options.cloud = Some(Arc::new(CloudConfiguration::from(cloud)));
    options
}

pub(crate) fn required(name: &str) -> Result<String, AzureError> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(AzureError::config(format!("{name} is not set"))),
    }
}

/// Which credential [`credential_from_env`] makes. `Debug` prints no secret.
#[derive(Clone, PartialEq, Eq)]
enum Choice {
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: String,
    },
    WorkloadIdentity,
    ManagedIdentity {
        client_id: Option<String>,
    },
    DeveloperTools,
}

impl std::fmt::Debug for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Choice::ClientSecret {
                tenant_id,
                client_id,
                secret: _,
            } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("secret", &"<redacted>")
                .finish(),
            Choice::WorkloadIdentity => f.write_str("WorkloadIdentity"),
            Choice::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
            Choice::DeveloperTools => f.write_str("DeveloperTools"),
        }
    }
}

fn choose(var: &dyn Fn(&str) -> Option<String>) -> Result<Choice, AzureError> {
    let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let client_secret = || match (
        get("AZURE_TENANT_ID"),
        get("AZURE_CLIENT_ID"),
        get("AZURE_CLIENT_SECRET"),
    ) {
        (Some(tenant_id), Some(client_id), Some(secret)) => Some(Choice::ClientSecret {
            tenant_id,
            client_id,
            secret,
        }),
        _ => None,
    };
    let managed = || Choice::ManagedIdentity {
        client_id: get("AZURE_CLIENT_ID"),
    };
    if let Some(forced) = get("KEYROLL_CREDENTIAL") {
        return match forced.trim().to_ascii_lowercase().as_str() {
            "client-secret" => client_secret().ok_or_else(|| {
                AzureError::config(
                    "KEYROLL_CREDENTIAL=client-secret needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET",
                )
            }),
            "workload-identity" => Ok(Choice::WorkloadIdentity),
            "managed-identity" => Ok(managed()),
            "developer-tools" => Ok(Choice::DeveloperTools),
            other => Err(AzureError::config(format!(
                "KEYROLL_CREDENTIAL=`{other}`: use client-secret, workload-identity, managed-identity or developer-tools"
            ))),
        };
    }
    if let Some(choice) = client_secret() {
        return Ok(choice);
    }
    if get("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        return Ok(Choice::WorkloadIdentity);
    }
    if get("IDENTITY_ENDPOINT").is_some() || get("MSI_ENDPOINT").is_some() {
        return Ok(managed());
    }
    Ok(Choice::DeveloperTools)
}

/// The credential the standard environment describes, checked in this order:
///
/// 1. `KEYROLL_CREDENTIAL` = `client-secret`, `workload-identity`, `managed-identity` or
///    `developer-tools` forces one (for example managed identity on a VM, where IMDS sets no
///    variable);
/// 2. `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`: a client secret;
/// 3. `AZURE_FEDERATED_TOKEN_FILE` (with `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`): workload identity;
/// 4. `IDENTITY_ENDPOINT` (App Service, Functions, Container Apps, Arc) or `MSI_ENDPOINT`:
///    managed identity, user-assigned when `AZURE_CLIENT_ID` is set;
/// 5. otherwise the developer tools (Azure CLI, then Azure Developer CLI).
///
/// `AZURE_AUTHORITY_HOST` sets the authority host when `options` has no cloud configured.
/// `options` goes to the credential's own HTTP pipeline (a custom transport, for instance).
pub fn credential_from_env(
    options: Option<ClientOptions>,
) -> Result<Arc<dyn TokenCredential>, AzureError> {
    let var = |name: &str| std::env::var(name).ok();
    let mut options = options.unwrap_or_default();
    if options.cloud.is_none()
        && let Some(host) = var("AZURE_AUTHORITY_HOST").filter(|h| !h.trim().is_empty())
    {
        options = with_authority_host(options, &host);
    }
    let sdk = |what: &'static str| {
        move |e: azure_core::Error| AzureError::config_with(format!("cannot make a {what}"), e)
    };
    Ok(match choose(&var)? {
        Choice::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => ClientSecretCredential::new(
            &tenant_id,
            client_id,
            secret.into(),
            Some(ClientSecretCredentialOptions {
                client_options: options,
            }),
        )
        .map_err(sdk("client secret credential"))?,
        Choice::WorkloadIdentity => {
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: options,
                },
                ..WorkloadIdentityCredentialOptions::default()
            }))
            .map_err(sdk("workload identity credential"))?
        }
        Choice::ManagedIdentity { client_id } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.map(UserAssignedId::ClientId),
                client_options: options,
            }))
            .map_err(sdk("managed identity credential"))?
        }
        Choice::DeveloperTools => {
            DeveloperToolsCredential::new(None).map_err(sdk("developer tools credential"))?
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn pick(vars: &[(&str, &str)]) -> Result<Choice, AzureError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        choose(&move |name: &str| map.get(name).cloned())
    }

    #[test]
    fn order_of_precedence() {
        let secret = [
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1/msi"),
        ];
        assert_eq!(
            pick(&secret).unwrap(),
            Choice::ClientSecret {
                tenant_id: "t".into(),
                client_id: "c".into(),
                secret: "s".into()
            }
        );
        assert_eq!(pick(&secret[1..]).unwrap(), Choice::WorkloadIdentity);
        assert_eq!(
            pick(&secret[1..]).unwrap(),
            pick(&[("AZURE_FEDERATED_TOKEN_FILE", "/f")]).unwrap()
        );
        assert_eq!(
            pick(&[("IDENTITY_ENDPOINT", "http://x"), ("AZURE_CLIENT_ID", "c")]).unwrap(),
            Choice::ManagedIdentity {
                client_id: Some("c".into())
            }
        );
        assert_eq!(
            pick(&[("MSI_ENDPOINT", "http://x")]).unwrap(),
            Choice::ManagedIdentity { client_id: None }
        );
        assert_eq!(pick(&[]).unwrap(), Choice::DeveloperTools);
        // Empty values count as unset.
        assert_eq!(
            pick(&[("AZURE_CLIENT_SECRET", ""), ("IDENTITY_ENDPOINT", " ")]).unwrap(),
            Choice::DeveloperTools
        );
    }

    #[test]
    fn forced_choice() {
        assert_eq!(
            pick(&[
                ("KEYROLL_CREDENTIAL", "managed-identity"),
                ("AZURE_FEDERATED_TOKEN_FILE", "/f")
            ])
            .unwrap(),
            Choice::ManagedIdentity { client_id: None }
        );
        let error = pick(&[("KEYROLL_CREDENTIAL", "client-secret")]).unwrap_err();
        assert!(error.to_string().contains("AZURE_CLIENT_SECRET"));
        let error = pick(&[("KEYROLL_CREDENTIAL", "magic")]).unwrap_err();
        assert!(error.to_string().contains("magic"));
    }

    #[test]
    fn a_secret_never_appears_in_debug_output() {
        let choice = pick(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "hunter2"),
        ])
        .unwrap();
        let printed = format!("{choice:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>") && printed.contains("client_id"));
        assert!(!format!("{:?}", Some(&choice)).contains("hunter2"));
        // The credential's Debug hides the secret too.
        let Choice::ClientSecret { secret, .. } = choice else {
            panic!("client secret expected");
        };
        let credential = ClientSecretCredential::new("t", "c".into(), secret.into(), None).unwrap();
        assert!(!format!("{credential:?}").contains("hunter2"));
    }
}
