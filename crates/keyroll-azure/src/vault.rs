//! The vault clients, retries and counters that the sources, signers and assertions share.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions};
use azure_security_keyvault_certificates::models::{
    Certificate, CertificateAttributes, CertificateClientGetCertificateOptions,
    CertificateClientListCertificatePropertiesVersionsOptions,
    CertificateClientUpdateCertificatePropertiesOptions, CertificateProperties,
    UpdateCertificatePropertiesParameters,
};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_keys::models::{
    CurveName, JsonWebKey, Key, KeyAttributes, KeyClientGetKeyOptions,
    KeyClientListKeyPropertiesVersionsOptions, KeyClientSignOptions,
    KeyClientUpdateKeyPropertiesOptions, KeyProperties, KeyType as VaultKeyType, SignParameters,
    SignatureAlgorithm, UpdateKeyPropertiesParameters,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::models::{ContentType, SecretClientGetSecretOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures_util::TryStreamExt as _;
use keyroll_core::{Algorithm, BoxFuture, Curve, Jwk, KeyType, Signer, SourceError};
use zeroize::Zeroizing;

use crate::error::AzureError;
use crate::requests::{self, Counters, Op, Target, VaultMetrics};

/// Clients for one vault, with the request counters.
pub(crate) struct Vault {
    /// The vault host, for messages.
    pub(crate) host: String,
    /// The vault URL as given.
    pub(crate) url: String,
    keys: KeyClient,
    certificates: CertificateClient,
    secrets: SecretClient,
    counters: Counters,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("url", &self.url)
            .field("metrics", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// What the key, certificate and assertion builders collect for their vault; [`Vault::new`]
/// checks it and makes the clients.
pub(crate) struct VaultConfig {
    /// The vault URL as given.
    pub(crate) url: String,
    pub(crate) credential: Arc<dyn TokenCredential>,
    /// Client options (a custom transport, a cloud); their retry policy is replaced.
    pub(crate) client_options: Option<ClientOptions>,
}

impl VaultConfig {
    /// `url` with `credential` and default client options.
    pub(crate) fn new(url: &str, credential: Arc<dyn TokenCredential>) -> Self {
        VaultConfig {
            url: url.to_owned(),
            credential,
            client_options: None,
        }
    }
}

/// Refuses an algorithm that is not one of the RSA algorithms Key Vault signs with (keys and
/// certificates: EC keys sign with their curve's algorithm, so only RSA ones are chosen).
pub(crate) fn check_rsa_algorithm(algorithm: Option<Algorithm>) -> Result<(), AzureError> {
    match algorithm {
        Some(alg) if alg.digest().is_none() || alg.key_type() != KeyType::Rsa => {
            Err(AzureError::config(format!(
                "{alg} is not an RSA algorithm Key Vault signs with; EC keys use their curve's"
            )))
        }
        _ => Ok(()),
    }
}

impl Vault {
    pub(crate) fn new(config: VaultConfig) -> Result<Vault, AzureError> {
        let VaultConfig {
            url,
            credential,
            client_options,
        } = config;
        let vault_url = url.as_str();
        let parsed = url::Url::parse(vault_url).map_err(|e| {
            AzureError::config_with(format!("the vault URL `{vault_url}` is not a URL"), e)
        })?;
        if parsed.scheme() != "https" {
            return Err(AzureError::config(format!(
                "the vault URL `{vault_url}` must use https (bearer tokens are never sent over http)"
            )));
        }
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => {
                return Err(AzureError::config(format!(
                    "the vault URL `{vault_url}` has no host"
                )));
            }
        };
        let mut options = client_options.unwrap_or_default();
        // One request per call: the caches above retry with their own backoff (see
        // `requests`); the SDK's retries would multiply vault requests in an outage.
        options.retry = RetryOptions::none();
        let sdk = |e: azure_core::Error| {
            AzureError::config_with(
                format!("cannot make a client for the vault `{vault_url}`"),
                e,
            )
        };
        let keys = KeyClient::new(
            vault_url,
            Arc::clone(&credential),
            Some(KeyClientOptions {
                client_options: options.clone(),
                ..KeyClientOptions::default()
            }),
        )
        .map_err(sdk)?;
        let certificates = CertificateClient::new(
            vault_url,
            Arc::clone(&credential),
            Some(CertificateClientOptions {
                client_options: options.clone(),
                ..CertificateClientOptions::default()
            }),
        )
        .map_err(sdk)?;
        let secrets = SecretClient::new(
            vault_url,
            credential,
            Some(SecretClientOptions {
                client_options: options,
                ..SecretClientOptions::default()
            }),
        )
        .map_err(sdk)?;
        Ok(Vault {
            host,
            url,
            keys,
            certificates,
            secrets,
            counters: Counters::default(),
        })
    }

    pub(crate) fn metrics(&self) -> VaultMetrics {
        self.counters.snapshot()
    }

    fn target<'a>(&'a self, item: &'a str, op: Op) -> Target<'a> {
        Target {
            vault: &self.host,
            item,
            op,
        }
    }

    pub(crate) fn invalid(&self, item: &str, message: impl Into<String>) -> AzureError {
        AzureError::InvalidResponse {
            vault: self.host.clone(),
            item: item.to_owned(),
            message: message.into(),
            source: None,
        }
    }

    /// [`invalid`](Self::invalid), with the error that showed it.
    pub(crate) fn invalid_because(
        &self,
        item: &str,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> AzureError {
        AzureError::InvalidResponse {
            vault: self.host.clone(),
            item: item.to_owned(),
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// Every version of a key (no key material).
    pub(crate) async fn list_key_versions(
        &self,
        name: &str,
    ) -> Result<Vec<KeyProperties>, AzureError> {
        let item = format!("keys/{name}");
        requests::send(&self.counters, self.target(&item, Op::List), async {
            self.keys
                .list_key_properties_versions(
                    name,
                    Some(KeyClientListKeyPropertiesVersionsOptions::default()),
                )?
                .try_collect()
                .await
        })
        .await
    }

    /// One key version, with its public key.
    pub(crate) async fn get_key(&self, name: &str, version: &str) -> Result<Key, AzureError> {
        let item = format!("keys/{name}/{version}");
        requests::send(&self.counters, self.target(&item, Op::Get), async {
            self.keys
                .get_key(
                    name,
                    Some(KeyClientGetKeyOptions {
                        key_version: Some(version.to_owned()),
                        ..Default::default()
                    }),
                )
                .await?
                .into_model()
        })
        .await
    }

    /// Every version of a certificate (thumbprints and attributes, no `cer`).
    pub(crate) async fn list_certificate_versions(
        &self,
        name: &str,
    ) -> Result<Vec<CertificateProperties>, AzureError> {
        let item = format!("certificates/{name}");
        requests::send(&self.counters, self.target(&item, Op::List), async {
            self.certificates
                .list_certificate_properties_versions(
                    name,
                    Some(CertificateClientListCertificatePropertiesVersionsOptions::default()),
                )?
                .try_collect()
                .await
        })
        .await
    }

    /// Disables one key version (`enabled: false`).
    pub(crate) async fn disable_key_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<(), AzureError> {
        let item = format!("keys/{name}/{version}");
        let parameters = UpdateKeyPropertiesParameters {
            key_attributes: Some(KeyAttributes {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        requests::send(&self.counters, self.target(&item, Op::Update), async move {
            self.keys
                .update_key_properties(
                    name,
                    parameters.try_into()?,
                    Some(KeyClientUpdateKeyPropertiesOptions {
                        key_version: Some(version.to_owned()),
                        ..Default::default()
                    }),
                )
                .await
                .map(drop)
        })
        .await
    }

    /// Disables one certificate version (and with it its key version).
    pub(crate) async fn disable_certificate_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<(), AzureError> {
        let item = format!("certificates/{name}/{version}");
        let parameters = UpdateCertificatePropertiesParameters {
            certificate_attributes: Some(CertificateAttributes {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        requests::send(&self.counters, self.target(&item, Op::Update), async move {
            self.certificates
                .update_certificate_properties(
                    name,
                    parameters.try_into()?,
                    Some(CertificateClientUpdateCertificatePropertiesOptions {
                        certificate_version: Some(version.to_owned()),
                        ..Default::default()
                    }),
                )
                .await
                .map(drop)
        })
        .await
    }

    /// One certificate version (the latest when `version` is `None`).
    pub(crate) async fn get_certificate(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Certificate, AzureError> {
        let item = match version {
            Some(version) => format!("certificates/{name}/{version}"),
            None => format!("certificates/{name}"),
        };
        requests::send(&self.counters, self.target(&item, Op::Get), async {
            self.certificates
                .get_certificate(
                    name,
                    Some(CertificateClientGetCertificateOptions {
                        certificate_version: version.map(str::to_owned),
                        ..Default::default()
                    }),
                )
                .await?
                .into_model()
        })
        .await
    }

    /// A certificate's secret as PEM (private key first, then the chain).
    pub(crate) async fn get_secret_pem(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Zeroizing<String>, AzureError> {
        let item = format!("secrets/{name}/{version}");
        let secret = requests::send(&self.counters, self.target(&item, Op::GetSecret), async {
            self.secrets
                .get_secret(
                    name,
                    Some(SecretClientGetSecretOptions {
                        secret_version: Some(version.to_owned()),
                        out_content_type: Some(ContentType::Pem),
                        ..Default::default()
                    }),
                )
                .await?
                .into_model()
        })
        .await?;
        Ok(Zeroizing::new(secret.value.unwrap_or_default()))
    }

    /// `sign` over a digest with one key version.
    pub(crate) async fn sign_digest(
        &self,
        name: &str,
        version: &str,
        algorithm: Algorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>, AzureError> {
        let item = format!("keys/{name}/{version}");
        let vault_algorithm = signature_algorithm(algorithm)
            .ok_or_else(|| AzureError::config(format!("Key Vault cannot sign with {algorithm}")))?;
        let parameters = SignParameters {
            algorithm: Some(vault_algorithm),
            value: Some(digest.to_vec()),
        };
        let result = requests::send(&self.counters, self.target(&item, Op::Sign), async move {
            self.keys
                .sign(
                    name,
                    parameters.try_into()?,
                    Some(KeyClientSignOptions {
                        key_version: Some(version.to_owned()),
                        ..Default::default()
                    }),
                )
                .await?
                .into_model()
        })
        .await?;
        result
            .result
            .ok_or_else(|| self.invalid(&item, "the sign answer has no value"))
    }
}

fn signature_algorithm(algorithm: Algorithm) -> Option<SignatureAlgorithm> {
    Some(match algorithm {
        Algorithm::RS256 => SignatureAlgorithm::Rs256,
        Algorithm::RS384 => SignatureAlgorithm::Rs384,
        Algorithm::RS512 => SignatureAlgorithm::Rs512,
        Algorithm::PS256 => SignatureAlgorithm::Ps256,
        Algorithm::PS384 => SignatureAlgorithm::Ps384,
        Algorithm::PS512 => SignatureAlgorithm::Ps512,
        Algorithm::ES256 => SignatureAlgorithm::Es256,
        Algorithm::ES384 => SignatureAlgorithm::Es384,
        Algorithm::ES512 => SignatureAlgorithm::Es512,
        _ => return None,
    })
}

/// The public JWK of a vault key, and its key type.
pub(crate) fn public_jwk(key: &JsonWebKey) -> Result<(Jwk, KeyType), String> {
    match key.kty.as_ref() {
        Some(VaultKeyType::Rsa | VaultKeyType::RsaHsm) => {
            let (Some(n), Some(e)) = (&key.n, &key.e) else {
                return Err("an RSA key without `n` or `e`".to_owned());
            };
            Ok((Jwk::rsa(n, e), KeyType::Rsa))
        }
        Some(VaultKeyType::Ec | VaultKeyType::EcHsm) => {
            let curve = match key.crv.as_ref() {
                Some(CurveName::P256) => Curve::P256,
                Some(CurveName::P384) => Curve::P384,
                Some(CurveName::P521) => Curve::P521,
                other => return Err(format!("unsupported EC curve {other:?}")),
            };
            let (Some(x), Some(y)) = (&key.x, &key.y) else {
                return Err("an EC key without `x` or `y`".to_owned());
            };
            // The vault may strip leading zeros; JWS needs fixed-length coordinates.
            let len = curve.coordinate_len();
            let pad = |v: &[u8]| -> Result<Vec<u8>, String> {
                if v.len() > len {
                    return Err("an EC coordinate longer than its curve".to_owned());
                }
                let mut out = vec![0u8; len - v.len()];
                out.extend_from_slice(v);
                Ok(out)
            };
            Ok((
                Jwk::ec(curve.as_str(), &pad(x)?, &pad(y)?),
                KeyType::Ec(curve),
            ))
        }
        other => Err(format!(
            "unsupported key type {other:?} (only RSA and EC keys sign JWTs)"
        )),
    }
}

/// The algorithm a version signs with: the configured one when it fits the key, else the
/// key type's default (RS256, ES256/384/512).
pub(crate) fn algorithm_for(
    key_type: KeyType,
    configured: Option<Algorithm>,
) -> Result<Algorithm, String> {
    match configured {
        Some(alg) if alg.key_type() == key_type => Ok(alg),
        Some(alg) => Err(format!("{alg} does not fit a {key_type:?} key")),
        None => Algorithm::for_key_type(key_type)
            .first()
            .copied()
            .ok_or_else(|| format!("no algorithm for a {key_type:?} key")),
    }
}

/// The last path segment of a Key Vault id (`…/keys/{name}/{version}` → version).
pub(crate) fn version_of(id: &str) -> Option<&str> {
    let version = id.trim_end_matches('/').rsplit('/').next()?;
    (!version.is_empty()).then_some(version)
}

/// `(name, version)` of a versioned Key Vault key id.
pub(crate) fn key_name_and_version(key_id: &str) -> Option<(String, String)> {
    let url = url::Url::parse(key_id).ok()?;
    let mut segments = url.path_segments()?;
    match (segments.next(), segments.next(), segments.next()) {
        (Some("keys"), Some(name), Some(version)) if !name.is_empty() && !version.is_empty() => {
            Some((name.to_owned(), version.to_owned()))
        }
        _ => None,
    }
}

pub(crate) fn system_time(time: Option<azure_core::time::OffsetDateTime>) -> Option<SystemTime> {
    time.map(SystemTime::from)
}

/// A signer that has the vault sign the digest of the signing input with one key version.
pub(crate) struct RemoteSigner {
    pub(crate) vault: Arc<Vault>,
    pub(crate) source_name: String,
    pub(crate) key_name: String,
    pub(crate) version: String,
    pub(crate) algorithm: Algorithm,
}

impl fmt::Debug for RemoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteSigner")
            .field("vault", &self.vault.host)
            .field("key", &self.key_name)
            .field("version", &self.version)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl RemoteSigner {
    pub(crate) async fn sign_input(&self, signing_input: &[u8]) -> Result<Vec<u8>, AzureError> {
        let digest_algorithm = self.algorithm.digest().ok_or_else(|| {
            AzureError::config(format!("Key Vault cannot sign with {}", self.algorithm))
        })?;
        let digest = aws_lc_rs::digest::digest(digest_algorithm, signing_input);
        self.vault
            .sign_digest(
                &self.key_name,
                &self.version,
                self.algorithm,
                digest.as_ref(),
            )
            .await
    }
}

impl Signer for RemoteSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, SourceError>> {
        Box::pin(async move {
            self.sign_input(signing_input)
                .await
                .map_err(|e| e.into_source_error(self.source_name.clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(
            version_of("https://v.vault.azure.net/keys/k/0123abcd"),
            Some("0123abcd")
        );
        assert_eq!(
            key_name_and_version("https://v.vault.azure.net/keys/k/0123abcd"),
            Some(("k".to_owned(), "0123abcd".to_owned()))
        );
        assert_eq!(
            key_name_and_version("https://v.vault.azure.net/certificates/k/0123"),
            None
        );
        assert_eq!(
            key_name_and_version("https://v.vault.azure.net/keys/k"),
            None
        );
    }

    #[test]
    fn algorithms() {
        assert_eq!(algorithm_for(KeyType::Rsa, None), Ok(Algorithm::RS256));
        assert_eq!(
            algorithm_for(KeyType::Rsa, Some(Algorithm::PS256)),
            Ok(Algorithm::PS256)
        );
        assert_eq!(
            algorithm_for(KeyType::Ec(Curve::P384), None),
            Ok(Algorithm::ES384)
        );
        assert!(algorithm_for(KeyType::Ec(Curve::P256), Some(Algorithm::RS256)).is_err());
    }

    #[test]
    fn short_ec_coordinates_are_padded() {
        let key = JsonWebKey {
            kty: Some(VaultKeyType::Ec),
            crv: Some(CurveName::P256),
            x: Some(vec![1; 31]),
            y: Some(vec![2; 32]),
            ..Default::default()
        };
        let (jwk, key_type) = public_jwk(&key).unwrap();
        assert_eq!(key_type, KeyType::Ec(Curve::P256));
        assert_eq!(jwk.x.unwrap().len(), 43, "32 bytes in base64url");
        let oct = JsonWebKey {
            kty: Some(VaultKeyType::Oct),
            ..Default::default()
        };
        assert!(public_jwk(&oct).is_err());
    }
}
