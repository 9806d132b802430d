//! Entra ID (token endpoint for client credentials with a secret or a `private_key_jwt`
//! assertion, signing keys, OpenID configuration) and the App Service managed-identity endpoint.
//! Access tokens are RS256 JWTs signed by the emulator's own rotating keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{Method, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use serde_json::{Value, json};

use crate::clock::{Clock, real_now_ms};
use crate::crypto::KeyMaterial;
use crate::server::{Req, Resp, Shared, json_response, lock};
use crate::{EmulatorBuilder, Error};

/// Clock skew allowed on assertion times, as Entra allows.
const SKEW: i64 = 300;

/// An Entra or managed-identity route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntraRoute {
    Token(String),
    Keys(String),
    Discovery(String),
    ManagedIdentity,
}

impl EntraRoute {
    pub(crate) fn parse(method: &Method, seg: &[&str]) -> Option<EntraRoute> {
        let t = |s: &str| s.to_string();
        match (seg, method) {
            ([tenant, "oauth2", "v2.0", "token"], &Method::POST) => {
                Some(EntraRoute::Token(t(tenant)))
            }
            (
                [tenant, "discovery", "v2.0", "keys"] | [tenant, "discovery", "keys"],
                &Method::GET,
            ) => Some(EntraRoute::Keys(t(tenant))),
            ([tenant, "v2.0", ".well-known", "openid-configuration"], &Method::GET) => {
                Some(EntraRoute::Discovery(t(tenant)))
            }
            (["msi", "token"], &Method::GET) => Some(EntraRoute::ManagedIdentity),
            _ => None,
        }
    }

    pub(crate) fn operation(&self) -> &'static str {
        match self {
            EntraRoute::Token(_) => "entra.token",
            EntraRoute::Keys(_) => "entra.keys",
            EntraRoute::Discovery(_) => "entra.discovery",
            EntraRoute::ManagedIdentity => "msi.token",
        }
    }
}

/// A certificate registered for a client.
#[derive(Debug, Clone)]
struct RegisteredCert {
    x5t: String,
    x5t_s256: String,
    sha1_hex: String,
    sha256_hex: String,
    /// RSA: PKCS#1 RSAPublicKey; EC: the SEC1 point.
    public_key: Vec<u8>,
    rsa: bool,
}

#[derive(Debug, Default, Clone)]
struct Client {
    secrets: Vec<String>,
    certs: Vec<RegisteredCert>,
}

/// One signing key of the token service.
#[derive(Debug, Clone)]
struct SigningKey {
    kid: String,
    n: String,
    e: String,
    x5c: String,
    encoding: Vec<u8>,
}

impl SigningKey {
    fn new(material: &KeyMaterial) -> Result<SigningKey, Error> {
        let jwk = material.public_jwk()?;
        let key_pair = material.rcgen_key_pair()?;
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "accounts.localhost");
        params.distinguished_name = dn;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| Error::Tls(e.to_string()))?;
        let der = cert.der().to_vec();
        let rsa_key = rsa::RsaPrivateKey::from_pkcs8_der(&material.pkcs8)
            .map_err(|e| Error::Crypto(crate::crypto::CryptoError::InvalidKey(e.to_string())))?;
        let pkcs1 = rsa_key
            .to_pkcs1_der()
            .map_err(|e| Error::Crypto(crate::crypto::CryptoError::InvalidKey(e.to_string())))?;
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

    fn jwk(&self, issuer: &str) -> Value {
        json!({
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
            "n": self.n, "e": self.e, "x5c": [self.x5c], "issuer": issuer,
        })
    }
}

/// The identity service's state.
#[derive(Debug)]
pub(crate) struct Entra {
    pub(crate) identity_header: String,
    pub(crate) mi_client_id: String,
    mi_principal_id: String,
    clients: Mutex<BTreeMap<String, Client>>,
    keys: Mutex<Vec<SigningKey>>,
    used_jti: Mutex<HashMap<String, i64>>,
}

/// A random GUID (lowercase, hyphenated).
pub(crate) fn random_guid() -> String {
    let h = crate::store::new_version();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn cert_info(cer_der: &[u8]) -> Result<RegisteredCert, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(cer_der).map_err(|e| Error::Refused {
        code: "BadParameter".into(),
        message: format!("not an X.509 certificate: {e}"),
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

/// Normalizes a base64 or base64url thumbprint (with or without padding) to base64url.
fn norm_b64(s: &str) -> String {
    s.trim_end_matches('=').replace('+', "-").replace('/', "_")
}

impl Entra {
    pub(crate) fn new(b: &EmulatorBuilder, keys: &[KeyMaterial]) -> Result<Entra, Error> {
        let mut clients: BTreeMap<String, Client> = BTreeMap::new();
        for (id, secret) in &b.client_secrets {
            clients
                .entry(id.clone())
                .or_default()
                .secrets
                .push(secret.clone());
        }
        for (id, der) in &b.client_certificates {
            clients
                .entry(id.clone())
                .or_default()
                .certs
                .push(cert_info(der)?);
        }
        let signing = keys
            .iter()
            .map(SigningKey::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Entra {
            identity_header: b
                .identity_header
                .clone()
                .unwrap_or_else(crate::store::new_version),
            mi_client_id: random_guid(),
            mi_principal_id: random_guid(),
            clients: Mutex::new(clients),
            keys: Mutex::new(signing),
            used_jti: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn register_certificate(
        &self,
        client_id: &str,
        cer_der: &[u8],
    ) -> Result<(), Error> {
        let info = cert_info(cer_der)?;
        lock(&self.clients)
            .entry(client_id.to_string())
            .or_default()
            .certs
            .push(info);
        Ok(())
    }

    pub(crate) fn register_secret(&self, client_id: &str, secret: &str) {
        lock(&self.clients)
            .entry(client_id.to_string())
            .or_default()
            .secrets
            .push(secret.to_string());
    }

    pub(crate) fn client_ids(&self) -> BTreeMap<String, usize> {
        lock(&self.clients)
            .iter()
            .map(|(k, c)| (k.clone(), c.secrets.len() + c.certs.len()))
            .collect()
    }

    /// Adds a new signing key, which signs from now on; older keys stay published.
    pub(crate) fn add_signing_key(&self, material: &KeyMaterial) -> Result<String, Error> {
        let key = SigningKey::new(material)?;
        let kid = key.kid.clone();
        lock(&self.keys).push(key);
        Ok(kid)
    }

    /// The id of the key that signs new tokens.
    pub(crate) fn active_kid(&self) -> Option<String> {
        lock(&self.keys).last().map(|k| k.kid.clone())
    }

    /// `common`, `organizations` and `consumers` map to the default tenant.
    pub(crate) fn tenant_for(&self, tenant: &str, default: &str) -> String {
        match tenant {
            "common" | "organizations" | "consumers" | "" => default.to_string(),
            t => t.to_string(),
        }
    }

    fn issue(&self, claims: Value) -> Result<String, String> {
        let key = lock(&self.keys).last().cloned().ok_or("no signing key")?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        header.x5t = Some(key.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(&key.encoding))
            .map_err(|e| e.to_string())
    }

    /// Checks a bearer token at the vault: our signature, an accepted audience, not expired
    /// (by the real or the emulated clock, whichever is earlier, so moving the clock does not
    /// invalidate tokens clients hold).
    pub(crate) fn verify_access_token(
        &self,
        token: &str,
        audiences: &[String],
        clock: &Clock,
    ) -> Result<(), String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| "AKV10022: Invalid token: not a JWT.".to_string())?;
        let kid = header.kid.ok_or("AKV10022: Invalid token: no kid.")?;
        let key = lock(&self.keys)
            .iter()
            .find(|k| k.kid == kid)
            .cloned()
            .ok_or("AKV10032: Invalid issuer: unknown signing key.")?;
        let decoding =
            DecodingKey::from_rsa_components(&key.n, &key.e).map_err(|e| e.to_string())?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.set_audience(audiences);
        let data =
            jsonwebtoken::decode::<Value>(token, &decoding, &validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                        "AKV10022: Invalid audience.".to_string()
                    }
                    _ => format!("AKV10022: Invalid token: {e}"),
                }
            })?;
        let exp = data
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or("AKV10022: Invalid token: no exp.")?;
        let now = (real_now_ms() / 1000).min(clock.now());
        if (exp as i64) + 60 < now {
            return Err("AKV10022: Invalid token: the token is expired.".into());
        }
        Ok(())
    }

    fn verify_assertion(
        &self,
        shared: &Shared,
        req: &Req,
        tenant: &str,
        client_id: &str,
        assertion: &str,
    ) -> Result<(), EntraError> {
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| EntraError::invalid_client(50027, "JWT token is invalid or malformed."))?;
        let certs = lock(&self.clients)
            .get(client_id)
            .map(|c| c.certs.clone())
            .unwrap_or_default();
        if certs.is_empty() {
            return Err(EntraError::invalid_client(
                700027,
                &format!(
                    "Client assertion failed signature validation. No certificate is registered for application '{client_id}'."
                ),
            ));
        }
        let x5t = header.x5t.as_deref().map(norm_b64);
        let x5t256 = header.x5t_s256.as_deref().map(norm_b64);
        let kid = header.kid.clone();
        let candidates: Vec<&RegisteredCert> = certs
            .iter()
            .filter(|c| {
                let by_x5t = x5t.as_ref().is_some_and(|t| *t == c.x5t);
                let by_s256 = x5t256.as_ref().is_some_and(|t| *t == c.x5t_s256);
                let by_kid = kid.as_ref().is_some_and(|k| {
                    let n = norm_b64(k);
                    n == c.x5t
                        || n == c.x5t_s256
                        || k.eq_ignore_ascii_case(&c.sha1_hex)
                        || k.eq_ignore_ascii_case(&c.sha256_hex)
                });
                let unnamed = x5t.is_none() && x5t256.is_none() && kid.is_none();
                by_x5t || by_s256 || by_kid || unnamed
            })
            .collect();
        if candidates.is_empty() {
            return Err(EntraError::invalid_client(
                700027,
                &format!(
                    "Client assertion failed signature validation. The key was not found. Thumbprint of key used by client: '{}'.",
                    header
                        .x5t
                        .or(header.x5t_s256)
                        .or(header.kid)
                        .unwrap_or_default()
                ),
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let mut claims: Option<Value> = None;
        for c in candidates {
            let key = match (c.rsa, header.alg) {
                (
                    true,
                    Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512,
                ) => DecodingKey::from_rsa_der(&c.public_key),
                (false, Algorithm::ES256 | Algorithm::ES384) => {
                    DecodingKey::from_ec_der(&c.public_key)
                }
                _ => continue,
            };
            if let Ok(data) = jsonwebtoken::decode::<Value>(assertion, &key, &validation) {
                claims = Some(data.claims);
                break;
            }
        }
        let claims = claims.ok_or_else(|| {
            EntraError::invalid_client(700027, "Client assertion contains an invalid signature.")
        })?;
        let str_claim = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
        if str_claim("iss").as_deref() != Some(client_id)
            || str_claim("sub").as_deref() != Some(client_id)
        {
            return Err(EntraError::invalid_client(
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter. The 'iss' and 'sub' claims must be the client id.",
            ));
        }
        let host = req.host(shared.port);
        let tid = self.tenant_for(tenant, &shared.tenant_id);
        let accepted: Vec<String> = [tenant, tid.as_str()]
            .iter()
            .flat_map(|t| {
                [
                    format!("https://{host}/{t}/oauth2/v2.0/token"),
                    format!("{}/{t}/oauth2/v2.0/token", shared.authority()),
                    format!("https://{host}/{t}/v2.0"),
                    format!("{}/{t}/v2.0", shared.authority()),
                    format!("https://{host}/{t}/oauth2/token"),
                ]
            })
            .collect();
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => accepted.contains(a),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .any(|x| accepted.iter().any(|y| y == x)),
            _ => false,
        };
        if !aud_ok {
            return Err(EntraError::invalid_client(
                700212,
                &format!(
                    "The audience claim in the client assertion doesn't match the token endpoint. Expected '{}'.",
                    accepted.first().cloned().unwrap_or_default()
                ),
            ));
        }
        let real = real_now_ms() / 1000;
        let emu = shared.clock.now();
        let exp = claims.get("exp").and_then(Value::as_f64).ok_or_else(|| {
            EntraError::invalid_client(
                700024,
                "Client assertion is not within its valid time range. The 'exp' claim is missing.",
            )
        })?;
        if (exp as i64) + SKEW < real.min(emu) {
            return Err(EntraError::invalid_client(
                700024,
                "Client assertion is not within its valid time range.",
            ));
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64)
            && (nbf as i64) - SKEW > real.max(emu)
        {
            return Err(EntraError::invalid_client(
                700024,
                "Client assertion is not within its valid time range.",
            ));
        }
        if let Some(jti) = str_claim("jti") {
            let mut used = lock(&self.used_jti);
            let now = real.min(emu);
            used.retain(|_, e| *e + SKEW >= now);
            let key = format!("{client_id}\u{0}{jti}");
            if used.contains_key(&key) {
                return Err(EntraError::invalid_client(
                    700023,
                    "Client assertion has already been used: the 'jti' claim was replayed.",
                ));
            }
            used.insert(key, exp as i64);
        }
        Ok(())
    }

    fn client_credentials(
        &self,
        shared: &Shared,
        req: &Req,
        tenant: &str,
    ) -> Result<Value, EntraError> {
        let form: BTreeMap<String, String> = url::form_urlencoded::parse(&req.body)
            .into_owned()
            .collect();
        let grant = form
            .get("grant_type")
            .map(String::as_str)
            .unwrap_or_default();
        if grant.is_empty() {
            return Err(EntraError::request(
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ));
        }
        if grant != "client_credentials" {
            return Err(EntraError {
                status: StatusCode::BAD_REQUEST,
                error: "unsupported_grant_type",
                code: 70003,
                message: format!(
                    "The app requested an unsupported grant type '{grant}'. The emulator supports client_credentials."
                ),
            });
        }
        // client_secret_basic
        let basic = req.header("authorization").and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return None;
            }
            let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
            let (id, secret) = decoded.split_once(':')?;
            let dec = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((dec(id)?, dec(secret)?))
        });
        let client_id = form
            .get("client_id")
            .cloned()
            .or_else(|| basic.as_ref().map(|b| b.0.clone()))
            .unwrap_or_default();
        if client_id.is_empty() {
            return Err(EntraError::request(
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            ));
        }
        let scope = form.get("scope").cloned().unwrap_or_default();
        if scope.is_empty() {
            return Err(EntraError::request(
                90014,
                "The required field 'scope' is missing from the credential. Ensure that you have all the necessary parameters for the login request.",
            ));
        }
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        let resource = match scopes.as_slice() {
            [one] if one.ends_with("/.default") => one.trim_end_matches("/.default").to_string(),
            _ => {
                return Err(EntraError {
                    status: StatusCode::BAD_REQUEST,
                    error: "invalid_scope",
                    code: 1_002_012,
                    message: format!(
                        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                    ),
                });
            }
        };
        let client = lock(&self.clients).get(&client_id).cloned();
        let Some(client) = client else {
            return Err(EntraError {
                status: StatusCode::BAD_REQUEST,
                error: "unauthorized_client",
                code: 700016,
                message: format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant."
                ),
            });
        };
        let secret = form
            .get("client_secret")
            .cloned()
            .or_else(|| basic.map(|b| b.1));
        match (
            secret,
            form.get("client_assertion"),
            form.get("client_assertion_type"),
        ) {
            (Some(s), None, _) => {
                if !client
                    .secrets
                    .iter()
                    .any(|k| constant_time_eq(k.as_bytes(), s.as_bytes()))
                {
                    return Err(EntraError::invalid_client(
                        7_000_215,
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
                    ));
                }
            }
            (None, Some(a), Some(t))
                if t == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" =>
            {
                self.verify_assertion(shared, req, tenant, &client_id, a)?;
            }
            (None, Some(_), _) => {
                return Err(EntraError::request(
                    700029,
                    "The client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
                ));
            }
            _ => {
                return Err(EntraError::invalid_client(
                    7_000_218,
                    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                ));
            }
        }
        let tid = self.tenant_for(tenant, &shared.tenant_id);
        let now = shared.clock.now();
        let lifetime = shared.token_lifetime;
        let claims = json!({
            "aud": resource,
            "iss": shared.issuer(&tid),
            "iat": now, "nbf": now, "exp": now + lifetime,
            "aio": "emulator",
            "appid": client_id, "azp": client_id, "azpacr": "1",
            "idtyp": "app",
            "oid": principal_of(&client_id),
            "sub": principal_of(&client_id),
            "tid": tid,
            "uti": crate::store::new_version(),
            "ver": "2.0",
        });
        let token = self.issue(claims).map_err(|e| EntraError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            code: 500_011,
            message: e,
        })?;
        let mut out = json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        });
        if lifetime >= 7200 {
            out["refresh_in"] = (lifetime / 2).into();
        }
        Ok(out)
    }

    fn managed_identity(&self, shared: &Shared, req: &Req) -> Resp {
        let err = |status: StatusCode, msg: &str| {
            json_response(
                status,
                &json!({"statusCode": status.as_u16(), "message": msg, "correlationId": random_guid()}),
            )
        };
        match req.header("x-identity-header") {
            Some(h) if constant_time_eq(h.as_bytes(), self.identity_header.as_bytes()) => {}
            Some(_) => {
                return err(
                    StatusCode::UNAUTHORIZED,
                    "The X-IDENTITY-HEADER value is not valid.",
                );
            }
            None => {
                return err(
                    StatusCode::BAD_REQUEST,
                    "The X-IDENTITY-HEADER header is missing.",
                );
            }
        }
        match req.query("api-version") {
            Some("2019-08-01") => {}
            Some(v) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    &format!("Unsupported api-version {v}: use 2019-08-01."),
                );
            }
            None => {
                return err(
                    StatusCode::BAD_REQUEST,
                    "The api-version query parameter is missing.",
                );
            }
        }
        let Some(resource) = req.query("resource").filter(|r| !r.is_empty()) else {
            return err(
                StatusCode::BAD_REQUEST,
                "The resource query parameter is missing.",
            );
        };
        let resource = resource.trim_end_matches("/.default").to_string();
        let client_id = req
            .query("client_id")
            .or_else(|| req.query("mi_res_id"))
            .or_else(|| req.query("msi_res_id"))
            .or_else(|| req.query("object_id"))
            .or_else(|| req.query("principal_id"))
            .map_or_else(|| self.mi_client_id.clone(), str::to_string);
        let principal = if client_id == self.mi_client_id {
            self.mi_principal_id.clone()
        } else {
            principal_of(&client_id)
        };
        let now = shared.clock.now();
        let exp = now + shared.token_lifetime;
        let claims = json!({
            "aud": resource,
            "iss": shared.issuer(&shared.tenant_id),
            "iat": now, "nbf": now, "exp": exp,
            "appid": client_id, "azp": client_id,
            "idtyp": "app",
            "oid": principal, "sub": principal,
            "tid": shared.tenant_id,
            "xms_mirid": format!("/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/emulator/providers/Microsoft.Web/sites/{client_id}"),
            "uti": crate::store::new_version(),
            "ver": "2.0",
        });
        match self.issue(claims) {
            Ok(token) => json_response(
                StatusCode::OK,
                &json!({
                    "access_token": token,
                    "expires_on": exp.to_string(),
                    "resource": resource,
                    "token_type": "Bearer",
                    "client_id": client_id,
                }),
            ),
            Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, &e),
        }
    }

    fn jwks(&self, issuer: &str) -> Value {
        let keys: Vec<Value> = lock(&self.keys)
            .iter()
            .rev()
            .map(|k| k.jwk(issuer))
            .collect();
        json!({"keys": keys})
    }
}

/// A stable object id derived from a client id.
fn principal_of(client_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, client_id.as_bytes());
    let h = hex::encode(d.as_ref());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An Entra error: `{"error","error_description":"AADSTS…","error_codes":[…],…}`.
#[derive(Debug)]
struct EntraError {
    status: StatusCode,
    error: &'static str,
    code: i64,
    message: String,
}

impl EntraError {
    fn invalid_client(code: i64, message: &str) -> EntraError {
        EntraError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            code,
            message: message.to_string(),
        }
    }

    fn request(code: i64, message: &str) -> EntraError {
        EntraError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            code,
            message: message.to_string(),
        }
    }

    fn response(&self) -> Resp {
        let trace = random_guid();
        let correlation = random_guid();
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        json_response(
            self.status,
            &json!({
                "error": self.error,
                "error_description": format!("AADSTS{}: {} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {timestamp}", self.code, self.message),
                "error_codes": [self.code],
                "timestamp": timestamp,
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": "https://localhost/error?code=".to_string() + &self.code.to_string(),
            }),
        )
    }
}

/// Handles an Entra or managed-identity request.
pub(crate) fn handle(shared: &Shared, req: &Req, route: EntraRoute) -> Resp {
    let entra = &shared.entra;
    match route {
        EntraRoute::Token(tenant) => match entra.client_credentials(shared, req, &tenant) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => e.response(),
        },
        EntraRoute::Keys(tenant) => {
            let issuer = shared.issuer(&tenant);
            json_response(StatusCode::OK, &entra.jwks(&issuer))
        }
        EntraRoute::Discovery(tenant) => {
            let a = shared.authority();
            let tid = entra.tenant_for(&tenant, &shared.tenant_id);
            json_response(
                StatusCode::OK,
                &json!({
                    "issuer": shared.issuer(&tid),
                    "token_endpoint": format!("{a}/{tenant}/oauth2/v2.0/token"),
                    "jwks_uri": format!("{a}/{tenant}/discovery/v2.0/keys"),
                    "authorization_endpoint": format!("{a}/{tenant}/oauth2/v2.0/authorize"),
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                    "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "appid", "azp", "ver"],
                    "tenant_region_scope": null,
                    "cloud_instance_name": "localhost",
                    "cloud_graph_host_name": "localhost",
                    "msgraph_host": "localhost",
                }),
            )
        }
        EntraRoute::ManagedIdentity => entra.managed_identity(shared, req),
    }
}

/// Decodes a JWT's payload without checking it (for tests and diagnostics).
#[cfg(test)]
pub(crate) fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap_or_default();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap_or_default(),
    )
    .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_thumbprint_normalisation() {
        let seg = ["t", "oauth2", "v2.0", "token"];
        assert_eq!(
            EntraRoute::parse(&Method::POST, &seg),
            Some(EntraRoute::Token("t".into()))
        );
        assert_eq!(
            EntraRoute::parse(&Method::GET, &["msi", "token"]),
            Some(EntraRoute::ManagedIdentity)
        );
        assert_eq!(norm_b64("ab+/cd=="), "ab-_cd");
        let g = random_guid();
        assert_eq!(g.len(), 36);
        assert_eq!(principal_of("x"), principal_of("x"));
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
        assert_eq!(payload("a.eyJ4IjoxfQ.c")["x"], 1);
    }
}
