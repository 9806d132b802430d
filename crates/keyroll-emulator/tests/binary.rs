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
    let (mut child, ready) = start(&[
        "--port".as_ref(),
        "0".as_ref(),
        "--client-secret".as_ref(),
        "cli-app=cli-secret".as_ref(),
        "--state-dir".as_ref(),
        dir.path().as_os_str(),
    ])
    .await;
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

/// Starts the binary with `args`; the child and its `READY` facts.
async fn start(args: &[&std::ffi::OsStr]) -> (std::process::Child, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyroll-emulator"))
        .args(args)
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
    let ready = serde_json::from_str(json.trim()).unwrap();
    (child, ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_remove_the_temporary_state_directory() {
    for signal in ["-TERM", "-INT"] {
        let (mut child, ready) = start(&["--port".as_ref(), "0".as_ref()]).await;
        let ca = std::path::PathBuf::from(ready["ca_path"].as_str().unwrap());
        let state_dir = ca.parent().unwrap().to_path_buf();
        assert!(ca.exists(), "the CA file is written at start");
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{signal}: {status:?}");
        assert!(
            !state_dir.exists(),
            "{signal}: {} is left behind",
            state_dir.display()
        );
    }
}
