//! Connections to KMS: TCP/vsock to the parent's proxy, TLS with SNI = the KMS host, and a
//! pool of idle connections shared by every session of the server (kept by core's
//! [`KmsConnections`]; this runtime only makes new connections).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kmstool_core::pool::KmsConnections;
use kmstool_core::session::TransportFailure;
use kmstool_core::tls::{self, KmsTransportConfig};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::net::{self, Stream};

/// A TLS connection to KMS.
pub type KmsStream = TlsStream<Stream>;

/// The KMS connections every session of a server shares: core's pool of idle ones and what
/// [`connect`] needs to make new ones, behind a lock ([`pool`] takes it).
pub type KmsConnector = Mutex<KmsConnections<Box<KmsStream>>>;

/// The pool, locked for one short, non-blocking use (never across an await).
pub fn pool(kms: &KmsConnector) -> MutexGuard<'_, KmsConnections<Box<KmsStream>>> {
    // Nothing panics while holding the lock; the pool stays consistent if something did.
    kms.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A new connection to `host` through the proxy, connected and handshaken within the connect
/// timeout each.
pub async fn connect(
    config: &KmsTransportConfig,
    host: &str,
) -> Result<KmsStream, TransportFailure> {
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
