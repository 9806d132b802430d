//! A fleet of keyroll replicas sharing one simulated Key Vault: the real [`KeyCache`] and
//! [`TokenCache`](keyroll_core::TokenCache) code, thousands of replicas in one process under
//! tokio's paused clock, each over its own source into one vault that models Key Vault's
//! per-vault limit (a 4,000-per-10-s budget, then 429 with `Retry-After`), outages and cold
//! starts, with the request costs of keyroll-azure's sources (1 per steady refresh, 1 + N per
//! cold load, one page per 25 versions).
//!
//! It runs five phases, a whole-fleet cold start, steady state, a total outage, the recovery
//! and a rotation, and reports for each the vault requests per 10 s against the budget, the
//! 429s, readiness, and whether every replica chose the same signing key at every instant.
//!
//! ```
//! use std::time::Duration;
//! use keyroll_fleet::{FleetConfig, Phase};
//!
//! let config = FleetConfig::default()
//!     .replicas(200)
//!     .versions(3)
//!     .budget(80) // scaled with the fleet: 200 replicas are 2 % of 10,000
//!     .outage(Duration::from_secs(1800));
//! let report = keyroll_fleet::simulate(&config).unwrap();
//! // One refresh per replica per 5 minutes: 200 / 30 windows, a twelfth of the budget.
//! let steady = report.phase(Phase::Steady);
//! assert!(steady.mean_share() <= 0.10, "{report}");
//! assert_eq!(report.never_ready(), 0);
//! assert_eq!(report.disagreements(), 0);
//! println!("{report}");
//! ```
//!
//! `cargo run --release -p keyroll-fleet --example fleet -- --replicas 10000 --versions 10`
//! prints the README's table.
//!
//! Everything is deterministic for a seed: time is tokio's paused time, and every random
//! delay the caches draw comes from the runtime's one thread's seeded generator.

mod replica;
mod report;
mod vault;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use keyroll_core::{Clock, KeyCacheConfig, TokioClock};
use tokio::time::Instant;

pub use self::replica::LIST_PAGE;
use self::replica::Replica;
pub use self::report::{Phase, PhaseReport, Report};
pub use self::vault::Window;
use self::vault::{SimVault, WINDOW};

/// What to simulate.
///
/// | setting | default |
/// |---|---|
/// | `replicas` | 10,000 |
/// | `versions` | 10 (a certificate's versions, all enabled) |
/// | `budget` | 4,000 requests per 10 s (Key Vault, software RSA-2048 and EC keys) |
/// | `retry_after` | 429s carry `Retry-After` (the seconds left in the window) |
/// | `audiences` | 1 outbound audience per replica (tokens of 1 hour, signed in the vault) |
/// | `cache` | [`KeyCacheConfig::default`] |
/// | `cold_start_limit` | 30 min |
/// | `steady`, `outage`, `recovery`, `rotation` | 30 min, 1 h, 15 min, 90 min |
/// | `seed` | 1 |
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FleetConfig {
    /// How many replicas share the vault.
    pub replicas: usize,
    /// How many versions the certificate has at the start.
    pub versions: usize,
    /// Requests the vault serves per 10-second window.
    pub budget: u32,
    /// Whether a 429 says when to come back.
    pub retry_after: bool,
    /// Outbound audiences per replica (0: the replicas only validate).
    pub audiences: usize,
    /// Every replica's key cache settings.
    pub cache: KeyCacheConfig,
    /// The cold start phase ends when every replica is ready, or after this.
    pub cold_start_limit: Duration,
    /// How long the steady phase lasts.
    pub steady: Duration,
    /// How long the vault is down.
    pub outage: Duration,
    /// How long the recovery phase lasts.
    pub recovery: Duration,
    /// How long the rotation phase lasts (a new version appears at its start).
    pub rotation: Duration,
    /// The seed of every random delay.
    pub seed: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            replicas: 10_000,
            versions: 10,
            budget: 4_000,
            retry_after: true,
            audiences: 1,
            cache: KeyCacheConfig::default(),
            cold_start_limit: Duration::from_secs(1800),
            steady: Duration::from_secs(1800),
            outage: Duration::from_secs(3600),
            recovery: Duration::from_secs(900),
            rotation: Duration::from_secs(5400),
            seed: 1,
        }
    }
}

impl FleetConfig {
    /// Sets the number of replicas.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets the number of versions.
    pub fn versions(mut self, versions: usize) -> Self {
        self.versions = versions;
        self
    }

    /// Sets the vault's budget per 10 s.
    pub fn budget(mut self, budget: u32) -> Self {
        self.budget = budget;
        self
    }

    /// Sets whether 429s carry `Retry-After`.
    pub fn retry_after(mut self, retry_after: bool) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Sets the outbound audiences per replica.
    pub fn audiences(mut self, audiences: usize) -> Self {
        self.audiences = audiences;
        self
    }

    /// Sets the replicas' key cache settings.
    pub fn cache(mut self, cache: KeyCacheConfig) -> Self {
        self.cache = cache;
        self
    }

    /// Sets how long the vault is down.
    pub fn outage(mut self, outage: Duration) -> Self {
        self.outage = outage;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the length of the steady, recovery and rotation phases.
    pub fn phases(mut self, steady: Duration, recovery: Duration, rotation: Duration) -> Self {
        self.steady = steady;
        self.recovery = recovery;
        self.rotation = rotation;
        self
    }
}

/// The simulation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The runtime could not be built.
    #[error("cannot build the simulation's runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The vault's keys could not be made.
    #[error(transparent)]
    Keys(#[from] keyroll_core::SourceError),
}

/// Runs the simulation (on a runtime of its own, with paused time: it takes seconds, not
/// hours) and reports what the vault saw.
pub fn simulate(config: &FleetConfig) -> Result<Report, FleetError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    fastrand::seed(config.seed);
    runtime.block_on(run(config))
}

/// The start of the simulated wall clock.
fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

async fn run(config: &FleetConfig) -> Result<Report, FleetError> {
    let clock = TokioClock::starting_at(epoch());
    let vault = Arc::new(SimVault::new(config.budget, config.retry_after));
    const MONTH: Duration = Duration::from_secs(30 * 86_400);
    for age in (1..=config.versions).rev() {
        vault.add_version(epoch() - MONTH * u32::try_from(age).unwrap_or(u32::MAX))?;
    }
    let replicas: Arc<Vec<Replica>> = Arc::new(
        (0..config.replicas)
            .map(|_| Replica::new(&vault, &clock, &config.cache))
            .collect(),
    );
    let mut recorder = report::Recorder::new(Arc::clone(&vault));

    // The whole fleet starts at once: each replica's first use loads its keys.
    let stop = Arc::new(AtomicBool::new(false));
    for index in 0..replicas.len() {
        let fleet = Arc::clone(&replicas);
        tokio::spawn(async move {
            let _ = fleet[index].keys.ready().await;
        });
        tokio::spawn(traffic(
            Arc::clone(&replicas),
            index,
            config.audiences,
            Arc::clone(&stop),
        ));
    }
    tokio::spawn(report::sample_agreement(
        Arc::clone(&replicas),
        clock.clone(),
        recorder.agreement(),
        Arc::clone(&stop),
    ));

    // Cold start: until every replica is ready.
    let start = Instant::now();
    recorder.begin(Phase::ColdStart);
    while start.elapsed() < config.cold_start_limit
        && replicas.iter().any(|r| r.source.ready_at.get().is_none())
    {
        tokio::time::sleep(WINDOW).await;
    }
    let ready: Vec<Option<Duration>> = replicas
        .iter()
        .map(|r| r.source.ready_at.get().map(|at| *at - start))
        .collect();
    recorder.note_readiness(ready);
    // The start's aftermath (the first refreshes, spread over one and a half intervals) is
    // part of it, not of the steady state.
    tokio::time::sleep(config.cache.refresh_interval.mul_f64(1.5)).await;

    recorder.begin(Phase::Steady);
    tokio::time::sleep(config.steady).await;

    recorder.begin(Phase::Outage);
    vault.set_outage(true);
    tokio::time::sleep(config.outage).await;
    vault.set_outage(false);

    recorder.begin(Phase::Recovery);
    let back = Instant::now();
    tokio::time::sleep(config.recovery).await;
    let recovered: Vec<Option<Duration>> = replicas
        .iter()
        .map(|r| r.source.first_good_since(back).map(|at| at - back))
        .collect();
    recorder.note_recovery(recovered);

    recorder.begin(Phase::Rotation);
    let rotated = Instant::now();
    let kid = vault.add_version(clock.now())?;
    recorder.note_rotation(kid, rotated);
    tokio::time::sleep(config.rotation).await;

    stop.store(true, Ordering::Release);
    Ok(recorder.finish(config))
}

/// A replica's outbound traffic: once a minute, the token for each audience (which refreshes
/// it ahead when it is due, and signs in the vault when there is none).
async fn traffic(fleet: Arc<Vec<Replica>>, index: usize, audiences: usize, stop: Arc<AtomicBool>) {
    let audiences: Vec<String> = (0..audiences)
        .map(|n| format!("https://peer-{n}.internal"))
        .collect();
    // Replicas' minutes do not start together.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(..60_000))).await;
    while !stop.load(Ordering::Acquire) {
        let replica = &fleet[index];
        if replica.keys.is_ready() {
            for audience in &audiences {
                let _ = replica.tokens.get(audience).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}
