//! keyroll: tower middleware for service-to-service authentication with keys that live in a
//! vault and rotate.
//!
//! This facade re-exports the workspace's crates:
//! - the key model, rotation policy, key cache and JWT mint/verify ([`keyroll_core`], at the root);
//! - [`tower`]: `ValidateLayer` (inbound), `IssueLayer` (outbound) and `JwksService`;
//! - `reqwest` (feature `reqwest`): `IssueMiddleware`, outbound tokens on a reqwest-middleware
//!   client (keyroll-reqwest);
//! - `azure` (feature `azure`): Key Vault key and certificate sources, Entra ID tokens;
//! - `emulator` (feature `emulator`): the offline Key Vault / Entra ID / managed-identity emulator;
//! - [`metrics`]: the name, type and labels of every metric keyroll records through the
//!   `metrics` facade with the feature `metrics`, and `metrics::publish` for per-request counts;
//! - feature `serde`: every configuration type (`KeyCacheConfig`, `RotationPolicy`,
//!   `TokenCacheConfig`, `jwt::Validation`, `jwt::TokenTemplate`, the validator's and the Azure
//!   ones) reads from files, durations as `"5m"`; see `examples/config_file.rs`.
//!
//! ```
//! use std::time::Duration;
//! use keyroll::{Algorithm, KeyCache, LocalKeyRing};
//! use keyroll::jwt::{Issuer, TokenTemplate, Validation, Verifier};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap()).build();
//! let token = TokenTemplate::new("orders").lifetime(Duration::from_secs(600)).mint(&keys, "billing").await.unwrap();
//! let verifier = Verifier::new([Issuer::new(keys, Validation::new("orders", ["billing"]))]);
//! assert!(verifier.verify(&token.token).await.is_ok());
//! # });
//! ```

pub use keyroll_core::*;

#[cfg(feature = "tower")]
pub use keyroll_tower as tower;

#[cfg(feature = "reqwest")]
pub use keyroll_reqwest as reqwest;

#[cfg(feature = "azure")]
pub use keyroll_azure as azure;

#[cfg(feature = "emulator")]
pub use keyroll_emulator as emulator;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
