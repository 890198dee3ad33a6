//! The enclave server on smol: the same sessions as the tokio server, to show the core does not
//! care which runtime drives it.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmstool_core::accept::{AcceptBackoff, AcceptFailure};
use kmstool_core::address::Address;
use kmstool_core::pool::SWEEP_EVERY;
use kmstool_core::server::Admission;
pub use kmstool_core::server::{ServerLimits, Stats};
use kmstool_core::session::busy_reply;
use smol::future::FutureExt as _;
use smol::io::AsyncWriteExt as _;

use crate::keys::KeyService;
use crate::kms::KmsConnector;
use crate::net::{Listener, Stream};

/// What every session of a server shares: its settings, KMS connections, enclave key and
/// counters (core's [`kmstool_core::server::Shared`], with this runtime's key service and KMS
/// connector).
pub type Shared = kmstool_core::server::Shared<KeyService, KmsConnector>;

/// A bound enclave server on smol.
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
        let listener = Listener::bind(address).await?;
        Ok(Self {
            listener,
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

    /// Serves until `shutdown` completes, then drains: nothing more accepted, queued and
    /// in-flight commands answered, idle connections closed, all within the shutdown grace.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        // Closes expired idle KMS connections until the server returns (dropping the task
        // cancels it).
        let shared = Arc::clone(&self.shared);
        let _sweeper = smol::spawn(async move {
            loop {
                smol::Timer::after(SWEEP_EVERY).await;
                shared.kms.expire_idle();
            }
        });
        let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
        let mut tasks: Vec<smol::Task<()>> = Vec::new();
        let mut connection = 0u64;
        let mut shutdown = Box::pin(async {
            shutdown.await;
            None
        });
        let mut backoff = AcceptBackoff::new();
        loop {
            let next = async { Some(self.listener.accept().await) };
            let Some(accepted) = next.or(&mut shutdown).await else {
                break;
            };
            tasks.retain(|task| !task.is_finished());
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    let pause = backoff.handle_error(Instant::now(), AcceptFailure::of(&error));
                    if let Some(unreported) = pause.warn {
                        tracing::warn!(%error, unreported, "accept failed; pausing");
                    }
                    let resume = async {
                        smol::Timer::at(pause.resume_at).await;
                        false
                    };
                    if resume.or(async { shutdown.as_mut().await.is_none() }).await {
                        break;
                    }
                    continue;
                }
            };
            backoff.handle_accepted();
            connection += 1;
            let shared = Arc::clone(&self.shared);
            let max = self.limits.max_connections;
            let task = match shared.stats.admit(&self.limits) {
                Admission::Serve => {
                    tracing::info!(connection, %peer, "accepted");
                    let stop = stop_rx.clone();
                    smol::spawn(async move {
                        crate::driver::drive(stream, connection, Arc::clone(&shared), stop).await;
                        shared.stats.closed();
                        tracing::info!(connection, "connection closed");
                    })
                }
                Admission::Refuse => {
                    tracing::warn!(connection, %peer, max, "refusing connection: limit reached");
                    smol::spawn(async move {
                        refuse(stream, max).await;
                        shared.stats.refused_done();
                    })
                }
                Admission::Drop => continue,
            };
            tasks.push(task);
        }
        drop(self.listener);
        tracing::info!(
            open = tasks.len(),
            "shutting down: finishing in-flight commands"
        );
        stop_tx.close();
        let drained = async {
            for task in tasks {
                task.await;
            }
            true
        };
        let grace = self.limits.shutdown_grace;
        let expired = async {
            smol::Timer::after(grace).await;
            false
        };
        if !drained.or(expired).await {
            tracing::warn!("shutdown grace expired; closing the rest");
        }
        Ok(())
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
