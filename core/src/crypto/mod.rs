//! RSA-OAEP and AES-CBC for opening KMS's `CiphertextForRecipient`, behind two backends.
//!
//! The enclave's RSA-2048 key is a [`RecipientKey`]; its DER SubjectPublicKeyInfo goes into the
//! attestation request, and KMS names it in the CMS message by its [`subject_key_id`] (SHA-256
//! of that SPKI). Two backends implement the primitives, chosen per key with [`Backend`]:
//! AWS-LC (feature `aws-lc`, the default, constant-time C) and the pure-Rust RustCrypto crates
//! (feature `rustcrypto`). Both give identical results; tests run every enabled backend.
//!
//! Only [`RecipientKey::generate`] draws randomness, from the operating system through the
//! backend (AWS-LC's RNG, or `getrandom` for RustCrypto): it is the one exception to core
//! drawing none, so that the enclave key is made in one place for every runtime, which call it
//! off their async threads. Decryption draws none: the RustCrypto backend derives its RSA
//! blinding factors from a secret hash of the key and the ciphertext.
//!
//! [`subject_key_id`]: RecipientKey::subject_key_id
//!
//! Without either feature only the error types and constants remain (the helpers below are
//! then unused), so crates that need no crypto still build.
#![cfg_attr(not(any(feature = "aws-lc", feature = "rustcrypto")), allow(dead_code))]

#[cfg(feature = "aws-lc")]
mod aws_lc;
#[cfg(feature = "rustcrypto")]
mod rustcrypto;

use std::fmt;

use der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef, UintRef};
use der::{Decode, Encode, Sequence};
use zeroize::Zeroizing;

/// Length in bytes of the RSA-2048 modulus, and so of every OAEP ciphertext we accept.
pub const RSA_MODULUS_LEN: usize = 256;
/// Length in bytes of an AES-256 key.
pub const AES256_KEY_LEN: usize = 32;
/// Length in bytes of an AES block and of a CBC IV.
pub const AES_BLOCK_LEN: usize = 16;

/// The public exponent we require (F4), as the NSM and KMS expect.
const RSA_PUBLIC_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];
/// The longest PEM label we repeat in an error message.
const MAX_LABEL_IN_ERROR: usize = 40;

/// `rsaEncryption` (PKCS #1), the algorithm of an RSA SubjectPublicKeyInfo / PrivateKeyInfo.
pub(crate) const RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Why a private key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The text is not a PEM document.
    Pem(der::pem::Error),
    /// The PEM document is not `RSA PRIVATE KEY` (PKCS #1) or `PRIVATE KEY` (PKCS #8).
    PemLabel(String),
    /// The backend did not accept the DER as an RSA private key; the reason is the backend's.
    Rejected(String),
    /// The key is RSA but not 2048 bits.
    ModulusSize {
        /// Bits in the modulus.
        bits: usize,
    },
    /// The public exponent is not 65537.
    PublicExponent,
    /// The backend produced a public key we could not read back (an internal fault).
    PublicKey,
    /// The backend could not generate a key (its RNG failed, or an internal fault).
    Generation,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pem(e) => write!(f, "private key is not valid PEM: {e}"),
            Self::PemLabel(label) => write!(
                f,
                "PEM label {label:?} is neither \"RSA PRIVATE KEY\" nor \"PRIVATE KEY\""
            ),
            Self::Rejected(reason) => write!(f, "not an acceptable RSA private key: {reason}"),
            Self::ModulusSize { bits } => {
                write!(f, "RSA key has a {bits}-bit modulus, expected 2048")
            }
            Self::PublicExponent => f.write_str("RSA public exponent is not 65537"),
            Self::PublicKey => f.write_str("could not encode the RSA public key"),
            Self::Generation => f.write_str("RSA key generation failed"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Why an RSA or AES operation failed. Carries no secret and no decrypted byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// The RSA ciphertext is not exactly as long as the modulus.
    RsaCiphertextLength {
        /// Bytes given.
        len: usize,
    },
    /// RSA-OAEP (SHA-256, MGF1-SHA-256) decryption failed: wrong key or corrupted ciphertext.
    OaepDecryption,
    /// The AES-CBC ciphertext is empty or not a whole number of 16-byte blocks.
    NotBlockAligned {
        /// Bytes given.
        len: usize,
    },
    /// The decrypted content does not end in valid PKCS #7 padding.
    BadPadding,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RsaCiphertextLength { len } => write!(
                f,
                "RSA ciphertext is {len} bytes, expected {RSA_MODULUS_LEN}"
            ),
            Self::OaepDecryption => f.write_str("RSA-OAEP-SHA256 decryption failed"),
            Self::NotBlockAligned { len } => write!(
                f,
                "AES-CBC ciphertext is {len} bytes, not a non-zero multiple of {AES_BLOCK_LEN}"
            ),
            Self::BadPadding => f.write_str("AES-CBC plaintext has invalid PKCS#7 padding"),
        }
    }
}

impl std::error::Error for CryptoError {}

/// A crypto implementation. Each variant exists only when its cargo feature is enabled.
#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// AWS-LC through `aws-lc-rs` (feature `aws-lc`): constant-time C, the library rustls uses.
    #[cfg(feature = "aws-lc")]
    AwsLc,
    /// The pure-Rust RustCrypto `rsa`, `aes` and `cbc` crates (feature `rustcrypto`).
    #[cfg(feature = "rustcrypto")]
    RustCrypto,
}

#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
impl Backend {
    /// The backend used when none is chosen: AWS-LC when enabled, else RustCrypto.
    #[cfg(feature = "aws-lc")]
    pub const DEFAULT: Backend = Backend::AwsLc;
    /// The backend used when none is chosen: AWS-LC when enabled, else RustCrypto.
    #[cfg(not(feature = "aws-lc"))]
    pub const DEFAULT: Backend = Backend::RustCrypto;

    /// Every backend compiled in, the default first.
    pub fn all() -> &'static [Backend] {
        &[
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc,
            #[cfg(feature = "rustcrypto")]
            Backend::RustCrypto,
        ]
    }

    /// The backend's short name: `aws-lc` or `rustcrypto`.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc => "aws-lc",
            #[cfg(feature = "rustcrypto")]
            Backend::RustCrypto => "rustcrypto",
        }
    }

    /// The compiled-in backend with this [`name`](Self::name), if any.
    pub fn from_name(name: &str) -> Option<Backend> {
        Self::all().iter().copied().find(|b| b.name() == name)
    }
}

#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The enclave's RSA-2048 private key, with its DER SubjectPublicKeyInfo and key identifier.
///
/// `Debug` shows the backend and the key identifier only. The private key is wiped when this
/// drops: RustCrypto's key zeroizes itself, AWS-LC clears what it frees.
#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
pub struct RecipientKey {
    inner: PrivateKeyImpl,
    spki_der: Vec<u8>,
    subject_key_id: [u8; 32],
}

/// The backend's private key object.
#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
enum PrivateKeyImpl {
    #[cfg(feature = "aws-lc")]
    AwsLc(aws_lc::PrivateKey),
    #[cfg(feature = "rustcrypto")]
    RustCrypto(Box<rustcrypto::PrivateKey>),
}

#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
impl RecipientKey {
    /// Generates a fresh RSA-2048 key (e = 65537) in `backend`, from the operating system's
    /// RNG (AWS-LC's RNG, which draws on the kernel's, or `getrandom` for RustCrypto).
    ///
    /// The only function in core that draws randomness. It is CPU-bound for tens to hundreds
    /// of milliseconds (seconds for RustCrypto in a debug build): runtimes call it on a
    /// blocking thread. The PKCS #8 copy it goes through is wiped.
    pub fn generate(backend: Backend) -> Result<Self, KeyError> {
        let der = match backend {
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc => aws_lc::PrivateKey::generate_pkcs8_der()?,
            #[cfg(feature = "rustcrypto")]
            Backend::RustCrypto => rustcrypto::PrivateKey::generate_pkcs8_der()?,
        };
        Self::from_pkcs8_der(backend, &der)
    }

    /// Loads a PKCS #8 `PrivateKeyInfo` (what AWS-LC exports) into `backend`.
    pub fn from_pkcs8_der(backend: Backend, der: &[u8]) -> Result<Self, KeyError> {
        let (inner, spki_der) = match backend {
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc => {
                let (key, spki) = aws_lc::PrivateKey::from_pkcs8_der(der)?;
                (PrivateKeyImpl::AwsLc(key), spki)
            }
            #[cfg(feature = "rustcrypto")]
            Backend::RustCrypto => {
                let (key, spki) = rustcrypto::PrivateKey::from_pkcs8_der(der)?;
                (PrivateKeyImpl::RustCrypto(Box::new(key)), spki)
            }
        };
        check_rsa2048_spki(&spki_der)?;
        let subject_key_id = sha256(&spki_der);
        Ok(Self {
            inner,
            spki_der,
            subject_key_id,
        })
    }

    /// Loads a PKCS #1 `RSAPrivateKey` into `backend`.
    pub fn from_pkcs1_der(backend: Backend, der: &[u8]) -> Result<Self, KeyError> {
        Self::from_pkcs8_der(backend, &pkcs1_to_pkcs8(der)?)
    }

    /// Loads a PEM `RSA PRIVATE KEY` (PKCS #1) or `PRIVATE KEY` (PKCS #8) into `backend`.
    pub fn from_pem(backend: Backend, pem: &[u8]) -> Result<Self, KeyError> {
        let (der, is_pkcs8) = decode_private_key_pem(pem)?;
        if is_pkcs8 {
            Self::from_pkcs8_der(backend, &der)
        } else {
            Self::from_pkcs1_der(backend, &der)
        }
    }

    /// The DER SubjectPublicKeyInfo of the public key: what goes into the NSM request.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// SHA-256 of [`public_key_der`](Self::public_key_der): the subjectKeyIdentifier KMS
    /// writes into the `KeyTransRecipientInfo`.
    pub fn subject_key_id(&self) -> [u8; 32] {
        self.subject_key_id
    }

    /// The backend holding this key.
    pub fn backend(&self) -> Backend {
        match self.inner {
            #[cfg(feature = "aws-lc")]
            PrivateKeyImpl::AwsLc(_) => Backend::AwsLc,
            #[cfg(feature = "rustcrypto")]
            PrivateKeyImpl::RustCrypto(_) => Backend::RustCrypto,
        }
    }

    /// Decrypts an RSAES-OAEP ciphertext (SHA-256, MGF1-SHA-256, empty label).
    pub fn oaep_sha256_decrypt(
        &self,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if ciphertext.len() != RSA_MODULUS_LEN {
            return Err(CryptoError::RsaCiphertextLength {
                len: ciphertext.len(),
            });
        }
        match &self.inner {
            #[cfg(feature = "aws-lc")]
            PrivateKeyImpl::AwsLc(key) => key.oaep_sha256_decrypt(ciphertext),
            #[cfg(feature = "rustcrypto")]
            PrivateKeyImpl::RustCrypto(key) => key.oaep_sha256_decrypt(ciphertext),
        }
    }
}

#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
impl fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecipientKey")
            .field("backend", &self.backend())
            .field("subject_key_id", &Hex(&self.subject_key_id))
            .field("private_key", &"[redacted]")
            .finish()
    }
}

/// Decrypts AES-256-CBC and strips PKCS #7 padding.
#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
pub fn aes256_cbc_decrypt(
    backend: Backend,
    key: &[u8; AES256_KEY_LEN],
    iv: &[u8; AES_BLOCK_LEN],
    ciphertext: &[u8],
) -> Result<crate::secret::SecretBytes, CryptoError> {
    check_block_aligned(ciphertext)?;
    let plaintext = match backend {
        #[cfg(feature = "aws-lc")]
        Backend::AwsLc => aws_lc::aes256_cbc_decrypt(key, iv, ciphertext)?,
        #[cfg(feature = "rustcrypto")]
        Backend::RustCrypto => rustcrypto::aes256_cbc_decrypt(key, iv, ciphertext)?,
    };
    Ok(plaintext.into())
}

/// Encrypts with AES-256-CBC and PKCS #7 padding under the default backend. Deterministic for a
/// given key and IV; the caller chooses the IV (the KMS emulator draws it at random).
#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
pub fn aes256_cbc_encrypt(
    key: &[u8; AES256_KEY_LEN],
    iv: &[u8; AES_BLOCK_LEN],
    plaintext: &[u8],
) -> Vec<u8> {
    #[cfg(feature = "aws-lc")]
    return aws_lc::aes256_cbc_encrypt(key, iv, plaintext);
    #[cfg(not(feature = "aws-lc"))]
    return rustcrypto::aes256_cbc_encrypt(key, iv, plaintext);
}

/// Checks the AES-CBC ciphertext length both backends require before decrypting.
fn check_block_aligned(ciphertext: &[u8]) -> Result<(), CryptoError> {
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(AES_BLOCK_LEN) {
        return Err(CryptoError::NotBlockAligned {
            len: ciphertext.len(),
        });
    }
    Ok(())
}

/// The DER of a PEM private key, with whether it is PKCS #8 (`true`) or PKCS #1 (`false`).
fn decode_private_key_pem(pem: &[u8]) -> Result<(Zeroizing<Vec<u8>>, bool), KeyError> {
    let mut decoder = der::pem::Decoder::new_detect_wrap(pem).map_err(KeyError::Pem)?;
    let is_pkcs8 = match decoder.type_label() {
        "PRIVATE KEY" => true,
        "RSA PRIVATE KEY" => false,
        other => {
            let label = other.chars().take(MAX_LABEL_IN_ERROR).collect();
            return Err(KeyError::PemLabel(label));
        }
    };
    let mut der = Zeroizing::new(Vec::new());
    decoder.decode_to_end(&mut der).map_err(KeyError::Pem)?;
    Ok((der, is_pkcs8))
}

/// `PrivateKeyInfo` (RFC 5208), the PKCS #8 envelope around a PKCS #1 `RSAPrivateKey`.
#[derive(Sequence)]
struct PrivateKeyInfo<'a> {
    version: u8,
    algorithm: AlgorithmIdentifier<'a>,
    private_key: &'a OctetStringRef,
}

/// `AlgorithmIdentifier` with its parameters kept raw.
#[derive(Sequence)]
struct AlgorithmIdentifier<'a> {
    algorithm: ObjectIdentifier,
    parameters: Option<AnyRef<'a>>,
}

/// Wraps PKCS #1 `RSAPrivateKey` DER in a PKCS #8 `PrivateKeyInfo` (rsaEncryption, NULL).
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let rejected = |e: der::Error| KeyError::Rejected(e.to_string());
    let info = PrivateKeyInfo {
        version: 0,
        algorithm: AlgorithmIdentifier {
            algorithm: RSA_ENCRYPTION,
            parameters: Some(AnyRef::NULL),
        },
        private_key: OctetStringRef::new(pkcs1).map_err(rejected)?,
    };
    // `to_der` sizes the vector exactly first, so no copy of the key is left behind.
    info.to_der().map(Zeroizing::new).map_err(rejected)
}

/// `SubjectPublicKeyInfo` (RFC 5280) with the key bits raw.
#[derive(Sequence)]
struct SubjectPublicKeyInfo<'a> {
    algorithm: AlgorithmIdentifier<'a>,
    subject_public_key: der::asn1::BitStringRef<'a>,
}

/// `RSAPublicKey` (RFC 8017).
#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// Checks, the same way for every backend, that an SPKI is RSA-2048 with e = 65537.
fn check_rsa2048_spki(spki_der: &[u8]) -> Result<(), KeyError> {
    let spki = SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| KeyError::PublicKey)?;
    if spki.algorithm.algorithm != RSA_ENCRYPTION {
        return Err(KeyError::PublicKey);
    }
    let key_bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or(KeyError::PublicKey)?;
    let key = RsaPublicKey::from_der(key_bits).map_err(|_| KeyError::PublicKey)?;
    let modulus = key.modulus.as_bytes();
    let bits = match modulus.first() {
        Some(top) => modulus.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    if bits != RSA_MODULUS_LEN * 8 {
        return Err(KeyError::ModulusSize { bits });
    }
    if key.public_exponent.as_bytes() != RSA_PUBLIC_EXPONENT {
        return Err(KeyError::PublicExponent);
    }
    Ok(())
}

/// SHA-256 of `data`.
fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// Lower-case hex in `Debug`, for identifiers that are not secret.
struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
