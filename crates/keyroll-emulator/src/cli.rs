//! The command line of `keyroll-emulator` and `keyroll emulator`: what to register at start
//! (apps, APIs, tenants, managed identities, federated credentials, service-account tokens),
//! the service limits, and the run loop that prints `READY {json}` and serves until SIGINT or
//! SIGTERM, then removes its temporary state directory.
//!
//! ```
//! use clap::Parser as _;
//! #[derive(clap::Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     serve: keyroll_emulator::ServeArgs,
//! }
//! let cli = Cli::parse_from([
//!     "emu",
//!     "--client-secret", "orders-client=s3cret",
//!     "--api", "api://orders=v2",
//!     "--grant", "api://orders=Orders.Read=orders-client",
//!     "--vault-limits", "5%",
//! ]);
//! let builder = cli.serve.builder().unwrap();
//! # let _ = builder;
//! ```

use std::path::PathBuf;

use crate::identity::directory::{Api, App, ManagedIdentity, TokenVersion};
use crate::limits::VaultLimits;
use crate::{EmulatorBuilder, Error};

/// Command-line options of `keyroll-emulator` (and `keyroll emulator`). `Debug` prints no
/// secret.
#[derive(Clone, Default, clap::Args)]
#[non_exhaustive]
pub struct ServeArgs {
    /// TCP port on 127.0.0.1 (0 = ephemeral).
    #[arg(long, default_value_t = 0, env = "KEYROLL_EMULATOR_PORT")]
    pub port: u16,
    /// Directory that keeps the CA, the Entra signing keys and the vaults across restarts.
    #[arg(long, env = "KEYROLL_EMULATOR_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Permissive mode for quick demos: the vault accepts any bearer token, and the token
    /// endpoint issues tokens to unregistered clients, tenants and resources. Off by default.
    #[arg(long, alias = "accept-any-token")]
    pub permissive: bool,
    /// Register an app with a client secret: `CLIENT_ID=SECRET` (repeatable).
    #[arg(long = "client-secret", value_name = "CLIENT_ID=SECRET")]
    pub client_secrets: Vec<String>,
    /// Register an app's certificate (PEM or DER file): `CLIENT_ID=PATH` (repeatable).
    #[arg(long = "client-certificate", value_name = "CLIENT_ID=PATH")]
    pub client_certificates: Vec<String>,
    /// Register a federated credential for the emulator's Kubernetes issuer:
    /// `CLIENT_ID=system:serviceaccount:NAMESPACE:NAME` (repeatable).
    #[arg(long = "federated-credential", value_name = "CLIENT_ID=SUBJECT")]
    pub federated_credentials: Vec<String>,
    /// Write a projected service-account token at start: `NAMESPACE:NAME=PATH` (repeatable).
    #[arg(long = "service-account-token", value_name = "NAMESPACE:NAME=PATH")]
    pub service_account_tokens: Vec<String>,
    /// Register an API: `URI` (v1 tokens) or `URI=v2` (repeatable).
    #[arg(long = "api", value_name = "URI[=v1|v2]")]
    pub apis: Vec<String>,
    /// Grant an app role of a registered API: `URI=ROLE=CLIENT_ID` (repeatable).
    #[arg(long = "grant", value_name = "URI=ROLE=CLIENT_ID")]
    pub grants: Vec<String>,
    /// Register another tenant (repeatable).
    #[arg(long = "tenant", value_name = "TENANT_ID")]
    pub tenants: Vec<String>,
    /// Assign a user-assigned managed identity: `NAME` or `NAME=CLIENT_ID` (repeatable).
    #[arg(long = "user-assigned-identity", value_name = "NAME[=CLIENT_ID]")]
    pub user_assigned_identities: Vec<String>,
    /// The managed-identity endpoint's `X-IDENTITY-HEADER` secret (random when absent).
    #[arg(long, env = "KEYROLL_EMULATOR_IDENTITY_HEADER")]
    pub identity_header: Option<String>,
    /// The default tenant id (random when absent, kept in the state directory).
    #[arg(long)]
    pub tenant_id: Option<String>,
    /// Key Vault's service limits: `documented` (the default), `off`, or a percentage of the
    /// documented figures (`5%`).
    #[arg(long, default_value = "documented")]
    pub vault_limits: String,
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let client_ids: Vec<&str> = self
            .client_secrets
            .iter()
            .map(|p| p.split_once('=').map_or("?", |(id, _)| id))
            .collect();
        f.debug_struct("ServeArgs")
            .field("port", &self.port)
            .field("state_dir", &self.state_dir)
            .field("permissive", &self.permissive)
            .field("client_secrets (ids)", &client_ids)
            .field("client_certificates", &self.client_certificates)
            .field("federated_credentials", &self.federated_credentials)
            .field("service_account_tokens", &self.service_account_tokens)
            .field("apis", &self.apis)
            .field("grants", &self.grants)
            .field("tenants", &self.tenants)
            .field("user_assigned_identities", &self.user_assigned_identities)
            .field(
                "identity_header",
                &self.identity_header.as_ref().map(|_| "<redacted>"),
            )
            .field("tenant_id", &self.tenant_id)
            .field("vault_limits", &self.vault_limits)
            .finish()
    }
}

fn bad(message: String) -> Error {
    Error::refused("BadParameter", message)
}

fn pair<'a>(flag: &str, text: &'a str, want: &str) -> Result<(&'a str, &'a str), Error> {
    text.split_once('=')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| bad(format!("--{flag} wants {want}, got {text:?}")))
}

/// Reads a certificate file: DER, or PEM with a `CERTIFICATE` block (a key beside it is
/// skipped: only the public certificate is registered).
fn read_certificate(path: &str) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path)?;
    if !bytes.starts_with(b"-----") {
        return Ok(bytes);
    }
    pem::parse_many(&bytes)
        .map_err(|e| bad(format!("{path}: {e}")))?
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .ok_or_else(|| bad(format!("{path}: no CERTIFICATE block")))
}

impl ServeArgs {
    /// The builder these options describe.
    pub fn builder(&self) -> Result<EmulatorBuilder, Error> {
        let limits = VaultLimits::parse(&self.vault_limits).map_err(bad)?;
        let mut b = crate::Emulator::builder()
            .port(self.port)
            .permissive(self.permissive)
            .vault_limits(limits);
        if let Some(dir) = &self.state_dir {
            b = b.state_dir(dir);
        }
        for t in &self.tenants {
            b = b.add_tenant(t);
        }
        for p in &self.client_secrets {
            let (id, secret) = pair("client-secret", p, "CLIENT_ID=SECRET")?;
            b = b.client_secret(id, secret);
        }
        for p in &self.client_certificates {
            let (id, path) = pair("client-certificate", p, "CLIENT_ID=PATH")?;
            b = b.app(App::new(id).certificate(read_certificate(path)?));
        }
        for p in &self.federated_credentials {
            let (id, subject) = pair("federated-credential", p, "CLIENT_ID=SUBJECT")?;
            b = b.workload_identity(id, subject);
        }
        for p in &self.service_account_tokens {
            let (account, path) = pair("service-account-token", p, "NAMESPACE:NAME=PATH")?;
            let (ns, name) = account.split_once(':').ok_or_else(|| {
                bad(format!(
                    "--service-account-token wants NAMESPACE:NAME=PATH, got {p:?}"
                ))
            })?;
            b = b.service_account_token_file(ns, name, path);
        }
        let mut apis: Vec<Api> = Vec::new();
        for p in &self.apis {
            let (uri, version) = match p.rsplit_once('=') {
                Some((uri, "v1" | "1")) => (uri, TokenVersion::V1),
                Some((uri, "v2" | "2")) => (uri, TokenVersion::V2),
                Some(_) => return Err(bad(format!("--api wants URI or URI=v1|v2, got {p:?}"))),
                None => (p.as_str(), TokenVersion::V1),
            };
            apis.push(Api::new(uri).access_token_version(version));
        }
        for g in &self.grants {
            let mut parts = g.splitn(3, '=');
            let (Some(uri), Some(role), Some(client)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(format!("--grant wants URI=ROLE=CLIENT_ID, got {g:?}")));
            };
            let api = apis
                .iter_mut()
                .find(|a| a.identifier_uris.iter().any(|u| u == uri))
                .ok_or_else(|| bad(format!("--grant names {uri}, which no --api registers")))?;
            if !api.app_roles.iter().any(|r| r == role) {
                api.app_roles.push(role.to_string());
            }
            *api = api.clone().grant(client, role);
        }
        for api in apis {
            b = b.api(api);
        }
        for p in &self.user_assigned_identities {
            let mi = match p.split_once('=') {
                Some((name, client_id)) => {
                    ManagedIdentity::user_assigned(name).with_client_id(client_id)
                }
                None => ManagedIdentity::user_assigned(p),
            };
            b = b.user_assigned_identity(mi);
        }
        if let Some(h) = &self.identity_header {
            b = b.managed_identity(h);
        }
        if let Some(t) = &self.tenant_id {
            b = b.tenant_id(t);
        }
        Ok(b)
    }
}

/// SIGINT (Ctrl-C) and, on Unix, SIGTERM, listened for from its creation on: a signal that
/// arrives after `READY` is printed (a script that starts and stops the emulator at once)
/// always finds the handlers in place.
struct StopSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn install() -> Result<StopSignal, Error> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignal {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignal {})
    }

    async fn received(mut self) -> Result<(), Error> {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}

/// Starts the emulator, prints one line `READY {json}` on stdout (the facts of
/// [`crate::EmulatorHandle::ready_json`]) and serves until SIGINT or SIGTERM; then stops and
/// removes its temporary state directory.
pub async fn run(args: ServeArgs) -> Result<(), Error> {
    let stop = StopSignal::install()?;
    let emu = args.builder()?.start().await?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {}", emu.ready_json())?;
        out.flush()?;
    }
    stop.received().await?;
    emu.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(a: &[&str]) -> ServeArgs {
        Cli::parse_from(std::iter::once("emu").chain(a.iter().copied())).serve
    }

    #[test]
    fn registrations_from_flags() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["app.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, format!("{}{}", key.serialize_pem(), cert.pem())).unwrap();
        let flag = format!("cert-app={}", bundle.display());
        let b = args(&["--client-certificate", &flag]).builder().unwrap();
        assert_eq!(
            b.apps[0].certificates,
            [cert.der().to_vec()],
            "the key is skipped"
        );

        let b = args(&[
            "--client-secret",
            "c=s",
            "--api",
            "api://orders=v2",
            "--grant",
            "api://orders=Orders.Read=c",
            "--tenant",
            "t2",
            "--user-assigned-identity",
            "mi=1234",
            "--federated-credential",
            "w=system:serviceaccount:ns:sa",
            "--vault-limits",
            "off",
        ])
        .builder()
        .unwrap();
        assert_eq!(b.apis.len(), 1);
        assert_eq!(b.apis[0].access_token_version, TokenVersion::V2);
        assert!(b.apis[0].grants["c"].contains("Orders.Read"));
        assert_eq!(b.tenants, ["t2"]);
        assert_eq!(b.user_identities[0].client_id, "1234");
        assert_eq!(
            b.workloads,
            [("w".to_string(), "system:serviceaccount:ns:sa".to_string())]
        );
        assert!(!b.vault_limits.enabled);
        assert!(
            b.apps
                .iter()
                .any(|a| a.client_id == "c" && a.secrets == ["s"])
        );
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let a = args(&[
            "--client-secret",
            "c=hunter2",
            "--identity-header",
            "mi-hunter3",
        ]);
        let printed = format!("{a:?} {:?}", a.builder().unwrap());
        assert!(
            !printed.contains("hunter2") && !printed.contains("hunter3"),
            "{printed}"
        );
        assert!(
            printed.contains("<redacted>") && printed.contains("\"c\""),
            "{printed}"
        );
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        for bad in [
            &["--client-secret", "nopair"][..],
            &["--api", "api://x=v3"],
            &["--grant", "api://x=R=c"],
            &["--vault-limits", "plenty"],
            &["--service-account-token", "nocolon=/tmp/x"],
        ] {
            let e = args(bad).builder().unwrap_err().to_string();
            assert!(e.starts_with("BadParameter"), "{e}");
        }
        let e = args(&["--client-certificate", "c=/nonexistent/cert.pem"])
            .builder()
            .unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{e}");
    }
}
