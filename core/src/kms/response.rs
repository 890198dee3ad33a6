//! KMS JSON 1.1 responses: a success body becomes a [`KmsOutput`], an error response a
//! [`KmsServiceError`].
//!
//! Fields are read as borrowed raw JSON first and typed one by one, which gives two
//! guarantees: a `Plaintext` value is only looked at, never copied, and an error names the
//! offending field without quoting any byte of the body (bodies may carry secrets).

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;

#[cfg(test)]
mod tests;

/// The fields kmstool uses from a successful response of a KMS operation that takes a
/// `Recipient`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KmsOutput {
    /// `KeyId`: the ARN of the KMS key used.
    pub key_id: Option<String>,
    /// `EncryptionAlgorithm`, e.g. `SYMMETRIC_DEFAULT`.
    pub encryption_algorithm: Option<String>,
    /// `CiphertextBlob`, base64-decoded (GenerateDataKey: the data key encrypted under the
    /// KMS key).
    pub ciphertext_blob: Option<Vec<u8>>,
    /// `CiphertextForRecipient`, base64-decoded: the CMS EnvelopedData for the enclave key.
    pub ciphertext_for_recipient: Option<Vec<u8>>,
    /// `PublicKey`, base64-decoded: DER SubjectPublicKeyInfo (GenerateDataKeyPair).
    pub public_key: Option<Vec<u8>>,
    /// `PrivateKeyCiphertextBlob`, base64-decoded (GenerateDataKeyPair: the private key
    /// encrypted under the KMS key).
    pub private_key_ciphertext_blob: Option<Vec<u8>>,
    /// `KeyPairSpec` (GenerateDataKeyPair).
    pub key_pair_spec: Option<String>,
    /// `KeyAgreementAlgorithm` (DeriveSharedSecret).
    pub key_agreement_algorithm: Option<String>,
    /// `KeyOrigin` (DeriveSharedSecret).
    pub key_origin: Option<String>,
    /// Whether the body carried a non-empty `Plaintext`, `PrivateKeyPlaintext` or
    /// `SharedSecret` (key material in the clear, which an attested call must never get).
    /// The values themselves are never kept.
    pub key_material_in_plaintext: bool,
}

/// An error KMS (or something in front of it) answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsServiceError {
    /// HTTP status code.
    pub status: u16,
    /// The error type without namespace or URL, e.g. `AccessDeniedException`: from `__type`
    /// (else `code`) in the body, else from the `x-amzn-ErrorType` header.
    pub error_type: Option<String>,
    /// The `message` (or `Message`) KMS gave.
    pub message: Option<String>,
    /// Whether the same request may succeed if sent again: throttling, internal errors and
    /// every 5xx.
    pub retryable: bool,
}

impl fmt::Display for KmsServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.error_type, &self.message) {
            (Some(kind), Some(message)) => write!(f, "{kind}: {message}")?,
            (Some(kind), None) => f.write_str(kind)?,
            (None, Some(message)) => f.write_str(message)?,
            (None, None) => f.write_str("KMS error")?,
        }
        write!(f, " (HTTP {})", self.status)
    }
}

/// What is wrong with a success body. Names fields and positions, never body content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedBody {
    /// The body is empty or ends inside the JSON value.
    Truncated,
    /// The body is not JSON (or not UTF-8) at this position.
    NotJson {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The body is JSON but not an object.
    NotAnObject,
    /// An object field appears twice (the error is reported at this position).
    DuplicateField {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A field has the wrong JSON type.
    NotAString {
        /// The field's name.
        field: &'static str,
    },
    /// A field that should be standard padded base64 is not.
    NotBase64 {
        /// The field's name.
        field: &'static str,
    },
}

impl fmt::Display for MalformedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("body is empty or truncated JSON"),
            Self::NotJson { line, column } => {
                write!(f, "body is not JSON (line {line}, column {column})")
            }
            Self::NotAnObject => f.write_str("body is not a JSON object"),
            Self::DuplicateField { line, column } => {
                write!(f, "body repeats a field (line {line}, column {column})")
            }
            Self::NotAString { field } => write!(f, "`{field}` is not a string"),
            Self::NotBase64 { field } => write!(f, "`{field}` is not valid base64"),
        }
    }
}

/// Why a KMS response gave no [`KmsOutput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsResponseError {
    /// KMS answered with an error status.
    Service(KmsServiceError),
    /// A success status with a body that cannot be read.
    Malformed(MalformedBody),
}

impl fmt::Display for KmsResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service(error) => write!(f, "KMS error: {error}"),
            Self::Malformed(reason) => write!(f, "malformed KMS response: {reason}"),
        }
    }
}

impl std::error::Error for KmsResponseError {}

/// Reads a KMS response from its status, its `x-amzn-ErrorType` header and its body.
///
/// A 2xx status must carry a JSON object (unknown fields are ignored, `null` counts as
/// absent); any other status is a [`KmsResponseError::Service`], read leniently since proxies
/// answer with HTML or nothing.
pub fn parse(
    status: u16,
    error_type_header: Option<&str>,
    body: &[u8],
) -> Result<KmsOutput, KmsResponseError> {
    if (200..300).contains(&status) {
        parse_success(body).map_err(KmsResponseError::Malformed)
    } else {
        Err(KmsResponseError::Service(parse_error(
            status,
            error_type_header,
            body,
        )))
    }
}

/// The fields of a success body, borrowed from it unparsed.
#[derive(Deserialize)]
struct SuccessFields<'a> {
    #[serde(rename = "KeyId", borrow, default)]
    key_id: Option<&'a RawValue>,
    #[serde(rename = "EncryptionAlgorithm", borrow, default)]
    encryption_algorithm: Option<&'a RawValue>,
    #[serde(rename = "CiphertextBlob", borrow, default)]
    ciphertext_blob: Option<&'a RawValue>,
    #[serde(rename = "CiphertextForRecipient", borrow, default)]
    ciphertext_for_recipient: Option<&'a RawValue>,
    #[serde(rename = "PublicKey", borrow, default)]
    public_key: Option<&'a RawValue>,
    #[serde(rename = "PrivateKeyCiphertextBlob", borrow, default)]
    private_key_ciphertext_blob: Option<&'a RawValue>,
    #[serde(rename = "KeyPairSpec", borrow, default)]
    key_pair_spec: Option<&'a RawValue>,
    #[serde(rename = "KeyAgreementAlgorithm", borrow, default)]
    key_agreement_algorithm: Option<&'a RawValue>,
    #[serde(rename = "KeyOrigin", borrow, default)]
    key_origin: Option<&'a RawValue>,
    #[serde(rename = "Plaintext", borrow, default)]
    plaintext: Option<&'a RawValue>,
    #[serde(rename = "PrivateKeyPlaintext", borrow, default)]
    private_key_plaintext: Option<&'a RawValue>,
    #[serde(rename = "SharedSecret", borrow, default)]
    shared_secret: Option<&'a RawValue>,
}

fn parse_success(body: &[u8]) -> Result<KmsOutput, MalformedBody> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err(MalformedBody::Truncated),
        Some(b'{') => {}
        Some(_) => return Err(MalformedBody::NotAnObject),
    }
    // JSON is UTF-8 text (RFC 8259 §8.1). serde_json checks the strings it keeps but skips
    // those of unknown fields unchecked when reading bytes, so check the whole body first.
    let text = std::str::from_utf8(body).map_err(|error| match error.error_len() {
        None => MalformedBody::Truncated,
        Some(_) => {
            let (line, column) = position(body, error.valid_up_to());
            MalformedBody::NotJson { line, column }
        }
    })?;
    let fields: SuccessFields<'_> = serde_json::from_str(text).map_err(|error| {
        let (line, column) = (error.line(), error.column());
        match error.classify() {
            serde_json::error::Category::Eof => MalformedBody::Truncated,
            // Every field accepts any JSON value, so a data error is a repeated field.
            serde_json::error::Category::Data => MalformedBody::DuplicateField { line, column },
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                MalformedBody::NotJson { line, column }
            }
        }
    })?;
    Ok(KmsOutput {
        key_id: string_field(fields.key_id, "KeyId")?,
        encryption_algorithm: string_field(fields.encryption_algorithm, "EncryptionAlgorithm")?,
        ciphertext_blob: base64_field(fields.ciphertext_blob, "CiphertextBlob")?,
        ciphertext_for_recipient: base64_field(
            fields.ciphertext_for_recipient,
            "CiphertextForRecipient",
        )?,
        public_key: base64_field(fields.public_key, "PublicKey")?,
        private_key_ciphertext_blob: base64_field(
            fields.private_key_ciphertext_blob,
            "PrivateKeyCiphertextBlob",
        )?,
        key_pair_spec: string_field(fields.key_pair_spec, "KeyPairSpec")?,
        key_agreement_algorithm: string_field(
            fields.key_agreement_algorithm,
            "KeyAgreementAlgorithm",
        )?,
        key_origin: string_field(fields.key_origin, "KeyOrigin")?,
        key_material_in_plaintext: plaintext_present(fields.plaintext, "Plaintext")?
            | plaintext_present(fields.private_key_plaintext, "PrivateKeyPlaintext")?
            | plaintext_present(fields.shared_secret, "SharedSecret")?,
    })
}

/// The 1-based line and column of byte `at`, counted as serde_json does (bytes since the last
/// newline).
fn position(body: &[u8], at: usize) -> (usize, usize) {
    let before = body.get(..at).unwrap_or(body);
    let line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    (line, at - line_start + 1)
}

fn string_field(
    raw: Option<&RawValue>,
    field: &'static str,
) -> Result<Option<String>, MalformedBody> {
    raw.map(|raw| {
        serde_json::from_str::<String>(raw.get()).map_err(|_| MalformedBody::NotAString { field })
    })
    .transpose()
}

fn base64_field(
    raw: Option<&RawValue>,
    field: &'static str,
) -> Result<Option<Vec<u8>>, MalformedBody> {
    string_field(raw, field)?
        .map(|text| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| MalformedBody::NotBase64 { field })
        })
        .transpose()
}

/// Whether a field of key material in the clear holds a non-empty string, judged on the raw
/// JSON so the value is never decoded or copied.
fn plaintext_present(raw: Option<&RawValue>, field: &'static str) -> Result<bool, MalformedBody> {
    match raw.map(RawValue::get) {
        None | Some("\"\"") => Ok(false),
        Some(text) if text.starts_with('"') => Ok(true),
        Some(_) => Err(MalformedBody::NotAString { field }),
    }
}

/// The fields of an error body; anything unreadable is ignored.
#[derive(Deserialize, Default)]
struct ErrorFields<'a> {
    #[serde(rename = "__type", borrow, default)]
    type_: Option<&'a RawValue>,
    #[serde(borrow, default)]
    code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(rename = "Message", borrow, default)]
    message_capitalised: Option<&'a RawValue>,
}

fn parse_error(status: u16, error_type_header: Option<&str>, body: &[u8]) -> KmsServiceError {
    let fields: ErrorFields<'_> = serde_json::from_slice(body).unwrap_or_default();
    let lenient =
        |raw: Option<&RawValue>| raw.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    let error_type = [lenient(fields.type_), lenient(fields.code)]
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(error_type_header)
        .find_map(bare_error_type);
    let message = lenient(fields.message).or_else(|| lenient(fields.message_capitalised));
    let retryable = is_retryable(status, error_type.as_deref());
    KmsServiceError {
        status,
        error_type,
        message,
        retryable,
    }
}

/// `com.amazonaws.kms#AccessDeniedException` and
/// `AccessDeniedException:http://internal.amazon.com/coral/...` both become
/// `AccessDeniedException`.
fn bare_error_type(raw: &str) -> Option<String> {
    let without_url = raw.split(':').next().unwrap_or(raw);
    let name = without_url.rsplit('#').next().unwrap_or(without_url).trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Error types worth retrying whatever the status: KMS's own throttling and transient errors,
/// plus the throttling codes AWS SDKs retry for any service. `LimitExceededException` is not
/// among them: KMS uses it for resource quotas (keys, grants, aliases); request-rate quotas
/// answer `ThrottlingException`.
const RETRYABLE_TYPES: &[&str] = &[
    "ThrottlingException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestThrottledException",
    "RequestLimitExceeded",
];

fn is_retryable(status: u16, error_type: Option<&str>) -> bool {
    status >= 500 || status == 429 || error_type.is_some_and(|kind| RETRYABLE_TYPES.contains(&kind))
}
