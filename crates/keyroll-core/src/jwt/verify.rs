//! Verification of inbound tokens against one or more issuers' key caches.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::claims::BorrowedClaims;
use super::claims::RegisteredClaims;
use super::header_cache::HeaderCache;
use super::token::{
    Header, buffer, decode_into, parse_claims_text, parse_header, payload_text, split,
};
use crate::algorithm::Algorithm;
use crate::cache::{Found, KeyCache, KeyCacheError, KeyLookup, KeyRef};
use crate::clock::unix_seconds;
use crate::key::{KeyFingerprint, KeyVersion, SignatureError};

/// What a token must satisfy for one issuer.
///
/// | setting | default |
/// |---|---|
/// | `algorithms` | every asymmetric algorithm (never `none` or HMAC) |
/// | `leeway` | 60 s |
/// | `required_claims` | `exp` |
/// | `typ` | not checked |
/// | `max_age` | none |
///
/// From a file (feature `serde`): keys named as the fields; `issuer` and `audiences` are
/// required, the others default as above; algorithms by name (`"ES256"`: `none` and HMAC do
/// not exist), durations as `"60s"`, `"1h 30m"`; an unknown key is an error that names it.
///
/// ```toml
/// issuer = "https://orders.internal"
/// audiences = ["api://billing"]
/// algorithms = ["ES256", "PS256"]
/// max_age = "1h"
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(deny_unknown_fields)
)]
#[non_exhaustive]
pub struct Validation {
    /// The exact `iss` value.
    pub issuer: String,
    /// Accepted audiences: the token's `aud` must contain at least one. When empty, no token
    /// is accepted unless `any_audience` is set.
    pub audiences: Vec<String>,
    /// Accept tokens for any audience (for tools; a service should name its audiences).
    #[cfg_attr(feature = "serde", serde(default))]
    pub any_audience: bool,
    /// Allowed algorithms.
    #[cfg_attr(feature = "serde", serde(default = "defaults::algorithms"))]
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    #[cfg_attr(
        feature = "serde",
        serde(default = "defaults::leeway", with = "humantime_serde")
    )]
    pub leeway: Duration,
    /// Claims that must be present (`exp`, `iat`, `sub`, or any other name).
    #[cfg_attr(feature = "serde", serde(default = "defaults::required_claims"))]
    pub required_claims: Vec<String>,
    /// Expected `typ` header (compared case-insensitively, `application/` prefix ignored).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub typ: Option<String>,
    /// Reject tokens whose `iat` is older than this.
    #[cfg_attr(
        feature = "serde",
        serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "humantime_serde"
        )
    )]
    pub max_age: Option<Duration>,
}

/// The defaults of [`Validation::new`], one per field, for configuration files.
mod defaults {
    use std::time::Duration;

    use crate::algorithm::{ALL_ALGORITHMS, Algorithm};

    pub(super) fn algorithms() -> Vec<Algorithm> {
        ALL_ALGORITHMS.to_vec()
    }

    pub(super) fn leeway() -> Duration {
        Duration::from_secs(60)
    }

    pub(super) fn required_claims() -> Vec<String> {
        vec!["exp".to_owned()]
    }
}

impl Validation {
    /// Tokens from `issuer` for any of `audiences`.
    pub fn new<A: Into<String>>(
        issuer: impl Into<String>,
        audiences: impl IntoIterator<Item = A>,
    ) -> Self {
        Validation {
            issuer: issuer.into(),
            audiences: audiences.into_iter().map(Into::into).collect(),
            any_audience: false,
            algorithms: defaults::algorithms(),
            leeway: defaults::leeway(),
            required_claims: defaults::required_claims(),
            typ: None,
            max_age: None,
        }
    }

    /// Accepts tokens whatever their audience. Tokens the issuer minted for other services are
    /// then accepted too: use it in tools, not in services.
    pub fn any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// Sets the allowed algorithms.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Sets the leeway.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Adds a required claim.
    pub fn require(mut self, claim: impl Into<String>) -> Self {
        self.required_claims.push(claim.into());
        self
    }

    /// Sets the expected `typ`.
    pub fn typ(mut self, typ: impl Into<String>) -> Self {
        self.typ = Some(typ.into());
        self
    }

    /// Sets the maximum token age.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Whether a token with this `exp` has expired at `now` (Unix seconds), leeway allowed.
    /// With `is_too_old`, the rules a verified token can come to fail later: a cache of
    /// verified tokens checks them again on each hit.
    pub fn is_expired(&self, exp: Option<u64>, now: u64) -> bool {
        exp.is_some_and(|exp| exp.saturating_add(self.leeway.as_secs()) <= now)
    }

    /// Whether a token issued at `iat` is older than `max_age` at `now`, leeway allowed (a
    /// token without `iat` is, when a maximum age is set).
    pub fn is_too_old(&self, iat: Option<u64>, now: u64) -> bool {
        let Some(max_age) = self.max_age else {
            return false;
        };
        let limit = max_age.as_secs().saturating_add(self.leeway.as_secs());
        iat.is_none_or(|iat| now.saturating_sub(iat) > limit)
    }
}

/// An issuer the verifier trusts: its keys and its rules.
#[derive(Clone, Debug)]
pub struct Issuer {
    keys: KeyCache,
    validation: Validation,
    /// `validation.issuer`, shared with every token it verifies.
    name: Arc<str>,
}

impl Issuer {
    /// An issuer whose keys come from `keys`.
    pub fn new(keys: KeyCache, validation: Validation) -> Self {
        let name = validation.issuer.as_str().into();
        Issuer {
            keys,
            validation,
            name,
        }
    }

    /// The key cache.
    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// The rules.
    pub fn validation(&self) -> &Validation {
        &self.validation
    }
}

/// Why a token is invalid. Descriptions are fixed texts: they never echo the token or any
/// value from it, so they are safe in `WWW-Authenticate` headers and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidReason {
    /// Not a well-formed compact JWS.
    Malformed(&'static str),
    /// Larger than the configured maximum.
    TooLarge,
    /// A JWE (five segments): encrypted tokens are not accepted.
    Encrypted,
    /// `alg` is `none`, symmetric or unknown.
    UnsupportedAlgorithm,
    /// `alg` is not in the issuer's allow-list.
    AlgorithmNotAllowed,
    /// A `crit` header asks for extensions this verifier does not implement.
    CriticalHeader,
    /// `iss` is missing or names no configured issuer.
    UntrustedIssuer,
    /// A required claim is missing.
    MissingClaim,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iat` is in the future.
    IssuedInFuture,
    /// `iat` is older than the maximum age.
    TooOld,
    /// `aud` names none of the accepted audiences.
    WrongAudience,
    /// The `typ` header is not the expected one.
    WrongType,
    /// The token names no key (no `kid`, no `x5t`).
    NoKeyId,
    /// No key has the token's `kid`/`x5t`.
    UnknownKey,
    /// The key version is disabled, expired or not yet valid.
    KeyNotValid,
    /// The key does not allow the header's algorithm.
    AlgorithmKeyMismatch,
    /// The signature does not verify.
    BadSignature,
}

impl InvalidReason {
    /// A short, fixed description.
    pub fn description(&self) -> &'static str {
        match self {
            InvalidReason::Malformed(what) => what,
            InvalidReason::TooLarge => "the token is too large",
            InvalidReason::Encrypted => "encrypted tokens (JWE) are not accepted",
            InvalidReason::UnsupportedAlgorithm => "the token's algorithm is not supported",
            InvalidReason::AlgorithmNotAllowed => "the token's algorithm is not allowed",
            InvalidReason::CriticalHeader => "the token has critical header extensions",
            InvalidReason::UntrustedIssuer => "the token's issuer is not trusted",
            InvalidReason::MissingClaim => "the token lacks a required claim",
            InvalidReason::Expired => "the token has expired",
            InvalidReason::NotYetValid => "the token is not yet valid",
            InvalidReason::IssuedInFuture => "the token was issued in the future",
            InvalidReason::TooOld => "the token is too old",
            InvalidReason::WrongAudience => "the token is not for this audience",
            InvalidReason::WrongType => "the token has the wrong type",
            InvalidReason::NoKeyId => "the token names no key",
            InvalidReason::UnknownKey => "the token's signing key is unknown",
            InvalidReason::KeyNotValid => "the token's signing key is disabled or expired",
            InvalidReason::AlgorithmKeyMismatch => "the token's algorithm does not match its key",
            InvalidReason::BadSignature => "the token's signature is invalid",
        }
    }

    /// A stable label for metrics (`malformed`, `expired`, …).
    pub fn label(&self) -> &'static str {
        match self {
            InvalidReason::Malformed(_) => "malformed",
            InvalidReason::TooLarge => "too_large",
            InvalidReason::Encrypted => "encrypted",
            InvalidReason::UnsupportedAlgorithm => "unsupported_algorithm",
            InvalidReason::AlgorithmNotAllowed => "algorithm_not_allowed",
            InvalidReason::CriticalHeader => "critical_header",
            InvalidReason::UntrustedIssuer => "untrusted_issuer",
            InvalidReason::MissingClaim => "missing_claim",
            InvalidReason::Expired => "expired",
            InvalidReason::NotYetValid => "not_yet_valid",
            InvalidReason::IssuedInFuture => "issued_in_future",
            InvalidReason::TooOld => "too_old",
            InvalidReason::WrongAudience => "wrong_audience",
            InvalidReason::WrongType => "wrong_type",
            InvalidReason::NoKeyId => "no_key_id",
            InvalidReason::UnknownKey => "unknown_key",
            InvalidReason::KeyNotValid => "key_not_valid",
            InvalidReason::AlgorithmKeyMismatch => "algorithm_key_mismatch",
            InvalidReason::BadSignature => "bad_signature",
        }
    }
}

/// A token that failed validation (RFC 6750 `invalid_token`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid token: {}", reason.description())]
pub struct InvalidToken {
    reason: InvalidReason,
}

impl InvalidToken {
    pub(crate) fn new(reason: InvalidReason) -> Self {
        InvalidToken { reason }
    }

    /// Why.
    pub fn reason(&self) -> InvalidReason {
        self.reason
    }
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token is invalid (401).
    #[error(transparent)]
    Invalid(#[from] InvalidToken),
    /// The issuer's keys are unavailable (503): never loaded, or stale past `max_stale`.
    #[error("cannot verify tokens now: {0}")]
    KeysUnavailable(#[source] KeyCacheError),
}

/// A token whose signature and claims were checked.
#[derive(Clone)]
pub struct VerifiedToken {
    /// The payload's JSON, then the verifying version's kid, then the issuer: one allocation
    /// of its own, so a verification clones no `Arc` that other threads' verifications write
    /// too.
    text: Box<str>,
    payload_end: usize,
    kid_end: usize,
    algorithm: Algorithm,
    key: KeyFingerprint,
    /// Built from the payload on first use: most handlers deserialize their own claims type
    /// and never ask, so the hot path does not copy every string claim.
    claims: OnceLock<RegisteredClaims>,
}

impl std::fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("issuer", &self.issuer())
            .field("kid", &self.kid())
            .field("algorithm", &self.algorithm)
            .field("sub", &self.claims().sub)
            .field("exp", &self.claims().exp)
            .finish_non_exhaustive()
    }
}

impl VerifiedToken {
    fn new(payload: &str, version: &KeyVersion, issuer: &str, algorithm: Algorithm) -> Self {
        let kid = version.kid.as_str();
        let mut text = String::with_capacity(payload.len() + kid.len() + issuer.len());
        text.push_str(payload);
        text.push_str(kid);
        text.push_str(issuer);
        VerifiedToken {
            text: text.into_boxed_str(),
            payload_end: payload.len(),
            kid_end: payload.len() + kid.len(),
            algorithm,
            key: version.verifying_key().fingerprint(),
            claims: OnceLock::new(),
        }
    }

    /// The issuer that vouched for the token.
    pub fn issuer(&self) -> &str {
        self.text.get(self.kid_end..).unwrap_or_default()
    }

    /// The kid of the version that verified it.
    pub fn kid(&self) -> &str {
        self.text
            .get(self.payload_end..self.kid_end)
            .unwrap_or_default()
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The fingerprint of the public key that verified it.
    pub fn key_fingerprint(&self) -> KeyFingerprint {
        self.key
    }

    /// The registered claims.
    pub fn claims(&self) -> &RegisteredClaims {
        self.claims.get_or_init(|| {
            // The payload parsed when it was verified, so this cannot fail.
            parse_claims_text(self.payload_str())
                .map(BorrowedClaims::into_owned)
                .unwrap_or_default()
        })
    }

    /// The whole payload as JSON bytes, to deserialize into any claims type.
    pub fn payload(&self) -> &[u8] {
        self.payload_str().as_bytes()
    }

    fn payload_str(&self) -> &str {
        self.text.get(..self.payload_end).unwrap_or_default()
    }

    /// Deserializes the payload into `T`.
    pub fn deserialize<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.payload_str())
    }
}

/// Verifies tokens for a set of issuers, choosing the issuer by the token's unverified `iss`.
///
/// The largest token a [`Verifier`] (and the tower `ValidateLayer`, and `keyroll verify`)
/// accepts unless told otherwise: 8 KiB, well above real tokens (Entra ID's with many groups
/// stay under 4 KiB) and below what a header may carry.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// Every check that needs no signature (size, structure, algorithm, issuer, type, times,
/// audience, required claims, key lookup) runs first, so a token failing one of them costs no
/// signature verification; `jku`, `x5u` and `jwk` headers are never read.
#[derive(Clone, Debug)]
pub struct Verifier {
    /// Sorted by `iss`, one per `iss`: a binary search finds a token's issuer without hashing.
    issuers: Box<[Arc<Issuer>]>,
    max_token_len: usize,
    headers: Arc<HeaderCache>,
}

impl Verifier {
    /// A verifier for these issuers (a later issuer with the same `iss` replaces an earlier one).
    pub fn new(issuers: impl IntoIterator<Item = Issuer>) -> Self {
        let mut issuers: Vec<Arc<Issuer>> = issuers.into_iter().map(Arc::new).collect();
        // Reversed, then a stable sort: of several issuers with one `iss`, the one given last
        // comes first and is the one `dedup_by` keeps.
        issuers.reverse();
        issuers.sort_by(|a, b| a.name.cmp(&b.name));
        issuers.dedup_by(|later, kept| later.name == kept.name);
        Verifier {
            issuers: issuers.into(),
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            headers: Arc::default(),
        }
    }

    /// Sets the largest token accepted, in bytes (default [`DEFAULT_MAX_TOKEN_LEN`], 8 KiB).
    pub fn max_token_len(mut self, max: usize) -> Self {
        self.max_token_len = max;
        self
    }

    /// The largest token accepted.
    pub fn token_len_limit(&self) -> usize {
        self.max_token_len
    }

    /// The configured issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.issuers.iter()
    }

    /// The issuer configured for `iss`.
    pub fn issuer(&self, iss: &str) -> Option<&Arc<Issuer>> {
        self.issuers
            .binary_search_by(|issuer| (*issuer.name).cmp(iss))
            .ok()
            .map(|at| &self.issuers[at])
    }

    /// Verifies a compact JWS.
    ///
    /// The token may be given as text or as bytes (a header value's bytes, say): bytes need no
    /// UTF-8 check, as decoding checks each one.
    pub async fn verify<T: AsRef<[u8]> + ?Sized>(
        &self,
        token: &T,
    ) -> Result<VerifiedToken, VerifyError> {
        let token = token.as_ref();
        match self.attempt(token, None)? {
            Attempt::Verified(verified) => Ok(verified),
            Attempt::NeedsKeys { issuer, key } => {
                // Cold cache or unknown kid: the cache's coalesced, cooled-down (re)load, then
                // the same checks once more against what it found.
                let key_ref = match &key {
                    OwnedKeyRef::Kid(kid) => KeyRef::Kid(kid),
                    OwnedKeyRef::X5t(x5t) => KeyRef::X5t(x5t),
                };
                let found = issuer
                    .keys
                    .find(key_ref)
                    .await
                    .map_err(VerifyError::KeysUnavailable)?;
                if matches!(found, KeyLookup::Unknown) {
                    return Err(InvalidToken::new(InvalidReason::UnknownKey).into());
                }
                match self.attempt(token, Some(found))? {
                    Attempt::Verified(verified) => Ok(verified),
                    Attempt::NeedsKeys { .. } => {
                        Err(InvalidToken::new(InvalidReason::UnknownKey).into())
                    }
                }
            }
        }
    }

    /// Verifies without waiting, when the issuer's keys are loaded and know the token's key:
    /// `None` means the key cache must load or refresh first (then use
    /// [`verify`](Self::verify)). Middleware uses it to skip a boxed future on the hot path.
    pub fn verify_now<T: AsRef<[u8]> + ?Sized>(
        &self,
        token: &T,
    ) -> Option<Result<VerifiedToken, VerifyError>> {
        let token = token.as_ref();
        match self.attempt(token, None) {
            Ok(Attempt::Verified(verified)) => Some(Ok(verified)),
            Ok(Attempt::NeedsKeys { .. }) => None,
            Err(error) => Some(Err(error)),
        }
    }

    /// Every check, synchronously. The decode buffers live on this frame only (not in the
    /// `verify` future), and a token whose key is in the current set is verified without
    /// any await. `found` is a lookup the caller already made (after a refresh).
    fn attempt(&self, token: &[u8], found: Option<KeyLookup>) -> Result<Attempt, VerifyError> {
        // Header and payload are decoded onto the stack and parsed without copying: a token
        // refused by a cheap check allocates nothing it does not need.
        let segments = split(token, self.max_token_len)?;
        let known_headers = self.headers.entries();
        let mut header_buffer;
        let header_json;
        let (header, header_known) = match known_headers.iter().find(|e| e.is(segments.header)) {
            Some(entry) => (entry.header(), true),
            None => {
                header_buffer = buffer::<512>();
                header_json = decode_into(segments.header, &mut header_buffer)?;
                (parse_header(&header_json)?, false)
            }
        };
        segments.require_signature()?;
        let mut payload_buffer = buffer::<2048>();
        let payload = decode_into(segments.payload, &mut payload_buffer)?;
        let payload_text = payload_text(&payload)?;
        let claims = parse_claims_text(payload_text)?;

        let issuer = claims
            .iss
            .as_deref()
            .and_then(|iss| self.issuer(iss))
            .ok_or(InvalidToken::new(InvalidReason::UntrustedIssuer))?;
        // One clock read serves every check of this token.
        let now = issuer.keys.now();
        check_claims(
            &header,
            &claims,
            payload_text,
            &issuer.validation,
            unix_seconds(now),
        )?;

        // Real key ids are short; a long one is refused before it can reach (and bloat) the
        // cache's negative entries.
        const MAX_KEY_ID_LEN: usize = 256;
        let key_ref = match (&header.kid, &header.x5t) {
            (Some(kid), _) if kid.len() <= MAX_KEY_ID_LEN => KeyRef::Kid(kid),
            (None, Some(x5t)) if x5t.len() <= MAX_KEY_ID_LEN => KeyRef::X5t(x5t),
            (None, None) => return Err(InvalidToken::new(InvalidReason::NoKeyId).into()),
            _ => return Err(InvalidToken::new(InvalidReason::UnknownKey).into()),
        };
        // The signature check, with the version the lookup lends (no reference count written).
        let finish = |version: &KeyVersion| {
            // 1 KiB holds an RSA-8192 signature; anything longer cannot verify and is decoded
            // onto the heap only to be refused.
            let mut signature_buffer = buffer::<1024>();
            let signature = decode_into(segments.signature, &mut signature_buffer)?;
            version
                .verifying_key()
                .verify(header.algorithm, segments.signing_input, &signature)
                .map_err(|e| {
                    InvalidToken::new(match e {
                        SignatureError::AlgorithmMismatch => InvalidReason::AlgorithmKeyMismatch,
                        _ => InvalidReason::BadSignature,
                    })
                })?;
            if !header_known {
                self.headers.remember(segments.header, &header);
            }
            Ok(VerifiedToken::new(
                payload_text,
                version,
                &issuer.name,
                header.algorithm,
            ))
        };
        let settle = |found: Found<'_>| match found {
            Found::Valid(version) if version.allows(header.algorithm) => Some(finish(version)),
            // Another key may share the id (RFC 7517 allows it): the one of the token's type.
            Found::Valid(_) => Some(
                match issuer
                    .keys
                    .lookup_for_algorithm_at(key_ref, header.algorithm, now)
                {
                    Some(KeyLookup::Valid(version)) => finish(&version),
                    Some(KeyLookup::NotValid(_)) => {
                        Err(InvalidToken::new(InvalidReason::KeyNotValid).into())
                    }
                    _ => Err(InvalidToken::new(InvalidReason::AlgorithmKeyMismatch).into()),
                },
            ),
            Found::NotValid => Some(Err(InvalidToken::new(InvalidReason::KeyNotValid).into())),
            Found::Unknown => None,
        };
        let settled = match &found {
            Some(found) => settle(found.lent()),
            None => match issuer
                .keys
                .lookup_lent_at(key_ref, now, settle)
                .map_err(VerifyError::KeysUnavailable)?
            {
                Some(settled) => settled,
                // The set must load first (cold, stale, or its refresh is overdue).
                None => return Ok(self.needs_keys(issuer, key_ref)),
            },
        };
        match settled {
            Some(verified) => verified.map(Attempt::Verified),
            // Unknown after a refresh, or a miss the negative cache or the cooldown settles.
            None if found.is_some() || issuer.keys.miss_is_settled_at(key_ref, now) => {
                Err(InvalidToken::new(InvalidReason::UnknownKey).into())
            }
            None => Ok(self.needs_keys(issuer, key_ref)),
        }
    }

    fn needs_keys(&self, issuer: &Arc<Issuer>, key_ref: KeyRef<'_>) -> Attempt {
        let key = match key_ref {
            KeyRef::Kid(kid) => OwnedKeyRef::Kid(kid.to_owned()),
            KeyRef::X5t(x5t) => OwnedKeyRef::X5t(x5t.to_owned()),
        };
        Attempt::NeedsKeys {
            issuer: Arc::clone(issuer),
            key,
        }
    }
}

/// The outcome of the synchronous checks.
// Returned once per call and never stored: boxing the large variant would cost an allocation
// on the hot path.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    Verified(VerifiedToken),
    /// Every check so far passed, but the key must be (re)loaded first.
    NeedsKeys {
        issuer: Arc<Issuer>,
        key: OwnedKeyRef,
    },
}

enum OwnedKeyRef {
    Kid(String),
    X5t(String),
}

fn check_claims(
    header: &Header<'_>,
    claims: &BorrowedClaims<'_>,
    payload: &str,
    rules: &Validation,
    now: u64,
) -> Result<(), InvalidToken> {
    let fail = |reason| Err(InvalidToken::new(reason));
    if !rules.algorithms.contains(&header.algorithm) {
        return fail(InvalidReason::AlgorithmNotAllowed);
    }
    if let Some(expected) = &rules.typ {
        fn media_type(typ: &str) -> &str {
            typ.strip_prefix("application/").unwrap_or(typ)
        }
        let matches = |typ: &str| media_type(typ).eq_ignore_ascii_case(media_type(expected));
        if !header.typ.as_deref().is_some_and(matches) {
            return fail(InvalidReason::WrongType);
        }
    }
    let leeway = rules.leeway.as_secs();
    for required in &rules.required_claims {
        let present = match required.as_str() {
            "exp" => claims.exp.is_some(),
            "nbf" => claims.nbf.is_some(),
            "iat" => claims.iat.is_some(),
            "sub" => claims.sub.is_some(),
            "aud" => claims.aud.is_some(),
            "jti" => claims.jti.is_some(),
            "iss" => claims.iss.is_some(),
            other => super::json::has_member(payload, other),
        };
        if !present {
            return fail(InvalidReason::MissingClaim);
        }
    }
    if rules.is_expired(claims.exp, now) {
        return fail(InvalidReason::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(leeway))
    {
        return fail(InvalidReason::NotYetValid);
    }
    if claims
        .iat
        .is_some_and(|iat| iat > now.saturating_add(leeway))
    {
        return fail(InvalidReason::IssuedInFuture);
    }
    if rules.max_age.is_some() && claims.iat.is_none() {
        return fail(InvalidReason::MissingClaim);
    }
    if rules.is_too_old(claims.iat, now) {
        return fail(InvalidReason::TooOld);
    }
    if !rules.any_audience
        && !claims
            .aud
            .as_ref()
            .is_some_and(|aud| aud.matches_any(&rules.audiences))
    {
        return fail(InvalidReason::WrongAudience);
    }
    Ok(())
}
