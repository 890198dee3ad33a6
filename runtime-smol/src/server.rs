//! The enclave server on smol: the same sessions as the tokio server, to show the core does not
//! care which runtime drives it.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmstool_core::server::{Acceptor, Admission, ServerEvent, ServerLimits, ServerOutput};
use kmstool_core::session::{EventLevel, busy_reply};
use smol::future::{self, FutureExt as _};
use smol::io::AsyncWriteExt as _;

use crate::Shared;
use crate::net::{Listener, Stream};

/// Serves the connections `listener` accepts until `shutdown` completes, then drains within the
/// shutdown grace, as core's [`Acceptor`] decides. Each connection is a `smol::Task`: the drain
/// ends when every task has dropped its end of a channel, and dropping the tasks cuts the rest.
pub async fn serve(
    listener: Listener,
    shared: Arc<Shared>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut listener = Some(listener);
    let mut acceptor = Acceptor::new(Instant::now(), limits);
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    // Every task holds a sender: once the server drops its own, `recv` fails when the last
    // task has finished.
    let (done_tx, done_rx) = smol::channel::bounded::<()>(1);
    let mut done_tx = Some(done_tx);
    let mut tasks: Vec<smol::Task<()>> = Vec::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while let Some(output) = acceptor.poll_output() {
            match output {
                ServerOutput::SweepIdleKms => shared.kms.expire_idle(),
                ServerOutput::StopAccepting => {
                    listener = None;
                    done_tx = None;
                    stop_tx.close();
                }
                // Dropping a task cancels it.
                ServerOutput::Cut => return Ok(()),
                ServerOutput::Event(event) => log(&event),
            }
        }
        tasks.retain(|task| !task.is_finished());
        let draining = acceptor.is_draining();
        let accepting = listener.as_ref().filter(|_| acceptor.may_accept());
        let deadline = acceptor.poll_timeout();
        let wake = async {
            match deadline {
                Some(at) => smol::Timer::at(at).await,
                None => future::pending().await,
            };
            Wake::Timer
        }
        .or(async {
            if draining {
                let _ = done_rx.recv().await;
                return Wake::AllDone;
            }
            (&mut shutdown).await;
            Wake::Shutdown
        })
        .or(async {
            match accepting {
                Some(listener) => Wake::Accepted(listener.accept().await),
                None => future::pending().await,
            }
        })
        .await;
        match wake {
            Wake::Timer => acceptor.handle_timeout(Instant::now()),
            Wake::Shutdown => acceptor.handle_shutdown(Instant::now(), tasks.len()),
            Wake::AllDone => return Ok(()),
            Wake::Accepted(Err(error)) => acceptor.handle_accept_error(Instant::now(), &error),
            Wake::Accepted(Ok((stream, peer))) => {
                let accepted = acceptor.handle_accepted(Instant::now(), &peer, &shared.stats);
                let shared = Arc::clone(&shared);
                let connection = accepted.connection;
                let done = done_tx.clone();
                tasks.push(match accepted.admission {
                    Admission::Serve => {
                        let stop = stop_rx.clone();
                        smol::spawn(async move {
                            crate::driver::drive(stream, connection, Arc::clone(&shared), stop)
                                .await;
                            shared.stats.closed();
                            tracing::info!(connection, "connection closed");
                            drop(done);
                        })
                    }
                    Admission::Refuse => smol::spawn(async move {
                        refuse(stream, limits.max_connections).await;
                        shared.stats.refused_done();
                        drop(done);
                    }),
                    Admission::Drop => continue,
                });
            }
        }
    }
}

/// What woke the server's loop.
enum Wake {
    Timer,
    Shutdown,
    /// Draining, and every task has finished.
    AllDone,
    Accepted(io::Result<(Stream, String)>),
}

/// Logs a server event at its level.
fn log(event: &ServerEvent) {
    match event.level() {
        EventLevel::Warn => tracing::warn!("{event}"),
        EventLevel::Info => tracing::info!("{event}"),
        EventLevel::Debug => tracing::debug!("{event}"),
    }
}

/// Serves one already-connected stream until its session closes.
pub async fn serve_connection<S>(stream: S, shared: Arc<Shared>)
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send + 'static,
{
    let (_stop, stop_rx) = smol::channel::bounded::<()>(1);
    crate::driver::drive(stream, 0, shared, stop_rx).await;
}

async fn refuse(mut stream: Stream, max: usize) {
    let reply = busy_reply(max);
    let write = async {
        let _ = stream.write_all(&reply).await;
        let _ = stream.close().await;
    };
    write
        .or(async {
            smol::Timer::after(Duration::from_secs(1)).await;
        })
        .await;
}
