//! The two traits every key backend implements: [`KeySource`] lists key versions, [`Signer`]
//! signs with one of them.
//!
//! ```
//! use std::sync::Arc;
//! use keyroll_core::{Algorithm, KeySource, LocalKeyRing, Signer};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let ring = LocalKeyRing::in_memory(Algorithm::ES256).unwrap();
//! let source: Arc<dyn KeySource> = Arc::new(ring);
//! let versions = source.load().await.unwrap().versions;
//! let signer: Arc<dyn Signer> = source.signer(&versions[0]).await.unwrap();
//! let signature = signer.sign(b"header.payload").await.unwrap();
//! versions[0].verifying_key().verify(Algorithm::ES256, b"header.payload", &signature).unwrap();
//! # });
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::algorithm::Algorithm;
use crate::error::SourceError;
use crate::key::KeyVersion;

/// A boxed, sendable future, as returned by the object-safe traits here.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one [`KeySource::load`] returns.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct LoadedKeys {
    /// Every version the source holds, enabled or not, with metadata and public key.
    pub versions: Vec<KeyVersion>,
    /// How long the source says this answer stays fresh (an HTTP `Cache-Control: max-age`).
    /// The cache refreshes no later than this, and no sooner than its unknown-kid cooldown.
    pub max_age: Option<Duration>,
}

impl LoadedKeys {
    /// Loaded versions with no freshness hint.
    pub fn new(versions: Vec<KeyVersion>) -> Self {
        LoadedKeys {
            versions,
            max_age: None,
        }
    }

    /// Sets the freshness hint.
    pub fn with_max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }
}

/// A place key versions live: a vault key or certificate, a JWKS URL, a local key ring, files.
///
/// Implementations must be cheap to call concurrently; the [`KeyCache`](crate::KeyCache)
/// guarantees that it calls `load` at most once at a time per cache.
pub trait KeySource: Send + Sync + Debug {
    /// A short, secret-free description for logs and errors (a vault and key name, a URL).
    fn name(&self) -> String;

    /// Lists every version with its metadata and public key.
    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>>;

    /// A signer for one version. Sources that only publish keys (a peer's JWKS) return an error.
    fn signer<'a>(
        &'a self,
        version: &'a KeyVersion,
    ) -> BoxFuture<'a, Result<Arc<dyn Signer>, SourceError>> {
        Box::pin(async move {
            Err(SourceError::new(
                self.name(),
                "sign",
                format!(
                    "version {} cannot sign: the source only publishes keys",
                    version.kid
                ),
            ))
        })
    }

    /// Told by the key cache after `version` signed a token that expires at `expires`
    /// (default: nothing). A source that retires versions itself ([`LocalKeyRing`]) keeps
    /// each until its last token expired.
    ///
    /// [`LocalKeyRing`]: crate::LocalKeyRing
    fn signed(&self, version: &KeyVersion, expires: SystemTime) {
        let _ = (version, expires);
    }
}

/// Something that signs a JWS signing input (`base64url(header).base64url(payload)`).
///
/// A remote signer (Key Vault) hashes the input and sends the digest; a local signer signs it
/// directly. The signature is in JWS form (EC signatures as raw `r‖s`).
pub trait Signer: Send + Sync + Debug {
    /// The algorithm the signatures are made with.
    fn algorithm(&self) -> Algorithm;

    /// Signs the JWS signing input.
    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, SourceError>>;

    /// Whether each signature is a request to the key's source (a vault `sign`), so that it
    /// fails when the source is down (default `false`: a local key). The key cache then holds
    /// this signer's signs while its own refreshes find the source down, instead of adding
    /// a failed sign per token to an outage.
    fn is_remote(&self) -> bool {
        false
    }
}

impl<T: KeySource + ?Sized> KeySource for Arc<T> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        (**self).load()
    }
    fn signer<'a>(
        &'a self,
        version: &'a KeyVersion,
    ) -> BoxFuture<'a, Result<Arc<dyn Signer>, SourceError>> {
        (**self).signer(version)
    }
    fn signed(&self, version: &KeyVersion, expires: SystemTime) {
        (**self).signed(version, expires);
    }
}
