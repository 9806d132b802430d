//! Keys: create, rotate, list, versions, get, update, and `sign`/`verify` over a digest the
//! client computed (RS*/PS*/ES*, never hashed again).
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! use keyroll_emulator::{Curve, KeySpec, KeyVersionOptions};
//! let emu = keyroll_emulator::Emulator::builder().start().await?;
//! let v = emu.admin().create_key_version("v", "signing", KeyVersionOptions::new(KeySpec::Ec(Curve::P256)))?;
//! assert_eq!(v.bundle["key"]["kty"], "EC");
//! # Ok(()) }
//! ```

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::crypto::{Curve, KeyMaterial, KeySpec};
use crate::server::{Shared, lock};
use crate::store::{Attributes, KeyVersion, Store, new_version};
use crate::vault::{
    AttributesPatch, AttributesView, Body, Page, Tags, VResult, VaultError, VaultRequest,
    b64url_decode, check_name, page, tags_view, usable, version_index,
};

/// `POST /keys/{name}/create`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CreateKeyRequest {
    kty: Option<String>,
    key_size: Option<u64>,
    crv: Option<String>,
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    attributes: AttributesPatch,
    #[serde(default)]
    tags: Tags,
}

/// `PATCH /keys/{name}/{version}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UpdateKeyRequest {
    key_ops: Option<Vec<String>>,
    attributes: Option<AttributesPatch>,
    tags: Option<Tags>,
}

/// `POST …/sign`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SignRequest {
    alg: Option<String>,
    value: Option<String>,
}

/// `POST …/verify`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct VerifyRequest {
    alg: Option<String>,
    digest: Option<String>,
    value: Option<String>,
}

/// The answer of `sign`.
#[derive(Debug, Serialize)]
pub(crate) struct SignResponse {
    kid: String,
    value: String,
}

/// The answer of `verify`.
#[derive(Debug, Serialize)]
pub(crate) struct VerifyResponse {
    value: bool,
}

/// A KeyBundle.
#[derive(Debug, Serialize)]
pub(crate) struct KeyBundle {
    pub(crate) key: Map<String, Value>,
    attributes: AttributesView,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Tags>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    managed: bool,
}

/// An item of a key list: no key material.
#[derive(Debug, Serialize)]
pub(crate) struct KeyItem {
    kid: String,
    attributes: AttributesView,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Tags>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    managed: bool,
}

/// Parameters of a key creation.
#[derive(Debug, Clone)]
pub(crate) struct KeyCreate {
    pub(crate) kty: String,
    pub(crate) spec: KeySpec,
    pub(crate) key_ops: Vec<String>,
    pub(crate) attributes: AttributesPatch,
    pub(crate) tags: Tags,
}

impl KeyCreate {
    fn from_request(r: CreateKeyRequest) -> VResult<KeyCreate> {
        let kty = r
            .kty
            .ok_or_else(|| VaultError::bad("The parameter 'kty' is required."))?;
        let spec = key_spec(&kty, r.key_size, r.crv.as_deref())?;
        Ok(KeyCreate {
            key_ops: r.key_ops.unwrap_or_else(|| default_key_ops(spec)),
            kty,
            spec,
            attributes: r.attributes,
            tags: r.tags,
        })
    }

    /// A software key of `spec` with the default operations.
    pub(crate) fn software(spec: KeySpec) -> KeyCreate {
        KeyCreate {
            kty: match spec {
                KeySpec::Rsa(_) => "RSA".into(),
                KeySpec::Ec(_) => "EC".into(),
            },
            spec,
            key_ops: default_key_ops(spec),
            attributes: AttributesPatch::default(),
            tags: Tags::new(),
        }
    }
}

/// The operations a new key allows when the request names none.
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

/// The key spec of `kty` (`RSA`, `RSA-HSM`, `EC`, `EC-HSM`) with a size or curve.
pub(crate) fn key_spec(kty: &str, key_size: Option<u64>, crv: Option<&str>) -> VResult<KeySpec> {
    match kty {
        "RSA" | "RSA-HSM" => match key_size.unwrap_or(2048) {
            size @ (2048 | 3072 | 4096) => Ok(KeySpec::Rsa(u32::try_from(size).unwrap_or(2048))),
            size => Err(VaultError::bad(format!(
                "Invalid key size {size}: RSA keys are 2048, 3072 or 4096 bits."
            ))),
        },
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

pub(crate) fn key_bundle(k: &KeyVersion, id: String) -> VResult<KeyBundle> {
    let mut jwk = k.material.public_jwk()?;
    jwk.insert("kid".into(), id.into());
    jwk.insert("kty".into(), k.kty.clone().into());
    jwk.insert("key_ops".into(), k.key_ops.clone().into());
    Ok(KeyBundle {
        key: jwk,
        attributes: (&k.attributes).into(),
        tags: tags_view(&k.tags).cloned(),
        managed: k.managed,
    })
}

fn key_item(k: &KeyVersion, kid: String) -> KeyItem {
    KeyItem {
        kid,
        attributes: (&k.attributes).into(),
        tags: tags_view(&k.tags).cloned(),
        managed: k.managed,
    }
}

fn find_key<'a>(
    store: &'a Store,
    vault: &str,
    name: &str,
    version: &str,
) -> VResult<&'a KeyVersion> {
    let not_found = || VaultError::not_found("KeyNotFound", "key", name, version);
    let versions = store
        .vaults
        .get(vault)
        .and_then(|v| v.keys.get(name))
        .ok_or_else(not_found)?;
    version_index(versions, version, |k| &k.version)
        .and_then(|i| versions.get(i))
        .ok_or_else(not_found)
}

/// The kty and spec of a key version, for the service limits; `None` when unknown.
pub(crate) fn key_kind(
    store: &Store,
    vault: &str,
    name: &str,
    version: &str,
) -> Option<(bool, KeySpec)> {
    find_key(store, vault, name, version)
        .ok()
        .map(|k| (k.kty.ends_with("-HSM"), k.material.spec))
}

/// Creates a key version with the given `created` time; returns its KeyBundle.
pub(crate) fn create_key(
    shared: &Shared,
    req: &VaultRequest,
    name: &str,
    opts: &KeyCreate,
    created: i64,
) -> VResult<KeyBundle> {
    let material = KeyMaterial::generate(opts.spec)?;
    let mut attributes = Attributes::new(created);
    opts.attributes.apply(&mut attributes, created);
    let k = KeyVersion {
        version: new_version(),
        material,
        kty: opts.kty.clone(),
        key_ops: opts.key_ops.clone(),
        attributes,
        tags: opts.tags.clone(),
        managed: false,
    };
    let bundle = key_bundle(&k, req.id("keys", name, &k.version))?;
    let mut store = lock(&shared.store);
    store
        .vault(&req.vault)
        .keys
        .entry(name.to_string())
        .or_default()
        .push(k);
    shared.persist(&store);
    Ok(bundle)
}

pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
    Body(body): Body<CreateKeyRequest>,
) -> VResult<Json<KeyBundle>> {
    check_name(&name)?;
    let opts = KeyCreate::from_request(body)?;
    create_key(&shared, &req, &name, &opts, shared.clock.now()).map(Json)
}

pub(crate) async fn rotate(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
) -> VResult<Json<KeyBundle>> {
    let opts = {
        let store = lock(&shared.store);
        let latest = find_key(&store, &req.vault, &name, "")?;
        if latest.managed {
            return Err(VaultError::forbidden(format!(
                "Key {name} is managed by a certificate and cannot be rotated."
            )));
        }
        KeyCreate {
            kty: latest.kty.clone(),
            spec: latest.material.spec,
            key_ops: latest.key_ops.clone(),
            attributes: AttributesPatch::default(),
            tags: latest.tags.clone(),
        }
    };
    create_key(&shared, &req, &name, &opts, shared.clock.now()).map(Json)
}

pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
) -> VResult<Json<Page<KeyItem>>> {
    let store = lock(&shared.store);
    let latest: Vec<(&String, &KeyVersion)> = store
        .vaults
        .get(&req.vault)
        .map(|v| {
            v.keys
                .iter()
                .filter_map(|(n, vs)| vs.last().map(|k| (n, k)))
                .collect()
        })
        .unwrap_or_default();
    page(&req, &latest, "/keys", |(n, k)| {
        key_item(k, format!("{}/keys/{n}", req.base))
    })
    .map(Json)
}

pub(crate) async fn versions(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
) -> VResult<Json<Page<KeyItem>>> {
    let store = lock(&shared.store);
    let versions = store
        .vaults
        .get(&req.vault)
        .and_then(|v| v.keys.get(&name))
        .ok_or_else(|| VaultError::not_found("KeyNotFound", "key", &name, ""))?;
    page(&req, versions, &format!("/keys/{name}/versions"), |k| {
        key_item(k, req.id("keys", &name, &k.version))
    })
    .map(Json)
}

fn get_version(
    shared: &Shared,
    req: &VaultRequest,
    name: &str,
    version: &str,
) -> VResult<Json<KeyBundle>> {
    let store = lock(&shared.store);
    let k = find_key(&store, &req.vault, name, version)?;
    key_bundle(k, req.id("keys", name, &k.version)).map(Json)
}

pub(crate) async fn get_latest(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
) -> VResult<Json<KeyBundle>> {
    get_version(&shared, &req, &name, "")
}

pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path((name, version)): Path<(String, String)>,
) -> VResult<Json<KeyBundle>> {
    get_version(&shared, &req, &name, &version)
}

pub(crate) async fn update(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path((name, version)): Path<(String, String)>,
    Body(body): Body<UpdateKeyRequest>,
) -> VResult<Json<KeyBundle>> {
    let now = shared.clock.now();
    let mut store = lock(&shared.store);
    let not_found = || VaultError::not_found("KeyNotFound", "key", &name, &version);
    let versions = store
        .vaults
        .get_mut(&req.vault)
        .and_then(|v| v.keys.get_mut(&name))
        .ok_or_else(not_found)?;
    let i = version_index(versions, &version, |k| &k.version).ok_or_else(not_found)?;
    let k = &mut versions[i];
    if k.managed
        && body
            .attributes
            .as_ref()
            .is_some_and(|a| a.enabled.is_some())
    {
        return Err(VaultError::forbidden(format!(
            "Key {name} is managed by a certificate; update the certificate instead."
        )));
    }
    body.attributes
        .unwrap_or_default()
        .apply(&mut k.attributes, now);
    if let Some(ops) = body.key_ops {
        k.key_ops = ops;
    }
    if let Some(tags) = body.tags {
        k.tags = tags;
    }
    let bundle = key_bundle(k, req.id("keys", &name, &k.version))?;
    shared.persist(&store);
    Ok(Json(bundle))
}

fn required<'a>(v: &'a Option<String>, parameter: &str) -> VResult<&'a str> {
    v.as_deref()
        .ok_or_else(|| VaultError::bad(format!("The parameter '{parameter}' is required.")))
}

fn sign_with(
    shared: &Shared,
    req: &VaultRequest,
    name: &str,
    version: &str,
    body: &SignRequest,
) -> VResult<Json<SignResponse>> {
    let alg = required(&body.alg, "alg")?;
    let digest = b64url_decode(required(&body.value, "value")?, "value")?;
    let (material, kid) = {
        let store = lock(&shared.store);
        let k = find_key(&store, &req.vault, name, version)?;
        usable(&k.attributes, shared.clock.now(), "sign", "key")?;
        if !k.key_ops.iter().any(|o| o == "sign") {
            return Err(VaultError::forbidden(
                "Operation sign is not permitted by the key's key_ops.",
            ));
        }
        (k.material.clone(), req.id("keys", name, &k.version))
    };
    let signature = material.sign_digest(alg, &digest)?;
    Ok(Json(SignResponse {
        kid,
        value: URL_SAFE_NO_PAD.encode(signature),
    }))
}

pub(crate) async fn sign(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path((name, version)): Path<(String, String)>,
    Body(body): Body<SignRequest>,
) -> VResult<Json<SignResponse>> {
    sign_with(&shared, &req, &name, &version, &body)
}

pub(crate) async fn sign_latest(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
    Body(body): Body<SignRequest>,
) -> VResult<Json<SignResponse>> {
    sign_with(&shared, &req, &name, "", &body)
}

fn verify_with(
    shared: &Shared,
    req: &VaultRequest,
    name: &str,
    version: &str,
    body: &VerifyRequest,
) -> VResult<Json<VerifyResponse>> {
    let alg = required(&body.alg, "alg")?;
    let digest = b64url_decode(required(&body.digest, "digest")?, "digest")?;
    let signature = b64url_decode(required(&body.value, "value")?, "value")?;
    let material = {
        let store = lock(&shared.store);
        let k = find_key(&store, &req.vault, name, version)?;
        if !k.attributes.enabled {
            return Err(VaultError::forbidden(
                "Operation verify is not allowed on a disabled key.",
            ));
        }
        k.material.clone()
    };
    Ok(Json(VerifyResponse {
        value: material.verify_digest(alg, &digest, &signature)?,
    }))
}

pub(crate) async fn verify(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path((name, version)): Path<(String, String)>,
    Body(body): Body<VerifyRequest>,
) -> VResult<Json<VerifyResponse>> {
    verify_with(&shared, &req, &name, &version, &body)
}

pub(crate) async fn verify_latest(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
    Body(body): Body<VerifyRequest>,
) -> VResult<Json<VerifyResponse>> {
    verify_with(&shared, &req, &name, "", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs_and_default_operations() {
        assert_eq!(
            key_spec("RSA-HSM", Some(3072), None).unwrap(),
            KeySpec::Rsa(3072)
        );
        assert_eq!(
            key_spec("EC", None, None).unwrap(),
            KeySpec::Ec(Curve::P256)
        );
        assert!(key_spec("RSA", Some(1024), None).is_err());
        assert!(key_spec("oct", None, None).is_err());
        assert!(key_spec("EC", None, Some("P-192")).is_err());
        assert!(default_key_ops(KeySpec::Ec(Curve::P384)) == ["sign", "verify"]);
        let create: CreateKeyRequest = serde_json::from_str(r#"{"key_size":2048}"#).unwrap();
        assert!(KeyCreate::from_request(create).is_err(), "kty is required");
    }
}
