//! JWS signature algorithms keyroll signs and verifies with.
//!
//! ```
//! use keyroll_core::{Algorithm, KeyType};
//!
//! let alg: Algorithm = "PS256".parse().unwrap();
//! assert_eq!(alg.key_type(), KeyType::Rsa);
//! assert_eq!(alg.as_str(), "PS256");
//! // `none` and the HMAC family are not algorithms keyroll will ever accept.
//! assert!("none".parse::<Algorithm>().is_err());
//! assert!("HS256".parse::<Algorithm>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An asymmetric JWS algorithm (RFC 7518 §3, RFC 8037).
///
/// Only asymmetric algorithms exist here by construction: `none` and `HS*` cannot be
/// represented, so no configuration can accept them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 (salt length 32).
    PS256,
    /// RSASSA-PSS with SHA-384 (salt length 48).
    PS384,
    /// RSASSA-PSS with SHA-512 (salt length 64).
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// ECDSA on P-521 with SHA-512.
    ES512,
    /// EdDSA on Ed25519.
    EdDSA,
}

/// The kind of key an algorithm needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// An RSA key (`kty` `RSA`).
    Rsa,
    /// An elliptic-curve key on the given curve (`kty` `EC`).
    Ec(Curve),
    /// An Ed25519 key (`kty` `OKP`, `crv` `Ed25519`).
    Ed25519,
}

/// The NIST curves used by ECDSA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Curve {
    /// P-256 (secp256r1).
    P256,
    /// P-384 (secp384r1).
    P384,
    /// P-521 (secp521r1).
    P521,
}

impl Curve {
    /// The JWK `crv` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// Size in bytes of one coordinate (and of each of `r` and `s` in a JWS signature).
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The curve named by a JWK `crv` value.
    pub fn from_name(name: &str) -> Option<Curve> {
        match name {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }
}

/// Every algorithm, in a stable order.
pub const ALL_ALGORITHMS: [Algorithm; 10] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::ES512,
    Algorithm::EdDSA,
];

impl Algorithm {
    /// The algorithm with this JWS name, if keyroll supports it. Unlike `parse`, it allocates
    /// nothing for an unknown name: a flood of `alg: none` tokens costs no error texts.
    pub(crate) fn named(name: &str) -> Option<Algorithm> {
        ALL_ALGORITHMS
            .iter()
            .copied()
            .find(|alg| alg.as_str() == name)
    }

    /// The JOSE name (`RS256`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The key type this algorithm signs with.
    pub fn key_type(self) -> KeyType {
        match self {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyType::Rsa,
            Algorithm::ES256 => KeyType::Ec(Curve::P256),
            Algorithm::ES384 => KeyType::Ec(Curve::P384),
            Algorithm::ES512 => KeyType::Ec(Curve::P521),
            Algorithm::EdDSA => KeyType::Ed25519,
        }
    }

    /// The digest the algorithm signs, or `None` for EdDSA, which signs the message itself.
    ///
    /// A remote signer (Key Vault) is sent this digest of the JWS signing input.
    pub fn digest(self) -> Option<&'static digest::Algorithm> {
        match self {
            Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => Some(&digest::SHA256),
            Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => Some(&digest::SHA384),
            Algorithm::RS512 | Algorithm::PS512 | Algorithm::ES512 => Some(&digest::SHA512),
            Algorithm::EdDSA => None,
        }
    }

    /// The position of this algorithm in [`ALL_ALGORITHMS`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The algorithms a key of this type can verify, in the order they are preferred for signing.
    pub fn for_key_type(key_type: KeyType) -> &'static [Algorithm] {
        match key_type {
            KeyType::Rsa => &ALL_ALGORITHMS[0..6],
            KeyType::Ec(Curve::P256) => &[Algorithm::ES256],
            KeyType::Ec(Curve::P384) => &[Algorithm::ES384],
            KeyType::Ec(Curve::P521) => &[Algorithm::ES512],
            KeyType::Ed25519 => &[Algorithm::EdDSA],
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for an algorithm name keyroll does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported JWS algorithm `{name}` (only asymmetric RS*, PS*, ES* and EdDSA are accepted)"
)]
pub struct UnsupportedAlgorithm {
    name: String,
}

impl UnsupportedAlgorithm {
    /// The name that was refused (truncated to 32 characters).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl FromStr for Algorithm {
    type Err = UnsupportedAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::named(s).ok_or_else(|| UnsupportedAlgorithm {
            name: s.chars().take(32).collect(),
        })
    }
}

impl Serialize for Algorithm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in ALL_ALGORITHMS {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
            assert_eq!(ALL_ALGORITHMS[alg.index()], alg);
        }
    }

    #[test]
    fn symmetric_and_none_are_unrepresentable() {
        for name in ["none", "None", "HS256", "HS384", "HS512", "", "rs256"] {
            assert!(name.parse::<Algorithm>().is_err(), "{name}");
        }
    }

    #[test]
    fn key_types() {
        assert_eq!(Algorithm::for_key_type(KeyType::Rsa).len(), 6);
        assert_eq!(Algorithm::ES512.key_type(), KeyType::Ec(Curve::P521));
        assert!(Algorithm::EdDSA.digest().is_none());
    }
}
