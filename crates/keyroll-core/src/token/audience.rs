//! Which audience a request's token is for: fixed, the origin of its URI (the default), or any
//! function of the request, then mapped through a table.
//!
//! ```
//! use http::Request;
//! use keyroll_tower::issue::AudiencePolicy;
//!
//! let policy = AudiencePolicy::origin()
//!     .map("https://billing.internal", "api://billing")
//!     .allow("https://stock.internal");
//! let request = Request::get("https://BILLING.internal:443/invoices?x=1").body(()).unwrap();
//! assert_eq!(policy.audience_of(&request).as_deref(), Some("api://billing"));
//! let stock = Request::get("https://stock.internal/items").body(()).unwrap();
//! assert_eq!(policy.audience_of(&stock).as_deref(), Some("https://stock.internal"));
//! // Only origins in the table get a token: a request elsewhere gets none (and is not sent).
//! let elsewhere = Request::get("https://evil.example/").body(()).unwrap();
//! assert_eq!(policy.audience_of(&elsewhere), None);
//! // Opting in to every origin:
//! let open = AudiencePolicy::any_origin();
//! assert_eq!(open.audience_of(&elsewhere).as_deref(), Some("https://evil.example"));
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
///   host lowercased and a default port (80 for http, 443 for https) left out, **for origins in
///   the table only** ([`map`](Self::map), [`allow`](Self::allow)): a request to any other host
///   gets no token and fails with [`IssueErrorKind::NoAudience`](super::IssueErrorKind), so a
///   token (a static key, an Entra token) never goes to a host nobody configured, and a
///   self-signed source never signs for an origin a caller made up;
/// - [`any_origin`](Self::any_origin): the origin of every request, mapped when the table has
///   it, used as is otherwise (opt in only where every host a client can reach is trusted);
/// - [`fixed`](Self::fixed): the same audience for every request;
/// - [`from_fn`](Self::from_fn): any function of the request's head (the function decides which
///   requests get a token: its values are used as is unless mapped, or refused when not in the
///   table with [`only_mapped`](Self::only_mapped)).
///
/// The chosen value is then looked up in the table; an entry replaces it (an origin becomes an
/// `api://…` application id, say).
#[derive(Clone)]
pub struct AudiencePolicy {
    select: Select,
    table: Arc<HashMap<String, Arc<str>>>,
    only_mapped: bool,
}

impl Default for AudiencePolicy {
    /// [`AudiencePolicy::origin`] with an empty table: no request gets a token until origins
    /// are added with [`map`](Self::map) or [`allow`](Self::allow).
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
    /// The origin of the request URI, for origins in the table only (the default): add them
    /// with [`map`](Self::map) or [`allow`](Self::allow).
    pub fn origin() -> Self {
        AudiencePolicy::with(Select::Origin, true)
    }

    /// The origin of every request URI, whatever its host (mapped when the table has it).
    /// A client that can be pointed at any host (a URL from configuration a user controls, a
    /// redirect, a webhook) then sends a token there: prefer [`origin`](Self::origin) with the
    /// hosts listed. Same as `origin().only_mapped(false)`.
    pub fn any_origin() -> Self {
        AudiencePolicy::with(Select::Origin, false)
    }

    /// The same audience for every request.
    pub fn fixed(audience: impl Into<String>) -> Self {
        AudiencePolicy::with(Select::Fixed(audience.into().into()), false)
    }

    /// The audience a function of the request head returns (`None`: no token, the call fails).
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> Option<String> + Send + Sync + 'static,
    {
        AudiencePolicy::with(Select::Custom(Arc::new(f)), false)
    }

    fn with(select: Select, only_mapped: bool) -> Self {
        AudiencePolicy {
            select,
            table: Arc::default(),
            only_mapped,
        }
    }

    /// Maps the chosen value `from` (an origin, say) to the audience `to`. Under the origin
    /// policies, `from` is normalised like a request's origin (`https://Billing.internal:443`
    /// is `https://billing.internal`).
    pub fn map(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        let mut from = from.into();
        if matches!(self.select, Select::Origin)
            && let Some(normalised) = from.parse::<Uri>().ok().as_ref().and_then(origin)
        {
            from = normalised;
        }
        Arc::make_mut(&mut self.table).insert(from, to.into().into());
        self
    }

    /// Lets `origin` get tokens with itself as the audience (`map(origin, origin)`).
    pub fn allow(self, origin: impl Into<String>) -> Self {
        let origin = origin.into();
        let audience = match origin.parse::<Uri>().ok().as_ref().and_then(self::origin) {
            Some(normalised) if matches!(self.select, Select::Origin) => normalised,
            _ => origin.clone(),
        };
        self.map(origin, audience)
    }

    /// Whether values not in the table get no token: true for [`origin`](Self::origin), false
    /// for [`any_origin`](Self::any_origin) and [`from_fn`](Self::from_fn) (values not in the
    /// table are used as is). Does not apply to a fixed audience.
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
        let policy = AudiencePolicy::any_origin();
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
    fn origin_refuses_hosts_not_in_the_table_unless_opted_in() {
        let policy = AudiencePolicy::default();
        assert_eq!(policy.audience_of(&get("https://attacker.example/")), None);
        let policy = AudiencePolicy::origin()
            .allow("https://Billing.Internal:443")
            .map("http://stock.internal:80", "api://stock");
        let cases = [
            (
                "https://billing.internal/x",
                Some("https://billing.internal"),
            ),
            (
                "https://BILLING.internal:443/",
                Some("https://billing.internal"),
            ),
            ("http://stock.internal/", Some("api://stock")),
            ("http://billing.internal/", None),
            ("https://billing.internal:8443/", None),
            ("https://attacker.example/", None),
        ];
        for (uri, expected) in cases {
            assert_eq!(policy.audience_of(&get(uri)).as_deref(), expected, "{uri}");
        }
        let open = AudiencePolicy::any_origin().map("https://billing.internal", "api://billing");
        assert_eq!(
            open.audience_of(&get("https://attacker.example/"))
                .as_deref(),
            Some("https://attacker.example")
        );
        assert_eq!(
            AudiencePolicy::origin()
                .only_mapped(false)
                .audience_of(&get("https://attacker.example/"))
                .as_deref(),
            Some("https://attacker.example")
        );
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
