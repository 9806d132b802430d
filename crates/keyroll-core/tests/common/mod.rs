//! Test sources and time shared by the key cache's integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use keyroll_core::{
    Algorithm, BoxFuture, Clock, KeySource, KeyVersion, LoadedKeys, LocalKey, Signer, Sleep,
    SourceError,
};

/// How a [`CountingSource`] fails, when it does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Failing {
    /// The HTTP status it answers with (503 by default).
    pub status: Option<u16>,
    /// The `Retry-After` it asks for.
    pub retry_after: Option<Duration>,
}

/// A source over a mutable list of versions that counts loads, remembers when and on which
/// thread they ran, and can be made to fail or to answer with no keys.
#[derive(Debug, Default)]
pub struct CountingSource {
    pub versions: Mutex<Vec<KeyVersion>>,
    /// The private keys of the versions [`add`](Self::add) made, which sign.
    pub keys: Mutex<std::collections::HashMap<String, Arc<LocalKey>>>,
    pub loads: AtomicUsize,
    pub failing: AtomicBool,
    pub failure: Mutex<Failing>,
    pub empty: AtomicBool,
    pub delay: Option<Duration>,
    pub max_age: Option<Duration>,
    /// The tokio time of each load.
    pub load_times: Mutex<Vec<tokio::time::Instant>>,
    /// The name of the thread each load ran on.
    pub threads: Mutex<Vec<Option<String>>>,
    /// Told of each load, for a test on another thread to wait for it.
    pub notify: Mutex<Option<std::sync::mpsc::Sender<usize>>>,
}

impl CountingSource {
    pub fn with_delay(delay: Duration) -> Self {
        CountingSource {
            delay: Some(delay),
            ..Default::default()
        }
    }

    /// Adds an ES256 version created now.
    pub fn add(&self, kid: &str, clock: &dyn Clock) {
        let key = Arc::new(LocalKey::generate(Algorithm::ES256).unwrap());
        self.versions
            .lock()
            .unwrap()
            .push(KeyVersion::new(kid, key.public_jwk(), clock.now()).unwrap());
        self.keys.lock().unwrap().insert(kid.to_owned(), key);
    }

    /// Disables version `kid` at the source.
    pub fn disable(&self, kid: &str) {
        for version in self.versions.lock().unwrap().iter_mut() {
            if version.kid == kid {
                version.enabled = false;
            }
        }
    }

    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    /// Fails from now on, as `failure` says.
    pub fn fail(&self, failure: Failing) {
        *self.failure.lock().unwrap() = failure;
        self.failing.store(true, Ordering::SeqCst);
    }

    pub fn recover(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }

    /// The gaps between consecutive loads.
    pub fn gaps(&self) -> Vec<Duration> {
        let times = self.load_times.lock().unwrap();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

impl KeySource for CountingSource {
    fn name(&self) -> String {
        "counting source".into()
    }

    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        Box::pin(async move {
            let n = self.loads.fetch_add(1, Ordering::SeqCst) + 1;
            self.load_times
                .lock()
                .unwrap()
                .push(tokio::time::Instant::now());
            self.threads
                .lock()
                .unwrap()
                .push(std::thread::current().name().map(str::to_owned));
            if let Some(notify) = self.notify.lock().unwrap().as_ref() {
                let _ = notify.send(n);
            }
            if let Some(delay) = self.delay {
                tokio::time::sleep(delay).await;
            }
            if self.failing.load(Ordering::SeqCst) {
                let failure = *self.failure.lock().unwrap();
                let status = failure.status.unwrap_or(503);
                let mut error = SourceError::new(self.name(), "load", format!("HTTP {status}"))
                    .with_status(status);
                if let Some(retry_after) = failure.retry_after {
                    error = error.with_retry_after(retry_after);
                }
                return Err(error);
            }
            if self.empty.load(Ordering::SeqCst) {
                return Ok(LoadedKeys::new(Vec::new()));
            }
            Ok(LoadedKeys::new(self.versions.lock().unwrap().clone()).with_max_age(self.max_age))
        })
    }

    fn signer<'a>(
        &'a self,
        version: &'a KeyVersion,
    ) -> BoxFuture<'a, Result<Arc<dyn Signer>, SourceError>> {
        Box::pin(async move {
            let key = self.keys.lock().unwrap().get(&version.kid).cloned();
            key.map(|key| Arc::new(key) as Arc<dyn Signer>)
                .ok_or_else(|| {
                    SourceError::new(
                        self.name(),
                        "sign",
                        format!("{} only publishes", version.kid),
                    )
                })
        })
    }
}

/// A virtual wall clock with its own sleeps: time moves only with [`advance`](Self::advance),
/// which wakes the sleeps that are due, whatever runtime (or none) they wait on. For tests
/// across runtimes, where tokio's paused time (one per runtime) cannot be shared.
#[derive(Clone, Debug)]
pub struct ManualTime {
    inner: Arc<Mutex<TimeState>>,
}

#[derive(Debug)]
struct TimeState {
    now: SystemTime,
    sleepers: Vec<(SystemTime, Waker)>,
}

impl ManualTime {
    pub fn new(start: SystemTime) -> Self {
        ManualTime {
            inner: Arc::new(Mutex::new(TimeState {
                now: start,
                sleepers: Vec::new(),
            })),
        }
    }

    pub fn advance(&self, by: Duration) {
        let woken: Vec<Waker> = {
            let mut state = self.inner.lock().unwrap();
            state.now += by;
            let now = state.now;
            let (due, waiting) = state.sleepers.drain(..).partition(|(at, _)| *at <= now);
            state.sleepers = waiting;
            due.into_iter().map(|(_, waker)| waker).collect()
        };
        woken.into_iter().for_each(Waker::wake);
    }
}

impl Clock for ManualTime {
    fn now(&self) -> SystemTime {
        self.inner.lock().unwrap().now
    }
}

impl Sleep for ManualTime {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let until = self.now() + duration.min(Duration::from_secs(100 * 365 * 86_400));
        Box::pin(ManualSleep {
            time: self.clone(),
            until,
        })
    }
}

struct ManualSleep {
    time: ManualTime,
    until: SystemTime,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.time.inner.lock().unwrap();
        if state.now >= self.until {
            return Poll::Ready(());
        }
        state.sleepers.push((self.until, cx.waker().clone()));
        Poll::Pending
    }
}

/// Lets spawned tasks run on a current-thread runtime, without moving time.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// A local key ring whose loads and signs count, and fail (HTTP 503) on demand: a vault.
#[derive(Debug)]
pub struct FlakyRing {
    pub ring: keyroll_core::LocalKeyRing,
    pub loads: AtomicUsize,
    pub signs: Arc<AtomicUsize>,
    pub load_failing: AtomicBool,
    pub sign_failing: Arc<AtomicBool>,
    /// The status a failing sign answers with (503 unless set).
    pub sign_status: Arc<AtomicU16>,
    /// 0: signs right; 1: answers garbage; 2: signs with a key that is not the listed one.
    pub sign_wrongly: Arc<AtomicU16>,
}

impl FlakyRing {
    pub fn new(ring: keyroll_core::LocalKeyRing) -> Self {
        FlakyRing {
            ring,
            loads: AtomicUsize::new(0),
            signs: Arc::new(AtomicUsize::new(0)),
            load_failing: AtomicBool::new(false),
            sign_failing: Arc::new(AtomicBool::new(false)),
            sign_status: Arc::new(AtomicU16::new(503)),
            sign_wrongly: Arc::new(AtomicU16::new(0)),
        }
    }

    /// The vault goes down (`true`) or comes back.
    pub fn down(&self, down: bool) {
        self.load_failing.store(down, Ordering::SeqCst);
        self.sign_failing.store(down, Ordering::SeqCst);
    }

    pub fn signs(&self) -> usize {
        self.signs.load(Ordering::SeqCst)
    }
}

impl KeySource for FlakyRing {
    fn name(&self) -> String {
        "flaky ring".into()
    }

    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if self.load_failing.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(SourceError::new("flaky ring", "load", "HTTP 503").with_status(503))
            });
        }
        self.ring.load()
    }

    fn signer<'a>(
        &'a self,
        version: &'a KeyVersion,
    ) -> BoxFuture<'a, Result<Arc<dyn Signer>, SourceError>> {
        Box::pin(async move {
            Ok(Arc::new(FlakySigner {
                inner: self.ring.signer(version).await?,
                signs: Arc::clone(&self.signs),
                failing: Arc::clone(&self.sign_failing),
                status: Arc::clone(&self.sign_status),
                wrongly: Arc::clone(&self.sign_wrongly),
                other: Arc::new(
                    keyroll_core::LocalKey::generate(version.signing_algorithm())
                        .map_err(|e| SourceError::new("flaky ring", "sign", e.to_string()))?,
                ),
            }) as Arc<dyn Signer>)
        })
    }
}

#[derive(Debug)]
struct FlakySigner {
    inner: Arc<dyn Signer>,
    signs: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    status: Arc<AtomicU16>,
    wrongly: Arc<AtomicU16>,
    other: Arc<keyroll_core::LocalKey>,
}

impl Signer for FlakySigner {
    fn algorithm(&self) -> Algorithm {
        self.inner.algorithm()
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, SourceError>> {
        self.signs.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            let status = self.status.load(Ordering::SeqCst);
            return Box::pin(async move {
                Err(
                    SourceError::new("flaky ring", "sign", format!("HTTP {status}"))
                        .with_status(status),
                )
            });
        }
        match self.wrongly.load(Ordering::SeqCst) {
            1 => Box::pin(async { Ok(vec![7u8; 64]) }),
            2 => {
                let signed = self.other.sign_now(signing_input);
                Box::pin(async move {
                    signed.map_err(|e| SourceError::new("flaky ring", "sign", e.to_string()))
                })
            }
            _ => self.inner.sign(signing_input),
        }
    }
}
