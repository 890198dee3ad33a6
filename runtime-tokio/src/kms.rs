//! Connections to KMS: TCP/vsock to the parent's proxy, TLS with SNI = the KMS host, and a
//! pool of idle connections shared by every session of the server.

use std::io;
use std::sync::Arc;

use kmstool_core::pool::SharedPool;
use kmstool_core::session::{TransportFailure, TransportStage};
use kmstool_core::tls;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::net::{self, Stream};

/// A TLS connection to KMS.
pub type KmsStream = TlsStream<Stream>;

pub use kmstool_core::tls::KmsTransportConfig;

/// Makes and reuses KMS connections. Each connection carries one request at a time.
pub struct KmsConnector {
    config: KmsTransportConfig,
    connector: TlsConnector,
    idle: SharedPool<Box<KmsStream>>,
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
            idle: SharedPool::new(config.max_idle_per_host, config.idle_timeout),
            config,
        }
    }

    /// An idle connection to `host` when `may_reuse` and one is pooled (then `true`), or a
    /// new one (`false`).
    pub async fn checkout(
        &self,
        host: &str,
        may_reuse: bool,
    ) -> Result<(Box<KmsStream>, bool), TransportFailure> {
        if may_reuse && let Some(stream) = self.idle.take(host, Instant::now().into_std()) {
            return Ok((stream, true));
        }
        Ok((Box::new(self.connect(host).await?), false))
    }

    /// Gives back a connection whose last response was complete and reusable.
    pub fn checkin(&self, host: &str, stream: Box<KmsStream>) {
        self.idle.put(host, stream, Instant::now().into_std());
    }

    /// Idle connections in the pool.
    pub fn idle_connections(&self) -> usize {
        self.idle.len()
    }

    async fn connect(&self, host: &str) -> Result<KmsStream, TransportFailure> {
        let deadline = self.config.connect_timeout;
        let server_name = tls::server_name(host)
            .map_err(|e| TransportFailure::new(TransportStage::Tls, e.to_string()))?;
        let proxy = &self.config.proxy;
        let stream = match timeout(deadline, net::connect(proxy)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(connect_failure(proxy, &error)),
            Err(_) => return Err(connect_failure(proxy, &tls::connect_timeout(deadline))),
        };
        match timeout(deadline, self.connector.connect(server_name, stream)).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(error)) => Err(tls::handshake_failure(&error)),
            Err(_) => Err(tls::handshake_failure(&tls::handshake_timeout(deadline))),
        }
    }
}

fn connect_failure(proxy: &kmstool_core::address::Address, error: &io::Error) -> TransportFailure {
    TransportFailure::new(TransportStage::Connect, format!("proxy {proxy}: {error}"))
}
