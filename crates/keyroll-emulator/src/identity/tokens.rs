//! Access tokens: the emulator's Entra signing keys (published as JWKS, rotated through the
//! admin API) and the claims of v1 and v2 tokens, each shape complete and never mixed.
//!
//! | claim | v1.0 | v2.0 |
//! | --- | --- | --- |
//! | `iss` | `https://sts.windows.net/{tid}/` | `{authority}/{tid}/v2.0` |
//! | `aud` | the resource as requested | the API's application id |
//! | client | `appid`, `appidacr` | `azp`, `azpacr` |
//! | both | `iat nbf exp aio idp oid sub tid uti ver roles rh` | `iat nbf exp aio oid sub tid uti ver roles rh` |
//!
//! `appidacr`/`azpacr` is `"1"` for a client secret and `"2"` for a certificate, a signed
//! assertion, a federated credential or a managed identity.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! let emu = keyroll_emulator::Emulator::builder().client_secret("app", "s").start().await?;
//! // Key Vault takes v1 tokens: iss https://sts.windows.net/{tid}/.
//! assert_eq!(emu.issuer_v1(emu.tenant_id()), format!("https://sts.windows.net/{}/", emu.tenant_id()));
//! # Ok(()) }
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use serde::Serialize;
use serde_json::Value;

use crate::Error;
use crate::crypto::{CryptoError, KeyMaterial};
use crate::identity::directory::{Resource, TokenVersion};

/// The `iss` of v1 tokens for `tenant`.
pub(crate) fn issuer_v1(tenant: &str) -> String {
    format!("https://sts.windows.net/{tenant}/")
}

/// The `iss` of v2 tokens for `tenant` under `authority` (`https://localhost:{port}`).
pub(crate) fn issuer_v2(authority: &str, tenant: &str) -> String {
    format!("{authority}/{tenant}/v2.0")
}

/// How the client proved who it is: `appidacr`/`azpacr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthMethod {
    /// A client secret: `"1"`.
    Secret,
    /// A certificate, a signed or federated assertion, a managed identity: `"2"`.
    Certificate,
}

impl AuthMethod {
    fn acr(self) -> &'static str {
        match self {
            AuthMethod::Secret => "1",
            AuthMethod::Certificate => "2",
        }
    }
}

/// Who a token is for and about.
#[derive(Debug, Clone)]
pub(crate) struct Subject<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) object_id: String,
    pub(crate) method: AuthMethod,
    /// The managed identity's resource id (`xms_mirid`).
    pub(crate) mi_resource_id: Option<&'a str>,
}

/// The claims of an app-only access token of either version.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AccessClaims {
    aud: String,
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    aio: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    appid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    appidacr: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    azp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    azpacr: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idp: Option<String>,
    idtyp: &'static str,
    oid: String,
    rh: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    sub: String,
    tid: String,
    uti: String,
    ver: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    xms_mirid: Option<String>,
}

impl AccessClaims {
    /// The claims Entra puts in a token for `resource` about `who`, valid from `now` for
    /// `lifetime` seconds.
    pub(crate) fn new(
        authority: &str,
        resource: &Resource,
        who: &Subject<'_>,
        now: i64,
        lifetime: i64,
    ) -> AccessClaims {
        let v1 = resource.version == TokenVersion::V1;
        let acr = who.method.acr();
        AccessClaims {
            aud: if v1 {
                resource.requested.clone()
            } else {
                resource.app_id.clone()
            },
            iss: if v1 {
                issuer_v1(who.tenant)
            } else {
                issuer_v2(authority, who.tenant)
            },
            iat: now,
            nbf: now,
            exp: now + lifetime,
            aio: "emulator",
            appid: v1.then(|| who.client_id.to_string()),
            appidacr: v1.then_some(acr),
            azp: (!v1).then(|| who.client_id.to_string()),
            azpacr: (!v1).then_some(acr),
            idp: v1.then(|| issuer_v1(who.tenant)),
            idtyp: "app",
            oid: who.object_id.clone(),
            rh: "0.emulator.",
            roles: resource.roles.clone(),
            sub: who.object_id.clone(),
            tid: who.tenant.to_string(),
            uti: crate::store::new_version(),
            ver: if v1 { "1.0" } else { "2.0" },
            xms_mirid: who.mi_resource_id.map(str::to_string),
        }
    }

    pub(crate) fn version(&self) -> TokenVersion {
        if self.ver == "1.0" {
            TokenVersion::V1
        } else {
            TokenVersion::V2
        }
    }
}

/// One signing key of the token service. `Debug` prints no key material.
#[derive(Clone)]
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    n: String,
    e: String,
    x5c: String,
    encoding: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A JWK of the published set.
#[derive(Debug, Serialize)]
pub(crate) struct Jwk<'a> {
    kty: &'static str,
    #[serde(rename = "use")]
    use_: &'static str,
    kid: &'a str,
    x5t: &'a str,
    n: &'a str,
    e: &'a str,
    x5c: [&'a str; 1],
    issuer: &'a str,
}

impl SigningKey {
    /// A key (RSA) with a self-signed certificate whose SHA-1 thumbprint is its `kid`.
    pub(crate) fn new(material: &KeyMaterial, common_name: &str) -> Result<SigningKey, Error> {
        let jwk = material.public_jwk()?;
        let key_pair = material.rcgen_key_pair()?;
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, common_name);
        params.distinguished_name = dn;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| Error::Tls(e.to_string()))?;
        let der = cert.der().to_vec();
        let invalid = |e: String| Error::Crypto(CryptoError::InvalidKey(e));
        let rsa_key = rsa::RsaPrivateKey::from_pkcs8_der(&material.pkcs8)
            .map_err(|e| invalid(e.to_string()))?;
        let pkcs1 = rsa_key.to_pkcs1_der().map_err(|e| invalid(e.to_string()))?;
        let s = |k: &str| {
            jwk.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(SigningKey {
            kid: crate::certs::x5t(&der),
            n: s("n"),
            e: s("e"),
            x5c: STANDARD.encode(&der),
            encoding: pkcs1.as_bytes().to_vec(),
        })
    }

    pub(crate) fn jwk<'a>(&'a self, issuer: &'a str) -> Jwk<'a> {
        Jwk {
            kty: "RSA",
            use_: "sig",
            kid: &self.kid,
            x5t: &self.kid,
            n: &self.n,
            e: &self.e,
            x5c: [&self.x5c],
            issuer,
        }
    }

    /// Signs `claims` (RS256); v1 tokens carry `x5t` beside `kid`, as Entra's do.
    pub(crate) fn sign<C: Serialize>(&self, claims: &C, x5t: bool) -> Result<String, String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        if x5t {
            header.x5t = Some(self.kid.clone());
        }
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(&self.encoding))
            .map_err(|e| e.to_string())
    }

    /// Checks the signature of `token` (RS256) and returns its claims, no time or audience
    /// checks.
    pub(crate) fn verify(&self, token: &str) -> Result<Value, jsonwebtoken::errors::Error> {
        let decoding = DecodingKey::from_rsa_components(&self.n, &self.e)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(token, &decoding, &validation).map(|d| d.claims)
    }
}

/// Whether a token's `aud` (a string or an array) names one of `accepted`.
pub(crate) fn audience_matches(claims: &Value, accepted: &[String]) -> bool {
    match claims.get("aud") {
        Some(Value::String(a)) => accepted.contains(a),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .any(|x| accepted.iter().any(|y| y == x)),
        _ => false,
    }
}

/// The key whose `kid` the token's header names.
pub(crate) fn key_for<'a>(keys: &'a [SigningKey], token: &str) -> Option<&'a SigningKey> {
    let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
    keys.iter().find(|k| k.kid == kid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeySpec;

    fn resource(version: TokenVersion) -> Resource {
        Resource {
            requested: "api://orders".into(),
            app_id: "11111111-1111-1111-1111-111111111111".into(),
            version,
            roles: vec!["Orders.Read".into()],
        }
    }

    fn subject(method: AuthMethod) -> Subject<'static> {
        Subject {
            tenant: "tid",
            client_id: "client",
            object_id: "oid".into(),
            method,
            mi_resource_id: None,
        }
    }

    #[test]
    fn v1_and_v2_claims_never_mix() {
        let v1 = serde_json::to_value(AccessClaims::new(
            "https://localhost:1",
            &resource(TokenVersion::V1),
            &subject(AuthMethod::Secret),
            100,
            60,
        ))
        .unwrap();
        assert_eq!(v1["iss"], "https://sts.windows.net/tid/");
        assert_eq!(v1["aud"], "api://orders");
        assert_eq!(
            (v1["appid"].as_str(), v1["appidacr"].as_str()),
            (Some("client"), Some("1"))
        );
        assert_eq!(v1["ver"], "1.0");
        assert!(v1.get("azp").is_none() && v1.get("azpacr").is_none());
        assert_eq!(v1["roles"][0], "Orders.Read");
        assert_eq!(v1["exp"], 160);

        let v2 = serde_json::to_value(AccessClaims::new(
            "https://localhost:1",
            &resource(TokenVersion::V2),
            &subject(AuthMethod::Certificate),
            100,
            60,
        ))
        .unwrap();
        assert_eq!(v2["iss"], "https://localhost:1/tid/v2.0");
        assert_eq!(v2["aud"], "11111111-1111-1111-1111-111111111111");
        assert_eq!(
            (v2["azp"].as_str(), v2["azpacr"].as_str()),
            (Some("client"), Some("2"))
        );
        assert_eq!(v2["ver"], "2.0");
        assert!(
            v2.get("appid").is_none() && v2.get("appidacr").is_none() && v2.get("idp").is_none()
        );
    }

    #[test]
    fn signed_tokens_verify_with_their_key_only() {
        let a = SigningKey::new(&KeyMaterial::generate(KeySpec::RSA_2048).unwrap(), "a").unwrap();
        let b = SigningKey::new(&KeyMaterial::generate(KeySpec::RSA_2048).unwrap(), "b").unwrap();
        let token = a.sign(&serde_json::json!({"x": 1}), true).unwrap();
        assert_eq!(a.verify(&token).unwrap()["x"], 1);
        assert!(b.verify(&token).is_err());
        let keys = [b.clone(), a.clone()];
        assert_eq!(key_for(&keys, &token).unwrap().kid, a.kid);
        assert!(key_for(&keys, "garbage").is_none());
        let header =
            jsonwebtoken::decode_header(a.sign(&serde_json::json!({}), false).unwrap()).unwrap();
        assert!(header.x5t.is_none());
    }
}
