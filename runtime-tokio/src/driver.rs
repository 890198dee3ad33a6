//! The loop that drives one [`EnclaveSession`]: drain outputs, wait on the client, the NSM,
//! KMS and the timer, feed one input. No protocol logic lives here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use kmstool_core::session::{
    Attestation, AttestationFailure, CallId, EnclaveSession, Now, Output, SessionEvent,
    TransportFailure, TransportStage,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::kms::KmsStream;
use crate::server::Shared;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// The KMS side of the session's current call.
enum Kms {
    Idle,
    /// Connecting (or taking a pooled connection) and writing the request.
    Sending {
        call: CallId,
        host: String,
        future: BoxFuture<Result<(Box<KmsStream>, bool), TransportFailure>>,
        request: Arc<Zeroizing<Vec<u8>>>,
    },
    /// Request written; reading the answer.
    Reading {
        call: CallId,
        host: String,
        stream: Box<KmsStream>,
        /// Taken from the pool: a close before any byte means KMS had dropped it while idle.
        reused: bool,
        received_any: bool,
        request: Arc<Zeroizing<Vec<u8>>>,
    },
}

fn now() -> Now {
    Now::new(Instant::now().into_std(), SystemTime::now())
}

/// Serves one client connection until the session closes, the client vanishes, or shutdown
/// has drained it.
pub(crate) async fn drive<S>(
    stream: S,
    connection: u64,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut session =
        EnclaveSession::new(Arc::clone(&shared.session), rand_seed(connection), now());
    let mut client_buf = Zeroizing::new(vec![0u8; READ_CHUNK]);
    let mut kms_buf = vec![0u8; READ_CHUNK];
    let mut attesting: Option<(CallId, BoxFuture<Result<Attestation, AttestationFailure>>)> = None;
    let mut kms = Kms::Idle;
    let mut draining = *shutdown.borrow();
    if draining {
        session.handle_client_eof(now());
    }
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                Output::ToClient(bytes) => {
                    if writer.write_all(&bytes).await.is_err() {
                        tracing::debug!(connection, "client went away");
                        return;
                    }
                }
                Output::Attest(call) => {
                    let keys = Arc::clone(&shared.keys);
                    attesting = Some((call, Box::pin(async move { keys.attest().await })));
                }
                Output::KmsSend {
                    call,
                    host,
                    request,
                } => {
                    let request = Arc::new(request);
                    kms = Kms::Sending {
                        call,
                        future: send(
                            Arc::clone(&shared),
                            host.clone(),
                            Arc::clone(&request),
                            true,
                        ),
                        host,
                        request,
                    };
                }
                Output::KmsRelease { call, reusable } => {
                    kms = match std::mem::replace(&mut kms, Kms::Idle) {
                        Kms::Reading {
                            call: c,
                            host,
                            stream,
                            ..
                        } if c == call && reusable => {
                            shared.kms.checkin(&host, stream);
                            Kms::Idle
                        }
                        Kms::Reading { call: c, .. } | Kms::Sending { call: c, .. }
                            if c == call =>
                        {
                            Kms::Idle
                        }
                        other => other,
                    };
                }
                Output::Event(event) => log_event(connection, &event),
                Output::Close(reason) => {
                    tracing::debug!(connection, %reason, "closing");
                    let _ = writer.shutdown().await;
                    return;
                }
            }
        }

        let deadline = session.poll_timeout();
        let reading = session.wants_client_bytes() && !draining;
        tokio::select! {
            read = reader.read(&mut client_buf[..]), if reading => match read {
                Ok(0) | Err(_) => session.handle_client_eof(now()),
                Ok(n) => session.handle_client_bytes(now(), &client_buf[..n]),
            },
            changed = shutdown.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    tracing::debug!(connection, "shutdown: finishing in-flight commands");
                }
                session.handle_client_eof(now());
            }
            result = poll_attestation(&mut attesting) => {
                if let Some((call, _)) = attesting.take() {
                    session.handle_attestation(now(), call, result);
                }
            }
            event = poll_kms(&mut kms, &mut kms_buf) => {
                handle_kms_event(&shared, &mut session, &mut kms, event, &kms_buf);
            }
            () = sleep_until(deadline) => session.handle_timeout(now()),
        }
    }
}

/// What happened on the KMS side.
enum KmsEvent {
    Sent(Result<(Box<KmsStream>, bool), TransportFailure>),
    Read(std::io::Result<usize>),
}

fn handle_kms_event(
    shared: &Arc<Shared>,
    session: &mut EnclaveSession,
    kms: &mut Kms,
    event: KmsEvent,
    buf: &[u8],
) {
    match (std::mem::replace(kms, Kms::Idle), event) {
        (
            Kms::Sending {
                call,
                host,
                request,
                ..
            },
            KmsEvent::Sent(Ok((stream, reused))),
        ) => {
            *kms = Kms::Reading {
                call,
                host,
                stream,
                reused,
                received_any: false,
                request,
            };
        }
        (Kms::Sending { call, .. }, KmsEvent::Sent(Err(failure))) => {
            session.handle_kms_failure(now(), call, failure);
        }
        (
            Kms::Reading {
                call,
                host,
                reused: true,
                received_any: false,
                request,
                ..
            },
            KmsEvent::Read(Ok(0) | Err(_)),
        ) => {
            // A pooled connection KMS had closed while idle: resend on a fresh one.
            tracing::debug!(%call, "pooled KMS connection was stale; reconnecting");
            *kms = Kms::Sending {
                call,
                future: send(
                    Arc::clone(shared),
                    host.clone(),
                    Arc::clone(&request),
                    false,
                ),
                host,
                request,
            };
        }
        (Kms::Reading { call, .. }, KmsEvent::Read(Ok(0))) => session.handle_kms_eof(now(), call),
        (Kms::Reading { call, .. }, KmsEvent::Read(Err(error))) => {
            session.handle_kms_failure(
                now(),
                call,
                TransportFailure::new(TransportStage::Io, error.to_string()),
            );
        }
        (
            Kms::Reading {
                call,
                host,
                stream,
                reused,
                request,
                ..
            },
            KmsEvent::Read(Ok(n)),
        ) => {
            // Restore the state first: the bytes may complete the response, and the session
            // then asks for the connection back (KmsRelease).
            *kms = Kms::Reading {
                call,
                host,
                stream,
                reused,
                received_any: true,
                request,
            };
            session.handle_kms_bytes(now(), call, buf.get(..n).unwrap_or_default());
        }
        (state, _) => *kms = state,
    }
}

/// Takes a connection (pooled if `may_reuse`) and writes the request.
fn send(
    shared: Arc<Shared>,
    host: String,
    request: Arc<Zeroizing<Vec<u8>>>,
    may_reuse: bool,
) -> BoxFuture<Result<(Box<KmsStream>, bool), TransportFailure>> {
    Box::pin(async move {
        let (mut stream, reused) = shared.kms.checkout(&host, may_reuse).await?;
        let write = async {
            stream.write_all(&request).await?;
            stream.flush().await
        };
        match write.await {
            Ok(()) => Ok((stream, reused)),
            Err(error) => Err(TransportFailure::new(TransportStage::Io, error.to_string())),
        }
    })
}

async fn poll_attestation(
    attesting: &mut Option<(CallId, BoxFuture<Result<Attestation, AttestationFailure>>)>,
) -> Result<Attestation, AttestationFailure> {
    match attesting {
        Some((_, future)) => future.await,
        None => std::future::pending().await,
    }
}

async fn poll_kms(kms: &mut Kms, buf: &mut [u8]) -> KmsEvent {
    match kms {
        Kms::Idle => std::future::pending().await,
        Kms::Sending { future, .. } => KmsEvent::Sent(future.await),
        Kms::Reading { stream, .. } => KmsEvent::Read(stream.read(buf).await),
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

fn log_event(connection: u64, event: &SessionEvent) {
    match event {
        SessionEvent::KmsAttempt { .. } => tracing::debug!(connection, "{event}"),
        SessionEvent::KmsRetry { .. } => tracing::warn!(connection, "{event}"),
        SessionEvent::ClientSet { .. }
        | SessionEvent::CommandRejected { .. }
        | SessionEvent::KmsAnswered { .. }
        | SessionEvent::Replied { .. } => tracing::info!(connection, "{event}"),
    }
}

fn rand_seed(connection: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ connection.rotate_left(32)
}
