//! `KeyVaultKeys` and `KeyVaultCertificates` against the emulator over HTTPS: versions and
//! metadata, remote and local signing, disabled versions, errors and their counters (one request each).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use keyroll_azure::{CertificateKid, KeyIdFormat, KeyVaultCertificates, KeyVaultKeys};
use keyroll_core::{Algorithm, KeyCache, KeySource, KeyVersion, from_unix_seconds};
use keyroll_emulator::{
    CertificateVersionOptions, Curve, Fault, FaultKind, KeySpec, KeyVersionOptions,
};

async fn sign_and_verify(source: &dyn KeySource, version: &KeyVersion) {
    let signer = source.signer(version).await.unwrap();
    assert_eq!(signer.algorithm(), version.signing_algorithm());
    let message = format!("header.payload-{}", version.version);
    let signature = signer.sign(message.as_bytes()).await.unwrap();
    version
        .verifying_key()
        .verify(signer.algorithm(), message.as_bytes(), &signature)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_versions_sign_in_the_vault() {
    let emu = common::start().await;
    let admin = emu.admin();
    let t0 = common::t0(&emu);
    let first = admin
        .create_key_version(
            "kv",
            "rsa",
            KeyVersionOptions::new(KeySpec::RSA_2048).created(t0 as i64),
        )
        .unwrap();
    let second = admin
        .create_key_version(
            "kv",
            "rsa",
            KeyVersionOptions::new(KeySpec::RSA_2048)
                .created(t0 as i64 + 3600)
                .expires(t0 as i64 + 400 * 86_400),
        )
        .unwrap();

    let keys = common::keys(&emu, "kv", "rsa");
    let versions = keys.versions().await.unwrap();
    assert_eq!(versions.len(), 2);
    let by_version = |v: &str| versions.iter().find(|k| k.version == v).unwrap();
    let (a, b) = (by_version(&first.version), by_version(&second.version));
    // kid = the full versioned key id; created and exp from the vault's attributes.
    assert_eq!(a.kid, first.id);
    assert!(a.kid.starts_with("https://kv.vault.localhost:") && a.kid.ends_with(&first.version));
    assert_eq!(a.created, from_unix_seconds(t0));
    assert_eq!(b.created, from_unix_seconds(t0 + 3600));
    assert_eq!(b.expires, Some(from_unix_seconds(t0 + 400 * 86_400)));
    assert_eq!(a.signing_algorithm(), Algorithm::RS256);
    assert!(a.enabled && b.enabled);
    for version in [a, b] {
        sign_and_verify(&keys, version).await;
    }
    let metrics = keys.metrics();
    assert_eq!((metrics.lists, metrics.gets, metrics.signs), (1, 2, 2));
    // A version's public key is fetched once: the next load only lists.
    keys.versions().await.unwrap();
    assert_eq!((keys.metrics().lists, keys.metrics().gets), (2, 2));
    assert_eq!(admin.counter("keys.get"), 2);
    assert_eq!(admin.counter("keys.sign"), 2);

    // PS256 over the same RSA key, kid = the version alone.
    let ps = KeyVaultKeys::builder(
        emu.vault_url("kv").as_str(),
        "rsa",
        common::credential(&emu),
    )
    .client_options(common::vault_options(&emu))
    .kid(KeyIdFormat::Version)
    .algorithm(Algorithm::PS256)
    .build()
    .unwrap();
    let versions = ps.versions().await.unwrap();
    assert!(versions.iter().any(|v| v.kid == first.version));
    for version in &versions {
        assert_eq!(version.signing_algorithm(), Algorithm::PS256);
        sign_and_verify(&ps, version).await;
    }

    // EC keys sign with their curve's algorithm; the vault returns raw r‖s.
    for (name, curve, alg) in [
        ("p256", Curve::P256, Algorithm::ES256),
        ("p384", Curve::P384, Algorithm::ES384),
        ("p521", Curve::P521, Algorithm::ES512),
    ] {
        admin
            .create_key_version("kv", name, KeyVersionOptions::new(KeySpec::Ec(curve)))
            .unwrap();
        let ec = common::keys(&emu, "kv", name);
        let versions = ec.versions().await.unwrap();
        assert_eq!(versions[0].signing_algorithm(), alg);
        sign_and_verify(&ec, &versions[0]).await;
    }
    // An EC key refuses an RSA algorithm at build time.
    assert!(
        KeyVaultKeys::builder(
            emu.vault_url("kv").as_str(),
            "p256",
            common::credential(&emu)
        )
        .algorithm(Algorithm::ES256)
        .build()
        .is_err()
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_version_stops_validating_at_refresh() {
    let emu = common::start().await;
    let admin = emu.admin();
    let t0 = common::t0(&emu);
    let old = common::new_certificate_version(&emu, "dv", "sts", t0);
    let new = common::new_certificate_version(&emu, "dv", "sts", t0 + 86_400);
    let clock = common::manual_clock(t0 + 2 * 86_400);
    let cache = KeyCache::builder(common::certificates(&emu, "dv", "sts"))
        .clock(clock)
        .background_refresh(false)
        .build();
    let set = cache.validation_set().await.unwrap();
    assert_eq!(set.len(), 2);

    assert!(admin.set_version_enabled("dv", "sts", &old, false));
    // Until the next refresh the cache still has it…
    assert_eq!(cache.validation_set().await.unwrap().len(), 2);
    // …and at once after refresh_now it is gone from validation and signing.
    cache.refresh_now().await.unwrap();
    let set = cache.validation_set().await.unwrap();
    assert_eq!(
        set.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(),
        [new.as_str()]
    );
    let snapshot = cache.snapshot().unwrap();
    let disabled = snapshot
        .versions()
        .iter()
        .find(|v| v.version == old)
        .unwrap();
    assert!(!disabled.enabled, "a known version stays listed, disabled");
    assert_eq!(cache.active_signer().await.unwrap().version.version, new);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_versions_carry_thumbprints_and_sign() {
    let emu = common::start().await;
    let admin = emu.admin();
    let t0 = common::t0(&emu);
    let made = admin
        .create_certificate_version(
            "cv",
            "sts",
            CertificateVersionOptions::new().created(t0 as i64),
        )
        .unwrap();
    admin
        .create_certificate_version(
            "cv",
            "sts",
            CertificateVersionOptions::new().created(t0 as i64 + 60),
        )
        .unwrap();
    let certificates = common::certificates(&emu, "cv", "sts");
    let versions = certificates.versions().await.unwrap();
    assert_eq!(versions.len(), 2);
    let first = versions.iter().find(|v| v.version == made.version).unwrap();
    // kid = x5t (IdentityServer's choice), x5t#S256 and x5c computed from `cer`.
    let cer = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        made.bundle["cer"].as_str().unwrap(),
    )
    .unwrap();
    let (x5t, x5t_s256) = keyroll_core::certificate_thumbprints(&cer);
    assert_eq!(made.x5t.as_deref(), Some(x5t.as_str()));
    assert_eq!(first.kid, x5t);
    assert_eq!(first.x5t.as_deref(), Some(x5t.as_str()));
    assert_eq!(first.x5t_s256.as_deref(), Some(x5t_s256.as_str()));
    assert_eq!(first.x5c.len(), 1);
    assert_eq!(first.created, from_unix_seconds(t0));
    assert!(first.not_before.is_some() && first.expires.is_some());
    assert_eq!(first.jwk.x5t.as_deref(), Some(x5t.as_str()));
    for version in &versions {
        sign_and_verify(&certificates, version).await;
    }
    let metrics = certificates.metrics();
    assert_eq!(
        (
            metrics.lists,
            metrics.gets,
            metrics.signs,
            metrics.secret_gets
        ),
        (1, 2, 2, 0)
    );
    assert_eq!(
        admin.counter("keys.sign"),
        2,
        "signed with the certificate's key"
    );

    // kid = the versioned key id.
    let by_key_id = KeyVaultCertificates::builder(
        emu.vault_url("cv").as_str(),
        "sts",
        common::credential(&emu),
    )
    .client_options(common::vault_options(&emu))
    .kid(CertificateKid::KeyId)
    .build()
    .unwrap();
    let versions = by_key_id.versions().await.unwrap();
    assert!(
        versions
            .iter()
            .any(|v| v.kid == made.bundle["kid"].as_str().unwrap())
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_signing_reads_each_secret_once() {
    let emu = common::start().await;
    let admin = emu.admin();
    admin
        .create_certificate_version("lv", "pfx", CertificateVersionOptions::new())
        .unwrap();
    admin
        .create_certificate_version(
            "lv",
            "pem-ec",
            CertificateVersionOptions::new()
                .key(KeySpec::Ec(Curve::P256))
                .content_type("application/x-pem-file"),
        )
        .unwrap();
    admin
        .create_certificate_version(
            "lv",
            "sealed",
            CertificateVersionOptions::new().exportable(false),
        )
        .unwrap();
    let local = |name: &str| {
        KeyVaultCertificates::builder(emu.vault_url("lv").as_str(), name, common::credential(&emu))
            .client_options(common::vault_options(&emu))
            .local_signing(true)
            .build()
            .unwrap()
    };
    for name in ["pfx", "pem-ec"] {
        let source = local(name);
        let version = source.versions().await.unwrap().remove(0);
        for _ in 0..3 {
            sign_and_verify(&source, &version).await;
        }
        let metrics = source.metrics();
        assert_eq!(
            metrics.secret_gets, 1,
            "{name}: the secret is read once per version"
        );
        assert_eq!(metrics.signs, 0, "{name}: no vault sign");
    }
    assert_eq!(admin.counter("secrets.get"), 2);
    // A non-exportable key: its secret holds no private key, so the vault signs.
    let sealed = local("sealed");
    let version = sealed.versions().await.unwrap().remove(0);
    sign_and_verify(&sealed, &version).await;
    assert_eq!(
        (sealed.metrics().secret_gets, sealed.metrics().signs),
        (1, 1)
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_cost_one_request_and_are_counted() {
    let emu = common::start().await;
    let admin = emu.admin();
    admin
        .create_key_version("tv", "k", KeyVersionOptions::new(KeySpec::Ec(Curve::P256)))
        .unwrap();
    let keys = common::keys(&emu, "tv", "k");
    let versions = keys.versions().await.unwrap(); // authenticated, key fetched
    let before = admin.counter("keys.versions");

    // A 429 without Retry-After (as seen in real life), then a 503: each call is one request
    // (the key cache retries, with its own backoff), counted by kind.
    admin.inject_fault(
        Fault::new("keys.versions", FaultKind::Throttle { retry_after: None }).times(1),
    );
    admin.inject_fault(Fault::new("keys.versions", FaultKind::Status(503)).times(1));
    let throttled = keys.load().await.unwrap_err();
    assert_eq!(
        (throttled.status(), throttled.retry_after()),
        (Some(429), None)
    );
    assert_eq!(keys.load().await.unwrap_err().status(), Some(503));
    assert_eq!(keys.versions().await.unwrap().len(), 1);
    let m = keys.metrics();
    assert_eq!((m.throttled, m.server_errors, m.failures), (1, 1, 2));
    assert_eq!(
        admin.counter("keys.versions") - before,
        3,
        "2 failed requests and 1 good one: no retry underneath"
    );

    // A Retry-After, short or long, is passed on (the cache waits that long), not waited here.
    for seconds in [1, 120] {
        admin.inject_fault(
            Fault::new(
                "keys.versions",
                FaultKind::Throttle {
                    retry_after: Some(Duration::from_secs(seconds)),
                },
            )
            .times(1),
        );
        let error = keys.load().await.unwrap_err();
        assert_eq!(error.status(), Some(429));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(seconds)));
    }
    // A throttled sign is one request too, and names what failed.
    let signs = keys.metrics().signs;
    admin.inject_fault(Fault::new("keys.sign", FaultKind::Throttle { retry_after: None }).times(1));
    let signer = keys.signer(&versions[0]).await.unwrap();
    assert_eq!(signer.sign(b"x.y").await.unwrap_err().status(), Some(429));
    assert_eq!(keys.metrics().signs, signs + 1);
    sign_and_verify(&keys, &versions[0]).await;

    // Throttled: the error names the vault, the item, the operation and the status.
    let before = admin.counter("keys.versions");
    let fault = admin.inject_fault(Fault::new(
        "keys.versions",
        FaultKind::Throttle { retry_after: None },
    ));
    let error = keys.load().await.unwrap_err();
    admin.clear_fault(fault);
    assert_eq!(admin.counter("keys.versions") - before, 1, "one request");
    let text = error.to_string();
    for part in [
        "tv.vault.localhost",
        "keys/k",
        "list versions",
        "429",
        "Throttled",
    ] {
        assert!(text.contains(part), "`{part}` in {text}");
    }
    assert!(
        std::error::Error::source(&error).is_some(),
        "chains to the Azure error"
    );
    assert!(!text.contains("eyJ"), "no token in {text}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_vault_item_operation_and_status() {
    let emu = common::start().await;
    let missing = common::keys(&emu, "ev", "nope");
    let error = missing.versions().await.unwrap_err();
    assert_eq!(error.status(), Some(404));
    let text = error.to_string();
    for part in [
        "Key Vault ev.vault.localhost",
        "keys/nope",
        "list versions",
        "404",
    ] {
        assert!(text.contains(part), "`{part}` in {text}");
    }
    let m = missing.metrics();
    assert_eq!((m.lists, m.failures), (1, 1), "a 404 is one request");
    // Through the KeySource trait, a SourceError with the status and this error as its cause.
    let source: Arc<dyn KeySource> = Arc::new(missing);
    let error = source.load().await.unwrap_err();
    assert_eq!(error.status(), Some(404));
    assert!(error.to_string().contains("keys/nope"));
    assert!(std::error::Error::source(&error).is_some());

    // A disabled version refuses to sign: 403, not retried.
    let admin = emu.admin();
    let made = admin
        .create_key_version("ev", "k", KeyVersionOptions::new(KeySpec::Ec(Curve::P256)))
        .unwrap();
    let keys = common::keys(&emu, "ev", "k");
    let version = keys.versions().await.unwrap().remove(0);
    admin.set_version_enabled("ev", "k", &made.version, false);
    let signer = keys.signer(&version).await.unwrap();
    let error = signer.sign(b"x.y").await.unwrap_err();
    assert_eq!(error.status(), Some(403));
    let text = error.to_string();
    assert!(
        text.contains(&format!("keys/k/{}", made.version)) && text.contains("sign"),
        "{text}"
    );
    assert_eq!(keys.metrics().signs, 1, "one request");

    // Bad configuration is refused before any request.
    let http =
        KeyVaultKeys::builder("http://ev.vault.localhost/", "k", common::credential(&emu)).build();
    assert!(http.unwrap_err().to_string().contains("https"));
    emu.shutdown().await;
}

/// The request costs the fleet simulation (`keyroll-fleet`) models, measured: a cold load is
/// the list (one page per 25 versions) plus one get per enabled version; a refresh lists
/// only; a new version adds its one get. Counted by the vault itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_load_costs_the_pages_and_a_get_per_version_and_a_refresh_only_the_pages() {
    let emu = common::start().await;
    let admin = emu.admin();
    let t0 = common::t0(&emu);
    for n in 0..30 {
        admin
            .create_certificate_version(
                "fleet",
                "sts",
                CertificateVersionOptions::new().created(t0 as i64 + n),
            )
            .unwrap();
    }
    admin.reset_counters();
    let cache = KeyCache::builder(common::certificates(&emu, "fleet", "sts")).build();
    assert_eq!(cache.refresh_now().await.unwrap().versions().len(), 30);
    let pages = admin.counter("certificates.versions");
    assert_eq!(
        (pages, admin.counter("certificates.get")),
        (2, 30),
        "{:?}",
        admin.counters()
    );
    cache.refresh_now().await.unwrap();
    assert_eq!(admin.counter("certificates.versions"), 2 * pages);
    assert_eq!(
        admin.counter("certificates.get"),
        30,
        "known versions are kept"
    );
    admin
        .create_certificate_version(
            "fleet",
            "sts",
            CertificateVersionOptions::new().created(t0 as i64 + 60),
        )
        .unwrap();
    admin.reset_counters();
    assert_eq!(cache.refresh_now().await.unwrap().versions().len(), 31);
    assert_eq!(
        admin.counters().into_iter().collect::<Vec<_>>(),
        [
            ("certificates.get".to_owned(), 1),
            ("certificates.versions".to_owned(), 2)
        ]
    );
    emu.shutdown().await;
}
