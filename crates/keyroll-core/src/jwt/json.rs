//! A strict, single-pass reader for the two small JSON objects every token carries, its header
//! and its claims: the one parse on the verification hot path.
//!
//! It accepts what `serde_json` accepts for an object (RFC 8259) and nothing else, so the claims
//! a handler later deserializes with `serde_json` are the claims that were checked; the tests
//! hold it to `serde_json` on random input. The one difference is stricter: containers nest at
//! most 128 deep (`serde_json` skips unread values of any depth; no claims set needs them).
//! Strings without escapes are borrowed from the input; the rare string with escapes is decoded
//! by `serde_json`.

use std::borrow::Cow;

/// The input is not JSON, or not of the shape asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError;

pub(crate) type Result<T> = std::result::Result<T, SyntaxError>;

/// How many containers may be open at once, the top-level object included.
pub(crate) const MAX_DEPTH: usize = 128;

/// `0x01` in every byte of a word, for the eight-bytes-at-a-time scans.
const ONES: u64 = u64::MAX / 255;

/// The position of the first byte at or after `at` that ends the plain run of a string: a
/// quote, a backslash or a control character (which JSON forbids inside strings). Eight bytes
/// at a time, as `serde_json` does it.
#[inline(always)]
fn plain_run_end(bytes: &[u8], mut at: usize) -> usize {
    const HIGH_BITS: u64 = ONES << 7;
    let has = |word: u64, byte: u8| {
        let matched = word ^ (ONES * u64::from(byte));
        matched.wrapping_sub(ONES) & !matched
    };
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        // A bit set in the byte of each match (and perhaps in bytes after the first one).
        let stops = (has(word, b'"') | has(word, b'\\') | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGH_BITS;
        if stops != 0 {
            return at + (stops.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&byte) = bytes.get(at) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            break;
        }
        at += 1;
    }
    at
}

/// The value of eight ASCII digits, or `None` if any byte is not a digit.
fn eight_digits(bytes: &[u8]) -> Option<u64> {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    // Little-endian: the first digit is the low byte.
    let word = u64::from_le_bytes(word);
    let digits = word.wrapping_sub(ONES * u64::from(b'0'));
    // Every byte 0..=9: no borrow out of a byte below '0', none reaching 10 when 6 is added.
    let not_digits =
        (word & (ONES * 0xF0)) ^ (ONES * 0x30) | (digits.wrapping_add(ONES * 6) & (ONES * 0xF0));
    if not_digits != 0 {
        return None;
    }
    // Pairs, then quads, then the whole: each step multiplies the earlier digits up.
    let pairs = (digits.wrapping_mul(10) + (digits >> 8)) & 0x00FF_00FF_00FF_00FF;
    let quads = (pairs.wrapping_mul(100) + (pairs >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((quads.wrapping_mul(10_000) + (quads >> 32)) & 0xFFFF_FFFF)
}

/// Fails if `slot` already holds a member's value: a member given twice is refused (as serde's
/// derived `Deserialize` refuses it), so a duplicated `alg` or `aud` cannot let two readers of
/// one token see two different values. Inlined, it also tells the compiler that the value then
/// written into `slot` replaces nothing (no drop, no copy through the stack).
#[inline(always)]
pub(crate) fn unset<T>(slot: &Option<T>) -> Result<()> {
    if slot.is_some() {
        Err(SyntaxError)
    } else {
        Ok(())
    }
}

/// A cursor over one JSON text.
pub(crate) struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads a whole text that must be one object, calling `member` with each key (escapes
    /// decoded) and the reader positioned at its value, which `member` must consume.
    pub(crate) fn object(
        text: &'a str,
        mut member: impl FnMut(Cow<'a, str>, &mut Reader<'a>) -> Result<()>,
    ) -> Result<()> {
        let mut reader = Reader { text, pos: 0 };
        reader.skip_whitespace();
        reader.expect(b'{')?;
        reader.skip_whitespace();
        if reader.peek() == Some(b'}') {
            reader.pos += 1;
        } else {
            loop {
                let key = reader.string()?;
                reader.skip_whitespace();
                reader.expect(b':')?;
                reader.skip_whitespace();
                member(key, &mut reader)?;
                reader.skip_whitespace();
                match reader.next() {
                    Some(b',') => reader.skip_whitespace(),
                    Some(b'}') => break,
                    _ => return Err(SyntaxError),
                }
            }
        }
        reader.skip_whitespace();
        if reader.pos == reader.text.len() {
            Ok(())
        } else {
            Err(SyntaxError)
        }
    }

    /// Where the reader is: the fuzz targets read a value twice, in two ways.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Moves the reader back to `position` (one it was at).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn rewind(&mut self, position: usize) {
        self.pos = position;
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Result<()> {
        if self.next() == Some(byte) {
            Ok(())
        } else {
            Err(SyntaxError)
        }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Whether the value here is `null` (consumed if so).
    pub(crate) fn null(&mut self) -> Result<bool> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        self.literal(b"null")?;
        Ok(true)
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(SyntaxError)
        }
    }

    /// A string value.
    // Inlined: a `Cow` returned through memory costs a store-forwarding stall per string.
    #[inline(always)]
    pub(crate) fn string(&mut self) -> Result<Cow<'a, str>> {
        let bytes = self.bytes();
        if bytes.get(self.pos) != Some(&b'"') {
            return Err(SyntaxError);
        }
        let start = self.pos + 1;
        let end = plain_run_end(bytes, start);
        if bytes.get(end) != Some(&b'"') {
            return self.escaped_string(start);
        }
        self.pos = end + 1;
        // Both ends are next to ASCII quotes, so char boundaries: this cannot panic.
        Ok(Cow::Borrowed(&self.text[start..end]))
    }

    /// The rest of a string that has an escape (or is broken) from `start`, just past its
    /// opening quote: decoded exactly as `serde_json` decodes it.
    #[cold]
    fn escaped_string(&mut self, start: usize) -> Result<Cow<'a, str>> {
        self.pos = start;
        self.skip_string_rest()?;
        let quoted = self.text.get(start - 1..self.pos).ok_or(SyntaxError)?;
        serde_json::from_str::<String>(quoted)
            .map(Cow::Owned)
            .map_err(|_| SyntaxError)
    }

    /// Skips to just past the closing quote of a string whose opening quote is behind,
    /// checking its escapes as `serde_json` checks those of a string it skips (any code unit
    /// after `\u`).
    fn skip_string_rest(&mut self) -> Result<()> {
        loop {
            self.pos = plain_run_end(self.bytes(), self.pos);
            match self.next() {
                Some(b'"') => return Ok(()),
                Some(b'\\') => match self.next() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => {
                        let hex = self
                            .bytes()
                            .get(self.pos..self.pos + 4)
                            .ok_or(SyntaxError)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return Err(SyntaxError);
                        }
                        self.pos += 4;
                    }
                    _ => return Err(SyntaxError),
                },
                _ => return Err(SyntaxError),
            }
        }
    }

    /// Whether the value here is an array.
    pub(crate) fn at_array(&self) -> bool {
        self.peek() == Some(b'[')
    }

    /// An array of strings.
    pub(crate) fn strings(&mut self, mut each: impl FnMut(Cow<'a, str>)) -> Result<()> {
        self.expect(b'[')?;
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            each(self.string()?);
            self.skip_whitespace();
            match self.next() {
                Some(b',') => self.skip_whitespace(),
                Some(b']') => return Ok(()),
                _ => return Err(SyntaxError),
            }
        }
    }

    /// A number's text, checked against the JSON grammar.
    pub(crate) fn number(&mut self) -> Result<&'a str> {
        let start = self.pos;
        let digits = |reader: &mut Self| {
            let first = reader.pos;
            while reader.peek().is_some_and(|b| b.is_ascii_digit()) {
                reader.pos += 1;
            }
            if reader.pos > first {
                Ok(())
            } else {
                Err(SyntaxError)
            }
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        if self.peek() == Some(b'0') {
            self.pos += 1;
        } else {
            digits(self)?;
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            digits(self)?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            digits(self)?;
        }
        Ok(&self.text[start..self.pos])
    }

    /// A JWT NumericDate: a number of seconds from 0 to 10¹², fractions truncated.
    pub(crate) fn numeric_date(&mut self) -> Result<u64> {
        const MAX: u64 = 1_000_000_000_000;
        // The usual case, a plain integer, read in one pass.
        let bytes = self.bytes();
        let start = self.pos;
        let mut end = start;
        let mut value = 0u64;
        // Eight digits at a time (a NumericDate has ten), then one at a time.
        while let Some(eight) = bytes.get(end..end + 8).and_then(eight_digits) {
            value = value.wrapping_mul(100_000_000).wrapping_add(eight);
            end += 8;
        }
        while let Some(&byte) = bytes.get(end) {
            let digit = byte.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
            end += 1;
        }
        let leading_zero = bytes[start..end].starts_with(b"0") && end - start > 1;
        // Cannot overflow in 19 digits; a longer integer takes the float path below.
        let plain = end > start && end - start <= 19 && !leading_zero;
        if plain && !matches!(bytes.get(end), Some(b'.' | b'e' | b'E')) {
            self.pos = end;
            return if value <= MAX {
                Ok(value)
            } else {
                Err(SyntaxError)
            };
        }
        let text = self.number()?;
        // Read as `serde_json` reads it (not always the correctly rounded value), so that the
        // date checked is the date a handler deserializes.
        let value: f64 = serde_json::from_str(text).map_err(|_| SyntaxError)?;
        #[allow(clippy::cast_precision_loss)]
        if !value.is_finite() || !(0.0..=MAX as f64).contains(&value) {
            return Err(SyntaxError);
        }
        // Truncation is intended: fractions of a second are allowed but not needed.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(value as u64)
    }

    /// Skips a member's value, checking its syntax.
    pub(crate) fn skip_value(&mut self) -> Result<()> {
        // The top-level object encloses it.
        const ENCLOSING: usize = 1;
        // The open containers, innermost last: arrays as 1 bits, objects as 0 bits.
        let mut open: u128 = 0;
        let mut open_count = 0usize;
        loop {
            // A value.
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    self.skip_string_rest()?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(container @ (b'[' | b'{')) => {
                    if ENCLOSING + open_count + 1 > MAX_DEPTH {
                        return Err(SyntaxError);
                    }
                    self.pos += 1;
                    self.skip_whitespace();
                    let close = if container == b'[' { b']' } else { b'}' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                    } else {
                        open = (open << 1) | u128::from(container == b'[');
                        open_count += 1;
                        if container == b'{' {
                            self.object_key()?;
                        }
                        continue;
                    }
                }
                _ => return Err(SyntaxError),
            }
            // After a value: the next element or member, or the end of containers.
            loop {
                if open_count == 0 {
                    return Ok(());
                }
                self.skip_whitespace();
                let in_array = open & 1 == 1;
                match (self.next(), in_array) {
                    (Some(b','), true) => {
                        self.skip_whitespace();
                        break;
                    }
                    (Some(b','), false) => {
                        self.skip_whitespace();
                        self.object_key()?;
                        break;
                    }
                    (Some(b']'), true) | (Some(b'}'), false) => {
                        open >>= 1;
                        open_count -= 1;
                    }
                    _ => return Err(SyntaxError),
                }
            }
        }
    }

    /// A member's key and colon, leaving the reader at its value.
    fn object_key(&mut self) -> Result<()> {
        self.expect(b'"')?;
        self.skip_string_rest()?;
        self.skip_whitespace();
        self.expect(b':')?;
        self.skip_whitespace();
        Ok(())
    }
}

/// Whether `json`, a JSON object, has a member `name`.
pub(crate) fn has_member(json: &str, name: &str) -> bool {
    let mut found = false;
    Reader::object(json, |key, reader| {
        found |= key == name;
        reader.skip_value()
    })
    .is_ok()
        && found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value of an object, skipped: whether the reader accepts the text.
    fn accepts(json: &str) -> bool {
        Reader::object(json, |_, reader| reader.skip_value()).is_ok()
    }

    fn serde_accepts(json: &str) -> bool {
        serde_json::from_str::<std::collections::HashMap<String, serde::de::IgnoredAny>>(json)
            .is_ok()
    }

    #[test]
    fn agrees_with_serde_json_on_edge_cases() {
        let cases = [
            r#"{}"#,
            r#" { } "#,
            r#"{"a":1}"#,
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":[1,2,[],{}]}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":{"b":{"c":[true,false,null]}}}"#,
            r#"{"a":{"b"}}"#,
            r#"{"a":{"b":}}"#,
            r#"{"a":-0.5e+10}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":1e400}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":"\u00e9\n\""}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\u12g4"}"#,
            r#"{"a":{"\udc00":1}}"#,
            r#"{"\udc00":1}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":"\ud800"}"#,
            r#"{"\u0061":1}"#,
            r#"{"a":1}x"#,
            r#"[1]"#,
            r#""a""#,
            r#"{"a":1"#,
            r#"{"a""#,
            "",
        ];
        for json in cases {
            assert_eq!(accepts(json), serde_accepts(json), "{json:?}");
        }
    }

    #[test]
    fn nesting_is_limited() {
        let nested = |depth| format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
        for depth in [1, 126, 127] {
            assert!(
                accepts(&nested(depth)) && serde_accepts(&nested(depth)),
                "{depth}"
            );
        }
        for depth in [128, 5000] {
            assert!(!accepts(&nested(depth)), "{depth}");
        }
    }

    #[test]
    fn finds_members() {
        assert!(has_member(r#"{"a":1,"tid":{"x":[2]}}"#, "tid"));
        assert!(has_member(r#"{"t\u0069d":null}"#, "tid"));
        assert!(!has_member(r#"{"a":{"tid":1}}"#, "tid"));
        assert!(!has_member(r#"{"tid":1"#, "tid"));
    }

    #[test]
    fn eight_digits_at_a_time() {
        for n in [0u64, 1, 12_345_678, 99_999_999, 10_000_000, 70_000_001] {
            assert_eq!(eight_digits(format!("{n:08}").as_bytes()), Some(n));
        }
        for bad in ["1234567/", "1234567:", "/1234567", "1234 678", "12345678"] {
            let expected = bad
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| bad.parse().unwrap());
            assert_eq!(eight_digits(bad.as_bytes()), expected, "{bad}");
        }
        for byte in 0..=255u8 {
            let mut text = *b"00000000";
            text[3] = byte;
            assert_eq!(
                eight_digits(&text).is_some(),
                byte.is_ascii_digit(),
                "{byte}"
            );
        }
    }

    #[test]
    fn numeric_dates() {
        let date = |text: &str| Reader { text, pos: 0 }.numeric_date();
        assert_eq!(date("1700000000"), Ok(1_700_000_000));
        assert_eq!(date("12345678"), Ok(12_345_678));
        assert_eq!(date("999999999999"), Ok(999_999_999_999));
        assert_eq!(date("0"), Ok(0));
        assert_eq!(date("1700000000.9"), Ok(1_700_000_000));
        assert_eq!(date("1.7e9"), Ok(1_700_000_000));
        assert_eq!(date("-0"), Ok(0));
        assert_eq!(date("1000000000000"), Ok(1_000_000_000_000));
        // Found by the json_reader fuzz target: serde_json reads this one ULP above the
        // correctly rounded value (which is below 10⁷); the reader must read what it reads.
        let serde: f64 = serde_json::from_str("9999999.999999999").unwrap();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let expected = serde as u64;
        assert_eq!(date("9999999.999999999"), Ok(expected));
        for bad in [
            "1000000000001",
            "-1",
            "1e13",
            "1e400",
            "99999999999999999999",
            "x",
        ] {
            assert_eq!(date(bad), Err(SyntaxError), "{bad}");
        }
    }
}
