//! Helpers for the enclave-side tests: a raw client of the enclave protocol, signed calls to a
//! KMS emulator over HTTPS, and guards for the `kmstool-sim` processes the tests start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_core::address::Address;
use kmstool_core::http::{HttpLimits, Progress, ResponseParser};
use kmstool_core::kms::endpoint::kms_host;
use kmstool_core::kms::request::{RequestTarget, http_request};
use kmstool_core::protocol::EncryptionContext;
use kmstool_core::secret::Credentials;
use kmstool_core::tls;
use kmstool_runtime_tokio::kms::{KmsConnector, KmsTransportConfig};
use kmstool_runtime_tokio::net::{Stream, connect};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long a test waits for anything (a reply, a process to be ready) before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Standard padded base64.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard padded base64, panicking with the text when it is not.
pub fn unb64(text: &str) -> Vec<u8> {
    STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text:?}"))
}

/// An encryption context from pairs.
pub fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A `SetClient` command for `credentials` (with its session token, if any) and `region`.
pub fn set_client(credentials: &Credentials, region: Option<&str>) -> Value {
    let mut command = json!({
        "Operation": "SetClient",
        "AwsAccessKeyId": credentials.access_key_id,
        "AwsSecretAccessKey": credentials.secret_access_key.expose(),
    });
    if let Some(token) = &credentials.session_token {
        command["AwsSessionToken"] = token.expose().into();
    }
    if let Some(region) = region {
        command["AwsRegion"] = region.into();
    }
    command
}

/// A `Decrypt` command.
pub fn decrypt(ciphertext: &[u8], encryption_context: &EncryptionContext) -> Value {
    let mut command = json!({"Operation": "Decrypt", "Ciphertext": b64(ciphertext)});
    if !encryption_context.is_empty() {
        command["EncryptionContext"] = json!(encryption_context);
    }
    command
}

/// One message of the enclave protocol: JSON and a 0 byte.
pub fn frame(message: &Value) -> Vec<u8> {
    let mut bytes = message.to_string().into_bytes();
    bytes.push(0);
    bytes
}

/// A connection to an enclave that speaks the protocol byte by byte, so tests can send
/// anything (pipelined commands, garbage) and see every reply.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `address`.
    pub async fn connect(address: &Address) -> Self {
        let stream = connect(address)
            .await
            .unwrap_or_else(|e| panic!("connecting to the enclave at {address}: {e}"));
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends one framed command.
    pub async fn send(&mut self, command: &Value) {
        self.send_bytes(&frame(command)).await;
    }

    /// Sends raw bytes in one write.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("writing to the enclave: {e}"));
    }

    /// Sends raw bytes; `false` when the enclave has closed the connection.
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Closes the sending side (the enclave answers what it has, then closes).
    pub async fn finish(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// The next reply, `None` when the enclave closed the connection (or reset it) first.
    pub async fn next_reply(&mut self) -> Option<Value> {
        tokio::time::timeout(PATIENCE, self.read_frame())
            .await
            .unwrap_or_else(|_| panic!("no reply within {PATIENCE:?}"))
            .map(|bytes| {
                serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "reply is not JSON ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    )
                })
            })
    }

    /// The next reply; panics when the connection closes first.
    pub async fn reply(&mut self) -> Value {
        self.next_reply()
            .await
            .expect("the enclave closed the connection instead of replying")
    }

    /// Sends `command` and returns its reply.
    pub async fn call(&mut self, command: &Value) -> Value {
        self.send(command).await;
        self.reply().await
    }

    /// Sends `SetClient` and asserts it succeeded.
    pub async fn set_client(&mut self, credentials: &Credentials, region: Option<&str>) {
        let reply = self.call(&set_client(credentials, region)).await;
        assert_eq!(reply, json!({"Status": "Ok"}), "SetClient");
    }

    /// Every reply until the enclave closes the connection.
    pub async fn replies_until_close(&mut self) -> Vec<Value> {
        let mut replies = Vec::new();
        while let Some(reply) = self.next_reply().await {
            replies.push(reply);
        }
        replies
    }

    async fn read_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == 0) {
                let frame = self.buf[..end].to_vec();
                self.buf.drain(..=end);
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    assert!(
                        self.buf.is_empty(),
                        "connection closed after a partial reply: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Asserts an error reply: its `ErrorKind` and that `Message` starts with `prefix`; returns
/// the message.
pub fn assert_error(reply: &Value, kind: &str, prefix: &str) -> String {
    assert_eq!(reply["Status"], "Error", "{reply}");
    assert_eq!(reply["ErrorKind"], kind, "{reply}");
    let message = reply["Message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.starts_with(prefix),
        "message should start with {prefix:?}: {reply}"
    );
    message
}

/// The decoded `Message` of a success reply.
pub fn assert_ok(reply: &Value) -> Vec<u8> {
    assert_eq!(reply["Status"], "Ok", "{reply}");
    unb64(reply["Message"].as_str().expect("Message"))
}

/// A TCP port on 127.0.0.1 nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local address").port()
}

/// A KMS answer.
#[derive(Debug)]
pub struct KmsAnswer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

/// Calls KMS operation `operation` (e.g. `Encrypt`) on the emulator at `kms`, over TLS
/// trusting `ca_pem`, signed with core's SigV4 for `credentials` in `region`.
pub async fn kms_call(
    kms: SocketAddr,
    ca_pem: &[u8],
    credentials: &Credentials,
    region: &str,
    operation: &str,
    body: &Value,
) -> anyhow::Result<KmsAnswer> {
    let host = kms_host(region);
    let connector = KmsConnector::new(KmsTransportConfig {
        proxy: Address::Tcp {
            host: kms.ip().to_string(),
            port: kms.port(),
        },
        tls: tls::client_config(tls::Roots::ExtraOnly, Some(ca_pem))?,
        connect_timeout: Duration::from_secs(5),
        max_idle_per_host: 1,
        idle_timeout: Duration::from_secs(1),
    });
    let (mut stream, _) = connector
        .checkout(&host, false)
        .await
        .map_err(|f| anyhow::anyhow!("connecting to KMS: {}", f.detail))?;
    let target = RequestTarget {
        host: &host,
        region,
        credentials,
    };
    let request = http_request(
        &target,
        &format!("TrentService.{operation}"),
        body.to_string().as_bytes(),
        SystemTime::now(),
    )?;
    stream.write_all(&request).await?;
    let mut parser = ResponseParser::new(HttpLimits::default());
    let mut chunk = [0u8; 16 * 1024];
    let response = loop {
        let n = stream.read(&mut chunk).await?;
        let progress = if n == 0 {
            Progress::Complete(parser.eof()?)
        } else {
            parser.feed(&chunk[..n])?
        };
        if let Progress::Complete(response) = progress {
            break response;
        }
    };
    Ok(KmsAnswer {
        status: response.status,
        body: serde_json::from_slice(&response.body).unwrap_or(Value::Null),
    })
}

/// Encrypts `plaintext` under `key_id` with a signed `Encrypt` request; the `CiphertextBlob`.
pub async fn kms_encrypt(
    kms: SocketAddr,
    ca_pem: &[u8],
    credentials: &Credentials,
    key_id: &str,
    plaintext: &[u8],
    encryption_context: &EncryptionContext,
) -> anyhow::Result<Vec<u8>> {
    let body = json!({
        "KeyId": key_id,
        "Plaintext": b64(plaintext),
        "EncryptionContext": encryption_context,
    });
    let answer = kms_call(kms, ca_pem, credentials, "us-east-1", "Encrypt", &body).await?;
    anyhow::ensure!(answer.status == 200, "Encrypt: {answer:?}");
    let blob = answer.body["CiphertextBlob"]
        .as_str()
        .context("no CiphertextBlob")?;
    Ok(STANDARD.decode(blob)?)
}

/// A credentials file for `kmstool-sim kms --credentials`.
pub fn credentials_json(all: &[&Credentials]) -> String {
    let entries: Vec<Value> = all
        .iter()
        .map(|c| {
            let mut entry = json!({
                "AccessKeyId": c.access_key_id,
                "SecretAccessKey": c.secret_access_key.expose(),
            });
            if let Some(token) = &c.session_token {
                entry["SessionToken"] = token.expose().into();
            }
            entry
        })
        .collect();
    Value::Array(entries).to_string()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory under the system's temporary directory.
    pub fn new(prefix: &str) -> Self {
        let unique = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a process wrote to one of its pipes, and whether the pipe has closed.
#[derive(Debug, Default)]
struct Captured {
    text: Mutex<(String, bool)>,
    changed: Condvar,
}

impl Captured {
    fn collect(self: Arc<Self>, mut pipe: impl std::io::Read + Send + 'static) {
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                let n = pipe.read(&mut chunk).unwrap_or(0);
                let mut text = self.text.lock().unwrap_or_else(PoisonError::into_inner);
                if n == 0 {
                    text.1 = true;
                } else {
                    text.0.push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
                self.changed.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
    }
}

/// A child process killed (and reaped) when dropped, whatever the test's outcome, with its
/// stdout and stderr collected as they come.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    stdout: Arc<Captured>,
    stderr: Arc<Captured>,
}

impl Process {
    /// Starts `command` with piped output and colourless logs.
    pub fn spawn(mut command: Command) -> Self {
        let name = format!("{command:?}");
        command
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdout = Arc::new(Captured::default());
        let stderr = Arc::new(Captured::default());
        if let Some(pipe) = child.stdout.take() {
            Arc::clone(&stdout).collect(pipe);
        }
        if let Some(pipe) = child.stderr.take() {
            Arc::clone(&stderr).collect(pipe);
        }
        Self {
            name,
            child,
            stdout,
            stderr,
        }
    }

    /// Everything on stderr so far (ANSI colours removed).
    pub fn stderr(&self) -> String {
        strip_ansi(
            &self
                .stderr
                .text
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .0,
        )
    }

    /// Waits until `find` finds something in stdout (`on_stdout`) or stderr; panics with the
    /// output when the process closes it first or [`PATIENCE`] runs out.
    pub fn wait_for<T>(&self, on_stdout: bool, find: impl Fn(&str) -> Option<T>) -> T {
        let captured = if on_stdout {
            &self.stdout
        } else {
            &self.stderr
        };
        let deadline = Instant::now() + PATIENCE;
        let mut text = captured.text.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(found) = find(&strip_ansi(&text.0)) {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !text.1 && !left.is_zero(),
                "{} never wrote what the test waits for; it wrote:\n{}\nstderr:\n{}",
                self.name,
                text.0,
                if on_stdout {
                    self.stderr()
                } else {
                    String::new()
                }
            );
            text = captured
                .changed
                .wait_timeout(text, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits for a log line containing `marker` and returns the value of its `field=`.
    pub fn wait_for_log_field(&self, marker: &str, field: &str) -> String {
        self.wait_for(false, |text| {
            text.lines()
                .find(|line| line.contains(marker))
                .and_then(|line| log_field(line, field))
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `field=value` in a log line.
fn log_field(line: &str, field: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{field}=")))
        .map(str::to_owned)
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `kmstool-sim kms` process on 127.0.0.1 with a key `alias/test`.
#[derive(Debug)]
pub struct KmsProcess {
    /// Its address.
    pub addr: SocketAddr,
    /// The ARN of `alias/test`.
    pub key_arn: String,
    /// Its CA certificate (PEM), as written by `--ca-out`.
    pub ca_pem: Vec<u8>,
    /// The `--ca-out` file.
    pub ca_file: PathBuf,
    /// The process.
    pub process: Process,
}

impl KmsProcess {
    /// Starts `kmstool-sim kms` accepting `credentials`, trusting the NSM root `nsm_root`
    /// (PEM file), with `extra` arguments; writes its files into `dir`.
    pub fn start(
        dir: &Path,
        credentials: &[&Credentials],
        nsm_root: &Path,
        extra: &[&str],
    ) -> Self {
        let creds_file = dir.join("creds.json");
        std::fs::write(&creds_file, credentials_json(credentials)).expect("creds.json");
        let ca_file = dir.join("kms-ca.pem");
        let mut command = Command::new(crate::bin("kmstool-sim"));
        command
            .arg("kms")
            .args(["--listen", "127.0.0.1:0", "--ca-out"])
            .arg(&ca_file)
            .arg("--credentials")
            .arg(&creds_file)
            .arg("--nsm-root")
            .arg(nsm_root)
            .args(["--create-key", "alias/test"])
            .args(extra);
        let process = Process::spawn(command);
        let key_arn = process.wait_for(true, |out| {
            out.lines()
                .find_map(|line| line.strip_prefix("alias/test "))
                .map(str::to_owned)
        });
        let addr = process
            .wait_for_log_field("KMS emulator ready", "listen")
            .parse()
            .expect("the emulator logs its address");
        // The CA file is written before the ready line.
        let ca_pem = std::fs::read(&ca_file).expect("--ca-out file");
        Self {
            addr,
            key_arn,
            ca_pem,
            ca_file,
            process,
        }
    }

    /// `Encrypt` on this emulator, signed with `credentials`.
    pub fn encrypt(
        &self,
        credentials: &Credentials,
        plaintext: &[u8],
        encryption_context: &EncryptionContext,
    ) -> Vec<u8> {
        block_on(kms_encrypt(
            self.addr,
            &self.ca_pem,
            credentials,
            &self.key_arn,
            plaintext,
            encryption_context,
        ))
        .expect("Encrypt")
    }

    /// `tcp:HOST:PORT` of this emulator, for `--proxy`.
    pub fn proxy(&self) -> String {
        format!("tcp:{}", self.addr)
    }
}

/// Creates (or loads) a simulated NSM state directory and writes its root certificate (PEM)
/// to `root_file`, so a KMS emulator can trust the documents of `kmstool-sim` processes
/// started later with `--state-dir dir`.
pub fn nsm_state(dir: &Path, root_file: &Path) -> Vec<u8> {
    use kmstool_sim::nsm::{SimConfig, SimNsm, system_clock};
    let nsm = SimNsm::load_or_create(dir, SimConfig::default(), system_clock())
        .unwrap_or_else(|e| panic!("simulated NSM state in {}: {e}", dir.display()));
    std::fs::write(root_file, nsm.root_pem()).expect("writing the NSM root");
    nsm.root_der().to_vec()
}

/// Runs `future` on a fresh runtime (for synchronous tests).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}
