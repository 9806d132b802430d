//! Entra ID as registered apps see it, the App Service managed-identity endpoint and a
//! Kubernetes service-account issuer for workload identity.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /{tenant}/oauth2/v2.0/token` | client credentials: secret, certificate assertion, federated assertion |
//! | `GET /{tenant}/discovery/v2.0/keys`, `/{tenant}/discovery/keys` | the signing keys |
//! | `GET /{tenant}/v2.0/.well-known/openid-configuration` | v2 discovery |
//! | `GET /{tenant}/.well-known/openid-configuration` | v1 discovery (`iss` sts.windows.net) |
//! | `GET /msi/token` | App Service managed identity (`X-IDENTITY-HEADER`) |
//! | `GET /kubernetes/.well-known/openid-configuration`, `/kubernetes/openid/v1/jwks` | the cluster's service-account issuer |
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! use keyroll_emulator::{Api, Emulator, TokenVersion};
//! let emu = Emulator::builder()
//!     .client_secret("orders-client", "s3cret")
//!     .api(Api::new("api://orders").access_token_version(TokenVersion::V2))
//!     .start()
//!     .await?;
//! let token_endpoint = emu.token_endpoint(emu.tenant_id());
//! # let _ = token_endpoint;
//! # Ok(()) }
//! ```

pub(crate) mod assertion;
pub(crate) mod directory;
mod discovery;
pub(crate) mod errors;
mod managed;
pub(crate) mod token_endpoint;
pub(crate) mod tokens;
pub(crate) mod workload;

use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::routing::{get, post};

use crate::Error;
use crate::crypto::KeyMaterial;
use crate::router::service_operation;
use crate::server::{Shared, lock};
use directory::Directory;
use tokens::SigningKey;
use workload::KubernetesIssuer;

/// The identity services' state. `Debug` prints neither the identity header nor keys.
pub(crate) struct Identity {
    pub(crate) identity_header: String,
    pub(crate) directory: RwLock<Directory>,
    keys: Mutex<Vec<SigningKey>>,
    pub(crate) kubernetes: KubernetesIssuer,
    /// Issue tokens for unregistered clients and resources (quick demos only).
    pub(crate) permissive: bool,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("identity_header", &"<redacted>")
            .field("directory", &*self.directory())
            .field("kubernetes", &self.kubernetes.issuer)
            .field("permissive", &self.permissive)
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub(crate) fn new(
        directory: Directory,
        identity_header: String,
        entra_keys: &[KeyMaterial],
        kubernetes: KubernetesIssuer,
        permissive: bool,
    ) -> Result<Identity, Error> {
        let keys = entra_keys
            .iter()
            .map(|m| SigningKey::new(m, "accounts.localhost"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Identity {
            identity_header,
            directory: RwLock::new(directory),
            keys: Mutex::new(keys),
            kubernetes,
            permissive,
        })
    }

    pub(crate) fn directory(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.directory
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn directory_mut(&self) -> std::sync::RwLockWriteGuard<'_, Directory> {
        self.directory
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a new signing key, which signs from now on; older keys stay published.
    pub(crate) fn add_signing_key(&self, material: &KeyMaterial) -> Result<String, Error> {
        let key = SigningKey::new(material, "accounts.localhost")?;
        let kid = key.kid.clone();
        lock(&self.keys).push(key);
        Ok(kid)
    }

    /// The id of the key that signs new tokens.
    pub(crate) fn active_kid(&self) -> Option<String> {
        lock(&self.keys).last().map(|k| k.kid.clone())
    }

    /// The published keys, newest first.
    pub(crate) fn keys(&self) -> Vec<SigningKey> {
        lock(&self.keys).iter().rev().cloned().collect()
    }

    /// Signs access-token claims with the active key.
    pub(crate) fn sign(&self, claims: &tokens::AccessClaims) -> Result<String, String> {
        let key = lock(&self.keys).last().cloned().ok_or("no signing key")?;
        key.sign(claims, claims.version() == directory::TokenVersion::V1)
    }
}

/// The identity routes, each counted and open to faults under its operation name.
pub(crate) fn routes(shared: &Arc<Shared>) -> Router<Arc<Shared>> {
    let op = |name, route| service_operation(shared, name, route);
    Router::new()
        .route(
            "/{tenant}/oauth2/v2.0/token",
            op("entra.token", post(token_endpoint::token)),
        )
        .route(
            "/{tenant}/discovery/v2.0/keys",
            op("entra.keys", get(discovery::keys)),
        )
        .route(
            "/{tenant}/discovery/keys",
            op("entra.keys", get(discovery::keys)),
        )
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            op("entra.discovery", get(discovery::openid_configuration_v2)),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            op("entra.discovery", get(discovery::openid_configuration_v1)),
        )
        .route("/msi/token", op("msi.token", get(managed::token)))
        .route(
            "/kubernetes/.well-known/openid-configuration",
            op(
                "kubernetes.discovery",
                get(discovery::kubernetes_configuration),
            ),
        )
        .route(
            "/kubernetes/openid/v1/jwks",
            op("kubernetes.keys", get(discovery::kubernetes_keys)),
        )
}
