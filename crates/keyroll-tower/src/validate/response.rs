//! RFC 6750 responses for requests the validator refuses.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use keyroll_core::KeyCacheError;
use keyroll_core::jwt::{InvalidReason, VerifyError};

use super::metrics::{LABELS, index};

/// Why a request was refused: the crate-internal form every rejection takes before it becomes
/// a response. Descriptions are fixed texts; none echoes the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No bearer token: 401 with a bare challenge.
    Missing,
    /// The request is malformed (several credentials): 400 `invalid_request`.
    BadRequest(&'static str),
    /// The token is invalid: 401 `invalid_token`.
    Invalid(InvalidReason),
    /// The token lacks a scope: 403 `insufficient_scope`.
    InsufficientScope(String),
    /// The claims do not have the shape the handler needs: 401 `invalid_token`.
    InvalidClaims,
    /// The keys are unavailable: 503 with `Retry-After`.
    Unavailable(Duration),
    /// A server-side configuration error (an extractor without the layer): 500.
    Misconfigured,
}

impl From<VerifyError> for Failure {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Invalid(invalid) => Failure::Invalid(invalid.reason()),
            VerifyError::KeysUnavailable(error) => Failure::unavailable(&error),
            // A future variant: refuse without blaming the client.
            _ => Failure::Unavailable(Duration::from_secs(1)),
        }
    }
}

impl Failure {
    pub(crate) fn unavailable(error: &KeyCacheError) -> Self {
        Failure::Unavailable(error.retry_after().unwrap_or(Duration::from_secs(1)))
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Failure::Missing | Failure::Invalid(_) | Failure::InvalidClaims => {
                StatusCode::UNAUTHORIZED
            }
            Failure::BadRequest(_) => StatusCode::BAD_REQUEST,
            Failure::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Failure::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The RFC 6750 error code (`None` for a missing token).
    pub(crate) fn error_code(&self) -> Option<&'static str> {
        match self {
            Failure::Missing => None,
            Failure::BadRequest(_) => Some("invalid_request"),
            Failure::Invalid(_) | Failure::InvalidClaims => Some("invalid_token"),
            Failure::InsufficientScope(_) => Some("insufficient_scope"),
            Failure::Unavailable(_) => Some("temporarily_unavailable"),
            Failure::Misconfigured => Some("server_error"),
        }
    }

    /// A fixed description.
    pub(crate) fn description(&self) -> &'static str {
        match self {
            Failure::Missing => "a bearer token is required",
            Failure::BadRequest(what) => what,
            Failure::Invalid(reason) => reason.description(),
            Failure::InsufficientScope(_) => "the token lacks a required scope",
            Failure::InvalidClaims => "the token's claims do not have the expected form",
            Failure::Unavailable(_) => "the keys that verify tokens are unavailable; retry later",
            Failure::Misconfigured => "token validation is not configured for this route",
        }
    }

    /// A stable metric/log label.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Failure::Missing => "missing_token",
            Failure::BadRequest(_) => "invalid_request",
            Failure::Invalid(reason) => reason.label(),
            Failure::InsufficientScope(_) => "insufficient_scope",
            Failure::InvalidClaims => "invalid_claims",
            Failure::Unavailable(_) => "keys_unavailable",
            Failure::Misconfigured => "misconfigured",
        }
    }

    /// The response: status, `WWW-Authenticate` (401/403/400), `Retry-After` (503), a JSON
    /// body `{"error","error_description"}`, `Cache-Control: no-store`.
    pub(crate) fn to_response(&self, realm: &str) -> Response<Bytes> {
        let code = self.error_code();
        let description = self.description();
        let mut body = String::with_capacity(64 + description.len());
        body.push_str("{\"error\":\"");
        push_escaped(&mut body, code.unwrap_or("missing_token"));
        body.push_str("\",\"error_description\":\"");
        push_escaped(&mut body, description);
        body.push_str("\"}");

        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Failure::Unavailable(retry_after) => {
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            Failure::Misconfigured => {}
            _ => {
                if let Ok(value) = HeaderValue::try_from(self.challenge(realm)) {
                    headers.insert(WWW_AUTHENTICATE, value);
                }
            }
        }
        response
    }

    /// The `WWW-Authenticate` value.
    pub(crate) fn challenge(&self, realm: &str) -> String {
        let mut value = String::with_capacity(96);
        value.push_str("Bearer realm=\"");
        push_escaped(&mut value, realm);
        value.push('"');
        if let Some(code) = self.error_code() {
            value.push_str(", error=\"");
            value.push_str(code);
            value.push_str("\", error_description=\"");
            push_escaped(&mut value, self.description());
            value.push('"');
        }
        if let Failure::InsufficientScope(scope) = self {
            value.push_str(", scope=\"");
            push_escaped(&mut value, scope);
            value.push('"');
        }
        value
    }
}

/// A refusal's status, headers and body, built once and cloned for every refusal like it.
#[derive(Debug)]
struct Prebuilt {
    index: usize,
    description: &'static str,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Prebuilt {
    fn new(failure: &Failure, index: usize, realm: &str) -> Prebuilt {
        let (parts, body) = failure.to_response(realm).into_parts();
        let prebuilt = Prebuilt {
            index,
            description: failure.description(),
            status: parts.status,
            headers: parts.headers,
            body,
        };
        // The first clone of a `Bytes` made from a `Vec` makes it shared (an allocation); do
        // that here, so that each refusal's clone is a reference count.
        drop((prebuilt.body.clone(), prebuilt.headers.clone()));
        prebuilt
    }

    fn is(&self, index: usize, description: &str) -> bool {
        self.index == index
            && (std::ptr::eq(self.description, description) || self.description == description)
    }

    fn response(&self) -> Response<Bytes> {
        let mut response = Response::new(self.body.clone());
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// Refusal responses for one layer (one realm), each built on first use and then reused: a
/// refusal costs a few reference counts and one header map clone, no formatting.
///
/// One slot per reason label, plus a small pool for labels with several descriptions (the
/// malformed-token texts); a failure that finds no slot (a pool filled by other
/// descriptions), or that carries data (a scope, a retry delay), is built afresh.
#[derive(Debug)]
pub(crate) struct Responses {
    realm: Arc<str>,
    by_label: Box<[OnceLock<Prebuilt>]>,
    pool: Box<[OnceLock<Prebuilt>]>,
}

/// Extra slots for labels with several descriptions.
const POOL: usize = 16;

impl Responses {
    pub(crate) fn new(realm: Arc<str>) -> Self {
        let slots = |n: usize| (0..n).map(|_| OnceLock::new()).collect();
        Responses {
            realm,
            by_label: slots(LABELS.len()),
            pool: slots(POOL),
        }
    }

    /// The response for `failure`.
    pub(crate) fn response(&self, failure: &Failure) -> Response<Bytes> {
        match failure {
            Failure::InsufficientScope(_) | Failure::Unavailable(_) => {
                failure.to_response(&self.realm)
            }
            _ => {
                let index = index(failure);
                let description = failure.description();
                let build = || Prebuilt::new(failure, index, &self.realm);
                std::iter::once(&self.by_label[index])
                    .chain(self.pool.iter())
                    .map(|slot| slot.get_or_init(build))
                    .find(|prebuilt| prebuilt.is(index, description))
                    .map_or_else(|| failure.to_response(&self.realm), Prebuilt::response)
            }
        }
    }
}

/// Appends `text` for use inside a quoted string (RFC 9110) that is also valid JSON: quotes,
/// backslashes and anything outside printable ASCII are dropped. Every text passed here is a
/// fixed description or configuration, so nothing is lost in practice.
fn push_escaped(out: &mut String, text: &str) {
    let safe = |b: u8| (b.is_ascii_graphic() && b != b'"' && b != b'\\') || b == b' ';
    if text.bytes().all(safe) {
        out.push_str(text);
        return;
    }
    out.extend(
        text.chars()
            .filter(|&c| c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' '),
    );
}

/// Keeps the characters of `text` that can appear in a quoted challenge parameter.
pub(crate) fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_has_a_bare_challenge() {
        let response = Failure::Missing.to_response("orders");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"orders\""
        );
        assert_eq!(
            response.body().as_ref(),
            br#"{"error":"missing_token","error_description":"a bearer token is required"}"#
        );
    }

    #[test]
    fn invalid_token_names_the_error() {
        let response = Failure::Invalid(InvalidReason::Expired).to_response("orders");
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"orders\", error=\"invalid_token\", error_description=\"the token has expired\""
        );
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"], "invalid_token");
    }

    #[test]
    fn unavailable_rounds_retry_after_up() {
        let response = Failure::Unavailable(Duration::from_millis(1500)).to_response("r");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn prebuilt_responses_are_the_built_ones() {
        let responses = Responses::new("orders".into());
        let mut failures = vec![
            Failure::Missing,
            Failure::BadRequest("the request has several credentials headers"),
            Failure::InvalidClaims,
            Failure::Misconfigured,
            Failure::InsufficientScope("orders.read".into()),
            Failure::Unavailable(Duration::from_secs(3)),
            Failure::Invalid(InvalidReason::Expired),
            Failure::Invalid(InvalidReason::UnknownKey),
        ];
        // More malformed texts than the pool holds: the last ones are built afresh.
        let texts: Vec<&'static str> = (0..POOL + 4)
            .map(|i| &*Box::leak(format!("malformed {i}").into_boxed_str()))
            .collect();
        failures.extend(
            texts
                .iter()
                .map(|t| Failure::Invalid(InvalidReason::Malformed(t))),
        );
        for _ in 0..3 {
            for failure in &failures {
                let expected = failure.to_response("orders");
                let response = responses.response(failure);
                assert_eq!(response.status(), expected.status(), "{failure:?}");
                assert_eq!(response.headers(), expected.headers(), "{failure:?}");
                assert_eq!(response.body(), expected.body(), "{failure:?}");
            }
        }
        // The same label with another description is not served the first one's response.
        let first = responses.response(&Failure::Invalid(InvalidReason::Malformed(texts[0])));
        let second = responses.response(&Failure::Invalid(InvalidReason::Malformed(texts[1])));
        assert_ne!(first.body(), second.body());
    }

    #[test]
    fn scope_and_realm_are_sanitized() {
        let failure = Failure::InsufficientScope("orders.read".into());
        assert_eq!(
            failure.challenge("a\"b\\c"),
            "Bearer realm=\"abc\", error=\"insufficient_scope\", error_description=\"the token lacks a required scope\", scope=\"orders.read\""
        );
        assert_eq!(failure.status(), StatusCode::FORBIDDEN);
    }
}
