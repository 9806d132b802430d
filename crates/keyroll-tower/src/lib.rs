//! keyroll-tower: tower middleware over keyroll's shared key cache.
//!
//! - [`validate`]: `ValidateLayer`, inbound JWT bearer validation (RFC 6750 responses).
//! - [`issue`]: `IssueLayer`, outbound `Authorization: Bearer` from a `TokenSource`.
//! - [`jwks`]: `JwksService`, the validation set published as JWKS.

pub mod issue;
pub mod jwks;
pub mod validate;

pub use issue::{IssueLayer, SelfSigned, TokenCache, TokenSource};
pub use jwks::JwksService;
pub use validate::{Claims, RequireScopeLayer, ValidateLayer, VerifiedClaims};
