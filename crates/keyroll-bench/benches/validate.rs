//! The validator's per-request cost, interleaved with the floor and the peers (see
//! `support`): RS256 and ES256, keys cached, one run.
//!
//! Cases, per algorithm:
//! - `floor`: the bare aws-lc signature check with a pre-parsed key and a pre-decoded signature;
//! - `keyroll-core Verifier::verify`: the token check alone;
//! - `ValidateLayer accepted`: a request through the layer (build the request, poll ready, call,
//!   inner service answers) — the figure the targets are about;
//! - `ValidateLayer cache hit`: the same with the verified-token cache warm;
//! - `jsonwebtoken::decode` (11, aws-lc), `jwt-authorizer 0.15` (what its tower layer does per
//!   request, then the same inner service: its service type needs axum 0.7 responses),
//!   `axum-jwt-auth 0.7` (its `Claims` extractor), each configured with the same public key;
//! - `pass-through`: building the request and calling the inner service without any layer;
//! - rejected tokens through the layer: malformed, untrusted issuer, wrong audience, expired,
//!   unknown kid (negative-cached), bad signature (the one rejection that costs a verify).
//!
//! `SWEEPS` and `SLICE_MS` tune the run (defaults 40 × 25 ms; about a minute in all). For
//! profiling, `FILTER` keeps the floor and the cases whose name contains it, and `ALGORITHM`
//! (`RS256` or `ES256`) runs one algorithm.

// A benchmark may panic on setup failures: they are not library code.
#![allow(clippy::unwrap_used)]

#[allow(unreachable_pub, missing_docs)]
mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::extract::FromRequestParts as _;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, StatusCode};
use jwt_authorizer::IntoLayer as _;
use jwt_authorizer::layer::Authorize as _;
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation, Verifier};
use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
use keyroll_tower::validate::{TokenCacheConfig, ValidateLayer};
use serde::Deserialize;
use support::{AUD, Case, ISS, Settings};
use tower::{Layer as _, Service, ServiceExt as _};

#[derive(Deserialize, Clone)]
#[allow(dead_code)]
struct BenchClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    nbf: u64,
    jti: String,
}

/// Polls once with a no-op waker; keys are cached, so every case completes at once. A case that
/// does not (it would need the runtime) is finished on the runtime.
fn now<F: Future>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => runtime.block_on(future),
    }
}

fn named<'a, R>(name: &str, f: impl FnMut() -> R + 'a) -> (String, Case<'a>) {
    (name.to_owned(), Case::new(name, f))
}

async fn inner(_request: Request<Body>) -> Result<axum::response::Response, Infallible> {
    Ok(axum::response::Response::new(Body::empty()))
}

fn request(authorization: &HeaderValue) -> Request<Body> {
    Request::builder()
        .header(AUTHORIZATION, authorization.clone())
        .body(Body::empty())
        .unwrap()
}

/// Sends one request through a service, returning the status.
fn call<S, B>(
    runtime: &tokio::runtime::Runtime,
    service: &mut S,
    request: Request<Body>,
) -> StatusCode
where
    S: Service<Request<Body>, Response = http::Response<B>, Error = Infallible>,
{
    now(runtime, async {
        service.ready().await.unwrap();
        service.call(request).await.unwrap().status()
    })
}

fn bench(algorithm: Algorithm, runtime: &tokio::runtime::Runtime, settings: &Settings) {
    let keys = KeyCache::builder(LocalKeyRing::in_memory(algorithm).unwrap())
        .background_refresh(false)
        .build();
    let token = runtime
        .block_on(TokenTemplate::new(ISS).mint(&keys, AUD))
        .unwrap();
    let kid = token.kid.clone();
    let token = token.token;
    let issuer = || Issuer::new(keys.clone(), Validation::new(ISS, [AUD]));
    let verifier = Verifier::new([issuer()]);
    runtime.block_on(verifier.verify(&token)).unwrap();

    // The floor: aws-lc with a pre-parsed key and a pre-decoded signature.
    let jwk = runtime.block_on(keys.validation_set()).unwrap()[0]
        .jwk
        .clone();
    let floor_key = support::parsed_public_key(algorithm, &jwk);
    let (signing_input, signature_b64) = token.rsplit_once('.').unwrap();
    let signature_bytes = support::b64d(signature_b64);
    floor_key
        .verify_sig(signing_input.as_bytes(), &signature_bytes)
        .unwrap();

    // jsonwebtoken 11 (aws-lc), the same key.
    let mut jwk_json = serde_json::to_value(&jwk).unwrap();
    jwk_json["kid"] = kid.clone().into();
    jwk_json["alg"] = algorithm.as_str().into();
    let jwt11_key =
        jsonwebtoken::DecodingKey::from_jwk(&serde_json::from_value(jwk_json.clone()).unwrap())
            .unwrap();
    let jwt11_alg = match algorithm {
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        _ => jsonwebtoken::Algorithm::ES256,
    };
    let mut jwt11_validation = jsonwebtoken::Validation::new(jwt11_alg);
    jwt11_validation.set_issuer(&[ISS]);
    jwt11_validation.set_audience(&[AUD]);
    jsonwebtoken::decode::<BenchClaims>(&token, &jwt11_key, &jwt11_validation).unwrap();

    // jwt-authorizer 0.15: its tower layer over the same inner service, keys from a JWKS text.
    let jwks = serde_json::json!({ "keys": [jwk_json.clone()] }).to_string();
    let authorizer_layer = runtime
        .block_on(
            jwt_authorizer::JwtAuthorizer::<jwt_authorizer::RegisteredClaims>::from_jwks_text(
                &jwks,
            )
            .validation(jwt_authorizer::Validation::new().iss(&[ISS]).aud(&[AUD]))
            .build(),
        )
        .unwrap()
        .into_layer();
    // Its service requires axum 0.7 responses; run its `authorize` step (token extraction,
    // `check_auth`, claims into the extensions: everything its layer does) then the same
    // inner service as the other cases.
    let authorizer_service = authorizer_layer.layer(());
    let mut authorized_inner = tower::service_fn(inner);
    let mut authorizer = |request: Request<Body>| {
        now(runtime, async {
            match authorizer_service.authorize(request).await {
                Ok(request) => authorized_inner.call(request).await.unwrap().status(),
                Err(_) => StatusCode::UNAUTHORIZED,
            }
        })
    };

    // axum-jwt-auth 0.7: its `Claims` extractor with a local decoder (jsonwebtoken 10).
    let jwt10_key =
        jsonwebtoken10::DecodingKey::from_jwk(&serde_json::from_value(jwk_json).unwrap()).unwrap();
    let mut jwt10_validation = jsonwebtoken10::Validation::new(match algorithm {
        Algorithm::RS256 => jsonwebtoken10::Algorithm::RS256,
        _ => jsonwebtoken10::Algorithm::ES256,
    });
    jwt10_validation.set_issuer(&[ISS]);
    jwt10_validation.set_audience(&[AUD]);
    let decoder: axum_jwt_auth::Decoder<BenchClaims> = std::sync::Arc::new(
        axum_jwt_auth::LocalDecoder::builder()
            .keys(vec![jwt10_key])
            .validation(jwt10_validation)
            .build()
            .unwrap(),
    );
    let extract = |authorization: &HeaderValue| {
        let (mut parts, ()) = Request::builder()
            .header(AUTHORIZATION, authorization.clone())
            .body(())
            .unwrap()
            .into_parts();
        now(
            runtime,
            axum_jwt_auth::Claims::<BenchClaims>::from_request_parts(&mut parts, &decoder),
        )
        .is_ok()
    };

    // keyroll's layer, without and with the token cache.
    let mut validate = ValidateLayer::new(issuer()).layer(tower::service_fn(inner));
    let mut cached = ValidateLayer::builder()
        .issuer(issuer())
        .token_cache(TokenCacheConfig::default())
        .build()
        .layer(tower::service_fn(inner));
    let mut bare = tower::service_fn(inner);

    // Tokens each layer case sends.
    let bearer = |token: &str| HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    let signer = runtime.block_on(keys.active_signer()).unwrap().signer;
    let mint = |claims: serde_json::Value, kid: &str| {
        let header = keyroll_core::jwt::JwtHeader::for_version(
            &runtime.block_on(keys.active_signer()).unwrap().version,
            false,
        );
        let mut header = header;
        header.kid = Some(kid.to_owned());
        runtime
            .block_on(keyroll_core::jwt::encode(signer.as_ref(), &header, &claims))
            .unwrap()
    };
    let t = keyroll_core::unix_seconds(std::time::SystemTime::now());
    let claims = |patch: serde_json::Value| {
        let mut c = serde_json::json!({"iss": ISS, "sub": ISS, "aud": AUD, "iat": t, "nbf": t, "exp": t + 3600, "jti": "abcdefghijklmnopqrstuv"});
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let valid = bearer(&token);
    let untrusted = bearer(&mint(
        claims(serde_json::json!({"iss": "https://evil.example"})),
        &kid,
    ));
    let wrong_aud = bearer(&mint(
        claims(serde_json::json!({"aud": "https://elsewhere.example"})),
        &kid,
    ));
    let expired = bearer(&mint(claims(serde_json::json!({"exp": t - 7200})), &kid));
    let unknown_kid = bearer(&mint(claims(serde_json::json!({})), "no-such-kid"));
    let malformed = bearer(&format!("{}.{}", &token[..token.len() / 2], "x"));
    let bad_signature = {
        let mut bytes = token.clone().into_bytes();
        let at = bytes.len() - 10;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        bearer(&String::from_utf8(bytes).unwrap())
    };
    // Warm up and check every case answers what it should.
    let expect =
        |status: StatusCode, want: StatusCode, what: &str| assert_eq!(status, want, "{what}");
    expect(
        call(runtime, &mut validate, request(&valid)),
        StatusCode::OK,
        "accepted",
    );
    expect(
        call(runtime, &mut cached, request(&valid)),
        StatusCode::OK,
        "cache warm-up",
    );
    expect(
        authorizer(request(&valid)),
        StatusCode::OK,
        "jwt-authorizer",
    );
    assert!(extract(&valid), "axum-jwt-auth");
    for (name, value) in [
        ("untrusted", &untrusted),
        ("aud", &wrong_aud),
        ("expired", &expired),
        ("kid", &unknown_kid),
        ("malformed", &malformed),
        ("signature", &bad_signature),
    ] {
        expect(
            call(runtime, &mut validate, request(value)),
            StatusCode::UNAUTHORIZED,
            name,
        );
    }

    // Each case sends through its own clone of the service.
    let through = |service: &keyroll_tower::validate::Validate<_>, value: &HeaderValue| {
        let mut service = service.clone();
        let value = value.clone();
        move || call(runtime, &mut service, request(&value))
    };
    let cases = vec![
        named("floor: aws-lc verify, pre-parsed key", || {
            floor_key
                .verify_sig(signing_input.as_bytes(), &signature_bytes)
                .is_ok()
        }),
        named("keyroll-core Verifier::verify", || {
            now(runtime, verifier.verify(&token)).is_ok()
        }),
        named("ValidateLayer, accepted", through(&validate, &valid)),
        named("ValidateLayer, token-cache hit", through(&cached, &valid)),
        named("jsonwebtoken::decode (11, aws-lc)", || {
            jsonwebtoken::decode::<BenchClaims>(&token, &jwt11_key, &jwt11_validation).is_ok()
        }),
        named(
            "jwt-authorizer 0.15 (its layer's authorize + inner call)",
            || authorizer(request(&valid)),
        ),
        named("axum-jwt-auth 0.7 Claims extractor", || extract(&valid)),
        named("pass-through (request + inner call)", {
            let valid = valid.clone();
            move || call(runtime, &mut bare, request(&valid))
        }),
        named("rejected: malformed", through(&validate, &malformed)),
        named("rejected: untrusted issuer", through(&validate, &untrusted)),
        named("rejected: wrong audience", through(&validate, &wrong_aud)),
        named("rejected: expired", through(&validate, &expired)),
        named("rejected: unknown kid", through(&validate, &unknown_kid)),
        named(
            "rejected: bad signature",
            through(&validate, &bad_signature),
        ),
    ];
    let title = format!("validate {algorithm}");
    if let Ok(filter) = std::env::var("FILTER") {
        // Profiling aid: the floor and the cases whose name contains FILTER, no targets.
        let cases = cases
            .into_iter()
            .enumerate()
            .filter(|(i, (name, _))| *i == 0 || name.contains(&filter))
            .map(|(_, (_, case))| case)
            .collect();
        support::run(&title, cases, 0, settings);
        return;
    }
    let cases = cases.into_iter().map(|(_, case)| case).collect();
    let outcomes = support::run(&title, cases, 0, settings);

    // The targets, as ratios of the per-sweep ratios above.
    let ratio = |name: &str| {
        outcomes
            .iter()
            .find(|o| o.name.starts_with(name))
            .map(|o| o.ratio)
            .unwrap()
    };
    let accepted = ratio("ValidateLayer, accepted");
    println!("\n{title} targets:");
    println!("- accepted / floor: {:.3}× (target ≤ 1.10×)", accepted);
    println!(
        "- accepted / jsonwebtoken::decode: {:.3}×",
        accepted / ratio("jsonwebtoken")
    );
    println!(
        "- accepted / jwt-authorizer: {:.3}×; / axum-jwt-auth: {:.3}× (target < 1)",
        accepted / ratio("jwt-authorizer"),
        accepted / ratio("axum-jwt-auth")
    );
    println!(
        "- jsonwebtoken::decode / cache hit: {:.1}× (target ≥ 15×)",
        ratio("jsonwebtoken") / ratio("ValidateLayer, token-cache hit")
    );
    for rejected in [
        "malformed",
        "untrusted issuer",
        "wrong audience",
        "expired",
        "unknown kid",
    ] {
        println!(
            "- rejected ({rejected}) / accepted: {:.1} % (target ≤ 5 %)",
            100.0 * ratio(&format!("rejected: {rejected}")) / accepted
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let settings = Settings::from_env();
    let only = std::env::var("ALGORITHM").ok();
    for algorithm in [Algorithm::RS256, Algorithm::ES256] {
        if only
            .as_deref()
            .is_some_and(|only| only != algorithm.as_str())
        {
            continue;
        }
        bench(algorithm, &runtime, &settings);
    }
}
