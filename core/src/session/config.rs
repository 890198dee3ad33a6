//! Settings of an enclave session, shared by all connections of a server.

use std::time::Duration;

use crate::framing::DEFAULT_MAX_MESSAGE_BYTES;
use crate::http::HttpLimits;
pub use crate::kms::call::Backoff;
use crate::kms::call::CallConfig;

/// Settings of every [`super::EnclaveSession`] of one server.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The enclave's region (`--region`, `REGION`): with a client's `AwsRegion` they must be
    /// equal, either alone is used, neither means `us-east-1`.
    pub region: Option<String>,
    /// KMS host name overriding the region's (`--endpoint`, `ENDPOINT`).
    pub endpoint: Option<String>,
    /// Largest message from the client, terminator included.
    pub max_message_bytes: usize,
    /// What one connection may hold, in bytes, besides the message it is receiving: half for
    /// parsed commands waiting for their turn, half for replies the client has not taken yet.
    /// At either half the session stops reading until the client takes its replies
    /// (backpressure); a command that alone needs more than a quarter is refused. See
    /// [`SessionConfig::connection_bound`].
    pub max_connection_bytes: usize,
    /// Close a connection with nothing in flight after this long without client bytes.
    pub idle_timeout: Option<Duration>,
    /// A message must be complete this long after its first byte arrived; otherwise the
    /// session stops reading, answers the commands before it and closes. Unlike the idle
    /// timeout, which every byte resets, this bounds a client that trickles bytes.
    pub message_timeout: Option<Duration>,
    /// Deadline of one KMS call, every attempt and backoff included.
    pub kms_call_timeout: Duration,
    /// Attempts per KMS call (1 = no retry).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Caps on KMS responses.
    pub http_limits: HttpLimits,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_connection_bytes: DEFAULT_MAX_CONNECTION_BYTES,
            idle_timeout: Some(Duration::from_secs(300)),
            message_timeout: Some(Duration::from_secs(30)),
            kms_call_timeout: Duration::from_secs(10),
            max_attempts: 3,
            backoff: Backoff::default(),
            http_limits: HttpLimits::default(),
        }
    }
}

/// Default [`SessionConfig::max_connection_bytes`]: 128 KiB. With the default message cap and
/// connection limit, every connection at its budget together stay within a quarter of the
/// README's 512 MiB enclave.
pub const DEFAULT_MAX_CONNECTION_BYTES: usize = 128 * 1024;

/// The smallest [`SessionConfig::max_connection_bytes`]: a quarter of it must hold a command
/// and half of it a reply.
pub const MIN_CONNECTION_BYTES: usize = 64 * 1024;

/// The longest reply a session writes: a 4096-byte plaintext or data key in base64, a KMS key
/// ARN, a ciphertext blob and a request id fit with room to spare.
pub const MAX_REPLY_BYTES: usize = 16 * 1024;

/// Replies are made in batches of about this many bytes: a session runs no further command
/// while this much waits to be written. A client pipelining cheap commands (or garbage) then
/// costs one batch of work per write, and its driver yields to other connections after a full
/// batch ([`crate::session::EnclaveSession::poll_transmit`]), so a hundred such clients cannot
/// starve an honest one of the CPU.
pub const REPLY_BATCH_BYTES: usize = 16 * 1024;

/// The most a session reads from its client at once.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

impl SessionConfig {
    /// How each KMS call of a session retries and how long it may take.
    pub fn call_config(&self) -> CallConfig {
        CallConfig {
            timeout: self.kms_call_timeout,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            http_limits: self.http_limits,
        }
    }

    /// The most a parsed command may hold ([`crate::protocol::Command::retained_bytes`]).
    pub fn max_command_bytes(&self) -> usize {
        self.max_connection_bytes / 4
    }

    /// The most a session holds for its client, in bytes: the message being received (up to
    /// the message cap, plus one read) and the budget. A driver adds its own fixed buffers.
    pub fn connection_bound(&self) -> usize {
        self.max_message_bytes + READ_CHUNK_BYTES + self.max_connection_bytes
    }
}
