//! Signing while the source is down.
//!
//! Signs share the cache's view of its source, so that however many token caches want
//! tokens signed, a replica whose vault is down asks it little:
//! - after a sign that failed for want of the source (no answer, a timeout, a 5xx), every
//!   sign fails at once, without a request, for a backoff that grows with each further such
//!   failure (`backoff_min`, doubling, up to `backoff_max`): one probe per step, whatever
//!   the number of audiences; a good refresh or a good sign ends the hold;
//! - a [remote](crate::Signer::is_remote) signer also holds while the cache's last refresh
//!   found the source down, until the next good refresh: the background refresh is already
//!   asking the source at its refresh rate, and is the probe that tells when it is back.
//!   Without a running background refresh, this hold ends one refresh interval after the
//!   failed refresh. The first failed sign after a good refresh refreshes at once (coalesced
//!   with any running load) to learn which it is: the vault down (signs then wait for its
//!   return), or a blip (the hold is lifted).
//!
//! A held sign's error says when to try again (its `retry_after`). A throttled (429) or
//! refused (4xx) answer holds nothing: the caller's own backoff and the source's
//! `Retry-After` govern those.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::Inner;
use crate::Algorithm;
use crate::clock::later;
use crate::error::SourceError;
use crate::lock;
use crate::refresh::{Background, Need};
use crate::source::{BoxFuture, Signer};

/// How long after the cache's next refresh attempt a held sign is worth trying again (the
/// refresh must have had the time to finish).
const SETTLE: Duration = Duration::from_secs(5);

/// Failed signs that hold the others: the set generation the last one failed under, how
/// many failed in a row, and until when they hold.
pub(super) struct Hold {
    generation: u64,
    failures: u32,
    until: SystemTime,
    error: Arc<SourceError>,
}

/// The active version's signer, as [`KeyCache::active_signer`](super::KeyCache::active_signer)
/// hands it out: the source's, behind the hold.
pub(super) struct HeldSigner {
    pub(super) inner: Arc<dyn Signer>,
    pub(super) cache: Weak<Inner>,
}

impl fmt::Debug for HeldSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Signer for HeldSigner {
    fn algorithm(&self) -> Algorithm {
        self.inner.algorithm()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, SourceError>> {
        Box::pin(async move {
            let cache = self.cache.upgrade();
            if let Some(cache) = &cache
                && let Some(held) = cache.held_sign(self.inner.is_remote())
            {
                #[cfg(feature = "metrics")]
                super::metrics::sign_held(cache);
                return Err(held);
            }
            #[cfg(feature = "metrics")]
            let started = cache.as_ref().map(|cache| cache.engine.clock.now());
            let signed = self.inner.sign(signing_input).await;
            #[cfg(feature = "metrics")]
            if let (Some(cache), Some(started)) = (&cache, started) {
                super::metrics::signed(cache, &signed, started);
            }
            if let Some(cache) = cache {
                match &signed {
                    Err(error) if source_is_down(error) => {
                        let first = cache.hold_signing(error) == 1;
                        if first && self.inner.is_remote() && cache.slot.last_error().is_none() {
                            // Is the vault down, or only this sign? One refresh tells: if it
                            // fails, signs wait for the next good one (as above); if it
                            // answers, the hold is lifted at once.
                            let _ = super::KeyCache { inner: cache }.load(Need::Now).await;
                        }
                    }
                    Err(_) => {}
                    Ok(_) => *lock(&cache.held) = None,
                }
            }
            signed
        })
    }
}

/// Whether `error` says the source did not answer, or failed (not that it refused the request).
fn source_is_down(error: &SourceError) -> bool {
    matches!(error.status(), None | Some(408) | Some(500..=599))
}

impl Inner {
    /// Holds signs after `error`; the number of failed signs in a row.
    fn hold_signing(&self, error: &SourceError) -> u32 {
        let generation = self.slot.value().as_ref().map_or(0, |set| set.generation());
        let mut held = lock(&self.held);
        let failures = held
            .as_ref()
            .map_or(0, |hold| hold.failures)
            .saturating_add(1);
        let wait = self.engine.retry.backoff.with_jitter(0.2).delay(failures);
        *held = Some(Hold {
            generation,
            failures,
            until: later(self.engine.clock.now(), wait),
            error: Arc::new(error.without_cause()),
        });
        tracing::warn!(source = %self.loading.source_name, error = %error, wait_ms = wait.as_millis() as u64, "sign failed; signs wait");
        failures
    }

    /// The error a sign gets while held, with when to try again; `None`: sign.
    fn held_sign(&self, remote: bool) -> Option<SourceError> {
        let now = self.engine.clock.now();
        let (until, cause) = self.held_until(remote, now)?;
        let wait = until.duration_since(now).unwrap_or_default();
        Some(
            SourceError::new(
                self.loading.source_name.clone(),
                "sign",
                format!(
                    "not asked to sign, as the last sign or refresh found the source down ({}): signs resume in {wait:.1?}, or after the next good refresh",
                    cause.message()
                ),
            )
            .with_retry_after(wait)
            .with_cause(cause),
        )
    }

    /// Until when signs are held at `now`, and by what: failed signs since the last good
    /// refresh, or (for a remote signer) the last refresh having found the source down;
    /// whichever holds longer.
    fn held_until(&self, remote: bool, now: SystemTime) -> Option<(SystemTime, Arc<SourceError>)> {
        let generation = self.slot.value().as_ref().map_or(0, |set| set.generation());
        let by_sign = lock(&self.held)
            .as_ref()
            .filter(|hold| hold.generation == generation && now < hold.until)
            .map(|hold| (hold.until, Arc::clone(&hold.error)));
        let by_refresh = remote.then(|| self.held_by_refresh(now)).flatten();
        match (by_sign, by_refresh) {
            (Some(sign), Some(refresh)) => Some(if sign.0 >= refresh.0 { sign } else { refresh }),
            (sign, refresh) => sign.or(refresh),
        }
    }

    /// Until when the last refresh, having found the source down, holds remote signs.
    fn held_by_refresh(&self, now: SystemTime) -> Option<(SystemTime, Arc<SourceError>)> {
        let failed = self
            .slot
            .last_error()
            .filter(|error| source_is_down(error))?;
        let refreshing = self.background.as_ref().is_some_and(Background::is_running);
        let until = if refreshing {
            later(self.next_load(self.need(now), now), SETTLE)
        } else {
            later(self.slot.failed_at()?, self.loading.config.refresh_interval)
        };
        (now < until).then_some((until, failed))
    }
}
