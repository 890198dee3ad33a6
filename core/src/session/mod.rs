//! [`EnclaveSession`]: the enclave's state machine for one client connection.
//!
//! # Driving contract
//!
//! A session does no IO and reads no clock. Its driver (one task per connection in
//! `kmstool-runtime-tokio` or `kmstool-runtime-smol`) owns the client socket, the KMS
//! connections, the NSM and a timer, and runs this loop:
//!
//! 1. Feed exactly one input with a `handle_*` method, passing the current time as [`Now`]:
//!    bytes from the client ([`EnclaveSession::handle_client_bytes`]) or its end of stream
//!    ([`EnclaveSession::handle_client_eof`]), an attestation result
//!    ([`EnclaveSession::handle_attestation`]), bytes / end of stream / failure of a KMS
//!    connection ([`EnclaveSession::handle_kms_bytes`], [`EnclaveSession::handle_kms_eof`],
//!    [`EnclaveSession::handle_kms_failure`]), or an expired timer
//!    ([`EnclaveSession::handle_timeout`]).
//! 2. Drain [`EnclaveSession::poll_output`] until it returns `None`, acting on each
//!    [`Output`] in order: write [`Output::ToClient`] bytes to the client, start an
//!    attestation for [`Output::Attest`], send [`Output::KmsSend`] on a connection to its host
//!    and stream the answer back, return or drop the connection on [`Output::KmsRelease`], log
//!    [`Output::Event`], and after [`Output::Close`] flush and close the client connection.
//! 3. Wait for the next input, or until [`EnclaveSession::poll_timeout`] (then call
//!    `handle_timeout`). Read from the client only while
//!    [`EnclaveSession::wants_client_bytes`] is true.
//!
//! Inputs that name a call the session no longer waits for (a KMS answer after a timeout,
//! say) are ignored, so a driver never needs to cancel work it already started. Nothing the
//! peer or KMS sends can make a session panic.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant, UNIX_EPOCH};
//! use kmstool_core::session::{EnclaveSession, Now, Output, SessionConfig};
//!
//! let start = Instant::now(); // a driver's clock; tests use a virtual one
//! let now = Now::new(start, UNIX_EPOCH + Duration::from_secs(1_796_040_000));
//! let mut session = EnclaveSession::new(Arc::new(SessionConfig::default()), 7, now);
//! session.handle_client_bytes(now, b"{\"Operation\":\"Decrypt\",\"Ciphertext\":\"AAAA\"}\0");
//! let mut written = Vec::new();
//! while let Some(output) = session.poll_output() {
//!     match output {
//!         Output::ToClient(bytes) => written.extend_from_slice(&bytes),
//!         Output::Event(event) => println!("{event}"),
//!         other => unreachable!("no KMS work without a client: {other:?}"),
//!     }
//! }
//! assert_eq!(
//!     written,
//!     b"{\"Status\":\"Error\",\"Message\":\"Client not initialized\",\"ErrorKind\":\"NoClient\"}\0"
//! );
//! // Nothing in flight: the only deadline is the idle timeout.
//! assert_eq!(session.poll_timeout(), Some(start + Duration::from_secs(300)));
//! ```

mod call;
mod config;
mod event;
mod link;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use zeroize::Zeroizing;

use self::call::{ActiveCall, CallClient, Step};
pub use self::call::{Attestation, AttestationFailure, CallId, TransportFailure, TransportStage};
pub use self::config::{Backoff, SessionConfig};
pub use self::event::{CloseReason, KmsSummary, SessionEvent};
pub use self::link::{KmsLink, LinkRead, LinkWait, SharedRequest};
use crate::framing::{self, FrameDecoder};
use crate::kms::endpoint;
use crate::kms::request::KmsCall;
use crate::protocol::{
    Command, CommandArgs, CommandError, ErrorKind, Operation, Rejected, Reply, SetClient,
    parse_command,
};
use crate::secret::Credentials;

/// The current time, as a driver passes it in: a monotonic instant for deadlines and the wall
/// clock for request signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Wall-clock time (SigV4 `X-Amz-Date`).
    pub wall: SystemTime,
}

impl Now {
    /// A point in time.
    pub fn new(instant: Instant, wall: SystemTime) -> Self {
        Self { instant, wall }
    }

    /// The same point moved forward by `by` on both clocks (for virtual clocks in tests).
    pub fn advance(self, by: Duration) -> Self {
        Self {
            instant: self.instant + by,
            wall: self.wall + by,
        }
    }
}

/// What the driver must do next; see the [module docs](self) for the loop.
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// Write these bytes to the client. They may hold a plaintext: the buffer zeroizes itself.
    ToClient(Zeroizing<Vec<u8>>),
    /// Get an attestation document for the current enclave key, then call
    /// [`EnclaveSession::handle_attestation`] with the key and the document.
    Attest(CallId),
    /// Send `request` to KMS at `host` (TLS, SNI = `host`) on a connection no other call is
    /// using, and feed what comes back to the session. The bytes hold credentials.
    KmsSend {
        /// The call.
        call: CallId,
        /// KMS host name.
        host: String,
        /// The whole HTTP request.
        request: Zeroizing<Vec<u8>>,
    },
    /// The call is done with its connection: keep it for another request when `reusable`,
    /// close it otherwise (also when a response is still arriving).
    KmsRelease {
        /// The call.
        call: CallId,
        /// Whether the connection may carry another request.
        reusable: bool,
    },
    /// Something worth logging. Never carries a secret.
    Event(SessionEvent),
    /// Flush what was written, then close the client connection. Last output of a session.
    Close(CloseReason),
}

/// One parsed message waiting for its turn.
#[derive(Debug)]
enum Queued {
    Command(Command, Instant),
    Rejected(Rejected, Instant),
    TooLarge(Instant),
}

/// A client as set by `SetClient`.
#[derive(Debug, Clone)]
struct Client {
    credentials: Credentials,
    region: String,
    host: String,
}

/// The enclave side of one client connection. See the [module docs](self).
#[derive(Debug)]
pub struct EnclaveSession {
    config: Arc<SessionConfig>,
    decoder: FrameDecoder,
    queue: VecDeque<Queued>,
    client: Option<Client>,
    call: Option<ActiveCall>,
    outputs: VecDeque<Output>,
    read_closed: bool,
    /// Why the session closes once it stops reading and has answered everything.
    drain_reason: CloseReason,
    closed: bool,
    idle_deadline: Option<Instant>,
    /// When the partial message being read must be complete.
    message_deadline: Option<Instant>,
    rng: SplitMix64,
    next_call: u64,
}

impl EnclaveSession {
    /// A session for a newly accepted connection. `seed` feeds the retry jitter.
    pub fn new(config: Arc<SessionConfig>, seed: u64, now: Now) -> Self {
        let decoder = FrameDecoder::new(config.max_message_bytes);
        let idle_deadline = config.idle_timeout.map(|t| now.instant + t);
        Self {
            config,
            decoder,
            queue: VecDeque::new(),
            client: None,
            call: None,
            outputs: VecDeque::new(),
            read_closed: false,
            drain_reason: CloseReason::ClientClosed,
            closed: false,
            idle_deadline,
            message_deadline: None,
            rng: SplitMix64(seed),
            next_call: 0,
        }
    }

    /// Whether the driver should read more client bytes now. False while enough commands are
    /// queued (backpressure), after the client's end of stream, and once closing.
    pub fn wants_client_bytes(&self) -> bool {
        !self.closed && !self.read_closed && self.queue.len() < self.config.max_pending_commands
    }

    /// Whether the session has emitted [`Output::Close`].
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes received from the client.
    pub fn handle_client_bytes(&mut self, now: Now, bytes: &[u8]) {
        if self.closed || self.read_closed {
            return;
        }
        self.decoder.push(bytes);
        self.touch(now);
        self.advance(now);
    }

    /// The client closed its sending side. Queued commands are still answered; then the
    /// session closes.
    pub fn handle_client_eof(&mut self, now: Now) {
        if self.closed {
            return;
        }
        self.read_closed = true;
        self.advance(now);
    }

    /// The result of an [`Output::Attest`].
    pub fn handle_attestation(
        &mut self,
        now: Now,
        call: CallId,
        result: Result<Attestation, AttestationFailure>,
    ) {
        if let Some(active) = self.active_call(call) {
            let step = active.attested(now, result);
            self.apply(now, step);
        }
    }

    /// Bytes of KMS's answer to an [`Output::KmsSend`].
    pub fn handle_kms_bytes(&mut self, now: Now, call: CallId, bytes: &[u8]) {
        let random = self.rng.next();
        if let Some(active) = self.active_call(call) {
            let step = active.kms_bytes(now, bytes, random);
            self.apply(now, step);
        }
    }

    /// KMS closed the connection of an [`Output::KmsSend`].
    pub fn handle_kms_eof(&mut self, now: Now, call: CallId) {
        let random = self.rng.next();
        if let Some(active) = self.active_call(call) {
            let step = active.kms_eof(now, random);
            self.apply(now, step);
        }
    }

    /// The connection of an [`Output::KmsSend`] could not be made or failed.
    pub fn handle_kms_failure(&mut self, now: Now, call: CallId, failure: TransportFailure) {
        let random = self.rng.next();
        if let Some(active) = self.active_call(call) {
            let step = active.kms_failed(now, failure, random);
            self.apply(now, step);
        }
    }

    /// The time returned by [`EnclaveSession::poll_timeout`] has come (calling it early or
    /// late is harmless).
    pub fn handle_timeout(&mut self, now: Now) {
        if self.closed {
            return;
        }
        if self.message_deadline.is_some_and(|d| now.instant >= d) {
            self.message_deadline = None;
            self.read_closed = true;
            self.drain_reason = CloseReason::MessageTimeout;
            self.advance(now);
            if self.closed {
                return;
            }
        }
        if let Some(active) = self.call.as_mut() {
            let step = active.timer(now);
            self.apply(now, step);
        } else if self.queue.is_empty() && self.idle_deadline.is_some_and(|d| now.instant >= d) {
            self.close(CloseReason::IdleTimeout);
        }
    }

    /// The next thing to do, in order; `None` when there is nothing until the next input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`EnclaveSession::handle_timeout`] if no input comes first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let deadline = match &self.call {
            Some(active) => Some(active.next_deadline()),
            None if self.queue.is_empty() => self.idle_deadline,
            None => None,
        };
        match (deadline, self.message_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn active_call(&mut self, id: CallId) -> Option<&mut ActiveCall> {
        if self.closed {
            return None;
        }
        self.call.as_mut().filter(|c| c.id() == id)
    }

    fn touch(&mut self, now: Now) {
        self.idle_deadline = self.config.idle_timeout.map(|t| now.instant + t);
    }

    /// Pulls complete frames into the queue and runs queued commands until one needs KMS.
    fn advance(&mut self, now: Now) {
        self.run_queue(now);
        self.time_message(now);
    }

    /// Starts the clock of a partial message when one is buffered and the session is reading,
    /// and stops it otherwise. While backpressure holds reading the wait is the session's, not
    /// the client's, so the clock starts again when reading resumes.
    fn time_message(&mut self, now: Now) {
        // With reading on, every whole frame has been pulled out: what is left is partial.
        if !self.wants_client_bytes() || self.decoder.buffered() == 0 {
            self.message_deadline = None;
        } else if self.message_deadline.is_none() {
            self.message_deadline = self.config.message_timeout.map(|t| now.instant + t);
        }
    }

    fn run_queue(&mut self, now: Now) {
        loop {
            self.pump_frames(now);
            if self.closed || self.call.is_some() {
                return;
            }
            match self.queue.pop_front() {
                Some(queued) => self.run(now, queued),
                None => break,
            }
        }
        if self.read_closed && !self.closed {
            self.close(self.drain_reason);
        } else {
            self.touch(now);
        }
    }

    fn pump_frames(&mut self, now: Now) {
        while self.queue.len() < self.config.max_pending_commands && !self.decoder.has_failed() {
            let next = self.decoder.next_frame();
            if !matches!(next, Ok(None)) {
                // A message ended: the next one gets its own time.
                self.message_deadline = None;
            }
            match next {
                Ok(Some(frame)) => self.queue.push_back(match parse_command(frame) {
                    Ok(command) => Queued::Command(command, now.instant),
                    Err(rejected) => Queued::Rejected(rejected, now.instant),
                }),
                Ok(None) => break,
                Err(_) => self.queue.push_back(Queued::TooLarge(now.instant)),
            }
        }
    }

    fn run(&mut self, now: Now, queued: Queued) {
        match queued {
            Queued::TooLarge(at) => {
                self.reply(
                    now,
                    None,
                    at,
                    None,
                    Reply::error(
                        ErrorKind::BadRequest,
                        CommandError::MessageTooLarge.to_string(),
                    ),
                );
                self.close(CloseReason::MessageTooLarge);
            }
            Queued::Rejected(Rejected { request_id, error }, at) => {
                self.events(SessionEvent::CommandRejected {
                    error: error.to_string(),
                });
                let reply = Reply::error(error.kind(), error.to_string());
                self.reply(now, None, at, request_id, reply);
            }
            Queued::Command(command, at) => self.run_command(now, command, at),
        }
    }

    fn run_command(&mut self, now: Now, command: Command, at: Instant) {
        let Command {
            request_id,
            operation,
            args,
        } = command;
        let op = Some(operation);
        if operation != Operation::SetClient && self.client.is_none() {
            let error = CommandError::ClientNotInitialized;
            return self.reply(
                now,
                op,
                at,
                request_id,
                Reply::error(error.kind(), error.to_string()),
            );
        }
        let call = match args {
            Err(error) => {
                return self.reply(
                    now,
                    op,
                    at,
                    request_id,
                    Reply::error(error.kind(), error.to_string()),
                );
            }
            Ok(CommandArgs::SetClient(set)) => {
                let reply = self.set_client(set);
                return self.reply(now, op, at, request_id, reply);
            }
            Ok(CommandArgs::Decrypt(args)) => KmsCall::Decrypt(args),
            Ok(CommandArgs::GenerateDataKey(args)) => KmsCall::GenerateDataKey(args),
            Ok(CommandArgs::GenerateRandom(args)) => KmsCall::GenerateRandom(args),
        };
        let Some(client) = &self.client else {
            return;
        };
        let id = CallId(self.next_call);
        self.next_call += 1;
        let client = CallClient {
            credentials: &client.credentials,
            region: &client.region,
            host: &client.host,
        };
        self.call = Some(ActiveCall::new(
            id,
            call,
            request_id,
            at,
            now,
            client,
            &self.config,
        ));
        self.outputs.push_back(Output::Attest(id));
    }

    /// Replaces the client, or leaves the old one intact when the new one is refused.
    fn set_client(&mut self, set: SetClient) -> Reply {
        let SetClient {
            credentials,
            region,
        } = set;
        let region =
            match endpoint::resolve_region(self.config.region.as_deref(), region.as_deref()) {
                Ok(region) => region.to_owned(),
                Err(conflict) => {
                    let error = CommandError::BadRegion(conflict.to_string());
                    return Reply::error(error.kind(), error.to_string());
                }
            };
        let host = match &self.config.endpoint {
            Some(host) => host.clone(),
            None => endpoint::kms_host(&region),
        };
        self.events(SessionEvent::ClientSet {
            region: region.clone(),
            host: host.clone(),
        });
        self.client = Some(Client {
            credentials,
            region,
            host,
        });
        Reply::ok()
    }

    fn apply(&mut self, now: Now, step: Step) {
        match step {
            Step::Continue(outputs) => self.outputs.extend(outputs),
            Step::Finish(outputs, reply) => {
                self.outputs.extend(outputs);
                if let Some(mut active) = self.call.take() {
                    let request_id = active.request_id();
                    let kms = active.kms_summary();
                    self.reply_after_kms(
                        now,
                        Some(active.operation()),
                        active.received(),
                        request_id,
                        reply,
                        kms,
                    );
                }
                self.advance(now);
            }
        }
    }

    fn reply(
        &mut self,
        now: Now,
        operation: Option<Operation>,
        received: Instant,
        request_id: Option<String>,
        reply: Reply,
    ) {
        self.reply_after_kms(now, operation, received, request_id, reply, None);
    }

    fn reply_after_kms(
        &mut self,
        now: Now,
        operation: Option<Operation>,
        received: Instant,
        request_id: Option<String>,
        mut reply: Reply,
        kms: Option<KmsSummary>,
    ) {
        reply.request_id = request_id;
        self.events(SessionEvent::Replied {
            operation,
            error_kind: reply.error_kind,
            kms_error_type: reply.kms_error_type.clone(),
            kms,
            latency: now.instant.saturating_duration_since(received),
        });
        let json = reply.to_json();
        let mut bytes = Zeroizing::new(Vec::with_capacity(json.len() + 1));
        framing::encode(&json, &mut bytes);
        self.outputs.push_back(Output::ToClient(bytes));
    }

    fn events(&mut self, event: SessionEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    fn close(&mut self, reason: CloseReason) {
        if !self.closed {
            self.closed = true;
            self.queue.clear();
            self.outputs.push_back(Output::Close(reason));
        }
    }
}

/// A small deterministic generator for retry jitter (not for anything secret).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The message sent, framed, to a client turned away because the server is at its connection
/// limit (it then closes).
pub fn busy_reply(max_connections: usize) -> Zeroizing<Vec<u8>> {
    let reply = Reply::error(
        ErrorKind::Internal,
        format!("Server busy: {max_connections} connections open, try again later"),
    );
    let json = reply.to_json();
    let mut framed = Zeroizing::new(Vec::with_capacity(json.len() + 1));
    framing::encode(&json, &mut framed);
    framed
}
