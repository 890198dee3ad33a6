//! Connections to KMS on smol: the proxy stream, TLS with SNI = the KMS host, and a pool of
//! idle connections shared by every session (kept by core's
//! [`KmsConnections`](kmstool_core::pool::KmsConnections); this runtime only makes new
//! connections).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use kmstool_core::session::TransportFailure;
use kmstool_core::tls::{self, KmsTransportConfig};
use smol::future::FutureExt as _;
use smol::io::AsyncWriteExt as _;

use crate::net::{self, Stream};

kmstool_core::kms_connector!(stream = TlsStream<Stream>, now = crate::now);

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
