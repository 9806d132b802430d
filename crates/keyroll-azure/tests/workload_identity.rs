//! Workload identity from the environment, end to end: the emulator plays the Kubernetes
//! cluster (it writes the projected service-account token) and Entra ID (an app with a
//! federated credential for that service account); `credential_from_env` picks workload
//! identity from `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and
//! `AZURE_AUTHORITY_HOST`, `EntraTokens` gets a Key Vault token the validator accepts against
//! the emulator's JWKS, and the token opens the vault. The variables are read from the process
//! environment, and setting them in-process needs `unsafe` (forbidden here), so this test runs
//! itself twice: as the parent it starts the emulator and re-runs its own binary with that
//! environment; as the child it does the work. A plain `main` (`harness = false`).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::ExitCode;

use keyroll_emulator::{Curve, KeySpec, KeyVersionOptions};

const CLIENT_ID: &str = "aks-workload";

fn main() -> ExitCode {
    common::parent_or_child("workload_identity", parent, child)
}

async fn parent() {
    let token_file =
        std::env::temp_dir().join(format!("keyroll-azure-wi-token-{}", std::process::id()));
    let emu = keyroll_emulator::Emulator::builder()
        .workload_identity(CLIENT_ID, "system:serviceaccount:payments:api")
        .service_account_token_file("payments", "api", &token_file)
        .start()
        .await
        .unwrap();
    emu.admin()
        .create_key_version(
            "wiv",
            "signing",
            KeyVersionOptions::new(KeySpec::Ec(Curve::P256)),
        )
        .unwrap();
    let mut command = common::child_command();
    command
        .env_remove("AZURE_CLIENT_SECRET")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("MSI_ENDPOINT")
        .env_remove("KEYROLL_CREDENTIAL")
        .env("AZURE_FEDERATED_TOKEN_FILE", &token_file)
        .env("AZURE_CLIENT_ID", CLIENT_ID)
        .env("AZURE_TENANT_ID", emu.tenant_id())
        .env("AZURE_AUTHORITY_HOST", emu.authority_host().as_str())
        .env("KEYROLL_TEST_CA", emu.ca_path())
        .env("KEYROLL_TEST_VAULT", emu.vault_url("wiv").as_str())
        .env("KEYROLL_TEST_RESOURCE", emu.vault_resource())
        .env("KEYROLL_TEST_JWKS", emu.jwks_url(emu.tenant_id()).as_str())
        .env("KEYROLL_TEST_ISSUER", emu.issuer_v1(emu.tenant_id()));
    common::run_child(command, "workload-identity").await;
    assert!(
        emu.admin().counter("entra.token") >= 1,
        "the child exchanged its token"
    );
    assert!(
        emu.admin().counter("keys.versions") >= 1,
        "the child listed the key"
    );
    emu.shutdown().await;
    std::fs::remove_file(&token_file).unwrap();
}

async fn child() {
    // credential_from_env picks workload identity from AZURE_FEDERATED_TOKEN_FILE; the
    // validator accepts its token, which opens the vault.
    let token = common::child_token_validates_and_opens_the_vault().await;
    let claims = common::jwt_part(token.secret(), 1);
    assert_eq!(claims["appid"], CLIENT_ID);
    assert_eq!(claims["appidacr"], "2");
}
