//! Outbound: attach `Authorization: Bearer <token>` to every request a client sends, with
//! tokens cached per audience and refreshed ahead of expiry.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response, header::AUTHORIZATION};
//! use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
//! use keyroll_core::jwt::{Issuer, TokenTemplate, Validation, Verifier};
//! use keyroll_tower::issue::{AudiencePolicy, IssueLayer, SelfSigned};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // Our keys (a vault in production), and tokens we sign with them.
//! let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap()).build();
//! let template = TokenTemplate::new("https://orders.internal").lifetime(Duration::from_secs(600));
//! let layer = IssueLayer::new(SelfSigned::new(keys.clone(), template))
//!     .audience(AudiencePolicy::origin().map("https://billing.internal", "api://billing"));
//!
//! // Any client service: here one that checks what it would send.
//! let verifier = Verifier::new([Issuer::new(
//!     keys.clone(),
//!     Validation::new("https://orders.internal", ["api://billing"]),
//! )]);
//! let client = ServiceBuilder::new().layer(layer).service(service_fn(move |request: Request<()>| {
//!     let verifier = verifier.clone();
//!     async move {
//!         let header = request.headers()[AUTHORIZATION].clone();
//!         assert!(header.is_sensitive());
//!         let token = header.to_str().unwrap().strip_prefix("Bearer ").unwrap();
//!         let verified = verifier.verify(token).await.unwrap();
//!         Ok::<_, Infallible>(Response::new(verified.claims().sub.clone().unwrap()))
//!     }
//! }));
//!
//! let request = Request::get("https://billing.internal/invoices").body(()).unwrap();
//! let response = client.oneshot(request).await.unwrap();
//! assert_eq!(response.into_body(), "https://orders.internal");
//! # });
//! ```
//!
//! - [`IssueLayer`] / [`Issue`] / [`ResponseFuture`]: the middleware, tower-http style. Its
//!   error is a [`BoxError`](keyroll_core::BoxError) that is either the inner service's error
//!   or an [`IssueError`] (no token: the request is not sent).
//! - [`TokenSource`]: where tokens come from; [`SelfSigned`] (JWTs signed with a key cache's
//!   active key), [`StaticToken`], [`from_fn`]. Re-exported from keyroll-core's
//!   [`token`](keyroll_core::token) module, as are the next two: sources know no middleware.
//! - [`TokenCache`]: per-audience cache with refresh-ahead, single flight and backoff (its
//!   docs describe coalescing, cancellation, panics and runtimes).
//! - [`AudiencePolicy`]: the audience of each request (by default its URI's origin, for the
//!   origins listed in its table only; any origin on opt-in; fixed; or a function), mapped
//!   through a table.
//!
//! A downstream `401` drops the token the request carried, so the next call gets a new one,
//! once that token is [`TokenCacheConfig::min_age_to_invalidate`] old (30 s by default): a peer
//! that refuses every token costs one new token per audience per that period, not one per
//! request.

mod audience;
mod error;
mod future;
mod layer;
mod service;

pub use keyroll_core::token::{
    CachedToken, FnSource, SelfSigned, StaticToken, Token, TokenCache, TokenCacheBuilder,
    TokenCacheConfig, TokenCacheMetrics, TokenError, TokenSource, TokenUnavailable, from_fn,
};

pub use self::audience::{AudiencePolicy, RequestHead};
pub use self::error::{IssueError, IssueErrorKind};
pub use self::future::ResponseFuture;
pub use self::layer::IssueLayer;
pub use self::service::Issue;
