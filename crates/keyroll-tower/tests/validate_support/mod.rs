//! Helpers shared by the validator's integration tests: a controllable key source, hand-made
//! JWS tokens, and a service to send requests through.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header::AUTHORIZATION};
use http_body_util::{BodyExt as _, Full};
use keyroll_core::jwt::{Issuer, Validation};
use keyroll_core::{
    Algorithm, BoxFuture, Clock, KeyCache, KeyCacheConfig, KeySource, KeyVersion, LoadedKeys,
    LocalKey, ManualClock, SourceError, unix_seconds,
};
use keyroll_tower::validate::{ValidateLayer, VerifiedClaims};
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder, ServiceExt as _};

pub const ISS: &str = "https://orders.example";
pub const AUD: &str = "https://billing.example";
pub const REALM: &str = "billing";

/// A key source whose versions and failures tests control, counting loads.
#[derive(Debug, Default)]
pub struct TestSource {
    versions: Mutex<Vec<KeyVersion>>,
    keys: Mutex<HashMap<String, Arc<LocalKey>>>,
    loads: AtomicUsize,
    failing: AtomicBool,
}

impl TestSource {
    pub fn new() -> Arc<Self> {
        Arc::new(TestSource::default())
    }

    /// Adds a freshly generated key as version `kid`.
    pub fn add(&self, kid: &str, algorithm: Algorithm) -> Arc<LocalKey> {
        let key = Arc::new(LocalKey::generate(algorithm).unwrap());
        self.add_key(kid, Arc::clone(&key), |v| v);
        key
    }

    /// Adds `key` as version `kid`, adjusted by `edit`.
    pub fn add_key(
        &self,
        kid: &str,
        key: Arc<LocalKey>,
        edit: impl FnOnce(KeyVersion) -> KeyVersion,
    ) {
        let version = KeyVersion::new(kid, key.public_jwk(), SystemTime::UNIX_EPOCH)
            .unwrap()
            .with_algorithm(key.algorithm());
        self.versions.lock().unwrap().push(edit(version));
        self.keys.lock().unwrap().insert(kid.to_owned(), key);
    }

    pub fn remove(&self, kid: &str) {
        self.versions.lock().unwrap().retain(|v| v.kid != kid);
    }

    pub fn edit(&self, kid: &str, edit: impl Fn(KeyVersion) -> KeyVersion) {
        let mut versions = self.versions.lock().unwrap();
        for version in versions.iter_mut().filter(|v| v.kid == kid) {
            *version = edit(version.clone());
        }
    }

    pub fn key(&self, kid: &str) -> Arc<LocalKey> {
        Arc::clone(&self.keys.lock().unwrap()[kid])
    }

    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl KeySource for TestSource {
    fn name(&self) -> String {
        "test source".into()
    }

    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let result = if self.failing.load(Ordering::SeqCst) {
            Err(SourceError::new(self.name(), "load keys", "the source is down").with_status(500))
        } else {
            Ok(LoadedKeys::new(self.versions.lock().unwrap().clone()))
        };
        Box::pin(std::future::ready(result))
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload.signature`, signed by `key` over the signing input.
pub fn sign(key: &LocalKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = key.sign_now(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(&signature))
}

/// `header.payload.` + the given signature bytes.
pub fn unsigned(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

/// Standard claims valid at `now`.
pub fn claims_at(now: u64) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "orders", "iat": now, "nbf": now, "exp": now + 600, "scope": "invoices.read"})
}

pub fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "typ": "JWT", "kid": kid})
}

/// A manual clock, a test source with an ES256 key `ec` and an RS256 key `rsa`, a key cache
/// (no background refresh) and a layer trusting [`ISS`] for [`AUD`].
pub struct Fixture {
    pub clock: ManualClock,
    pub source: Arc<TestSource>,
    pub keys: KeyCache,
    pub layer: ValidateLayer,
}

pub const T0: u64 = 1_800_000_000;

impl Fixture {
    pub fn new() -> Self {
        Fixture::with(|builder| builder)
    }

    pub fn with(
        configure: impl FnOnce(
            keyroll_tower::validate::ValidateLayerBuilder,
        ) -> keyroll_tower::validate::ValidateLayerBuilder,
    ) -> Self {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(T0));
        let source = TestSource::new();
        source.add("ec", Algorithm::ES256);
        source.add("rsa", Algorithm::RS256);
        let keys = cache(&source, &clock, KeyCacheConfig::default());
        let layer = configure(
            ValidateLayer::builder()
                .issuer(Issuer::new(keys.clone(), Validation::new(ISS, [AUD])))
                .realm(REALM),
        )
        .build();
        Fixture {
            clock,
            source,
            keys,
            layer,
        }
    }

    pub fn now(&self) -> u64 {
        unix_seconds(self.clock.now())
    }

    pub fn claims(&self) -> Value {
        claims_at(self.now())
    }

    /// A valid token signed by version `kid`.
    pub fn token(&self, kid: &str) -> String {
        let key = self.source.key(kid);
        sign(&key, &header(key.algorithm().as_str(), kid), &self.claims())
    }

    pub async fn send(&self, authorization: Option<&str>) -> Answer {
        let mut request = Request::builder();
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        send(&self.layer, request.body(()).unwrap()).await
    }

    pub async fn bearer(&self, token: &str) -> Answer {
        self.send(Some(&format!("Bearer {token}"))).await
    }
}

pub fn cache(source: &Arc<TestSource>, clock: &ManualClock, config: KeyCacheConfig) -> KeyCache {
    KeyCache::builder_arc(Arc::clone(source) as Arc<dyn KeySource>)
        .clock(Arc::new(clock.clone()) as Arc<dyn Clock>)
        .config(config)
        .background_refresh(false)
        .build()
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn challenge(&self) -> Option<&str> {
        self.headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// The handler behind the layer: answers `sub`, from the claims in the extensions.
pub async fn handler(request: Request<()>) -> Result<Response<Full<Bytes>>, Infallible> {
    let claims = request.extensions().get::<VerifiedClaims>().unwrap();
    let sub = claims.registered().sub.clone().unwrap_or_default();
    Ok(Response::new(Full::new(Bytes::from(sub))))
}

/// Sends `request` through `layer` over [`handler`].
pub async fn send(layer: &ValidateLayer, request: Request<()>) -> Answer {
    let mut service = ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(handler);
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// `Bearer realm="billing", error="invalid_token", error_description="…"`.
pub fn invalid(description: &str) -> String {
    format!(
        "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{description}\""
    )
}

pub fn bare() -> String {
    format!("Bearer realm=\"{REALM}\"")
}

pub fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap()
}
