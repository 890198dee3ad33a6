//! [`InstanceClient`]: the parent-instance side of the enclave protocol.
//!
//! # Driving contract
//!
//! The client does no IO. Its driver (`kmstool-runtime-smol`) connects to the enclave, then:
//!
//! 1. Writes every buffer [`InstanceClient::poll_transmit`] returns, until it returns `None`.
//! 2. Reads from the connection and feeds the bytes to [`InstanceClient::handle_bytes`] with
//!    the time, or
//!    calls [`InstanceClient::handle_eof`] when the enclave closes the stream, or
//!    [`InstanceClient::handle_timeout`] once [`InstanceClient::poll_timeout`] has passed.
//! 3. Repeats until [`InstanceClient::poll_result`] returns the outcome.
//!
//! The client sends `SetClient`, waits for its `Ok`, then sends the operation and reads exactly
//! one reply: a stray extra reply (upstream's enclave sends `{"Status":"Error"}` after every
//! Decrypt) is never read.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use kmstool_core::instance::InstanceClient;
//! use kmstool_core::protocol::CommandArgs;
//! use kmstool_core::secret::Credentials;
//!
//! let credentials = Credentials::new("AKIDEXAMPLE", "secret", None);
//! let request = CommandArgs::decrypt(b"ciphertext".to_vec());
//! let start = Instant::now();
//! let mut client = InstanceClient::new(&credentials, None, request, start, Duration::from_secs(30));
//! let set_client = client.poll_transmit().expect("SetClient first");
//! assert!(set_client.ends_with(b"\0"));
//! assert!(client.poll_transmit().is_none(), "waits for the SetClient reply");
//! client.handle_bytes(start, b"{ \"Status\": \"Ok\" }\0");
//! let decrypt = client.poll_transmit().expect("then the Decrypt");
//! assert!(decrypt.starts_with(b"{\"Operation\":\"Decrypt\""));
//! client.handle_bytes(start, b"{\"Status\":\"Ok\",\"Message\":\"SGVsbG8sIEtNUyE=\"}\0{ \"Status\": \"Error\" }\0");
//! let result = client.poll_result().expect("done").expect("success");
//! assert_eq!(result.plaintext.expose(), b"Hello, KMS!");
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::framing::{self, FrameDecoder};
use crate::protocol::{CommandArgs, ErrorKind, Reply, SetClient, Status};
use crate::secret::{Credentials, SecretBytes};

/// `SetClient` as JSON (without terminator); holds the secret key, hence the zeroizing buffer.
pub fn set_client_json(credentials: &Credentials, region: Option<&str>) -> Zeroizing<Vec<u8>> {
    CommandArgs::SetClient(SetClient {
        credentials: credentials.clone(),
        region: region.map(str::to_owned),
    })
    .to_json(None)
}

/// A successful operation.
#[derive(Debug)]
pub struct InstanceResult {
    /// The plaintext, data key or random bytes.
    pub plaintext: SecretBytes,
    /// `KeyId` of the reply.
    pub key_id: Option<String>,
    /// `EncryptionAlgorithm` of the reply.
    pub encryption_algorithm: Option<String>,
    /// The decoded `CiphertextBlob` (GenerateDataKey).
    pub ciphertext_blob: Option<Vec<u8>>,
    /// The decoded `PublicKey`: DER SubjectPublicKeyInfo (GenerateDataKeyPair).
    pub public_key: Option<Vec<u8>>,
    /// The decoded `PrivateKeyCiphertextBlob` (GenerateDataKeyPair).
    pub private_key_ciphertext_blob: Option<Vec<u8>>,
    /// `KeyPairSpec` (GenerateDataKeyPair).
    pub key_pair_spec: Option<String>,
    /// `KeyAgreementAlgorithm` (DeriveSharedSecret).
    pub key_agreement_algorithm: Option<String>,
    /// `KeyOrigin` (DeriveSharedSecret).
    pub key_origin: Option<String>,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceError {
    /// The enclave answered `SetClient` with an error.
    SetClient {
        /// The enclave's message.
        message: String,
        /// Its `ErrorKind`, if it sent one.
        kind: Option<ErrorKind>,
    },
    /// The enclave answered the operation with an error.
    Operation {
        /// The enclave's message.
        message: String,
        /// Its `ErrorKind`, if it sent one.
        kind: Option<ErrorKind>,
        /// `KmsErrorType`, for KMS errors.
        kms_error_type: Option<String>,
        /// `KmsStatus`, for KMS errors.
        kms_status: Option<u16>,
    },
    /// A reply that is not a reply, or an `Ok` without the expected fields.
    BadReply(String),
    /// The enclave closed the connection before replying.
    Closed,
    /// No reply before the deadline.
    TimedOut(Duration),
}

impl fmt::Display for InstanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SetClient { message, .. } => write!(f, "SetClient failed: {message}"),
            Self::Operation { message, .. } => f.write_str(message),
            Self::BadReply(detail) => write!(f, "bad reply from the enclave: {detail}"),
            Self::Closed => f.write_str("the enclave closed the connection without replying"),
            Self::TimedOut(after) => {
                write!(f, "no reply from the enclave within {} s", after.as_secs())
            }
        }
    }
}

impl std::error::Error for InstanceError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    SendSetClient,
    AwaitSetClient,
    SendOperation,
    AwaitOperation,
    Done,
}

/// The parent side of one enclave exchange. See the [module docs](self).
#[derive(Debug)]
pub struct InstanceClient {
    phase: Phase,
    set_client: Zeroizing<Vec<u8>>,
    request: CommandArgs,
    decoder: FrameDecoder,
    deadline: Instant,
    timeout: Duration,
    result: Option<Result<InstanceResult, InstanceError>>,
}

/// Largest reply the client accepts (a reply to a 4096-byte ciphertext is well below).
const MAX_REPLY_BYTES: usize = 1 << 20;

impl InstanceClient {
    /// A client that will send `request` (an operation other than `SetClient`) with
    /// `credentials`, giving up after `timeout`.
    pub fn new(
        credentials: &Credentials,
        region: Option<&str>,
        request: CommandArgs,
        now: Instant,
        timeout: Duration,
    ) -> Self {
        Self {
            phase: Phase::SendSetClient,
            set_client: set_client_json(credentials, region),
            request,
            decoder: FrameDecoder::new(MAX_REPLY_BYTES),
            deadline: now + timeout,
            timeout,
            result: None,
        }
    }

    /// The next bytes to write to the enclave.
    pub fn poll_transmit(&mut self) -> Option<Zeroizing<Vec<u8>>> {
        let json = match self.phase {
            Phase::SendSetClient => {
                self.phase = Phase::AwaitSetClient;
                std::mem::take(&mut self.set_client)
            }
            Phase::SendOperation => {
                self.phase = Phase::AwaitOperation;
                self.request.to_json(None)
            }
            _ => return None,
        };
        let mut frame = Zeroizing::new(Vec::with_capacity(json.len() + 1));
        framing::encode(&json, &mut frame);
        Some(frame)
    }

    /// Bytes read from the enclave at `now` (a deadline already passed wins over them).
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.handle_timeout(now);
        if self.phase == Phase::Done {
            return;
        }
        self.decoder.push(bytes);
        while matches!(self.phase, Phase::AwaitSetClient | Phase::AwaitOperation) {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    let reply = Reply::parse(frame);
                    self.on_reply(reply);
                }
                Ok(None) => break,
                Err(e) => {
                    let error = InstanceError::BadReply(e.to_string());
                    self.finish(Err(error));
                }
            }
        }
    }

    /// The enclave closed the connection at `now`.
    pub fn handle_eof(&mut self, now: Instant) {
        self.handle_timeout(now);
        if self.phase != Phase::Done {
            self.finish(Err(InstanceError::Closed));
        }
    }

    /// When to call [`InstanceClient::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.phase != Phase::Done).then_some(self.deadline)
    }

    /// The deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Done && now >= self.deadline {
            self.finish(Err(InstanceError::TimedOut(self.timeout)));
        }
    }

    /// The outcome, once there is one (returned once).
    pub fn poll_result(&mut self) -> Option<Result<InstanceResult, InstanceError>> {
        self.result.take()
    }

    fn finish(&mut self, result: Result<InstanceResult, InstanceError>) {
        self.phase = Phase::Done;
        self.result = Some(result);
    }

    fn on_reply(&mut self, reply: Result<Reply, crate::protocol::ReplyError>) {
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => return self.finish(Err(InstanceError::BadReply(e.to_string()))),
        };
        match (self.phase, reply.status) {
            (Phase::AwaitSetClient, Status::Ok) => self.phase = Phase::SendOperation,
            (Phase::AwaitSetClient, Status::Error) => self.finish(Err(InstanceError::SetClient {
                message: error_text(&reply),
                kind: reply.error_kind,
            })),
            (Phase::AwaitOperation, Status::Error) => self.finish(Err(InstanceError::Operation {
                message: error_text(&reply),
                kind: reply.error_kind,
                kms_error_type: reply.kms_error_type.clone(),
                kms_status: reply.kms_status,
            })),
            (Phase::AwaitOperation, Status::Ok) => {
                let result = success(reply);
                self.finish(result);
            }
            _ => {}
        }
    }
}

fn error_text(reply: &Reply) -> String {
    reply.error_message().map_or_else(
        || "the enclave answered Error without a message".to_owned(),
        str::to_owned,
    )
}

fn success(reply: Reply) -> Result<InstanceResult, InstanceError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let message = reply
        .message
        .as_ref()
        .ok_or_else(|| InstanceError::BadReply("Ok without Message".into()))?;
    let plaintext = b64
        .decode(message.expose())
        .map(|bytes| SecretBytes::from(Zeroizing::new(bytes)))
        .map_err(|_| InstanceError::BadReply("Message is not base64".into()))?;
    let decoded = |field: Option<&str>, name: &str| {
        field
            .map(|text| b64.decode(text))
            .transpose()
            .map_err(|_| InstanceError::BadReply(format!("{name} is not base64")))
    };
    Ok(InstanceResult {
        plaintext,
        ciphertext_blob: decoded(reply.ciphertext_blob.as_deref(), "CiphertextBlob")?,
        public_key: decoded(reply.public_key.as_deref(), "PublicKey")?,
        private_key_ciphertext_blob: decoded(
            reply.private_key_ciphertext_blob.as_deref(),
            "PrivateKeyCiphertextBlob",
        )?,
        key_id: reply.key_id,
        encryption_algorithm: reply.encryption_algorithm,
        key_pair_spec: reply.key_pair_spec,
        key_agreement_algorithm: reply.key_agreement_algorithm,
        key_origin: reply.key_origin,
    })
}
