//! Which audience a request's token is for: fixed, the origin of its URI (the default), or any
//! function of the request, then mapped through a table. Shared by every outbound middleware
//! (keyroll-tower's `IssueLayer`, keyroll-reqwest's `IssueMiddleware`).
//!
//! ```
//! use http::Request;
//! use keyroll_core::token::AudiencePolicy;
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

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::{Extensions, HeaderMap, Method, Request, Uri};

use super::issue_error::IssueError;

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

impl<'a> RequestHead<'a> {
    /// The head of a request with these parts (for an [`OutboundRequest`] implementation).
    pub fn new(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        extensions: &'a Extensions,
    ) -> Self {
        RequestHead {
            method,
            uri,
            headers,
            extensions,
        }
    }
}

/// A request an outbound middleware is about to send, as an [`AudiencePolicy`] reads it.
/// Implemented for [`http::Request`]; keyroll-reqwest implements it for reqwest's requests.
pub trait OutboundRequest {
    /// `scheme://host[:port]` of the request's URL, lowercased, without user information and
    /// without the scheme's default port (80 for http, 443 for https); `None` when the URL has
    /// no scheme or host. Borrowed from the request when it can be.
    fn origin(&self) -> Option<Cow<'_, str>>;

    /// `f` applied to the request's head (`None` when no head can be formed, e.g. a URL that
    /// is not a valid `http::Uri`).
    fn with_head<R>(&self, f: impl FnOnce(&RequestHead<'_>) -> R) -> Option<R>;

    /// The URL's scheme and authority exactly as it spells them (before any normalising),
    /// for a middleware to remember the audience chosen per origin
    /// ([`OutboundTokens`](super::OutboundTokens)): two requests that answer the same here
    /// must have the same [`origin`](Self::origin). Default `None`: the policy then runs for
    /// every request.
    fn origin_as_written(&self) -> Option<(&str, &str)> {
        None
    }
}

impl<B> OutboundRequest for Request<B> {
    fn origin(&self) -> Option<Cow<'_, str>> {
        origin(self.uri()).map(Cow::Owned)
    }

    fn origin_as_written(&self) -> Option<(&str, &str)> {
        let uri = self.uri();
        Some((uri.scheme_str()?, uri.authority()?.as_str()))
    }

    fn with_head<R>(&self, f: impl FnOnce(&RequestHead<'_>) -> R) -> Option<R> {
        Some(f(&RequestHead::new(
            self.method(),
            self.uri(),
            self.headers(),
            self.extensions(),
        )))
    }
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
///
/// A client whose requests all go to one endpoint, whatever their URI says (a tonic
/// `Channel`, whose requests carry path-only URIs), binds the policy to that endpoint with
/// [`for_endpoint`](Self::for_endpoint).
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

/// The audience an [`AudiencePolicy`] chose for a request, borrowed from the policy (a table
/// entry, a fixed audience) or the request (its origin) when it can be, so that a cache
/// lookup with it allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedAudience<'a>(Chosen<'a>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Chosen<'a> {
    Shared(&'a Arc<str>),
    Borrowed(&'a str),
    Owned(String),
}

impl SelectedAudience<'_> {
    /// The audience.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Chosen::Shared(audience) => audience,
            Chosen::Borrowed(audience) => audience,
            Chosen::Owned(audience) => audience,
        }
    }

    /// The audience, shared (a table entry or a fixed audience is not copied).
    pub fn into_arc(self) -> Arc<str> {
        match self.0 {
            Chosen::Shared(audience) => Arc::clone(audience),
            Chosen::Borrowed(audience) => audience.into(),
            Chosen::Owned(audience) => audience.into(),
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

    /// This policy for a client that sends every request to `endpoint`, whatever the request's
    /// URI says: the audience is chosen once, now, as this policy chooses it for a request to
    /// `endpoint`, and the result is a [`fixed`](Self::fixed) policy. Under the origin policies
    /// an endpoint whose origin gets no token (not in the table) is an error here, before
    /// anything is sent; a fixed policy is returned as it is, and a function policy too (its
    /// function sees each request as the client made it).
    ///
    /// This is how a tonic `Channel` gets tokens: its requests carry path-only URIs (the
    /// channel adds its endpoint's scheme and authority below any layer around it), so an
    /// origin policy would find no origin in them. Pass the URI the channel connects to
    /// (`Endpoint::uri()`, or the one given to `Endpoint::origin` when that is set).
    ///
    /// ```
    /// use http::{Request, Uri};
    /// use keyroll_core::token::{AudiencePolicy, IssueErrorKind};
    ///
    /// let policy = AudiencePolicy::origin().map("http://billing.internal:50051", "api://billing");
    /// let endpoint: Uri = "http://billing.internal:50051".parse().unwrap();
    /// let bound = policy.for_endpoint(&endpoint).unwrap();
    /// let call = Request::post("/billing.Invoices/List").body(()).unwrap();
    /// assert_eq!(bound.audience_of(&call).as_deref(), Some("api://billing"));
    /// // Unbound, a path-only URI has no origin, so no token (the call is not sent).
    /// assert_eq!(policy.audience_of(&call), None);
    /// // An endpoint nobody listed is refused when the client is built.
    /// let other: Uri = "http://elsewhere.example:50051".parse().unwrap();
    /// assert_eq!(policy.for_endpoint(&other).unwrap_err().kind(), IssueErrorKind::NoAudience);
    /// ```
    pub fn for_endpoint(&self, endpoint: &Uri) -> Result<AudiencePolicy, IssueError> {
        if !matches!(self.select, Select::Origin) {
            return Ok(self.clone());
        }
        let Some(endpoint_origin) = origin(endpoint) else {
            return Err(IssueError::no_audience_for(endpoint.to_string()));
        };
        match self.table.get(endpoint_origin.as_str()) {
            Some(mapped) => Ok(AudiencePolicy::with(
                Select::Fixed(Arc::clone(mapped)),
                false,
            )),
            None if self.only_mapped => Err(IssueError::no_audience_for(endpoint_origin)),
            None => Ok(AudiencePolicy::fixed(endpoint_origin)),
        }
    }

    /// The audience for `request`, or `None` when it gets no token.
    pub fn audience_of<B>(&self, request: &Request<B>) -> Option<String> {
        self.select(request).map(|s| s.as_str().to_owned())
    }

    /// Whether the audience is a function of the URL's scheme and authority only (the origin
    /// policies), so that a middleware may remember a token per origin.
    pub fn is_origin(&self) -> bool {
        matches!(self.select, Select::Origin)
    }

    /// Whether every request gets the same audience ([`fixed`](Self::fixed)).
    pub(super) fn is_fixed(&self) -> bool {
        matches!(self.select, Select::Fixed(_))
    }

    /// The audience for `request`, or `None` when it gets no token, borrowed where it can be
    /// (the hot path of a middleware: see [`SelectedAudience`]). A function policy's function
    /// runs once per call.
    pub fn select<'a, R>(&'a self, request: &'a R) -> Option<SelectedAudience<'a>>
    where
        R: OutboundRequest + ?Sized,
    {
        let chosen = match &self.select {
            Select::Fixed(audience) => return Some(SelectedAudience(Chosen::Shared(audience))),
            Select::Origin => request.origin()?,
            Select::Custom(f) => Cow::Owned(request.with_head(|head| f(head))??),
        };
        let chosen = match self.table.get(chosen.as_ref()) {
            Some(mapped) => Chosen::Shared(mapped),
            None if self.only_mapped => return None,
            None => match chosen {
                Cow::Borrowed(chosen) => Chosen::Borrowed(chosen),
                Cow::Owned(chosen) => Chosen::Owned(chosen),
            },
        };
        Some(SelectedAudience(chosen))
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
    #[test]
    fn for_endpoint_binds_the_endpoint_origin_once() {
        let endpoint: Uri = "http://Billing.internal:50051".parse().unwrap();
        let call = Request::post("/billing.Invoices/List").body(()).unwrap();
        let mapped = AudiencePolicy::origin().map("http://billing.internal:50051", "api://billing");
        let bound = mapped.for_endpoint(&endpoint).unwrap();
        assert_eq!(bound.audience_of(&call).as_deref(), Some("api://billing"));
        assert!(!bound.is_origin());
        // Whatever the request URI says: the channel sends to its endpoint.
        assert_eq!(
            bound
                .audience_of(&get("https://elsewhere.example/"))
                .as_deref(),
            Some("api://billing")
        );
        let allowed = AudiencePolicy::origin().allow("http://billing.internal:50051");
        assert_eq!(
            allowed
                .for_endpoint(&endpoint)
                .unwrap()
                .audience_of(&call)
                .as_deref(),
            Some("http://billing.internal:50051")
        );
        let open = AudiencePolicy::any_origin();
        assert_eq!(
            open.for_endpoint(&endpoint)
                .unwrap()
                .audience_of(&call)
                .as_deref(),
            Some("http://billing.internal:50051")
        );
        let error = AudiencePolicy::origin()
            .for_endpoint(&endpoint)
            .unwrap_err();
        assert_eq!(error.kind(), super::super::IssueErrorKind::NoAudience);
        assert_eq!(error.audience(), Some("http://billing.internal:50051"));
        assert_eq!(
            error.to_string(),
            "no token audience for `http://billing.internal:50051` (no origin, or not in the audience table)"
        );
        let relative: Uri = "/no/origin".parse().unwrap();
        assert!(mapped.for_endpoint(&relative).is_err());
        let fixed = AudiencePolicy::fixed("api://x")
            .for_endpoint(&relative)
            .unwrap();
        assert_eq!(fixed.audience_of(&call).as_deref(), Some("api://x"));
        let custom = AudiencePolicy::from_fn(|head| Some(head.uri.path().to_owned()))
            .for_endpoint(&endpoint)
            .unwrap();
        assert_eq!(
            custom.audience_of(&call).as_deref(),
            Some("/billing.Invoices/List")
        );
    }

    /// A request whose origin is given as is, borrowed.
    struct Borrowing(&'static str);

    impl OutboundRequest for Borrowing {
        fn origin(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }

        fn with_head<R>(&self, _f: impl FnOnce(&RequestHead<'_>) -> R) -> Option<R> {
            None
        }
    }

    #[test]
    fn selection_borrows_from_the_policy_or_the_request() {
        let request = Borrowing("https://billing.internal");
        let mapped = AudiencePolicy::origin().map("https://billing.internal", "api://billing");
        let chosen = mapped.select(&request).unwrap();
        assert!(matches!(chosen.0, Chosen::Shared(_)));
        assert_eq!(chosen.as_str(), "api://billing");
        let open = AudiencePolicy::any_origin();
        let chosen = open.select(&request).unwrap();
        assert!(matches!(chosen.0, Chosen::Borrowed(_)));
        assert_eq!(&*chosen.into_arc(), "https://billing.internal");
        let fixed = AudiencePolicy::fixed("api://x");
        assert!(matches!(
            fixed.select(&request).unwrap().0,
            Chosen::Shared(_)
        ));
        // A function policy needs a head; a request that cannot form one gets no token.
        let custom = AudiencePolicy::from_fn(|_| Some("api://y".to_owned()));
        assert_eq!(custom.select(&request), None);
        let http_request = get("https://billing.internal/x");
        let from_http = open.select(&http_request).unwrap();
        assert!(matches!(from_http.0, Chosen::Owned(_)));
    }
}
