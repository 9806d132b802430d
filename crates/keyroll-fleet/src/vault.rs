//! One simulated vault that every replica shares: its versions, Key Vault's per-vault limit,
//! outages, and what it was asked, per 10-second window.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use keyroll_core::{Algorithm, KeyVersion, LocalKey, SourceError};
use tokio::time::Instant;

/// Key Vault's limits are counted per 10 seconds.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// What the vault was asked in one 10-second window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Requests that reached the vault (served, throttled or failed).
    pub requests: u32,
    /// Requests answered 429.
    pub throttled: u32,
    /// Requests that failed in an outage.
    pub failed: u32,
}

/// A version as the vault holds it: its public key (what a `get` returns), its private key
/// (what `sign` uses) and whether it is enabled.
#[derive(Debug)]
pub(crate) struct VaultVersion {
    pub(crate) public: KeyVersion,
    pub(crate) private: Arc<LocalKey>,
}

#[derive(Debug)]
struct State {
    versions: Vec<Arc<VaultVersion>>,
    outage: bool,
    /// The limiter's window and the requests it served in it.
    window: u64,
    served: u32,
    windows: Vec<Window>,
}

/// A shared vault with Key Vault's per-vault budget: `budget` requests per fixed 10-second
/// window, then 429 (`Throttled`) with a `Retry-After` of the seconds left in the window
/// (or without one, as has been seen from the real service). In an outage every request
/// fails, unanswered.
#[derive(Debug)]
pub(crate) struct SimVault {
    budget: u32,
    retry_after: bool,
    start: Instant,
    state: Mutex<State>,
}

impl SimVault {
    pub(crate) fn new(budget: u32, retry_after: bool) -> SimVault {
        SimVault {
            budget,
            retry_after,
            start: Instant::now(),
            state: Mutex::new(State {
                versions: Vec::new(),
                outage: false,
                window: 0,
                served: 0,
                windows: Vec::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The 10-second window `at` falls in, counted from the start.
    pub(crate) fn window_of(&self, at: Instant) -> u64 {
        (at - self.start).as_secs() / WINDOW.as_secs()
    }

    /// Adds an enabled ES256 version created at `created`: what `create`/`rotate` does.
    pub(crate) fn add_version(&self, created: SystemTime) -> Result<String, SourceError> {
        let failed = |e: keyroll_core::KeyError| {
            SourceError::new("simulated vault", "create", e.to_string())
        };
        let private = LocalKey::generate(Algorithm::ES256).map_err(failed)?;
        let kid = format!("version-{:02}", self.state().versions.len() + 1);
        let public = KeyVersion::new(kid.clone(), private.public_jwk(), created)
            .map_err(failed)?
            .with_algorithm(Algorithm::ES256);
        self.state().versions.push(Arc::new(VaultVersion {
            public,
            private: Arc::new(private),
        }));
        Ok(kid)
    }

    /// Every version, as a list shows them.
    pub(crate) fn versions(&self) -> Vec<Arc<VaultVersion>> {
        self.state().versions.clone()
    }

    pub(crate) fn set_outage(&self, outage: bool) {
        self.state().outage = outage;
    }

    /// One request: counted in its window, then served, throttled or failed.
    pub(crate) fn request(&self, operation: &str) -> Result<(), SourceError> {
        let now = Instant::now();
        let window = self.window_of(now);
        let mut state = self.state();
        let index = usize::try_from(window).unwrap_or(usize::MAX);
        if state.windows.len() <= index {
            state.windows.resize(index + 1, Window::default());
        }
        state.windows[index].requests += 1;
        if state.outage {
            state.windows[index].failed += 1;
            return Err(SourceError::new(
                "simulated vault",
                operation,
                "connection refused (outage)",
            ));
        }
        if state.window != window {
            state.window = window;
            state.served = 0;
        }
        if state.served >= self.budget {
            state.windows[index].throttled += 1;
            let mut error = SourceError::new(
                "simulated vault",
                operation,
                "429 Throttled: Reason: VaultRequestTypeLimitReached",
            )
            .with_status(429);
            if self.retry_after {
                let into = (now - self.start).as_secs() % WINDOW.as_secs();
                error = error.with_retry_after(Duration::from_secs(WINDOW.as_secs() - into));
            }
            return Err(error);
        }
        state.served += 1;
        Ok(())
    }

    /// The windows so far.
    pub(crate) fn windows(&self) -> Vec<Window> {
        self.state().windows.clone()
    }
}
