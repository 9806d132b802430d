//! One replica: the real [`KeyCache`] and [`TokenCache`] over a source that costs what
//! keyroll-azure's Key Vault sources cost.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use keyroll_core::jwt::TokenTemplate;
use keyroll_core::token::{SelfSigned, TokenCache, TokenCacheConfig};
use keyroll_core::{
    Algorithm, BoxFuture, KeyCache, KeyCacheConfig, KeySource, KeyVersion, LoadedKeys, LocalKey,
    Signer, SourceError, TokioClock,
};
use tokio::time::Instant;

use crate::vault::SimVault;

/// How many versions one list page holds (Key Vault's page size).
pub const LIST_PAGE: usize = 25;

/// One replica's view of the shared vault, costing what `KeyVaultCertificates` costs (see
/// keyroll-azure's `vault_operations_per_load` test, against the emulator): a load lists the
/// versions (one request per page of 25) and gets each enabled version it has not fetched
/// before (one request each); what it fetched stays fetched, also when a later request of the
/// same load fails. So a steady refresh costs 1 request and a cold load 1 + N.
#[derive(Debug)]
pub(crate) struct SimSource {
    vault: Arc<SimVault>,
    fetched: Mutex<HashSet<String>>,
    /// When the first load succeeded (readiness).
    pub(crate) ready_at: OnceLock<Instant>,
    /// When each load succeeded.
    good: Mutex<Vec<Instant>>,
}

impl SimSource {
    pub(crate) fn new(vault: Arc<SimVault>) -> SimSource {
        SimSource {
            vault,
            fetched: Mutex::new(HashSet::new()),
            ready_at: OnceLock::new(),
            good: Mutex::new(Vec::new()),
        }
    }

    /// The first load that succeeded at or after `since`.
    pub(crate) fn first_good_since(&self, since: Instant) -> Option<Instant> {
        let good = self.good.lock().unwrap_or_else(PoisonError::into_inner);
        good.iter().find(|at| **at >= since).copied()
    }
}

impl KeySource for SimSource {
    fn name(&self) -> String {
        "simulated vault: certificates/sts".into()
    }

    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        Box::pin(async move {
            let listed = self.vault.versions();
            for _ in 0..listed.len().div_ceil(LIST_PAGE).max(1) {
                self.vault.request("list versions")?;
            }
            let mut versions = Vec::with_capacity(listed.len());
            for version in listed {
                let kid = &version.public.kid;
                let known = self
                    .fetched
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(kid);
                if !known {
                    if !version.public.enabled {
                        continue;
                    }
                    self.vault.request("get")?;
                    self.fetched
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(kid.clone());
                }
                versions.push(version.public.clone());
            }
            let now = Instant::now();
            let _ = self.ready_at.set(now);
            self.good
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(now);
            Ok(LoadedKeys::new(versions))
        })
    }

    fn signer<'a>(
        &'a self,
        version: &'a KeyVersion,
    ) -> BoxFuture<'a, Result<Arc<dyn Signer>, SourceError>> {
        Box::pin(async move {
            let found = self
                .vault
                .versions()
                .into_iter()
                .find(|v| v.public.kid == version.kid)
                .ok_or_else(|| SourceError::new(self.name(), "sign", "no such version"))?;
            Ok(Arc::new(SimSigner {
                vault: Arc::clone(&self.vault),
                key: Arc::clone(&found.private),
            }) as Arc<dyn Signer>)
        })
    }
}

/// Signs in the vault: one request per signature.
#[derive(Debug)]
struct SimSigner {
    vault: Arc<SimVault>,
    key: Arc<LocalKey>,
}

impl Signer for SimSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, SourceError>> {
        Box::pin(async move {
            self.vault.request("sign")?;
            self.key
                .sign_now(signing_input)
                .map_err(|e| SourceError::new("simulated vault", "sign", e.to_string()))
        })
    }
}

/// A replica: its key cache (validation and signing) and its outbound token cache.
pub(crate) struct Replica {
    pub(crate) source: Arc<SimSource>,
    pub(crate) keys: KeyCache,
    pub(crate) tokens: TokenCache<SelfSigned>,
}

impl Replica {
    pub(crate) fn new(
        vault: &Arc<SimVault>,
        clock: &TokioClock,
        config: &KeyCacheConfig,
    ) -> Replica {
        let source = Arc::new(SimSource::new(Arc::clone(vault)));
        let keys = KeyCache::builder_arc(Arc::clone(&source) as Arc<dyn KeySource>)
            .config(config.clone())
            .clock(Arc::new(clock.clone()))
            .build();
        let template = TokenTemplate::new("https://orders.internal");
        let tokens = TokenCache::builder(SelfSigned::new(keys.clone(), template))
            .config(TokenCacheConfig::default())
            .clock(Arc::new(clock.clone()))
            .build();
        Replica {
            source,
            keys,
            tokens,
        }
    }

    /// The kid this replica signs with now, if it has keys.
    pub(crate) fn active_kid(&self, now: std::time::SystemTime) -> Option<String> {
        let set = self.keys.snapshot()?;
        self.keys
            .config()
            .policy
            .active(set.versions(), now)
            .ok()
            .map(|version| version.kid.clone())
    }
}
