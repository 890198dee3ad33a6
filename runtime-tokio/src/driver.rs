//! The loop that carries out one [`EnclaveSession`] on tokio: act on its outputs, then wait in
//! one `select!` on what it asks for (a client read, a client write, the NSM, KMS, its timer)
//! and feed back what happened. Every decision — when to read, when to write, what a deadline
//! means, when to close — is the session's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use kmstool_core::kms::skew::KmsClock;
use kmstool_core::session::{
    Attestation, AttestationFailure, CallId, EnclaveSession, EventLevel, Now, Output,
    READ_CHUNK_BYTES, REPLY_BATCH_BYTES, SessionEvent, SharedRequest, TransportFailure,
    TransportStage,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::Shared;
use crate::kms::KmsStream;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

type SendFuture = BoxFuture<Result<(Box<KmsStream>, bool), TransportFailure>>;

/// The time, with the offset to KMS's clock the server learned.
fn now(clock: &KmsClock) -> Now {
    Now::new(Instant::now().into_std(), SystemTime::now()).with_kms_clock_offset(clock.offset())
}

/// The KMS request of the session's current call.
struct KmsWork {
    call: CallId,
    host: String,
    state: KmsState,
}

enum KmsState {
    /// Taking a connection and writing the request.
    Sending(SendFuture),
    /// Reading the answer.
    Reading(Box<KmsStream>),
}

/// What happened on the KMS side.
enum KmsEvent {
    Sent(Result<(Box<KmsStream>, bool), TransportFailure>),
    Read(std::io::Result<usize>),
}

/// Bytes for the client and how many of them are written.
type Transmit = Option<(Zeroizing<Vec<u8>>, usize)>;

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
    let mut session = EnclaveSession::new(
        Arc::clone(&shared.session),
        rand_seed(connection),
        now(&shared.kms_clock),
    );
    let mut read_buf = Zeroizing::new(vec![0u8; READ_CHUNK_BYTES]);
    let mut kms_buf = vec![0u8; READ_CHUNK_BYTES];
    let mut transmit: Transmit = None;
    let mut attesting: Option<(CallId, BoxFuture<Result<Attestation, AttestationFailure>>)> = None;
    let mut kms: Option<KmsWork> = None;
    let mut draining = *shutdown.borrow();
    if draining {
        session.handle_client_eof(now(&shared.kms_clock));
    }
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                Output::Attest(call) => {
                    let keys = Arc::clone(&shared.keys);
                    attesting = Some((call, Box::pin(async move { keys.attest().await })));
                }
                Output::KmsSend {
                    call,
                    host,
                    request,
                    may_reuse,
                } => {
                    let future = send(Arc::clone(&shared), host.clone(), request, may_reuse);
                    kms = Some(KmsWork {
                        call,
                        host,
                        state: KmsState::Sending(future),
                    });
                }
                Output::KmsRelease { call, reusable } => match kms.take() {
                    Some(KmsWork {
                        call: current,
                        host,
                        state: KmsState::Reading(stream),
                    }) if current == call && reusable => {
                        shared.kms.checkin(&host, stream);
                    }
                    Some(work) if work.call != call => kms = Some(work),
                    _ => {}
                },
                Output::Event(event) => {
                    note_clock(&shared.kms_clock, connection, &event);
                    log_event(connection, &event);
                }
                Output::Close(reason) => {
                    tracing::debug!(connection, %reason, "closing");
                    let _ = writer.shutdown().await;
                    return;
                }
            }
        }
        if transmit.is_none() {
            transmit = session.poll_transmit().map(|bytes| (bytes, 0));
            if transmit
                .as_ref()
                .is_some_and(|(b, _)| b.len() >= REPLY_BATCH_BYTES)
            {
                // A client pipelining hard: let the other connections have their turn.
                tokio::task::yield_now().await;
            }
        }

        let deadline = session.poll_timeout();
        let reading = session.wants_client_bytes() && !draining;
        tokio::select! {
            read = reader.read(&mut read_buf[..]), if reading => match read {
                Ok(0) | Err(_) => session.handle_client_eof(now(&shared.kms_clock)),
                Ok(n) => session.handle_client_bytes(now(&shared.kms_clock), &read_buf[..n]),
            },
            written = write_some(&mut writer, &transmit), if transmit.is_some() => match written {
                Ok(n) if n > 0 => {
                    if let Some((bytes, done)) = &mut transmit {
                        *done += n;
                        if *done >= bytes.len() {
                            transmit = None;
                        }
                    }
                    session.handle_client_written(now(&shared.kms_clock), n);
                }
                _ => {
                    tracing::debug!(connection, "client went away");
                    return;
                }
            },
            changed = shutdown.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    tracing::debug!(connection, "shutdown: finishing in-flight commands");
                }
                session.handle_client_eof(now(&shared.kms_clock));
            }
            result = poll_attestation(&mut attesting) => {
                if let Some((call, _)) = attesting.take() {
                    session.handle_attestation(now(&shared.kms_clock), call, result);
                }
            }
            event = poll_kms(&mut kms, &mut kms_buf) => {
                let Some(work) = kms.as_mut() else { continue };
                let call = work.call;
                match event {
                    KmsEvent::Sent(Ok((stream, reused))) => {
                        work.state = KmsState::Reading(stream);
                        session.handle_kms_sent(call, reused);
                    }
                    KmsEvent::Read(Ok(n)) if n > 0 => {
                        session.handle_kms_bytes(now(&shared.kms_clock), call, kms_buf.get(..n).unwrap_or_default());
                    }
                    // The connection is done: nothing more to read or to pool.
                    KmsEvent::Sent(Err(failure)) => {
                        kms = None;
                        session.handle_kms_failure(now(&shared.kms_clock), call, failure);
                    }
                    KmsEvent::Read(Ok(_)) => {
                        kms = None;
                        session.handle_kms_eof(now(&shared.kms_clock), call);
                    }
                    KmsEvent::Read(Err(error)) => {
                        kms = None;
                        let failure = TransportFailure::new(TransportStage::Io, error.to_string());
                        session.handle_kms_failure(now(&shared.kms_clock), call, failure);
                    }
                }
            },
            () = sleep_until(deadline) => session.handle_timeout(now(&shared.kms_clock)),
        }
    }
}

/// Takes a connection (pooled if `may_reuse`) and writes the request.
fn send(shared: Arc<Shared>, host: String, request: SharedRequest, may_reuse: bool) -> SendFuture {
    Box::pin(async move { shared.kms.send(&host, &request, may_reuse).await })
}

/// Writes some of what is left of `transmit`; never completes when there is nothing.
async fn write_some<W: AsyncWrite + Unpin>(
    writer: &mut W,
    transmit: &Transmit,
) -> std::io::Result<usize> {
    match transmit {
        Some((bytes, done)) => writer.write(bytes.get(*done..).unwrap_or_default()).await,
        None => std::future::pending().await,
    }
}

async fn poll_attestation(
    attesting: &mut Option<(CallId, BoxFuture<Result<Attestation, AttestationFailure>>)>,
) -> Result<Attestation, AttestationFailure> {
    match attesting {
        Some((_, future)) => future.await,
        None => std::future::pending().await,
    }
}

async fn poll_kms(kms: &mut Option<KmsWork>, buf: &mut [u8]) -> KmsEvent {
    match kms.as_mut().map(|work| &mut work.state) {
        None => std::future::pending().await,
        Some(KmsState::Sending(future)) => KmsEvent::Sent(future.await),
        Some(KmsState::Reading(stream)) => KmsEvent::Read(stream.read(buf).await),
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

fn log_event(connection: u64, event: &SessionEvent) {
    match event.level() {
        EventLevel::Debug => tracing::debug!(connection, "{event}"),
        EventLevel::Info => tracing::info!(connection, "{event}"),
        EventLevel::Warn => tracing::warn!(connection, "{event}"),
    }
}

fn rand_seed(connection: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ connection.rotate_left(32)
}

/// Keeps a measured offset to KMS's clock for every session, with a warning when it moved by
/// more than a minute since the last one logged.
fn note_clock(clock: &KmsClock, connection: u64, event: &SessionEvent) {
    if let SessionEvent::KmsClockOffset { offset, .. } = event
        && let Some(offset) = clock.record(*offset)
    {
        tracing::warn!(connection, %offset, "KMS's clock differs from ours; signing at KMS's time");
    }
}
