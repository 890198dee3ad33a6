//! Drives `kmstool_core`'s IMDSv2 client over TCP on smol.

use std::time::Instant;

use kmstool_core::credentials::imds::{
    ImdsClient, ImdsCredentials, ImdsEndpoint, ImdsError, ImdsOutput,
};
use smol::future::{self, FutureExt as _};
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::TcpStream;
use zeroize::Zeroizing;

/// Fetches the instance role's credentials from IMDSv2 at `endpoint`.
pub async fn fetch(endpoint: ImdsEndpoint) -> Result<ImdsCredentials, ImdsError> {
    let mut imds = ImdsClient::new(endpoint, Instant::now());
    let mut connection: Option<TcpStream> = None;
    let mut buf = Zeroizing::new(vec![0u8; 8192]);
    loop {
        while let Some(output) = imds.poll_output() {
            match output {
                ImdsOutput::Done(result) => return result,
                ImdsOutput::Send {
                    host,
                    port,
                    request_bytes,
                } => {
                    connection = None;
                    let deadline = imds.poll_timeout();
                    let connect = async {
                        let mut stream = TcpStream::connect((host.as_str(), port)).await?;
                        stream.write_all(&request_bytes).await?;
                        Ok::<_, std::io::Error>(stream)
                    };
                    match connect.or(expire(deadline)).await {
                        Ok(stream) => connection = Some(stream),
                        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                            imds.handle_timeout(Instant::now());
                        }
                        Err(error) => imds.handle_transport_error(&error.to_string()),
                    }
                }
            }
        }
        let deadline = imds.poll_timeout();
        let read = async {
            match connection.as_mut() {
                Some(stream) => stream.read(&mut buf[..]).await,
                None => future::pending().await,
            }
        };
        match read.or(expire(deadline)).await {
            Ok(0) => imds.handle_eof(Instant::now()),
            Ok(n) => imds.handle_response(Instant::now(), &buf[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                imds.handle_timeout(Instant::now());
            }
            Err(error) => imds.handle_transport_error(&error.to_string()),
        }
    }
}

async fn expire<T>(deadline: Option<Instant>) -> std::io::Result<T> {
    match deadline {
        Some(at) => {
            smol::Timer::at(at).await;
            Err(std::io::ErrorKind::TimedOut.into())
        }
        None => future::pending().await,
    }
}
