//! Minting interoperates with an independent JWT library, and verification refuses what it must.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use keyroll_core::jwt::{
    InvalidReason, Issuer, TokenTemplate, Validation, VerifiedToken, Verifier, VerifyError,
};
use keyroll_core::{Algorithm, KeyCache, KeyCacheConfig, LocalKey, StaticKeys};

fn keys_for(algorithm: Algorithm) -> (KeyCache, LocalKey) {
    let key = LocalKey::generate(algorithm).unwrap();
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", key.pkcs8_der().to_vec()));
    let keys = StaticKeys::new().with_private_pem(algorithm, &pem).unwrap();
    (
        KeyCache::builder(keys)
            .config(KeyCacheConfig::default())
            .build(),
        key,
    )
}

/// Why verification refused a token (panics if it did not refuse it as invalid).
fn reason(result: Result<VerifiedToken, VerifyError>) -> InvalidReason {
    match result {
        Err(VerifyError::Invalid(invalid)) => invalid.reason(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn minted_tokens_decode_with_jsonwebtoken() {
    for algorithm in [
        Algorithm::RS256,
        Algorithm::PS384,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let (keys, key) = keys_for(algorithm);
        let minted = TokenTemplate::new("iss")
            .claim("role", "reader")
            .mint(&keys, "aud")
            .await
            .unwrap();
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(serde_json::to_value(key.public_jwk()).unwrap()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let alg: jsonwebtoken::Algorithm = algorithm.as_str().parse().unwrap();
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.set_audience(&["aud"]);
        validation.set_issuer(&["iss"]);
        let decoded =
            jsonwebtoken::decode::<serde_json::Value>(&minted.token, &decoding, &validation)
                .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
        assert_eq!(decoded.claims["role"], "reader");
        assert_eq!(decoded.header.kid.as_deref(), Some(minted.kid.as_str()));
        assert!(
            !format!("{minted:?}").contains(&minted.token),
            "Debug redacts the token"
        );
    }
}

#[tokio::test]
async fn checks_run_before_the_signature_and_reasons_are_typed() {
    let (keys, _) = keys_for(Algorithm::ES256);
    let verifier = Verifier::new([Issuer::new(
        keys.clone(),
        Validation::new("iss", ["aud"])
            .algorithms([Algorithm::ES256])
            .typ("JWT"),
    )]);
    let good = TokenTemplate::new("iss")
        .mint(&keys, "aud")
        .await
        .unwrap()
        .token;
    verifier.verify(&good).await.unwrap();

    let wrong_aud = TokenTemplate::new("iss")
        .mint(&keys, "other")
        .await
        .unwrap()
        .token;
    assert_eq!(
        reason(verifier.verify(&wrong_aud).await),
        InvalidReason::WrongAudience
    );
    let wrong_iss = TokenTemplate::new("evil")
        .mint(&keys, "aud")
        .await
        .unwrap()
        .token;
    assert_eq!(
        reason(verifier.verify(&wrong_iss).await),
        InvalidReason::UntrustedIssuer
    );
    let wrong_typ = TokenTemplate::new("iss")
        .typ("at+jwt")
        .mint(&keys, "aud")
        .await
        .unwrap()
        .token;
    assert_eq!(
        reason(verifier.verify(&wrong_typ).await),
        InvalidReason::WrongType
    );
    let expired = TokenTemplate::new("iss")
        .lifetime(Duration::ZERO)
        .mint(&keys, "aud")
        .await
        .unwrap()
        .token;
    // exp = iat: still inside the 60 s leeway.
    verifier.verify(&expired).await.unwrap();

    let mut tampered = good.clone();
    tampered.push('A');
    assert!(matches!(
        reason(verifier.verify(&tampered).await),
        InvalidReason::BadSignature | InvalidReason::Malformed(_)
    ));
    assert_eq!(
        reason(verifier.verify("a.b").await),
        InvalidReason::Malformed("not a compact JWS")
    );
    assert_eq!(
        reason(verifier.verify("a.b.c.d.e").await),
        InvalidReason::Encrypted
    );
    let big = "a".repeat(9000);
    assert_eq!(reason(verifier.verify(&big).await), InvalidReason::TooLarge);
}

#[tokio::test]
async fn audiences_must_be_named_unless_any_audience_is_explicit() {
    let (keys, _) = keys_for(Algorithm::ES256);
    let token = TokenTemplate::new("iss")
        .mint(&keys, "aud")
        .await
        .unwrap()
        .token;
    let none: [&str; 0] = [];
    let strict = Verifier::new([Issuer::new(keys.clone(), Validation::new("iss", none))]);
    assert!(matches!(
        strict.verify(&token).await,
        Err(VerifyError::Invalid(invalid)) if invalid.reason() == InvalidReason::WrongAudience
    ));
    let any = Verifier::new([Issuer::new(
        keys,
        Validation::new("iss", none).any_audience(),
    )]);
    any.verify(&token).await.unwrap();
}

#[tokio::test]
async fn scopes_as_a_string_or_an_array() {
    let (keys, _) = keys_for(Algorithm::ES256);
    let verifier = Verifier::new([Issuer::new(keys.clone(), Validation::new("iss", ["aud"]))]);
    for scope in [
        serde_json::json!("read write"),
        serde_json::json!(["read", "write"]),
    ] {
        let token = TokenTemplate::new("iss")
            .claim("scp", scope)
            .mint(&keys, "aud")
            .await
            .unwrap()
            .token;
        let verified = verifier.verify(&token).await.unwrap();
        assert!(verified.claims().has_scope("write"));
        assert!(!verified.claims().has_scope("admin"));
        assert!(
            !format!("{verified:?}").contains(&token),
            "Debug does not print the token"
        );
    }
}

#[tokio::test]
async fn a_remembered_header_changes_no_outcome() {
    let (keys, _) = keys_for(Algorithm::ES256);
    let verifier = Verifier::new([Issuer::new(keys.clone(), Validation::new("iss", ["aud"]))]);
    let good = TokenTemplate::new("iss")
        .mint(&keys, "aud")
        .await
        .unwrap()
        .token;
    verifier.verify(&good).await.unwrap();
    verifier.verify(&good).await.unwrap(); // now with the header remembered
    let other = TokenTemplate::new("iss")
        .mint(&keys, "other")
        .await
        .unwrap()
        .token;
    let (header, rest) = good.split_once('.').unwrap();
    assert!(other.starts_with(header), "same key, same header");
    // Another payload under the remembered header: its own checks and signature still apply.
    assert_eq!(
        reason(verifier.verify(&other).await),
        InvalidReason::WrongAudience
    );
    let (_, other_payload_and_signature) = other.split_once('.').unwrap();
    let (other_payload, _) = other_payload_and_signature.split_once('.').unwrap();
    let (_, good_signature) = rest.split_once('.').unwrap();
    let spliced = format!("{header}.{other_payload}.{good_signature}");
    assert_eq!(
        reason(verifier.verify(&spliced).await),
        InvalidReason::WrongAudience
    );
    let (good_payload, _) = rest.split_once('.').unwrap();
    let unsigned = format!("{header}.{good_payload}.");
    assert_eq!(
        reason(verifier.verify(&unsigned).await),
        InvalidReason::Malformed("the signature is empty")
    );
    let mut flipped = good_signature.to_owned().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let tampered = format!(
        "{header}.{good_payload}.{}",
        String::from_utf8(flipped).unwrap()
    );
    assert_eq!(
        reason(verifier.verify(&tampered).await),
        InvalidReason::BadSignature
    );
}

#[tokio::test]
async fn tokens_find_their_issuer_among_many_and_a_later_issuer_replaces_an_earlier_one() {
    let (keys, _) = keys_for(Algorithm::ES256);
    let issuer = |iss: &str, aud: &str| Issuer::new(keys.clone(), Validation::new(iss, [aud]));
    let verifier = Verifier::new([
        issuer("https://c.example", "c"),
        issuer("https://a.example", "first"),
        issuer("https://b.example", "b"),
        issuer("https://a.example", "second"),
    ]);
    assert_eq!(verifier.issuers().count(), 3);
    for (iss, aud) in [
        ("https://a.example", "second"),
        ("https://b.example", "b"),
        ("https://c.example", "c"),
    ] {
        let minted = TokenTemplate::new(iss).mint(&keys, aud).await.unwrap();
        let verified = verifier.verify(&minted.token).await.unwrap();
        assert_eq!(verified.issuer(), iss);
    }
    let replaced = TokenTemplate::new("https://a.example")
        .mint(&keys, "first")
        .await
        .unwrap();
    assert_eq!(
        reason(verifier.verify(&replaced.token).await),
        InvalidReason::WrongAudience
    );
    let unknown = TokenTemplate::new("https://d.example")
        .mint(&keys, "d")
        .await
        .unwrap();
    assert_eq!(
        reason(verifier.verify(&unknown.token).await),
        InvalidReason::UntrustedIssuer
    );
}
