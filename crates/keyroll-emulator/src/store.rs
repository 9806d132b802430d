//! The emulated vaults' contents (keys, certificates, secrets and their versions) and their
//! persistence to the state directory.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::crypto::KeyMaterial;

/// Attributes shared by every versioned object, as Key Vault reports them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Attributes {
    pub(crate) enabled: bool,
    pub(crate) created: i64,
    pub(crate) updated: i64,
    pub(crate) nbf: Option<i64>,
    pub(crate) exp: Option<i64>,
}

impl Attributes {
    pub(crate) fn new(created: i64) -> Attributes {
        Attributes {
            enabled: true,
            created,
            updated: created,
            nbf: None,
            exp: None,
        }
    }

    /// Enables or disables the object, as of `now`.
    pub(crate) fn set_enabled(&mut self, enabled: bool, now: i64) {
        self.enabled = enabled;
        self.updated = now;
    }
}

/// One version of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyVersion {
    pub(crate) version: String,
    pub(crate) material: KeyMaterial,
    /// `RSA`, `RSA-HSM`, `EC` or `EC-HSM`, as requested.
    pub(crate) kty: String,
    pub(crate) key_ops: Vec<String>,
    pub(crate) attributes: Attributes,
    pub(crate) tags: Map<String, Value>,
    /// Backs a certificate.
    pub(crate) managed: bool,
}

/// A certificate's issuance policy (the subset the emulator honours).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CertPolicy {
    pub(crate) exportable: bool,
    pub(crate) kty: String,
    pub(crate) key_size: Option<u32>,
    pub(crate) crv: Option<String>,
    pub(crate) reuse_key: bool,
    pub(crate) content_type: String,
    pub(crate) subject: String,
    pub(crate) dns_names: Vec<String>,
    pub(crate) ekus: Vec<String>,
    pub(crate) key_usage: Vec<String>,
    pub(crate) validity_months: u32,
    pub(crate) issuer: String,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// One version of a certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CertVersion {
    pub(crate) version: String,
    #[serde(with = "crate::crypto::b64")]
    pub(crate) cer: Vec<u8>,
    pub(crate) attributes: Attributes,
    pub(crate) tags: Map<String, Value>,
}

/// A certificate operation: created `inProgress`, reported `completed` once polled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingOperation {
    pub(crate) version: String,
    pub(crate) request_id: String,
    pub(crate) completed: bool,
    #[serde(with = "crate::crypto::b64")]
    pub(crate) csr: Vec<u8>,
}

/// A certificate: its policy, versions and last operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Certificate {
    pub(crate) policy: CertPolicy,
    pub(crate) versions: Vec<CertVersion>,
    pub(crate) pending: Option<PendingOperation>,
}

/// One version of a secret. `Debug` prints no value.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SecretVersion {
    pub(crate) version: String,
    pub(crate) value: String,
    pub(crate) content_type: Option<String>,
    pub(crate) attributes: Attributes,
    pub(crate) tags: Map<String, Value>,
    /// Backs a certificate (its key has the same name and version).
    pub(crate) managed: bool,
}

impl std::fmt::Debug for SecretVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVersion")
            .field("version", &self.version)
            .field("value", &"<redacted>")
            .field("content_type", &self.content_type)
            .field("attributes", &self.attributes)
            .field("managed", &self.managed)
            .finish_non_exhaustive()
    }
}

/// One vault's contents.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Vault {
    pub(crate) keys: BTreeMap<String, Vec<KeyVersion>>,
    pub(crate) certificates: BTreeMap<String, Certificate>,
    pub(crate) secrets: BTreeMap<String, Vec<SecretVersion>>,
}

/// Everything the emulator persists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Store {
    pub(crate) tenant_id: Option<String>,
    pub(crate) vaults: BTreeMap<String, Vault>,
    /// The Entra signing keys, oldest first; the last one signs.
    pub(crate) entra_keys: Vec<KeyMaterial>,
    /// The key of the emulated Kubernetes cluster's service-account issuer.
    #[serde(default)]
    pub(crate) kubernetes_key: Option<KeyMaterial>,
}

const STATE_FILE: &str = "state.json";

impl Store {
    /// Loads `state.json` from `dir`, or an empty store.
    pub(crate) fn load(dir: Option<&Path>) -> Result<Store, crate::Error> {
        let Some(dir) = dir else {
            return Ok(Store::default());
        };
        let path = dir.join(STATE_FILE);
        if !path.exists() {
            return Ok(Store::default());
        }
        let text = std::fs::read(&path)?;
        serde_json::from_slice(&text).map_err(|e| crate::Error::State(e.to_string()))
    }

    /// Writes `state.json` to `dir` atomically.
    pub(crate) fn save(&self, dir: &Path) -> Result<(), crate::Error> {
        let text = serde_json::to_vec(self).map_err(|e| crate::Error::State(e.to_string()))?;
        std::fs::create_dir_all(dir)?;
        write_atomic(&dir.join(STATE_FILE), &text)
    }

    /// The vault with this name, created on first use.
    pub(crate) fn vault(&mut self, name: &str) -> &mut Vault {
        self.vaults.entry(name.to_ascii_lowercase()).or_default()
    }
}

/// Writes a file through a temporary sibling and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), crate::Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A new version identifier: 32 lowercase hex characters.
pub(crate) fn new_version() -> String {
    let mut bytes = [0u8; 16];
    // A failure of the system RNG is not recoverable; fall back to a time-and-counter mix.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let t = crate::clock::real_now_ms().to_le_bytes();
        bytes[..8].copy_from_slice(&t);
        bytes[8..].copy_from_slice(&fastrand_u64().to_le_bytes());
    }
    hex::encode(bytes)
}

fn fastrand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Curve, KeySpec};

    #[test]
    fn versions_are_32_lowercase_hex() {
        let v = new_version();
        assert_eq!(v.len(), 32);
        assert!(
            v.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert_ne!(v, new_version());
    }

    #[test]
    fn store_round_trips_through_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::default();
        let material = KeyMaterial::generate(KeySpec::Ec(Curve::P256)).unwrap();
        store.vault("One").keys.insert(
            "k".into(),
            vec![KeyVersion {
                version: new_version(),
                material,
                kty: "EC".into(),
                key_ops: vec!["sign".into()],
                attributes: Attributes::new(42),
                tags: Map::new(),
                managed: false,
            }],
        );
        store.save(dir.path()).unwrap();
        let loaded = Store::load(Some(dir.path())).unwrap();
        let k = &loaded.vaults["one"].keys["k"][0];
        assert_eq!(k.attributes.created, 42);
        assert_eq!(
            k.material.public_jwk().unwrap(),
            store.vaults["one"].keys["k"][0]
                .material
                .public_jwk()
                .unwrap()
        );
    }
}
