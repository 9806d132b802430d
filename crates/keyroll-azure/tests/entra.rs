//! Entra ID tokens: `EntraTokens` through the token cache's refresh-ahead (a scripted
//! credential on paused tokio time),
//! and both real paths against the emulator over HTTPS: the vault-signed client assertion and
//! App Service managed identity (in a child process, since the credential reads the process
//! environment), each token checked by keyroll's validator against the emulator's JWKS.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use base64::Engine as _;
use futures_util::FutureExt as _;
use http::StatusCode;
use keyroll_azure::{
    CertificateKeyInfo, EntraTokens, KeyVaultClientAssertion, KeyVaultKeys,
    credential_options_with_transport,
};
use keyroll_core::jwt::{Issuer, Validation};
use keyroll_core::token::{TokenCache, TokenCacheConfig, TokenSource};
use keyroll_core::{Algorithm, Clock, JwksSource, KeyCache, TokioClock};
use keyroll_emulator::{
    CertificateVersionOptions, Curve, EmulatorHandle, KeySpec, KeyVersionOptions,
};

/// A credential that hands out `t1`, `t2`, … valid for `lifetime` on `clock`, or fails.
#[derive(Debug)]
struct Scripted {
    clock: Arc<TokioClock>,
    lifetime: Duration,
    issued: AtomicU32,
    failing: AtomicBool,
    scopes: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(clock: &Arc<TokioClock>, lifetime: Duration) -> Arc<Scripted> {
        Arc::new(Scripted {
            clock: clock.clone(),
            lifetime,
            issued: AtomicU32::new(0),
            failing: AtomicBool::new(false),
            scopes: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl TokenCredential for Scripted {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        *self.scopes.lock().unwrap() = scopes.iter().map(|s| (*s).to_owned()).collect();
        if self.failing.load(Ordering::SeqCst) {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "AADSTS50000: scripted outage",
            ));
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let expires = self.clock.now() + self.lifetime;
        Ok(AccessToken::new(format!("t{n}"), expires.into()))
    }
}

/// Lets spawned tasks (the background refresh) run, without moving paused time.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// A token cache over `EntraTokens` (fixed scopes, or each audience's `/.default`).
fn cached(
    credential: Arc<Scripted>,
    clock: &Arc<TokioClock>,
    scopes: &[&str],
) -> TokenCache<EntraTokens> {
    let source = EntraTokens::new(credential, scopes).clock(clock.clone());
    TokenCache::builder(source)
        .config(TokenCacheConfig::default().refresh_jitter(0.0))
        .clock(clock.clone())
        .build()
}

#[tokio::test(start_paused = true)]
async fn refreshes_ahead_in_the_background_and_keeps_a_valid_token_on_failure() {
    let clock = Arc::new(TokioClock::default());
    let hour = Duration::from_secs(3600);
    let credential = Scripted::new(&clock, hour);
    let tokens = cached(credential.clone(), &clock, &["api://billing/.default"]);

    let first = tokens.get("api://billing").await.unwrap();
    assert_eq!(first.header_value(), "Bearer t1");
    assert_eq!(first.refresh_at(), first.fetched_at() + hour.mul_f64(0.8));
    assert!(
        !format!("{first:?}").contains("t1"),
        "Debug prints no secret"
    );

    // Before the refresh point: served from memory, no credential call.
    tokio::time::sleep(hour.mul_f64(0.8) - Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(
        tokens.get("api://billing").await.unwrap().header_value(),
        "Bearer t1"
    );
    assert_eq!(credential.issued.load(Ordering::SeqCst), 1);

    // At the refresh point the next call still gets t1 at once, and the background task
    // refreshes: callers never wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let due = tokens.get("api://billing").now_or_never().unwrap().unwrap();
    assert_eq!(due.header_value(), "Bearer t1");
    settle().await;
    assert_eq!(credential.issued.load(Ordering::SeqCst), 2);
    let second = tokens.get("api://billing").now_or_never().unwrap().unwrap();
    assert_eq!(second.header_value(), "Bearer t2");
    assert_eq!(
        tokens.metrics().refreshes,
        1,
        "the only fetch after the first ran ahead"
    );

    // The credential fails: the current token is kept while valid, retries back off.
    credential.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(hour.mul_f64(0.8) + Duration::from_secs(1)).await;
    tokens.get("api://billing").await.unwrap();
    settle().await;
    let failures = tokens.metrics().fetch_failures;
    assert!(failures >= 1);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        assert_eq!(
            tokens.get("api://billing").await.unwrap().header_value(),
            "Bearer t2",
            "stale but valid"
        );
    }
    // Backoff from 1 s doubling to 60 s, each delay shortened by up to a fifth: at most 11
    // retries in these 5 minutes, where a loop would make thousands.
    let later = tokens.metrics().fetch_failures;
    assert!(
        later > failures && later <= failures + 11,
        "backoff, not a loop: {later}"
    );
    // Past its expiry it is no longer served: the caller gets the error.
    tokio::time::sleep(hour).await;
    let error = tokens.get("api://billing").await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("api://billing/.default") && text.contains("AADSTS50000"),
        "{text}"
    );
    assert!(std::error::Error::source(&error).is_some());
    // The credential recovers: a new token once the backoff has run.
    credential.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        tokens.get("api://billing").await.unwrap().header_value(),
        "Bearer t3"
    );
}

#[tokio::test(start_paused = true)]
async fn long_lived_tokens_refresh_at_half_life_and_scopes_follow_the_audience() {
    let clock = Arc::new(TokioClock::default());
    let day = Duration::from_secs(86_400);
    let credential = Scripted::new(&clock, day);
    // No scopes: each audience gets `{audience}/.default`.
    let source = EntraTokens::new(credential.clone(), &[]).clock(clock.clone());
    let token = TokenSource::token(&source, "api://orders/").await.unwrap();
    assert_eq!(token.secret(), "t1");
    assert_eq!(
        *credential.scopes.lock().unwrap(),
        ["api://orders/.default"]
    );
    let fetched = clock.now();
    assert_eq!(token.expires_at(), fetched + day);
    // Entra's refresh_in for long-lived tokens: half the lifetime.
    assert_eq!(token.refresh_at(), Some(fetched + day / 2));

    let tokens = cached(credential.clone(), &clock, &[]);
    let first = tokens.get("api://orders").await.unwrap();
    assert_eq!(first.refresh_at(), clock.now() + day / 2);
    tokio::time::sleep(day / 2 + Duration::from_secs(1)).await;
    tokens.get("api://orders").await.unwrap();
    settle().await;
    assert_eq!(
        tokens.get("api://orders").await.unwrap().header_value(),
        "Bearer t3"
    );
    assert_eq!(credential.issued.load(Ordering::SeqCst), 3);
    // Concurrent callers on a cold audience share one credential call.
    let calls = (0..50).map(|_| tokens.get("api://billing"));
    let answers = futures_util::future::join_all(calls).await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().unwrap().header_value() == "Bearer t4")
    );
    assert_eq!(credential.issued.load(Ordering::SeqCst), 4);
}

/// keyroll's validator over the emulator's Entra JWKS accepts `token` for `audience` (a Key
/// Vault token: v1, issued by `https://sts.windows.net/{tenant}/`).
async fn validator_accepts(emu: &EmulatorHandle, token: &str, audience: &str) -> StatusCode {
    let jwks = JwksSource::new(emu.jwks_url(emu.tenant_id()).as_str())
        .unwrap()
        .with_client(emu.http_client());
    let issuer = Issuer::new(
        KeyCache::builder(jwks).build(),
        Validation::new(emu.issuer_v1(emu.tenant_id()), [audience]),
    );
    common::status_through_validator(issuer, token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_signed_assertion_gets_entra_tokens_the_validator_accepts() {
    let emu = common::start().await;
    let admin = emu.admin();
    let made = admin
        .create_certificate_version("idv", "app-cert", CertificateVersionOptions::new())
        .unwrap();
    let cer = base64::engine::general_purpose::STANDARD
        .decode(made.bundle["cer"].as_str().unwrap())
        .unwrap();
    emu.register_client_certificate("vault-app", &cer).unwrap();

    let build = |alg: Algorithm| {
        KeyVaultClientAssertion::builder(
            emu.vault_url("idv").as_str(),
            "app-cert",
            common::credential(&emu),
        )
        .client_options(common::vault_options(&emu))
        .tenant_id(emu.tenant_id())
        .client_id("vault-app")
        .authority_host(emu.authority_host().as_str())
        .algorithm(alg)
        .lifetime(Duration::from_secs(300))
    };
    let assertion = build(Algorithm::RS256).build().unwrap();
    let info = assertion.key_info().await.unwrap();
    let (x5t, x5t_s256) = keyroll_core::certificate_thumbprints(&cer);
    assert_eq!(
        info,
        CertificateKeyInfo::new(
            made.bundle["kid"].as_str().unwrap(),
            x5t.clone(),
            x5t_s256.clone()
        )
    );

    // The assertion: RFC 7523 claims, x5t, signed by the vault, a fresh jti each time.
    let a = assertion.assertion().await.unwrap();
    let b = assertion.assertion().await.unwrap();
    let (header, claims) = (common::jwt_part(&a, 0), common::jwt_part(&a, 1));
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["x5t"], x5t.as_str());
    let endpoint = emu.token_endpoint(emu.tenant_id()).to_string();
    assert_eq!(claims["aud"], endpoint.as_str());
    assert_eq!(
        (claims["iss"].as_str(), claims["sub"].as_str()),
        (Some("vault-app"), Some("vault-app"))
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(),
        300
    );
    assert_ne!(claims["jti"], common::jwt_part(&b, 1)["jti"]);
    let m = assertion.metrics();
    assert_eq!(
        (m.gets, m.signs),
        (1, 2),
        "the certificate is looked up once"
    );

    // PS256: x5t#S256 in the header; with known key info there is no lookup at all.
    let fast = build(Algorithm::PS256)
        .key_info(info.clone())
        .build()
        .unwrap();
    let ps = fast.assertion().await.unwrap();
    assert_eq!(common::jwt_part(&ps, 0)["x5t#S256"], x5t_s256.as_str());
    assert!(common::jwt_part(&ps, 0).get("x5t").is_none());
    assert_eq!((fast.metrics().gets, fast.metrics().signs), (0, 1));

    // As azure_identity's ClientAssertion: Entra tokens with no secret anywhere.
    let resource = emu.vault_resource();
    let credential = assertion
        .into_credential(Some(credential_options_with_transport(
            emu.http_client(),
            emu.authority_host().as_str(),
        )))
        .unwrap();
    let tokens = EntraTokens::new(credential.clone(), &[&format!("{resource}/.default")]);
    let token = tokens.access_token(&resource).await.unwrap();
    assert_eq!(common::jwt_part(token.secret(), 1)["appid"], "vault-app");
    assert_eq!(
        validator_accepts(&emu, token.secret(), &resource).await,
        StatusCode::OK
    );
    assert_eq!(
        validator_accepts(&emu, token.secret(), "api://other").await,
        StatusCode::UNAUTHORIZED
    );
    // The token opens the vault, too.
    admin
        .create_key_version(
            "idv",
            "signing",
            KeyVersionOptions::new(KeySpec::Ec(Curve::P256)),
        )
        .unwrap();
    let keys = KeyVaultKeys::builder(emu.vault_url("idv").as_str(), "signing", credential)
        .client_options(common::vault_options(&emu))
        .build()
        .unwrap();
    assert_eq!(keys.versions().await.unwrap().len(), 1);
    emu.shutdown().await;
}
