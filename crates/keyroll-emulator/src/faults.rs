//! Injected faults: latency, an error status, Key Vault's throttling answer or a dropped
//! connection, on one operation, a family of operations (`keys`, `keys.*`) or every one
//! (`*`), optionally for one vault and a number of requests. A tower layer (axum
//! middleware) in front of each route; it runs before authentication, so a fault also hits a
//! client's first, unauthenticated request.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! use keyroll_emulator::{Fault, FaultKind};
//! let emu = keyroll_emulator::Emulator::builder().start().await?;
//! let id = emu.admin().inject_fault(Fault::new("keys.sign", FaultKind::Status(503)).times(2));
//! emu.admin().clear_fault(id);
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::router::Operation;
use crate::server::{Shared, lock, vault_from_host};
use crate::vault::{error_response, host_of};

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// Waits this long, then answers normally.
    Latency(Duration),
    /// Answers with this status (for example 500 or 503) and a service-shaped error body.
    Status(u16),
    /// Answers 429 `Throttled` (`VaultRequestTypeLimitReached`), with `Retry-After` when set.
    Throttle {
        /// The `Retry-After` header, in whole seconds; `None` sends none, as seen in real life.
        retry_after: Option<Duration>,
    },
    /// Closes the connection without an answer.
    Outage,
}

/// A fault injected on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fault {
    /// An operation name (`keys.sign`), a prefix (`keys`, `keys.*`) or `*`.
    pub route: String,
    /// Only requests to this vault (any vault when `None`).
    pub vault: Option<String>,
    /// What happens.
    pub kind: FaultKind,
    /// For this many requests, then the fault clears itself; until cleared when `None`.
    pub times: Option<u32>,
}

impl Fault {
    /// A fault on `route` until cleared.
    pub fn new(route: impl Into<String>, kind: FaultKind) -> Fault {
        Fault {
            route: route.into(),
            vault: None,
            kind,
            times: None,
        }
    }

    /// Applies to the next `n` matching requests only.
    pub fn times(mut self, n: u32) -> Fault {
        self.times = Some(n);
        self
    }

    /// Applies to requests to this vault only.
    pub fn vault(mut self, vault: impl Into<String>) -> Fault {
        self.vault = Some(vault.into().to_ascii_lowercase());
        self
    }

    fn matches(&self, operation: &str, vault: Option<&str>) -> bool {
        if let Some(v) = &self.vault
            && vault != Some(v.as_str())
        {
            return false;
        }
        let r = self.route.trim_end_matches(".*");
        r.is_empty()
            || r == "*"
            || r == operation
            || operation
                .strip_prefix(r)
                .is_some_and(|rest| rest.starts_with('.'))
    }
}

/// Identifies an injected fault, to clear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultId(pub u64);

/// A fault as the admin API reads and writes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FaultBody {
    #[serde(default, skip_deserializing)]
    id: Option<u64>,
    route: Option<String>,
    vault: Option<String>,
    kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_after: Option<Option<u64>>,
    times: Option<u32>,
}

impl TryFrom<FaultBody> for Fault {
    type Error = String;

    fn try_from(b: FaultBody) -> Result<Fault, String> {
        let kind = match b.kind.as_deref() {
            Some("latency") => FaultKind::Latency(Duration::from_millis(b.latency_ms.unwrap_or(0))),
            Some("status") => FaultKind::Status(b.status.unwrap_or(503)),
            Some("throttle") => FaultKind::Throttle {
                retry_after: b.retry_after.flatten().map(Duration::from_secs),
            },
            Some("outage") => FaultKind::Outage,
            other => {
                return Err(format!(
                    "unknown fault kind {other:?}: use latency, status, throttle or outage"
                ));
            }
        };
        let mut f = Fault::new(b.route.unwrap_or_else(|| "*".into()), kind);
        f.times = b.times;
        if let Some(vault) = b.vault {
            f = f.vault(vault);
        }
        Ok(f)
    }
}

impl FaultBody {
    pub(crate) fn of(fault: &Fault, id: FaultId) -> FaultBody {
        let mut b = FaultBody {
            id: Some(id.0),
            route: Some(fault.route.clone()),
            vault: fault.vault.clone(),
            times: fault.times,
            ..FaultBody::default()
        };
        let kind = match &fault.kind {
            FaultKind::Latency(d) => {
                b.latency_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                "latency"
            }
            FaultKind::Status(s) => {
                b.status = Some(*s);
                "status"
            }
            FaultKind::Throttle { retry_after } => {
                b.retry_after = Some(retry_after.map(|d| d.as_secs()));
                "throttle"
            }
            FaultKind::Outage => "outage",
        };
        b.kind = Some(kind.into());
        b
    }
}

/// Marks a response whose connection the server must drop instead of answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

/// Key Vault's throttling answer: 429 `Throttled`, with `Retry-After` when given.
pub(crate) fn throttled(retry_after: Option<Duration>) -> Response {
    let mut resp = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "Throttled",
        "Operations per second is over the limit. Reason: VaultRequestTypeLimitReached",
    );
    if let Some(d) = retry_after
        && let Ok(v) = HeaderValue::from_str(&d.as_secs().to_string())
    {
        resp.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    resp
}

/// What the middleware does for a faulted request.
#[derive(Debug)]
enum FaultAction {
    Delay(Duration),
    Respond(Response),
    Drop,
}

/// The injected faults, in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    inner: Mutex<(u64, Vec<(FaultId, Fault)>)>,
}

impl Faults {
    pub(crate) fn add(&self, fault: Fault) -> FaultId {
        let mut g = lock(&self.inner);
        g.0 += 1;
        let id = FaultId(g.0);
        g.1.push((id, fault));
        id
    }

    pub(crate) fn remove(&self, id: FaultId) -> bool {
        let mut g = lock(&self.inner);
        let before = g.1.len();
        g.1.retain(|(i, _)| *i != id);
        before != g.1.len()
    }

    pub(crate) fn clear(&self) {
        lock(&self.inner).1.clear();
    }

    pub(crate) fn list(&self) -> Vec<(FaultId, Fault)> {
        lock(&self.inner).1.clone()
    }

    /// The first fault matching this request, consuming one of its `times`.
    fn take(&self, operation: &str, vault: Option<&str>) -> Option<FaultAction> {
        let mut g = lock(&self.inner);
        let idx = g.1.iter().position(|(_, f)| f.matches(operation, vault))?;
        let kind = g.1.get(idx).map(|(_, f)| f.kind.clone())?;
        if let Some((_, f)) = g.1.get_mut(idx)
            && let Some(n) = f.times.as_mut()
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.1.remove(idx);
            }
        }
        drop(g);
        Some(match kind {
            FaultKind::Latency(d) => FaultAction::Delay(d),
            FaultKind::Status(s) => {
                let status = StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                let code = match status {
                    StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
                    StatusCode::INTERNAL_SERVER_ERROR => "InternalServerError",
                    StatusCode::BAD_GATEWAY => "BadGateway",
                    StatusCode::GATEWAY_TIMEOUT => "GatewayTimeout",
                    _ => "InjectedFault",
                };
                FaultAction::Respond(error_response(
                    status,
                    code,
                    "The emulator answered with an injected fault.",
                ))
            }
            FaultKind::Throttle { retry_after } => FaultAction::Respond(throttled(retry_after)),
            FaultKind::Outage => FaultAction::Drop,
        })
    }
}

/// The middleware: applies the first matching fault to the request.
pub(crate) async fn inject(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let (operation, vault) = match req.extensions().get::<Operation>() {
        Some(op) => (
            op.name,
            op.vault
                .then(|| host_of(req.headers()).and_then(|h| vault_from_host(&h)))
                .flatten(),
        ),
        None => ("unknown", None),
    };
    match shared.faults.take(operation, vault.as_deref()) {
        None => next.run(req).await,
        Some(FaultAction::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(FaultAction::Respond(resp)) => resp,
        Some(FaultAction::Drop) => {
            let mut resp = Response::new(axum::body::Body::empty());
            resp.extensions_mut().insert(DropConnection);
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_routes_match_operations_prefixes_and_vaults() {
        let f = Fault::new("keys", FaultKind::Outage);
        assert!(f.matches("keys.sign", Some("a")));
        assert!(!f.matches("keysx.sign", None));
        assert!(Fault::new("keys.*", FaultKind::Outage).matches("keys.get", None));
        assert!(Fault::new("*", FaultKind::Outage).matches("entra.token", None));
        let v = Fault::new("keys.sign", FaultKind::Outage).vault("A");
        assert!(v.matches("keys.sign", Some("a")));
        assert!(!v.matches("keys.sign", Some("b")));
        assert!(!v.matches("keys.get", Some("a")));
    }

    #[test]
    fn faults_run_out_after_their_times() {
        let faults = Faults::default();
        faults.add(Fault::new("keys.sign", FaultKind::Status(503)).times(2));
        assert!(
            matches!(faults.take("keys.sign", None), Some(FaultAction::Respond(r)) if r.status() == 503)
        );
        assert!(faults.take("keys.get", None).is_none());
        assert!(faults.take("keys.sign", None).is_some());
        assert!(faults.take("keys.sign", None).is_none());
        assert!(faults.list().is_empty());
    }

    #[test]
    fn fault_json_round_trips() {
        let body: FaultBody = serde_json::from_value(serde_json::json!({"route": "keys.sign", "kind": "throttle", "retry_after": 2, "times": 1, "vault": "V"})).unwrap();
        let f = Fault::try_from(body).unwrap();
        assert_eq!(
            f,
            Fault::new(
                "keys.sign",
                FaultKind::Throttle {
                    retry_after: Some(Duration::from_secs(2))
                }
            )
            .times(1)
            .vault("v")
        );
        let j = serde_json::to_value(FaultBody::of(&f, FaultId(9))).unwrap();
        assert_eq!(j["id"], 9);
        assert_eq!(
            Fault::try_from(serde_json::from_value::<FaultBody>(j).unwrap()).unwrap(),
            f
        );
        let boom: FaultBody = serde_json::from_value(serde_json::json!({"kind": "boom"})).unwrap();
        assert!(Fault::try_from(boom).is_err());
    }
}
