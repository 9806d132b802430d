//! A reqwest request as an [`AudiencePolicy`](keyroll_core::token::AudiencePolicy) reads it:
//! its URL's origin, borrowed from the URL when it is already in normal form.
//!
//! ```
//! use keyroll_reqwest::AudiencePolicy;
//!
//! // Origins are compared in normal form: `https://Billing.internal:443` is `https://billing.internal`.
//! let policy = AudiencePolicy::origin().map("https://Billing.internal:443", "api://billing");
//! let middleware = keyroll_reqwest::IssueMiddleware::new(keyroll_reqwest::StaticToken::new("t"))
//!     .audience(policy);
//! let request = reqwest::Request::new(
//!     reqwest::Method::GET,
//!     "https://BILLING.internal/invoices".parse().unwrap(),
//! );
//! assert_eq!(middleware.audience_of(&request).as_deref(), Some("api://billing"));
//! ```

use std::borrow::Cow;

use http::{Extensions, Uri};
use keyroll_core::token::{OutboundRequest, RequestHead};
use url::{Position, Url};

/// A request on its way through the middleware, with the middleware chain's extensions.
pub(crate) struct Outgoing<'a> {
    pub(crate) request: &'a reqwest::Request,
    pub(crate) extensions: &'a Extensions,
}

impl OutboundRequest for Outgoing<'_> {
    fn origin(&self) -> Option<Cow<'_, str>> {
        origin(self.request.url())
    }

    fn origin_as_written(&self) -> Option<(&str, &str)> {
        let url = self.request.url();
        url.host_str()?;
        Some((
            url.scheme(),
            &url[Position::BeforeUsername..Position::AfterPort],
        ))
    }

    fn with_head<R>(&self, f: impl FnOnce(&RequestHead<'_>) -> R) -> Option<R> {
        let uri = Uri::try_from(self.request.url().as_str()).ok()?;
        Some(f(&RequestHead::new(
            self.request.method(),
            &uri,
            self.request.headers(),
            self.extensions,
        )))
    }
}

/// `scheme://host[:port]`: the URL's serialization up to its port when it has no user
/// information (a URL keeps http and https hosts lowercased and leaves their default ports
/// out already), else rebuilt without it; lowercased where it is not (other schemes).
fn origin(url: &Url) -> Option<Cow<'_, str>> {
    url.host_str()?;
    let origin = if url.username().is_empty() && url.password().is_none() {
        Cow::Borrowed(&url[..Position::AfterPort])
    } else {
        let authority = &url[Position::BeforeHost..Position::AfterPort];
        Cow::Owned(format!("{}://{authority}", url.scheme()))
    };
    if origin.bytes().any(|byte| byte.is_ascii_uppercase()) {
        return Some(Cow::Owned(origin.to_ascii_lowercase()));
    }
    Some(origin)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn origins_are_normalised_and_borrowed_when_they_can_be() {
        let cases = [
            (
                "https://Billing.Internal/x?y",
                "https://billing.internal",
                true,
            ),
            (
                "https://billing.internal:443/",
                "https://billing.internal",
                true,
            ),
            (
                "http://billing.internal:80/",
                "http://billing.internal",
                true,
            ),
            (
                "http://billing.internal:8443/",
                "http://billing.internal:8443",
                true,
            ),
            (
                "https://user:pw@billing.internal/",
                "https://billing.internal",
                false,
            ),
            (
                "https://user@billing.internal:8443/",
                "https://billing.internal:8443",
                false,
            ),
            ("http://[::1]:3000/", "http://[::1]:3000", true),
            ("http://127.0.0.1:3000/a/b", "http://127.0.0.1:3000", true),
            ("custom://Host.Example:9/", "custom://host.example:9", false),
        ];
        for (url, expected, borrowed) in cases {
            let url: Url = url.parse().unwrap();
            let origin = origin(&url).unwrap();
            assert_eq!(origin, expected, "{url}");
            assert_eq!(matches!(origin, Cow::Borrowed(_)), borrowed, "{url}");
        }
        let no_host: Url = "data:text/plain,hello".parse().unwrap();
        assert_eq!(origin(&no_host), None);
    }

    #[test]
    fn origins_as_written_keep_the_authority_and_only_it() {
        let extensions = Extensions::new();
        let written = |url: &str| {
            let request = reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());
            let outgoing = Outgoing {
                request: &request,
                extensions: &extensions,
            };
            outgoing
                .origin_as_written()
                .map(|(scheme, authority)| format!("{scheme} {authority}"))
        };
        let cases = [
            ("https://billing.internal/x?y", "https billing.internal"),
            (
                "https://user:pw@billing.internal:8443/",
                "https user:pw@billing.internal:8443",
            ),
            ("http://[::1]:3000/a", "http [::1]:3000"),
        ];
        for (url, expected) in cases {
            assert_eq!(written(url).as_deref(), Some(expected), "{url}");
        }
        assert_eq!(written("data:text/plain,hello"), None);
    }

    #[test]
    fn the_head_carries_the_request_and_the_chain_extensions() {
        let mut request = reqwest::Request::new(
            reqwest::Method::PUT,
            "https://billing.internal/items?id=1".parse().unwrap(),
        );
        request
            .headers_mut()
            .insert("x-target", "stock".parse().unwrap());
        let mut extensions = Extensions::new();
        extensions.insert(7_u32);
        let outgoing = Outgoing {
            request: &request,
            extensions: &extensions,
        };
        let seen = outgoing
            .with_head(|head| {
                (
                    head.method.clone(),
                    head.uri.to_string(),
                    head.headers["x-target"].clone(),
                    head.extensions.get::<u32>().copied(),
                )
            })
            .unwrap();
        assert_eq!(seen.0, reqwest::Method::PUT);
        assert_eq!(seen.1, "https://billing.internal/items?id=1");
        assert_eq!(seen.2, "stock");
        assert_eq!(seen.3, Some(7));
    }
}
