//! The fleet's behaviour against one shared vault, as counts: 1,000 replicas (a tenth of
//! the README's fleet, with a tenth of Key Vault's budget), every phase, one seed.

use std::sync::OnceLock;
use std::time::Duration;

use keyroll_fleet::{FleetConfig, Phase, Report};

const MINUTE: Duration = Duration::from_secs(60);
const REPLICAS: usize = 1_000;
const BUDGET: u32 = 400;

fn config() -> FleetConfig {
    FleetConfig::default()
        .replicas(REPLICAS)
        .versions(10)
        .budget(BUDGET)
        .outage(30 * MINUTE)
        .phases(30 * MINUTE, 15 * MINUTE, 70 * MINUTE)
}

fn report() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| keyroll_fleet::simulate(&config()).expect("the simulation runs"))
}

/// The requests per window of one background refresh per replica per interval (5 min), as
/// a share of the budget: 1,000 / 30 windows / 400 = 8.3 %.
fn refresh_rate_share() -> f64 {
    REPLICAS as f64 / 30.0 / f64::from(BUDGET)
}

#[test]
fn a_whole_fleet_cold_start_comes_up_within_the_budget_once_throttled() {
    let report = report();
    let cold = report.phase(Phase::ColdStart);
    assert_eq!(report.never_ready(), 0, "{report}");
    assert!(cold.throttled() > 0, "the vault was overrun at first");
    // Once throttled, the fleet spreads its retries: no window past the first 429 asks much
    // more than the budget (a window's requests count its 429s too).
    let after = cold.peak_share_after_first_429().unwrap();
    assert!(after <= 1.05, "{after} {report}");
    // Each replica costs about its 1 + 10 operations, its first refreshes, its first sign
    // and a 429 or two, not a retry storm.
    let per_replica = cold.requests() as f64 / REPLICAS as f64;
    assert!(per_replica <= 16.0, "{per_replica} {report}");
    assert!(cold.throttled() <= 2 * REPLICAS as u64, "{report}");
    assert!(report.all_ready_after().unwrap() <= 20 * MINUTE, "{report}");
}

#[test]
fn steady_state_costs_one_request_per_replica_per_refresh() {
    let report = report();
    let steady = report.phase(Phase::Steady);
    assert_eq!((steady.throttled(), steady.failed()), (0, 0));
    let mean = steady.mean_share();
    assert!(
        (refresh_rate_share() * 0.9..=refresh_rate_share() * 1.15).contains(&mean),
        "{mean} {report}"
    );
    assert!(steady.peak_share() <= 0.25, "{report}");
}

#[test]
fn an_outage_costs_less_than_the_refresh_rate_and_recovery_takes_one_retry_interval() {
    let report = report();
    let outage = report.phase(Phase::Outage);
    assert_eq!(outage.failed(), outage.requests(), "the vault was down");
    assert_eq!(outage.throttled(), 0);
    // Routine retries, growing to 1½ intervals; signs held while the vault is down. Here the
    // outage begins as many of the fleet's tokens are due for refresh: each such replica
    // signs once and refreshes once to learn that the vault is down, then its signs wait.
    let mean = outage.mean_share();
    assert!(mean <= refresh_rate_share() * 1.1, "{mean} {report}");
    assert!(outage.peak_share() <= 0.20, "{report}");
    // Every replica refreshed within one retry interval (7½ min + 10 %) of the return, and
    // its keys never went stale on the way.
    let recovered = report.all_recovered_after().unwrap();
    assert!(recovered <= Duration::from_secs(500), "{recovered:?}");
    let recovery = report.phase(Phase::Recovery);
    assert_eq!((recovery.throttled(), recovery.failed()), (0, 0));
}

#[test]
fn a_rotation_reaches_every_replica_in_one_refresh_and_they_switch_together() {
    let report = report();
    let (learned, switched) = report.rotation_learned_and_switched();
    let learned = learned.unwrap();
    assert!(learned <= 6 * MINUTE, "{learned:?}");
    // The new version signs after the rollover window (1 h), at the same instant on every
    // replica: no sample ever saw two signing keys.
    let switched = switched.unwrap();
    assert!(
        (60 * MINUTE..=61 * MINUTE).contains(&switched),
        "{switched:?}"
    );
    assert_eq!(report.disagreements(), 0, "{report}");
    let rotation = report.phase(Phase::Rotation);
    assert_eq!((rotation.throttled(), rotation.failed()), (0, 0));
}

#[test]
fn without_retry_after_the_throttle_spread_alone_keeps_the_start_within_the_budget() {
    let config = config()
        .replicas(300)
        .budget(120)
        .retry_after(false)
        .outage(MINUTE)
        .phases(MINUTE, MINUTE, MINUTE);
    let report = keyroll_fleet::simulate(&config).unwrap();
    let cold = report.phase(Phase::ColdStart);
    assert_eq!(report.never_ready(), 0, "{report}");
    assert!(cold.throttled() > 0);
    // Spread at random over 6 minutes, doubling after each further 429: a small fleet's
    // windows vary more, so a little over the budget at worst, and few 429s per replica.
    let after = cold.peak_share_after_first_429().unwrap();
    assert!(after <= 1.25, "{after} {report}");
    assert!(cold.throttled() <= 2 * 300, "{report}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let again = keyroll_fleet::simulate(&config()).unwrap();
    assert_eq!(again.to_string(), report().to_string());
}
