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

/// The KMS connections every session of a server shares: core's pool of idle ones, with
/// what [`checkout`] needs to make new ones.
pub type KmsConnector = KmsConnections<Box<KmsStream>>;

/// An idle connection to `host` when `may_reuse` and one is pooled (then `true`), or a new
/// one (`false`). A connection goes back with [`KmsConnections::checkin`].
pub async fn checkout(kms: &KmsConnector, host: &str, may_reuse: bool) -> Checkout<Box<KmsStream>> {
    match kms.reuse(host, may_reuse, Instant::now().into_std()) {
        Some(stream) => Ok((stream, true)),
        None => Ok((Box::new(connect(kms.config(), host).await?), false)),
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
