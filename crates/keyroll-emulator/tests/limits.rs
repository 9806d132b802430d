//! Key Vault's service limits at the emulator: 429 `Throttled` with `Retry-After` past the
//! per-vault budget, counted, per vault, a new window after 10 seconds of the emulator's
//! clock, configurable through the builder, the Rust and the HTTP admin API, with the fault
//! API working on top.
#![allow(clippy::unwrap_used)]

mod common;

use keyroll_emulator::{
    Curve, Emulator, EmulatorHandle, Fault, FaultKind, KeySpec, KeyVersionOptions, VaultLimits,
};
use serde_json::{Value, json};

async fn token(emu: &EmulatorHandle) -> String {
    let scope = format!("{}/.default", emu.vault_resource());
    let body = common::send_json(common::client_secret_token_request(
        emu,
        emu.tenant_id(),
        common::CLIENT_ID,
        common::CLIENT_SECRET,
        &scope,
    ))
    .await;
    body["access_token"].as_str().unwrap().to_string()
}

/// `GET /keys/k/` in `vault`: the status, `Retry-After` and the body.
async fn get_key(emu: &EmulatorHandle, token: &str, vault: &str) -> (u16, Option<String>, Value) {
    let r = emu
        .http_client()
        .get(
            emu.vault_url(vault)
                .join("keys/k/?api-version=2025-07-01")
                .unwrap(),
        )
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry_after, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_budget_the_vault_answers_429_with_retry_after() {
    let mut limits = VaultLimits::documented();
    limits.software_ec = 3;
    let emu = Emulator::builder()
        .client_secret(common::CLIENT_ID, common::CLIENT_SECRET)
        .vault_limits(limits)
        .start()
        .await
        .unwrap();
    let admin = emu.admin();
    for vault in ["a", "b"] {
        admin
            .create_key_version(vault, "k", KeyVersionOptions::new(KeySpec::Ec(Curve::P256)))
            .unwrap();
    }
    // Freeze the clock, so the window cannot end while the test runs.
    admin.freeze_clock(true);
    let token = token(&emu).await;
    for _ in 0..3 {
        assert_eq!(get_key(&emu, &token, "a").await.0, 200);
    }
    let (status, retry_after, body) = get_key(&emu, &token, "a").await;
    assert_eq!(status, 429);
    // The clock stands still: the whole window is left.
    assert_eq!(retry_after.as_deref(), Some("10"));
    assert_eq!(body["error"]["code"], "Throttled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("VaultRequestTypeLimitReached")
    );
    // Throttled requests are counted, under their operation and as `throttled`.
    assert_eq!(admin.counter("keys.get"), 4);
    assert_eq!(admin.counter("throttled"), 1);
    // Another vault has its own budget.
    assert_eq!(get_key(&emu, &token, "b").await.0, 200);
    // Ten seconds later (by the emulator's clock) a new window starts.
    admin.advance_clock(std::time::Duration::from_secs(10));
    assert_eq!(get_key(&emu, &token, "a").await.0, 200);

    // Faults work on top of the limits.
    let id = admin.inject_fault(
        Fault::new("keys.get", FaultKind::Status(503))
            .vault("a")
            .times(1),
    );
    assert_eq!(get_key(&emu, &token, "a").await.0, 503);
    assert!(!admin.clear_fault(id), "the fault ran out");

    // Limits off through the Rust admin API.
    admin.set_vault_limits(VaultLimits::off());
    for _ in 0..5 {
        assert_eq!(get_key(&emu, &token, "a").await.0, 200);
    }
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_through_the_http_admin_api_and_the_documented_default() {
    let emu = common::start().await;
    let http = emu.http_client();
    let limits_url = format!("https://localhost:{}/_admin/limits", emu.port());
    let documented: Value = common::send_json(http.get(&limits_url)).await;
    assert_eq!(
        documented,
        serde_json::to_value(VaultLimits::documented()).unwrap()
    );
    assert_eq!(documented["software_rsa_2048"], 4000);
    assert_eq!(documented["hsm_rsa_4096"], 250);
    assert_eq!(documented["software_key_create"], 20);
    assert_eq!(emu.ready_json()["vault_limits"], documented);

    // Secrets have their own budget: two per window here.
    let r = http
        .put(&limits_url)
        .json(&json!({"vault_transactions": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(emu.admin().vault_limits().vault_transactions, 2);
    assert_eq!(
        emu.admin().vault_limits().software_ec,
        4000,
        "the rest stays documented"
    );
    let r = http
        .post(format!("https://localhost:{}/_admin/clock", emu.port()))
        .json(&json!({"frozen": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["frozen"], true);
    let token = token(&emu).await;
    let set = || {
        http.put(
            emu.vault_url("s")
                .join("secrets/db?api-version=2025-07-01")
                .unwrap(),
        )
        .bearer_auth(&token)
        .json(&json!({"value": "x"}))
        .send()
    };
    assert_eq!(set().await.unwrap().status(), 200);
    assert_eq!(set().await.unwrap().status(), 200);
    assert_eq!(set().await.unwrap().status(), 429);
    // Unauthenticated requests are challenged, not throttled, and not counted.
    let r = http
        .put(
            emu.vault_url("s")
                .join("secrets/db?api-version=2025-07-01")
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(emu.admin().counter("secrets.set"), 3);
    emu.shutdown().await;
}
