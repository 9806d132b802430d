//! Configuration types from files (feature `serde`, on for this package's tests): every type
//! from a full and from a partial TOML table (missing keys keep the defaults), typo'd keys and
//! bad durations refused with the key named, round trips through `Serialize`, and values out
//! of range brought into it (or made harmless) as the setters' are. The sample
//! `examples/keyroll.toml` reads too.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use keyroll::jwt::{Issuer, TokenTemplate, Validation, Verifier};
use keyroll::token::{StaticToken, TokenCache, TokenCacheConfig};
use keyroll::tower::validate::{self, ValidateLayer, VerifiedClaims};
use keyroll::{Algorithm, KeyCache, KeyCacheConfig, LocalKeyRing, RotationPolicy};
use keyroll_azure::{
    CertificateKeyInfo, CertificateKid, EntraTokensConfig, KeyIdFormat, KeyVaultCertificatesConfig,
    KeyVaultClientAssertionConfig, KeyVaultKeysConfig,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn read<T: DeserializeOwned>(text: &str) -> T {
    toml::from_str(text).unwrap_or_else(|error| panic!("{error}"))
}

fn refused<T: DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
    toml::from_str::<T>(text).unwrap_err().to_string()
}

/// `value` written as TOML and read back.
fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> (String, T) {
    let text = toml::to_string(value).unwrap();
    let back = toml::from_str(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
    (text, back)
}

fn full_key_cache() -> KeyCacheConfig {
    KeyCacheConfig::default()
        .refresh_interval(10 * MINUTE)
        .refresh_jitter(0.2)
        .unknown_kid_cooldown(MINUTE)
        .negative_cache(10 * MINUTE, 500)
        .backoff(Duration::from_secs(2), 2 * MINUTE)
        .max_retry_after(15 * MINUTE)
        .throttle_spread(3 * MINUTE)
        .max_stale(6 * HOUR)
        .load_timeout(Duration::from_secs(10))
        .policy(
            RotationPolicy::default()
                .propagation(2 * HOUR)
                .leeway(Duration::from_secs(30)),
        )
}

fn full_token_cache() -> TokenCacheConfig {
    TokenCacheConfig::default()
        .refresh_ratio(0.5)
        .refresh_jitter(0.1)
        .expiry_margin(Duration::from_secs(10))
        .backoff(Duration::from_millis(500), 30 * Duration::from_secs(1))
        .max_retry_after(5 * MINUTE)
        .fetch_timeout(Duration::from_secs(5))
        .max_audiences(100)
        .min_age_to_invalidate(MINUTE)
}

fn full_validation() -> Validation {
    let mut validation = Validation::new("https://orders.internal", ["api://billing", "api://x"])
        .any_audience()
        .algorithms([Algorithm::ES256, Algorithm::PS256])
        .leeway(Duration::from_secs(30))
        .typ("at+jwt")
        .max_age(HOUR + 30 * MINUTE);
    validation.required_claims = vec!["exp".into(), "sub".into()];
    validation
}

fn full_template() -> TokenTemplate {
    TokenTemplate::new("https://orders.internal")
        .subject("orders")
        .lifetime(10 * MINUTE)
        .typ("at+jwt")
        .include_x5t(true)
        .claim("scope", "billing.read")
        .claim("tenant", 7)
}

#[test]
fn every_config_type_reads_a_full_table() {
    let keys: KeyCacheConfig = read(
        r#"
        refresh_interval = "10m"
        refresh_jitter = 0.2
        unknown_kid_cooldown = "1m"
        negative_ttl = "10m"
        negative_capacity = 500
        backoff_min = "2s"
        backoff_max = "2m"
        max_retry_after = "15m"
        throttle_spread = "3m"
        max_stale = "6h"
        load_timeout = "10s"
        [policy]
        propagation = "2h"
        leeway = "30s"
        "#,
    );
    assert_eq!(keys, full_key_cache());

    let policy: RotationPolicy = read("propagation = \"1h 30m\"\nleeway = \"90s\"");
    assert_eq!(
        policy,
        RotationPolicy::default()
            .propagation(HOUR + 30 * MINUTE)
            .leeway(Duration::from_secs(90))
    );

    let tokens: TokenCacheConfig = read(
        r#"
        refresh_ratio = 0.5
        refresh_jitter = 0.1
        expiry_margin = "10s"
        backoff_min = "500ms"
        backoff_max = "30s"
        max_retry_after = "5m"
        fetch_timeout = "5s"
        max_audiences = 100
        min_age_to_invalidate = "1m"
        "#,
    );
    assert_eq!(tokens, full_token_cache());

    let validation: Validation = read(
        r#"
        issuer = "https://orders.internal"
        audiences = ["api://billing", "api://x"]
        any_audience = true
        algorithms = ["ES256", "PS256"]
        leeway = "30s"
        required_claims = ["exp", "sub"]
        typ = "at+jwt"
        max_age = "1h 30m"
        "#,
    );
    assert_eq!(validation, full_validation());

    let template: TokenTemplate = read(
        r#"
        issuer = "https://orders.internal"
        subject = "orders"
        lifetime = "10m"
        typ = "at+jwt"
        include_x5t = true
        [extra]
        scope = "billing.read"
        tenant = 7
        "#,
    );
    assert_eq!(template, full_template());

    let verified: validate::TokenCacheConfig = read("capacity = 500\nmax_ttl = \"90s\"");
    assert_eq!(
        verified,
        validate::TokenCacheConfig::new(500, Duration::from_secs(90))
    );
}

#[test]
fn every_azure_config_type_reads_a_full_table() {
    let keys: KeyVaultKeysConfig = read(
        r#"
        vault_url = "https://myvault.vault.azure.net/"
        key_name = "signing"
        kid = "version"
        algorithm = "PS256"
        "#,
    );
    let mut expected = KeyVaultKeysConfig::new("https://myvault.vault.azure.net/", "signing");
    expected.kid = KeyIdFormat::Version;
    expected.algorithm = Some(Algorithm::PS256);
    assert_eq!(keys, expected);

    let certificates: KeyVaultCertificatesConfig = read(
        r#"
        vault_url = "https://myvault.vault.azure.net/"
        certificate_name = "sts"
        kid = "key_id"
        local_signing = true
        algorithm = "RS384"
        "#,
    );
    let mut expected = KeyVaultCertificatesConfig::new("https://myvault.vault.azure.net/", "sts");
    expected.kid = CertificateKid::KeyId;
    expected.local_signing = true;
    expected.algorithm = Some(Algorithm::RS384);
    assert_eq!(certificates, expected);

    let assertion: KeyVaultClientAssertionConfig = read(
        r#"
        vault_url = "https://myvault.vault.azure.net/"
        certificate_name = "app"
        tenant_id = "00000000-0000-0000-0000-000000000000"
        client_id = "11111111-1111-1111-1111-111111111111"
        authority_host = "https://login.example/"
        algorithm = "PS256"
        lifetime = "5m"
        key_info_ttl = "30m"
        [key_info]
        key_id = "https://myvault.vault.azure.net/keys/app/0123"
        x5t = "sha1"
        x5t_s256 = "sha256"
        "#,
    );
    let mut expected =
        KeyVaultClientAssertionConfig::new("https://myvault.vault.azure.net/", "app");
    expected.tenant_id = Some("00000000-0000-0000-0000-000000000000".into());
    expected.client_id = Some("11111111-1111-1111-1111-111111111111".into());
    expected.authority_host = Some("https://login.example/".into());
    expected.algorithm = Algorithm::PS256;
    expected.lifetime = 5 * MINUTE;
    expected.key_info_ttl = 30 * MINUTE;
    expected.key_info = Some(CertificateKeyInfo::new(
        "https://myvault.vault.azure.net/keys/app/0123",
        "sha1",
        "sha256",
    ));
    assert_eq!(assertion, expected);

    let entra: EntraTokensConfig = read(r#"scopes = ["api://billing/.default"]"#);
    assert_eq!(entra, EntraTokensConfig::new(["api://billing/.default"]));
}

#[test]
fn partial_tables_keep_the_defaults() {
    assert_eq!(read::<KeyCacheConfig>(""), KeyCacheConfig::default());
    assert_eq!(read::<RotationPolicy>(""), RotationPolicy::default());
    assert_eq!(read::<TokenCacheConfig>(""), TokenCacheConfig::default());
    assert_eq!(
        read::<validate::TokenCacheConfig>(""),
        validate::TokenCacheConfig::default()
    );
    assert_eq!(read::<EntraTokensConfig>(""), EntraTokensConfig::default());

    // One key set: only it differs, a partial nested table included.
    let keys: KeyCacheConfig = read("max_stale = \"2h\"\n[policy]\nleeway = \"5s\"");
    assert_eq!(
        keys,
        KeyCacheConfig::default()
            .max_stale(2 * HOUR)
            .policy(RotationPolicy::default().leeway(Duration::from_secs(5)))
    );
    let tokens: TokenCacheConfig = read("max_audiences = 3");
    assert_eq!(tokens, TokenCacheConfig::default().max_audiences(3));

    // The required keys only: what the constructors give.
    let validation: Validation = read("issuer = \"https://a\"\naudiences = [\"api://b\"]");
    assert_eq!(validation, Validation::new("https://a", ["api://b"]));
    let template: TokenTemplate = read("issuer = \"https://a\"");
    assert_eq!(template, TokenTemplate::new("https://a"));
    let vault = "vault_url = \"https://v.vault.azure.net/\"";
    assert_eq!(
        read::<KeyVaultKeysConfig>(&format!("{vault}\nkey_name = \"k\"")),
        KeyVaultKeysConfig::new("https://v.vault.azure.net/", "k")
    );
    assert_eq!(
        read::<KeyVaultCertificatesConfig>(&format!("{vault}\ncertificate_name = \"c\"")),
        KeyVaultCertificatesConfig::new("https://v.vault.azure.net/", "c")
    );
    assert_eq!(
        read::<KeyVaultClientAssertionConfig>(&format!("{vault}\ncertificate_name = \"c\"")),
        KeyVaultClientAssertionConfig::new("https://v.vault.azure.net/", "c")
    );
}

#[test]
fn a_typo_is_refused_naming_the_key() {
    let error = refused::<KeyCacheConfig>("refresh_intervall = \"5m\"");
    assert!(
        error.contains("unknown field `refresh_intervall`"),
        "{error}"
    );
    assert!(
        error.contains("`refresh_interval`"),
        "the keys it takes: {error}"
    );
    let error = refused::<KeyCacheConfig>("[policy]\npropagaton = \"1h\"");
    assert!(error.contains("unknown field `propagaton`"), "{error}");
    let error = refused::<TokenCacheConfig>("refresh_ration = 0.5");
    assert!(error.contains("unknown field `refresh_ration`"), "{error}");
    let error = refused::<validate::TokenCacheConfig>("capacty = 1");
    assert!(error.contains("unknown field `capacty`"), "{error}");
    let error = refused::<Validation>("issuer = \"a\"\naudiences = []\nalgorithm = [\"ES256\"]");
    assert!(error.contains("unknown field `algorithm`"), "{error}");
    let error = refused::<TokenTemplate>("issuer = \"a\"\nlifetim = \"1h\"");
    assert!(error.contains("unknown field `lifetim`"), "{error}");
    let error = refused::<KeyVaultCertificatesConfig>(
        "vault_url = \"https://v\"\ncertificate_name = \"c\"\nlocal_sign = true",
    );
    assert!(error.contains("unknown field `local_sign`"), "{error}");
    let error = refused::<EntraTokensConfig>("scope = []");
    assert!(error.contains("unknown field `scope`"), "{error}");

    // A required key left out is named too.
    let error = refused::<Validation>("issuer = \"https://a\"");
    assert!(error.contains("missing field `audiences`"), "{error}");
    let error = refused::<TokenTemplate>("lifetime = \"1h\"");
    assert!(error.contains("missing field `issuer`"), "{error}");
    let error = refused::<KeyVaultKeysConfig>("vault_url = \"https://v\"");
    assert!(error.contains("missing field `key_name`"), "{error}");
}

#[test]
fn a_bad_duration_or_value_is_refused() {
    for bad in ["\"5 minuts\"", "\"-5m\"", "\"\"", "300", "\"5\""] {
        let error = refused::<KeyCacheConfig>(&format!("max_stale = {bad}"));
        // The message shows the offending line, so the key is named.
        assert!(error.contains("max_stale"), "{bad}: {error}");
    }
    let error = refused::<KeyCacheConfig>("max_stale = \"5 minuts\"");
    assert!(error.contains("expected a duration"), "{error}");
    let error = refused::<Validation>("issuer = \"a\"\naudiences = []\nmax_age = \"forever\"");
    assert!(error.contains("max_age"), "{error}");
    // `none` and HMAC cannot be named: there is no such algorithm.
    for alg in ["none", "HS256"] {
        let text = format!("issuer = \"a\"\naudiences = []\nalgorithms = [\"{alg}\"]");
        let error = refused::<Validation>(&text);
        assert!(error.contains(alg), "{error}");
    }
    let error = refused::<KeyVaultKeysConfig>(
        "vault_url = \"https://v\"\nkey_name = \"k\"\nkid = \"thumbprint\"",
    );
    assert!(error.contains("unknown variant `thumbprint`"), "{error}");
}

#[test]
fn serialize_round_trips_in_human_readable_durations() {
    let (text, back) = round_trip(&full_key_cache());
    assert_eq!(back, full_key_cache());
    assert!(text.contains("refresh_interval = \"10m\""), "{text}");
    assert!(text.contains("[policy]"), "{text}");
    let (text, back) = round_trip(&full_validation());
    assert_eq!(back, full_validation());
    assert!(text.contains("max_age = \"1h 30m\""), "{text}");
    assert_eq!(round_trip(&full_token_cache()).1, full_token_cache());
    assert_eq!(round_trip(&full_template()).1, full_template());
    // Optional values left out are left out of the file too.
    let (text, back) = round_trip(&TokenTemplate::new("https://a"));
    assert_eq!(back, TokenTemplate::new("https://a"));
    assert!(!text.contains("subject"), "{text}");
    let verified = validate::TokenCacheConfig::new(9, HOUR);
    assert_eq!(round_trip(&verified).1, verified);
    let mut assertion = KeyVaultClientAssertionConfig::new("https://v.vault.azure.net/", "c");
    assertion.key_info = Some(CertificateKeyInfo::new("https://v/keys/c/1", "a", "b"));
    assert_eq!(round_trip(&assertion).1, assertion);
    let mut certificates = KeyVaultCertificatesConfig::new("https://v.vault.azure.net/", "c");
    certificates.kid = CertificateKid::KeyId;
    let (text, back) = round_trip(&certificates);
    assert_eq!(back, certificates);
    assert!(text.contains("kid = \"key_id\""), "{text}");
    let keys = KeyVaultKeysConfig::new("https://v.vault.azure.net/", "k");
    assert_eq!(round_trip(&keys).1, keys);
    let entra = EntraTokensConfig::new(["api://a/.default"]);
    assert_eq!(round_trip(&entra).1, entra);
}

#[tokio::test]
async fn values_from_a_file_are_brought_into_range_as_the_setters_are() {
    // The same out-of-range values as the setters' test (cache::config), from a file.
    let config: KeyCacheConfig = read(
        r#"
        refresh_interval = "0s"
        refresh_jitter = nan
        unknown_kid_cooldown = "0s"
        backoff_min = "9s"
        backoff_max = "0s"
        max_stale = "0s"
        load_timeout = "0s"
        "#,
    );
    let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap())
        .config(config)
        .build();
    let effective = keys.config();
    assert_eq!(effective.refresh_interval, Duration::from_millis(100));
    assert_eq!(effective.refresh_jitter, 0.0);
    assert_eq!(effective.unknown_kid_cooldown, Duration::from_millis(100));
    assert_eq!(effective.backoff_max, Duration::from_secs(9));
    assert_eq!(effective.max_stale, effective.refresh_interval);
    assert_eq!(effective.load_timeout, Duration::from_millis(100));
    keys.ready().await.unwrap();

    let config: TokenCacheConfig = read(
        r#"
        refresh_ratio = -1.0
        refresh_jitter = inf
        backoff_min = "0s"
        backoff_max = "0s"
        fetch_timeout = "0s"
        max_audiences = 0
        "#,
    );
    let tokens = TokenCache::builder(StaticToken::new("t"))
        .config(config)
        .build();
    let effective = tokens.config();
    assert_eq!(effective.refresh_ratio, 0.1);
    assert_eq!(effective.refresh_jitter, 0.0);
    assert_eq!(effective.backoff_min, Duration::from_millis(10));
    assert_eq!(effective.backoff_max, Duration::from_millis(10));
    assert_eq!(effective.fetch_timeout, Duration::from_millis(100));
    assert_eq!(effective.max_audiences, 1);
    assert!(tokens.get("api://a").await.is_ok());
}

#[tokio::test]
async fn the_longest_durations_a_file_can_hold_panic_nowhere() {
    // About u64::MAX seconds: the largest duration humantime reads.
    const FOREVER: &str = "\"500000000000years\"";
    let keys: KeyCacheConfig = read(&format!(
        "refresh_interval = {FOREVER}\nmax_stale = {FOREVER}\nload_timeout = {FOREVER}\n\
         backoff_max = {FOREVER}\nmax_retry_after = {FOREVER}\n[policy]\nleeway = {FOREVER}"
    ));
    let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap())
        .config(keys)
        .build();
    let template: TokenTemplate = read(&format!("issuer = \"https://a\"\nlifetime = {FOREVER}"));
    let minted = template.mint(&keys, "api://b").await.unwrap();
    assert!(minted.expires_at > SystemTime::UNIX_EPOCH + Duration::from_secs(250_000_000_000));
    let validation: Validation = read(&format!(
        "issuer = \"https://a\"\naudiences = [\"api://b\"]\nleeway = {FOREVER}\nmax_age = {FOREVER}"
    ));
    let verifier = Verifier::new([Issuer::new(keys.clone(), validation.clone())]);
    verifier.verify(&minted.token).await.unwrap();

    // The verified-token cache keeps such a token (its life beyond what a clock holds): a hit,
    // no panic.
    let verified: validate::TokenCacheConfig = read(&format!("max_ttl = {FOREVER}"));
    let layer = ValidateLayer::builder()
        .issuer(Issuer::new(keys, validation))
        .token_cache(verified)
        .build();
    let service = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(|request: http::Request<()>| async move {
            let verified = request.extensions().get::<VerifiedClaims>().is_some();
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from(verified.to_string()),
            )))
        });
    for _ in 0..2 {
        let request = http::Request::get("/")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", minted.token),
            )
            .body(())
            .unwrap();
        let response = tower::ServiceExt::oneshot(service.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
    }
    assert_eq!(layer.metrics().cache_hits, 1);
}

#[test]
fn the_sample_file_reads() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/keyroll.toml"
    ))
    .unwrap();
    let table: toml::Table = read(&text);
    let keys: KeyCacheConfig = table["keys"].clone().try_into().unwrap();
    assert_eq!(keys.max_stale, 12 * HOUR);
    let validation: Validation = table["validation"].clone().try_into().unwrap();
    assert_eq!(validation.max_age, Some(HOUR + 30 * MINUTE));
    let template: TokenTemplate = table["template"].clone().try_into().unwrap();
    assert_eq!(template.extra["scope"], "billing.read");
    let _: TokenCacheConfig = table["outbound"].clone().try_into().unwrap();
    let _: validate::TokenCacheConfig = table["verified_tokens"].clone().try_into().unwrap();
    let vault: KeyVaultCertificatesConfig = table["vault"].clone().try_into().unwrap();
    assert_eq!(vault.kid, CertificateKid::Thumbprint);
}
