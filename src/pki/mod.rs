//! Private PKI on the controller: create a CA, issue host certificates signed by it, and read a
//! certificate's serial, names and expiry (to decide when to reissue).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use time::OffsetDateTime;

/// PKI failures.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM or DER blob did not parse.
    #[error("not a valid certificate: {0}")]
    Parse(String),
    /// The CA key does not match the CA certificate.
    #[error("the CA key does not match the CA certificate `{0}`")]
    KeyMismatch(String),
}

/// A freshly made key and certificate (PEM). The key must be treated as sensitive.
pub struct Issued {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM (PKCS#8).
    pub key_pem: String,
}

fn key_for(alg: KeyAlgorithm) -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_for(match alg {
        KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
    })
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        // Two independent random u64s from the OS-seeded hasher state; serials need uniqueness,
        // not secrecy.
        let v = std::collections::hash_map::RandomState::new();
        let x = std::hash::BuildHasher::hash_one(&v, std::time::SystemTime::now());
        chunk.copy_from_slice(&x.to_be_bytes()[..chunk.len()]);
    }
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

/// Creates a self-signed CA valid for `days`.
pub fn create_ca(common_name: &str, days: u64) -> Result<Issued, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days as i64);
    params.serial_number = Some(random_serial());
    let key = key_for(KeyAlgorithm::EcdsaP256)?;
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Key algorithms plumb issues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 (the default: small, fast, accepted everywhere).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

/// What to put in a leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRequest {
    /// The CA's name (for messages).
    pub ca: String,
    /// Subject common name.
    pub common_name: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<String>,
    /// How long it is valid, in seconds.
    pub validity_secs: u64,
    /// Key algorithm of the new key.
    pub key_algorithm: KeyAlgorithm,
}

/// Issues a certificate for `want`, signed by the CA (certificate and key in PEM).
pub fn issue(ca_cert_pem: &str, ca_key_pem: &str, want: &LeafRequest) -> Result<Issued, PkiError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let ca_info = inspect(ca_cert_pem)?;
    if ca_info.public_key != rcgen::PublicKeyData::der_bytes(&ca_key) {
        return Err(PkiError::KeyMismatch(want.ca.clone()));
    }
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, want.common_name.as_str());
    for d in &want.dns_names {
        params
            .subject_alt_names
            .push(SanType::DnsName(d.as_str().try_into()?));
    }
    for ip in &want.ip_addresses {
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| PkiError::Parse(format!("`{ip}` is not an IP address")))?;
        params.subject_alt_names.push(SanType::IpAddress(addr));
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::seconds(want.validity_secs as i64);
    params.serial_number = Some(random_serial());
    let key = key_for(want.key_algorithm)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What plumb reads from a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial, hex.
    pub serial: String,
    /// Subject CN.
    pub common_name: String,
    /// Issuer CN.
    pub issuer: String,
    /// DNS SANs, sorted.
    pub dns_names: Vec<String>,
    /// IP SANs, sorted.
    pub ip_addresses: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub not_after: i64,
    /// The raw public key bits.
    pub public_key: Vec<u8>,
    /// DER of the issuer name (to check the chain against a CA's subject).
    pub issuer_der: Vec<u8>,
    /// DER of the subject name.
    pub subject_der: Vec<u8>,
}

/// Parses the first certificate of a PEM blob.
pub fn inspect(pem: &str) -> Result<CertInfo, PkiError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    let cert = p.parse_x509().map_err(|e| PkiError::Parse(e.to_string()))?;
    let cn = |n: &x509_parser::x509::X509Name| {
        n.iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .ok()
                            .map(|a| IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b)
                            .ok()
                            .map(|a| IpAddr::from(a).to_string()),
                        _ => None,
                    };
                    ip_addresses.extend(ip);
                }
                _ => {}
            }
        }
    }
    dns_names.sort();
    ip_addresses.sort();
    Ok(CertInfo {
        serial: cert.raw_serial_as_string().replace(':', ""),
        common_name: cn(cert.subject()),
        issuer: cn(cert.issuer()),
        dns_names,
        ip_addresses,
        not_after: cert.validity().not_after.timestamp(),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        issuer_der: cert.issuer().as_raw().to_vec(),
        subject_der: cert.subject().as_raw().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    fn want() -> LeafRequest {
        LeafRequest {
            ca: "pg-ca".into(),
            common_name: "pg-srv1".into(),
            dns_names: vec!["pg-srv1".into()],
            ip_addresses: vec!["10.0.0.1".into()],
            validity_secs: 10 * 86_400,
            key_algorithm: KeyAlgorithm::EcdsaP256,
        }
    }

    #[test]
    fn issues_a_certificate_chained_to_the_ca() {
        let ca = create_ca("test CA", 100).unwrap();
        let leaf = issue(&ca.cert_pem, &ca.key_pem, &want()).unwrap();
        let info = inspect(&leaf.cert_pem).unwrap();
        let ca_info = inspect(&ca.cert_pem).unwrap();
        assert_eq!(info.common_name, "pg-srv1");
        assert_eq!(info.issuer, "test CA");
        assert_eq!(info.issuer_der, ca_info.subject_der);
        assert_eq!(info.dns_names, vec!["pg-srv1"]);
        assert_eq!(info.ip_addresses, vec!["10.0.0.1"]);
        let days = (info.not_after - OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
        assert!((9..=10).contains(&days), "{days}");
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn a_foreign_ca_key_is_refused() {
        let ca = create_ca("a", 10).unwrap();
        let other = create_ca("b", 10).unwrap();
        assert!(matches!(
            issue(&ca.cert_pem, &other.key_pem, &want()),
            Err(PkiError::KeyMismatch(_))
        ));
    }
}
