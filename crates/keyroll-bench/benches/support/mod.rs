//! An interleaved benchmark harness: every case runs a short slice per sweep, for many sweeps,
//! and each ratio is the median of per-sweep ratios against a baseline case. Machines here
//! drift by up to 1.3× within seconds, so running one case after another gives meaningless
//! ratios; interleaving cancels the drift out.

#![allow(dead_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

/// One benchmark case: a name and a closure doing one iteration.
pub struct Case<'a> {
    name: String,
    run: Box<dyn FnMut() + 'a>,
}

impl<'a> Case<'a> {
    /// A case running `f` once per iteration.
    pub fn new<R>(name: impl Into<String>, mut f: impl FnMut() -> R + 'a) -> Self {
        Case {
            name: name.into(),
            run: Box::new(move || {
                black_box(f());
            }),
        }
    }
}

/// Settings, from the environment: `SWEEPS` (default 40) and `SLICE_MS` (default 25).
pub struct Settings {
    pub sweeps: usize,
    pub slice: Duration,
}

impl Settings {
    pub fn from_env() -> Self {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Settings {
            sweeps: var("SWEEPS", 40) as usize,
            slice: Duration::from_millis(var("SLICE_MS", 25)),
        }
    }
}

/// Per-case result.
pub struct Outcome {
    pub name: String,
    /// Median nanoseconds per iteration over the sweeps.
    pub median_ns: f64,
    /// Median of the per-sweep ratios to the baseline.
    pub ratio: f64,
}

fn time_slice(run: &mut dyn FnMut(), slice: Duration) -> f64 {
    // Grow the batch until one batch takes ~1/8 of the slice, then run batches for the slice.
    let mut batch = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            run();
        }
        if start.elapsed() * 8 >= slice || batch >= 1 << 24 {
            break;
        }
        batch *= 2;
    }
    let start = Instant::now();
    let mut iterations = 0u64;
    while start.elapsed() < slice {
        for _ in 0..batch {
            run();
        }
        iterations += batch;
    }
    start.elapsed().as_nanos() as f64 / iterations as f64
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

/// Runs every case interleaved and prints a table of ratios against `cases[baseline]`.
pub fn run(
    title: &str,
    mut cases: Vec<Case<'_>>,
    baseline: usize,
    settings: &Settings,
) -> Vec<Outcome> {
    // Warm up every case once.
    for case in &mut cases {
        time_slice(&mut case.run, settings.slice / 4);
    }
    let n = cases.len();
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(settings.sweeps); n];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::with_capacity(settings.sweeps); n];
    for sweep in 0..settings.sweeps {
        let mut this_sweep = vec![0.0; n];
        // Rotate the starting case each sweep so no case always runs first.
        for k in 0..n {
            let i = (k + sweep) % n;
            this_sweep[i] = time_slice(&mut cases[i].run, settings.slice);
        }
        for i in 0..n {
            ns[i].push(this_sweep[i]);
            ratios[i].push(this_sweep[i] / this_sweep[baseline]);
        }
    }
    let outcomes: Vec<Outcome> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| Outcome {
            name: case.name.clone(),
            median_ns: median(&mut ns[i]),
            ratio: median(&mut ratios[i]),
        })
        .collect();
    println!(
        "\n## {title}  ({} sweeps × {} ms slices; ratio = median of per-sweep ratios to `{}`)",
        settings.sweeps,
        settings.slice.as_millis(),
        outcomes[baseline].name
    );
    println!("| case | median time | ratio |");
    println!("|---|---:|---:|");
    for outcome in &outcomes {
        let time = if outcome.median_ns >= 1000.0 {
            format!("{:.2} µs", outcome.median_ns / 1000.0)
        } else {
            format!("{:.0} ns", outcome.median_ns)
        };
        println!("| {} | {} | {:.3}× |", outcome.name, time, outcome.ratio);
    }
    outcomes
}

/// The issuer and audience of every bench token.
pub const ISS: &str = "https://orders.example";
/// The audience of every bench token.
pub const AUD: &str = "https://billing.example";

/// base64url without padding, decoded (setup only: panics on bad input).
pub fn b64d(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

/// The floor's key: `jwk` parsed once by aws-lc (RS256, else ES256).
pub fn parsed_public_key(
    algorithm: keyroll_core::Algorithm,
    jwk: &keyroll_core::Jwk,
) -> aws_lc_rs::signature::ParsedPublicKey {
    use aws_lc_rs::signature;
    match algorithm {
        keyroll_core::Algorithm::RS256 => signature::RsaPublicKeyComponents {
            n: b64d(jwk.n.as_deref().unwrap()),
            e: b64d(jwk.e.as_deref().unwrap()),
        }
        .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
        .unwrap(),
        _ => {
            let mut point = vec![4];
            point.extend(b64d(jwk.x.as_deref().unwrap()));
            point.extend(b64d(jwk.y.as_deref().unwrap()));
            signature::ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).unwrap()
        }
    }
}

/// The audience counts the outbound benches cycle through.
pub const ROUND_ROBIN: [usize; 3] = [6, 100, 1000];

/// `https://host{i}.internal/x` for as many hosts as the largest round robin, each origin's
/// token fetched into `cache` (with `also`'s audiences).
pub fn warm_round_robin<T: std::str::FromStr>(
    runtime: &tokio::runtime::Runtime,
    cache: &keyroll_core::token::TokenCache<impl keyroll_core::token::TokenSource>,
    also: &[&str],
) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    let origins: Vec<String> = (0..ROUND_ROBIN[ROUND_ROBIN.len() - 1])
        .map(|i| format!("https://host{i}.internal"))
        .collect();
    for audience in also
        .iter()
        .copied()
        .chain(origins.iter().map(String::as_str))
    {
        runtime.block_on(cache.get(audience)).unwrap();
    }
    origins
        .iter()
        .map(|origin| format!("{origin}/x").parse().unwrap())
        .collect()
}

/// The outbound benches' token cache: ES256 tokens of an hour, signed by a local key ring.
pub fn outbound_cache()
-> keyroll_core::token::TokenCache<std::sync::Arc<keyroll_core::token::SelfSigned>> {
    use keyroll_core::{Algorithm, KeyCache, LocalKeyRing, jwt::TokenTemplate};
    let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap()).build();
    let template =
        TokenTemplate::new("https://orders.internal").lifetime(Duration::from_secs(3600));
    keyroll_core::token::TokenCache::new(std::sync::Arc::new(keyroll_core::token::SelfSigned::new(
        keys, template,
    )))
}
