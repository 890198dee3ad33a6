//! Drives `kmstool_core`'s HTTP credential sources (the container endpoint and IMDSv2, and
//! IMDS's region) over TCP on smol, and runs a profile's `credential_process`.

use std::future::Future;
use std::time::{Duration, Instant};

use kmstool_core::credentials::chain::{ChainOutput, CredentialChain, Found};
use kmstool_core::credentials::imds::{
    DEFAULT_STEP_TIMEOUT, ImdsClient, ImdsCredentials, ImdsEndpoint, ImdsError, ImdsRegionClient,
};
use kmstool_core::credentials::process::{self, ProcessCredentials, ProcessError};
use kmstool_core::credentials::{CredentialFetch, FetchOutput, Tried};
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
    use smol::io::AsyncReadExt as _;

    let mut child = smol::process::Command::new("sh")
        .arg("-c")
        .arg(command.expose())
        .stdin(smol::process::Stdio::null())
        .stdout(smol::process::Stdio::piped())
        .stderr(smol::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ProcessError::Spawn(e.to_string()))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(ProcessError::Io("no standard output".to_owned()));
    };
    // At most one byte past the limit is read: a process printing without end is refused, not
    // buffered (it is killed when `child` drops).
    let run = async {
        let mut output = Zeroizing::new(Vec::new());
        stdout
            .take(process::MAX_OUTPUT_BYTES as u64 + 1)
            .read_to_end(&mut output)
            .await?;
        if output.len() > process::MAX_OUTPUT_BYTES {
            return Ok(Err(ProcessError::TooLong));
        }
        child.status().await.map(|status| Ok((status, output)))
    };
    let (status, stdout) = async { Some(run.await) }
        .or(async {
            smol::Timer::after(timeout).await;
            None
        })
        .await
        .ok_or(ProcessError::Timeout(timeout))?
        .map_err(|e: std::io::Error| ProcessError::Io(e.to_string()))??;
    if !status.success() {
        return Err(ProcessError::Status(status.to_string()));
    }
    process::parse_output(&stdout, std::time::SystemTime::now())
}

/// Runs core's [`CredentialChain`] to its end: the profile's `credential_process`, the
/// container endpoint or IMDS, whichever it asks for.
pub async fn resolve(mut chain: CredentialChain) -> Result<Found, Tried> {
    loop {
        match chain.poll_output() {
            Some(ChainOutput::Done(result)) => return result,
            Some(ChainOutput::RunProcess { command, timeout }) => {
                let result = run_credential_process(&command, timeout).await;
                chain.handle_process(Instant::now(), result);
            }
            Some(ChainOutput::FetchContainer(client)) => {
                let result = fetch(client).await;
                chain.handle_container(Instant::now(), result);
            }
            Some(ChainOutput::FetchImds(client)) => {
                let result = fetch(client).await;
                chain.handle_imds(Instant::now(), result);
            }
            // Every step is reported before the next poll: the chain always has an output.
            None => return Err(Tried::new()),
        }
    }
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
                    // The previous connection closes before the next one opens.
                    drop(connection.take());
                    let connect = async {
                        let mut stream = TcpStream::connect((host.as_str(), port)).await?;
                        stream.write_all(&request_bytes).await?;
                        Ok::<_, std::io::Error>(stream)
                    };
                    let waited = within(client.poll_timeout(), connect).await;
                    connection = deliver_connect(&mut client, waited);
                }
            }
        }
        let read = async {
            match connection.as_mut() {
                Some(stream) => stream.read(&mut buf[..]).await,
                None => future::pending().await,
            }
        };
        let waited = within(client.poll_timeout(), read).await;
        deliver_read(&mut client, waited, &buf);
    }
}

/// How a wait bounded by the client's deadline ended. The deadline is its own variant, never
/// an `io::Error`: a `TimedOut` error is the network's (`ETIMEDOUT`), a transport failure.
#[derive(Debug)]
enum Waited<T> {
    /// The IO finished, well or not, before the deadline.
    Done(std::io::Result<T>),
    /// The client's deadline passed first.
    Expired,
}

/// Runs `io` until it finishes or `deadline` (if any) passes.
async fn within<T>(
    deadline: Option<Instant>,
    io: impl Future<Output = std::io::Result<T>>,
) -> Waited<T> {
    let expired = async {
        match deadline {
            Some(at) => {
                smol::Timer::at(at).await;
                Waited::Expired
            }
            None => future::pending().await,
        }
    };
    async { Waited::Done(io.await) }.or(expired).await
}

/// Tells `client` how connecting and sending its request went; returns the connection.
fn deliver_connect<C: CredentialFetch>(
    client: &mut C,
    waited: Waited<TcpStream>,
) -> Option<TcpStream> {
    match waited {
        Waited::Done(Ok(stream)) => return Some(stream),
        Waited::Done(Err(error)) => {
            client.handle_transport_error(Instant::now(), &error.to_string())
        }
        Waited::Expired => client.handle_timeout(Instant::now()),
    }
    None
}

/// Tells `client` what a read into `buf` brought.
fn deliver_read<C: CredentialFetch>(client: &mut C, waited: Waited<usize>, buf: &[u8]) {
    match waited {
        Waited::Done(Ok(0)) => client.handle_eof(Instant::now()),
        Waited::Done(Ok(n)) => client.handle_response(Instant::now(), &buf[..n]),
        Waited::Done(Err(error)) => {
            client.handle_transport_error(Instant::now(), &error.to_string())
        }
        Waited::Expired => client.handle_timeout(Instant::now()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::time::Duration;

    /// Records which of its inputs a driver called.
    #[derive(Debug, Default)]
    struct Recorder(Vec<String>);

    impl CredentialFetch for Recorder {
        type Result = ();

        fn poll_output(&mut self) -> Option<FetchOutput<()>> {
            None
        }

        fn poll_timeout(&self) -> Option<Instant> {
            None
        }

        fn handle_response(&mut self, _now: Instant, bytes: &[u8]) {
            self.0.push(format!("response {}", bytes.len()));
        }

        fn handle_eof(&mut self, _now: Instant) {
            self.0.push("eof".into());
        }

        fn handle_transport_error(&mut self, _now: Instant, error: &str) {
            self.0.push(format!("transport error: {error}"));
        }

        fn handle_timeout(&mut self, _now: Instant) {
            self.0.push("timeout".into());
        }
    }

    fn etimedout() -> io::Error {
        io::Error::from(io::ErrorKind::TimedOut)
    }

    #[test]
    fn an_etimedout_from_the_network_is_a_transport_error_not_the_deadline() {
        let far = Some(Instant::now() + Duration::from_secs(3600));
        let mut client = Recorder::default();
        let read = smol::block_on(within(far, async { Err::<usize, _>(etimedout()) }));
        deliver_read(&mut client, read, &[]);
        let connect = smol::block_on(within(far, async { Err::<TcpStream, _>(etimedout()) }));
        assert!(deliver_connect(&mut client, connect).is_none());
        let message = format!("transport error: {}", etimedout());
        assert_eq!(client.0, [message.clone(), message]);
    }

    #[test]
    fn the_deadline_passing_is_a_timeout() {
        let past = Some(Instant::now());
        let mut client = Recorder::default();
        let read = smol::block_on(within(past, future::pending::<io::Result<usize>>()));
        deliver_read(&mut client, read, &[]);
        let connect = smol::block_on(within(past, future::pending::<io::Result<TcpStream>>()));
        assert!(deliver_connect(&mut client, connect).is_none());
        assert_eq!(client.0, ["timeout", "timeout"]);
    }

    #[test]
    fn reads_are_delivered_as_bytes_or_the_end() {
        let mut client = Recorder::default();
        deliver_read(&mut client, Waited::Done(Ok(3)), b"abcdef");
        deliver_read(&mut client, Waited::Done(Ok(0)), b"abcdef");
        assert_eq!(client.0, ["response 3", "eof"]);
    }
}
