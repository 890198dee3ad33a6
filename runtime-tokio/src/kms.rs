//! Connections to KMS: TCP/vsock to the parent's proxy, TLS with SNI = the KMS host, and a
//! pool of idle connections shared by every session of the server (kept by core's
//! [`KmsConnections`]; this runtime only makes new connections).

use std::sync::Arc;

use kmstool_core::pool::{Checkout, KmsConnections};
use kmstool_core::session::TransportFailure;
use kmstool_core::tls;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

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

    /// An idle connection to `host` when `may_reuse` and one is pooled (then `true`), or a
    /// new one (`false`).
    pub async fn checkout(&self, host: &str, may_reuse: bool) -> Checkout<Box<KmsStream>> {
        if let Some(stream) = self.0.reuse(host, may_reuse, Instant::now().into_std()) {
            return Ok((stream, true));
        }
        Ok((Box::new(connect(self.0.config(), host).await?), false))
    }

    /// Gives back a connection whose last response was complete and reusable.
    pub fn checkin(&self, host: &str, stream: Box<KmsStream>) {
        self.0.checkin(host, stream, Instant::now().into_std());
    }

    /// Idle connections in the pool.
    pub fn idle_connections(&self) -> usize {
        self.0.idle_connections()
    }

    /// Closes the idle connections past their idle timeout (the server does, every second).
    pub fn expire_idle(&self) {
        self.0.expire_idle(Instant::now().into_std());
    }
}

/// A new connection to `host` through the proxy, connected and handshaken within the connect
/// timeout each.
async fn connect(config: &KmsTransportConfig, host: &str) -> Result<KmsStream, TransportFailure> {
    let deadline = config.connect_timeout;
    let server_name = tls::connect_server_name(host)?;
    let proxy = &config.proxy;
    let stream = match timeout(deadline, net::connect(proxy)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(tls::proxy_failure(proxy, &error)),
        Err(_) => return Err(tls::proxy_failure(proxy, &tls::connect_timeout(deadline))),
    };
    let handshake = TlsConnector::from(Arc::clone(&config.tls)).connect(server_name, stream);
    match timeout(deadline, handshake).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(error)) => Err(tls::handshake_failure(&error)),
        Err(_) => Err(tls::handshake_failure(&tls::handshake_timeout(deadline))),
    }
}
