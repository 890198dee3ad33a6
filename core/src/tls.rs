//! TLS client settings for KMS: rustls with the aws-lc-rs provider, Mozilla's roots compiled
//! in (an enclave image has no system trust store) plus optional extra roots, ALPN `http/1.1`
//! only (KMS answers HTTP/1.1; the C tool offered `h2` too and never used it).
//!
//! Building the configuration is pure; the runtimes run the handshakes.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

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

/// Where trust comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// Mozilla's roots (webpki-roots) plus the extra ones.
    MozillaAndExtra,
    /// Only the extra roots (tests against a local KMS emulator).
    ExtraOnly,
}

/// Client settings trusting `roots` and the certificates in `extra_roots_pem`.
pub fn client_config(
    roots: Roots,
    extra_roots_pem: Option<&[u8]>,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let mut store = rustls::RootCertStore::empty();
    if roots == Roots::MozillaAndExtra {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(pem) = extra_roots_pem {
        let certs = parse_certificates(pem)?;
        for cert in certs {
            store
                .add(cert)
                .map_err(|e| TlsConfigError::BadRoot(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
