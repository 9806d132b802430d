//! Errors shared across keyroll-core.

use std::time::Duration;

/// A boxed error usable as a `source()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A key could not be parsed or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KeyError {
    message: String,
}

impl KeyError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        KeyError {
            message: message.into(),
        }
    }
}

/// A [`KeySource`](crate::KeySource) or [`Signer`](crate::Signer) failed.
///
/// The message names the source (a vault and item, a URL, a directory) and the operation; for
/// HTTP sources it carries the status. It never contains a secret or a token.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {operation} failed: {message}")]
pub struct SourceError {
    source_name: String,
    operation: String,
    message: String,
    status: Option<u16>,
    retry_after: Option<Duration>,
    /// The key cache refused the answer for listing no usable key.
    empty_answer: bool,
    #[source]
    cause: Option<BoxError>,
}

impl SourceError {
    /// A new error for `operation` on the source named `source_name`.
    pub fn new(
        source_name: impl Into<String>,
        operation: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        SourceError {
            source_name: source_name.into(),
            operation: operation.into(),
            message: message.into(),
            status: None,
            retry_after: None,
            empty_answer: false,
            cause: None,
        }
    }

    /// Marks the error as a load that listed no usable key (see [`is_empty_answer`](Self::is_empty_answer)).
    pub(crate) fn with_empty_answer(mut self) -> Self {
        self.empty_answer = true;
        self
    }

    /// Attaches the HTTP status the source answered with.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Attaches the delay the source asked for before retrying.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Attaches the underlying error.
    pub fn with_cause(mut self, cause: impl Into<BoxError>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// The source's name (a vault and item, a URL, a directory).
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// The operation that failed.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The HTTP status, when the source is reached over HTTP.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The delay the source asked for (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the source answered, but with no usable key after a set that had some: the key
    /// cache keeps the last good set and counts the load as failed (outcome `empty` in
    /// [`metrics`](crate::metrics)).
    pub fn is_empty_answer(&self) -> bool {
        self.empty_answer
    }

    /// What went wrong, without the source's name and the operation.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The same error without its cause (which need not be `Clone`), to keep and hand out.
    pub(crate) fn without_cause(&self) -> SourceError {
        SourceError {
            source_name: self.source_name.clone(),
            operation: self.operation.clone(),
            message: self.message.clone(),
            status: self.status,
            retry_after: self.retry_after,
            empty_answer: self.empty_answer,
            cause: None,
        }
    }
}
