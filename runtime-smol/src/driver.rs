//! The loop that drives one [`EnclaveSession`] on smol: drain outputs, wait on the client,
//! the NSM, KMS and the timer, feed one input. The tokio runtime has the same loop.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use kmstool_core::session::{
    Attestation, AttestationFailure, CallId, EnclaveSession, KmsLink, LinkRead, LinkWait, Now,
    Output, SharedRequest, TransportFailure, TransportStage,
};
use smol::future::{self, FutureExt as _};
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use zeroize::Zeroizing;

use crate::kms::KmsStream;
use crate::server::Shared;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

const READ_CHUNK: usize = 16 * 1024;

type SendFuture = BoxFuture<Result<(Box<KmsStream>, bool), TransportFailure>>;

enum KmsEvent {
    Sent(Result<(Box<KmsStream>, bool), TransportFailure>),
    Read(io::Result<usize>),
}

enum Wake {
    Client(io::Result<usize>),
    Shutdown,
    Attested(Result<Attestation, AttestationFailure>),
    Kms(KmsEvent),
    Timer,
}

fn now() -> Now {
    Now::new(Instant::now(), SystemTime::now())
}

/// Serves one client connection until the session closes, the client vanishes, or shutdown
/// has drained it. `shutdown` is closed when the server stops.
pub(crate) async fn drive<S>(
    stream: S,
    connection: u64,
    shared: Arc<Shared>,
    shutdown: smol::channel::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = smol::io::split(stream);
    let seed = rand_seed(connection);
    let mut session = EnclaveSession::new(Arc::clone(&shared.session), seed, now());
    let mut client_buf = Zeroizing::new(vec![0u8; READ_CHUNK]);
    let mut kms_buf = vec![0u8; READ_CHUNK];
    let mut attesting: Option<(CallId, BoxFuture<Result<Attestation, AttestationFailure>>)> = None;
    let mut kms: KmsLink<Box<KmsStream>, SendFuture> = KmsLink::new();
    let send = |host: &str, request: SharedRequest, may_reuse: bool| {
        send(Arc::clone(&shared), host.to_owned(), request, may_reuse)
    };
    let mut draining = shutdown.is_closed();
    if draining {
        session.handle_client_eof(now());
    }
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                Output::ToClient(bytes) => {
                    if writer.write_all(&bytes).await.is_err() {
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
                Output::Event(event) => shared.log(connection, &event),
                Output::Close(_) => {
                    let _ = writer.close().await;
                    return;
                }
            }
        }

        let deadline = session.poll_timeout();
        let reading = session.wants_client_bytes() && !draining;
        let client = async {
            if reading {
                Wake::Client(reader.read(&mut client_buf[..]).await)
            } else {
                future::pending().await
            }
        };
        let stop = async {
            if draining {
                future::pending().await
            } else {
                let _ = shutdown.recv().await;
                Wake::Shutdown
            }
        };
        let attest = async {
            match &mut attesting {
                Some((_, future)) => Wake::Attested(future.await),
                None => future::pending().await,
            }
        };
        let kms_wake = async {
            Wake::Kms(match kms.wait() {
                LinkWait::Idle => future::pending().await,
                LinkWait::Sending(future) => KmsEvent::Sent(future.await),
                LinkWait::Reading(stream) => KmsEvent::Read(stream.read(&mut kms_buf).await),
            })
        };
        let timer = async {
            match deadline {
                Some(at) => {
                    smol::Timer::at(at).await;
                }
                None => future::pending::<()>().await,
            }
            Wake::Timer
        };
        match client.or(stop).or(attest).or(kms_wake).or(timer).await {
            Wake::Client(Ok(0) | Err(_)) => session.handle_client_eof(now()),
            Wake::Client(Ok(n)) => session.handle_client_bytes(now(), &client_buf[..n]),
            Wake::Shutdown => {
                draining = true;
                session.handle_client_eof(now());
            }
            Wake::Attested(result) => {
                if let Some((call, _)) = attesting.take() {
                    session.handle_attestation(now(), call, result);
                }
            }
            Wake::Kms(KmsEvent::Sent(result)) => kms.sent(&mut session, now(), result),
            Wake::Kms(KmsEvent::Read(result)) => {
                let read = match &result {
                    Ok(0) => LinkRead::Eof,
                    Ok(n) => LinkRead::Data(kms_buf.get(..*n).unwrap_or_default()),
                    Err(error) => LinkRead::Failed(&error.to_string()),
                };
                kms.read(&mut session, now(), read, send);
            }
            Wake::Timer => session.handle_timeout(now()),
        }
    }
}

fn send(shared: Arc<Shared>, host: String, request: SharedRequest, may_reuse: bool) -> SendFuture {
    Box::pin(async move {
        let (mut stream, reused) = shared.kms.checkout(&host, may_reuse).await?;
        let written = async {
            stream.write_all(&request).await?;
            stream.flush().await
        };
        match written.await {
            Ok(()) => Ok((stream, reused)),
            Err(error) => Err(TransportFailure::new(TransportStage::Io, error.to_string())),
        }
    })
}

fn rand_seed(connection: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ connection.rotate_left(32)
}
