//! One KMS call as a sans-IO state machine: the attestation document, the signed request,
//! retries with backoff within one deadline, the response, and the CMS unwrap of
//! `CiphertextForRecipient`.
//!
//! An [`EnclaveSession`](crate::session::EnclaveSession) runs one [`Call`] per KMS command; an
//! application that calls KMS in-process drives one per request. The driver loop:
//!
//! 1. [`Call::poll_action`]:
//!    - [`CallAction::Attest`]: ask the NSM for a document binding the enclave key's public half,
//!      then [`Call::handle_attestation`].
//!    - [`CallAction::Send`]: write the request on a connection to `host` (an idle pooled one when
//!      `may_reuse`), then [`Call::handle_sent`], and feed what comes back to
//!      [`Call::handle_bytes`], [`Call::handle_eof`] or [`Call::handle_transport_failure`].
//!    - [`CallAction::Release`]: the call is done with that connection: pool it when
//!      `reusable`, close it otherwise.
//! 2. [`Call::poll_event`]: what to log (never a secret).
//! 3. [`Call::poll_timeout`]: when to call [`Call::handle_timeout`] if nothing else happens.
//! 4. [`Call::poll_result`]: once, the opened secret with KMS's other fields, or why not.
//!
//! ```
//! use std::time::{Duration, Instant, UNIX_EPOCH};
//! use kmstool_core::kms::call::{Call, CallAction, CallConfig};
//! use kmstool_core::kms::request::{KmsRequest, RequestTarget};
//! use kmstool_core::protocol::GenerateRandom;
//! use kmstool_core::secret::{Credentials, SecretString};
//! use kmstool_core::session::Now;
//!
//! let credentials = Credentials::new("AKIDEXAMPLE", SecretString::new("secret".into()), None);
//! let target = RequestTarget {
//!     host: "kms.eu-west-1.amazonaws.com",
//!     region: "eu-west-1",
//!     credentials: &credentials,
//! };
//! let now = Now::new(Instant::now(), UNIX_EPOCH + Duration::from_secs(1_750_000_000));
//! let request = KmsRequest::GenerateRandom(GenerateRandom { number_of_bytes: 32, custom_key_store_id: None });
//! let mut call = Call::new(request, target, &CallConfig::default(), now, 7);
//! // First the attestation document; the request is signed once it is there.
//! assert!(matches!(call.poll_action(), Some(CallAction::Attest)));
//! assert_eq!(call.poll_timeout(), Some(now.instant + Duration::from_secs(10)));
//! // No document within the deadline: the call ends, and says why.
//! call.handle_timeout(now.advance(Duration::from_secs(10)));
//! let error = call.poll_result().expect("finished").expect_err("no document");
//! assert!(error.to_string().contains("no attestation document"));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use zeroize::Zeroizing;

use crate::cms::{self, CmsError};
use crate::crypto::RecipientKey;
use crate::http::{HttpError, HttpLimits, Progress, Response, ResponseParser};
use crate::kms::request::{self, AttestationDocument, KmsRequest, RequestTarget};
use crate::kms::response::{self, KmsOutput, KmsResponseError, KmsServiceError};
use crate::kms::skew::{self, ClockOffset};
use crate::protocol::{DataKeySize, ErrorKind, KeySpec};
use crate::secret::{Credentials, SecretBytes};
use crate::session::Now;

/// A signed KMS request, shared between the call (which may have to send it again) and the
/// driver writing it. It holds a signature made with the caller's credentials.
pub type SharedRequest = Arc<Zeroizing<Vec<u8>>>;

/// An attestation document and the key pair it binds.
#[derive(Debug, Clone)]
pub struct Attestation {
    /// The enclave key whose public half is in the document.
    pub key: Arc<RecipientKey>,
    /// The COSE_Sign1 document from the NSM.
    pub document: AttestationDocument,
}

/// The NSM could not attest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationFailure {
    /// What went wrong.
    pub detail: String,
}

/// Where a KMS connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportStage {
    /// Connecting to the proxy (refused, unreachable, timed out). Retried.
    Connect,
    /// The TLS handshake refused by rustls (untrusted certificate, wrong host). Not retried.
    Tls,
    /// Reading or writing an established connection (reset), or a handshake the peer cut
    /// short or did not finish in time. Retried.
    Io,
}

/// A KMS connection failure reported by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportFailure {
    /// Where.
    pub stage: TransportStage,
    /// The OS or TLS error text.
    pub detail: String,
}

impl TransportFailure {
    /// A failure at `stage`.
    pub fn new(stage: TransportStage, detail: impl Into<String>) -> Self {
        Self {
            stage,
            detail: detail.into(),
        }
    }
}

/// How a call retries and how long it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallConfig {
    /// Deadline of the whole call, from its start: the attestation, every attempt and the
    /// backoff between them.
    pub timeout: Duration,
    /// Attempts (1 = no retry).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Caps on KMS's responses.
    pub http_limits: HttpLimits,
}

impl Default for CallConfig {
    /// 10 s, 3 attempts, 100 ms to 2 s of backoff: SPEC's defaults.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_attempts: 3,
            backoff: Backoff::default(),
            http_limits: HttpLimits::default(),
        }
    }
}

/// Exponential backoff with jitter: before attempt `n + 1`, wait between half and all of
/// `min(base * 2^(n-1), max)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay scale after the first attempt.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The delay after `attempts` failed attempts (≥ 1), with `random` choosing the jitter.
    pub fn delay(&self, attempts: u32, random: u64) -> Duration {
        let exponent = attempts.saturating_sub(1).min(20);
        let ceiling = self.base.saturating_mul(1u32 << exponent).min(self.max);
        let ceiling_us = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        let half = ceiling_us / 2;
        let jitter = if half == 0 { 0 } else { random % (half + 1) };
        Duration::from_micros(ceiling_us - half + jitter)
    }
}

/// What the driver must do for the call.
#[derive(Debug)]
#[must_use]
pub enum CallAction {
    /// Get an attestation document for the current enclave key, then call
    /// [`Call::handle_attestation`] with the key and the document.
    Attest,
    /// Send `request` to KMS at `host` (TLS, SNI = `host`) — on an idle pooled connection when
    /// `may_reuse` and there is one — then call [`Call::handle_sent`] and feed what comes back
    /// to the call. A call sends at most one request at a time: a new `Send` follows a
    /// [`CallAction::Release`] of the previous one. The bytes hold a signature.
    Send {
        /// KMS host name.
        host: String,
        /// The whole HTTP request.
        request: SharedRequest,
        /// Whether a pooled connection may carry it (not when one just went stale under it).
        may_reuse: bool,
    },
    /// The call is done with its connection: keep it for another request when `reusable`,
    /// close it otherwise (also when a response is still arriving).
    Release {
        /// Whether the connection may carry another request.
        reusable: bool,
    },
}

/// Something worth logging about a call. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// An attempt starts: its request goes out.
    Attempt {
        /// 1 for the first attempt.
        attempt: u32,
        /// KMS host.
        host: String,
    },
    /// KMS answered an attempt.
    Answered {
        /// HTTP status.
        status: u16,
        /// KMS error type, for errors.
        error_type: Option<String>,
        /// From sending the request to the complete answer.
        latency: Duration,
    },
    /// An attempt failed in a way worth retrying; the next one starts after `delay`.
    Retry {
        /// Wait before the next attempt.
        delay: Duration,
        /// What failed.
        reason: String,
    },
    /// A response showed KMS's clock this far from ours (measured on a round trip short
    /// enough to trust): keep it in the shared [`KmsClock`](super::skew::KmsClock) so that
    /// later calls sign with it.
    ClockOffset {
        /// KMS's clock minus ours.
        offset: ClockOffset,
    },
    /// KMS's `CiphertextForRecipient` did not open. [`CallError`]'s text for this is the same
    /// whatever the cause, so that it is no padding oracle; this detail is for debug logs.
    UnwrapFailed {
        /// The CMS error (carries no secret).
        detail: String,
    },
}

/// KMS's last answer to a call and how many attempts it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KmsSummary {
    /// HTTP status of the last answer.
    pub status: u16,
    /// From sending the last attempt to its complete answer.
    pub latency: Duration,
    /// Attempts made.
    pub attempts: u32,
}

/// What a successful call got: the secret opened from `CiphertextForRecipient` and KMS's
/// other fields. Which fields are set depends on the operation; those the operation must have
/// (`CiphertextBlob` for GenerateDataKey, `PublicKey` and `PrivateKeyCiphertextBlob` for
/// GenerateDataKeyPair) are checked to be there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutput {
    /// The plaintext, data key, private key (DER PKCS #8), random bytes or shared secret.
    pub secret: SecretBytes,
    /// `KeyId`: the ARN of the KMS key used.
    pub key_id: Option<String>,
    /// `EncryptionAlgorithm` (Decrypt).
    pub encryption_algorithm: Option<String>,
    /// `CiphertextBlob` (GenerateDataKey).
    pub ciphertext_blob: Option<Vec<u8>>,
    /// `PublicKey`, DER SubjectPublicKeyInfo (GenerateDataKeyPair).
    pub public_key: Option<Vec<u8>>,
    /// `PrivateKeyCiphertextBlob` (GenerateDataKeyPair).
    pub private_key_ciphertext_blob: Option<Vec<u8>>,
    /// `KeyPairSpec` (GenerateDataKeyPair).
    pub key_pair_spec: Option<String>,
    /// `KeyAgreementAlgorithm` (DeriveSharedSecret).
    pub key_agreement_algorithm: Option<String>,
    /// `KeyOrigin` (DeriveSharedSecret).
    pub key_origin: Option<String>,
}

/// Why a call ends without a result. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The NSM could not attest.
    Attestation(AttestationFailure),
    /// The connection to KMS failed.
    Transport {
        /// KMS host.
        host: String,
        /// What failed.
        failure: TransportFailure,
    },
    /// KMS's answer is not HTTP this client reads.
    Http {
        /// KMS host.
        host: String,
        /// What is wrong with it.
        error: HttpError,
    },
    /// KMS answered with an error.
    Kms(KmsServiceError),
    /// KMS answered with success, but not with what the operation must return.
    BadResponse(String),
    /// `CiphertextForRecipient` did not open.
    Unwrap(CmsError),
    /// The deadline passed.
    Timeout {
        /// From the call's start to its deadline.
        after: Duration,
        /// Attempts made (0: the NSM never answered).
        attempts: u32,
        /// Why the last attempt failed, if it did.
        last: Option<Box<CallError>>,
    },
    /// A request that could not be built, or a call driven out of order.
    Internal(String),
}

impl CallError {
    /// The protocol's `ErrorKind` for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Attestation(_) => ErrorKind::Attestation,
            Self::Transport { .. } | Self::Http { .. } => ErrorKind::Transport,
            Self::Kms(_) => ErrorKind::Kms,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::BadResponse(_) | Self::Unwrap(_) | Self::Internal(_) => ErrorKind::Internal,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Self::Transport { failure, .. } => failure.stage != TransportStage::Tls,
            Self::Http { .. } => true,
            Self::Kms(error) => error.retryable,
            _ => false,
        }
    }
}

/// What an error says about a `CiphertextForRecipient` that does not open, whatever the cause.
pub const UNWRAP_FAILED: &str = "the response from KMS could not be opened";

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attestation(a) => write!(f, "attestation failed: {}", a.detail),
            Self::Transport { host, failure } => {
                let stage = match failure.stage {
                    TransportStage::Connect => "could not connect to KMS",
                    TransportStage::Tls => "TLS with KMS failed",
                    TransportStage::Io => "connection to KMS failed",
                };
                write!(f, "{stage} ({host}): {}", failure.detail)
            }
            Self::Http { host, error } => write!(f, "bad HTTP response from KMS ({host}): {error}"),
            Self::Kms(error) => {
                match &error.error_type {
                    Some(error_type) => f.write_str(error_type)?,
                    None => write!(f, "HTTP {}", error.status)?,
                }
                match &error.message {
                    Some(message) => write!(f, ": {message}"),
                    None => Ok(()),
                }
            }
            Self::BadResponse(detail) => write!(f, "unusable KMS response: {detail}"),
            // One text whatever the cause: see `CallEvent::UnwrapFailed`.
            Self::Unwrap(_) => f.write_str(UNWRAP_FAILED),
            Self::Timeout {
                after, attempts: 0, ..
            } => write!(
                f,
                "no attestation document from the NSM within {} ms",
                after.as_millis()
            ),
            Self::Timeout {
                after,
                attempts,
                last,
            } => {
                write!(
                    f,
                    "KMS did not answer within {} ms ({attempts} attempt",
                    after.as_millis()
                )?;
                if *attempts != 1 {
                    f.write_str("s")?;
                }
                f.write_str(")")?;
                match last {
                    Some(last) => write!(f, "; last error: {last}"),
                    None => Ok(()),
                }
            }
            Self::Internal(detail) => write!(f, "internal error: {detail}"),
        }
    }
}

impl std::error::Error for CallError {}

#[derive(Debug)]
enum State {
    Attesting,
    /// The request is with the driver: being written, then its answer read.
    Sending {
        parser: ResponseParser,
        /// When the request went out, on both clocks.
        sent: Now,
        /// The time it is signed at (the wall clock moved by the offset in use).
        signed_at: SystemTime,
        request: SharedRequest,
        /// The driver wrote it on a pooled connection ([`Call::handle_sent`]).
        reused: bool,
        /// Some of the answer has arrived.
        received_any: bool,
    },
    /// Waiting for the next attempt.
    Backoff {
        until: Instant,
    },
    Done,
}

/// One KMS call; see the [module docs](self).
#[derive(Debug)]
pub struct Call {
    request: KmsRequest,
    started: Instant,
    deadline: Instant,
    credentials: Credentials,
    region: String,
    host: String,
    attempts: u32,
    config: CallConfig,
    rng: SplitMix64,
    state: State,
    key: Option<Arc<RecipientKey>>,
    body: Zeroizing<Vec<u8>>,
    last_failure: Option<CallError>,
    last_answer: Option<(u16, Duration)>,
    /// KMS's clock offset as this call measured it, which it signs with from then on.
    learned_offset: Option<ClockOffset>,
    /// The call was already signed again for a refusal that meant skew.
    skew_resent: bool,
    actions: VecDeque<CallAction>,
    events: VecDeque<CallEvent>,
    result: Option<Result<CallOutput, CallError>>,
}

impl Call {
    /// A call of `request` to `target`, starting `now`: its first action is
    /// [`CallAction::Attest`], or, for `Encrypt` (which takes no `Recipient`), the first
    /// [`CallAction::Send`]. `seed` feeds the retry jitter.
    pub fn new(
        request: KmsRequest,
        target: RequestTarget<'_>,
        config: &CallConfig,
        now: Now,
        seed: u64,
    ) -> Self {
        let attested = request.takes_recipient();
        let deadline = now
            .instant
            .checked_add(config.timeout)
            .unwrap_or(now.instant + Duration::from_secs(86_400 * 365));
        let mut call = Self {
            request,
            started: now.instant,
            deadline,
            credentials: target.credentials.clone(),
            region: target.region.to_owned(),
            host: target.host.to_owned(),
            attempts: 0,
            config: CallConfig {
                max_attempts: config.max_attempts.max(1),
                ..*config
            },
            rng: SplitMix64(seed),
            state: State::Attesting,
            key: None,
            body: Zeroizing::new(Vec::new()),
            last_failure: None,
            last_answer: None,
            learned_offset: None,
            skew_resent: false,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            result: None,
        };
        if attested {
            call.actions.push_back(CallAction::Attest);
        } else {
            call.body = call.request.body(&AttestationDocument::default());
            call.send(now);
        }
        call
    }

    /// What the call asks KMS.
    pub fn request(&self) -> &KmsRequest {
        &self.request
    }

    /// KMS's last answer and the attempts made, once KMS answered.
    pub fn kms_summary(&self) -> Option<KmsSummary> {
        self.last_answer.map(|(status, latency)| KmsSummary {
            status,
            latency,
            attempts: self.attempts,
        })
    }

    /// Whether the result is there (or was taken).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The next thing to do for the call.
    pub fn poll_action(&mut self) -> Option<CallAction> {
        self.actions.pop_front()
    }

    /// The next event to log.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// When to call [`Call::handle_timeout`]; `None` once the call is done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Done => None,
            State::Backoff { until } => Some(until.min(self.deadline)),
            _ => Some(self.deadline),
        }
    }

    /// The call's result, once: after it, the call is finished.
    pub fn poll_result(&mut self) -> Option<Result<CallOutput, CallError>> {
        self.result.take()
    }

    /// The result of a [`CallAction::Attest`].
    pub fn handle_attestation(
        &mut self,
        now: Now,
        result: Result<Attestation, AttestationFailure>,
    ) {
        if !matches!(self.state, State::Attesting) {
            return;
        }
        match result {
            Ok(attestation) => {
                self.body = self.request.body(&attestation.document);
                self.key = Some(attestation.key);
                self.send(now);
            }
            Err(failure) => self.finish(Err(CallError::Attestation(failure))),
        }
    }

    /// The driver wrote the request of a [`CallAction::Send`]; `reused`: on a pooled
    /// connection.
    pub fn handle_sent(&mut self, reused: bool) {
        if let State::Sending { reused: r, .. } = &mut self.state {
            *r = reused;
        }
    }

    /// Bytes of KMS's answer.
    pub fn handle_bytes(&mut self, now: Now, bytes: &[u8]) {
        let State::Sending {
            parser,
            sent,
            signed_at,
            received_any,
            ..
        } = &mut self.state
        else {
            return;
        };
        *received_any |= !bytes.is_empty();
        let (sent, signed_at) = (*sent, *signed_at);
        match parser.feed(bytes) {
            Ok(Progress::NeedMore) => {}
            Ok(Progress::Complete(response)) => self.on_response(now, sent, signed_at, response),
            Err(error) => {
                self.release(false);
                let host = self.host.clone();
                self.retry_or_finish(now, CallError::Http { host, error });
            }
        }
    }

    /// KMS closed the connection.
    pub fn handle_eof(&mut self, now: Now) {
        if self.resend_if_stale(now) {
            return;
        }
        let State::Sending {
            parser,
            sent,
            signed_at,
            ..
        } = &mut self.state
        else {
            return;
        };
        let (sent, signed_at) = (*sent, *signed_at);
        match parser.eof() {
            Ok(response) => self.on_response(now, sent, signed_at, response),
            Err(error) => {
                self.release(false);
                let host = self.host.clone();
                self.retry_or_finish(now, CallError::Http { host, error });
            }
        }
    }

    /// The connection of a [`CallAction::Send`] could not be made, or failed.
    pub fn handle_transport_failure(&mut self, now: Now, failure: TransportFailure) {
        if !matches!(self.state, State::Sending { .. }) || self.resend_if_stale(now) {
            return;
        }
        self.release(false);
        let host = self.host.clone();
        self.retry_or_finish(now, CallError::Transport { host, failure });
    }

    /// The time [`Call::poll_timeout`] gave has come (early or late is harmless).
    pub fn handle_timeout(&mut self, now: Now) {
        if matches!(self.state, State::Done) {
            return;
        }
        if now.instant >= self.deadline {
            if matches!(self.state, State::Sending { .. }) {
                self.release(false);
            }
            let error = CallError::Timeout {
                after: self.deadline.saturating_duration_since(self.started),
                attempts: self.attempts,
                last: self.last_failure.take().map(Box::new),
            };
            return self.finish(Err(error));
        }
        if let State::Backoff { until } = self.state
            && now.instant >= until
        {
            self.send(now);
        }
    }

    /// The offset to KMS's clock this response shows, when it can be trusted: taken at the
    /// midpoint of a round trip shorter than [`skew::MAX_MEASURING_ROUND_TRIP`].
    fn measure_clock(
        &mut self,
        sent: Now,
        round_trip: Duration,
        kms_time: Option<SystemTime>,
    ) -> Option<ClockOffset> {
        let kms_time = kms_time?;
        if round_trip >= skew::MAX_MEASURING_ROUND_TRIP {
            return None;
        }
        let midpoint = sent.wall + round_trip / 2;
        let offset = ClockOffset::between(midpoint, kms_time);
        self.learned_offset = Some(offset);
        self.events.push_back(CallEvent::ClockOffset { offset });
        Some(offset)
    }

    /// Whether KMS refused the signature in a way that can mean skew, the first time in this
    /// call, with its `Date` more than [`skew::SKEW_RETRY_THRESHOLD`] from the time the
    /// request was signed at (the local clock, moved by the offset then in use: a stale
    /// offset is a skew too).
    fn refused_for_skew(
        &self,
        error: &KmsServiceError,
        signed_at: SystemTime,
        kms_time: Option<SystemTime>,
    ) -> bool {
        !self.skew_resent
            && skew::is_skew_error(error.error_type.as_deref())
            && kms_time.is_some_and(|at| {
                ClockOffset::between(signed_at, at).magnitude() > skew::SKEW_RETRY_THRESHOLD
            })
    }

    fn send(&mut self, now: Now) {
        self.sign_and_send(now, true);
    }

    /// This call's own measurement first, else the shared one `now` carries.
    fn signing_offset(&self, now: Now) -> ClockOffset {
        self.learned_offset.unwrap_or(now.kms_clock_offset)
    }

    /// Signs the request at the local time moved by the offset known (this call's own
    /// measurement first, else the shared one in `now`) and sends it; `new_attempt`: it counts
    /// as an attempt.
    fn sign_and_send(&mut self, now: Now, new_attempt: bool) {
        if new_attempt {
            self.attempts += 1;
        }
        let signing_time = self.signing_offset(now).apply(now.wall);
        let target = RequestTarget {
            host: &self.host,
            region: &self.region,
            credentials: &self.credentials,
        };
        let request =
            match request::http_request(&target, self.request.target(), &self.body, signing_time) {
                Ok(request) => request,
                Err(error) => {
                    let detail = format!("request not sendable: {error}");
                    return self.finish(Err(CallError::Internal(detail)));
                }
            };
        self.events.push_back(CallEvent::Attempt {
            attempt: self.attempts,
            host: self.host.clone(),
        });
        self.sending(now, Arc::new(request), signing_time, true);
    }

    /// Hands `request` to the driver, as of `now`, on a connection not known to be pooled yet.
    fn sending(
        &mut self,
        now: Now,
        request: SharedRequest,
        signed_at: SystemTime,
        may_reuse: bool,
    ) {
        self.state = State::Sending {
            parser: ResponseParser::new(self.config.http_limits),
            sent: now,
            signed_at,
            request: Arc::clone(&request),
            reused: false,
            received_any: false,
        };
        self.actions.push_back(CallAction::Send {
            host: self.host.clone(),
            request,
            may_reuse,
        });
    }

    /// A pooled connection KMS closed while it sat idle shows up as end of stream (or a reset)
    /// before any byte of the answer. The request then goes again on a fresh connection, in the
    /// same attempt and with the same signature: a stale keep-alive never costs an attempt.
    fn resend_if_stale(&mut self, now: Now) -> bool {
        let State::Sending {
            request,
            signed_at,
            reused: true,
            received_any: false,
            ..
        } = &self.state
        else {
            return false;
        };
        let (request, signed_at) = (Arc::clone(request), *signed_at);
        self.release(false);
        self.sending(now, request, signed_at, false);
        true
    }

    fn release(&mut self, reusable: bool) {
        self.actions.push_back(CallAction::Release { reusable });
    }

    fn on_response(&mut self, now: Now, sent: Now, signed_at: SystemTime, response: Response) {
        let error_type_header = response.header("x-amzn-errortype");
        let parsed = response::parse(response.status, error_type_header, &response.body);
        let latency = now.instant.saturating_duration_since(sent.instant);
        let kms_time = response.header("date").and_then(skew::parse_http_date);
        let measured = self.measure_clock(sent, latency, kms_time);
        self.last_answer = Some((response.status, latency));
        self.release(response.reusable);
        self.events.push_back(CallEvent::Answered {
            status: response.status,
            error_type: match &parsed {
                Err(KmsResponseError::Service(e)) => e.error_type.clone(),
                _ => None,
            },
            latency,
        });
        match parsed {
            Ok(output) => {
                let result = self.success(output);
                self.finish(result);
            }
            Err(KmsResponseError::Service(error)) => {
                if let Some(offset) = measured
                    && self.refused_for_skew(&error, signed_at, kms_time)
                {
                    // Signed again at KMS's time and sent at once: no attempt used, and only
                    // once per call, so a refusal that persists is reported.
                    self.skew_resent = true;
                    self.events.push_back(CallEvent::Retry {
                        delay: Duration::ZERO,
                        reason: format!(
                            "{}; signing again with KMS's clock ({offset} from ours)",
                            CallError::Kms(error)
                        ),
                    });
                    self.sign_and_send(now, false);
                    return;
                }
                self.retry_or_finish(now, CallError::Kms(error));
            }
            Err(KmsResponseError::Malformed(detail)) => {
                self.finish(Err(CallError::BadResponse(detail.to_string())));
            }
        }
    }

    fn retry_or_finish(&mut self, now: Now, error: CallError) {
        if error.retryable() && self.attempts < self.config.max_attempts {
            let delay = self.config.backoff.delay(self.attempts, self.rng.next());
            let until = now.instant + delay;
            if until < self.deadline {
                self.events.push_back(CallEvent::Retry {
                    delay,
                    reason: error.to_string(),
                });
                self.state = State::Backoff { until };
                self.last_failure = Some(error);
                return;
            }
        }
        self.finish(Err(error));
    }

    fn finish(&mut self, result: Result<CallOutput, CallError>) {
        self.state = State::Done;
        if let Err(CallError::Unwrap(error)) = &result {
            self.events.push_back(CallEvent::UnwrapFailed {
                detail: error.to_string(),
            });
        }
        self.result = Some(result);
    }

    /// Opens the response's `CiphertextForRecipient` and checks that the operation's fields
    /// are there.
    fn success(&self, output: KmsOutput) -> Result<CallOutput, CallError> {
        if output.key_material_in_plaintext {
            return Err(CallError::BadResponse(
                "KMS returned key material in plaintext instead of for the recipient; refused"
                    .into(),
            ));
        }
        let secret = if self.request.takes_recipient() {
            let envelope = output
                .ciphertext_for_recipient
                .as_deref()
                .ok_or_else(|| CallError::BadResponse("no CiphertextForRecipient".into()))?;
            let key = self
                .key
                .as_deref()
                .ok_or_else(|| CallError::Internal("no enclave key for this call".into()))?;
            let secret = cms::unwrap(envelope, key).map_err(CallError::Unwrap)?;
            self.check_length(&secret)?;
            secret
        } else {
            SecretBytes::default()
        };
        let required = |present: bool, name: &str| match present {
            true => Ok(()),
            false => Err(CallError::BadResponse(format!("no {name}"))),
        };
        match &self.request {
            KmsRequest::GenerateDataKey(_) | KmsRequest::Encrypt(_) => {
                required(output.ciphertext_blob.is_some(), "CiphertextBlob")?;
            }
            KmsRequest::GenerateDataKeyPair(_) => {
                required(output.public_key.is_some(), "PublicKey")?;
                required(
                    output.private_key_ciphertext_blob.is_some(),
                    "PrivateKeyCiphertextBlob",
                )?;
            }
            KmsRequest::Decrypt(_)
            | KmsRequest::GenerateRandom(_)
            | KmsRequest::DeriveSharedSecret(_) => {}
        }
        // What was asked for, where KMS leaves out what it used.
        let (asked_spec, asked_algorithm) = match &self.request {
            KmsRequest::GenerateDataKeyPair(g) => (Some(g.key_pair_spec.clone()), None),
            KmsRequest::DeriveSharedSecret(d) => {
                (None, Some(d.key_agreement_algorithm.as_str().to_owned()))
            }
            _ => (None, None),
        };
        Ok(CallOutput {
            secret,
            key_id: output.key_id,
            encryption_algorithm: output.encryption_algorithm,
            ciphertext_blob: output.ciphertext_blob,
            public_key: output.public_key,
            private_key_ciphertext_blob: output.private_key_ciphertext_blob,
            key_pair_spec: output.key_pair_spec.or(asked_spec),
            key_agreement_algorithm: output.key_agreement_algorithm.or(asked_algorithm),
            key_origin: output.key_origin,
        })
    }

    fn check_length(&self, secret: &SecretBytes) -> Result<(), CallError> {
        let expected = match &self.request {
            // Their length is the key's or the curve's, which KMS chose.
            KmsRequest::Decrypt(_)
            | KmsRequest::GenerateDataKeyPair(_)
            | KmsRequest::DeriveSharedSecret(_)
            | KmsRequest::Encrypt(_) => return Ok(()),
            KmsRequest::GenerateRandom(r) => r.number_of_bytes as usize,
            KmsRequest::GenerateDataKey(g) => match g.size {
                DataKeySize::KeySpec(KeySpec::Aes256) => 32,
                DataKeySize::KeySpec(KeySpec::Aes128) => 16,
                DataKeySize::NumberOfBytes(n) => n as usize,
            },
        };
        if secret.len() == expected {
            Ok(())
        } else {
            Err(CallError::BadResponse(format!(
                "expected {expected} bytes of key material, got {}",
                secret.len()
            )))
        }
    }
}

/// A small deterministic generator for retry jitter (not for anything secret).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let b = Backoff::default();
        for (attempts, lo, hi) in [
            (1, 50, 100),
            (2, 100, 200),
            (3, 200, 400),
            (6, 1000, 2000),
            (30, 1000, 2000),
        ] {
            for random in [0, 1, 12_345, u64::MAX] {
                let d = b.delay(attempts, random).as_millis();
                assert!((lo..=hi).contains(&d), "attempt {attempts}: {d} ms");
            }
        }
        assert_eq!(b.delay(1, 0), Duration::from_millis(50));
        assert_eq!(b.delay(1, 50_000), Duration::from_millis(100));
    }
}
