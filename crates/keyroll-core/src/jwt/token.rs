//! A compact JWS split and decoded once, before anything about it is trusted.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use super::claims::{BorrowedClaims, RegisteredClaims};
use super::json::{Reader, unset};
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

fn invalid(reason: InvalidReason) -> InvalidToken {
    InvalidToken::new(reason)
}

/// Token segments are decoded strictly (no padding, no stray bits, URL-safe alphabet only):
/// the signature and payload of every token pass through here. `base64-simd` decodes with the
/// CPU's vector instructions (about four times `base64`'s speed on a signature); it is held to
/// the `base64` crate's `URL_SAFE_NO_PAD` by a differential test and by the fuzz targets.
const BASE64URL: base64_simd::Base64 = base64_simd::URL_SAFE_NO_PAD;

fn not_base64() -> InvalidToken {
    invalid(InvalidReason::Malformed("a segment is not base64url"))
}

fn decode_segment(segment: &[u8]) -> Result<Vec<u8>, InvalidToken> {
    BASE64URL.decode_to_vec(segment).map_err(|_| not_base64())
}

/// A buffer to decode into, left uninitialized: the decoder writes what it returns, so no
/// token pays for zeroing bytes it never uses.
pub(crate) fn buffer<const N: usize>() -> [MaybeUninit<u8>; N] {
    [MaybeUninit::uninit(); N]
}

/// Decodes a segment into `buffer` when it fits, else onto the heap.
pub(crate) fn decode_into<'b>(
    segment: &[u8],
    buffer: &'b mut [MaybeUninit<u8>],
) -> Result<Cow<'b, [u8]>, InvalidToken> {
    let length = BASE64URL
        .decoded_length(segment)
        .map_err(|_| not_base64())?;
    let Some(buffer) = buffer.get_mut(..length) else {
        return decode_segment(segment).map(Cow::Owned);
    };
    let decoded = BASE64URL
        .decode(segment, base64_simd::Out::from_uninit_slice(buffer))
        .map_err(|_| not_base64())?;
    Ok(Cow::Borrowed(decoded))
}

/// The three segments of a compact JWS. Bytes, not text: base64url decoding checks every
/// byte of them, so the token need not be checked as UTF-8 first.
pub(crate) struct Segments<'t> {
    pub(crate) signing_input: &'t [u8],
    pub(crate) header: &'t [u8],
    pub(crate) payload: &'t [u8],
    pub(crate) signature: &'t [u8],
}

/// Splits a compact JWS of at most `max_len` bytes into exactly three segments (five segments
/// are a JWE).
pub(crate) fn split(token: &[u8], max_len: usize) -> Result<Segments<'_>, InvalidToken> {
    if token.len() > max_len {
        return Err(invalid(InvalidReason::TooLarge));
    }
    if token.is_empty() {
        return Err(invalid(InvalidReason::Malformed("empty token")));
    }
    // One SIMD pass per dot: a token is mostly its signature, so this is the cheap way to
    // find exactly two.
    let not_jws = || invalid(InvalidReason::Malformed("not a compact JWS"));
    let first = memchr::memchr(b'.', token).ok_or_else(not_jws)?;
    let second = memchr::memchr(b'.', &token[first + 1..])
        .map(|at| first + 1 + at)
        .ok_or_else(not_jws)?;
    if memchr::memchr(b'.', &token[second + 1..]).is_some() {
        return Err(if memchr::memchr_iter(b'.', token).count() == 4 {
            invalid(InvalidReason::Encrypted)
        } else {
            invalid(InvalidReason::Malformed("too many segments"))
        });
    }
    let (signing_input, signature) = (&token[..second], &token[second + 1..]);
    let (header, payload) = (&token[..first], &token[first + 1..second]);
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

/// Parses a decoded header: refuses `none`, symmetric and unknown algorithms and `crit`.
/// `jku`, `x5u` and `jwk` are deliberately not read: keys come only from the cache.
pub(crate) fn parse_header(json: &[u8]) -> Result<Header<'_>, InvalidToken> {
    let malformed = || invalid(InvalidReason::Malformed("the header is not a JSON object"));
    let json = std::str::from_utf8(json).map_err(|_| malformed())?;
    let (mut alg, mut kid, mut x5t, mut typ) = (None, None, None, None);
    // Present means the issuer requires extensions we do not implement (RFC 7515 §4.1.11):
    // the number of names it lists, which must be a non-empty array of them.
    let mut critical: Option<usize> = None;
    Reader::object(json, |key, reader| {
        match key.as_bytes() {
            b"alg" => {
                unset(&alg)?;
                alg = Some(reader.string()?);
            }
            b"kid" => {
                unset(&kid)?;
                kid = Some(reader.string()?);
            }
            b"x5t" => {
                unset(&x5t)?;
                x5t = Some(reader.string()?);
            }
            b"typ" => {
                unset(&typ)?;
                typ = Some(reader.string()?);
            }
            b"crit" => {
                unset(&critical)?;
                let mut names = 0;
                if reader.at_array() {
                    reader.strings(|_| names += 1)?;
                } else {
                    reader.skip_value()?;
                }
                critical = Some(names);
            }
            _ => reader.skip_value()?,
        }
        Ok(())
    })
    .map_err(|_| malformed())?;
    let algorithm = match alg.as_deref() {
        None => return Err(invalid(InvalidReason::Malformed("the header has no alg"))),
        Some(name) => Algorithm::named(name).ok_or(invalid(InvalidReason::UnsupportedAlgorithm))?,
    };
    match critical {
        None => {}
        Some(0) => {
            return Err(invalid(InvalidReason::Malformed(
                "`crit` must be a non-empty array of header names",
            )));
        }
        Some(_) => return Err(invalid(InvalidReason::CriticalHeader)),
    }
    Ok(Header {
        algorithm,
        kid,
        x5t,
        typ,
    })
}

/// Parses a decoded payload's registered claims.
pub(crate) fn parse_claims(json: &[u8]) -> Result<BorrowedClaims<'_>, InvalidToken> {
    parse_claims_text(payload_text(json)?)
}

fn malformed_payload() -> InvalidToken {
    invalid(InvalidReason::Malformed(
        "the payload is not a JSON object with valid claims",
    ))
}

/// The payload as text (JSON is UTF-8), refused as [`parse_claims`] refuses it.
pub(crate) fn payload_text(json: &[u8]) -> Result<&str, InvalidToken> {
    std::str::from_utf8(json).map_err(|_| malformed_payload())
}

/// [`parse_claims`] of a payload already known to be text.
pub(crate) fn parse_claims_text(json: &str) -> Result<BorrowedClaims<'_>, InvalidToken> {
    BorrowedClaims::parse(json).map_err(|_| malformed_payload())
}

impl Segments<'_> {
    /// Fails on an empty signature. Checked after the header, so that a token refused for its
    /// algorithm (`alg: none` comes unsigned) says so.
    pub(crate) fn require_signature(&self) -> Result<(), InvalidToken> {
        if self.signature.is_empty() {
            return Err(invalid(InvalidReason::Malformed("the signature is empty")));
        }
        Ok(())
    }
}

impl<'a> UntrustedToken<'a> {
    /// Splits and decodes a compact JWS of at most `max_len` bytes. Fails on anything but
    /// exactly three base64url segments with JSON header and payload, on `alg` `none` or any
    /// symmetric or unknown algorithm, and on `crit` headers.
    pub fn parse(token: &'a str, max_len: usize) -> Result<Self, InvalidToken> {
        let segments = split(token.as_bytes(), max_len)?;
        let header_json = decode_segment(segments.header)?;
        let header = parse_header(&header_json)?;
        segments.require_signature()?;
        let payload = decode_segment(segments.payload)?;
        let claims = parse_claims(&payload)?.into_owned();
        // The dots are ASCII, so these are char boundaries of the token.
        let (signing_input, rest) = token.split_at(segments.signing_input.len());
        Ok(UntrustedToken {
            signing_input,
            algorithm: header.algorithm,
            kid: header.kid.map(Cow::into_owned),
            x5t: header.x5t.map(Cow::into_owned),
            typ: header.typ.map(Cow::into_owned),
            claims,
            payload,
            signature_b64: &rest[1..],
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
        decode_segment(self.signature_b64.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str) -> Result<Algorithm, InvalidReason> {
        parse_header(json.as_bytes())
            .map(|header| header.algorithm)
            .map_err(|error| error.reason())
    }

    #[test]
    fn headers_are_read_strictly() {
        let malformed = Err(InvalidReason::Malformed("the header is not a JSON object"));
        assert_eq!(header(r#"{"alg":"ES256","kid":"k"}"#), Ok(Algorithm::ES256));
        assert_eq!(header(r#"{"\u0061lg":"ES256"}"#), Ok(Algorithm::ES256));
        // One token, one algorithm: a second `alg` (or any header given twice) is refused.
        assert_eq!(header(r#"{"alg":"ES256","alg":"HS256"}"#), malformed);
        assert_eq!(header(r#"{"alg":"ES256","kid":"a","kid":"b"}"#), malformed);
        assert_eq!(
            header(r#"{"alg":"none"}"#),
            Err(InvalidReason::UnsupportedAlgorithm)
        );
        assert_eq!(
            header(r#"{"alg":"HS256"}"#),
            Err(InvalidReason::UnsupportedAlgorithm)
        );
        assert_eq!(
            header(r#"{"kid":"k"}"#),
            Err(InvalidReason::Malformed("the header has no alg"))
        );
        assert_eq!(
            header(r#"{"alg":"ES256","crit":["exp"]}"#),
            Err(InvalidReason::CriticalHeader)
        );
        // `crit`, when present, is a non-empty array of names (RFC 7515 §4.1.11): null, an
        // empty array or another value is not taken as absent.
        for crit in ["null", "[]", "\"exp\"", "{}", "1"] {
            assert_eq!(
                header(&format!(r#"{{"alg":"ES256","crit":{crit}}}"#)),
                Err(InvalidReason::Malformed(
                    "`crit` must be a non-empty array of header names"
                )),
                "{crit}"
            );
        }
        assert_eq!(header(r#"{"alg":"ES256","crit":[1]}"#), malformed);
        // A broken `crit` value breaks the header, not just the extension check.
        assert_eq!(header(r#"{"alg":"ES256","crit":[1,}"#), malformed);
        assert_eq!(
            header(r#"{"alg":"ES256","jku":"https://x","jwk":{"kty":"oct"}}"#),
            Ok(Algorithm::ES256)
        );
    }

    /// Decodes as the verifier does, into a 64-byte stack buffer (longer segments go to the
    /// heap), and as the `base64` crate does.
    fn both_decodings(segment: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        use base64::Engine as _;
        let mut stack = buffer::<64>();
        let ours = decode_into(segment, &mut stack).ok().map(Cow::into_owned);
        let reference = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment)
            .ok();
        (ours, reference)
    }

    proptest::proptest! {
        #[test]
        fn segments_decode_as_the_base64_crate_decodes_them(
            segment in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => proptest::sample::select(
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()
                    ),
                    1 => proptest::sample::select(b"=+/ .\n\x00\x80\xff".to_vec()),
                ],
                0..200,
            ),
        ) {
            let (ours, reference) = both_decodings(&segment);
            proptest::prop_assert_eq!(ours, reference);
        }

        #[test]
        fn encoded_bytes_decode_back(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            use base64::Engine as _;
            let segment = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
            let (ours, reference) = both_decodings(segment.as_bytes());
            proptest::prop_assert_eq!(ours.as_deref(), Some(bytes.as_slice()));
            proptest::prop_assert_eq!(reference.as_deref(), Some(bytes.as_slice()));
        }
    }

    #[test]
    fn base64url_is_strict() {
        let mut buffer = super::buffer::<16>();
        assert_eq!(decode_into(b"QQ", &mut buffer).unwrap().as_ref(), b"A");
        for bad in ["QQ==", "QR", "Q", "Q+", "Q/", "Q Q", "QQ\n", "Q\u{e9}"] {
            assert!(decode_into(bad.as_bytes(), &mut buffer).is_err(), "{bad:?}");
        }
        assert!(decode_into(b"QQ\xff", &mut buffer).is_err());
        // Too long for the buffer: decoded on the heap.
        let long = "QUFB".repeat(10);
        assert_eq!(decode_into(long.as_bytes(), &mut buffer).unwrap().len(), 30);
    }
}
