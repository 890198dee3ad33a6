//! One KMS call of a session: attestation, signed request, retries, response, unwrap.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::config::{Backoff, SessionConfig};
use super::event::{KmsSummary, SessionEvent};
use super::{Now, Output};
use crate::cms::{self, CmsError};
use crate::crypto::RecipientKey;
use crate::http::{HttpError, HttpLimits, Progress, Response, ResponseParser};
use crate::kms::request::{self, KmsCall, RequestTarget};
use crate::kms::response::{self, KmsOutput, KmsResponseError, KmsServiceError};
use crate::protocol::{DataKeySize, ErrorKind, KeySpec, Operation, Reply};
use crate::secret::{Credentials, SecretBytes};

/// Identifies one KMS call of a session in outputs and inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub(super) u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call#{}", self.0)
    }
}

/// A signed KMS request, shared between the session (which may have to send it again) and the
/// driver writing it. It holds a signature made with the client's credentials.
pub type SharedRequest = Arc<Zeroizing<Vec<u8>>>;

/// An attestation document and the key pair it binds.
#[derive(Debug, Clone)]
pub struct Attestation {
    /// The enclave key whose public half is in the document.
    pub key: Arc<RecipientKey>,
    /// The COSE_Sign1 document from the NSM.
    pub document: Vec<u8>,
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

/// Why a call ends without a result.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    Attestation(AttestationFailure),
    Transport {
        host: String,
        failure: TransportFailure,
    },
    Http {
        host: String,
        error: HttpError,
    },
    Kms(KmsServiceError),
    BadResponse(String),
    Unwrap(CmsError),
    Timeout {
        after: Duration,
        attempts: u32,
        last: Option<Box<Failure>>,
    },
    Internal(String),
}

impl Failure {
    pub(super) fn internal(detail: &str) -> Self {
        Self::Internal(detail.to_owned())
    }

    fn retryable(&self) -> bool {
        match self {
            Self::Transport { failure, .. } => failure.stage != TransportStage::Tls,
            Self::Http { .. } => true,
            Self::Kms(error) => error.retryable,
            _ => false,
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            Self::Attestation(_) => ErrorKind::Attestation,
            Self::Transport { .. } | Self::Http { .. } => ErrorKind::Transport,
            Self::Kms(_) => ErrorKind::Kms,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::BadResponse(_) | Self::Unwrap(_) | Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The error reply for `operation`: `<what failed>: <why>`.
    ///
    /// A `CiphertextForRecipient` that does not open gets one fixed text per operation,
    /// whatever went wrong: telling a bad padding from a wrong key id or a truncated envelope
    /// would hand a padding oracle to whoever can forge KMS's answers (a parent holding a
    /// mis-issued certificate). The detail goes to [`SessionEvent::UnwrapFailed`] only.
    pub(super) fn reply(&self, operation: Operation) -> Reply {
        let why = match self {
            Self::Unwrap(_) => UNWRAP_FAILED.to_owned(),
            other => other.to_string(),
        };
        let mut reply = Reply::error(self.kind(), format!("{}: {why}", failure_prefix(operation)));
        if let Self::Kms(error) = self {
            reply.kms_error_type = error.error_type.clone();
            reply.kms_status = Some(error.status);
        }
        reply
    }
}

impl fmt::Display for Failure {
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
            Self::Unwrap(error) => write!(f, "could not open CiphertextForRecipient: {error}"),
            Self::Timeout {
                after,
                attempts,
                last,
            } if *attempts == 0 => write!(
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

/// What the client is told, after the operation's prefix, about any CMS unwrap failure.
const UNWRAP_FAILED: &str = "the response from KMS could not be opened";

/// Upstream's text for a failed Decrypt, and ours for the extension operations.
fn failure_prefix(operation: Operation) -> &'static str {
    match operation {
        Operation::Decrypt | Operation::SetClient => "Could not decrypt ciphertext",
        Operation::GenerateDataKey => "Could not generate data key",
        Operation::GenerateRandom => "Could not generate random bytes",
    }
}

/// What a step of the call produced.
#[derive(Debug)]
pub(super) enum Step {
    /// Outputs to emit; the call goes on.
    Continue(Vec<Output>),
    /// Outputs to emit, then this reply ends the call.
    Finish(Vec<Output>, Reply),
}

#[derive(Debug)]
enum State {
    Attesting,
    /// The request is with the driver: being written, then its answer read.
    Sending {
        parser: ResponseParser,
        sent: Instant,
        request: SharedRequest,
        /// The driver wrote it on a pooled connection ([`ActiveCall::kms_sent`]).
        reused: bool,
        /// Some of the answer has arrived.
        received_any: bool,
    },
    Waiting {
        until: Instant,
    },
}

/// The call a session is working on.
#[derive(Debug)]
pub(super) struct ActiveCall {
    id: CallId,
    call: KmsCall,
    request_id: Option<String>,
    received: Instant,
    started: Instant,
    deadline: Instant,
    credentials: Credentials,
    region: String,
    host: String,
    attempts: u32,
    max_attempts: u32,
    backoff: Backoff,
    http_limits: HttpLimits,
    state: State,
    key: Option<Arc<RecipientKey>>,
    body: Vec<u8>,
    last_failure: Option<Failure>,
    last_answer: Option<(u16, Duration)>,
}

/// Who the call speaks for: a snapshot of the session's client when the call started.
#[derive(Debug)]
pub(super) struct CallClient<'a> {
    pub credentials: &'a Credentials,
    pub region: &'a str,
    pub host: &'a str,
}

impl ActiveCall {
    pub(super) fn new(
        id: CallId,
        call: KmsCall,
        request_id: Option<String>,
        received: Instant,
        now: Now,
        client: CallClient<'_>,
        config: &SessionConfig,
    ) -> Self {
        Self {
            id,
            call,
            request_id,
            received,
            started: now.instant,
            deadline: now.instant + config.kms_call_timeout,
            credentials: client.credentials.clone(),
            region: client.region.to_owned(),
            host: client.host.to_owned(),
            attempts: 0,
            max_attempts: config.max_attempts.max(1),
            backoff: config.backoff,
            http_limits: config.http_limits,
            state: State::Attesting,
            key: None,
            body: Vec::new(),
            last_failure: None,
            last_answer: None,
        }
    }

    pub(super) fn id(&self) -> CallId {
        self.id
    }

    pub(super) fn operation(&self) -> Operation {
        self.call.operation()
    }

    pub(super) fn request_id(&mut self) -> Option<String> {
        self.request_id.take()
    }

    /// What KMS last answered, for the reply's log line.
    pub(super) fn kms_summary(&self) -> Option<KmsSummary> {
        self.last_answer.map(|(status, latency)| KmsSummary {
            status,
            latency,
            attempts: self.attempts,
        })
    }

    pub(super) fn received(&self) -> Instant {
        self.received
    }

    /// The earliest time [`ActiveCall::timer`] has something to do.
    pub(super) fn next_deadline(&self) -> Instant {
        match self.state {
            State::Waiting { until } => until.min(self.deadline),
            _ => self.deadline,
        }
    }

    pub(super) fn attested(
        &mut self,
        now: Now,
        result: Result<Attestation, AttestationFailure>,
    ) -> Step {
        if !matches!(self.state, State::Attesting) {
            return Step::Continue(Vec::new());
        }
        match result {
            Ok(attestation) => {
                self.body = self.call.body(&attestation.document);
                self.key = Some(attestation.key);
                self.send(now)
            }
            Err(failure) => self.finish(Vec::new(), Failure::Attestation(failure)),
        }
    }

    fn send(&mut self, now: Now) -> Step {
        self.attempts += 1;
        let target = RequestTarget {
            host: &self.host,
            region: &self.region,
            credentials: &self.credentials,
        };
        let request = match request::http_request(&target, self.call.target(), &self.body, now.wall)
        {
            Ok(request) => request,
            Err(error) => {
                return self.finish(
                    Vec::new(),
                    Failure::Internal(format!("request not sendable: {error}")),
                );
            }
        };
        let request = self.sending(now, Arc::new(request));
        Step::Continue(vec![
            Output::Event(SessionEvent::KmsAttempt {
                call: self.id,
                operation: self.operation(),
                attempt: self.attempts,
                host: self.host.clone(),
            }),
            Output::KmsSend {
                call: self.id,
                host: self.host.clone(),
                request,
                may_reuse: true,
            },
        ])
    }

    /// Hands `request` to the driver (as of `now`, on a connection not known to be pooled yet)
    /// and returns it for the [`Output::KmsSend`].
    fn sending(&mut self, now: Now, request: SharedRequest) -> SharedRequest {
        self.state = State::Sending {
            parser: ResponseParser::new(self.http_limits),
            sent: now.instant,
            request: Arc::clone(&request),
            reused: false,
            received_any: false,
        };
        request
    }

    /// The driver wrote the request; `reused`: on a pooled connection.
    pub(super) fn kms_sent(&mut self, reused: bool) {
        if let State::Sending { reused: r, .. } = &mut self.state {
            *r = reused;
        }
    }

    /// A pooled connection KMS closed while it sat idle shows up as end of stream (or a reset)
    /// before any byte of the answer. The request then goes again on a fresh connection, in the
    /// same attempt and with the same signature: a stale keep-alive never costs an attempt.
    fn resend_if_stale(&mut self, now: Now) -> Option<Step> {
        let State::Sending {
            request,
            reused: true,
            received_any: false,
            ..
        } = &self.state
        else {
            return None;
        };
        let request = self.sending(now, Arc::clone(request));
        Some(Step::Continue(vec![
            self.release(false),
            Output::KmsSend {
                call: self.id,
                host: self.host.clone(),
                request,
                may_reuse: false,
            },
        ]))
    }

    pub(super) fn kms_bytes(&mut self, now: Now, bytes: &[u8], random: u64) -> Step {
        let State::Sending {
            parser,
            sent,
            received_any,
            ..
        } = &mut self.state
        else {
            return Step::Continue(Vec::new());
        };
        *received_any |= !bytes.is_empty();
        let sent = *sent;
        match parser.feed(bytes) {
            Ok(Progress::NeedMore) => Step::Continue(Vec::new()),
            Ok(Progress::Complete(response)) => self.on_response(now, sent, response, random),
            Err(error) => {
                let failure = Failure::Http {
                    host: self.host.clone(),
                    error,
                };
                self.retry_or_finish(now, vec![self.release(false)], failure, random)
            }
        }
    }

    pub(super) fn kms_eof(&mut self, now: Now, random: u64) -> Step {
        if let Some(step) = self.resend_if_stale(now) {
            return step;
        }
        let State::Sending { parser, sent, .. } = &mut self.state else {
            return Step::Continue(Vec::new());
        };
        let sent = *sent;
        match parser.eof() {
            Ok(response) => self.on_response(now, sent, response, random),
            Err(error) => {
                let failure = Failure::Http {
                    host: self.host.clone(),
                    error,
                };
                self.retry_or_finish(now, vec![self.release(false)], failure, random)
            }
        }
    }

    pub(super) fn kms_failed(&mut self, now: Now, failure: TransportFailure, random: u64) -> Step {
        if !matches!(self.state, State::Sending { .. }) {
            return Step::Continue(Vec::new());
        }
        if let Some(step) = self.resend_if_stale(now) {
            return step;
        }
        let failure = Failure::Transport {
            host: self.host.clone(),
            failure,
        };
        self.retry_or_finish(now, vec![self.release(false)], failure, random)
    }

    pub(super) fn timer(&mut self, now: Now) -> Step {
        if now.instant >= self.deadline {
            let outputs = match self.state {
                State::Sending { .. } => vec![self.release(false)],
                _ => Vec::new(),
            };
            let failure = Failure::Timeout {
                after: self.deadline.saturating_duration_since(self.started),
                attempts: self.attempts,
                last: self.last_failure.take().map(Box::new),
            };
            return self.finish(outputs, failure);
        }
        match self.state {
            State::Waiting { until } if now.instant >= until => self.send(now),
            _ => Step::Continue(Vec::new()),
        }
    }

    fn release(&self, reusable: bool) -> Output {
        Output::KmsRelease {
            call: self.id,
            reusable,
        }
    }

    fn on_response(&mut self, now: Now, sent: Instant, response: Response, random: u64) -> Step {
        let error_type_header = response.header("x-amzn-errortype");
        let parsed = response::parse(response.status, error_type_header, &response.body);
        let latency = now.instant.saturating_duration_since(sent);
        self.last_answer = Some((response.status, latency));
        let mut outputs = vec![
            self.release(response.reusable),
            Output::Event(SessionEvent::KmsAnswered {
                call: self.id,
                operation: self.operation(),
                status: response.status,
                error_type: match &parsed {
                    Err(KmsResponseError::Service(e)) => e.error_type.clone(),
                    _ => None,
                },
                latency,
            }),
        ];
        match parsed {
            Ok(output) => match self.success(output) {
                Ok(reply) => {
                    self.state = State::Waiting {
                        until: self.deadline,
                    };
                    Step::Finish(outputs, reply)
                }
                Err(failure) => self.finish(outputs, failure),
            },
            Err(KmsResponseError::Service(error)) => self.retry_or_finish(
                now,
                std::mem::take(&mut outputs),
                Failure::Kms(error),
                random,
            ),
            Err(KmsResponseError::Malformed(detail)) => {
                self.finish(outputs, Failure::BadResponse(detail.to_string()))
            }
        }
    }

    fn retry_or_finish(
        &mut self,
        now: Now,
        mut outputs: Vec<Output>,
        failure: Failure,
        random: u64,
    ) -> Step {
        if failure.retryable() && self.attempts < self.max_attempts {
            let delay = self.backoff.delay(self.attempts, random);
            let until = now.instant + delay;
            if until < self.deadline {
                outputs.push(Output::Event(SessionEvent::KmsRetry {
                    call: self.id,
                    operation: self.operation(),
                    delay,
                    reason: failure.to_string(),
                }));
                self.state = State::Waiting { until };
                self.last_failure = Some(failure);
                return Step::Continue(outputs);
            }
        }
        self.finish(outputs, failure)
    }

    fn finish(&mut self, mut outputs: Vec<Output>, failure: Failure) -> Step {
        self.state = State::Waiting {
            until: self.deadline,
        };
        if let Failure::Unwrap(error) = &failure {
            outputs.push(Output::Event(SessionEvent::UnwrapFailed {
                call: self.id,
                operation: self.operation(),
                detail: error.to_string(),
            }));
        }
        Step::Finish(outputs, failure.reply(self.operation()))
    }

    /// Opens the response's `CiphertextForRecipient` and builds the success reply.
    fn success(&self, output: KmsOutput) -> Result<Reply, Failure> {
        if output.key_material_in_plaintext {
            return Err(Failure::BadResponse(
                "KMS returned key material in plaintext instead of for the recipient; refused"
                    .into(),
            ));
        }
        let envelope = output
            .ciphertext_for_recipient
            .as_deref()
            .ok_or_else(|| Failure::BadResponse("no CiphertextForRecipient".into()))?;
        let key = self
            .key
            .as_deref()
            .ok_or_else(|| Failure::internal("no enclave key for this call"))?;
        let plaintext = cms::unwrap(envelope, key).map_err(Failure::Unwrap)?;
        self.check_length(&plaintext)?;
        let mut reply = Reply::ok_with(plaintext.to_base64());
        reply.key_id = output.key_id;
        if let KmsCall::Decrypt(_) = self.call {
            reply.encryption_algorithm = output.encryption_algorithm;
        }
        if let KmsCall::GenerateDataKey(_) = self.call {
            let blob = output
                .ciphertext_blob
                .ok_or_else(|| Failure::BadResponse("no CiphertextBlob".into()))?;
            use base64::Engine as _;
            reply.ciphertext_blob = Some(base64::engine::general_purpose::STANDARD.encode(blob));
        }
        Ok(reply)
    }

    fn check_length(&self, plaintext: &SecretBytes) -> Result<(), Failure> {
        let expected = match &self.call {
            KmsCall::Decrypt(_) => return Ok(()),
            KmsCall::GenerateRandom(r) => r.number_of_bytes as usize,
            KmsCall::GenerateDataKey(g) => match g.size {
                DataKeySize::KeySpec(KeySpec::Aes256) => 32,
                DataKeySize::KeySpec(KeySpec::Aes128) => 16,
                DataKeySize::NumberOfBytes(n) => n as usize,
            },
        };
        if plaintext.len() == expected {
            Ok(())
        } else {
            Err(Failure::BadResponse(format!(
                "expected {expected} bytes of key material, got {}",
                plaintext.len()
            )))
        }
    }
}
