//! The simulated NSM's certificate chain, shaped like the real Nitro PKI.
//!
//! Real attestation documents carry root → regional CA → zonal CA → instance CA in `cabundle`
//! and the per-enclave signing certificate in `certificate`; all keys are P-384 and every
//! certificate is signed ecdsa-with-SHA384. The extensions below copy what the real certificates
//! carry, in their order and with their criticality (seen with `openssl x509 -text` on the
//! certificates of the real fixtures):
//!
//! | certificate | extensions |
//! |---|---|
//! | root (30 years) | BasicConstraints CA (critical), SKI, KeyUsage digitalSignature+keyCertSign+cRLSign (critical) |
//! | regional (20 days) | BasicConstraints CA pathlen 2 (critical), AKI, SKI, KeyUsage as root (critical), CRL DP |
//! | zonal (6 days) | BasicConstraints CA pathlen 1 (critical), AKI, SKI, KeyUsage as root (critical), CRL DP |
//! | instance (1 day) | BasicConstraints CA pathlen 0 (critical), KeyUsage keyCertSign (critical) |
//! | leaf (3 hours) | BasicConstraints CA:FALSE (critical), KeyUsage digitalSignature+nonRepudiation |
//!
//! rcgen writes its own extensions in a fixed order and always marks KeyUsage critical, so all
//! extensions are given as custom extensions with their exact DER. Names mirror the real ones
//! but say `kmstool-sim` as the organization and point CRLs at an `.invalid` host, so a
//! simulated certificate can never pass for an AWS one.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, Issuer, KeyPair,
    PKCS_ECDSA_P384_SHA384, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use time::OffsetDateTime;

use super::SimError;

/// The region named in the simulated certificates' common names.
const REGION: &str = "us-east-1";

/// Validity of the root: the real G1 root's dates.
const ROOT_NOT_BEFORE: i64 = 1_572_269_285; // 2019-10-28T13:28:05Z
const ROOT_NOT_AFTER: i64 = 2_519_044_085; // 2049-10-28T14:28:05Z

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
/// Lifetimes of the regional, zonal and instance CAs and of the leaf, as on Nitro.
const CA_LIFETIMES: [u64; 3] = [20 * DAY, 6 * DAY, DAY];
const LEAF_LIFETIME: u64 = 3 * HOUR;
/// A leaf is replaced once less than this remains of it, so a fresh document stays valid for
/// at least this long (a verifier like KMS checks it at the time it receives it).
const LEAF_MIN_REMAINING: u64 = HOUR;

/// OIDs of the certificate extensions used.
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
const OID_AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];
const OID_CRL_DISTRIBUTION_POINTS: &[u64] = &[2, 5, 29, 31];

/// KeyUsage bit strings (DER content of the BIT STRING, unused-bits byte first).
const KU_CA: &[u8] = &[0x01, 0x86]; // digitalSignature, keyCertSign, cRLSign
const KU_CERT_SIGN: &[u8] = &[0x02, 0x04]; // keyCertSign
const KU_LEAF: &[u8] = &[0x06, 0xc0]; // digitalSignature, nonRepudiation

/// A certificate authority: its key, certificate and subject name.
pub(crate) struct Ca {
    key: KeyPair,
    der: Vec<u8>,
    name: DistinguishedName,
    not_before: u64,
    not_after: u64,
}

impl Ca {
    /// The certificate, DER.
    pub(crate) fn der(&self) -> &[u8] {
        &self.der
    }

    /// Whether this certificate covers `[now, now + ahead]`.
    fn covers(&self, now: u64, ahead: u64) -> bool {
        self.not_before <= now && now.saturating_add(ahead) <= self.not_after
    }

    /// An rcgen issuer signing with this CA's key under its subject name.
    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        let mut params = CertificateParams::default();
        params.distinguished_name = self.name.clone();
        Issuer::new(params, &self.key)
    }

    /// The subject key identifier this CA's certificate carries.
    fn key_id(&self) -> Vec<u8> {
        key_id(&self.key)
    }
}

/// The per-enclave signing certificate and its key.
struct Leaf {
    signer: EcdsaKeyPair,
    der: Vec<u8>,
    not_before: u64,
    not_after: u64,
}

/// Identity of the simulated instance and enclave, used in names and serials.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    /// `i-<17 hex>`.
    pub(crate) instance_id: String,
    /// The eight bytes behind `enc<16 hex>`.
    pub(crate) enclave_id: [u8; 8],
}

impl Identity {
    /// The module id: `i-<instance>-enc<enclave>`.
    pub(crate) fn module_id(&self) -> String {
        format!("{}-enc{}", self.instance_id, hex::encode(self.enclave_id))
    }
}

/// The root, the three intermediate CAs and the leaf; intermediates and leaf are reissued as
/// simulated time passes.
pub(crate) struct Chain {
    root: Ca,
    identity: Identity,
    cas: Vec<Ca>,
    leaf: Option<Leaf>,
}

impl Chain {
    /// A chain under `root`; intermediates and leaf are issued on first use.
    pub(crate) fn new(root: Ca, identity: Identity) -> Self {
        Self {
            root,
            identity,
            cas: Vec::new(),
            leaf: None,
        }
    }

    /// Makes every certificate valid at `now` (seconds since the epoch), reissuing what has
    /// expired, is about to, or is not valid yet (the clock went back).
    pub(crate) fn refresh(&mut self, now: u64) -> Result<(), SimError> {
        let cas_fresh = self.cas.len() == CA_LIFETIMES.len()
            && self.cas.iter().all(|ca| ca.covers(now, LEAF_LIFETIME));
        if !cas_fresh {
            self.cas = issue_intermediates(&self.root, &self.identity, now)?;
            self.leaf = None;
        }
        let leaf_fresh = self.leaf.as_ref().is_some_and(|leaf| {
            leaf.not_before <= now && now.saturating_add(LEAF_MIN_REMAINING) <= leaf.not_after
        });
        if !leaf_fresh {
            let issuer = self
                .cas
                .last()
                .ok_or(SimError::Internal("no instance CA"))?;
            self.leaf = Some(issue_leaf(issuer, &self.identity, now)?);
        }
        Ok(())
    }

    /// The CA bundle, root first, as the document carries it.
    pub(crate) fn cabundle(&self) -> Vec<Vec<u8>> {
        std::iter::once(&self.root)
            .chain(&self.cas)
            .map(|ca| ca.der.clone())
            .collect()
    }

    /// The leaf certificate, DER (after [`Chain::refresh`]).
    pub(crate) fn leaf_der(&self) -> Result<&[u8], SimError> {
        self.leaf
            .as_ref()
            .map(|leaf| leaf.der.as_slice())
            .ok_or(SimError::Internal("no leaf certificate"))
    }

    /// Signs `message` with the leaf key: ES384, `r ‖ s`, 96 bytes.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SimError> {
        let leaf = self
            .leaf
            .as_ref()
            .ok_or(SimError::Internal("no leaf certificate"))?;
        let signature = leaf
            .signer
            .sign(&SystemRandom::new(), message)
            .map_err(|_| SimError::Crypto("ES384 signing failed"))?;
        Ok(signature.as_ref().to_vec())
    }
}

/// Creates a fresh root CA.
pub(crate) fn new_root() -> Result<Ca, SimError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
    let name = root_name();
    let mut params = params(
        name.clone(),
        &random_serial(16)?,
        ROOT_NOT_BEFORE,
        ROOT_NOT_AFTER,
    )?;
    params.custom_extensions = vec![
        extension(OID_BASIC_CONSTRAINTS, true, basic_constraints(Some(None))),
        extension(OID_SUBJECT_KEY_ID, false, der(0x04, &key_id(&key))),
        extension(OID_KEY_USAGE, true, der(0x03, KU_CA)),
    ];
    let der = params.self_signed(&key)?.der().to_vec();
    Ok(Ca {
        key,
        der,
        name,
        not_before: ROOT_NOT_BEFORE.unsigned_abs(),
        not_after: ROOT_NOT_AFTER.unsigned_abs(),
    })
}

/// Loads a root saved by [`root_to_pem`]; the certificate must hold the key's public key.
pub(crate) fn root_from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, SimError> {
    let key = KeyPair::from_pkcs8_pem_and_sign_algo(key_pem, &PKCS_ECDSA_P384_SHA384)?;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| SimError::State("the saved root certificate is not PEM".into()))?
        .to_vec();
    let public = key.public_key_raw();
    if !der.windows(public.len()).any(|window| window == public) {
        return Err(SimError::State(
            "the saved root certificate does not match the saved key".into(),
        ));
    }
    Ok(Ca {
        key,
        der,
        name: root_name(),
        not_before: ROOT_NOT_BEFORE.unsigned_abs(),
        not_after: ROOT_NOT_AFTER.unsigned_abs(),
    })
}

/// The root's certificate and private key (PKCS#8), both PEM.
pub(crate) fn root_to_pem(root: &Ca) -> (String, String) {
    (pem("CERTIFICATE", &root.der), root.key.serialize_pem())
}

/// PEM armor around DER.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Issues the regional, zonal and instance CAs, valid from `now`.
fn issue_intermediates(root: &Ca, identity: &Identity, now: u64) -> Result<Vec<Ca>, SimError> {
    let regional = format!("{}.{REGION}.aws.nitro-enclaves", random_hex(8)?);
    let zonal = format!("{}.zonal.{REGION}.aws.nitro-enclaves", random_hex(8)?);
    let instance = format!("{}.{REGION}.aws.nitro-enclaves", identity.instance_id);
    let names = [
        ca_name(&regional),
        zonal_name(&zonal),
        instance_name(&instance),
    ];
    let mut cas: Vec<Ca> = Vec::with_capacity(names.len());
    for (depth, (name, lifetime)) in names.into_iter().zip(CA_LIFETIMES).enumerate() {
        let issuer = cas.last().unwrap_or(root);
        let path_len = u8::try_from(CA_LIFETIMES.len() - 1 - depth).unwrap_or(0);
        let ca = issue_ca(issuer, name, path_len, now, lifetime)?;
        cas.push(ca);
    }
    Ok(cas)
}

/// Issues one intermediate CA; the instance CA (path length 0) carries no key identifiers and
/// no CRL pointer, like the real one.
fn issue_ca(
    issuer: &Ca,
    name: DistinguishedName,
    path_len: u8,
    now: u64,
    lifetime: u64,
) -> Result<Ca, SimError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
    let not_after = now.saturating_add(lifetime);
    let serial_len = if path_len == 0 { 20 } else { 16 };
    let mut params = params(
        name.clone(),
        &random_serial(serial_len)?,
        secs(now)?,
        secs(not_after)?,
    )?;
    let basic = extension(
        OID_BASIC_CONSTRAINTS,
        true,
        basic_constraints(Some(Some(path_len))),
    );
    params.custom_extensions = if path_len == 0 {
        vec![
            basic,
            extension(OID_KEY_USAGE, true, der(0x03, KU_CERT_SIGN)),
        ]
    } else {
        let crl = format!("http://crl.nitro-enclaves.sim.invalid/crl/{}.crl", uuid()?);
        vec![
            basic,
            extension(
                OID_AUTHORITY_KEY_ID,
                false,
                authority_key_id(&issuer.key_id()),
            ),
            extension(OID_SUBJECT_KEY_ID, false, der(0x04, &key_id(&key))),
            extension(OID_KEY_USAGE, true, der(0x03, KU_CA)),
            extension(
                OID_CRL_DISTRIBUTION_POINTS,
                false,
                crl_distribution_point(&crl),
            ),
        ]
    };
    let der = params.signed_by(&key, &issuer.issuer())?.der().to_vec();
    Ok(Ca {
        key,
        der,
        name,
        not_before: now,
        not_after,
    })
}

/// Issues the enclave's signing certificate, valid for three hours from `now`. Its serial is
/// the enclave id, four zero bytes and the issue time, as on Nitro.
fn issue_leaf(issuer: &Ca, identity: &Identity, now: u64) -> Result<Leaf, SimError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
    let not_after = now.saturating_add(LEAF_LIFETIME);
    let mut serial = identity.enclave_id.to_vec();
    serial.extend_from_slice(&[0; 4]);
    serial.extend_from_slice(&u32::try_from(now).unwrap_or(u32::MAX).to_be_bytes());
    let subject = format!("{}.{REGION}.aws", identity.module_id());
    let mut params = params(
        instance_name(&subject),
        &serial,
        secs(now)?,
        secs(not_after)?,
    )?;
    params.custom_extensions = vec![
        extension(OID_BASIC_CONSTRAINTS, true, basic_constraints(None)),
        extension(OID_KEY_USAGE, false, der(0x03, KU_LEAF)),
    ];
    let der = params.signed_by(&key, &issuer.issuer())?.der().to_vec();
    let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, key.serialized_der())
        .map_err(|_| SimError::Crypto("leaf key rejected"))?;
    Ok(Leaf {
        signer,
        der,
        not_before: now,
        not_after,
    })
}

/// Certificate parameters with only a name, serial, validity; extensions come separately.
fn params(
    name: DistinguishedName,
    serial: &[u8],
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, SimError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.not_before = datetime(not_before)?;
    params.not_after = datetime(not_after)?;
    Ok(params)
}

fn datetime(secs: i64) -> Result<OffsetDateTime, SimError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| SimError::Clock(secs.unsigned_abs()))
}

fn secs(value: u64) -> Result<i64, SimError> {
    i64::try_from(value).map_err(|_| SimError::Clock(value))
}

/// `C=US, O=…, OU=AWS, CN=aws.nitro-enclaves`-shaped names (root and regional CA).
fn ca_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CountryName, country());
    name.push(DnType::OrganizationName, "kmstool-sim");
    name.push(DnType::OrganizationalUnitName, "AWS");
    name.push(DnType::CommonName, common_name);
    name
}

fn root_name() -> DistinguishedName {
    ca_name("aws.nitro-enclaves")
}

/// The zonal CA's name lists its attributes in reverse, like the real one.
fn zonal_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationalUnitName, "AWS");
    name.push(DnType::OrganizationName, "kmstool-sim");
    name.push(DnType::CountryName, country());
    name.push(DnType::StateOrProvinceName, "WA");
    name.push(DnType::LocalityName, "Seattle");
    name
}

/// `C=US, ST=Washington, L=Seattle, O=…, OU=AWS, CN=…` (instance CA and leaf).
fn instance_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CountryName, country());
    name.push(DnType::StateOrProvinceName, "Washington");
    name.push(DnType::LocalityName, "Seattle");
    name.push(DnType::OrganizationName, "kmstool-sim");
    name.push(DnType::OrganizationalUnitName, "AWS");
    name.push(DnType::CommonName, common_name);
    name
}

/// `US` as a PrintableString, as the real certificates encode the country.
fn country() -> DnValue {
    match rcgen::string::PrintableString::try_from("US") {
        Ok(us) => DnValue::PrintableString(us),
        Err(_) => DnValue::Utf8String("US".into()),
    }
}

fn extension(oid: &[u64], critical: bool, content: Vec<u8>) -> CustomExtension {
    let mut extension = CustomExtension::from_oid_content(oid, content);
    extension.set_criticality(critical);
    extension
}

/// BasicConstraints: `None` = end entity (empty SEQUENCE), `Some(path_len)` = CA.
fn basic_constraints(ca: Option<Option<u8>>) -> Vec<u8> {
    let content = match ca {
        None => Vec::new(),
        Some(None) => der(0x01, &[0xff]),
        Some(Some(path_len)) => [der(0x01, &[0xff]), der(0x02, &[path_len])].concat(),
    };
    der(0x30, &content)
}

/// AuthorityKeyIdentifier with only `[0] keyIdentifier`.
fn authority_key_id(key_id: &[u8]) -> Vec<u8> {
    der(0x30, &der(0x80, key_id))
}

/// One DistributionPoint with a full name that is a single URI.
fn crl_distribution_point(uri: &str) -> Vec<u8> {
    let general_name = der(0x86, uri.as_bytes());
    let full_name = der(0xa0, &general_name);
    let point_name = der(0xa0, &full_name);
    der(0x30, &der(0x30, &point_name))
}

/// A DER TLV with a definite length (short or long form).
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// Subject key identifier: the first 20 bytes of SHA-256 over the SubjectPublicKeyInfo
/// (RFC 7093 method 1), the same for a key every time.
fn key_id(key: &KeyPair) -> Vec<u8> {
    CertificateParams::default().key_identifier(key)
}

/// A positive serial number of `len` random bytes.
fn random_serial(len: usize) -> Result<Vec<u8>, SimError> {
    let mut serial = random_bytes(len)?;
    if let Some(first) = serial.first_mut() {
        *first = (*first & 0x7f).max(1);
    }
    Ok(serial)
}

pub(crate) fn random_bytes(len: usize) -> Result<Vec<u8>, SimError> {
    let mut bytes = vec![0; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SimError::Crypto("random number generator failed"))?;
    Ok(bytes)
}

fn random_hex(bytes: usize) -> Result<String, SimError> {
    Ok(hex::encode(random_bytes(bytes)?))
}

/// A random UUID-shaped string (for CRL file names).
fn uuid() -> Result<String, SimError> {
    let hex = random_hex(16)?;
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default().to_owned();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extension values as they appear in the real Nitro certificates (from the fixtures).
    #[test]
    fn extension_encodings_match_the_real_certificates() {
        let hex = hex::encode;
        assert_eq!(hex(basic_constraints(Some(None))), "30030101ff");
        assert_eq!(hex(basic_constraints(Some(Some(2)))), "30060101ff020102");
        assert_eq!(hex(basic_constraints(Some(Some(0)))), "30060101ff020100");
        assert_eq!(hex(basic_constraints(None)), "3000");
        assert_eq!(hex(der(0x03, KU_CA)), "03020186");
        assert_eq!(hex(der(0x03, KU_CERT_SIGN)), "03020204");
        assert_eq!(hex(der(0x03, KU_LEAF)), "030206c0");
        let key_id = [0x90, 0x25, 0xb5, 0x0d];
        assert_eq!(hex(authority_key_id(&key_id)), "300680049025b50d");
        let uri = "http://aws-nitro-enclaves-crl.s3.amazonaws.com/crl/ab4960cc-7d63-42bd-9e9f-59338cb67f84.crl";
        let encoded = hex(crl_distribution_point(uri));
        assert!(encoded.starts_with("30633061a05fa05d865b"), "{encoded}");
    }

    #[test]
    fn der_lengths_use_the_long_form_past_127() {
        assert_eq!(der(0x04, &[]), vec![0x04, 0x00]);
        assert_eq!(der(0x04, &[0; 127]).get(..2), Some(&[0x04, 0x7f][..]));
        assert_eq!(der(0x04, &[0; 200]).get(..3), Some(&[0x04, 0x81, 200][..]));
        assert_eq!(
            der(0x04, &[0; 300]).get(..4),
            Some(&[0x04, 0x82, 0x01, 0x2c][..])
        );
        assert_eq!(der(0x04, &[0; 300]).len(), 304);
    }

    #[test]
    fn pem_wraps_at_64_columns() {
        let text = pem("CERTIFICATE", &[0xab; 100]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN CERTIFICATE-----"));
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        assert_eq!(lines.get(1).map(|l| l.len()), Some(64));
        assert_eq!(lines.len(), 5);
    }
}
