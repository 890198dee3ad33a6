//! The loop that drives `kmstool_core`'s [`InstanceClient`] over a smol stream.

use std::time::Instant;

use kmstool_core::instance::{InstanceClient, InstanceError, InstanceResult};
use smol::future::{self, FutureExt as _};
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use zeroize::Zeroizing;

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
        while let Some(bytes) = client.poll_transmit() {
            if stream.write_all(&bytes).await.is_err() {
                client.handle_eof(Instant::now());
            }
        }
        if let Some(result) = client.poll_result() {
            return result;
        }
        let deadline = client.poll_timeout();
        let read = async { Some(stream.read(&mut buf[..]).await) };
        let timer = async {
            match deadline {
                Some(at) => {
                    smol::Timer::at(at).await;
                }
                None => future::pending::<()>().await,
            }
            None
        };
        match read.or(timer).await {
            Some(Ok(0) | Err(_)) => client.handle_eof(Instant::now()),
            Some(Ok(n)) => client.handle_bytes(Instant::now(), &buf[..n]),
            None => client.handle_timeout(Instant::now()),
        }
    }
}
