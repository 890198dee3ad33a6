//! KMS's `CiphertextForRecipient`: a CMS EnvelopedData for the enclave's RSA key.
//!
//! When a KMS call carries a `Recipient`, KMS answers with CMS (RFC 5652) instead of a plaintext:
//!
//! ```text
//! ContentInfo { id-envelopedData, [0] EnvelopedData {
//!     version 2,
//!     recipientInfos SET { KeyTransRecipientInfo {
//!         version 2,
//!         rid [0] subjectKeyIdentifier (32 bytes: SHA-256 of the recipient's DER SPKI),
//!         keyEncryptionAlgorithm RSAES-OAEP { SHA-256, MGF1-SHA-256 },
//!         encryptedKey (256 bytes: the AES-256 content key under RSA-OAEP) } },
//!     encryptedContentInfo {
//!         id-data, AES-256-CBC { 16-byte IV },
//!         [0] the PKCS #7-padded plaintext under AES-256-CBC } } }
//! ```
//!
//! KMS writes it in BER with indefinite lengths on the outer layers and the encrypted content as
//! a constructed `[0]` of 1000-byte OCTET STRING chunks (or one primitive `[0]`). [`parse`] reads
//! that (and DER) with the RustCrypto `cms` crate and checks every field we depend on, returning
//! an [`EnvelopedKey`]; [`unwrap`] then decrypts it with a [`RecipientKey`]. With the
//! `_internal_test_exports` feature, `build` writes the same shapes, for the KMS emulator, the
//! tests and the fuzz targets; the enclave never builds one.
//!
//! [`RecipientKey`]: crate::crypto::RecipientKey

#[cfg(any(test, feature = "_internal_test_exports"))]
mod build;
mod parse;

use std::fmt;

use der::asn1::ObjectIdentifier;

use crate::crypto::CryptoError;

#[cfg(all(
    any(test, feature = "_internal_test_exports"),
    any(feature = "aws-lc", feature = "rustcrypto")
))]
pub use self::build::build;
#[cfg(any(test, feature = "_internal_test_exports"))]
pub use self::build::{Layout, build_encrypted};
pub use self::parse::parse;

/// The largest `CiphertextForRecipient` we parse. KMS plaintexts are at most 4096 bytes, so a
/// real one is under 5 KiB; the cap bounds the work a hostile peer can cause.
pub const MAX_CIPHERTEXT_LEN: usize = 64 * 1024;
/// Length of the subjectKeyIdentifier KMS writes (a SHA-256).
pub const SUBJECT_KEY_ID_LEN: usize = 32;

/// The fields of a validated `CiphertextForRecipient`, still encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopedKey {
    /// Whose key the content key was encrypted to: SHA-256 of that key's DER SPKI.
    pub subject_key_id: [u8; SUBJECT_KEY_ID_LEN],
    /// The AES-256 content key under RSA-OAEP-SHA256 (256 bytes).
    pub encrypted_key: Vec<u8>,
    /// The AES-256-CBC initialisation vector.
    pub iv: [u8; 16],
    /// The padded plaintext under AES-256-CBC; a non-zero multiple of 16 bytes.
    pub encrypted_content: Vec<u8>,
}

/// Why a `CiphertextForRecipient` was rejected. Carries no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmsError {
    /// The input is longer than [`MAX_CIPHERTEXT_LEN`].
    TooLarge {
        /// Bytes given.
        len: usize,
    },
    /// The input is not a BER/DER `ContentInfo`.
    Malformed(der::Error),
    /// The `ContentInfo` holds something other than EnvelopedData.
    ContentType(ObjectIdentifier),
    /// The content is not a well-formed EnvelopedData.
    NotEnvelopedData(der::Error),
    /// A structure carries a version other than 2.
    Version {
        /// `EnvelopedData` or `KeyTransRecipientInfo`.
        structure: &'static str,
        /// The version found.
        found: u8,
    },
    /// There is not exactly one recipient.
    RecipientCount(usize),
    /// The recipient is not a KeyTransRecipientInfo (key agreement, KEK, password, other).
    NotKeyTransRecipient,
    /// The recipient is named by issuer and serial number, not by subjectKeyIdentifier.
    RecipientNotSubjectKeyId,
    /// The subjectKeyIdentifier is not 32 bytes long.
    SubjectKeyIdLength(usize),
    /// The key encryption algorithm is not RSAES-OAEP.
    KeyEncryptionAlgorithm(ObjectIdentifier),
    /// The RSAES-OAEP parameters are not SHA-256, MGF1-SHA-256 and an empty label.
    OaepParameters(&'static str),
    /// The encrypted content key is not 256 bytes long.
    EncryptedKeyLength(usize),
    /// The encrypted content is not of type id-data.
    EncryptedContentType(ObjectIdentifier),
    /// The content encryption algorithm is not AES-256-CBC.
    ContentEncryptionAlgorithm(ObjectIdentifier),
    /// The AES-256-CBC parameters are absent or not an OCTET STRING.
    IvMissing,
    /// The IV is not 16 bytes long.
    IvLength(usize),
    /// The encrypted content is absent (detached content is not supported).
    MissingEncryptedContent,
    /// The encrypted content is empty or not a multiple of the 16-byte AES block.
    ContentLength(usize),
    /// The recipient's subjectKeyIdentifier is not our key's: KMS encrypted to another key.
    SubjectKeyIdMismatch,
    /// The decrypted content key is not 32 bytes (not an AES-256 key).
    ContentKeyLength(usize),
    /// Decryption failed: RSA-OAEP of the content key, or the content's padding.
    Crypto(CryptoError),
}

impl fmt::Display for CmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len } => write!(
                f,
                "CiphertextForRecipient is {len} bytes, more than {MAX_CIPHERTEXT_LEN}"
            ),
            Self::Malformed(e) => write!(f, "CiphertextForRecipient is not CMS ContentInfo: {e}"),
            Self::ContentType(oid) => write!(f, "CMS content type is {oid}, not envelopedData"),
            Self::NotEnvelopedData(e) => write!(f, "CMS EnvelopedData is malformed: {e}"),
            Self::Version { structure, found } => {
                write!(f, "CMS {structure} has version {found}, expected 2")
            }
            Self::RecipientCount(n) => write!(f, "CMS EnvelopedData has {n} recipients, not one"),
            Self::NotKeyTransRecipient => {
                f.write_str("CMS recipient is not a KeyTransRecipientInfo")
            }
            Self::RecipientNotSubjectKeyId => {
                f.write_str("CMS recipient is identified by issuer and serial, not by key id")
            }
            Self::SubjectKeyIdLength(n) => {
                write!(f, "CMS subjectKeyIdentifier is {n} bytes, expected 32")
            }
            Self::KeyEncryptionAlgorithm(oid) => {
                write!(f, "CMS key encryption algorithm is {oid}, not RSAES-OAEP")
            }
            Self::OaepParameters(what) => write!(f, "CMS RSAES-OAEP parameters: {what}"),
            Self::EncryptedKeyLength(n) => {
                write!(f, "CMS encrypted content key is {n} bytes, expected 256")
            }
            Self::EncryptedContentType(oid) => {
                write!(f, "CMS encrypted content type is {oid}, not id-data")
            }
            Self::ContentEncryptionAlgorithm(oid) => {
                write!(
                    f,
                    "CMS content encryption algorithm is {oid}, not AES-256-CBC"
                )
            }
            Self::IvMissing => f.write_str("CMS AES-256-CBC parameters carry no IV"),
            Self::IvLength(n) => write!(f, "CMS AES-256-CBC IV is {n} bytes, expected 16"),
            Self::MissingEncryptedContent => f.write_str("CMS encrypted content is absent"),
            Self::ContentLength(n) => write!(
                f,
                "CMS encrypted content is {n} bytes, not a non-zero multiple of 16"
            ),
            Self::SubjectKeyIdMismatch => {
                f.write_str("CMS recipient key id does not match our public key")
            }
            Self::ContentKeyLength(n) => {
                write!(f, "CMS content key is {n} bytes, expected 32")
            }
            Self::Crypto(e) => write!(f, "CMS decryption failed: {e}"),
        }
    }
}

impl std::error::Error for CmsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Crypto(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CryptoError> for CmsError {
    fn from(e: CryptoError) -> Self {
        Self::Crypto(e)
    }
}

/// Parses `ciphertext_for_recipient`, checks it names `key`, and decrypts it: RSA-OAEP for the
/// content key, then AES-256-CBC for the plaintext (the data key or decrypted secret).
#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
pub fn unwrap(
    ciphertext_for_recipient: &[u8],
    key: &crate::crypto::RecipientKey,
) -> Result<crate::secret::SecretBytes, CmsError> {
    use crate::crypto::{AES256_KEY_LEN, aes256_cbc_decrypt};
    use zeroize::Zeroizing;

    let enveloped = parse(ciphertext_for_recipient)?;
    if enveloped.subject_key_id != key.subject_key_id() {
        return Err(CmsError::SubjectKeyIdMismatch);
    }
    let decrypted = key.oaep_sha256_decrypt(&enveloped.encrypted_key)?;
    if decrypted.len() != AES256_KEY_LEN {
        return Err(CmsError::ContentKeyLength(decrypted.len()));
    }
    let mut content_key = Zeroizing::new([0; AES256_KEY_LEN]);
    content_key.copy_from_slice(&decrypted);
    let plaintext = aes256_cbc_decrypt(
        key.backend(),
        &content_key,
        &enveloped.iv,
        &enveloped.encrypted_content,
    )?;
    Ok(plaintext)
}
