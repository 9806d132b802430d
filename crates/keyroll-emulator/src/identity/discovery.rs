//! The published signing keys and OpenID configurations of Entra (v1 and v2) and of the
//! Kubernetes service-account issuer.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let emu = keyroll_emulator::Emulator::builder().start().await?;
//! let config: serde_json::Value = emu
//!     .http_client()
//!     .get(emu.openid_configuration_url(emu.tenant_id()))
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! assert_eq!(config["issuer"], emu.issuer(emu.tenant_id()));
//! # Ok(()) }
//! ```

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::identity::errors::EntraError;
use crate::identity::tokens::{issuer_v1, issuer_v2};
use crate::server::Shared;

/// The tenant a path names, or Entra's AADSTS90002 answer.
fn tenant_of(shared: &Shared, tenant: &str) -> Result<String, Box<Response>> {
    let directory = shared.identity.directory();
    match directory.resolve_tenant(tenant) {
        Some(t) => Ok(t.to_string()),
        None if shared.identity.permissive => Ok(tenant.to_string()),
        None => Err(Box::new(
            EntraError::unknown_tenant(tenant).into_response_at(&shared.authority()),
        )),
    }
}

pub(crate) async fn keys(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
) -> Response {
    let tid = match tenant_of(&shared, &tenant) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let issuer = issuer_v2(&shared.authority(), &tid);
    let keys = shared.identity.keys();
    let jwks: Vec<_> = keys.iter().map(|k| k.jwk(&issuer)).collect();
    Json(json!({"keys": jwks})).into_response()
}

fn configuration(shared: &Shared, tenant: &str, tid: &str, v2: bool) -> Value {
    let a = shared.authority();
    let (issuer, token, keys, auth) = if v2 {
        (
            issuer_v2(&a, tid),
            format!("{a}/{tenant}/oauth2/v2.0/token"),
            format!("{a}/{tenant}/discovery/v2.0/keys"),
            format!("{a}/{tenant}/oauth2/v2.0/authorize"),
        )
    } else {
        (
            issuer_v1(tid),
            format!("{a}/{tenant}/oauth2/token"),
            format!("{a}/{tenant}/discovery/keys"),
            format!("{a}/{tenant}/oauth2/authorize"),
        )
    };
    json!({
        "issuer": issuer,
        "token_endpoint": token,
        "jwks_uri": keys,
        "authorization_endpoint": auth,
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "appid", "azp", "ver", "roles"],
        "tenant_region_scope": null,
        "cloud_instance_name": "localhost",
        "cloud_graph_host_name": "localhost",
        "msgraph_host": "localhost",
    })
}

pub(crate) async fn openid_configuration_v2(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
) -> Response {
    match tenant_of(&shared, &tenant) {
        Ok(tid) => Json(configuration(&shared, &tenant, &tid, true)).into_response(),
        Err(r) => *r,
    }
}

pub(crate) async fn openid_configuration_v1(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
) -> Response {
    match tenant_of(&shared, &tenant) {
        Ok(tid) => Json(configuration(&shared, &tenant, &tid, false)).into_response(),
        Err(r) => *r,
    }
}

pub(crate) async fn kubernetes_configuration(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.identity.kubernetes.discovery())
}

pub(crate) async fn kubernetes_keys(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.identity.kubernetes.jwks())
}
