//! keyroll's JSON reader against `serde_json`, on arbitrary text.
//!
//! Properties, for the whole object and for each way the verifier reads it:
//! - accept/refuse: the reader accepts an object exactly when `serde_json` does, except that
//!   it refuses containers nested deeper than its documented bound (and only then);
//! - members: the same names (escapes decoded), in the same order, duplicates included;
//!   strings, numbers, literals, arrays of strings and skipped values read as `serde_json`
//!   reads them; a number's NumericDate (`exp`) is `serde_json`'s `f64`, truncated, in range;
//! - claims and header: the registered claims and the header fields are `serde_json`'s
//!   (types checked, none twice), refused exactly when the reference refuses;
//! - `has_member` (required claims) finds exactly the top-level names.
#![no_main]

use keyroll_core::__fuzz::{self, Value};
use keyroll_core::jwt::InvalidReason;
use keyroll_fuzz::reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // Not UTF-8: not a JSON text, for the claims nor for the header.
        let malformed = InvalidReason::Malformed("the header is not a JSON object");
        assert_eq!(__fuzz::header(data), Err(malformed));
        assert!(__fuzz::claims(data).is_err());
        return;
    };
    let accepted = __fuzz::accepts(text);
    let members = reference::object(text);
    match &members {
        None => assert!(!accepted, "the reader accepts what serde_json refuses"),
        Some(members) => assert_eq!(
            accepted,
            !members.too_deep(),
            "serde_json accepts; the reader must too, unless it nests too deep"
        ),
    }

    let read = __fuzz::read_object(text);
    match (&members, &read) {
        (Some(members), Some(read)) => {
            assert_eq!(read.len(), members.0.len(), "member count");
            for ((key, value), (name, raw)) in read.iter().zip(&members.0) {
                assert_eq!(key, name, "member name");
                check_value(value, raw);
            }
        }
        (None, Some(read)) => panic!("the reader reads what serde_json refuses: {read:?}"),
        // The one way a text the reader accepts can fail to be read member by member: a
        // top-level string whose escapes are not a string (a lone surrogate), which skipping
        // accepts (as serde_json's skipping does) but decoding refuses.
        (Some(members), None) if accepted => assert!(
            members
                .0
                .iter()
                .any(|(_, raw)| { raw.get().starts_with('"') && reference::string(raw).is_none() }),
            "the reader accepts the object but cannot read its members"
        ),
        (_, None) => {}
    }

    let claims = __fuzz::claims(data);
    let expected = reference::claims(text);
    match (&claims, &expected) {
        (Ok(claims), Some(expected)) => assert_eq!(claims, expected),
        (Err(reason), None) => assert_eq!(
            *reason,
            InvalidReason::Malformed("the payload is not a JSON object with valid claims")
        ),
        _ => panic!("claims: keyroll {claims:?}, serde_json {expected:?}"),
    }
    assert_eq!(__fuzz::header(data), reference::header(text), "header");

    if accepted && let Some(members) = &members {
        for (name, _) in &members.0 {
            assert!(__fuzz::has_member(text, name), "has_member({name:?})");
        }
        for absent in ["tid", "exp", "", "\u{e9}"] {
            if members.count(absent) == 0 {
                assert!(!__fuzz::has_member(text, absent), "has_member({absent:?})");
            }
        }
    }
});

fn check_value(value: &Value, raw: &serde_json::value::RawValue) {
    let text = raw.get();
    match value {
        Value::String(string) => {
            assert_eq!(Some(string), reference::string(raw).as_ref(), "{text}");
        }
        Value::Number { text: number, date } => {
            // serde_json's raw value is exactly the number its grammar reads.
            assert_eq!(number, text, "a number's extent");
            let reference = reference::numeric_date(raw);
            assert_eq!(
                date.map(|(value, _)| value),
                reference,
                "NumericDate {text}"
            );
            if let Some((_, length)) = date {
                assert_eq!(*length, number.len(), "a NumericDate's extent: {text}");
            }
        }
        Value::Bool(b) => assert_eq!(text, if *b { "true" } else { "false" }),
        Value::Null => assert_eq!(text, "null"),
        Value::Strings(strings) => {
            assert_eq!(Some(strings), reference::strings(raw).as_ref(), "{text}");
        }
        Value::Skipped(skipped) => {
            assert_eq!(skipped, text, "a skipped value's extent");
            assert!(
                reference::strings(raw).is_none(),
                "an array of strings the reader could not read as one: {text}"
            );
        }
    }
}
