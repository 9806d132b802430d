//! The attack table: every hostile or broken token gets the right status and challenge, and no
//! answer echoes the token.
#![allow(clippy::unwrap_used)]

mod validate_support;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use http::{Request, StatusCode, header::AUTHORIZATION};
use keyroll_core::jwt::{Issuer, Validation};
use keyroll_core::{Algorithm, KeyCacheConfig, LocalKey};
use serde_json::json;
use validate_support::*;

/// What a case must get back.
enum Expect {
    Ok,
    Missing,
    Invalid(&'static str),
    BadRequest,
}

struct Case {
    name: &'static str,
    /// The `Authorization` header values (none, one or several).
    authorization: Vec<Vec<u8>>,
    expect: Expect,
}

fn case(name: &'static str, token: impl AsRef<str>, expect: Expect) -> Case {
    Case {
        name,
        authorization: vec![format!("Bearer {}", token.as_ref()).into_bytes()],
        expect,
    }
}

fn raw(name: &'static str, values: Vec<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name,
        authorization: values,
        expect,
    }
}

const UNSUPPORTED: &str = "the token's algorithm is not supported";
const NOT_JWS: &str = "not a compact JWS";
const NOT_B64: &str = "a segment is not base64url";
const BAD_SIGNATURE_ENCODING: &str = "a segment is not base64url";
const BAD_SIGNATURE: &str = "the token's signature is invalid";
const UNKNOWN_KEY: &str = "the token's signing key is unknown";
const MISMATCH: &str = "the token's algorithm does not match its key";

#[tokio::test]
async fn attack_table() {
    // Issuer ISS accepts ES256 and RS256 only; a second issuer has keys of its own.
    let fixture = Fixture::with(|b| b);
    let other_source = TestSource::new();
    let other_key = other_source.add("other-1", Algorithm::ES256);
    let other_cache = cache(&other_source, &fixture.clock, KeyCacheConfig::default());
    let layer = keyroll_tower::validate::ValidateLayer::builder()
        .issuer(Issuer::new(
            fixture.keys.clone(),
            Validation::new(ISS, [AUD]).algorithms([Algorithm::ES256, Algorithm::RS256]),
        ))
        .issuer(Issuer::new(
            other_cache.clone(),
            Validation::new("https://other.example", [AUD]),
        ))
        .realm(REALM)
        .build();

    let src = &fixture.source;
    let ec = src.key("ec");
    let rsa = src.key("rsa");
    let now = fixture.now();
    let claims = fixture.claims();
    let with = |patch: serde_json::Value| {
        let mut c = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let es = |claims: &serde_json::Value| sign(&ec, &header("ES256", "ec"), claims);
    let valid_es = es(&claims);
    let valid_rs = sign(&rsa, &header("RS256", "rsa"), &claims);

    // Versions the attacks point at: disabled, expired; an EC key that no issuer knows.
    src.add_key(
        "disabled",
        Arc::new(LocalKey::generate(Algorithm::ES256).unwrap()),
        |v| v.with_enabled(false),
    );
    src.add_key(
        "retired",
        Arc::new(LocalKey::generate(Algorithm::ES256).unwrap()),
        |v| v.with_expires(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(T0 - 86_400)),
    );
    let attacker = LocalKey::generate(Algorithm::ES256).unwrap();
    let attacker_jwk = serde_json::to_value(attacker.public_jwk()).unwrap();

    // HS256 with the RSA public key (its JWK and DER forms) as the HMAC secret.
    let hs256 = |secret: &[u8]| {
        let input = format!(
            "{}.{}",
            b64(header("HS256", "rsa").to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
        format!("{input}.{}", b64(tag.as_ref()))
    };
    let rsa_jwk = serde_json::to_vec(&rsa.public_jwk()).unwrap();

    // A listener that `jku`/`x5u` point at: nothing may ever connect to it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let trap = format!("http://{}/jwks.json", listener.local_addr().unwrap());

    let [h, p, s]: [&str; 3] = valid_es.split('.').collect::<Vec<_>>().try_into().unwrap();
    let rs384 = LocalKey::from_pkcs8(Algorithm::RS384, rsa.pkcs8_der()).unwrap();
    let ps256 = LocalKey::from_pkcs8(Algorithm::PS256, rsa.pkcs8_der()).unwrap();

    let cases = vec![
        // Controls: what must pass.
        case("valid ES256", &valid_es, Expect::Ok),
        case("valid RS256", &valid_rs, Expect::Ok),
        raw(
            "lower-case scheme",
            vec![format!("bearer {valid_es}").into_bytes()],
            Expect::Ok,
        ),
        case(
            "aud array holding ours",
            es(&with(json!({"aud": ["x", AUD]}))),
            Expect::Ok,
        ),
        case(
            "expired within leeway",
            es(&with(json!({"exp": now - 30}))),
            Expect::Ok,
        ),
        case(
            "other issuer's own token",
            sign(
                &other_key,
                &header("ES256", "other-1"),
                &with(json!({"iss": "https://other.example"})),
            ),
            Expect::Ok,
        ),
        // Algorithm attacks.
        case(
            "alg none, no signature",
            format!(
                "{}.{}.",
                b64(json!({"alg":"none","kid":"ec"}).to_string().as_bytes()),
                p
            ),
            Expect::Invalid(UNSUPPORTED),
        ),
        case(
            "alg none with a signature",
            format!(
                "{}.{p}.{s}",
                b64(json!({"alg":"none","kid":"ec"}).to_string().as_bytes())
            ),
            Expect::Invalid(UNSUPPORTED),
        ),
        case(
            "alg nOnE",
            unsigned(&json!({"alg":"nOnE","kid":"ec"}), &claims, b"x"),
            Expect::Invalid(UNSUPPORTED),
        ),
        case(
            "HS256 keyed with the RSA JWK",
            hs256(&rsa_jwk),
            Expect::Invalid(UNSUPPORTED),
        ),
        case(
            "HS256 keyed with the RSA modulus",
            hs256(rsa.pkcs8_der()),
            Expect::Invalid(UNSUPPORTED),
        ),
        case(
            "alg outside the allow-list",
            sign(
                &LocalKey::generate(Algorithm::ES384).unwrap(),
                &header("ES384", "ec"),
                &claims,
            ),
            Expect::Invalid("the token's algorithm is not allowed"),
        ),
        case(
            "ES256 header on the RSA kid",
            sign(&ec, &header("ES256", "rsa"), &claims),
            Expect::Invalid(MISMATCH),
        ),
        case(
            "RS256 header on the EC kid",
            sign(&rsa, &header("RS256", "ec"), &claims),
            Expect::Invalid(MISMATCH),
        ),
        case(
            "RS384 on a version pinned to RS256",
            sign(&rs384, &header("RS384", "rsa"), &claims),
            Expect::Invalid("the token's algorithm is not allowed"),
        ),
        case(
            "PS256 signature under an RS256 header",
            sign(&ps256, &header("RS256", "rsa"), &claims),
            Expect::Invalid(BAD_SIGNATURE),
        ),
        // Key attacks.
        case(
            "kid of a disabled version",
            es_with_kid(&claims, "disabled", src),
            Expect::Invalid("the token's signing key is disabled or expired"),
        ),
        case(
            "kid of an expired version",
            es_with_kid(&claims, "retired", src),
            Expect::Invalid("the token's signing key is disabled or expired"),
        ),
        case(
            "unknown kid",
            sign(&attacker, &header("ES256", "nobody"), &claims),
            Expect::Invalid(UNKNOWN_KEY),
        ),
        case(
            "no kid and no x5t",
            sign(&ec, &json!({"alg":"ES256"}), &claims),
            Expect::Invalid("the token names no key"),
        ),
        case(
            "our kid, attacker's signature",
            sign(&attacker, &header("ES256", "ec"), &claims),
            Expect::Invalid(BAD_SIGNATURE),
        ),
        case(
            "signed by the other issuer's key",
            sign(&other_key, &header("ES256", "other-1"), &claims),
            Expect::Invalid(UNKNOWN_KEY),
        ),
        case(
            "jku header to an attacker JWKS",
            sign(
                &attacker,
                &json!({"alg":"ES256","kid":"attacker","jku":trap}),
                &claims,
            ),
            Expect::Invalid(UNKNOWN_KEY),
        ),
        case(
            "x5u header to an attacker certificate",
            sign(
                &attacker,
                &json!({"alg":"ES256","kid":"attacker","x5u":trap}),
                &claims,
            ),
            Expect::Invalid(UNKNOWN_KEY),
        ),
        case(
            "embedded jwk header",
            sign(
                &attacker,
                &json!({"alg":"ES256","kid":"ec","jwk":attacker_jwk}),
                &claims,
            ),
            Expect::Invalid(BAD_SIGNATURE),
        ),
        case(
            "crit header",
            sign(
                &ec,
                &json!({"alg":"ES256","kid":"ec","crit":["exp"],"exp":1}),
                &claims,
            ),
            Expect::Invalid("the token has critical header extensions"),
        ),
        // Claims.
        case(
            "expired",
            es(&with(json!({"exp": now - 3600}))),
            Expect::Invalid("the token has expired"),
        ),
        case(
            "not yet valid",
            es(&with(json!({"nbf": now + 3600}))),
            Expect::Invalid("the token is not yet valid"),
        ),
        case(
            "issued in the future",
            es(&with(json!({"iat": now + 3600}))),
            Expect::Invalid("the token was issued in the future"),
        ),
        case(
            "wrong audience",
            es(&with(json!({"aud": "https://elsewhere"}))),
            Expect::Invalid("the token is not for this audience"),
        ),
        case(
            "no audience",
            es(&with(json!({"aud": null}))),
            Expect::Invalid("the token is not for this audience"),
        ),
        case(
            "wrong issuer",
            es(&with(json!({"iss": "https://evil.example"}))),
            Expect::Invalid("the token's issuer is not trusted"),
        ),
        case(
            "no issuer",
            es(&with(json!({"iss": null}))),
            Expect::Invalid("the token's issuer is not trusted"),
        ),
        case(
            "missing exp",
            es(&with(json!({"exp": null}))),
            Expect::Invalid("the token lacks a required claim"),
        ),
        case(
            "exp as a string",
            es(&with(json!({"exp": "tomorrow"}))),
            Expect::Invalid("the payload is not a JSON object with valid claims"),
        ),
        // Structure.
        case("two segments", format!("{h}.{p}"), Expect::Invalid(NOT_JWS)),
        case("one segment", h, Expect::Invalid(NOT_JWS)),
        case(
            "four segments",
            format!("{valid_es}.{s}"),
            Expect::Invalid("too many segments"),
        ),
        case(
            "a JWE (five segments)",
            format!("{h}.{p}.{s}.{p}.{s}"),
            Expect::Invalid("encrypted tokens (JWE) are not accepted"),
        ),
        case(
            "invalid base64 header",
            format!("{h}*.{p}.{s}"),
            Expect::Invalid(NOT_B64),
        ),
        case(
            "invalid base64 signature",
            format!("{h}.{p}.{s}%"),
            // Decoded only when it is checked, after every cheaper check.
            Expect::Invalid(BAD_SIGNATURE_ENCODING),
        ),
        case(
            "padded base64",
            format!("{h}.{p}.{s}=="),
            Expect::Invalid(BAD_SIGNATURE_ENCODING),
        ),
        case(
            "header not JSON",
            format!("{}.{p}.{s}", b64(b"{alg:ES256")),
            Expect::Invalid("the header is not a JSON object"),
        ),
        case(
            "payload not JSON",
            format!("{h}.{}.{s}", b64(b"\xff\xfe")),
            Expect::Invalid("the payload is not a JSON object with valid claims"),
        ),
        case(
            "payload a JSON array",
            format!("{h}.{}.{s}", b64(b"[1,2]")),
            Expect::Invalid("the payload is not a JSON object with valid claims"),
        ),
        case(
            "empty signature",
            format!("{h}.{p}."),
            Expect::Invalid("the signature is empty"),
        ),
        case(
            "trailing garbage",
            format!("{valid_es}garbage"),
            Expect::Invalid(BAD_SIGNATURE_ENCODING),
        ),
        case(
            "trailing base64 block",
            format!("{valid_es}AAAA"),
            Expect::Invalid(BAD_SIGNATURE),
        ),
        case(
            "huge token",
            format!("{valid_es}{}", "A".repeat(9 * 1024)),
            Expect::Invalid("the token is too large"),
        ),
        raw(
            "huge header (no Bearer)",
            vec![vec![b'a'; 64 * 1024]],
            Expect::Invalid("the token is too large"),
        ),
        // The header itself.
        raw("no Authorization", vec![], Expect::Missing),
        raw(
            "empty bearer",
            vec![b"Bearer ".to_vec()],
            Expect::Invalid("the bearer token is empty"),
        ),
        raw(
            "bare Bearer",
            vec![b"Bearer".to_vec()],
            Expect::Invalid("the bearer token is empty"),
        ),
        raw(
            "wrong scheme (Basic)",
            vec![b"Basic dXNlcjpwYXNz".to_vec()],
            Expect::Missing,
        ),
        raw(
            "wrong scheme (Token)",
            vec![format!("Token {valid_es}").into_bytes()],
            Expect::Missing,
        ),
        raw(
            "no space after Bearer",
            vec![format!("Bearer{valid_es}").into_bytes()],
            Expect::Missing,
        ),
        raw(
            "token with an inner space",
            vec![format!("Bearer {h}.{p} .{s}").into_bytes()],
            Expect::Invalid(NOT_B64),
        ),
        raw(
            "non-ASCII characters",
            vec![b"Bearer \xc3\xa9.\xc3\xa9.\xc3\xa9".to_vec()],
            Expect::Invalid(NOT_B64),
        ),
        raw(
            "bytes that are not UTF-8",
            vec![b"Bearer \xff.\xfe.\xfd".to_vec()],
            Expect::Invalid(NOT_B64),
        ),
        raw(
            "duplicate Authorization headers",
            vec![
                format!("Bearer {valid_es}").into_bytes(),
                format!("Bearer {valid_rs}").into_bytes(),
            ],
            Expect::BadRequest,
        ),
    ];
    assert!(cases.len() >= 25);

    let loads_of_other = other_source.loads();
    for case in &cases {
        let mut request = Request::builder();
        for value in &case.authorization {
            request = request.header(AUTHORIZATION, http::HeaderValue::from_bytes(value).unwrap());
        }
        let answer = send(&layer, request.body(()).unwrap()).await;
        let (status, challenge) = match case.expect {
            Expect::Ok => (StatusCode::OK, None),
            Expect::Missing => (StatusCode::UNAUTHORIZED, Some(bare())),
            Expect::Invalid(description) => (StatusCode::UNAUTHORIZED, Some(invalid(description))),
            Expect::BadRequest => (
                StatusCode::BAD_REQUEST,
                Some(format!(
                    "Bearer realm=\"{REALM}\", error=\"invalid_request\", error_description=\"the request has several credentials headers\""
                )),
            ),
        };
        assert_eq!(answer.status, status, "{}", case.name);
        assert_eq!(
            answer.challenge().map(str::to_owned),
            challenge,
            "{}",
            case.name
        );
        if status == StatusCode::OK {
            assert_eq!(answer.body, "orders", "{}", case.name);
            continue;
        }
        let body = answer.json();
        let expected_error = match case.expect {
            Expect::Missing => "missing_token",
            Expect::BadRequest => "invalid_request",
            _ => "invalid_token",
        };
        assert_eq!(body["error"], expected_error, "{}", case.name);
        assert!(body["error_description"].is_string(), "{}", case.name);
        assert_eq!(
            answer.headers["content-type"], "application/json",
            "{}",
            case.name
        );
        // The token never comes back, not even one segment of it.
        for value in &case.authorization {
            let text = String::from_utf8_lossy(value);
            for segment in text
                .trim_start_matches("Bearer ")
                .split('.')
                .filter(|s| s.len() > 8)
            {
                assert!(
                    !String::from_utf8_lossy(&answer.body).contains(segment),
                    "{}",
                    case.name
                );
                assert!(
                    !answer.challenge().unwrap_or("").contains(segment),
                    "{}",
                    case.name
                );
            }
        }
    }

    // `jku`/`x5u` were never fetched.
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock)
    );
    // Tokens naming an untrusted issuer touched no cache; the other issuer's cache was loaded
    // only for the token it did issue.
    assert_eq!(other_source.loads(), loads_of_other + 1);
    let metrics = layer.metrics();
    assert_eq!(metrics.accepted, 6);
    assert_eq!(metrics.rejected_total() as usize, cases.len() - 6);
    assert_eq!(metrics.rejected_for("untrusted_issuer"), 2);
    assert_eq!(metrics.rejected_for("missing_token"), 4);
}

fn es_with_kid(claims: &serde_json::Value, kid: &str, source: &TestSource) -> String {
    sign(&source.key(kid), &header("ES256", kid), claims)
}

#[tokio::test]
async fn untrusted_issuer_never_loads_any_cache() {
    let fixture = Fixture::new();
    let ec = fixture.source.key("ec");
    let mut claims = fixture.claims();
    claims["iss"] = "https://evil.example".into();
    let answer = fixture
        .bearer(&sign(&ec, &header("ES256", "ec"), &claims))
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.challenge().unwrap(),
        invalid("the token's issuer is not trusted")
    );
    assert_eq!(fixture.source.loads(), 0);
    assert!(!fixture.keys.is_ready());
}

#[tokio::test]
async fn checks_before_the_signature_cost_no_key_lookup() {
    // An expired token for a kid nobody knows: refused as expired, without a kid refresh.
    let fixture = Fixture::new();
    assert_eq!(
        fixture.bearer(&fixture.token("ec")).await.status,
        StatusCode::OK
    );
    let attacker = LocalKey::generate(Algorithm::ES256).unwrap();
    let mut claims = fixture.claims();
    claims["exp"] = (fixture.now() - 3600).into();
    let answer = fixture
        .bearer(&sign(&attacker, &header("ES256", "random"), &claims))
        .await;
    assert_eq!(
        answer.challenge().unwrap(),
        invalid("the token has expired")
    );
    assert_eq!(fixture.keys.metrics().kid_misses, 0);
    assert_eq!(fixture.source.loads(), 1);
}

// --- Hardening: keys that must never be admitted, headers read to the letter ------------------

/// An Ed25519 key of small order (the identity first) lets `R = identity, S = 0` verify any
/// message: such keys are refused when parsed, a JWKS skips them with the reason, and a token
/// "signed" that way names a key nobody has.
#[tokio::test]
async fn small_order_ed25519_keys_are_refused_and_their_forgeries_fail() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    // The identity; a point of order 2 (y = -1); 0 (order 4); and one not on the curve.
    let mut minus_one = [0xff; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    for (name, x) in [
        ("identity", identity),
        ("order 2", minus_one),
        ("order 4", [0u8; 32]),
        ("not a point", not_a_point),
    ] {
        let jwk = keyroll_core::Jwk::ed25519(&x);
        let error = keyroll_core::VerifyingKey::from_jwk(&jwk).unwrap_err();
        assert!(
            error.to_string().contains("small order")
                || error.to_string().contains("not a curve point"),
            "{name}: {error}"
        );
    }
    let good = LocalKey::generate(Algorithm::EdDSA).unwrap();
    let set = json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "forged", "x": b64(&identity)},
        serde_json::to_value(good.public_jwk()).unwrap(),
    ]});
    let parsed = keyroll_core::JwkSet::parse_lenient(set.to_string().as_bytes()).unwrap();
    assert_eq!(parsed.keys.len(), 1);
    assert_eq!(parsed.skipped.len(), 1);
    assert!(parsed.skipped[0].1.to_string().contains("small order"));

    let fixture = Fixture::new();
    let mut signature = [0u8; 64];
    signature[0] = 1; // R = the identity, S = 0
    let forged = unsigned(&header("EdDSA", "forged"), &fixture.claims(), &signature);
    let answer = fixture.bearer(&forged).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

/// RSA keys are measured in bits: a 2047-bit modulus (256 bytes) is not a 2048-bit key.
#[test]
fn a_2047_bit_rsa_key_is_refused_with_its_size() {
    let key = LocalKey::generate(Algorithm::RS256).unwrap();
    let jwk = serde_json::to_value(key.public_jwk()).unwrap();
    let n = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        jwk["n"].as_str().unwrap(),
    )
    .unwrap();
    // Shifted right by one bit: 256 bytes, the top one below 0x80.
    let mut short = vec![0u8; n.len()];
    let mut carry = 0u8;
    for (out, byte) in short.iter_mut().zip(&n) {
        *out = (byte >> 1) | carry;
        carry = byte << 7;
    }
    let e = [1u8, 0, 1];
    let error =
        keyroll_core::VerifyingKey::from_jwk(&keyroll_core::Jwk::rsa(&short, &e)).unwrap_err();
    assert!(error.to_string().contains("this one has 2047"), "{error}");
    let set = json!({"keys": [serde_json::to_value(keyroll_core::Jwk::rsa(&short, &e)).unwrap()]});
    let parsed = keyroll_core::JwkSet::parse_lenient(set.to_string().as_bytes()).unwrap();
    assert!(parsed.keys.is_empty());
    assert!(parsed.skipped[0].1.to_string().contains("2048 bits"));
    // The full key is admitted.
    keyroll_core::VerifyingKey::from_jwk(&keyroll_core::Jwk::rsa(&n, &e)).unwrap();
}

/// `crit`, when present, is a non-empty array of names (RFC 7515 §4.1.11): `null`, `[]` or
/// any other value is a malformed header, not an absent one, even validly signed.
#[tokio::test]
async fn crit_null_or_empty_is_malformed_not_absent() {
    let fixture = Fixture::new();
    let ec = fixture.source.key("ec");
    for crit in [json!(null), json!([]), json!("exp"), json!({})] {
        let mut header = header("ES256", "ec");
        header["crit"] = crit.clone();
        let token = sign(&ec, &header, &fixture.claims());
        let answer = fixture.bearer(&token).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{crit}");
        assert_eq!(
            answer.challenge().unwrap(),
            invalid("`crit` must be a non-empty array of header names"),
            "{crit}"
        );
    }
    let mut header = header("ES256", "ec");
    header["crit"] = json!(["exp"]);
    let answer = fixture.bearer(&sign(&ec, &header, &fixture.claims())).await;
    assert_eq!(
        answer.challenge().unwrap(),
        invalid("the token has critical header extensions")
    );
}

/// Keys of different types may share a kid (RFC 7517 §4.5): the header's algorithm picks the
/// one that verifies, whichever the set lists first; a token of a third type is refused.
#[tokio::test]
async fn a_kid_shared_by_an_rsa_and_an_ec_key_verifies_tokens_of_both() {
    let fixture = Fixture::new();
    let rsa = Arc::new(LocalKey::generate(Algorithm::RS256).unwrap());
    let ec = Arc::new(LocalKey::generate(Algorithm::ES256).unwrap());
    fixture.source.add_key("shared", Arc::clone(&rsa), |v| v);
    fixture.source.add_key("shared", Arc::clone(&ec), |v| v);
    for (key, alg) in [(&rsa, "RS256"), (&ec, "ES256")] {
        let token = sign(key, &header(alg, "shared"), &fixture.claims());
        let answer = fixture.bearer(&token).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{alg}: {:?}",
            answer.challenge()
        );
    }
    let ed = LocalKey::generate(Algorithm::EdDSA).unwrap();
    let answer = fixture
        .bearer(&sign(&ed, &header("EdDSA", "shared"), &fixture.claims()))
        .await;
    assert_eq!(answer.challenge().unwrap(), invalid(MISMATCH));
    // The EC key disabled: its tokens stop, the RSA key's keep working.
    fixture.source.edit("shared", |v| {
        if v.jwk.kty == "EC" {
            v.with_enabled(false)
        } else {
            v
        }
    });
    fixture.keys.refresh_now().await.unwrap();
    let answer = fixture
        .bearer(&sign(&ec, &header("ES256", "shared"), &fixture.claims()))
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let answer = fixture
        .bearer(&sign(&rsa, &header("RS256", "shared"), &fixture.claims()))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}
