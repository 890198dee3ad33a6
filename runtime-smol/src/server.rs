//! The enclave server on smol: the same sessions as the tokio server, to show the core does not
//! care which runtime drives it.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kmstool_core::accept::{AcceptBackoff, AcceptFailure, MAX_REFUSING};
use kmstool_core::address::Address;
use kmstool_core::session::{SessionConfig, SessionEvent, busy_reply};
use smol::future::FutureExt as _;
use smol::io::AsyncWriteExt as _;

use crate::keys::KeyService;
use crate::kms::KmsConnector;
use crate::net::{Listener, Stream};

/// What every session of a server shares.
#[derive(Debug)]
pub struct Shared {
    /// Session settings.
    pub session: Arc<SessionConfig>,
    /// KMS connections.
    pub kms: KmsConnector,
    /// Enclave key and attestation.
    pub keys: Arc<KeyService>,
    /// Connections being served now.
    pub open_connections: AtomicUsize,
    /// Receives session events (logging); `None` drops them.
    pub on_event: Option<fn(u64, &SessionEvent)>,
}

impl Shared {
    pub(crate) fn log(&self, connection: u64, event: &SessionEvent) {
        if let Some(log) = self.on_event {
            log(connection, event);
        }
    }
}

/// A bound enclave server on smol.
#[derive(Debug)]
pub struct Server {
    listener: Listener,
    shared: Arc<Shared>,
    max_connections: usize,
}

impl Server {
    /// Binds `address`.
    pub async fn bind(
        address: &Address,
        shared: Arc<Shared>,
        max_connections: usize,
    ) -> io::Result<Self> {
        Ok(Self {
            listener: Listener::bind(address).await?,
            shared,
            max_connections,
        })
    }

    /// The address actually bound.
    pub fn local_address(&self) -> io::Result<Address> {
        self.listener.local_address()
    }

    /// Serves until `shutdown` completes, then lets in-flight commands finish (within `grace`).
    pub async fn run(self, shutdown: impl Future<Output = ()>, grace: Duration) -> io::Result<()> {
        let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
        let mut tasks: Vec<smol::Task<()>> = Vec::new();
        let mut next_connection = 0u64;
        let shutdown = async {
            shutdown.await;
            None
        };
        let mut shutdown = Box::pin(shutdown);
        let mut backoff = AcceptBackoff::new();
        let refusing = Arc::new(AtomicUsize::new(0));
        loop {
            let accepted = async { Some(self.listener.accept().await) };
            let Some(accepted) = accepted.or(&mut shutdown).await else {
                break;
            };
            tasks.retain(|t| !t.is_finished());
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // No log here: this runtime's server reports session events only. The
                    // pause still keeps the loop from spinning while descriptors run out.
                    let pause = backoff.handle_error(Instant::now(), AcceptFailure::of(&error));
                    let paused = async {
                        smol::Timer::at(pause.resume_at).await;
                        false
                    };
                    if paused.or(async { shutdown.as_mut().await.is_none() }).await {
                        break;
                    }
                    continue;
                }
            };
            backoff.handle_accepted();
            next_connection += 1;
            let connection = next_connection;
            if self.shared.open_connections.load(Ordering::Relaxed) >= self.max_connections {
                if refusing.load(Ordering::Relaxed) >= MAX_REFUSING {
                    // Closed without a reply: refusals keep to their descriptors.
                    drop(stream);
                    continue;
                }
                refusing.fetch_add(1, Ordering::Relaxed);
                let refusing = Arc::clone(&refusing);
                let max = self.max_connections;
                tasks.push(smol::spawn(async move {
                    refuse(stream, max).await;
                    refusing.fetch_sub(1, Ordering::Relaxed);
                }));
                continue;
            }
            self.shared.open_connections.fetch_add(1, Ordering::Relaxed);
            let shared = Arc::clone(&self.shared);
            let stop = stop_rx.clone();
            tasks.push(smol::spawn(async move {
                crate::driver::drive(stream, connection, Arc::clone(&shared), stop).await;
                shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            }));
        }
        drop(self.listener);
        stop_tx.close();
        let drain = async {
            for task in tasks {
                task.await;
            }
        };
        drain
            .or(async {
                smol::Timer::after(grace).await;
            })
            .await;
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
