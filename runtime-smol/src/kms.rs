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

/// The KMS connections every session of a server shares: core's pool of idle ones, with
/// what [`checkout`] needs to make new ones.
pub type KmsConnector = KmsConnections<Box<KmsStream>>;

/// An idle connection to `host` when `may_reuse` and one is pooled (then `true`), or a new
/// one (`false`). A connection goes back with [`KmsConnections::checkin`].
pub async fn checkout(kms: &KmsConnector, host: &str, may_reuse: bool) -> Checkout<Box<KmsStream>> {
    match kms.reuse(host, may_reuse, Instant::now()) {
        Some(stream) => Ok((stream, true)),
        None => Ok((Box::new(connect(kms.config(), host).await?), false)),
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
