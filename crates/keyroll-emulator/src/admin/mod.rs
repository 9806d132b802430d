//! Control of a running emulator, for tests and development: the clock, versions created with
//! a chosen `created` time, registrations (apps, APIs, tenants, managed identities),
//! service-account tokens, the service limits, injected faults and per-operation request
//! counters. [`Admin`] is the Rust side; [`http`] serves the same controls under `/_admin/`.
//!
//! Counters count every request routed to an operation except the vault's 401 challenges
//! (requests without a valid token), including requests answered by an injected fault or
//! throttled by the service limits (those are also counted under `throttled`). Operation
//! names: `keys.create`, `keys.rotate`, `keys.versions`, `keys.get`, `keys.update`,
//! `keys.sign`, `keys.verify`, `keys.list`, `certificates.create`, `certificates.pending`,
//! `certificates.versions`, `certificates.get`, `certificates.update`,
//! `certificates.policy`, `certificates.list`, `secrets.set`, `secrets.get`,
//! `secrets.versions`, `secrets.update`, `secrets.list`, `entra.token`, `entra.keys`,
//! `entra.discovery`, `msi.token`, `kubernetes.discovery`, `kubernetes.keys`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! use keyroll_emulator::{Api, App, Emulator, KeySpec, KeyVersionOptions};
//! let emu = Emulator::builder().start().await?;
//! let admin = emu.admin();
//! admin.register_app(App::new("orders-client").secret("s3cret"))?;
//! admin.register_api(Api::new("api://orders"))?;
//! admin.create_key_version("v", "signing", KeyVersionOptions::new(KeySpec::RSA_2048).created(1_700_000_000))?;
//! admin.advance_clock(std::time::Duration::from_secs(86_400));
//! # Ok(()) }
//! ```

pub(crate) mod http;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::crypto::{KeyMaterial, KeySpec};
use crate::faults::{Fault, FaultId};
use crate::identity::directory::{Api, App, ManagedIdentity};
use crate::identity::workload::PROJECTED_LIFETIME;
use crate::limits::VaultLimits;
use crate::server::{Shared, lock};
use crate::vault::certificates::{
    IssuerRef, KeyProps, PolicyRequest, SecretProps, X509Props, certificate_bundle, current_policy,
    find_cert_version, find_certificate, issue_certificate, parse_policy,
    set_key_and_secret_enabled,
};
use crate::vault::keys::{KeyCreate, create_key};
use crate::vault::{Tags, VaultError, VaultRequest};
use crate::{Error, store};

/// Options for [`Admin::create_key_version`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KeyVersionOptions {
    /// Key type and size or curve.
    pub spec: KeySpec,
    /// The `created` (and `updated`) time, Unix seconds; the emulator's clock when `None`.
    pub created: Option<i64>,
    /// Whether the version is enabled.
    pub enabled: bool,
    /// `nbf`, Unix seconds.
    pub not_before: Option<i64>,
    /// `exp`, Unix seconds.
    pub expires: Option<i64>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

impl KeyVersionOptions {
    /// An enabled version of this kind of key, created now.
    pub fn new(spec: KeySpec) -> KeyVersionOptions {
        KeyVersionOptions {
            spec,
            created: None,
            enabled: true,
            not_before: None,
            expires: None,
            tags: BTreeMap::new(),
        }
    }

    /// Sets the `created` time (Unix seconds).
    pub fn created(mut self, unix: i64) -> Self {
        self.created = Some(unix);
        self
    }

    /// Sets whether the version is enabled.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets `nbf` (Unix seconds).
    pub fn not_before(mut self, unix: i64) -> Self {
        self.not_before = Some(unix);
        self
    }

    /// Sets `exp` (Unix seconds).
    pub fn expires(mut self, unix: i64) -> Self {
        self.expires = Some(unix);
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.tags.insert(k.into(), v.into());
        self
    }
}

impl Default for KeyVersionOptions {
    fn default() -> Self {
        KeyVersionOptions::new(KeySpec::RSA_2048)
    }
}

/// Options for [`Admin::create_certificate_version`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CertificateVersionOptions {
    /// The subject, `CN=…`; the certificate's previous policy (or `CN={name}`) when `None`.
    pub subject: Option<String>,
    /// Key type and size or curve; the previous policy's (or RSA 2048) when `None`.
    pub spec: Option<KeySpec>,
    /// Whether the key is exportable (its secret holds the private key); default true.
    pub exportable: Option<bool>,
    /// `application/x-pkcs12` (default) or `application/x-pem-file`.
    pub content_type: Option<String>,
    /// Validity in months (default 12).
    pub validity_months: Option<u32>,
    /// The `created` time and the certificate's `notBefore`, Unix seconds; now when `None`.
    pub created: Option<i64>,
    /// Whether the version is enabled.
    pub enabled: bool,
}

impl CertificateVersionOptions {
    /// An enabled version with the certificate's current policy, created now.
    pub fn new() -> CertificateVersionOptions {
        CertificateVersionOptions {
            subject: None,
            spec: None,
            exportable: None,
            content_type: None,
            validity_months: None,
            created: None,
            enabled: true,
        }
    }

    /// Sets the subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the key type.
    pub fn key(mut self, spec: KeySpec) -> Self {
        self.spec = Some(spec);
        self
    }

    /// Sets whether the key is exportable.
    pub fn exportable(mut self, exportable: bool) -> Self {
        self.exportable = Some(exportable);
        self
    }

    /// Sets the secret's content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets the validity in months.
    pub fn validity_months(mut self, months: u32) -> Self {
        self.validity_months = Some(months);
        self
    }

    /// Sets the `created` time (Unix seconds).
    pub fn created(mut self, unix: i64) -> Self {
        self.created = Some(unix);
        self
    }

    /// Sets whether the version is enabled.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    fn policy(&self) -> PolicyRequest {
        let (kty, key_size, crv) = match self.spec {
            Some(KeySpec::Rsa(bits)) => (Some("RSA".to_string()), Some(bits), None),
            Some(KeySpec::Ec(c)) => (Some("EC".to_string()), None, Some(c.name().to_string())),
            None => (None, None, None),
        };
        PolicyRequest {
            key_props: KeyProps {
                exportable: self.exportable,
                kty,
                key_size,
                crv,
                reuse_key: None,
            },
            secret_props: SecretProps {
                content_type: self.content_type.clone(),
            },
            x509_props: X509Props {
                subject: self.subject.clone(),
                validity_months: self.validity_months,
                ..X509Props::default()
            },
            issuer: None::<IssuerRef>,
        }
    }
}

impl Default for CertificateVersionOptions {
    fn default() -> Self {
        CertificateVersionOptions::new()
    }
}

/// A version created through the admin API.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VersionInfo {
    /// The object's name.
    pub name: String,
    /// The version (32 lowercase hex).
    pub version: String,
    /// The absolute id (`https://{vault}.vault.localhost:{port}/keys/{name}/{version}` or
    /// `/certificates/…`).
    pub id: String,
    /// The `created` time, Unix seconds.
    pub created: i64,
    /// The certificate's `x5t` (certificates only).
    pub x5t: Option<String>,
    /// The KeyBundle or CertificateBundle, as `GET` answers it.
    pub bundle: Value,
}

fn refused(e: VaultError) -> Error {
    Error::Refused {
        code: e.code.to_string(),
        message: e.message,
    }
}

/// Rust-side control of a running emulator.
#[derive(Debug, Clone)]
pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    pub(crate) fn new(shared: Arc<Shared>) -> Admin {
        Admin { shared }
    }

    /// The request context of an admin-made object in `vault`: ids as the vault's clients
    /// see them.
    fn vault_request(&self, vault: &str) -> VaultRequest {
        VaultRequest {
            vault: vault.to_ascii_lowercase(),
            base: format!(
                "https://{}.vault.localhost:{}",
                vault.to_ascii_lowercase(),
                self.shared.port
            ),
            query: BTreeMap::new(),
        }
    }

    /// The emulator's current time, Unix seconds.
    pub fn now(&self) -> i64 {
        self.shared.clock.now()
    }

    /// The emulator's clock offset from the real time, whole seconds.
    pub fn clock_offset_seconds(&self) -> i64 {
        self.shared.clock.offset_seconds()
    }

    /// Sets the emulator's clock (Unix seconds); it keeps running from there.
    pub fn set_clock(&self, unix_seconds: i64) {
        self.shared.clock.set(unix_seconds);
    }

    /// Moves the emulator's clock forward.
    pub fn advance_clock(&self, by: Duration) {
        self.shared
            .clock
            .advance(i64::try_from(by.as_secs()).unwrap_or(i64::MAX));
    }

    /// Freezes the emulator's clock where it is (`true`), or lets it run on from there
    /// (`false`). While frozen it moves only by [`Admin::set_clock`] and
    /// [`Admin::advance_clock`]: a test counting requests in a 10-second window never sees
    /// the window end on its own.
    pub fn freeze_clock(&self, frozen: bool) {
        self.shared.clock.freeze(frozen);
    }

    /// Whether the emulator's clock is frozen.
    pub fn clock_frozen(&self) -> bool {
        self.shared.clock.is_frozen()
    }

    /// Moves the emulator's clock by a signed number of seconds.
    pub fn shift_clock(&self, seconds: i64) {
        self.shared.clock.advance(seconds);
    }

    /// Creates a key version (in vault `vault`, created if new) with a chosen `created` time.
    pub fn create_key_version(
        &self,
        vault: &str,
        name: &str,
        opts: KeyVersionOptions,
    ) -> Result<VersionInfo, Error> {
        crate::vault::check_name(name).map_err(refused)?;
        let req = self.vault_request(vault);
        let created = opts.created.unwrap_or_else(|| self.shared.clock.now());
        let mut kc = KeyCreate::software(opts.spec);
        kc.attributes.enabled = Some(opts.enabled);
        kc.attributes.nbf = opts.not_before.map(Some);
        kc.attributes.exp = opts.expires.map(Some);
        kc.tags = opts
            .tags
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let bundle = create_key(&self.shared, &req, name, &kc, created).map_err(refused)?;
        let id = bundle
            .key
            .get("kid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(VersionInfo {
            name: name.to_string(),
            version: id.rsplit('/').next().unwrap_or_default().to_string(),
            id,
            created,
            x5t: None,
            bundle: serde_json::to_value(&bundle).map_err(|e| Error::State(e.to_string()))?,
        })
    }

    /// Creates a certificate version (with its key and secret, same name and version) with a
    /// chosen `created` time, which is also the certificate's `notBefore`.
    pub fn create_certificate_version(
        &self,
        vault: &str,
        name: &str,
        opts: CertificateVersionOptions,
    ) -> Result<VersionInfo, Error> {
        crate::vault::check_name(name).map_err(refused)?;
        let req = self.vault_request(vault);
        let created = opts.created.unwrap_or_else(|| self.shared.clock.now());
        let previous = current_policy(&self.shared, &req.vault, name);
        let mut policy = opts.policy();
        if previous.is_none() && opts.subject.is_none() {
            policy.x509_props.subject = Some(format!("CN={name}"));
        }
        let policy = parse_policy(&policy, previous.as_ref(), created).map_err(refused)?;
        let version = issue_certificate(
            &self.shared,
            &req.vault,
            name,
            policy,
            created,
            opts.enabled,
            Tags::new(),
        )
        .map_err(refused)?;
        let mut store = lock(&self.shared.store);
        if let Some(op) = store
            .vault(&req.vault)
            .certificates
            .get_mut(name)
            .and_then(|c| c.pending.as_mut())
        {
            op.completed = true;
        }
        let cert = find_certificate(&store, &req.vault, name).map_err(refused)?;
        let cv = find_cert_version(cert, name, &version).map_err(refused)?;
        let bundle = certificate_bundle(None, cv, &req, name);
        Ok(VersionInfo {
            name: name.to_string(),
            id: req.id("certificates", name, &version),
            version,
            created,
            x5t: Some(crate::certs::x5t(&cv.cer)),
            bundle: serde_json::to_value(&bundle).map_err(|e| Error::State(e.to_string()))?,
        })
    }

    /// Enables or disables one version of a key, and of the certificate and secret of the same
    /// name and version when they exist. Returns whether anything matched.
    pub fn set_version_enabled(
        &self,
        vault: &str,
        name: &str,
        version: &str,
        enabled: bool,
    ) -> bool {
        let now = self.shared.clock.now();
        let mut store = lock(&self.shared.store);
        let v = store.vault(vault);
        let mut found = set_key_and_secret_enabled(v, name, version, enabled, now);
        if let Some(c) = v
            .certificates
            .get_mut(name)
            .and_then(|c| c.versions.iter_mut().find(|c| c.version == version))
        {
            c.attributes.set_enabled(enabled, now);
            found = true;
        }
        self.shared.persist(&store);
        found
    }

    /// Registers an app, or adds the credentials of `app` to the app with its client id.
    pub fn register_app(&self, app: App) -> Result<(), Error> {
        self.shared.identity.directory_mut().add_app(app)
    }

    /// The registered apps' client ids.
    pub fn apps(&self) -> Vec<String> {
        self.shared.identity.directory().client_ids()
    }

    /// Registers an API (replacing one with the same first identifier URI).
    pub fn register_api(&self, api: Api) -> Result<(), Error> {
        self.shared.identity.directory_mut().add_api(api)
    }

    /// The registered APIs, Key Vault first.
    pub fn apis(&self) -> Vec<Api> {
        self.shared.identity.directory().apis()
    }

    /// Registers a tenant besides the default one.
    pub fn add_tenant(&self, tenant: &str) -> Result<(), Error> {
        self.shared.identity.directory_mut().add_tenant(tenant)
    }

    /// Assigns a user-assigned managed identity; refused when one of its ids is taken.
    pub fn assign_user_identity(&self, identity: ManagedIdentity) -> Result<(), Error> {
        self.shared
            .identity
            .directory_mut()
            .add_user_identity(identity)
    }

    /// A service-account token of the emulated cluster for `namespace`/`name`, for
    /// `audience` (`api://AzureADTokenExchange` when `None`), valid for an hour from the
    /// emulator's clock.
    pub fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audience: Option<&str>,
    ) -> Result<String, Error> {
        self.shared.identity.kubernetes.token(
            namespace,
            name,
            audience,
            self.shared.clock.now(),
            PROJECTED_LIFETIME,
        )
    }

    /// Writes a projected service-account token to `path` (replacing the file atomically, as
    /// the kubelet does).
    pub fn write_service_account_token(
        &self,
        path: &Path,
        namespace: &str,
        name: &str,
    ) -> Result<(), Error> {
        let token = self.service_account_token(namespace, name, None)?;
        store::write_atomic(path, token.as_bytes())
    }

    /// The service limits in force.
    pub fn vault_limits(&self) -> VaultLimits {
        self.shared.limiter.limits()
    }

    /// Replaces the service limits; every window starts afresh.
    pub fn set_vault_limits(&self, limits: VaultLimits) {
        self.shared.limiter.set(limits);
    }

    /// Injects a fault; it applies until cleared or until its `times` run out.
    pub fn inject_fault(&self, fault: Fault) -> FaultId {
        self.shared.faults.add(fault)
    }

    /// Clears one fault; false when it was not (or no longer) there.
    pub fn clear_fault(&self, id: FaultId) -> bool {
        self.shared.faults.remove(id)
    }

    /// Clears every fault.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// The active faults, oldest first.
    pub fn faults(&self) -> Vec<(FaultId, Fault)> {
        self.shared.faults.list()
    }

    /// Request counts per operation since start or the last reset.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.counters).clone()
    }

    /// The request count of one operation (`keys.sign`), or of `throttled` requests.
    pub fn counter(&self, operation: &str) -> u64 {
        lock(&self.shared.counters)
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Resets every counter to zero.
    pub fn reset_counters(&self) {
        lock(&self.shared.counters).clear();
    }

    /// Adds a new Entra signing key that signs from now on (the old ones stay published);
    /// returns its `kid`.
    pub fn rotate_token_signing_key(&self) -> Result<String, Error> {
        let material = KeyMaterial::generate(KeySpec::RSA_2048)?;
        let kid = self.shared.identity.add_signing_key(&material)?;
        let mut store = lock(&self.shared.store);
        store.entra_keys.push(material);
        self.shared.persist(&store);
        Ok(kid)
    }

    /// The `kid` of the key that signs new access tokens.
    pub fn token_signing_kid(&self) -> Option<String> {
        self.shared.identity.active_kid()
    }
}
