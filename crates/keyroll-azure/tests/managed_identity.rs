//! Managed identity from the environment, end to end: `credential_from_env` picks the App
//! Service managed identity, `EntraTokens` gets a token the validator accepts against the
//! emulator's JWKS, and the token opens the vault. The credential reads `IDENTITY_ENDPOINT` and
//! `IDENTITY_HEADER` from the process environment, and setting it in-process needs `unsafe`
//! (forbidden here), so this test runs itself twice: as the parent it starts the emulator and
//! re-runs its own binary with that environment; as the child it does the work. A plain `main`
//! (`harness = false`), so both halves always run.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::ExitCode;
use std::time::SystemTime;

use keyroll_emulator::{Curve, KeySpec, KeyVersionOptions};

fn main() -> ExitCode {
    common::parent_or_child("managed_identity", parent, child)
}

async fn parent() {
    let emu = common::start().await;
    emu.admin()
        .create_key_version(
            "miv",
            "signing",
            KeyVersionOptions::new(KeySpec::Ec(Curve::P256)),
        )
        .unwrap();
    let mut command = common::child_command();
    command
        .env_remove("AZURE_CLIENT_ID")
        .env_remove("AZURE_CLIENT_SECRET")
        .env_remove("AZURE_FEDERATED_TOKEN_FILE")
        .env_remove("KEYROLL_CREDENTIAL")
        .env("IDENTITY_ENDPOINT", emu.identity_endpoint().as_str())
        .env("IDENTITY_HEADER", emu.identity_header())
        .env("KEYROLL_TEST_CA", emu.ca_path())
        .env("KEYROLL_TEST_VAULT", emu.vault_url("miv").as_str())
        .env("KEYROLL_TEST_RESOURCE", emu.vault_resource())
        .env("KEYROLL_TEST_JWKS", emu.jwks_url(emu.tenant_id()).as_str())
        .env("KEYROLL_TEST_ISSUER", emu.issuer_v1(emu.tenant_id()))
        .env("KEYROLL_TEST_MI_CLIENT", emu.managed_identity_client_id());
    common::run_child(command, "managed-identity").await;
    assert!(emu.admin().counter("msi.token") >= 1);
    assert!(
        emu.admin().counter("keys.versions") >= 1,
        "the child listed the key with its token"
    );
    emu.shutdown().await;
}

async fn child() {
    // credential_from_env picks managed identity from IDENTITY_ENDPOINT; the validator
    // accepts its token, which opens the vault.
    let token = common::child_token_validates_and_opens_the_vault().await;
    assert!(token.expires_at() > SystemTime::now());
    assert_eq!(
        common::jwt_part(token.secret(), 1)["appid"],
        std::env::var("KEYROLL_TEST_MI_CLIENT").unwrap()
    );
}
