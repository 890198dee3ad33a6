//! Verifies Nitro attestation documents against a trusted root.
//!
//! What a relying party (KMS, or the simulated KMS) checks, in order:
//!
//! 1. the bytes parse as an attestation document (`crate::attestation`);
//! 2. `cabundle[0]` is byte for byte the trusted root;
//! 3. `certificate` chains to that root through exactly `cabundle[1..]`, in order, every
//!    certificate valid at the chosen time, every signature ECDSA P-384 with SHA-384
//!    (rustls-webpki builds and checks the path);
//! 4. the COSE signature is a valid ES384 signature by the leaf's key over the
//!    `Sig_structure`.
//!
//! webpki asks for an extended key usage to check. Nitro certificates carry no EKU
//! extension at all; webpki's `required_if_present` usages accept a certificate without one,
//! so [`KeyUsage::client_auth`] passes them (and would refuse a leaf restricted to other
//! purposes).
//!
//! Step 3 is four of the five ECDSA verifications, and every document from one enclave carries
//! the same chain. A verifier that sees many documents (the KMS emulator) passes a
//! [`ChainMemory`] to [`verify_remembering`]: a chain that passed is not validated again while
//! the time lies inside every certificate's validity; steps 1, 2 and 4 run for every document.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::attestation::{AttestationDocument, AttestationError, AttestationPayload};
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use der::Decode as _;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm,
    UnixTime, alg_id,
};
use sha2::{Digest as _, Sha256};
use webpki::{EndEntityCert, KeyUsage, VerifiedPath, anchor_from_trusted_cert};
use x509_cert::Certificate;

/// The time at which certificates must be valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyTime {
    /// The document's own `timestamp` (for stored documents and tests).
    DocumentTimestamp,
    /// This time, milliseconds since the Unix epoch (a live verifier passes its clock).
    UnixMillis(u64),
}

/// Verifies `document` against the root certificate `root_der` and returns its payload.
pub fn verify(
    document: &[u8],
    root_der: &[u8],
    at: VerifyTime,
) -> Result<AttestationPayload, VerifyError> {
    verify_remembering(document, root_der, at, None)
}

/// [`verify`], skipping the path validation of a chain that `chains` holds as valid at the
/// verification time, and remembering a chain that passes.
pub fn verify_remembering(
    document: &[u8],
    root_der: &[u8],
    at: VerifyTime,
    chains: Option<&ChainMemory>,
) -> Result<AttestationPayload, VerifyError> {
    let parsed = AttestationDocument::parse(document).map_err(VerifyError::Parse)?;
    let doc = &parsed.doc;
    let (root, intermediates) = doc.cabundle.split_first().ok_or(VerifyError::UnknownRoot)?;
    if root.as_slice() != root_der {
        return Err(VerifyError::UnknownRoot);
    }
    let time = match at {
        VerifyTime::DocumentTimestamp => doc.timestamp,
        VerifyTime::UnixMillis(ms) => ms,
    };
    let leaf_der = CertificateDer::from(doc.certificate.as_slice());
    let leaf = EndEntityCert::try_from(&leaf_der).map_err(VerifyError::BadCertificate)?;
    match chains {
        Some(chains) => {
            let id = ChainMemory::id(root_der, intermediates, &doc.certificate);
            if !chains.holds(&id, time) {
                chains.validations.fetch_add(1, Ordering::Relaxed);
                verify_chain(&leaf, root_der, intermediates, time)?;
                chains.remember(id, intermediates, &doc.certificate);
            }
        }
        None => verify_chain(&leaf, root_der, intermediates, time)?,
    }
    leaf.verify_signature(&COSE_ES384, &parsed.sig_structure(), &parsed.signature)
        .map_err(|error| match error {
            webpki::Error::InvalidSignatureForPublicKey => VerifyError::BadSignature,
            _ => VerifyError::UnsupportedLeafKey,
        })?;
    Ok(parsed.doc)
}

/// Certificate chains (root, CA bundle, leaf) that passed path validation, each with the
/// window in which all of its certificates are valid (webpki checks no validity on the trust
/// anchor, so neither does the window). Keyed by SHA-256 over the exact DER of the whole chain,
/// so any other byte is another chain and is validated in full. Bounded: past
/// [`ChainMemory::CAPACITY`] chains it starts over.
#[derive(Debug, Default)]
pub struct ChainMemory {
    chains: Mutex<HashMap<[u8; 32], Validity>>,
    validations: AtomicU64,
}

/// Seconds since the Unix epoch, inclusive at both ends, as webpki compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Validity {
    not_before: u64,
    not_after: u64,
}

impl ChainMemory {
    /// Chains remembered at most.
    pub const CAPACITY: usize = 256;

    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times a chain was validated in full (the rest were remembered).
    pub fn validations(&self) -> u64 {
        self.validations.load(Ordering::Relaxed)
    }

    fn id(root: &[u8], intermediates: &[Vec<u8>], leaf: &[u8]) -> [u8; 32] {
        let mut hash = Sha256::new();
        for cert in std::iter::once(root)
            .chain(intermediates.iter().map(Vec::as_slice))
            .chain(std::iter::once(leaf))
        {
            hash.update((cert.len() as u64).to_be_bytes());
            hash.update(cert);
        }
        hash.finalize().into()
    }

    fn holds(&self, id: &[u8; 32], time_ms: u64) -> bool {
        let seconds = time_ms / 1000;
        let chains = self.chains.lock().unwrap_or_else(PoisonError::into_inner);
        chains
            .get(id)
            .is_some_and(|v| v.not_before <= seconds && seconds <= v.not_after)
    }

    /// Remembers a chain that just passed; one whose validity cannot be read is not remembered.
    fn remember(&self, id: [u8; 32], intermediates: &[Vec<u8>], leaf: &[u8]) {
        let Some(validity) = chain_validity(intermediates, leaf) else {
            return;
        };
        let mut chains = self.chains.lock().unwrap_or_else(PoisonError::into_inner);
        if chains.len() >= Self::CAPACITY {
            chains.clear();
        }
        chains.insert(id, validity);
    }
}

/// The latest notBefore and the earliest notAfter of `intermediates` and `leaf`.
fn chain_validity(intermediates: &[Vec<u8>], leaf: &[u8]) -> Option<Validity> {
    let mut window = Validity {
        not_before: 0,
        not_after: u64::MAX,
    };
    for der in intermediates.iter().map(Vec::as_slice).chain([leaf]) {
        let validity = *Certificate::from_der(der)
            .ok()?
            .tbs_certificate()
            .validity();
        window.not_before = window
            .not_before
            .max(validity.not_before.to_unix_duration().as_secs());
        window.not_after = window
            .not_after
            .min(validity.not_after.to_unix_duration().as_secs());
    }
    Some(window)
}

/// Builds the path leaf → `intermediates` (last first) → root and checks it at `time_ms`.
fn verify_chain(
    leaf: &EndEntityCert<'_>,
    root_der: &[u8],
    intermediates: &[Vec<u8>],
    time_ms: u64,
) -> Result<(), VerifyError> {
    let root_der = CertificateDer::from(root_der);
    let anchor = anchor_from_trusted_cert(&root_der).map_err(VerifyError::BadRoot)?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let time = UnixTime::since_unix_epoch(Duration::from_millis(time_ms));
    let in_bundle_order = |path: &VerifiedPath<'_>| -> Result<(), webpki::Error> {
        let used = path
            .intermediate_certificates()
            .rev()
            .map(|cert| cert.der());
        if used.eq(intermediates.iter().cloned()) {
            Ok(())
        } else {
            Err(webpki::Error::UnknownIssuer)
        }
    };
    leaf.verify_for_usage(
        &[webpki::aws_lc_rs::ECDSA_P384_SHA384],
        &[anchor],
        &intermediates,
        time,
        KeyUsage::client_auth(),
        None,
        Some(&in_bundle_order),
    )
    .map(drop)
    .map_err(chain_error)
}

fn chain_error(error: webpki::Error) -> VerifyError {
    match error {
        webpki::Error::CertExpired { .. } => VerifyError::Expired,
        webpki::Error::CertNotValidYet { .. } => VerifyError::NotYetValid,
        webpki::Error::UnknownIssuer => VerifyError::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => VerifyError::BadChainSignature,
        other => VerifyError::Chain(other),
    }
}

/// ES384 as COSE encodes it: the 96-byte `r ‖ s` form, not ASN.1.
static COSE_ES384: CoseEs384 = CoseEs384;

/// webpki signature algorithm for COSE ES384 signatures (P-384 key, fixed-length signature),
/// so the leaf certificate's key checks the document signature.
#[derive(Debug)]
struct CoseEs384;

impl SignatureVerificationAlgorithm for CoseEs384 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_P384
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_SHA384
    }
}

/// Why an attestation document was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The document does not parse.
    Parse(AttestationError),
    /// `cabundle[0]` is not the trusted root.
    UnknownRoot,
    /// The trusted root certificate itself does not parse.
    BadRoot(webpki::Error),
    /// The leaf certificate does not parse.
    BadCertificate(webpki::Error),
    /// A certificate on the path had expired at the verification time.
    Expired,
    /// A certificate on the path was not yet valid at the verification time.
    NotYetValid,
    /// No path through the CA bundle, in its order, leads to the root.
    UnknownIssuer,
    /// A certificate's signature does not verify under its issuer's key.
    BadChainSignature,
    /// Another certificate path failure.
    Chain(webpki::Error),
    /// The leaf key is not a P-384 key.
    UnsupportedLeafKey,
    /// The COSE signature does not verify under the leaf's key.
    BadSignature,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse(error) => write!(f, "attestation document does not parse: {error}"),
            Self::UnknownRoot => f.write_str("attestation document is not under the trusted root"),
            Self::BadRoot(error) => write!(f, "trusted root certificate is invalid: {error}"),
            Self::BadCertificate(error) => {
                write!(f, "attestation signing certificate is invalid: {error}")
            }
            Self::Expired => f.write_str("attestation certificate expired at verification time"),
            Self::NotYetValid => {
                f.write_str("attestation certificate not yet valid at verification time")
            }
            Self::UnknownIssuer => {
                f.write_str("attestation certificate does not chain to the root via the bundle")
            }
            Self::BadChainSignature => {
                f.write_str("attestation certificate chain signature is bad")
            }
            Self::Chain(error) => write!(f, "attestation certificate chain invalid: {error}"),
            Self::UnsupportedLeafKey => f.write_str("attestation signing key is not P-384"),
            Self::BadSignature => f.write_str("attestation document signature is bad"),
        }
    }
}

impl std::error::Error for VerifyError {}
