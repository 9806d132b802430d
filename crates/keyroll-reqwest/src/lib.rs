//! keyroll-reqwest: keyroll's outbound side as [reqwest-middleware](reqwest_middleware).
//! [`IssueMiddleware`] attaches `Authorization: Bearer <token>` (marked sensitive) to every
//! request a [`ClientWithMiddleware`](reqwest_middleware::ClientWithMiddleware) sends, with a
//! token for the request's audience from a [`TokenCache`] over any [`TokenSource`]: the same
//! cache, audience policy and `401` handling as keyroll-tower's `IssueLayer`.
//!
//! ```
//! use keyroll_reqwest::{AudiencePolicy, IssueErrorKind, IssueMiddleware, StaticToken, issue_error};
//! use reqwest_middleware::ClientBuilder;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // A server that answers with the method and the Authorization header it got.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let origin = format!("http://{}", listener.local_addr().unwrap());
//! let echo = |method: http::Method, headers: http::HeaderMap| async move {
//!     format!("{method} {}", headers["authorization"].to_str().unwrap())
//! };
//! let app = axum::Router::new().route("/orders", axum::routing::post(echo));
//! tokio::spawn(async move { axum::serve(listener, app).await });
//!
//! let issue = IssueMiddleware::new(StaticToken::new("t0k3n"))
//!     .audience(AudiencePolicy::origin().allow(&origin));
//! let client = ClientBuilder::new(reqwest::Client::new()).with(issue).build();
//! let answer = client.post(format!("{origin}/orders")).body("{}").send().await.unwrap();
//! assert_eq!(answer.text().await.unwrap(), "POST Bearer t0k3n");
//!
//! // A host that is not in the audience table gets no token: the request is not sent.
//! let error = client.get("http://elsewhere.invalid/").send().await.unwrap_err();
//! assert_eq!(issue_error(&error).unwrap().kind(), IssueErrorKind::NoAudience);
//! # });
//! ```
//!
//! - [`IssueMiddleware`]: the middleware; its errors are
//!   [`reqwest_middleware::Error::Middleware`] holding an [`IssueError`] (find it with
//!   [`issue_error`]): no audience for the request, or no token (the source's [`TokenError`]
//!   and retry-after kept). The request is then not sent.
//! - [`TokenSource`]: where tokens come from ([`SelfSigned`], [`StaticToken`], [`from_fn`],
//!   keyroll-azure's Entra ID sources); [`TokenCache`]: per-audience cache with refresh-ahead,
//!   single flight and backoff; [`AudiencePolicy`]: each request's audience (its URL's origin
//!   by default, for the origins in the table only). Re-exported from keyroll-core's
//!   [`token`](keyroll_core::token) module.
//!
//! A downstream `401` drops the token the request carried, so the next request gets a new one,
//! once that token is [`TokenCacheConfig::min_age_to_invalidate`] old (30 s by default).
//! reqwest removes the `Authorization` header itself when it follows a redirect to another
//! origin (host, port or scheme), so a token never follows a redirect away from its audience.

mod middleware;
mod outgoing;

pub use keyroll_core::token::{
    AudiencePolicy, CachedToken, FnSource, IssueError, IssueErrorKind, OutboundTokens, RequestHead,
    SelfSigned, StaticToken, Token, TokenCache, TokenCacheBuilder, TokenCacheConfig,
    TokenCacheMetrics, TokenError, TokenSource, TokenUnavailable, from_fn,
};
/// The reqwest-middleware this crate is built on, for matching versions.
pub use reqwest_middleware;

pub use self::middleware::{IssueMiddleware, issue_error};
