//! Publish the key cache's validation set as a JWKS, so any peer (Envoy, jose, keyroll's own
//! validator) can check the tokens this service issues.
//!
//! ```
//! use http::{Request, StatusCode, header};
//! use http_body_util::BodyExt as _;
//! use keyroll_core::{Algorithm, JwkSet, KeyCache, LocalKeyRing};
//! use keyroll_tower::jwks::JwksService;
//! use tower::ServiceExt as _;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap()).build();
//! let jwks = JwksService::new(keys).openid_configuration("https://orders.internal");
//!
//! let request = Request::get("/.well-known/jwks.json").body(()).unwrap();
//! let response = jwks.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! let etag = response.headers()[header::ETAG].clone();
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(serde_json::from_slice::<JwkSet>(&body).unwrap().keys.len(), 1);
//!
//! // A client that has it already gets a 304.
//! let request = Request::get("/.well-known/jwks.json")
//!     .header(header::IF_NONE_MATCH, etag)
//!     .body(())
//!     .unwrap();
//! assert_eq!(jwks.clone().oneshot(request).await.unwrap().status(), StatusCode::NOT_MODIFIED);
//!
//! let request = Request::get("/.well-known/openid-configuration").body(()).unwrap();
//! let body = jwks.oneshot(request).await.unwrap().into_body().collect().await.unwrap().to_bytes();
//! let discovery: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(discovery["jwks_uri"], "https://orders.internal/.well-known/jwks.json");
//! # });
//! ```
//!
//! - `GET`/`HEAD` at the JWKS path (default [`DEFAULT_JWKS_PATH`]): the validation set, keys
//!   sorted by kid, so every replica that sees the same vault state serves the same bytes and
//!   the same strong `ETag` (a SHA-256 of the bytes); `If-None-Match` gets a `304`.
//!   `Cache-Control: public, max-age=<the key cache's refresh interval>`.
//! - Optionally, at [`DISCOVERY_PATH`], an OpenID discovery document with `issuer` and
//!   `jwks_uri`.
//! - Keys unavailable (never loaded, or stale past `max_stale`): `503` with `Retry-After`.
//!   Another method on those paths: `405`; any other path: `404`.
//!
//! Peers cache the set for up to `max-age`: the rotation policy's propagation window should
//! exceed it (plus the peers' own refresh interval), so a new key is known everywhere before
//! it signs.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use keyroll_core::{BoxFuture, JwkSet, KeyCache, KeyVersion};
use tower_service::Service;

/// The default JWKS path.
pub const DEFAULT_JWKS_PATH: &str = "/.well-known/jwks.json";
/// The OpenID discovery document's path.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// The JWK set published for `versions`: each version's public JWK (`kid`, `alg`, `use: sig`,
/// thumbprints and chain when certificate-backed), sorted by kid. Deterministic: the same
/// versions always give the same set.
pub fn jwk_set(versions: &[Arc<KeyVersion>]) -> JwkSet {
    let mut keys: Vec<_> = versions.iter().map(|v| v.jwk.clone()).collect();
    keys.sort_by(|a, b| a.kid.cmp(&b.kid));
    JwkSet { keys }
}

/// A rendered JWKS: its bytes and their strong ETag.
#[derive(Clone, Debug)]
pub struct JwksDocument {
    body: Bytes,
    etag: HeaderValue,
    versions: Vec<Arc<KeyVersion>>,
}

impl JwksDocument {
    fn render(versions: Vec<Arc<KeyVersion>>) -> JwksDocument {
        let body = Bytes::from(serde_json::to_vec(&jwk_set(&versions)).unwrap_or_default());
        let etag = etag_of(&body);
        JwksDocument {
            body,
            etag,
            versions,
        }
    }

    /// The JSON bytes.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The quoted strong ETag.
    pub fn etag(&self) -> &str {
        self.etag.to_str().unwrap_or_default()
    }
}

fn etag_of(body: &[u8]) -> HeaderValue {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    let tag: String = digest.as_ref()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    HeaderValue::try_from(format!("\"{tag}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, RFC 9110 §13.1.2).
fn none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/").as_bytes() == etag)
}

/// The discovery document, rendered once per configuration (it never changes after).
#[derive(Clone, Debug)]
struct Discovery {
    issuer: String,
    jwks_uri: Option<String>,
    body: Bytes,
    etag: HeaderValue,
}

impl Discovery {
    /// `jwks_uri` defaults to the issuer followed by the JWKS `path`.
    fn new(issuer: String, jwks_uri: Option<String>, path: &str) -> Discovery {
        let served_at = jwks_uri
            .clone()
            .unwrap_or_else(|| format!("{}{path}", issuer.trim_end_matches('/')));
        let body =
            Bytes::from(serde_json::json!({"issuer": issuer, "jwks_uri": served_at}).to_string());
        let etag = etag_of(&body);
        Discovery {
            issuer,
            jwks_uri,
            body,
            etag,
        }
    }
}

/// Serves the validation set of a [`KeyCache`] as JWKS; see the [module docs](self).
#[derive(Clone)]
pub struct JwksService {
    keys: KeyCache,
    path: Arc<str>,
    max_age: Option<Duration>,
    /// `public, max-age=…`, from `max_age` (default: the key cache's refresh interval).
    cache_control: HeaderValue,
    discovery: Option<Arc<Discovery>>,
    last: Arc<Mutex<Option<Arc<JwksDocument>>>>,
}

impl fmt::Debug for JwksService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksService")
            .field("keys", &self.keys.source_name())
            .field("path", &self.path)
            .field("max_age", &self.max_age)
            .field("discovery", &self.discovery)
            .finish_non_exhaustive()
    }
}

impl JwksService {
    /// Serves `keys`' validation set at [`DEFAULT_JWKS_PATH`].
    pub fn new(keys: KeyCache) -> Self {
        let cache_control = cache_control(keys.config().refresh_interval);
        JwksService {
            keys,
            path: DEFAULT_JWKS_PATH.into(),
            max_age: None,
            cache_control,
            discovery: None,
            last: Arc::default(),
        }
    }

    /// Serves the JWKS at `path` instead.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into().into();
        if let Some(discovery) = &mut self.discovery {
            *discovery = Arc::new(Discovery::new(
                discovery.issuer.clone(),
                discovery.jwks_uri.clone(),
                &self.path,
            ));
        }
        self
    }

    /// Sets `Cache-Control: max-age` (default: the key cache's refresh interval).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self.cache_control = cache_control(max_age);
        self
    }

    /// Also serves an OpenID discovery document at [`DISCOVERY_PATH`] with this `issuer` and
    /// a `jwks_uri` of the issuer followed by the JWKS path (see [`jwks_uri`](Self::jwks_uri)).
    pub fn openid_configuration(mut self, issuer: impl Into<String>) -> Self {
        self.discovery = Some(Arc::new(Discovery::new(issuer.into(), None, &self.path)));
        self
    }

    /// Sets the discovery document's `jwks_uri` (when the service is reached at another
    /// address than the issuer's). Needs [`openid_configuration`](Self::openid_configuration).
    pub fn jwks_uri(mut self, jwks_uri: impl Into<String>) -> Self {
        if let Some(discovery) = &mut self.discovery {
            *discovery = Arc::new(Discovery::new(
                discovery.issuer.clone(),
                Some(jwks_uri.into()),
                &self.path,
            ));
        }
        self
    }

    /// The JWKS as it would be served now (loading the keys on a cold cache).
    pub async fn document(&self) -> Result<Arc<JwksDocument>, keyroll_core::KeyCacheError> {
        let versions = self.keys.validation_set().await?;
        let mut last = crate::lock(&self.last);
        if let Some(document) = last.as_ref()
            && document.versions.len() == versions.len()
            && document
                .versions
                .iter()
                .zip(&versions)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return Ok(Arc::clone(document));
        }
        let document = Arc::new(JwksDocument::render(versions));
        *last = Some(Arc::clone(&document));
        Ok(document)
    }

    async fn serve_jwks(self, method: Method, headers: HeaderMap) -> Response<Full<Bytes>> {
        match self.document().await {
            Ok(document) => ok_json(
                &method,
                &headers,
                document.body.clone(),
                &document.etag,
                self.cache_control.clone(),
            ),
            Err(error) => {
                tracing::warn!(%error, "JWKS requested but the keys are unavailable");
                let retry_after = error.retry_after().unwrap_or(Duration::from_secs(1));
                let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "keys unavailable\n");
                let headers = response.headers_mut();
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
        }
    }
}

fn cache_control(max_age: Duration) -> HeaderValue {
    HeaderValue::try_from(format!("public, max-age={}", max_age.as_secs()))
        .unwrap_or(HeaderValue::from_static("no-cache"))
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn ok_json(
    method: &Method,
    request_headers: &HeaderMap,
    body: Bytes,
    etag: &HeaderValue,
    cache_control: HeaderValue,
) -> Response<Full<Bytes>> {
    let not_modified = none_match(request_headers, etag);
    let length = body.len();
    let body = if not_modified || method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, cache_control);
    if not_modified {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

/// Response future of [`JwksService`].
pub struct ResponseFuture {
    inner: BoxFuture<'static, Response<Full<Bytes>>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx).map(Ok)
    }
}

impl<B> Service<Request<B>> for JwksService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        let is_jwks = path == &*self.path;
        let discovery = self.discovery.clone().filter(|_| path == DISCOVERY_PATH);
        let ready = |response| ResponseFuture {
            inner: Box::pin(std::future::ready(response)),
        };
        if !is_jwks && discovery.is_none() {
            return ready(plain(StatusCode::NOT_FOUND, "not found\n"));
        }
        let method = request.method().clone();
        if method != Method::GET && method != Method::HEAD {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return ready(response);
        }
        let (parts, _body) = request.into_parts();
        if let Some(discovery) = discovery {
            return ready(ok_json(
                &method,
                &parts.headers,
                discovery.body.clone(),
                &discovery.etag,
                self.cache_control.clone(),
            ));
        }
        ResponseFuture {
            inner: Box::pin(self.clone().serve_jwks(method, parts.headers)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(if_none_match: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, if_none_match.parse().unwrap());
        headers
    }

    #[test]
    fn if_none_match_comparison() {
        let etag = HeaderValue::from_static("\"abc\"");
        assert!(none_match(&headers("\"abc\""), &etag));
        assert!(none_match(&headers("W/\"abc\""), &etag));
        assert!(none_match(&headers("\"x\", \"abc\""), &etag));
        assert!(none_match(&headers("*"), &etag));
        assert!(!none_match(&headers("\"abcd\""), &etag));
        assert!(!none_match(&HeaderMap::new(), &etag));
    }

    #[test]
    fn etag_is_a_function_of_the_bytes() {
        assert_eq!(etag_of(b"{\"keys\":[]}"), etag_of(b"{\"keys\":[]}"));
        assert_ne!(etag_of(b"{\"keys\":[]}"), etag_of(b"{\"keys\":[ ]}"));
        let etag = etag_of(b"x");
        assert!(etag.to_str().unwrap().starts_with('"') && etag.to_str().unwrap().ends_with('"'));
    }
}
