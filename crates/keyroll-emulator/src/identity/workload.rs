//! Workload identity: the emulator plays a Kubernetes cluster's service-account token issuer
//! (an OpenID provider at `https://localhost:{port}/kubernetes`, with discovery and JWKS as
//! AKS publishes them) and writes projected service-account tokens, which an app with a
//! matching federated credential exchanges at the token endpoint (audience
//! `api://AzureADTokenExchange`), as `WorkloadIdentityCredential` does with
//! `AZURE_FEDERATED_TOKEN_FILE`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! use keyroll_emulator::{App, Emulator, FederatedCredential};
//! let emu = Emulator::builder().start().await?;
//! let app = App::new("aks-app").federated_credential(FederatedCredential::new(
//!     emu.kubernetes_issuer(),
//!     "system:serviceaccount:default:orders",
//! ));
//! emu.admin().register_app(app)?;
//! let file = std::env::temp_dir().join("azure-identity-token");
//! emu.admin().write_service_account_token(&file, "default", "orders")?;
//! // AZURE_FEDERATED_TOKEN_FILE=file AZURE_CLIENT_ID=aks-app AZURE_TENANT_ID=emu.tenant_id()
//! # Ok(()) }
//! ```

use serde::Serialize;
use serde_json::Value;

use crate::Error;
use crate::crypto::KeyMaterial;
use crate::identity::directory::{TOKEN_EXCHANGE_AUDIENCE, random_guid};
use crate::identity::tokens::SigningKey;

/// The path of the issuer under the authority host.
pub(crate) const ISSUER_PATH: &str = "kubernetes";

/// Lifetime of projected tokens (AKS projects one-hour tokens).
pub(crate) const PROJECTED_LIFETIME: i64 = 3600;

/// The cluster's service-account token issuer.
#[derive(Debug)]
pub(crate) struct KubernetesIssuer {
    pub(crate) issuer: String,
    key: SigningKey,
}

#[derive(Debug, Serialize)]
struct ServiceAccount<'a> {
    name: &'a str,
    uid: String,
}

#[derive(Debug, Serialize)]
struct KubernetesClaim<'a> {
    namespace: &'a str,
    serviceaccount: ServiceAccount<'a>,
}

#[derive(Debug, Serialize)]
struct ServiceAccountClaims<'a> {
    aud: [&'a str; 1],
    exp: i64,
    iat: i64,
    nbf: i64,
    iss: &'a str,
    jti: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaim<'a>,
    sub: String,
}

impl KubernetesIssuer {
    pub(crate) fn new(authority: &str, material: &KeyMaterial) -> Result<KubernetesIssuer, Error> {
        Ok(KubernetesIssuer {
            issuer: format!("{authority}/{ISSUER_PATH}"),
            key: SigningKey::new(material, "kubernetes.localhost")?,
        })
    }

    /// A service-account token for `namespace`/`name`, for `audience`
    /// (`api://AzureADTokenExchange` by default), valid from `now` for `lifetime` seconds.
    pub(crate) fn token(
        &self,
        namespace: &str,
        name: &str,
        audience: Option<&str>,
        now: i64,
        lifetime: i64,
    ) -> Result<String, Error> {
        if [namespace, name]
            .iter()
            .any(|s| s.is_empty() || s.contains(':'))
        {
            return Err(Error::refused(
                "BadParameter",
                format!("invalid service account {namespace:?}/{name:?}"),
            ));
        }
        let claims = ServiceAccountClaims {
            aud: [audience.unwrap_or(TOKEN_EXCHANGE_AUDIENCE)],
            exp: now + lifetime,
            iat: now,
            nbf: now,
            iss: &self.issuer,
            jti: random_guid(),
            kubernetes: KubernetesClaim {
                namespace,
                serviceaccount: ServiceAccount {
                    name,
                    uid: crate::identity::directory::stable_guid(&format!("{namespace}/{name}")),
                },
            },
            sub: format!("system:serviceaccount:{namespace}:{name}"),
        };
        self.key
            .sign(&claims, false)
            .map_err(|e| Error::refused("InternalError", e))
    }

    /// The claims of a token this issuer signed; `None` when the signature does not verify.
    pub(crate) fn verify(&self, token: &str) -> Option<Value> {
        self.key.verify(token).ok()
    }

    /// `/.well-known/openid-configuration` as a cluster publishes it.
    pub(crate) fn discovery(&self) -> Value {
        serde_json::json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    /// `/openid/v1/jwks`.
    pub(crate) fn jwks(&self) -> Value {
        serde_json::json!({"keys": [self.key.jwk(&self.issuer)]})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeySpec;

    #[test]
    fn tokens_name_the_service_account_and_verify_with_the_issuer_key() {
        let k = KubernetesIssuer::new(
            "https://localhost:1",
            &KeyMaterial::generate(KeySpec::RSA_2048).unwrap(),
        )
        .unwrap();
        let t = k.token("default", "orders", None, 100, 60).unwrap();
        let claims = k.verify(&t).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:default:orders");
        assert_eq!(claims["aud"][0], TOKEN_EXCHANGE_AUDIENCE);
        assert_eq!(claims["iss"], "https://localhost:1/kubernetes");
        assert_eq!(
            (claims["iat"].as_i64(), claims["exp"].as_i64()),
            (Some(100), Some(160))
        );
        assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "orders");
        assert!(k.verify(&format!("{t}x")).is_none());
        assert!(k.token("a:b", "c", None, 0, 1).is_err());
        assert_eq!(
            k.discovery()["jwks_uri"],
            "https://localhost:1/kubernetes/openid/v1/jwks"
        );
    }
}
