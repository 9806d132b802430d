//! Key Vault's service limits, per vault: the documented transactions allowed in 10 seconds
//! (weighted, enforced on their sum), answered with 429 `Throttled` and `Retry-After` as Key
//! Vault does. Requests answered 429 do not count toward the limits. On by default with the
//! documented figures; configurable through the builder, `--vault-limits` and the admin API.
//!
//! | transactions per 10 s | RSA 2048 | RSA 3072 | RSA 4096 | EC (any curve) |
//! | --- | --- | --- | --- | --- |
//! | software key: create | 20 | 20 | 20 | 20 |
//! | software key: every other operation | 4,000 | 1,000 | 500 | 4,000 |
//! | HSM key: create | 10 | 10 | 10 | 10 |
//! | HSM key: every other operation | 2,000 | 500 | 250 | 2,000 |
//!
//! Secrets, certificates and the vault's other transactions: 4,000 per 10 s.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! use keyroll_emulator::VaultLimits;
//! let emu = keyroll_emulator::Emulator::builder()
//!     .vault_limits(VaultLimits::documented().percent(1)) // 1 % of Key Vault's figures
//!     .start()
//!     .await?;
//! emu.admin().set_vault_limits(VaultLimits::off());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::crypto::KeySpec;
use crate::faults::throttled;
use crate::router::Operation;
use crate::server::{Shared, lock, vault_from_host};
use crate::vault::host_of;

/// The weighted budget of one window: each transaction costs `BUDGET / limit`.
const BUDGET: u64 = 1_000_000_000_000;

/// Largest body read to find a new key's `kty`.
const MAX_CREATE_BODY: usize = 64 * 1024;

/// Key Vault's transaction limits per vault, per window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VaultLimits {
    /// Whether limits apply at all.
    pub enabled: bool,
    /// The window, in seconds (10).
    pub window_seconds: u32,
    /// Creating (or rotating) a software key.
    pub software_key_create: u32,
    /// Creating (or rotating) an HSM key.
    pub hsm_key_create: u32,
    /// Every other operation on a software RSA 2048 key.
    pub software_rsa_2048: u32,
    /// … on a software RSA 3072 key.
    pub software_rsa_3072: u32,
    /// … on a software RSA 4096 key.
    pub software_rsa_4096: u32,
    /// … on a software EC key (any curve).
    pub software_ec: u32,
    /// … on an HSM RSA 2048 key.
    pub hsm_rsa_2048: u32,
    /// … on an HSM RSA 3072 key.
    pub hsm_rsa_3072: u32,
    /// … on an HSM RSA 4096 key.
    pub hsm_rsa_4096: u32,
    /// … on an HSM EC key.
    pub hsm_ec: u32,
    /// Secrets, certificates and the vault's other transactions.
    pub vault_transactions: u32,
}

impl Default for VaultLimits {
    fn default() -> Self {
        VaultLimits::documented()
    }
}

impl VaultLimits {
    /// Key Vault's documented figures.
    pub fn documented() -> VaultLimits {
        VaultLimits {
            enabled: true,
            window_seconds: 10,
            software_key_create: 20,
            hsm_key_create: 10,
            software_rsa_2048: 4000,
            software_rsa_3072: 1000,
            software_rsa_4096: 500,
            software_ec: 4000,
            hsm_rsa_2048: 2000,
            hsm_rsa_3072: 500,
            hsm_rsa_4096: 250,
            hsm_ec: 2000,
            vault_transactions: 4000,
        }
    }

    /// No limits.
    pub fn off() -> VaultLimits {
        VaultLimits {
            enabled: false,
            ..VaultLimits::documented()
        }
    }

    /// Every figure scaled to `percent` % (at least 1 transaction), to see throttling with
    /// few requests.
    pub fn percent(mut self, percent: u32) -> VaultLimits {
        let scale = |v: &mut u32| {
            *v = u32::try_from(u64::from(*v) * u64::from(percent) / 100)
                .unwrap_or(u32::MAX)
                .max(1);
        };
        for v in [
            &mut self.software_key_create,
            &mut self.hsm_key_create,
            &mut self.software_rsa_2048,
            &mut self.software_rsa_3072,
            &mut self.software_rsa_4096,
            &mut self.software_ec,
            &mut self.hsm_rsa_2048,
            &mut self.hsm_rsa_3072,
            &mut self.hsm_rsa_4096,
            &mut self.hsm_ec,
            &mut self.vault_transactions,
        ] {
            scale(v);
        }
        self
    }

    /// Parses `--vault-limits`: `documented`, `off` or a percentage (`5%`).
    pub fn parse(text: &str) -> Result<VaultLimits, String> {
        match text.trim() {
            "documented" | "on" | "" => Ok(VaultLimits::documented()),
            "off" | "none" => Ok(VaultLimits::off()),
            other => other
                .trim_end_matches('%')
                .parse::<u32>()
                .ok()
                .filter(|p| *p > 0)
                .map(|p| VaultLimits::documented().percent(p))
                .ok_or_else(|| {
                    format!("--vault-limits {other:?}: use documented, off or a percentage like 5%")
                }),
        }
    }

    /// The budget a transaction of `class` belongs to and what it costs.
    fn cost(&self, class: Class) -> (Bucket, u64) {
        let limit = match class {
            Class::KeyCreate { hsm: false } => self.software_key_create,
            Class::KeyCreate { hsm: true } => self.hsm_key_create,
            Class::KeyOperation { hsm, spec } => match (hsm, spec) {
                (false, KeySpec::Rsa(2048)) => self.software_rsa_2048,
                (false, KeySpec::Rsa(3072)) => self.software_rsa_3072,
                (false, KeySpec::Rsa(_)) => self.software_rsa_4096,
                (false, KeySpec::Ec(_)) => self.software_ec,
                (true, KeySpec::Rsa(2048)) => self.hsm_rsa_2048,
                (true, KeySpec::Rsa(3072)) => self.hsm_rsa_3072,
                (true, KeySpec::Rsa(_)) => self.hsm_rsa_4096,
                (true, KeySpec::Ec(_)) => self.hsm_ec,
            },
            Class::Vault => self.vault_transactions,
        };
        let bucket = match class {
            Class::KeyCreate { .. } => Bucket::KeyCreate,
            Class::KeyOperation { .. } => Bucket::KeyOperation,
            Class::Vault => Bucket::Vault,
        };
        (bucket, BUDGET / u64::from(limit.max(1)))
    }
}

/// What kind of transaction a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    KeyCreate { hsm: bool },
    KeyOperation { hsm: bool, spec: KeySpec },
    Vault,
}

/// The thresholds whose weighted sums are enforced separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bucket {
    KeyCreate,
    KeyOperation,
    Vault,
}

/// One window of one bucket of one vault.
#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: i64,
    used: u64,
}

/// The limits in force and what each vault used in its current windows.
#[derive(Debug)]
pub(crate) struct Limiter {
    limits: Mutex<VaultLimits>,
    windows: Mutex<HashMap<(String, Bucket), Window>>,
}

impl Limiter {
    pub(crate) fn new(limits: VaultLimits) -> Limiter {
        Limiter {
            limits: Mutex::new(limits),
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn limits(&self) -> VaultLimits {
        lock(&self.limits).clone()
    }

    /// Replaces the limits and starts every window afresh.
    pub(crate) fn set(&self, limits: VaultLimits) {
        *lock(&self.limits) = limits;
        lock(&self.windows).clear();
    }

    /// Admits a transaction at `now_ms`, or says how long until its window ends.
    pub(crate) fn admit(&self, vault: &str, class: Class, now_ms: i64) -> Result<(), Duration> {
        let limits = self.limits();
        if !limits.enabled {
            return Ok(());
        }
        let (bucket, cost) = limits.cost(class);
        let window_ms = i64::from(limits.window_seconds.max(1)) * 1000;
        let mut windows = lock(&self.windows);
        let w = windows
            .entry((vault.to_string(), bucket))
            .or_insert(Window {
                start_ms: now_ms,
                used: 0,
            });
        if now_ms >= w.start_ms + window_ms || now_ms < w.start_ms {
            *w = Window {
                start_ms: now_ms,
                used: 0,
            };
        }
        if w.used + cost <= BUDGET {
            w.used += cost;
            return Ok(());
        }
        let left_ms = (w.start_ms + window_ms - now_ms).max(1);
        Err(Duration::from_secs(
            u64::try_from((left_ms + 999) / 1000).unwrap_or(1),
        ))
    }
}

/// The class of a vault request, from its operation, path and (for a create) its `kty`.
fn classify(
    shared: &Shared,
    operation: &str,
    vault: &str,
    params: &RawPathParams,
    kty: Option<&str>,
) -> Class {
    let param = |n: &str| {
        params
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    };
    match operation {
        "keys.create" => Class::KeyCreate {
            hsm: kty.is_some_and(|k| k.ends_with("-HSM")),
        },
        "keys.rotate" | "keys.get" | "keys.update" | "keys.sign" | "keys.verify"
        | "keys.versions" => {
            let store = lock(&shared.store);
            let kind =
                crate::vault::keys::key_kind(&store, vault, &param("name"), &param("version"));
            let (hsm, spec) = kind.unwrap_or((false, KeySpec::RSA_2048));
            if operation == "keys.rotate" {
                Class::KeyCreate { hsm }
            } else {
                Class::KeyOperation { hsm, spec }
            }
        }
        "keys.list" => Class::KeyOperation {
            hsm: false,
            spec: KeySpec::RSA_2048,
        },
        _ => Class::Vault,
    }
}

/// The `kty` of a key-creation body, read without consuming it.
async fn peek_kty(req: Request) -> (Request, Option<String>) {
    #[derive(Deserialize)]
    struct Kty {
        kty: Option<String>,
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, MAX_CREATE_BODY).await {
        Ok(bytes) => {
            let kty = serde_json::from_slice::<Kty>(&bytes)
                .ok()
                .and_then(|k| k.kty);
            (
                Request::from_parts(parts, axum::body::Body::from(bytes)),
                kty,
            )
        }
        Err(_) => (Request::from_parts(parts, axum::body::Body::empty()), None),
    }
}

/// The middleware: admits the request or answers 429 with `Retry-After`.
pub(crate) async fn enforce(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let operation = req
        .extensions()
        .get::<Operation>()
        .map_or("unknown", |o| o.name);
    let Some(vault) = host_of(req.headers()).and_then(|h| vault_from_host(&h)) else {
        return next.run(req).await;
    };
    let (req, kty) = if operation == "keys.create" {
        peek_kty(req).await
    } else {
        (req, None)
    };
    let class = classify(&shared, operation, &vault, &params, kty.as_deref());
    match shared.limiter.admit(&vault, class, shared.clock.now_ms()) {
        Ok(()) => next.run(req).await,
        Err(retry_after) => {
            shared.count("throttled");
            throttled(Some(retry_after))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Curve;

    #[test]
    fn documented_figures_and_weights() {
        let l = Limiter::new(VaultLimits::documented());
        let sign = Class::KeyOperation {
            hsm: false,
            spec: KeySpec::RSA_2048,
        };
        for _ in 0..4000 {
            assert!(l.admit("v", sign, 0).is_ok());
        }
        assert_eq!(l.admit("v", sign, 0), Err(Duration::from_secs(10)));
        assert_eq!(l.admit("v", sign, 9_001), Err(Duration::from_secs(1)));
        // Other vaults and other thresholds have their own budgets.
        assert!(l.admit("w", sign, 0).is_ok());
        assert!(l.admit("v", Class::Vault, 0).is_ok());
        // The window ends: a new one starts.
        assert!(l.admit("v", sign, 10_000).is_ok());

        // Weighted: one RSA-4096 HSM operation costs 16 RSA-2048 software ones.
        let l = Limiter::new(VaultLimits::documented());
        let heavy = Class::KeyOperation {
            hsm: true,
            spec: KeySpec::Rsa(4096),
        };
        for _ in 0..250 {
            assert!(l.admit("v", heavy, 0).is_ok());
        }
        assert!(l.admit("v", sign, 0).is_err());
        let ec = Class::KeyOperation {
            hsm: false,
            spec: KeySpec::Ec(Curve::P384),
        };
        assert!(l.admit("v", ec, 0).is_err());
    }

    #[test]
    fn creates_have_their_own_small_budget() {
        let l = Limiter::new(VaultLimits::documented());
        for _ in 0..10 {
            assert!(l.admit("v", Class::KeyCreate { hsm: true }, 0).is_ok());
        }
        assert!(l.admit("v", Class::KeyCreate { hsm: false }, 0).is_err());
    }

    #[test]
    fn configuration() {
        let l = Limiter::new(VaultLimits::documented().percent(1));
        assert_eq!(l.limits().software_key_create, 1);
        assert_eq!(l.limits().software_rsa_2048, 40);
        assert!(l.admit("v", Class::KeyCreate { hsm: false }, 0).is_ok());
        assert!(l.admit("v", Class::KeyCreate { hsm: false }, 0).is_err());
        l.set(VaultLimits::off());
        for _ in 0..100 {
            assert!(l.admit("v", Class::KeyCreate { hsm: false }, 0).is_ok());
        }
        assert_eq!(VaultLimits::parse("off").unwrap(), VaultLimits::off());
        assert_eq!(VaultLimits::parse("50%").unwrap().software_key_create, 10);
        assert!(VaultLimits::parse("0%").is_err() && VaultLimits::parse("lots").is_err());
        let json: VaultLimits = serde_json::from_str(r#"{"vault_transactions": 3}"#).unwrap();
        assert_eq!(
            (json.enabled, json.vault_transactions, json.software_ec),
            (true, 3, 4000)
        );
    }
}
