//! Retries of throttled and failed vault requests, and the counters that show them.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::headers::{Headers, RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS};
use keyroll_core::Backoff;

use crate::error::AzureError;

/// How vault requests answered with 429, 408 or 5xx (or cut off) are retried.
///
/// keyroll-azure retries itself, and turns the Azure SDK's own retry policy off for its vault
/// clients, so that every attempt is counted in [`VaultMetrics`]. A `Retry-After` (or
/// `retry-after-ms`) is honoured when it is at most `max_retry_after`; a longer one ends the
/// retries at once and is passed on in the error, so the key cache backs off that long.
/// Without one, delays grow exponentially from `initial_delay` to `max_delay`, with jitter.
///
/// ```
/// use std::time::Duration;
/// use keyroll_azure::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_retries(5)
///     .delays(Duration::from_millis(100), Duration::from_secs(2));
/// // Without Retry-After: exponential with jitter (50–100 ms for the first retry here).
/// let first = policy.delay_for(1, None).unwrap();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// // A Retry-After within the cap is used as is.
/// assert_eq!(policy.delay_for(1, Some(Duration::from_secs(3))), Some(Duration::from_secs(3)));
/// // Past the cap, no more retries: the caller gets the error and its Retry-After.
/// assert_eq!(policy.delay_for(1, Some(Duration::from_secs(3600))), None);
/// // Past max_retries, no more retries.
/// assert_eq!(policy.delay_for(6, None), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 3).
    pub max_retries: u32,
    /// First delay without `Retry-After` (default 250 ms); doubles per retry.
    pub initial_delay: Duration,
    /// Longest delay without `Retry-After` (default 8 s).
    pub max_delay: Duration,
    /// Longest `Retry-After` waited for inside one call (default 30 s).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// Sets the number of retries.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Sets the exponential delays used without `Retry-After`.
    pub fn delays(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_delay = initial;
        self.max_delay = max.max(initial);
        self
    }

    /// Sets the longest `Retry-After` waited for inside one call.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The delay before retry number `retry` (1 for the first retry), or `None` when there is
    /// no retry left or the vault asked for a longer wait than `max_retry_after`.
    pub fn delay_for(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if retry == 0 || retry > self.max_retries {
            return None;
        }
        if let Some(asked) = retry_after {
            return (asked <= self.max_retry_after).then_some(asked);
        }
        // Jitter on the upper half: spreads replicas that were throttled together.
        Some(
            Backoff::new(self.initial_delay, self.max_delay)
                .with_jitter(0.5)
                .delay(retry),
        )
    }
}

/// Vault request counters of one source, signer or assertion (shared by its clones).
///
/// Every HTTP attempt counts once under its operation, retries included; `retries` counts
/// the attempts that were retries, `throttled` the 429 answers, `server_errors` the 408/5xx
/// answers and cut-off connections, `failures` the calls that failed after their retries.
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
    /// Attempts that were retries.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// 408 and 5xx answers, and requests cut off without an answer.
    pub server_errors: u64,
    /// Calls that failed after their retries.
    pub failures: u64,
    /// Total time spent waiting between retries, in milliseconds.
    pub retry_wait_ms: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    lists: AtomicU64,
    gets: AtomicU64,
    secret_gets: AtomicU64,
    signs: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    failures: AtomicU64,
    retry_wait_ms: AtomicU64,
}

/// What a request does, for counters and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    List,
    Get,
    GetSecret,
    Sign,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::List => "list versions",
            Op::Get => "get",
            Op::GetSecret => "get secret",
            Op::Sign => "sign",
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
            retries: get(&self.retries),
            throttled: get(&self.throttled),
            server_errors: get(&self.server_errors),
            failures: get(&self.failures),
            retry_wait_ms: get(&self.retry_wait_ms),
        }
    }

    fn attempt(&self, op: Op) {
        let counter = match op {
            Op::List => &self.lists,
            Op::Get => &self.gets,
            Op::GetSecret => &self.secret_gets,
            Op::Sign => &self.signs,
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

/// Runs `attempt` until it succeeds, fails for good, or the policy says stop.
pub(crate) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    counters: &Counters,
    target: Target<'_>,
    mut attempt: F,
) -> Result<T, AzureError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = azure_core::Result<T>>,
{
    let mut retry = 0;
    loop {
        counters.attempt(target.op);
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let failure = Failure::of(&error);
        match failure.class {
            Class::Throttled => counters.throttled.fetch_add(1, Ordering::Relaxed),
            Class::ServerError => counters.server_errors.fetch_add(1, Ordering::Relaxed),
            Class::Permanent => 0,
        };
        retry += 1;
        let delay = match failure.class {
            Class::Permanent => None,
            _ => policy.delay_for(retry, failure.retry_after),
        };
        let Some(delay) = delay else {
            counters.failures.fetch_add(1, Ordering::Relaxed);
            return Err(failure.into_error(target, error));
        };
        tracing::debug!(
            vault = target.vault,
            item = target.item,
            operation = target.op.name(),
            status = failure.status,
            retry,
            delay_ms = delay.as_millis() as u64,
            "vault request failed; retrying"
        );
        counters.retries.fetch_add(1, Ordering::Relaxed);
        counters.retry_wait_ms.fetch_add(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        tokio::time::sleep(delay).await;
    }
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
    fn exponential_without_retry_after() {
        let policy = RetryPolicy::default()
            .max_retries(4)
            .delays(Duration::from_millis(100), Duration::from_millis(300));
        let d1 = policy.delay_for(1, None).unwrap();
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
        let d2 = policy.delay_for(2, None).unwrap();
        assert!(d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200));
        let d4 = policy.delay_for(4, None).unwrap();
        assert!(d4 >= Duration::from_millis(150) && d4 <= Duration::from_millis(300));
        assert_eq!(policy.delay_for(5, None), None);
        assert_eq!(RetryPolicy::none().delay_for(1, None), None);
    }

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
