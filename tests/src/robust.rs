//! Helpers for the robustness tests (`hostile.rs`, `faults.rs`, `secrets.rs`): a raw protocol
//! client that can send anything, a well-behaved client that keeps asking while a test
//! misbehaves elsewhere, an in-process enclave with a chosen proxy and NSM, stand-ins for a
//! proxy or KMS that misbehave, capture of the process's logs, and searches for leaked secrets.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use clap::Parser as _;
use kmstool_core::address::Address;
use kmstool_core::nsm::{ErrorCode, Nsm, Request, Response};
use kmstool_core::secret::Credentials;
use kmstool_runtime_tokio::Shared;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::framing::{frame, take_frame};

/// Longest a test waits for anything. An enclave that takes longer is taken to hang, and the
/// test fails; no test asserts how fast anything is.
pub const GUARD: Duration = crate::PATIENCE;

/// The TCP address of an enclave listening on TCP.
pub fn tcp_addr(address: &Address) -> SocketAddr {
    match address {
        Address::Tcp { host, port } => format!("{host}:{port}")
            .parse()
            .expect("the enclave listens on an IP address"),
        other => panic!("not a TCP address: {other}"),
    }
}

/// A client speaking raw bytes to the enclave, to send what no well-behaved client would.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    received: Vec<u8>,
}

impl RawClient {
    /// Connects to an enclave listening on TCP.
    pub async fn connect(address: &Address) -> Self {
        Self::try_connect(address)
            .await
            .expect("connecting to the enclave")
    }

    /// Connects, reporting failure.
    pub async fn try_connect(address: &Address) -> io::Result<Self> {
        let stream = TcpStream::connect(tcp_addr(address)).await?;
        Ok(Self {
            stream,
            received: Vec::new(),
        })
    }

    /// Writes `bytes` as they are. Fails the test if the enclave neither takes them nor
    /// closes the connection within [`GUARD`].
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        tokio::time::timeout(GUARD, self.stream.write_all(bytes))
            .await
            .expect("the enclave stopped reading without closing the connection")
    }

    /// Writes a command followed by the terminator.
    pub async fn send_command(&mut self, command: &Value) {
        self.send(&frame(command)).await.expect("sending a command");
    }

    /// Closes the sending side (the enclave sees end of stream).
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// The next message from the enclave without its terminator, or `None` once the enclave
    /// has closed the connection (or reset it). Fails the test if nothing comes within
    /// [`GUARD`].
    pub async fn next_frame(&mut self) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(frame) = take_frame(&mut self.received) {
                return Some(frame);
            }
            let read = tokio::time::timeout(GUARD, self.stream.read(&mut chunk))
                .await
                .expect("the enclave neither answered nor closed: it hangs");
            match read {
                Ok(0) | Err(_) => {
                    assert!(
                        self.received.is_empty(),
                        "the enclave closed in the middle of a message: {:?}",
                        String::from_utf8_lossy(&self.received)
                    );
                    return None;
                }
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next reply, parsed; fails the test if the connection closes instead.
    pub async fn reply(&mut self) -> Value {
        let frame = self
            .next_frame()
            .await
            .expect("the enclave closed the connection instead of replying");
        serde_json::from_slice(&frame).unwrap_or_else(|e| {
            panic!(
                "reply is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&frame)
            )
        })
    }

    /// Sends a command and returns its reply.
    pub async fn call(&mut self, command: &Value) -> Value {
        self.send_command(command).await;
        self.reply().await
    }

    /// Asserts that the enclave closes the connection without sending anything more.
    pub async fn expect_close(&mut self) {
        if let Some(frame) = self.next_frame().await {
            panic!(
                "expected the connection to close, got {:?}",
                String::from_utf8_lossy(&frame)
            );
        }
    }
}

/// `SetClient` with `credentials` (and no region).
pub fn set_client(credentials: &Credentials) -> Value {
    crate::protocol::set_client(credentials, None)
}

/// `GenerateRandom` of `n` bytes.
pub fn generate_random(n: u32) -> Value {
    json!({"Operation": "GenerateRandom", "NumberOfBytes": n})
}

/// Asserts a success reply and returns its decoded `Message` (empty when there is none).
pub fn assert_ok(reply: &Value) -> Vec<u8> {
    assert_eq!(reply["Status"], "Ok", "expected success, got {reply}");
    match reply["Message"].as_str() {
        Some(message) => STANDARD.decode(message).expect("Message is base64"),
        None => Vec::new(),
    }
}

/// Asserts an error reply of `kind` whose `Message` starts with `prefix`.
pub fn assert_error(reply: &Value, kind: &str, prefix: &str) {
    assert_eq!(reply["Status"], "Error", "expected an error, got {reply}");
    assert_eq!(reply["ErrorKind"], kind, "wrong ErrorKind in {reply}");
    let message = reply["Message"].as_str().expect("an error has a Message");
    assert!(
        message.starts_with(prefix),
        "Message should start with {prefix:?}: {reply}"
    );
}

/// Opens a fresh connection, sets the client and gets 16 random bytes: proof that the enclave
/// serves a new client end to end (KMS call included).
pub async fn assert_served(address: &Address, credentials: &Credentials) {
    let mut client = RawClient::connect(address).await;
    assert_ok(&client.call(&set_client(credentials)).await);
    let random = assert_ok(&client.call(&generate_random(16)).await);
    assert_eq!(random.len(), 16);
}

/// A well-behaved client on its own connection, asking for random bytes again and again
/// (each a full KMS call) while a test misbehaves elsewhere. It counts what it was served and
/// remembers every failure.
#[derive(Debug)]
pub struct Canary {
    served: watch::Receiver<u64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<String>>,
}

impl Canary {
    /// Connects, sets the client, and starts asking.
    pub async fn start(address: &Address, credentials: &Credentials) -> Self {
        let mut client = RawClient::connect(address).await;
        assert_ok(&client.call(&set_client(credentials)).await);
        let (served_tx, served) = watch::channel(0u64);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            while !*stopped.borrow() {
                let reply = client.call(&generate_random(8)).await;
                let fine = reply["Status"] == "Ok"
                    && reply["Message"]
                        .as_str()
                        .and_then(|m| STANDARD.decode(m).ok())
                        .is_some_and(|bytes| bytes.len() == 8);
                if !fine {
                    eprintln!("the canary's request failed: {reply}");
                    failures.push(reply.to_string());
                    break;
                }
                served_tx.send_modify(|n| *n += 1);
                // Pace the requests so the canary does not starve the test on two cores.
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
            failures
        });
        Self { served, stop, task }
    }

    /// Waits until `n` more requests have been served from now on.
    pub async fn served_more(&mut self, n: u64) {
        let target = *self.served.borrow() + n;
        tokio::time::timeout(GUARD, self.served.wait_for(|&served| served >= target))
            .await
            .expect("the well-behaved client stopped being served")
            .expect("the canary task ended");
    }

    /// Stops asking; fails the test if any request failed. Returns how many were served.
    pub async fn finish(self) -> u64 {
        let _ = self.stop.send(true);
        let failures = tokio::time::timeout(GUARD, self.task)
            .await
            .expect("the canary's last request hangs")
            .expect("canary task");
        assert!(
            failures.is_empty(),
            "the well-behaved client was refused: {failures:?}"
        );
        *self.served.borrow()
    }
}

/// Polls `condition` until it holds; fails the test after [`GUARD`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Connections the enclave is serving now.
pub fn open_connections(shared: &Shared) -> usize {
    shared.stats.open_connections.load(Ordering::Relaxed)
}

/// Resident set size of this process (`VmRSS` of `/proc/self/status`), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// The real enclave server in this process, with a chosen NSM and command line (for proxies
/// and trust roots that [`kmstool_sim::local::Local`] does not let a test choose).
#[derive(Debug)]
pub struct Enclave {
    /// Where it listens (TCP on 127.0.0.1).
    pub address: Address,
    /// Its counters.
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Enclave {
    /// Starts `kmstool-enclave --listen tcp:127.0.0.1:0 <args>` with `nsm`.
    pub async fn start(args: &[String], nsm: Arc<dyn Nsm>) -> Self {
        let mut argv = vec![
            "kmstool-enclave".to_owned(),
            "--listen".to_owned(),
            "tcp:127.0.0.1:0".to_owned(),
        ];
        argv.extend(args.iter().cloned());
        let args = kmstool_enclave::Args::try_parse_from(argv).expect("enclave arguments");
        let prepared = kmstool_enclave::prepare(&args, nsm)
            .await
            .expect("starting the enclave");
        let address = prepared.local_address().clone();
        let shared = prepared.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(prepared.run(async {
            let _ = stopped.await;
        }));
        Self {
            address,
            shared,
            stop: Some(stop),
            task,
        }
    }
}

impl Drop for Enclave {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// A simulated NSM that refuses every request with `InternalError`, as a broken module would.
#[derive(Debug, Default)]
pub struct FailingNsm {
    /// Requests it was sent.
    pub requests: AtomicU64,
}

impl Nsm for FailingNsm {
    fn process(&self, _request: Request) -> Response {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Response::Error(ErrorCode::InternalError)
    }
}

/// A TCP server standing where the proxy (or KMS behind it) would be, misbehaving in one
/// chosen way and counting the connections it gets.
#[derive(Debug)]
pub struct StandIn {
    /// Its address.
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl StandIn {
    /// Accepts each connection and closes it at once, as the vsock-proxy does with a
    /// destination outside its allowlist.
    pub async fn closing() -> Self {
        Self::serve(|stream| async move { drop(stream) }).await
    }

    /// Accepts each connection and holds it open without reading or writing, as a proxy
    /// whose destination never answers.
    pub async fn silent() -> Self {
        Self::serve(|stream| async move {
            tokio::time::sleep(GUARD).await;
            drop(stream);
        })
        .await
    }

    /// Completes a TLS handshake presenting `certificate`, whatever name the client asks for,
    /// then reads until the client goes away.
    pub async fn tls(certificate: CertifiedKey) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certificate)));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::serve(move |stream| {
            let acceptor = acceptor.clone();
            async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let mut sink = [0u8; 1024];
                    while matches!(tls.read(&mut sink).await, Ok(n) if n > 0) {}
                }
            }
        })
        .await
    }

    async fn serve<F, Fut>(handle: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(handle(stream));
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What this process logs, once [`capture_logs`] has installed the capturing subscriber.
#[derive(Debug, Clone)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Everything logged so far.
    pub fn contents(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs, once per process, a global subscriber logging every event at TRACE (and every
/// `log` record, such as rustls's) into a buffer, and returns the buffer. Every thread and
/// task of the process — the enclave's, the emulator's, the test's — logs into it.
pub fn capture_logs() -> LogBuffer {
    static BUFFER: OnceLock<LogBuffer> = OnceLock::new();
    BUFFER
        .get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let writer = Arc::clone(&buffer);
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || LogWriter(Arc::clone(&writer)))
                .try_init()
                .expect("the log capture must be this process's only subscriber");
            LogBuffer(buffer)
        })
        .clone()
}

/// Renderings a leaked secret could take in text: as it is (when it is text), base64 at every
/// byte alignment (so that a secret inside a larger encoded blob is found too), URL-safe
/// base64, lower- and upper-case hex, and the way Rust's `Debug` prints a byte slice.
pub fn leak_forms(secret: &[u8]) -> Vec<String> {
    assert!(
        secret.len() >= 12,
        "a secret this short could match by chance"
    );
    let mut forms = Vec::new();
    if let Ok(text) = std::str::from_utf8(secret) {
        forms.push(text.to_owned());
    }
    forms.push(STANDARD.encode(secret));
    for skip in 0..3 {
        let rest = &secret[skip..];
        let whole_groups = &rest[..rest.len() / 3 * 3];
        forms.push(STANDARD_NO_PAD.encode(whole_groups));
        forms.push(URL_SAFE_NO_PAD.encode(whole_groups));
    }
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    forms.push(hex.to_uppercase());
    forms.push(hex);
    let debug = format!("{secret:?}");
    forms.push(
        debug
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    );
    forms
}

/// Fails the test if `haystack` holds any rendering ([`leak_forms`]) of any of `secrets`
/// (name, value). `what` names the haystack in the failure.
pub fn assert_no_leak(what: &str, haystack: &str, secrets: &[(&str, &[u8])]) {
    for (name, secret) in secrets {
        for form in leak_forms(secret) {
            assert!(
                !haystack.contains(&form),
                "the {name} leaked into {what} (as {form:?})"
            );
        }
    }
}
