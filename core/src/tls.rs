//! TLS client settings for KMS: rustls with the crypto backend's provider (aws-lc-rs, or ring in
//! the RustCrypto build), roots compiled in (an
//! enclave image has no system trust store) plus optional extra roots, ALPN `http/1.1` only
//! (KMS answers HTTP/1.1; the C tool offered `h2` too and never used it).
//!
//! By default each KMS host is checked against the roots its AWS partition's endpoints chain
//! to, not against every root Mozilla trusts ([`Roots::Partition`]): for the `aws` partition,
//! the five roots of Amazon Trust Services. A certificate for `kms.<region>.amazonaws.com`
//! mis-issued by any other public CA is then refused.
//!
//! Building the configuration is pure; the runtimes run the handshakes.

use crate::crypto::Backend;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::SignatureScheme;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use crate::session::{TransportFailure, TransportStage};

/// A failed TLS handshake with KMS, as the session should see it: a certificate or protocol
/// error from rustls is [`TransportStage::Tls`], not retried, since trying again cannot fix
/// it; the peer hanging up, or the handshake not finishing in time (the proxy or the network
/// was slow), is [`TransportStage::Io`], retried like any dropped connection.
pub fn handshake_failure(error: &io::Error) -> TransportFailure {
    let rustls_error = error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    let stage = if rustls_error {
        TransportStage::Tls
    } else {
        TransportStage::Io
    };
    TransportFailure::new(stage, error.to_string())
}

/// The error a runtime reports for a handshake that took longer than `limit`.
pub fn handshake_timeout(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no TLS handshake within {} ms", limit.as_millis()),
    )
}

/// The error a runtime reports for a proxy connection not made within `limit`.
pub fn connect_timeout(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no connection within {} ms", limit.as_millis()),
    )
}

/// The failure of a connection to the proxy that could not be made (`error`, or
/// [`connect_timeout`]): [`TransportStage::Connect`], naming the proxy.
pub fn proxy_failure(proxy: &crate::address::Address, error: &io::Error) -> TransportFailure {
    TransportFailure::new(TransportStage::Connect, format!("proxy {proxy}: {error}"))
}

/// How a runtime reaches KMS.
#[derive(Debug, Clone)]
pub struct KmsTransportConfig {
    /// The proxy (production: `vsock:3:8000`, the parent's vsock-proxy) or KMS itself.
    pub proxy: crate::address::Address,
    /// TLS settings (see [`client_config`]).
    pub tls: Arc<rustls::ClientConfig>,
    /// Connect plus handshake.
    pub connect_timeout: Duration,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

/// Why TLS settings could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsConfigError {
    /// The extra roots are not PEM certificates.
    BadPem(String),
    /// The bundle holds no certificate.
    EmptyBundle,
    /// A certificate was refused as a trust anchor.
    BadRoot(String),
    /// rustls refused the protocol versions (a build problem).
    Rustls(String),
    /// Not a valid DNS name for SNI.
    BadServerName(String),
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadPem(e) => write!(f, "CA bundle is not valid PEM: {e}"),
            Self::EmptyBundle => f.write_str("CA bundle holds no certificate"),
            Self::BadRoot(e) => write!(f, "CA bundle certificate refused: {e}"),
            Self::Rustls(e) => write!(f, "TLS setup failed: {e}"),
            Self::BadServerName(host) => write!(f, "{host:?} is not a valid TLS server name"),
        }
    }
}

impl std::error::Error for TlsConfigError {}

/// Where trust comes from. The extra roots (`--ca-bundle`) are added to every set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// Per host, the roots of its partition ([`Partition::default_roots`]). A host outside
    /// every partition's domains (a private endpoint given with `--endpoint`, an emulator) gets
    /// the set of `fallback`, the partition of the configured region.
    Partition {
        /// The partition for hosts that name none.
        fallback: Partition,
    },
    /// Mozilla's roots (webpki-roots) for every host.
    MozillaAndExtra,
    /// Only the extra roots (tests against a local KMS emulator).
    ExtraOnly,
}

/// A set of compiled-in roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSet {
    /// The Amazon Trust Services roots ([`ATS_ROOT_SUBJECTS`]).
    AmazonTrustServices,
    /// Every root in Mozilla's program (webpki-roots).
    Mozilla,
    /// None: only the extra roots.
    None,
}

/// An AWS partition: a group of regions with its own DNS domain (and, possibly, its own CAs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// `aws`: commercial regions, `*.amazonaws.com` and `*.api.aws`.
    Aws,
    /// `aws-cn`: `cn-*`, `*.amazonaws.com.cn`.
    AwsCn,
    /// `aws-us-gov`: `us-gov-*` (also under `amazonaws.com`).
    AwsUsGov,
    /// `aws-iso`, `aws-iso-b`, `aws-iso-f`, `aws-iso-e`: the isolated regions.
    AwsIso,
    /// `aws-eusc`: the AWS European Sovereign Cloud, `*.amazonaws.eu`.
    AwsEusc,
}

/// The DNS domains of the partitions other than `aws` (which also owns `api.aws`).
const PARTITION_DOMAINS: [(&str, Partition); 6] = [
    ("amazonaws.com.cn", Partition::AwsCn),
    ("c2s.ic.gov", Partition::AwsIso),
    ("sc2s.sgov.gov", Partition::AwsIso),
    ("csp.hci.ic.gov", Partition::AwsIso),
    ("cloud.adc-e.uk", Partition::AwsIso),
    ("amazonaws.eu", Partition::AwsEusc),
];

impl Partition {
    /// The partition of `region` (by the same prefixes as [`crate::kms::endpoint::kms_host`]).
    pub fn of_region(region: &str) -> Self {
        if region.starts_with("us-gov-") {
            return Self::AwsUsGov;
        }
        let suffix = crate::kms::endpoint::partition_dns_suffix(region);
        PARTITION_DOMAINS
            .iter()
            .find(|(domain, _)| *domain == suffix)
            .map_or(Self::Aws, |(_, partition)| *partition)
    }

    /// The partition whose domain `host` is in, or `None` for any other host. In `aws`'s
    /// domains a `us-gov-*` label means GovCloud (`kms-fips.us-gov-west-1.amazonaws.com`).
    pub fn of_host(host: &str) -> Option<Self> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let within = |domain: &str| {
            host.strip_suffix(domain)
                .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
        };
        if let Some((_, partition)) = PARTITION_DOMAINS.iter().find(|(d, _)| within(d)) {
            return Some(*partition);
        }
        if within("amazonaws.com") || within("api.aws") {
            let gov = host.split('.').any(|label| label.starts_with("us-gov-"));
            return Some(if gov { Self::AwsUsGov } else { Self::Aws });
        }
        None
    }

    /// The roots this partition's KMS endpoints chain to, as far as AWS documents them.
    ///
    /// - `aws`: Amazon Trust Services. AWS moved its service endpoints to certificates from its
    ///   own CA, Amazon Trust Services
    ///   (<https://aws.amazon.com/blogs/security/how-to-prepare-for-aws-move-to-its-own-certificate-authority/>),
    ///   whose repository names the five roots and recommends trusting all five
    ///   (<https://www.amazontrust.com/repository/>). KMS's endpoints are listed at
    ///   <https://docs.aws.amazon.com/general/latest/gr/kms.html>.
    /// - `aws-eusc`: Amazon Trust Services too. The repository says the European Sovereign
    ///   Cloud's certificates come from "EU" roots cross-signed by Amazon Root CA 1, 3 and 4.
    /// - `aws-cn`, `aws-us-gov` and the isolated partitions: Mozilla's whole set. No AWS
    ///   documentation we found names the roots of their endpoints, so narrowing could break
    ///   them. Isolated regions likely use private CAs: give them with `--ca-bundle`.
    pub fn default_roots(self) -> RootSet {
        match self {
            Self::Aws | Self::AwsEusc => RootSet::AmazonTrustServices,
            Self::AwsCn | Self::AwsUsGov | Self::AwsIso => RootSet::Mozilla,
        }
    }
}

impl Roots {
    /// The compiled-in set a connection to `host` is checked against.
    pub fn for_host(self, host: &str) -> RootSet {
        match self {
            Self::Partition { fallback } => {
                Partition::of_host(host).unwrap_or(fallback).default_roots()
            }
            Self::MozillaAndExtra => RootSet::Mozilla,
            Self::ExtraOnly => RootSet::None,
        }
    }
}

/// The subjects of the Amazon Trust Services roots, as (attribute type OID's last arc, value)
/// in DER order: `C` = 6, `ST` = 8, `L` = 7, `O` = 10, `CN` = 3. From the ATS repository
/// (<https://www.amazontrust.com/repository/>).
pub const ATS_ROOT_SUBJECTS: [&[(u8, &str)]; 5] = [
    &[(6, "US"), (10, "Amazon"), (3, "Amazon Root CA 1")],
    &[(6, "US"), (10, "Amazon"), (3, "Amazon Root CA 2")],
    &[(6, "US"), (10, "Amazon"), (3, "Amazon Root CA 3")],
    &[(6, "US"), (10, "Amazon"), (3, "Amazon Root CA 4")],
    &[
        (6, "US"),
        (8, "Arizona"),
        (7, "Scottsdale"),
        (10, "Starfield Technologies, Inc."),
        (3, "Starfield Services Root Certificate Authority - G2"),
    ],
];

/// The Amazon Trust Services roots, taken from webpki-roots by subject.
pub fn ats_roots() -> Vec<TrustAnchor<'static>> {
    webpki_roots::TLS_SERVER_ROOTS
        .iter()
        .filter(|anchor| {
            let subject = subject_attributes(anchor.subject.as_ref());
            ATS_ROOT_SUBJECTS.iter().any(|wanted| {
                subject.as_deref().is_some_and(|found| {
                    found.len() == wanted.len()
                        && found
                            .iter()
                            .zip(wanted.iter())
                            .all(|((t, v), (wt, wv))| t == wt && *v == wv.as_bytes())
                })
            })
        })
        .cloned()
        .collect()
}

/// A distinguished name's `id-at-*` attributes (2.5.4.n) as (n, value), in DER order; `None`
/// when it holds anything else or is not well-formed DER.
fn subject_attributes(rdn_sequence: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    let mut rest = rdn_sequence;
    while !rest.is_empty() {
        let (set, after) = der_tlv(rest, 0x31)?;
        rest = after;
        let (attribute, tail) = der_tlv(set, 0x30)?;
        if !tail.is_empty() {
            return None;
        }
        let (oid, value) = der_tlv(attribute, 0x06)?;
        let [0x55, 0x04, n] = *oid else {
            return None;
        };
        let tag = *value.first()?;
        let (value, tail) = der_tlv(value, tag)?;
        if !tail.is_empty() {
            return None;
        }
        out.push((n, value));
    }
    Some(out)
}

/// The content of the TLV with tag `tag` at the start of `input`, and what follows it.
fn der_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = match len {
        0..=0x7f => (usize::from(len), rest),
        0x81 => (usize::from(*rest.first()?), &rest[1..]),
        0x82 => {
            let bytes = rest.get(..2)?;
            (
                usize::from(bytes[0]) << 8 | usize::from(bytes[1]),
                &rest[2..],
            )
        }
        _ => return None,
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// rustls's provider for `backend`: `aws_lc_rs` for AWS-LC, `ring` for RustCrypto (whose
/// build then has no AWS-LC anywhere in its tree).
fn crypto_provider(backend: Backend) -> rustls::crypto::CryptoProvider {
    match backend {
        #[cfg(feature = "aws-lc")]
        Backend::AwsLc => rustls::crypto::aws_lc_rs::default_provider(),
        #[cfg(feature = "rustcrypto")]
        Backend::RustCrypto => rustls::crypto::ring::default_provider(),
    }
}

/// Client settings trusting `roots` and the certificates in `extra_roots_pem`, with the
/// default backend's provider.
pub fn client_config(
    roots: Roots,
    extra_roots_pem: Option<&[u8]>,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    client_config_for(Backend::DEFAULT, roots, extra_roots_pem)
}

/// [`client_config`] with `backend`'s provider.
pub fn client_config_for(
    backend: Backend,
    roots: Roots,
    extra_roots_pem: Option<&[u8]>,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let extra = match extra_roots_pem {
        Some(pem) => parse_certificates(pem)?,
        None => Vec::new(),
    };
    let provider = Arc::new(crypto_provider(backend));
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let mut config = match roots {
        Roots::Partition { fallback } => {
            let verifier = PartitionVerifier {
                fallback,
                ats: webpki_verifier(RootSet::AmazonTrustServices, &extra, &provider)?,
                mozilla: webpki_verifier(RootSet::Mozilla, &extra, &provider)?,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        Roots::MozillaAndExtra | Roots::ExtraOnly => builder
            .with_root_certificates(root_store(roots.for_host(""), &extra)?)
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A store holding `set` and `extra`.
fn root_store(
    set: RootSet,
    extra: &[CertificateDer<'static>],
) -> Result<rustls::RootCertStore, TlsConfigError> {
    let mut store = rustls::RootCertStore::empty();
    match set {
        RootSet::AmazonTrustServices => store.extend(ats_roots()),
        RootSet::Mozilla => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        RootSet::None => {}
    }
    for cert in extra {
        store
            .add(cert.clone())
            .map_err(|e| TlsConfigError::BadRoot(e.to_string()))?;
    }
    Ok(store)
}

fn webpki_verifier(
    set: RootSet,
    extra: &[CertificateDer<'static>],
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsConfigError> {
    WebPkiServerVerifier::builder_with_provider(
        Arc::new(root_store(set, extra)?),
        Arc::clone(provider),
    )
    .build()
    .map_err(|e| TlsConfigError::Rustls(e.to_string()))
}

/// rustls's own WebPKI verification, with the root store chosen by the server name's
/// partition ([`Roots::for_host`]). Only the choice of roots is ours.
#[derive(Debug)]
struct PartitionVerifier {
    fallback: Partition,
    ats: Arc<WebPkiServerVerifier>,
    mozilla: Arc<WebPkiServerVerifier>,
}

impl PartitionVerifier {
    fn for_name(&self, server_name: &ServerName<'_>) -> &WebPkiServerVerifier {
        let host = match server_name {
            ServerName::DnsName(name) => name.as_ref(),
            _ => "",
        };
        let roots = Roots::Partition {
            fallback: self.fallback,
        };
        match roots.for_host(host) {
            RootSet::AmazonTrustServices => &self.ats,
            RootSet::Mozilla | RootSet::None => &self.mozilla,
        }
    }
}

impl ServerCertVerifier for PartitionVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.for_name(server_name).verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.mozilla.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.mozilla.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.mozilla.supported_verify_schemes()
    }
}

/// Every certificate in a PEM bundle (other PEM sections are skipped).
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::BadPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsConfigError::EmptyBundle);
    }
    Ok(certs)
}

/// The SNI name for a KMS host.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsConfigError> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| TlsConfigError::BadServerName(host.to_owned()))
}

/// The SNI name for a KMS host a connection is made to; a host that cannot be one fails the
/// call at [`TransportStage::Tls`] (not retried).
pub fn connect_server_name(host: &str) -> Result<ServerName<'static>, TransportFailure> {
    server_name(host).map_err(|e| TransportFailure::new(TransportStage::Tls, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_are_retried_unless_rustls_refused() {
        let refused = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        );
        assert_eq!(handshake_failure(&refused).stage, TransportStage::Tls);
        let timed_out = handshake_failure(&handshake_timeout(Duration::from_millis(1500)));
        assert_eq!(timed_out.stage, TransportStage::Io);
        assert_eq!(timed_out.detail, "no TLS handshake within 1500 ms");
        let hung_up = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(handshake_failure(&hung_up).stage, TransportStage::Io);
        assert_eq!(
            connect_timeout(Duration::from_secs(3)).to_string(),
            "no connection within 3000 ms"
        );
    }

    #[test]
    fn mozilla_roots_and_http11_only() {
        let config = client_config(Roots::MozillaAndExtra, None).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let fallback = Partition::Aws;
        let config = client_config(Roots::Partition { fallback }, None).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn all_five_amazon_trust_services_roots_are_compiled_in() {
        let roots = ats_roots();
        let names: Vec<String> = roots
            .iter()
            .map(|anchor| {
                let attributes = subject_attributes(anchor.subject.as_ref()).expect("DER");
                let (_, cn) = attributes.iter().find(|(t, _)| *t == 3).expect("CN");
                String::from_utf8_lossy(cn).into_owned()
            })
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "Amazon Root CA 1",
                "Amazon Root CA 2",
                "Amazon Root CA 3",
                "Amazon Root CA 4",
                "Starfield Services Root Certificate Authority - G2",
            ],
            "{names:?}"
        );
        // A small part of Mozilla's set, and each subject matched once.
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
        // Starfield's other roots (Class 2, Root G2) are not Amazon's.
        assert!(webpki_roots::TLS_SERVER_ROOTS.iter().any(|a| {
            subject_attributes(a.subject.as_ref()).is_some_and(|attrs| {
                attrs
                    .iter()
                    .any(|(t, v)| *t == 10 && v.starts_with(b"Starfield"))
                    && !ats_roots().contains(a)
            })
        }));
    }

    #[test]
    fn partitions_of_regions_and_hosts() {
        for (region, partition) in [
            ("us-east-1", Partition::Aws),
            ("il-central-1", Partition::Aws),
            ("cn-north-1", Partition::AwsCn),
            ("us-gov-west-1", Partition::AwsUsGov),
            ("us-iso-east-1", Partition::AwsIso),
            ("us-isob-east-1", Partition::AwsIso),
            ("us-isof-south-1", Partition::AwsIso),
            ("eu-isoe-west-1", Partition::AwsIso),
            ("eusc-de-east-1", Partition::AwsEusc),
        ] {
            assert_eq!(Partition::of_region(region), partition, "{region}");
            let host = crate::kms::endpoint::kms_host(region);
            assert_eq!(Partition::of_host(&host), Some(partition), "{host}");
        }
        for (host, partition) in [
            ("kms-fips.us-east-1.amazonaws.com", Some(Partition::Aws)),
            ("kms.us-east-1.api.aws", Some(Partition::Aws)),
            ("KMS.US-EAST-1.AMAZONAWS.COM.", Some(Partition::Aws)),
            (
                "kms-fips.us-gov-east-1.amazonaws.com",
                Some(Partition::AwsUsGov),
            ),
            (
                "vpce-0a1b-c2d3.kms.us-east-1.vpce.amazonaws.com",
                Some(Partition::Aws),
            ),
            ("kms.internal.example", None),
            ("localhost", None),
            ("evilamazonaws.com", None),
            ("amazonaws.com.evil.example", None),
        ] {
            assert_eq!(Partition::of_host(host), partition, "{host}");
        }
    }

    #[test]
    fn roots_per_partition_and_for_private_endpoints() {
        let aws = Roots::Partition {
            fallback: Partition::Aws,
        };
        let ats = RootSet::AmazonTrustServices;
        for (host, set) in [
            ("kms.us-east-1.amazonaws.com", ats),
            ("kms.eusc-de-east-1.amazonaws.eu", ats),
            ("kms.cn-north-1.amazonaws.com.cn", RootSet::Mozilla),
            ("kms.us-gov-west-1.amazonaws.com", RootSet::Mozilla),
            ("kms.us-iso-east-1.c2s.ic.gov", RootSet::Mozilla),
            // A private endpoint: the partition of the enclave's region.
            ("kms.internal.example", ats),
        ] {
            assert_eq!(aws.for_host(host), set, "{host}");
        }
        let cn = Roots::Partition {
            fallback: Partition::AwsCn,
        };
        assert_eq!(cn.for_host("kms.internal.example"), RootSet::Mozilla);
        assert_eq!(cn.for_host("kms.us-east-1.amazonaws.com"), ats);
        assert_eq!(
            Roots::MozillaAndExtra.for_host("kms.us-east-1.amazonaws.com"),
            RootSet::Mozilla
        );
        assert_eq!(Roots::ExtraOnly.for_host("x"), RootSet::None);
    }

    #[test]
    fn malformed_subjects_match_nothing() {
        assert_eq!(subject_attributes(b""), Some(Vec::new()));
        for bad in [
            &b"\x31"[..],
            b"\x31\x05\x30\x03\x06\x01\x00",
            b"\x31\x80",
            b"\x30\x00",
        ] {
            assert_eq!(subject_attributes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refuses_bad_bundles() {
        assert_eq!(
            client_config(Roots::ExtraOnly, Some(b"no pem here")).err(),
            Some(TlsConfigError::EmptyBundle)
        );
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            client_config(Roots::ExtraOnly, Some(broken)),
            Err(TlsConfigError::BadPem(_))
        ));
    }

    #[test]
    fn accepts_the_nitro_root_as_an_extra_root() {
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/attestation/aws-nitro-root-g1.pem"
        ))
        .expect("fixture");
        assert_eq!(parse_certificates(&pem).map(|c| c.len()), Ok(1));
        assert!(client_config(Roots::ExtraOnly, Some(&pem)).is_ok());
    }

    #[test]
    fn server_names() {
        assert!(server_name("kms.us-east-1.amazonaws.com").is_ok());
        assert!(server_name("bad host").is_err());
    }
}
