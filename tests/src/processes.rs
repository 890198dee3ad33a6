//! The `kmstool-sim` processes the tests start: a guard that kills its child and collects its
//! output, and a `kmstool-sim kms` emulator process with its CA, key and credentials file;
//! the simulated NSM state such processes share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use kmstool_core::protocol::EncryptionContext;
use kmstool_core::secret::Credentials;
use kmstool_sim::kms_client::{EncryptRequest, KmsClient, encrypt, signed_request};
use serde_json::{Value, json};

use crate::{PATIENCE, block_on};

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
        block_on(encrypt(&EncryptRequest {
            kms: self.addr,
            ca_pem: &self.ca_pem,
            region: "us-east-1",
            credentials,
            key_id: &self.key_arn,
            plaintext,
            encryption_context,
        }))
        .expect("Encrypt")
    }

    /// Any operation on this emulator (`CreateKey`, `GetPublicKey`, ...), signed with
    /// `credentials` in `us-east-1`: KMS's JSON answer; panics on an error status.
    pub fn call(&self, credentials: &Credentials, operation: &str, body: &Value) -> Value {
        let host = "kms.us-east-1.amazonaws.com";
        let body = serde_json::to_vec(body).expect("JSON");
        let now = std::time::SystemTime::now();
        let request = signed_request(host, "us-east-1", credentials, operation, &body, now)
            .expect("a signed request");
        let reply = block_on(async {
            let mut client = KmsClient::connect(self.addr, &self.ca_pem, host).await?;
            client.send(&request).await
        })
        .expect("an answer");
        assert_eq!(reply.status, 200, "{operation}: {}", reply.message());
        reply.json()
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
