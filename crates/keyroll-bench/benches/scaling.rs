//! Two cores: verifications per second on 2 threads divided by 1 thread, for the verifier, for
//! the layer, and for a verified-token-cache hit, RS256 and ES256. Any cache line the hot path
//! writes and both threads share (a counter, a cache's bookkeeping) shows here as a ratio
//! below 2. The pass-through (the same requests, built and answered, without the layer) is
//! what the machine gives the bench's own per-request work.
//!
//! Each sweep runs every case on one thread for a `SLICE_MS` slice (default 100), then on two
//! threads at once for the same slice, interleaved across cases; each ratio is the median over
//! `SWEEPS` sweeps (default 20) of (2-thread count / 1-thread count).

// A benchmark may panic on setup failures: they are not library code.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation, Verifier};
use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
use keyroll_tower::validate::{TokenCacheConfig, ValidateLayer};
use tower::{Layer as _, Service, ServiceExt as _};

const ISS: &str = "https://orders.example";
const AUD: &str = "https://billing.example";

/// Polls once with a no-op waker: keys are cached, so every case completes at once.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a case needed the runtime: keys not cached"),
    }
}

/// Makes, for each thread, a closure doing one operation.
type Make = dyn Fn() -> Box<dyn FnMut() + Send> + Sync;

/// A case: its name and its maker.
type Case = (String, Box<Make>);

/// Operations `threads` threads complete in `slice`, all starting together.
fn count(make: &Make, threads: usize, slice: Duration) -> u64 {
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut run = make();
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut done = 0u64;
                    while start.elapsed() < slice {
                        for _ in 0..16 {
                            run();
                        }
                        done += 16;
                    }
                    done
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
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

fn cases(algorithm: Algorithm, runtime: &tokio::runtime::Runtime) -> Vec<Case> {
    let keys = KeyCache::builder(LocalKeyRing::in_memory(algorithm).unwrap())
        .background_refresh(false)
        .build();
    let token = runtime
        .block_on(TokenTemplate::new(ISS).mint(&keys, AUD))
        .unwrap()
        .token;
    let issuer = move || Issuer::new(keys.clone(), Validation::new(ISS, [AUD]));
    let verifier = Verifier::new([issuer()]);
    runtime.block_on(verifier.verify(&token)).unwrap();
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    let inner = tower::service_fn(|_: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
    });
    let layer = ValidateLayer::new(issuer());
    let cached = ValidateLayer::builder()
        .issuer(issuer())
        .token_cache(TokenCacheConfig::default())
        .build();
    let through = move |layer: ValidateLayer, bearer: HeaderValue| {
        move || -> Box<dyn FnMut() + Send> {
            let mut service = layer.layer(inner);
            // Each thread's own copy: a clone would share one reference count between the
            // threads, which a server's requests (each parsed from its connection) never do.
            let bearer = HeaderValue::from_bytes(bearer.as_bytes()).unwrap();
            Box::new(move || {
                let request = Request::builder()
                    .header(AUTHORIZATION, bearer.clone())
                    .body(Body::empty())
                    .unwrap();
                let response = now(async {
                    service.ready().await.unwrap();
                    service.call(request).await.unwrap()
                });
                assert!(response.status().is_success());
            })
        }
    };
    let verify = {
        let token = token.clone();
        move || -> Box<dyn FnMut() + Send> {
            let verifier = verifier.clone();
            let token = token.clone();
            Box::new(move || {
                now(verifier.verify(&token)).unwrap();
            })
        }
    };
    vec![
        (format!("Verifier::verify, {algorithm}"), Box::new(verify)),
        (
            format!("ValidateLayer, accepted, {algorithm}"),
            Box::new(through(layer, bearer.clone())),
        ),
        (
            format!("ValidateLayer, token-cache hit, {algorithm}"),
            Box::new(through(cached, bearer)),
        ),
    ]
}

/// The requests of the layer cases, built and answered by the inner service alone.
fn pass_through() -> Case {
    let make = || -> Box<dyn FnMut() + Send> {
        let mut service = tower::service_fn(|_: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
        });
        let bearer = HeaderValue::from_static("Bearer a.b.c");
        Box::new(move || {
            let request = Request::builder()
                .header(AUTHORIZATION, bearer.clone())
                .body(Body::empty())
                .unwrap();
            let response = now(async {
                service.ready().await.unwrap();
                service.call(request).await.unwrap()
            });
            assert!(response.status().is_success());
        })
    };
    (
        "pass-through (request + inner call)".to_owned(),
        Box::new(make),
    )
}

fn main() {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let sweeps = var("SWEEPS", 20) as usize;
    let slice = Duration::from_millis(var("SLICE_MS", 100));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut all = vec![pass_through()];
    all.extend(cases(Algorithm::RS256, &runtime));
    all.extend(cases(Algorithm::ES256, &runtime));
    let cases = all;
    for (_, make) in &cases {
        count(make.as_ref(), 1, slice / 4);
    }
    let mut ratios = vec![Vec::with_capacity(sweeps); cases.len()];
    let mut singles = vec![Vec::with_capacity(sweeps); cases.len()];
    for sweep in 0..sweeps {
        for k in 0..cases.len() {
            let i = (k + sweep) % cases.len();
            let make = cases[i].1.as_ref();
            let one = count(make, 1, slice) as f64;
            let two = count(make, 2, slice) as f64;
            ratios[i].push(two / one);
            singles[i].push(one / slice.as_secs_f64());
        }
    }
    println!(
        "\n## Two cores ({sweeps} sweeps × {} ms slices; ratio = median of per-sweep 2-thread / 1-thread counts)",
        slice.as_millis()
    );
    println!("| case | 1 thread, ops/s | 2 threads / 1 thread |");
    println!("|---|---:|---:|");
    for (i, (name, _)) in cases.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.3}× |",
            median(&mut singles[i]),
            median(&mut ratios[i])
        );
    }
}
