//! Helpers shared by the integration tests: Azure SDK client options wired to the emulator, the
//! calls several tests make, and independent signature checks with aws-lc-rs.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::field_reassign_with_default
)]

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_certificates::CertificateClient;
use azure_security_keyvault_certificates::models::{
    Certificate, CertificatePolicy, CreateCertificateParameters,
};
use azure_security_keyvault_keys::KeyClient;
use azure_security_keyvault_keys::models::{
    KeyClientSignOptions, KeyOperationResult, SignParameters, SignatureAlgorithm,
};
use keyroll_emulator::EmulatorHandle;
use serde_json::Value;

pub const CLIENT_ID: &str = "test-app";
pub const CLIENT_SECRET: &str = "test-secret";

/// SDK client options: the emulator's transport (CA + *.localhost resolver), fast retries.
pub fn client_options(emu: &EmulatorHandle) -> ClientOptions {
    let mut o = ClientOptions::default();
    o.transport = Some(Transport::new(Arc::new(emu.http_client())));
    let mut fixed = azure_core::http::FixedRetryOptions::default();
    fixed.delay = azure_core::time::Duration::milliseconds(5);
    fixed.max_retries = 3;
    o.retry = azure_core::http::RetryOptions::fixed(fixed);
    o
}

/// Client options for an Entra credential: the emulator as the authority host.
pub fn credential_options(emu: &EmulatorHandle) -> ClientOptions {
    let mut o = client_options(emu);
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = emu.authority_host().to_string();
    o.cloud = Some(Arc::new(CloudConfiguration::from(cloud)));
    o
}

pub fn secret_credential(emu: &EmulatorHandle) -> Arc<ClientSecretCredential> {
    let mut opts = ClientSecretCredentialOptions::default();
    opts.client_options = credential_options(emu);
    ClientSecretCredential::new(
        emu.tenant_id(),
        CLIENT_ID.to_string(),
        CLIENT_SECRET.to_string().into(),
        Some(opts),
    )
    .unwrap()
}

pub async fn start() -> EmulatorHandle {
    keyroll_emulator::Emulator::builder()
        .client_secret(CLIENT_ID, CLIENT_SECRET)
        .start()
        .await
        .unwrap()
}

/// Sends a request and parses the answer as JSON.
pub async fn send_json(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// A client-credentials token request with a client secret, to `tenant`'s token endpoint.
pub fn client_secret_token_request(
    emu: &EmulatorHandle,
    tenant: &str,
    client_id: &str,
    client_secret: &str,
    scope: &str,
) -> reqwest::RequestBuilder {
    emu.http_client().post(emu.token_endpoint(tenant)).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("scope", scope),
    ])
}

/// Signs `digest` with `alg` using version `version` of key `name` (the latest when `None`).
pub async fn sign(
    keys: &KeyClient,
    name: &str,
    version: Option<&str>,
    alg: SignatureAlgorithm,
    digest: Vec<u8>,
) -> azure_core::Result<KeyOperationResult> {
    let params = SignParameters {
        algorithm: Some(alg),
        value: Some(digest),
    };
    let options = KeyClientSignOptions {
        key_version: version.map(str::to_string),
        ..Default::default()
    };
    keys.sign(name, params.try_into()?, Some(options))
        .await?
        .into_model()
}

/// Creates a certificate through its pending operation; the stored policy when `policy` is
/// `None`.
pub async fn create_certificate(
    certs: &CertificateClient,
    name: &str,
    policy: Option<CertificatePolicy>,
) -> Certificate {
    let body = CreateCertificateParameters {
        certificate_policy: policy,
        ..Default::default()
    };
    certs
        .begin_create_certificate(name, body.try_into().unwrap(), None)
        .unwrap()
        .await
        .unwrap()
        .into_model()
        .unwrap()
}

/// The service's error code of a failed SDK call (`KeyNotFound`, `Forbidden`, …).
pub fn error_code(err: &azure_core::Error) -> Option<&str> {
    match err.kind() {
        azure_core::error::ErrorKind::HttpResponse { error_code, .. } => error_code.as_deref(),
        _ => None,
    }
}

/// Verifies `signature` over `message` with aws-lc-rs, from a JWK's public components.
pub fn verify_with_jwk(
    alg: &str,
    n_or_x: &[u8],
    e_or_y: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    use aws_lc_rs::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};
    let rsa_alg: Option<&'static sig::RsaParameters> = match alg {
        "RS256" => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => Some(&sig::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => Some(&sig::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => Some(&sig::RSA_PSS_2048_8192_SHA256),
        "PS384" => Some(&sig::RSA_PSS_2048_8192_SHA384),
        "PS512" => Some(&sig::RSA_PSS_2048_8192_SHA512),
        _ => None,
    };
    if let Some(params) = rsa_alg {
        return RsaPublicKeyComponents {
            n: n_or_x,
            e: e_or_y,
        }
        .verify(params, message, signature)
        .is_ok();
    }
    let ec_alg: &'static sig::EcdsaVerificationAlgorithm = match alg {
        "ES256" => &sig::ECDSA_P256_SHA256_FIXED,
        "ES384" => &sig::ECDSA_P384_SHA384_FIXED,
        "ES512" => &sig::ECDSA_P521_SHA512_FIXED,
        other => panic!("unknown alg {other}"),
    };
    let mut point = vec![4u8];
    point.extend_from_slice(n_or_x);
    point.extend_from_slice(e_or_y);
    UnparsedPublicKey::new(ec_alg, point)
        .verify(message, signature)
        .is_ok()
}

/// The digest a JWS signer sends for `alg`.
pub fn digest(alg: &str, message: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    match &alg[2..] {
        "256" => sha2::Sha256::digest(message).to_vec(),
        "384" => sha2::Sha384::digest(message).to_vec(),
        _ => sha2::Sha512::digest(message).to_vec(),
    }
}

/// Verifies a signature with the public key inside an X.509 certificate (DER).
pub fn verify_with_cert(alg: &str, cer: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use aws_lc_rs::signature::{self as sig, UnparsedPublicKey};
    let (_, cert) = x509_parser::parse_x509_certificate(cer).unwrap();
    let key = cert.public_key().subject_public_key.data.to_vec();
    let alg: &'static dyn sig::VerificationAlgorithm = match alg {
        "RS256" => &sig::RSA_PKCS1_2048_8192_SHA256,
        "PS256" => &sig::RSA_PSS_2048_8192_SHA256,
        "ES256" => &sig::ECDSA_P256_SHA256_FIXED,
        "ES384" => &sig::ECDSA_P384_SHA384_FIXED,
        other => panic!("unknown alg {other}"),
    };
    UnparsedPublicKey::new(alg, key)
        .verify(message, signature)
        .is_ok()
}

pub fn is_version(v: &str) -> bool {
    v.len() == 32
        && v.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// The claims of a JWT, unverified.
pub fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}
