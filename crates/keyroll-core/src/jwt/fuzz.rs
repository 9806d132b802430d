//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`, never on by default;
//! not a stable API): the crate-private token reader and segment decoder, reached the way the
//! verifier reaches them, so that the targets can hold them to `serde_json` and `base64`.

use super::claims::{BorrowedClaims, RegisteredClaims};
use super::json::{self, Reader, SyntaxError};
use super::token::{self, buffer, decode_into};
use super::verify::InvalidReason;
use crate::algorithm::Algorithm;

/// How many containers the reader lets be open at once, the top-level object included.
pub const MAX_DEPTH: usize = json::MAX_DEPTH;

/// A top-level member's value, as the reader read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A string, escapes decoded (as `iss` or `kid` are read).
    String(String),
    /// A number (as any number is checked), and read again as a NumericDate (as `exp` is).
    Number {
        /// The number's text.
        text: String,
        /// The NumericDate and how many bytes its reading took; `None` if it was refused.
        date: Option<(u64, usize)>,
    },
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// An array of strings (as `aud` or `roles` are read).
    Strings(Vec<String>),
    /// Any other array, or an object: its text, as skipped (as unknown members are).
    Skipped(String),
}

/// Whether the reader accepts `json` as an object, skipping every member's value (as the
/// verifier checks the members it does not read).
pub fn accepts(json: &str) -> bool {
    Reader::object(json, |_, reader| reader.skip_value()).is_ok()
}

/// Every member of the object `json`, in order, keys decoded, each value read as its first
/// byte says the verifier would read it; `None` if the reader refuses the text.
pub fn read_object(json: &str) -> Option<Vec<(String, Value)>> {
    let mut members = Vec::new();
    Reader::object(json, |key, reader| {
        let start = reader.position();
        let value = match json.as_bytes().get(start) {
            Some(b'"') => Value::String(reader.string()?.into_owned()),
            Some(b'n') if reader.null()? => Value::Null,
            Some(&first @ (b't' | b'f')) => {
                reader.skip_value()?;
                Value::Bool(first == b't')
            }
            Some(b'-' | b'0'..=b'9') => {
                let text = reader.number()?.to_owned();
                let end = reader.position();
                reader.rewind(start);
                let date = reader
                    .numeric_date()
                    .ok()
                    .map(|date| (date, reader.position() - start));
                reader.rewind(end);
                Value::Number { text, date }
            }
            Some(b'[') => {
                let mut strings = Vec::new();
                match reader.strings(|string| strings.push(string.into_owned())) {
                    Ok(()) => Value::Strings(strings),
                    Err(SyntaxError) => {
                        reader.rewind(start);
                        skipped(json, reader, start)?
                    }
                }
            }
            _ => skipped(json, reader, start)?,
        };
        members.push((key.into_owned(), value));
        Ok(())
    })
    .ok()?;
    Some(members)
}

fn skipped(json: &str, reader: &mut Reader<'_>, start: usize) -> json::Result<Value> {
    reader.skip_value()?;
    let text = json.get(start..reader.position()).ok_or(SyntaxError)?;
    Ok(Value::Skipped(text.to_owned()))
}

/// Whether the object `json` has a top-level member `name` (as a required claim is looked for).
pub fn has_member(json: &str, name: &str) -> bool {
    json::has_member(json, name)
}

/// The registered claims of a decoded payload, as the verifier parses them.
pub fn claims(payload: &[u8]) -> Result<RegisteredClaims, InvalidReason> {
    token::parse_claims(payload)
        .map(BorrowedClaims::into_owned)
        .map_err(|error| error.reason())
}

/// The header fields the verifier reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// `alg`.
    pub algorithm: Algorithm,
    /// `kid`.
    pub kid: Option<String>,
    /// `x5t`.
    pub x5t: Option<String>,
    /// `typ`.
    pub typ: Option<String>,
}

/// A decoded header, as the verifier parses it.
pub fn header(json: &[u8]) -> Result<Header, InvalidReason> {
    let header = token::parse_header(json).map_err(|error| error.reason())?;
    let owned = |value: Option<std::borrow::Cow<'_, str>>| value.map(|v| v.into_owned());
    Ok(Header {
        algorithm: header.algorithm,
        kid: owned(header.kid),
        x5t: owned(header.x5t),
        typ: owned(header.typ),
    })
}

/// Decodes a token segment as the verifier does, into a stack buffer of 64 bytes when it fits
/// (else onto the heap); `None` if it is not strict base64url.
pub fn decode_segment(segment: &[u8]) -> Option<Vec<u8>> {
    let mut stack = buffer::<64>();
    decode_into(segment, &mut stack)
        .ok()
        .map(|d| d.into_owned())
}
