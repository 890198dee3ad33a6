//! KMS errors in the shape real KMS sends them: an HTTP status, a JSON body
//! `{"__type":"<Type>","message":"<text>"}` and the header `x-amzn-ErrorType: <Type>`.
//!
//! Types, statuses and texts follow the AWS KMS API Reference (per-operation "Errors" sections
//! and "Common Errors": `AccessDeniedException` 400, `IncompleteSignature` 400,
//! `ThrottlingException` 400, `InternalFailure` 500, `MissingAuthenticationToken`) and what KMS
//! is seen answering in the wild (the SigV4 texts below are KMS's own words, quoted in many
//! public bug reports: "Signature expired: … is now earlier than … (… - 5 min.)", "The security
//! token included in the request is invalid.", "Credential should be scoped to a valid region,
//! not '…'. ").

use std::fmt;

/// Which JSON key carries the text: real KMS writes `message` for most types but `Message`
/// (capitalised) for `AccessDeniedException`, e.g.
/// `{"__type":"AccessDeniedException","Message":"User: arn:aws:sts::… is not authorized to
/// perform: kms:Decrypt on resource: …"}` (seen in aws-nitro-enclaves-sdk-c issue reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKey {
    Lower,
    Capital,
    /// No text at all: KMS answers a bad ciphertext with a bare `{"__type":…}`
    /// (SDKs print it as "InvalidCiphertextException: null").
    Absent,
}

/// One error answer of the emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsError {
    /// HTTP status (400 for client errors, 500 for `KMSInternalException`).
    pub status: u16,
    /// The `__type`, e.g. `InvalidCiphertextException`.
    pub error_type: String,
    /// The text, when KMS sends one.
    pub message: Option<String>,
    key: MessageKey,
}

impl KmsError {
    fn new(status: u16, error_type: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type: error_type.to_owned(),
            message: Some(message.into()),
            key: MessageKey::Lower,
        }
    }

    /// `AccessDeniedException` (400), with KMS's capitalised `Message`.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self {
            key: MessageKey::Capital,
            ..Self::new(400, "AccessDeniedException", message)
        }
    }

    /// `InvalidCiphertextException` (400), with no text, as KMS sends it.
    pub fn invalid_ciphertext() -> Self {
        Self {
            status: 400,
            error_type: "InvalidCiphertextException".to_owned(),
            message: None,
            key: MessageKey::Absent,
        }
    }

    /// `ValidationException` (400).
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationException", message)
    }

    /// `ValidationException` in the Coral framework's wording for one failed constraint.
    pub fn constraint(value: &str, member: &str, constraint: &str) -> Self {
        Self::validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
             constraint: {constraint}"
        ))
    }

    /// `SerializationException` (400): the body is not the JSON the operation takes.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(400, "SerializationException", message)
    }

    /// `UnknownOperationException` (400) for a missing or unknown `X-Amz-Target`; the Coral
    /// framework names it with its namespace and no text.
    pub fn unknown_operation() -> Self {
        Self {
            status: 400,
            error_type: "com.amazon.coral.service#UnknownOperationException".to_owned(),
            message: None,
            key: MessageKey::Absent,
        }
    }

    /// `NotFoundException` (400).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(400, "NotFoundException", message)
    }

    /// `AlreadyExistsException` (400).
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(400, "AlreadyExistsException", message)
    }

    /// `IncorrectKeyException` (400): `KeyId` does not name the key of the ciphertext.
    pub fn incorrect_key() -> Self {
        Self::new(
            400,
            "IncorrectKeyException",
            "The key ID in the request does not identify a CMK that can perform this operation.",
        )
    }

    /// `InvalidKeyUsageException` (400).
    pub fn invalid_key_usage(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidKeyUsageException", message)
    }

    /// `UnsupportedOperationException` (400): the key cannot do this (API Reference, e.g.
    /// GetPublicKey of a symmetric key).
    pub fn unsupported_operation(message: impl Into<String>) -> Self {
        Self::new(400, "UnsupportedOperationException", message)
    }

    /// `DryRunOperationException` (400): the request would have succeeded, but `DryRun` was
    /// set (API Reference, DryRunOperationException: "The request was rejected because the
    /// DryRun parameter was specified.").
    pub fn dry_run() -> Self {
        Self::new(
            400,
            "DryRunOperationException",
            "The request would have succeeded, but the DryRun option is set.",
        )
    }

    /// `MissingAuthenticationTokenException` (400): no `Authorization` at all.
    pub fn missing_authentication() -> Self {
        Self::new(
            400,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )
    }

    /// `IncompleteSignatureException` (400): an `Authorization` that lacks a part.
    pub fn incomplete_signature(message: impl Into<String>) -> Self {
        Self::new(400, "IncompleteSignatureException", message)
    }

    /// `InvalidSignatureException` (400): bad signature, scope or time.
    pub fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidSignatureException", message)
    }

    /// `UnrecognizedClientException` (400): unknown access key or wrong session token.
    pub fn unrecognized_client() -> Self {
        Self::new(
            400,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    }

    /// `ExpiredTokenException` (400): temporary credentials past their expiration.
    pub fn expired_token() -> Self {
        Self::new(
            400,
            "ExpiredTokenException",
            "The security token included in the request is expired",
        )
    }

    /// `ThrottlingException` (400, retryable).
    pub fn throttling() -> Self {
        Self::new(400, "ThrottlingException", "Rate exceeded")
    }

    /// `KMSInternalException` (500, retryable).
    pub fn internal() -> Self {
        Self::new(
            500,
            "KMSInternalException",
            "The request was rejected because an internal exception occurred. The request can \
             be retried.",
        )
    }

    /// The JSON body, `__type` first as KMS writes it.
    pub fn body(&self) -> Vec<u8> {
        let quote = |text: &str| serde_json::to_string(text).unwrap_or_default();
        let mut body = format!("{{\"__type\":{}", quote(&self.error_type));
        if let Some(message) = &self.message {
            let key = match self.key {
                MessageKey::Lower | MessageKey::Absent => "message",
                MessageKey::Capital => "Message",
            };
            body.push_str(&format!(",\"{key}\":{}", quote(message)));
        }
        body.push('}');
        body.into_bytes()
    }

    /// The value of `x-amzn-ErrorType`: the type without its namespace.
    pub fn header_type(&self) -> &str {
        self.error_type
            .rsplit_once('#')
            .map_or(self.error_type.as_str(), |(_, name)| name)
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.error_type, self.status)?;
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl std::error::Error for KmsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_kms_shapes() {
        assert_eq!(
            KmsError::throttling().body(),
            br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#
        );
        assert_eq!(
            KmsError::access_denied("no").body(),
            br#"{"__type":"AccessDeniedException","Message":"no"}"#
        );
        assert_eq!(
            KmsError::invalid_ciphertext().body(),
            br#"{"__type":"InvalidCiphertextException"}"#
        );
        let unknown = KmsError::unknown_operation();
        assert_eq!(unknown.header_type(), "UnknownOperationException");
        assert_eq!(KmsError::internal().status, 500);
    }
}
