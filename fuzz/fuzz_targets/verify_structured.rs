//! The verifier on validly signed tokens over mutated JSON.
//!
//! The input picks edits to a valid header and claims set (escapes, `\u` surrogates paired and
//! lone, duplicate members, deep nesting, huge and fractional numbers, unicode, stray bytes);
//! the target signs the result with the fixture's real key and verifies it. Properties:
//! - no panic;
//! - it accepts exactly when the reference does ([`reference::verdict`]: `serde_json` reads
//!   header and claims as objects whose registered members have their types, none twice, and
//!   the claims pass the issuer's rules), so if `serde_json` refuses the JSON, so does keyroll;
//! - an accepted token hands on the claims `serde_json` reads (registered claims equal, the
//!   payload byte for byte, and `RawClaims`-style parsing into a `serde_json::Value` works);
//! - verifying again (now with the header cache warm) gives the same outcome.
#![no_main]

use arbitrary::Arbitrary;
use keyroll_core::jwt::VerifyError;
use keyroll_core::{__fuzz, Algorithm};
use keyroll_fuzz::setup::{self, AUDIENCE_A, AUDIENCE_B, ES256_KID, ISSUER_A, ISSUER_B, NOW};
use keyroll_fuzz::{b64url, reference};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// RS256 when this is 31 mod 32 (RSA signing is slow), else ES256.
    signer: u8,
    /// Issuer B (every rule set) rather than A.
    issuer_b: bool,
    /// Verifies a second time when this is 0 mod 8.
    again: u8,
    header: Doc,
    claims: Doc,
}

#[derive(Arbitrary, Debug)]
struct Doc {
    edits: Vec<Edit>,
    /// Replaces the document when the first byte is below 16 (rarely): any text at all.
    raw: Option<(u8, String)>,
}

/// A string, written with a choice of escapes, and perhaps extra `\u` code units at its end.
#[derive(Arbitrary, Debug, Clone)]
struct JStr {
    text: String,
    escape: Escape,
    /// Code units appended as `\uXXXX` (surrogates paired or not).
    units: Vec<Unit>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Escape {
    /// Only what JSON requires.
    Minimal,
    /// Every character as `\u` (astral ones as surrogate pairs), lower-case hex.
    AllLower,
    /// Every character as `\u`, upper-case hex.
    AllUpper,
    /// The short escapes where one exists (`\/`, `\n`, …), else as is.
    Short,
    /// Characters whose bit is set in the mask as `\u`.
    Mixed(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Unit {
    /// A valid surrogate pair for U+10000 + n.
    Pair(u16),
    /// A lone high surrogate.
    High(u16),
    /// A lone low surrogate.
    Low(u16),
    /// A low then a high surrogate.
    Reversed(u16),
    /// Any code unit.
    Any(u16),
}

#[derive(Arbitrary, Debug, Clone)]
enum Val {
    Str(JStr),
    Num(Number),
    Bool(bool),
    Null,
    Arr(Vec<Val>),
    Obj(Vec<(JStr, Val)>),
    /// Any text as the value.
    Raw(String),
}

#[derive(Arbitrary, Debug, Clone)]
enum Number {
    /// A time near now: `NOW + delta`, perhaps with a fraction or as `e` notation.
    Date {
        delta: i32,
        fraction: Option<u32>,
        exponent: bool,
    },
    Int(i64),
    Float(f64),
    /// Many digits: an integer far beyond 64 bits.
    Huge {
        digits: u16,
        negative: bool,
    },
    /// Mantissa and exponent, as in `123e-4`.
    Exp {
        mantissa: u64,
        exponent: i16,
    },
    /// `NOW` followed by nines after the point: on the edge of the next second.
    Nines {
        count: u8,
    },
    /// Digit-ish text, perhaps not a number at all.
    Text(String),
}

#[derive(Arbitrary, Debug, Clone)]
enum Key {
    /// A name the verifier reads (the header's or the claims'), or `tid`.
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Edit {
    /// Sets member `at`'s value.
    Set {
        at: u8,
        value: Val,
    },
    /// Inserts a member (a duplicate when the name is already there).
    Insert {
        at: u8,
        key: Key,
        value: Val,
    },
    Remove {
        at: u8,
    },
    /// Inserts a copy of member `at` right after it, its name perhaps escaped.
    Duplicate {
        at: u8,
        escape: Escape,
    },
    /// Writes member `at`'s name with escapes.
    EscapeKey {
        at: u8,
        escape: Escape,
    },
    /// Writes member `at`'s string value with escapes.
    EscapeValue {
        at: u8,
        escape: Escape,
    },
    /// Appends `\u` code units to member `at`'s name or string value.
    Units {
        at: u8,
        key: bool,
        units: Vec<Unit>,
    },
    /// Wraps member `at`'s value in containers, down to about the reader's depth bound.
    Nest {
        at: u8,
        depth: u8,
        objects: bool,
    },
    /// Sets member `at`'s value to a number.
    Number {
        at: u8,
        number: Number,
    },
    /// Whitespace (any of JSON's four, or others) around member `at`.
    Space {
        at: u8,
        space: Vec<u8>,
    },
    /// A byte inserted into (or removed from) the rendered text.
    Byte {
        at: u16,
        byte: u8,
        remove: bool,
    },
}

const KNOWN: [&str; 16] = [
    "alg", "kid", "x5t", "typ", "crit", "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope",
    "scp", "roles", "tid",
];

struct Member {
    key: JStr,
    value: Val,
    space: Vec<u8>,
}

fn plain(text: &str) -> JStr {
    JStr {
        text: text.to_owned(),
        escape: Escape::Minimal,
        units: Vec::new(),
    }
}

fn member(key: &str, value: Val) -> Member {
    Member {
        key: plain(key),
        value,
        space: Vec::new(),
    }
}

fn string(text: &str) -> Val {
    Val::Str(plain(text))
}

fn date(delta: i32) -> Val {
    Val::Num(Number::Date {
        delta,
        fraction: None,
        exponent: false,
    })
}

fn push_unit(out: &mut Vec<u8>, unit: u16, upper: bool) {
    let text = if upper {
        format!("\\u{unit:04X}")
    } else {
        format!("\\u{unit:04x}")
    };
    out.extend_from_slice(text.as_bytes());
}

fn render_str(out: &mut Vec<u8>, s: &JStr) {
    out.push(b'"');
    for (i, c) in s.text.chars().enumerate() {
        let (all, upper) = match s.escape {
            Escape::AllLower => (true, false),
            Escape::AllUpper => (true, true),
            Escape::Mixed(mask) => (mask >> (i % 64) & 1 == 1, i % 3 == 0),
            _ => (false, false),
        };
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '/' if matches!(s.escape, Escape::Short) => Some("\\/"),
            _ => None,
        };
        if all || (short.is_none() && (c as u32) < 0x20) {
            let mut units = [0u16; 2];
            for &unit in c.encode_utf16(&mut units).iter() {
                push_unit(out, unit, upper);
            }
        } else if let Some(short) = short {
            out.extend_from_slice(short.as_bytes());
        } else {
            let mut bytes = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut bytes).as_bytes());
        }
    }
    for unit in &s.units {
        let (first, second) = match *unit {
            Unit::Pair(n) => {
                let c = 0x1_0000 + u32::from(n) * 16;
                (
                    0xD800 + ((c - 0x1_0000) >> 10) as u16,
                    Some(0xDC00 + (c & 0x3FF) as u16),
                )
            }
            Unit::High(n) => (0xD800 + n % 0x400, None),
            Unit::Low(n) => (0xDC00 + n % 0x400, None),
            Unit::Reversed(n) => (0xDC00 + n % 0x400, Some(0xD800 + n % 0x400)),
            Unit::Any(n) => (n, None),
        };
        push_unit(out, first, false);
        if let Some(second) = second {
            push_unit(out, second, false);
        }
    }
    out.push(b'"');
}

fn render_number(out: &mut Vec<u8>, number: &Number) {
    let text = match number {
        Number::Date {
            delta,
            fraction,
            exponent,
        } => {
            let value = NOW as i64 + i64::from(*delta);
            match (fraction, exponent) {
                (_, true) => format!("{}e{}", value as f64 / 1e9, 9),
                (Some(fraction), false) => format!("{value}.{fraction}"),
                (None, false) => value.to_string(),
            }
        }
        Number::Int(n) => n.to_string(),
        Number::Float(f) => {
            if f.is_finite() {
                format!("{f:?}")
            } else {
                "1e400".to_owned()
            }
        }
        Number::Huge { digits, negative } => {
            let digits = usize::from(*digits % 400) + 1;
            let mut text = if *negative {
                "-".to_owned()
            } else {
                String::new()
            };
            text.push('1');
            text.push_str(&"7".repeat(digits));
            text
        }
        Number::Exp { mantissa, exponent } => format!("{mantissa}e{exponent}"),
        Number::Nines { count } => format!("{}.{}", NOW - 1, "9".repeat(usize::from(*count))),
        Number::Text(text) => text.chars().take(40).collect(),
    };
    out.extend_from_slice(text.as_bytes());
}

fn render_value(out: &mut Vec<u8>, value: &Val, budget: &mut usize) {
    // Keeps tokens well under the size limit whatever the input.
    if *budget == 0 {
        out.extend_from_slice(b"0");
        return;
    }
    *budget -= 1;
    match value {
        Val::Str(s) => render_str(out, s),
        Val::Num(n) => render_number(out, n),
        Val::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Val::Null => out.extend_from_slice(b"null"),
        Val::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                render_value(out, item, budget);
            }
            out.push(b']');
        }
        Val::Obj(members) => {
            out.push(b'{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                render_str(out, key);
                out.push(b':');
                render_value(out, item, budget);
            }
            out.push(b'}');
        }
        Val::Raw(text) => out.extend_from_slice(text.as_bytes()),
    }
}

fn nest(value: Val, depth: u8, objects: bool) -> Val {
    // Mostly right around the bound (the top-level object counts too), sometimes far past it.
    let depth = match depth {
        0..=199 => 120 + usize::from(depth % 12),
        200..=249 => usize::from(depth - 199),
        _ => 300,
    };
    (0..depth).fold(value, |inner, _| {
        if objects {
            Val::Obj(vec![(plain("n"), inner)])
        } else {
            Val::Arr(vec![inner])
        }
    })
}

fn build(template: Vec<Member>, doc: &Doc) -> Vec<u8> {
    if let Some((selector, raw)) = &doc.raw
        && *selector < 16
    {
        return raw.as_bytes().to_vec();
    }
    let mut members = template;
    let mut bytes = Vec::new();
    let mut nested = 0;
    for edit in &doc.edits {
        let index = |at: &u8, len: usize| usize::from(*at) % len.max(1);
        let len = members.len();
        match edit {
            Edit::Set { at, value } if len > 0 => members[index(at, len)].value = value.clone(),
            Edit::Insert { at, key, value } => {
                let key = match key {
                    Key::Known(k) => plain(KNOWN[usize::from(*k) % KNOWN.len()]),
                    Key::Other(name) => plain(name),
                };
                let member = Member {
                    key,
                    value: value.clone(),
                    space: Vec::new(),
                };
                members.insert(usize::from(*at) % (len + 1), member);
            }
            Edit::Remove { at } if len > 0 => {
                members.remove(index(at, len));
            }
            Edit::Duplicate { at, escape } if len > 0 => {
                let i = index(at, len);
                let mut key = members[i].key.clone();
                key.escape = *escape;
                let copy = Member {
                    key,
                    value: members[i].value.clone(),
                    space: Vec::new(),
                };
                members.insert(i + 1, copy);
            }
            Edit::EscapeKey { at, escape } if len > 0 => {
                members[index(at, len)].key.escape = *escape;
            }
            Edit::EscapeValue { at, escape } if len > 0 => {
                if let Val::Str(s) = &mut members[index(at, len)].value {
                    s.escape = *escape;
                }
            }
            Edit::Units { at, key, units } if len > 0 => {
                let member = &mut members[index(at, len)];
                if *key {
                    member.key.units.extend_from_slice(units);
                } else if let Val::Str(s) = &mut member.value {
                    s.units.extend_from_slice(units);
                }
            }
            // Twice at most: values stay a few hundred levels deep (cloned and dropped by
            // recursion here).
            Edit::Nest { at, depth, objects } if len > 0 && nested < 2 => {
                nested += 1;
                let member = &mut members[index(at, len)];
                member.value = nest(member.value.clone(), *depth, *objects);
            }
            Edit::Number { at, number } if len > 0 => {
                members[index(at, len)].value = Val::Num(number.clone());
            }
            Edit::Space { at, space } if len > 0 => {
                members[index(at, len)].space = space.iter().take(4).copied().collect();
            }
            _ => {}
        }
    }
    bytes.push(b'{');
    let mut budget = 400;
    for (i, member) in members.iter().enumerate() {
        if i > 0 {
            bytes.push(b',');
        }
        bytes.extend_from_slice(&member.space);
        render_str(&mut bytes, &member.key);
        bytes.extend_from_slice(&member.space);
        bytes.push(b':');
        render_value(&mut bytes, &member.value, &mut budget);
        bytes.extend_from_slice(&member.space);
    }
    bytes.push(b'}');
    for edit in &doc.edits {
        if let Edit::Byte { at, byte, remove } = edit {
            let at = usize::from(*at) % (bytes.len() + 1);
            if *remove {
                if at < bytes.len() {
                    bytes.remove(at);
                }
            } else {
                bytes.insert(at, *byte);
            }
        }
    }
    bytes
}

fuzz_target!(|input: Input| {
    let fixture = setup::fixture();
    let signer = if input.signer % 32 == 31 {
        Algorithm::RS256
    } else {
        Algorithm::ES256
    };
    let kid = if signer == Algorithm::RS256 {
        setup::RS256_KID
    } else {
        ES256_KID
    };
    let header = vec![
        member("alg", string(signer.as_str())),
        member("typ", string("JWT")),
        member("kid", string(kid)),
    ];
    let (issuer, audience) = if input.issuer_b {
        (ISSUER_B, AUDIENCE_B)
    } else {
        (ISSUER_A, AUDIENCE_A)
    };
    let claims = vec![
        member("iss", string(issuer)),
        member("sub", string("fuzz")),
        member("aud", string(audience)),
        member("exp", date(600)),
        member("nbf", date(-10)),
        member("iat", date(-10)),
        member("jti", string("j")),
        member("tid", string("t")),
        member("scope", string("read write")),
    ];
    let header = build(header, &input.header);
    let claims = build(claims, &input.claims);

    let signing_input = format!("{}.{}", b64url(&header), b64url(&claims));
    // Signing is most of the cost: a token the reference refuses before its signature gets a
    // placeholder of the same length instead (so the same verdict). Were the verifier to let
    // it past every earlier check, the placeholder would fail as `BadSignature`, which the
    // reference does not allow for it: nothing is lost.
    let placeholder_len = if signer == Algorithm::RS256 { 256 } else { 64 };
    let placeholder = format!("{signing_input}.{}", b64url(&vec![0; placeholder_len]));
    let expected = reference::verdict(placeholder.as_bytes(), Some(signer));
    let token = if expected.is_ok() {
        let signature = fixture.sign(signer, signing_input.as_bytes());
        assert_eq!(signature.len(), placeholder_len);
        format!("{signing_input}.{}", b64url(&signature))
    } else {
        placeholder
    };
    let outcome = fixture.verify(token.as_bytes());
    // Bad input is never a server-side failure (a 503): the keys are loaded.
    if let Err(error) = &outcome {
        assert!(matches!(error, VerifyError::Invalid(_)), "{error:?}");
    }
    let context = || {
        format!(
            "header {:?}\nclaims {:?}\nexpected {expected:?}\ngot {outcome:?}",
            String::from_utf8_lossy(&header),
            String::from_utf8_lossy(&claims),
        )
    };
    match (&expected, &outcome) {
        (Ok(registered), Ok(verified)) => {
            assert_eq!(verified.claims(), registered, "{}", context());
            assert_eq!(verified.payload(), &claims[..], "{}", context());
            assert_eq!(verified.kid(), kid, "{}", context());
            assert_eq!(verified.algorithm(), signer, "{}", context());
            assert_eq!(verified.issuer(), issuer_of(registered), "{}", context());
            // What a handler's `RawClaims` (a `serde_json::Value`) reads: the claims, unless
            // they hold what serde_json skips but cannot put in a `Value` (the extractor then
            // refuses the request with a 401): a lone surrogate in a skipped string, a number
            // beyond `f64`, or a member nested to the reader's bound (a `Value` nests one less).
            match verified.deserialize::<serde_json::Value>() {
                Ok(value) => assert!(value.is_object(), "{}", context()),
                Err(error) => {
                    let error = error.to_string();
                    let deepest = reference::depth(std::str::from_utf8(&claims).unwrap_or(""));
                    assert!(
                        error.contains("surrogate")
                            || error.contains("hex escape")
                            || error.starts_with("number out of range")
                            || (error.starts_with("recursion limit exceeded")
                                && deepest == __fuzz::MAX_DEPTH),
                        "an accepted token's claims do not parse as a Value: {error}\n{}",
                        context()
                    );
                }
            }
        }
        (Err(reasons), Err(VerifyError::Invalid(invalid))) => {
            assert!(reasons.contains(&invalid.reason()), "{}", context());
        }
        _ => panic!("the verifier and the reference disagree\n{}", context()),
    }
    // Again, now that the header cache knows the header if the token was accepted (one time
    // in eight: the cache serves most accepted tokens anyway, their header unchanged).
    if !input.again.is_multiple_of(8) {
        return;
    }
    let again = fixture.verify(token.as_bytes());
    match (&outcome, &again) {
        (Ok(first), Ok(second)) => assert_eq!(first.claims(), second.claims()),
        (Err(first), Err(second)) => assert_eq!(first.to_string(), second.to_string()),
        _ => panic!("a second verification differs: {again:?}\n{}", context()),
    }
});

fn issuer_of(claims: &keyroll_core::jwt::RegisteredClaims) -> &str {
    claims.iss.as_deref().unwrap_or_default()
}
