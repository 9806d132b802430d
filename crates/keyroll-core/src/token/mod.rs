//! Outbound tokens: where they come from ([`TokenSource`]: [`SelfSigned`], [`StaticToken`],
//! [`from_fn`], or Entra ID through keyroll-azure) and the per-audience [`TokenCache`] that
//! every outbound integration (keyroll-tower's `IssueLayer`, keyroll-reqwest's
//! `IssueMiddleware`, a plain caller) reads; the [`AudiencePolicy`] those middlewares choose
//! each request's audience with, [`OutboundTokens`] (the two together, indexed by origin) they
//! look tokens up with, and the [`IssueError`] they fail a call with when no token can be
//! attached.
//!
//! ```
//! use std::time::Duration;
//! use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
//! use keyroll_core::jwt::TokenTemplate;
//! use keyroll_core::token::{SelfSigned, TokenCache};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap()).build();
//! let template = TokenTemplate::new("https://orders.internal").lifetime(Duration::from_secs(600));
//! let tokens = TokenCache::new(SelfSigned::new(keys, template));
//! // One sign per audience per token lifetime: the second call is served from memory.
//! let first = tokens.get("api://billing").await.unwrap();
//! let second = tokens.get("api://billing").await.unwrap();
//! assert_eq!(first.header_value(), second.header_value());
//! assert_eq!(tokens.metrics().fetches, 1);
//! # });
//! ```

mod audience;
mod cache;
mod config;
mod issue_error;
mod outbound;
mod source;
mod sources;

pub use self::audience::{AudiencePolicy, OutboundRequest, RequestHead, SelectedAudience};

pub use self::cache::{
    CachedToken, TokenCache, TokenCacheBuilder, TokenCacheMetrics, TokenUnavailable,
};
pub use self::config::TokenCacheConfig;
pub use self::issue_error::{IssueError, IssueErrorKind};
pub use self::outbound::{Lookup, OutboundTokens};
pub use self::source::{Token, TokenError, TokenSource};
pub use self::sources::{FnSource, SelfSigned, StaticToken, from_fn};
