//! The official Rust `KeyClient` against the emulator over HTTPS, challenge-resource check on.
#![allow(
    clippy::unwrap_used,
    clippy::field_reassign_with_default,
    clippy::type_complexity
)]

mod common;

use std::sync::Arc;

use azure_security_keyvault_keys::models::{
    CreateKeyParameters, CurveName, KeyAttributes, KeyClientGetKeyOptions,
    KeyClientListKeyPropertiesVersionsOptions, KeyClientUpdateKeyPropertiesOptions, KeyType,
    SignatureAlgorithm, UpdateKeyPropertiesParameters, VerifyParameters,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions, ResourceExt};
use futures_util::TryStreamExt as _;
use keyroll_emulator::EmulatorHandle;

fn key_client(emu: &EmulatorHandle, vault: &str) -> KeyClient {
    let mut opts = KeyClientOptions::default();
    opts.client_options = common::client_options(emu);
    assert_eq!(opts.verify_challenge_resource, Some(true));
    KeyClient::new(
        vault_str(emu, vault).as_str(),
        common::secret_credential(emu),
        Some(opts),
    )
    .unwrap()
}

fn vault_str(emu: &EmulatorHandle, vault: &str) -> String {
    emu.vault_url(vault).to_string()
}

fn alg(name: &str) -> SignatureAlgorithm {
    match name {
        "RS256" => SignatureAlgorithm::Rs256,
        "RS384" => SignatureAlgorithm::Rs384,
        "RS512" => SignatureAlgorithm::Rs512,
        "PS256" => SignatureAlgorithm::Ps256,
        "PS384" => SignatureAlgorithm::Ps384,
        "PS512" => SignatureAlgorithm::Ps512,
        "ES256" => SignatureAlgorithm::Es256,
        "ES384" => SignatureAlgorithm::Es384,
        "ES512" => SignatureAlgorithm::Es512,
        other => panic!("{other}"),
    }
}

/// The vault's verdict on `signature` over `digest` with version `version` of key `name`.
async fn verify(
    client: &KeyClient,
    name: &str,
    version: &str,
    alg_name: &str,
    digest: &[u8],
    signature: &[u8],
) -> Option<bool> {
    let params = VerifyParameters {
        algorithm: Some(alg(alg_name)),
        digest: Some(digest.to_vec()),
        signature: Some(signature.to_vec()),
    };
    client
        .verify(name, version, params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rotate_list_across_pages_get_and_disable() {
    let emu = common::start().await;
    let client = key_client(&emu, "rotations");
    let params = CreateKeyParameters {
        kty: Some(KeyType::Rsa),
        key_size: Some(2048),
        ..Default::default()
    };
    let first = client
        .create_key("signing", params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let first_id = first.resource_id().unwrap();
    assert_eq!(first_id.name, "signing");
    let first_version = first_id.version.clone().unwrap();
    assert!(common::is_version(&first_version));
    let kid = first.key.as_ref().unwrap().kid.clone().unwrap();
    assert_eq!(
        kid,
        format!(
            "https://rotations.vault.localhost:{}/keys/signing/{first_version}",
            emu.port()
        )
    );

    let mut versions = vec![first_version.clone()];
    for _ in 0..4 {
        let rotated = client
            .rotate_key("signing", None)
            .await
            .unwrap()
            .into_model()
            .unwrap();
        versions.push(rotated.resource_id().unwrap().version.unwrap());
    }

    emu.admin().reset_counters();
    let mut pager = client
        .list_key_properties_versions(
            "signing",
            Some(KeyClientListKeyPropertiesVersionsOptions {
                maxresults: Some(2),
                ..Default::default()
            }),
        )
        .unwrap();
    let mut listed = Vec::new();
    while let Some(item) = pager.try_next().await.unwrap() {
        assert!(item.attributes.as_ref().unwrap().created.is_some());
        listed.push(item.resource_id().unwrap().version.unwrap());
    }
    assert_eq!(listed, versions, "every version, in order, across pages");
    assert_eq!(
        emu.admin().counter("keys.versions"),
        3,
        "5 versions in pages of 2"
    );

    // Latest (trailing slash) and by version.
    let latest = client
        .get_key("signing", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        latest.resource_id().unwrap().version.as_deref(),
        versions.last().map(String::as_str)
    );
    let old = client
        .get_key(
            "signing",
            Some(KeyClientGetKeyOptions {
                key_version: Some(first_version.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(old.key.unwrap().n, first.key.as_ref().unwrap().n);

    // Disable the first version: it refuses to sign with 403 Forbidden.
    let update = UpdateKeyPropertiesParameters {
        key_attributes: Some(KeyAttributes {
            enabled: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let disabled = client
        .update_key_properties(
            "signing",
            update.try_into().unwrap(),
            Some(KeyClientUpdateKeyPropertiesOptions {
                key_version: Some(first_version.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(disabled.attributes.unwrap().enabled, Some(false));
    let digest = common::digest("RS256", b"payload");
    let err = common::sign(
        &client,
        "signing",
        Some(&first_version),
        SignatureAlgorithm::Rs256,
        digest.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.http_status().map(u16::from), Some(403), "{err:?}");
    assert_eq!(common::error_code(&err), Some("Forbidden"));
    // The latest version still signs.
    let signed = common::sign(&client, "signing", None, SignatureAlgorithm::Rs256, digest)
        .await
        .unwrap();
    assert!(signed.kid.unwrap().ends_with(versions.last().unwrap()));

    // A missing key is KeyNotFound.
    let err = client.get_key("missing", None).await.unwrap_err();
    assert_eq!(common::error_code(&err), Some("KeyNotFound"));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_with_every_algorithm_verifies_independently() {
    let emu = common::start().await;
    let client = Arc::new(key_client(&emu, "signer"));
    let cases: [(&str, KeyType, Option<i32>, Option<CurveName>, &[&str]); 4] = [
        (
            "rsa",
            KeyType::Rsa,
            Some(2048),
            None,
            &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
        ),
        ("p256", KeyType::Ec, None, Some(CurveName::P256), &["ES256"]),
        ("p384", KeyType::Ec, None, Some(CurveName::P384), &["ES384"]),
        (
            "p521",
            KeyType::EcHsm,
            None,
            Some(CurveName::P521),
            &["ES512"],
        ),
    ];
    let message = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrZXlyb2xsIn0";
    for (name, kty, key_size, curve, algs) in cases {
        let params = CreateKeyParameters {
            kty: Some(kty),
            key_size,
            curve,
            ..Default::default()
        };
        let key = client
            .create_key(name, params.try_into().unwrap(), None)
            .await
            .unwrap()
            .into_model()
            .unwrap();
        let version = key.resource_id().unwrap().version.unwrap();
        let jwk = key.key.unwrap();
        for a in algs {
            let digest = common::digest(a, message);
            let signature = common::sign(&client, name, Some(&version), alg(a), digest.clone())
                .await
                .unwrap()
                .result
                .unwrap();
            let ok = match (&jwk.n, &jwk.e, &jwk.x, &jwk.y) {
                (Some(n), Some(e), _, _) => common::verify_with_jwk(a, n, e, message, &signature),
                (_, _, Some(x), Some(y)) => {
                    assert_eq!(signature.len(), 2 * x.len(), "{a}: raw r||s");
                    common::verify_with_jwk(a, x, y, message, &signature)
                }
                _ => panic!("no public key in the JWK"),
            };
            assert!(ok, "{a} signature does not verify with aws-lc-rs");
            let verified = verify(&client, name, &version, a, &digest, &signature).await;
            assert_eq!(verified, Some(true), "{a}");
            let mut tampered = signature;
            tampered[0] ^= 0x55;
            let verified = verify(&client, name, &version, a, &digest, &tampered).await;
            assert_eq!(verified, Some(false), "{a} tampered");
        }
    }
    // The digest length must fit the algorithm.
    let err = common::sign(
        &client,
        "p256",
        None,
        SignatureAlgorithm::Es256,
        vec![0u8; 20],
    )
    .await
    .unwrap_err();
    assert_eq!(common::error_code(&err), Some("BadParameter"));
    assert_eq!(emu.admin().counter("keys.sign"), 10);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_versions_with_chosen_created_times_and_retried_faults() {
    let emu = common::start().await;
    let admin = emu.admin();
    let now = admin.now();
    let old = admin
        .create_key_version(
            "history",
            "rolling",
            keyroll_emulator::KeyVersionOptions::new(keyroll_emulator::KeySpec::Ec(
                keyroll_emulator::Curve::P256,
            ))
            .created(now - 2 * 86_400),
        )
        .unwrap();
    admin.advance_clock(std::time::Duration::from_secs(3 * 86_400));
    let client = key_client(&emu, "history");
    let rotated = client
        .rotate_key("rolling", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let created = rotated
        .attributes
        .unwrap()
        .created
        .unwrap()
        .unix_timestamp();
    assert!(
        (now + 3 * 86_400..now + 3 * 86_400 + 5).contains(&created),
        "rotation uses the moved clock"
    );

    let mut pager = client
        .list_key_properties_versions("rolling", None)
        .unwrap();
    let mut seen = Vec::new();
    while let Some(item) = pager.try_next().await.unwrap() {
        seen.push((
            item.resource_id().unwrap().version.unwrap(),
            item.attributes.unwrap().created.unwrap().unix_timestamp(),
        ));
    }
    assert_eq!(seen[0], (old.version.clone(), now - 2 * 86_400));
    assert_eq!(seen.len(), 2);

    // A 503 then a 429 without Retry-After: the SDK's retry policy gets through.
    admin.reset_counters();
    admin.inject_fault(
        keyroll_emulator::Fault::new("keys.sign", keyroll_emulator::FaultKind::Status(503))
            .times(1),
    );
    admin.inject_fault(
        keyroll_emulator::Fault::new(
            "keys",
            keyroll_emulator::FaultKind::Throttle { retry_after: None },
        )
        .vault("history")
        .times(1),
    );
    let digest = common::digest("ES256", b"x");
    common::sign(&client, "rolling", None, SignatureAlgorithm::Es256, digest)
        .await
        .unwrap();
    assert_eq!(
        admin.counter("keys.sign"),
        3,
        "two faulted attempts and the success"
    );
    assert!(admin.faults().is_empty(), "both faults ran out");
    emu.shutdown().await;
}
