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
//!    ([`EnclaveSession::handle_client_eof`]), how many bytes of the last transmit the client
//!    took ([`EnclaveSession::handle_client_written`]), an attestation result
//!    ([`EnclaveSession::handle_attestation`]), the progress of a KMS request
//!    ([`EnclaveSession::handle_kms_sent`], [`EnclaveSession::handle_kms_bytes`],
//!    [`EnclaveSession::handle_kms_eof`], [`EnclaveSession::handle_kms_failure`]), or an
//!    expired timer ([`EnclaveSession::handle_timeout`]).
//! 2. Drain [`EnclaveSession::poll_output`] until it returns `None`, acting on each
//!    [`Output`] in order: start an attestation for [`Output::Attest`], send
//!    [`Output::KmsSend`] on a connection to its host and stream the answer back, return or
//!    drop the connection on [`Output::KmsRelease`], log [`Output::Event`], and on
//!    [`Output::Close`] close the client connection (everything to flush is flushed by then).
//! 3. When it is not writing, take the next bytes for the client with
//!    [`EnclaveSession::poll_transmit`].
//! 4. Wait, in one select, for the next input: a read from the client only while
//!    [`EnclaveSession::wants_client_bytes`] is true (at most [`READ_CHUNK_BYTES`]), a write of
//!    the transmit buffer, the NSM, KMS, and [`EnclaveSession::poll_timeout`] (then call
//!    `handle_timeout`).
//!
//! A write that does not progress is bounded like a read: a client that leaves a reply untaken
//! for the message timeout is cut off ([`CloseReason::WriteTimeout`]). What a session holds is
//! bounded in bytes ([`SessionConfig::connection_bound`]): when its budget is reached it stops
//! reading until the client takes its replies.
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
//! while let Some(output) = session.poll_output() {
//!     match output {
//!         Output::Event(event) => println!("{event}"),
//!         other => unreachable!("no KMS work without a client: {other:?}"),
//!     }
//! }
//! let written = session.poll_transmit().expect("a reply");
//! assert_eq!(
//!     &written[..],
//!     b"{\"Status\":\"Error\",\"Message\":\"Client not initialized\",\"ErrorKind\":\"NoClient\"}\0"
//! );
//! // Until the client takes it, the reply's deadline is the message timeout.
//! assert_eq!(session.poll_timeout(), Some(start + Duration::from_secs(30)));
//! session.handle_client_written(now, written.len());
//! // Nothing in flight: the only deadline is the idle timeout.
//! assert_eq!(session.poll_timeout(), Some(start + Duration::from_secs(300)));
//! ```

mod call;
mod config;
mod event;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use zeroize::Zeroizing;

pub use self::call::CallId;
use self::call::SessionCall;
pub use self::config::{
    Backoff, DEFAULT_MAX_CONNECTION_BYTES, MAX_REPLY_BYTES, MIN_CONNECTION_BYTES, READ_CHUNK_BYTES,
    REPLY_BATCH_BYTES, SessionConfig,
};
pub use self::event::{CloseReason, EventLevel, SessionEvent};
use crate::framing::{self, FrameDecoder};
pub use crate::kms::call::{
    Attestation, AttestationFailure, KmsSummary, SharedRequest, TransportFailure, TransportStage,
};
use crate::kms::call::{Call, CallAction, CallEvent, SplitMix64};
use crate::kms::endpoint;
pub use crate::kms::request::AttestationDocument;
use crate::kms::request::{KmsRequest, RequestTarget};
use crate::kms::skew::ClockOffset;
use crate::protocol::{
    Command, CommandArgs, CommandError, ErrorKind, Operation, Rejected, Reply, SetClient,
    parse_command,
};
use crate::secret::Credentials;

/// The current time, as a driver passes it in: a monotonic instant for deadlines, the wall
/// clock, and KMS's clock offset (the [`KmsClock`](crate::kms::skew::KmsClock) of the
/// server or client), which only the signing time uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Wall-clock time.
    pub wall: SystemTime,
    /// KMS's clock minus the wall clock, as last measured.
    pub kms_clock_offset: ClockOffset,
}

impl Now {
    /// A point in time, with no known clock offset.
    pub fn new(instant: Instant, wall: SystemTime) -> Self {
        Self {
            instant,
            wall,
            kms_clock_offset: ClockOffset::ZERO,
        }
    }

    /// The same point, signing requests at the wall clock moved by `offset`.
    pub fn with_kms_clock_offset(self, offset: ClockOffset) -> Self {
        Self {
            kms_clock_offset: offset,
            ..self
        }
    }

    /// The same point moved forward by `by` on both clocks (for virtual clocks in tests).
    pub fn advance(self, by: Duration) -> Self {
        Self {
            instant: self.instant + by,
            wall: self.wall + by,
            ..self
        }
    }
}

/// What the driver must do next; see the [module docs](self) for the loop.
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// Get an attestation document for the current enclave key, then call
    /// [`EnclaveSession::handle_attestation`] with the key and the document.
    Attest(CallId),
    /// Send `request` to KMS at `host` (TLS, SNI = `host`) on a connection no other call is
    /// using — an idle pooled one when `may_reuse` and there is one — then call
    /// [`EnclaveSession::handle_kms_sent`] and feed what comes back to the session. A call
    /// sends at most one request at a time: a new `KmsSend` for the same call follows a
    /// [`Output::KmsRelease`] of the previous one. The bytes hold a signature.
    KmsSend {
        /// The call.
        call: CallId,
        /// KMS host name.
        host: String,
        /// The whole HTTP request.
        request: SharedRequest,
        /// Whether a pooled connection may carry it (not when one just went stale under it).
        may_reuse: bool,
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
    /// Close the client connection: every reply was taken, or the client stopped taking them
    /// ([`CloseReason::WriteTimeout`]; then the rest is dropped). Last output of a session.
    Close(CloseReason),
}

/// One parsed message waiting for its turn, with what it holds in memory.
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

/// Replies not yet taken by the client: framed bytes in order, and when each was queued.
#[derive(Debug, Default)]
struct Transmit {
    /// Bytes not yet handed to the driver.
    queue: VecDeque<Zeroizing<Vec<u8>>>,
    /// Bytes queued or handed to the driver and not yet written.
    unwritten: usize,
    /// Bytes ever queued, and ever written.
    queued_total: u64,
    written_total: u64,
    /// `(end, at)`: the replies ending at or before `end` (in `queued_total` terms) were queued
    /// at `at`. Replies queued at the same instant share one entry.
    marks: VecDeque<(u64, Instant)>,
}

impl Transmit {
    fn push(&mut self, bytes: Zeroizing<Vec<u8>>, at: Instant) {
        self.unwritten += bytes.len();
        self.queued_total += bytes.len() as u64;
        match self.marks.back_mut() {
            Some((end, when)) if *when == at => *end = self.queued_total,
            _ => self.marks.push_back((self.queued_total, at)),
        }
        self.queue.push_back(bytes);
    }

    /// The next bytes to write, up to `max` at once unless one reply alone is longer.
    fn take(&mut self, max: usize) -> Option<Zeroizing<Vec<u8>>> {
        let first = self.queue.pop_front()?;
        if self
            .queue
            .front()
            .is_none_or(|next| first.len() + next.len() > max)
        {
            return Some(first);
        }
        let mut bytes = first;
        while let Some(next) = self.queue.front() {
            if bytes.len() + next.len() > max {
                break;
            }
            if let Some(next) = self.queue.pop_front() {
                bytes.extend_from_slice(&next);
            }
        }
        Some(bytes)
    }

    fn written(&mut self, n: usize) {
        let n = n.min(self.unwritten);
        self.unwritten -= n;
        self.written_total += n as u64;
        while self
            .marks
            .front()
            .is_some_and(|(end, _)| *end <= self.written_total)
        {
            self.marks.pop_front();
        }
    }

    /// When the oldest untaken reply was queued.
    fn oldest(&self) -> Option<Instant> {
        self.marks.front().map(|(_, at)| *at)
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.marks.clear();
        self.unwritten = 0;
    }
}

/// Replies that never reached KMS (errors, `SetClient`) log a burst of [`LOG_BURST`] lines,
/// then one per [`LOG_REFILL`]; the rest are counted and reported in one line.
#[derive(Debug)]
struct LogLimit {
    tokens: u32,
    refilled: Instant,
    suppressed: u64,
}

const LOG_BURST: u32 = 10;
const LOG_REFILL: Duration = Duration::from_secs(6);

impl LogLimit {
    fn new(now: Instant) -> Self {
        Self {
            tokens: LOG_BURST,
            refilled: now,
            suppressed: 0,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = (elapsed.as_millis() / LOG_REFILL.as_millis()) as u64;
        if earned > 0 {
            self.tokens = (u64::from(self.tokens) + earned).min(u64::from(LOG_BURST)) as u32;
            self.refilled = now;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// The enclave side of one client connection. See the [module docs](self).
#[derive(Debug)]
pub struct EnclaveSession {
    config: Arc<SessionConfig>,
    decoder: FrameDecoder,
    queue: VecDeque<(Queued, usize)>,
    /// What the queued commands hold.
    queued_bytes: usize,
    transmit: Transmit,
    client: Option<Client>,
    call: Option<SessionCall>,
    outputs: VecDeque<Output>,
    read_closed: bool,
    /// Why the session closes once it stops reading and has answered everything.
    drain_reason: CloseReason,
    /// Closing: no more commands; `Close` once the client has taken every reply.
    closing: Option<CloseReason>,
    closed: bool,
    idle_deadline: Option<Instant>,
    /// When the partial message being read must be complete.
    message_deadline: Option<Instant>,
    log: LogLimit,
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
            queued_bytes: 0,
            transmit: Transmit::default(),
            client: None,
            call: None,
            outputs: VecDeque::new(),
            read_closed: false,
            drain_reason: CloseReason::ClientClosed,
            closing: None,
            closed: false,
            idle_deadline,
            message_deadline: None,
            log: LogLimit::new(now.instant),
            rng: SplitMix64(seed),
            next_call: 0,
        }
    }

    /// Whether the driver should read more client bytes now (at most [`READ_CHUNK_BYTES`]).
    /// False while the budget is spent (backpressure: parsed commands wait, or the client has
    /// not taken its replies), while a message's worth of bytes waits to be parsed, after the
    /// client's end of stream, and once closing.
    pub fn wants_client_bytes(&self) -> bool {
        !self.closed
            && self.closing.is_none()
            && !self.read_closed
            && self.decoder.buffered() < self.config.max_message_bytes
            && self.may_parse()
    }

    /// Whether the session has emitted [`Output::Close`].
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// What the session holds for its client now, in bytes: unparsed input, parsed commands
    /// waiting, replies not yet taken. At most [`SessionConfig::connection_bound`].
    pub fn held_bytes(&self) -> usize {
        self.decoder.buffered() + self.queued_bytes + self.transmit.unwritten
    }

    /// Bytes received from the client.
    pub fn handle_client_bytes(&mut self, now: Now, bytes: &[u8]) {
        if self.closed || self.closing.is_some() || self.read_closed {
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

    /// The next bytes to write to the client, when there are any. The driver writes them (in
    /// as many writes as it takes) and reports each with
    /// [`EnclaveSession::handle_client_written`] before asking again. When they are a whole
    /// batch ([`REPLY_BATCH_BYTES`] or more) the client is pipelining hard: the driver should
    /// let other connections run before it writes them.
    pub fn poll_transmit(&mut self) -> Option<Zeroizing<Vec<u8>>> {
        if self.closed {
            return None;
        }
        self.transmit
            .take(READ_CHUNK_BYTES.max(MAX_REPLY_BYTES) * 4)
    }

    /// The client took `n` bytes of what [`EnclaveSession::poll_transmit`] gave.
    pub fn handle_client_written(&mut self, now: Now, n: usize) {
        if self.closed {
            return;
        }
        self.transmit.written(n);
        if n > 0 {
            self.touch(now);
        }
        if let Some(reason) = self.closing {
            self.close(reason);
        } else {
            self.advance(now);
        }
    }

    /// The result of an [`Output::Attest`].
    pub fn handle_attestation(
        &mut self,
        now: Now,
        call: CallId,
        result: Result<Attestation, AttestationFailure>,
    ) {
        if let Some(active) = self.active_call(call) {
            active.handle_attestation(now, result);
            self.pump(now);
        }
    }

    /// The request of an [`Output::KmsSend`] is written; `reused`: on a pooled connection.
    pub fn handle_kms_sent(&mut self, call: CallId, reused: bool) {
        if let Some(active) = self.active_call(call) {
            active.handle_sent(reused);
        }
    }

    /// Bytes of KMS's answer to an [`Output::KmsSend`].
    pub fn handle_kms_bytes(&mut self, now: Now, call: CallId, bytes: &[u8]) {
        if let Some(active) = self.active_call(call) {
            active.handle_bytes(now, bytes);
            self.pump(now);
        }
    }

    /// KMS closed the connection of an [`Output::KmsSend`].
    pub fn handle_kms_eof(&mut self, now: Now, call: CallId) {
        if let Some(active) = self.active_call(call) {
            active.handle_eof(now);
            self.pump(now);
        }
    }

    /// The connection of an [`Output::KmsSend`] could not be made or failed.
    pub fn handle_kms_failure(&mut self, now: Now, call: CallId, failure: TransportFailure) {
        if let Some(active) = self.active_call(call) {
            active.handle_transport_failure(now, failure);
            self.pump(now);
        }
    }

    /// The time returned by [`EnclaveSession::poll_timeout`] has come (calling it early or
    /// late is harmless).
    pub fn handle_timeout(&mut self, now: Now) {
        if self.closed {
            return;
        }
        if self.write_deadline().is_some_and(|d| now.instant >= d) {
            self.abort(CloseReason::WriteTimeout);
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
            active.call.handle_timeout(now);
            self.pump(now);
        } else if self.idle_deadline().is_some_and(|d| now.instant >= d) {
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
        let call = self.call.as_ref().and_then(|c| c.call.poll_timeout());
        [
            call.or(self.idle_deadline()),
            self.message_deadline,
            self.write_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The idle timeout runs while nothing is in flight in either direction; it counts from
    /// the last progress ([`EnclaveSession::touch`]).
    fn idle_deadline(&self) -> Option<Instant> {
        let idle = self.call.is_none()
            && self.queue.is_empty()
            && self.transmit.unwritten == 0
            && self.closing.is_none();
        self.idle_deadline.filter(|_| idle)
    }

    /// The oldest untaken reply must be taken within the message timeout (the idle timeout
    /// when there is none).
    fn write_deadline(&self) -> Option<Instant> {
        let limit = self.config.message_timeout.or(self.config.idle_timeout)?;
        Some(self.transmit.oldest()? + limit)
    }

    fn active_call(&mut self, id: CallId) -> Option<&mut Call> {
        if self.closed {
            return None;
        }
        self.call
            .as_mut()
            .filter(|c| c.id == id)
            .map(|c| &mut c.call)
    }

    fn touch(&mut self, now: Now) {
        self.idle_deadline = self.config.idle_timeout.map(|t| now.instant + t);
    }

    /// Whether another frame may be parsed: parsed commands hold at most half the budget (a
    /// command is parsed only while they hold at most a quarter, and one command holds at
    /// most a quarter).
    fn may_parse(&self) -> bool {
        self.queued_bytes <= self.config.max_connection_bytes / 4 && self.may_reply()
    }

    /// Whether another command may run: while less than a batch of replies waits to be
    /// written ([`REPLY_BATCH_BYTES`]), so untaken replies hold at most a batch and one reply,
    /// within half the budget.
    fn may_reply(&self) -> bool {
        self.transmit.unwritten < REPLY_BATCH_BYTES
            && self.transmit.unwritten + MAX_REPLY_BYTES <= self.config.max_connection_bytes / 2
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
            if self.closed || self.closing.is_some() || self.call.is_some() || !self.may_reply() {
                return;
            }
            match self.queue.pop_front() {
                Some((queued, bytes)) => {
                    self.queued_bytes -= bytes;
                    self.run(now, queued);
                }
                None => break,
            }
        }
        if self.read_closed {
            self.close(self.drain_reason);
        } else {
            self.touch(now);
        }
    }

    fn pump_frames(&mut self, now: Now) {
        while self.may_parse() && !self.decoder.has_failed() {
            let next = self.decoder.next_frame();
            if !matches!(next, Ok(None)) {
                // A message ended: the next one gets its own time.
                self.message_deadline = None;
            }
            let queued = match next {
                Ok(Some(frame)) => match parse_command(frame) {
                    Ok(command) => {
                        let bytes = command.retained_bytes();
                        let limit = self.config.max_command_bytes();
                        if bytes > limit {
                            let error = CommandError::CommandTooLarge { bytes, limit };
                            let request_id = command.request_id;
                            Queued::Rejected(Rejected { request_id, error }, now.instant)
                        } else {
                            self.queued_bytes += bytes;
                            self.queue
                                .push_back((Queued::Command(command, now.instant), bytes));
                            continue;
                        }
                    }
                    Err(rejected) => Queued::Rejected(rejected, now.instant),
                },
                Ok(None) => break,
                Err(_) => Queued::TooLarge(now.instant),
            };
            let bytes = QUEUED_ERROR_BYTES;
            self.queued_bytes += bytes;
            self.queue.push_back((queued, bytes));
        }
    }
    fn run(&mut self, now: Now, queued: Queued) {
        match queued {
            Queued::TooLarge(at) => {
                let log = self.may_log(now);
                let reply = Reply::error(
                    ErrorKind::BadRequest,
                    CommandError::MessageTooLarge.to_string(),
                );
                self.reply(now, None, at, None, reply, log);
                self.close(CloseReason::MessageTooLarge);
            }
            Queued::Rejected(Rejected { request_id, error }, at) => {
                let log = self.may_log(now);
                if log {
                    self.events(SessionEvent::CommandRejected {
                        error: error.to_string(),
                    });
                }
                let reply = Reply::error(error.kind(), error.to_string());
                self.reply(now, None, at, request_id, reply, log);
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
            let log = self.may_log(now);
            let reply = Reply::error(error.kind(), error.to_string());
            return self.reply(now, op, at, request_id, reply, log);
        }
        let call = match args {
            Err(error) => {
                let log = self.may_log(now);
                let reply = Reply::error(error.kind(), error.to_string());
                return self.reply(now, op, at, request_id, reply, log);
            }
            Ok(CommandArgs::SetClient(set)) => {
                let log = self.may_log(now);
                let reply = self.set_client(set, log);
                return self.reply(now, op, at, request_id, reply, log);
            }
            Ok(CommandArgs::Decrypt(args)) => KmsRequest::Decrypt(args),
            Ok(CommandArgs::GenerateDataKey(args)) => KmsRequest::GenerateDataKey(args),
            Ok(CommandArgs::GenerateRandom(args)) => KmsRequest::GenerateRandom(args),
            Ok(CommandArgs::GenerateDataKeyPair(args)) => KmsRequest::GenerateDataKeyPair(args),
            Ok(CommandArgs::DeriveSharedSecret(args)) => KmsRequest::DeriveSharedSecret(args),
        };
        let Some(client) = &self.client else {
            return;
        };
        let id = CallId(self.next_call);
        self.next_call += 1;
        let target = RequestTarget {
            host: &client.host,
            region: &client.region,
            credentials: &client.credentials,
        };
        let call = Call::new(
            call,
            target,
            &self.config.call_config(),
            now,
            self.rng.next(),
        );
        self.call = Some(SessionCall {
            id,
            operation,
            call,
            request_id,
            received: at,
        });
        self.pump(now);
    }

    /// Replaces the client, or leaves the old one intact when the new one is refused.
    fn set_client(&mut self, set: SetClient, log: bool) -> Reply {
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
        if log {
            self.events(SessionEvent::ClientSet {
                region: region.clone(),
                host: host.clone(),
            });
        }
        self.client = Some(Client {
            credentials,
            region,
            host,
        });
        Reply::ok()
    }

    /// Carries the current call's actions and events over to the session's outputs, and
    /// replies once the call has its result.
    fn pump(&mut self, now: Now) {
        let Some(active) = self.call.as_mut() else {
            return;
        };
        let id = active.id;
        let operation = active.operation;
        while let Some(event) = active.call.poll_event() {
            self.outputs.push_back(Output::Event(match event {
                CallEvent::Attempt { attempt, host } => SessionEvent::KmsAttempt {
                    call: id,
                    operation,
                    attempt,
                    host,
                },
                CallEvent::Answered {
                    status,
                    error_type,
                    latency,
                } => SessionEvent::KmsAnswered {
                    call: id,
                    operation,
                    status,
                    error_type,
                    latency,
                },
                CallEvent::Retry { delay, reason } => SessionEvent::KmsRetry {
                    call: id,
                    operation,
                    delay,
                    reason,
                },
                CallEvent::ClockOffset { offset } => {
                    SessionEvent::KmsClockOffset { call: id, offset }
                }
                CallEvent::UnwrapFailed { detail } => SessionEvent::UnwrapFailed {
                    call: id,
                    operation,
                    detail,
                },
            }));
        }
        while let Some(action) = active.call.poll_action() {
            self.outputs.push_back(match action {
                CallAction::Attest => Output::Attest(id),
                CallAction::Send {
                    host,
                    request,
                    may_reuse,
                } => Output::KmsSend {
                    call: id,
                    host,
                    request,
                    may_reuse,
                },
                CallAction::Release { reusable } => Output::KmsRelease { call: id, reusable },
            });
        }
        let Some(result) = active.call.poll_result() else {
            return;
        };
        let kms = active.call.kms_summary();
        let received = active.received;
        let request_id = active.request_id.take();
        self.call = None;
        let reply = call::reply(operation, result);
        self.reply_after_kms(now, Some(operation), received, request_id, reply, kms, true);
        self.advance(now);
    }

    /// Whether a reply that did not reach KMS may be logged (see [`LogLimit`]). When it may
    /// and some were left out before it, says how many first.
    fn may_log(&mut self, now: Now) -> bool {
        let allowed = self.log.allow(now.instant);
        if allowed {
            self.report_suppressed();
        }
        allowed
    }

    fn report_suppressed(&mut self) {
        let replies = std::mem::take(&mut self.log.suppressed);
        if replies > 0 {
            self.events(SessionEvent::Suppressed { replies });
        }
    }

    fn reply(
        &mut self,
        now: Now,
        operation: Option<Operation>,
        received: Instant,
        request_id: Option<String>,
        reply: Reply,
        log: bool,
    ) {
        self.reply_after_kms(now, operation, received, request_id, reply, None, log);
    }

    #[allow(clippy::too_many_arguments)]
    fn reply_after_kms(
        &mut self,
        now: Now,
        operation: Option<Operation>,
        received: Instant,
        request_id: Option<String>,
        mut reply: Reply,
        kms: Option<KmsSummary>,
        log: bool,
    ) {
        reply.request_id = request_id;
        if log {
            self.events(SessionEvent::Replied {
                operation,
                error_kind: reply.error_kind,
                kms_error_type: reply.kms_error_type.clone(),
                kms,
                latency: now.instant.saturating_duration_since(received),
            });
        }
        let json = reply.to_json();
        let mut bytes = Zeroizing::new(Vec::with_capacity(json.len() + 1));
        framing::encode(&json, &mut bytes);
        self.transmit.push(bytes, now.instant);
    }

    fn events(&mut self, event: SessionEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    /// Stops taking commands; [`Output::Close`] follows once the client has taken every reply.
    fn close(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        self.queue.clear();
        self.queued_bytes = 0;
        self.closing = Some(reason);
        if self.transmit.unwritten == 0 {
            self.report_suppressed();
            self.closed = true;
            self.outputs.push_back(Output::Close(reason));
        }
    }

    /// Closes at once, dropping the replies the client did not take.
    fn abort(&mut self, reason: CloseReason) {
        self.transmit.clear();
        self.closing = None;
        self.close(reason);
    }
}

/// What a queued error reply is counted as holding (its entry and error text).
const QUEUED_ERROR_BYTES: usize = 256;

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
