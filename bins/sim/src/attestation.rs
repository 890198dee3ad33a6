//! Nitro attestation documents: parse and encode (the simulated NSM encodes them, the KMS
//! emulator and `kmstool-sim verify` parse them; the enclave only passes them on).
//!
//! An attestation document is a COSE_Sign1 structure (RFC 9052), untagged as the NSM emits it
//! (tag 18 is accepted too): a CBOR array of four items,
//!
//! 1. the protected header, a byte string holding the map `{1: -35}` (alg = ES384),
//! 2. the unprotected header, a map (empty in practice),
//! 3. the payload, a byte string holding the CBOR map described by [`AttestationPayload`],
//! 4. the signature, 96 bytes: the `r ‖ s` of ECDSA P-384 over SHA-384 of the
//!    [`cose_sign1_sig_structure`].
//!
//! This module only parses and encodes; it checks neither the certificate chain nor the
//! signature (the verifier does, with a trust root and a time the caller supplies). Every input
//! is capped: the document at [`MAX_DOCUMENT_BYTES`], the registers at [`MAX_PCRS`], the CA
//! bundle at [`MAX_CABUNDLE_CERTS`], CBOR nesting at a small depth.

use std::collections::BTreeMap;
use std::fmt;

use ciborium::value::Value;

use kmstool_core::nsm::Digest;

use crate::nsm::{digest_len, digest_name};

/// Largest attestation document accepted, in bytes (real ones are about 4.5 KiB).
pub const MAX_DOCUMENT_BYTES: usize = kmstool_core::nsm::MAX_DOCUMENT_BYTES;

/// Largest number of platform configuration registers in a document (the NSM has 32).
pub const MAX_PCRS: usize = 32;

/// Largest number of certificates in the CA bundle (real ones carry four).
pub const MAX_CABUNDLE_CERTS: usize = 8;

/// COSE algorithm identifier of ECDSA with SHA-384 (ES384).
pub const COSE_ALG_ES384: i64 = -35;

/// CBOR tag of a tagged COSE_Sign1 structure.
pub const COSE_SIGN1_TAG: u64 = 18;

/// Length of an ES384 signature: `r` and `s`, 48 bytes each.
pub const ES384_SIGNATURE_LEN: usize = 96;

/// The protected header the NSM writes: the CBOR map `{1: -35}` (alg = ES384).
pub const PROTECTED_HEADER_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];

/// Deepest CBOR nesting accepted (a document needs three levels: array, map, map).
const MAX_NESTING: usize = 8;

/// COSE header label of the algorithm.
const HEADER_ALG: i128 = 1;

/// A parsed attestation document: the COSE_Sign1 parts and the decoded payload.
///
/// `protected`, `payload` and `signature` are the exact bytes from the document, so a verifier
/// can rebuild what was signed with [`AttestationDocument::sig_structure`].
#[derive(Clone, Debug, PartialEq)]
pub struct AttestationDocument {
    /// The serialized protected header (normally [`PROTECTED_HEADER_ES384`]).
    pub protected: Vec<u8>,
    /// The serialized payload, as signed.
    pub payload: Vec<u8>,
    /// The ES384 signature, `r ‖ s`, [`ES384_SIGNATURE_LEN`] bytes.
    pub signature: Vec<u8>,
    /// The decoded payload.
    pub doc: AttestationPayload,
}

/// The payload of an attestation document, with the fields the NSM writes.
#[derive(Clone, Debug, PartialEq)]
pub struct AttestationPayload {
    /// The issuing module, `i-<instance>-enc<enclave>`.
    pub module_id: String,
    /// The digest the registers are computed with (SHA-384 on Nitro).
    pub digest: Digest,
    /// Creation time, milliseconds since the Unix epoch (UTC).
    pub timestamp: u64,
    /// Platform configuration registers: index → value of the digest's length.
    pub pcrs: BTreeMap<u16, Vec<u8>>,
    /// The signing (leaf) certificate, DER.
    pub certificate: Vec<u8>,
    /// The issuing CA certificates, DER, root first, leaf's issuer last.
    pub cabundle: Vec<Vec<u8>>,
    /// The public key the requester put in (DER SubjectPublicKeyInfo for kmstool).
    pub public_key: Option<Vec<u8>>,
    /// The user data the requester put in.
    pub user_data: Option<Vec<u8>>,
    /// The nonce the requester put in.
    pub nonce: Option<Vec<u8>>,
}

impl AttestationDocument {
    /// Parses an attestation document: COSE_Sign1, untagged or with tag 18, alg ES384.
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestationError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(AttestationError::TooLarge {
                len: bytes.len(),
                max: MAX_DOCUMENT_BYTES,
            });
        }
        let items = match decode(bytes)? {
            Value::Tag(COSE_SIGN1_TAG, inner) => *inner,
            Value::Tag(tag, _) => return Err(AttestationError::UnexpectedTag(tag)),
            untagged => untagged,
        };
        let [protected, unprotected, payload, signature] = cose_sign1_items(items)?;

        let Value::Bytes(protected) = protected else {
            return Err(AttestationError::ProtectedHeader);
        };
        check_protected_header(&protected)?;
        if !matches!(unprotected, Value::Map(_)) {
            return Err(AttestationError::UnprotectedHeader);
        }
        let Value::Bytes(payload) = payload else {
            return Err(AttestationError::PayloadNotBytes);
        };
        let Value::Bytes(signature) = signature else {
            return Err(AttestationError::SignatureLength(0));
        };
        if signature.len() != ES384_SIGNATURE_LEN {
            return Err(AttestationError::SignatureLength(signature.len()));
        }
        let doc = AttestationPayload::from_cbor(&payload)?;
        Ok(Self {
            protected,
            payload,
            signature,
            doc,
        })
    }

    /// The bytes the signature covers (see [`cose_sign1_sig_structure`]).
    pub fn sig_structure(&self) -> Vec<u8> {
        cose_sign1_sig_structure(&self.protected, &self.payload)
    }
}

impl AttestationPayload {
    /// Decodes a payload map. Fields may come in any order; unknown keys are ignored;
    /// `public_key`, `user_data` and `nonce` may be absent or null.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, AttestationError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(AttestationError::TooLarge {
                len: bytes.len(),
                max: MAX_DOCUMENT_BYTES,
            });
        }
        let Value::Map(entries) = decode(bytes)? else {
            return Err(AttestationError::PayloadNotMap);
        };
        let fields = PayloadFields::collect(entries)?;
        fields.into_payload()
    }

    /// Encodes the payload as the NSM does: the nine fields in the NSM's order (`module_id`,
    /// `digest`, `timestamp`, `pcrs`, `certificate`, `cabundle`, `public_key`, `user_data`,
    /// `nonce`), text keys, integer register indexes, byte strings, null for absent options.
    pub fn to_cbor(&self) -> Vec<u8> {
        let optional = |v: &Option<Vec<u8>>| v.clone().map_or(Value::Null, Value::Bytes);
        let pcrs = self
            .pcrs
            .iter()
            .map(|(index, value)| (Value::Integer((*index).into()), Value::Bytes(value.clone())))
            .collect();
        let cabundle = self.cabundle.iter().cloned().map(Value::Bytes).collect();
        let map = vec![
            (text("module_id"), text(&self.module_id)),
            (text("digest"), text(digest_name(self.digest))),
            (text("timestamp"), Value::Integer(self.timestamp.into())),
            (text("pcrs"), Value::Map(pcrs)),
            (text("certificate"), Value::Bytes(self.certificate.clone())),
            (text("cabundle"), Value::Array(cabundle)),
            (text("public_key"), optional(&self.public_key)),
            (text("user_data"), optional(&self.user_data)),
            (text("nonce"), optional(&self.nonce)),
        ];
        encode(&Value::Map(map))
    }

    /// The value of register `index`, if the document carries it.
    pub fn pcr(&self, index: u16) -> Option<&[u8]> {
        self.pcrs.get(&index).map(Vec::as_slice)
    }
}

/// The COSE `Sig_structure` for a COSE_Sign1 without external data: the CBOR array
/// `["Signature1", protected, h'', payload]`. This is what an ES384 signature covers.
pub fn cose_sign1_sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    encode(&Value::Array(vec![
        text("Signature1"),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
        Value::Bytes(payload.to_vec()),
    ]))
}

/// Encodes an untagged COSE_Sign1 as the NSM does: `[protected, {}, payload, signature]`.
pub fn encode_cose_sign1(protected: &[u8], payload: &[u8], signature: &[u8]) -> Vec<u8> {
    encode(&Value::Array(vec![
        Value::Bytes(protected.to_vec()),
        Value::Map(Vec::new()),
        Value::Bytes(payload.to_vec()),
        Value::Bytes(signature.to_vec()),
    ]))
}

/// Splits a COSE_Sign1 array into its four items.
fn cose_sign1_items(value: Value) -> Result<[Value; 4], AttestationError> {
    let Value::Array(items) = value else {
        return Err(AttestationError::NotCoseSign1);
    };
    <[Value; 4]>::try_from(items).map_err(|_| AttestationError::NotCoseSign1)
}

/// Checks that the protected header is a map whose algorithm is ES384.
fn check_protected_header(protected: &[u8]) -> Result<(), AttestationError> {
    if protected.is_empty() {
        // An empty protected header stands for the empty map: no algorithm.
        return Err(AttestationError::MissingAlgorithm);
    }
    let Value::Map(entries) = decode(protected).map_err(|_| AttestationError::ProtectedHeader)?
    else {
        return Err(AttestationError::ProtectedHeader);
    };
    let alg = entries.iter().find_map(|(key, value)| match key {
        Value::Integer(label) if i128::from(*label) == HEADER_ALG => Some(value),
        _ => None,
    });
    match alg {
        None => Err(AttestationError::MissingAlgorithm),
        Some(Value::Integer(alg)) if i128::from(*alg) == i128::from(COSE_ALG_ES384) => Ok(()),
        Some(Value::Integer(alg)) => Err(AttestationError::UnsupportedAlgorithm(
            i64::try_from(*alg).ok(),
        )),
        Some(_) => Err(AttestationError::UnsupportedAlgorithm(None)),
    }
}

/// The payload's fields as found, before their presence and lengths are checked.
#[derive(Default)]
struct PayloadFields {
    module_id: Option<String>,
    digest: Option<Digest>,
    timestamp: Option<u64>,
    pcrs: Option<Vec<(u16, Vec<u8>)>>,
    certificate: Option<Vec<u8>>,
    cabundle: Option<Vec<Vec<u8>>>,
    public_key: Option<Option<Vec<u8>>>,
    user_data: Option<Option<Vec<u8>>>,
    nonce: Option<Option<Vec<u8>>>,
}

impl PayloadFields {
    /// Sorts the map entries into fields, checking each field's CBOR type.
    fn collect(entries: Vec<(Value, Value)>) -> Result<Self, AttestationError> {
        let mut fields = Self::default();
        for (key, value) in entries {
            let Value::Text(key) = key else {
                return Err(AttestationError::NonTextKey);
            };
            match key.as_str() {
                "module_id" => set(&mut fields.module_id, "module_id", text_field(value)?)?,
                "digest" => set(&mut fields.digest, "digest", digest_field(value)?)?,
                "timestamp" => set(&mut fields.timestamp, "timestamp", timestamp_field(value)?)?,
                "pcrs" => set(&mut fields.pcrs, "pcrs", pcrs_field(value)?)?,
                "certificate" => set(
                    &mut fields.certificate,
                    "certificate",
                    bytes_field(value, "certificate")?,
                )?,
                "cabundle" => set(&mut fields.cabundle, "cabundle", cabundle_field(value)?)?,
                "public_key" => set(
                    &mut fields.public_key,
                    "public_key",
                    optional_bytes_field(value, "public_key")?,
                )?,
                "user_data" => set(
                    &mut fields.user_data,
                    "user_data",
                    optional_bytes_field(value, "user_data")?,
                )?,
                "nonce" => set(
                    &mut fields.nonce,
                    "nonce",
                    optional_bytes_field(value, "nonce")?,
                )?,
                _ => {}
            }
        }
        Ok(fields)
    }

    /// Checks presence, register lengths and non-empty certificates, and builds the payload.
    fn into_payload(self) -> Result<AttestationPayload, AttestationError> {
        let module_id = self
            .module_id
            .ok_or(AttestationError::MissingField("module_id"))?;
        let digest = self
            .digest
            .ok_or(AttestationError::MissingField("digest"))?;
        let timestamp = self
            .timestamp
            .ok_or(AttestationError::MissingField("timestamp"))?;
        let certificate = self
            .certificate
            .ok_or(AttestationError::MissingField("certificate"))?;
        let cabundle = self
            .cabundle
            .ok_or(AttestationError::MissingField("cabundle"))?;
        let pcrs = check_pcrs(
            self.pcrs.ok_or(AttestationError::MissingField("pcrs"))?,
            digest,
        )?;
        if module_id.is_empty() {
            return Err(AttestationError::EmptyField("module_id"));
        }
        if certificate.is_empty() || cabundle.iter().any(Vec::is_empty) {
            return Err(AttestationError::EmptyField("certificate"));
        }
        Ok(AttestationPayload {
            module_id,
            digest,
            timestamp,
            pcrs,
            certificate,
            cabundle,
            public_key: self.public_key.flatten(),
            user_data: self.user_data.flatten(),
            nonce: self.nonce.flatten(),
        })
    }
}

/// Stores a field, refusing a second occurrence of the same key.
fn set<T>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), AttestationError> {
    if slot.is_some() {
        return Err(AttestationError::DuplicateField(name));
    }
    *slot = Some(value);
    Ok(())
}

fn text_field(value: Value) -> Result<String, AttestationError> {
    match value {
        Value::Text(text) => Ok(text),
        _ => Err(AttestationError::WrongType("module_id")),
    }
}

fn digest_field(value: Value) -> Result<Digest, AttestationError> {
    match value {
        Value::Text(name) => match name.as_str() {
            "SHA256" => Ok(Digest::SHA256),
            "SHA384" => Ok(Digest::SHA384),
            "SHA512" => Ok(Digest::SHA512),
            _ => Err(AttestationError::UnknownDigest),
        },
        _ => Err(AttestationError::WrongType("digest")),
    }
}

fn timestamp_field(value: Value) -> Result<u64, AttestationError> {
    match value {
        Value::Integer(ms) => {
            u64::try_from(ms).map_err(|_| AttestationError::WrongType("timestamp"))
        }
        _ => Err(AttestationError::WrongType("timestamp")),
    }
}

fn bytes_field(value: Value, name: &'static str) -> Result<Vec<u8>, AttestationError> {
    match value {
        Value::Bytes(bytes) => Ok(bytes),
        _ => Err(AttestationError::WrongType(name)),
    }
}

fn optional_bytes_field(
    value: Value,
    name: &'static str,
) -> Result<Option<Vec<u8>>, AttestationError> {
    match value {
        Value::Null => Ok(None),
        other => bytes_field(other, name).map(Some),
    }
}

fn pcrs_field(value: Value) -> Result<Vec<(u16, Vec<u8>)>, AttestationError> {
    let Value::Map(entries) = value else {
        return Err(AttestationError::WrongType("pcrs"));
    };
    if entries.len() > MAX_PCRS {
        return Err(AttestationError::TooManyPcrs(entries.len()));
    }
    entries
        .into_iter()
        .map(|(index, value)| {
            let index = pcr_index(index)?;
            match value {
                Value::Bytes(bytes) => Ok((index, bytes)),
                _ => Err(AttestationError::WrongType("pcrs")),
            }
        })
        .collect()
}

/// Reads a register index: an integer below [`MAX_PCRS`].
fn pcr_index(index: Value) -> Result<u16, AttestationError> {
    let Value::Integer(index) = index else {
        return Err(AttestationError::WrongType("pcrs"));
    };
    match u16::try_from(index) {
        Ok(index) if usize::from(index) < MAX_PCRS => Ok(index),
        _ => Err(AttestationError::PcrIndex(i128::from(index))),
    }
}

/// Checks for repeated indexes and that every value has the digest's length.
fn check_pcrs(
    pcrs: Vec<(u16, Vec<u8>)>,
    digest: Digest,
) -> Result<BTreeMap<u16, Vec<u8>>, AttestationError> {
    let expected = digest_len(digest);
    let mut map = BTreeMap::new();
    for (index, value) in pcrs {
        if value.len() != expected {
            return Err(AttestationError::PcrLength {
                index,
                len: value.len(),
                expected,
            });
        }
        if map.insert(index, value).is_some() {
            return Err(AttestationError::DuplicatePcr(index));
        }
    }
    Ok(map)
}

fn cabundle_field(value: Value) -> Result<Vec<Vec<u8>>, AttestationError> {
    let Value::Array(certs) = value else {
        return Err(AttestationError::WrongType("cabundle"));
    };
    if certs.is_empty() {
        return Err(AttestationError::EmptyCabundle);
    }
    if certs.len() > MAX_CABUNDLE_CERTS {
        return Err(AttestationError::TooManyCertificates(certs.len()));
    }
    certs
        .into_iter()
        .map(|cert| bytes_field(cert, "cabundle"))
        .collect()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// Decodes exactly one CBOR item from `bytes`, with bounded nesting and no trailing bytes.
fn decode(bytes: &[u8]) -> Result<Value, AttestationError> {
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_NESTING)
        .map_err(|error| match error {
            ciborium::de::Error::Io(_) => AttestationError::Truncated,
            ciborium::de::Error::Syntax(offset) => AttestationError::Cbor {
                offset: Some(offset),
            },
            ciborium::de::Error::Semantic(offset, _) => AttestationError::Cbor { offset },
            ciborium::de::Error::RecursionLimitExceeded => AttestationError::TooDeep,
        })?;
    if !rest.is_empty() {
        return Err(AttestationError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Encodes one CBOR item.
///
/// Writing into a `Vec` cannot fail and a [`Value`] always serializes, so the error arm is
/// unreachable; should it ever be taken, the result is empty, which no parser or verifier
/// accepts (fails closed).
fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match ciborium::ser::into_writer(value, &mut out) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// Why bytes are not an attestation document this module accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttestationError {
    /// The input is larger than the cap.
    TooLarge {
        /// Input size in bytes.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The input ends in the middle of a CBOR item.
    Truncated,
    /// The input is not well-formed CBOR.
    Cbor {
        /// Byte offset of the problem, when known.
        offset: Option<usize>,
    },
    /// CBOR nesting is deeper than a document needs.
    TooDeep,
    /// Bytes follow the CBOR item.
    TrailingBytes(usize),
    /// The document carries a CBOR tag other than COSE_Sign1 (18).
    UnexpectedTag(u64),
    /// The document is not an array of four items.
    NotCoseSign1,
    /// The protected header is not a byte string holding a CBOR map.
    ProtectedHeader,
    /// The protected header names no algorithm.
    MissingAlgorithm,
    /// The algorithm is not ES384 (-35); the value when it is an integer.
    UnsupportedAlgorithm(Option<i64>),
    /// The unprotected header is not a map.
    UnprotectedHeader,
    /// The payload is not a byte string (a detached payload is not supported).
    PayloadNotBytes,
    /// The signature is not 96 bytes; its length.
    SignatureLength(usize),
    /// The payload is not a CBOR map.
    PayloadNotMap,
    /// A payload key is not a text string.
    NonTextKey,
    /// A required payload field is absent.
    MissingField(&'static str),
    /// A payload field occurs twice.
    DuplicateField(&'static str),
    /// A payload field has the wrong CBOR type.
    WrongType(&'static str),
    /// A field that must not be empty is empty.
    EmptyField(&'static str),
    /// The digest is not `SHA256`, `SHA384` or `SHA512`.
    UnknownDigest,
    /// More registers than [`MAX_PCRS`].
    TooManyPcrs(usize),
    /// A register index is negative or not below [`MAX_PCRS`].
    PcrIndex(i128),
    /// A register index occurs twice.
    DuplicatePcr(u16),
    /// A register value does not have the digest's length.
    PcrLength {
        /// The register.
        index: u16,
        /// Its length.
        len: usize,
        /// The digest's length.
        expected: usize,
    },
    /// The CA bundle is empty.
    EmptyCabundle,
    /// More CA certificates than [`MAX_CABUNDLE_CERTS`].
    TooManyCertificates(usize),
}

impl fmt::Display for AttestationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => {
                write!(f, "attestation document of {len} bytes exceeds {max}")
            }
            Self::Truncated => f.write_str("attestation document is truncated"),
            Self::Cbor { offset: Some(at) } => {
                write!(f, "attestation document is not valid CBOR (at byte {at})")
            }
            Self::Cbor { offset: None } => f.write_str("attestation document is not valid CBOR"),
            Self::TooDeep => f.write_str("attestation document nests CBOR too deeply"),
            Self::TrailingBytes(n) => write!(f, "{n} bytes follow the attestation document"),
            Self::UnexpectedTag(tag) => {
                write!(
                    f,
                    "attestation document has CBOR tag {tag}, not COSE_Sign1 (18)"
                )
            }
            Self::NotCoseSign1 => f.write_str("attestation document is not a COSE_Sign1 array"),
            Self::ProtectedHeader => f.write_str("COSE protected header is not a CBOR map"),
            Self::MissingAlgorithm => f.write_str("COSE protected header names no algorithm"),
            Self::UnsupportedAlgorithm(Some(alg)) => {
                write!(f, "COSE algorithm {alg} is not ES384 (-35)")
            }
            Self::UnsupportedAlgorithm(None) => f.write_str("COSE algorithm is not ES384 (-35)"),
            Self::UnprotectedHeader => f.write_str("COSE unprotected header is not a map"),
            Self::PayloadNotBytes => f.write_str("COSE payload is not a byte string"),
            Self::SignatureLength(len) => {
                write!(f, "COSE signature is {len} bytes, ES384 needs 96")
            }
            Self::PayloadNotMap => f.write_str("attestation payload is not a CBOR map"),
            Self::NonTextKey => f.write_str("attestation payload has a key that is not text"),
            Self::MissingField(name) => write!(f, "attestation payload lacks `{name}`"),
            Self::DuplicateField(name) => write!(f, "attestation payload repeats `{name}`"),
            Self::WrongType(name) => write!(f, "attestation payload `{name}` has the wrong type"),
            Self::EmptyField(name) => write!(f, "attestation payload `{name}` is empty"),
            Self::UnknownDigest => f.write_str("attestation digest is not SHA256/SHA384/SHA512"),
            Self::TooManyPcrs(n) => write!(f, "attestation carries {n} PCRs, at most 32"),
            Self::PcrIndex(index) => write!(f, "PCR index {index} is out of range"),
            Self::DuplicatePcr(index) => write!(f, "PCR {index} occurs twice"),
            Self::PcrLength {
                index,
                len,
                expected,
            } => write!(f, "PCR {index} is {len} bytes, the digest gives {expected}"),
            Self::EmptyCabundle => f.write_str("attestation CA bundle is empty"),
            Self::TooManyCertificates(n) => {
                write!(f, "attestation CA bundle has {n} certificates, at most 8")
            }
        }
    }
}

impl std::error::Error for AttestationError {}

#[cfg(test)]
mod tests;
