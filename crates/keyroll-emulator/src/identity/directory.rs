//! The directory: tenants, registered apps (client id, secrets, certificates, federated
//! credentials), registered APIs (application id URIs, app roles, the access-token version
//! they accept) and managed identities (system- and user-assigned).
//!
//! ```
//! use keyroll_emulator::{Api, App, FederatedCredential, ManagedIdentity, TokenVersion};
//!
//! let app = App::new("orders-client").secret("s3cret");
//! let api = Api::new("api://orders")
//!     .access_token_version(TokenVersion::V2)
//!     .app_role("Orders.Read")
//!     .grant("orders-client", "Orders.Read");
//! let workload = App::new("aks-app").federated_credential(FederatedCredential::new(
//!     "https://localhost:8443/kubernetes",
//!     "system:serviceaccount:default:orders",
//! ));
//! let identity = ManagedIdentity::user_assigned("orders-identity");
//! assert!(format!("{app:?}").contains("<redacted>"));
//! # let _ = (api, workload, identity);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The audience every federated credential accepts by default, as Entra sets it.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Key Vault's first-party application id.
pub(crate) const KEY_VAULT_APP_ID: &str = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093";

/// Key Vault's application id URI in the public cloud.
pub(crate) const KEY_VAULT_URI: &str = "https://vault.azure.net";

/// The subscription the emulator's managed identities live in.
const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";

/// Which shape of access token an API receives (its `accessTokenAcceptedVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
#[non_exhaustive]
pub enum TokenVersion {
    /// v1.0: `iss` `https://sts.windows.net/{tid}/`, `appid`, `appidacr`, `aud` as requested.
    /// What Entra issues when the registration does not ask for v2 (Key Vault among them).
    #[default]
    V1,
    /// v2.0: `iss` `{authority}/{tid}/v2.0`, `azp`, `azpacr`, `aud` the API's application id.
    V2,
}

impl TryFrom<u8> for TokenVersion {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        match v {
            1 => Ok(TokenVersion::V1),
            2 => Ok(TokenVersion::V2),
            other => Err(format!("accessTokenAcceptedVersion {other}: use 1 or 2")),
        }
    }
}

impl From<TokenVersion> for u8 {
    fn from(v: TokenVersion) -> u8 {
        match v {
            TokenVersion::V1 => 1,
            TokenVersion::V2 => 2,
        }
    }
}

/// A federated identity credential of an app: tokens from `issuer` about `subject`, for one
/// of `audiences`, are exchanged for the app's access tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FederatedCredential {
    /// The external issuer (`iss`), for example the emulator's Kubernetes issuer.
    pub issuer: String,
    /// The subject (`sub`), for example `system:serviceaccount:{namespace}:{name}`.
    pub subject: String,
    /// Accepted audiences; `api://AzureADTokenExchange` by default.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
}

fn default_audiences() -> Vec<String> {
    vec![TOKEN_EXCHANGE_AUDIENCE.to_string()]
}

impl FederatedCredential {
    /// Trusts `subject`'s tokens from `issuer`, for `api://AzureADTokenExchange`.
    pub fn new(issuer: impl Into<String>, subject: impl Into<String>) -> FederatedCredential {
        FederatedCredential {
            issuer: issuer.into(),
            subject: subject.into(),
            audiences: default_audiences(),
        }
    }

    /// Replaces the accepted audiences.
    pub fn audiences<I: IntoIterator<Item = S>, S: Into<String>>(mut self, audiences: I) -> Self {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }
}

/// A registered app (a confidential client): its client id, the tenant it lives in, and the
/// credentials it may authenticate with. `Debug` prints no secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct App {
    /// The client id (`appid`/`azp` of its tokens).
    pub client_id: String,
    /// The tenant the app is registered in; the emulator's default tenant when `None`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Client secrets.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Certificates (DER; base64 in JSON) whose keys may sign client assertions.
    #[serde(default, with = "der_list")]
    pub certificates: Vec<Vec<u8>>,
    /// Federated identity credentials (workload identity).
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredential>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("client_id", &self.client_id)
            .field("tenant", &self.tenant)
            .field(
                "secrets",
                &format_args!("<redacted> x{}", self.secrets.len()),
            )
            .field("certificates", &self.certificates.len())
            .field("federated_credentials", &self.federated_credentials)
            .finish()
    }
}

mod der_list {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| STANDARD.encode(d)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| STANDARD.decode(s.trim()).map_err(serde::de::Error::custom))
            .collect()
    }
}

impl App {
    /// An app with no credentials yet, in the default tenant.
    pub fn new(client_id: impl Into<String>) -> App {
        App {
            client_id: client_id.into(),
            tenant: None,
            secrets: Vec::new(),
            certificates: Vec::new(),
            federated_credentials: Vec::new(),
        }
    }

    /// Registers the app in `tenant` instead of the default tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Adds a client secret.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secrets.push(secret.into());
        self
    }

    /// Adds a certificate (DER) whose key may sign the app's client assertions.
    pub fn certificate(mut self, cer_der: impl Into<Vec<u8>>) -> Self {
        self.certificates.push(cer_der.into());
        self
    }

    /// Adds a federated identity credential.
    pub fn federated_credential(mut self, credential: FederatedCredential) -> Self {
        self.federated_credentials.push(credential);
        self
    }
}

/// A registered API (a resource apps ask tokens for, with `{identifier}/.default`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Api {
    /// Application id URIs (`api://orders`); the first is the primary one.
    pub identifier_uris: Vec<String>,
    /// The API's application id (the `aud` of v2 tokens); derived from the first URI when
    /// not set.
    #[serde(default)]
    pub app_id: Option<String>,
    /// The tenant the API is registered in; the default tenant when `None`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The app roles the API defines.
    #[serde(default)]
    pub app_roles: Vec<String>,
    /// Role assignments: client id → roles granted to it (the `roles` claim).
    #[serde(default)]
    pub grants: BTreeMap<String, BTreeSet<String>>,
    /// The access-token version the API accepts.
    #[serde(default, rename = "accessTokenAcceptedVersion")]
    pub access_token_version: TokenVersion,
}

impl Api {
    /// An API known by this application id URI, accepting v1 tokens, with no roles.
    pub fn new(identifier_uri: impl Into<String>) -> Api {
        Api {
            identifier_uris: vec![identifier_uri.into()],
            app_id: None,
            tenant: None,
            app_roles: Vec::new(),
            grants: BTreeMap::new(),
            access_token_version: TokenVersion::V1,
        }
    }

    /// Adds another application id URI.
    pub fn identifier_uri(mut self, uri: impl Into<String>) -> Self {
        self.identifier_uris.push(uri.into());
        self
    }

    /// Sets the API's application id (a GUID in Azure).
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = Some(app_id.into());
        self
    }

    /// Registers the API in `tenant` instead of the default tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Defines an app role.
    pub fn app_role(mut self, role: impl Into<String>) -> Self {
        self.app_roles.push(role.into());
        self
    }

    /// Grants a defined role to the app (or managed identity) with this client id.
    pub fn grant(mut self, client_id: impl Into<String>, role: impl Into<String>) -> Self {
        self.grants
            .entry(client_id.into())
            .or_default()
            .insert(role.into());
        self
    }

    /// Sets the access-token version the API accepts.
    pub fn access_token_version(mut self, version: TokenVersion) -> Self {
        self.access_token_version = version;
        self
    }

    /// The application id: the one set, or a GUID derived from the first identifier URI.
    pub fn resolved_app_id(&self) -> String {
        self.app_id
            .clone()
            .unwrap_or_else(|| stable_guid(self.identifier_uris.first().map_or("", String::as_str)))
    }

    fn check(&self) -> Result<(), Error> {
        if self.identifier_uris.iter().all(|u| u.trim().is_empty()) {
            return Err(Error::refused(
                "BadParameter",
                "an API needs an identifier URI",
            ));
        }
        if let Some((client, role)) = self.grants.iter().find_map(|(c, roles)| {
            roles
                .iter()
                .find(|r| !self.app_roles.contains(r))
                .map(|r| (c, r))
        }) {
            return Err(Error::refused(
                "BadParameter",
                format!("role {role:?} granted to {client:?} is not one of the API's app roles"),
            ));
        }
        Ok(())
    }

    /// Whether `resource` (a scope without `/.default`) names this API.
    fn is_named_by(&self, resource: &str) -> bool {
        let trimmed = resource.trim_end_matches('/');
        self.identifier_uris
            .iter()
            .any(|u| u.trim_end_matches('/').eq_ignore_ascii_case(trimmed))
            || self.resolved_app_id().eq_ignore_ascii_case(trimmed)
    }
}

/// A managed identity: the client id, object (principal) id and Azure resource id that
/// select it at the managed-identity endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ManagedIdentity {
    /// The client id (`appid` of its tokens).
    pub client_id: String,
    /// The object id of its service principal (`oid` and `sub` of its tokens).
    pub object_id: String,
    /// Its Azure resource id (`xms_mirid`).
    pub resource_id: String,
}

impl ManagedIdentity {
    /// A user-assigned identity named `name`, with new random client and object ids and the
    /// resource id `/subscriptions/…/resourcegroups/emulator/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}`.
    pub fn user_assigned(name: &str) -> ManagedIdentity {
        ManagedIdentity {
            client_id: random_guid(),
            object_id: random_guid(),
            resource_id: format!(
                "/subscriptions/{SUBSCRIPTION}/resourcegroups/emulator/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
            ),
        }
    }

    /// The system-assigned identity of the emulated App Service site.
    pub(crate) fn system_assigned() -> ManagedIdentity {
        ManagedIdentity {
            client_id: random_guid(),
            object_id: random_guid(),
            resource_id: format!(
                "/subscriptions/{SUBSCRIPTION}/resourcegroups/emulator/providers/Microsoft.Web/sites/emulator"
            ),
        }
    }

    /// Sets the client id.
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// Sets the object id.
    pub fn with_object_id(mut self, object_id: impl Into<String>) -> Self {
        self.object_id = object_id.into();
        self
    }
}

/// How a managed identity is selected at the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selector<'a> {
    /// `client_id`.
    Client(&'a str),
    /// `object_id` or `principal_id`.
    Object(&'a str),
    /// `mi_res_id` or `msi_res_id`.
    Resource(&'a str),
}

/// A registered app with its certificates parsed.
#[derive(Debug, Clone)]
pub(crate) struct AppEntry {
    pub(crate) app: App,
    pub(crate) tenant: String,
    pub(crate) certificates: Vec<crate::identity::assertion::RegisteredCert>,
}

/// A resource as the token endpoint resolved it.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    /// What the client asked for (the v1 `aud`).
    pub(crate) requested: String,
    pub(crate) app_id: String,
    pub(crate) version: TokenVersion,
    pub(crate) roles: Vec<String>,
}

/// Every registration of one emulator.
#[derive(Debug)]
pub(crate) struct Directory {
    pub(crate) default_tenant: String,
    tenants: BTreeSet<String>,
    apps: BTreeMap<String, AppEntry>,
    apis: Vec<Api>,
    pub(crate) system_identity: ManagedIdentity,
    user_identities: Vec<ManagedIdentity>,
}

impl Directory {
    /// A directory with the default tenant, Key Vault as a built-in v1 API (known by
    /// `https://vault.azure.net` and by the emulator's own vault resource) and a
    /// system-assigned managed identity.
    pub(crate) fn new(default_tenant: String, vault_resource: &str) -> Directory {
        let mut tenants = BTreeSet::new();
        tenants.insert(default_tenant.clone());
        let key_vault = Api::new(KEY_VAULT_URI)
            .identifier_uri(vault_resource)
            .app_id(KEY_VAULT_APP_ID);
        Directory {
            default_tenant,
            tenants,
            apps: BTreeMap::new(),
            apis: vec![key_vault],
            system_identity: ManagedIdentity::system_assigned(),
            user_identities: Vec::new(),
        }
    }

    /// `common`, `organizations` and an empty path segment mean the default tenant.
    pub(crate) fn resolve_tenant<'a>(&'a self, tenant: &'a str) -> Option<&'a str> {
        match tenant {
            "common" | "organizations" | "" => Some(&self.default_tenant),
            t => self.tenants.get(t).map(String::as_str),
        }
    }

    pub(crate) fn add_tenant(&mut self, tenant: &str) -> Result<(), Error> {
        if tenant.trim().is_empty() || tenant.contains('/') {
            return Err(Error::refused(
                "BadParameter",
                format!("invalid tenant id {tenant:?}"),
            ));
        }
        self.tenants.insert(tenant.to_string());
        Ok(())
    }

    pub(crate) fn tenants(&self) -> Vec<String> {
        self.tenants.iter().cloned().collect()
    }

    /// Registers an app, or adds the credentials of `app` to the one with its client id.
    pub(crate) fn add_app(&mut self, app: App) -> Result<(), Error> {
        if app.client_id.trim().is_empty() {
            return Err(Error::refused("BadParameter", "an app needs a client id"));
        }
        let tenant = app
            .tenant
            .clone()
            .unwrap_or_else(|| self.default_tenant.clone());
        if !self.tenants.contains(&tenant) {
            return Err(Error::refused(
                "BadParameter",
                format!("tenant {tenant:?} is not registered: add it first"),
            ));
        }
        let certificates = app
            .certificates
            .iter()
            .map(|der| crate::identity::assertion::RegisteredCert::parse(der))
            .collect::<Result<Vec<_>, _>>()?;
        match self.apps.get_mut(&app.client_id) {
            Some(entry) => {
                entry.app.secrets.extend(app.secrets);
                entry.app.certificates.extend(app.certificates);
                entry
                    .app
                    .federated_credentials
                    .extend(app.federated_credentials);
                entry.certificates.extend(certificates);
            }
            None => {
                self.apps.insert(
                    app.client_id.clone(),
                    AppEntry {
                        app,
                        tenant,
                        certificates,
                    },
                );
            }
        }
        Ok(())
    }

    pub(crate) fn app(&self, client_id: &str) -> Option<&AppEntry> {
        self.apps.get(client_id)
    }

    pub(crate) fn client_ids(&self) -> Vec<String> {
        self.apps.keys().cloned().collect()
    }

    /// Registers an API (replacing one with the same first identifier URI).
    pub(crate) fn add_api(&mut self, api: Api) -> Result<(), Error> {
        api.check()?;
        if let Some(t) = &api.tenant
            && !self.tenants.contains(t)
        {
            return Err(Error::refused(
                "BadParameter",
                format!("tenant {t:?} is not registered: add it first"),
            ));
        }
        self.apis
            .retain(|a| a.identifier_uris.first() != api.identifier_uris.first());
        self.apis.push(api);
        Ok(())
    }

    pub(crate) fn apis(&self) -> Vec<Api> {
        self.apis.clone()
    }

    /// The API that `resource` names, as seen from `tenant`, with the roles granted to
    /// `client_id`. Key Vault (built in, no tenant) is seen from every tenant.
    pub(crate) fn resource(
        &self,
        tenant: &str,
        resource: &str,
        client_id: &str,
    ) -> Option<Resource> {
        let api = self.apis.iter().find(|a| {
            a.is_named_by(resource)
                && match &a.tenant {
                    Some(t) => t == tenant,
                    None => {
                        a.app_id.as_deref() == Some(KEY_VAULT_APP_ID)
                            || tenant == self.default_tenant
                    }
                }
        })?;
        Some(Resource {
            requested: resource.to_string(),
            app_id: api.resolved_app_id(),
            version: api.access_token_version,
            roles: api
                .grants
                .get(client_id)
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default(),
        })
    }

    pub(crate) fn add_user_identity(&mut self, identity: ManagedIdentity) -> Result<(), Error> {
        let clash = std::iter::once(&self.system_identity)
            .chain(&self.user_identities)
            .any(|m| {
                m.client_id == identity.client_id
                    || m.object_id == identity.object_id
                    || m.resource_id.eq_ignore_ascii_case(&identity.resource_id)
            });
        if clash {
            return Err(Error::refused(
                "Conflict",
                format!(
                    "a managed identity with client id {}, object id {} or resource id {} is already assigned",
                    identity.client_id, identity.object_id, identity.resource_id
                ),
            ));
        }
        self.user_identities.push(identity);
        Ok(())
    }

    pub(crate) fn user_identities(&self) -> &[ManagedIdentity] {
        &self.user_identities
    }

    /// The identity a managed-identity request selects; the system-assigned one when none is
    /// named.
    pub(crate) fn managed_identity(
        &self,
        selector: Option<Selector<'_>>,
    ) -> Option<&ManagedIdentity> {
        let Some(selector) = selector else {
            return Some(&self.system_identity);
        };
        std::iter::once(&self.system_identity)
            .chain(&self.user_identities)
            .find(|m| match selector {
                Selector::Client(id) => m.client_id.eq_ignore_ascii_case(id),
                Selector::Object(id) => m.object_id.eq_ignore_ascii_case(id),
                Selector::Resource(id) => m.resource_id.eq_ignore_ascii_case(id),
            })
    }
}

/// A random GUID (lowercase, hyphenated, version 4).
pub(crate) fn random_guid() -> String {
    let h = crate::store::new_version();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A GUID derived from `seed` (the same seed, the same GUID).
pub(crate) fn stable_guid(seed: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
    let h = hex::encode(d.as_ref());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory() -> Directory {
        Directory::new("tid".into(), "https://vault.localhost:1")
    }

    #[test]
    fn key_vault_is_a_built_in_v1_api_seen_from_every_tenant() {
        let mut d = directory();
        d.add_tenant("other").unwrap();
        for tenant in ["tid", "other"] {
            for name in [
                "https://vault.azure.net",
                "https://vault.localhost:1/",
                KEY_VAULT_APP_ID,
            ] {
                let r = d.resource(tenant, name, "c").unwrap();
                assert_eq!(
                    (r.version, r.app_id.as_str()),
                    (TokenVersion::V1, KEY_VAULT_APP_ID)
                );
            }
        }
        assert!(d.resource("tid", "api://nothing", "c").is_none());
    }

    #[test]
    fn apis_live_in_their_tenant_and_grant_only_defined_roles() {
        let mut d = directory();
        d.add_tenant("other").unwrap();
        let api = Api::new("api://orders").app_role("R").grant("c", "R");
        d.add_api(api.clone()).unwrap();
        let r = d.resource("tid", "api://orders", "c").unwrap();
        assert_eq!(r.roles, ["R"]);
        assert_eq!(r.app_id, api.resolved_app_id());
        assert!(
            d.resource("tid", "api://orders", "someone")
                .unwrap()
                .roles
                .is_empty()
        );
        assert!(d.resource("other", "api://orders", "c").is_none());
        assert!(
            d.add_api(Api::new("api://x").grant("c", "Undefined"))
                .is_err()
        );
        assert!(d.add_api(Api::new("api://y").tenant("nowhere")).is_err());
    }

    #[test]
    fn apps_merge_and_need_a_known_tenant() {
        let mut d = directory();
        d.add_app(App::new("c").secret("a")).unwrap();
        d.add_app(App::new("c").secret("b")).unwrap();
        assert_eq!(d.app("c").unwrap().app.secrets, ["a", "b"]);
        assert!(d.add_app(App::new("x").tenant("nowhere")).is_err());
        assert!(d.add_app(App::new(" ")).is_err());
        assert_eq!(d.resolve_tenant("common"), Some("tid"));
        assert_eq!(d.resolve_tenant("nowhere"), None);
    }

    #[test]
    fn managed_identities_are_selected_by_any_of_their_ids() {
        let mut d = directory();
        let m = ManagedIdentity::user_assigned("orders");
        d.add_user_identity(m.clone()).unwrap();
        assert!(d.add_user_identity(m.clone()).is_err());
        for s in [
            Selector::Client(&m.client_id),
            Selector::Object(&m.object_id),
            Selector::Resource(&m.resource_id),
        ] {
            assert_eq!(d.managed_identity(Some(s)), Some(&m));
        }
        assert_eq!(d.managed_identity(None), Some(&d.system_identity));
        assert!(
            d.managed_identity(Some(Selector::Client("nobody")))
                .is_none()
        );
    }

    #[test]
    fn guids_random_and_stable() {
        let g = random_guid();
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4", "version 4");
        assert_ne!(random_guid(), g);
        assert_eq!(stable_guid("x"), stable_guid("x"));
        assert_ne!(stable_guid("x"), stable_guid("y"));
        assert_eq!(stable_guid("x").matches('-').count(), 4);
    }

    #[test]
    fn token_versions_serialize_as_numbers() {
        assert_eq!(serde_json::to_string(&TokenVersion::V2).unwrap(), "2");
        assert!(serde_json::from_str::<TokenVersion>("3").is_err());
        let api: Api = serde_json::from_str(
            r#"{"identifier_uris":["api://a"],"accessTokenAcceptedVersion":2}"#,
        )
        .unwrap();
        assert_eq!(api.access_token_version, TokenVersion::V2);
        let app: App = serde_json::from_str(r#"{"client_id":"c","secrets":["hunter2"]}"#).unwrap();
        assert!(!format!("{app:?}").contains("hunter2"));
    }
}
