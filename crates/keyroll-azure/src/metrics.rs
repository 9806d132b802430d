//! Azure requests through the `metrics` facade (feature `metrics`): one count per attempt by
//! target, operation and status class, its latency, 429s and the `Retry-After`s seen. Names
//! and meaning in `keyroll_core::metrics`.

use std::time::Duration;

use azure_core::error::ErrorKind;
use keyroll_core::metrics::{
    AZURE_REQUEST_DURATION, AZURE_REQUESTS, AZURE_RETRY_AFTER, AZURE_THROTTLED, LABEL_OPERATION,
    LABEL_STATUS, LABEL_TARGET,
};
use metrics::{counter, histogram};

/// The `target` of Entra ID token requests.
pub(crate) const ENTRA: &str = "entra";

/// How one request ended, for its labels.
pub(crate) struct Ended<'a> {
    /// The vault host, or [`ENTRA`].
    pub(crate) target: &'a str,
    /// `list`, `get`, `get_secret`, `sign`, `update`, `token`.
    pub(crate) operation: &'static str,
    /// `None`: it succeeded.
    pub(crate) error: Option<&'a azure_core::Error>,
    pub(crate) took: Duration,
}

/// Records one request.
pub(crate) fn request(ended: Ended<'_>) {
    let status = ended.error.map_or("2xx", status_class);
    let target = || ended.target.to_owned();
    counter!(
        AZURE_REQUESTS,
        LABEL_TARGET => target(),
        LABEL_OPERATION => ended.operation,
        LABEL_STATUS => status,
    )
    .increment(1);
    histogram!(
        AZURE_REQUEST_DURATION,
        LABEL_TARGET => target(),
        LABEL_OPERATION => ended.operation,
    )
    .record(ended.took.as_secs_f64());
    if ended
        .error
        .is_some_and(|error| http_status(error) == Some(429))
    {
        counter!(AZURE_THROTTLED, LABEL_TARGET => target(), LABEL_OPERATION => ended.operation)
            .increment(1);
    }
    if let Some(retry_after) = ended.error.and_then(retry_after) {
        histogram!(AZURE_RETRY_AFTER, LABEL_TARGET => target(), LABEL_OPERATION => ended.operation)
            .record(retry_after.as_secs_f64());
    }
}

/// The `Retry-After` of a failed answer, if it had one.
fn retry_after(error: &azure_core::Error) -> Option<Duration> {
    match answer(error)?.kind() {
        ErrorKind::HttpResponse {
            raw_response: Some(response),
            ..
        } => crate::requests::retry_after(response.headers()),
        _ => None,
    }
}

fn http_status(error: &azure_core::Error) -> Option<u16> {
    match answer(error)?.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(u16::from(*status)),
        _ => None,
    }
}

/// The Azure errors behind `error`, itself first (a credential's error wraps the token
/// endpoint's answer).
fn chain(error: &azure_core::Error) -> impl Iterator<Item = &azure_core::Error> {
    let first: &(dyn std::error::Error + 'static) = error;
    std::iter::successors(Some(first), |error| error.source())
        .filter_map(|error| error.downcast_ref::<azure_core::Error>())
}

/// The HTTP answer behind `error`, if there was one.
fn answer(error: &azure_core::Error) -> Option<&azure_core::Error> {
    chain(error).find(|error| matches!(error.kind(), ErrorKind::HttpResponse { .. }))
}

/// `1xx` … `5xx` for an answer, `none` for no answer, `error` for anything else.
fn status_class(error: &azure_core::Error) -> &'static str {
    match http_status(error) {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
        None if chain(error)
            .any(|error| matches!(error.kind(), ErrorKind::Io | ErrorKind::Connection)) =>
        {
            "none"
        }
        None => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::StatusCode;

    #[test]
    fn status_classes() {
        let answered = |code: u16| {
            azure_core::Error::new(
                ErrorKind::HttpResponse {
                    status: StatusCode::from(code),
                    error_code: None,
                    raw_response: None,
                },
                "refused",
            )
        };
        assert_eq!(status_class(&answered(404)), "4xx");
        assert_eq!(status_class(&answered(429)), "4xx");
        assert_eq!(status_class(&answered(503)), "5xx");
        assert_eq!(http_status(&answered(429)), Some(429));
        let cut = azure_core::Error::new(ErrorKind::Io, "reset");
        assert_eq!(status_class(&cut), "none");
        let garbled = azure_core::Error::new(ErrorKind::DataConversion, "not JSON");
        assert_eq!(status_class(&garbled), "error");
        // A credential's error, wrapping the token endpoint's answer.
        let credential =
            azure_core::Error::with_error(ErrorKind::Credential, answered(401), "failed");
        assert_eq!(status_class(&credential), "4xx");
        let unreachable = azure_core::Error::with_error(ErrorKind::Credential, cut, "failed");
        assert_eq!(status_class(&unreachable), "none");
    }
}
