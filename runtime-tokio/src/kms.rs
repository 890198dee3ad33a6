//! Connections to KMS: TCP/vsock to the parent's proxy, TLS with SNI = the KMS host, and a
//! pool of idle connections shared by every session of the server (kept by core's
//! [`KmsConnections`](kmstool_core::pool::KmsConnections); this runtime only makes new connections).

use std::sync::Arc;

use kmstool_core::session::TransportFailure;
use kmstool_core::tls::{self, KmsTransportConfig};
use tokio::io::AsyncWriteExt as _;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::net::{self, Stream};

kmstool_core::kms_connector!(stream = TlsStream<Stream>, now = crate::now);

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
