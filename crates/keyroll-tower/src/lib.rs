//! keyroll-tower: tower middleware over keyroll's shared key cache.
//!
//! - [`validate`]: `ValidateLayer`, inbound JWT bearer validation (RFC 6750 responses).
//! - [`issue`]: `IssueLayer`, outbound `Authorization: Bearer` from a `TokenSource`.
//! - [`jwks`]: `JwksService`, the validation set published as JWKS.
//! - [`readiness`]: `Readiness`, every cache's state for load balancers, and `GET /readyz`.

pub mod issue;
pub mod jwks;
pub mod readiness;
pub mod validate;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use issue::{IssueLayer, SelfSigned, TokenCache, TokenSource};
pub use jwks::JwksService;
pub use readiness::{Readiness, ReadinessService};
pub use validate::{Claims, RequireScopeLayer, ValidateLayer, VerifiedClaims};

/// Locks `mutex`, taking over the data when a holder panicked: the data guarded in this crate
/// is consistent between statements, so a poisoned lock is no reason to fail.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
