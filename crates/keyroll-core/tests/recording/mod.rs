//! A test recorder (metrics-util's `DebuggingRecorder`) and what it recorded, by exact name and
//! labels: shared by the metrics tests of keyroll-core, keyroll-tower and keyroll-azure
//! (the latter two include this file by path).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::{Mutex, MutexGuard, PoisonError};

use metrics::LocalRecorderGuard;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A test recorder for this thread (the tests run on tokio's current-thread runtime, so the
/// caches' spawned loads record here too). One test at a time: `publish` visits every live
/// cache of the process, and would record another test's into this recorder.
pub struct Recording {
    snapshotter: Snapshotter,
    _guard: LocalRecorderGuard<'static>,
    _serial: MutexGuard<'static, ()>,
}

static SERIAL: Mutex<()> = Mutex::new(());

impl Recording {
    pub fn start() -> Recording {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
        Recording {
            snapshotter: recorder.snapshotter(),
            _guard: metrics::set_default_local_recorder(recorder),
            _serial: serial,
        }
    }

    /// What was recorded since the last call (the test recorder drains counters and histograms).
    pub fn take(&self) -> Recorded {
        let entries = self.snapshotter.snapshot().into_vec();
        Recorded(
            entries
                .into_iter()
                .map(|(key, _, _, value)| {
                    let (name, labels) = key.key().clone().into_parts();
                    let mut labels: Labels = labels
                        .into_iter()
                        .map(|label| (label.key().to_owned(), label.value().to_owned()))
                        .collect();
                    labels.sort();
                    (name.as_str().to_owned(), labels, value)
                })
                .collect(),
        )
    }
}

/// A metric's labels, sorted.
pub type Labels = Vec<(String, String)>;

pub struct Recorded(Vec<(String, Labels, DebugValue)>);

impl Recorded {
    /// The value recorded under exactly `name` and `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        let mut wanted: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        wanted.sort();
        self.0
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, value)| value)
    }

    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.value(name, labels) {
            Some(DebugValue::Counter(count)) => *count,
            None => 0,
            other => panic!("{name} {labels:?} is not a counter: {other:?}"),
        }
    }

    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.value(name, labels) {
            Some(DebugValue::Gauge(value)) => Some(value.into_inner()),
            None => None,
            other => panic!("{name} {labels:?} is not a gauge: {other:?}"),
        }
    }

    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.histogram(name, labels).len()
    }

    /// The values a histogram recorded, in order.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.value(name, labels) {
            Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.into_inner()).collect(),
            None => Vec::new(),
            other => panic!("{name} {labels:?} is not a histogram: {other:?}"),
        }
    }
}
