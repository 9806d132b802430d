//! A compact JWS split and decoded once, before anything about it is trusted.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Deserialize;

use super::claims::{BorrowedClaims, RegisteredClaims, borrowed_str};
use super::verify::{InvalidReason, InvalidToken};
use crate::algorithm::Algorithm;

/// A token parsed once: header, registered claims, raw payload and signature, none of it
/// verified yet.
pub struct UntrustedToken<'a> {
    signing_input: &'a str,
    /// The `alg` header.
    pub algorithm: Algorithm,
    /// The `kid` header.
    pub kid: Option<String>,
    /// The `x5t` header (certificate SHA-1 thumbprint).
    pub x5t: Option<String>,
    /// The `typ` header.
    pub typ: Option<String>,
    /// The registered claims.
    pub claims: RegisteredClaims,
    payload: Vec<u8>,
    signature_b64: &'a str,
}

impl std::fmt::Debug for UntrustedToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UntrustedToken")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("token", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
struct BorrowedHeader<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    x5t: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    typ: Option<Cow<'a, str>>,
    // Present means the issuer requires extensions we do not implement (RFC 7515 §4.1.11).
    // `jku`, `x5u` and `jwk` are deliberately not read: keys come only from the cache.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

fn invalid(reason: InvalidReason) -> InvalidToken {
    InvalidToken::new(reason)
}

fn decode_segment(segment: &str) -> Result<Vec<u8>, InvalidToken> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| invalid(InvalidReason::Malformed("a segment is not base64url")))
}

/// Decodes a segment into `buffer` when it fits, else onto the heap.
pub(crate) fn decode_into<'b>(
    segment: &str,
    buffer: &'b mut [u8],
) -> Result<Cow<'b, [u8]>, InvalidToken> {
    if base64::decoded_len_estimate(segment.len()) > buffer.len() {
        return decode_segment(segment).map(Cow::Owned);
    }
    let length = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode_slice(segment, buffer)
        .map_err(|_| invalid(InvalidReason::Malformed("a segment is not base64url")))?;
    Ok(Cow::Borrowed(&buffer[..length]))
}

/// The three segments of a compact JWS.
pub(crate) struct Segments<'t> {
    pub(crate) signing_input: &'t str,
    pub(crate) header: &'t str,
    pub(crate) payload: &'t str,
    pub(crate) signature: &'t str,
}

/// Splits a compact JWS of at most `max_len` bytes into exactly three segments (five segments
/// are a JWE).
pub(crate) fn split(token: &str, max_len: usize) -> Result<Segments<'_>, InvalidToken> {
    if token.len() > max_len {
        return Err(invalid(InvalidReason::TooLarge));
    }
    if token.is_empty() {
        return Err(invalid(InvalidReason::Malformed("empty token")));
    }
    let (signing_input, signature) = token
        .rsplit_once('.')
        .ok_or(invalid(InvalidReason::Malformed("not a compact JWS")))?;
    let (header, payload) = signing_input
        .split_once('.')
        .ok_or(invalid(InvalidReason::Malformed("not a compact JWS")))?;
    if payload.contains('.') {
        return Err(if token.bytes().filter(|&b| b == b'.').count() == 4 {
            invalid(InvalidReason::Encrypted)
        } else {
            invalid(InvalidReason::Malformed("too many segments"))
        });
    }
    Ok(Segments {
        signing_input,
        header,
        payload,
        signature,
    })
}

/// The header fields keyroll reads, borrowing from the decoded header.
pub(crate) struct Header<'b> {
    pub(crate) algorithm: Algorithm,
    pub(crate) kid: Option<Cow<'b, str>>,
    pub(crate) x5t: Option<Cow<'b, str>>,
    pub(crate) typ: Option<Cow<'b, str>>,
}

/// Parses a decoded header: refuses `none`, symmetric and unknown algorithms and `crit`, then
/// an empty signature.
pub(crate) fn parse_header<'b>(
    json: &'b [u8],
    segments: &Segments<'_>,
) -> Result<Header<'b>, InvalidToken> {
    // One bulk UTF-8 check, then a parser that need not re-check each string.
    let json = std::str::from_utf8(json)
        .map_err(|_| invalid(InvalidReason::Malformed("the header is not a JSON object")))?;
    let header: BorrowedHeader<'_> = serde_json::from_str(json)
        .map_err(|_| invalid(InvalidReason::Malformed("the header is not a JSON object")))?;
    let algorithm = match header.alg.as_deref() {
        None => return Err(invalid(InvalidReason::Malformed("the header has no alg"))),
        Some(name) => name
            .parse::<Algorithm>()
            .map_err(|_| invalid(InvalidReason::UnsupportedAlgorithm))?,
    };
    if header.crit.is_some() {
        return Err(invalid(InvalidReason::CriticalHeader));
    }
    if segments.signature.is_empty() {
        return Err(invalid(InvalidReason::Malformed("the signature is empty")));
    }
    Ok(Header {
        algorithm,
        kid: header.kid,
        x5t: header.x5t,
        typ: header.typ,
    })
}

/// Parses a decoded payload's registered claims.
pub(crate) fn parse_claims(json: &[u8]) -> Result<BorrowedClaims<'_>, InvalidToken> {
    let json = std::str::from_utf8(json).map_err(|_| {
        invalid(InvalidReason::Malformed(
            "the payload is not a JSON object with valid claims",
        ))
    })?;
    serde_json::from_str(json).map_err(|_| {
        invalid(InvalidReason::Malformed(
            "the payload is not a JSON object with valid claims",
        ))
    })
}

impl<'a> UntrustedToken<'a> {
    /// Splits and decodes a compact JWS of at most `max_len` bytes. Fails on anything but
    /// exactly three base64url segments with JSON header and payload, on `alg` `none` or any
    /// symmetric or unknown algorithm, and on `crit` headers.
    pub fn parse(token: &'a str, max_len: usize) -> Result<Self, InvalidToken> {
        let segments = split(token, max_len)?;
        let header_json = decode_segment(segments.header)?;
        let header = parse_header(&header_json, &segments)?;
        let payload = decode_segment(segments.payload)?;
        let claims = parse_claims(&payload)?.into_owned();
        Ok(UntrustedToken {
            signing_input: segments.signing_input,
            algorithm: header.algorithm,
            kid: header.kid.map(Cow::into_owned),
            x5t: header.x5t.map(Cow::into_owned),
            typ: header.typ.map(Cow::into_owned),
            claims,
            payload,
            signature_b64: segments.signature,
        })
    }

    /// `base64url(header).base64url(payload)`: what the signature covers.
    pub fn signing_input(&self) -> &str {
        self.signing_input
    }

    /// The decoded payload (JSON).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Decodes the signature.
    pub fn signature(&self) -> Result<Vec<u8>, InvalidToken> {
        decode_segment(self.signature_b64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_is_strict() {
        let mut buffer = [0u8; 16];
        assert_eq!(decode_into("QQ", &mut buffer).unwrap().as_ref(), b"A");
        for bad in ["QQ==", "QR", "Q", "Q+", "Q/", "Q Q", "QQ\n"] {
            assert!(decode_into(bad, &mut buffer).is_err(), "{bad:?}");
        }
        // Too long for the buffer: decoded on the heap.
        let long = "QUFB".repeat(10);
        assert_eq!(decode_into(&long, &mut buffer).unwrap().len(), 30);
    }
}
