//! The keys, the clock and the verifier every target checks tokens against.
//!
//! The private keys are generated afresh in each process and published under fixed key ids,
//! so a token from the seed corpus (signed by other keys with the same ids) passes every check
//! up to its signature, and nothing in an input can carry a valid signature: only a target that
//! signs with [`Fixture::sign`] makes one.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keyroll_core::jwt::{Issuer, Validation, VerifiedToken, Verifier, VerifyError};
use keyroll_core::{
    Algorithm, Jwk, JwkSet, KeyCache, LocalKey, ManualClock, StaticKeys, from_unix_seconds,
};

/// The time on every cache's clock (Unix seconds): tokens are judged against this instant.
pub const NOW: u64 = 1_700_000_000;

/// The first issuer: the defaults (leeway 60 s, `exp` required), audience [`AUDIENCE_A`].
pub const ISSUER_A: &str = "https://a.fuzz.example";
/// The audience issuer A's tokens must name.
pub const AUDIENCE_A: &str = "api://fuzz";
/// The second issuer: `typ` `JWT`, `tid` and `iat` required, at most [`MAX_AGE_B`] old,
/// leeway [`LEEWAY_B`], audience [`AUDIENCE_B`].
pub const ISSUER_B: &str = "https://b.fuzz.example";
/// The audience issuer B's tokens must name.
pub const AUDIENCE_B: &str = "api://b";
/// Issuer B's leeway, in seconds.
pub const LEEWAY_B: u64 = 5;
/// Issuer B's maximum token age, in seconds.
pub const MAX_AGE_B: u64 = 600;
/// The leeway of issuer A (the default), in seconds.
pub const LEEWAY_A: u64 = 60;

/// The kid of the ES256 key (its JWK pins `alg` ES256 and has `x5t` [`ES256_X5T`]).
pub const ES256_KID: &str = "fuzz-es256";
/// The `x5t` of the ES256 key: a token without `kid` finds the key by it.
pub const ES256_X5T: &str = "fuzz-x5t-es256";
/// The kid of the RS256 key (its JWK pins `alg` RS256).
pub const RS256_KID: &str = "fuzz-rs256";

/// The largest token the verifier takes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The signing keys, the cache that publishes their public halves, and the verifier.
pub struct Fixture {
    /// The ES256 private key.
    pub es256: LocalKey,
    /// The RS256 private key.
    pub rs256: LocalKey,
    /// The key cache (both issuers share it), loaded.
    pub keys: KeyCache,
    /// A verifier for issuers A and B.
    pub verifier: Verifier,
    /// A runtime for the rare verification that must wait for the cache (an unknown kid).
    pub runtime: tokio::runtime::Runtime,
}

/// The issuers: A with the defaults, B with every rule set.
pub fn issuers(keys: &KeyCache) -> [Issuer; 2] {
    [
        Issuer::new(keys.clone(), Validation::new(ISSUER_A, [AUDIENCE_A])),
        Issuer::new(
            keys.clone(),
            Validation::new(ISSUER_B, [AUDIENCE_B])
                .typ("JWT")
                .require("tid")
                .max_age(Duration::from_secs(MAX_AGE_B))
                .leeway(Duration::from_secs(LEEWAY_B)),
        ),
    ]
}

/// A fresh key for `algorithm`, and its public JWK under `kid`.
fn key(algorithm: Algorithm, kid: &str) -> (LocalKey, Jwk) {
    let key = LocalKey::generate(algorithm).expect("key generation");
    let mut jwk = key.public_jwk();
    jwk.kid = Some(kid.to_owned());
    jwk.alg = Some(algorithm.as_str().to_owned());
    (key, jwk)
}

impl Fixture {
    fn new() -> Fixture {
        let (es256, mut es256_jwk) = key(Algorithm::ES256, ES256_KID);
        es256_jwk.x5t = Some(ES256_X5T.to_owned());
        let (rs256, rs256_jwk) = key(Algorithm::RS256, RS256_KID);
        let set = JwkSet {
            keys: vec![es256_jwk, rs256_jwk],
        };
        let source = StaticKeys::new()
            .with_jwk_json(&serde_json::to_vec(&set).expect("JWKS"))
            .expect("the fixture's JWKS");
        let keys = KeyCache::builder(source)
            .clock(Arc::new(ManualClock::new(from_unix_seconds(NOW))))
            .background_refresh(false)
            .build();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(keys.refresh_now()).expect("first load");
        let verifier = Verifier::new(issuers(&keys)).max_token_len(MAX_TOKEN_LEN);
        Fixture {
            es256,
            rs256,
            keys,
            verifier,
            runtime,
        }
    }

    /// Verifies `token` as the validator does: synchronously when the key is known, else
    /// through the cache's (coalesced, cooled-down) refresh.
    pub fn verify(&self, token: &[u8]) -> Result<VerifiedToken, VerifyError> {
        self.verify_with(&self.verifier, token)
    }

    /// [`verify`](Self::verify) with another verifier over the same keys.
    pub fn verify_with(
        &self,
        verifier: &Verifier,
        token: &[u8],
    ) -> Result<VerifiedToken, VerifyError> {
        match verifier.verify_now(token) {
            Some(result) => result,
            None => self.runtime.block_on(verifier.verify(token)),
        }
    }

    /// Signs `signing_input` with the key for `algorithm` (ES256 or RS256).
    pub fn sign(&self, algorithm: Algorithm, signing_input: &[u8]) -> Vec<u8> {
        let key = match algorithm {
            Algorithm::RS256 => &self.rs256,
            _ => &self.es256,
        };
        key.sign_now(signing_input).expect("signing")
    }
}

/// The fixture, made on first use (once per process).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::new)
}
