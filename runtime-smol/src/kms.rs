//! Connections to KMS on smol: the proxy stream, TLS with SNI = the KMS host, and a pool of
//! idle connections shared by every session (kept by core's [`KmsConnections`]; this runtime
//! only makes new connections).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use kmstool_core::pool::{Checkout, KmsConnections};
use kmstool_core::session::TransportFailure;
use kmstool_core::tls;
use smol::future::FutureExt as _;

use crate::net::{self, Stream};

/// A TLS connection to KMS.
pub type KmsStream = TlsStream<Stream>;

pub use kmstool_core::tls::KmsTransportConfig;

/// Makes and reuses KMS connections. Each connection carries one request at a time.
#[derive(Debug)]
pub struct KmsConnector(KmsConnections<Box<KmsStream>>);

impl KmsConnector {
    /// A connector with an empty pool.
    pub fn new(config: KmsTransportConfig) -> Self {
        Self(KmsConnections::new(config))
    }

    /// A pooled connection to `host` when `may_reuse` (then `true`), or a new one (`false`).
    pub async fn checkout(&self, host: &str, may_reuse: bool) -> Checkout<Box<KmsStream>> {
        if let Some(stream) = self.0.reuse(host, may_reuse, Instant::now()) {
            return Ok((stream, true));
        }
        Ok((Box::new(connect(self.0.config(), host).await?), false))
    }

    /// Gives back a connection whose last response was complete and reusable.
    pub fn checkin(&self, host: &str, stream: Box<KmsStream>) {
        self.0.checkin(host, stream, Instant::now());
    }

    /// Idle connections in the pool.
    pub fn idle_connections(&self) -> usize {
        self.0.idle_connections()
    }

    /// Closes the idle connections past their idle timeout (the server does, every second).
    pub fn expire_idle(&self) {
        self.0.expire_idle(Instant::now());
    }
}

/// A new connection to `host` through the proxy, connected and handshaken within the connect
/// timeout each.
async fn connect(config: &KmsTransportConfig, host: &str) -> Result<KmsStream, TransportFailure> {
    let limit = config.connect_timeout;
    let server_name = tls::connect_server_name(host)?;
    let stream = net::connect(&config.proxy)
        .or(expire(tls::connect_timeout(limit), limit))
        .await
        .map_err(|error| tls::proxy_failure(&config.proxy, &error))?;
    TlsConnector::from(Arc::clone(&config.tls))
        .connect(server_name, stream)
        .or(expire(tls::handshake_timeout(limit), limit))
        .await
        .map_err(|error| tls::handshake_failure(&error))
}

async fn expire<T>(error: io::Error, after: Duration) -> io::Result<T> {
    smol::Timer::after(after).await;
    Err(error)
}
