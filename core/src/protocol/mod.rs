//! The enclave protocol: typed commands from the parent, typed replies from the enclave.
//!
//! Wire format: each message is a UTF-8 JSON object framed by [`crate::framing`].
//! Commands carry `"Operation"`; replies carry `"Status"`. Unknown fields are ignored both ways,
//! and a reader accepts compact and spaced JSON alike.

mod command;
mod error;
mod reply;

pub use command::{
    Command, CommandArgs, DataKeySize, Decrypt, EncryptionAlgorithm, EncryptionContext,
    GenerateDataKey, GenerateRandom, KeySpec, MAX_CIPHERTEXT_BYTES, MAX_GRANT_TOKENS,
    MAX_NUMBER_OF_BYTES, Operation, Rejected, SetClient, parse_command,
};
pub use error::{CommandError, ErrorKind};
pub use reply::{Reply, ReplyError, Status};
