//! The optional verified-token cache.
//!
//! Keyed by the whole token, and a hit compares the full token, so a hash collision can never
//! serve another token's claims (the hash, foldhash with a per-process random seed, only places
//! entries; and only verified tokens are inserted, so nobody without a signing key chooses what
//! the table holds). An entry lives until the token's `exp`, or until it gets older than the
//! issuer's [`Validation::max_age`](keyroll_core::jwt::Validation::max_age) (`iat` + `max_age` +
//! leeway), at most `max_ttl`, on the issuer's clock; on every hit, `exp` and the maximum age
//! are checked again on the issuer's clock, and the very key that verified the token (its
//! [`KeyFingerprint`](keyroll_core::KeyFingerprint)) must still be the one the token's kid and
//! algorithm pick in the issuer's current set, and valid, with the set fresh enough (a key that
//! left the set or was disabled, a kid that now names new key material or only a key of another
//! type, or keys that went stale, send the request down the full path, which answers 401 or
//! 503).
//!
//! At most `capacity` tokens: a full cache drops its oldest entry for a new one (first in,
//! first out: every entry's life is capped by `max_ttl`, so the oldest is the nearest its end),
//! and an entry past its life goes once an insert, or a count for metrics, finds it first in
//! line.
//!
//! A hit writes no memory that another thread writes, so hits scale with cores: the map
//! (papaya) is read under an epoch guard of the thread's own, the checks read the entry, the
//! issuer's rules and the key set without cloning anything, and the claims handed out are the
//! thread slot's own copy (see `thread_slot`), whose reference count only that slot's threads
//! touch. What a hit reads of an entry (the map's node with the entry in it, the token's bytes)
//! sits on cache lines of its own: a small allocation of another thread's requests next to it
//! would otherwise be written while the hit reads it. An insert (one per verification, which
//! costs a signature check anyway) takes a lock.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use crossbeam_utils::CachePadded;

use keyroll_core::jwt::{Issuer, RegisteredClaims, Validation};
use keyroll_core::{Algorithm, KeyFingerprint, unix_seconds};

use super::extract::VerifiedClaims;
use super::thread_slot;

/// Settings of the verified-token cache.
///
/// From a file (feature `serde`): keys `capacity` and `max_ttl` (`"5m"`), each optional; an
/// unknown key is an error that names it. Any value is safe: a huge `max_ttl` is capped by
/// each token's `exp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct TokenCacheConfig {
    /// The most tokens kept.
    pub capacity: u64,
    /// The longest an entry is kept, whatever its `exp`.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_ttl: Duration,
}

impl Default for TokenCacheConfig {
    /// 10,000 tokens, 5 minutes.
    fn default() -> Self {
        TokenCacheConfig {
            capacity: 10_000,
            max_ttl: Duration::from_secs(300),
        }
    }
}

impl TokenCacheConfig {
    /// A cache of at most `capacity` tokens, each kept at most `max_ttl`.
    pub fn new(capacity: u64, max_ttl: Duration) -> Self {
        TokenCacheConfig { capacity, max_ttl }
    }
}

/// A cached token's key: the whole token (and, after it, the verifying version's kid), shared
/// by the map and the insertion order. Hashes and compares as the token's bytes, so the map is
/// looked up by a request's `&[u8]`.
#[derive(Clone)]
struct Key(Arc<Padded>);

/// The token's bytes, then the kid's, starting on a cache line and followed by a whole line of
/// padding, so that no other allocation shares their lines.
#[repr(align(128))]
struct Padded {
    bytes: Box<[u8]>,
    start: usize,
    token_len: usize,
    kid_len: usize,
}

/// Cache lines are at most 128 bytes (the pairs x86 prefetches together included).
const LINE: usize = 128;

impl Key {
    fn new(token: &[u8], kid: &str) -> Self {
        let len = token.len() + kid.len();
        let mut bytes = vec![0; len + 2 * LINE].into_boxed_slice();
        let start = (LINE - bytes.as_ptr() as usize % LINE) % LINE;
        bytes[start..start + token.len()].copy_from_slice(token);
        bytes[start + token.len()..start + len].copy_from_slice(kid.as_bytes());
        Key(Arc::new(Padded {
            bytes,
            start,
            token_len: token.len(),
            kid_len: kid.len(),
        }))
    }

    fn token(&self) -> &[u8] {
        let padded = &*self.0;
        &padded.bytes[padded.start..padded.start + padded.token_len]
    }

    /// The kid the key was made with (valid UTF-8: it was a `&str`).
    fn kid(&self) -> &str {
        let padded = &*self.0;
        let kid = padded.start + padded.token_len;
        std::str::from_utf8(&padded.bytes[kid..kid + padded.kid_len]).unwrap_or_default()
    }

    fn is(&self, other: &Key) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.token()
    }
}

impl Hash for Key {
    /// As the token's bytes hash, so that a lookup by `&[u8]` finds it.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.token().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.token() == other.token()
    }
}

impl Eq for Key {}

/// How many threads hit one entry each on a copy of its own; more share copies (contention
/// only, never a wrong answer).
const COPIES: usize = 16;

struct Entry {
    /// The claims once per thread slot, each made on its slot's first hit.
    copies: [OnceLock<VerifiedClaims>; COPIES],
    /// What the copies are made from (the claims of the request that verified the token).
    claims: VerifiedClaims,
    issuer: Arc<Issuer>,
    /// What a hit checks, copied out of the claims so that a hit reads only this entry (the
    /// kid is in the key).
    exp: Option<u64>,
    iat: Option<u64>,
    algorithm: Algorithm,
    /// The key that verified the token: a hit needs that very key, not just its kid (a kid
    /// can name new key material after a rotation, or another key of a different type).
    verified_by: KeyFingerprint,
    /// The end of the entry's life on the issuer's clock (`None`: beyond what a clock holds,
    /// so only `exp` and the maximum age end it).
    until: Option<SystemTime>,
}

impl Entry {
    /// Whether the entry may be served now: within its life, the rules that time can break
    /// (`exp`, the maximum age) hold, and the key that verified it is still the one its `kid`
    /// and algorithm name, valid in a fresh-enough set.
    fn servable(&self, kid: &str) -> bool {
        let keys = self.issuer.keys();
        let now = keys.now();
        self.alive_at(now) && {
            let validation = self.issuer.validation();
            let seconds = unix_seconds(now);
            !validation.is_expired(self.exp, seconds)
                && !validation.is_too_old(self.iat, seconds)
                && keys.still_verifies_at(kid, self.algorithm, &self.verified_by, now)
        }
    }

    /// Through the last instant of its life, as the full check's limits are inclusive (a
    /// token exactly `max_age` + leeway old still passes).
    fn alive_at(&self, now: SystemTime) -> bool {
        self.until.is_none_or(|until| now <= until)
    }

    /// The claims for a thread in `slot`.
    fn claims_for(&self, slot: usize) -> VerifiedClaims {
        self.copies[slot % COPIES]
            .get_or_init(|| self.claims.replica())
            .clone()
    }
}

pub(crate) struct TokenCache {
    /// Entries padded to cache lines: papaya puts each (key, entry) in one allocation.
    entries: papaya::HashMap<Key, CachePadded<Entry>, foldhash::fast::RandomState>,
    /// The keys in insertion order, one per insert (an entry dropped early leaves its key
    /// here until its turn comes): never longer than `capacity`, so neither is the map.
    order: Mutex<VecDeque<Key>>,
    capacity: usize,
    max_ttl: Duration,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.entries.len())
            .field("capacity", &self.capacity)
            .field("max_ttl", &self.max_ttl)
            .finish()
    }
}

impl TokenCache {
    pub(crate) fn new(config: TokenCacheConfig) -> Self {
        TokenCache {
            entries: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .build(),
            order: Mutex::default(),
            capacity: usize::try_from(config.capacity).unwrap_or(usize::MAX),
            max_ttl: config.max_ttl,
        }
    }

    /// The claims of a cached token that is still good to serve.
    pub(crate) fn get(&self, token: &[u8]) -> Option<VerifiedClaims> {
        let entries = self.entries.pin();
        let (key, entry) = entries.get_key_value(token)?;
        if entry.servable(key.kid()) {
            return Some(entry.claims_for(thread_slot::current()));
        }
        // This entry only, not one a concurrent insert has just put in its place.
        let _ = entries.remove_if(token, |_, current| std::ptr::eq(current, entry));
        None
    }

    /// How many tokens are cached, after dropping those found past their life (at publish,
    /// never on a request).
    #[cfg(feature = "metrics")]
    pub(crate) fn entry_count(&self) -> u64 {
        let entries = self.entries.pin();
        self.drop_ended(&mut self.order(), &entries);
        entries.len() as u64
    }

    /// Remembers a verified token.
    pub(crate) fn insert(&self, token: &[u8], claims: &VerifiedClaims, issuer: Arc<Issuer>) {
        if self.capacity == 0 {
            return;
        }
        let now = issuer.keys().now();
        let registered = claims.registered();
        let Some(ttl) = entry_ttl(
            registered,
            issuer.validation(),
            unix_seconds(now),
            self.max_ttl,
        ) else {
            return;
        };
        let copies: [OnceLock<VerifiedClaims>; COPIES] = std::array::from_fn(|_| OnceLock::new());
        // This thread's copy is the one the verifying request carries.
        let _ = copies[thread_slot::current() % COPIES].set(claims.clone());
        let entry = CachePadded::new(Entry {
            copies,
            claims: claims.clone(),
            exp: registered.exp,
            iat: registered.iat,
            algorithm: claims.algorithm(),
            verified_by: claims.token().key_fingerprint(),
            until: now.checked_add(ttl),
            issuer,
        });
        let key = Key::new(token, claims.kid());
        let entries = self.entries.pin();
        let mut order = self.order();
        self.drop_ended(&mut order, &entries);
        while order.len() >= self.capacity {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            remove(&entries, &oldest);
        }
        order.push_back(key.clone());
        entries.insert(key, entry);
    }

    fn order(&self) -> MutexGuard<'_, VecDeque<Key>> {
        self.order.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops, from the front of the line, keys whose entry is gone or past its life.
    fn drop_ended(&self, order: &mut VecDeque<Key>, entries: &Entries<'_>) {
        while let Some(oldest) = order.front() {
            let ended = match entries.get_key_value(oldest.token()) {
                Some((key, entry)) if key.is(oldest) => !entry.alive_at(entry.issuer.keys().now()),
                // Dropped early, or replaced by a later insert (which has its own place).
                _ => true,
            };
            if !ended {
                break;
            }
            if let Some(oldest) = order.pop_front() {
                remove(entries, &oldest);
            }
        }
    }
}

type Entries<'a> = papaya::HashMapRef<
    'a,
    Key,
    CachePadded<Entry>,
    foldhash::fast::RandomState,
    papaya::LocalGuard<'a>,
>;

/// Removes the entry `key` was inserted with (not one inserted later for the same token).
fn remove(entries: &Entries<'_>, key: &Key) {
    let _ = entries.remove_if(key.token(), |current, _| current.is(key));
}

/// How long a token verified at `now` may be served from the cache: until its `exp`, and until
/// it gets older than the issuer's `max_age` (`iat` + `max_age` + leeway, the full check's
/// limit), at most `max_ttl`. `None`: not worth caching (no time left).
fn entry_ttl(
    claims: &RegisteredClaims,
    validation: &Validation,
    now: u64,
    max_ttl: Duration,
) -> Option<Duration> {
    let mut ttl = max_ttl;
    if let Some(exp) = claims.exp {
        ttl = ttl.min(Duration::from_secs(exp.checked_sub(now)?));
    }
    if let Some(max_age) = validation.max_age {
        // The full check refuses a token without `iat` when a maximum age is set.
        let until = claims
            .iat?
            .saturating_add(max_age.as_secs())
            .saturating_add(validation.leeway.as_secs());
        ttl = ttl.min(Duration::from_secs(until.checked_sub(now)?));
    }
    (!ttl.is_zero()).then_some(ttl)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use keyroll_core::jwt::{TokenTemplate, Verifier};
    use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};

    const ISS: &str = "https://orders.example";
    const AUD: &str = "https://billing.example";

    /// `count` distinct verified tokens, with their claims, and their issuer.
    fn verified(count: usize) -> (Arc<Issuer>, Vec<(String, VerifiedClaims)>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap())
            .background_refresh(false)
            .build();
        let verifier = Verifier::new([Issuer::new(keys.clone(), Validation::new(ISS, [AUD]))]);
        let realm: Arc<str> = "test".into();
        let tokens = runtime.block_on(async {
            let mut tokens = Vec::new();
            for _ in 0..count {
                let token = TokenTemplate::new(ISS)
                    .mint(&keys, AUD)
                    .await
                    .unwrap()
                    .token;
                let claims = VerifiedClaims::shareable(
                    verifier.verify(&token).await.unwrap(),
                    Arc::clone(&realm),
                );
                tokens.push((token, claims));
            }
            tokens
        });
        (Arc::clone(verifier.issuer(ISS).unwrap()), tokens)
    }

    #[test]
    fn a_key_reads_and_hashes_as_its_token_on_lines_of_its_own() {
        use std::hash::BuildHasher;
        let token = b"header.payload.signature";
        let key = Key::new(token, "kid-1");
        assert_eq!((key.token(), key.kid()), (&token[..], "kid-1"));
        let hasher = foldhash::fast::RandomState::default();
        assert_eq!(hasher.hash_one(&key), hasher.hash_one(&token[..]));
        assert!(key == Key::new(token, "other") && !key.is(&Key::new(token, "kid-1")));
        // The data starts a line, and a whole line of the allocation follows it.
        let padded = &*key.0;
        assert_eq!((padded.bytes.as_ptr() as usize + padded.start) % LINE, 0);
        assert!(padded.start + padded.token_len + padded.kid_len + LINE <= padded.bytes.len());
    }

    #[test]
    fn inserts_from_many_threads_keep_the_capacity() {
        let (issuer, tokens) = verified(200);
        let cache = TokenCache::new(TokenCacheConfig::new(20, Duration::from_secs(300)));
        std::thread::scope(|scope| {
            for share in tokens.chunks(50) {
                let (cache, issuer) = (&cache, &issuer);
                scope.spawn(move || {
                    for (token, claims) in share {
                        cache.insert(token.as_bytes(), claims, Arc::clone(issuer));
                        assert!(cache.entries.len() <= 20);
                    }
                });
            }
        });
        assert_eq!(cache.entries.len(), 20);
        assert_eq!(cache.order().len(), 20);
        let hits = tokens
            .iter()
            .filter(|(token, _)| cache.get(token.as_bytes()).is_some())
            .count();
        assert_eq!(hits, 20);
    }

    #[test]
    fn each_thread_slot_hands_out_claims_of_its_own() {
        let (issuer, tokens) = verified(1);
        let (token, claims) = &tokens[0];
        let cache = TokenCache::new(TokenCacheConfig::default());
        cache.insert(token.as_bytes(), claims, issuer);
        let entries = cache.entries.pin();
        let entry = entries.get(token.as_bytes()).unwrap();
        let mine = thread_slot::current();
        let other = mine + 1;
        // This thread's slot holds the verifying request's claims; another slot, a replica.
        assert!(entry.claims_for(mine).is_clone_of(claims));
        let replica = entry.claims_for(other);
        assert!(!replica.is_clone_of(claims));
        assert!(entry.claims_for(other).is_clone_of(&replica));
        assert_eq!(replica.payload(), claims.payload());
        assert_eq!(replica.kid(), claims.kid());
        // The copies share the token: the entry holds its payload once.
        assert!(replica.shares_token_with(claims));
        // Through `get`, on this thread: its own slot's.
        assert!(cache.get(token.as_bytes()).unwrap().is_clone_of(claims));
    }

    fn claims(iat: Option<u64>, exp: Option<u64>) -> RegisteredClaims {
        let mut claims = RegisteredClaims::default();
        claims.iat = iat;
        claims.exp = exp;
        claims
    }

    #[test]
    fn ttl_is_capped_by_exp_max_age_and_max_ttl() {
        let hour = Duration::from_secs(3600);
        let now = 1_000_000;
        let plain = Validation::new("iss", ["aud"]);
        // exp in an hour, cap 5 min: 5 min; cap 2 h: the hour left.
        let token = claims(Some(now), Some(now + 3600));
        assert_eq!(
            entry_ttl(&token, &plain, now, Duration::from_secs(300)),
            Some(Duration::from_secs(300))
        );
        assert_eq!(entry_ttl(&token, &plain, now, 2 * hour), Some(hour));
        assert_eq!(entry_ttl(&claims(None, Some(now)), &plain, now, hour), None);
        // max_age 60 s, leeway 10 s, issued 30 s ago: 40 s left, whatever exp says.
        let strict = Validation::new("iss", ["aud"])
            .max_age(Duration::from_secs(60))
            .leeway(Duration::from_secs(10));
        let token = claims(Some(now - 30), Some(now + 3600));
        assert_eq!(
            entry_ttl(&token, &strict, now, hour),
            Some(Duration::from_secs(40))
        );
        // Already at the limit, or no iat: not cached.
        assert_eq!(
            entry_ttl(
                &claims(Some(now - 70), Some(now + 3600)),
                &strict,
                now,
                hour
            ),
            None
        );
        assert_eq!(
            entry_ttl(&claims(None, Some(now + 3600)), &strict, now, hour),
            None
        );
        // The hit check agrees with the full check's rule.
        assert!(!strict.is_too_old(token.iat, now + 40));
        assert!(strict.is_too_old(token.iat, now + 41));
        assert!(strict.is_too_old(claims(None, None).iat, now));
        assert!(!plain.is_too_old(claims(None, None).iat, now));
    }
}
