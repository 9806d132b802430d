//! JWTs: minting with any [`Signer`](crate::Signer), and verifying against a [`KeyCache`](crate::KeyCache).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
//! use keyroll_core::jwt::{Issuer, TokenTemplate, Validation, Verifier};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap()).build();
//!
//! let template = TokenTemplate::new("https://orders.example").lifetime(Duration::from_secs(600));
//! let minted = template.mint(&cache, "https://billing.example").await.unwrap();
//!
//! let verifier = Verifier::new([Issuer::new(
//!     cache.clone(),
//!     Validation::new("https://orders.example", ["https://billing.example"]),
//! )]);
//! let verified = verifier.verify(&minted.token).await.unwrap();
//! assert_eq!(verified.claims().iss.as_deref(), Some("https://orders.example"));
//! # });
//! ```

mod claims;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod header_cache;
mod json;
mod mint;
mod token;
mod verify;

pub use self::claims::{Audience, RegisteredClaims};
pub use self::mint::{JwtHeader, MintError, MintedToken, TokenTemplate, encode, random_id};
pub use self::token::UntrustedToken;
pub use self::verify::{
    DEFAULT_MAX_TOKEN_LEN, InvalidReason, InvalidToken, Issuer, Validation, VerifiedToken,
    Verifier, VerifyError,
};
