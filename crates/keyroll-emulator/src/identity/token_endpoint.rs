//! `POST /{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials`: the tenant must
//! exist (AADSTS90002), the app must be registered in it (AADSTS700016), its credential
//! must pass (a secret, AADSTS7000215; an assertion it signed, or a federated one), and the
//! scope must name a registered API (`{resource}/.default`, AADSTS500011). The token has
//! the shape the API's registration asks for (v1 or v2).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let emu = keyroll_emulator::Emulator::builder().client_secret("app", "s").start().await?;
//! let scope = format!("{}/.default", emu.vault_resource());
//! let answer: serde_json::Value = emu
//!     .http_client()
//!     .post(emu.token_endpoint(emu.tenant_id()))
//!     .form(&[("grant_type", "client_credentials"), ("client_id", "app"), ("client_secret", "s"), ("scope", scope.as_str())])
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! assert_eq!(answer["token_type"], "Bearer");
//! # Ok(()) }
//! ```

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::clock::real_now_ms;
use crate::identity::assertion;
use crate::identity::directory::{Resource, TokenVersion, stable_guid};
use crate::identity::errors::EntraError;
use crate::identity::tokens::{AccessClaims, AuthMethod, Subject};
use crate::server::Shared;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The form of a token request.
#[derive(Default, Deserialize)]
pub(crate) struct TokenRequest {
    #[serde(default)]
    grant_type: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion: Option<String>,
    client_assertion_type: Option<String>,
    #[serde(default)]
    scope: String,
}

/// A successful answer.
#[derive(Debug, Serialize)]
pub(crate) struct TokenResponse {
    token_type: &'static str,
    expires_in: i64,
    ext_expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_in: Option<i64>,
    access_token: String,
}

/// A credential the request presented.
enum Presented {
    Secret(String),
    Assertion(String),
}

pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        Err(e) => {
            return EntraError::invalid_request(
                900_144,
                format!("The request body must be a form: {e}"),
            )
            .into_response_at(&shared.authority());
        }
    };
    match client_credentials(&shared, &tenant, &headers, form) {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => e.into_response_at(&shared.authority()),
    }
}

/// `client_secret_basic`: the client id and secret in an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let h = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = h.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((dec(id)?, dec(secret)?))
}

fn client_credentials(
    shared: &Shared,
    tenant_path: &str,
    headers: &HeaderMap,
    form: TokenRequest,
) -> Result<TokenResponse, EntraError> {
    let identity = &shared.identity;
    let tenant = {
        let directory = identity.directory();
        match directory.resolve_tenant(tenant_path) {
            Some(t) => t.to_string(),
            None if identity.permissive => tenant_path.to_string(),
            None => return Err(EntraError::unknown_tenant(tenant_path)),
        }
    };
    if form.grant_type.is_empty() {
        return Err(EntraError::invalid_request(
            900_144,
            "The request body must contain the following parameter: 'grant_type'.",
        ));
    }
    if form.grant_type != "client_credentials" {
        return Err(EntraError::unsupported_grant(&form.grant_type));
    }
    let basic = basic_credentials(headers);
    let client_id = form
        .client_id
        .clone()
        .or_else(|| basic.as_ref().map(|b| b.0.clone()))
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            EntraError::invalid_request(
                900_144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        })?;
    if form.scope.is_empty() {
        return Err(EntraError::invalid_request(
            90_014,
            "The required field 'scope' is missing from the credential. Ensure that you have all the necessary parameters for the login request.",
        ));
    }
    let resource = match form.scope.split_whitespace().collect::<Vec<_>>().as_slice() {
        [one] if one.ends_with("/.default") => one.trim_end_matches("/.default").to_string(),
        _ => return Err(EntraError::invalid_scope(&form.scope)),
    };
    let presented = match (
        form.client_secret.or_else(|| basic.map(|b| b.1)),
        form.client_assertion,
        form.client_assertion_type.as_deref(),
    ) {
        (Some(s), None, _) => Presented::Secret(s),
        (None, Some(a), Some(JWT_BEARER)) => Presented::Assertion(a),
        (None, Some(_), _) => {
            return Err(EntraError::invalid_request(
                700_029,
                format!("The client_assertion_type must be {JWT_BEARER}."),
            ));
        }
        _ => {
            return Err(EntraError::invalid_client(
                7_000_218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
    };
    let directory = identity.directory();
    let method = match directory.app(&client_id).filter(|e| e.tenant == tenant) {
        Some(entry) => authenticate(shared, entry, &presented, tenant_path, &tenant)?,
        None if identity.permissive => match presented {
            Presented::Secret(_) => AuthMethod::Secret,
            Presented::Assertion(_) => AuthMethod::Certificate,
        },
        None => return Err(EntraError::unknown_client(&client_id, &tenant)),
    };
    let resource = match directory.resource(&tenant, &resource, &client_id) {
        Some(r) => r,
        None if identity.permissive => Resource {
            requested: resource.clone(),
            app_id: stable_guid(&resource),
            version: TokenVersion::V2,
            roles: Vec::new(),
        },
        None => return Err(EntraError::unknown_resource(&resource, &tenant)),
    };
    drop(directory);
    let who = Subject {
        tenant: &tenant,
        client_id: &client_id,
        object_id: stable_guid(&format!("{tenant}/{client_id}")),
        method,
        mi_resource_id: None,
    };
    let lifetime = shared.token_lifetime;
    let claims = AccessClaims::new(
        &shared.authority(),
        &resource,
        &who,
        shared.clock.now(),
        lifetime,
    );
    let access_token = identity.sign(&claims).map_err(EntraError::server)?;
    Ok(TokenResponse {
        token_type: "Bearer",
        expires_in: lifetime,
        ext_expires_in: lifetime,
        refresh_in: (lifetime >= 7200).then_some(lifetime / 2),
        access_token,
    })
}

/// Checks the app's credential; returns how it authenticated.
fn authenticate(
    shared: &Shared,
    entry: &crate::identity::directory::AppEntry,
    presented: &Presented,
    tenant_path: &str,
    tenant: &str,
) -> Result<AuthMethod, EntraError> {
    // Expiry by the earlier of the real and the emulated clock, so moving the emulator's clock
    // forward does not expire what clients just signed with the real time.
    let now = (real_now_ms() / 1000).min(shared.clock.now());
    match presented {
        Presented::Secret(s) => {
            if entry
                .app
                .secrets
                .iter()
                .any(|k| constant_time_eq(k.as_bytes(), s.as_bytes()))
            {
                Ok(AuthMethod::Secret)
            } else {
                Err(EntraError::invalid_client(
                    7_000_215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
                ))
            }
        }
        Presented::Assertion(a) => {
            let (issuer, subject) = assertion::unverified_issuer_and_subject(a)?;
            if subject == entry.app.client_id {
                let audiences = token_endpoint_audiences(shared, tenant_path, tenant);
                assertion::verify_signed(entry, a, &audiences, now)?;
            } else if issuer == shared.identity.kubernetes.issuer {
                let claims = shared.identity.kubernetes.verify(a).ok_or_else(|| {
                    EntraError::invalid_client(
                        700_027,
                        "Client assertion failed signature validation: the token was not signed by a key of its issuer.",
                    )
                })?;
                assertion::match_federated(entry, &claims)?;
                assertion::check_times(&claims, now)?;
            } else if entry
                .app
                .federated_credentials
                .iter()
                .any(|c| c.issuer == issuer)
            {
                return Err(EntraError::invalid_client(
                    50_166,
                    format!(
                        "Request to External OIDC endpoint failed: the emulator cannot reach the issuer '{issuer}' (it knows its own Kubernetes issuer only)."
                    ),
                ));
            } else {
                assertion::match_federated(entry, &serde_json::json!({"iss": issuer}))?;
            }
            Ok(AuthMethod::Certificate)
        }
    }
}

/// The audiences an app's own assertion may name: the token endpoint (v2 and v1) and the
/// issuer, for the tenant as written in the path and as resolved.
fn token_endpoint_audiences(shared: &Shared, tenant_path: &str, tenant: &str) -> Vec<String> {
    let a = shared.authority();
    [tenant_path, tenant]
        .iter()
        .flat_map(|t| {
            [
                format!("{a}/{t}/oauth2/v2.0/token"),
                format!("{a}/{t}/v2.0"),
                format!("{a}/{t}/oauth2/token"),
            ]
        })
        .collect()
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let v = STANDARD.encode("my%20app:s%2Bcret");
        h.insert(
            http::header::AUTHORIZATION,
            format!("Basic {v}").parse().unwrap(),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("my app".to_string(), "s+cret".to_string()))
        );
        h.insert(http::header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(basic_credentials(&h), None);
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }
}
