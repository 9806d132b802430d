//! Azure requests through the `metrics` facade (feature `metrics`), against the emulator:
//! exact counts per target, operation and status, 429s and the `Retry-After`s seen, and the
//! key cache's loads by outcome over a vault source.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../keyroll-core/tests/recording/mod.rs"]
mod recording;

use std::time::Duration;

use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use keyroll_azure::{EntraTokens, credential_options_with_transport};
use keyroll_core::jwt::TokenTemplate;
use keyroll_core::metrics::{self as names};
use keyroll_core::token::TokenCache;
use keyroll_core::{KeyCache, KeyCacheConfig};
use keyroll_emulator::{Curve, Fault, FaultKind, KeySpec, KeyVersionOptions};
use recording::{Recorded, Recording};

fn requests(recorded: &Recorded, target: &str, operation: &str, status: &str) -> u64 {
    recorded.counter(
        names::AZURE_REQUESTS,
        &[
            ("target", target),
            ("operation", operation),
            ("status", status),
        ],
    )
}

// One thread: the key cache's loads run on it, where the test recorder is.
#[tokio::test(flavor = "current_thread")]
async fn vault_and_entra_requests_are_counted_by_operation_and_status() {
    let recording = Recording::start();
    let emu = common::start().await;
    let admin = emu.admin();
    let created = admin
        .create_key_version("mv", "k", KeyVersionOptions::new(KeySpec::Ec(Curve::P256)))
        .unwrap();
    let source = common::keys(&emu, "mv", "k");
    let host = emu.vault_url("mv").host_str().unwrap().to_owned()
        + ":"
        + &emu.vault_url("mv").port().unwrap().to_string();
    let keys = KeyCache::builder(source.clone())
        .name("orders-sts")
        .config(KeyCacheConfig::default().refresh_jitter(0.0))
        .background_refresh(false)
        .build();

    keys.ready().await.unwrap(); // a list and a get
    TokenTemplate::new("https://orders")
        .mint(&keys, "https://billing")
        .await
        .unwrap(); // a sign
    admin.inject_fault(
        Fault::new(
            "keys.versions",
            FaultKind::Throttle {
                retry_after: Some(Duration::from_secs(7)),
            },
        )
        .times(1),
    );
    assert!(keys.refresh_now().await.is_err());
    admin.inject_fault(Fault::new("keys.versions", FaultKind::Status(503)).times(1));
    assert!(keys.refresh_now().await.is_err());
    source.disable_version(&created.version).await.unwrap(); // an update

    // Entra: a token, then a refused secret.
    let tokens = TokenCache::new(EntraTokens::new(
        common::credential(&emu),
        &["https://vault.azure.net/.default"],
    ));
    assert_eq!(tokens.name(), "entra https://vault.azure.net/.default");
    tokens.get("https://vault.azure.net").await.unwrap();
    let wrong = ClientSecretCredential::new(
        emu.tenant_id(),
        common::CLIENT_ID.to_owned(),
        "not-the-secret".to_owned().into(),
        Some(ClientSecretCredentialOptions {
            client_options: credential_options_with_transport(
                emu.http_client(),
                emu.authority_host().as_str(),
            ),
        }),
    )
    .unwrap();
    let refused = EntraTokens::new(wrong, &["https://vault.azure.net/.default"]);
    assert!(
        refused
            .access_token("https://vault.azure.net")
            .await
            .is_err()
    );

    let recorded = recording.take();
    let vault = |operation, status| requests(&recorded, &host, operation, status);
    assert_eq!(
        [
            vault("list", "2xx"),
            vault("list", "4xx"),
            vault("list", "5xx"),
            vault("get", "2xx"),
            vault("sign", "2xx"),
            vault("update", "2xx"),
        ],
        [1, 1, 1, 1, 1, 1]
    );
    assert_eq!(source.metrics().lists, 3);
    assert_eq!(
        recorded.counter(
            names::AZURE_THROTTLED,
            &[("target", &host), ("operation", "list")]
        ),
        1
    );
    assert_eq!(
        recorded.histogram(
            names::AZURE_RETRY_AFTER,
            &[("target", &host), ("operation", "list")]
        ),
        [7.0],
        "one Retry-After seen"
    );
    assert_eq!(
        recorded.histogram_count(
            names::AZURE_REQUEST_DURATION,
            &[("target", &host), ("operation", "sign")]
        ),
        1
    );
    assert_eq!(
        (
            requests(&recorded, "entra", "token", "2xx"),
            requests(&recorded, "entra", "token", "4xx")
        ),
        (1, 1)
    );
    assert_eq!(
        recorded.counter(
            names::TOKEN_FETCHES,
            &[
                ("source", "entra https://vault.azure.net/.default"),
                ("outcome", "ok")
            ]
        ),
        1
    );
    // The key cache over the vault: loads by outcome, and the sign.
    let loads = |outcome| {
        recorded.counter(
            names::KEY_LOADS,
            &[("source", "orders-sts"), ("outcome", outcome)],
        )
    };
    assert_eq!([loads("ok"), loads("throttled"), loads("error")], [1, 1, 1]);
    assert_eq!(
        recorded.counter(
            names::KEY_SIGNS,
            &[("source", "orders-sts"), ("outcome", "ok")]
        ),
        1
    );
    emu.shutdown().await;
}
