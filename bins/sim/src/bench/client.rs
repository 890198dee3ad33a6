//! The benchmark's parent-instance side: connections that send `SetClient` once and then
//! `Decrypt` after `Decrypt`, checking every plaintext.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_core::framing::{self, FrameDecoder};
use kmstool_core::instance::set_client_json;
use kmstool_core::protocol::CommandArgs;
use kmstool_core::protocol::{Reply, Status};
use kmstool_core::secret::Credentials;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The frames a benchmark client sends, encoded once.
#[derive(Debug)]
pub struct Workload {
    set_client: Vec<u8>,
    decrypt: Vec<u8>,
    expected_b64: String,
}

impl Workload {
    /// `SetClient` with `credentials` and `region`, then Decrypts of `ciphertext`, which must
    /// give `plaintext`.
    pub fn new(
        credentials: &Credentials,
        region: &str,
        ciphertext: Vec<u8>,
        plaintext: &[u8],
    ) -> Arc<Self> {
        let mut set_client = Vec::new();
        framing::encode(&set_client_json(credentials, Some(region)), &mut set_client);
        let mut decrypt = Vec::new();
        framing::encode(
            &CommandArgs::decrypt(ciphertext).to_json(None),
            &mut decrypt,
        );
        Arc::new(Self {
            set_client,
            decrypt,
            expected_b64: STANDARD.encode(plaintext),
        })
    }
}

/// One connection to the enclave.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    workload: Arc<Workload>,
}

impl Client {
    /// Connects and sends `SetClient`.
    pub async fn connect(addr: SocketAddr, workload: Arc<Workload>) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the enclave at {addr}"))?;
        stream.set_nodelay(true)?;
        let mut client = Self {
            stream,
            decoder: FrameDecoder::default(),
            buf: vec![0; 16 * 1024],
            workload,
        };
        let workload = Arc::clone(&client.workload);
        let reply = client
            .call(&workload.set_client)
            .await
            .context("SetClient")?;
        anyhow::ensure!(reply.status == Status::Ok, "SetClient refused: {reply:?}");
        Ok(client)
    }

    /// One Decrypt; fails unless the enclave answers with the expected plaintext.
    pub async fn decrypt(&mut self) -> anyhow::Result<()> {
        let workload = Arc::clone(&self.workload);
        let reply = self.call(&workload.decrypt).await.context("Decrypt")?;
        match (&reply.status, &reply.message) {
            (Status::Ok, Some(message)) if message.expose() == workload.expected_b64 => Ok(()),
            (Status::Ok, _) => anyhow::bail!("Decrypt answered with the wrong plaintext"),
            (Status::Error, message) => anyhow::bail!(
                "Decrypt failed: {}",
                message.as_ref().map_or("(no message)", |m| m.expose())
            ),
        }
    }

    async fn call(&mut self, frame: &[u8]) -> anyhow::Result<Reply> {
        self.stream.write_all(frame).await?;
        loop {
            if let Some(reply) = self.decoder.next_frame()? {
                return Reply::parse(reply).map_err(|e| anyhow::anyhow!("bad reply: {e:?}"));
            }
            let n = self.stream.read(&mut self.buf).await?;
            anyhow::ensure!(n > 0, "the enclave closed the connection");
            self.decoder.push(self.buf.get(..n).unwrap_or_default());
        }
    }
}

/// Opens `n` connections at once, each sending `SetClient` and one Decrypt (so the enclave
/// holds a KMS connection per concurrent call), and returns them open.
pub async fn open_warm(
    addr: SocketAddr,
    workload: &Arc<Workload>,
    n: usize,
) -> anyhow::Result<Vec<Client>> {
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let workload = Arc::clone(workload);
        tasks.spawn(async move {
            let mut client = Client::connect(addr, workload).await?;
            client.decrypt().await?;
            anyhow::Ok(client)
        });
    }
    let mut clients = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        clients.push(joined.context("client task")??);
    }
    Ok(clients)
}

/// Decrypts completed by `clients` running concurrently until `duration` has passed, and the
/// time until the last one finished. The clients come back for reuse.
pub async fn run_for(
    clients: Vec<Client>,
    duration: Duration,
) -> anyhow::Result<(u64, Duration, Vec<Client>)> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for mut client in clients {
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                client.decrypt().await?;
                done += 1;
            }
            anyhow::Ok((done, client))
        });
    }
    let mut total = 0;
    let mut back = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (done, client) = joined.context("client task")??;
        total += done;
        back.push(client);
    }
    Ok((total, started.elapsed(), back))
}
