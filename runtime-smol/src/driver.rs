//! The loop that drives one [`EnclaveSession`] on smol: drain outputs, wait on the client,
//! the NSM, KMS and the timer, feed one input. The tokio runtime has the same loop.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use kmstool_core::session::{
    Attestation, AttestationFailure, CallId, EnclaveSession, Now, Output, TransportFailure,
    TransportStage,
};
use smol::future::{self, FutureExt as _};
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use zeroize::Zeroizing;

use crate::kms::KmsStream;
use crate::server::Shared;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

const READ_CHUNK: usize = 16 * 1024;

enum Kms {
    Idle,
    Sending {
        call: CallId,
        host: String,
        future: BoxFuture<Result<(Box<KmsStream>, bool), TransportFailure>>,
        request: Arc<Zeroizing<Vec<u8>>>,
    },
    Reading {
        call: CallId,
        host: String,
        stream: Box<KmsStream>,
        reused: bool,
        received_any: bool,
        request: Arc<Zeroizing<Vec<u8>>>,
    },
}

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
    let mut kms = Kms::Idle;
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
            Wake::Kms(match &mut kms {
                Kms::Idle => future::pending().await,
                Kms::Sending { future, .. } => KmsEvent::Sent(future.await),
                Kms::Reading { stream, .. } => KmsEvent::Read(stream.read(&mut kms_buf).await),
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
            Wake::Kms(event) => on_kms(&shared, &mut session, &mut kms, event, &kms_buf),
            Wake::Timer => session.handle_timeout(now()),
        }
    }
}

fn on_kms(
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
            let failure = TransportFailure::new(TransportStage::Io, error.to_string());
            session.handle_kms_failure(now(), call, failure);
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
            // Restore the state first: these bytes may complete the response, and the session
            // then asks for the connection back.
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

fn send(
    shared: Arc<Shared>,
    host: String,
    request: Arc<Zeroizing<Vec<u8>>>,
    may_reuse: bool,
) -> BoxFuture<Result<(Box<KmsStream>, bool), TransportFailure>> {
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
