//! An offline, faithful emulator of Azure Key Vault's data plane, Entra ID as registered apps
//! see it, the App Service managed-identity endpoint and a Kubernetes service-account issuer
//! (workload identity), for tests and local development. It is judged by Microsoft's own
//! clients (the Rust and Python SDKs, MSAL) and stays independent of keyroll's own JWT and key
//! code.
//!
//! One HTTPS port (TLS from a CA generated at start, or kept in a state directory) serves:
//! - vaults at `https://<name>.vault.localhost:<port>/` (any name is a vault, created on first
//!   use; requests by IP or plain `localhost` address the vault named `default`), challenging
//!   unauthenticated requests with `resource="https://vault.localhost:<port>"`, accepting only
//!   tokens for Key Vault from the vault's tenant, within Key Vault's service limits;
//! - Entra ID at `https://localhost:<port>/{tenant}/oauth2/v2.0/token`, discovery and keys:
//!   registered apps (secrets, certificates, federated credentials) and APIs (v1 or v2 tokens,
//!   app roles), Entra's AADSTS errors ([`Api`], [`App`], [`TokenVersion`]);
//! - the App Service managed-identity endpoint at `/msi/token` (plain HTTP is accepted on the
//!   same port, as the real endpoint is plain HTTP), with system- and user-assigned identities
//!   ([`ManagedIdentity`]);
//! - a Kubernetes service-account issuer at `/kubernetes` that writes projected tokens;
//! - an admin API under `/_admin/` (loopback peers only) mirrored by [`Admin`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! let emu = keyroll_emulator::Emulator::builder()
//!     .client_secret("my-app", "my-secret")
//!     .start()
//!     .await?;
//! let vault = emu.vault_url("myvault"); // https://myvault.vault.localhost:PORT/
//! let http = emu.http_client();         // trusts the CA, resolves *.localhost to 127.0.0.1
//! # let _ = (vault, http);
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

mod admin;
mod certs;
mod cli;
mod clock;
mod crypto;
mod faults;
mod identity;
mod limits;
mod router;
mod server;
mod store;
mod tls;
mod vault;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use admin::{Admin, CertificateVersionOptions, KeyVersionOptions, VersionInfo};
pub use certs::CertError;
pub use cli::{ServeArgs, run};
pub use crypto::{CryptoError, Curve, KeySpec};
pub use faults::{Fault, FaultId, FaultKind};
pub use identity::directory::{
    Api, App, FederatedCredential, ManagedIdentity, TOKEN_EXCHANGE_AUDIENCE, TokenVersion,
};
pub use limits::VaultLimits;
pub use tls::localhost_http_client;

/// Errors starting or controlling the emulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the state directory or the CA file, or binding the port.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The CA or the server certificate could not be made or loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The state directory holds something unreadable.
    #[error("state: {0}")]
    State(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A key could not be generated or used.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A certificate could not be generated.
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// A registration or an admin request was refused (unknown object, bad parameter).
    #[error("{code}: {message}")]
    Refused {
        /// The service's error code (`KeyNotFound`, `BadParameter`, …).
        code: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    pub(crate) fn refused(code: &str, message: impl Into<String>) -> Error {
        Error::Refused {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// Entry point: [`Emulator::builder`].
#[derive(Debug, Clone, Copy)]
pub struct Emulator;

impl Emulator {
    /// A builder with an ephemeral port, a temporary CA, no registered apps or APIs (Key
    /// Vault is built in), a system-assigned managed identity and Key Vault's documented
    /// service limits.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }
}

/// Configures and starts an emulator. `Debug` prints no secret.
#[derive(Clone, Default)]
pub struct EmulatorBuilder {
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) port: u16,
    pub(crate) permissive: bool,
    pub(crate) apps: Vec<App>,
    pub(crate) apis: Vec<Api>,
    pub(crate) tenants: Vec<String>,
    pub(crate) user_identities: Vec<ManagedIdentity>,
    /// Apps with a federated credential for the emulator's own Kubernetes issuer: (client
    /// id, subject).
    pub(crate) workloads: Vec<(String, String)>,
    /// Projected service-account tokens to write at start: (namespace, name, path).
    pub(crate) token_files: Vec<(String, String, PathBuf)>,
    pub(crate) identity_header: Option<String>,
    pub(crate) tenant_id: Option<String>,
    pub(crate) token_lifetime: Option<Duration>,
    pub(crate) vault_limits: VaultLimits,
}

impl std::fmt::Debug for EmulatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorBuilder")
            .field("state_dir", &self.state_dir)
            .field("port", &self.port)
            .field("permissive", &self.permissive)
            .field("apps", &self.apps)
            .field("apis", &self.apis)
            .field("tenants", &self.tenants)
            .field("user_identities", &self.user_identities)
            .field("workloads", &self.workloads)
            .field(
                "identity_header",
                &self.identity_header.as_ref().map(|_| "<redacted>"),
            )
            .field("tenant_id", &self.tenant_id)
            .field("vault_limits", &self.vault_limits)
            .finish_non_exhaustive()
    }
}

impl EmulatorBuilder {
    /// Keeps the CA, the Entra signing keys and every vault's contents in this directory, so
    /// they survive restarts. Without it, everything lives in memory and a temporary directory.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// The TCP port on 127.0.0.1; 0 (the default) picks an ephemeral one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Permissive mode, for quick demos: the vault accepts any bearer token, and the token
    /// endpoint issues tokens to unregistered clients (with any credential), in unknown
    /// tenants and for unregistered resources. Off by default: then only what is registered
    /// gets a token, and only this emulator's tokens for Key Vault open a vault.
    pub fn permissive(mut self, yes: bool) -> Self {
        self.permissive = yes;
        self
    }

    /// Registers an app (or adds credentials to the one with its client id).
    pub fn app(mut self, app: App) -> Self {
        self.apps.push(app);
        self
    }

    /// Registers an app that authenticates with this secret.
    pub fn client_secret(self, client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.app(App::new(client_id).secret(secret))
    }

    /// Registers a certificate (DER) whose key may sign the app's assertions.
    pub fn client_certificate(
        self,
        client_id: impl Into<String>,
        cer_der: impl Into<Vec<u8>>,
    ) -> Self {
        self.app(App::new(client_id).certificate(cer_der))
    }

    /// Registers an app with a federated credential for the emulator's Kubernetes issuer and
    /// `subject` (`system:serviceaccount:{namespace}:{name}`).
    pub fn workload_identity(
        mut self,
        client_id: impl Into<String>,
        subject: impl Into<String>,
    ) -> Self {
        self.workloads.push((client_id.into(), subject.into()));
        self
    }

    /// Writes a projected service-account token for `namespace`/`name` to `path` at start
    /// (what `AZURE_FEDERATED_TOKEN_FILE` points to on AKS).
    pub fn service_account_token_file(
        mut self,
        namespace: impl Into<String>,
        name: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> Self {
        self.token_files
            .push((namespace.into(), name.into(), path.into()));
        self
    }

    /// Registers an API apps may ask tokens for.
    pub fn api(mut self, api: Api) -> Self {
        self.apis.push(api);
        self
    }

    /// Registers another tenant besides the default one.
    pub fn add_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenants.push(tenant.into());
        self
    }

    /// Assigns a user-assigned managed identity to the emulated App Service site.
    pub fn user_assigned_identity(mut self, identity: ManagedIdentity) -> Self {
        self.user_identities.push(identity);
        self
    }

    /// The managed-identity endpoint's `X-IDENTITY-HEADER` secret; random when not set.
    pub fn managed_identity(mut self, identity_header: impl Into<String>) -> Self {
        self.identity_header = Some(identity_header.into());
        self
    }

    /// The default tenant id; a random GUID when not set (kept in the state directory).
    /// Every vault belongs to it.
    pub fn tenant_id(mut self, tenant: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant.into());
        self
    }

    /// Lifetime of issued access tokens (default 3599 s, as Entra reports `expires_in`).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = Some(lifetime);
        self
    }

    /// Key Vault's service limits per vault ([`VaultLimits::documented`] by default).
    pub fn vault_limits(mut self, limits: VaultLimits) -> Self {
        self.vault_limits = limits;
        self
    }

    /// Binds the port, writes the CA file and serves in background tokio tasks until the
    /// handle is dropped or shut down.
    pub async fn start(self) -> Result<EmulatorHandle, Error> {
        server::start(self).await
    }
}

/// A running emulator. Dropping it (or [`EmulatorHandle::shutdown`]) stops serving.
#[derive(Debug)]
pub struct EmulatorHandle {
    pub(crate) shared: Arc<server::Shared>,
    pub(crate) tenant_id: String,
    pub(crate) authority_url: url::Url,
    pub(crate) ca_pem: String,
    pub(crate) ca_path: PathBuf,
    pub(crate) http_client: reqwest::Client,
    pub(crate) stop: Option<tokio::sync::watch::Sender<bool>>,
    pub(crate) task: Option<tokio::task::JoinHandle<()>>,
    pub(crate) _temp_dir: Option<tempfile::TempDir>,
}

impl EmulatorHandle {
    /// Parses a URL this emulator built; falls back to the authority for a malformed one (a
    /// vault name with characters a host cannot hold).
    fn url(&self, s: &str) -> url::Url {
        url::Url::parse(s).unwrap_or_else(|_| self.authority_url.clone())
    }

    /// The port the emulator listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// `https://{name}.vault.localhost:{port}/`: the vault named `name`, created on first use.
    pub fn vault_url(&self, name: &str) -> url::Url {
        self.url(&format!(
            "https://{}.vault.localhost:{}/",
            name.to_ascii_lowercase(),
            self.shared.port
        ))
    }

    /// The challenge resource every vault reports: `https://vault.localhost:{port}`.
    pub fn vault_resource(&self) -> String {
        self.shared.vault_resource()
    }

    /// `https://localhost:{port}/`: the Entra authority host (`AZURE_AUTHORITY_HOST`).
    pub fn authority_host(&self) -> url::Url {
        self.url(&format!("https://localhost:{}/", self.shared.port))
    }

    /// The default tenant id: every vault's tenant, where apps and APIs are registered
    /// unless they name another.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// `https://localhost:{port}/{tenant}/v2.0`: the `iss` of v2 tokens issued in `tenant`
    /// (for APIs registered with [`TokenVersion::V2`]), and the OpenID issuer of discovery.
    pub fn issuer(&self, tenant: &str) -> String {
        identity::tokens::issuer_v2(&self.shared.authority(), tenant)
    }

    /// `https://sts.windows.net/{tenant}/`: the `iss` of v1 tokens issued in `tenant` (Key
    /// Vault's, and those of APIs registered with [`TokenVersion::V1`]).
    pub fn issuer_v1(&self, tenant: &str) -> String {
        identity::tokens::issuer_v1(tenant)
    }

    /// `https://localhost:{port}/kubernetes`: the emulated cluster's service-account token
    /// issuer, for federated credentials.
    pub fn kubernetes_issuer(&self) -> String {
        self.shared.identity.kubernetes.issuer.clone()
    }

    /// `https://localhost:{port}/{tenant}/discovery/v2.0/keys`.
    pub fn jwks_url(&self, tenant: &str) -> url::Url {
        self.url(&format!(
            "https://localhost:{}/{tenant}/discovery/v2.0/keys",
            self.shared.port
        ))
    }

    /// `https://localhost:{port}/{tenant}/v2.0/.well-known/openid-configuration`.
    pub fn openid_configuration_url(&self, tenant: &str) -> url::Url {
        self.url(&format!(
            "https://localhost:{}/{tenant}/v2.0/.well-known/openid-configuration",
            self.shared.port
        ))
    }

    /// `https://localhost:{port}/{tenant}/oauth2/v2.0/token`.
    pub fn token_endpoint(&self, tenant: &str) -> url::Url {
        self.url(&format!(
            "{}/{tenant}/oauth2/v2.0/token",
            self.shared.authority()
        ))
    }

    /// `http://127.0.0.1:{port}/msi/token`: the App Service `IDENTITY_ENDPOINT`.
    pub fn identity_endpoint(&self) -> url::Url {
        self.url(&format!("http://127.0.0.1:{}/msi/token", self.shared.port))
    }

    /// The App Service `IDENTITY_HEADER` secret.
    pub fn identity_header(&self) -> &str {
        &self.shared.identity.identity_header
    }

    /// The system-assigned managed identity's client id (`appid` of its tokens).
    pub fn managed_identity_client_id(&self) -> String {
        self.system_assigned_identity().client_id
    }

    /// The system-assigned managed identity (selected when a request names none).
    pub fn system_assigned_identity(&self) -> ManagedIdentity {
        self.shared.identity.directory().system_identity.clone()
    }

    /// The user-assigned managed identities.
    pub fn user_assigned_identities(&self) -> Vec<ManagedIdentity> {
        self.shared.identity.directory().user_identities().to_vec()
    }

    /// The CA certificate (PEM) that issued the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Where the CA certificate (PEM) was written.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// A client that trusts the CA and resolves `*.localhost` to 127.0.0.1.
    pub fn http_client(&self) -> reqwest::Client {
        self.http_client.clone()
    }

    /// Registers a certificate (DER) for an app: assertions signed by its key and naming it
    /// by `x5t`, `x5t#S256` or `kid` are accepted.
    pub fn register_client_certificate(
        &self,
        client_id: &str,
        cer_der: &[u8],
    ) -> Result<(), Error> {
        self.admin()
            .register_app(App::new(client_id).certificate(cer_der))
    }

    /// Registers (or adds) a secret for an app.
    pub fn register_client_secret(&self, client_id: &str, secret: &str) -> Result<(), Error> {
        self.admin()
            .register_app(App::new(client_id).secret(secret))
    }

    /// Control over the clock, versions, faults and counters.
    pub fn admin(&self) -> Admin {
        Admin::new(self.shared.clone())
    }

    /// The facts the binary prints in its `READY {json}` line.
    pub fn ready_json(&self) -> serde_json::Value {
        let tenant = self.tenant_id().to_string();
        let directory = self.shared.identity.directory();
        serde_json::json!({
            "port": self.port(),
            "vault_url": self.vault_url("default").as_str(),
            "vault_url_template": format!("https://{{name}}.vault.localhost:{}/", self.port()),
            "vault_resource": self.vault_resource(),
            "authority_host": self.authority_host().as_str(),
            "tenant_id": tenant,
            "tenants": directory.tenants(),
            "token_endpoint": self.token_endpoint(&tenant).as_str(),
            "issuer": self.issuer(&tenant),
            "issuer_v1": self.issuer_v1(&tenant),
            "jwks_url": self.jwks_url(&tenant).as_str(),
            "openid_configuration": self.openid_configuration_url(&tenant).as_str(),
            "kubernetes_issuer": self.kubernetes_issuer(),
            "identity_endpoint": self.identity_endpoint().as_str(),
            "identity_header": self.identity_header(),
            "managed_identity_client_id": directory.system_identity.client_id,
            "system_assigned_identity": directory.system_identity,
            "user_assigned_identities": directory.user_identities(),
            "admin_url": format!("https://localhost:{}/_admin/", self.port()),
            "ca_path": self.ca_path.display().to_string(),
            "clients": directory.client_ids(),
            "apis": directory.apis().iter().map(|a| a.identifier_uris.clone()).collect::<Vec<_>>(),
            "permissive": self.shared.identity.permissive,
            "vault_limits": self.shared.limiter.limits(),
        })
    }

    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}
