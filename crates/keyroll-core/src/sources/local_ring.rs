//! A key ring generated and rotated in process, optionally persisted to a directory.
//!
//! ```
//! use std::time::Duration;
//! use keyroll_core::{Algorithm, KeySource, LocalKeyRing};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let ring = LocalKeyRing::builder(Algorithm::ES256)
//!     .rotate_every(Duration::from_secs(24 * 3600))
//!     .directory(dir.path())
//!     .build()
//!     .unwrap();
//! let first = ring.load().await.unwrap().versions;
//! ring.rotate_now().unwrap();
//! assert_eq!(ring.load().await.unwrap().versions.len(), 2);
//!
//! // A new ring over the same directory finds the same keys.
//! let reopened = LocalKeyRing::builder(Algorithm::ES256).directory(dir.path()).build().unwrap();
//! let versions = reopened.load().await.unwrap().versions;
//! assert!(versions.iter().any(|v| v.kid == first[0].kid));
//! # });
//! ```

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::algorithm::Algorithm;
use crate::clock::{Clock, SystemClock, from_unix_seconds, unix_seconds};
use crate::error::{KeyError, SourceError};
use crate::key::KeyVersion;
use crate::local_key::LocalKey;
use crate::source::{BoxFuture, KeySource, LoadedKeys, Signer};

/// A ring of locally generated keys that rotates every `rotate_every`: each [`load`] (the key
/// cache's refresh) adds a new version once the newest one is that old, and keeps the newest
/// `retain` versions for validation. Kids are RFC 7638 thumbprints.
///
/// With a directory, each version is stored as one owner-only (0600) file in an owner-only
/// (0700) directory and reloaded on start, so restarts keep the ring. Several processes should
/// not share one directory for writing.
///
/// A version beyond `retain` is pruned only once the last token it signed through a key cache
/// in this process has expired (plus 60 s of leeway): the key cache tells the ring of each
/// token it mints ([`KeySource::signed`]). Across restarts the ring does not know, so keep
/// `retain` × `rotate_every` above propagation plus the longest token lifetime.
///
/// [`load`]: KeySource::load
#[derive(Debug)]
pub struct LocalKeyRing {
    algorithm: Algorithm,
    rotate_every: Duration,
    retain: usize,
    directory: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    keys: Mutex<Vec<(KeyVersion, Arc<LocalKey>)>>,
    /// Per kid, the latest `exp` of a token it signed.
    signed_until: Mutex<std::collections::HashMap<String, SystemTime>>,
}

/// Clock skew allowed to a token past its `exp` by validators: a version is kept that long more.
const RETENTION_LEEWAY: Duration = Duration::from_secs(60);

/// Builds a [`LocalKeyRing`].
#[derive(Debug)]
pub struct LocalKeyRingBuilder {
    algorithm: Algorithm,
    rotate_every: Duration,
    retain: usize,
    directory: Option<PathBuf>,
    clock: Arc<dyn Clock>,
}

impl LocalKeyRingBuilder {
    /// How often a new version is generated. Default 24 hours.
    pub fn rotate_every(mut self, every: Duration) -> Self {
        self.rotate_every = every;
        self
    }

    /// How many versions are kept (newest first). Default 3, at least 1.
    pub fn retain(mut self, retain: usize) -> Self {
        self.retain = retain.max(1);
        self
    }

    /// Persists versions in this directory and reloads them on start.
    pub fn directory(mut self, directory: impl AsRef<Path>) -> Self {
        self.directory = Some(directory.as_ref().to_path_buf());
        self
    }

    /// The clock that dates versions and decides when to rotate.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the ring, reading the directory if one is set. Fails when the directory cannot
    /// be created or read; a file in it that does not parse is skipped with a warning.
    pub fn build(self) -> Result<LocalKeyRing, SourceError> {
        let ring = LocalKeyRing {
            algorithm: self.algorithm,
            rotate_every: self.rotate_every,
            retain: self.retain,
            directory: self.directory,
            clock: self.clock,
            keys: Mutex::new(Vec::new()),
            signed_until: Mutex::default(),
        };
        if let Some(directory) = &ring.directory {
            let loaded =
                read_directory(directory).map_err(|e| ring.error("read key directory", e))?;
            *ring.lock() = loaded;
        }
        Ok(ring)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    algorithm: Algorithm,
    created: u64,
    pkcs8: String,
}

impl LocalKeyRing {
    /// A builder for a ring of `algorithm` keys.
    pub fn builder(algorithm: Algorithm) -> LocalKeyRingBuilder {
        LocalKeyRingBuilder {
            algorithm,
            rotate_every: Duration::from_secs(24 * 3600),
            retain: 3,
            directory: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// A ring kept in memory only, with the default schedule.
    pub fn in_memory(algorithm: Algorithm) -> Result<LocalKeyRing, SourceError> {
        LocalKeyRing::builder(algorithm).build()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(KeyVersion, Arc<LocalKey>)>> {
        crate::lock(&self.keys)
    }

    fn error(&self, operation: &str, cause: impl std::fmt::Display) -> SourceError {
        SourceError::new(self.name(), operation, cause.to_string())
    }

    /// Adds a new version now, whatever the schedule, and returns its kid.
    pub fn rotate_now(&self) -> Result<String, SourceError> {
        let mut keys = self.lock();
        self.add_version(&mut keys, self.clock.now())
    }

    fn add_version(
        &self,
        keys: &mut Vec<(KeyVersion, Arc<LocalKey>)>,
        now: SystemTime,
    ) -> Result<String, SourceError> {
        let key = LocalKey::generate(self.algorithm).map_err(|e| self.error("generate key", e))?;
        let version = version_for(&key, now).map_err(|e| self.error("generate key", e))?;
        let kid = version.kid.clone();
        if let Some(directory) = &self.directory {
            write_key(directory, &version, &key).map_err(|e| self.error("write key", e))?;
        }
        keys.push((version, Arc::new(key)));
        keys.sort_by(|a, b| b.0.age_order(&a.0));
        self.prune(keys, now);
        tracing::info!(kid = %kid, algorithm = %self.algorithm, "local key ring rotated");
        Ok(kid)
    }

    /// Drops the versions beyond `retain` whose last token (if any) has expired, plus leeway.
    fn prune(&self, keys: &mut Vec<(KeyVersion, Arc<LocalKey>)>, now: SystemTime) {
        let signed_until = crate::lock(&self.signed_until).clone();
        let has_live_tokens = |version: &KeyVersion| {
            signed_until
                .get(&version.kid)
                .is_some_and(|until| now < *until + RETENTION_LEEWAY)
        };
        let mut index = 0;
        let mut pruned = Vec::new();
        keys.retain(|(version, _)| {
            index += 1;
            let keep = index <= self.retain || has_live_tokens(version);
            if !keep {
                pruned.push(version.kid.clone());
            }
            keep
        });
        crate::lock(&self.signed_until).retain(|kid, _| !pruned.contains(kid));
        for old in pruned {
            if let Some(directory) = &self.directory {
                // A file that cannot be removed is only an orphan: it is re-pruned on next start.
                if let Err(error) = fs::remove_file(directory.join(format!("{old}.json"))) {
                    tracing::warn!(kid = %old, %error, "could not remove a retired key file");
                }
            }
        }
    }
}

fn version_for(key: &LocalKey, created: SystemTime) -> Result<KeyVersion, KeyError> {
    let jwk = key.public_jwk();
    let kid = jwk.thumbprint();
    // Stored times have second precision; round now so a reload yields the same version.
    let created = from_unix_seconds(unix_seconds(created));
    Ok(KeyVersion::new(kid, jwk, created)?.with_algorithm(key.algorithm()))
}

fn read_directory(directory: &Path) -> std::io::Result<Vec<(KeyVersion, Arc<LocalKey>)>> {
    create_private_dir(directory)?;
    let mut keys = Vec::new();
    for entry in fs::read_dir(directory)? {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let parsed = fs::read(&path)
            .map(Zeroizing::new)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<StoredKey>(&bytes).map_err(|e| e.to_string())
            })
            .and_then(|stored| {
                let der = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(&stored.pkcs8)
                        .map_err(|e| e.to_string())?,
                );
                let key =
                    LocalKey::from_pkcs8(stored.algorithm, &der).map_err(|e| e.to_string())?;
                let version = version_for(&key, from_unix_seconds(stored.created))
                    .map_err(|e| e.to_string())?;
                Ok((version, Arc::new(key)))
            });
        match parsed {
            Ok(key) => keys.push(key),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "skipping an unreadable key file")
            }
        }
    }
    keys.sort_by(|a, b| b.0.age_order(&a.0));
    Ok(keys)
}

fn write_key(directory: &Path, version: &KeyVersion, key: &LocalKey) -> std::io::Result<()> {
    create_private_dir(directory)?;
    let stored = StoredKey {
        kid: version.kid.clone(),
        algorithm: key.algorithm(),
        created: unix_seconds(version.created),
        pkcs8: base64::engine::general_purpose::STANDARD.encode(key.pkcs8_der()),
    };
    let body = Zeroizing::new(serde_json::to_vec_pretty(&stored).map_err(std::io::Error::other)?);
    let _wipe = Zeroizing::new(stored.pkcs8);
    let final_path = directory.join(format!("{}.json", version.kid));
    let temporary = directory.join(format!(".{}.json.tmp", version.kid));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(&body)?;
    file.sync_all()?;
    fs::rename(&temporary, &final_path)
}

fn create_private_dir(directory: &Path) -> std::io::Result<()> {
    fs::create_dir_all(directory)?;
    #[cfg(unix)]
    fs::set_permissions(
        directory,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    Ok(())
}

impl KeySource for LocalKeyRing {
    fn name(&self) -> String {
        match &self.directory {
            Some(directory) => format!("local key ring {}", directory.display()),
            None => "local key ring (memory)".to_owned(),
        }
    }

    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        let result = (|| {
            let now = self.clock.now();
            let mut keys = self.lock();
            let due = keys.first().is_none_or(|(newest, _)| {
                now.duration_since(newest.created)
                    .is_ok_and(|age| age >= self.rotate_every)
            });
            if due {
                self.add_version(&mut keys, now)?;
            } else {
                self.prune(&mut keys, now);
            }
            Ok(LoadedKeys::new(
                keys.iter().map(|(version, _)| version.clone()).collect(),
            ))
        })();
        Box::pin(std::future::ready(result))
    }

    fn signed(&self, version: &KeyVersion, expires: SystemTime) {
        let mut signed_until = crate::lock(&self.signed_until);
        let until = signed_until.entry(version.kid.clone()).or_insert(expires);
        *until = (*until).max(expires);
    }

    fn signer<'a>(
        &'a self,
        version: &'a KeyVersion,
    ) -> BoxFuture<'a, Result<Arc<dyn Signer>, SourceError>> {
        let found = self
            .lock()
            .iter()
            .find(|(v, _)| v.kid == version.kid)
            .map(|(_, key)| Arc::new(Arc::clone(key)) as Arc<dyn Signer>)
            .ok_or_else(|| {
                self.error(
                    "sign",
                    format!("version {} is no longer in the ring", version.kid),
                )
            });
        Box::pin(std::future::ready(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn clock() -> ManualClock {
        ManualClock::new(from_unix_seconds(1_700_000_000))
    }

    #[tokio::test]
    async fn rotates_on_schedule_and_retains() {
        let clock = clock();
        let ring = LocalKeyRing::builder(Algorithm::ES256)
            .rotate_every(Duration::from_secs(60))
            .retain(2)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        assert_eq!(ring.load().await.unwrap().versions.len(), 1);
        clock.advance(Duration::from_secs(59));
        assert_eq!(ring.load().await.unwrap().versions.len(), 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(ring.load().await.unwrap().versions.len(), 2);
        clock.advance(Duration::from_secs(60));
        let versions = ring.load().await.unwrap().versions;
        assert_eq!(versions.len(), 2);
        assert!(versions[0].created > versions[1].created);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn persists_with_owner_only_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let ring = LocalKeyRing::builder(Algorithm::RS256)
            .directory(&path)
            .build()
            .unwrap();
        let versions = ring.load().await.unwrap().versions;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let file = path.join(format!("{}.json", versions[0].kid));
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );

        fs::write(path.join("garbage.json"), b"{not json").unwrap();
        let reopened = LocalKeyRing::builder(Algorithm::RS256)
            .directory(&path)
            .build()
            .unwrap();
        let again = reopened.load().await.unwrap().versions;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].kid, versions[0].kid);
        assert_eq!(again[0].created, versions[0].created);
        let signer = reopened.signer(&again[0]).await.unwrap();
        let signature = signer.sign(b"x").await.unwrap();
        versions[0]
            .verifying_key()
            .verify(Algorithm::RS256, b"x", &signature)
            .unwrap();
    }
}
