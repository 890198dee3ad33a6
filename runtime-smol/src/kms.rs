//! Connections to KMS on smol: the proxy stream, TLS with SNI = the KMS host, and a pool of
//! idle connections shared by every session (kept by core's [`KmsConnections`]; this runtime
//! only makes new connections).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use kmstool_core::pool::KmsConnections;
use kmstool_core::session::TransportFailure;
use kmstool_core::tls::{self, KmsTransportConfig};
use smol::future::FutureExt as _;

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
