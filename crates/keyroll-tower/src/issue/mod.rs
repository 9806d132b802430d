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
//!   [`token`](keyroll_core::token) module, as are the next three: sources know no middleware,
//!   and keyroll-reqwest shares the audience policy and the error.
//! - [`TokenCache`]: per-audience cache with refresh-ahead, single flight and backoff (its
//!   docs describe coalescing, cancellation, panics and runtimes).
//! - [`AudiencePolicy`]: the audience of each request (by default its URI's origin, for the
//!   origins listed in its table only; any origin on opt-in; fixed; or a function), mapped
//!   through a table.
//!
//! A downstream `401` (or gRPC `UNAUTHENTICATED`, answered trailers-only) drops the token the
//! request carried, so the next call gets a new one, once that token is
//! [`TokenCacheConfig::min_age_to_invalidate`] old (30 s by default): a peer that refuses every
//! token costs one new token per audience per that period, not one per request.
//!
//! # gRPC (tonic)
//!
//! `IssueLayer` works around a tonic `Channel`, but a channel's requests carry path-only URIs
//! (`/billing.Invoices/List`: the channel adds its endpoint's scheme and authority below any
//! layer around it), so an origin policy finds no origin in them and every call fails with
//! [`IssueErrorKind::NoAudience`], unsent. Bind the policy to the channel's endpoint with
//! [`AudiencePolicy::for_endpoint`]: the audience is then the endpoint's, chosen once, and an
//! endpoint that is not in the table is refused when the client is built. (A generated
//! client's `with_origin` would make the URIs absolute too, but the channel sends to its own
//! endpoint whatever they say: the endpoint is what the token must be for.)
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use keyroll_tower::issue::{AudiencePolicy, IssueLayer, StaticToken};
//! use tonic::transport::Endpoint;
//!
//! let endpoint = Endpoint::from_static("http://billing.internal:50051");
//! let channel = endpoint.connect().await?;
//! let policy = AudiencePolicy::origin()
//!     .map("http://billing.internal:50051", "api://billing")
//!     .for_endpoint(endpoint.uri())?;
//! let channel = tower::ServiceBuilder::new()
//!     .layer(IssueLayer::new(StaticToken::new("t")).audience(policy))
//!     .service(channel);
//! let grpc = tonic::client::Grpc::new(channel); // or a generated client's `new(channel)`
//! # let _ = grpc; Ok(()) }
//! ```

mod future;
mod layer;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::IssueLayer;
pub use self::service::Issue;
pub use keyroll_core::token::{
    AudiencePolicy, CachedToken, FnSource, IssueError, IssueErrorKind, OutboundTokens, RequestHead,
    SelfSigned, StaticToken, Token, TokenCache, TokenCacheBuilder, TokenCacheConfig,
    TokenCacheMetrics, TokenError, TokenSource, TokenUnavailable, from_fn,
};
