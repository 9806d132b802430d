//! The admin API over HTTP, under `/_admin/` (loopback clients only), mirroring [`Admin`]:
//!
//! | method and path | body / answer |
//! | --- | --- |
//! | `GET /_admin/clock` | `{"now": unix, "offset_seconds": n, "frozen": bool}` |
//! | `POST /_admin/clock` | `{"now": unix}`, `{"advance": seconds}` and/or `{"frozen": bool}` |
//! | `POST /_admin/vaults/{vault}/keys/{name}/versions` | `{"kty","key_size","crv","created","enabled","nbf","exp"}` → version |
//! | `POST /_admin/vaults/{vault}/certificates/{name}/versions` | `{"subject","kty","key_size","crv","exportable","content_type","validity_months","created","enabled"}` → version |
//! | `POST /_admin/vaults/{vault}/versions/{name}/{version}` | `{"enabled": bool}` (key, certificate and secret of that version) |
//! | `GET /_admin/faults`, `POST /_admin/faults`, `DELETE /_admin/faults[/{id}]` | `{"route","vault","kind":"latency"\|"status"\|"throttle"\|"outage","latency_ms","status","retry_after","times"}` |
//! | `GET /_admin/counters`, `DELETE /_admin/counters` | `{"keys.sign": 3, …}` |
//! | `GET /_admin/limits`, `PUT /_admin/limits` | the [`VaultLimits`](crate::VaultLimits) fields (missing ones: the documented figures) |
//! | `POST /_admin/entra/signing-keys` | rotates the token signing key → `{"kid"}` |
//! | `GET /_admin/entra/apps`, `POST /_admin/entra/apps` | an [`App`](crate::App): `{"client_id","tenant","secrets","certificates":[base64 DER],"federated_credentials":[{"issuer","subject","audiences"}]}` |
//! | `POST /_admin/entra/clients/{id}/certificates` | `{"cer": base64 DER}` |
//! | `POST /_admin/entra/clients/{id}/secrets` | `{"secret": "…"}` |
//! | `GET /_admin/entra/apis`, `POST /_admin/entra/apis` | an [`Api`](crate::Api): `{"identifier_uris","app_id","tenant","app_roles","grants":{client: [roles]},"accessTokenAcceptedVersion":1\|2}` |
//! | `POST /_admin/entra/tenants` | `{"tenant_id"}` |
//! | `GET /_admin/managed-identities`, `POST /_admin/managed-identities` | `{"name","client_id"?,"object_id"?}` → the identity |
//! | `POST /_admin/kubernetes/tokens` | `{"namespace","name","audience"?,"path"?}` → `{"token"}` (written to `path` when given) |
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let emu = keyroll_emulator::Emulator::builder().start().await?;
//! emu.http_client()
//!     .post(format!("https://localhost:{}/_admin/entra/apps", emu.port()))
//!     .json(&serde_json::json!({"client_id": "orders-client", "secrets": ["s3cret"]}))
//!     .send()
//!     .await?
//!     .error_for_status()?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, CertificateVersionOptions, KeyVersionOptions, VersionInfo};
use crate::Error;
use crate::faults::{Fault, FaultBody, FaultId};
use crate::identity::directory::{Api, App, ManagedIdentity};
use crate::limits::VaultLimits;
use crate::server::{Peer, Shared};
use crate::vault::keys::key_spec;
use crate::vault::{Body, VaultError, error_response};

/// A refused admin request, answered in Key Vault's error shape.
#[derive(Debug)]
struct AdminError {
    status: StatusCode,
    code: String,
    message: String,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        error_response(self.status, &self.code, &self.message)
    }
}

impl From<Error> for AdminError {
    fn from(e: Error) -> AdminError {
        match e {
            Error::Refused { code, message } => AdminError {
                status: if code.ends_with("NotFound") {
                    StatusCode::NOT_FOUND
                } else if code == "Conflict" {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::BAD_REQUEST
                },
                code,
                message,
            },
            other => AdminError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "InternalError".into(),
                message: other.to_string(),
            },
        }
    }
}

impl From<VaultError> for AdminError {
    fn from(e: VaultError) -> AdminError {
        AdminError {
            status: e.status,
            code: e.code.into(),
            message: e.message,
        }
    }
}

type AdminResult = Result<Json<Value>, AdminError>;

fn bad_parameter(message: impl Into<String>) -> AdminError {
    AdminError {
        status: StatusCode::BAD_REQUEST,
        code: "BadParameter".into(),
        message: message.into(),
    }
}

fn version_json(v: &VersionInfo) -> Value {
    json!({"name": v.name, "version": v.version, "id": v.id, "created": v.created, "x5t": v.x5t, "bundle": v.bundle})
}

async fn loopback_only(req: Request, next: Next) -> Response {
    let loopback = req
        .extensions()
        .get::<Peer>()
        .is_some_and(|p| p.0.ip().is_loopback());
    if !loopback {
        return error_response(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "The admin API answers loopback clients only.",
        );
    }
    next.run(req).await
}

/// The admin routes (nested under `/_admin`).
pub(crate) fn routes(_shared: &Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route("/clock", get(clock).post(set_clock).put(set_clock))
        .route("/vaults/{vault}/keys/{name}/versions", post(key_version))
        .route(
            "/vaults/{vault}/certificates/{name}/versions",
            post(certificate_version),
        )
        .route(
            "/vaults/{vault}/versions/{name}/{version}",
            post(version_enabled).patch(version_enabled),
        )
        .route(
            "/faults",
            get(faults).post(inject_fault).delete(clear_faults),
        )
        .route("/faults/{id}", delete(clear_fault))
        .route("/counters", get(counters).delete(reset_counters))
        .route("/limits", get(limits).put(set_limits))
        .route("/entra/signing-keys", post(rotate_signing_key))
        .route("/entra/apps", get(apps).post(register_app))
        .route("/entra/clients/{id}/certificates", post(client_certificate))
        .route("/entra/clients/{id}/secrets", post(client_secret))
        .route("/entra/apis", get(apis).post(register_api))
        .route("/entra/tenants", post(add_tenant))
        .route("/managed-identities", get(identities).post(assign_identity))
        .route("/kubernetes/tokens", post(service_account_token))
        .layer(from_fn(loopback_only))
}

fn admin(shared: &Arc<Shared>) -> Admin {
    Admin::new(shared.clone())
}

async fn clock(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let a = admin(&shared);
    Json(
        json!({"now": a.now(), "offset_seconds": a.clock_offset_seconds(), "frozen": a.clock_frozen()}),
    )
}

#[derive(Debug, Default, Deserialize)]
struct ClockRequest {
    now: Option<i64>,
    advance: Option<i64>,
    frozen: Option<bool>,
}

async fn set_clock(
    State(shared): State<Arc<Shared>>,
    body: Result<Body<ClockRequest>, VaultError>,
) -> AdminResult {
    let Body(b) = body?;
    let a = admin(&shared);
    if let Some(frozen) = b.frozen {
        a.freeze_clock(frozen);
    }
    match (b.now, b.advance, b.frozen) {
        (Some(now), _, _) => a.set_clock(now),
        (None, Some(by), _) => a.shift_clock(by),
        (None, None, Some(_)) => {}
        (None, None, None) => {
            return Err(bad_parameter(
                "send {\"now\": unix}, {\"advance\": seconds} or {\"frozen\": bool}",
            ));
        }
    }
    Ok(Json(json!({"now": a.now(), "frozen": a.clock_frozen()})))
}

#[derive(Debug, Default, Deserialize)]
struct VersionRequest {
    kty: Option<String>,
    key_size: Option<u64>,
    crv: Option<String>,
    created: Option<i64>,
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
    subject: Option<String>,
    exportable: Option<bool>,
    content_type: Option<String>,
    validity_months: Option<u32>,
}

async fn key_version(
    State(shared): State<Arc<Shared>>,
    Path((vault, name)): Path<(String, String)>,
    body: Result<Body<VersionRequest>, VaultError>,
) -> AdminResult {
    let Body(b) = body?;
    let spec = key_spec(
        b.kty.as_deref().unwrap_or("RSA"),
        b.key_size,
        b.crv.as_deref(),
    )?;
    let mut o = KeyVersionOptions::new(spec).enabled(b.enabled.unwrap_or(true));
    o.created = b.created;
    o.not_before = b.nbf;
    o.expires = b.exp;
    let v = admin(&shared).create_key_version(&vault, &name, o)?;
    Ok(Json(version_json(&v)))
}

async fn certificate_version(
    State(shared): State<Arc<Shared>>,
    Path((vault, name)): Path<(String, String)>,
    body: Result<Body<VersionRequest>, VaultError>,
) -> AdminResult {
    let Body(b) = body?;
    let mut o = CertificateVersionOptions::new().enabled(b.enabled.unwrap_or(true));
    if let Some(kty) = &b.kty {
        o.spec = Some(key_spec(kty, b.key_size, b.crv.as_deref())?);
    }
    o.subject = b.subject;
    o.exportable = b.exportable;
    o.content_type = b.content_type;
    o.validity_months = b.validity_months;
    o.created = b.created;
    let v = admin(&shared).create_certificate_version(&vault, &name, o)?;
    Ok(Json(version_json(&v)))
}

#[derive(Debug, Default, Deserialize)]
struct EnabledRequest {
    enabled: Option<bool>,
}

async fn version_enabled(
    State(shared): State<Arc<Shared>>,
    Path((vault, name, version)): Path<(String, String, String)>,
    body: Result<Body<EnabledRequest>, VaultError>,
) -> AdminResult {
    let Body(b) = body?;
    let enabled = b.enabled.unwrap_or(true);
    if admin(&shared).set_version_enabled(&vault, &name, &version, enabled) {
        Ok(Json(json!({"enabled": enabled})))
    } else {
        Err(AdminError {
            status: StatusCode::NOT_FOUND,
            code: "NotFound".into(),
            message: format!("no version {name}/{version} in vault {vault}"),
        })
    }
}

async fn faults(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let list: Vec<FaultBody> = admin(&shared)
        .faults()
        .iter()
        .map(|(id, f)| FaultBody::of(f, *id))
        .collect();
    Json(json!({"value": list}))
}

async fn inject_fault(
    State(shared): State<Arc<Shared>>,
    body: Result<Body<FaultBody>, VaultError>,
) -> AdminResult {
    let Body(b) = body?;
    let f = Fault::try_from(b).map_err(bad_parameter)?;
    let id = admin(&shared).inject_fault(f.clone());
    Ok(Json(json!(FaultBody::of(&f, id))))
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Json<Value> {
    admin(&shared).clear_faults();
    Json(json!({"cleared": true}))
}

async fn clear_fault(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> AdminResult {
    let id = id
        .parse::<u64>()
        .map_err(|_| bad_parameter("fault ids are numbers"))?;
    Ok(Json(
        json!({"cleared": admin(&shared).clear_fault(FaultId(id))}),
    ))
}

async fn counters(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(admin(&shared).counters()))
}

async fn reset_counters(State(shared): State<Arc<Shared>>) -> Json<Value> {
    admin(&shared).reset_counters();
    Json(json!({}))
}

async fn limits(State(shared): State<Arc<Shared>>) -> Json<VaultLimits> {
    Json(admin(&shared).vault_limits())
}

async fn set_limits(
    State(shared): State<Arc<Shared>>,
    body: Result<Body<VaultLimits>, VaultError>,
) -> AdminResult {
    let Body(limits) = body?;
    admin(&shared).set_vault_limits(limits.clone());
    Ok(Json(json!(limits)))
}

async fn rotate_signing_key(State(shared): State<Arc<Shared>>) -> AdminResult {
    let kid = admin(&shared).rotate_token_signing_key()?;
    Ok(Json(json!({"kid": kid})))
}

async fn apps(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"value": admin(&shared).apps()}))
}

async fn register_app(
    State(shared): State<Arc<Shared>>,
    body: Result<Body<App>, VaultError>,
) -> AdminResult {
    let Body(app) = body?;
    let client_id = app.client_id.clone();
    admin(&shared).register_app(app)?;
    Ok(Json(json!({"client_id": client_id})))
}

#[derive(Debug, Default, Deserialize)]
struct CertificateRequest {
    cer: Option<String>,
}

async fn client_certificate(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Result<Body<CertificateRequest>, VaultError>,
) -> AdminResult {
    let Body(b) = body?;
    let der = b
        .cer
        .and_then(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c.trim())
                .ok()
        })
        .ok_or_else(|| bad_parameter("send {\"cer\": base64 DER}"))?;
    admin(&shared).register_app(App::new(&id).certificate(der))?;
    Ok(Json(json!({"client_id": id})))
}

#[derive(Debug, Default, Deserialize)]
struct SecretRequest {
    secret: Option<String>,
}

async fn client_secret(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Result<Body<SecretRequest>, VaultError>,
) -> AdminResult {
    let Body(b) = body?;
    let secret = b
        .secret
        .ok_or_else(|| bad_parameter("send {\"secret\": \"…\"}"))?;
    admin(&shared).register_app(App::new(&id).secret(secret))?;
    Ok(Json(json!({"client_id": id})))
}

async fn apis(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"value": admin(&shared).apis()}))
}

async fn register_api(
    State(shared): State<Arc<Shared>>,
    body: Result<Body<Api>, VaultError>,
) -> AdminResult {
    let Body(api) = body?;
    let app_id = api.resolved_app_id();
    admin(&shared).register_api(api)?;
    Ok(Json(json!({"app_id": app_id})))
}

#[derive(Debug, Default, Deserialize)]
struct TenantRequest {
    tenant_id: Option<String>,
}

async fn add_tenant(
    State(shared): State<Arc<Shared>>,
    body: Result<Body<TenantRequest>, VaultError>,
) -> AdminResult {
    let Body(b) = body?;
    let tenant = b
        .tenant_id
        .ok_or_else(|| bad_parameter("send {\"tenant_id\": \"…\"}"))?;
    admin(&shared).add_tenant(&tenant)?;
    Ok(Json(json!({"tenant_id": tenant})))
}

async fn identities(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let directory = shared.identity.directory();
    Json(
        json!({"system_assigned": directory.system_identity, "user_assigned": directory.user_identities()}),
    )
}

#[derive(Debug, Default, Deserialize)]
struct IdentityRequest {
    name: Option<String>,
    client_id: Option<String>,
    object_id: Option<String>,
}

async fn assign_identity(
    State(shared): State<Arc<Shared>>,
    body: Result<Body<IdentityRequest>, VaultError>,
) -> AdminResult {
    let Body(b) = body?;
    let name = b
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad_parameter("send {\"name\": \"…\"}"))?;
    let mut mi = ManagedIdentity::user_assigned(&name);
    if let Some(c) = b.client_id {
        mi = mi.with_client_id(c);
    }
    if let Some(o) = b.object_id {
        mi = mi.with_object_id(o);
    }
    admin(&shared).assign_user_identity(mi.clone())?;
    Ok(Json(json!(mi)))
}

#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    namespace: Option<String>,
    name: Option<String>,
    audience: Option<String>,
    path: Option<PathBuf>,
}

async fn service_account_token(
    State(shared): State<Arc<Shared>>,
    body: Result<Body<TokenRequest>, VaultError>,
) -> AdminResult {
    let Body(b) = body?;
    let (Some(namespace), Some(name)) = (b.namespace, b.name) else {
        return Err(bad_parameter(
            "send {\"namespace\": \"…\", \"name\": \"…\"}",
        ));
    };
    let a = admin(&shared);
    let token = a.service_account_token(&namespace, &name, b.audience.as_deref())?;
    if let Some(path) = &b.path {
        crate::store::write_atomic(path, token.as_bytes())?;
    }
    Ok(Json(json!({"token": token})))
}
