//! End to end over HTTP: real servers on loopback (hyper via axum), a load generator on
//! keep-alive connections at a fixed concurrency, requests per second and p50/p99 latency.
//!
//! Cases, each its own server, on 1 and on 2 server worker threads:
//! - `bare handler`: no authentication (the baseline of the ratios);
//! - `hand check (aws-lc)`: a middleware that takes the bearer token, decodes its signature
//!   and checks it with a pre-parsed aws-lc key, nothing else (the floor of a real validator);
//! - `ValidateLayer`, RS256 and ES256, and RS256 with the verified-token cache;
//! - `jwt-authorizer 0.15` (its layer on an axum 0.7 router) and `axum-jwt-auth 0.7` (its
//!   `Claims` extractor), over the same RS256 key.
//!
//! The load generator runs on one thread of its own (a current-thread runtime driving
//! `CONCURRENCY` connections, default 32), so with 2 server threads the machine's 2 cores are
//! shared three ways: the 2-thread figures say how the server scales next to its client, not
//! what a dedicated 2-core server does. Every case runs a `SLICE_MS` slice (default 200) per
//! sweep, `SWEEPS` sweeps (default 15), interleaved; each ratio is the median of per-sweep ratios.

// A benchmark may panic on setup failures: they are not library code.
#![allow(clippy::unwrap_used)]

#[allow(unreachable_pub, missing_docs)]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::ParsedPublicKey;
use axum::Router;
use axum::extract::Request as AxumRequest;
use axum::middleware::{self, Next};
use axum::routing::get;
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation};
use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
use keyroll_tower::validate::{TokenCacheConfig, ValidateLayer};
use serde::Deserialize;
use support::{AUD, ISS, Settings};

#[derive(Deserialize, Clone)]
#[allow(dead_code)]
struct BenchClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
}

async fn ok() -> &'static str {
    "ok"
}

/// One algorithm's keys, a token, and the same public key in each library's form.
struct Keys {
    keys: KeyCache,
    bearer: HeaderValue,
    parsed: Arc<ParsedPublicKey>,
    jwk: serde_json::Value,
}

fn keys(algorithm: Algorithm, runtime: &tokio::runtime::Runtime) -> Keys {
    let keys = KeyCache::builder(LocalKeyRing::in_memory(algorithm).unwrap())
        .background_refresh(false)
        .build();
    let minted = runtime
        .block_on(TokenTemplate::new(ISS).mint(&keys, AUD))
        .unwrap();
    let jwk = runtime.block_on(keys.validation_set()).unwrap()[0]
        .jwk
        .clone();
    let parsed = support::parsed_public_key(algorithm, &jwk);
    let mut jwk_json = serde_json::to_value(&jwk).unwrap();
    jwk_json["kid"] = minted.kid.clone().into();
    jwk_json["alg"] = algorithm.as_str().into();
    Keys {
        keys,
        bearer: HeaderValue::from_str(&format!("Bearer {}", minted.token)).unwrap(),
        parsed: Arc::new(parsed),
        jwk: jwk_json,
    }
}

/// The floor of a validator: the signature of the bearer token, checked with a pre-parsed key.
async fn hand_check(
    key: Arc<ParsedPublicKey>,
    request: AxumRequest,
    next: Next,
) -> axum::response::Response {
    let checked = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|token| token.rsplit_once('.'))
        .and_then(|(signing_input, signature)| {
            let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(signature)
                .ok()?;
            key.verify_sig(signing_input.as_bytes(), &signature).ok()
        });
    match checked {
        Some(()) => next.run(request).await,
        None => axum::response::IntoResponse::into_response(StatusCode::UNAUTHORIZED),
    }
}

/// A server on its own runtime with `workers` threads.
struct Server {
    address: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

fn listener() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

fn serve(router: Router, workers: usize) -> Server {
    let runtime = runtime(workers);
    let listener = listener();
    let address = listener.local_addr().unwrap();
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, router).await.unwrap();
    });
    Server {
        address,
        _runtime: runtime,
    }
}

/// jwt-authorizer's layer needs axum 0.7.
fn serve_axum07(router: axum07::Router, workers: usize) -> Server {
    let runtime = runtime(workers);
    let listener = listener();
    let address = listener.local_addr().unwrap();
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum07::serve(listener, router).await.unwrap();
    });
    Server {
        address,
        _runtime: runtime,
    }
}

fn validate_router(keys: &Keys, cache: bool) -> Router {
    let issuer = Issuer::new(keys.keys.clone(), Validation::new(ISS, [AUD]));
    let mut layer = ValidateLayer::builder().issuer(issuer);
    if cache {
        layer = layer.token_cache(TokenCacheConfig::default());
    }
    Router::new().route("/", get(ok)).layer(layer.build())
}

fn hand_check_router(keys: &Keys) -> Router {
    let key = Arc::clone(&keys.parsed);
    Router::new()
        .route("/", get(ok))
        .layer(middleware::from_fn(move |request, next| {
            hand_check(Arc::clone(&key), request, next)
        }))
}

fn jwt_authorizer_router(keys: &Keys, runtime: &tokio::runtime::Runtime) -> axum07::Router {
    use jwt_authorizer::IntoLayer as _;
    let jwks = serde_json::json!({ "keys": [keys.jwk.clone()] }).to_string();
    let authorizer = runtime
        .block_on(
            jwt_authorizer::JwtAuthorizer::<jwt_authorizer::RegisteredClaims>::from_jwks_text(
                &jwks,
            )
            .validation(jwt_authorizer::Validation::new().iss(&[ISS]).aud(&[AUD]))
            .build(),
        )
        .unwrap();
    axum07::Router::new()
        .route("/", axum07::routing::get(ok))
        .layer(authorizer.into_layer())
}

fn axum_jwt_auth_router(keys: &Keys) -> Router {
    let key =
        jsonwebtoken10::DecodingKey::from_jwk(&serde_json::from_value(keys.jwk.clone()).unwrap())
            .unwrap();
    let mut validation = jsonwebtoken10::Validation::new(jsonwebtoken10::Algorithm::RS256);
    validation.set_issuer(&[ISS]);
    validation.set_audience(&[AUD]);
    let decoder: axum_jwt_auth::Decoder<BenchClaims> = Arc::new(
        axum_jwt_auth::LocalDecoder::builder()
            .keys(vec![key])
            .validation(validation)
            .build()
            .unwrap(),
    );
    async fn claims(_: axum_jwt_auth::Claims<BenchClaims>) -> &'static str {
        "ok"
    }
    Router::new().route("/", get(claims)).with_state(decoder)
}

/// One case: a server and the keep-alive connections the load generator holds to it.
struct Case {
    name: String,
    server: Server,
    bearer: Option<HeaderValue>,
    senders: Vec<hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>>,
    requests: Vec<f64>,
    latencies: Vec<u32>,
}

async fn connect(
    address: SocketAddr,
    count: usize,
) -> Vec<hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>> {
    let mut senders = Vec::with_capacity(count);
    for _ in 0..count {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        senders.push(sender);
    }
    senders
}

/// Runs the case's connections flat out for `slice`: requests per second, and each request's
/// latency in nanoseconds (appended to `latencies`).
async fn slice(case: &mut Case, slice: Duration, record: bool) -> f64 {
    let deadline = Instant::now() + slice;
    let host = HeaderValue::from_str(&case.server.address.to_string()).unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = case
        .senders
        .drain(..)
        .map(|mut sender| {
            let bearer = case.bearer.clone();
            let host = host.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let mut request = Request::get("/").header(http::header::HOST, host.clone());
                    if let Some(bearer) = &bearer {
                        request = request.header(AUTHORIZATION, bearer.clone());
                    }
                    let request = request.body(Empty::new()).unwrap();
                    let sent = Instant::now();
                    sender.ready().await.unwrap();
                    let response = sender.send_request(request).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    response.into_body().collect().await.unwrap();
                    latencies.push(u32::try_from(sent.elapsed().as_nanos()).unwrap_or(u32::MAX));
                }
                (sender, latencies)
            })
        })
        .collect();
    let mut completed = 0usize;
    for task in tasks {
        let (sender, latencies) = task.await.unwrap();
        completed += latencies.len();
        if record {
            case.latencies.extend(latencies);
        }
        case.senders.push(sender);
    }
    completed as f64 / start.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[at]) / 1000.0
}

fn bench(
    workers: usize,
    settings: &Settings,
    concurrency: usize,
    client: &tokio::runtime::Runtime,
) {
    let setup = runtime(1);
    let rs256 = keys(Algorithm::RS256, &setup);
    let es256 = keys(Algorithm::ES256, &setup);
    let with = |keys: &Keys| Some(keys.bearer.clone());
    let servers: Vec<(&str, Server, Option<HeaderValue>)> = vec![
        (
            "bare handler",
            serve(Router::new().route("/", get(ok)), workers),
            None,
        ),
        (
            "hand check (aws-lc), RS256",
            serve(hand_check_router(&rs256), workers),
            with(&rs256),
        ),
        (
            "ValidateLayer, RS256",
            serve(validate_router(&rs256, false), workers),
            with(&rs256),
        ),
        (
            "ValidateLayer + token cache, RS256",
            serve(validate_router(&rs256, true), workers),
            with(&rs256),
        ),
        (
            "jwt-authorizer 0.15, RS256",
            serve_axum07(jwt_authorizer_router(&rs256, &setup), workers),
            with(&rs256),
        ),
        (
            "axum-jwt-auth 0.7, RS256",
            serve(axum_jwt_auth_router(&rs256), workers),
            with(&rs256),
        ),
        (
            "hand check (aws-lc), ES256",
            serve(hand_check_router(&es256), workers),
            with(&es256),
        ),
        (
            "ValidateLayer, ES256",
            serve(validate_router(&es256, false), workers),
            with(&es256),
        ),
    ];
    let mut cases: Vec<Case> = client.block_on(async {
        let mut cases = Vec::new();
        for (name, server, bearer) in servers {
            let senders = connect(server.address, concurrency).await;
            cases.push(Case {
                name: name.to_owned(),
                server,
                bearer,
                senders,
                requests: Vec::new(),
                latencies: Vec::new(),
            });
        }
        cases
    });
    let n = cases.len();
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); n];
    // Cost against the hand check of the same algorithm: its req/s over the case's.
    let hand_check_of: Vec<usize> = cases
        .iter()
        .map(|case| {
            let algorithm = case.name.rsplit(", ").next().unwrap_or_default();
            cases
                .iter()
                .position(|c| c.name == format!("hand check (aws-lc), {algorithm}"))
                .unwrap_or(0)
        })
        .collect();
    let mut costs: Vec<Vec<f64>> = vec![Vec::new(); n];
    client.block_on(async {
        for case in &mut cases {
            slice(case, settings.slice / 2, false).await;
        }
        for sweep in 0..settings.sweeps {
            let mut rps = vec![0.0; n];
            for k in 0..n {
                let i = (k + sweep) % n;
                rps[i] = slice(&mut cases[i], settings.slice, true).await;
                cases[i].requests.push(rps[i]);
            }
            for i in 0..n {
                ratios[i].push(rps[i] / rps[0]);
                costs[i].push(rps[hand_check_of[i]] / rps[i]);
            }
        }
    });
    println!(
        "\n## HTTP, {workers} server worker thread{} ({concurrency} keep-alive connections, {} sweeps × {} ms; ratios = medians of per-sweep ratios)",
        if workers == 1 { "" } else { "s" },
        settings.sweeps,
        settings.slice.as_millis()
    );
    println!("| case | req/s | p50 | p99 | req/s ratio to bare | cost vs hand check |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, case) in cases.iter_mut().enumerate() {
        case.latencies.sort_unstable();
        let cost = if i == 0 {
            "".to_owned()
        } else {
            format!("{:.3}×", median(&mut costs[i]))
        };
        println!(
            "| {} | {:.0} | {:.0} µs | {:.0} µs | {:.3}× | {} |",
            case.name,
            median(&mut case.requests),
            percentile(&case.latencies, 0.5),
            percentile(&case.latencies, 0.99),
            median(&mut ratios[i]),
            cost,
        );
    }
}

fn main() {
    let defaults = Settings::from_env();
    let settings = Settings {
        sweeps: std::env::var("SWEEPS").map_or(15, |_| defaults.sweeps),
        slice: std::env::var("SLICE_MS").map_or(Duration::from_millis(200), |_| defaults.slice),
    };
    let concurrency = std::env::var("CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for workers in [1, 2] {
        bench(workers, &settings, concurrency, &client);
    }
}
