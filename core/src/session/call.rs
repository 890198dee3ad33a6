//! The session's side of its KMS calls: which command a [`Call`] answers, and the reply its
//! result becomes.

use std::fmt;
use std::time::Instant;

use base64::Engine as _;

use crate::kms::call::{Call, CallError, CallOutput};
use crate::protocol::{Operation, Reply};

/// Identifies one KMS call of a session in outputs and inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub(super) u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call#{}", self.0)
    }
}

/// The KMS call a session is working on, with the command it answers.
#[derive(Debug)]
pub(super) struct SessionCall {
    pub(super) id: CallId,
    pub(super) operation: Operation,
    pub(super) call: Call,
    pub(super) request_id: Option<String>,
    /// When the command arrived.
    pub(super) received: Instant,
}

/// The reply to a command whose call ended with `result`.
///
/// An error reads `<what failed>: <why>`. A `CiphertextForRecipient` that does not open gets
/// one fixed text whatever went wrong ([`CallError::Unwrap`]'s): telling a bad padding from a
/// wrong key id or a truncated envelope would hand a padding oracle to whoever can forge KMS's
/// answers (a parent holding a mis-issued certificate).
pub(super) fn reply(operation: Operation, result: Result<CallOutput, CallError>) -> Reply {
    let output = match result {
        Ok(output) => output,
        Err(error) => {
            let message = format!("{}: {error}", operation.failure_text());
            let mut reply = Reply::error(error.kind(), message);
            if let CallError::Kms(error) = &error {
                reply.kms_error_type = error.error_type.clone();
                reply.kms_status = Some(error.status);
            }
            return reply;
        }
    };
    let b64 = |bytes: Option<Vec<u8>>| {
        bytes.map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    let mut reply = Reply::ok_with(output.secret.to_base64());
    reply.key_id = output.key_id;
    match operation {
        Operation::Decrypt => reply.encryption_algorithm = output.encryption_algorithm,
        Operation::GenerateDataKey => reply.ciphertext_blob = b64(output.ciphertext_blob),
        Operation::GenerateDataKeyPair => {
            reply.public_key = b64(output.public_key);
            reply.private_key_ciphertext_blob = b64(output.private_key_ciphertext_blob);
            reply.key_pair_spec = output.key_pair_spec;
        }
        Operation::DeriveSharedSecret => {
            reply.key_agreement_algorithm = output.key_agreement_algorithm;
            reply.key_origin = output.key_origin;
        }
        Operation::GenerateRandom | Operation::SetClient => {}
    }
    reply
}
