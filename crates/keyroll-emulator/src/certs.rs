//! Certificates issued by the emulated vault: self-signed X.509 from a policy (rcgen), the
//! thumbprints Key Vault reports, and the certificate's secret as PKCS#12 or PEM.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose,
    SanType, SerialNumber,
};

use crate::crypto::KeyMaterial;
use crate::store::CertPolicy;

/// PKCS#12 content type of a certificate's secret.
pub(crate) const PKCS12: &str = "application/x-pkcs12";
/// PEM content type of a certificate's secret.
pub(crate) const PEM: &str = "application/x-pem-file";

/// Why a certificate or its secret could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen refused the parameters.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// The PKCS#12 archive could not be written or read.
    #[error("PKCS#12: {0}")]
    Pkcs12(String),
    /// The key could not be used.
    #[error(transparent)]
    Key(#[from] crate::crypto::CryptoError),
}

/// `x5t`: base64url of the certificate's SHA-1 thumbprint.
pub(crate) fn x5t(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// `x5t#S256`: base64url of the certificate's SHA-256 thumbprint.
pub(crate) fn x5t_s256(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

fn distinguished_name(subject: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for part in subject.split([',', ';']) {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let ty = match k.trim().to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "C" => DnType::CountryName,
            "ST" | "S" => DnType::StateOrProvinceName,
            "L" => DnType::LocalityName,
            _ => continue,
        };
        dn.push(ty, v.trim());
    }
    dn
}

fn key_usage(name: &str) -> Option<KeyUsagePurpose> {
    Some(match name {
        "digitalSignature" => KeyUsagePurpose::DigitalSignature,
        "nonRepudiation" => KeyUsagePurpose::ContentCommitment,
        "keyEncipherment" => KeyUsagePurpose::KeyEncipherment,
        "dataEncipherment" => KeyUsagePurpose::DataEncipherment,
        "keyAgreement" => KeyUsagePurpose::KeyAgreement,
        "keyCertSign" => KeyUsagePurpose::KeyCertSign,
        "cRLSign" => KeyUsagePurpose::CrlSign,
        "encipherOnly" => KeyUsagePurpose::EncipherOnly,
        "decipherOnly" => KeyUsagePurpose::DecipherOnly,
        _ => return None,
    })
}

fn eku(oid: &str) -> Option<ExtendedKeyUsagePurpose> {
    Some(match oid {
        "1.3.6.1.5.5.7.3.1" => ExtendedKeyUsagePurpose::ServerAuth,
        "1.3.6.1.5.5.7.3.2" => ExtendedKeyUsagePurpose::ClientAuth,
        "1.3.6.1.5.5.7.3.3" => ExtendedKeyUsagePurpose::CodeSigning,
        "1.3.6.1.5.5.7.3.4" => ExtendedKeyUsagePurpose::EmailProtection,
        "1.3.6.1.5.5.7.3.8" => ExtendedKeyUsagePurpose::TimeStamping,
        "1.3.6.1.5.5.7.3.9" => ExtendedKeyUsagePurpose::OcspSigning,
        other => {
            let arcs: Option<Vec<u64>> = other.split('.').map(|a| a.parse().ok()).collect();
            ExtendedKeyUsagePurpose::Other(arcs?)
        }
    })
}

/// Adds calendar months to a Unix time, clamping the day to the target month's length.
pub(crate) fn add_months(unix: i64, months: u32) -> i64 {
    let Ok(start) = time::OffsetDateTime::from_unix_timestamp(unix) else {
        return unix.saturating_add(i64::from(months) * 30 * 86_400);
    };
    let total =
        i64::from(start.year()) * 12 + i64::from(u8::from(start.month())) - 1 + i64::from(months);
    let year = i32::try_from(total.div_euclid(12)).unwrap_or(9999);
    let month = u8::try_from(total.rem_euclid(12) + 1).unwrap_or(1);
    let Ok(month) = time::Month::try_from(month) else {
        return unix;
    };
    let day = start.day().min(time::util::days_in_month(month, year));
    match time::Date::from_calendar_date(year, month, day) {
        Ok(date) => start.replace_date(date).unix_timestamp(),
        Err(_) => unix.saturating_add(i64::from(months) * 30 * 86_400),
    }
}

fn params(
    policy: &CertPolicy,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, CertError> {
    let generate = |e: &dyn std::fmt::Display| CertError::Generate(e.to_string());
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&policy.subject);
    for name in &policy.dns_names {
        params.subject_alt_names.push(SanType::DnsName(
            name.clone().try_into().map_err(|e| generate(&e))?,
        ));
    }
    params.key_usages = policy
        .key_usage
        .iter()
        .filter_map(|u| key_usage(u))
        .collect();
    params.extended_key_usages = policy.ekus.iter().filter_map(|o| eku(o)).collect();
    params.not_before =
        time::OffsetDateTime::from_unix_timestamp(not_before).map_err(|e| generate(&e))?;
    params.not_after =
        time::OffsetDateTime::from_unix_timestamp(not_after).map_err(|e| generate(&e))?;
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|e| generate(&e))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}

/// A self-signed certificate for `material` following `policy`, valid from `not_before` to
/// `not_after` (Unix seconds); also returns a CSR for the pending operation.
pub(crate) fn self_signed(
    material: &KeyMaterial,
    policy: &CertPolicy,
    not_before: i64,
    not_after: i64,
) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let generate = |e: &dyn std::fmt::Display| CertError::Generate(e.to_string());
    let key = material.rcgen_key_pair()?;
    let p = params(policy, not_before, not_after)?;
    let mut request = CertificateParams::default();
    request.distinguished_name = p.distinguished_name.clone();
    request.subject_alt_names = p.subject_alt_names.clone();
    let csr = request.serialize_request(&key).map_err(|e| generate(&e))?;
    let cert = p.self_signed(&key).map_err(|e| generate(&e))?;
    Ok((cert.der().to_vec(), csr.der().to_vec()))
}

/// The certificate's secret value: base64 PKCS#12 (empty password) or PEM (private key, then
/// the certificate). A non-exportable key's secret holds only the certificate.
pub(crate) fn secret_value(
    content_type: &str,
    material: &KeyMaterial,
    cer: &[u8],
    exportable: bool,
) -> Result<String, CertError> {
    if content_type == PEM {
        let mut out = String::new();
        if exportable {
            out.push_str(&material.pkcs8_pem());
        }
        out.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", cer.to_vec())));
        return Ok(out);
    }
    let p12 = |e: &dyn std::fmt::Display| CertError::Pkcs12(e.to_string());
    let cert = p12_keystore::Certificate::from_der(cer).map_err(|e| p12(&e))?;
    let mut store = p12_keystore::KeyStore::new();
    if exportable {
        let key = p12_keystore::PrivateKey::from_der(&material.pkcs8).map_err(|e| p12(&e))?;
        let local_key_id =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cer);
        let chain = p12_keystore::PrivateKeyChain::new(local_key_id.as_ref(), key, [cert]);
        store.add_entry(
            "certificate",
            p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
        );
    } else {
        store.add_entry(
            "certificate",
            p12_keystore::KeyStoreEntry::Certificate(cert),
        );
    }
    let der = store.writer("").write().map_err(|e| p12(&e))?;
    Ok(STANDARD.encode(der))
}

/// Converts a base64 PKCS#12 secret to PEM, as `outContentType=application/x-pem-file` asks.
pub(crate) fn pkcs12_to_pem(value: &str) -> Result<String, CertError> {
    let p12 = |e: &dyn std::fmt::Display| CertError::Pkcs12(e.to_string());
    let der = STANDARD.decode(value.trim()).map_err(|e| p12(&e))?;
    let store =
        p12_keystore::KeyStore::from_pkcs12(&der, "", p12_keystore::Pkcs12ImportPolicy::Relaxed)
            .map_err(|e| p12(&e))?;
    let mut out = String::new();
    if let Some((_, chain)) = store.private_key_chain() {
        out.push_str(&pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            chain.key().as_der().to_vec(),
        )));
        for cert in chain.certs() {
            out.push_str(&pem::encode(&pem::Pem::new(
                "CERTIFICATE",
                cert.as_der().to_vec(),
            )));
        }
        return Ok(out);
    }
    for (_, entry) in store.entries() {
        if let p12_keystore::KeyStoreEntry::Certificate(cert) = entry {
            out.push_str(&pem::encode(&pem::Pem::new(
                "CERTIFICATE",
                cert.as_der().to_vec(),
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Curve, KeySpec};

    fn policy() -> CertPolicy {
        CertPolicy {
            exportable: true,
            kty: "EC".into(),
            key_size: None,
            crv: Some("P-256".into()),
            reuse_key: false,
            content_type: PKCS12.into(),
            subject: "CN=signing, O=keyroll".into(),
            dns_names: vec!["signing.example".into()],
            ekus: vec!["1.3.6.1.5.5.7.3.2".into()],
            key_usage: vec!["digitalSignature".into()],
            validity_months: 12,
            issuer: "Self".into(),
            created: 0,
            updated: 0,
        }
    }

    #[test]
    fn add_months_follows_the_calendar() {
        // 2024-01-31 + 1 month = 2024-02-29 (leap year clamp).
        let jan31 = 1_706_659_200;
        assert_eq!(add_months(jan31, 1), 1_709_164_800);
        assert_eq!(add_months(jan31, 12), jan31 + 366 * 86_400);
    }

    #[test]
    fn certificate_pkcs12_and_pem_carry_the_key_and_the_certificate() {
        let key = KeyMaterial::generate(KeySpec::Ec(Curve::P256)).unwrap();
        let (cer, csr) = self_signed(&key, &policy(), 1_700_000_000, 1_731_536_000).unwrap();
        assert!(!csr.is_empty());
        let (_, parsed) = x509_parser::parse_x509_certificate(&cer).unwrap();
        assert_eq!(parsed.validity().not_before.timestamp(), 1_700_000_000);
        assert_eq!(parsed.subject().to_string(), "CN=signing, O=keyroll");
        assert_eq!(parsed.public_key().raw, key.spki_der().unwrap().as_slice());

        let pfx = secret_value(PKCS12, &key, &cer, true).unwrap();
        let pem_text = pkcs12_to_pem(&pfx).unwrap();
        let blocks = pem::parse_many(&pem_text).unwrap();
        assert_eq!(blocks[0].tag(), "PRIVATE KEY");
        assert_eq!(blocks[0].contents(), key.pkcs8.as_slice());
        assert_eq!(blocks[1].contents(), cer.as_slice());

        let cert_only = secret_value(PKCS12, &key, &cer, false).unwrap();
        let blocks = pem::parse_many(pkcs12_to_pem(&cert_only).unwrap()).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].tag(), "CERTIFICATE");

        let direct = secret_value(PEM, &key, &cer, true).unwrap();
        assert_eq!(pem::parse_many(direct).unwrap().len(), 2);
        assert_eq!(x5t(&cer).len(), 27);
        assert_eq!(x5t_s256(&cer).len(), 43);
    }
}
