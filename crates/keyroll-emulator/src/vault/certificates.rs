//! Certificates: self-signed issuance through a pending operation (first `inProgress`, then
//! `completed`), with the key and the secret of the same name and version; list, versions,
//! get, policy and update (enabling or disabling a version also does so to its key and
//! secret).
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! use keyroll_emulator::CertificateVersionOptions;
//! let emu = keyroll_emulator::Emulator::builder().start().await?;
//! let v = emu.admin().create_certificate_version("v", "tls", CertificateVersionOptions::new())?;
//! assert!(v.x5t.is_some());
//! # Ok(()) }
//! ```

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::certs;
use crate::crypto::{KeyMaterial, KeySpec};
use crate::server::{Shared, lock};
use crate::store::{
    Attributes, CertPolicy, CertVersion, Certificate, KeyVersion, PendingOperation, SecretVersion,
    Store, Vault, new_version,
};
use crate::vault::keys::key_spec;
use crate::vault::{
    AttributesView, Body, Page, Tags, VResult, VaultError, VaultRequest, check_name, page,
    tags_view, version_index,
};

/// A certificate policy in a request; what is missing comes from the previous policy or the
/// defaults.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PolicyRequest {
    #[serde(default)]
    pub(crate) key_props: KeyProps,
    #[serde(default)]
    pub(crate) secret_props: SecretProps,
    #[serde(default)]
    pub(crate) x509_props: X509Props,
    pub(crate) issuer: Option<IssuerRef>,
}

/// `key_props`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct KeyProps {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exportable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kty: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reuse_key: Option<bool>,
}

/// `secret_props`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SecretProps {
    #[serde(rename = "contentType", skip_serializing_if = "Option::is_none")]
    pub(crate) content_type: Option<String>,
}

/// `x509_props`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct X509Props {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sans: Option<Sans>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ekus: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key_usage: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) validity_months: Option<u32>,
}

/// `x509_props.sans`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Sans {
    #[serde(default)]
    pub(crate) dns_names: Vec<String>,
}

/// `issuer`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct IssuerRef {
    pub(crate) name: Option<String>,
}

/// `POST /certificates/{name}/create`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CreateCertificateRequest {
    #[serde(default)]
    policy: PolicyRequest,
    attributes: Option<EnabledPatch>,
    #[serde(default)]
    tags: Tags,
}

/// `PATCH /certificates/{name}/{version}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UpdateCertificateRequest {
    policy: Option<PolicyRequest>,
    attributes: Option<EnabledPatch>,
    tags: Option<Tags>,
}

/// A certificate's `nbf` and `exp` come from its X.509 validity: only `enabled` changes.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EnabledPatch {
    enabled: Option<bool>,
}

/// Parses a certificate policy, filling what is missing from `previous` or the defaults.
pub(crate) fn parse_policy(
    p: &PolicyRequest,
    previous: Option<&CertPolicy>,
    now: i64,
) -> VResult<CertPolicy> {
    let k = &p.key_props;
    let x = &p.x509_props;
    let issuer = p
        .issuer
        .as_ref()
        .and_then(|i| i.name.clone())
        .or_else(|| previous.map(|pp| pp.issuer.clone()))
        .unwrap_or_else(|| "Self".into());
    if !issuer.eq_ignore_ascii_case("self") {
        return Err(VaultError::bad(format!(
            "Issuer {issuer} is not supported by the emulator: only self-signed (\"Self\") certificates are issued."
        )));
    }
    let kty = k
        .kty
        .clone()
        .or_else(|| previous.map(|pp| pp.kty.clone()))
        .unwrap_or_else(|| "RSA".into());
    let key_size = k.key_size.or_else(|| previous.and_then(|pp| pp.key_size));
    let crv = k
        .crv
        .clone()
        .or_else(|| previous.and_then(|pp| pp.crv.clone()));
    let spec = key_spec(&kty, key_size.map(u64::from), crv.as_deref())?;
    let Some(subject) = x
        .subject
        .clone()
        .or_else(|| previous.map(|pp| pp.subject.clone()))
    else {
        return Err(VaultError::bad(
            "Property policy.x509_props.subject is required.",
        ));
    };
    let content_type = p
        .secret_props
        .content_type
        .clone()
        .or_else(|| previous.map(|pp| pp.content_type.clone()))
        .unwrap_or_else(|| certs::PKCS12.into());
    if content_type != certs::PKCS12 && content_type != certs::PEM {
        return Err(VaultError::bad(format!(
            "Invalid contentType {content_type}: use application/x-pkcs12 or application/x-pem-file."
        )));
    }
    let default_usage: &[&str] = match spec {
        KeySpec::Rsa(_) => &["digitalSignature", "keyEncipherment"],
        KeySpec::Ec(_) => &["digitalSignature"],
    };
    let strings = |s: &[&str]| s.iter().map(|v| (*v).to_string()).collect::<Vec<_>>();
    Ok(CertPolicy {
        exportable: k
            .exportable
            .or_else(|| previous.map(|pp| pp.exportable))
            .unwrap_or(true),
        kty,
        key_size: match spec {
            KeySpec::Rsa(bits) => Some(bits),
            KeySpec::Ec(_) => None,
        },
        crv: match spec {
            KeySpec::Ec(c) => Some(c.name().to_string()),
            KeySpec::Rsa(_) => None,
        },
        reuse_key: k
            .reuse_key
            .or_else(|| previous.map(|pp| pp.reuse_key))
            .unwrap_or(false),
        content_type,
        subject,
        dns_names: x
            .sans
            .as_ref()
            .map(|s| s.dns_names.clone())
            .or_else(|| previous.map(|pp| pp.dns_names.clone()))
            .unwrap_or_default(),
        ekus: x
            .ekus
            .clone()
            .or_else(|| previous.map(|pp| pp.ekus.clone()))
            .unwrap_or_else(|| strings(&["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"])),
        key_usage: x
            .key_usage
            .clone()
            .or_else(|| previous.map(|pp| pp.key_usage.clone()))
            .unwrap_or_else(|| strings(default_usage)),
        validity_months: x
            .validity_months
            .or_else(|| previous.map(|pp| pp.validity_months))
            .unwrap_or(12)
            .clamp(1, 1200),
        issuer: "Self".into(),
        created: previous.map_or(now, |pp| pp.created),
        updated: now,
    })
}

/// A certificate policy as the service answers it.
#[derive(Debug, Serialize)]
pub(crate) struct PolicyView {
    id: String,
    key_props: KeyProps,
    secret_props: SecretProps,
    x509_props: X509View,
    lifetime_actions: Value,
    issuer: IssuerRef,
    attributes: PolicyAttributes,
}

#[derive(Debug, Serialize)]
struct X509View {
    subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sans: Option<Sans>,
    ekus: Vec<String>,
    key_usage: Vec<String>,
    validity_months: u32,
    basic_constraints: Value,
}

#[derive(Debug, Serialize)]
struct PolicyAttributes {
    enabled: bool,
    created: i64,
    updated: i64,
}

fn policy_view(p: &CertPolicy, req: &VaultRequest, name: &str) -> PolicyView {
    PolicyView {
        id: format!("{}/certificates/{name}/policy", req.base),
        key_props: KeyProps {
            exportable: Some(p.exportable),
            kty: Some(p.kty.clone()),
            key_size: p.key_size,
            crv: p.crv.clone(),
            reuse_key: Some(p.reuse_key),
        },
        secret_props: SecretProps {
            content_type: Some(p.content_type.clone()),
        },
        x509_props: X509View {
            subject: p.subject.clone(),
            sans: (!p.dns_names.is_empty()).then(|| Sans {
                dns_names: p.dns_names.clone(),
            }),
            ekus: p.ekus.clone(),
            key_usage: p.key_usage.clone(),
            validity_months: p.validity_months,
            basic_constraints: serde_json::json!({"ca": false}),
        },
        lifetime_actions: serde_json::json!([{"trigger": {"lifetime_percentage": 80}, "action": {"action_type": "AutoRenew"}}]),
        issuer: IssuerRef {
            name: Some(p.issuer.clone()),
        },
        attributes: PolicyAttributes {
            enabled: true,
            created: p.created,
            updated: p.updated,
        },
    }
}

/// A CertificateBundle.
#[derive(Debug, Serialize)]
pub(crate) struct CertificateBundle {
    id: String,
    kid: String,
    sid: String,
    x5t: String,
    cer: String,
    attributes: AttributesView,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<PolicyView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Tags>,
}

/// An item of a certificate list.
#[derive(Debug, Serialize)]
pub(crate) struct CertificateItem {
    id: String,
    x5t: String,
    attributes: AttributesView,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Tags>,
}

/// The bundle of one version; with the policy when `cert` is given.
pub(crate) fn certificate_bundle(
    cert: Option<&Certificate>,
    v: &CertVersion,
    req: &VaultRequest,
    name: &str,
) -> CertificateBundle {
    CertificateBundle {
        id: req.id("certificates", name, &v.version),
        kid: req.id("keys", name, &v.version),
        sid: req.id("secrets", name, &v.version),
        x5t: certs::x5t(&v.cer),
        cer: STANDARD.encode(&v.cer),
        attributes: (&v.attributes).into(),
        policy: cert.map(|c| policy_view(&c.policy, req, name)),
        tags: tags_view(&v.tags).cloned(),
    }
}

fn certificate_item(v: &CertVersion, id: String) -> CertificateItem {
    CertificateItem {
        id,
        x5t: certs::x5t(&v.cer),
        attributes: (&v.attributes).into(),
        tags: tags_view(&v.tags).cloned(),
    }
}

/// Enables or disables the key version and the secret version `name`/`version` (the pair
/// behind a certificate version); returns whether either exists.
pub(crate) fn set_key_and_secret_enabled(
    vault: &mut Vault,
    name: &str,
    version: &str,
    enabled: bool,
    now: i64,
) -> bool {
    let mut found = false;
    if let Some(k) = vault
        .keys
        .get_mut(name)
        .and_then(|ks| ks.iter_mut().find(|k| k.version == version))
    {
        k.attributes.set_enabled(enabled, now);
        found = true;
    }
    if let Some(s) = vault
        .secrets
        .get_mut(name)
        .and_then(|ss| ss.iter_mut().find(|s| s.version == version))
    {
        s.attributes.set_enabled(enabled, now);
        found = true;
    }
    found
}

/// The policy of certificate `name`, when it exists: what a new version starts from.
pub(crate) fn current_policy(shared: &Shared, vault: &str, name: &str) -> Option<CertPolicy> {
    lock(&shared.store)
        .vaults
        .get(vault)
        .and_then(|v| v.certificates.get(name))
        .map(|c| c.policy.clone())
}

pub(crate) fn find_certificate<'a>(
    store: &'a Store,
    vault: &str,
    name: &str,
) -> VResult<&'a Certificate> {
    store
        .vaults
        .get(vault)
        .and_then(|v| v.certificates.get(name))
        .filter(|c| !c.versions.is_empty())
        .ok_or_else(|| VaultError::not_found("CertificateNotFound", "certificate", name, ""))
}

pub(crate) fn find_cert_version<'a>(
    cert: &'a Certificate,
    name: &str,
    version: &str,
) -> VResult<&'a CertVersion> {
    version_index(&cert.versions, version, |v| &v.version)
        .and_then(|i| cert.versions.get(i))
        .ok_or_else(|| VaultError::not_found("CertificateNotFound", "certificate", name, version))
}

/// Issues a new version of a certificate (and of its key and secret, same name and version)
/// created at `created`. Returns the version.
pub(crate) fn issue_certificate(
    shared: &Shared,
    vault: &str,
    name: &str,
    policy: CertPolicy,
    created: i64,
    enabled: bool,
    tags: Tags,
) -> VResult<String> {
    let spec = key_spec(
        &policy.kty,
        policy.key_size.map(u64::from),
        policy.crv.as_deref(),
    )?;
    let reused = if policy.reuse_key {
        lock(&shared.store)
            .vaults
            .get(vault)
            .and_then(|v| v.keys.get(name))
            .and_then(|ks| ks.last())
            .filter(|k| k.material.spec == spec)
            .map(|k| k.material.clone())
    } else {
        None
    };
    let material = match reused {
        Some(m) => m,
        None => KeyMaterial::generate(spec)?,
    };
    let not_after = certs::add_months(created, policy.validity_months);
    let (cer, csr) = certs::self_signed(&material, &policy, created, not_after)?;
    let secret = certs::secret_value(&policy.content_type, &material, &cer, policy.exportable)?;
    let version = new_version();
    let mut attributes = Attributes::new(created);
    attributes.enabled = enabled;
    attributes.nbf = Some(created);
    attributes.exp = Some(not_after);
    let key_ops = crate::vault::keys::default_key_ops(spec);
    let mut store = lock(&shared.store);
    let v = store.vault(vault);
    v.keys
        .entry(name.to_string())
        .or_default()
        .push(KeyVersion {
            version: version.clone(),
            material,
            kty: policy.kty.clone(),
            key_ops,
            attributes: attributes.clone(),
            tags: Tags::new(),
            managed: true,
        });
    v.secrets
        .entry(name.to_string())
        .or_default()
        .push(SecretVersion {
            version: version.clone(),
            value: secret,
            content_type: Some(policy.content_type.clone()),
            attributes: attributes.clone(),
            tags: Tags::new(),
            managed: true,
        });
    let entry = v
        .certificates
        .entry(name.to_string())
        .or_insert_with(|| Certificate {
            policy: policy.clone(),
            versions: Vec::new(),
            pending: None,
        });
    entry.policy = policy;
    entry.versions.push(CertVersion {
        version: version.clone(),
        cer,
        attributes,
        tags,
    });
    entry.pending = Some(PendingOperation {
        version: version.clone(),
        request_id: new_version(),
        completed: false,
        csr,
    });
    shared.persist(&store);
    Ok(version)
}

/// A certificate operation.
#[derive(Debug, Serialize)]
pub(crate) struct OperationView {
    id: String,
    issuer: IssuerRef,
    csr: String,
    cancellation_requested: bool,
    status: &'static str,
    status_details: &'static str,
    target: String,
    request_id: String,
}

fn operation_view(op: &PendingOperation, req: &VaultRequest, name: &str) -> OperationView {
    let (status, status_details) = if op.completed {
        ("completed", "")
    } else {
        (
            "inProgress",
            "Pending certificate created. Certificate request is in progress. This may take some time based on the issuer provider. Please check again later.",
        )
    };
    OperationView {
        id: format!("{}/certificates/{name}/pending", req.base),
        issuer: IssuerRef {
            name: Some("Self".into()),
        },
        csr: STANDARD.encode(&op.csr),
        cancellation_requested: false,
        status,
        status_details,
        target: format!("{}/certificates/{name}", req.base),
        request_id: op.request_id.clone(),
    }
}

pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
    Body(body): Body<CreateCertificateRequest>,
) -> VResult<Response> {
    check_name(&name)?;
    let now = shared.clock.now();
    let previous = current_policy(&shared, &req.vault, &name);
    let policy = parse_policy(&body.policy, previous.as_ref(), now)?;
    let enabled = body.attributes.and_then(|a| a.enabled).unwrap_or(true);
    issue_certificate(&shared, &req.vault, &name, policy, now, enabled, body.tags)?;
    let store = lock(&shared.store);
    let op = find_pending(&store, &req.vault, &name)?;
    let mut resp = (StatusCode::ACCEPTED, Json(operation_view(op, &req, &name))).into_response();
    let location = format!(
        "{}/certificates/{name}/pending?api-version={}",
        req.base,
        req.query("api-version").unwrap_or("2025-07-01")
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    // Issuance is instant here; ask clients to poll again at once.
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("0"));
    Ok(resp)
}

fn find_pending<'a>(store: &'a Store, vault: &str, name: &str) -> VResult<&'a PendingOperation> {
    store
        .vaults
        .get(vault)
        .and_then(|v| v.certificates.get(name))
        .and_then(|c| c.pending.as_ref())
        .ok_or_else(|| pending_not_found(name))
}

fn pending_not_found(name: &str) -> VaultError {
    VaultError {
        status: StatusCode::NOT_FOUND,
        code: "PendingCertificateNotFound",
        message: format!("Pending certificate not found: {name}"),
    }
}

pub(crate) async fn pending(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
) -> VResult<Json<OperationView>> {
    let mut store = lock(&shared.store);
    // The creation answered `inProgress`; the first poll finds the operation completed.
    let op = store
        .vaults
        .get_mut(&req.vault)
        .and_then(|v| v.certificates.get_mut(&name))
        .and_then(|c| c.pending.as_mut())
        .ok_or_else(|| pending_not_found(&name))?;
    let was_completed = op.completed;
    op.completed = true;
    let out = operation_view(op, &req, &name);
    if !was_completed {
        shared.persist(&store);
    }
    Ok(Json(out))
}

pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
) -> VResult<Json<Page<CertificateItem>>> {
    let store = lock(&shared.store);
    let latest: Vec<(&String, &CertVersion)> = store
        .vaults
        .get(&req.vault)
        .map(|v| {
            v.certificates
                .iter()
                .filter_map(|(n, c)| c.versions.last().map(|cv| (n, cv)))
                .collect()
        })
        .unwrap_or_default();
    page(&req, &latest, "/certificates", |(n, v)| {
        certificate_item(v, format!("{}/certificates/{n}", req.base))
    })
    .map(Json)
}

pub(crate) async fn versions(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
) -> VResult<Json<Page<CertificateItem>>> {
    let store = lock(&shared.store);
    let cert = find_certificate(&store, &req.vault, &name)?;
    page(
        &req,
        &cert.versions,
        &format!("/certificates/{name}/versions"),
        |v| certificate_item(v, req.id("certificates", &name, &v.version)),
    )
    .map(Json)
}

pub(crate) async fn policy(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
) -> VResult<Json<PolicyView>> {
    let store = lock(&shared.store);
    let cert = find_certificate(&store, &req.vault, &name)?;
    Ok(Json(policy_view(&cert.policy, &req, &name)))
}

fn get_version(
    shared: &Shared,
    req: &VaultRequest,
    name: &str,
    version: &str,
) -> VResult<Json<CertificateBundle>> {
    let store = lock(&shared.store);
    let cert = find_certificate(&store, &req.vault, name)?;
    let v = find_cert_version(cert, name, version)?;
    Ok(Json(certificate_bundle(Some(cert), v, req, name)))
}

pub(crate) async fn get_latest(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
) -> VResult<Json<CertificateBundle>> {
    get_version(&shared, &req, &name, "")
}

pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path((name, version)): Path<(String, String)>,
) -> VResult<Json<CertificateBundle>> {
    get_version(&shared, &req, &name, &version)
}

pub(crate) async fn update(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path((name, version)): Path<(String, String)>,
    Body(body): Body<UpdateCertificateRequest>,
) -> VResult<Json<CertificateBundle>> {
    let now = shared.clock.now();
    let mut store = lock(&shared.store);
    let not_found = || VaultError::not_found("CertificateNotFound", "certificate", &name, &version);
    let v = store.vaults.get_mut(&req.vault).ok_or_else(not_found)?;
    let cert = v.certificates.get_mut(&name).ok_or_else(not_found)?;
    if let Some(p) = &body.policy {
        cert.policy = parse_policy(p, Some(&cert.policy), now)?;
    }
    let i = version_index(&cert.versions, &version, |c| &c.version).ok_or_else(not_found)?;
    let cv = &mut cert.versions[i];
    let resolved = cv.version.clone();
    let enabled = body.attributes.and_then(|a| a.enabled);
    if let Some(e) = enabled {
        cv.attributes.enabled = e;
    }
    cv.attributes.updated = now;
    if let Some(tags) = body.tags {
        cv.tags = tags;
    }
    // The certificate's key and secret follow its enabled state.
    if let Some(e) = enabled {
        set_key_and_secret_enabled(v, &name, &resolved, e, now);
    }
    let cert = find_certificate(&store, &req.vault, &name)?;
    let cv = find_cert_version(cert, &name, &resolved)?;
    let out = certificate_bundle(Some(cert), cv, &req, &name);
    shared.persist(&store);
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> PolicyRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn policy_defaults_and_validation() {
        let p = parse_policy(&policy(r#"{"x509_props": {"subject": "CN=x"}}"#), None, 10).unwrap();
        assert_eq!(
            (p.kty.as_str(), p.key_size, p.exportable),
            ("RSA", Some(2048), true)
        );
        assert_eq!(p.content_type, certs::PKCS12);
        assert!(parse_policy(&policy("{}"), None, 10).is_err());
        assert!(
            parse_policy(
                &policy(r#"{"x509_props": {"subject": "CN=x"}, "issuer": {"name": "Unknown"}}"#),
                None,
                10
            )
            .is_err()
        );
        let ec = parse_policy(
            &policy(r#"{"key_props": {"kty": "EC", "crv": "P-384", "exportable": false}}"#),
            Some(&p),
            11,
        )
        .unwrap();
        assert_eq!(
            (ec.crv.as_deref(), ec.exportable, ec.subject.as_str()),
            (Some("P-384"), false, "CN=x")
        );
    }
}
