//! What the simulation saw, per phase, and its table.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyroll_core::{Clock, TokioClock};
use tokio::time::Instant;

use crate::FleetConfig;
use crate::replica::Replica;
use crate::vault::{SimVault, WINDOW, Window};

/// The phases, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Every replica starts at once, with a cold cache.
    ColdStart,
    /// Nothing happens: background refreshes only.
    Steady,
    /// Every vault request fails.
    Outage,
    /// The vault is back.
    Recovery,
    /// A new version appears; it signs once the rollover window has passed.
    Rotation,
}

impl Phase {
    /// Every phase, in the order they run.
    pub const ALL: [Phase; 5] = [
        Phase::ColdStart,
        Phase::Steady,
        Phase::Outage,
        Phase::Recovery,
        Phase::Rotation,
    ];

    /// Its short name, for command lines: `cold-start`, `steady`, `outage`, `recovery`,
    /// `rotation`.
    pub fn slug(self) -> &'static str {
        match self {
            Phase::ColdStart => "cold-start",
            Phase::Steady => "steady",
            Phase::Outage => "outage",
            Phase::Recovery => "recovery",
            Phase::Rotation => "rotation",
        }
    }

    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Phase::ColdStart => "whole-fleet cold start",
            Phase::Steady => "steady",
            Phase::Outage => "total outage",
            Phase::Recovery => "recovery",
            Phase::Rotation => "rotation",
        }
    }
}

/// One phase's figures.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PhaseReport {
    /// The phase.
    pub phase: Phase,
    /// Its 10-second windows, in order.
    pub windows: Vec<Window>,
    /// The vault's budget per window.
    pub budget: u32,
    /// Sampled instants (every 10 s) at which ready replicas chose different signing keys.
    pub disagreements: u64,
    /// Sampled instants.
    pub samples: u64,
}

impl PhaseReport {
    /// How long it lasted.
    pub fn duration(&self) -> Duration {
        WINDOW * u32::try_from(self.windows.len()).unwrap_or(u32::MAX)
    }

    /// Requests that reached the vault.
    pub fn requests(&self) -> u64 {
        self.windows.iter().map(|w| u64::from(w.requests)).sum()
    }

    /// Requests answered 429.
    pub fn throttled(&self) -> u64 {
        self.windows.iter().map(|w| u64::from(w.throttled)).sum()
    }

    /// Requests that failed in an outage.
    pub fn failed(&self) -> u64 {
        self.windows.iter().map(|w| u64::from(w.failed)).sum()
    }

    /// The busiest window's requests as a share of the budget.
    pub fn peak_share(&self) -> f64 {
        self.share(self.windows.iter().map(|w| w.requests).max().unwrap_or(0))
    }

    /// The mean window's requests as a share of the budget.
    pub fn mean_share(&self) -> f64 {
        if self.windows.is_empty() {
            return 0.0;
        }
        self.requests() as f64 / self.windows.len() as f64 / f64::from(self.budget)
    }

    /// The busiest window after the first one with a 429 (the fleet's answer to being
    /// throttled), as a share of the budget; `None` when nothing was throttled.
    pub fn peak_share_after_first_429(&self) -> Option<f64> {
        let first = self.windows.iter().position(|w| w.throttled > 0)?;
        let peak = self.windows[first + 1..].iter().map(|w| w.requests).max();
        Some(self.share(peak.unwrap_or(0)))
    }

    fn share(&self, requests: u32) -> f64 {
        f64::from(requests) / f64::from(self.budget)
    }
}

/// Facts of single phases that are not per window.
#[derive(Clone, Debug, Default)]
struct Notes {
    /// Per replica, when it became ready (from the start), if it did.
    readiness: Vec<Option<Duration>>,
    /// Per replica, its first good refresh after the outage (from its end), if any.
    recovery: Vec<Option<Duration>>,
    /// The rotation's new kid and when every replica listed it / signed with it.
    rotation: Option<(String, Option<Duration>, Option<Duration>)>,
}

/// The simulation's result: a [`PhaseReport`] per phase; `Display` renders the table.
#[derive(Clone, Debug)]
pub struct Report {
    replicas: usize,
    versions: usize,
    budget: u32,
    phases: Vec<PhaseReport>,
    notes: Notes,
}

impl Report {
    /// The figures of `phase`.
    ///
    /// # Panics
    ///
    /// Never for a report of [`simulate`](crate::simulate), which runs every phase.
    pub fn phase(&self, phase: Phase) -> &PhaseReport {
        self.phases
            .iter()
            .find(|p| p.phase == phase)
            .unwrap_or(&self.phases[0])
    }

    /// Every phase.
    pub fn phases(&self) -> &[PhaseReport] {
        &self.phases
    }

    /// Sampled instants, over all phases, at which ready replicas disagreed on the signer.
    pub fn disagreements(&self) -> u64 {
        self.phases.iter().map(|p| p.disagreements).sum()
    }

    /// How long until every replica was ready (`None`: some never were).
    pub fn all_ready_after(&self) -> Option<Duration> {
        latest(&self.notes.readiness)
    }

    /// How many replicas never became ready in the cold start phase.
    pub fn never_ready(&self) -> usize {
        self.notes.readiness.iter().filter(|r| r.is_none()).count()
    }

    /// How long after the outage every replica had refreshed (`None`: some had not).
    pub fn all_recovered_after(&self) -> Option<Duration> {
        latest(&self.notes.recovery)
    }

    /// How long after the rotation every replica listed the new version, and signed with it.
    pub fn rotation_learned_and_switched(&self) -> (Option<Duration>, Option<Duration>) {
        self.notes
            .rotation
            .as_ref()
            .map_or((None, None), |(_, learned, switched)| (*learned, *switched))
    }
}

fn latest(times: &[Option<Duration>]) -> Option<Duration> {
    times
        .iter()
        .try_fold(Duration::ZERO, |max, t| t.map(|t| max.max(t)))
}

fn percentile(times: &[Option<Duration>], p: f64) -> Option<Duration> {
    let mut known: Vec<Duration> = times.iter().flatten().copied().collect();
    if known.is_empty() {
        return None;
    }
    known.sort();
    let index = ((known.len() - 1) as f64 * p).round() as usize;
    known.get(index).copied()
}

fn minutes(d: Option<Duration>) -> String {
    d.map_or_else(
        || "never".to_owned(),
        |d| format!("{:.1} min", d.as_secs_f64() / 60.0),
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} replicas, one vault ({} requests per 10 s), a {}-version certificate",
            self.replicas, self.budget, self.versions
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| phase | length | vault requests | peak / 10 s | mean / 10 s | 429s | failed | signer disagreements |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|---|")?;
        for p in &self.phases {
            writeln!(
                f,
                "| {} | {} | {} | {:.1} % | {:.1} % | {} | {} | {} of {} instants |",
                p.phase.name(),
                minutes(Some(p.duration())),
                p.requests(),
                p.peak_share() * 100.0,
                p.mean_share() * 100.0,
                p.throttled(),
                p.failed(),
                p.disagreements,
                p.samples
            )?;
        }
        writeln!(f)?;
        let cold = self.phase(Phase::ColdStart);
        match cold.peak_share_after_first_429() {
            Some(after) => writeln!(
                f,
                "- cold start: every replica ready after {} (median {}, 99th percentile {}); once the vault answered 429, at most {:.1} % of the budget per 10 s",
                minutes(self.all_ready_after()),
                minutes(percentile(&self.notes.readiness, 0.5)),
                minutes(percentile(&self.notes.readiness, 0.99)),
                after * 100.0
            )?,
            None => writeln!(
                f,
                "- cold start: every replica ready after {}, never throttled",
                minutes(self.all_ready_after())
            )?,
        }
        writeln!(
            f,
            "- recovery: every replica refreshed within {} of the vault's return (its keys never went stale)",
            minutes(self.all_recovered_after())
        )?;
        let (learned, switched) = self.rotation_learned_and_switched();
        writeln!(
            f,
            "- rotation: every replica listed the new version after {}, and all signed with it from {} on",
            minutes(learned),
            minutes(switched)
        )
    }
}

/// Collects what the simulation sees while it runs.
pub(crate) struct Recorder {
    vault: Arc<SimVault>,
    /// The phases begun so far, with their first window.
    begun: Vec<(Phase, u64)>,
    agreement: Arc<Agreement>,
    notes: Notes,
}

/// Signer agreement samples, by window.
#[derive(Debug, Default)]
pub(crate) struct Agreement {
    /// `(window, disagreed)` per sampled instant.
    samples: Mutex<Vec<(u64, bool)>>,
    /// The rotation's kid: when every replica listed it, and signed with it.
    watched: Mutex<Option<Watched>>,
}

#[derive(Debug)]
struct Watched {
    kid: String,
    since: Instant,
    learned: Option<Duration>,
    switched: Option<Duration>,
}

impl Recorder {
    pub(crate) fn new(vault: Arc<SimVault>) -> Recorder {
        Recorder {
            vault,
            begun: Vec::new(),
            agreement: Arc::default(),
            notes: Notes::default(),
        }
    }

    pub(crate) fn agreement(&self) -> Arc<Agreement> {
        Arc::clone(&self.agreement)
    }

    /// Starts `phase` at the current window.
    pub(crate) fn begin(&mut self, phase: Phase) {
        let window = self.vault.window_of(Instant::now());
        self.begun.push((phase, window));
    }

    pub(crate) fn note_readiness(&mut self, readiness: Vec<Option<Duration>>) {
        self.notes.readiness = readiness;
    }

    pub(crate) fn note_recovery(&mut self, recovery: Vec<Option<Duration>>) {
        self.notes.recovery = recovery;
    }

    pub(crate) fn note_rotation(&mut self, kid: String, at: Instant) {
        *lock(&self.agreement.watched) = Some(Watched {
            kid,
            since: at,
            learned: None,
            switched: None,
        });
    }

    pub(crate) fn finish(mut self, config: &FleetConfig) -> Report {
        let windows = self.vault.windows();
        let end = self.vault.window_of(Instant::now());
        let samples = std::mem::take(&mut *lock(&self.agreement.samples));
        let mut phases = Vec::new();
        for (i, (phase, first)) in self.begun.iter().enumerate() {
            let last = self.begun.get(i + 1).map_or(end, |(_, next)| *next);
            let range = usize::try_from(*first).unwrap_or(usize::MAX)
                ..usize::try_from(last).unwrap_or(usize::MAX);
            let in_phase: Vec<&(u64, bool)> = samples
                .iter()
                .filter(|(w, _)| (*first..last).contains(w))
                .collect();
            phases.push(PhaseReport {
                phase: *phase,
                windows: range
                    .map(|w| windows.get(w).copied().unwrap_or_default())
                    .collect(),
                budget: config.budget,
                disagreements: in_phase.iter().filter(|(_, d)| *d).count() as u64,
                samples: in_phase.len() as u64,
            });
        }
        if let Some(watched) = lock(&self.agreement.watched).take() {
            self.notes.rotation = Some((watched.kid, watched.learned, watched.switched));
        }
        Report {
            replicas: config.replicas,
            versions: config.versions,
            budget: config.budget,
            phases,
            notes: self.notes,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every 10 s: which key each ready replica signs with now, and whether they all agree;
/// during a rotation, whether every replica lists the new version and signs with it.
pub(crate) async fn sample_agreement(
    fleet: Arc<Vec<Replica>>,
    clock: TokioClock,
    agreement: Arc<Agreement>,
    stop: Arc<AtomicBool>,
) {
    let start = Instant::now();
    // Halfway into each window, so no sample sits on a window's edge.
    tokio::time::sleep(WINDOW / 2).await;
    while !stop.load(Ordering::Acquire) {
        let now = clock.now();
        let mut chosen: Option<String> = None;
        let mut disagreed = false;
        for replica in fleet.iter() {
            let Some(kid) = replica.active_kid(now) else {
                continue;
            };
            match &chosen {
                None => chosen = Some(kid),
                Some(first) if *first != kid => disagreed = true,
                Some(_) => {}
            }
        }
        let window = (Instant::now() - start).as_secs() / WINDOW.as_secs();
        lock(&agreement.samples).push((window, disagreed));
        if let Some(watched) = lock(&agreement.watched).as_mut() {
            let since = Instant::now() - watched.since;
            if watched.learned.is_none()
                && fleet.iter().all(|r| {
                    r.keys
                        .snapshot()
                        .is_some_and(|set| set.versions().iter().any(|v| v.kid == watched.kid))
                })
            {
                watched.learned = Some(since);
            }
            if watched.switched.is_none() && !disagreed && chosen.as_deref() == Some(&watched.kid) {
                watched.switched = Some(since);
            }
        }
        tokio::time::sleep(WINDOW).await;
    }
}
