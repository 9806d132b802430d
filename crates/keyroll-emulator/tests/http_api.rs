//! The wire as the service answers it, checked with a plain HTTP client: the 401 challenge,
//! error shapes, api-versions, ids, faults and counters (Rust and admin HTTP API),
//! the permissive mode, and the state directory across restarts.
#![allow(
    clippy::unwrap_used,
    clippy::field_reassign_with_default,
    clippy::type_complexity
)]

mod common;

use std::time::{Duration, Instant};

use keyroll_emulator::{Emulator, EmulatorHandle, Fault, FaultKind, KeySpec, KeyVersionOptions};
use serde_json::{Value, json};

/// The token endpoint's answer for the test client and `scope`.
async fn token_response(emu: &EmulatorHandle, scope: &str) -> Value {
    common::send_json(common::client_secret_token_request(
        emu,
        emu.tenant_id(),
        common::CLIENT_ID,
        common::CLIENT_SECRET,
        scope,
    ))
    .await
}

async fn vault_token(emu: &EmulatorHandle) -> String {
    let scope = format!("{}/.default", emu.vault_resource());
    let body = token_response(emu, &scope).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenge_errors_and_ids_as_the_service_answers() {
    let emu = common::start().await;
    let http = emu.http_client();
    let vault = emu.vault_url("wire");
    let port = emu.port();

    // No token: 401, the exact challenge, the AKV10000 body.
    let resp = http
        .get(vault.join("keys/k/?api-version=2025-07-01").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization=\"https://localhost:{port}/{}\", resource=\"https://vault.localhost:{port}\"",
            emu.tenant_id()
        )
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}})
    );
    assert_eq!(
        emu.admin().counter("keys.get"),
        0,
        "challenges are not counted"
    );

    let token = vault_token(&emu).await;
    let get = |path: &str| {
        let http = http.clone();
        let url = vault.join(path).unwrap();
        let token = token.clone();
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    for (path, status, code) in [
        ("keys/k/?api-version=2025-07-01", 404, "KeyNotFound"),
        (
            "certificates/c/?api-version=7.5",
            404,
            "CertificateNotFound",
        ),
        ("secrets/s/?api-version=2026-04-01", 404, "SecretNotFound"),
        ("keys/k/?api-version=1999-01-01", 400, "BadParameter"),
        ("keys/k/", 400, "BadParameter"),
    ] {
        let (s, b) = get(path).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}"
        );
    }
    let (s, b) = get("nothing/here?api-version=2025-07-01").await;
    assert_eq!(s, 404);
    assert!(b["error"]["code"].is_string() && b["error"]["message"].is_string());

    // An unregistered resource gets no token; a token for another registered API is refused
    // by the vault with a challenge.
    let unregistered = token_response(&emu, "https://graph.localhost/.default").await;
    assert_eq!(unregistered["error"], "invalid_resource");
    assert_eq!(unregistered["error_codes"][0], 500_011);
    emu.admin()
        .register_api(keyroll_emulator::Api::new("https://graph.localhost"))
        .unwrap();
    let other = token_response(&emu, "https://graph.localhost/.default").await;
    let r = http
        .get(vault.join("keys?api-version=2025-07-01").unwrap())
        .bearer_auth(other["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = http
        .get(vault.join("keys?api-version=2025-07-01").unwrap())
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Create a key: ids carry the vault's own host and port, versions are 32 lowercase hex.
    let r = http
        .post(vault.join("keys/wire-key/create?api-version=7.4").unwrap())
        .bearer_auth(&token)
        .json(&json!({"kty": "EC", "crv": "P-384"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bundle: Value = r.json().await.unwrap();
    let kid = bundle["key"]["kid"].as_str().unwrap();
    let prefix = format!("https://wire.vault.localhost:{port}/keys/wire-key/");
    assert!(kid.starts_with(&prefix), "{kid}");
    assert!(common::is_version(&kid[prefix.len()..]));
    assert_eq!(bundle["key"]["crv"], "P-384");
    assert_eq!(
        bundle["attributes"]["recoveryLevel"],
        "Recoverable+Purgeable"
    );
    let (_, listed) = get("keys/wire-key/versions?api-version=2025-07-01").await;
    assert!(
        listed["value"][0].get("key").is_none(),
        "no key material in lists"
    );
    assert_eq!(listed["nextLink"], Value::Null);
    let (s, b) = get("keys/bad_name!/?api-version=2025-07-01").await;
    assert_eq!(s, 404, "{b}");

    // Routes: "latest" with a trailing slash or an empty version, the pending operation, a
    // secret by PUT; a method the emulator does not serve is refused in the service's shape.
    let send = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = http
            .request(method, vault.join(path).unwrap())
            .bearer_auth(&token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let digest =
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [7u8; 48]);
    let (s, b) = send(
        reqwest::Method::POST,
        "keys/wire-key//sign?api-version=2025-07-01",
        Some(json!({"alg": "ES384", "value": digest})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["kid"], kid, "the latest version signed");
    let (s, b) = get("keys/wire-key?api-version=2025-07-01").await;
    assert_eq!((s, b["key"]["kid"].as_str()), (200, Some(kid)));
    let (s, b) = get("certificates/nothing/pending?api-version=2025-07-01").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("PendingCertificateNotFound"))
    );
    let (s, _) = send(
        reqwest::Method::PUT,
        "secrets/wire-secret?api-version=2025-07-01",
        Some(json!({"value": "v"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = send(
        reqwest::Method::DELETE,
        "keys/wire-key?api-version=2025-07-01",
        None,
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (405, Some("MethodNotAllowed"))
    );

    // The same vault by IP is the `default` vault.
    let by_ip = format!("https://127.0.0.1:{port}/keys?api-version=2025-07-01");
    let r = http.get(by_ip).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_counters_through_rust_and_http_admin() {
    let emu = common::start().await;
    let admin = emu.admin();
    let http = emu.http_client();
    let token = vault_token(&emu).await;
    admin
        .create_key_version("faulty", "k", KeyVersionOptions::new(KeySpec::RSA_2048))
        .unwrap();
    let url = emu
        .vault_url("faulty")
        .join("keys/k/?api-version=2025-07-01")
        .unwrap();
    let get = || http.get(url.clone()).bearer_auth(&token).send();
    admin.reset_counters();

    // 429 without Retry-After, once.
    admin.inject_fault(Fault::new("keys.get", FaultKind::Throttle { retry_after: None }).times(1));
    let r = get().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(!r.headers().contains_key("retry-after"));
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "Throttled");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("VaultRequestTypeLimitReached")
    );
    assert_eq!(get().await.unwrap().status(), 200);

    // 429 with Retry-After, through the admin HTTP API, for one vault only.
    let admin_url = emu.authority_host().join("_admin/").unwrap();
    let fault = json!({"route": "keys", "vault": "faulty", "kind": "throttle", "retry_after": 7});
    let added = common::send_json(http.post(admin_url.join("faults").unwrap()).json(&fault)).await;
    let r = get().await.unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["retry-after"].to_str().unwrap()
        ),
        (429, "7")
    );
    let other_vault = http
        .get(
            emu.vault_url("calm")
                .join("keys?api-version=2025-07-01")
                .unwrap(),
        )
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        other_vault.status(),
        200,
        "the fault is scoped to its vault"
    );
    let r = http
        .delete(admin_url.join(&format!("faults/{}", added["id"])).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["cleared"], true);
    assert_eq!(get().await.unwrap().status(), 200);

    // 5xx until cleared.
    let id = admin.inject_fault(Fault::new("*", FaultKind::Status(503)));
    assert_eq!(get().await.unwrap().status(), 503);
    assert_eq!(get().await.unwrap().status(), 503);
    assert!(admin.clear_fault(id));

    // Full outage: the connection closes without an answer.
    admin.inject_fault(Fault::new("keys.get", FaultKind::Outage).times(1));
    assert!(get().await.is_err());
    assert_eq!(get().await.unwrap().status(), 200);

    // Latency: the answer comes no sooner than the delay.
    admin.inject_fault(
        Fault::new("keys.get", FaultKind::Latency(Duration::from_millis(150))).times(1),
    );
    let started = Instant::now();
    assert_eq!(get().await.unwrap().status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    // Counters: 9 keys.get so far (faulted ones included), 1 keys.list.
    assert_eq!(admin.counter("keys.get"), 9);
    let counters = common::send_json(http.get(admin_url.join("counters").unwrap())).await;
    assert_eq!(counters["keys.get"], 9);
    assert_eq!(counters["keys.list"], 1);
    http.delete(admin_url.join("counters").unwrap())
        .send()
        .await
        .unwrap();
    assert!(admin.counters().is_empty());

    // The clock and versions with a chosen created time, over HTTP.
    let clock = common::send_json(
        http.post(admin_url.join("clock").unwrap())
            .json(&json!({"advance": 3600})),
    )
    .await;
    assert!(clock["now"].as_i64().unwrap() >= admin.now() - 1);
    let v = common::send_json(
        http.post(
            admin_url
                .join("vaults/faulty/certificates/old-cert/versions")
                .unwrap(),
        )
        .json(&json!({"created": 1_700_000_000, "kty": "EC", "crv": "P-256", "subject": "CN=old"})),
    )
    .await;
    assert_eq!(v["created"], 1_700_000_000);
    let cert = common::send_json(
        http.get(
            emu.vault_url("faulty")
                .join(&format!(
                    "certificates/old-cert/{}?api-version=2025-07-01",
                    v["version"].as_str().unwrap()
                ))
                .unwrap(),
        )
        .bearer_auth(&token),
    )
    .await;
    assert_eq!(cert["attributes"]["created"], 1_700_000_000);
    assert_eq!(cert["attributes"]["nbf"], 1_700_000_000);
    assert_eq!(cert["x5t"], v["x5t"]);
    emu.shutdown().await;
}

/// Key `k` of vault `keep`, fetched with a token only the permissive mode lets through.
async fn get_kept_key(http: &reqwest::Client, emu: &EmulatorHandle) -> Value {
    let url = emu
        .vault_url("keep")
        .join("keys/k/?api-version=2025-07-01")
        .unwrap();
    common::send_json(http.get(url).bearer_auth("anything")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_mode_and_state_directory_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    // Both instances keep their state in the same directory.
    let start = || {
        Emulator::builder()
            .state_dir(dir.path())
            .permissive(true)
            .start()
    };
    let emu = start().await.unwrap();
    let ca = emu.ca_pem().to_string();
    assert_eq!(std::fs::read_to_string(emu.ca_path()).unwrap(), ca);
    let tenant = emu.tenant_id().to_string();
    let v = emu
        .admin()
        .create_key_version(
            "keep",
            "k",
            KeyVersionOptions::new(KeySpec::Ec(keyroll_emulator::Curve::P256))
                .created(1_600_000_000),
        )
        .unwrap();
    let before = get_kept_key(&emu.http_client(), &emu).await;
    assert_eq!(before["key"]["kid"], v.id);
    emu.shutdown().await;

    let emu = start().await.unwrap();
    assert_eq!(emu.ca_pem(), ca, "the CA survives the restart");
    assert_eq!(emu.tenant_id(), tenant);
    // Clients built against the first instance's CA still trust the new server certificate.
    let client = keyroll_emulator::localhost_http_client(&ca).unwrap();
    let after = get_kept_key(&client, &emu).await;
    assert_eq!(after["key"]["x"], before["key"]["x"]);
    assert_eq!(after["attributes"]["created"], 1_600_000_000);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_json_names_every_endpoint() {
    let emu = Emulator::builder()
        .managed_identity("mi-secret")
        .client_secret("a", "b")
        .start()
        .await
        .unwrap();
    let ready = emu.ready_json();
    let port = emu.port();
    assert_eq!(ready["port"], port);
    assert_eq!(
        ready["vault_url"],
        format!("https://default.vault.localhost:{port}/")
    );
    assert_eq!(
        ready["authority_host"],
        format!("https://localhost:{port}/")
    );
    assert_eq!(
        ready["identity_endpoint"],
        format!("http://127.0.0.1:{port}/msi/token")
    );
    assert_eq!(ready["identity_header"], "mi-secret");
    assert_eq!(ready["clients"], json!(["a"]));
    assert_eq!(ready["ca_path"], emu.ca_path().display().to_string());
    assert_eq!(ready["jwks_url"], emu.jwks_url(emu.tenant_id()).as_str());
    emu.shutdown().await;
}
