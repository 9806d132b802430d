//! Key material held by the emulated vault: generation (aws-lc-rs), public JWKs, and signing and
//! verifying a *digest* the client sends, as Key Vault's `sign` and `verify` operations do.
//!
//! Key Vault never hashes what it is given: RS* wraps the digest in a PKCS#1 DigestInfo, PS* pads
//! it with PSS (salt length = hash length), ES* signs it as a prehash and returns raw `r‖s`.
//! aws-lc-rs's high-level signing API hashes its input, so signing uses the RustCrypto crates
//! (`rsa`, `p256`, `p384`, `p521`) with their prehash entry points.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Sha256, Sha384, Sha512};

/// Why a key could not be generated, parsed or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Key generation failed in aws-lc-rs.
    #[error("key generation failed")]
    Generate,
    /// The stored PKCS#8 document could not be parsed.
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    /// The algorithm does not fit the key type or is unknown.
    #[error("algorithm {0} is not supported by this key")]
    UnsupportedAlgorithm(String),
    /// The digest has the wrong length for the algorithm.
    #[error("the digest length {got} does not match algorithm {alg} (expected {expected})")]
    DigestLength {
        /// Algorithm name.
        alg: String,
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// The signing primitive failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// An elliptic curve Key Vault supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Curve {
    /// NIST P-256.
    #[serde(rename = "P-256")]
    P256,
    /// NIST P-384.
    #[serde(rename = "P-384")]
    P384,
    /// NIST P-521.
    #[serde(rename = "P-521")]
    P521,
}

impl Curve {
    /// The JWK `crv` name.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// Parses a JWK `crv` name.
    pub fn parse(name: &str) -> Option<Curve> {
        match name {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }
}

/// What kind of key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeySpec {
    /// RSA with this modulus size in bits (2048, 3072 or 4096).
    Rsa(u32),
    /// EC on this curve.
    Ec(Curve),
}

impl KeySpec {
    /// The default RSA 2048 key.
    pub const RSA_2048: KeySpec = KeySpec::Rsa(2048);
}

/// A private key with its cached public parts.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct KeyMaterial {
    pub(crate) spec: KeySpec,
    /// PKCS#8 v1 DER of the private key.
    #[serde(with = "b64")]
    pub(crate) pkcs8: Vec<u8>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// Bytes as standard base64 in the state file.
pub(crate) mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// Hash length in bytes for a JWS algorithm, and its family.
fn alg_info(alg: &str) -> Option<(char, usize)> {
    let family = match alg.get(..2)? {
        "RS" => 'R',
        "PS" => 'P',
        "ES" => 'E',
        _ => return None,
    };
    let len = match alg.get(2..)? {
        "256" => 32,
        "384" => 48,
        "512" => 64,
        _ => return None,
    };
    Some((family, len))
}

impl KeyMaterial {
    /// Generates a key with aws-lc-rs and keeps its PKCS#8 form.
    pub(crate) fn generate(spec: KeySpec) -> Result<KeyMaterial, CryptoError> {
        use aws_lc_rs::encoding::AsDer as _;
        let pkcs8 = match spec {
            KeySpec::Rsa(bits) => {
                let size = match bits {
                    2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
                    3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                    4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
                    _ => return Err(CryptoError::UnsupportedAlgorithm(format!("RSA {bits}"))),
                };
                let kp =
                    aws_lc_rs::rsa::KeyPair::generate(size).map_err(|_| CryptoError::Generate)?;
                let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> =
                    kp.as_der().map_err(|_| CryptoError::Generate)?;
                der.as_ref().to_vec()
            }
            KeySpec::Ec(curve) => {
                let alg = match curve {
                    Curve::P256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    Curve::P384 => &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                    Curve::P521 => &aws_lc_rs::signature::ECDSA_P521_SHA512_FIXED_SIGNING,
                };
                let kp = aws_lc_rs::signature::EcdsaKeyPair::generate(alg)
                    .map_err(|_| CryptoError::Generate)?;
                kp.to_pkcs8v1()
                    .map_err(|_| CryptoError::Generate)?
                    .as_ref()
                    .to_vec()
            }
        };
        Ok(KeyMaterial { spec, pkcs8 })
    }

    fn rsa(&self) -> Result<rsa::RsaPrivateKey, CryptoError> {
        rsa::RsaPrivateKey::from_pkcs8_der(&self.pkcs8)
            .map_err(|e| CryptoError::InvalidKey(e.to_string()))
    }

    /// The public key as a Key Vault JSON Web Key (without `kid` and `key_ops`).
    pub(crate) fn public_jwk(&self) -> Result<serde_json::Map<String, Value>, CryptoError> {
        let inv = |e: &dyn std::fmt::Display| CryptoError::InvalidKey(e.to_string());
        let v = match self.spec {
            KeySpec::Rsa(_) => {
                let k = self.rsa()?;
                json!({
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(k.n().to_bytes_be()),
                    "e": URL_SAFE_NO_PAD.encode(k.e().to_bytes_be()),
                })
            }
            KeySpec::Ec(curve) => {
                let (x, y) = match curve {
                    Curve::P256 => {
                        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
                        let sk =
                            p256::SecretKey::from_pkcs8_der(&self.pkcs8).map_err(|e| inv(&e))?;
                        let p = sk.public_key().to_encoded_point(false);
                        (p.x().map(|v| v.to_vec()), p.y().map(|v| v.to_vec()))
                    }
                    Curve::P384 => {
                        use p384::elliptic_curve::sec1::ToEncodedPoint as _;
                        let sk =
                            p384::SecretKey::from_pkcs8_der(&self.pkcs8).map_err(|e| inv(&e))?;
                        let p = sk.public_key().to_encoded_point(false);
                        (p.x().map(|v| v.to_vec()), p.y().map(|v| v.to_vec()))
                    }
                    Curve::P521 => {
                        use p521::elliptic_curve::sec1::ToEncodedPoint as _;
                        let sk =
                            p521::SecretKey::from_pkcs8_der(&self.pkcs8).map_err(|e| inv(&e))?;
                        let p = sk.public_key().to_encoded_point(false);
                        (p.x().map(|v| v.to_vec()), p.y().map(|v| v.to_vec()))
                    }
                };
                let (Some(x), Some(y)) = (x, y) else {
                    return Err(CryptoError::InvalidKey("identity point".into()));
                };
                json!({
                    "kty": "EC",
                    "crv": curve.name(),
                    "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y),
                })
            }
        };
        match v {
            Value::Object(m) => Ok(m),
            _ => Err(CryptoError::InvalidKey("jwk".into())),
        }
    }

    /// SubjectPublicKeyInfo DER of the public key.
    #[cfg(test)]
    pub(crate) fn spki_der(&self) -> Result<Vec<u8>, CryptoError> {
        use rsa::pkcs8::EncodePublicKey as _;
        let inv = |e: &dyn std::fmt::Display| CryptoError::InvalidKey(e.to_string());
        let doc = match self.spec {
            KeySpec::Rsa(_) => self.rsa()?.to_public_key().to_public_key_der(),
            KeySpec::Ec(Curve::P256) => p256::SecretKey::from_pkcs8_der(&self.pkcs8)
                .map_err(|e| inv(&e))?
                .public_key()
                .to_public_key_der(),
            KeySpec::Ec(Curve::P384) => p384::SecretKey::from_pkcs8_der(&self.pkcs8)
                .map_err(|e| inv(&e))?
                .public_key()
                .to_public_key_der(),
            KeySpec::Ec(Curve::P521) => p521::SecretKey::from_pkcs8_der(&self.pkcs8)
                .map_err(|e| inv(&e))?
                .public_key()
                .to_public_key_der(),
        };
        Ok(doc.map_err(|e| inv(&e))?.as_bytes().to_vec())
    }

    fn check_alg(&self, alg: &str, digest: &[u8]) -> Result<(char, usize), CryptoError> {
        let unsupported = || CryptoError::UnsupportedAlgorithm(alg.to_string());
        let (family, len) = alg_info(alg).ok_or_else(unsupported)?;
        match (self.spec, family) {
            (KeySpec::Rsa(_), 'R' | 'P') => {}
            (KeySpec::Ec(Curve::P256), 'E') if len == 32 => {}
            (KeySpec::Ec(Curve::P384), 'E') if len == 48 => {}
            (KeySpec::Ec(Curve::P521), 'E') if len == 64 => {}
            _ => return Err(unsupported()),
        }
        if digest.len() != len {
            return Err(CryptoError::DigestLength {
                alg: alg.to_string(),
                got: digest.len(),
                expected: len,
            });
        }
        Ok((family, len))
    }

    /// Signs a digest the client computed; never hashes it again.
    pub(crate) fn sign_digest(&self, alg: &str, digest: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (family, len) = self.check_alg(alg, digest)?;
        let err = |e: &dyn std::fmt::Display| CryptoError::Sign(e.to_string());
        match self.spec {
            KeySpec::Rsa(_) => {
                let key = self.rsa()?;
                let mut rng = rsa::rand_core::OsRng;
                match (family, len) {
                    ('R', 32) => key.sign(rsa::Pkcs1v15Sign::new::<Sha256>(), digest),
                    ('R', 48) => key.sign(rsa::Pkcs1v15Sign::new::<Sha384>(), digest),
                    ('R', _) => key.sign(rsa::Pkcs1v15Sign::new::<Sha512>(), digest),
                    ('P', 32) => {
                        key.sign_with_rng(&mut rng, rsa::Pss::new_with_salt::<Sha256>(32), digest)
                    }
                    ('P', 48) => {
                        key.sign_with_rng(&mut rng, rsa::Pss::new_with_salt::<Sha384>(48), digest)
                    }
                    _ => key.sign_with_rng(&mut rng, rsa::Pss::new_with_salt::<Sha512>(64), digest),
                }
                .map_err(|e| err(&e))
            }
            KeySpec::Ec(Curve::P256) => {
                let sk = p256::ecdsa::SigningKey::from_pkcs8_der(&self.pkcs8)
                    .map_err(|e| CryptoError::InvalidKey(e.to_string()))?;
                let sig: p256::ecdsa::Signature = sk.sign_prehash(digest).map_err(|e| err(&e))?;
                Ok(sig.to_bytes().to_vec())
            }
            KeySpec::Ec(Curve::P384) => {
                let sk = p384::ecdsa::SigningKey::from_pkcs8_der(&self.pkcs8)
                    .map_err(|e| CryptoError::InvalidKey(e.to_string()))?;
                let sig: p384::ecdsa::Signature = sk.sign_prehash(digest).map_err(|e| err(&e))?;
                Ok(sig.to_bytes().to_vec())
            }
            KeySpec::Ec(Curve::P521) => {
                let secret = p521::SecretKey::from_pkcs8_der(&self.pkcs8)
                    .map_err(|e| CryptoError::InvalidKey(e.to_string()))?;
                let sk = p521::ecdsa::SigningKey::from_slice(&secret.to_bytes())
                    .map_err(|e| CryptoError::InvalidKey(e.to_string()))?;
                let sig: p521::ecdsa::Signature = sk.sign_prehash(digest).map_err(|e| err(&e))?;
                Ok(sig.to_bytes().to_vec())
            }
        }
    }

    /// Verifies a signature over a digest; `Ok(false)` when it does not verify.
    pub(crate) fn verify_digest(
        &self,
        alg: &str,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool, CryptoError> {
        let (family, len) = self.check_alg(alg, digest)?;
        let inv = |e: &dyn std::fmt::Display| CryptoError::InvalidKey(e.to_string());
        Ok(match self.spec {
            KeySpec::Rsa(_) => {
                let key = self.rsa()?.to_public_key();
                match (family, len) {
                    ('R', 32) => key.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), digest, signature),
                    ('R', 48) => key.verify(rsa::Pkcs1v15Sign::new::<Sha384>(), digest, signature),
                    ('R', _) => key.verify(rsa::Pkcs1v15Sign::new::<Sha512>(), digest, signature),
                    ('P', 32) => {
                        key.verify(rsa::Pss::new_with_salt::<Sha256>(32), digest, signature)
                    }
                    ('P', 48) => {
                        key.verify(rsa::Pss::new_with_salt::<Sha384>(48), digest, signature)
                    }
                    _ => key.verify(rsa::Pss::new_with_salt::<Sha512>(64), digest, signature),
                }
                .is_ok()
            }
            KeySpec::Ec(Curve::P256) => {
                let sk =
                    p256::ecdsa::SigningKey::from_pkcs8_der(&self.pkcs8).map_err(|e| inv(&e))?;
                match p256::ecdsa::Signature::from_slice(signature) {
                    Ok(sig) => sk.verifying_key().verify_prehash(digest, &sig).is_ok(),
                    Err(_) => false,
                }
            }
            KeySpec::Ec(Curve::P384) => {
                let sk =
                    p384::ecdsa::SigningKey::from_pkcs8_der(&self.pkcs8).map_err(|e| inv(&e))?;
                match p384::ecdsa::Signature::from_slice(signature) {
                    Ok(sig) => sk.verifying_key().verify_prehash(digest, &sig).is_ok(),
                    Err(_) => false,
                }
            }
            KeySpec::Ec(Curve::P521) => {
                let secret = p521::SecretKey::from_pkcs8_der(&self.pkcs8).map_err(|e| inv(&e))?;
                let vk = p521::ecdsa::VerifyingKey::from_affine(*secret.public_key().as_affine())
                    .map_err(|e| inv(&e))?;
                match p521::ecdsa::Signature::from_slice(signature) {
                    Ok(sig) => vk.verify_prehash(digest, &sig).is_ok(),
                    Err(_) => false,
                }
            }
        })
    }

    /// An rcgen key pair for certificate signing with this key.
    pub(crate) fn rcgen_key_pair(&self) -> Result<rcgen::KeyPair, CryptoError> {
        let alg = match self.spec {
            KeySpec::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
            KeySpec::Ec(Curve::P256) => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeySpec::Ec(Curve::P384) => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeySpec::Ec(Curve::P521) => &rcgen::PKCS_ECDSA_P521_SHA512,
        };
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.as_slice());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, alg)
            .map_err(|e| CryptoError::InvalidKey(e.to_string()))
    }

    /// PEM (`PRIVATE KEY`) of the PKCS#8 document.
    pub(crate) fn pkcs8_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{self as sig, UnparsedPublicKey};
    use sha2::Digest as _;

    fn spki_key(m: &KeyMaterial) -> Vec<u8> {
        // aws-lc-rs wants the bare subjectPublicKey for RSA (PKCS#1) and EC (SEC1 point).
        use x509_parser::prelude::FromDer as _;
        let spki = m.spki_der().unwrap();
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
        info.subject_public_key.data.to_vec()
    }

    #[test]
    fn every_algorithm_signs_a_digest_that_aws_lc_verifies_over_the_message() {
        let msg = b"header.payload";
        let cases: [(KeySpec, &str, &'static dyn sig::VerificationAlgorithm); 9] = [
            (
                KeySpec::Rsa(2048),
                "RS256",
                &sig::RSA_PKCS1_2048_8192_SHA256,
            ),
            (
                KeySpec::Rsa(2048),
                "RS384",
                &sig::RSA_PKCS1_2048_8192_SHA384,
            ),
            (
                KeySpec::Rsa(2048),
                "RS512",
                &sig::RSA_PKCS1_2048_8192_SHA512,
            ),
            (KeySpec::Rsa(2048), "PS256", &sig::RSA_PSS_2048_8192_SHA256),
            (KeySpec::Rsa(2048), "PS384", &sig::RSA_PSS_2048_8192_SHA384),
            (KeySpec::Rsa(2048), "PS512", &sig::RSA_PSS_2048_8192_SHA512),
            (
                KeySpec::Ec(Curve::P256),
                "ES256",
                &sig::ECDSA_P256_SHA256_FIXED,
            ),
            (
                KeySpec::Ec(Curve::P384),
                "ES384",
                &sig::ECDSA_P384_SHA384_FIXED,
            ),
            (
                KeySpec::Ec(Curve::P521),
                "ES512",
                &sig::ECDSA_P521_SHA512_FIXED,
            ),
        ];
        let rsa = KeyMaterial::generate(KeySpec::Rsa(2048)).unwrap();
        for (spec, alg, verify_alg) in cases {
            let key = if spec == KeySpec::Rsa(2048) {
                rsa.clone()
            } else {
                KeyMaterial::generate(spec).unwrap()
            };
            let digest = match &alg[2..] {
                "256" => Sha256::digest(msg).to_vec(),
                "384" => Sha384::digest(msg).to_vec(),
                _ => Sha512::digest(msg).to_vec(),
            };
            let signature = key.sign_digest(alg, &digest).unwrap();
            UnparsedPublicKey::new(verify_alg, spki_key(&key))
                .verify(msg, &signature)
                .unwrap_or_else(|_| panic!("{alg} signature does not verify"));
            assert!(
                key.verify_digest(alg, &digest, &signature).unwrap(),
                "{alg}"
            );
            let mut bad = signature.clone();
            bad[4] ^= 1;
            assert!(!key.verify_digest(alg, &digest, &bad).unwrap(), "{alg}");
        }
    }

    #[test]
    fn wrong_digest_length_and_family_are_refused() {
        let key = KeyMaterial::generate(KeySpec::Ec(Curve::P256)).unwrap();
        assert!(matches!(
            key.sign_digest("ES256", &[0u8; 31]),
            Err(CryptoError::DigestLength { expected: 32, .. })
        ));
        assert!(matches!(
            key.sign_digest("RS256", &[0u8; 32]),
            Err(CryptoError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            key.sign_digest("ES384", &[0u8; 48]),
            Err(CryptoError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn jwk_carries_public_components() {
        let key = KeyMaterial::generate(KeySpec::Ec(Curve::P384)).unwrap();
        let jwk = key.public_jwk().unwrap();
        assert_eq!(jwk["crv"], "P-384");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap())
                .unwrap()
                .len(),
            48
        );
        let rsa = KeyMaterial::generate(KeySpec::Rsa(3072)).unwrap();
        let jwk = rsa.public_jwk().unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["n"].as_str().unwrap())
                .unwrap()
                .len(),
            384
        );
        assert_eq!(jwk["e"], "AQAB");
    }
}
