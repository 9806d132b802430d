//! A private key held in this process, signing with aws-lc-rs.
//!
//! ```
//! use keyroll_core::{Algorithm, LocalKey};
//!
//! let key = LocalKey::generate(Algorithm::EdDSA).unwrap();
//! let signature = key.sign_now(b"message").unwrap();
//! let jwk = key.public_jwk();
//! let public = keyroll_core::VerifyingKey::from_jwk(&jwk).unwrap();
//! public.verify(Algorithm::EdDSA, b"message", &signature).unwrap();
//! // Debug output never shows key material.
//! assert_eq!(format!("{key:?}"), "LocalKey { algorithm: EdDSA }");
//! ```

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use zeroize::Zeroizing;

use crate::algorithm::{Algorithm, Curve, KeyType};
use crate::error::{KeyError, SourceError};
use crate::jwk::Jwk;
use crate::source::{BoxFuture, Signer};

/// A private signing key in process memory. Its PKCS#8 form is zeroized on drop and never
/// appears in `Debug` output.
pub struct LocalKey {
    algorithm: Algorithm,
    pair: Pair,
    pkcs8: Zeroizing<Vec<u8>>,
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey")
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

fn ecdsa_signing(curve: Curve) -> &'static signature::EcdsaSigningAlgorithm {
    match curve {
        Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
    }
}

fn unspecified(what: &str) -> impl Fn(aws_lc_rs::error::Unspecified) -> KeyError + '_ {
    move |_| KeyError::new(format!("could not {what}"))
}

impl LocalKey {
    /// Generates a new key for `algorithm` (RSA keys are 2048 bits).
    pub fn generate(algorithm: Algorithm) -> Result<LocalKey, KeyError> {
        let pkcs8: Vec<u8> = match algorithm.key_type() {
            KeyType::Rsa => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048)
                    .map_err(unspecified("generate an RSA key"))?;
                pair.as_der()
                    .map_err(unspecified("encode an RSA key"))?
                    .as_ref()
                    .to_vec()
            }
            KeyType::Ec(curve) => EcdsaKeyPair::generate(ecdsa_signing(curve))
                .and_then(|pair| pair.to_pkcs8v1())
                .map_err(unspecified("generate an EC key"))?
                .as_ref()
                .to_vec(),
            KeyType::Ed25519 => Ed25519KeyPair::generate()
                .and_then(|pair| pair.to_pkcs8())
                .map_err(unspecified("generate an Ed25519 key"))?
                .as_ref()
                .to_vec(),
        };
        LocalKey::from_pkcs8(algorithm, &pkcs8)
    }

    /// Loads a PKCS#8 DER private key to sign with `algorithm`.
    pub fn from_pkcs8(algorithm: Algorithm, der: &[u8]) -> Result<LocalKey, KeyError> {
        let rejected = |e: aws_lc_rs::error::KeyRejected| {
            KeyError::new(format!("not a PKCS#8 private key for {algorithm}: {e}"))
        };
        let pair = match algorithm.key_type() {
            KeyType::Rsa => Pair::Rsa(RsaKeyPair::from_pkcs8(der).map_err(rejected)?),
            KeyType::Ec(curve) => {
                Pair::Ec(EcdsaKeyPair::from_pkcs8(ecdsa_signing(curve), der).map_err(rejected)?)
            }
            KeyType::Ed25519 => {
                Pair::Ed(Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(rejected)?)
            }
        };
        Ok(LocalKey {
            algorithm,
            pair,
            pkcs8: Zeroizing::new(der.to_vec()),
        })
    }

    /// Loads a PEM private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
    pub fn from_pem(algorithm: Algorithm, pem_text: &str) -> Result<LocalKey, KeyError> {
        let block = pem::parse(pem_text).map_err(|e| KeyError::new(format!("not PEM: {e}")))?;
        let tag = block.tag().to_owned();
        // Take the contents out of the block so the only copy is wiped on every path.
        let der = Zeroizing::new(block.into_contents());
        match (tag.as_str(), algorithm.key_type()) {
            ("PRIVATE KEY", _) => LocalKey::from_pkcs8(algorithm, &der),
            ("RSA PRIVATE KEY", KeyType::Rsa) => {
                let pair = RsaKeyPair::from_der(&der)
                    .map_err(|e| KeyError::new(format!("not a PKCS#1 RSA private key: {e}")))?;
                let pkcs8 = pair.as_der().map_err(unspecified("encode an RSA key"))?;
                LocalKey::from_pkcs8(algorithm, pkcs8.as_ref())
            }
            ("EC PRIVATE KEY", KeyType::Ec(curve)) => {
                let pair = EcdsaKeyPair::from_private_key_der(ecdsa_signing(curve), &der).map_err(
                    |e| KeyError::new(format!("not an EC private key for {algorithm}: {e}")),
                )?;
                let pkcs8 = pair.to_pkcs8v1().map_err(unspecified("encode an EC key"))?;
                LocalKey::from_pkcs8(algorithm, pkcs8.as_ref())
            }
            (tag, _) => Err(KeyError::new(format!(
                "PEM block `{tag}` is not a private key for {algorithm}"
            ))),
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The PKCS#8 DER encoding (secret: handle with care).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half as a JWK (no `kid` or `alg` set).
    pub fn public_jwk(&self) -> Jwk {
        match &self.pair {
            Pair::Rsa(pair) => {
                let public = pair.public_key();
                Jwk::rsa(
                    public.modulus().big_endian_without_leading_zero(),
                    public.exponent().big_endian_without_leading_zero(),
                )
            }
            Pair::Ec(pair) => {
                let point = pair.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                let crv = match self.algorithm.key_type() {
                    KeyType::Ec(curve) => curve.as_str(),
                    _ => "",
                };
                Jwk::ec(crv, &point[1..=half], &point[1 + half..])
            }
            Pair::Ed(pair) => Jwk::ed25519(pair.public_key().as_ref()),
        }
    }

    /// Signs `message` now (synchronously).
    pub fn sign_now(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match self.algorithm {
                    Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_SHA384,
                    _ => &signature::RSA_PSS_SHA512,
                };
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(padding, &rng, message, &mut signature)
                    .map_err(unspecified("sign"))?;
                Ok(signature)
            }
            Pair::Ec(pair) => Ok(pair
                .sign(&rng, message)
                .map_err(unspecified("sign"))?
                .as_ref()
                .to_vec()),
            Pair::Ed(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

impl Signer for LocalKey {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, SourceError>> {
        let result = self
            .sign_now(signing_input)
            .map_err(|e| SourceError::new("local key", "sign", e.to_string()));
        Box::pin(std::future::ready(result))
    }
}

impl Signer for Arc<LocalKey> {
    fn algorithm(&self) -> Algorithm {
        self.as_ref().algorithm()
    }

    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, SourceError>> {
        self.as_ref().sign(signing_input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ALL_ALGORITHMS;
    use crate::key::VerifyingKey;

    #[test]
    fn every_algorithm_signs_and_verifies() {
        for alg in ALL_ALGORITHMS {
            let key = LocalKey::generate(alg).unwrap();
            let signature = key.sign_now(b"input").unwrap();
            let public = VerifyingKey::from_jwk(&key.public_jwk()).unwrap();
            public.verify(alg, b"input", &signature).unwrap();
            assert!(public.verify(alg, b"other", &signature).is_err(), "{alg}");
            let again = LocalKey::from_pkcs8(alg, key.pkcs8_der()).unwrap();
            assert_eq!(again.public_jwk(), key.public_jwk());
        }
    }

    #[test]
    fn pem_forms_load() {
        let key = LocalKey::generate(Algorithm::ES384).unwrap();
        let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", key.pkcs8_der().to_vec()));
        let loaded = LocalKey::from_pem(Algorithm::ES384, &pem_text).unwrap();
        assert_eq!(loaded.public_jwk(), key.public_jwk());
        assert!(LocalKey::from_pem(Algorithm::ES256, &pem_text).is_err());
        assert!(LocalKey::from_pem(Algorithm::ES256, "garbage").is_err());
    }
}
