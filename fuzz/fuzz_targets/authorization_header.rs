//! The validator layer (`ValidateLayer`) on requests with arbitrary credentials: `Authorization`
//! headers (none, one or several), a token header and `Cookie` headers, one per input line
//! (see [`Input`]).
//!
//! The layer is driven with a real `http::Request`; a model of RFC 6750's bearer syntax as the
//! layer documents it (scheme case-insensitive, spaces and tabs around the token, one
//! `Authorization` header at most, the size bound, then the token header, then the cookie)
//! says which credential it must find. Properties:
//! - no panic, and never a 200 (nothing in the input is validly signed) nor a 5xx;
//! - no credential: 401 with a bare `Bearer realm="fuzz"` challenge;
//! - several `Authorization` (or token) headers: 400 `invalid_request`;
//! - an empty or oversized credential: 401 `invalid_token` saying so;
//! - otherwise the token found is the model's: the 401's `error_description` is the one the
//!   verifier gives for that token alone;
//! - the body is exactly the refusal's fixed JSON (so it never echoes the token).
#![no_main]

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use keyroll_core::jwt::{InvalidReason, Verifier, VerifyError};
use keyroll_fuzz::setup;
use keyroll_tower::validate::ValidateLayer;
use libfuzzer_sys::fuzz_target;
use tower::{Layer as _, ServiceExt as _};

/// The layer's size bound here (small, so that inputs reach it).
const MAX_LEN: usize = 1024;
const TOKEN_HEADER: &str = "x-token";
const COOKIE_NAME: &str = "session";
const EMPTY: InvalidReason = InvalidReason::Malformed("the bearer token is empty");

/// The input, one header per line: `X:value` is a token header, `C:value` a `Cookie` header,
/// any other line an `Authorization` header (`A:value` too); at most three of each, in order.
#[derive(Debug, Default)]
struct Input<'a> {
    authorization: Vec<&'a [u8]>,
    token_header: Vec<&'a [u8]>,
    cookies: Vec<&'a [u8]>,
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Self {
        let mut input = Input::default();
        for line in data.split(|&b| b == b'\n') {
            let (list, value) = match line {
                [b'X', b':', value @ ..] => (&mut input.token_header, value),
                [b'C', b':', value @ ..] => (&mut input.cookies, value),
                [b'A', b':', value @ ..] => (&mut input.authorization, value),
                value => (&mut input.authorization, value),
            };
            if list.len() < 3 {
                list.push(value);
            }
        }
        input
    }
}

#[derive(Debug, PartialEq)]
enum Expect {
    Missing,
    BadRequest,
    Invalid(InvalidReason),
}

fn is_space(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().take_while(|b| is_space(b)).count();
    let end = bytes.len()
        - bytes[start..]
            .iter()
            .rev()
            .take_while(|b| is_space(b))
            .count();
    &bytes[start..end]
}

fn checked(token: &[u8]) -> Result<&[u8], Expect> {
    if token.is_empty() {
        Err(Expect::Invalid(EMPTY))
    } else if token.len() > MAX_LEN {
        Err(Expect::Invalid(InvalidReason::TooLarge))
    } else {
        Ok(token)
    }
}

/// `Bearer <token>` in one header value; `None`: another scheme (when a scheme is required).
fn bearer(value: &[u8], require_scheme: bool) -> Option<Result<&[u8], Expect>> {
    match value.iter().position(is_space) {
        Some(end) if value[..end].eq_ignore_ascii_case(b"bearer") => {
            Some(checked(trim(&value[end..])))
        }
        None if value.eq_ignore_ascii_case(b"bearer") => Some(Err(Expect::Invalid(EMPTY))),
        _ if require_scheme => None,
        _ => Some(checked(trim(value))),
    }
}

/// The credential of a header that may appear once.
fn single(values: &[HeaderValue], require_scheme: bool) -> Option<Result<&[u8], Expect>> {
    match values {
        [] => None,
        [value] if value.len() > MAX_LEN + 16 => {
            Some(Err(Expect::Invalid(InvalidReason::TooLarge)))
        }
        [value] => bearer(value.as_bytes(), require_scheme),
        _ => Some(Err(Expect::BadRequest)),
    }
}

fn cookie(value: &[u8]) -> Option<Result<&[u8], Expect>> {
    for pair in value.split(|&b| b == b';') {
        let pair = &pair[pair.iter().take_while(|&&b| b == b' ').count()..];
        if let Some(rest) = pair.strip_prefix(COOKIE_NAME.as_bytes())
            && let Some(rest) = rest.strip_prefix(b"=")
        {
            let end = rest.len() - rest.iter().rev().take_while(|&&b| b == b' ').count();
            let mut found = &rest[..end];
            if found.len() >= 2 && found[0] == b'"' && found[found.len() - 1] == b'"' {
                found = &found[1..found.len() - 1];
            }
            return Some(checked(found));
        }
    }
    None
}

/// The credential the layer must find.
fn model<'a>(
    authorization: &'a [HeaderValue],
    token_header: &'a [HeaderValue],
    cookies: &'a [HeaderValue],
) -> Result<&'a [u8], Expect> {
    if let Some(found) = single(authorization, true) {
        return found;
    }
    if let Some(found) = single(token_header, false) {
        return found;
    }
    cookies
        .iter()
        .find_map(|value| cookie(value.as_bytes()))
        .unwrap_or(Err(Expect::Missing))
}

/// The values that are valid header values (others cannot be sent).
fn values(raw: &[&[u8]]) -> Vec<HeaderValue> {
    raw.iter()
        .filter_map(|bytes| HeaderValue::from_bytes(bytes).ok())
        .collect()
}

fn challenge(error: Option<(&str, &str)>) -> String {
    match error {
        None => "Bearer realm=\"fuzz\"".to_owned(),
        Some((code, description)) => {
            format!("Bearer realm=\"fuzz\", error=\"{code}\", error_description=\"{description}\"")
        }
    }
}

struct Target {
    layer: ValidateLayer,
    verifier: Verifier,
}

fn target() -> &'static Target {
    static TARGET: std::sync::OnceLock<Target> = std::sync::OnceLock::new();
    TARGET.get_or_init(|| {
        let keys = &setup::fixture().keys;
        Target {
            layer: ValidateLayer::builder()
                .issuers(setup::issuers(keys))
                .realm("fuzz")
                .max_token_len(MAX_LEN)
                .token_header(HeaderName::from_static(TOKEN_HEADER))
                .token_cookie(COOKIE_NAME)
                .build(),
            verifier: Verifier::new(setup::issuers(keys)).max_token_len(MAX_LEN),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let fixture = setup::fixture();
    let target = target();
    let authorization = values(&input.authorization);
    let token_header = values(&input.token_header);
    let cookies = values(&input.cookies);

    let mut request = Request::new(());
    let headers = request.headers_mut();
    for value in &authorization {
        headers.append(AUTHORIZATION, value.clone());
    }
    for value in &token_header {
        headers.append(HeaderName::from_static(TOKEN_HEADER), value.clone());
    }
    for value in &cookies {
        headers.append(COOKIE, value.clone());
    }
    let service = target
        .layer
        .layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"handler"))))
        }));
    let response = fixture
        .runtime
        .block_on(service.oneshot(request))
        .expect("infallible");
    let status = response.status();
    let www_authenticate = response.headers().get(WWW_AUTHENTICATE).cloned();
    let body = fixture
        .runtime
        .block_on(response.into_body().collect())
        .expect("a refusal's body")
        .to_bytes();

    let found = model(&authorization, &token_header, &cookies);
    let context = || format!("found {found:?}, answered {status} {www_authenticate:?} {body:?}");
    assert_ne!(
        status,
        StatusCode::OK,
        "accepted unsigned credentials: {}",
        context()
    );
    let expect = match &found {
        Ok(token) => match fixture.verify_with(&target.verifier, token) {
            Ok(verified) => panic!("the verifier accepts {verified:?}"),
            Err(VerifyError::Invalid(invalid)) => Expect::Invalid(invalid.reason()),
            Err(other) => panic!("bad input made the keys unavailable: {other}"),
        },
        Err(expect) => match expect {
            Expect::Missing => Expect::Missing,
            Expect::BadRequest => Expect::BadRequest,
            Expect::Invalid(reason) => Expect::Invalid(*reason),
        },
    };
    let (want_status, want_challenge, code, description) = match &expect {
        Expect::Missing => (
            StatusCode::UNAUTHORIZED,
            challenge(None),
            "missing_token",
            "a bearer token is required",
        ),
        Expect::BadRequest => {
            let description = "the request has several credentials headers";
            (
                StatusCode::BAD_REQUEST,
                challenge(Some(("invalid_request", description))),
                "invalid_request",
                description,
            )
        }
        Expect::Invalid(reason) => (
            StatusCode::UNAUTHORIZED,
            challenge(Some(("invalid_token", reason.description()))),
            "invalid_token",
            reason.description(),
        ),
    };
    assert_eq!(status, want_status, "{}", context());
    assert_eq!(
        www_authenticate.as_ref().map(HeaderValue::as_bytes),
        Some(want_challenge.as_bytes()),
        "{}",
        context()
    );
    let want_body = format!(r#"{{"error":"{code}","error_description":"{description}"}}"#);
    assert_eq!(&body[..], want_body.as_bytes(), "{}", context());
});
