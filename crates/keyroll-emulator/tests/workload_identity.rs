//! Workload identity end to end: the emulator's Kubernetes issuer writes a projected
//! service-account token, Microsoft's `WorkloadIdentityCredential` exchanges it (an app with
//! a federated credential for that issuer and subject) and the token opens a vault; the
//! issuer's discovery and keys verify the token; and the refusals Entra gives for an issuer,
//! a subject or an audience no federated credential names, a bad signature and an expired
//! token.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;

use azure_core::credentials::TokenCredential;
use azure_identity::{
    ClientAssertionCredentialOptions, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyroll_emulator::{
    App, Curve, Emulator, EmulatorHandle, FederatedCredential, KeySpec, KeyVersionOptions,
};
use serde_json::Value;

const SUBJECT: &str = "system:serviceaccount:payments:api";

async fn start(token_file: &std::path::Path) -> EmulatorHandle {
    Emulator::builder()
        .workload_identity("aks-app", SUBJECT)
        .service_account_token_file("payments", "api", token_file)
        .start()
        .await
        .unwrap()
}

/// Posts `assertion` as `client_id`'s client assertion; the status and the error code.
async fn exchange(emu: &EmulatorHandle, client_id: &str, assertion: &str) -> (u16, i64) {
    let scope = format!("{}/.default", emu.vault_resource());
    let resp = emu
        .http_client()
        .post(emu.token_endpoint(emu.tenant_id()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", scope.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body["error_codes"][0].as_i64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_credential_reaches_a_vault() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    let emu = start(&token_file).await;
    emu.admin()
        .create_key_version(
            "wiv",
            "signing",
            KeyVersionOptions::new(KeySpec::Ec(Curve::P256)),
        )
        .unwrap();

    let projected = std::fs::read_to_string(&token_file).unwrap();
    let claims = common::claims_of(&projected);
    assert_eq!(claims["iss"], emu.kubernetes_issuer());
    assert_eq!(claims["sub"], SUBJECT);
    assert_eq!(claims["aud"][0], "api://AzureADTokenExchange");

    let mut options = WorkloadIdentityCredentialOptions::default();
    options.credential_options = ClientAssertionCredentialOptions {
        client_options: common::credential_options(&emu),
    };
    options.tenant_id = Some(emu.tenant_id().to_string());
    options.client_id = Some("aks-app".into());
    options.token_file_path = Some(token_file.clone());
    let credential = WorkloadIdentityCredential::new(Some(options)).unwrap();
    let scope = format!("{}/.default", emu.vault_resource());
    let token = credential.get_token(&[scope.as_str()], None).await.unwrap();
    let access = common::claims_of(token.token.secret());
    assert_eq!(access["appid"], "aks-app");
    assert_eq!(access["appidacr"], "2");
    assert_eq!(access["iss"], emu.issuer_v1(emu.tenant_id()));

    let mut k = KeyClientOptions::default();
    k.client_options = common::client_options(&emu);
    let keys = KeyClient::new(emu.vault_url("wiv").as_str(), credential, Some(k)).unwrap();
    let key = keys
        .get_key("signing", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(key.key.unwrap().kid.unwrap().contains("/keys/signing/"));
    assert!(emu.admin().counter("entra.token") >= 1);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_issuer_publishes_what_verifies_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let emu = start(&dir.path().join("token")).await;
    let http = emu.http_client();
    let discovery: Value = common::send_json(http.get(format!(
        "{}/.well-known/openid-configuration",
        emu.kubernetes_issuer()
    )))
    .await;
    assert_eq!(discovery["issuer"], emu.kubernetes_issuer());
    let jwks: Value = common::send_json(http.get(discovery["jwks_uri"].as_str().unwrap())).await;
    let key = &jwks["keys"][0];
    let token = emu
        .admin()
        .service_account_token("payments", "api", None)
        .unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap();
    assert!(common::verify_with_jwk(
        "RS256",
        &n,
        &e,
        input.as_bytes(),
        &URL_SAFE_NO_PAD.decode(sig).unwrap()
    ));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_assertions_entra_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let emu = start(&dir.path().join("token")).await;
    let admin = emu.admin();
    let good = admin
        .service_account_token("payments", "api", None)
        .unwrap();
    assert_eq!(exchange(&emu, "aks-app", &good).await, (200, 0));
    // Another service account, another audience.
    let other_subject = admin
        .service_account_token("payments", "worker", None)
        .unwrap();
    assert_eq!(
        exchange(&emu, "aks-app", &other_subject).await,
        (401, 700_213)
    );
    let other_audience = admin
        .service_account_token("payments", "api", Some("api://elsewhere"))
        .unwrap();
    assert_eq!(
        exchange(&emu, "aks-app", &other_audience).await,
        (401, 700_212)
    );
    // An app that trusts another issuer only.
    admin
        .register_app(
            App::new("other-cluster-app").federated_credential(FederatedCredential::new(
                "https://oidc.other-cluster.example",
                SUBJECT,
            )),
        )
        .unwrap();
    assert_eq!(
        exchange(&emu, "other-cluster-app", &good).await,
        (401, 700_211)
    );
    // A tampered signature.
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    bytes[7] ^= 1;
    let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes));
    assert_eq!(exchange(&emu, "aks-app", &tampered).await, (401, 700_027));
    // A token issued two hours ago (by the emulator's clock) has expired.
    admin.shift_clock(-7200);
    let old = admin
        .service_account_token("payments", "api", None)
        .unwrap();
    admin.shift_clock(7200);
    assert_eq!(exchange(&emu, "aks-app", &old).await, (401, 700_024));
    emu.shutdown().await;
}
