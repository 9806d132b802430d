//! A compact JWS split and decoded once, before anything about it is trusted.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Deserialize;

use super::claims::{BorrowedClaims, RegisteredClaims};
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
    #[serde(borrow)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    x5t: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
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

impl<'a> UntrustedToken<'a> {
    /// Splits and decodes a compact JWS of at most `max_len` bytes. Fails on anything but
    /// exactly three base64url segments with JSON header and payload, on `alg` `none` or any
    /// symmetric or unknown algorithm, and on `crit` headers.
    pub fn parse(token: &'a str, max_len: usize) -> Result<Self, InvalidToken> {
        if token.len() > max_len {
            return Err(invalid(InvalidReason::TooLarge));
        }
        if token.is_empty() {
            return Err(invalid(InvalidReason::Malformed("empty token")));
        }
        let (signing_input, signature_b64) = token
            .rsplit_once('.')
            .ok_or(invalid(InvalidReason::Malformed("not a compact JWS")))?;
        let (header_b64, payload_b64) = signing_input
            .split_once('.')
            .ok_or(invalid(InvalidReason::Malformed("not a compact JWS")))?;
        if payload_b64.contains('.') {
            return Err(if token.bytes().filter(|&b| b == b'.').count() == 4 {
                invalid(InvalidReason::Encrypted)
            } else {
                invalid(InvalidReason::Malformed("too many segments"))
            });
        }
        let header_json = decode_segment(header_b64)?;
        let header: BorrowedHeader<'_> = serde_json::from_slice(&header_json)
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
        let payload = decode_segment(payload_b64)?;
        let claims: BorrowedClaims<'_> = serde_json::from_slice(&payload).map_err(|_| {
            invalid(InvalidReason::Malformed(
                "the payload is not a JSON object with valid claims",
            ))
        })?;
        let claims = claims.into_owned();
        // The signature is decoded only when it is checked, after every cheaper check.
        if signature_b64.is_empty() {
            return Err(invalid(InvalidReason::Malformed("the signature is empty")));
        }
        Ok(UntrustedToken {
            signing_input,
            algorithm,
            kid: header.kid.map(Cow::into_owned),
            x5t: header.x5t.map(Cow::into_owned),
            typ: header.typ.map(Cow::into_owned),
            claims,
            payload,
            signature_b64,
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

    /// Decodes the signature into `buffer`, returning the decoded part.
    pub fn signature_into<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b [u8], InvalidToken> {
        let length = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(self.signature_b64, buffer)
            .map_err(|_| {
                invalid(InvalidReason::Malformed(
                    "the signature is not base64url or too long",
                ))
            })?;
        Ok(&buffer[..length])
    }

    pub(crate) fn into_parts(self) -> (RegisteredClaims, Vec<u8>) {
        (self.claims, self.payload)
    }
}
