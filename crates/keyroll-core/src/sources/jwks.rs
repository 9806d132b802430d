//! A peer's keys from a JWKS URL, or from an OIDC issuer through discovery. Validation only.
//!
//! ```no_run
//! use keyroll_core::{JwksSource, KeyCache};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Entra ID: discover the JWKS from the issuer.
//! let entra = JwksSource::discover("https://login.microsoftonline.com/<tenant>/v2.0")?;
//! // A peer service that publishes its keys directly.
//! let peer = JwksSource::new("https://billing.internal/.well-known/jwks.json")?;
//! let cache = KeyCache::builder(peer).build();
//! cache.refresh_now().await?;
//! # Ok(()) }
//! ```

use std::sync::Mutex;
use std::time::Duration;

use http::header;
use url::Url;

use crate::error::{KeyError, SourceError};
use crate::jwk::JwkSet;
use crate::key::KeyVersion;
use crate::source::{BoxFuture, KeySource, LoadedKeys};

/// Keys published at a JWKS URL, fetched with conditional requests.
///
/// - `ETag` / `If-None-Match`: a `304 Not Modified` keeps the previous set without re-parsing.
/// - `Cache-Control: max-age` is passed to the cache as a freshness hint.
/// - One malformed, symmetric or encryption key is skipped with a warning; the rest of the set
///   is kept. A document that is not a JWKS at all is an error (and the cache keeps its last
///   good set).
/// - With [`discover`](Self::discover), the JWKS URL is read from the issuer's
///   `/.well-known/openid-configuration` (again at each load, so a moved `jwks_uri` is
///   followed); the document's `issuer` must be the configured one.
/// - URLs must be `https` (plain `http` only on loopback); bodies are read up to 1 MiB; the
///   default client times out after 30 s.
#[derive(Debug)]
pub struct JwksSource {
    location: Location,
    client: reqwest::Client,
    previous: Mutex<Option<Previous>>,
}

#[derive(Debug)]
enum Location {
    Jwks(Url),
    Issuer(Url),
}

#[derive(Debug, Clone)]
struct Previous {
    url: Url,
    etag: String,
    versions: Vec<KeyVersion>,
}

impl JwksSource {
    /// Keys at a JWKS URL.
    pub fn new(jwks_url: &str) -> Result<Self, KeyError> {
        Ok(Self::with_location(Location::Jwks(parse_url(jwks_url)?)))
    }

    /// Keys of an OIDC issuer, found through `{issuer}/.well-known/openid-configuration`.
    pub fn discover(issuer: &str) -> Result<Self, KeyError> {
        Ok(Self::with_location(Location::Issuer(parse_url(issuer)?)))
    }

    fn with_location(location: Location) -> Self {
        JwksSource {
            location,
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(30))
                .redirect(redirect_policy())
                .build()
                .unwrap_or_default(),
            previous: Mutex::new(None),
        }
    }

    /// Uses this HTTP client (a custom CA, a resolver, timeouts, a proxy). Whatever its
    /// redirect policy, a response that arrives from a URL breaking the https rule (after a
    /// redirect) is refused; [`JwksSource::redirect_policy`] gives the one the default client
    /// uses, which refuses such a redirect before following it.
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// The redirect policy of the default client: redirects keep the https rule (plain
    /// `http` only on loopback), at most 5.
    pub fn redirect_policy() -> reqwest::redirect::Policy {
        redirect_policy()
    }

    /// Refuses a response that a redirect brought from a URL breaking the https rule.
    fn check_final_url(
        &self,
        response: &reqwest::Response,
        operation: &str,
    ) -> Result<(), SourceError> {
        if allowed(response.url()) {
            Ok(())
        } else {
            Err(self.error(
                operation,
                format!(
                    "redirected to `{}`, which breaks the https rule (http only on loopback)",
                    response.url()
                ),
            ))
        }
    }

    fn error(&self, operation: &str, message: impl Into<String>) -> SourceError {
        SourceError::new(self.name(), operation, message)
    }

    async fn jwks_url(&self) -> Result<Url, SourceError> {
        let issuer = match &self.location {
            Location::Jwks(url) => return Ok(url.clone()),
            Location::Issuer(issuer) => issuer,
        };
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.as_str().trim_end_matches('/')
        );
        let response = self
            .client
            .get(&discovery)
            .send()
            .await
            .map_err(|e| self.error("discovery", "request failed").with_cause(e))?;
        self.check_final_url(&response, "discovery")?;
        let status = response.status();
        if !status.is_success() {
            return Err(self
                .error("discovery", format!("HTTP {status}"))
                .with_status(status.as_u16()));
        }
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let body = self.read_body(response, "discovery").await?;
        let document: Discovery = serde_json::from_slice(&body).map_err(|e| {
            self.error(
                "discovery",
                "no `issuer` and `jwks_uri` in the discovery document",
            )
            .with_cause(e)
        })?;
        // OpenID Connect Discovery §4.3: the document must be the issuer's own.
        if document.issuer.trim_end_matches('/') != issuer.as_str().trim_end_matches('/') {
            return Err(self.error("discovery", "the document names another issuer"));
        }
        parse_url(&document.jwks_uri)
            .map_err(|e| self.error("discovery", "invalid `jwks_uri`").with_cause(e))
    }

    /// Reads a response body of at most [`MAX_BODY`] bytes.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        operation: &str,
    ) -> Result<Vec<u8>, SourceError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.error(operation, "read failed").with_cause(e))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(self.error(
                    operation,
                    format!("the response is larger than {MAX_BODY} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn fetch(&self) -> Result<LoadedKeys, SourceError> {
        let url = self.jwks_url().await?;
        let previous = crate::lock(&self.previous).clone();
        let mut request = self
            .client
            .get(url.clone())
            .header(header::ACCEPT, "application/json");
        if let Some(previous) = previous.as_ref().filter(|p| p.url == url) {
            request = request.header(header::IF_NONE_MATCH, &previous.etag);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.error("fetch JWKS", "request failed").with_cause(e))?;
        self.check_final_url(&response, "fetch JWKS")?;
        let status = response.status();
        let max_age = response
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age);
        if status == reqwest::StatusCode::NOT_MODIFIED
            && let Some(previous) = previous.filter(|p| p.url == url)
        {
            return Ok(LoadedKeys::new(previous.versions).with_max_age(max_age));
        }
        if !status.is_success() {
            let mut error = self
                .error("fetch JWKS", format!("HTTP {status}"))
                .with_status(status.as_u16());
            if let Some(retry_after) = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                error = error.with_retry_after(Duration::from_secs(retry_after));
            }
            return Err(error);
        }
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = self.read_body(response, "fetch JWKS").await?;
        let parsed =
            JwkSet::parse_lenient(&body).map_err(|e| self.error("fetch JWKS", e.to_string()))?;
        for (index, reason) in &parsed.skipped {
            tracing::warn!(source = %self.name(), index, %reason, "skipping a key of the JWKS");
        }
        // Remote keys are validation-only, so their creation time never matters.
        let versions = parsed
            .keys
            .into_iter()
            .map(|(jwk, key)| KeyVersion::published(jwk, key))
            .collect::<Vec<_>>();
        *crate::lock(&self.previous) = etag.map(|etag| Previous {
            url,
            etag,
            versions: versions.clone(),
        });
        Ok(LoadedKeys::new(versions).with_max_age(max_age))
    }
}

/// The largest discovery document or JWKS read.
const MAX_BODY: usize = 1024 * 1024;

/// An `https` URL, or an `http` one on a loopback host (tests, sidecars, local development).
fn parse_url(text: &str) -> Result<Url, KeyError> {
    let url = Url::parse(text).map_err(|e| KeyError::new(format!("invalid URL `{text}`: {e}")))?;
    if allowed(&url) {
        Ok(url)
    } else {
        Err(KeyError::new(format!(
            "`{text}` must be an https URL (http only on loopback)"
        )))
    }
}

/// The https rule: `https`, or `http` on a loopback host.
fn allowed(url: &Url) -> bool {
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost" || name.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => true,
        "http" => loopback,
        _ => false,
    }
}

/// Redirects keep the https rule (and stop after 5), so a JWKS or discovery URL cannot hand
/// the keys' download to plain http.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if !allowed(attempt.url()) {
            let refused = format!(
                "a redirect to `{}` breaks the https rule (http only on loopback)",
                attempt.url()
            );
            attempt.error(refused)
        } else if attempt.previous().len() >= 5 {
            attempt.error("more than 5 redirects")
        } else {
            attempt.follow()
        }
    })
}

fn parse_max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .find_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| value.trim().trim_matches('"').parse().ok())?
        })
        .map(Duration::from_secs)
}

impl KeySource for JwksSource {
    fn name(&self) -> String {
        match &self.location {
            Location::Jwks(url) => format!("JWKS {url}"),
            Location::Issuer(url) => format!("OIDC issuer {url}"),
        }
    }

    fn load(&self) -> BoxFuture<'_, Result<LoadedKeys, SourceError>> {
        Box::pin(self.fetch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_parsing() {
        assert_eq!(
            parse_max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(parse_max_age("no-cache"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
    }
}
