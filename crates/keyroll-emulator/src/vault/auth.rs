//! Authentication at the vault, as Key Vault does it: a request without a bearer token gets
//! the 401 challenge (`WWW-Authenticate: Bearer authorization=…, resource=…`); a token must be
//! signed by the emulator's Entra keys, be for Key Vault (`aud`), come from the vault's tenant
//! (`iss`, else AKV10032) and not be expired. Then the `api-version` is checked.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let emu = keyroll_emulator::Emulator::builder().start().await?;
//! let answer = emu.http_client().get(format!("{}keys?api-version=2025-07-01", emu.vault_url("v"))).send().await?;
//! let challenge = answer.headers()["www-authenticate"].to_str()?;
//! assert!(challenge.contains(&emu.vault_resource()));
//! # Ok(()) }
//! ```

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use serde_json::Value;

use crate::clock::real_now_ms;
use crate::identity::directory::{KEY_VAULT_APP_ID, KEY_VAULT_URI};
use crate::identity::tokens::{issuer_v1, issuer_v2, key_for};
use crate::server::Shared;
use crate::vault::{check_api_version, error_response, query_of};

/// Marks a response as the 401 challenge: such requests are not counted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Challenged;

fn challenge(shared: &Shared, message: &str) -> Response {
    let mut resp = error_response(StatusCode::UNAUTHORIZED, "Unauthorized", message);
    let header = format!(
        "Bearer authorization=\"{}/{}\", resource=\"{}\"",
        shared.authority(),
        shared.vault_tenant(),
        shared.vault_resource()
    );
    if let Ok(v) = HeaderValue::from_str(&header) {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    resp.extensions_mut().insert(Challenged);
    resp
}

/// The middleware: challenge, token, api-version.
pub(crate) async fn authorize(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split_once(' '))
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .map(|(_, token)| token.trim().to_string());
    let Some(token) = token else {
        return challenge(
            &shared,
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
    };
    if !shared.identity.permissive
        && let Err(message) = verify(&shared, &token)
    {
        return challenge(&shared, &message);
    }
    if let Err(e) = check_api_version(&query_of(req.uri())) {
        return e.into_response();
    }
    next.run(req).await
}

/// Checks a bearer token presented at a vault; `Err` is the service's message.
fn verify(shared: &Shared, token: &str) -> Result<(), String> {
    let keys = shared.identity.keys();
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| "AKV10022: Invalid token: not a JWT.".to_string())?;
    if header.kid.is_none() {
        return Err("AKV10022: Invalid token: no kid.".into());
    }
    let key = key_for(&keys, token).ok_or("AKV10032: Invalid issuer: unknown signing key.")?;
    let claims = key
        .verify(token)
        .map_err(|e| format!("AKV10022: Invalid token: {e}"))?;
    let resource = shared.vault_resource();
    let audiences = [
        resource.clone(),
        format!("{resource}/"),
        KEY_VAULT_URI.to_string(),
        format!("{KEY_VAULT_URI}/"),
        KEY_VAULT_APP_ID.to_string(),
    ];
    if !crate::identity::tokens::audience_matches(&claims, &audiences) {
        return Err("AKV10022: Invalid audience.".into());
    }
    let tenant = shared.vault_tenant();
    let issuers = [issuer_v1(&tenant), issuer_v2(&shared.authority(), &tenant)];
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !issuers.iter().any(|i| i == iss) {
        return Err(format!(
            "AKV10032: Invalid issuer. Expected one of {}, found {iss}.",
            issuers.join(", ")
        ));
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or("AKV10022: Invalid token: no exp.")?;
    // The earlier of the real and the emulated clock: moving the emulator's clock forward
    // does not invalidate tokens clients hold.
    let now = (real_now_ms() / 1000).min(shared.clock.now());
    if (exp as i64) + 60 < now {
        return Err("AKV10022: Invalid token: the token is expired.".into());
    }
    Ok(())
}
