//! Entra ID and managed identity against the official Rust credentials:
//! `ClientSecretCredential`, `ClientAssertionCredential` (assertion signed by a vault-held
//! certificate, the development proxy's job) and the App Service managed-identity endpoint
//! (the `ManagedIdentityCredential` itself is in `managed_identity.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::field_reassign_with_default,
    clippy::type_complexity
)]

mod common;

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientMethodOptions;
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
};
use azure_security_keyvault_certificates::models::{
    CertificatePolicy, IssuerParameters, X509CertificateProperties,
};
use azure_security_keyvault_certificates::{
    CertificateClient, CertificateClientOptions, ResourceExt as _,
};
use azure_security_keyvault_keys::models::SignatureAlgorithm;
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyroll_emulator::EmulatorHandle;
use serde_json::{Value, json};

fn jwt_part(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// Checks an access token's RS256 signature against the published JWKS with aws-lc-rs.
async fn verify_against_jwks(emu: &EmulatorHandle, token: &str) -> Value {
    let jwks = common::send_json(emu.http_client().get(emu.jwks_url(emu.tenant_id()))).await;
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("kid published");
    let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    assert!(
        common::verify_with_jwk("RS256", &n, &e, input.as_bytes(), &sig),
        "token signature"
    );
    common::claims_of(token)
}

/// Asks `tenant`'s token endpoint for a token with a client assertion; the status and the body.
async fn post_assertion(
    emu: &EmulatorHandle,
    tenant: &str,
    client_id: &str,
    assertion: String,
    scope: &str,
) -> (u16, Value) {
    let resp = emu
        .http_client()
        .post(emu.token_endpoint(tenant))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn key_client(emu: &EmulatorHandle, vault: &str, cred: Arc<dyn TokenCredential>) -> KeyClient {
    let mut k = KeyClientOptions::default();
    k.client_options = common::client_options(emu);
    KeyClient::new(emu.vault_url(vault).as_str(), cred, Some(k)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_tokens_verify_against_the_published_keys() {
    let emu = common::start().await;
    let cred = common::secret_credential(&emu);
    let scope = format!("{}/.default", emu.vault_resource());
    let token = cred.get_token(&[scope.as_str()], None).await.unwrap();
    let claims = verify_against_jwks(&emu, token.token.secret()).await;
    // Key Vault takes v1 tokens: sts.windows.net issuer, appid/appidacr ("1": a secret).
    assert_eq!(claims["aud"], emu.vault_resource());
    assert_eq!(claims["iss"], emu.issuer_v1(emu.tenant_id()));
    assert_eq!(claims["appid"], common::CLIENT_ID);
    assert_eq!(claims["appidacr"], "1");
    assert_eq!(claims["ver"], "1.0");
    assert!(claims.get("azp").is_none() && claims.get("azpacr").is_none());
    assert_eq!(claims["tid"], emu.tenant_id());
    assert_eq!(claims["sub"], claims["oid"]);
    assert!(claims["uti"].is_string());

    let discovery = common::send_json(
        emu.http_client()
            .get(emu.openid_configuration_url(emu.tenant_id())),
    )
    .await;
    assert_eq!(discovery["issuer"], emu.issuer(emu.tenant_id()));
    assert_eq!(
        discovery["jwks_uri"],
        emu.jwks_url(emu.tenant_id()).as_str()
    );
    assert_eq!(
        discovery["token_endpoint"],
        emu.token_endpoint(emu.tenant_id()).as_str()
    );

    // The emulator's signing key rotates: new tokens use the new key, both stay published.
    let old_kid = emu.admin().token_signing_kid().unwrap();
    let new_kid = emu.admin().rotate_token_signing_key().unwrap();
    assert_ne!(old_kid, new_kid);
    let jwks = common::send_json(emu.http_client().get(emu.jwks_url("common"))).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    // The old token still opens the vault.
    let client = key_client(&emu, "secretvault", cred.clone());
    client
        .create_key(
            "k",
            azure_security_keyvault_keys::models::CreateKeyParameters {
                kty: Some(azure_security_keyvault_keys::models::KeyType::Ec),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap();

    // A wrong secret is invalid_client with an AADSTS code.
    let wrong_secret = common::client_secret_token_request(
        &emu,
        emu.tenant_id(),
        common::CLIENT_ID,
        "nope",
        &scope,
    );
    let resp = wrong_secret.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215")
    );
    assert_eq!(body["error_codes"][0], 7_000_215);
    assert_entra_error_shape(&body);
    // An unknown client.
    let unknown_client =
        common::client_secret_token_request(&emu, emu.tenant_id(), "ghost", "x", &scope);
    let resp = unknown_client.send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS700016")
    );
    // An unknown tenant, an unregistered resource.
    let (status, body) = send(common::client_secret_token_request(
        &emu,
        "any-tenant",
        common::CLIENT_ID,
        common::CLIENT_SECRET,
        &scope,
    ))
    .await;
    assert_eq!(
        (status, body["error_codes"][0].as_i64()),
        (400, Some(90_002))
    );
    let (status, body) = send(common::client_secret_token_request(
        &emu,
        emu.tenant_id(),
        common::CLIENT_ID,
        common::CLIENT_SECRET,
        "api://unregistered/.default",
    ))
    .await;
    assert_eq!(
        (status, body["error_codes"][0].as_i64()),
        (400, Some(500_011))
    );
    assert_eq!(body["error"], "invalid_resource");
    assert_entra_error_shape(&body);
    emu.shutdown().await;
}

/// Sends a request; the status and the JSON body.
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = request.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// `GET /keys` in vault `v` with a bearer token.
async fn list_keys_with(emu: &EmulatorHandle, token: &str) -> reqwest::Response {
    emu.http_client()
        .get(
            emu.vault_url("v")
                .join("keys?api-version=2025-07-01")
                .unwrap(),
        )
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Entra's error body: the code in three places, the ids, a `2024-01-01 12:00:00Z` timestamp.
fn assert_entra_error_shape(body: &Value) {
    let code = body["error_codes"][0].as_i64().unwrap();
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{body}"
    );
    assert!(
        body["error_uri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("error?code={code}"))
    );
    let ts = body["timestamp"].as_str().unwrap();
    let shape: String = ts
        .chars()
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect();
    assert_eq!(
        shape, "dddd-dd-dd dd:dd:ddZ",
        "timestamp {ts:?} is not in Entra's form"
    );
    for id in ["trace_id", "correlation_id"] {
        let v = body[id].as_str().unwrap();
        assert_eq!(v.len(), 36, "{id}");
        assert!(description.contains(v), "{id} in the description");
    }
    assert!(description.ends_with(&format!("Timestamp: {ts}")));
}

/// An RFC 7523 assertion whose signature is made by the vault (`sign` over the SHA-256 digest).
struct VaultSignedAssertion {
    keys: KeyClient,
    name: String,
    version: String,
    x5t: String,
    client_id: String,
    audience: String,
}

impl std::fmt::Debug for VaultSignedAssertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSignedAssertion")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl VaultSignedAssertion {
    async fn build(&self) -> azure_core::Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t});
        let claims = json!({
            "aud": self.audience, "iss": self.client_id, "sub": self.client_id,
            "jti": format!("{:x}", now as u128 * 1_000_003 + u128::from(std::process::id()) + rand_suffix()),
            "nbf": now, "iat": now, "exp": now + 600,
        });
        let input = format!("{}.{}", jwt_part(&header), jwt_part(&claims));
        let result = common::sign(
            &self.keys,
            &self.name,
            Some(&self.version),
            SignatureAlgorithm::Rs256,
            common::digest("RS256", input.as_bytes()),
        )
        .await?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(result.result.unwrap_or_default())
        ))
    }
}

fn rand_suffix() -> u128 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    u128::from(u64::from_le_bytes(b))
}

#[async_trait::async_trait]
impl ClientAssertion for VaultSignedAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.build().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_assertion_signed_by_a_vault_certificate() {
    let emu = common::start().await;
    // The vault holds the certificate; its private key never leaves the vault.
    let cred = common::secret_credential(&emu);
    let mut co = CertificateClientOptions::default();
    co.client_options = common::client_options(&emu);
    let certs =
        CertificateClient::new(emu.vault_url("idvault").as_str(), cred.clone(), Some(co)).unwrap();
    let policy = CertificatePolicy {
        x509_certificate_properties: Some(X509CertificateProperties {
            subject: Some("CN=assertion-app".into()),
            ..Default::default()
        }),
        issuer_parameters: Some(IssuerParameters {
            name: Some("Self".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cert = common::create_certificate(&certs, "assertion-app", Some(policy)).await;
    let version = cert.resource_id().unwrap().version.unwrap();
    let x5t = URL_SAFE_NO_PAD.encode(cert.x509_thumbprint.unwrap());
    emu.register_client_certificate("assertion-app", &cert.cer.unwrap())
        .unwrap();

    let audience = emu.token_endpoint(emu.tenant_id()).to_string();
    let assertion = VaultSignedAssertion {
        keys: key_client(&emu, "idvault", cred.clone()),
        name: "assertion-app".into(),
        version,
        x5t: x5t.clone(),
        client_id: "assertion-app".into(),
        audience: audience.clone(),
    };
    let raw_assertion = assertion.build().await.unwrap();
    let mut opts = ClientAssertionCredentialOptions::default();
    opts.client_options = common::credential_options(&emu);
    let assertion_cred = ClientAssertionCredential::new(
        emu.tenant_id().to_string(),
        "assertion-app".into(),
        assertion,
        Some(opts),
    )
    .unwrap();
    let scope = format!("{}/.default", emu.vault_resource());
    let token = assertion_cred
        .get_token(&[scope.as_str()], None)
        .await
        .unwrap();
    let claims = verify_against_jwks(&emu, token.token.secret()).await;
    assert_eq!(claims["appid"], "assertion-app");
    assert_eq!(
        claims["appidacr"], "2",
        "a certificate authenticated the client"
    );

    // The token opens the vault.
    let client = key_client(&emu, "idvault", assertion_cred);
    let key = client
        .get_key("assertion-app", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(key.managed, Some(true));

    // An assertion may be presented again until it expires (MSAL reuses one for minutes),
    // for the same or another scope, as Entra accepts it.
    let post =
        |a: String| post_assertion(&emu, emu.tenant_id(), "assertion-app", a, scope.as_str());
    assert_eq!(post(raw_assertion.clone()).await.0, 200);
    let (status, body) = post(raw_assertion.clone()).await;
    assert_eq!(status, 200, "{body}");
    emu.admin()
        .register_api(keyroll_emulator::Api::new("api://second"))
        .unwrap();
    let (status, body) = post_assertion(
        &emu,
        emu.tenant_id(),
        "assertion-app",
        raw_assertion.clone(),
        "api://second/.default",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        common::claims_of(body["access_token"].as_str().unwrap())["aud"],
        "api://second"
    );

    // A tampered signature is refused.
    let mut parts: Vec<String> = raw_assertion.split('.').map(str::to_string).collect();
    let mut sig = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
    sig[10] ^= 1;
    parts[2] = URL_SAFE_NO_PAD.encode(sig);
    let (status, body) = post(parts.join(".")).await;
    assert_eq!(status, 401);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS700027"),
        "{body}"
    );
    emu.shutdown().await;
}

/// A locally held EC certificate and key, to check how assertions are matched and validated.
struct LocalCert {
    der: Vec<u8>,
    key: jsonwebtoken::EncodingKey,
}

fn local_cert() -> LocalCert {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["client.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    LocalCert {
        der: cert.der().to_vec(),
        key: jsonwebtoken::EncodingKey::from_ec_der(&key.serialize_der()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertion_matching_and_claim_checks() {
    let emu = common::start().await;
    let good = local_cert();
    let other = local_cert();
    // The app lives in a second tenant, "contoso".
    emu.admin().add_tenant("contoso").unwrap();
    emu.admin()
        .register_app(
            keyroll_emulator::App::new("local-app")
                .tenant("contoso")
                .certificate(good.der.clone()),
        )
        .unwrap();
    let endpoint = emu.token_endpoint("contoso").to_string();
    let scope = format!("{}/.default", emu.vault_resource());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &good.der);
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &good.der);

    let make = |cert: &LocalCert, header_extra: Value, claims: Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        if let Some(x) = header_extra.get("x5t").and_then(Value::as_str) {
            header.x5t = Some(x.to_string());
        }
        if let Some(x) = header_extra.get("x5t#S256").and_then(Value::as_str) {
            header.x5t_s256 = Some(x.to_string());
        }
        if let Some(x) = header_extra.get("kid").and_then(Value::as_str) {
            header.kid = Some(x.to_string());
        }
        jsonwebtoken::encode(&header, &claims, &cert.key).unwrap()
    };
    let claims = |jti: &str| json!({"aud": endpoint, "iss": "local-app", "sub": "local-app", "jti": jti, "iat": now, "exp": now + 300.5});
    let post = |a: String| post_assertion(&emu, "contoso", "local-app", a, scope.as_str());
    let code = |body: &Value| body["error_codes"][0].as_i64().unwrap_or(0);

    // x5t with standard base64 padding (as Microsoft's client sends it), decimal exp.
    let padded = base64::engine::general_purpose::STANDARD.encode(sha1.as_ref());
    let (s, body) = post(make(&good, json!({"x5t": padded}), claims("a"))).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        common::claims_of(body["access_token"].as_str().unwrap())["tid"],
        "contoso"
    );
    // x5t#S256, and a hex kid.
    let (s, _) = post(make(
        &good,
        json!({"x5t#S256": URL_SAFE_NO_PAD.encode(sha256.as_ref())}),
        claims("b"),
    ))
    .await;
    assert_eq!(s, 200);
    let (s, _) = post(make(
        &good,
        json!({"kid": hex_upper(sha1.as_ref())}),
        claims("c"),
    ))
    .await;
    assert_eq!(s, 200);
    // Signed by another key under the registered thumbprint.
    let (s, body) = post(make(
        &other,
        json!({"x5t": URL_SAFE_NO_PAD.encode(sha1.as_ref())}),
        claims("d"),
    ))
    .await;
    assert_eq!((s, code(&body)), (401, 700_027));
    // A thumbprint nobody registered.
    let other_sha1 =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &other.der);
    let (s, body) = post(make(
        &other,
        json!({"x5t": URL_SAFE_NO_PAD.encode(other_sha1.as_ref())}),
        claims("e"),
    ))
    .await;
    assert_eq!((s, code(&body)), (401, 700_027));
    // Wrong audience, wrong iss/sub, expired.
    let mut c = claims("f");
    c["aud"] = "https://elsewhere.example/token".into();
    let (s, body) = post(make(&good, json!({"x5t": padded}), c)).await;
    assert_eq!((s, code(&body)), (401, 700_212));
    let mut c = claims("g");
    c["iss"] = "someone-else".into();
    let (s, body) = post(make(&good, json!({"x5t": padded}), c)).await;
    assert_eq!((s, code(&body)), (401, 700_021));
    let mut c = claims("h");
    c["exp"] = json!(now - 3600.0);
    let expired = make(&good, json!({"x5t": padded}), c);
    let (s, body) = post(expired.clone()).await;
    assert_eq!((s, code(&body)), (401, 700_024));
    // Presented again, an expired assertion stays refused.
    let (s, body) = post(expired).await;
    assert_eq!((s, code(&body)), (401, 700_024));
    // The app is not registered in the default tenant.
    let (s, body) = post_assertion(
        &emu,
        emu.tenant_id(),
        "local-app",
        make(&good, json!({"x5t": padded}), claims("i")),
        scope.as_str(),
    )
    .await;
    assert_eq!((s, code(&body)), (400, 700_016));
    emu.shutdown().await;
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_credential_app_service() {
    let emu = common::start().await;
    // The endpoint as App Service answers it.
    let http = emu.http_client();
    let resource = emu.vault_resource();
    let url = emu.identity_endpoint();
    let token_request = || {
        http.get(url.clone()).query(&[
            ("api-version", "2019-08-01"),
            ("resource", resource.as_str()),
        ])
    };
    let ok =
        common::send_json(token_request().header("X-IDENTITY-HEADER", emu.identity_header())).await;
    assert!(
        ok["expires_on"].is_string(),
        "expires_on is a string of Unix seconds"
    );
    assert_eq!(ok["resource"], resource);
    assert_eq!(ok["token_type"], "Bearer");
    let claims = verify_against_jwks(&emu, ok["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["appid"], emu.managed_identity_client_id());
    let bad = token_request()
        .header("X-IDENTITY-HEADER", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let missing = token_request().send().await.unwrap();
    assert_eq!(missing.status(), 400);

    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_apis_get_tokens_of_their_version_with_granted_roles() {
    use keyroll_emulator::{Api, TokenVersion};
    let emu = keyroll_emulator::Emulator::builder()
        .client_secret(common::CLIENT_ID, common::CLIENT_SECRET)
        .api(
            Api::new("api://orders")
                .app_id("11111111-2222-3333-4444-555555555555")
                .access_token_version(TokenVersion::V2)
                .app_role("Orders.Read")
                .app_role("Orders.Write")
                .grant(common::CLIENT_ID, "Orders.Read"),
        )
        .api(Api::new("api://billing"))
        .start()
        .await
        .unwrap();
    let token = |scope: &'static str| {
        let emu = &emu;
        async move {
            let (status, body) = send(common::client_secret_token_request(
                emu,
                emu.tenant_id(),
                common::CLIENT_ID,
                common::CLIENT_SECRET,
                scope,
            ))
            .await;
            assert_eq!(status, 200, "{body}");
            verify_against_jwks(emu, body["access_token"].as_str().unwrap()).await
        }
    };
    // v2: the API's application id as audience, the v2 issuer, azp/azpacr, the granted roles.
    let v2 = token("api://orders/.default").await;
    assert_eq!(v2["aud"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(v2["iss"], emu.issuer(emu.tenant_id()));
    assert_eq!(
        (v2["azp"].as_str(), v2["azpacr"].as_str()),
        (Some(common::CLIENT_ID), Some("1"))
    );
    assert_eq!(v2["ver"], "2.0");
    assert_eq!(v2["roles"], json!(["Orders.Read"]));
    assert!(v2.get("appid").is_none() && v2.get("appidacr").is_none());
    // The application id names the API too.
    let by_app_id = token("11111111-2222-3333-4444-555555555555/.default").await;
    assert_eq!(by_app_id["aud"], v2["aud"]);
    // v1: the resource as requested, the sts.windows.net issuer, no roles granted.
    let v1 = token("api://billing/.default").await;
    assert_eq!(v1["aud"], "api://billing");
    assert_eq!(v1["iss"], emu.issuer_v1(emu.tenant_id()));
    assert_eq!(v1["ver"], "1.0");
    assert!(v1.get("roles").is_none());
    // v1 discovery names the v1 issuer.
    let discovery = common::send_json(emu.http_client().get(format!(
        "{}{}/.well-known/openid-configuration",
        emu.authority_host(),
        emu.tenant_id()
    )))
    .await;
    assert_eq!(discovery["issuer"], emu.issuer_v1(emu.tenant_id()));
    // A v2 token for another API does not open a vault.
    let (status, body) = send(common::client_secret_token_request(
        &emu,
        emu.tenant_id(),
        common::CLIENT_ID,
        common::CLIENT_SECRET,
        "api://orders/.default",
    ))
    .await;
    assert_eq!(status, 200);
    let r = list_keys_with(&emu, body["access_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), 401);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_another_tenant_is_refused_at_the_vault() {
    let emu = keyroll_emulator::Emulator::builder()
        .client_secret(common::CLIENT_ID, common::CLIENT_SECRET)
        .add_tenant("fabrikam")
        .app(
            keyroll_emulator::App::new("fabrikam-app")
                .tenant("fabrikam")
                .secret("f-secret"),
        )
        .start()
        .await
        .unwrap();
    let scope = format!("{}/.default", emu.vault_resource());
    // Key Vault is known in every tenant: fabrikam's app gets a token for it.
    let (status, body) = send(common::client_secret_token_request(
        &emu,
        "fabrikam",
        "fabrikam-app",
        "f-secret",
        &scope,
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(common::claims_of(token)["tid"], "fabrikam");
    // The vault belongs to the default tenant: AKV10032, with a challenge naming its tenant.
    let r = list_keys_with(&emu, token).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains(emu.tenant_id()), "{challenge}");
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("AKV10032: Invalid issuer."),
        "{message}"
    );
    assert!(
        message.contains("https://sts.windows.net/fabrikam/"),
        "{message}"
    );
    // The same request with the default tenant's token passes.
    let (_, body) = send(common::client_secret_token_request(
        &emu,
        emu.tenant_id(),
        common::CLIENT_ID,
        common::CLIENT_SECRET,
        &scope,
    ))
    .await;
    let r = list_keys_with(&emu, body["access_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identities_are_selected_by_any_of_their_ids() {
    let orders = keyroll_emulator::ManagedIdentity::user_assigned("orders");
    let emu = keyroll_emulator::Emulator::builder()
        .user_assigned_identity(orders.clone())
        .start()
        .await
        .unwrap();
    let http = emu.http_client();
    let resource = emu.vault_resource();
    let request = |selector: Option<(&str, &str)>, resource: &str| {
        let mut q = vec![("api-version", "2019-08-01"), ("resource", resource)];
        if let Some(s) = selector {
            q.push(s);
        }
        http.get(emu.identity_endpoint())
            .query(&q)
            .header("X-IDENTITY-HEADER", emu.identity_header())
    };
    for selector in [
        ("client_id", orders.client_id.as_str()),
        ("object_id", orders.object_id.as_str()),
        ("principal_id", orders.object_id.as_str()),
        ("mi_res_id", orders.resource_id.as_str()),
        ("msi_res_id", orders.resource_id.as_str()),
    ] {
        let (status, body) = send(request(Some(selector), &resource)).await;
        assert_eq!(status, 200, "{selector:?}: {body}");
        assert_eq!(body["client_id"], orders.client_id.as_str());
        let claims = verify_against_jwks(&emu, body["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["appid"], orders.client_id.as_str(), "{selector:?}");
        assert_eq!(claims["oid"], orders.object_id.as_str(), "{selector:?}");
        assert_eq!(
            claims["xms_mirid"],
            orders.resource_id.as_str(),
            "{selector:?}"
        );
    }
    let (_, system) = send(request(None, &resource)).await;
    assert_eq!(
        system["client_id"],
        emu.managed_identity_client_id().as_str()
    );
    // Not assigned: App Service's 400, by each kind of id.
    for selector in [
        ("client_id", "9f4c0a43-0000-4000-a000-000000000000"),
        ("object_id", orders.client_id.as_str()),
        (
            "mi_res_id",
            "/subscriptions/x/resourcegroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/nobody",
        ),
    ] {
        let (status, body) = send(request(Some(selector), &resource)).await;
        assert_eq!(status, 400, "{selector:?}");
        assert_eq!(body["statusCode"], 400);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("No User Assigned or Delegated Managed Identity found"),
            "{body}"
        );
        assert_eq!(body["correlationId"].as_str().unwrap().len(), 36);
    }
    // An unregistered resource.
    let (status, body) = send(request(None, "api://unregistered")).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("AADSTS500011"),
        "{body}"
    );
    emu.shutdown().await;
}
