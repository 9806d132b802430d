//! Inbound validation: [`ValidateLayer`] checks the JWT bearer token of every request against
//! the key caches of the issuers it trusts, and refuses what fails with an RFC 6750 response.
//!
//! - **Token**: `Authorization: Bearer <token>` (scheme case-insensitive); optionally another
//!   header ([`token_header`](ValidateLayerBuilder::token_header)) or a cookie
//!   ([`token_cookie`](ValidateLayerBuilder::token_cookie)). Credentials larger than
//!   [`max_token_len`](ValidateLayerBuilder::max_token_len) (8 KiB by default) are refused
//!   before any parsing; several `Authorization` headers are refused (400 `invalid_request`).
//! - **Checks** (in `keyroll_core::jwt::Verifier`): the issuer is chosen by the token's
//!   unverified `iss` (an unknown one is refused without touching any cache); every check that
//!   needs no signature (structure, algorithm allow-list, `crit`, `typ`, times with leeway,
//!   audience, required claims, maximum age, key lookup by kid or `x5t`) runs before the
//!   signature; an unknown kid triggers the key cache's coalesced, cooled-down refresh and the
//!   request is checked once more against the new set. `jku`, `x5u` and `jwk` headers are
//!   never read.
//! - **Result**: [`VerifiedClaims`] in the request extensions; handlers take it, or
//!   [`Claims<T>`] (typed) or [`RawClaims`] (a JSON object), as axum extractors.
//! - **Refusals**: a JSON body `{"error","error_description"}` that never echoes the token, and
//!   - no token: 401, `WWW-Authenticate: Bearer realm="…"`;
//!   - invalid token (malformed, expired, bad signature, wrong issuer or audience, …): 401,
//!     `Bearer realm="…", error="invalid_token", error_description="…"`;
//!   - scope missing ([`RequireScopeLayer`], [`VerifiedClaims::require_scope`]): 403,
//!     `error="insufficient_scope", scope="…"`;
//!   - keys unavailable (never loaded, or stale past `max_stale`): 503 with `Retry-After`.
//! - **Verified-token cache**, optional ([`ValidateLayerBuilder::token_cache`]): keyed by the
//!   whole token, an entry lives until the token's `exp` (at most [`TokenCacheConfig::max_ttl`]);
//!   `exp` is checked again on every hit, and an entry is not served once its key version has
//!   left the issuer's set or the set went stale.
//! - **Observability**: a `keyroll.validate` debug span per request with `outcome`, `reason`
//!   and `issuer`; counters in [`ValidateLayer::metrics`].
//!
//! The layer works with any service whose response body yields `Bytes` (axum, hyper, tonic):
//! responses carry a [`ValidateBody`], which is the inner body or the refusal's JSON.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response, StatusCode, header::AUTHORIZATION};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
//! use keyroll_core::jwt::{Issuer, TokenTemplate, Validation};
//! use keyroll_tower::validate::{ValidateLayer, VerifiedClaims};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap()).build();
//! let layer = ValidateLayer::builder()
//!     .issuer(Issuer::new(keys.clone(), Validation::new("https://orders", ["https://billing"])))
//!     .realm("billing")
//!     .build();
//! let service = ServiceBuilder::new().layer(layer).service_fn(|request: Request<()>| async move {
//!     let claims = request.extensions().get::<VerifiedClaims>().unwrap();
//!     let body = format!("hello {}", claims.registered().sub.as_deref().unwrap_or("?"));
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
//! });
//!
//! // No token: 401 with a bare challenge.
//! let response = service.clone().oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"billing\"");
//!
//! // A token the orders service minted with the same key cache: let through.
//! let token = TokenTemplate::new("https://orders").mint(&keys, "https://billing").await.unwrap().token;
//! let request = Request::builder().header(AUTHORIZATION, format!("Bearer {token}")).body(()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! # });
//! ```

#[cfg(feature = "axum")]
mod axum;
mod body;
mod cache;
mod extract;
mod future;
mod layer;
mod metrics;
mod response;
mod scope;
mod service;
mod thread_slot;
mod token;

pub use self::body::ValidateBody;
pub use self::cache::TokenCacheConfig;
pub use self::extract::{
    Claims, ClaimsRejection, ClaimsRejectionReason, RawClaims, VerifiedClaims,
};
pub use self::future::ResponseFuture;
pub use self::layer::{ValidateLayer, ValidateLayerBuilder};
pub use self::metrics::ValidateMetrics;
pub use self::scope::{RequireScope, RequireScopeLayer, ScopeFuture};
pub use self::service::Validate;

pub(crate) use self::layer::DEFAULT_REALM;
