//! The enclave server: accepts connections within limits, runs a session per connection, and
//! on shutdown stops accepting and lets in-flight commands finish.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use kmstool_core::server::{Acceptor, Admission, ServerEvent, ServerLimits, ServerOutput};
use kmstool_core::session::{EventLevel, busy_reply};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Shared;
use crate::net::{Listener, Stream};
use crate::now;

/// Serves the connections `listener` accepts until `shutdown` completes, then drains: nothing
/// more accepted, queued and in-flight commands answered, idle connections closed, all within
/// the shutdown grace. Every decision is core's [`Acceptor`]; this loop carries them out with
/// a `JoinSet` of connection tasks, aborted if the grace runs out.
pub async fn serve(
    listener: Listener,
    shared: Arc<Shared>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut listener = Some(listener);
    let mut acceptor = Acceptor::new(now(), limits);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while let Some(output) = acceptor.poll_output() {
            match output {
                ServerOutput::SweepIdleKms => shared.kms.expire_idle(),
                ServerOutput::StopAccepting => {
                    listener = None;
                    let _ = stop_tx.send(true);
                }
                ServerOutput::Cut => tasks.abort_all(),
                ServerOutput::Event(event) => log(&event),
            }
        }
        if acceptor.is_draining() && tasks.is_empty() {
            return Ok(());
        }
        let accepting = listener.as_ref().filter(|_| acceptor.may_accept());
        tokio::select! {
            () = &mut shutdown, if !acceptor.is_draining() => {
                acceptor.handle_shutdown(now(), tasks.len());
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = sleep_until(acceptor.poll_timeout()) => acceptor.handle_timeout(now()),
            accepted = accept(accepting) => match accepted {
                Err(error) => acceptor.handle_accept_error(now(), &error),
                Ok((stream, peer)) => {
                    let accepted = acceptor.handle_accepted(now(), &peer, &shared.stats);
                    let shared = Arc::clone(&shared);
                    let connection = accepted.connection;
                    match accepted.admission {
                        Admission::Serve => {
                            let stop = stop_rx.clone();
                            tasks.spawn(async move {
                                crate::driver::drive(stream, connection, Arc::clone(&shared), stop).await;
                                shared.stats.closed();
                                tracing::info!(connection, "connection closed");
                            });
                        }
                        Admission::Refuse => {
                            tasks.spawn(async move {
                                refuse(stream, limits.max_connections).await;
                                shared.stats.refused_done();
                            });
                        }
                        Admission::Drop => {}
                    }
                }
            },
        }
    }
}

/// Serves one already-connected stream (any byte stream: a socket, an in-process pipe) until
/// its session closes. `kmstool-enclave-cli` uses this to run its one command through the same
/// session code as the server.
pub async fn serve_connection<S>(stream: S, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (_stop, stop_rx) = watch::channel(false);
    crate::driver::drive(stream, 0, shared, stop_rx).await;
}

/// Accepts from `listener`; never completes when there is none to accept from (shutdown, or
/// paused after a failed `accept`).
async fn accept(listener: Option<&Listener>) -> io::Result<(Stream, String)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Logs a server event at its level.
fn log(event: &ServerEvent) {
    match event.level() {
        EventLevel::Debug => tracing::debug!("{event}"),
        EventLevel::Info => tracing::info!("{event}"),
        EventLevel::Warn => tracing::warn!("{event}"),
    }
}

/// Completes at `until`; never when there is none.
async fn sleep_until(until: Option<std::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until.into()).await,
        None => std::future::pending().await,
    }
}

/// Tells an excess client why it is turned away, then closes.
async fn refuse(mut stream: Stream, max: usize) {
    let reply = busy_reply(max);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&reply).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
