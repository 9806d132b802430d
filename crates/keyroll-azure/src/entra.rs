//! [`EntraTokens`]: Entra ID access tokens for outbound calls, from any azure_identity
//! credential, as a keyroll [`TokenSource`]: the [`TokenCache`](keyroll_core::TokenCache)
//! keeps them, refreshes them ahead of expiry, and backs off when Entra fails.
//!
//! ```no_run
//! use keyroll_azure::EntraTokens;
//! use keyroll_core::token::TokenCache;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let credential = keyroll_azure::credential_from_env(None)?; // managed identity in Azure
//! let tokens = TokenCache::new(EntraTokens::new(credential, &["api://billing/.default"]));
//! let token = tokens.get("api://billing").await?; // fetched once, then served from memory
//! println!("expires at {:?}", token.expires_at());
//! # Ok(()) }
//! ```
//!
//! # Refreshing
//!
//! A token's refresh point is half its lifetime for tokens of two hours or more (what Entra's
//! `refresh_in` says for those; azure_identity 1.x does not pass `refresh_in` on), otherwise
//! the token cache's (80 % of the lifetime by default). The SDK's credentials keep their own
//! cache and hand out the same token until five minutes before it expires; a refresh that
//! gets the same token back is simply asked again later (the cache never refreshes a token
//! sooner than a tenth of its remaining life), until the credential renews it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use keyroll_core::token::{Token, TokenError, TokenSource};
use keyroll_core::{BoxFuture, Clock, SystemClock};

use crate::error::AzureError;

/// Entra ID access tokens from any `TokenCredential` (managed identity, workload identity,
/// client secret, [`KeyVaultClientAssertion`](crate::KeyVaultClientAssertion), developer
/// tools), as a [`TokenSource`]: put it in a [`TokenCache`](keyroll_core::TokenCache) (or an
/// `IssueLayer`, which makes one) to cache and refresh them.
///
/// The token is for the scopes given at construction; with no scopes, each audience `aud`
/// gets a token for `aud/.default`.
#[derive(Clone)]
pub struct EntraTokens {
    credential: Arc<dyn TokenCredential>,
    scopes: Vec<String>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for EntraTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraTokens")
            .field("credential", &self.credential)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl EntraTokens {
    /// Tokens for `scopes` (`api://billing/.default`) from `credential`; no scopes: each
    /// audience's `/.default`.
    pub fn new(credential: Arc<dyn TokenCredential>, scopes: &[&str]) -> EntraTokens {
        EntraTokens {
            credential,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The clock a token's refresh point is counted from (default: the system clock; use
    /// the token cache's [`keyroll_core::TokioClock`] with paused tokio time in tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The scopes given at construction.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// A token for `audience` straight from the credential (no cache here: see the type's
    /// docs), with its refresh point.
    pub async fn access_token(&self, audience: &str) -> Result<Token, AzureError> {
        let scopes = if self.scopes.is_empty() {
            vec![format!("{}/.default", audience.trim_end_matches('/'))]
        } else {
            self.scopes.clone()
        };
        let refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let fetched_at = self.clock.now();
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let access = self.credential.get_token(&refs, None).await;
        #[cfg(feature = "metrics")]
        crate::metrics::request(crate::metrics::Ended {
            target: crate::metrics::ENTRA,
            operation: "token",
            error: access.as_ref().err(),
            took: started.elapsed(),
        });
        let access = access.map_err(|error| AzureError::Credential {
            scopes: scopes.join(" "),
            message: crate::requests::error_message(&error),
            source: Some(Arc::new(error)),
        })?;
        let expires_at = SystemTime::from(access.expires_on);
        let token = Token::new(access.token.secret(), expires_at);
        let lifetime = expires_at.duration_since(fetched_at).unwrap_or_default();
        Ok(if lifetime >= Duration::from_secs(2 * 3600) {
            token.with_refresh_at(fetched_at + lifetime / 2)
        } else {
            token
        })
    }
}

impl TokenSource for EntraTokens {
    fn token<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<Token, TokenError>> {
        Box::pin(async move {
            self.access_token(audience)
                .await
                .map_err(|e| TokenError::new(e.to_string()).with_cause(e))
        })
    }

    /// `entra` and the scopes given at construction (`entra api://billing/.default`).
    fn name(&self) -> String {
        std::iter::once("entra")
            .chain(self.scopes.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
