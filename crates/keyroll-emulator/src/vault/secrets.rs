//! Secrets: set, list, versions, get (with `outContentType=application/x-pem-file` for a
//! certificate's PKCS#12 secret) and update. A certificate's secret cannot be set.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let emu = keyroll_emulator::Emulator::builder().permissive(true).start().await?;
//! let answer = emu
//!     .http_client()
//!     .put(format!("{}secrets/db?api-version=2025-07-01", emu.vault_url("v")))
//!     .bearer_auth("anything: permissive mode")
//!     .json(&serde_json::json!({"value": "hunter2"}))
//!     .send()
//!     .await?;
//! assert!(answer.status().is_success());
//! # Ok(()) }
//! ```

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use crate::certs;
use crate::server::{Shared, lock};
use crate::store::{Attributes, SecretVersion, Store, new_version};
use crate::vault::{
    AttributesPatch, AttributesView, Body, Page, Tags, VResult, VaultError, VaultRequest,
    check_name, page, tags_view, usable, version_index,
};

/// `PUT /secrets/{name}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SetSecretRequest {
    value: Option<String>,
    content_type: Option<String>,
    #[serde(default)]
    attributes: AttributesPatch,
    #[serde(default)]
    tags: Tags,
}

/// `PATCH /secrets/{name}/{version}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateSecretRequest {
    content_type: Option<String>,
    attributes: Option<AttributesPatch>,
    tags: Option<Tags>,
}

/// A SecretBundle (lists leave `value` out).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecretBundle {
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    attributes: AttributesView,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Tags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    managed: bool,
}

fn secret_bundle(
    s: &SecretVersion,
    id: String,
    req: &VaultRequest,
    name: &str,
    value: Option<String>,
) -> SecretBundle {
    SecretBundle {
        value,
        id,
        content_type: s.content_type.clone(),
        attributes: (&s.attributes).into(),
        tags: tags_view(&s.tags).cloned(),
        kid: s.managed.then(|| req.id("keys", name, &s.version)),
        managed: s.managed,
    }
}

fn find_secret<'a>(
    store: &'a Store,
    vault: &str,
    name: &str,
    version: &str,
) -> VResult<&'a SecretVersion> {
    let not_found = || VaultError::not_found("SecretNotFound", "secret", name, version);
    let versions = store
        .vaults
        .get(vault)
        .and_then(|v| v.secrets.get(name))
        .ok_or_else(not_found)?;
    version_index(versions, version, |s| &s.version)
        .and_then(|i| versions.get(i))
        .ok_or_else(not_found)
}

pub(crate) async fn set(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
    Body(body): Body<SetSecretRequest>,
) -> VResult<Json<SecretBundle>> {
    check_name(&name)?;
    let value = body
        .value
        .ok_or_else(|| VaultError::bad("The parameter 'value' is required."))?;
    let now = shared.clock.now();
    let mut attributes = Attributes::new(now);
    body.attributes.apply(&mut attributes, now);
    let s = SecretVersion {
        version: new_version(),
        value,
        content_type: body.content_type,
        attributes,
        tags: body.tags,
        managed: false,
    };
    let mut store = lock(&shared.store);
    let v = store.vault(&req.vault);
    if v.certificates.contains_key(&name) {
        return Err(VaultError::forbidden(format!(
            "Secret {name} is managed by a certificate and cannot be set."
        )));
    }
    let out = secret_bundle(
        &s,
        req.id("secrets", &name, &s.version),
        &req,
        &name,
        Some(s.value.clone()),
    );
    v.secrets.entry(name.clone()).or_default().push(s);
    shared.persist(&store);
    Ok(Json(out))
}

fn get_version(
    shared: &Shared,
    req: &VaultRequest,
    name: &str,
    version: &str,
) -> VResult<Json<SecretBundle>> {
    let store = lock(&shared.store);
    let s = find_secret(&store, &req.vault, name, version)?;
    usable(&s.attributes, shared.clock.now(), "get", "secret")?;
    let mut value = s.value.clone();
    let mut content_type = s.content_type.clone();
    if let Some(want) = req.query("outContentType") {
        if want != certs::PEM {
            return Err(VaultError::bad(format!(
                "outContentType {want} is not supported: the only conversion is to application/x-pem-file."
            )));
        }
        if s.content_type.as_deref() == Some(certs::PKCS12) {
            value = certs::pkcs12_to_pem(&s.value)?;
            content_type = Some(certs::PEM.into());
        } else if s.content_type.as_deref() != Some(certs::PEM) {
            return Err(VaultError::bad(
                "outContentType applies to a certificate's secret only.",
            ));
        }
    }
    let mut out = secret_bundle(
        s,
        req.id("secrets", name, &s.version),
        req,
        name,
        Some(value),
    );
    out.content_type = content_type;
    Ok(Json(out))
}

pub(crate) async fn get_latest(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
) -> VResult<Json<SecretBundle>> {
    get_version(&shared, &req, &name, "")
}

pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path((name, version)): Path<(String, String)>,
) -> VResult<Json<SecretBundle>> {
    get_version(&shared, &req, &name, &version)
}

pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
) -> VResult<Json<Page<SecretBundle>>> {
    let store = lock(&shared.store);
    let latest: Vec<(&String, &SecretVersion)> = store
        .vaults
        .get(&req.vault)
        .map(|v| {
            v.secrets
                .iter()
                .filter_map(|(n, vs)| vs.last().map(|s| (n, s)))
                .collect()
        })
        .unwrap_or_default();
    page(&req, &latest, "/secrets", |(n, s)| {
        secret_bundle(s, format!("{}/secrets/{n}", req.base), &req, n, None)
    })
    .map(Json)
}

pub(crate) async fn versions(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path(name): Path<String>,
) -> VResult<Json<Page<SecretBundle>>> {
    let store = lock(&shared.store);
    let versions = store
        .vaults
        .get(&req.vault)
        .and_then(|v| v.secrets.get(&name))
        .ok_or_else(|| VaultError::not_found("SecretNotFound", "secret", &name, ""))?;
    page(&req, versions, &format!("/secrets/{name}/versions"), |s| {
        secret_bundle(s, req.id("secrets", &name, &s.version), &req, &name, None)
    })
    .map(Json)
}

pub(crate) async fn update(
    State(shared): State<Arc<Shared>>,
    req: VaultRequest,
    Path((name, version)): Path<(String, String)>,
    Body(body): Body<UpdateSecretRequest>,
) -> VResult<Json<SecretBundle>> {
    let now = shared.clock.now();
    let mut store = lock(&shared.store);
    let not_found = || VaultError::not_found("SecretNotFound", "secret", &name, &version);
    let versions = store
        .vaults
        .get_mut(&req.vault)
        .and_then(|v| v.secrets.get_mut(&name))
        .ok_or_else(not_found)?;
    let i = version_index(versions, &version, |s| &s.version).ok_or_else(not_found)?;
    let s = &mut versions[i];
    body.attributes
        .unwrap_or_default()
        .apply(&mut s.attributes, now);
    if let Some(ct) = body.content_type {
        s.content_type = Some(ct);
    }
    if let Some(tags) = body.tags {
        s.tags = tags;
    }
    let out = secret_bundle(s, req.id("secrets", &name, &s.version), &req, &name, None);
    shared.persist(&store);
    Ok(Json(out))
}
