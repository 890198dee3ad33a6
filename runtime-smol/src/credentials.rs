//! Drives `kmstool_core`'s HTTP credential sources (the container endpoint and IMDSv2, and
//! IMDS's region) over TCP on smol, and runs a profile's `credential_process`.

use std::time::{Duration, Instant};

use kmstool_core::credentials::container::{
    ContainerClient, ContainerCredentials, ContainerEndpoint, ContainerError,
};
use kmstool_core::credentials::imds::{
    DEFAULT_STEP_TIMEOUT, ImdsClient, ImdsCredentials, ImdsEndpoint, ImdsError, ImdsRegionClient,
};
use kmstool_core::credentials::process::{self, ProcessCredentials, ProcessError};
use kmstool_core::credentials::{CredentialFetch, FetchOutput};
use kmstool_core::secret::SecretString;
use smol::future::{self, FutureExt as _};
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::TcpStream;
use zeroize::Zeroizing;

/// Fetches the instance role's credentials from IMDSv2 at `endpoint`.
pub async fn fetch_imds(endpoint: ImdsEndpoint) -> Result<ImdsCredentials, ImdsError> {
    fetch(ImdsClient::new(endpoint, Instant::now())).await
}

/// Asks IMDSv2 at `endpoint` for the instance's region (`Ok(None)` if it does not know it).
pub async fn fetch_imds_region(endpoint: ImdsEndpoint) -> Result<Option<String>, ImdsError> {
    fetch(ImdsRegionClient::new(
        endpoint,
        DEFAULT_STEP_TIMEOUT,
        Instant::now(),
    ))
    .await
}

/// Runs a profile's `credential_process` as the AWS CLI does on Unix (`sh -c COMMAND`), stdin
/// closed, stderr passed through, killed after `timeout`, and parses what it prints.
pub async fn run_credential_process(
    command: &SecretString,
    timeout: Duration,
) -> Result<ProcessCredentials, ProcessError> {
    let child = smol::process::Command::new("sh")
        .arg("-c")
        .arg(command.expose())
        .stdin(smol::process::Stdio::null())
        .stdout(smol::process::Stdio::piped())
        .stderr(smol::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ProcessError::Spawn(e.to_string()))?;
    let output = async { child.output().await.map(Some) }
        .or(async {
            smol::Timer::after(timeout).await;
            Ok(None)
        })
        .await
        .map_err(|e| ProcessError::Io(e.to_string()))?
        .ok_or(ProcessError::Timeout(timeout))?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        return Err(ProcessError::Status(output.status.to_string()));
    }
    process::parse_output(&stdout, std::time::SystemTime::now())
}

/// Fetches credentials from the container endpoint (ECS task role, EKS Pod Identity), allowed
/// `timeout` in all.
pub async fn fetch_container(
    endpoint: ContainerEndpoint,
    timeout: Duration,
) -> Result<ContainerCredentials, ContainerError> {
    fetch(ContainerClient::new(endpoint, timeout, Instant::now())).await
}

/// Drives `client` to its result.
pub async fn fetch<C: CredentialFetch>(mut client: C) -> C::Result {
    let mut connection: Option<TcpStream> = None;
    let mut buf = Zeroizing::new(vec![0u8; 8192]);
    loop {
        while let Some(output) = client.poll_output() {
            match output {
                FetchOutput::Done(result) => return result,
                FetchOutput::Send {
                    host,
                    port,
                    request_bytes,
                } => {
                    connection = None;
                    let deadline = client.poll_timeout();
                    let connect = async {
                        let mut stream = TcpStream::connect((host.as_str(), port)).await?;
                        stream.write_all(&request_bytes).await?;
                        Ok::<_, std::io::Error>(stream)
                    };
                    match connect.or(expire(deadline)).await {
                        Ok(stream) => connection = Some(stream),
                        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                            client.handle_timeout(Instant::now());
                        }
                        Err(error) => client.handle_transport_error(&error.to_string()),
                    }
                }
            }
        }
        let deadline = client.poll_timeout();
        let read = async {
            match connection.as_mut() {
                Some(stream) => stream.read(&mut buf[..]).await,
                None => future::pending().await,
            }
        };
        match read.or(expire(deadline)).await {
            Ok(0) => client.handle_eof(Instant::now()),
            Ok(n) => client.handle_response(Instant::now(), &buf[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                client.handle_timeout(Instant::now());
            }
            Err(error) => client.handle_transport_error(&error.to_string()),
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
