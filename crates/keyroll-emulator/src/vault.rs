//! The Key Vault data plane: routes, the bearer challenge, and the keys, certificates and
//! secrets operations in the service's JSON shapes.

// An `Err` here is a ready HTTP response, built at most once per request: boxing it would
// only add an allocation.
#![allow(clippy::result_large_err)]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::certs;
use crate::crypto::{Curve, KeyMaterial, KeySpec};
use crate::server::{Req, Resp, Shared, error_response, json_response, lock};
use crate::store::{
    Attributes, CertPolicy, CertVersion, Certificate, KeyVersion, PendingOperation, SecretVersion,
    Store, Vault, new_version,
};

/// api-versions the emulator answers, besides any `7.x`.
const API_VERSIONS: &[&str] = &[
    "2025-07-01",
    "2026-04-01",
    "2025-06-01-preview",
    "2024-11-01",
    "2024-12-01-preview",
];

/// One Key Vault operation, parsed from method and path. An empty version means "latest".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VaultRoute {
    ListKeys,
    CreateKey(String),
    RotateKey(String),
    KeyVersions(String),
    GetKey(String, String),
    UpdateKey(String, String),
    Sign(String, String),
    Verify(String, String),
    ListCertificates,
    CreateCertificate(String),
    PendingCertificate(String),
    CertificateVersions(String),
    CertificatePolicy(String),
    GetCertificate(String, String),
    UpdateCertificate(String, String),
    ListSecrets,
    SetSecret(String),
    SecretVersions(String),
    GetSecret(String, String),
    UpdateSecret(String, String),
}

impl VaultRoute {
    pub(crate) fn parse(method: &Method, seg: &[&str]) -> Option<VaultRoute> {
        let s = |i: usize| seg.get(i).map(|v| (*v).to_string());
        let m = method.clone();
        let r = match (seg, m) {
            (["keys"] | ["keys", ""], Method::GET) => VaultRoute::ListKeys,
            (["keys", _, "create"], Method::POST) => VaultRoute::CreateKey(s(1)?),
            (["keys", _, "rotate"], Method::POST) => VaultRoute::RotateKey(s(1)?),
            (["keys", _, "versions"], Method::GET) => VaultRoute::KeyVersions(s(1)?),
            (["keys", _], Method::GET) => VaultRoute::GetKey(s(1)?, String::new()),
            (["keys", _, _], Method::GET) => VaultRoute::GetKey(s(1)?, s(2)?),
            (["keys", _, _], Method::PATCH) => VaultRoute::UpdateKey(s(1)?, s(2)?),
            (["keys", _, _, "sign"], Method::POST) => VaultRoute::Sign(s(1)?, s(2)?),
            (["keys", _, _, "verify"], Method::POST) => VaultRoute::Verify(s(1)?, s(2)?),
            (["certificates"] | ["certificates", ""], Method::GET) => VaultRoute::ListCertificates,
            (["certificates", _, "create"], Method::POST) => VaultRoute::CreateCertificate(s(1)?),
            (["certificates", _, "pending"], Method::GET) => VaultRoute::PendingCertificate(s(1)?),
            (["certificates", _, "versions"], Method::GET) => {
                VaultRoute::CertificateVersions(s(1)?)
            }
            (["certificates", _, "policy"], Method::GET) => VaultRoute::CertificatePolicy(s(1)?),
            (["certificates", _], Method::GET) => VaultRoute::GetCertificate(s(1)?, String::new()),
            (["certificates", _, _], Method::GET) => VaultRoute::GetCertificate(s(1)?, s(2)?),
            (["certificates", _, _], Method::PATCH) => VaultRoute::UpdateCertificate(s(1)?, s(2)?),
            (["secrets"] | ["secrets", ""], Method::GET) => VaultRoute::ListSecrets,
            (["secrets", _], Method::PUT) => VaultRoute::SetSecret(s(1)?),
            (["secrets", _, "versions"], Method::GET) => VaultRoute::SecretVersions(s(1)?),
            (["secrets", _], Method::GET) => VaultRoute::GetSecret(s(1)?, String::new()),
            (["secrets", _, _], Method::GET) => VaultRoute::GetSecret(s(1)?, s(2)?),
            (["secrets", _, _], Method::PATCH) => VaultRoute::UpdateSecret(s(1)?, s(2)?),
            _ => return None,
        };
        Some(r)
    }

    /// The operation name used by counters and faults.
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            VaultRoute::ListKeys => "keys.list",
            VaultRoute::CreateKey(_) => "keys.create",
            VaultRoute::RotateKey(_) => "keys.rotate",
            VaultRoute::KeyVersions(_) => "keys.versions",
            VaultRoute::GetKey(..) => "keys.get",
            VaultRoute::UpdateKey(..) => "keys.update",
            VaultRoute::Sign(..) => "keys.sign",
            VaultRoute::Verify(..) => "keys.verify",
            VaultRoute::ListCertificates => "certificates.list",
            VaultRoute::CreateCertificate(_) => "certificates.create",
            VaultRoute::PendingCertificate(_) => "certificates.pending",
            VaultRoute::CertificateVersions(_) => "certificates.versions",
            VaultRoute::CertificatePolicy(_) => "certificates.policy",
            VaultRoute::GetCertificate(..) => "certificates.get",
            VaultRoute::UpdateCertificate(..) => "certificates.update",
            VaultRoute::ListSecrets => "secrets.list",
            VaultRoute::SetSecret(_) => "secrets.set",
            VaultRoute::SecretVersions(_) => "secrets.versions",
            VaultRoute::GetSecret(..) => "secrets.get",
            VaultRoute::UpdateSecret(..) => "secrets.update",
        }
    }
}

/// A failed operation, rendered as `{"error":{"code","message"}}`.
#[derive(Debug, Clone)]
pub(crate) struct VaultError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl VaultError {
    pub(crate) fn bad(message: impl Into<String>) -> VaultError {
        VaultError {
            status: StatusCode::BAD_REQUEST,
            code: "BadParameter",
            message: message.into(),
        }
    }

    fn forbidden(message: impl Into<String>) -> VaultError {
        VaultError {
            status: StatusCode::FORBIDDEN,
            code: "Forbidden",
            message: message.into(),
        }
    }

    fn not_found(code: &'static str, kind: &str, name: &str, version: &str) -> VaultError {
        let what = if version.is_empty() {
            name.to_string()
        } else {
            format!("{name}/{version}")
        };
        VaultError {
            status: StatusCode::NOT_FOUND,
            code,
            message: format!(
                "A {kind} with (name/id) {what} was not found in this key vault. If you recently deleted this {kind} you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        }
    }

    fn key_not_found(name: &str, version: &str) -> VaultError {
        VaultError::not_found("KeyNotFound", "key", name, version)
    }

    fn certificate_not_found(name: &str, version: &str) -> VaultError {
        VaultError::not_found("CertificateNotFound", "certificate", name, version)
    }

    fn secret_not_found(name: &str, version: &str) -> VaultError {
        VaultError::not_found("SecretNotFound", "secret", name, version)
    }

    fn pending_not_found(name: &str) -> VaultError {
        VaultError {
            status: StatusCode::NOT_FOUND,
            code: "PendingCertificateNotFound",
            message: format!("Pending certificate not found: {name}"),
        }
    }

    fn internal(e: impl std::fmt::Display) -> VaultError {
        VaultError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalError",
            message: e.to_string(),
        }
    }

    pub(crate) fn response(&self) -> Resp {
        error_response(self.status, self.code, &self.message)
    }
}

impl From<crate::crypto::CryptoError> for VaultError {
    fn from(e: crate::crypto::CryptoError) -> Self {
        match e {
            crate::crypto::CryptoError::UnsupportedAlgorithm(_)
            | crate::crypto::CryptoError::DigestLength { .. } => VaultError::bad(e.to_string()),
            other => VaultError::internal(other),
        }
    }
}

impl From<crate::certs::CertError> for VaultError {
    fn from(e: crate::certs::CertError) -> Self {
        VaultError::internal(e)
    }
}

type VResult<T> = Result<T, VaultError>;

fn challenge(shared: &Shared, message: &str) -> Resp {
    let mut resp = error_response(StatusCode::UNAUTHORIZED, "Unauthorized", message);
    let header = format!(
        "Bearer authorization=\"{}/{}\", resource=\"{}\"",
        shared.authority(),
        shared.tenant_id,
        shared.vault_resource()
    );
    if let Ok(v) = HeaderValue::from_str(&header) {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Checks the bearer token; `Err` is the 401 response with the challenge.
pub(crate) fn authorize(shared: &Shared, req: &Req) -> Result<(), Resp> {
    let Some(auth) = req.header("authorization") else {
        return Err(challenge(
            shared,
            "AKV10000: Request is missing a Bearer or PoP token.",
        ));
    };
    let token = match auth.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            token.trim()
        }
        _ => {
            return Err(challenge(
                shared,
                "AKV10000: Request is missing a Bearer or PoP token.",
            ));
        }
    };
    if shared.accept_any_token {
        return Ok(());
    }
    let resource = shared.vault_resource();
    let audiences = [
        resource.clone(),
        format!("{resource}/"),
        "https://vault.azure.net".to_string(),
        "cfa8b339-82a2-471a-a3c9-0fc0be7a4093".to_string(),
    ];
    shared
        .entra
        .verify_access_token(token, &audiences, &shared.clock)
        .map_err(|msg| challenge(shared, &msg))
}

fn check_api_version(req: &Req) -> VResult<()> {
    let Some(v) = req.query("api-version") else {
        return Err(VaultError::bad(
            "The 'api-version' query parameter is missing.",
        ));
    };
    let seven = v.strip_prefix("7.").is_some_and(|minor| {
        let minor = minor.strip_suffix("-preview").unwrap_or(minor);
        !minor.is_empty() && minor.chars().all(|c| c.is_ascii_digit())
    });
    if seven || API_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(VaultError::bad(format!(
            "The specified version ({v}) is not recognized. Consider using the latest supported version (2025-07-01)."
        )))
    }
}

fn check_name(name: &str) -> VResult<()> {
    if name.is_empty()
        || name.len() > 127
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(VaultError::bad(format!(
            "The request URI contains an invalid name: {name}"
        )));
    }
    Ok(())
}

fn body_json(req: &Req) -> VResult<Value> {
    if req.body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| VaultError::bad(format!("The request body is not valid JSON: {e}")))
}

/// A string parameter the request body must carry.
fn required_str<'a>(body: &'a Value, parameter: &str) -> VResult<&'a str> {
    body.get(parameter)
        .and_then(Value::as_str)
        .ok_or_else(|| VaultError::bad(format!("The parameter '{parameter}' is required.")))
}

/// The `tags` of a request body; none when absent.
fn tags_of(body: &Value) -> Map<String, Value> {
    body.get("tags")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The strings of a JSON array, skipping other values; `None` when `v` is not an array.
fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}

/// Where `version` stands in `versions` (oldest first); the latest when `version` is empty.
fn version_index<T>(
    versions: &[T],
    version: &str,
    version_of: impl Fn(&T) -> &str,
) -> Option<usize> {
    if version.is_empty() {
        versions.len().checked_sub(1)
    } else {
        versions.iter().position(|v| version_of(v) == version)
    }
}

fn b64url_decode(s: &str) -> VResult<Vec<u8>> {
    let trimmed = s.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| VaultError::bad("Property 'value' is not a valid base64url string."))
}

/// Handles an authorized vault request.
pub(crate) fn handle(shared: &Shared, req: &Req, vault: &str, route: VaultRoute) -> Resp {
    match handle_inner(shared, req, vault, route) {
        Ok(resp) => resp,
        Err(e) => e.response(),
    }
}

fn handle_inner(shared: &Shared, req: &Req, vault: &str, route: VaultRoute) -> VResult<Resp> {
    check_api_version(req)?;
    let base = req.base_url(shared.port);
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    match route {
        VaultRoute::ListKeys => ok(list_keys(shared, req, vault, &base)?),
        VaultRoute::CreateKey(name) => {
            check_name(&name)?;
            let body = body_json(req)?;
            let opts = KeyCreate::from_json(&body)?;
            ok(create_key(
                shared,
                vault,
                &name,
                &opts,
                shared.clock.now(),
                false,
                &base,
            )?)
        }
        VaultRoute::RotateKey(name) => ok(rotate_key(shared, vault, &name, &base)?),
        VaultRoute::KeyVersions(name) => ok(key_versions(shared, req, vault, &name, &base)?),
        VaultRoute::GetKey(name, version) => {
            let store = lock(&shared.store);
            let k = find_key(&store, vault, &name, &version)?;
            ok(key_bundle(k, &name, &base)?)
        }
        VaultRoute::UpdateKey(name, version) => {
            ok(update_key(shared, req, vault, &name, &version, &base)?)
        }
        VaultRoute::Sign(name, version) => ok(sign(shared, req, vault, &name, &version, &base)?),
        VaultRoute::Verify(name, version) => ok(verify(shared, req, vault, &name, &version)?),
        VaultRoute::ListCertificates => ok(list_certificates(shared, req, vault, &base)?),
        VaultRoute::CreateCertificate(name) => {
            check_name(&name)?;
            create_certificate_request(shared, req, vault, &name, &base)
        }
        VaultRoute::PendingCertificate(name) => ok(pending(shared, vault, &name, &base)?),
        VaultRoute::CertificateVersions(name) => {
            ok(certificate_versions(shared, req, vault, &name, &base)?)
        }
        VaultRoute::CertificatePolicy(name) => {
            let store = lock(&shared.store);
            let cert = find_certificate(&store, vault, &name)?;
            ok(policy_json(&cert.policy, &name, &base))
        }
        VaultRoute::GetCertificate(name, version) => {
            let store = lock(&shared.store);
            let cert = find_certificate(&store, vault, &name)?;
            let v = find_cert_version(cert, &name, &version)?;
            ok(certificate_bundle(cert, v, &name, &base))
        }
        VaultRoute::UpdateCertificate(name, version) => ok(update_certificate(
            shared, req, vault, &name, &version, &base,
        )?),
        VaultRoute::ListSecrets => ok(list_secrets(shared, req, vault, &base)?),
        VaultRoute::SetSecret(name) => {
            check_name(&name)?;
            ok(set_secret(shared, req, vault, &name, &base)?)
        }
        VaultRoute::SecretVersions(name) => ok(secret_versions(shared, req, vault, &name, &base)?),
        VaultRoute::GetSecret(name, version) => {
            ok(get_secret(shared, req, vault, &name, &version, &base)?)
        }
        VaultRoute::UpdateSecret(name, version) => {
            ok(update_secret(shared, req, vault, &name, &version, &base)?)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// paging

fn page<T>(
    req: &Req,
    items: &[T],
    base_path: &str,
    base: &str,
    render: impl Fn(&T) -> Value,
) -> VResult<Value> {
    let max = match req.query("maxresults") {
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=25).contains(&n) => n,
            _ => {
                return Err(VaultError::bad(format!(
                    "Invalid maxresults value {m}: it must be between 1 and 25."
                )));
            }
        },
        None => 25,
    };
    let skip = match req.query("$skiptoken") {
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| VaultError::bad("Invalid $skiptoken."))?,
        None => 0,
    };
    let end = (skip + max).min(items.len());
    let value: Vec<Value> = items
        .get(skip..end)
        .unwrap_or_default()
        .iter()
        .map(render)
        .collect();
    let next = if end < items.len() {
        let api = req.query("api-version").unwrap_or("2025-07-01");
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("api-version", api);
        q.append_pair("$skiptoken", &end.to_string());
        q.append_pair("maxresults", &max.to_string());
        Value::String(format!("{base}{base_path}?{}", q.finish()))
    } else {
        Value::Null
    };
    Ok(json!({"value": value, "nextLink": next}))
}

// ---------------------------------------------------------------------------------------------
// keys

/// Parameters of a key creation.
#[derive(Debug, Clone)]
pub(crate) struct KeyCreate {
    pub(crate) kty: String,
    pub(crate) spec: KeySpec,
    pub(crate) key_ops: Vec<String>,
    pub(crate) attributes: Value,
    pub(crate) tags: Map<String, Value>,
}

pub(crate) fn default_key_ops(spec: KeySpec) -> Vec<String> {
    let ops: &[&str] = match spec {
        KeySpec::Rsa(_) => &[
            "encrypt",
            "decrypt",
            "sign",
            "verify",
            "wrapKey",
            "unwrapKey",
        ],
        KeySpec::Ec(_) => &["sign", "verify"],
    };
    ops.iter().map(|s| (*s).to_string()).collect()
}

impl KeyCreate {
    pub(crate) fn from_json(body: &Value) -> VResult<KeyCreate> {
        let kty = required_str(body, "kty")?;
        let spec = key_spec(
            kty,
            body.get("key_size").and_then(Value::as_u64),
            body.get("crv").and_then(Value::as_str),
        )?;
        let key_ops = strings(body.get("key_ops")).unwrap_or_else(|| default_key_ops(spec));
        Ok(KeyCreate {
            kty: kty.to_string(),
            spec,
            key_ops,
            attributes: body.get("attributes").cloned().unwrap_or(Value::Null),
            tags: tags_of(body),
        })
    }
}

pub(crate) fn key_spec(kty: &str, key_size: Option<u64>, crv: Option<&str>) -> VResult<KeySpec> {
    match kty {
        "RSA" | "RSA-HSM" => {
            let size = key_size.unwrap_or(2048);
            match size {
                2048 | 3072 | 4096 => Ok(KeySpec::Rsa(u32::try_from(size).unwrap_or(2048))),
                _ => Err(VaultError::bad(format!(
                    "Invalid key size {size}: RSA keys are 2048, 3072 or 4096 bits."
                ))),
            }
        }
        "EC" | "EC-HSM" => {
            let crv = crv.unwrap_or("P-256");
            Curve::parse(crv).map(KeySpec::Ec).ok_or_else(|| {
                VaultError::bad(format!(
                    "Invalid curve {crv}: the emulator supports P-256, P-384 and P-521."
                ))
            })
        }
        other => Err(VaultError::bad(format!(
            "Invalid kty {other}: the emulator supports RSA, RSA-HSM, EC and EC-HSM."
        ))),
    }
}

fn key_id(base: &str, name: &str, version: &str) -> String {
    format!("{base}/keys/{name}/{version}")
}

fn key_bundle(k: &KeyVersion, name: &str, base: &str) -> VResult<Value> {
    let mut jwk = k.material.public_jwk()?;
    jwk.insert("kid".into(), key_id(base, name, &k.version).into());
    jwk.insert("kty".into(), k.kty.clone().into());
    jwk.insert("key_ops".into(), json!(k.key_ops));
    let mut out = json!({"key": jwk, "attributes": k.attributes.to_json()});
    if !k.tags.is_empty() {
        out["tags"] = Value::Object(k.tags.clone());
    }
    if k.managed {
        out["managed"] = true.into();
    }
    Ok(out)
}

fn key_item(k: &KeyVersion, id: String) -> Value {
    let mut out = json!({"kid": id, "attributes": k.attributes.to_json()});
    if !k.tags.is_empty() {
        out["tags"] = Value::Object(k.tags.clone());
    }
    if k.managed {
        out["managed"] = true.into();
    }
    out
}

fn find_key<'a>(
    store: &'a Store,
    vault: &str,
    name: &str,
    version: &str,
) -> VResult<&'a KeyVersion> {
    let versions = store
        .vaults
        .get(vault)
        .and_then(|v| v.keys.get(name))
        .ok_or_else(|| VaultError::key_not_found(name, version))?;
    version_index(versions, version, |k| &k.version)
        .and_then(|i| versions.get(i))
        .ok_or_else(|| VaultError::key_not_found(name, version))
}

/// Creates a key version with the given `created` time; returns its KeyBundle.
pub(crate) fn create_key(
    shared: &Shared,
    vault: &str,
    name: &str,
    opts: &KeyCreate,
    created: i64,
    managed: bool,
    base: &str,
) -> VResult<Value> {
    let material = KeyMaterial::generate(opts.spec)?;
    let mut attributes = Attributes::new(created);
    attributes.apply(&opts.attributes, created);
    let k = KeyVersion {
        version: new_version(),
        material,
        kty: opts.kty.clone(),
        key_ops: opts.key_ops.clone(),
        attributes,
        tags: opts.tags.clone(),
        managed,
    };
    let bundle = key_bundle(&k, name, base)?;
    let mut store = lock(&shared.store);
    store
        .vault(vault)
        .keys
        .entry(name.to_string())
        .or_default()
        .push(k);
    shared.persist(&store);
    Ok(bundle)
}

fn rotate_key(shared: &Shared, vault: &str, name: &str, base: &str) -> VResult<Value> {
    let opts = {
        let store = lock(&shared.store);
        let latest = find_key(&store, vault, name, "")?;
        if latest.managed {
            return Err(VaultError::forbidden(format!(
                "Key {name} is managed by a certificate and cannot be rotated."
            )));
        }
        KeyCreate {
            kty: latest.kty.clone(),
            spec: latest.material.spec,
            key_ops: latest.key_ops.clone(),
            attributes: json!({"enabled": true}),
            tags: latest.tags.clone(),
        }
    };
    create_key(shared, vault, name, &opts, shared.clock.now(), false, base)
}

fn list_keys(shared: &Shared, req: &Req, vault: &str, base: &str) -> VResult<Value> {
    let store = lock(&shared.store);
    let items: Vec<(String, KeyVersion)> = store
        .vaults
        .get(vault)
        .map(|v| {
            v.keys
                .iter()
                .filter_map(|(n, vs)| vs.last().map(|k| (n.clone(), k.clone())))
                .collect()
        })
        .unwrap_or_default();
    page(req, &items, "/keys", base, |(n, k)| {
        key_item(k, format!("{base}/keys/{n}"))
    })
}

fn key_versions(shared: &Shared, req: &Req, vault: &str, name: &str, base: &str) -> VResult<Value> {
    let store = lock(&shared.store);
    let versions = store
        .vaults
        .get(vault)
        .and_then(|v| v.keys.get(name))
        .ok_or_else(|| VaultError::key_not_found(name, ""))?;
    page(
        req,
        versions,
        &format!("/keys/{name}/versions"),
        base,
        |k| key_item(k, key_id(base, name, &k.version)),
    )
}

fn update_key(
    shared: &Shared,
    req: &Req,
    vault: &str,
    name: &str,
    version: &str,
    base: &str,
) -> VResult<Value> {
    let body = body_json(req)?;
    let now = shared.clock.now();
    let mut store = lock(&shared.store);
    let not_found = || VaultError::key_not_found(name, version);
    let versions = store
        .vaults
        .get_mut(vault)
        .and_then(|v| v.keys.get_mut(name))
        .ok_or_else(not_found)?;
    let i = version_index(versions, version, |k| &k.version).ok_or_else(not_found)?;
    let k = &mut versions[i];
    if k.managed
        && body
            .get("attributes")
            .is_some_and(|a| a.get("enabled").is_some())
    {
        return Err(VaultError::forbidden(format!(
            "Key {name} is managed by a certificate; update the certificate instead."
        )));
    }
    if let Some(attrs) = body.get("attributes") {
        k.attributes.apply(attrs, now);
    } else {
        k.attributes.updated = now;
    }
    if let Some(ops) = strings(body.get("key_ops")) {
        k.key_ops = ops;
    }
    if let Some(tags) = body.get("tags").and_then(Value::as_object) {
        k.tags = tags.clone();
    }
    let bundle = key_bundle(k, name, base)?;
    shared.persist(&store);
    Ok(bundle)
}

fn usable(attributes: &Attributes, now: i64, op: &str, kind: &str) -> VResult<()> {
    if !attributes.enabled {
        return Err(VaultError::forbidden(format!(
            "Operation {op} is not allowed on a disabled {kind}."
        )));
    }
    if attributes.nbf.is_some_and(|nbf| now < nbf) {
        return Err(VaultError::forbidden(format!(
            "Operation {op} is not allowed on a {kind} that is not yet valid."
        )));
    }
    if attributes.exp.is_some_and(|exp| now >= exp) {
        return Err(VaultError::forbidden(format!(
            "Operation {op} is not allowed on an expired {kind}."
        )));
    }
    Ok(())
}

fn sign(
    shared: &Shared,
    req: &Req,
    vault: &str,
    name: &str,
    version: &str,
    base: &str,
) -> VResult<Value> {
    let body = body_json(req)?;
    let alg = required_str(&body, "alg")?;
    let value = required_str(&body, "value")?;
    let digest = b64url_decode(value)?;
    let (material, kid) = {
        let store = lock(&shared.store);
        let k = find_key(&store, vault, name, version)?;
        usable(&k.attributes, shared.clock.now(), "sign", "key")?;
        if !k.key_ops.iter().any(|o| o == "sign") {
            return Err(VaultError::forbidden(
                "Operation sign is not permitted by the key's key_ops.",
            ));
        }
        (k.material.clone(), key_id(base, name, &k.version))
    };
    let signature = material.sign_digest(alg, &digest)?;
    Ok(json!({"kid": kid, "value": URL_SAFE_NO_PAD.encode(signature)}))
}

fn verify(shared: &Shared, req: &Req, vault: &str, name: &str, version: &str) -> VResult<Value> {
    let body = body_json(req)?;
    let alg = required_str(&body, "alg")?;
    let digest = b64url_decode(required_str(&body, "digest")?)?;
    let signature = b64url_decode(required_str(&body, "value")?)?;
    let material = {
        let store = lock(&shared.store);
        let k = find_key(&store, vault, name, version)?;
        if !k.attributes.enabled {
            return Err(VaultError::forbidden(
                "Operation verify is not allowed on a disabled key.",
            ));
        }
        k.material.clone()
    };
    Ok(json!({"value": material.verify_digest(alg, &digest, &signature)?}))
}

// ---------------------------------------------------------------------------------------------
// certificates

fn cert_id(base: &str, name: &str, version: &str) -> String {
    format!("{base}/certificates/{name}/{version}")
}

/// Parses a certificate policy, filling what is missing from `previous` or the defaults.
pub(crate) fn parse_policy(
    p: &Value,
    previous: Option<&CertPolicy>,
    now: i64,
) -> VResult<CertPolicy> {
    let key_props = p.get("key_props").cloned().unwrap_or(Value::Null);
    let secret_props = p.get("secret_props").cloned().unwrap_or(Value::Null);
    let x509 = p.get("x509_props").cloned().unwrap_or(Value::Null);
    let issuer = p
        .get("issuer")
        .and_then(|i| i.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| previous.map(|pp| pp.issuer.clone()))
        .unwrap_or_else(|| "Self".into());
    if !issuer.eq_ignore_ascii_case("self") {
        return Err(VaultError::bad(format!(
            "Issuer {issuer} is not supported by the emulator: only self-signed (\"Self\") certificates are issued."
        )));
    }
    let kty = key_props
        .get("kty")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| previous.map(|pp| pp.kty.clone()))
        .unwrap_or_else(|| "RSA".into());
    let key_size = key_props
        .get("key_size")
        .and_then(Value::as_u64)
        .and_then(|s| u32::try_from(s).ok())
        .or_else(|| previous.and_then(|pp| pp.key_size));
    let crv = key_props
        .get("crv")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| previous.and_then(|pp| pp.crv.clone()));
    let spec = key_spec(&kty, key_size.map(u64::from), crv.as_deref())?;
    let subject = x509
        .get("subject")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| previous.map(|pp| pp.subject.clone()));
    let Some(subject) = subject else {
        return Err(VaultError::bad(
            "Property policy.x509_props.subject is required.",
        ));
    };
    let content_type = secret_props
        .get("contentType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| previous.map(|pp| pp.content_type.clone()))
        .unwrap_or_else(|| certs::PKCS12.into());
    if content_type != certs::PKCS12 && content_type != certs::PEM {
        return Err(VaultError::bad(format!(
            "Invalid contentType {content_type}: use application/x-pkcs12 or application/x-pem-file."
        )));
    }
    let default_usage = match spec {
        KeySpec::Rsa(_) => vec![
            "digitalSignature".to_string(),
            "keyEncipherment".to_string(),
        ],
        KeySpec::Ec(_) => vec!["digitalSignature".to_string()],
    };
    Ok(CertPolicy {
        exportable: key_props
            .get("exportable")
            .and_then(Value::as_bool)
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
        reuse_key: key_props
            .get("reuse_key")
            .and_then(Value::as_bool)
            .or_else(|| previous.map(|pp| pp.reuse_key))
            .unwrap_or(false),
        content_type,
        subject,
        dns_names: strings(x509.get("sans").and_then(|s| s.get("dns_names")))
            .or_else(|| previous.map(|pp| pp.dns_names.clone()))
            .unwrap_or_default(),
        ekus: strings(x509.get("ekus"))
            .or_else(|| previous.map(|pp| pp.ekus.clone()))
            .unwrap_or_else(|| vec!["1.3.6.1.5.5.7.3.1".into(), "1.3.6.1.5.5.7.3.2".into()]),
        key_usage: strings(x509.get("key_usage"))
            .or_else(|| previous.map(|pp| pp.key_usage.clone()))
            .unwrap_or(default_usage),
        validity_months: x509
            .get("validity_months")
            .and_then(Value::as_u64)
            .and_then(|m| u32::try_from(m).ok())
            .or_else(|| previous.map(|pp| pp.validity_months))
            .unwrap_or(12)
            .clamp(1, 1200),
        issuer: "Self".into(),
        created: previous.map_or(now, |pp| pp.created),
        updated: now,
    })
}

fn policy_json(p: &CertPolicy, name: &str, base: &str) -> Value {
    let mut key_props = json!({"exportable": p.exportable, "kty": p.kty, "reuse_key": p.reuse_key});
    if let Some(size) = p.key_size {
        key_props["key_size"] = size.into();
    }
    if let Some(crv) = &p.crv {
        key_props["crv"] = crv.clone().into();
    }
    let mut x509 = json!({
        "subject": p.subject,
        "ekus": p.ekus,
        "key_usage": p.key_usage,
        "validity_months": p.validity_months,
        "basic_constraints": {"ca": false},
    });
    if !p.dns_names.is_empty() {
        x509["sans"] = json!({"dns_names": p.dns_names});
    }
    json!({
        "id": format!("{base}/certificates/{name}/policy"),
        "key_props": key_props,
        "secret_props": {"contentType": p.content_type},
        "x509_props": x509,
        "lifetime_actions": [{"trigger": {"lifetime_percentage": 80}, "action": {"action_type": "AutoRenew"}}],
        "issuer": {"name": p.issuer},
        "attributes": {"enabled": true, "created": p.created, "updated": p.updated},
    })
}

fn certificate_bundle(cert: &Certificate, v: &CertVersion, name: &str, base: &str) -> Value {
    let mut out = json!({
        "id": cert_id(base, name, &v.version),
        "kid": key_id(base, name, &v.version),
        "sid": format!("{base}/secrets/{name}/{}", v.version),
        "x5t": certs::x5t(&v.cer),
        "cer": STANDARD.encode(&v.cer),
        "attributes": v.attributes.to_json(),
        "policy": policy_json(&cert.policy, name, base),
    });
    if !v.tags.is_empty() {
        out["tags"] = Value::Object(v.tags.clone());
    }
    out
}

fn certificate_item(v: &CertVersion, id: String) -> Value {
    let mut out =
        json!({"id": id, "x5t": certs::x5t(&v.cer), "attributes": v.attributes.to_json()});
    if !v.tags.is_empty() {
        out["tags"] = Value::Object(v.tags.clone());
    }
    out
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
    let store = lock(&shared.store);
    store
        .vaults
        .get(vault)
        .and_then(|v| v.certificates.get(name))
        .map(|c| c.policy.clone())
}

fn find_certificate<'a>(store: &'a Store, vault: &str, name: &str) -> VResult<&'a Certificate> {
    store
        .vaults
        .get(vault)
        .and_then(|v| v.certificates.get(name))
        .filter(|c| !c.versions.is_empty())
        .ok_or_else(|| VaultError::certificate_not_found(name, ""))
}

fn find_cert_version<'a>(
    cert: &'a Certificate,
    name: &str,
    version: &str,
) -> VResult<&'a CertVersion> {
    version_index(&cert.versions, version, |v| &v.version)
        .and_then(|i| cert.versions.get(i))
        .ok_or_else(|| VaultError::certificate_not_found(name, version))
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
    tags: Map<String, Value>,
) -> VResult<String> {
    let spec = key_spec(
        &policy.kty,
        policy.key_size.map(u64::from),
        policy.crv.as_deref(),
    )?;
    let reused = if policy.reuse_key {
        let store = lock(&shared.store);
        store
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
    let key_ops = match spec {
        KeySpec::Rsa(_) => vec![
            "sign".into(),
            "verify".into(),
            "encrypt".into(),
            "decrypt".into(),
            "wrapKey".into(),
            "unwrapKey".into(),
        ],
        KeySpec::Ec(_) => vec!["sign".into(), "verify".into()],
    };
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
            tags: Map::new(),
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
            tags: Map::new(),
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

fn operation_json(op: &PendingOperation, name: &str, base: &str) -> Value {
    let (status, details) = if op.completed {
        ("completed", "")
    } else {
        (
            "inProgress",
            "Pending certificate created. Certificate request is in progress. This may take some time based on the issuer provider. Please check again later.",
        )
    };
    json!({
        "id": format!("{base}/certificates/{name}/pending"),
        "issuer": {"name": "Self"},
        "csr": STANDARD.encode(&op.csr),
        "cancellation_requested": false,
        "status": status,
        "status_details": details,
        "target": format!("{base}/certificates/{name}"),
        "request_id": op.request_id,
    })
}

fn create_certificate_request(
    shared: &Shared,
    req: &Req,
    vault: &str,
    name: &str,
    base: &str,
) -> VResult<Resp> {
    let body = body_json(req)?;
    let now = shared.clock.now();
    let previous = current_policy(shared, vault, name);
    let policy_body = body.get("policy").cloned().unwrap_or(Value::Null);
    let policy = parse_policy(&policy_body, previous.as_ref(), now)?;
    let enabled = body
        .get("attributes")
        .and_then(|a| a.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let tags = tags_of(&body);
    issue_certificate(shared, vault, name, policy, now, enabled, tags)?;
    let store = lock(&shared.store);
    let op = find_pending(&store, vault, name)?;
    let mut resp = json_response(StatusCode::ACCEPTED, &operation_json(op, name, base));
    let location = format!(
        "{base}/certificates/{name}/pending?api-version={}",
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
        .ok_or_else(|| VaultError::pending_not_found(name))
}

fn pending(shared: &Shared, vault: &str, name: &str, base: &str) -> VResult<Value> {
    let mut store = lock(&shared.store);
    // The creation answered `inProgress`; the first poll finds the operation completed.
    let op = store
        .vaults
        .get_mut(vault)
        .and_then(|v| v.certificates.get_mut(name))
        .and_then(|c| c.pending.as_mut())
        .ok_or_else(|| VaultError::pending_not_found(name))?;
    let was_completed = op.completed;
    op.completed = true;
    let out = operation_json(op, name, base);
    if !was_completed {
        shared.persist(&store);
    }
    Ok(out)
}

fn list_certificates(shared: &Shared, req: &Req, vault: &str, base: &str) -> VResult<Value> {
    let store = lock(&shared.store);
    let items: Vec<(String, CertVersion)> = store
        .vaults
        .get(vault)
        .map(|v| {
            v.certificates
                .iter()
                .filter_map(|(n, c)| c.versions.last().map(|cv| (n.clone(), cv.clone())))
                .collect()
        })
        .unwrap_or_default();
    page(req, &items, "/certificates", base, |(n, v)| {
        certificate_item(v, format!("{base}/certificates/{n}"))
    })
}

fn certificate_versions(
    shared: &Shared,
    req: &Req,
    vault: &str,
    name: &str,
    base: &str,
) -> VResult<Value> {
    let store = lock(&shared.store);
    let cert = find_certificate(&store, vault, name)?;
    page(
        req,
        &cert.versions,
        &format!("/certificates/{name}/versions"),
        base,
        |v| certificate_item(v, cert_id(base, name, &v.version)),
    )
}

fn update_certificate(
    shared: &Shared,
    req: &Req,
    vault: &str,
    name: &str,
    version: &str,
    base: &str,
) -> VResult<Value> {
    let body = body_json(req)?;
    let now = shared.clock.now();
    let mut store = lock(&shared.store);
    let not_found = || VaultError::certificate_not_found(name, version);
    let v = store.vaults.get_mut(vault).ok_or_else(not_found)?;
    let cert = v.certificates.get_mut(name).ok_or_else(not_found)?;
    if let Some(p) = body.get("policy") {
        cert.policy = parse_policy(p, Some(&cert.policy), now)?;
    }
    let i = version_index(&cert.versions, version, |c| &c.version).ok_or_else(not_found)?;
    let cv = &mut cert.versions[i];
    let resolved = cv.version.clone();
    let enabled = body
        .get("attributes")
        .and_then(|a| a.get("enabled"))
        .and_then(Value::as_bool);
    // nbf and exp of a certificate come from the X.509 validity; only `enabled` changes.
    if let Some(e) = enabled {
        cv.attributes.enabled = e;
    }
    cv.attributes.updated = now;
    if let Some(tags) = body.get("tags").and_then(Value::as_object) {
        cv.tags = tags.clone();
    }
    // The certificate's key and secret follow its enabled state.
    if let Some(e) = enabled {
        set_key_and_secret_enabled(v, name, &resolved, e, now);
    }
    let cert = find_certificate(&store, vault, name)?;
    let cv = find_cert_version(cert, name, &resolved)?;
    let out = certificate_bundle(cert, cv, name, base);
    shared.persist(&store);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// secrets

fn secret_id(base: &str, name: &str, version: &str) -> String {
    format!("{base}/secrets/{name}/{version}")
}

fn secret_bundle(s: &SecretVersion, name: &str, base: &str, value: Option<String>) -> Value {
    let mut out =
        json!({"id": secret_id(base, name, &s.version), "attributes": s.attributes.to_json()});
    if let Some(value) = value {
        out["value"] = value.into();
    }
    if let Some(ct) = &s.content_type {
        out["contentType"] = ct.clone().into();
    }
    if !s.tags.is_empty() {
        out["tags"] = Value::Object(s.tags.clone());
    }
    if s.managed {
        out["managed"] = true.into();
        out["kid"] = key_id(base, name, &s.version).into();
    }
    out
}

fn find_secret<'a>(
    store: &'a Store,
    vault: &str,
    name: &str,
    version: &str,
) -> VResult<&'a SecretVersion> {
    let versions = store
        .vaults
        .get(vault)
        .and_then(|v| v.secrets.get(name))
        .ok_or_else(|| VaultError::secret_not_found(name, version))?;
    version_index(versions, version, |s| &s.version)
        .and_then(|i| versions.get(i))
        .ok_or_else(|| VaultError::secret_not_found(name, version))
}

fn set_secret(shared: &Shared, req: &Req, vault: &str, name: &str, base: &str) -> VResult<Value> {
    let body = body_json(req)?;
    let value = required_str(&body, "value")?;
    let now = shared.clock.now();
    let mut attributes = Attributes::new(now);
    if let Some(a) = body.get("attributes") {
        attributes.apply(a, now);
    }
    let s = SecretVersion {
        version: new_version(),
        value: value.to_string(),
        content_type: body
            .get("contentType")
            .and_then(Value::as_str)
            .map(str::to_string),
        attributes,
        tags: tags_of(&body),
        managed: false,
    };
    let mut store = lock(&shared.store);
    let v = store.vault(vault);
    if v.certificates.contains_key(name) {
        return Err(VaultError::forbidden(format!(
            "Secret {name} is managed by a certificate and cannot be set."
        )));
    }
    let out = secret_bundle(&s, name, base, Some(s.value.clone()));
    v.secrets.entry(name.to_string()).or_default().push(s);
    shared.persist(&store);
    Ok(out)
}

fn get_secret(
    shared: &Shared,
    req: &Req,
    vault: &str,
    name: &str,
    version: &str,
    base: &str,
) -> VResult<Value> {
    let store = lock(&shared.store);
    let s = find_secret(&store, vault, name, version)?;
    usable(&s.attributes, shared.clock.now(), "get", "secret")?;
    let mut value = s.value.clone();
    let mut out_ct = s.content_type.clone();
    if let Some(want) = req.query("outContentType") {
        if want != certs::PEM {
            return Err(VaultError::bad(format!(
                "outContentType {want} is not supported: the only conversion is to application/x-pem-file."
            )));
        }
        if s.content_type.as_deref() == Some(certs::PKCS12) {
            value = certs::pkcs12_to_pem(&s.value)?;
            out_ct = Some(certs::PEM.into());
        } else if s.content_type.as_deref() != Some(certs::PEM) {
            return Err(VaultError::bad(
                "outContentType applies to a certificate's secret only.",
            ));
        }
    }
    let mut out = secret_bundle(s, name, base, Some(value));
    if let Some(ct) = out_ct {
        out["contentType"] = ct.into();
    }
    Ok(out)
}

fn list_secrets(shared: &Shared, req: &Req, vault: &str, base: &str) -> VResult<Value> {
    let store = lock(&shared.store);
    let items: Vec<(String, SecretVersion)> = store
        .vaults
        .get(vault)
        .map(|v| {
            v.secrets
                .iter()
                .filter_map(|(n, vs)| vs.last().map(|s| (n.clone(), s.clone())))
                .collect()
        })
        .unwrap_or_default();
    page(req, &items, "/secrets", base, |(n, s)| {
        let mut item = secret_bundle(s, n, base, None);
        item["id"] = format!("{base}/secrets/{n}").into();
        item
    })
}

fn secret_versions(
    shared: &Shared,
    req: &Req,
    vault: &str,
    name: &str,
    base: &str,
) -> VResult<Value> {
    let store = lock(&shared.store);
    let versions = store
        .vaults
        .get(vault)
        .and_then(|v| v.secrets.get(name))
        .ok_or_else(|| VaultError::secret_not_found(name, ""))?;
    page(
        req,
        versions,
        &format!("/secrets/{name}/versions"),
        base,
        |s| secret_bundle(s, name, base, None),
    )
}

fn update_secret(
    shared: &Shared,
    req: &Req,
    vault: &str,
    name: &str,
    version: &str,
    base: &str,
) -> VResult<Value> {
    let body = body_json(req)?;
    let now = shared.clock.now();
    let mut store = lock(&shared.store);
    let not_found = || VaultError::secret_not_found(name, version);
    let versions = store
        .vaults
        .get_mut(vault)
        .and_then(|v| v.secrets.get_mut(name))
        .ok_or_else(not_found)?;
    let i = version_index(versions, version, |s| &s.version).ok_or_else(not_found)?;
    let s = &mut versions[i];
    if let Some(a) = body.get("attributes") {
        s.attributes.apply(a, now);
    } else {
        s.attributes.updated = now;
    }
    if let Some(ct) = body.get("contentType").and_then(Value::as_str) {
        s.content_type = Some(ct.to_string());
    }
    if let Some(tags) = body.get("tags").and_then(Value::as_object) {
        s.tags = tags.clone();
    }
    let out = secret_bundle(s, name, base, None);
    shared.persist(&store);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cover_latest_with_trailing_slash_and_empty_version() {
        let p = |m: Method, path: &str| {
            let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            VaultRoute::parse(&m, &seg)
        };
        assert_eq!(
            p(Method::GET, "/keys/k/"),
            Some(VaultRoute::GetKey("k".into(), String::new()))
        );
        assert_eq!(
            p(Method::POST, "/keys/k//sign"),
            Some(VaultRoute::Sign("k".into(), String::new()))
        );
        assert_eq!(
            p(Method::GET, "/keys/k/versions"),
            Some(VaultRoute::KeyVersions("k".into()))
        );
        assert_eq!(
            p(Method::GET, "/certificates/c/pending"),
            Some(VaultRoute::PendingCertificate("c".into()))
        );
        assert_eq!(
            p(Method::PUT, "/secrets/s"),
            Some(VaultRoute::SetSecret("s".into()))
        );
        assert_eq!(p(Method::DELETE, "/keys/k"), None);
        assert_eq!(p(Method::GET, "/nothing"), None);
    }

    #[test]
    fn policy_defaults_and_validation() {
        let p = parse_policy(&json!({"x509_props": {"subject": "CN=x"}}), None, 10).unwrap();
        assert_eq!(
            (p.kty.as_str(), p.key_size, p.exportable),
            ("RSA", Some(2048), true)
        );
        assert_eq!(p.content_type, certs::PKCS12);
        assert!(parse_policy(&json!({}), None, 10).is_err());
        assert!(
            parse_policy(
                &json!({"x509_props": {"subject": "CN=x"}, "issuer": {"name": "Unknown"}}),
                None,
                10
            )
            .is_err()
        );
        let ec = parse_policy(
            &json!({"key_props": {"kty": "EC", "crv": "P-384", "exportable": false}}),
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
