//! The registered claims keyroll checks, parsed without copying.

use std::borrow::Cow;

use serde::Serialize;

use super::json::{Reader, SyntaxError, unset};

/// The `aud` claim: one audience or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether any audience equals one of `accepted`.
    pub fn matches_any<S: AsRef<str>>(&self, accepted: &[S]) -> bool {
        self.iter()
            .any(|aud| accepted.iter().any(|a| a.as_ref() == aud))
    }

    /// Every audience.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Audience::One(aud) => (Some(aud.as_str()), &[][..]),
            Audience::Many(auds) => (None, auds.as_slice()),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }
}

/// The registered claims (RFC 7519 §4.1) and the scope claims, as found in a token.
///
/// Times are Unix seconds; decimal values (as some clients send) are accepted and truncated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RegisteredClaims {
    /// Issuer.
    pub iss: Option<String>,
    /// Subject.
    pub sub: Option<String>,
    /// Audience.
    pub aud: Option<Audience>,
    /// Expiry.
    pub exp: Option<u64>,
    /// Not before.
    pub nbf: Option<u64>,
    /// Issued at.
    pub iat: Option<u64>,
    /// Token id.
    pub jti: Option<String>,
    /// OAuth scopes (`scope` or Entra's `scp`), space-separated.
    pub scope: Option<String>,
    /// App roles (Entra's `roles`).
    pub roles: Vec<String>,
}

impl RegisteredClaims {
    /// Whether the token grants `scope` (in `scope`/`scp`) or `role` (in `roles`).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|granted| granted == scope))
            || self.roles.iter().any(|role| role == scope)
    }
}

/// `aud` as parsed, borrowing from the payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BorrowedAudience<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl BorrowedAudience<'_> {
    pub(crate) fn matches_any<S: AsRef<str>>(&self, accepted: &[S]) -> bool {
        let accepts = |aud: &str| accepted.iter().any(|a| a.as_ref() == aud);
        match self {
            BorrowedAudience::One(aud) => accepts(aud),
            BorrowedAudience::Many(auds) => auds.iter().any(|aud| accepts(aud)),
        }
    }

    fn into_owned(self) -> Audience {
        match self {
            BorrowedAudience::One(aud) => Audience::One(aud.into_owned()),
            BorrowedAudience::Many(auds) => {
                Audience::Many(auds.into_iter().map(Cow::into_owned).collect())
            }
        }
    }
}

/// Borrowing form used while parsing, so the hot path allocates only what it keeps.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct BorrowedClaims<'a> {
    pub(crate) iss: Option<Cow<'a, str>>,
    pub(crate) sub: Option<Cow<'a, str>>,
    pub(crate) aud: Option<BorrowedAudience<'a>>,
    pub(crate) exp: Option<u64>,
    pub(crate) nbf: Option<u64>,
    pub(crate) iat: Option<u64>,
    pub(crate) jti: Option<Cow<'a, str>>,
    pub(crate) scope: Option<Cow<'a, str>>,
    pub(crate) scp: Option<Cow<'a, str>>,
    pub(crate) roles: Option<Vec<Cow<'a, str>>>,
}

impl<'a> BorrowedClaims<'a> {
    /// Parses a claims set: a JSON object whose registered claims have their registered types
    /// (times as NumericDate, `aud` a string or strings, `scope`/`scp` a string or strings,
    /// `roles` strings or null); a claim given twice is refused, other members are checked and
    /// skipped.
    pub(crate) fn parse(json: &'a str) -> Result<Self, SyntaxError> {
        let mut claims = BorrowedClaims::default();
        Reader::object(json, |key, reader| {
            let c = &mut claims;
            match key.as_bytes() {
                b"iss" => {
                    unset(&c.iss)?;
                    c.iss = Some(reader.string()?);
                }
                b"sub" => {
                    unset(&c.sub)?;
                    c.sub = Some(reader.string()?);
                }
                b"aud" => {
                    unset(&c.aud)?;
                    c.aud = Some(if reader.at_array() {
                        let mut many = Vec::new();
                        reader.strings(|aud| many.push(aud))?;
                        BorrowedAudience::Many(many)
                    } else {
                        BorrowedAudience::One(reader.string()?)
                    });
                }
                b"exp" => {
                    unset(&c.exp)?;
                    c.exp = Some(reader.numeric_date()?);
                }
                b"nbf" => {
                    unset(&c.nbf)?;
                    c.nbf = Some(reader.numeric_date()?);
                }
                b"iat" => {
                    unset(&c.iat)?;
                    c.iat = Some(reader.numeric_date()?);
                }
                b"jti" => {
                    unset(&c.jti)?;
                    c.jti = Some(reader.string()?);
                }
                b"scope" => {
                    unset(&c.scope)?;
                    c.scope = Some(scopes(reader)?);
                }
                b"scp" => {
                    unset(&c.scp)?;
                    c.scp = Some(scopes(reader)?);
                }
                // `null` reads as no roles.
                b"roles" => {
                    unset(&c.roles)?;
                    let mut roles = Vec::new();
                    if !reader.null()? {
                        reader.strings(|role| roles.push(role))?;
                    }
                    c.roles = Some(roles);
                }
                _ => reader.skip_value()?,
            }
            Ok(())
        })?;
        Ok(claims)
    }

    pub(crate) fn into_owned(self) -> RegisteredClaims {
        RegisteredClaims {
            iss: self.iss.map(Cow::into_owned),
            sub: self.sub.map(Cow::into_owned),
            aud: self.aud.map(BorrowedAudience::into_owned),
            exp: self.exp,
            nbf: self.nbf,
            iat: self.iat,
            jti: self.jti.map(Cow::into_owned),
            scope: self.scope.or(self.scp).map(Cow::into_owned),
            roles: self
                .roles
                .unwrap_or_default()
                .into_iter()
                .map(Cow::into_owned)
                .collect(),
        }
    }
}

/// `scope`/`scp` as a space-separated string, or as an array of strings (as some providers
/// send it), normalized to the string form.
fn scopes<'a>(reader: &mut Reader<'a>) -> Result<Cow<'a, str>, SyntaxError> {
    if !reader.at_array() {
        return reader.string();
    }
    let mut joined = String::new();
    let mut first = true;
    reader.strings(|scope| {
        // Every scope after the first is preceded by a space, the first empty one too.
        if !first {
            joined.push(' ');
        }
        first = false;
        joined.push_str(&scope);
    })?;
    Ok(Cow::Owned(joined))
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use proptest::prelude::*;
    use serde::Deserialize;
    use serde::de::{self, Deserializer, SeqAccess, Visitor};

    use super::*;

    /// The reference: the same claims through serde's derive and `serde_json`, as keyroll
    /// parsed them before it had its own reader.
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct SerdeClaims<'a> {
        #[serde(borrow, deserialize_with = "string")]
        iss: Option<Cow<'a, str>>,
        #[serde(borrow, deserialize_with = "string")]
        sub: Option<Cow<'a, str>>,
        #[serde(borrow, deserialize_with = "strings")]
        aud: Option<(bool, Vec<Cow<'a, str>>)>,
        #[serde(deserialize_with = "numeric_date")]
        exp: Option<u64>,
        #[serde(deserialize_with = "numeric_date")]
        nbf: Option<u64>,
        #[serde(deserialize_with = "numeric_date")]
        iat: Option<u64>,
        #[serde(borrow, deserialize_with = "string")]
        jti: Option<Cow<'a, str>>,
        #[serde(borrow, deserialize_with = "strings")]
        scope: Option<(bool, Vec<Cow<'a, str>>)>,
        #[serde(borrow, deserialize_with = "strings")]
        scp: Option<(bool, Vec<Cow<'a, str>>)>,
        #[serde(borrow)]
        roles: Option<Vec<Cow<'a, str>>>,
    }

    impl<'a> SerdeClaims<'a> {
        fn into_claims(self) -> BorrowedClaims<'a> {
            let joined = |value: Option<(bool, Vec<Cow<'a, str>>)>| {
                value.map(|(one, mut all)| {
                    if one {
                        all.remove(0)
                    } else {
                        Cow::Owned(all.join(" "))
                    }
                })
            };
            BorrowedClaims {
                iss: self.iss,
                sub: self.sub,
                aud: self.aud.map(|(one, mut all)| {
                    if one {
                        BorrowedAudience::One(all.remove(0))
                    } else {
                        BorrowedAudience::Many(all)
                    }
                }),
                exp: self.exp,
                nbf: self.nbf,
                iat: self.iat,
                jti: self.jti,
                scope: joined(self.scope),
                scp: joined(self.scp),
                roles: self.roles,
            }
        }
    }

    fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if !value.is_finite() || !(0.0..=1e12).contains(&value) {
            return Err(de::Error::custom("not a valid NumericDate"));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Some(value as u64))
    }

    fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
        }
        d.deserialize_str(StrVisitor).map(Some)
    }

    /// A string (`(true, [it])`) or an array of strings (`(false, them)`).
    #[allow(clippy::type_complexity)]
    fn strings<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<(bool, Vec<Cow<'de, str>>)>, D::Error> {
        struct StringsVisitor;
        impl<'de> Visitor<'de> for StringsVisitor {
            type Value = (bool, Vec<Cow<'de, str>>);
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok((true, vec![Cow::Borrowed(v)]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok((true, vec![Cow::Owned(v.to_owned())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element::<Cow<'de, str>>()? {
                    all.push(item);
                }
                Ok((false, all))
            }
        }
        d.deserialize_any(StringsVisitor).map(Some)
    }

    /// What the reference makes of `json`. Only objects are claims sets (serde would also read
    /// a struct from an array, by position).
    fn reference(json: &str) -> Option<BorrowedClaims<'_>> {
        if !json.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str::<SerdeClaims<'_>>(json)
            .ok()
            .map(SerdeClaims::into_claims)
    }

    fn check(json: &str) {
        // Compared as the claims keyroll keeps (`roles: null` is no roles either way).
        assert_eq!(
            BorrowedClaims::parse(json)
                .ok()
                .map(BorrowedClaims::into_owned),
            reference(json).map(BorrowedClaims::into_owned),
            "{json:?}"
        );
    }

    #[test]
    fn reads_claims_as_serde_json_does() {
        let cases = [
            r#"{"iss":"https://a.example","sub":"s","aud":"b","exp":1700000000,"nbf":1,"iat":2,"jti":"j"}"#,
            r#"{"aud":["a","b"],"scope":"x y","roles":["r"],"scp":["p","q"]}"#,
            r#"{"aud":[],"roles":null,"scope":[]}"#,
            // Found by the verify_structured fuzz target: a leading empty scope lost its space.
            r#"{"scope":["","\n"],"scp":["",""]}"#,
            r#"{"scope":["","a",""]}"#,
            r#"{"iss":"a\/b\u00e9","sub":"\"quoted\""}"#,
            r#"{"\u0069ss":"escaped key"}"#,
            r#"{"iss":"a","iss":"b"}"#,
            r#"{"aud":"a","aud":["b"]}"#,
            r#"{"roles":null,"roles":null}"#,
            r#"{"exp":1.5e9,"iat":-0,"nbf":0.9}"#,
            r#"{"exp":-1}"#,
            r#"{"exp":1e13}"#,
            r#"{"exp":"1700000000"}"#,
            r#"{"exp":null}"#,
            r#"{"iss":null}"#,
            r#"{"aud":null}"#,
            r#"{"aud":[1]}"#,
            r#"{"scope":{"a":1}}"#,
            r#"{"roles":"admin"}"#,
            r#"{"other":{"iss":"nested"},"iss":"top"}"#,
            r#"{"x":[1,{"y":[null,true,"z"]}],"exp":5}"#,
            r#"["a","b"]"#,
            r#"{"iss":"a"} {}"#,
            "{\"iss\":\"a\u{7f}\u{e9}\"}",
            "{\"iss\":\"a\tb\"}",
        ];
        for json in cases {
            check(json);
        }
    }

    /// A JSON value of claims-like shape, rendered with random spacing.
    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            any::<u32>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| format!("{n:?}")),
            "-?[0-9]{1,15}(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
            "\"([a-z/:.é ]|\\\\[nrt\"/\\\\]|\\\\u00[0-7][0-9a-f])*\"",
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key(), inner), 0..4).prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect();
                    format!("{{{}}}", members.join(" , "))
                }),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "iss",
                "sub",
                "aud",
                "exp",
                "nbf",
                "iat",
                "jti",
                "scope",
                "scp",
                "roles",
                "x",
                "\\u0065xp",
            ])
            .prop_map(|k| format!("\"{k}\"")),
            "\"[a-z]{1,3}\"",
        ]
    }

    proptest! {
        #[test]
        fn random_objects_read_as_serde_json_reads_them(
            members in prop::collection::vec((key(), value()), 0..6),
        ) {
            let members: Vec<String> =
                members.into_iter().map(|(k, v)| format!("{k} : {v}")).collect();
            check(&format!(" {{ {} }} ", members.join(",")));
        }

        #[test]
        fn mutated_claims_read_as_serde_json_reads_them(
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"{}[]\",:\\ 0a-.eE\xff".to_vec()),
            remove in any::<bool>(),
        ) {
            let mut json = br#"{"iss":"https://a.example","aud":["b","c"],"exp":1700000000.5,"x":{"y":[1,true,null]},"scope":"p q"}"#.to_vec();
            let at = at.index(json.len());
            if remove {
                json.remove(at);
            } else {
                json.insert(at, byte);
            }
            if let Ok(json) = std::str::from_utf8(&json) {
                check(json);
            }
        }
    }
}
