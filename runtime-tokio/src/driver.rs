//! The loop that drives one [`EnclaveSession`]: drain outputs, wait on the client, the NSM,
//! KMS and the timer, feed one input. No protocol logic lives here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use kmstool_core::session::{
    Attestation, AttestationFailure, CallId, EnclaveSession, KmsLink, LinkRead, LinkWait, Now,
    Output, SessionEvent, SharedRequest, TransportFailure, TransportStage,
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

type SendFuture = BoxFuture<Result<(Box<KmsStream>, bool), TransportFailure>>;

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
    let mut kms: KmsLink<Box<KmsStream>, SendFuture> = KmsLink::new();
    let send = |host: &str, request: SharedRequest, may_reuse: bool| {
        send(Arc::clone(&shared), host.to_owned(), request, may_reuse)
    };
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
                } => kms.start(call, host, request, send),
                Output::KmsRelease { call, reusable } => {
                    if let Some((host, stream)) = kms.release(call, reusable) {
                        shared.kms.checkin(&host, stream);
                    }
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
            event = poll_kms(&mut kms, &mut kms_buf) => match event {
                KmsEvent::Sent(result) => kms.sent(&mut session, now(), result),
                KmsEvent::Read(result) => {
                    let read = match &result {
                        Ok(0) => LinkRead::Eof,
                        Ok(n) => LinkRead::Data(kms_buf.get(..*n).unwrap_or_default()),
                        Err(error) => LinkRead::Failed(&error.to_string()),
                    };
                    kms.read(&mut session, now(), read, send);
                }
            },
            () = sleep_until(deadline) => session.handle_timeout(now()),
        }
    }
}

/// What happened on the KMS side.
enum KmsEvent {
    Sent(Result<(Box<KmsStream>, bool), TransportFailure>),
    Read(std::io::Result<usize>),
}

/// Takes a connection (pooled if `may_reuse`) and writes the request.
fn send(shared: Arc<Shared>, host: String, request: SharedRequest, may_reuse: bool) -> SendFuture {
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

async fn poll_kms(kms: &mut KmsLink<Box<KmsStream>, SendFuture>, buf: &mut [u8]) -> KmsEvent {
    match kms.wait() {
        LinkWait::Idle => std::future::pending().await,
        LinkWait::Sending(future) => KmsEvent::Sent(future.await),
        LinkWait::Reading(stream) => KmsEvent::Read(stream.read(buf).await),
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
        // One info line per command: its reply carries the KMS status, latency and attempts.
        // An unwrap failure's detail stays out of the reply (no padding oracle) and out of
        // the default log level.
        SessionEvent::KmsAttempt { .. }
        | SessionEvent::KmsAnswered { .. }
        | SessionEvent::UnwrapFailed { .. } => {
            tracing::debug!(connection, "{event}");
        }
        SessionEvent::KmsRetry { .. } => tracing::warn!(connection, "{event}"),
        SessionEvent::ClientSet { .. }
        | SessionEvent::CommandRejected { .. }
        | SessionEvent::Replied { .. } => tracing::info!(connection, "{event}"),
    }
}

fn rand_seed(connection: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ connection.rotate_left(32)
}
