//! `ManagedIdentityCredential` (App Service flavour) against the emulator. The official
//! credential reads `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` from the process environment, and
//! setting it in-process needs `unsafe` (forbidden here), so this test runs itself twice: as the
//! parent it starts the emulator and re-runs its own binary with that environment; as the child
//! it uses the credential. A plain `main` (`harness = false`), so both halves always run.
//!
//! The child uses the system-assigned identity, then a user-assigned one selected by its client
//! id and by its object id (the Rust credential refuses a resource id for App Service; the
//! Python suite and `identity.rs` select by resource id), then an identity that is not
//! assigned (App Service's 400).
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;

use std::process::ExitCode;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use azure_security_keyvault_keys::models::SignatureAlgorithm;
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use keyroll_emulator::ManagedIdentity;

const CHILD_ENV: &str = "KEYROLL_EMULATOR_MI_CHILD";
const CHILD_DONE: &str = "managed identity child: ok";

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os(CHILD_ENV).is_some() {
        runtime.block_on(child());
        println!("{CHILD_DONE}");
    } else {
        runtime.block_on(parent());
        println!("managed_identity: 1 passed, 0 failed");
    }
    ExitCode::SUCCESS
}

async fn parent() {
    let orders = ManagedIdentity::user_assigned("orders");
    let emu = keyroll_emulator::Emulator::builder()
        .client_secret(common::CLIENT_ID, common::CLIENT_SECRET)
        .user_assigned_identity(orders.clone())
        .start()
        .await
        .unwrap();
    let system = emu.system_assigned_identity();
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .env("IDENTITY_ENDPOINT", emu.identity_endpoint().as_str())
        .env("IDENTITY_HEADER", emu.identity_header())
        .env(CHILD_ENV, "1")
        .env("KEYROLL_EMULATOR_TEST_CA", emu.ca_path())
        .env(
            "KEYROLL_EMULATOR_TEST_VAULT",
            emu.vault_url("mivault").as_str(),
        )
        .env("KEYROLL_EMULATOR_TEST_RESOURCE", emu.vault_resource())
        .env("KEYROLL_EMULATOR_TEST_SYSTEM", &system.client_id)
        .env("KEYROLL_EMULATOR_TEST_UA_CLIENT", &orders.client_id)
        .env("KEYROLL_EMULATOR_TEST_UA_OBJECT", &orders.object_id)
        .env("KEYROLL_EMULATOR_TEST_UA_RESOURCE", &orders.resource_id);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains(CHILD_DONE),
        "the managed-identity child failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        emu.admin().counter("msi.token") >= 1,
        "the child fetched its token from the endpoint"
    );
    assert!(
        emu.admin().counter("keys.create") >= 1,
        "the child used the vault"
    );
    emu.shutdown().await;
}

async fn child() {
    let ca = std::fs::read_to_string(std::env::var("KEYROLL_EMULATOR_TEST_CA").unwrap()).unwrap();
    let vault = std::env::var("KEYROLL_EMULATOR_TEST_VAULT").unwrap();
    let resource = std::env::var("KEYROLL_EMULATOR_TEST_RESOURCE").unwrap();
    let http = keyroll_emulator::localhost_http_client(&ca).unwrap();
    let mut client_options = azure_core::http::ClientOptions::default();
    client_options.transport = Some(azure_core::http::Transport::new(Arc::new(http)));
    let mut opts = ManagedIdentityCredentialOptions::default();
    opts.client_options = client_options.clone();
    let cred = ManagedIdentityCredential::new(Some(opts)).unwrap();
    let scope = format!("{resource}/.default");
    let token = cred.get_token(&[scope.as_str()], None).await.unwrap();
    let claims = common::claims_of(token.token.secret());
    assert_eq!(claims["aud"], resource);
    assert_eq!(
        claims["appid"],
        std::env::var("KEYROLL_EMULATOR_TEST_SYSTEM").unwrap()
    );
    assert_eq!(claims["ver"], "1.0");
    assert!(token.expires_on > azure_core::time::OffsetDateTime::now_utc());

    // A user-assigned identity, selected by its client id or its object id, gets its own token.
    let var = |n: &str| std::env::var(n).unwrap();
    let (ua_client, ua_object, ua_resource) = (
        var("KEYROLL_EMULATOR_TEST_UA_CLIENT"),
        var("KEYROLL_EMULATOR_TEST_UA_OBJECT"),
        var("KEYROLL_EMULATOR_TEST_UA_RESOURCE"),
    );
    let user_assigned = |id: UserAssignedId| {
        let mut opts = ManagedIdentityCredentialOptions::default();
        opts.client_options = client_options.clone();
        opts.user_assigned_id = Some(id);
        ManagedIdentityCredential::new(Some(opts)).unwrap()
    };
    for id in [
        UserAssignedId::ClientId(ua_client.clone()),
        UserAssignedId::ObjectId(ua_object.clone()),
    ] {
        let what = format!("{id:?}");
        let token = user_assigned(id)
            .get_token(&[scope.as_str()], None)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let claims = common::claims_of(token.token.secret());
        assert_eq!(claims["appid"], ua_client.as_str(), "{what}");
        assert_eq!(claims["oid"], ua_object.as_str(), "{what}");
        assert_eq!(claims["xms_mirid"], ua_resource.as_str(), "{what}");
    }
    // An identity that is not assigned to the site: App Service's 400, which the credential
    // recognises as such.
    let error = user_assigned(UserAssignedId::ClientId(
        "00000000-0000-0000-0000-00000000dead".into(),
    ))
    .get_token(&[scope.as_str()], None)
    .await
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("The requested identity has not been assigned to this resource"),
        "{error}"
    );

    let mut k = KeyClientOptions::default();
    k.client_options = client_options;
    let keys = KeyClient::new(&vault, cred, Some(k)).unwrap();
    let params = azure_security_keyvault_keys::models::CreateKeyParameters {
        kty: Some(azure_security_keyvault_keys::models::KeyType::Ec),
        ..Default::default()
    };
    let key = keys
        .create_key("mi-key", params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let jwk = key.key.unwrap();
    let message = b"managed identity";
    let digest = common::digest("ES256", message);
    let sig = common::sign(&keys, "mi-key", None, SignatureAlgorithm::Es256, digest)
        .await
        .unwrap()
        .result
        .unwrap();
    assert!(common::verify_with_jwk(
        "ES256",
        &jwk.x.unwrap(),
        &jwk.y.unwrap(),
        message,
        &sig
    ));
}
