//! The Key Vault data plane: routes, the request pieces every operation shares (the vault a
//! host names, typed JSON bodies, paging, api-version, names) and the service's error shape.
//! Keys, certificates and secrets live in their own modules; authentication in [`auth`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let emu = keyroll_emulator::Emulator::builder().start().await?;
//! // Without a token every vault answers 401 with the bearer challenge.
//! let answer = emu.http_client().get(format!("{}keys?api-version=2025-07-01", emu.vault_url("v"))).send().await?;
//! assert_eq!(answer.status(), 401);
//! # Ok(()) }
//! ```

pub(crate) mod auth;
pub(crate) mod certificates;
pub(crate) mod keys;
pub(crate) mod secrets;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::router::vault_operation;
use crate::server::{Scheme, Shared, vault_from_host};
use crate::store::Attributes;

/// api-versions the emulator answers, besides any `7.x`.
const API_VERSIONS: &[&str] = &[
    "2025-07-01",
    "2026-04-01",
    "2025-06-01-preview",
    "2024-11-01",
    "2024-12-01-preview",
];

/// Largest request body accepted.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The vault routes, each counted, open to faults, authenticated and limited under its
/// operation name.
pub(crate) fn routes(shared: &Arc<Shared>) -> Router<Arc<Shared>> {
    let op = |name, route| vault_operation(shared, name, route);
    Router::new()
        .route("/keys", op("keys.list", get(keys::list)))
        .route("/keys/", op("keys.list", get(keys::list)))
        .route("/keys/{name}/create", op("keys.create", post(keys::create)))
        .route("/keys/{name}/rotate", op("keys.rotate", post(keys::rotate)))
        .route(
            "/keys/{name}/versions",
            op("keys.versions", get(keys::versions)),
        )
        .route("/keys/{name}", op("keys.get", get(keys::get_latest)))
        .route("/keys/{name}/", op("keys.get", get(keys::get_latest)))
        .route(
            "/keys/{name}/{version}",
            op("keys.get", get(keys::get)).merge(op("keys.update", patch(keys::update))),
        )
        .route(
            "/keys/{name}/{version}/sign",
            op("keys.sign", post(keys::sign)),
        )
        .route(
            "/keys/{name}//sign",
            op("keys.sign", post(keys::sign_latest)),
        )
        .route(
            "/keys/{name}/{version}/verify",
            op("keys.verify", post(keys::verify)),
        )
        .route(
            "/keys/{name}//verify",
            op("keys.verify", post(keys::verify_latest)),
        )
        .route(
            "/certificates",
            op("certificates.list", get(certificates::list)),
        )
        .route(
            "/certificates/",
            op("certificates.list", get(certificates::list)),
        )
        .route(
            "/certificates/{name}/create",
            op("certificates.create", post(certificates::create)),
        )
        .route(
            "/certificates/{name}/pending",
            op("certificates.pending", get(certificates::pending)),
        )
        .route(
            "/certificates/{name}/versions",
            op("certificates.versions", get(certificates::versions)),
        )
        .route(
            "/certificates/{name}/policy",
            op("certificates.policy", get(certificates::policy)),
        )
        .route(
            "/certificates/{name}",
            op("certificates.get", get(certificates::get_latest)),
        )
        .route(
            "/certificates/{name}/",
            op("certificates.get", get(certificates::get_latest)),
        )
        .route(
            "/certificates/{name}/{version}",
            op("certificates.get", get(certificates::get))
                .merge(op("certificates.update", patch(certificates::update))),
        )
        .route("/secrets", op("secrets.list", get(secrets::list)))
        .route("/secrets/", op("secrets.list", get(secrets::list)))
        .route(
            "/secrets/{name}",
            op("secrets.set", put(secrets::set)).merge(op("secrets.get", get(secrets::get_latest))),
        )
        .route(
            "/secrets/{name}/",
            op("secrets.get", get(secrets::get_latest)),
        )
        .route(
            "/secrets/{name}/versions",
            op("secrets.versions", get(secrets::versions)),
        )
        .route(
            "/secrets/{name}/{version}",
            op("secrets.get", get(secrets::get))
                .merge(op("secrets.update", patch(secrets::update))),
        )
}

/// A failed operation, rendered as `{"error":{"code","message"}}`.
#[derive(Debug, Clone)]
pub(crate) struct VaultError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

/// A Key Vault shaped error response.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: ErrorDetail { code, message },
        }),
    )
        .into_response()
}

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        error_response(self.status, self.code, &self.message)
    }
}

impl VaultError {
    pub(crate) fn bad(message: impl Into<String>) -> VaultError {
        VaultError {
            status: StatusCode::BAD_REQUEST,
            code: "BadParameter",
            message: message.into(),
        }
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> VaultError {
        VaultError {
            status: StatusCode::FORBIDDEN,
            code: "Forbidden",
            message: message.into(),
        }
    }

    pub(crate) fn not_found(
        code: &'static str,
        kind: &str,
        name: &str,
        version: &str,
    ) -> VaultError {
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

    pub(crate) fn internal(e: impl std::fmt::Display) -> VaultError {
        VaultError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalError",
            message: e.to_string(),
        }
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

pub(crate) type VResult<T> = Result<T, VaultError>;

/// The vault a request addresses (from its `Host`) and the base of the ids it answers with.
#[derive(Debug, Clone)]
pub(crate) struct VaultRequest {
    pub(crate) vault: String,
    /// `https://{host}`.
    pub(crate) base: String,
    /// The request's query parameters.
    pub(crate) query: BTreeMap<String, String>,
}

impl VaultRequest {
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn id(&self, collection: &str, name: &str, version: &str) -> String {
        format!("{}/{collection}/{name}/{version}", self.base)
    }
}

/// The `Host` header of a request, lowercased.
pub(crate) fn host_of(parts: &http::HeaderMap) -> Option<String> {
    parts
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
}

/// The query parameters of a URI.
pub(crate) fn query_of(uri: &http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

impl<S: Send + Sync> FromRequestParts<S> for VaultRequest {
    type Rejection = VaultError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let host = host_of(&parts.headers)
            .ok_or_else(|| VaultError::bad("The Host header is missing."))?;
        let vault = vault_from_host(&host)
            .ok_or_else(|| VaultError::bad(format!("No vault is named by the host {host}.")))?;
        let scheme = parts
            .extensions
            .get::<Scheme>()
            .map_or("https", |s| s.name());
        Ok(VaultRequest {
            vault,
            base: format!("{scheme}://{host}"),
            query: query_of(&parts.uri),
        })
    }
}

/// A JSON body, read as the service does: an empty body is `{}`, and what does not parse is
/// a `BadParameter`.
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = VaultError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| VaultError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "BadParameter",
                message: "The request body is too large or could not be read.".into(),
            })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes)
            .map(Body)
            .map_err(|e| VaultError::bad(format!("The request body is not valid: {e}")))
    }
}

/// Checks the `api-version` query parameter.
pub(crate) fn check_api_version(query: &BTreeMap<String, String>) -> VResult<()> {
    let Some(v) = query.get("api-version") else {
        return Err(VaultError::bad(
            "The 'api-version' query parameter is missing.",
        ));
    };
    let seven = v.strip_prefix("7.").is_some_and(|minor| {
        let minor = minor.strip_suffix("-preview").unwrap_or(minor);
        !minor.is_empty() && minor.chars().all(|c| c.is_ascii_digit())
    });
    if seven || API_VERSIONS.contains(&v.as_str()) {
        Ok(())
    } else {
        Err(VaultError::bad(format!(
            "The specified version ({v}) is not recognized. Consider using the latest supported version (2025-07-01)."
        )))
    }
}

/// Checks an object name (1–127 letters, digits and dashes).
pub(crate) fn check_name(name: &str) -> VResult<()> {
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

/// Where `version` stands in `versions` (oldest first); the latest when `version` is empty.
pub(crate) fn version_index<T>(
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

/// Decodes base64url (or base64), with or without padding.
pub(crate) fn b64url_decode(s: &str, property: &str) -> VResult<Vec<u8>> {
    let trimmed = s.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| {
            VaultError::bad(format!(
                "Property '{property}' is not a valid base64url string."
            ))
        })
}

/// Refuses an operation on a disabled, not yet valid or expired object.
pub(crate) fn usable(attributes: &Attributes, now: i64, op: &str, kind: &str) -> VResult<()> {
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

/// Deserializes a present field (even `null`) as `Some`, so `nbf: null` clears it.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `attributes` of a create or update request.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct AttributesPatch {
    pub(crate) enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) nbf: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) exp: Option<Option<i64>>,
}

impl AttributesPatch {
    /// Applies the patch as of `now`.
    pub(crate) fn apply(&self, a: &mut Attributes, now: i64) {
        if let Some(e) = self.enabled {
            a.enabled = e;
        }
        if let Some(nbf) = self.nbf {
            a.nbf = nbf;
        }
        if let Some(exp) = self.exp {
            a.exp = exp;
        }
        a.updated = now;
    }
}

/// `attributes` as the service answers them, with its recovery fields.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttributesView {
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    created: i64,
    updated: i64,
    recovery_level: &'static str,
    recoverable_days: u32,
}

impl From<&Attributes> for AttributesView {
    fn from(a: &Attributes) -> Self {
        AttributesView {
            enabled: a.enabled,
            nbf: a.nbf,
            exp: a.exp,
            created: a.created,
            updated: a.updated,
            recovery_level: "Recoverable+Purgeable",
            recoverable_days: 90,
        }
    }
}

/// Tags as stored: absent in a body when empty.
pub(crate) type Tags = Map<String, Value>;

/// `None` for empty tags, so the field is left out.
pub(crate) fn tags_view(tags: &Tags) -> Option<&Tags> {
    (!tags.is_empty()).then_some(tags)
}

/// One page of a list: `{"value":[…],"nextLink":…}`.
#[derive(Debug, Serialize)]
pub(crate) struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "nextLink")]
    next_link: Option<String>,
}

/// Pages `items` by `maxresults` (1–25) and `$skiptoken`.
pub(crate) fn page<T, V>(
    req: &VaultRequest,
    items: &[T],
    path: &str,
    render: impl Fn(&T) -> V,
) -> VResult<Page<V>> {
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
    let end = skip.saturating_add(max).min(items.len());
    let value = items
        .get(skip..end)
        .unwrap_or_default()
        .iter()
        .map(render)
        .collect();
    let next_link = (end < items.len()).then(|| {
        let api = req.query("api-version").unwrap_or("2025-07-01");
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("api-version", api);
        q.append_pair("$skiptoken", &end.to_string());
        q.append_pair("maxresults", &max.to_string());
        format!("{}{path}?{}", req.base, q.finish())
    });
    Ok(Page { value, next_link })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_and_names() {
        let q = |v: &str| BTreeMap::from([("api-version".to_string(), v.to_string())]);
        for ok in ["7.4", "7.6-preview", "2025-07-01", "2026-04-01"] {
            assert!(check_api_version(&q(ok)).is_ok(), "{ok}");
        }
        for bad in ["7.", "8.0", "2020-01-01"] {
            assert!(check_api_version(&q(bad)).is_err(), "{bad}");
        }
        assert!(check_api_version(&BTreeMap::new()).is_err());
        assert!(check_name("a-1").is_ok());
        assert!(check_name("a_1").is_err() && check_name("").is_err());
        assert!(check_name(&"a".repeat(128)).is_err());
    }

    #[test]
    fn attribute_patches_set_and_clear() {
        let mut a = Attributes::new(10);
        let p: AttributesPatch =
            serde_json::from_str(r#"{"enabled":false,"nbf":5,"exp":9}"#).unwrap();
        p.apply(&mut a, 11);
        assert_eq!(
            (a.enabled, a.nbf, a.exp, a.updated),
            (false, Some(5), Some(9), 11)
        );
        let p: AttributesPatch = serde_json::from_str(r#"{"nbf":null}"#).unwrap();
        p.apply(&mut a, 12);
        assert_eq!((a.enabled, a.nbf, a.exp), (false, None, Some(9)));
        let p: AttributesPatch = serde_json::from_str(r#"{"exp":null}"#).unwrap();
        p.apply(&mut a, 13);
        assert_eq!(a.exp, None);
        let view = serde_json::to_value(AttributesView::from(&a)).unwrap();
        assert_eq!(view["recoveryLevel"], "Recoverable+Purgeable");
        assert!(view.get("exp").is_none());
    }

    #[test]
    fn base64_of_either_alphabet() {
        assert_eq!(b64url_decode("-_8=", "value").unwrap(), [0xfb, 0xff]);
        assert_eq!(b64url_decode("+/8", "value").unwrap(), [0xfb, 0xff]);
        assert!(b64url_decode("!!", "value").is_err());
    }
}
