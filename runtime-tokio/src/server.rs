//! The enclave server: accepts connections within limits, runs a session per connection, and
//! on shutdown stops accepting and lets in-flight commands finish.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use kmstool_core::accept::{AcceptBackoff, AcceptFailure};
use kmstool_core::address::Address;
use kmstool_core::pool::SWEEP_EVERY;
use kmstool_core::server::Admission;
pub use kmstool_core::server::{ServerLimits, Stats};
use kmstool_core::session::busy_reply;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::keys::KeyService;
use crate::kms::KmsConnector;
use crate::net::{Listener, Stream};

/// What every session of a server shares: its settings, KMS connections, enclave key and
/// counters (core's [`kmstool_core::server::Shared`], with this runtime's key service and KMS
/// connector).
pub type Shared = kmstool_core::server::Shared<KeyService, KmsConnector>;

/// A bound enclave server.
#[derive(Debug)]
pub struct Server {
    listener: Listener,
    shared: Arc<Shared>,
    limits: ServerLimits,
}

impl Server {
    /// Binds `address`.
    pub async fn bind(
        address: &Address,
        shared: Arc<Shared>,
        limits: ServerLimits,
    ) -> io::Result<Self> {
        Ok(Self {
            listener: Listener::bind(address).await?,
            shared,
            limits,
        })
    }

    /// The address actually bound.
    pub fn local_address(&self) -> io::Result<Address> {
        self.listener.local_address()
    }

    /// The shared state (for its counters).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `shutdown` completes, then drains: no new connections, queued and
    /// in-flight commands answered, idle connections closed, within the shutdown grace.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let sweeper = tokio::spawn(sweep_idle_kms(Arc::clone(&self.shared)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sessions = JoinSet::new();
        let mut next_connection = 0u64;
        let mut backoff = AcceptBackoff::new();
        // While set, nothing is accepted: sessions and shutdown are still served.
        let mut paused_until: Option<Instant> = None;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                () = sleep_until(paused_until), if paused_until.is_some() => paused_until = None,
                accepted = self.listener.accept(), if paused_until.is_none() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            paused_until = pause_accepting(&mut backoff, &error);
                            continue;
                        }
                    };
                    backoff.handle_accepted();
                    next_connection += 1;
                    let connection = next_connection;
                    let shared = Arc::clone(&self.shared);
                    let max = self.limits.max_connections;
                    match shared.stats.admit(&self.limits) {
                        Admission::Serve => {
                            tracing::info!(connection, %peer, "accepted");
                            let stop = stop_rx.clone();
                            sessions.spawn(async move {
                                crate::driver::drive(stream, connection, Arc::clone(&shared), stop).await;
                                shared.stats.closed();
                                tracing::info!(connection, "connection closed");
                            });
                        }
                        Admission::Refuse => {
                            tracing::warn!(connection, %peer, max, "refusing connection: limit reached");
                            sessions.spawn(async move {
                                refuse(stream, max).await;
                                shared.stats.refused_done();
                            });
                        }
                        Admission::Drop => {
                            tracing::warn!(connection, %peer, max, "closing connection: limit reached, refusals in flight");
                        }
                    }
                }
            }
        }
        drop(self.listener);
        sweeper.abort();
        let open = sessions.len();
        tracing::info!(open, "shutting down: finishing in-flight commands");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(self.limits.shutdown_grace, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = sessions.len(),
                "shutdown grace expired; closing the rest"
            );
            sessions.shutdown().await;
        }
        Ok(())
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

/// Closes expired idle KMS connections every [`SWEEP_EVERY`] until aborted.
async fn sweep_idle_kms(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        shared.kms.expire_idle();
    }
}

/// Feeds a failed `accept` to `backoff`, logs what it says to, and returns until when to stop
/// accepting (`None`: accept again at once).
fn pause_accepting(backoff: &mut AcceptBackoff, error: &io::Error) -> Option<Instant> {
    let now = Instant::now();
    let pause = backoff.handle_error(now.into_std(), AcceptFailure::of(error));
    match pause.warn {
        Some(unreported) => tracing::warn!(
            %error,
            unreported,
            pause_ms = backoff.current_pause().unwrap_or_default().as_millis() as u64,
            "accept failed; pausing (one warning a minute while this goes on)"
        ),
        None => tracing::debug!(%error, "accept failed"),
    }
    (pause.resume_at > now.into_std()).then(|| pause.resume_at.into())
}

/// Completes at `until`; never when there is none (its `select!` branch is disabled then).
async fn sleep_until(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
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
