//! Entra ID's error answers: `{"error","error_description":"AADSTS…","error_codes",
//! "timestamp","trace_id","correlation_id","error_uri"}`, with the timestamp in Entra's
//! `2024-01-01 12:00:00Z` form.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let emu = keyroll_emulator::Emulator::builder().start().await?;
//! let refusal: serde_json::Value = emu
//!     .http_client()
//!     .post(emu.token_endpoint("no-such-tenant"))
//!     .form(&[("grant_type", "client_credentials")])
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! assert_eq!(refusal["error_codes"][0], 90002);
//! assert!(refusal["error_description"].as_str().unwrap_or("").starts_with("AADSTS90002: "));
//! # Ok(()) }
//! ```

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

use crate::identity::directory::random_guid;

/// A refusal of the token endpoint.
#[derive(Debug, Clone)]
pub(crate) struct EntraError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) code: u32,
    pub(crate) message: String,
}

/// The body Entra sends with a refusal.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: String,
    error_codes: [u32; 1],
    timestamp: String,
    trace_id: String,
    correlation_id: String,
    error_uri: String,
}

impl EntraError {
    fn new(status: StatusCode, error: &'static str, code: u32, message: impl Into<String>) -> Self {
        EntraError {
            status,
            error,
            code,
            message: message.into(),
        }
    }

    /// 401 `invalid_client`: the client's credentials did not pass.
    pub(crate) fn invalid_client(code: u32, message: impl Into<String>) -> Self {
        EntraError::new(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
    }

    /// 400 `invalid_request`.
    pub(crate) fn invalid_request(code: u32, message: impl Into<String>) -> Self {
        EntraError::new(StatusCode::BAD_REQUEST, "invalid_request", code, message)
    }

    /// 400 `unauthorized_client`: AADSTS700016, no such app in the tenant.
    pub(crate) fn unknown_client(client_id: &str, tenant: &str) -> Self {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700_016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// 400 `invalid_request`: AADSTS90002, no such tenant.
    pub(crate) fn unknown_tenant(tenant: &str) -> Self {
        EntraError::invalid_request(
            90_002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        )
    }

    /// 400 `invalid_resource`: AADSTS500011, no such resource in the tenant.
    pub(crate) fn unknown_resource(resource: &str, tenant: &str) -> Self {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500_011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// 400 `invalid_scope`: AADSTS1002012, a client-credentials scope must end in `/.default`.
    pub(crate) fn invalid_scope(scope: &str) -> Self {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1_002_012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        )
    }

    /// 400 `unsupported_grant_type`: AADSTS70003.
    pub(crate) fn unsupported_grant(grant: &str) -> Self {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70_003,
            format!(
                "The app requested an unsupported grant type '{grant}'. The emulator supports client_credentials."
            ),
        )
    }

    /// 500 `server_error` (the emulator could not sign).
    pub(crate) fn server(message: impl Into<String>) -> Self {
        EntraError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            500_011,
            message,
        )
    }

    /// The `error_description` Entra writes: the code, the message and the request's ids.
    fn body(&self, authority: &str) -> ErrorBody<'_> {
        let trace_id = random_guid();
        let correlation_id = random_guid();
        let timestamp = entra_timestamp(time::OffsetDateTime::now_utc());
        ErrorBody {
            error: self.error,
            error_description: format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                self.code, self.message
            ),
            error_codes: [self.code],
            timestamp,
            trace_id,
            correlation_id,
            error_uri: format!("{authority}/error?code={}", self.code),
        }
    }

    /// The response, with `error_uri` under `authority`.
    pub(crate) fn into_response_at(self, authority: &str) -> Response {
        (self.status, axum::Json(self.body(authority))).into_response()
    }
}

/// Entra's timestamp form: `2024-01-01 12:00:00Z`.
pub(crate) fn entra_timestamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_in_entras_form() {
        let t = time::OffsetDateTime::from_unix_timestamp(1_704_110_400).unwrap();
        assert_eq!(entra_timestamp(t), "2024-01-01 12:00:00Z");
    }

    #[test]
    fn the_body_carries_the_code_in_three_places() {
        let e = EntraError::unknown_tenant("nope");
        let body = serde_json::to_value(e.body("https://localhost:1")).unwrap();
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(body["error_codes"][0], 90_002);
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS90002: Tenant 'nope'")
        );
        assert_eq!(body["error_uri"], "https://localhost:1/error?code=90002");
        let ts = body["timestamp"].as_str().unwrap();
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .ends_with(&format!("Timestamp: {ts}"))
        );
        assert_eq!(ts.len(), "2024-01-01 12:00:00Z".len());
        assert_eq!(body["trace_id"].as_str().unwrap().len(), 36);
    }
}
