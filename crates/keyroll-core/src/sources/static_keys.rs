//! Keys read from PEM or JWK files: fixed keys, for tests, development and peers that publish
//! a certificate instead of a JWKS.
//!
//! ```
//! use keyroll_core::{Algorithm, KeySource, LocalKey, StaticKeys};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let key = LocalKey::generate(Algorithm::ES256).unwrap();
//! let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", key.pkcs8_der().to_vec()));
//! let keys = StaticKeys::new()
//!     .with_private_pem(Algorithm::ES256, &pem).unwrap()
//!     .with_jwk_json(br#"{"kty":"OKP","crv":"Ed25519","kid":"peer","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#).unwrap();
//! let versions = keys.load().await.unwrap().versions;
//! assert_eq!(versions.len(), 2);
//! assert!(keys.signer(&versions[0]).await.is_ok());
//! assert!(keys.signer(&versions[1]).await.is_err()); // public only
//! # });
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey as X509PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::algorithm::Algorithm;
use crate::clock::from_unix_seconds;
use crate::error::{KeyError, SourceError};
use crate::jwk::{Jwk, b64url, jwk_from_value};
use crate::key::{KeyVersion, VerifyingKey};
use crate::local_key::LocalKey;
use crate::source::{BoxFuture, KeySource, LoadedKeys, Signer};

/// A fixed set of keys. Versions are all dated at the Unix epoch, so the rotation policy treats
/// them as long propagated; when several can sign, the one with the greatest kid signs.
#[derive(Debug, Default, Clone)]
pub struct StaticKeys {
    versions: Vec<KeyVersion>,
    signers: HashMap<String, Arc<LocalKey>>,
}

impl StaticKeys {
    /// An empty set.
    pub fn new() -> Self {
        StaticKeys::default()
    }

    /// Adds a private key (PEM), which both signs and validates. Its kid is its JWK thumbprint.
    pub fn with_private_pem(
        mut self,
        algorithm: Algorithm,
        pem_text: &str,
    ) -> Result<Self, KeyError> {
        let key = LocalKey::from_pem(algorithm, pem_text)?;
        let jwk = key.public_jwk();
        let version = KeyVersion::new(jwk.thumbprint(), jwk, SystemTime::UNIX_EPOCH)?
            .with_algorithm(algorithm);
        self.signers.insert(version.kid.clone(), Arc::new(key));
        self.versions.push(version);
        Ok(self)
    }

    /// Adds a public key or certificate (PEM `PUBLIC KEY` or `CERTIFICATE`; certificates also
    /// give `x5t`, `x5t#S256` and `x5c`). The kid is the `x5t` for certificates, otherwise the
    /// JWK thumbprint.
    pub fn with_public_pem(mut self, pem_text: &str) -> Result<Self, KeyError> {
        for block in
            pem::parse_many(pem_text).map_err(|e| KeyError::new(format!("not PEM: {e}")))?
        {
            let version = match block.tag() {
                "PUBLIC KEY" => {
                    let jwk = jwk_from_spki(block.contents())?;
                    KeyVersion::new(jwk.thumbprint(), jwk, SystemTime::UNIX_EPOCH)?
                }
                "CERTIFICATE" => version_from_certificate(block.contents())?,
                other => {
                    return Err(KeyError::new(format!(
                        "PEM block `{other}` is not a public key or certificate"
                    )));
                }
            };
            self.versions.push(version);
        }
        Ok(self)
    }

    /// Adds a JWK or a JWK Set (JSON). Keys without a kid get their thumbprint.
    pub fn with_jwk_json(mut self, json: &[u8]) -> Result<Self, KeyError> {
        let mut value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| KeyError::new(format!("not JSON: {e}")))?;
        let not_a_jwk = |e: KeyError| KeyError::new(format!("not a JWK: {e}"));
        let jwks: Vec<Jwk> = match value.get_mut("keys").map(serde_json::Value::take) {
            Some(serde_json::Value::Array(keys)) => keys
                .into_iter()
                .map(jwk_from_value)
                .collect::<Result<_, _>>()
                .map_err(not_a_jwk)?,
            Some(_) => return Err(KeyError::new("not a JWK Set: `keys` is not an array")),
            None => vec![jwk_from_value(value).map_err(not_a_jwk)?],
        };
        for jwk in jwks {
            let key = VerifyingKey::from_jwk(&jwk)?;
            self.versions.push(KeyVersion::published(jwk, key));
        }
        Ok(self)
    }

    /// Reads each file: a `.json` file as a JWK or JWK Set, otherwise PEM (private keys need
    /// [`with_private_pem`](Self::with_private_pem), since their algorithm must be chosen).
    pub fn from_files<P: AsRef<Path>>(
        paths: impl IntoIterator<Item = P>,
    ) -> Result<Self, KeyError> {
        paths.into_iter().try_fold(StaticKeys::new(), |keys, path| {
            let path = path.as_ref();
            let bytes = std::fs::read(path)
                .map_err(|e| KeyError::new(format!("{}: {e}", path.display())))?;
            let with_path = |e: KeyError| KeyError::new(format!("{}: {e}", path.display()));
            if path.extension().is_some_and(|ext| ext == "json") {
                keys.with_jwk_json(&bytes).map_err(with_path)
            } else {
                keys.with_public_pem(&String::from_utf8_lossy(&bytes))
                    .map_err(with_path)
            }
        })
    }
}

/// The public JWK of a DER SubjectPublicKeyInfo.
pub(crate) fn jwk_from_spki(der: &[u8]) -> Result<Jwk, KeyError> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(der)
        .map_err(|e| KeyError::new(format!("not a public key: {e}")))?;
    jwk_from_parsed_spki(&spki)
}

fn jwk_from_parsed_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Jwk, KeyError> {
    const ED25519_OID: &str = "1.3.101.112";
    if spki.algorithm.algorithm.to_id_string() == ED25519_OID {
        return Ok(Jwk::ed25519(&spki.subject_public_key.data));
    }
    match spki
        .parsed()
        .map_err(|e| KeyError::new(format!("unreadable public key: {e}")))?
    {
        X509PublicKey::RSA(rsa) => Ok(Jwk::rsa(rsa.modulus, rsa.exponent)),
        X509PublicKey::EC(point) => {
            let point = point.data();
            let crv = match point.len() {
                65 => "P-256",
                97 => "P-384",
                133 => "P-521",
                _ => return Err(KeyError::new("unsupported or compressed EC point")),
            };
            let half = (point.len() - 1) / 2;
            Ok(Jwk::ec(crv, &point[1..=half], &point[1 + half..]))
        }
        _ => Err(KeyError::new("unsupported public key type")),
    }
}

/// A version for a DER X.509 certificate: kid = `x5t`, with `x5t#S256` and `x5c`.
pub fn version_from_certificate(der: &[u8]) -> Result<KeyVersion, KeyError> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| KeyError::new(format!("not an X.509 certificate: {e}")))?;
    let jwk = jwk_from_parsed_spki(certificate.public_key())?;
    let (x5t, x5t_s256) = certificate_thumbprints(der);
    let validity = certificate.validity();
    let unix = |time: x509_parser::time::ASN1Time| {
        from_unix_seconds(u64::try_from(time.timestamp()).unwrap_or(0))
    };
    let (not_before, expires) = (unix(validity.not_before), unix(validity.not_after));
    let x5c = vec![base64::engine::general_purpose::STANDARD.encode(der)];
    Ok(KeyVersion::new(x5t.clone(), jwk, SystemTime::UNIX_EPOCH)?
        .with_not_before(not_before)
        .with_expires(expires)
        .with_certificate(Some(x5t), Some(x5t_s256), x5c))
}

/// The `x5t` (SHA-1) and `x5t#S256` (SHA-256) thumbprints of a DER certificate, base64url.
pub fn certificate_thumbprints(der: &[u8]) -> (String, String) {
    use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
    (
        b64url(digest(&SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()),
        b64url(digest(&SHA256, der).as_ref()),
    )
}

impl KeySource for StaticKeys {
    fn name(&self) -> String {
        format!("static keys ({})", self.versions.len())
    }

    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        Box::pin(std::future::ready(Ok(LoadedKeys::new(
            self.versions.clone(),
        ))))
    }

    fn signer<'a>(
        &'a self,
        version: &'a KeyVersion,
    ) -> BoxFuture<'a, Result<Arc<dyn Signer>, SourceError>> {
        let signer = self
            .signers
            .get(&version.kid)
            .map(|key| Arc::new(Arc::clone(key)) as Arc<dyn Signer>)
            .ok_or_else(|| {
                SourceError::new(
                    self.name(),
                    "sign",
                    format!("{} is a public key only", version.kid),
                )
            });
        Box::pin(std::future::ready(signer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwk_json_must_be_objects() {
        let key = r#"{"kty":"OKP","crv":"Ed25519","kid":"peer","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        assert_eq!(
            StaticKeys::new()
                .with_jwk_json(key.as_bytes())
                .unwrap()
                .versions
                .len(),
            1
        );
        let set = format!(r#"{{"keys":[{key},{key}]}}"#);
        assert_eq!(
            StaticKeys::new()
                .with_jwk_json(set.as_bytes())
                .unwrap()
                .versions
                .len(),
            2
        );
        // serde reads a struct from an array by position: neither a JWK nor a set's key may be one.
        let positional = r#"["OKP","peer",null,null,null,null,null,"Ed25519","11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"]"#;
        assert!(
            StaticKeys::new()
                .with_jwk_json(positional.as_bytes())
                .is_err()
        );
        let set = format!(r#"{{"keys":[{positional}]}}"#);
        assert!(StaticKeys::new().with_jwk_json(set.as_bytes()).is_err());
        assert!(StaticKeys::new().with_jwk_json(br#"{"keys":{}}"#).is_err());
    }

    #[test]
    fn certificate_gives_thumbprints_and_public_key() {
        let certified =
            rcgen::generate_simple_self_signed(vec!["keyroll.localhost".into()]).unwrap();
        let der = certified.cert.der().to_vec();
        let version = version_from_certificate(&der).unwrap();
        assert_eq!(version.kid, version.x5t.clone().unwrap());
        assert_eq!(version.x5c.len(), 1);
        assert!(version.not_before.is_some() && version.expires.is_some());
        let from_pem = StaticKeys::new()
            .with_public_pem(&certified.cert.pem())
            .unwrap();
        assert_eq!(from_pem.versions[0].jwk, version.jwk);
        let spki = StaticKeys::new()
            .with_public_pem(&certified.signing_key.public_key_pem())
            .unwrap();
        assert_eq!(spki.versions[0].jwk.x, version.jwk.x);
    }
}
