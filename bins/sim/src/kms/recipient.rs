//! Attested requests: the `Recipient` parameter, the policy check on PCR0, and
//! `CiphertextForRecipient`.
//!
//! KMS "relies on the digital signature for the attestation document to prove that the public
//! key in the request came from a valid source" and, with a `Recipient`, "encrypts the
//! plaintext … under the public key in the attestation document, and returns the resulting
//! ciphertext in the CiphertextForRecipient field … The Plaintext field in the response is null
//! or empty" (KMS Developer Guide, "How to make attested calls to AWS KMS"; API Reference,
//! Decrypt/GenerateDataKey/GenerateRandom, `Recipient`). The only `KeyEncryptionAlgorithm` is
//! `RSAES_OAEP_SHA_256` (API Reference, RecipientInfo).
//!
//! The envelope is what real KMS sends, built by `kmstool_core::cms::build` with
//! [`Layout::KMS`]: BER with indefinite outer lengths, a version-2 KeyTransRecipientInfo whose
//! subjectKeyIdentifier is SHA-256 of the recipient's SPKI, RSAES-OAEP(SHA-256, MGF1-SHA-256)
//! parameters with explicit NULLs, AES-256-CBC content in 1000-byte OCTET STRING chunks.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use kmstool_core::cms::{self, Layout};
use serde::Deserialize;

use super::error::KmsError;
use super::keystore::fill_random;
use crate::verify::{self, ChainMemory, VerifyTime};

/// The only key encryption algorithm KMS accepts in `Recipient`.
pub const KEY_ENCRYPTION_ALGORITHM: &str = "RSAES_OAEP_SHA_256";
/// Largest attestation document accepted (API Reference, RecipientInfo: `AttestationDocument`
/// maximum length 262144).
pub const MAX_ATTESTATION_DOCUMENT: usize = 262_144;
/// Smallest recipient RSA key accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// What a verified attestation document says about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedRecipient {
    /// The enclave's public key, DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// The platform configuration registers (index → value).
    pub pcrs: BTreeMap<u16, Vec<u8>>,
}

/// Checks attestation documents: KMS accepts only documents signed through the Nitro PKI.
pub trait AttestationVerifier: Send + Sync + fmt::Debug {
    /// Verifies `document` at time `at` and returns what it attests; the error is a short
    /// reason for logs (never sent to the client: KMS does not explain).
    fn verify(&self, document: &[u8], at: SystemTime) -> Result<AttestedRecipient, String>;
}

/// The verifier KMS is: a document must chain to one Nitro root (the AWS Nitro root for real
/// documents, the simulated NSM's for simulated ones), with every certificate valid at the
/// emulator's current time, and carry a public key. Like any relying party that sees many
/// documents from one enclave, it validates each certificate chain once for as long as the
/// chain stays valid ([`ChainMemory`]) and checks every document's own signature.
#[derive(Debug)]
pub struct NsmRootVerifier {
    root_der: Vec<u8>,
    chains: ChainMemory,
}

impl NsmRootVerifier {
    /// Trusts the root certificate `root_der` (DER).
    pub fn new(root_der: Vec<u8>) -> Self {
        Self {
            root_der,
            chains: ChainMemory::new(),
        }
    }

    /// How many certificate chains were validated in full so far.
    pub fn chain_validations(&self) -> u64 {
        self.chains.validations()
    }
}

impl AttestationVerifier for NsmRootVerifier {
    fn verify(&self, document: &[u8], at: SystemTime) -> Result<AttestedRecipient, String> {
        let millis = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let payload = verify::verify_remembering(
            document,
            &self.root_der,
            VerifyTime::UnixMillis(millis),
            Some(&self.chains),
        )
        .map_err(|e| e.to_string())?;
        let public_key = payload
            .public_key
            .ok_or_else(|| "the document carries no public_key".to_owned())?;
        Ok(AttestedRecipient {
            public_key,
            pcrs: payload.pcrs,
        })
    }
}

/// The `Recipient` member of a request, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RecipientParam {
    /// `KeyEncryptionAlgorithm`.
    #[serde(rename = "KeyEncryptionAlgorithm")]
    pub key_encryption_algorithm: Option<String>,
    /// `AttestationDocument`, base64.
    #[serde(rename = "AttestationDocument")]
    pub attestation_document: Option<String>,
}

/// A recipient the emulator has accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// What the document attests.
    pub attested: AttestedRecipient,
}

/// The policy a key is used under: the emulator's stand-in for a key policy with
/// `kms:RecipientAttestation:ImageSha384`.
#[derive(Debug, Clone, Copy)]
pub struct AttestationPolicy<'a> {
    /// PCR0 a request must attest to; `None` allows any caller.
    pub require_pcr0: Option<&'a [u8]>,
}

impl AttestationPolicy<'_> {
    /// Allows or denies an operation. With a required PCR0, a request without a valid
    /// attestation document, or with another PCR0, is denied: "If the request doesn't include
    /// a valid attestation document from an AWS Nitro enclave, permission is denied because
    /// this condition is not satisfied" (KMS Developer Guide, "Condition keys for Nitro
    /// Enclaves", kms:RecipientAttestation:ImageSha384). The denial reads like KMS's.
    pub fn check(
        &self,
        recipient: Option<&Recipient>,
        principal_arn: &str,
        action: &str,
        resource_arn: Option<&str>,
    ) -> Result<(), KmsError> {
        let Some(required) = self.require_pcr0 else {
            return Ok(());
        };
        let pcr0 = recipient.and_then(|r| r.attested.pcrs.get(&0));
        if pcr0.is_some_and(|value| value.as_slice() == required) {
            return Ok(());
        }
        Err(KmsError::access_denied(match resource_arn {
            Some(arn) => format!(
                "User: {principal_arn} is not authorized to perform: kms:{action} on resource: \
                 {arn} because no resource-based policy allows the kms:{action} action"
            ),
            None => format!(
                "User: {principal_arn} is not authorized to perform: kms:{action} because no \
                 identity-based policy allows the kms:{action} action"
            ),
        }))
    }
}

/// Validates a `Recipient` and verifies its document at `now`.
pub fn accept(
    param: &RecipientParam,
    verifier: Option<&dyn AttestationVerifier>,
    now: SystemTime,
) -> Result<Recipient, KmsError> {
    if let Some(algorithm) = &param.key_encryption_algorithm
        && algorithm != KEY_ENCRYPTION_ALGORITHM
    {
        return Err(KmsError::constraint(
            algorithm,
            "recipient.keyEncryptionAlgorithm",
            "Member must satisfy enum value set: [RSAES_OAEP_SHA_256]",
        ));
    }
    let encoded = param.attestation_document.as_deref().unwrap_or_default();
    let document = super::handlers::decode_blob(encoded, "recipient.attestationDocument")?;
    if document.is_empty() || document.len() > MAX_ATTESTATION_DOCUMENT {
        return Err(KmsError::constraint(
            "[binary]",
            "recipient.attestationDocument",
            "Member must have length between 1 and 262144",
        ));
    }
    // KMS accepts only documents signed through the Nitro PKI ("You cannot supply your own
    // certificate to digitally sign the attestation document"). What it answers for a document
    // that fails verification is not documented; ValidationException is the emulator's choice.
    let verifier = verifier.ok_or_else(invalid_document)?;
    let attested = verifier
        .verify(&document, now)
        .map_err(|_reason| invalid_document())?;
    let key =
        PublicEncryptingKey::from_der(&attested.public_key).map_err(|_| invalid_document())?;
    if key.key_size_bits() < MIN_RSA_BITS {
        return Err(invalid_document());
    }
    Ok(Recipient { attested })
}

fn invalid_document() -> KmsError {
    KmsError::validation("The attestation document is not valid.")
}

/// Encrypts `plaintext` to the recipient as a `CiphertextForRecipient`: a fresh AES-256 content
/// key and IV, the content key under RSA-OAEP-SHA256, the envelope laid out as KMS lays it out.
pub fn seal(recipient: &Recipient, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
    let spki = &recipient.attested.public_key;
    let key = PublicEncryptingKey::from_der(spki).map_err(|_| invalid_document())?;
    let key = OaepPublicEncryptingKey::new(key).map_err(|_| invalid_document())?;
    let mut content_key = zeroize::Zeroizing::new([0u8; 32]);
    fill_random(content_key.as_mut());
    let mut iv = [0u8; 16];
    fill_random(&mut iv);
    let mut encrypted_key = vec![0u8; key.ciphertext_size()];
    let written = key
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            content_key.as_ref(),
            &mut encrypted_key,
            None,
        )
        .map_err(|_| KmsError::internal())?
        .len();
    encrypted_key.truncate(written);
    Ok(cms::build(
        Layout::KMS,
        &subject_key_id(spki),
        &encrypted_key,
        &content_key,
        &iv,
        plaintext,
    ))
}

/// The subjectKeyIdentifier KMS writes: SHA-256 of the recipient's DER SPKI.
pub fn subject_key_id(spki_der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, spki_der).as_ref());
    out
}
