//! Connections to KMS on smol: the proxy stream, TLS with SNI = the KMS host, and a pool of
//! idle connections shared by every session.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use kmstool_core::pool::SharedPool;
use kmstool_core::session::{TransportFailure, TransportStage};
use kmstool_core::tls;
use smol::future::FutureExt as _;

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

    /// A pooled connection to `host` when `may_reuse` (then `true`), or a new one (`false`).
    pub async fn checkout(
        &self,
        host: &str,
        may_reuse: bool,
    ) -> Result<(Box<KmsStream>, bool), TransportFailure> {
        if may_reuse && let Some(stream) = self.idle.take(host, Instant::now()) {
            return Ok((stream, true));
        }
        Ok((Box::new(self.connect(host).await?), false))
    }

    /// Gives back a connection whose last response was complete and reusable.
    pub fn checkin(&self, host: &str, stream: Box<KmsStream>) {
        self.idle.put(host, stream, Instant::now());
    }

    async fn connect(&self, host: &str) -> Result<KmsStream, TransportFailure> {
        let limit = self.config.connect_timeout;
        let server_name = tls::server_name(host)
            .map_err(|e| TransportFailure::new(TransportStage::Tls, e.to_string()))?;
        let proxy = &self.config.proxy;
        let stream = net::connect(proxy)
            .or(expire(tls::connect_timeout(limit), limit))
            .await
            .map_err(|e| {
                TransportFailure::new(TransportStage::Connect, format!("proxy {proxy}: {e}"))
            })?;
        self.connector
            .connect(server_name, stream)
            .or(expire(tls::handshake_timeout(limit), limit))
            .await
            .map_err(|error| tls::handshake_failure(&error))
    }
}

async fn expire<T>(error: io::Error, after: Duration) -> io::Result<T> {
    smol::Timer::after(after).await;
    Err(error)
}
