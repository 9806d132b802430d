//! Which audience a request's token is for: fixed, the origin of its URI (the default), or any
//! function of the request, then mapped through a table.
//!
//! ```
//! use http::Request;
//! use keyroll_tower::issue::AudiencePolicy;
//!
//! let policy = AudiencePolicy::origin()
//!     .map("https://billing.internal", "api://billing")
//!     .only_mapped(true);
//! let request = Request::get("https://BILLING.internal:443/invoices?x=1").body(()).unwrap();
//! assert_eq!(policy.audience_of(&request).as_deref(), Some("api://billing"));
//! // Only mapped origins get a token: a request elsewhere gets none.
//! let elsewhere = Request::get("https://evil.example/").body(()).unwrap();
//! assert_eq!(policy.audience_of(&elsewhere), None);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::{Extensions, HeaderMap, Method, Request, Uri};

/// The parts of a request an audience function sees.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions.
    pub extensions: &'a Extensions,
}

type AudienceFn = dyn Fn(&RequestHead<'_>) -> Option<String> + Send + Sync;

#[derive(Clone)]
enum Select {
    Origin,
    Fixed(Arc<str>),
    Custom(Arc<AudienceFn>),
}

/// How the audience of each request is chosen.
///
/// - [`origin`](Self::origin) (the default): `scheme://host[:port]` of the request URI, with the
///   host lowercased and a default port (80 for http, 443 for https) left out;
/// - [`fixed`](Self::fixed): the same audience for every request;
/// - [`from_fn`](Self::from_fn): any function of the request's head.
///
/// The chosen value is then looked up in a table ([`map`](Self::map)); an entry replaces it
/// (an origin becomes an `api://…` application id, say). With
/// [`only_mapped`](Self::only_mapped), a value not in the table gets no token and the call
/// fails, so a token is never sent to a host nobody configured.
#[derive(Clone)]
pub struct AudiencePolicy {
    select: Select,
    table: Arc<HashMap<String, Arc<str>>>,
    only_mapped: bool,
}

impl Default for AudiencePolicy {
    fn default() -> Self {
        AudiencePolicy::origin()
    }
}

impl fmt::Debug for AudiencePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let select = match &self.select {
            Select::Origin => "origin".to_owned(),
            Select::Fixed(audience) => format!("fixed({audience})"),
            Select::Custom(_) => "custom".to_owned(),
        };
        f.debug_struct("AudiencePolicy")
            .field("select", &select)
            .field("table", &self.table)
            .field("only_mapped", &self.only_mapped)
            .finish()
    }
}

/// A chosen audience, borrowed from the policy when it can be.
pub(crate) enum Selected<'a> {
    Shared(&'a Arc<str>),
    Owned(String),
}

impl Selected<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Selected::Shared(audience) => audience,
            Selected::Owned(audience) => audience,
        }
    }

    pub(crate) fn into_arc(self) -> Arc<str> {
        match self {
            Selected::Shared(audience) => Arc::clone(audience),
            Selected::Owned(audience) => audience.into(),
        }
    }
}

impl AudiencePolicy {
    /// The origin of the request URI (the default).
    pub fn origin() -> Self {
        AudiencePolicy::with(Select::Origin)
    }

    /// The same audience for every request.
    pub fn fixed(audience: impl Into<String>) -> Self {
        AudiencePolicy::with(Select::Fixed(audience.into().into()))
    }

    /// The audience a function of the request head returns (`None`: no token, the call fails).
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> Option<String> + Send + Sync + 'static,
    {
        AudiencePolicy::with(Select::Custom(Arc::new(f)))
    }

    fn with(select: Select) -> Self {
        AudiencePolicy {
            select,
            table: Arc::default(),
            only_mapped: false,
        }
    }

    /// Maps the chosen value `from` (an origin, say) to the audience `to`.
    pub fn map(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.table).insert(from.into(), to.into().into());
        self
    }

    /// Whether values not in the table get no token (default false: they are used as is).
    /// Does not apply to a fixed audience.
    pub fn only_mapped(mut self, only_mapped: bool) -> Self {
        self.only_mapped = only_mapped;
        self
    }

    /// The audience for `request`, or `None` when it gets no token.
    pub fn audience_of<B>(&self, request: &Request<B>) -> Option<String> {
        self.select(request).map(|s| s.as_str().to_owned())
    }

    /// Whether the audience is a function of the URI's scheme and authority only.
    pub(crate) fn is_origin(&self) -> bool {
        matches!(self.select, Select::Origin)
    }

    pub(crate) fn select<B>(&self, request: &Request<B>) -> Option<Selected<'_>> {
        let chosen = match &self.select {
            Select::Fixed(audience) => return Some(Selected::Shared(audience)),
            Select::Origin => origin(request.uri())?,
            Select::Custom(f) => f(&RequestHead {
                method: request.method(),
                uri: request.uri(),
                headers: request.headers(),
                extensions: request.extensions(),
            })?,
        };
        match self.table.get(chosen.as_str()) {
            Some(mapped) => Some(Selected::Shared(mapped)),
            None if self.only_mapped => None,
            None => Some(Selected::Owned(chosen)),
        }
    }
}

/// `scheme://host[:port]`, host lowercased, default port left out.
fn origin(uri: &Uri) -> Option<String> {
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    let host = authority.host();
    let port = authority.port_u16().filter(|&port| {
        !((port == 443 && scheme.eq_ignore_ascii_case("https"))
            || (port == 80 && scheme.eq_ignore_ascii_case("http")))
    });
    let mut out = String::with_capacity(scheme.len() + host.len() + 9);
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(host);
    if let Some(port) = port {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.make_ascii_lowercase();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn origin_is_normalised() {
        let policy = AudiencePolicy::origin();
        let cases = [
            (
                "https://Billing.Internal/x?y",
                Some("https://billing.internal"),
            ),
            (
                "https://billing.internal:443/",
                Some("https://billing.internal"),
            ),
            (
                "http://billing.internal:80/",
                Some("http://billing.internal"),
            ),
            (
                "http://billing.internal:8443/",
                Some("http://billing.internal:8443"),
            ),
            (
                "https://user:pw@billing.internal/",
                Some("https://billing.internal"),
            ),
            ("http://[::1]:3000/", Some("http://[::1]:3000")),
            ("/relative", None),
        ];
        for (uri, expected) in cases {
            assert_eq!(policy.audience_of(&get(uri)).as_deref(), expected, "{uri}");
        }
    }

    #[test]
    fn fixed_ignores_the_request() {
        let policy = AudiencePolicy::fixed("api://billing").only_mapped(true);
        assert_eq!(
            policy.audience_of(&get("/anything")).as_deref(),
            Some("api://billing")
        );
    }

    #[test]
    fn custom_function_then_table() {
        let policy = AudiencePolicy::from_fn(|head| {
            head.headers
                .get("x-target")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .map("billing", "api://billing");
        let mut request = get("/");
        assert_eq!(policy.audience_of(&request), None);
        request
            .headers_mut()
            .insert("x-target", "billing".parse().unwrap());
        assert_eq!(
            policy.audience_of(&request).as_deref(),
            Some("api://billing")
        );
        request
            .headers_mut()
            .insert("x-target", "other".parse().unwrap());
        assert_eq!(policy.audience_of(&request).as_deref(), Some("other"));
        let strict = policy.only_mapped(true);
        assert_eq!(strict.audience_of(&request), None);
    }
}
