//! Key versions and their parsed public keys.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use keyroll_core::{Algorithm, KeyVersion, LocalKey};
//!
//! let key = LocalKey::generate(Algorithm::ES256).unwrap();
//! let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let version = KeyVersion::new("v1", key.public_jwk(), created)
//!     .unwrap()
//!     .with_algorithm(Algorithm::ES256)
//!     .with_expires(created + Duration::from_secs(86_400));
//! assert_eq!(version.signing_algorithm(), Algorithm::ES256);
//! assert!(version.is_usable_at(created));
//! assert!(!version.is_usable_at(created + Duration::from_secs(86_400)));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents, VerificationAlgorithm};

use crate::algorithm::{ALL_ALGORITHMS, Algorithm, Curve, KeyType};
use crate::error::KeyError;
use crate::jwk::{Jwk, b64url_decode};

/// A public key parsed once into aws-lc-rs key objects, one per algorithm it may verify.
///
/// Verifying with it does no key parsing: that is what keeps keyroll's accepted-token path
/// close to the bare signature check.
#[derive(Clone)]
pub struct VerifyingKey {
    key_type: KeyType,
    pinned: Option<Algorithm>,
    parsed: [Option<ParsedPublicKey>; ALL_ALGORITHMS.len()],
    fingerprint: KeyFingerprint,
}

/// A public key's identity: SHA-256 over its type and public numbers, the same for the same key
/// whichever version, load or source lists it, and different for any other key.
///
/// What a verification remembers of its key: a verified-token cache serves a hit only while a
/// key with this fingerprint is the one the token's kid and algorithm would verify with now
/// (a kid can be reused for new key material, and RFC 7517 lets keys of different types share
/// one).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyFingerprint([u8; 32]);

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first eight bytes: enough to tell keys apart in a log.
        f.write_str("KeyFingerprint(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…)")
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("key_type", &self.key_type)
            .field("algorithms", &self.algorithms().collect::<Vec<_>>())
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl VerifyingKey {
    /// Parses a public JWK. A key with an `alg` only verifies that algorithm; a key without one
    /// (as Entra ID publishes them) verifies every algorithm its type allows.
    pub fn from_jwk(jwk: &Jwk) -> Result<VerifyingKey, KeyError> {
        let pinned = match jwk.alg.as_deref() {
            None => None,
            Some(name) => Some(
                name.parse::<Algorithm>()
                    .map_err(|e| KeyError::new(e.to_string()))?,
            ),
        };
        let member = |name: &str, value: &Option<String>| -> Result<Vec<u8>, KeyError> {
            let text = value
                .as_deref()
                .ok_or_else(|| KeyError::new(format!("{} key without `{name}`", jwk.kty)))?;
            b64url_decode(text)
                .map_err(|e| KeyError::new(format!("`{name}` is not base64url: {e}")))
        };
        let (key_type, material) = match jwk.kty.as_str() {
            "RSA" => (
                KeyType::Rsa,
                Material::Rsa {
                    n: member("n", &jwk.n)?,
                    e: member("e", &jwk.e)?,
                },
            ),
            "EC" => {
                let crv = jwk.crv.as_deref().unwrap_or_default();
                let curve = Curve::from_name(crv)
                    .ok_or_else(|| KeyError::new(format!("unsupported EC curve `{crv}`")))?;
                let (x, y) = (member("x", &jwk.x)?, member("y", &jwk.y)?);
                if x.len() != curve.coordinate_len() || y.len() != curve.coordinate_len() {
                    return Err(KeyError::new(format!(
                        "EC coordinates of the wrong length for {crv}"
                    )));
                }
                let mut point = Vec::with_capacity(1 + 2 * x.len());
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (KeyType::Ec(curve), Material::Point(point))
            }
            "OKP" if jwk.crv.as_deref() == Some("Ed25519") => {
                let x = member("x", &jwk.x)?;
                check_ed25519_point(&x)?;
                (KeyType::Ed25519, Material::Point(x))
            }
            "oct" => return Err(KeyError::new("symmetric keys are never accepted")),
            other => return Err(KeyError::new(format!("unsupported key type `{other}`"))),
        };
        if let Some(alg) = pinned
            && alg.key_type() != key_type
        {
            return Err(KeyError::new(format!(
                "`alg` {alg} does not fit a {} key",
                jwk.kty
            )));
        }
        let mut parsed: [Option<ParsedPublicKey>; ALL_ALGORITHMS.len()] = Default::default();
        let algorithms: &[Algorithm] = match pinned {
            Some(ref alg) => std::slice::from_ref(alg),
            None => Algorithm::for_key_type(key_type),
        };
        for &alg in algorithms {
            parsed[alg.index()] = Some(material.parse(alg)?);
        }
        Ok(VerifyingKey {
            key_type,
            pinned,
            parsed,
            fingerprint: material.fingerprint(key_type),
        })
    }

    /// The key's identity (see [`KeyFingerprint`]).
    pub fn fingerprint(&self) -> KeyFingerprint {
        self.fingerprint
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The algorithm the key is pinned to by its `alg`, if any.
    pub fn pinned_algorithm(&self) -> Option<Algorithm> {
        self.pinned
    }

    /// The algorithms this key verifies.
    pub fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        ALL_ALGORITHMS
            .into_iter()
            .filter(|alg| self.parsed[alg.index()].is_some())
    }

    /// Whether this key may verify signatures made with `alg`.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.parsed[alg.index()].is_some()
    }

    /// Checks `signature` over `message` with `alg`. Fails when the key does not allow `alg`
    /// (the key's algorithm must match the header's) or the signature does not verify.
    pub fn verify(
        &self,
        alg: Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        let key = self.parsed[alg.index()]
            .as_ref()
            .ok_or(SignatureError::AlgorithmMismatch)?;
        key.verify_sig(message, signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// Why a signature check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The key may not be used with the token's algorithm.
    #[error("the key does not allow the token's algorithm")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("signature verification failed")]
    Invalid,
}

/// The bit length of a big-endian modulus (leading zero bytes and bits not counted).
fn modulus_bits(n: &[u8]) -> usize {
    let zeros = n.iter().take_while(|&&b| b == 0).count();
    let significant = &n[zeros..];
    match significant.first() {
        Some(first) => significant.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// Refuses an Ed25519 public key that is not a curve point, or is one of small order (the
/// identity among them): with such a key `A`, a signature `R = identity, S = 0` (or a few
/// like it) verifies for every message under the cofactorless equation.
fn check_ed25519_point(x: &[u8]) -> Result<(), KeyError> {
    let bytes: [u8; 32] = x
        .try_into()
        .map_err(|_| KeyError::new("an Ed25519 key is 32 bytes"))?;
    match curve25519_dalek::edwards::CompressedEdwardsY(bytes).decompress() {
        None => Err(KeyError::new("the Ed25519 key is not a curve point")),
        Some(point) if point.is_small_order() => Err(KeyError::new(
            "the Ed25519 key is a point of small order (it would verify forged signatures)",
        )),
        Some(_) => Ok(()),
    }
}

enum Material {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Point(Vec<u8>),
}

impl Material {
    /// SHA-256 over the key type and each public number, length-prefixed.
    fn fingerprint(&self, key_type: KeyType) -> KeyFingerprint {
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut field = |bytes: &[u8]| {
            digest.update(&(bytes.len() as u64).to_be_bytes());
            digest.update(bytes);
        };
        match (self, key_type) {
            (Material::Rsa { n, e }, _) => {
                field(b"RSA");
                field(n);
                field(e);
            }
            (Material::Point(point), KeyType::Ec(curve)) => {
                field(curve.as_str().as_bytes());
                field(point);
            }
            (Material::Point(point), _) => {
                field(b"Ed25519");
                field(point);
            }
        }
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest.finish().as_ref());
        KeyFingerprint(bytes)
    }

    fn parse(&self, alg: Algorithm) -> Result<ParsedPublicKey, KeyError> {
        let rejected = |e: aws_lc_rs::error::KeyRejected| {
            KeyError::new(format!("invalid {alg} public key: {e}"))
        };
        match self {
            Material::Rsa { n, e } => {
                let params = match alg {
                    Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                let bits = modulus_bits(n);
                if bits < 2048 {
                    return Err(KeyError::new(format!(
                        "RSA keys shorter than 2048 bits are not accepted (this one has {bits})"
                    )));
                }
                RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                }
                .to_parsed_public_key(params)
                .map_err(rejected)
            }
            Material::Point(bytes) => {
                let algorithm: &'static dyn VerificationAlgorithm = match alg {
                    Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
                    Algorithm::ES512 => &signature::ECDSA_P521_SHA512_FIXED,
                    _ => &signature::ED25519,
                };
                ParsedPublicKey::new(algorithm, bytes).map_err(rejected)
            }
        }
    }
}

/// One version of a key, as a [`KeySource`](crate::KeySource) lists it: metadata and public key.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KeyVersion {
    /// The key id, as written in the `kid` header of tokens signed with this version.
    pub kid: String,
    /// The source's own name for this version (a Key Vault version id, a file name, …).
    pub version: String,
    /// When the version was created: the rotation policy orders versions by it.
    pub created: SystemTime,
    /// Not valid before this time, if set.
    pub not_before: Option<SystemTime>,
    /// Not valid from this time on, if set.
    pub expires: Option<SystemTime>,
    /// Whether the version is enabled. A disabled version neither signs nor validates.
    pub enabled: bool,
    /// The algorithm this version signs with; `None` means the default for its key type.
    pub algorithm: Option<Algorithm>,
    /// The public key, as published in JWKS (`kid` and `alg` set).
    pub jwk: Jwk,
    /// SHA-1 certificate thumbprint (base64url), for certificate-backed versions.
    pub x5t: Option<String>,
    /// SHA-256 certificate thumbprint (base64url), for certificate-backed versions.
    pub x5t_s256: Option<String>,
    /// Certificate chain (standard base64 DER, leaf first).
    pub x5c: Vec<String>,
    key: Arc<VerifyingKey>,
}

impl KeyVersion {
    /// A new enabled version with no validity window. The JWK is parsed here, once.
    pub fn new(
        kid: impl Into<String>,
        jwk: Jwk,
        created: SystemTime,
    ) -> Result<KeyVersion, KeyError> {
        let key = VerifyingKey::from_jwk(&jwk)?;
        Ok(KeyVersion::with_key(kid.into(), jwk, key, created))
    }

    /// A validation-only version for a JWK someone published (a JWKS, a JWK file): kid from
    /// the JWK, or its RFC 7638 thumbprint when it has none; `x5t`, `x5t#S256` and `x5c`
    /// kept; creation time unknown (the epoch). `key` is the JWK, already parsed.
    pub(crate) fn published(jwk: Jwk, key: VerifyingKey) -> KeyVersion {
        let kid = jwk.kid.clone().unwrap_or_else(|| jwk.thumbprint());
        let (x5t, x5t_s256) = (jwk.x5t.clone(), jwk.x5t_s256.clone());
        let x5c = jwk.x5c.clone().unwrap_or_default();
        KeyVersion::with_key(kid, jwk, key, SystemTime::UNIX_EPOCH)
            .with_certificate(x5t, x5t_s256, x5c)
    }

    fn with_key(kid: String, jwk: Jwk, key: VerifyingKey, created: SystemTime) -> KeyVersion {
        let algorithm = key.pinned_algorithm();
        let mut version = KeyVersion {
            version: kid.clone(),
            kid,
            created,
            not_before: None,
            expires: None,
            enabled: true,
            algorithm,
            jwk,
            x5t: None,
            x5t_s256: None,
            x5c: Vec::new(),
            key: Arc::new(key),
        };
        version.sync_jwk();
        version
    }

    /// Sets the source's own version name.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the enabled flag.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the not-before time.
    pub fn with_not_before(mut self, not_before: SystemTime) -> Self {
        self.not_before = Some(not_before);
        self
    }

    /// Sets the expiry time.
    pub fn with_expires(mut self, expires: SystemTime) -> Self {
        self.expires = Some(expires);
        self
    }

    /// Pins the signing algorithm; the version then verifies only that algorithm (and none, if
    /// its key type cannot use it).
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = Some(algorithm);
        self.sync_jwk();
        self
    }

    /// Sets the certificate thumbprints and chain.
    pub fn with_certificate(
        mut self,
        x5t: Option<String>,
        x5t_s256: Option<String>,
        x5c: Vec<String>,
    ) -> Self {
        self.x5t = x5t;
        self.x5t_s256 = x5t_s256;
        self.x5c = x5c;
        self.sync_jwk();
        self
    }

    fn sync_jwk(&mut self) {
        self.jwk.kid = Some(self.kid.clone());
        self.jwk.alg = self.algorithm.map(|a| a.as_str().to_owned());
        self.jwk.key_use = Some("sig".into());
        self.jwk.key_ops = None;
        self.jwk.x5t.clone_from(&self.x5t);
        self.jwk.x5t_s256.clone_from(&self.x5t_s256);
        self.jwk.x5c = (!self.x5c.is_empty()).then(|| self.x5c.clone());
    }

    /// Orders versions oldest first: by creation, ties broken by kid, so that every replica
    /// ranks the same set the same way.
    pub fn age_order(&self, other: &KeyVersion) -> std::cmp::Ordering {
        self.created
            .cmp(&other.created)
            .then_with(|| self.kid.cmp(&other.kid))
    }

    /// The parsed public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The algorithm this version signs with: its pinned one, or the default for its key type.
    pub fn signing_algorithm(&self) -> Algorithm {
        self.algorithm
            .unwrap_or_else(|| Algorithm::for_key_type(self.key.key_type())[0])
    }

    /// Whether `alg` may be used with this version: its pinned algorithm, or any its key type allows.
    pub fn allows(&self, alg: Algorithm) -> bool {
        match self.algorithm {
            Some(pinned) => pinned == alg,
            None => self.key.allows(alg),
        }
    }

    /// Enabled and inside its not-before/expires window at `now`.
    pub fn is_usable_at(&self, now: SystemTime) -> bool {
        self.enabled
            && self.not_before.is_none_or(|nbf| nbf <= now)
            && self.expires.is_none_or(|exp| now < exp)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::LocalKey;

    fn fingerprint(jwk: &Jwk) -> KeyFingerprint {
        VerifyingKey::from_jwk(jwk).unwrap().fingerprint()
    }

    #[test]
    fn a_fingerprint_names_the_public_key_and_only_it() {
        let rsa = LocalKey::generate(Algorithm::RS256).unwrap().public_jwk();
        let ec = LocalKey::generate(Algorithm::ES256).unwrap().public_jwk();
        assert_eq!(fingerprint(&rsa), fingerprint(&rsa.clone()));
        // The same numbers whatever the JWK names or pins.
        let mut renamed = rsa.clone();
        renamed.alg = None;
        renamed.kid = Some("another name".into());
        assert_eq!(fingerprint(&renamed), fingerprint(&rsa));
        // Any other key differs.
        let other = LocalKey::generate(Algorithm::RS256).unwrap().public_jwk();
        assert_ne!(fingerprint(&other), fingerprint(&rsa));
        assert_ne!(fingerprint(&ec), fingerprint(&rsa));
        // Debug shows a prefix, enough to tell keys apart.
        let shown = format!("{:?}", fingerprint(&ec));
        assert!(
            shown.starts_with("KeyFingerprint(") && shown.len() < 40,
            "{shown}"
        );
    }
}
