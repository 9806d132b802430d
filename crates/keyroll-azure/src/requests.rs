//! Vault requests: one attempt each, counted, their failures classified.
//!
//! keyroll-azure sends every vault request once and turns the Azure SDK's own retry policy
//! off: the key and token caches above retry with their own backoff (which honours
//! `Retry-After` and spreads a throttled fleet), so one failed refresh is one vault request,
//! never a retry stacked on a retry. A throttled or failed answer keeps its status and
//! `Retry-After` in the [`AzureError`], and through it in the cache's error.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::headers::{Headers, RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS};

use crate::error::AzureError;

/// Vault request counters of one source, signer or assertion (shared by its clones).
///
/// Every request counts once under its operation (there are no retries here: see the
/// module docs); `throttled` counts the 429 answers, `server_errors` the 408/5xx answers and
/// cut-off connections, `failures` every request that failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VaultMetrics {
    /// `GET …/versions` pages requested.
    pub lists: u64,
    /// `GET` of one key or certificate version.
    pub gets: u64,
    /// `GET` of a certificate's secret (local signing).
    pub secret_gets: u64,
    /// `POST …/sign` requests.
    pub signs: u64,
    /// `PATCH` of a version's attributes (disabling it: `disable_version`).
    pub updates: u64,
    /// 429 answers.
    pub throttled: u64,
    /// 408 and 5xx answers, and requests cut off without an answer.
    pub server_errors: u64,
    /// Requests that failed.
    pub failures: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    lists: AtomicU64,
    gets: AtomicU64,
    secret_gets: AtomicU64,
    signs: AtomicU64,
    updates: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    failures: AtomicU64,
}

/// What a request does, for counters and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    List,
    Get,
    GetSecret,
    Sign,
    Update,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::List => "list versions",
            Op::Get => "get",
            Op::GetSecret => "get secret",
            Op::Sign => "sign",
            Op::Update => "update",
        }
    }

    /// The `operation` label.
    #[cfg(feature = "metrics")]
    fn label(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Get => "get",
            Op::GetSecret => "get_secret",
            Op::Sign => "sign",
            Op::Update => "update",
        }
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> VaultMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        VaultMetrics {
            lists: get(&self.lists),
            gets: get(&self.gets),
            secret_gets: get(&self.secret_gets),
            signs: get(&self.signs),
            updates: get(&self.updates),
            throttled: get(&self.throttled),
            server_errors: get(&self.server_errors),
            failures: get(&self.failures),
        }
    }

    fn attempt(&self, op: Op) {
        let counter = match op {
            Op::List => &self.lists,
            Op::Get => &self.gets,
            Op::GetSecret => &self.secret_gets,
            Op::Sign => &self.signs,
            Op::Update => &self.updates,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a request goes, for error messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    pub(crate) vault: &'a str,
    pub(crate) item: &'a str,
    pub(crate) op: Op,
}

/// Sends one request, counting it and, when it fails, how.
pub(crate) async fn send<T, Fut>(
    counters: &Counters,
    target: Target<'_>,
    request: Fut,
) -> Result<T, AzureError>
where
    Fut: Future<Output = azure_core::Result<T>>,
{
    counters.attempt(target.op);
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    let result = request.await;
    #[cfg(feature = "metrics")]
    crate::metrics::request(crate::metrics::Ended {
        target: target.vault,
        operation: target.op.label(),
        error: result.as_ref().err(),
        took: started.elapsed(),
    });
    let error = match result {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    let failure = Failure::of(&error);
    let counter = match failure.class {
        Class::Throttled => Some(&counters.throttled),
        Class::ServerError => Some(&counters.server_errors),
        Class::Permanent => None,
    };
    if let Some(counter) = counter {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    counters.failures.fetch_add(1, Ordering::Relaxed);
    Err(failure.into_error(target, error))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Throttled,
    ServerError,
    Permanent,
}

struct Failure {
    class: Class,
    status: Option<u16>,
    code: Option<String>,
    retry_after: Option<Duration>,
}

impl Failure {
    fn of(error: &azure_core::Error) -> Failure {
        match error.kind() {
            ErrorKind::HttpResponse {
                status,
                error_code,
                raw_response,
            } => {
                let code = u16::from(*status);
                let class = match code {
                    429 => Class::Throttled,
                    408 | 500 | 502 | 503 | 504 => Class::ServerError,
                    _ => Class::Permanent,
                };
                Failure {
                    class,
                    status: Some(code),
                    code: error_code.clone(),
                    retry_after: raw_response.as_ref().and_then(|r| retry_after(r.headers())),
                }
            }
            // Cut off or never connected: transient, as far as a retry can tell.
            ErrorKind::Io | ErrorKind::Connection => Failure {
                class: Class::ServerError,
                status: None,
                code: None,
                retry_after: None,
            },
            _ => Failure {
                class: Class::Permanent,
                status: None,
                code: None,
                retry_after: None,
            },
        }
    }

    fn into_error(self, target: Target<'_>, error: azure_core::Error) -> AzureError {
        AzureError::Vault {
            vault: target.vault.into(),
            item: target.item.into(),
            operation: target.op.name(),
            status: self.status,
            code: self.code.map(String::into_boxed_str),
            message: error_message(&error).into_boxed_str(),
            retry_after: self.retry_after,
            source: Some(Box::new(error)),
        }
    }
}

/// The SDK error's message, without the response body dump some errors carry.
pub(crate) fn error_message(error: &azure_core::Error) -> String {
    let text = error.to_string();
    let first_line = text.lines().next().unwrap_or_default();
    let mut message: String = first_line.chars().take(300).collect();
    if message.is_empty() {
        message = format!("{}", error.kind());
    }
    message
}

/// `retry-after-ms`, `x-ms-retry-after-ms` or `Retry-After` (seconds or an HTTP date).
pub(crate) fn retry_after(headers: &Headers) -> Option<Duration> {
    for name in [&RETRY_AFTER_MS, &X_MS_RETRY_AFTER_MS] {
        if let Some(ms) = headers
            .get_optional_str(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    let value = headers.get_optional_str(&RETRY_AFTER)?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = azure_core::time::parse_rfc7231(value).ok()?;
    let wait = date - azure_core::time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_headers() {
        let mut headers = Headers::new();
        headers.insert(RETRY_AFTER, "7");
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER_MS, "1500");
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        let mut dated = Headers::new();
        dated.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(retry_after(&dated), Some(Duration::ZERO), "a past date");
        assert_eq!(retry_after(&Headers::new()), None);
    }
}
