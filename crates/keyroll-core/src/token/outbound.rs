//! The token for each outbound request: an [`AudiencePolicy`] over a [`TokenCache`], with an
//! index from each request's origin to its audience's place in the cache, shared by clones.
//! What every outbound middleware (keyroll-tower's `IssueLayer`, keyroll-reqwest's
//! `IssueMiddleware`) looks tokens up with.
//!
//! ```
//! use http::Request;
//! use keyroll_core::token::{AudiencePolicy, Lookup, OutboundTokens, StaticToken, TokenCache};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let tokens = OutboundTokens::new(
//!     TokenCache::new(StaticToken::new("t")),
//!     AudiencePolicy::origin().map("https://billing.internal", "api://billing"),
//! );
//! let request = Request::get("https://billing.internal/invoices").body(()).unwrap();
//! // Cold: the audience to fetch a token for.
//! let Lookup::Fetch(audience) = tokens.lookup(&request) else { panic!("nothing is cached yet") };
//! assert_eq!(&*audience, "api://billing");
//! tokens.cache().fetch(audience).await.unwrap();
//! // Warm: the cached token, found by the request's origin.
//! assert!(matches!(tokens.lookup(&request), Lookup::Cached(_)));
//! // Origins not in the policy's table get no token.
//! let elsewhere = Request::get("https://evil.example/").body(()).unwrap();
//! assert!(matches!(tokens.lookup(&elsewhere), Lookup::NoAudience));
//! # });
//! ```

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hashbrown::{DefaultHashBuilder, Equivalent, HashMap};

use super::audience::{AudiencePolicy, OutboundRequest};
use super::cache::{CachedToken, TokenCache, TokenSlot};
use super::source::TokenSource;
use crate::lock;

/// The tokens for outbound requests: a [`TokenCache`] and the [`AudiencePolicy`] that chooses
/// each request's audience. Cheap to clone: clones share the cache and the index.
///
/// # The index
///
/// Under the origin policies and a fixed audience, the audience a request gets depends only on
/// its URL's scheme and authority, so the first request to each origin (as its URL spells it)
/// runs the policy once and remembers where that audience's token lives in the cache, or that
/// the origin gets none. Every later request to it costs one lock-free read of the index, a
/// hash of the scheme and authority, and a read of the audience's current token: no
/// normalising, no allocation, at any number of audiences. The index is validated per
/// audience, not per cache change: a new token, a refresh or a `401` elsewhere in the cache
/// leaves every other route as it is; an audience the cache evicted is looked up again.
/// It holds at most twice the cache's [`max_audiences`](super::TokenCacheConfig::max_audiences)
/// origins (at least 64, at most 65,536), and starts over when full; origins the policy
/// refuses take at most a quarter of it (past that, each is refused by the policy again).
///
/// A function policy ([`AudiencePolicy::from_fn`]) runs its function for every request and
/// looks the audience up in the cache.
pub struct OutboundTokens<T = Arc<dyn TokenSource>> {
    cache: TokenCache<T>,
    policy: AudiencePolicy,
    routes: Arc<Routes>,
    /// This handle's own view of `routes`, for [`lookup_local`](Self::lookup_local).
    snapshot: Snapshot,
}

impl<T> Clone for OutboundTokens<T> {
    fn clone(&self) -> Self {
        OutboundTokens {
            cache: self.cache.clone(),
            policy: self.policy.clone(),
            routes: Arc::clone(&self.routes),
            snapshot: self.snapshot.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for OutboundTokens<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundTokens")
            .field("cache", &self.cache)
            .field("policy", &self.policy)
            .field("origins_indexed", &self.routes.map.load().len())
            .finish()
    }
}

/// What [`OutboundTokens::lookup`] found for a request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Lookup {
    /// A usable cached token: attach it.
    Cached(Arc<CachedToken>),
    /// No usable token is cached for this audience: fetch one with
    /// [`TokenCache::fetch`] (single flight).
    Fetch(Arc<str>),
    /// The policy gives the request no token: do not send it.
    NoAudience,
}

/// The index: origin as written → route. Replaced whole when a route is added; read
/// lock-free.
struct Routes {
    map: ArcSwap<RouteMap>,
    /// Bumped after each store of `map`: a snapshot taken at an unchanged version is current.
    version: AtomicU64,
    /// Serialises the writers of `map`, and counts its refused origins.
    writer: Mutex<Refusals>,
    /// The most routes kept.
    capacity: usize,
}

/// How many routes of the current index are [`Route::Refused`].
type Refusals = usize;

/// The index as one handle last read it.
#[derive(Clone)]
struct Snapshot {
    version: u64,
    map: Arc<RouteMap>,
}

type RouteMap = HashMap<OriginKey, Route, DefaultHashBuilder>;

#[derive(Clone)]
enum Route {
    To {
        audience: Arc<str>,
        slot: Arc<TokenSlot>,
        /// The slot's token as of the slot's version: current while the version is.
        seen: Option<(u64, Arc<CachedToken>)>,
    },
    Refused,
}

/// A request's scheme and authority as its URL spells them: the index's lookup key.
#[derive(Clone, Copy)]
struct Written<'a> {
    scheme: &'a str,
    authority: &'a str,
}

impl Hash for Written<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.scheme, self.authority).hash(state);
    }
}

/// [`Written`], owned: the index's stored key, `scheme` + `authority` in one allocation (one
/// cache line to compare against).
#[derive(Clone, PartialEq, Eq)]
struct OriginKey {
    text: Arc<str>,
    scheme_len: usize,
}

impl OriginKey {
    fn new(written: Written<'_>) -> Self {
        OriginKey {
            text: format!("{}{}", written.scheme, written.authority).into(),
            scheme_len: written.scheme.len(),
        }
    }

    fn parts(&self) -> (&str, &str) {
        self.text.split_at(self.scheme_len)
    }
}

impl Hash for OriginKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl Equivalent<OriginKey> for Written<'_> {
    fn equivalent(&self, key: &OriginKey) -> bool {
        key.scheme_len == self.scheme.len() && key.parts() == (self.scheme, self.authority)
    }
}

/// The key of a fixed audience's one route (every request gets the same audience). Not
/// empty strings: with them a lookup measured four times slower, all of it in glibc's
/// `memcmp` comparing the two empty strings.
const FIXED: Written<'static> = Written {
    scheme: "fixed",
    authority: "*",
};

impl<T: TokenSource> OutboundTokens<T> {
    /// Tokens from `cache` for the audiences `policy` chooses.
    pub fn new(cache: TokenCache<T>, policy: AudiencePolicy) -> Self {
        let twice = cache.config().max_audiences.saturating_mul(2);
        let capacity = usize::try_from(twice)
            .unwrap_or(usize::MAX)
            .clamp(64, 65_536);
        let map = Arc::new(RouteMap::default());
        OutboundTokens {
            cache,
            policy,
            routes: Arc::new(Routes {
                map: ArcSwap::new(Arc::clone(&map)),
                version: AtomicU64::new(0),
                writer: Mutex::new(0),
                capacity,
            }),
            snapshot: Snapshot { version: 0, map },
        }
    }

    /// The token cache.
    pub fn cache(&self) -> &TokenCache<T> {
        &self.cache
    }

    /// The audience policy.
    pub fn policy(&self) -> &AudiencePolicy {
        &self.policy
    }

    /// The token for `request`: cached, to fetch (for which audience), or none. Never waits
    /// and never calls the source; asks for a background refresh when the token is due (see
    /// [`TokenCache::lookup`]).
    pub fn lookup<R: OutboundRequest + ?Sized>(&self, request: &R) -> Lookup {
        match self.key(request) {
            Some(written) => self.find(&self.routes.map.load(), request, written),
            None => self.lookup_by_audience(request),
        }
    }

    /// [`lookup`](Self::lookup) through this handle's own snapshot of the index, for a caller
    /// that owns its handle (a tower service: `call` takes `&mut self`): while the index is
    /// unchanged, a lookup reads nothing shared but one counter and the token. The snapshot
    /// keeps the index as this handle last saw it alive until its next lookup; clones start
    /// from their original's.
    pub fn lookup_local<R: OutboundRequest + ?Sized>(&mut self, request: &R) -> Lookup {
        let Some(written) = self.key(request) else {
            return self.lookup_by_audience(request);
        };
        let version = self.routes.version.load(Ordering::Acquire);
        if self.snapshot.version != version {
            self.snapshot = Snapshot {
                version,
                map: self.routes.map.load_full(),
            };
        }
        self.find(&self.snapshot.map, request, written)
    }

    /// The index key of `request`, `None` when the policy is not one of origins (or the
    /// request has none): then the policy decides, the cache looks up.
    fn key<'a, R: OutboundRequest + ?Sized>(&self, request: &'a R) -> Option<Written<'a>> {
        if self.policy.is_fixed() {
            return Some(FIXED);
        }
        if !self.policy.is_origin() {
            return None;
        }
        let (scheme, authority) = request.origin_as_written()?;
        Some(Written { scheme, authority })
    }

    fn find<R: OutboundRequest + ?Sized>(
        &self,
        map: &RouteMap,
        request: &R,
        written: Written<'_>,
    ) -> Lookup {
        match map.get(&written) {
            Some(Route::Refused) => Lookup::NoAudience,
            Some(Route::To {
                seen: Some((version, token)),
                slot,
                ..
            }) if slot.version() == *version && self.cache.admit(token) => {
                Lookup::Cached(Arc::clone(token))
            }
            Some(Route::To { audience, slot, .. }) if !slot.is_retired() => {
                self.follow(written, audience, slot)
            }
            // New, or its audience was evicted.
            _ => self.route(request, written),
        }
    }

    /// The token in `slot` (changed since the route saw it, or not admitted), the route
    /// updated to it.
    fn follow(&self, written: Written<'_>, audience: &Arc<str>, slot: &Arc<TokenSlot>) -> Lookup {
        let (route, token) = self.reach(audience, Arc::clone(slot));
        let Some(token) = token else {
            return Lookup::Fetch(Arc::clone(audience));
        };
        // An update may be skipped while another writer runs: the next request tries again.
        if let Ok(mut refusals) = self.routes.writer.try_lock() {
            self.routes.insert(&mut refusals, written, route);
        }
        Lookup::Cached(token)
    }

    /// The route to `slot` as it stands now, and its token if that may be attached now.
    fn reach(
        &self,
        audience: &Arc<str>,
        slot: Arc<TokenSlot>,
    ) -> (Route, Option<Arc<CachedToken>>) {
        let (version, token) = slot.versioned();
        let token = token.filter(|token| self.cache.admit(token));
        let route = Route::To {
            audience: Arc::clone(audience),
            slot,
            seen: token.as_ref().map(|token| (version, Arc::clone(token))),
        };
        (route, token)
    }

    fn lookup_by_audience<R: OutboundRequest + ?Sized>(&self, request: &R) -> Lookup {
        let Some(audience) = self.policy.select(request) else {
            return Lookup::NoAudience;
        };
        match self.cache.lookup(audience.as_str()) {
            Some(token) => Lookup::Cached(token),
            None => Lookup::Fetch(audience.into_arc()),
        }
    }

    /// The first request to an origin (or the first after its audience was evicted): the
    /// policy chooses, the route is remembered.
    fn route<R: OutboundRequest + ?Sized>(&self, request: &R, written: Written<'_>) -> Lookup {
        let Some(audience) = self.policy.select(request) else {
            self.remember(written, Route::Refused);
            return Lookup::NoAudience;
        };
        let audience = audience.into_arc();
        let (route, token) = self.reach(&audience, self.cache.slot_of(&audience));
        self.remember(written, route);
        match token {
            Some(token) => Lookup::Cached(token),
            None => Lookup::Fetch(audience),
        }
    }

    fn remember(&self, written: Written<'_>, route: Route) {
        let mut refusals = lock(&self.routes.writer);
        self.routes.insert(&mut refusals, written, route);
    }
}

impl Routes {
    /// Adds or replaces a route (`refusals` is the guard of `writer`, which the caller holds).
    /// Refused origins take at most a quarter of the index: origins nobody listed can come in
    /// any number (URLs from users), each new one copies the index, and refusing one again
    /// costs only the policy's lookup.
    fn insert(&self, refusals: &mut Refusals, written: Written<'_>, route: Route) {
        let current = self.map.load_full();
        let replaced = current.get(&written);
        let refused = |route: Option<&Route>| usize::from(matches!(route, Some(Route::Refused)));
        let new = refused(Some(&route));
        if new > refused(replaced) && *refusals >= self.capacity / 4 {
            return;
        }
        let mut map = if current.len() >= self.capacity && replaced.is_none() {
            *refusals = 0;
            RouteMap::default()
        } else {
            (*current).clone()
        };
        let old = refused(map.insert(OriginKey::new(written), route).as_ref());
        *refusals = *refusals + new - old;
        self.map.store(Arc::new(map));
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, SystemTime};

    use http::Request;

    use super::*;
    use crate::token::{Token, TokenCacheConfig, from_fn};

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    fn cache(max_audiences: u64) -> TokenCache {
        let source: Arc<dyn TokenSource> = Arc::new(from_fn(|audience: String| async move {
            Ok(Token::new(
                format!("t-{audience}"),
                SystemTime::now() + Duration::from_secs(3600),
            ))
        }));
        TokenCache::builder(source)
            .config(TokenCacheConfig::default().max_audiences(max_audiences))
            .build()
    }

    async fn warm<T: TokenSource>(tokens: &OutboundTokens<T>, request: &Request<()>) {
        match tokens.lookup(request) {
            Lookup::Fetch(audience) => drop(tokens.cache().fetch(audience).await.unwrap()),
            other => panic!("expected a fetch, got {other:?}"),
        }
    }

    fn cached<T: TokenSource>(tokens: &OutboundTokens<T>, request: &Request<()>) -> String {
        match tokens.lookup(request) {
            Lookup::Cached(token) => token.header_value().to_str().unwrap().to_owned(),
            other => panic!("expected a cached token, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn routes_by_origin_as_written_to_the_normalised_audience() {
        let policy = AudiencePolicy::origin().map("https://billing.internal", "api://billing");
        let tokens = OutboundTokens::new(cache(100), policy);
        warm(&tokens, &get("https://billing.internal/a")).await;
        // Other spellings of the same origin are routes of their own, to the same token.
        for uri in [
            "https://billing.internal/b?c",
            "https://BILLING.internal:443/",
            "https://user@billing.internal/",
        ] {
            assert_eq!(
                cached(&tokens, &get(uri)),
                "Bearer t-api://billing",
                "{uri}"
            );
        }
        assert_eq!(tokens.routes.map.load().len(), 3);
        assert_eq!(tokens.cache().metrics().fetches, 1);
        // Unlisted origins are refused, and remembered as refused.
        for _ in 0..2 {
            assert!(matches!(
                tokens.lookup(&get("https://billing.internal:8443/")),
                Lookup::NoAudience
            ));
        }
        assert_eq!(tokens.routes.map.load().len(), 4);
        // No origin at all: no token.
        assert!(matches!(
            tokens.lookup(&get("/relative")),
            Lookup::NoAudience
        ));
    }

    #[tokio::test]
    async fn clones_share_the_index_and_a_new_token_needs_no_new_route() {
        let tokens = OutboundTokens::new(cache(100), AudiencePolicy::any_origin());
        let clone = tokens.clone();
        let request = get("https://a.internal/");
        warm(&tokens, &request).await;
        assert_eq!(cached(&clone, &request), "Bearer t-https://a.internal");
        // Dropped from the cache: the route stays and leads to a fetch of the same audience.
        tokens.cache().invalidate("https://a.internal");
        match clone.lookup(&request) {
            Lookup::Fetch(audience) => assert_eq!(&*audience, "https://a.internal"),
            other => panic!("expected a fetch, got {other:?}"),
        }
        tokens.cache().get("https://a.internal").await.unwrap();
        assert_eq!(cached(&tokens, &request), "Bearer t-https://a.internal");
        assert_eq!(tokens.routes.map.load().len(), 1);
        assert_eq!(tokens.cache().metrics().fetches, 2);
    }

    #[tokio::test]
    async fn a_local_snapshot_follows_the_shared_index_and_the_tokens() {
        let counting = |n: &AtomicU64| n.fetch_add(1, Ordering::SeqCst) + 1;
        let fetched = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&fetched);
        let source: Arc<dyn TokenSource> = Arc::new(from_fn(move |audience: String| {
            let n = counting(&counter);
            async move {
                Ok(Token::new(
                    format!("t{n}-{audience}"),
                    SystemTime::now() + Duration::from_secs(3600),
                ))
            }
        }));
        let mut local = OutboundTokens::new(TokenCache::new(source), AudiencePolicy::any_origin());
        let shared = local.clone();
        let a = get("https://a.internal/");
        // A route added through another handle is seen at the next local lookup.
        warm(&shared, &a).await;
        let local_token = |local: &mut OutboundTokens| match local.lookup_local(&a) {
            Lookup::Cached(token) => token.header_value().to_str().unwrap().to_owned(),
            other => panic!("expected a cached token, got {other:?}"),
        };
        assert_eq!(local_token(&mut local), "Bearer t1-https://a.internal");
        // That lookup found the route without its token and updated it; from the next one
        // on, warm lookups take no new snapshot.
        assert_eq!(local_token(&mut local), "Bearer t1-https://a.internal");
        let version = local.snapshot.version;
        assert_eq!(local_token(&mut local), "Bearer t1-https://a.internal");
        assert_eq!(local.snapshot.version, version);
        // A new token for the audience is seen through its slot, whatever the snapshot holds.
        shared.cache().invalidate("https://a.internal");
        assert!(matches!(local.lookup_local(&a), Lookup::Fetch(_)));
        shared.cache().get("https://a.internal").await.unwrap();
        assert_eq!(local_token(&mut local), "Bearer t2-https://a.internal");
        assert_eq!(fetched.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_evicted_audience_is_routed_again() {
        let tokens = OutboundTokens::new(cache(2), AudiencePolicy::any_origin());
        let hosts: Vec<_> = (0..3)
            .map(|i| get(&format!("https://h{i}.internal/")))
            .collect();
        warm(&tokens, &hosts[0]).await;
        warm(&tokens, &hosts[1]).await;
        // A third audience evicts one of the first two (the cache holds two).
        warm(&tokens, &hosts[2]).await;
        let evicted = hosts[..2]
            .iter()
            .position(|host| matches!(tokens.lookup(host), Lookup::Fetch(_)))
            .unwrap();
        // Its route led to the evicted slot, so it was looked up again: a fetch into the
        // cache's new slot, which the route now follows.
        warm(&tokens, &hosts[evicted]).await;
        assert!(matches!(tokens.lookup(&hosts[evicted]), Lookup::Cached(_)));
        assert_eq!(tokens.cache().metrics().fetches, 4);
        assert_eq!(tokens.cache().metrics().audiences, 2);
    }

    #[tokio::test]
    async fn the_index_is_bounded() {
        let policy = AudiencePolicy::origin().map("https://billing.internal", "api://billing");
        let tokens = OutboundTokens::new(cache(1), policy);
        assert_eq!(tokens.routes.capacity, 64);
        // Spellings of a listed origin are routes of their own.
        for i in 0..200 {
            let request = get(&format!("https://user{i}@billing.internal/"));
            assert!(matches!(tokens.lookup(&request), Lookup::Fetch(_)));
            assert!(tokens.routes.map.load().len() <= 64);
        }
    }

    #[tokio::test]
    async fn refused_origins_take_at_most_a_quarter_of_the_index() {
        let policy = AudiencePolicy::origin().map("https://billing.internal", "api://billing");
        let tokens = OutboundTokens::new(cache(1), policy);
        let listed = get("https://billing.internal/");
        warm(&tokens, &listed).await;
        for i in 0..200 {
            let request = get(&format!("https://h{i}.internal/"));
            assert!(matches!(tokens.lookup(&request), Lookup::NoAudience));
        }
        // 16 refusals remembered beside the listed origin; the others are refused each time.
        let routes = tokens.routes.map.load_full();
        assert_eq!(routes.len(), 17);
        assert_eq!(*tokens.routes.writer.lock().unwrap(), 16);
        assert!(matches!(
            tokens.lookup(&get("https://h199.internal/")),
            Lookup::NoAudience
        ));
        assert!(Arc::ptr_eq(&routes, &tokens.routes.map.load_full()));
        assert_eq!(cached(&tokens, &listed), "Bearer t-api://billing");
        // A refused origin the policy now routes (a route replacing a refusal) frees its place.
        let once_refused = get("https://h0.internal/");
        assert!(matches!(tokens.lookup(&once_refused), Lookup::NoAudience));
        let audience: Arc<str> = Arc::from("api://h0");
        tokens.routes.insert(
            &mut tokens.routes.writer.lock().unwrap(),
            Written {
                scheme: "https",
                authority: "h0.internal",
            },
            tokens.reach(&audience, tokens.cache.slot_of(&audience)).0,
        );
        assert_eq!(*tokens.routes.writer.lock().unwrap(), 15);
    }

    #[tokio::test]
    async fn fixed_and_function_policies() {
        let fixed = OutboundTokens::new(cache(100), AudiencePolicy::fixed("api://x"));
        warm(&fixed, &get("/any")).await;
        assert_eq!(cached(&fixed, &get("https://other/")), "Bearer t-api://x");
        // The route now holds the token: a warm lookup writes nothing.
        let before = fixed.routes.map.load_full();
        assert_eq!(cached(&fixed, &get("/again")), "Bearer t-api://x");
        assert!(Arc::ptr_eq(&before, &fixed.routes.map.load_full()));
        let by_header = OutboundTokens::new(
            cache(100),
            AudiencePolicy::from_fn(|head| {
                let target = head.headers.get("x-target")?.to_str().ok()?;
                Some(format!("api://{target}"))
            }),
        );
        let mut request = get("https://gateway.internal/");
        assert!(matches!(by_header.lookup(&request), Lookup::NoAudience));
        request
            .headers_mut()
            .insert("x-target", "stock".parse().unwrap());
        warm(&by_header, &request).await;
        assert_eq!(cached(&by_header, &request), "Bearer t-api://stock");
        // A function policy is not indexed: it runs for every request.
        assert_eq!(by_header.routes.map.load().len(), 0);
    }
}
