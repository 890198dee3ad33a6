//! The emulator's IO: a TCP (or Unix, or vsock) listener, TLS (rustls, ALPN `http/1.1`), keep-alive connections
//! carrying many requests, and for each request: faults, protocol checks, SigV4, the
//! operation, and an answer shaped like KMS's.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kmstool_runtime_tokio::net::{Listener, Stream};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::auth::Verifier;
use super::clock::{Clock, http_date};
use super::credentials::SimCredentials;
use super::error::KmsError;
use super::faults::{FaultSchedule, Injection};
use super::handlers::{self, Context, Operation};
use super::http::{ReadOutcome, Request, Response, read_request};
use super::keystore::{Keystore, fill_random, format_uuid};
use super::recipient::{AttestationPolicy, AttestationVerifier};

/// `Content-Type` of KMS requests and answers.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Counters of what the emulator has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// TLS connections accepted (handshake completed).
    pub connections: u64,
    /// HTTP requests read.
    pub requests: u64,
    /// Requests per operation named by `X-Amz-Target` (whether or not they succeeded).
    pub by_operation: BTreeMap<&'static str, u64>,
    /// Requests answered with an injected fault (or dropped).
    pub faults_injected: u64,
    /// Requests answered 200.
    pub succeeded: u64,
    /// The most recent requests (at most [`JOURNAL_LEN`]), oldest first.
    pub recent: VecDeque<RequestRecord>,
}

/// How many requests [`Stats::recent`] keeps.
pub const JOURNAL_LEN: usize = 64;

/// What one request asked for and how it was answered (no secrets: KMS requests carry none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestRecord {
    /// `X-Amz-Target`.
    pub target: Option<String>,
    /// The access key id the `Authorization` header names (who signed the request).
    pub access_key_id: Option<String>,
    /// `KeyId` of the body.
    pub key_id: Option<String>,
    /// Keys of the body's `EncryptionContext`.
    pub encryption_context_keys: Vec<String>,
    /// The body's `GrantTokens`.
    pub grant_tokens: Vec<String>,
    /// Size of `Recipient.AttestationDocument` (base64 characters), if a Recipient was sent.
    pub attestation_document_chars: Option<usize>,
    /// HTTP status of the answer (0 when the connection was dropped).
    pub status: u16,
    /// `__type` of an error answer.
    pub error_type: Option<String>,
    /// Size of `CiphertextForRecipient` in the answer (base64 characters).
    pub ciphertext_for_recipient_chars: Option<usize>,
    /// The emulator's own time for the request, from the request read to the answer ready to
    /// write (injected latency included): what a benchmark subtracts to see a client's share.
    pub service_time: Duration,
}

impl RequestRecord {
    fn of(request: &Request) -> Self {
        let body: serde_json::Value =
            serde_json::from_slice(&request.body).unwrap_or(serde_json::Value::Null);
        Self {
            target: request.header("x-amz-target").map(str::to_owned),
            access_key_id: request
                .header("authorization")
                .and_then(|auth| auth.split("Credential=").nth(1))
                .and_then(|credential| credential.split('/').next())
                .map(str::to_owned),
            key_id: body["KeyId"].as_str().map(str::to_owned),
            encryption_context_keys: body["EncryptionContext"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            grant_tokens: body["GrantTokens"]
                .as_array()
                .map(|tokens| {
                    tokens
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            attestation_document_chars: body["Recipient"]["AttestationDocument"]
                .as_str()
                .map(str::len),
            ..Self::default()
        }
    }
}

/// State shared by every connection.
#[derive(Debug)]
pub(super) struct Shared {
    pub keystore: Mutex<Keystore>,
    pub credentials: RwLock<Vec<SimCredentials>>,
    pub verifier: Option<Arc<dyn AttestationVerifier>>,
    pub require_pcr0: Option<Vec<u8>>,
    pub schedule: Mutex<FaultSchedule>,
    pub stats: Mutex<Stats>,
    pub clock: Clock,
    pub region: String,
    pub max_skew: Duration,
    pub max_body: usize,
    pub idle_timeout: Duration,
}

/// What to do after a request.
enum Outcome {
    Reply(Response),
    /// Write the first half of the answer, then close.
    Truncate(Response),
    Drop,
}

impl Shared {
    fn count(&self, update: impl FnOnce(&mut Stats)) {
        if let Ok(mut stats) = self.stats.lock() {
            update(&mut stats);
        }
    }

    async fn respond(&self, request: &Request) -> Outcome {
        let started = tokio::time::Instant::now();
        let mut record = RequestRecord::of(request);
        let outcome = self.answer(request).await;
        match &outcome {
            Outcome::Reply(response) => {
                record.status = response.status;
                let body: serde_json::Value =
                    serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
                record.error_type = body["__type"].as_str().map(str::to_owned);
                record.ciphertext_for_recipient_chars =
                    body["CiphertextForRecipient"].as_str().map(str::len);
            }
            Outcome::Truncate(_) | Outcome::Drop => record.status = 0,
        }
        record.service_time = started.elapsed();
        self.count(|s| {
            if s.recent.len() == JOURNAL_LEN {
                s.recent.pop_front();
            }
            s.recent.push_back(record);
        });
        outcome
    }

    async fn answer(&self, request: &Request) -> Outcome {
        let (latency, injection) = match self.schedule.lock() {
            Ok(mut schedule) => (schedule.faults().latency, schedule.next_request()),
            Err(_) => (Duration::ZERO, Injection::None),
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let result = match injection {
            Injection::None | Injection::Truncate => self.serve(request),
            Injection::Drop => {
                self.count(|s| s.faults_injected += 1);
                return Outcome::Drop;
            }
            Injection::Throttle => {
                self.count(|s| s.faults_injected += 1);
                Err(KmsError::throttling())
            }
            Injection::Internal => {
                self.count(|s| s.faults_injected += 1);
                Err(KmsError::internal())
            }
        };
        let truncate = injection == Injection::Truncate;
        let response = match result {
            Ok(body) => {
                if !truncate {
                    self.count(|s| s.succeeded += 1);
                }
                Response::new(200, body)
            }
            Err(error) => Response::new(error.status, error.body())
                .with_header("x-amzn-ErrorType", error.header_type()),
        };
        let response = self.finish(response, request.close);
        if truncate {
            self.count(|s| s.faults_injected += 1);
            return Outcome::Truncate(response);
        }
        Outcome::Reply(response)
    }

    /// Adds the headers every KMS answer carries.
    fn finish(&self, response: Response, close: bool) -> Response {
        let mut id = [0u8; 16];
        fill_random(&mut id);
        let response = response
            .with_header("x-amzn-RequestId", format_uuid(&id))
            .with_header("Content-Type", CONTENT_TYPE)
            .with_header("Date", http_date(self.clock.now()));
        if close {
            response.with_header("Connection", "close")
        } else {
            response
        }
    }

    /// Protocol checks, authentication, then the operation.
    fn serve(&self, request: &Request) -> Result<Vec<u8>, KmsError> {
        let op = request
            .header("x-amz-target")
            .and_then(Operation::from_target);
        if let Some(op) = op {
            self.count(|s| *s.by_operation.entry(op.name()).or_default() += 1);
        }
        let json = request
            .header("content-type")
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(CONTENT_TYPE));
        let (Some(op), true, "POST", "/") =
            (op, json, request.method.as_str(), request.target.as_str())
        else {
            return Err(KmsError::unknown_operation());
        };
        let credentials = self.credentials.read().map_err(|_| KmsError::internal())?;
        let now = self.clock.now();
        let verifier = Verifier {
            credentials: &credentials,
            region: &self.region,
            now,
            max_skew: self.max_skew,
        };
        let principal = verifier.verify(request)?;
        let ctx = Context {
            keystore: &self.keystore,
            verifier: self.verifier.as_deref(),
            policy: AttestationPolicy {
                require_pcr0: self.require_pcr0.as_deref(),
            },
            principal,
            now,
        };
        handlers::handle(op, &request.body, &ctx)
    }
}

/// Accepts connections until `shutdown` turns true, then waits for open connections to end.
pub(super) async fn serve(
    listener: Listener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let shared = Arc::clone(&shared);
                let shutdown = shutdown.clone();
                connections.spawn(connection(stream, acceptor, shared, shutdown));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    connections.shutdown().await;
}

async fn connection(
    stream: Stream,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The listener has set TCP_NODELAY on TCP streams.
    let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
    let Ok(Ok(mut tls)) = handshake.await else {
        return;
    };
    shared.count(|s| s.connections += 1);
    let mut buf = Vec::new();
    loop {
        let next = tokio::select! {
            read = tokio::time::timeout(
                shared.idle_timeout,
                read_request(&mut tls, &mut buf, shared.max_body),
            ) => read,
            _ = shutdown.changed() => return,
        };
        let request = match next {
            Ok(Ok(ReadOutcome::Request(request))) => request,
            Ok(Ok(ReadOutcome::Invalid(_))) => {
                let response = Response::new(400, Vec::new()).with_header("Connection", "close");
                let _ = response.write_to(&mut tls).await;
                return;
            }
            // Closed by the peer, an IO error, or idle for too long: KMS closes idle
            // keep-alive connections too.
            Ok(Ok(ReadOutcome::Closed)) | Ok(Err(_)) | Err(_) => return,
        };
        shared.count(|s| s.requests += 1);
        match shared.respond(&request).await {
            Outcome::Reply(response) => {
                if response.write_to(&mut tls).await.is_err() {
                    return;
                }
                if request.close {
                    let _ = tls.shutdown().await;
                    return;
                }
            }
            Outcome::Truncate(response) => {
                let bytes = response.to_bytes();
                let half = bytes.get(..bytes.len() / 2).unwrap_or_default();
                let _ = tls.write_all(half).await;
                let _ = tls.flush().await;
                return;
            }
            // Dropping the stream closes the TCP connection with no answer and no TLS
            // close_notify, as a connection lost mid-request looks.
            Outcome::Drop => return,
        }
    }
}
