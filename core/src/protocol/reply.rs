//! Replies from the enclave: building them (enclave side) and reading them (instance side).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::ErrorKind;
use crate::secret::SecretString;

/// `"Status"` of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The command succeeded.
    Ok,
    /// The command failed; `Message` says why.
    Error,
}

/// One reply. `Message` may carry a plaintext (base64), so it is a [`SecretString`]; the
/// serialised bytes come back in a zeroizing buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    /// `Status`.
    pub status: Status,
    /// `Message`: the base64 plaintext after a success, the error text after a failure.
    pub message: Option<SecretString>,
    /// `KeyId` (extension).
    pub key_id: Option<String>,
    /// `EncryptionAlgorithm` (extension).
    pub encryption_algorithm: Option<String>,
    /// `CiphertextBlob`, base64 (extension, GenerateDataKey).
    pub ciphertext_blob: Option<String>,
    /// `PublicKey`, base64 DER SubjectPublicKeyInfo (extension, GenerateDataKeyPair).
    pub public_key: Option<String>,
    /// `PrivateKeyCiphertextBlob`, base64 (extension, GenerateDataKeyPair).
    pub private_key_ciphertext_blob: Option<String>,
    /// `KeyPairSpec` (extension, GenerateDataKeyPair).
    pub key_pair_spec: Option<String>,
    /// `KeyAgreementAlgorithm` (extension, DeriveSharedSecret).
    pub key_agreement_algorithm: Option<String>,
    /// `KeyOrigin` (extension, DeriveSharedSecret).
    pub key_origin: Option<String>,
    /// `ErrorKind` (extension, errors only).
    pub error_kind: Option<ErrorKind>,
    /// `KmsErrorType` (extension, KMS errors only).
    pub kms_error_type: Option<String>,
    /// `KmsStatus` (extension, KMS errors only).
    pub kms_status: Option<u16>,
    /// `RequestId` echoed from the command (extension).
    pub request_id: Option<String>,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An error's message is built by the enclave from non-secret parts; a success's
        // message is a plaintext.
        let message = match (self.status, &self.message) {
            (Status::Error, Some(text)) => Some(text.expose()),
            (Status::Ok, Some(_)) => Some("[redacted]"),
            (_, None) => None,
        };
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("message", &message)
            .field("key_id", &self.key_id)
            .field("encryption_algorithm", &self.encryption_algorithm)
            .field("ciphertext_blob", &self.ciphertext_blob)
            .field("public_key", &self.public_key)
            .field(
                "private_key_ciphertext_blob",
                &self.private_key_ciphertext_blob,
            )
            .field("key_pair_spec", &self.key_pair_spec)
            .field("key_agreement_algorithm", &self.key_agreement_algorithm)
            .field("key_origin", &self.key_origin)
            .field("error_kind", &self.error_kind)
            .field("kms_error_type", &self.kms_error_type)
            .field("kms_status", &self.kms_status)
            .field("request_id", &self.request_id)
            .finish()
    }
}

impl Reply {
    /// A success with no message (e.g. after `SetClient`).
    pub fn ok() -> Self {
        Self::with_status(Status::Ok, None)
    }

    /// A success carrying a (secret) message.
    pub fn ok_with(message: SecretString) -> Self {
        Self::with_status(Status::Ok, Some(message))
    }

    /// An error with its message and kind.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        let mut reply = Self::with_status(Status::Error, Some(SecretString::new(message.into())));
        reply.error_kind = Some(kind);
        reply
    }

    fn with_status(status: Status, message: Option<SecretString>) -> Self {
        Self {
            status,
            message,
            key_id: None,
            encryption_algorithm: None,
            ciphertext_blob: None,
            public_key: None,
            private_key_ciphertext_blob: None,
            key_pair_spec: None,
            key_agreement_algorithm: None,
            key_origin: None,
            error_kind: None,
            kms_error_type: None,
            kms_status: None,
            request_id: None,
        }
    }

    /// The error text of an error reply (never the secret message of a success).
    pub fn error_message(&self) -> Option<&str> {
        match self.status {
            Status::Error => self.message.as_ref().map(SecretString::expose),
            Status::Ok => None,
        }
    }

    /// Serialises the reply as compact JSON (without the frame terminator).
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let wire = WireReply {
            status: self.status,
            message: borrowed(self.message.as_ref().map(SecretString::expose)),
            key_id: borrowed(self.key_id.as_deref()),
            encryption_algorithm: borrowed(self.encryption_algorithm.as_deref()),
            ciphertext_blob: borrowed(self.ciphertext_blob.as_deref()),
            public_key: borrowed(self.public_key.as_deref()),
            private_key_ciphertext_blob: borrowed(self.private_key_ciphertext_blob.as_deref()),
            key_pair_spec: borrowed(self.key_pair_spec.as_deref()),
            key_agreement_algorithm: borrowed(self.key_agreement_algorithm.as_deref()),
            key_origin: borrowed(self.key_origin.as_deref()),
            error_kind: borrowed(self.error_kind.map(ErrorKind::as_str)),
            kms_error_type: borrowed(self.kms_error_type.as_deref()),
            kms_status: self.kms_status,
            request_id: borrowed(self.request_id.as_deref()),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(self.estimated_len()));
        // Writing plain structs of strings and integers into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, &wire).is_err() {
            out.clear();
            out.extend_from_slice(br#"{"Status":"Error","ErrorKind":"Internal"}"#);
        }
        out
    }

    /// An upper bound of the JSON's length, so that the zeroizing buffer never grows (growing
    /// would free an unwiped copy of the plaintext): every field name (about 280 bytes with their
    /// quotes and separators), the status and the numbers fit in 512 bytes, and escaping at most multiplies a string by six (`\u0000`).
    fn estimated_len(&self) -> usize {
        let strings = [
            self.message.as_ref().map(SecretString::expose),
            self.key_id.as_deref(),
            self.encryption_algorithm.as_deref(),
            self.ciphertext_blob.as_deref(),
            self.public_key.as_deref(),
            self.private_key_ciphertext_blob.as_deref(),
            self.key_pair_spec.as_deref(),
            self.key_agreement_algorithm.as_deref(),
            self.key_origin.as_deref(),
            self.kms_error_type.as_deref(),
            self.request_id.as_deref(),
        ];
        512 + strings
            .into_iter()
            .flatten()
            .map(|s| 6 * s.len())
            .sum::<usize>()
    }

    /// Parses a reply as an enclave (ours or upstream) sends it; compact or spaced JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReplyError> {
        // JSON is UTF-8 (RFC 8259 §8.1); serde_json would skip unknown fields' strings
        // unchecked.
        let bytes = std::str::from_utf8(bytes).map_err(|_| ReplyError::NotJson)?;
        let wire: WireReply<'_> = serde_json::from_str(bytes).map_err(|_| {
            // serde_json reports some wrong types as syntax errors (an enum met with a number
            // or an array, a struct met with a scalar): tell them apart by the syntax alone.
            match serde_json::from_str::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ReplyError::Shape,
                Err(_) => ReplyError::NotJson,
            }
        })?;
        let owned = |text: Option<Cow<'_, str>>| text.map(Cow::into_owned);
        Ok(Self {
            status: wire.status,
            message: owned(wire.message).map(SecretString::new),
            key_id: owned(wire.key_id),
            encryption_algorithm: owned(wire.encryption_algorithm),
            ciphertext_blob: owned(wire.ciphertext_blob),
            public_key: owned(wire.public_key),
            private_key_ciphertext_blob: owned(wire.private_key_ciphertext_blob),
            key_pair_spec: owned(wire.key_pair_spec),
            key_agreement_algorithm: owned(wire.key_agreement_algorithm),
            key_origin: owned(wire.key_origin),
            error_kind: wire.error_kind.and_then(|kind| kind.parse().ok()),
            kms_error_type: owned(wire.kms_error_type),
            kms_status: wire.kms_status,
            request_id: owned(wire.request_id),
        })
    }
}

/// A reply that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// Not JSON.
    NotJson,
    /// JSON, but not a reply object (no `Status`, wrong types).
    Shape,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotJson => "the enclave's reply is not JSON",
            Self::Shape => "the enclave's reply is not a reply object with a Status",
        })
    }
}

impl std::error::Error for ReplyError {}

fn borrowed(text: Option<&str>) -> Option<Cow<'_, str>> {
    text.map(Cow::Borrowed)
}

/// A reply as it goes on the wire, both ways: [`Reply::to_json`] writes it and
/// [`Reply::parse`] reads it, so each field's name is spelled once. Strings borrow from the
/// input where they can.
#[derive(Serialize, Deserialize)]
struct WireReply<'a> {
    #[serde(rename = "Status")]
    status: Status,
    #[serde(
        rename = "Message",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    message: Option<Cow<'a, str>>,
    #[serde(
        rename = "KeyId",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    key_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "EncryptionAlgorithm",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    encryption_algorithm: Option<Cow<'a, str>>,
    #[serde(
        rename = "CiphertextBlob",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    ciphertext_blob: Option<Cow<'a, str>>,
    #[serde(
        rename = "PublicKey",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    public_key: Option<Cow<'a, str>>,
    #[serde(
        rename = "PrivateKeyCiphertextBlob",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    private_key_ciphertext_blob: Option<Cow<'a, str>>,
    #[serde(
        rename = "KeyPairSpec",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    key_pair_spec: Option<Cow<'a, str>>,
    #[serde(
        rename = "KeyAgreementAlgorithm",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    key_agreement_algorithm: Option<Cow<'a, str>>,
    #[serde(
        rename = "KeyOrigin",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    key_origin: Option<Cow<'a, str>>,
    #[serde(
        rename = "ErrorKind",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    error_kind: Option<Cow<'a, str>>,
    #[serde(
        rename = "KmsErrorType",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    kms_error_type: Option<Cow<'a, str>>,
    #[serde(rename = "KmsStatus", default, skip_serializing_if = "Option::is_none")]
    kms_status: Option<u16>,
    #[serde(
        rename = "RequestId",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    request_id: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_replies_are_told_apart() {
        for (bytes, expected) in [
            (&b"nope"[..], ReplyError::NotJson),
            (b"{\"Status\":\"Ok\"", ReplyError::NotJson),
            (b"{\"Status\":\"Ok\"} trailing", ReplyError::NotJson),
            (b"\xff", ReplyError::NotJson),
            // Invalid UTF-8 in a field the reply ignores is still not JSON.
            (
                b"{\"Status\":\"Ok\",\"Other\":\"\xb7\"}",
                ReplyError::NotJson,
            ),
            (b"[1,2,3]", ReplyError::Shape),
            (b"{}", ReplyError::Shape),
            (b"\"Ok\"", ReplyError::Shape),
            (b"{\"Status\":1}", ReplyError::Shape),
            (b"{\"Status\":\"ok\"}", ReplyError::Shape),
            (b"{\"Status\":\"Ok\",\"Message\":5}", ReplyError::Shape),
        ] {
            assert_eq!(
                Reply::parse(bytes),
                Err(expected),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn to_json_never_grows_its_zeroizing_buffer() {
        // Growing would free an unwiped copy of the plaintext: the buffer must keep the
        // capacity it was created with, even for the longest, most escaped fields.
        let mut ok = Reply::ok_with(SecretString::new("QUJD".repeat(342)));
        ok.key_id = Some("k".repeat(2048));
        ok.encryption_algorithm = Some("RSAES_OAEP_SHA_256".into());
        ok.ciphertext_blob = Some("Q".repeat(8192));
        ok.public_key = Some("Q".repeat(2000));
        ok.private_key_ciphertext_blob = Some("Q".repeat(8192));
        ok.key_pair_spec = Some("ECC_NIST_P521".into());
        ok.request_id = Some("\u{1}".repeat(256));
        let mut error = Reply::error(ErrorKind::Kms, "\"quoted\" \u{7f}".repeat(100));
        error.kms_error_type = Some("ThrottlingException".into());
        error.kms_status = Some(400);
        error.request_id = Some("\\".repeat(256));
        for reply in [ok, error, Reply::ok()] {
            let json = reply.to_json();
            assert_eq!(json.capacity(), reply.estimated_len(), "{reply:?}");
            assert_eq!(Reply::parse(&json).expect("round trip"), reply);
        }
    }
}
