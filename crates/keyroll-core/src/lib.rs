//! keyroll-core: the key model, the rotation policy, the refresh-coordinated key cache, and JWT
//! minting and verification that keyroll's issuer and validator layers share.
//!
//! ```
//! use std::time::Duration;
//! use keyroll_core::{Algorithm, KeyCache, KeyCacheConfig, LocalKeyRing, RotationPolicy};
//! use keyroll_core::jwt::{Issuer, TokenTemplate, Validation, Verifier};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // One cache over one key source, shared by the issuing and the validating side.
//! let ring = LocalKeyRing::builder(Algorithm::ES256).rotate_every(Duration::from_secs(86_400)).build().unwrap();
//! let config = KeyCacheConfig::default().policy(RotationPolicy::default().propagation(Duration::from_secs(3600)));
//! let keys = KeyCache::builder(ring).config(config).build();
//!
//! let token = TokenTemplate::new("orders").mint(&keys, "billing").await.unwrap().token;
//! let verifier = Verifier::new([Issuer::new(keys.clone(), Validation::new("orders", ["billing"]))]);
//! assert_eq!(verifier.verify(&token).await.unwrap().claims().sub.as_deref(), Some("orders"));
//! # });
//! ```

mod algorithm;
mod backoff;
pub mod cache;
mod clock;
mod error;
mod jwk;
pub mod jwt;
mod key;
mod local_key;
pub mod metrics;
mod policy;
mod refresh;
mod source;
pub mod sources;
mod status;
pub mod token;

/// The crate-private token reader, for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use jwt::fuzz as __fuzz;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use algorithm::{ALL_ALGORITHMS, Algorithm, Curve, KeyType, UnsupportedAlgorithm};
pub use backoff::Backoff;
pub use cache::{
    ActiveSigner, CacheMetrics, KeyCache, KeyCacheBuilder, KeyCacheConfig, KeyCacheError,
    KeyLookup, KeyRef, KeySet, SignedBy,
};
pub use clock::{
    Clock, ManualClock, Sleep, SystemClock, TokioClock, TokioSleep, from_unix_seconds, unix_seconds,
};
pub use error::{BoxError, KeyError, SourceError};
pub use jwk::{Jwk, JwkSet, LenientJwkSet};
pub use key::{KeyFingerprint, KeyVersion, SignatureError, VerifyingKey};
pub use local_key::LocalKey;
pub use policy::{NoActiveKey, RotationPolicy};
pub use source::{BoxFuture, KeySource, LoadedKeys, Signer};
#[cfg(feature = "jwks")]
pub use sources::jwks::JwksSource;
pub use sources::local_ring::{LocalKeyRing, LocalKeyRingBuilder};
pub use sources::static_keys::{StaticKeys, certificate_thumbprints, version_from_certificate};
pub use status::{CacheState, KeyCacheStatus, TokenCacheStatus};
pub use token::{
    CachedToken, SelfSigned, StaticToken, Token, TokenCache, TokenCacheConfig, TokenError,
    TokenSource, TokenUnavailable,
};

/// Locks `mutex`, taking over the data when a holder panicked: the data guarded in this crate
/// is consistent between statements, so a poisoned lock is no reason to fail.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
