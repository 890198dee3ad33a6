//! The loop that drives `kmstool_core`'s [`InstanceClient`] over a tokio stream (used by
//! `kmstool-enclave-cli`; `kmstool-instance` has the same loop on smol).

use kmstool_core::instance::{InstanceClient, InstanceError, InstanceResult};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use zeroize::Zeroizing;

use crate::now;

/// Runs `client` over `stream` to its result.
pub async fn exchange<S>(
    stream: &mut S,
    mut client: InstanceClient,
) -> Result<InstanceResult, InstanceError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Zeroizing::new(vec![0u8; 16 * 1024]);
    loop {
        if let Some(result) = client.poll_result() {
            return result;
        }
        while let Some(bytes) = client.poll_transmit() {
            if stream.write_all(&bytes).await.is_err() {
                client.handle_eof(now());
            }
        }
        if let Some(result) = client.poll_result() {
            return result;
        }
        let deadline = client.poll_timeout();
        tokio::select! {
            read = stream.read(&mut buf[..]) => match read {
                Ok(0) | Err(_) => client.handle_eof(now()),
                Ok(n) => client.handle_bytes(now(), &buf[..n]),
            },
            () = sleep_until(deadline) => client.handle_timeout(now()),
        }
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
