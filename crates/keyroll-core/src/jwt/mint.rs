//! Minting: header and claims to a compact JWS, signed by any [`Signer`].

use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SecureRandom as _;
use serde::Serialize;

use crate::algorithm::Algorithm;
use crate::cache::{KeyCache, KeyCacheError};
use crate::clock::{later, unix_seconds};
use crate::error::SourceError;
use crate::jwk::b64url;
use crate::key::KeyVersion;
use crate::source::Signer;

/// A JWS header for a token keyroll mints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct JwtHeader {
    /// Algorithm.
    pub alg: Algorithm,
    /// Type (`JWT` unless set otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Certificate SHA-1 thumbprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x5t: Option<String>,
    /// Certificate SHA-256 thumbprint.
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

impl JwtHeader {
    /// `{"alg", "typ": "JWT", "kid"}` for a version; with `with_x5t`, its thumbprints too.
    pub fn for_version(version: &KeyVersion, with_x5t: bool) -> Self {
        JwtHeader {
            alg: version.signing_algorithm(),
            typ: Some("JWT".to_owned()),
            kid: Some(version.kid.clone()),
            x5t: version.x5t.clone().filter(|_| with_x5t),
            x5t_s256: version.x5t_s256.clone().filter(|_| with_x5t),
        }
    }
}

/// Serializes, signs and assembles a compact JWS. The signer's algorithm must be the header's.
pub async fn encode<C: Serialize + ?Sized>(
    signer: &dyn Signer,
    header: &JwtHeader,
    claims: &C,
) -> Result<String, SourceError> {
    let error = |message: String| SourceError::new("jwt", "encode", message);
    if signer.algorithm() != header.alg {
        return Err(error(format!(
            "the signer uses {} but the header says {}",
            signer.algorithm(),
            header.alg
        )));
    }
    let header_json = serde_json::to_vec(header).map_err(|e| error(e.to_string()))?;
    let claims_json = serde_json::to_vec(claims).map_err(|e| error(e.to_string()))?;
    let mut token = b64url(&header_json);
    token.push('.');
    token.push_str(&b64url(&claims_json));
    let signature = signer.sign(token.as_bytes()).await?;
    token.push('.');
    token.push_str(&b64url(&signature));
    Ok(token)
}

/// A minted token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MintedToken {
    /// The compact JWS.
    pub token: String,
    /// Its `exp`.
    pub expires_at: SystemTime,
    /// Its `iat`.
    pub issued_at: SystemTime,
    /// The kid of the signing version.
    pub kid: String,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("kid", &self.kid)
            .finish()
    }
}

/// The claims a service puts in the tokens it mints: `iss`, `sub` (default: the issuer), `aud`
/// (per call), `iat`, `nbf`, `exp`, a fresh `jti`, plus extra claims.
///
/// From a file (feature `serde`): keys named as the fields; `issuer` is required, the others
/// default as [`TokenTemplate::new`] sets them; `lifetime` as `"10m"`, `"1h"`; `extra` a
/// table of claims; an unknown key is an error that names it.
///
/// ```toml
/// issuer = "https://orders.internal"
/// lifetime = "10m"
/// [extra]
/// scope = "billing.read"
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(deny_unknown_fields)
)]
#[non_exhaustive]
pub struct TokenTemplate {
    /// `iss`.
    pub issuer: String,
    /// `sub`; the issuer when unset.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub subject: Option<String>,
    /// Lifetime (`exp` − `iat`). Default 1 hour. An expiry past about the year 10,700 is cut
    /// there (`Duration::MAX`: the far future, not an overflow).
    #[cfg_attr(
        feature = "serde",
        serde(default = "template_defaults::lifetime", with = "humantime_serde")
    )]
    pub lifetime: Duration,
    /// `typ` header. Default `JWT`.
    #[cfg_attr(feature = "serde", serde(default = "template_defaults::typ"))]
    pub typ: String,
    /// Put `x5t`/`x5t#S256` in the header for certificate-backed versions.
    #[cfg_attr(feature = "serde", serde(default))]
    pub include_x5t: bool,
    /// Extra claims.
    #[cfg_attr(feature = "serde", serde(default))]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The defaults of [`TokenTemplate::new`], one per field, for configuration files.
mod template_defaults {
    use std::time::Duration;

    pub(super) fn lifetime() -> Duration {
        Duration::from_secs(3600)
    }

    pub(super) fn typ() -> String {
        "JWT".to_owned()
    }
}

#[derive(Serialize)]
struct MintClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, serde_json::Value>,
}

/// Why minting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// No signing key.
    #[error(transparent)]
    Keys(#[from] KeyCacheError),
    /// The signer failed.
    #[error(transparent)]
    Sign(#[from] SourceError),
    /// A remote signer answered with a signature that the listed version's public key does
    /// not verify (a wrong signature, or a key that is not the listed one): the token was
    /// not handed out.
    #[error("the signature of key `{kid}` does not verify with its published key: {source}")]
    SelfVerification {
        /// The version that was asked to sign.
        kid: String,
        /// What the check found.
        source: crate::key::SignatureError,
    },
}

impl TokenTemplate {
    /// Tokens issued as `issuer`.
    pub fn new(issuer: impl Into<String>) -> Self {
        TokenTemplate {
            issuer: issuer.into(),
            subject: None,
            lifetime: template_defaults::lifetime(),
            typ: template_defaults::typ(),
            include_x5t: false,
            extra: serde_json::Map::new(),
        }
    }

    /// Sets `sub`.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the lifetime.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Sets the `typ` header.
    pub fn typ(mut self, typ: impl Into<String>) -> Self {
        self.typ = typ.into();
        self
    }

    /// Puts certificate thumbprints in the header.
    pub fn include_x5t(mut self, include: bool) -> Self {
        self.include_x5t = include;
        self
    }

    /// Adds an extra claim (registered claims set by the template win over extras).
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }

    /// Mints a token for `audience` with the cache's active signer.
    pub async fn mint(
        &self,
        keys: &KeyCache,
        audience: &str,
    ) -> Result<MintedToken, crate::jwt::mint::MintError> {
        let minted = self.mint_once(keys, audience).await?;
        if !keys.is_revoked(&minted.kid) {
            return Ok(minted);
        }
        // Its version was revoked while it signed: the cache no longer signs with it.
        self.mint_once(keys, audience).await
    }

    async fn mint_once(&self, keys: &KeyCache, audience: &str) -> Result<MintedToken, MintError> {
        let active = keys.active_signer().await?;
        let now = keys.now();
        let issued = unix_seconds(now);
        // A lifetime of `Duration::MAX` (a configuration may say so) ends in the far future.
        let exp = unix_seconds(later(
            crate::clock::from_unix_seconds(issued),
            self.lifetime,
        ));
        let mut extra = self.extra.clone();
        for registered in ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"] {
            extra.remove(registered);
        }
        let claims = MintClaims {
            iss: &self.issuer,
            sub: self.subject.as_deref().unwrap_or(&self.issuer),
            aud: audience,
            iat: issued,
            nbf: issued,
            exp,
            jti: random_id()?,
            extra: &extra,
        };
        let mut header = JwtHeader::for_version(&active.version, self.include_x5t);
        header.typ = Some(self.typ.clone());
        let token = encode(active.signer.as_ref(), &header, &claims).await?;
        if active.signer.is_remote() {
            self_verify(keys, &active.version, &token)?;
        }
        keys.record_signed(
            &active.version,
            crate::clock::from_unix_seconds(issued),
            crate::clock::from_unix_seconds(exp),
        );
        Ok(MintedToken {
            token,
            issued_at: crate::clock::from_unix_seconds(issued),
            expires_at: crate::clock::from_unix_seconds(exp),
            kid: active.version.kid.clone(),
        })
    }
}

/// Checks a remotely signed token with the version's published key, once per sign (so about
/// once per audience per lifetime): what a vault signs wrongly never reaches a peer.
fn self_verify(keys: &KeyCache, version: &KeyVersion, token: &str) -> Result<(), MintError> {
    let refused = |source| {
        keys.count_bad_signature();
        tracing::error!(kid = %version.kid, %source, "a remote signature does not verify with its published key; the token is dropped");
        MintError::SelfVerification {
            kid: version.kid.clone(),
            source,
        }
    };
    let (input, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| refused(crate::key::SignatureError::Invalid))?;
    let signature = crate::jwk::b64url_decode(signature)
        .map_err(|_| refused(crate::key::SignatureError::Invalid))?;
    version
        .verifying_key()
        .verify(version.signing_algorithm(), input.as_bytes(), &signature)
        .map_err(refused)
}

/// A random 128-bit id, base64url (for `jti`).
pub fn random_id() -> Result<String, SourceError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| {
            SourceError::new("jwt", "generate jti", "the system random generator failed")
        })?;
    Ok(b64url(&bytes))
}
