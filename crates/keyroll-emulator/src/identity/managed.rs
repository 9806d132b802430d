//! The App Service managed-identity endpoint (`IDENTITY_ENDPOINT`, api-version 2019-08-01):
//! `GET /msi/token?resource=…[&client_id=|&object_id=|&principal_id=|&mi_res_id=|&msi_res_id=]`
//! with `X-IDENTITY-HEADER`. The system-assigned identity answers when none is named; a
//! user-assigned one is selected by any of its three ids; one that is not assigned gets App
//! Service's 400.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! use keyroll_emulator::{Emulator, ManagedIdentity};
//! let emu = Emulator::builder()
//!     .user_assigned_identity(ManagedIdentity::user_assigned("orders"))
//!     .start()
//!     .await?;
//! // IDENTITY_ENDPOINT=emu.identity_endpoint() IDENTITY_HEADER=emu.identity_header()
//! # Ok(()) }
//! ```

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::identity::directory::{Selector, random_guid};
use crate::identity::tokens::{AccessClaims, AuthMethod, Subject};
use crate::server::Shared;

/// The query of a token request.
#[derive(Debug, Deserialize)]
pub(crate) struct MiQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
    resource: Option<String>,
    client_id: Option<String>,
    object_id: Option<String>,
    principal_id: Option<String>,
    mi_res_id: Option<String>,
    msi_res_id: Option<String>,
}

/// A successful answer; the Rust client needs all four of the first fields, `expires_on` as
/// a string.
#[derive(Debug, Serialize)]
struct MiToken {
    access_token: String,
    expires_on: String,
    resource: String,
    token_type: &'static str,
    client_id: String,
}

/// App Service's error shape.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MiError {
    status_code: u16,
    message: String,
    correlation_id: String,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(MiError {
            status_code: status.as_u16(),
            message: message.into(),
            correlation_id: random_guid(),
        }),
    )
        .into_response()
}

pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<MiQuery>, QueryRejection>,
) -> Response {
    let identity = &shared.identity;
    match headers
        .get("x-identity-header")
        .and_then(|h| h.to_str().ok())
    {
        Some(h)
            if crate::identity::token_endpoint::constant_time_eq(
                h.as_bytes(),
                identity.identity_header.as_bytes(),
            ) => {}
        Some(_) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "The X-IDENTITY-HEADER value is not valid.",
            );
        }
        None => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "The X-IDENTITY-HEADER header is missing.",
            );
        }
    }
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match q.api_version.as_deref() {
        Some("2019-08-01") => {}
        Some(v) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("Unsupported api-version {v}: use 2019-08-01."),
            );
        }
        None => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "The api-version query parameter is missing.",
            );
        }
    }
    let Some(resource) = q.resource.as_deref().filter(|r| !r.is_empty()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The resource query parameter is missing.",
        );
    };
    let resource = resource.trim_end_matches("/.default");
    let selector = if let Some(id) = q.client_id.as_deref() {
        Some(Selector::Client(id))
    } else if let Some(id) = q.object_id.as_deref().or(q.principal_id.as_deref()) {
        Some(Selector::Object(id))
    } else {
        q.mi_res_id
            .as_deref()
            .or(q.msi_res_id.as_deref())
            .map(Selector::Resource)
    };
    let directory = identity.directory();
    let Some(mi) = directory.managed_identity(selector).cloned() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.",
        );
    };
    let tenant = directory.default_tenant.clone();
    let Some(registered) = directory.resource(&tenant, resource, &mi.client_id) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant named {tenant}."
            ),
        );
    };
    drop(directory);
    let who = Subject {
        tenant: &tenant,
        client_id: &mi.client_id,
        object_id: mi.object_id.clone(),
        method: AuthMethod::Certificate,
        mi_resource_id: Some(&mi.resource_id),
    };
    let now = shared.clock.now();
    let claims = AccessClaims::new(
        &shared.authority(),
        &registered,
        &who,
        now,
        shared.token_lifetime,
    );
    match identity.sign(&claims) {
        Ok(access_token) => Json(MiToken {
            access_token,
            expires_on: (now + shared.token_lifetime).to_string(),
            resource: resource.to_string(),
            token_type: "Bearer",
            client_id: mi.client_id,
        })
        .into_response(),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
