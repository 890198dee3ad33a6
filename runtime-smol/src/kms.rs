//! Connections to KMS on smol: the proxy stream, TLS with SNI = the KMS host, and a pool of
//! idle connections shared by every session.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use kmstool_core::address::Address;
use kmstool_core::pool::IdlePool;
use kmstool_core::session::{TransportFailure, TransportStage};
use kmstool_core::tls;
use smol::future::FutureExt as _;

use crate::net::{self, Stream};

/// A TLS connection to KMS.
pub type KmsStream = TlsStream<Stream>;

/// How to reach KMS.
#[derive(Debug, Clone)]
pub struct KmsTransportConfig {
    /// The proxy (production: `vsock:3:8000`) or KMS itself.
    pub proxy: Address,
    /// TLS settings (see [`kmstool_core::tls`]).
    pub tls: Arc<rustls::ClientConfig>,
    /// Connect plus handshake.
    pub connect_timeout: Duration,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

/// Makes and reuses KMS connections. Each connection carries one request at a time.
pub struct KmsConnector {
    config: KmsTransportConfig,
    connector: TlsConnector,
    idle: Mutex<IdlePool<Box<KmsStream>>>,
}

impl std::fmt::Debug for KmsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsConnector")
            .field("proxy", &self.config.proxy)
            .finish_non_exhaustive()
    }
}

impl KmsConnector {
    /// A connector with an empty pool.
    pub fn new(config: KmsTransportConfig) -> Self {
        Self {
            connector: TlsConnector::from(Arc::clone(&config.tls)),
            idle: Mutex::new(IdlePool::new(config.max_idle_per_host, config.idle_timeout)),
            config,
        }
    }

    /// A pooled connection to `host` when `may_reuse` (then `true`), or a new one (`false`).
    pub async fn checkout(
        &self,
        host: &str,
        may_reuse: bool,
    ) -> Result<(Box<KmsStream>, bool), TransportFailure> {
        if may_reuse && let Some(stream) = self.lock().take(host, Instant::now()) {
            return Ok((stream, true));
        }
        Ok((Box::new(self.connect(host).await?), false))
    }

    /// Gives back a connection whose last response was complete and reusable.
    pub fn checkin(&self, host: &str, stream: Box<KmsStream>) {
        let excess = self.lock().put(host, stream, Instant::now());
        drop(excess);
    }

    fn lock(&self) -> MutexGuard<'_, IdlePool<Box<KmsStream>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn connect(&self, host: &str) -> Result<KmsStream, TransportFailure> {
        let limit = self.config.connect_timeout;
        let server_name = tls::server_name(host)
            .map_err(|e| TransportFailure::new(TransportStage::Tls, e.to_string()))?;
        let proxy = &self.config.proxy;
        let stream = net::connect(proxy).or(timeout(limit)).await.map_err(|e| {
            TransportFailure::new(TransportStage::Connect, format!("proxy {proxy}: {e}"))
        })?;
        self.connector
            .connect(server_name, stream)
            .or(timeout(limit))
            .await
            .map_err(tls_failure)
    }
}

async fn timeout<T>(after: Duration) -> io::Result<T> {
    smol::Timer::after(after).await;
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no answer within {} ms", after.as_millis()),
    ))
}

/// Certificate problems are TLS failures (not retried); a peer hanging up is an IO failure.
fn tls_failure(error: io::Error) -> TransportFailure {
    let stage = match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(_) => TransportStage::Tls,
        None if error.kind() == io::ErrorKind::TimedOut => TransportStage::Tls,
        None => TransportStage::Io,
    };
    TransportFailure::new(stage, error.to_string())
}
