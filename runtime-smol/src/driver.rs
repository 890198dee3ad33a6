//! The loop that carries out one [`EnclaveSession`] on smol: outputs first, then a race of
//! the waits the session asks for, whose winner is fed back. The tokio runtime carries out the
//! same session with its own `select!`; neither decides anything.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use kmstool_core::kms::skew::KmsClock;
use kmstool_core::session::{
    Attestation, AttestationFailure, CallId, EnclaveSession, EventLevel, Now, Output,
    READ_CHUNK_BYTES, REPLY_BATCH_BYTES, SessionEvent, SharedRequest, TransportFailure,
    TransportStage,
};
use smol::future::{self, FutureExt as _};
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use zeroize::Zeroizing;

use crate::Shared;
use crate::kms::KmsStream;

type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

type Connected = Result<(Box<KmsStream>, bool), TransportFailure>;

/// One KMS exchange: the call it serves, its host (to pool the connection) and its stage.
struct Exchange {
    call: CallId,
    host: String,
    stage: Stage,
}

enum Stage {
    Connecting(Pending<Connected>),
    Answering(Box<KmsStream>),
}

/// What woke the loop.
enum Wake {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Shutdown,
    Attested(Result<Attestation, AttestationFailure>),
    Connected(Connected),
    Answer(io::Result<usize>),
    Timer,
}

/// The time, with the offset to KMS's clock the server learned.
fn now(clock: &KmsClock) -> Now {
    Now::new(Instant::now(), SystemTime::now()).with_kms_clock_offset(clock.offset())
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
    let seed = wall_nanos() ^ connection.rotate_left(32);
    let mut session =
        EnclaveSession::new(Arc::clone(&shared.session), seed, now(&shared.kms_clock));
    let mut inbox = Zeroizing::new(vec![0u8; READ_CHUNK_BYTES]);
    let mut answer = vec![0u8; READ_CHUNK_BYTES];
    let mut outbox: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::new());
    let mut sent_out = 0usize;
    let mut nsm: Option<(CallId, Pending<Result<Attestation, AttestationFailure>>)> = None;
    let mut exchange: Option<Exchange> = None;
    let mut draining = shutdown.is_closed();
    if draining {
        session.handle_client_eof(now(&shared.kms_clock));
    }
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                Output::Event(event) => {
                    note_clock(&shared.kms_clock, connection, &event);
                    log(connection, &event);
                }
                Output::Attest(call) => {
                    let keys = Arc::clone(&shared.keys);
                    nsm = Some((call, Box::pin(async move { keys.attest().await })));
                }
                Output::KmsSend {
                    call,
                    host,
                    request,
                    may_reuse,
                } => {
                    let stage = Stage::Connecting(connect_and_send(
                        Arc::clone(&shared),
                        host.clone(),
                        request,
                        may_reuse,
                    ));
                    exchange = Some(Exchange { call, host, stage });
                }
                Output::KmsRelease { call, reusable } => {
                    if let Some(done) = exchange.take_if(|e| e.call == call)
                        && let (true, Stage::Answering(stream)) = (reusable, done.stage)
                    {
                        shared.kms.checkin(&done.host, stream);
                    }
                }
                Output::Close(_) => {
                    let _ = writer.close().await;
                    return;
                }
            }
        }
        if sent_out == outbox.len()
            && let Some(next) = session.poll_transmit()
        {
            let whole_batch = next.len() >= REPLY_BATCH_BYTES;
            outbox = next;
            sent_out = 0;
            if whole_batch {
                // Other connections go first while this client pipelines hard.
                future::yield_now().await;
            }
        }

        let deadline = session.poll_timeout();
        let reading = session.wants_client_bytes() && !draining;
        let writing = sent_out < outbox.len();
        let read = async {
            if !reading {
                return future::pending().await;
            }
            Wake::Read(reader.read(&mut inbox[..]).await)
        };
        let write = async {
            if !writing {
                return future::pending().await;
            }
            Wake::Wrote(writer.write(&outbox[sent_out..]).await)
        };
        let stop = async {
            if draining {
                return future::pending().await;
            }
            let _ = shutdown.recv().await;
            Wake::Shutdown
        };
        let attested = async {
            let Some((_, pending)) = nsm.as_mut() else {
                return future::pending().await;
            };
            Wake::Attested(pending.await)
        };
        let kms = async {
            match exchange.as_mut().map(|e| &mut e.stage) {
                Some(Stage::Connecting(pending)) => Wake::Connected(pending.await),
                Some(Stage::Answering(stream)) => Wake::Answer(stream.read(&mut answer).await),
                None => future::pending().await,
            }
        };
        let timer = async {
            let Some(at) = deadline else {
                return future::pending().await;
            };
            smol::Timer::at(at).await;
            Wake::Timer
        };
        let wake = read.or(write).or(stop).or(attested).or(kms).or(timer).await;
        match wake {
            Wake::Read(Ok(0) | Err(_)) => session.handle_client_eof(now(&shared.kms_clock)),
            Wake::Read(Ok(n)) => session.handle_client_bytes(now(&shared.kms_clock), &inbox[..n]),
            Wake::Wrote(Ok(n)) if n > 0 => {
                sent_out += n;
                session.handle_client_written(now(&shared.kms_clock), n);
            }
            // The client is gone: nothing more can reach it.
            Wake::Wrote(_) => return,
            Wake::Shutdown => {
                draining = true;
                session.handle_client_eof(now(&shared.kms_clock));
            }
            Wake::Attested(result) => {
                if let Some((call, _)) = nsm.take() {
                    session.handle_attestation(now(&shared.kms_clock), call, result);
                }
            }
            Wake::Connected(result) => {
                answered(&mut session, &mut exchange, result, now(&shared.kms_clock));
            }
            Wake::Answer(result) => {
                let Some(call) = exchange.as_ref().map(|e| e.call) else {
                    continue;
                };
                match result {
                    Ok(n) if n > 0 => {
                        session.handle_kms_bytes(now(&shared.kms_clock), call, &answer[..n])
                    }
                    Ok(_) => {
                        exchange = None;
                        session.handle_kms_eof(now(&shared.kms_clock), call);
                    }
                    Err(error) => {
                        exchange = None;
                        let failure = TransportFailure::new(TransportStage::Io, error.to_string());
                        session.handle_kms_failure(now(&shared.kms_clock), call, failure);
                    }
                }
            }
            Wake::Timer => session.handle_timeout(now(&shared.kms_clock)),
        }
    }
}

/// The request is out (the exchange now reads the answer) or the connection failed.
fn answered(
    session: &mut EnclaveSession,
    exchange: &mut Option<Exchange>,
    result: Connected,
    now: Now,
) {
    let Some(call) = exchange.as_ref().map(|e| e.call) else {
        return;
    };
    match result {
        Ok((stream, reused)) => {
            if let Some(e) = exchange.as_mut() {
                e.stage = Stage::Answering(stream);
            }
            session.handle_kms_sent(call, reused);
        }
        Err(failure) => {
            *exchange = None;
            session.handle_kms_failure(now, call, failure);
        }
    }
}

/// A connection from the pool (when allowed) or a new one, with the request written on it.
fn connect_and_send(
    shared: Arc<Shared>,
    host: String,
    request: SharedRequest,
    may_reuse: bool,
) -> Pending<Connected> {
    Box::pin(async move { shared.kms.send(&host, &request, may_reuse).await })
}

/// Logs a session event at its level, as the tokio runtime does.
fn log(connection: u64, event: &SessionEvent) {
    let text = event.to_string();
    match event.level() {
        EventLevel::Warn => tracing::warn!(connection, "{text}"),
        EventLevel::Info => tracing::info!(connection, "{text}"),
        EventLevel::Debug => tracing::debug!(connection, "{text}"),
    }
}

fn wall_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
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
