//! Shared test wiring: an emulator, credentials and vault options pointed at it, and clocks
//! that move together.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use keyroll_azure::{
    KeyVaultCertificates, KeyVaultKeys, client_options_with_transport,
    credential_options_with_transport,
};
use keyroll_core::jwt::Issuer;
use keyroll_core::{ManualClock, from_unix_seconds};
use keyroll_emulator::{CertificateVersionOptions, EmulatorHandle};
use keyroll_tower::validate::ValidateLayer;
use tower::{ServiceBuilder, ServiceExt as _};

/// Set in the child process of a test that needs an environment of its own.
const CHILD: &str = "KEYROLL_AZURE_TEST_CHILD";
const CHILD_DONE: &str = "test child: ok";

/// The `main` of a test whose credential comes from the environment (`credential_from_env`
/// reads it, and tests share one): `parent` starts this binary again through [`run_child`]
/// with the environment it wants, and there `child` runs.
pub fn parent_or_child<P, C>(
    name: &str,
    parent: fn() -> P,
    child: fn() -> C,
) -> std::process::ExitCode
where
    P: std::future::Future<Output = ()>,
    C: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os(CHILD).is_some() {
        runtime.block_on(child());
        println!("{CHILD_DONE}");
    } else {
        runtime.block_on(parent());
        println!("{name}: 1 passed, 0 failed");
    }
    std::process::ExitCode::SUCCESS
}

/// A command that runs this test binary again as the child of [`parent_or_child`].
pub fn child_command() -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.env(CHILD, "1");
    command
}

/// Runs the child of [`parent_or_child`] and asserts that it passed.
pub async fn run_child(mut command: std::process::Command, what: &str) {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(CHILD_DONE),
        "the {what} child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// In the child of [`parent_or_child`]: the credential `credential_from_env` picks gets a
/// token for `KEYROLL_TEST_RESOURCE` that the validator accepts (keys at `KEYROLL_TEST_JWKS`,
/// issuer `KEYROLL_TEST_ISSUER`) and that lists the key `signing` of `KEYROLL_TEST_VAULT`.
/// Returns the token, for the child's own checks of its claims.
pub async fn child_token_validates_and_opens_the_vault() -> keyroll_core::token::Token {
    let var = |name: &str| std::env::var(name).unwrap();
    let ca = std::fs::read_to_string(var("KEYROLL_TEST_CA")).unwrap();
    let http = keyroll_emulator::localhost_http_client(&ca).unwrap();
    let credential =
        keyroll_azure::credential_from_env(Some(client_options_with_transport(http.clone())))
            .unwrap();
    let resource = var("KEYROLL_TEST_RESOURCE");
    let tokens =
        keyroll_azure::EntraTokens::new(credential.clone(), &[&format!("{resource}/.default")]);
    let token = tokens.access_token(&resource).await.unwrap();
    let jwks = keyroll_core::JwksSource::new(&var("KEYROLL_TEST_JWKS"))
        .unwrap()
        .with_client(http.clone());
    let issuer = Issuer::new(
        keyroll_core::KeyCache::builder(jwks).build(),
        keyroll_core::jwt::Validation::new(var("KEYROLL_TEST_ISSUER"), [resource.as_str()]),
    );
    assert_eq!(
        status_through_validator(issuer, token.secret()).await,
        StatusCode::OK
    );
    let keys = KeyVaultKeys::builder(&var("KEYROLL_TEST_VAULT"), "signing", credential)
        .client_options(client_options_with_transport(http))
        .build()
        .unwrap();
    assert_eq!(keys.versions().await.unwrap().len(), 1);
    token
}

pub const CLIENT_ID: &str = "keyroll-tests";
pub const CLIENT_SECRET: &str = "keyroll-tests-secret";

pub async fn start() -> EmulatorHandle {
    keyroll_emulator::Emulator::builder()
        .client_secret(CLIENT_ID, CLIENT_SECRET)
        .start()
        .await
        .unwrap()
}

/// Vault client options: the emulator's CA and `*.localhost` resolver.
pub fn vault_options(emu: &EmulatorHandle) -> ClientOptions {
    client_options_with_transport(emu.http_client())
}

/// A client-secret credential against the emulator's Entra endpoint.
pub fn credential(emu: &EmulatorHandle) -> Arc<dyn TokenCredential> {
    let options = ClientSecretCredentialOptions {
        client_options: credential_options_with_transport(
            emu.http_client(),
            emu.authority_host().as_str(),
        ),
    };
    ClientSecretCredential::new(
        emu.tenant_id(),
        CLIENT_ID.to_owned(),
        CLIENT_SECRET.to_owned().into(),
        Some(options),
    )
    .unwrap()
}

pub fn certificates(emu: &EmulatorHandle, vault: &str, name: &str) -> KeyVaultCertificates {
    KeyVaultCertificates::builder(emu.vault_url(vault).as_str(), name, credential(emu))
        .client_options(vault_options(emu))
        .build()
        .unwrap()
}

pub fn keys(emu: &EmulatorHandle, vault: &str, name: &str) -> KeyVaultKeys {
    KeyVaultKeys::builder(emu.vault_url(vault).as_str(), name, credential(emu))
        .client_options(vault_options(emu))
        .build()
        .unwrap()
}

/// A time well in the past of the emulator's (real) clock, so versions created from it on
/// are valid by the vault's clock while the tests move their own clock.
pub fn t0(emu: &EmulatorHandle) -> u64 {
    u64::try_from(emu.admin().now()).unwrap() - 40 * 86_400
}

pub fn manual_clock(unix: u64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(from_unix_seconds(unix)))
}

pub fn unix(time: SystemTime) -> u64 {
    keyroll_core::unix_seconds(time)
}

/// Creates a certificate version created at `created` (Unix seconds); returns its version.
pub fn new_certificate_version(
    emu: &EmulatorHandle,
    vault: &str,
    name: &str,
    created: u64,
) -> String {
    emu.admin()
        .create_certificate_version(
            vault,
            name,
            CertificateVersionOptions::new().created(i64::try_from(created).unwrap()),
        )
        .unwrap()
        .version
}

/// One decoded part of a JWT (0: header, 1: claims), unverified.
pub fn jwt_part(token: &str, index: usize) -> serde_json::Value {
    use base64::Engine as _;
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// The status one request bearing `token` gets from a `ValidateLayer` trusting `issuer`.
pub async fn status_through_validator(issuer: Issuer, token: &str) -> StatusCode {
    let service = ServiceBuilder::new()
        .layer(ValidateLayer::new(issuer))
        .service(tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    let request = Request::get("/")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .unwrap();
    service.oneshot(request).await.unwrap().status()
}
