//! Errors the enclave reports to its client, with upstream's texts.

use std::fmt;

wire_enum! {
    /// Machine-readable class of an error reply (`"ErrorKind"`, our extension).
    pub enum ErrorKind {
        /// The command was malformed or had invalid parameters.
        BadRequest = "BadRequest",
        /// The command needs a client and no `SetClient` has succeeded on this connection.
        NoClient = "NoClient",
        /// KMS answered with an error (`KmsErrorType` and `KmsStatus` say which).
        Kms = "Kms",
        /// KMS could not be reached or the connection failed (proxy down, TLS, reset).
        Transport = "Transport",
        /// KMS did not answer within the call's deadline.
        Timeout = "Timeout",
        /// The NSM could not produce an attestation document.
        Attestation = "Attestation",
        /// A bug or an unexpected condition inside the enclave.
        Internal = "Internal",
    }
}

/// Why a command was refused before any KMS call. `Display` gives the reply's `Message`: the
/// upstream text, then `": "` and detail where there is any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The message exceeded the cap; the connection closes after this reply.
    MessageTooLarge,
    /// The message parsed into more than a connection may hold for one command (many tiny
    /// `EncryptionContext` keys, say). Only this command is refused.
    CommandTooLarge {
        /// About how many bytes the parsed command needs.
        bytes: usize,
        /// The most one command may hold.
        limit: usize,
    },
    /// Not UTF-8 JSON, or trailing bytes after the object.
    NotJson(String),
    /// Valid JSON but not an object.
    NotAnObject,
    /// No `Operation` field.
    MissingOperation,
    /// `Operation` is not a string.
    OperationNotString,
    /// `Operation` names no known operation.
    UnknownOperation,
    /// `SetClient` without string `AwsAccessKeyId` / `AwsSecretAccessKey`, or a non-string token.
    BadCredentials(String),
    /// The region is not a string, not a region name, or conflicts with the enclave's.
    BadRegion(String),
    /// Credentials that cannot form a valid request (e.g. control characters).
    InvalidClient(String),
    /// A command that needs a client arrived before a successful `SetClient`.
    ClientNotInitialized,
    /// `Decrypt` without `Ciphertext`.
    MissingCiphertext,
    /// `Ciphertext` is not a string of standard padded base64.
    CiphertextNotBase64(String),
    /// A field required by one of our extension operations is missing.
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A `Decrypt` field has a value KMS would refuse (an empty `Ciphertext`, an unknown
    /// `EncryptionAlgorithm`, ...): upstream reports these as a failed decryption.
    DecryptParameter {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A field has an invalid value.
    InvalidValue {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl CommandError {
    /// The upstream text this error's message starts with.
    pub fn upstream_text(&self) -> &'static str {
        match self {
            Self::MessageTooLarge | Self::CommandTooLarge { .. } => "Message size too large.",
            Self::NotJson(_) => "Error reading JSON object",
            Self::NotAnObject | Self::WrongType { .. } | Self::InvalidValue { .. } => {
                "JSON is wrong type"
            }
            Self::MissingOperation | Self::MissingField(_) => "JSON structure incomplete",
            Self::OperationNotString => "Operation is wrong type",
            Self::UnknownOperation => "Operation not recognized",
            Self::BadCredentials(_) => "Could not read credentials",
            Self::BadRegion(_) => "Could not set region correctly, check configuration.",
            Self::InvalidClient(_) => "Could not create new client",
            Self::ClientNotInitialized => "Client not initialized",
            Self::MissingCiphertext => "Message does not contain a Ciphertext",
            Self::CiphertextNotBase64(_) => "Ciphertext not a base64 string",
            Self::DecryptParameter { .. } => "Could not decrypt ciphertext",
        }
    }

    /// The error class reported as `ErrorKind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::ClientNotInitialized => ErrorKind::NoClient,
            _ => ErrorKind::BadRequest,
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.upstream_text())?;
        match self {
            Self::NotJson(detail)
            | Self::BadCredentials(detail)
            | Self::BadRegion(detail)
            | Self::InvalidClient(detail)
            | Self::CiphertextNotBase64(detail)
                if !detail.is_empty() =>
            {
                write!(f, ": {detail}")
            }
            Self::CommandTooLarge { bytes, limit } => write!(
                f,
                ": once parsed it needs about {bytes} bytes, more than the {limit} one command may hold"
            ),
            Self::MissingField(field) => write!(f, ": {field} is required"),
            Self::WrongType { field, expected } => write!(f, ": {field} must be {expected}"),
            Self::InvalidValue { field, reason } | Self::DecryptParameter { field, reason } => {
                write!(f, ": {field} {reason}")
            }
            _ => Ok(()),
        }
    }
}

impl std::error::Error for CommandError {}
