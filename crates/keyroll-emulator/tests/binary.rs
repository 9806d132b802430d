//! The `keyroll-emulator` binary prints exactly one `READY {json}` line and serves.
#![allow(
    clippy::unwrap_used,
    clippy::field_reassign_with_default,
    clippy::type_complexity
)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_ready_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyroll-emulator"))
        .args([
            "--port",
            "0",
            "--client-secret",
            "cli-app=cli-secret",
            "--state-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let json = line
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let ready: Value = serde_json::from_str(json.trim()).unwrap();
    let ca_path = ready["ca_path"].as_str().unwrap();
    assert!(ca_path.starts_with(dir.path().to_str().unwrap()));
    let http = keyroll_emulator::localhost_http_client(&std::fs::read_to_string(ca_path).unwrap())
        .unwrap();

    let token: Value = http
        .post(ready["token_endpoint"].as_str().unwrap())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "cli-app"),
            ("client_secret", "cli-secret"),
            (
                "scope",
                &format!("{}/.default", ready["vault_resource"].as_str().unwrap()),
            ),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    let vault = ready["vault_url_template"]
        .as_str()
        .unwrap()
        .replace("{name}", "binvault");
    let created = http
        .post(format!("{vault}keys/k/create?api-version=2025-07-01"))
        .bearer_auth(access)
        .json(&serde_json::json!({"kty": "RSA", "key_size": 2048}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
