//! Finding the bearer token in a request, refusing oversized or ambiguous credentials before
//! any parsing work.

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};
use keyroll_core::jwt::InvalidReason;

use super::response::Failure;

/// Where tokens are looked for, besides `Authorization: Bearer`.
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenSources {
    pub(crate) header: Option<HeaderName>,
    pub(crate) cookie: Option<String>,
    pub(crate) max_len: usize,
}

const EMPTY: Failure = Failure::Invalid(InvalidReason::Malformed("the bearer token is empty"));

impl TokenSources {
    /// Finds the token: `Authorization: Bearer` first, then the configured header, then the
    /// configured cookie.
    pub(crate) fn find<'h>(&self, headers: &'h HeaderMap) -> Result<&'h [u8], Failure> {
        if let Some(value) = self.single(headers, &AUTHORIZATION)?
            && let Some(found) = self.bearer(value, true)?
        {
            return Ok(found);
        }
        if let Some(name) = &self.header
            && let Some(value) = self.single(headers, name)?
            && let Some(found) = self.bearer(value, false)?
        {
            return Ok(found);
        }
        if let Some(cookie) = &self.cookie {
            for value in headers.get_all(COOKIE) {
                if let Some(found) = self.cookie(value, cookie)? {
                    return Ok(found);
                }
            }
        }
        Err(Failure::Missing)
    }

    /// The header's only value; several are refused (RFC 6750 §3.1 `invalid_request`), an
    /// oversized one is refused before it is read.
    fn single<'a>(
        &self,
        headers: &'a HeaderMap,
        name: &HeaderName,
    ) -> Result<Option<&'a HeaderValue>, Failure> {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Failure::BadRequest(
                "the request has several credentials headers",
            ));
        }
        // "Bearer " plus the token, plus some spaces.
        if first.len() > self.max_len.saturating_add(16) {
            return Err(Failure::Invalid(InvalidReason::TooLarge));
        }
        Ok(Some(first))
    }

    /// `Bearer <token>` (scheme case-insensitive). With `require_scheme` false, a bare token
    /// is accepted too. `Ok(None)`: another scheme.
    fn bearer<'h>(
        &self,
        value: &'h HeaderValue,
        require_scheme: bool,
    ) -> Result<Option<&'h [u8]>, Failure> {
        let bytes = value.as_bytes();
        let is_space = |b: &u8| *b == b' ' || *b == b'\t';
        let start = match bytes.iter().position(is_space) {
            Some(end) if bytes[..end].eq_ignore_ascii_case(b"bearer") => end,
            None if bytes.eq_ignore_ascii_case(b"bearer") => return Err(EMPTY),
            _ if require_scheme => return Ok(None),
            _ => 0,
        };
        let start = start + bytes[start..].iter().take_while(|b| is_space(b)).count();
        let end = bytes.len()
            - bytes[start..]
                .iter()
                .rev()
                .take_while(|b| is_space(b))
                .count();
        self.checked(&bytes[start..end]).map(Some)
    }

    /// The value of cookie `name` in one `Cookie` header.
    fn cookie<'h>(&self, value: &'h HeaderValue, name: &str) -> Result<Option<&'h [u8]>, Failure> {
        let bytes = value.as_bytes();
        let mut offset = 0;
        for pair in bytes.split(|&b| b == b';') {
            let pair_start = offset;
            offset += pair.len() + 1;
            let lead = pair.iter().take_while(|&&b| b == b' ').count();
            let pair = &pair[lead..];
            if let Some(rest) = pair.strip_prefix(name.as_bytes())
                && rest.first() == Some(&b'=')
            {
                let start = pair_start + lead + name.len() + 1;
                let mut end = pair_start + lead + pair.len();
                while end > start && bytes[end - 1] == b' ' {
                    end -= 1;
                }
                // A quoted cookie value (RFC 6265 allows DQUOTEs around it).
                let (start, end) =
                    if end - start >= 2 && bytes[start] == b'"' && bytes[end - 1] == b'"' {
                        (start + 1, end - 1)
                    } else {
                        (start, end)
                    };
                return self.checked(&bytes[start..end]).map(Some);
            }
        }
        Ok(None)
    }

    /// The token's bytes: checked by the token parser, as base64url, not here.
    fn checked<'h>(&self, token: &'h [u8]) -> Result<&'h [u8], Failure> {
        if token.is_empty() {
            return Err(EMPTY);
        }
        if token.len() > self.max_len {
            return Err(Failure::Invalid(InvalidReason::TooLarge));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> TokenSources {
        TokenSources {
            header: Some(HeaderName::from_static("x-token")),
            cookie: Some("session".into()),
            max_len: 64,
        }
    }

    fn find(pairs: &[(&str, &str)]) -> Result<Vec<u8>, Failure> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        sources().find(&headers).map(<[u8]>::to_vec)
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(find(&[("authorization", "Bearer abc")]).unwrap(), b"abc");
        assert_eq!(
            find(&[("authorization", "bEaReR   abc  ")]).unwrap(),
            b"abc"
        );
        assert_eq!(find(&[("authorization", "Bearer")]), Err(EMPTY));
        assert_eq!(find(&[("authorization", "Bearer   ")]), Err(EMPTY));
    }

    #[test]
    fn other_schemes_mean_no_token() {
        assert_eq!(
            find(&[("authorization", "Basic abc")]),
            Err(Failure::Missing)
        );
        assert_eq!(
            find(&[("authorization", "Bearerabc")]),
            Err(Failure::Missing)
        );
        assert_eq!(find(&[]), Err(Failure::Missing));
    }

    #[test]
    fn duplicates_and_oversize_are_refused() {
        assert!(matches!(
            find(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
            Err(Failure::BadRequest(_))
        ));
        let huge = format!("Bearer {}", "a".repeat(65));
        assert_eq!(
            find(&[("authorization", &huge)]),
            Err(Failure::Invalid(InvalidReason::TooLarge))
        );
        let huger = format!("Bearer {}", "a".repeat(1000));
        assert_eq!(
            find(&[("authorization", &huger)]),
            Err(Failure::Invalid(InvalidReason::TooLarge))
        );
    }

    #[test]
    fn header_and_cookie_sources() {
        assert_eq!(find(&[("x-token", "abc")]).unwrap(), b"abc");
        assert_eq!(find(&[("x-token", "Bearer abc")]).unwrap(), b"abc");
        assert_eq!(
            find(&[("cookie", "a=1; session=tok; b=2")]).unwrap(),
            b"tok"
        );
        assert_eq!(find(&[("cookie", "session=\"tok\"")]).unwrap(), b"tok");
        assert_eq!(
            find(&[("cookie", "sessionx=1"), ("cookie", "session=t2")]).unwrap(),
            b"t2"
        );
        assert_eq!(find(&[("cookie", "other=1")]), Err(Failure::Missing));
        // The Authorization header wins over the cookie.
        assert_eq!(
            find(&[("authorization", "Bearer h"), ("cookie", "session=c")]).unwrap(),
            b"h"
        );
    }
}
