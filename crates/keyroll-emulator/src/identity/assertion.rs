//! Client assertions (`client_assertion_type` jwt-bearer), as Entra checks them:
//!
//! - **signed by the app** (`iss` = `sub` = client id, `private_key_jwt`): the signature
//!   against the app's registered certificates (named by `x5t`, `x5t#S256` or `kid`), `aud`
//!   the token endpoint, `exp` not passed (5 minutes of skew). An assertion may be presented
//!   again until it expires: MSAL reuses one for several minutes, and Entra accepts that.
//! - **federated** (`sub` another than the client id): a federated credential of the app must name the issuer,
//!   the subject and one audience, and the signature must verify against the issuer's keys
//!   (the emulator's own Kubernetes issuer).
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! use keyroll_emulator::{App, Emulator, FederatedCredential};
//! let emu = Emulator::builder().start().await?;
//! let issuer = emu.kubernetes_issuer();
//! emu.admin().register_app(App::new("aks-app").federated_credential(
//!     FederatedCredential::new(issuer, "system:serviceaccount:default:orders"),
//! ))?;
//! let token = emu.admin().service_account_token("default", "orders", None)?;
//! # let _ = token;
//! # Ok(()) }
//! ```

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::Error;
use crate::identity::directory::AppEntry;
use crate::identity::errors::EntraError;

/// Clock skew allowed on assertion times, as Entra allows.
pub(crate) const SKEW: i64 = 300;

/// A certificate registered for an app, with what an assertion header may name it by.
#[derive(Debug, Clone)]
pub(crate) struct RegisteredCert {
    x5t: String,
    x5t_s256: String,
    sha1_hex: String,
    sha256_hex: String,
    /// RSA: PKCS#1 RSAPublicKey; EC: the SEC1 point.
    public_key: Vec<u8>,
    rsa: bool,
}

impl RegisteredCert {
    pub(crate) fn parse(cer_der: &[u8]) -> Result<RegisteredCert, Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(cer_der).map_err(|e| {
            Error::refused("BadParameter", format!("not an X.509 certificate: {e}"))
        })?;
        let spki = cert.public_key();
        let rsa = spki.algorithm.algorithm == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION;
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cer_der);
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cer_der);
        Ok(RegisteredCert {
            x5t: crate::certs::x5t(cer_der),
            x5t_s256: crate::certs::x5t_s256(cer_der),
            sha1_hex: hex::encode(sha1.as_ref()),
            sha256_hex: hex::encode(sha256.as_ref()),
            public_key: spki.subject_public_key.data.to_vec(),
            rsa,
        })
    }

    fn named_by(&self, header: &jsonwebtoken::Header) -> bool {
        let x5t = header.x5t.as_deref().map(norm_b64);
        let x5t256 = header.x5t_s256.as_deref().map(norm_b64);
        let by_kid = header.kid.as_ref().is_some_and(|k| {
            let n = norm_b64(k);
            n == self.x5t
                || n == self.x5t_s256
                || k.eq_ignore_ascii_case(&self.sha1_hex)
                || k.eq_ignore_ascii_case(&self.sha256_hex)
        });
        let unnamed = x5t.is_none() && x5t256.is_none() && header.kid.is_none();
        x5t.as_ref() == Some(&self.x5t)
            || x5t256.as_ref() == Some(&self.x5t_s256)
            || by_kid
            || unnamed
    }

    fn decoding_key(&self, alg: Algorithm) -> Option<DecodingKey> {
        use Algorithm::{ES256, ES384, PS256, PS384, PS512, RS256, RS384, RS512};
        match (self.rsa, alg) {
            (true, RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => {
                Some(DecodingKey::from_rsa_der(&self.public_key))
            }
            (false, ES256 | ES384) => Some(DecodingKey::from_ec_der(&self.public_key)),
            _ => None,
        }
    }
}

/// Normalizes a base64 or base64url thumbprint (with or without padding) to base64url.
pub(crate) fn norm_b64(s: &str) -> String {
    s.trim_end_matches('=').replace('+', "-").replace('/', "_")
}

fn signature_only(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation
}

fn malformed() -> EntraError {
    EntraError::invalid_client(50_027, "JWT token is invalid or malformed.")
}

/// The unverified `iss` and `sub` of an assertion: the client id for `private_key_jwt`, an
/// external issuer and subject for a federated credential.
pub(crate) fn unverified_issuer_and_subject(
    assertion: &str,
) -> Result<(String, String), EntraError> {
    let payload = assertion.split('.').nth(1).ok_or_else(malformed)?;
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        payload.trim_end_matches('='),
    )
    .map_err(|_| malformed())?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    let claim = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(malformed)
    };
    Ok((claim("iss")?, claim("sub")?))
}

/// The time checks of an assertion's claims: `exp` (required) and `nbf`, with skew.
pub(crate) fn check_times(claims: &Value, now: i64) -> Result<(), EntraError> {
    let out_of_range = |what: &str| {
        EntraError::invalid_client(
            700_024,
            format!("Client assertion is not within its valid time range. {what}"),
        )
    };
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or_else(|| out_of_range("The 'exp' claim is missing."))?;
    if (exp as i64) + SKEW < now {
        return Err(out_of_range(&format!(
            "Current time: {now}, assertion valid to: {}.",
            exp as i64
        )));
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64)
        && (nbf as i64) - SKEW > now
    {
        return Err(out_of_range(&format!(
            "Current time: {now}, assertion valid from: {}.",
            nbf as i64
        )));
    }
    Ok(())
}

/// Checks an assertion the app signed itself; `audiences` are the token endpoint URLs it
/// may name.
pub(crate) fn verify_signed(
    entry: &AppEntry,
    assertion: &str,
    audiences: &[String],
    now: i64,
) -> Result<(), EntraError> {
    let client_id = &entry.app.client_id;
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| malformed())?;
    if entry.certificates.is_empty() {
        return Err(EntraError::invalid_client(
            700_027,
            format!(
                "Client assertion failed signature validation. No certificate is registered for application '{client_id}'."
            ),
        ));
    }
    let candidates: Vec<_> = entry
        .certificates
        .iter()
        .filter(|c| c.named_by(&header))
        .collect();
    if candidates.is_empty() {
        return Err(EntraError::invalid_client(
            700_027,
            format!(
                "Client assertion failed signature validation. The key was not found. Thumbprint of key used by client: '{}'.",
                header
                    .x5t
                    .or(header.x5t_s256)
                    .or(header.kid)
                    .unwrap_or_default()
            ),
        ));
    }
    let validation = signature_only(header.alg);
    let claims = candidates
        .iter()
        .filter_map(|c| c.decoding_key(header.alg))
        .find_map(|key| jsonwebtoken::decode::<Value>(assertion, &key, &validation).ok())
        .map(|d| d.claims)
        .ok_or_else(|| {
            EntraError::invalid_client(700_027, "Client assertion contains an invalid signature.")
        })?;
    let str_claim = |k: &str| claims.get(k).and_then(Value::as_str);
    if str_claim("iss") != Some(client_id) || str_claim("sub") != Some(client_id) {
        return Err(EntraError::invalid_client(
            700_021,
            "Client assertion application identifier doesn't match 'client_id' parameter. The 'iss' and 'sub' claims must be the client id.",
        ));
    }
    if !crate::identity::tokens::audience_matches(&claims, audiences) {
        return Err(EntraError::invalid_client(
            700_212,
            format!(
                "The audience claim in the client assertion doesn't match the token endpoint. Expected '{}'.",
                audiences.first().cloned().unwrap_or_default()
            ),
        ));
    }
    check_times(&claims, now)
}

/// Checks a federated assertion whose signature and claims `verify_issuer` has already
/// established (`claims`), against the app's federated credentials.
pub(crate) fn match_federated(entry: &AppEntry, claims: &Value) -> Result<(), EntraError> {
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let creds = &entry.app.federated_credentials;
    let by_issuer: Vec<_> = creds.iter().filter(|c| c.issuer == iss).collect();
    if by_issuer.is_empty() {
        return Err(EntraError::invalid_client(
            700_211,
            format!(
                "No matching federated identity record found for presented assertion issuer '{iss}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."
            ),
        ));
    }
    let by_subject: Vec<_> = by_issuer.into_iter().filter(|c| c.subject == sub).collect();
    if by_subject.is_empty() {
        return Err(EntraError::invalid_client(
            700_213,
            format!(
                "No matching federated identity record found for presented assertion subject '{sub}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."
            ),
        ));
    }
    if !by_subject
        .iter()
        .any(|c| crate::identity::tokens::audience_matches(claims, &c.audiences))
    {
        let presented = match claims.get("aud") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            Some(a) => a.as_str().unwrap_or_default().to_string(),
            None => String::new(),
        };
        return Err(EntraError::invalid_client(
            700_212,
            format!(
                "No matching federated identity record found for presented assertion audience '{presented}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_normalise_and_issuers_read_unverified() {
        assert_eq!(norm_b64("ab+/cd=="), "ab-_cd");
        // {"iss":"x","sub":"y"}
        assert_eq!(
            unverified_issuer_and_subject("e30.eyJpc3MiOiJ4Iiwic3ViIjoieSJ9.sig").unwrap(),
            ("x".to_string(), "y".to_string())
        );
        assert_eq!(
            unverified_issuer_and_subject("garbage").unwrap_err().code,
            50_027
        );
        assert_eq!(
            unverified_issuer_and_subject("e30.e30.sig")
                .unwrap_err()
                .code,
            50_027
        );
    }

    #[test]
    fn times_allow_skew_and_refuse_expired_assertions() {
        let at = |exp: i64| serde_json::json!({"exp": exp});
        assert!(check_times(&at(1000), 1000 + SKEW).is_ok());
        assert_eq!(
            check_times(&at(1000), 1001 + SKEW).unwrap_err().code,
            700_024
        );
        assert_eq!(
            check_times(&serde_json::json!({}), 0).unwrap_err().code,
            700_024
        );
        let early = serde_json::json!({"exp": 5000, "nbf": 2000});
        assert!(check_times(&early, 2000 - SKEW).is_ok());
        assert!(check_times(&early, 1999 - SKEW).is_err());
    }
}
