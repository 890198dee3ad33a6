//! The emulator's TLS identity: a CA made at start, and a leaf certificate minted (and cached)
//! for every KMS host name a client asks for by SNI — `kms.<region>.<partition suffix>` in any
//! partition, their `kms-fips.` forms, `localhost`, and names the caller adds. A client that
//! trusts the CA then connects exactly as it would to KMS.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// DNS suffixes of the AWS partitions (as `kmstool_core::kms::endpoint` knows them).
const PARTITION_SUFFIXES: [&str; 7] = [
    "amazonaws.com",
    "amazonaws.com.cn",
    "c2s.ic.gov",
    "sc2s.sgov.gov",
    "csp.hci.ic.gov",
    "cloud.adc-e.uk",
    "amazonaws.eu",
];

/// Why the TLS identity could not be made.
#[derive(Debug)]
pub struct CertError(String);

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot make the emulator's certificates: {}", self.0)
    }
}

impl std::error::Error for CertError {}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<rustls::Error> for CertError {
    fn from(e: rustls::Error) -> Self {
        Self(e.to_string())
    }
}

/// A certificate authority that signs the emulator's leaves.
pub struct CertAuthority {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuthority").finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// A fresh CA with an ECDSA P-256 key.
    pub fn generate() -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "kmstool-sim");
        name.push(DnType::CommonName, "kmstool-sim KMS emulator CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate, PEM (what `--ca-out` writes).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Mints a leaf for `name` (a DNS name or an IP address).
    pub fn leaf(&self, name: &str) -> Result<CertifiedKey, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&private)?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            signer,
        ))
    }
}

/// Whether the emulator serves `name`: a KMS host of any partition, `localhost`, an IP
/// address, or one of `extra`.
pub fn serves_name(name: &str, extra: &[String]) -> bool {
    if name == "localhost" || name.parse::<IpAddr>().is_ok() || extra.iter().any(|e| e == name) {
        return true;
    }
    let Some(rest) = name
        .strip_prefix("kms.")
        .or_else(|| name.strip_prefix("kms-fips."))
    else {
        return false;
    };
    PARTITION_SUFFIXES.iter().any(|suffix| {
        rest.strip_suffix(suffix)
            .and_then(|region| region.strip_suffix('.'))
            .is_some_and(is_region)
    })
}

/// Shaped like `us-east-1`: lowercase letters, digits and single hyphens, a letter first and a
/// digit last.
fn is_region(region: &str) -> bool {
    let bytes = region.as_bytes();
    (1..=32).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes.last().is_some_and(u8::is_ascii_digit)
        && region.contains('-')
        && !region.contains("--")
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A rustls certificate resolver that mints a leaf per served SNI name, once. Without SNI
/// (a client connecting by IP address) it presents a leaf for `localhost` and `127.0.0.1`.
pub struct LeafResolver {
    ca: Arc<CertAuthority>,
    extra_names: Vec<String>,
    cache: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for LeafResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafResolver")
            .field("extra_names", &self.extra_names)
            .finish_non_exhaustive()
    }
}

impl LeafResolver {
    /// A resolver signing with `ca`, serving KMS names plus `extra_names`.
    pub fn new(ca: Arc<CertAuthority>, extra_names: Vec<String>) -> Self {
        Self {
            ca,
            extra_names,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn leaf_for(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let mut cache = self.cache.lock().ok()?;
        if let Some(found) = cache.get(name) {
            return Some(Arc::clone(found));
        }
        let minted = Arc::new(self.ca.leaf(name).ok()?);
        cache.insert(name.to_owned(), Arc::clone(&minted));
        Some(minted)
    }
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match client_hello.server_name() {
            Some(name) if serves_name(name, &self.extra_names) => self.leaf_for(name),
            // Unknown names get no certificate, so the handshake fails as it would against
            // a host that is not KMS.
            Some(_) => None,
            None => self.leaf_for("127.0.0.1"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_kms_names_of_every_partition() {
        for name in [
            "kms.us-east-1.amazonaws.com",
            "kms.cn-north-1.amazonaws.com.cn",
            "kms.us-iso-east-1.c2s.ic.gov",
            "kms.us-isob-east-1.sc2s.sgov.gov",
            "kms-fips.us-gov-west-1.amazonaws.com",
            "localhost",
            "127.0.0.1",
            "kms.example.test",
        ] {
            assert!(
                serves_name(name, &["kms.example.test".to_owned()]),
                "{name}"
            );
        }
        for name in [
            "kms.amazonaws.com",
            "kms.US-EAST-1.amazonaws.com",
            "kms.us-east-1.amazonaws.com.evil",
            "s3.us-east-1.amazonaws.com",
            "kms.us--east-1.amazonaws.com",
            "kms.us-east-.amazonaws.com",
        ] {
            assert!(!serves_name(name, &[]), "{name}");
        }
    }
}
