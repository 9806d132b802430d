//! Every `keyroll` command, run as a process against the emulator over HTTPS.
#![allow(clippy::unwrap_used)]

use std::io::BufRead as _;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use keyroll_emulator::{
    Api, CertificateVersionOptions, EmulatorHandle, KeySpec, KeyVersionOptions, TokenVersion,
};

const CLIENT_ID: &str = "cli-app";
const CLIENT_SECRET: &str = "cli-secret";
/// The application id of the `api://billing` API (the `aud` of its v2 tokens).
const BILLING_APP_ID: &str = "6b1f4e3a-0000-4000-a000-00000000b111";

struct Fixture {
    emu: EmulatorHandle,
    vault: String,
}

async fn fixture() -> Fixture {
    let emu = keyroll_emulator::Emulator::builder()
        .client_secret(CLIENT_ID, CLIENT_SECRET)
        .api(
            Api::new("api://billing")
                .app_id(BILLING_APP_ID)
                .access_token_version(TokenVersion::V2),
        )
        .start()
        .await
        .unwrap();
    let vault = emu.vault_url("clivault").to_string();
    Fixture { emu, vault }
}

impl Fixture {
    /// `keyroll ARGS`, with a client-secret credential for the vault and the emulator's CA.
    fn keyroll(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_keyroll"))
            .args(args)
            .env("AZURE_TENANT_ID", self.emu.tenant_id())
            .env("AZURE_CLIENT_ID", CLIENT_ID)
            .env("AZURE_CLIENT_SECRET", CLIENT_SECRET)
            .env("AZURE_AUTHORITY_HOST", self.emu.authority_host().as_str())
            .env("KEYROLL_INSECURE_CA", self.emu.ca_path())
            .env_remove("IDENTITY_ENDPOINT")
            .env_remove("KEYROLL_VAULT_URL")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.keyroll(args);
        assert!(
            output.status.success(),
            "keyroll {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn certificate(&self, name: &str) -> Vec<u8> {
        let info = self
            .emu
            .admin()
            .create_certificate_version("clivault", name, CertificateVersionOptions::new())
            .unwrap();
        let cer = info.bundle["cer"].as_str().unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(cer)
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_from_a_vault_certificate_with_and_without_key_info() {
    let f = fixture().await;
    let cer = f.certificate("app-cert");
    f.emu
        .register_client_certificate("assertion-app", &cer)
        .unwrap();
    let tenant = f.emu.tenant_id().to_owned();
    let common = [
        "--vault",
        &f.vault,
        "--tenant",
        &tenant,
        "--client-id",
        "assertion-app",
        "--certificate",
        "app-cert",
    ];

    let info = f.json(&[
        "key-info",
        "--vault",
        &f.vault,
        "--certificate",
        "app-cert",
        "--json",
    ]);
    let key_id = info["key_id"].as_str().unwrap().to_owned();
    let x5t = info["x5t"].as_str().unwrap().to_owned();
    assert!(key_id.contains("/keys/app-cert/"), "{info}");

    let mut args = vec!["token"];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--scope", "api://billing/.default", "--json"]);
    let token = f.json(&args);
    assert_eq!(token["token_type"], "Bearer");
    let access_token = token["access_token"].as_str().unwrap().to_owned();

    // The token verifies against the emulator's Entra keys (OIDC discovery); a v2 token's
    // audience is the API's application id.
    let issuer = f.emu.issuer(&tenant);
    let claims = f.json(&[
        "verify",
        &access_token,
        "--issuer",
        &issuer,
        "--aud",
        BILLING_APP_ID,
    ]);
    assert_eq!(
        claims["appid"].as_str().or(claims["azp"].as_str()),
        Some("assertion-app"),
        "{claims}"
    );

    // The faster path: key id and thumbprint given, the bare token printed.
    let mut args = vec!["token"];
    args.extend_from_slice(&common);
    args.extend_from_slice(&[
        "--scope",
        "api://billing/.default",
        "--key-id",
        &key_id,
        "--x5t",
        &x5t,
    ]);
    let bare = f.ok(&args);
    assert_eq!(bare.trim().split('.').count(), 3);

    // A client the certificate is not registered for is refused, in one line.
    let mut args = vec![
        "token",
        "--vault",
        &f.vault,
        "--tenant",
        &tenant,
        "--client-id",
        "stranger",
    ];
    args.extend_from_slice(&[
        "--certificate",
        "app-cert",
        "--scope",
        "api://billing/.default",
    ]);
    let refused = f.keyroll(&args);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn key_info_with_a_managed_identity_needs_no_tenant_or_client_id() {
    let f = fixture().await;
    let version = f
        .emu
        .admin()
        .create_certificate_version("clivault", "mi-cert", CertificateVersionOptions::new())
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_keyroll"))
        .args([
            "key-info",
            "--vault",
            &f.vault,
            "--certificate",
            "mi-cert",
            "--json",
        ])
        .env_remove("AZURE_TENANT_ID")
        .env_remove("AZURE_CLIENT_ID")
        .env_remove("AZURE_CLIENT_SECRET")
        .env_remove("AZURE_FEDERATED_TOKEN_FILE")
        .env_remove("KEYROLL_CREDENTIAL")
        .env_remove("KEYROLL_VAULT_URL")
        .env("IDENTITY_ENDPOINT", f.emu.identity_endpoint().as_str())
        .env("IDENTITY_HEADER", f.emu.identity_header())
        .env("KEYROLL_INSECURE_CA", f.emu.ca_path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        info["key_id"].as_str().unwrap().contains("/keys/mi-cert/"),
        "{info}"
    );
    assert_eq!(info["x5t"].as_str(), version.x5t.as_deref());
    assert!(info["key_id"].as_str().unwrap().ends_with(&version.version));
    assert!(
        f.emu.admin().counter("msi.token") >= 1,
        "the managed identity reached the vault"
    );
    assert_eq!(
        f.emu.admin().counter("entra.token"),
        0,
        "no client credentials flow"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mint_verify_and_jwks_with_keys_and_certificates() {
    let f = fixture().await;
    f.emu
        .admin()
        .create_key_version(
            "clivault",
            "signing",
            KeyVersionOptions::new(KeySpec::RSA_2048),
        )
        .unwrap();
    f.certificate("sts");

    for item in [["--key", "signing"], ["--certificate", "sts"]] {
        let minted = f.json(&[
            "mint",
            "--vault",
            &f.vault,
            item[0],
            item[1],
            "--aud",
            "billing",
            "--claim",
            "role=reader",
            "--claim",
            "n=3",
            "--json",
        ]);
        let token = minted["token"].as_str().unwrap();
        let claims = f.json(&[
            "verify", token, "--vault", &f.vault, item[0], item[1], "--aud", "billing",
        ]);
        assert_eq!(claims["role"], "reader");
        assert_eq!(claims["n"], 3);
        assert_eq!(claims["iss"], f.vault.as_str());

        let wrong = f.keyroll(&[
            "verify", token, "--vault", &f.vault, item[0], item[1], "--aud", "orders",
        ]);
        assert!(!wrong.status.success());
        assert!(String::from_utf8_lossy(&wrong.stderr).contains("not for this audience"));

        let jwks = f.json(&["jwks", "--vault", &f.vault, item[0], item[1]]);
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["kid"], minted["kid"]);
    }

    // One default size limit with the services (8 KiB): a larger token is refused as they
    // would refuse it, unless the limit is raised.
    let padding = format!("pad={}", "x".repeat(9 * 1024));
    let large = f.ok(&[
        "mint", "--vault", &f.vault, "--key", "signing", "--aud", "billing", "--claim", &padding,
    ]);
    let refused = f.keyroll(&[
        "verify",
        large.trim(),
        "--vault",
        &f.vault,
        "--key",
        "signing",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("too large"));
    let raised = f.json(&[
        "verify",
        large.trim(),
        "--vault",
        &f.vault,
        "--key",
        "signing",
        "--max-token-len",
        "65536",
    ]);
    assert_eq!(raised["aud"], "billing");

    // Verify against a JWKS URL: the emulator's Entra keys do not know a vault-signed token.
    let minted = f.ok(&[
        "mint", "--vault", &f.vault, "--key", "signing", "--aud", "billing",
    ]);
    let jwks_url = f.emu.jwks_url(f.emu.tenant_id()).to_string();
    let unknown = f.keyroll(&["verify", minted.trim(), "--jwks", &jwks_url]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("signing key is unknown"));
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_one_line_and_name_what_failed() {
    let f = fixture().await;
    let missing = f.keyroll(&["jwks", "--vault", &f.vault, "--key", "nothing-here"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("nothing-here") && stderr.contains("404"),
        "{stderr}"
    );

    let no_vault = f.keyroll(&["jwks", "--key", "k"]);
    assert!(String::from_utf8_lossy(&no_vault.stderr).contains("--vault"));

    let help = f.ok(&["mint", "--help"]);
    assert!(help.contains("--claim"));
}

#[test]
fn emulator_command_prints_ready_json() {
    let dir = std::env::temp_dir().join(format!("keyroll-cli-state-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyroll"))
        .args(["emulator", "--port", "0", "--state-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let json: serde_json::Value =
        serde_json::from_str(line.strip_prefix("READY ").unwrap()).unwrap();
    assert!(json.is_object(), "{json}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_disables_a_version_in_the_vault_by_kid_or_version() {
    let f = fixture().await;
    for _ in 0..2 {
        f.emu
            .admin()
            .create_key_version(
                "clivault",
                "revoked",
                KeyVersionOptions::new(KeySpec::RSA_2048),
            )
            .unwrap();
        f.certificate("revoked-cert");
    }
    for item in [["--key", "revoked"], ["--certificate", "revoked-cert"]] {
        let jwks = f.json(&["jwks", "--vault", &f.vault, item[0], item[1]]);
        let kids: Vec<String> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kids.len(), 2);
        let revoked = f.json(&["revoke", "--vault", &f.vault, item[0], item[1], &kids[0]]);
        assert_eq!(revoked["disabled"]["kid"], kids[0].as_str());
        assert_eq!(revoked["was_enabled"], true);
        let jwks = f.json(&["jwks", "--vault", &f.vault, item[0], item[1]]);
        let left = jwks["keys"].as_array().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["kid"], kids[1].as_str());
        // An unknown kid or version id is an error that says so.
        let unknown = f.keyroll(&["revoke", "--vault", &f.vault, item[0], item[1], "nope"]);
        assert!(!unknown.status.success());
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("no version"));
    }
}
