//! [`ReadinessReport`]: what a readiness check found, per source and as a whole, and its JSON.

use std::sync::Arc;
use std::time::Duration;

use keyroll_core::{CacheState, KeyCacheStatus, TokenCacheStatus};
use serde::Serialize;

/// What [`Readiness::check`](super::Readiness::check) found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadinessReport {
    /// The worst state of the sources (an advisory source counts as degraded at worst);
    /// [`Ready`](CacheState::Ready) with no source at all.
    pub state: CacheState,
    /// Each source, in the order they were added.
    pub sources: Vec<SourceReport>,
}

/// One source in a [`ReadinessReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceReport {
    /// The name it was added under.
    pub name: Arc<str>,
    /// Whether its state counts in full (see [`ReadinessSource::advisory`](super::ReadinessSource::advisory)).
    pub required: bool,
    /// Its cache's status.
    pub status: SourceStatus,
}

/// A cache's status.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceStatus {
    /// A key cache's.
    Keys(KeyCacheStatus),
    /// A token cache's.
    Tokens(TokenCacheStatus),
}

impl SourceStatus {
    /// The state.
    pub fn state(&self) -> CacheState {
        match self {
            SourceStatus::Keys(status) => status.state,
            SourceStatus::Tokens(status) => status.state,
        }
    }
}

impl SourceReport {
    /// What it adds to the whole: its state, or for an advisory source at worst degraded.
    pub fn counted_state(&self) -> CacheState {
        let state = self.status.state();
        if self.required {
            state
        } else {
            state.min(CacheState::Degraded)
        }
    }
}

impl ReadinessReport {
    pub(crate) fn new(sources: Vec<SourceReport>) -> Self {
        let state = sources
            .iter()
            .map(SourceReport::counted_state)
            .max()
            .unwrap_or(CacheState::Ready);
        ReadinessReport { state, sources }
    }

    /// Whether the service can serve: every source is ready or degraded (a load balancer's
    /// `200`).
    pub fn is_ready(&self) -> bool {
        self.state.is_serving()
    }

    /// The source added under `name`.
    pub fn source(&self, name: &str) -> Option<&SourceReport> {
        self.sources.iter().find(|source| &*source.name == name)
    }

    /// The JSON body `/readyz` answers with (see the [module docs](super)).
    pub fn to_json(&self) -> String {
        let body = Body {
            state: self.state.as_str(),
            sources: self.sources.iter().map(Source::from).collect(),
        };
        serde_json::to_string(&body).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct Body<'a> {
    state: &'static str,
    sources: Vec<Source<'a>>,
}

#[derive(Serialize)]
struct Source<'a> {
    name: &'a str,
    kind: &'static str,
    state: &'static str,
    required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audiences: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded_audiences: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable_audiences: Option<usize>,
    /// Keys only: `null` before the first load.
    #[serde(skip_serializing_if = "Option::is_none")]
    age_seconds: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable_in_seconds: Option<Option<u64>>,
    stale_for_seconds: Option<u64>,
    consecutive_failures: u32,
    last_error: Option<&'a str>,
}

fn seconds(duration: Option<Duration>) -> Option<u64> {
    duration.map(|duration| duration.as_secs())
}

impl<'a> From<&'a SourceReport> for Source<'a> {
    fn from(report: &'a SourceReport) -> Self {
        let mut source = Source {
            name: &report.name,
            kind: "keys",
            state: report.status.state().as_str(),
            required: report.required,
            versions: None,
            audiences: None,
            degraded_audiences: None,
            unavailable_audiences: None,
            age_seconds: None,
            unavailable_in_seconds: None,
            stale_for_seconds: None,
            consecutive_failures: 0,
            last_error: None,
        };
        match &report.status {
            SourceStatus::Keys(status) => {
                source.versions = Some(status.versions);
                source.age_seconds = Some(seconds(status.age));
                source.unavailable_in_seconds = Some(seconds(status.unavailable_in));
                source.stale_for_seconds = seconds(status.stale_for);
                source.consecutive_failures = status.consecutive_failures;
                source.last_error = status.last_error.as_deref();
            }
            SourceStatus::Tokens(status) => {
                source.kind = "tokens";
                source.audiences = Some(status.audiences);
                source.degraded_audiences = Some(status.degraded_audiences);
                source.unavailable_audiences = Some(status.unavailable_audiences);
                source.stale_for_seconds = seconds(status.stale_for);
                source.consecutive_failures = status.consecutive_failures;
                source.last_error = status.last_error.as_deref();
            }
        }
        source
    }
}
