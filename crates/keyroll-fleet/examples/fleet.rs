//! A fleet of replicas on one simulated Key Vault: what the vault sees through a cold start,
//! steady state, an outage, the recovery and a rotation.
//!
//! ```text
//! cargo run --release -p keyroll-fleet --example fleet -- --replicas 10000 --versions 10
//! ```

use std::time::Duration;

use clap::Parser;
use keyroll_core::KeyCacheConfig;
use keyroll_fleet::{FleetConfig, Phase};

/// Simulates a fleet of keyroll replicas sharing one Key Vault, under a paused clock.
#[derive(Parser)]
struct Args {
    /// Replicas sharing the vault.
    #[arg(long, default_value_t = 10_000)]
    replicas: usize,
    /// Versions of the signing certificate.
    #[arg(long, default_value_t = 10)]
    versions: usize,
    /// The vault's requests per 10 s.
    #[arg(long, default_value_t = 4_000)]
    budget: u32,
    /// Outbound audiences per replica.
    #[arg(long, default_value_t = 1)]
    audiences: usize,
    /// 429s without Retry-After.
    #[arg(long)]
    no_retry_after: bool,
    /// Spread of urgent retries after a 429, in seconds.
    #[arg(long, default_value_t = KeyCacheConfig::default().throttle_spread.as_secs())]
    throttle_spread: u64,
    /// Seed of every random delay.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also print each 10-s window of this phase (cold-start, steady, outage, recovery, rotation).
    #[arg(long)]
    windows: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let config = FleetConfig::default()
        .replicas(args.replicas)
        .versions(args.versions)
        .budget(args.budget)
        .audiences(args.audiences)
        .retry_after(!args.no_retry_after)
        .seed(args.seed)
        .cache(
            KeyCacheConfig::default().throttle_spread(Duration::from_secs(args.throttle_spread)),
        );
    let started = std::time::Instant::now();
    let report = keyroll_fleet::simulate(&config)?;
    println!("{report}");
    if let Some(name) = args.windows {
        let phase = Phase::ALL
            .into_iter()
            .find(|phase| phase.slug() == name)
            .ok_or_else(|| format!("no phase `{name}`"))?;
        println!("| window | requests | 429s |\n|---|---|---|");
        for (index, window) in report.phase(phase).windows.iter().enumerate() {
            println!("| {index} | {} | {} |", window.requests, window.throttled);
        }
    }
    eprintln!("simulated in {:.1?}", started.elapsed());
    Ok(())
}
