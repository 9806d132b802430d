//! What `serde_json` makes of a token's JSON: the reference keyroll's own reader is held to.
//!
//! Written from the rules keyroll documents, on `serde_json` alone (never on keyroll's reader):
//! a header or a claims set is a JSON object as `serde_json` reads it (any member skipped at any
//! depth, escapes in skipped strings not decoded, as `serde_json` skips them), with its
//! registered members of their registered types and none given twice. The one documented
//! difference is the reader's depth bound: containers nest at most
//! [`MAX_DEPTH`](keyroll_core::__fuzz::MAX_DEPTH) deep, the top-level object included.

use keyroll_core::__fuzz::{Header, MAX_DEPTH};
use keyroll_core::jwt::{Audience, InvalidReason, RegisteredClaims};
use keyroll_core::{ALL_ALGORITHMS, Algorithm};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::b64url_decode;
use crate::setup::{
    AUDIENCE_A, AUDIENCE_B, ES256_KID, ES256_X5T, ISSUER_A, ISSUER_B, LEEWAY_A, LEEWAY_B,
    MAX_AGE_B, MAX_TOKEN_LEN, NOW, RS256_KID,
};

/// A JSON object's members in order, duplicates kept, each value as its raw text.
#[derive(Debug)]
pub struct Members(pub Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

impl Members {
    /// How many members are named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.0.iter().filter(|(key, _)| key == name).count()
    }

    /// Whether some member's value nests deeper than the reader allows (it counts the
    /// enclosing object too).
    pub fn too_deep(&self) -> bool {
        self.0
            .iter()
            .any(|(_, raw)| depth(raw.get()) > MAX_DEPTH - 1)
    }
}

/// `text` as a JSON object, if `serde_json` reads it as one.
pub fn object(text: &str) -> Option<Members> {
    serde_json::from_str(text).ok()
}

/// How deep containers nest in `json`, a valid JSON text (0 for a scalar).
pub fn depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A string value.
pub fn string(raw: &RawValue) -> Option<String> {
    serde_json::from_str(raw.get()).ok()
}

/// An array of strings.
pub fn strings(raw: &RawValue) -> Option<Vec<String>> {
    serde_json::from_str(raw.get()).ok()
}

/// A string (`(true, [it])`) or an array of strings (`(false, them)`).
pub fn one_or_many(raw: &RawValue) -> Option<(bool, Vec<String>)> {
    string(raw)
        .map(|one| (true, vec![one]))
        .or_else(|| strings(raw).map(|many| (false, many)))
}

/// A NumericDate as keyroll documents it: a JSON number from 0 to 10¹² seconds, as `serde_json`
/// reads it into an `f64`, fractions truncated.
pub fn numeric_date(raw: &RawValue) -> Option<u64> {
    let value: f64 = serde_json::from_str(raw.get()).ok()?;
    if !value.is_finite() || !(0.0..=1e12).contains(&value) {
        return None;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(value as u64)
}

/// The registered claims keyroll reads.
pub const REGISTERED: [&str; 10] = [
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "scp", "roles",
];

/// The registered claims of a claims set, as keyroll documents it reads them; `None` if it
/// must refuse the text.
pub fn claims(text: &str) -> Option<RegisteredClaims> {
    let members = object(text)?;
    if members.too_deep() || REGISTERED.iter().any(|name| members.count(name) > 1) {
        return None;
    }
    let mut claims = RegisteredClaims::default();
    let (mut scope, mut scp) = (None, None);
    let joined = |raw: &RawValue| one_or_many(raw).map(|(_, all)| all.join(" "));
    for (key, raw) in &members.0 {
        match key.as_str() {
            "iss" => claims.iss = Some(string(raw)?),
            "sub" => claims.sub = Some(string(raw)?),
            "jti" => claims.jti = Some(string(raw)?),
            "aud" => {
                claims.aud = Some(match one_or_many(raw)? {
                    (true, mut one) => Audience::One(one.remove(0)),
                    (false, many) => Audience::Many(many),
                });
            }
            "exp" => claims.exp = Some(numeric_date(raw)?),
            "nbf" => claims.nbf = Some(numeric_date(raw)?),
            "iat" => claims.iat = Some(numeric_date(raw)?),
            "scope" => scope = Some(joined(raw)?),
            "scp" => scp = Some(joined(raw)?),
            "roles" if raw.get() == "null" => claims.roles = Vec::new(),
            "roles" => claims.roles = strings(raw)?,
            _ => {}
        }
    }
    claims.scope = scope.or(scp);
    Some(claims)
}

/// The header fields keyroll reads, or why it must refuse the header.
pub fn header(text: &str) -> Result<Header, InvalidReason> {
    let malformed = InvalidReason::Malformed("the header is not a JSON object");
    let members = object(text).ok_or(malformed)?;
    let read = ["alg", "kid", "x5t", "typ", "crit"];
    if members.too_deep() || read.iter().any(|name| members.count(name) > 1) {
        return Err(malformed);
    }
    // `crit`: how many names it lists (RFC 7515 §4.1.11: a non-empty array of them).
    let (mut alg, mut kid, mut x5t, mut typ, mut critical) = (None, None, None, None, None);
    for (key, raw) in &members.0 {
        let field = match key.as_str() {
            "alg" => &mut alg,
            "kid" => &mut kid,
            "x5t" => &mut x5t,
            "typ" => &mut typ,
            // An array must hold strings (else the header is malformed); any other value is
            // a `crit` of no names.
            "crit" => {
                critical = Some(if raw.get().trim_start().starts_with('[') {
                    strings(raw).ok_or(malformed)?.len()
                } else {
                    0
                });
                continue;
            }
            _ => continue,
        };
        *field = Some(string(raw).ok_or(malformed)?);
    }
    let alg = alg.ok_or(InvalidReason::Malformed("the header has no alg"))?;
    let algorithm = ALL_ALGORITHMS
        .into_iter()
        .find(|known| known.as_str() == alg)
        .ok_or(InvalidReason::UnsupportedAlgorithm)?;
    match critical {
        None => {}
        Some(0) => {
            return Err(InvalidReason::Malformed(
                "`crit` must be a non-empty array of header names",
            ));
        }
        Some(_) => return Err(InvalidReason::CriticalHeader),
    }
    Ok(Header {
        algorithm,
        kid,
        x5t,
        typ,
    })
}

/// What the verifier of [`setup`](crate::setup) must conclude about `token`, when `signer`
/// names the fixture key that validly signed it (`None`: no valid signature): the claims it
/// hands on, or every reason it may give for refusing (checks of one stage may run in any
/// order; the stages run in order: size, segments, header, claims, key, signature).
pub fn verdict(
    token: &[u8],
    signer: Option<Algorithm>,
) -> Result<RegisteredClaims, Vec<InvalidReason>> {
    use InvalidReason::*;
    let refuse = |reason: InvalidReason| Err(vec![reason]);
    let not_base64 = Malformed("a segment is not base64url");
    if token.len() > MAX_TOKEN_LEN {
        return refuse(TooLarge);
    }
    if token.is_empty() {
        return refuse(Malformed("empty token"));
    }
    let segments: Vec<&[u8]> = token.split(|&b| b == b'.').collect();
    match segments.len() {
        0..=2 => return refuse(Malformed("not a compact JWS")),
        3 => {}
        5 => return refuse(Encrypted),
        _ => return refuse(Malformed("too many segments")),
    }
    let Some(header_json) = b64url_decode(segments[0]) else {
        return refuse(not_base64);
    };
    let header = std::str::from_utf8(&header_json)
        .map_err(|_| Malformed("the header is not a JSON object"))
        .and_then(header);
    let header = match header {
        Ok(header) => header,
        Err(reason) => return refuse(reason),
    };
    if segments[2].is_empty() {
        return refuse(Malformed("the signature is empty"));
    }
    let Some(payload) = b64url_decode(segments[1]) else {
        return refuse(not_base64);
    };
    let bad_claims = Malformed("the payload is not a JSON object with valid claims");
    let Ok(text) = std::str::from_utf8(&payload) else {
        return refuse(bad_claims);
    };
    let Some(claims) = claims(text) else {
        return refuse(bad_claims);
    };

    let (leeway, audience, is_b) = match claims.iss.as_deref() {
        Some(ISSUER_A) => (LEEWAY_A, AUDIENCE_A, false),
        Some(ISSUER_B) => (LEEWAY_B, AUDIENCE_B, true),
        _ => return refuse(UntrustedIssuer),
    };
    let mut failed = Vec::new();
    let has = |name: &str| object(text).is_some_and(|members| members.count(name) > 0);
    if is_b {
        let media_type = |typ: &str| {
            let typ = typ.strip_prefix("application/").unwrap_or(typ);
            typ.eq_ignore_ascii_case("JWT")
        };
        if !header.typ.as_deref().is_some_and(media_type) {
            failed.push(WrongType);
        }
        if !has("tid") || claims.iat.is_none() {
            failed.push(MissingClaim);
        }
        if claims
            .iat
            .is_some_and(|iat| NOW.saturating_sub(iat) > MAX_AGE_B + LEEWAY_B)
        {
            failed.push(TooOld);
        }
    }
    match claims.exp {
        None => failed.push(MissingClaim),
        Some(exp) if exp.saturating_add(leeway) <= NOW => failed.push(Expired),
        Some(_) => {}
    }
    if claims.nbf.is_some_and(|nbf| nbf > NOW + leeway) {
        failed.push(NotYetValid);
    }
    if claims.iat.is_some_and(|iat| iat > NOW + leeway) {
        failed.push(IssuedInFuture);
    }
    if !claims
        .aud
        .as_ref()
        .is_some_and(|aud| aud.iter().any(|a| a == audience))
    {
        failed.push(WrongAudience);
    }
    if !failed.is_empty() {
        return Err(failed);
    }

    // The fixture's keys: ES256 (by kid, or by x5t without a kid) and RS256, each pinned to
    // its algorithm. Any other kid (a long one too) is unknown.
    let key = match (header.kid.as_deref(), header.x5t.as_deref()) {
        (None, None) => return refuse(NoKeyId),
        (Some(ES256_KID), _) | (None, Some(ES256_X5T)) => Algorithm::ES256,
        (Some(RS256_KID), _) => Algorithm::RS256,
        _ => return refuse(UnknownKey),
    };
    if header.algorithm != key {
        return refuse(AlgorithmKeyMismatch);
    }
    if b64url_decode(segments[2]).is_none() {
        return refuse(not_base64);
    }
    if signer != Some(key) {
        return refuse(BadSignature);
    }
    Ok(claims)
}
