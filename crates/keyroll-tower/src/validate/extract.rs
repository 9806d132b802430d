//! Verified claims in request extensions (the axum-core extractors over them are in
//! `axum.rs`, behind the `axum` feature).

use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use keyroll_core::Algorithm;
use keyroll_core::jwt::{RegisteredClaims, VerifiedToken};
use serde::de::DeserializeOwned;

use super::response::Failure;

/// A verified token, put in the request extensions by [`Validate`](super::Validate).
///
/// Cheap to clone (one `Arc`). Also an extractor: handlers can take it directly, or take
/// [`Claims<T>`] for typed claims or [`RawClaims`] for the JSON object.
#[derive(Clone)]
pub struct VerifiedClaims {
    inner: Inner,
}

/// The token owned by the request's claims, or shared by the claims the verified-token cache
/// hands out per thread slot (so that an entry holds its payload once however many threads
/// hit it).
#[derive(Clone)]
enum Inner {
    Owned(Arc<Held<VerifiedToken>>),
    Shared(Arc<Held<Arc<VerifiedToken>>>),
}

struct Held<T> {
    token: T,
    realm: Arc<str>,
}

impl fmt::Debug for VerifiedClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedClaims")
            .field("issuer", &self.issuer())
            .field("kid", &self.kid())
            .field("sub", &self.registered().sub)
            .finish_non_exhaustive()
    }
}

impl VerifiedClaims {
    pub(crate) fn new(token: VerifiedToken, realm: Arc<str>) -> Self {
        VerifiedClaims {
            inner: Inner::Owned(Arc::new(Held { token, realm })),
        }
    }

    /// Claims whose token their [`replica`](Self::replica)s share: what the verified-token
    /// cache keeps.
    pub(crate) fn shareable(token: VerifiedToken, realm: Arc<str>) -> Self {
        VerifiedClaims::sharing(Arc::new(token), realm)
    }

    fn sharing(token: Arc<VerifiedToken>, realm: Arc<str>) -> Self {
        VerifiedClaims {
            inner: Inner::Shared(Arc::new(Held { token, realm })),
        }
    }

    /// The same claims behind a reference count of their own: the verified-token cache keeps
    /// one per thread slot, so that hits on different threads clone different `Arc`s. The
    /// token of [`shareable`](Self::shareable) claims is shared, not copied.
    pub(crate) fn replica(&self) -> Self {
        let realm = Arc::clone(self.realm());
        match &self.inner {
            Inner::Owned(held) => VerifiedClaims::new(held.token.clone(), realm),
            Inner::Shared(held) => VerifiedClaims::sharing(Arc::clone(&held.token), realm),
        }
    }

    /// Whether `other` is a clone of these claims (one reference count), not a replica.
    #[cfg(test)]
    pub(crate) fn is_clone_of(&self, other: &VerifiedClaims) -> bool {
        match (&self.inner, &other.inner) {
            (Inner::Owned(a), Inner::Owned(b)) => Arc::ptr_eq(a, b),
            (Inner::Shared(a), Inner::Shared(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Whether `other` holds this very token (a replica of shareable claims does).
    #[cfg(test)]
    pub(crate) fn shares_token_with(&self, other: &VerifiedClaims) -> bool {
        std::ptr::eq(self.token(), other.token())
    }

    /// The token and the realm, wherever they are held.
    fn parts(&self) -> (&VerifiedToken, &Arc<str>) {
        match &self.inner {
            Inner::Owned(held) => (&held.token, &held.realm),
            Inner::Shared(held) => (&held.token, &held.realm),
        }
    }

    pub(crate) fn realm(&self) -> &Arc<str> {
        self.parts().1
    }

    /// The verified token.
    pub fn token(&self) -> &VerifiedToken {
        self.parts().0
    }

    /// The registered claims (`iss`, `sub`, `aud`, times, `jti`, scopes, roles).
    pub fn registered(&self) -> &RegisteredClaims {
        self.token().claims()
    }

    /// The issuer that vouched for the token.
    pub fn issuer(&self) -> &str {
        self.token().issuer()
    }

    /// The kid of the key version that verified it.
    pub fn kid(&self) -> &str {
        self.token().kid()
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.token().algorithm()
    }

    /// The payload: the claims as JSON bytes.
    pub fn payload(&self) -> &[u8] {
        self.token().payload()
    }

    /// The claims as `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ClaimsRejection> {
        serde_json::from_slice(self.payload()).map_err(|error| ClaimsRejection {
            reason: ClaimsRejectionReason::InvalidClaims,
            realm: Some(Arc::clone(self.realm())),
            scope: None,
            source: Some(error),
        })
    }

    /// The claims as a JSON object, with every number as the token wrote it: floats parsed
    /// correctly rounded; an integer beyond 64 bits, which a `serde_json::Value` would round,
    /// is refused (401) unless the `exact-numbers` feature keeps it exact
    /// (`serde_json/arbitrary_precision`). [`deserialize`](Self::deserialize) into a type with
    /// an `u128` (or a string type) field takes such a claim as it is.
    pub fn raw(&self) -> Result<serde_json::Map<String, serde_json::Value>, ClaimsRejection> {
        #[cfg(not(feature = "exact-numbers"))]
        if let Some(name) = wide_integer_claim(self.payload()) {
            return Err(ClaimsRejection {
                reason: ClaimsRejectionReason::InvalidClaims,
                realm: Some(Arc::clone(self.realm())),
                scope: None,
                source: Some(<serde_json::Error as serde::de::Error>::custom(format!(
                    "claim `{name}` holds an integer beyond 64 bits, which a JSON value would round: deserialize the claims into a type of your own, or enable keyroll-tower's `exact-numbers` feature"
                ))),
            });
        }
        self.deserialize()
    }

    /// Whether the token grants `scope` (in `scope`/`scp`) or has it as a role (`roles`).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.registered().has_scope(scope)
    }

    /// `Ok` if the token grants `scope`, otherwise a 403 `insufficient_scope` rejection.
    pub fn require_scope(&self, scope: &str) -> Result<(), ClaimsRejection> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ClaimsRejection::insufficient_scope(
                Some(Arc::clone(self.realm())),
                scope.to_owned(),
            ))
        }
    }

    /// The verified claims [`Validate`](super::Validate) put in a request's extensions.
    pub fn from_parts(parts: &Parts) -> Option<Self> {
        parts.extensions.get::<VerifiedClaims>().cloned()
    }
}

/// Why claims could not be extracted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimsRejectionReason {
    /// No verified token in the request: the route is not behind a
    /// [`ValidateLayer`](super::ValidateLayer) (a server configuration error: 500).
    MissingValidateLayer,
    /// The claims do not deserialize into the requested type (401 `invalid_token`).
    InvalidClaims,
    /// A required scope is missing (403 `insufficient_scope`).
    InsufficientScope,
}

/// The rejection of [`VerifiedClaims`], [`Claims<T>`] and [`RawClaims`], and of scope checks,
/// in the axum-core style: it becomes an RFC 6750 response and never echoes the token.
#[derive(Debug)]
pub struct ClaimsRejection {
    reason: ClaimsRejectionReason,
    realm: Option<Arc<str>>,
    scope: Option<String>,
    source: Option<serde_json::Error>,
}

impl ClaimsRejection {
    pub(crate) fn insufficient_scope(realm: Option<Arc<str>>, scope: String) -> Self {
        ClaimsRejection {
            reason: ClaimsRejectionReason::InsufficientScope,
            realm,
            scope: Some(scope),
            source: None,
        }
    }

    #[cfg(feature = "axum")]
    pub(super) fn missing() -> Self {
        ClaimsRejection {
            reason: ClaimsRejectionReason::MissingValidateLayer,
            realm: None,
            scope: None,
            source: None,
        }
    }

    /// Why.
    pub fn reason(&self) -> ClaimsRejectionReason {
        self.reason
    }

    /// The response status.
    pub fn status(&self) -> http::StatusCode {
        self.failure().status()
    }

    /// A fixed description (also sent as `error_description`).
    pub fn body_text(&self) -> &'static str {
        self.failure().description()
    }

    /// The RFC 6750 response: status, `WWW-Authenticate` and a JSON body (what the axum
    /// extractors answer).
    pub fn to_response(&self) -> http::Response<bytes::Bytes> {
        if self.reason == ClaimsRejectionReason::MissingValidateLayer {
            tracing::error!("claims were asked for on a route without ValidateLayer");
        }
        let realm = self.realm.as_deref().unwrap_or(super::DEFAULT_REALM);
        self.failure().to_response(realm)
    }

    fn failure(&self) -> Failure {
        match self.reason {
            ClaimsRejectionReason::MissingValidateLayer => Failure::Misconfigured,
            ClaimsRejectionReason::InvalidClaims => Failure::InvalidClaims,
            ClaimsRejectionReason::InsufficientScope => {
                Failure::InsufficientScope(self.scope.clone().unwrap_or_default())
            }
        }
    }
}

impl fmt::Display for ClaimsRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.body_text())
    }
}

impl std::error::Error for ClaimsRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Typed claims: the verified token's payload deserialized into `T`.
///
/// ```
/// use keyroll_tower::validate::Claims;
///
/// #[derive(serde::Deserialize)]
/// struct Caller { sub: String, tenant: String }
///
/// async fn handler(Claims(caller): Claims<Caller>) -> String {
///     format!("{} from {}", caller.sub, caller.tenant)
/// }
/// # let _ = handler;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims<T>(pub T);

/// The verified claims as a JSON object.
#[derive(Clone, Debug, PartialEq)]
pub struct RawClaims(pub serde_json::Map<String, serde_json::Value>);

/// The first top-level claim whose value holds (at any depth) an integer literal outside
/// the 64-bit range.
#[cfg(not(feature = "exact-numbers"))]
fn wide_integer_claim(payload: &[u8]) -> Option<String> {
    use serde_json::value::RawValue;
    fn wide(raw: &RawValue) -> bool {
        let text = raw.get().trim();
        match text.as_bytes().first() {
            Some(b'{') => {
                serde_json::from_str::<std::collections::HashMap<String, &RawValue>>(text)
                    .is_ok_and(|members| members.values().any(|v| wide(v)))
            }
            Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(text)
                .is_ok_and(|items| items.iter().any(|v| wide(v))),
            Some(b'-' | b'0'..=b'9') => {
                let integer = !text.contains(['.', 'e', 'E']);
                integer && text.parse::<i64>().is_err() && text.parse::<u64>().is_err()
            }
            _ => false,
        }
    }
    let claims: std::collections::BTreeMap<String, &RawValue> =
        serde_json::from_slice(payload).ok()?;
    claims
        .into_iter()
        .find(|(_, value)| wide(value))
        .map(|(name, _)| name)
}
