//! Control of a running emulator, for tests and development: the clock, versions created with a
//! chosen `created` time, injected faults and per-operation request counters. [`Admin`] is the
//! Rust side; the same controls answer over HTTP under `/_admin/` (loopback clients only):
//!
//! | method and path | body / answer |
//! | --- | --- |
//! | `GET /_admin/clock` | `{"now": unix, "offset_seconds": n}` |
//! | `POST /_admin/clock` | `{"now": unix}` or `{"advance": seconds}` |
//! | `POST /_admin/vaults/{vault}/keys/{name}/versions` | `{"kty","key_size","crv","created","enabled","nbf","exp"}` → version |
//! | `POST /_admin/vaults/{vault}/certificates/{name}/versions` | `{"subject","kty","key_size","crv","exportable","content_type","validity_months","created","enabled"}` → version |
//! | `POST /_admin/vaults/{vault}/versions/{name}/{version}` | `{"enabled": bool}` (key, certificate and secret of that version) |
//! | `GET /_admin/faults`, `POST /_admin/faults`, `DELETE /_admin/faults[/{id}]` | `{"route","vault","kind":"latency"\|"status"\|"throttle"\|"outage","latency_ms","status","retry_after","times"}` |
//! | `GET /_admin/counters`, `DELETE /_admin/counters` | `{"keys.sign": 3, …}` |
//! | `POST /_admin/entra/signing-keys` | rotates the token signing key → `{"kid"}` |
//! | `POST /_admin/entra/clients/{id}/certificates` | `{"cer": base64 DER}` |
//! | `POST /_admin/entra/clients/{id}/secrets` | `{"secret": "…"}` |
//!
//! Operation names: `keys.create`, `keys.rotate`, `keys.versions`, `keys.get`, `keys.update`,
//! `keys.sign`, `keys.verify`, `keys.list`, `certificates.create`, `certificates.pending`,
//! `certificates.versions`, `certificates.get`, `certificates.update`, `certificates.policy`,
//! `certificates.list`, `secrets.set`, `secrets.get`, `secrets.versions`, `secrets.update`,
//! `secrets.list`, `entra.token`, `entra.keys`, `entra.discovery`, `msi.token`, `unknown`.
//! A fault's route is an operation name, a prefix (`keys` or `keys.*`) or `*` for every route.
//!
//! Counters count every request routed to an operation except the vault's 401 challenges
//! (requests without a valid token), including requests answered by an injected fault.
//! Faults are checked before authentication, so a fault also hits a client's first,
//! unauthenticated request.

// An `Err` here is a ready HTTP response, built at most once per request: boxing it would
// only add an allocation.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::Error;
use crate::crypto::{KeyMaterial, KeySpec};
use crate::server::{Req, Resp, Shared, error_response, json_response, lock};
use crate::vault::{KeyCreate, VaultError};

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// Waits this long, then answers normally.
    Latency(Duration),
    /// Answers with this status (for example 500 or 503) and a service-shaped error body.
    Status(u16),
    /// Answers 429 `Throttled` (`VaultRequestTypeLimitReached`), with `Retry-After` when set.
    Throttle {
        /// The `Retry-After` header, in whole seconds; `None` sends none, as seen in real life.
        retry_after: Option<Duration>,
    },
    /// Closes the connection without an answer.
    Outage,
}

/// A fault injected on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fault {
    /// An operation name (`keys.sign`), a prefix (`keys`, `keys.*`) or `*`.
    pub route: String,
    /// Only requests to this vault (any vault when `None`).
    pub vault: Option<String>,
    /// What happens.
    pub kind: FaultKind,
    /// For this many requests, then the fault clears itself; until cleared when `None`.
    pub times: Option<u32>,
}

impl Fault {
    /// A fault on `route` until cleared.
    pub fn new(route: impl Into<String>, kind: FaultKind) -> Fault {
        Fault {
            route: route.into(),
            vault: None,
            kind,
            times: None,
        }
    }

    /// Applies to the next `n` matching requests only.
    pub fn times(mut self, n: u32) -> Fault {
        self.times = Some(n);
        self
    }

    /// Applies to requests to this vault only.
    pub fn vault(mut self, vault: impl Into<String>) -> Fault {
        self.vault = Some(vault.into().to_ascii_lowercase());
        self
    }

    fn matches(&self, operation: &str, vault: Option<&str>) -> bool {
        if let Some(v) = &self.vault
            && vault != Some(v.as_str())
        {
            return false;
        }
        let r = self.route.trim_end_matches(".*");
        r.is_empty()
            || r == "*"
            || r == operation
            || operation
                .strip_prefix(r)
                .is_some_and(|rest| rest.starts_with('.'))
    }

    fn from_json(v: &Value) -> Result<Fault, String> {
        let route = v
            .get("route")
            .and_then(Value::as_str)
            .unwrap_or("*")
            .to_string();
        let kind = match v.get("kind").and_then(Value::as_str) {
            Some("latency") => FaultKind::Latency(Duration::from_millis(
                v.get("latency_ms").and_then(Value::as_u64).unwrap_or(0),
            )),
            Some("status") => {
                let s = v.get("status").and_then(Value::as_u64).unwrap_or(503);
                FaultKind::Status(u16::try_from(s).map_err(|_| "status out of range")?)
            }
            Some("throttle") => FaultKind::Throttle {
                retry_after: v
                    .get("retry_after")
                    .and_then(Value::as_u64)
                    .map(Duration::from_secs),
            },
            Some("outage") => FaultKind::Outage,
            other => {
                return Err(format!(
                    "unknown fault kind {other:?}: use latency, status, throttle or outage"
                ));
            }
        };
        let times = match v.get("times").and_then(Value::as_u64) {
            Some(n) => Some(u32::try_from(n).map_err(|_| "times out of range")?),
            None => None,
        };
        let mut f = Fault {
            route,
            vault: None,
            kind,
            times,
        };
        if let Some(vault) = v.get("vault").and_then(Value::as_str) {
            f = f.vault(vault);
        }
        Ok(f)
    }

    fn to_json(&self, id: FaultId) -> Value {
        let mut v =
            json!({"id": id.0, "route": self.route, "vault": self.vault, "times": self.times});
        match &self.kind {
            FaultKind::Latency(d) => {
                v["kind"] = "latency".into();
                v["latency_ms"] = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).into();
            }
            FaultKind::Status(s) => {
                v["kind"] = "status".into();
                v["status"] = (*s).into();
            }
            FaultKind::Throttle { retry_after } => {
                v["kind"] = "throttle".into();
                v["retry_after"] = retry_after.map(|d| d.as_secs()).into();
            }
            FaultKind::Outage => v["kind"] = "outage".into(),
        }
        v
    }
}

/// Identifies an injected fault, to clear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultId(pub u64);

/// What the server does for a faulted request.
#[derive(Debug)]
pub(crate) enum FaultAction {
    Delay(Duration),
    Respond(Resp),
    Drop,
}

/// The injected faults, in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    inner: Mutex<(u64, Vec<(FaultId, Fault)>)>,
}

impl Faults {
    fn add(&self, fault: Fault) -> FaultId {
        let mut g = lock(&self.inner);
        g.0 += 1;
        let id = FaultId(g.0);
        g.1.push((id, fault));
        id
    }

    fn remove(&self, id: FaultId) -> bool {
        let mut g = lock(&self.inner);
        let before = g.1.len();
        g.1.retain(|(i, _)| *i != id);
        before != g.1.len()
    }

    fn clear(&self) {
        lock(&self.inner).1.clear();
    }

    fn list(&self) -> Vec<(FaultId, Fault)> {
        lock(&self.inner).1.clone()
    }

    /// The first fault matching this request, consuming one of its `times`.
    pub(crate) fn take(&self, operation: &str, vault: Option<&str>) -> Option<FaultAction> {
        let mut g = lock(&self.inner);
        let idx = g.1.iter().position(|(_, f)| f.matches(operation, vault))?;
        let kind = g.1.get(idx).map(|(_, f)| f.kind.clone())?;
        if let Some((_, f)) = g.1.get_mut(idx)
            && let Some(n) = f.times.as_mut()
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.1.remove(idx);
            }
        }
        drop(g);
        Some(match kind {
            FaultKind::Latency(d) => FaultAction::Delay(d),
            FaultKind::Status(s) => {
                let status = StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                let code = match status {
                    StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
                    StatusCode::INTERNAL_SERVER_ERROR => "InternalServerError",
                    StatusCode::BAD_GATEWAY => "BadGateway",
                    StatusCode::GATEWAY_TIMEOUT => "GatewayTimeout",
                    _ => "InjectedFault",
                };
                FaultAction::Respond(error_response(
                    status,
                    code,
                    "The emulator answered with an injected fault.",
                ))
            }
            FaultKind::Throttle { retry_after } => {
                let mut resp = error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Throttled",
                    "Operations per second is over the limit. Reason: VaultRequestTypeLimitReached",
                );
                if let Some(d) = retry_after
                    && let Ok(v) = HeaderValue::from_str(&d.as_secs().to_string())
                {
                    resp.headers_mut().insert(http::header::RETRY_AFTER, v);
                }
                FaultAction::Respond(resp)
            }
            FaultKind::Outage => FaultAction::Drop,
        })
    }
}

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

    fn policy_json(&self) -> Value {
        let mut key_props = Map::new();
        match self.spec {
            Some(KeySpec::Rsa(bits)) => {
                key_props.insert("kty".into(), "RSA".into());
                key_props.insert("key_size".into(), bits.into());
            }
            Some(KeySpec::Ec(c)) => {
                key_props.insert("kty".into(), "EC".into());
                key_props.insert("crv".into(), c.name().into());
            }
            None => {}
        }
        if let Some(e) = self.exportable {
            key_props.insert("exportable".into(), e.into());
        }
        let mut x509 = Map::new();
        if let Some(s) = &self.subject {
            x509.insert("subject".into(), s.clone().into());
        }
        if let Some(m) = self.validity_months {
            x509.insert("validity_months".into(), m.into());
        }
        let mut p = json!({"key_props": key_props, "x509_props": x509});
        if let Some(ct) = &self.content_type {
            p["secret_props"] = json!({"contentType": ct});
        }
        p
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

/// Rust-side control of a running emulator (clock, versions, faults, counters).
#[derive(Debug, Clone)]
pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    pub(crate) fn new(shared: Arc<Shared>) -> Admin {
        Admin { shared }
    }

    fn base(&self, vault: &str) -> String {
        format!(
            "https://{}.vault.localhost:{}",
            vault.to_ascii_lowercase(),
            self.shared.port
        )
    }

    /// The emulator's current time, Unix seconds.
    pub fn now(&self) -> i64 {
        self.shared.clock.now()
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
        let vault = vault.to_ascii_lowercase();
        let created = opts.created.unwrap_or_else(|| self.shared.clock.now());
        let mut attributes = json!({"enabled": opts.enabled});
        if let Some(n) = opts.not_before {
            attributes["nbf"] = n.into();
        }
        if let Some(e) = opts.expires {
            attributes["exp"] = e.into();
        }
        let kc = KeyCreate {
            kty: match opts.spec {
                KeySpec::Rsa(_) => "RSA".into(),
                KeySpec::Ec(_) => "EC".into(),
            },
            spec: opts.spec,
            key_ops: crate::vault::default_key_ops(opts.spec),
            attributes,
            tags: opts
                .tags
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        };
        let base = self.base(&vault);
        let bundle =
            crate::vault::create_key(&self.shared, &vault, name, &kc, created, false, &base)
                .map_err(refused)?;
        let id = bundle["key"]["kid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(VersionInfo {
            name: name.to_string(),
            version: id.rsplit('/').next().unwrap_or_default().to_string(),
            id,
            created,
            x5t: None,
            bundle,
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
        let vault = vault.to_ascii_lowercase();
        let created = opts.created.unwrap_or_else(|| self.shared.clock.now());
        let previous = crate::vault::current_policy(&self.shared, &vault, name);
        let mut pj = opts.policy_json();
        if previous.is_none() && opts.subject.is_none() {
            pj["x509_props"]["subject"] = format!("CN={name}").into();
        }
        let policy =
            crate::vault::parse_policy(&pj, previous.as_ref(), created).map_err(refused)?;
        let version = crate::vault::issue_certificate(
            &self.shared,
            &vault,
            name,
            policy,
            created,
            opts.enabled,
            Map::new(),
        )
        .map_err(refused)?;
        {
            let mut store = lock(&self.shared.store);
            if let Some(op) = store
                .vault(&vault)
                .certificates
                .get_mut(name)
                .and_then(|c| c.pending.as_mut())
            {
                op.completed = true;
            }
        }
        let base = self.base(&vault);
        let store = lock(&self.shared.store);
        let not_found = || Error::Refused {
            code: "CertificateNotFound".into(),
            message: name.to_string(),
        };
        let cert = store
            .vaults
            .get(&vault)
            .and_then(|v| v.certificates.get(name))
            .ok_or_else(not_found)?;
        let cv = cert
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(not_found)?;
        let bundle = json!({
            "id": format!("{base}/certificates/{name}/{version}"),
            "kid": format!("{base}/keys/{name}/{version}"),
            "sid": format!("{base}/secrets/{name}/{version}"),
            "x5t": crate::certs::x5t(&cv.cer),
            "cer": base64::engine::general_purpose::STANDARD.encode(&cv.cer),
            "attributes": cv.attributes.to_json(),
        });
        Ok(VersionInfo {
            name: name.to_string(),
            version: version.clone(),
            id: format!("{base}/certificates/{name}/{version}"),
            created,
            x5t: Some(crate::certs::x5t(&cv.cer)),
            bundle,
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
        let mut found = crate::vault::set_key_and_secret_enabled(v, name, version, enabled, now);
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

    /// The request count of one operation (`keys.sign`).
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
        let kid = self.shared.entra.add_signing_key(&material)?;
        let mut store = lock(&self.shared.store);
        store.entra_keys.push(material);
        self.shared.persist(&store);
        Ok(kid)
    }

    /// The `kid` of the key that signs new access tokens.
    pub fn token_signing_kid(&self) -> Option<String> {
        self.shared.entra.active_kid()
    }
}

fn bad_parameter(message: &str) -> Resp {
    error_response(StatusCode::BAD_REQUEST, "BadParameter", message)
}

fn body(req: &Req) -> Result<Value, Resp> {
    if req.body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(&req.body).map_err(|e| bad_parameter(&format!("invalid JSON: {e}")))
}

/// The key type of an admin request body: `kty` (or `default_kty`), `key_size`, `crv`.
fn key_spec_of(b: &Value, default_kty: &str) -> Result<KeySpec, Resp> {
    crate::vault::key_spec(
        b.get("kty").and_then(Value::as_str).unwrap_or(default_kty),
        b.get("key_size").and_then(Value::as_u64),
        b.get("crv").and_then(Value::as_str),
    )
    .map_err(|e| e.response())
}

fn admin_error(e: &Error) -> Resp {
    match e {
        Error::Refused { code, message } => {
            let status = if code.ends_with("NotFound") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            error_response(status, code, message)
        }
        other => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &other.to_string(),
        ),
    }
}

fn version_json(v: &VersionInfo) -> Value {
    json!({"name": v.name, "version": v.version, "id": v.id, "created": v.created, "x5t": v.x5t, "bundle": v.bundle})
}

/// Handles `/_admin/…` (the caller has checked the peer is loopback).
pub(crate) fn handle_http(shared: &Arc<Shared>, req: &Req) -> Resp {
    match handle_http_inner(shared, req) {
        Ok(r) | Err(r) => r,
    }
}

fn handle_http_inner(shared: &Arc<Shared>, req: &Req) -> Result<Resp, Resp> {
    let admin = Admin::new(shared.clone());
    let seg: Vec<&str> = req
        .path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_i64);
    let enabled = |v: &Value| v.get("enabled").and_then(Value::as_bool).unwrap_or(true);
    match (seg.as_slice(), &req.method) {
        (["_admin", "clock"], &Method::GET) => {
            ok(json!({"now": admin.now(), "offset_seconds": shared.clock.offset_seconds()}))
        }
        (["_admin", "clock"], &Method::POST | &Method::PUT) => {
            let b = body(req)?;
            if let Some(now) = num(&b, "now") {
                admin.set_clock(now);
            } else if let Some(by) = num(&b, "advance") {
                admin.shift_clock(by);
            } else {
                return Err(bad_parameter(
                    "send {\"now\": unix} or {\"advance\": seconds}",
                ));
            }
            ok(json!({"now": admin.now()}))
        }
        (["_admin", "vaults", vault, "keys", name, "versions"], &Method::POST) => {
            let b = body(req)?;
            let mut o = KeyVersionOptions::new(key_spec_of(&b, "RSA")?).enabled(enabled(&b));
            o.created = num(&b, "created");
            o.not_before = num(&b, "nbf");
            o.expires = num(&b, "exp");
            let v = admin
                .create_key_version(vault, name, o)
                .map_err(|e| admin_error(&e))?;
            ok(version_json(&v))
        }
        (["_admin", "vaults", vault, "certificates", name, "versions"], &Method::POST) => {
            let b = body(req)?;
            let mut o = CertificateVersionOptions::new().enabled(enabled(&b));
            if let Some(kty) = b.get("kty").and_then(Value::as_str) {
                o.spec = Some(key_spec_of(&b, kty)?);
            }
            o.subject = b.get("subject").and_then(Value::as_str).map(str::to_string);
            o.exportable = b.get("exportable").and_then(Value::as_bool);
            o.content_type = b
                .get("content_type")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.validity_months = b
                .get("validity_months")
                .and_then(Value::as_u64)
                .and_then(|m| u32::try_from(m).ok());
            o.created = num(&b, "created");
            let v = admin
                .create_certificate_version(vault, name, o)
                .map_err(|e| admin_error(&e))?;
            ok(version_json(&v))
        }
        (
            ["_admin", "vaults", vault, "versions", name, version],
            &Method::POST | &Method::PATCH,
        ) => {
            let b = body(req)?;
            let enabled = enabled(&b);
            if admin.set_version_enabled(vault, name, version, enabled) {
                ok(json!({"enabled": enabled}))
            } else {
                Err(error_response(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("no version {name}/{version} in vault {vault}"),
                ))
            }
        }
        (["_admin", "faults"], &Method::GET) => ok(
            json!({"value": admin.faults().iter().map(|(id, f)| f.to_json(*id)).collect::<Vec<_>>()}),
        ),
        (["_admin", "faults"], &Method::POST) => {
            let b = body(req)?;
            let f = Fault::from_json(&b).map_err(|m| bad_parameter(&m))?;
            let id = admin.inject_fault(f.clone());
            ok(f.to_json(id))
        }
        (["_admin", "faults"], &Method::DELETE) => {
            admin.clear_faults();
            ok(json!({"cleared": true}))
        }
        (["_admin", "faults", id], &Method::DELETE) => {
            let id = id
                .parse::<u64>()
                .map_err(|_| bad_parameter("fault ids are numbers"))?;
            ok(json!({"cleared": admin.clear_fault(FaultId(id))}))
        }
        (["_admin", "counters"], &Method::GET) => ok(json!(admin.counters())),
        (["_admin", "counters"], &Method::DELETE) => {
            admin.reset_counters();
            ok(json!({}))
        }
        (["_admin", "entra", "signing-keys"], &Method::POST) => {
            let kid = admin
                .rotate_token_signing_key()
                .map_err(|e| admin_error(&e))?;
            ok(json!({"kid": kid}))
        }
        (["_admin", "entra", "clients", id, "certificates"], &Method::POST) => {
            let b = body(req)?;
            let der = b
                .get("cer")
                .and_then(Value::as_str)
                .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
                .ok_or_else(|| bad_parameter("send {\"cer\": base64 DER}"))?;
            shared
                .entra
                .register_certificate(id, &der)
                .map_err(|e| admin_error(&e))?;
            ok(json!({"client_id": id}))
        }
        (["_admin", "entra", "clients", id, "secrets"], &Method::POST) => {
            let b = body(req)?;
            let secret = b
                .get("secret")
                .and_then(Value::as_str)
                .ok_or_else(|| bad_parameter("send {\"secret\": \"…\"}"))?;
            shared.entra.register_secret(id, secret);
            ok(json!({"client_id": id}))
        }
        _ => Err(error_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no admin route {} {}", req.method, req.path),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_routes_match_operations_prefixes_and_vaults() {
        let f = Fault::new("keys", FaultKind::Outage);
        assert!(f.matches("keys.sign", Some("a")));
        assert!(!f.matches("keysx.sign", None));
        assert!(Fault::new("keys.*", FaultKind::Outage).matches("keys.get", None));
        assert!(Fault::new("*", FaultKind::Outage).matches("entra.token", None));
        let v = Fault::new("keys.sign", FaultKind::Outage).vault("A");
        assert!(v.matches("keys.sign", Some("a")));
        assert!(!v.matches("keys.sign", Some("b")));
        assert!(!v.matches("keys.get", Some("a")));
    }

    #[test]
    fn faults_run_out_after_their_times() {
        let faults = Faults::default();
        faults.add(Fault::new("keys.sign", FaultKind::Status(503)).times(2));
        assert!(
            matches!(faults.take("keys.sign", None), Some(FaultAction::Respond(r)) if r.status() == 503)
        );
        assert!(faults.take("keys.get", None).is_none());
        assert!(faults.take("keys.sign", None).is_some());
        assert!(faults.take("keys.sign", None).is_none());
        assert!(faults.list().is_empty());
    }

    #[test]
    fn fault_json_round_trips() {
        let f = Fault::from_json(&json!({"route": "keys.sign", "kind": "throttle", "retry_after": 2, "times": 1, "vault": "V"})).unwrap();
        assert_eq!(
            f,
            Fault::new(
                "keys.sign",
                FaultKind::Throttle {
                    retry_after: Some(Duration::from_secs(2))
                }
            )
            .times(1)
            .vault("v")
        );
        let j = f.to_json(FaultId(9));
        assert_eq!(Fault::from_json(&j).unwrap(), f);
        assert!(Fault::from_json(&json!({"kind": "boom"})).is_err());
    }
}
