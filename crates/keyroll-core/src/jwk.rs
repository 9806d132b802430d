//! JSON Web Keys (RFC 7517) and key sets, public members only.
//!
//! ```
//! use keyroll_core::JwkSet;
//!
//! // One good key, one malformed key and one encryption key: the set keeps the good one.
//! let body = br#"{"keys":[
//!   {"kty":"EC","crv":"P-256","kid":"a",
//!    "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
//!    "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
//!   {"kty":"EC","crv":"P-256","kid":"broken","x":"AAAA","y":"AAAA"},
//!   {"kty":"RSA","use":"enc","kid":"encryption","n":"AQAB","e":"AQAB"}
//! ]}"#;
//! let parsed = JwkSet::parse_lenient(body).unwrap();
//! assert_eq!(parsed.keys.len(), 1);
//! assert_eq!(parsed.skipped.len(), 2);
//! ```

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::KeyError;
use crate::key::VerifyingKey;

/// A public JSON Web Key.
///
/// Members keyroll does not use are ignored when parsing (never an error). Private members
/// (`d`, `p`, `q`, `k`, …) are never read, so a key set that leaks them cannot make keyroll
/// hold or republish a private key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Jwk {
    /// Key type: `RSA`, `EC` or `OKP`.
    pub kty: String,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The algorithm the key is meant for, if it says (Entra ID's keys do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use: `sig` or `enc`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Permitted operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// RSA modulus (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Curve: `P-256`, `P-384`, `P-521` or `Ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate or Ed25519 public key (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// SHA-1 thumbprint of the certificate (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5t: Option<String>,
    /// SHA-256 thumbprint of the certificate (base64url).
    #[serde(default, rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
    /// Certificate chain (standard base64 DER, leaf first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
}

impl Jwk {
    /// An RSA public key from its big-endian modulus and exponent.
    pub fn rsa(n: &[u8], e: &[u8]) -> Jwk {
        Jwk {
            kty: "RSA".into(),
            n: Some(b64url(strip_leading_zeros(n))),
            e: Some(b64url(strip_leading_zeros(e))),
            ..Jwk::default()
        }
    }

    /// An EC public key from its curve name and coordinates.
    pub fn ec(crv: &str, x: &[u8], y: &[u8]) -> Jwk {
        Jwk {
            kty: "EC".into(),
            crv: Some(crv.into()),
            x: Some(b64url(x)),
            y: Some(b64url(y)),
            ..Jwk::default()
        }
    }

    /// An Ed25519 public key.
    pub fn ed25519(public_key: &[u8]) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(b64url(public_key)),
            ..Jwk::default()
        }
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url): a stable id derived from the key itself.
    pub fn thumbprint(&self) -> String {
        let value = |v: &Option<String>| v.clone().unwrap_or_default();
        let canonical = match self.kty.as_str() {
            "RSA" => serde_json::json!({"e": value(&self.e), "kty": "RSA", "n": value(&self.n)}),
            "EC" => serde_json::json!({
                "crv": value(&self.crv), "kty": "EC", "x": value(&self.x), "y": value(&self.y)
            }),
            _ => serde_json::json!({"crv": value(&self.crv), "kty": self.kty, "x": value(&self.x)}),
        };
        // serde_json's map is sorted by key, which is what RFC 7638 asks for.
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.to_string().as_bytes());
        b64url(digest.as_ref())
    }

    /// Whether the key declares it is not for signatures (`use: enc`, or `key_ops` without `verify`).
    pub fn is_not_for_signatures(&self) -> bool {
        self.key_use.as_deref().is_some_and(|u| u != "sig")
            || self
                .key_ops
                .as_ref()
                .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    }
}

/// A JWK Set (RFC 7517 §5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// The result of [`JwkSet::parse_lenient`].
#[derive(Debug)]
#[non_exhaustive]
pub struct LenientJwkSet {
    /// Every key that parsed and can verify signatures, with its parsed public key.
    pub keys: Vec<(Jwk, VerifyingKey)>,
    /// Why each other key was skipped (its position, and the reason).
    pub skipped: Vec<(usize, KeyError)>,
}

impl JwkSet {
    /// Parses a JWKS document, keeping every usable signature key and skipping (not failing on)
    /// malformed, symmetric, unknown or encryption-only keys. Fails only when the document itself
    /// is not a JSON object with a `keys` array.
    pub fn parse_lenient(body: &[u8]) -> Result<LenientJwkSet, KeyError> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        // serde's derive also reads a struct from an array, by position: only objects are
        // JWK sets and JWKs (RFC 7517).
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(KeyError::new("not a JWK set: not a JSON object"));
        }
        let document: Document = serde_json::from_slice(body)
            .map_err(|e| KeyError::new(format!("not a JWK set: {e}")))?;
        let mut keys = Vec::with_capacity(document.keys.len());
        let mut skipped = Vec::new();
        for (index, value) in document.keys.into_iter().enumerate() {
            let parsed = jwk_from_value(value).and_then(|jwk| {
                if jwk.is_not_for_signatures() {
                    return Err(KeyError::new("key is not for signatures"));
                }
                VerifyingKey::from_jwk(&jwk).map(|key| (jwk, key))
            });
            match parsed {
                Ok(key) => keys.push(key),
                Err(error) => skipped.push((index, error)),
            }
        }
        Ok(LenientJwkSet { keys, skipped })
    }
}

/// A JWK from a JSON value that must be an object (serde's derive would also read an array).
pub(crate) fn jwk_from_value(value: serde_json::Value) -> Result<Jwk, KeyError> {
    if !value.is_object() {
        return Err(KeyError::new("malformed JWK: not a JSON object"));
    }
    serde_json::from_value::<Jwk>(value).map_err(|e| KeyError::new(format!("malformed JWK: {e}")))
}

pub(crate) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, with or without padding (both occur in the wild).
pub(crate) fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1.
        let jwk: Jwk = serde_json::from_str(
            r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#,
        )
        .unwrap();
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn unknown_members_are_ignored_and_private_ones_never_kept() {
        let jwk: Jwk = serde_json::from_str(
            r#"{"kty":"EC","crv":"P-256","x":"a","y":"b","d":"SECRET","issuer":"x","cloud":1}"#,
        )
        .unwrap();
        let text = serde_json::to_string(&jwk).unwrap();
        assert!(!text.contains("SECRET"));
        assert!(!text.contains("issuer"));
    }

    #[test]
    fn not_a_set_is_an_error() {
        assert!(JwkSet::parse_lenient(b"[]").is_err());
        assert!(JwkSet::parse_lenient(b"{\"keys\":{}}").is_err());
        // Found by the jwks fuzz target: serde reads a struct from an array by position, so
        // `[[]]` passed as a set with no keys.
        assert!(JwkSet::parse_lenient(b"[[]\r]\r").is_err());
        assert!(JwkSet::parse_lenient(b" [[{\"kty\":\"EC\"}]]").is_err());
        assert_eq!(
            JwkSet::parse_lenient(b"{\"keys\":[]}").unwrap().keys.len(),
            0
        );
    }

    #[test]
    fn a_key_given_as_an_array_is_skipped() {
        // The doc example's first key, by position (kty, kid, alg, use, key_ops, n, e, crv, x, y).
        let body = br#"{"keys":[["EC","a",null,null,null,null,null,"P-256",
            "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"]]}"#;
        let parsed = JwkSet::parse_lenient(body).unwrap();
        assert!(parsed.keys.is_empty());
        assert_eq!(parsed.skipped.len(), 1);
        let object = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"a",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        assert_eq!(JwkSet::parse_lenient(object).unwrap().keys.len(), 1);
    }
}
