//! The registered claims keyroll checks, parsed without copying.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

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
#[derive(Debug)]
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
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct BorrowedClaims<'a> {
    #[serde(borrow, deserialize_with = "borrowed_str")]
    pub(crate) iss: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed_str")]
    pub(crate) sub: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "audience")]
    pub(crate) aud: Option<BorrowedAudience<'a>>,
    #[serde(deserialize_with = "numeric_date")]
    pub(crate) exp: Option<u64>,
    #[serde(deserialize_with = "numeric_date")]
    pub(crate) nbf: Option<u64>,
    #[serde(deserialize_with = "numeric_date")]
    pub(crate) iat: Option<u64>,
    #[serde(borrow, deserialize_with = "borrowed_str")]
    pub(crate) jti: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "scopes")]
    pub(crate) scope: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "scopes")]
    pub(crate) scp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) roles: Option<Vec<Cow<'a, str>>>,
}

impl BorrowedClaims<'_> {
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

fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let value = f64::deserialize(deserializer)?;
    if !value.is_finite() || !(0.0..=1e12).contains(&value) {
        return Err(de::Error::custom("not a valid NumericDate"));
    }
    // Truncation is intended: NumericDate is seconds, fractions are allowed but not needed.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(Some(value as u64))
}

fn audience<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BorrowedAudience<'de>>, D::Error> {
    struct AudienceVisitor;
    impl<'de> Visitor<'de> for AudienceVisitor {
        type Value = BorrowedAudience<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or an array of strings")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(BorrowedAudience::One(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(BorrowedAudience::One(Cow::Owned(v.to_owned())))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut many = Vec::new();
            while let Some(aud) = seq.next_element::<Cow<'de, str>>()? {
                many.push(aud);
            }
            Ok(BorrowedAudience::Many(many))
        }
    }
    deserializer.deserialize_any(AudienceVisitor).map(Some)
}

/// `scope`/`scp` as a space-separated string, or as an array of strings (as some providers
/// send it), normalized to the string form.
fn scopes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct ScopeVisitor;
    impl<'de> Visitor<'de> for ScopeVisitor {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or an array of strings")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut joined = String::new();
            while let Some(scope) = seq.next_element::<Cow<'de, str>>()? {
                if !joined.is_empty() {
                    joined.push(' ');
                }
                joined.push_str(&scope);
            }
            Ok(Cow::Owned(joined))
        }
    }
    deserializer.deserialize_any(ScopeVisitor).map(Some)
}

/// A string that borrows from the input when it has no escapes. (`#[serde(borrow)]` alone does
/// not borrow through an `Option`: every string would be copied.)
pub(crate) fn borrowed_str<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
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
    deserializer.deserialize_str(StrVisitor).map(Some)
}
