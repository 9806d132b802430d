//! TLS for the emulator: a CA generated at start (or loaded from the state directory), a leaf
//! certificate for `*.vault.localhost`, `vault.localhost`, `localhost`, `127.0.0.1` and `::1`,
//! the rustls server configuration, and an HTTP client that trusts the CA and resolves every
//! name under `localhost` to the loopback address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

/// The emulator's certificate authority and the leaf certificate it serves.
pub(crate) struct TlsMaterial {
    pub(crate) ca_pem: String,
    ca_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
    leaf_key: Vec<u8>,
}

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "keyroll emulator CA");
    dn.push(DnType::OrganizationName, "keyroll");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    params
}

impl TlsMaterial {
    /// Loads the CA from `dir` when it holds one, otherwise generates one (and saves it there).
    pub(crate) fn load_or_generate(dir: Option<&Path>) -> Result<TlsMaterial, Error> {
        let tls = |e: rcgen::Error| Error::Tls(e.to_string());
        let loaded = match dir {
            Some(dir) => {
                let cert = dir.join(CA_CERT_FILE);
                let key = dir.join(CA_KEY_FILE);
                if cert.exists() && key.exists() {
                    Some((
                        std::fs::read_to_string(cert)?,
                        std::fs::read_to_string(key)?,
                    ))
                } else {
                    None
                }
            }
            None => None,
        };
        let (ca_pem, ca_key) = match loaded {
            Some((cert_pem, key_pem)) => (cert_pem, KeyPair::from_pem(&key_pem).map_err(tls)?),
            None => {
                let key = KeyPair::generate().map_err(tls)?;
                let cert = ca_params().self_signed(&key).map_err(tls)?;
                let pem = cert.pem();
                if let Some(dir) = dir {
                    std::fs::create_dir_all(dir)?;
                    crate::store::write_atomic(
                        &dir.join(CA_KEY_FILE),
                        key.serialize_pem().as_bytes(),
                    )?;
                    crate::store::write_atomic(&dir.join(CA_CERT_FILE), pem.as_bytes())?;
                }
                (pem, key)
            }
        };
        let ca_der = CertificateDer::from(
            pem::parse(&ca_pem)
                .map_err(|e| Error::Tls(e.to_string()))?
                .into_contents(),
        );
        let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key).map_err(tls)?;

        let leaf_key = KeyPair::generate().map_err(tls)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::DnsName("*.vault.localhost".try_into().map_err(tls)?),
            SanType::DnsName("vault.localhost".try_into().map_err(tls)?),
            SanType::DnsName("localhost".try_into().map_err(tls)?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        let leaf = params.signed_by(&leaf_key, &issuer).map_err(tls)?;
        Ok(TlsMaterial {
            ca_pem,
            ca_der,
            leaf_der: leaf.der().clone(),
            leaf_key: leaf_key.serialize_der(),
        })
    }

    /// The rustls server configuration (HTTP/1.1 over TLS 1.2 or 1.3, aws-lc-rs).
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.leaf_der.clone(), self.ca_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.clone())),
            )
            .map_err(|e| Error::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Resolves every name ending in `localhost` to the loopback address, other names as usual.
#[derive(Debug, Clone, Copy, Default)]
struct LocalhostResolver;

impl reqwest::dns::Resolve for LocalhostResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            if host == "localhost" || host.ends_with(".localhost") {
                let addrs: reqwest::dns::Addrs =
                    Box::new(std::iter::once(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
                return Ok(addrs);
            }
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// A `reqwest::Client` that trusts only the given CA (PEM) and resolves `localhost` and every
/// name under it (`myvault.vault.localhost`) to 127.0.0.1, for processes that talk to an
/// emulator started elsewhere (for example the `keyroll` CLI's `--insecure-ca`).
///
/// Pass it to the Azure SDK clients as their transport:
/// `ClientOptions { transport: Some(Transport::new(Arc::new(client))), .. }`.
pub fn localhost_http_client(ca_pem: &str) -> Result<reqwest::Client, Error> {
    let certs = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())?;
    if certs.is_empty() {
        return Err(Error::Tls("no certificate in the CA PEM".into()));
    }
    Ok(reqwest::Client::builder()
        .tls_certs_only(certs)
        .dns_resolver(Arc::new(LocalhostResolver))
        .build()?)
}
