//! Readiness for load balancers: one [`Readiness`] handle over every cache a service uses
//! (each trusted issuer's key cache, the signing key cache, each token cache), and
//! [`ReadinessService`], which answers `GET /readyz` with its state.
//!
//! ```
//! use http::{Request, StatusCode, header};
//! use http_body_util::BodyExt as _;
//! use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
//! use keyroll_core::jwt::TokenTemplate;
//! use keyroll_tower::issue::{IssueLayer, SelfSigned};
//! use keyroll_tower::readiness::Readiness;
//! use tower::ServiceExt as _;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap()).build();
//! let issue = IssueLayer::new(SelfSigned::new(keys.clone(), TokenTemplate::new("https://orders")));
//! let readiness = Readiness::builder()
//!     .key_cache("signing keys", &keys)
//!     .token_cache("outbound tokens", issue.cache())
//!     .build();
//!
//! // At startup: until every key cache has loaded (bound it with a timeout).
//! assert!(readiness.wait_ready().await.is_ready());
//!
//! let response = readiness.service().oneshot(Request::get("/readyz").body(()).unwrap()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(body["state"], "ready");
//! assert_eq!(body["sources"][0]["name"], "signing keys");
//! assert_eq!(body["sources"][0]["versions"], 1);
//! # });
//! ```
//!
//! # States
//!
//! Each cache is [`Ready`](keyroll_core::CacheState::Ready), [`Degraded`](keyroll_core::CacheState::Degraded) (serving a
//! key set younger than `max_stale`, or unexpired tokens, while its source fails),
//! [`Loading`](keyroll_core::CacheState::Loading) (a key cache's first load is pending) or
//! [`Unavailable`](keyroll_core::CacheState::Unavailable) (no keys, keys past `max_stale`, or an audience
//! with no usable token whose fetch fails): see [`KeyCacheStatus`](keyroll_core::KeyCacheStatus)
//! and [`TokenCacheStatus`](keyroll_core::TokenCacheStatus). The whole is the worst of its
//! sources; an [advisory](ReadinessSource::advisory) source makes it degraded at worst.
//! Ready and degraded answer `200` (the service validates and issues: a load balancer keeps
//! it), loading and unavailable `503`.
//!
//! # A check never waits, and keeps the caches going
//!
//! [`Readiness::check`] (and so each probe) reads every cache's status without waiting for a
//! source, after starting what keeps it loaded: a key cache's background refresh (so a cache
//! no request used yet loads), a load of a key cache that has no set or one past `max_stale`,
//! a new fetch of a token cache's audiences that have no usable token. Each waits out its
//! cache's backoff, so probing often costs a source nothing more, and a replica that a load
//! balancer took out (no request reaches it) comes back as soon as its sources do.
//!
//! # The `/readyz` body
//!
//! ```json
//! {"state":"degraded","sources":[
//!   {"name":"https://orders.internal","kind":"keys","state":"degraded","required":true,
//!    "versions":2,"age_seconds":420,"unavailable_in_seconds":85980,"stale_for_seconds":120,
//!    "consecutive_failures":1,"last_error":"Key Vault orders: load keys failed: HTTP 503"},
//!   {"name":"outbound","kind":"tokens","state":"ready","required":true,"audiences":3,
//!    "degraded_audiences":0,"unavailable_audiences":0,"stale_for_seconds":null,
//!    "consecutive_failures":0,"last_error":null}]}
//! ```
//!
//! `age_seconds`: since the source last answered with the set; `stale_for_seconds`: since
//! the first failure after the last good load (`null` while loads work); `last_error`: the
//! last failure as its source words it (sources' errors never carry a secret or a token).

mod report;
mod service;
mod source;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use keyroll_core::KeyCache;
use keyroll_core::token::{TokenCache, TokenSource};

pub use self::report::{ReadinessReport, SourceReport, SourceStatus};
pub use self::service::{DEFAULT_READINESS_PATH, ReadinessService};
pub use self::source::ReadinessSource;
use crate::validate::ValidateLayer;

/// How often [`Readiness::wait_ready`] checks again while a source is not ready.
const WAIT_POLL: Duration = Duration::from_secs(1);

/// The readiness of every cache a service uses, each under a name; see the
/// [module docs](self). Cheap to clone: clones share the sources.
#[derive(Clone)]
pub struct Readiness {
    sources: Arc<[(Arc<str>, ReadinessSource)]>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.sources.iter().map(|(name, source)| (name, source)))
            .finish()
    }
}

impl Readiness {
    /// A builder.
    pub fn builder() -> ReadinessBuilder {
        ReadinessBuilder {
            sources: Vec::new(),
        }
    }

    /// Every source's status and the whole's state, after starting what keeps each cache
    /// loaded (see the [module docs](self#a-check-never-waits-and-keeps-the-caches-going)).
    /// Never waits; needs a runtime to start anything (outside one it only reads).
    pub fn check(&self) -> ReadinessReport {
        let sources = self
            .sources
            .iter()
            .map(|(name, source)| SourceReport {
                name: Arc::clone(name),
                required: source.is_required(),
                status: source.check(),
            })
            .collect();
        ReadinessReport::new(sources)
    }

    /// Whether the service can serve now ([`check`](Self::check) is ready or degraded).
    pub fn is_ready(&self) -> bool {
        self.check().is_ready()
    }

    /// Waits until the service can serve, and returns that report: each round waits for
    /// the key caches that do not serve yet (for their loads, coalesced with any that run;
    /// not at all while a failed load's backoff holds), then checks again, once a second.
    /// It waits as long as its sources fail: bound it with `tokio::time::timeout`.
    pub async fn wait_ready(&self) -> ReadinessReport {
        loop {
            let report = self.check();
            if report.is_ready() {
                return report;
            }
            for (_, source) in self.sources.iter() {
                if let Some(keys) = source.keys()
                    && !keys.is_ready()
                {
                    let _ = keys.keys().await;
                }
            }
            let report = self.check();
            if report.is_ready() {
                return report;
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// A [`ReadinessService`] over this handle, at [`DEFAULT_READINESS_PATH`].
    pub fn service(&self) -> ReadinessService {
        ReadinessService::new(self.clone())
    }
}

/// Builds a [`Readiness`]. Names should be unique: a report finds a source by its name.
#[derive(Debug)]
#[must_use]
pub struct ReadinessBuilder {
    sources: Vec<(Arc<str>, ReadinessSource)>,
}

impl ReadinessBuilder {
    /// Watches a key cache (required).
    pub fn key_cache(self, name: impl Into<String>, cache: &KeyCache) -> Self {
        self.source(name, ReadinessSource::key_cache(cache))
    }

    /// Watches a token cache (required).
    pub fn token_cache<T: TokenSource + 'static>(
        self,
        name: impl Into<String>,
        cache: &TokenCache<T>,
    ) -> Self {
        self.source(name, ReadinessSource::token_cache(cache))
    }

    /// Watches the key cache of every issuer `layer` trusts (required), each named by its
    /// issuer (`iss`).
    pub fn validator(mut self, layer: &ValidateLayer) -> Self {
        for issuer in layer.issuers() {
            self = self.key_cache(issuer.validation().issuer.clone(), issuer.keys());
        }
        self
    }

    /// Watches a source, required or advisory.
    pub fn source(mut self, name: impl Into<String>, source: ReadinessSource) -> Self {
        self.sources.push((name.into().into(), source));
        self
    }

    /// Builds the handle.
    pub fn build(self) -> Readiness {
        Readiness {
            sources: self.sources.into(),
        }
    }
}
