//! The official Rust `CertificateClient` and `SecretClient` against the emulator: self-signed
//! certificates through the pending operation, versions, the certificate's key signing what its
//! `cer` certifies, and the certificate's secret as PKCS#12 and as PEM.
#![allow(
    clippy::unwrap_used,
    clippy::field_reassign_with_default,
    clippy::type_complexity
)]

mod common;

use azure_security_keyvault_certificates::models::{
    CertificateAttributes, CertificateClientGetCertificateOptions,
    CertificateClientListCertificatePropertiesVersionsOptions,
    CertificateClientUpdateCertificatePropertiesOptions, CertificatePolicy, CurveName,
    IssuerParameters, KeyProperties, KeyType, SecretProperties,
    UpdateCertificatePropertiesParameters, X509CertificateProperties,
};
use azure_security_keyvault_certificates::{
    CertificateClient, CertificateClientOptions, ResourceExt as _,
};
use azure_security_keyvault_keys::models::SignatureAlgorithm;
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::models::{
    ContentType, Secret, SecretClientGetSecretOptions, SetSecretParameters,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use base64::Engine as _;
use futures_util::TryStreamExt as _;
use keyroll_emulator::EmulatorHandle;

struct Clients {
    certs: CertificateClient,
    keys: KeyClient,
    secrets: SecretClient,
}

fn clients(emu: &EmulatorHandle, vault: &str) -> Clients {
    let url = emu.vault_url(vault).to_string();
    let cred = common::secret_credential(emu);
    let mut c = CertificateClientOptions::default();
    c.client_options = common::client_options(emu);
    let mut k = KeyClientOptions::default();
    k.client_options = common::client_options(emu);
    let mut s = SecretClientOptions::default();
    s.client_options = common::client_options(emu);
    Clients {
        certs: CertificateClient::new(&url, cred.clone(), Some(c)).unwrap(),
        keys: KeyClient::new(&url, cred.clone(), Some(k)).unwrap(),
        secrets: SecretClient::new(&url, cred, Some(s)).unwrap(),
    }
}

fn policy(
    kty: KeyType,
    curve: Option<CurveName>,
    exportable: bool,
    content_type: &str,
) -> CertificatePolicy {
    CertificatePolicy {
        x509_certificate_properties: Some(X509CertificateProperties {
            subject: Some("CN=keyroll-signing".into()),
            validity_in_months: Some(12),
            ..Default::default()
        }),
        issuer_parameters: Some(IssuerParameters {
            name: Some("Self".into()),
            ..Default::default()
        }),
        key_properties: Some(KeyProperties {
            key_type: Some(kty),
            curve,
            exportable: Some(exportable),
            key_size: None,
            reuse_key: Some(false),
        }),
        secret_properties: Some(SecretProperties {
            content_type: Some(content_type.into()),
        }),
        ..Default::default()
    }
}

/// Version `version` of secret `name` (the latest when `None`), converted to
/// `out_content_type` when set.
async fn get_secret(
    secrets: &SecretClient,
    name: &str,
    version: Option<&str>,
    out_content_type: Option<ContentType>,
) -> Secret {
    let options = SecretClientGetSecretOptions {
        secret_version: version.map(str::to_string),
        out_content_type,
        ..Default::default()
    };
    secrets
        .get_secret(name, Some(options))
        .await
        .unwrap()
        .into_model()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_versions_get_sign_and_secret_as_pkcs12_and_pem() {
    let emu = common::start().await;
    let c = clients(&emu, "certs");
    let rsa_pkcs12 = policy(KeyType::Rsa, None, true, "application/x-pkcs12");
    emu.admin().reset_counters();
    let first = common::create_certificate(&c.certs, "sts", Some(rsa_pkcs12)).await;
    assert!(
        emu.admin().counter("certificates.pending") >= 1,
        "the client polled the pending operation"
    );
    let first_version = first.resource_id().unwrap().version.unwrap();
    assert!(common::is_version(&first_version));
    let cer = first.cer.clone().unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&cer).unwrap();
    assert_eq!(x509.subject().to_string(), "CN=keyroll-signing");
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cer);
    assert_eq!(
        first.x509_thumbprint.as_deref(),
        Some(sha1.as_ref()),
        "x5t is the SHA-1 thumbprint of cer"
    );
    assert_eq!(
        first.kid.as_deref(),
        Some(
            format!(
                "https://certs.vault.localhost:{}/keys/sts/{first_version}",
                emu.port()
            )
            .as_str()
        )
    );

    // A second version with the stored policy.
    let second = common::create_certificate(&c.certs, "sts", None).await;
    let second_version = second.resource_id().unwrap().version.unwrap();
    assert_ne!(first_version, second_version);

    let mut pager = c
        .certs
        .list_certificate_properties_versions(
            "sts",
            Some(CertificateClientListCertificatePropertiesVersionsOptions {
                maxresults: Some(1),
                ..Default::default()
            }),
        )
        .unwrap();
    let mut listed = Vec::new();
    while let Some(item) = pager.try_next().await.unwrap() {
        assert!(item.x509_thumbprint.is_some());
        listed.push(item.resource_id().unwrap().version.unwrap());
    }
    assert_eq!(listed, vec![first_version.clone(), second_version.clone()]);

    let latest = c
        .certs
        .get_certificate("sts", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        latest.resource_id().unwrap().version.as_deref(),
        Some(second_version.as_str())
    );
    let by_version = c
        .certs
        .get_certificate(
            "sts",
            Some(CertificateClientGetCertificateOptions {
                certificate_version: Some(first_version.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(by_version.cer.as_deref(), Some(cer.as_slice()));

    // The certificate's key signs what the certificate certifies.
    let message = b"header.claims";
    let digest = common::digest("RS256", message);
    let signed = common::sign(
        &c.keys,
        "sts",
        Some(&first_version),
        SignatureAlgorithm::Rs256,
        digest.clone(),
    )
    .await
    .unwrap();
    assert!(common::verify_with_cert(
        "RS256",
        &cer,
        message,
        &signed.result.unwrap()
    ));

    // The secret as PKCS#12: the private key inside matches the certificate.
    let secret = get_secret(&c.secrets, "sts", Some(&first_version), None).await;
    assert_eq!(secret.content_type.as_deref(), Some("application/x-pkcs12"));
    assert_eq!(secret.managed, Some(true));
    let pfx = base64::engine::general_purpose::STANDARD
        .decode(secret.value.unwrap())
        .unwrap();
    let store =
        p12_keystore::KeyStore::from_pkcs12(&pfx, "", p12_keystore::Pkcs12ImportPolicy::Relaxed)
            .unwrap();
    let (_, chain) = store.private_key_chain().unwrap();
    assert_eq!(chain.certs()[0].as_der(), cer.as_slice());
    let key = aws_lc_rs::rsa::KeyPair::from_pkcs8(chain.key().as_der()).unwrap();
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        message,
        &mut sig,
    )
    .unwrap();
    assert!(common::verify_with_cert("RS256", &cer, message, &sig));

    // The same secret converted to PEM.
    let pem_secret = get_secret(
        &c.secrets,
        "sts",
        Some(&first_version),
        Some(ContentType::Pem),
    )
    .await;
    assert_eq!(
        pem_secret.content_type.as_deref(),
        Some("application/x-pem-file")
    );
    let blocks = pem::parse_many(pem_secret.value.unwrap()).unwrap();
    assert_eq!(blocks[0].tag(), "PRIVATE KEY");
    assert_eq!(blocks[0].contents(), chain.key().as_der());
    assert_eq!(blocks[1].tag(), "CERTIFICATE");
    assert_eq!(blocks[1].contents(), cer.as_slice());

    // Disabling the certificate version disables its key: it refuses to sign.
    let update = UpdateCertificatePropertiesParameters {
        certificate_attributes: Some(CertificateAttributes {
            enabled: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let disabled = c
        .certs
        .update_certificate_properties(
            "sts",
            update.try_into().unwrap(),
            Some(CertificateClientUpdateCertificatePropertiesOptions {
                certificate_version: Some(first_version.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(disabled.attributes.unwrap().enabled, Some(false));
    let err = common::sign(
        &c.keys,
        "sts",
        Some(&first_version),
        SignatureAlgorithm::Rs256,
        digest,
    )
    .await
    .unwrap_err();
    assert_eq!(err.http_status().map(u16::from), Some(403));

    let missing = c.certs.get_certificate("nope", None).await.unwrap_err();
    assert_eq!(common::error_code(&missing), Some("CertificateNotFound"));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec_pem_certificate_not_exportable_and_plain_secrets() {
    let emu = common::start().await;
    let c = clients(&emu, "ecvault");
    let ec_pem = policy(
        KeyType::Ec,
        Some(CurveName::P256),
        false,
        "application/x-pem-file",
    );
    let cert = common::create_certificate(&c.certs, "edge", Some(ec_pem)).await;
    let cer = cert.cer.unwrap();
    let message = b"ec.message";
    let digest = common::digest("ES256", message);
    let signed = common::sign(&c.keys, "edge", None, SignatureAlgorithm::Es256, digest)
        .await
        .unwrap();
    assert!(common::verify_with_cert(
        "ES256",
        &cer,
        message,
        &signed.result.unwrap()
    ));

    let secret = get_secret(&c.secrets, "edge", None, None).await;
    assert_eq!(
        secret.content_type.as_deref(),
        Some("application/x-pem-file")
    );
    let blocks = pem::parse_many(secret.value.unwrap()).unwrap();
    assert_eq!(
        blocks.len(),
        1,
        "a non-exportable key's secret holds no private key"
    );
    assert_eq!(blocks[0].tag(), "CERTIFICATE");

    // Plain secrets: set, versions, latest.
    let set = SetSecretParameters {
        value: Some("one".into()),
        ..Default::default()
    };
    let v1 = c
        .secrets
        .set_secret("plain", set.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let set = SetSecretParameters {
        value: Some("two".into()),
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    c.secrets
        .set_secret("plain", set.try_into().unwrap(), None)
        .await
        .unwrap();
    let latest = get_secret(&c.secrets, "plain", None, None).await;
    assert_eq!(latest.value.as_deref(), Some("two"));
    let v1_id = v1.id.clone().unwrap();
    let v1_version = v1_id.rsplit('/').next().unwrap();
    let first = get_secret(&c.secrets, "plain", Some(v1_version), None).await;
    assert_eq!(first.value.as_deref(), Some("one"));
    let mut pager = c
        .secrets
        .list_secret_properties_versions("plain", None)
        .unwrap();
    let mut n = 0;
    while let Some(item) = pager.try_next().await.unwrap() {
        assert!(item.id.unwrap().contains("/secrets/plain/"));
        n += 1;
    }
    assert_eq!(n, 2);
    let err = c.secrets.get_secret("absent", None).await.unwrap_err();
    assert_eq!(common::error_code(&err), Some("SecretNotFound"));
    emu.shutdown().await;
}
