//! Helpers for the `kmstool-instance` tests: the real binary run as a process with a
//! controlled environment, and fake enclaves that answer from a script.
//!
//! Every run starts from an empty environment with `HOME` in a fresh temporary directory and
//! IMDS switched off (`AWS_EC2_METADATA_DISABLED=true`): a test turns IMDS on only by pointing
//! it at a loopback emulator, so no run ever reaches for the real metadata address.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kmstool_core::secret::Credentials;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::framing::take_frame;

/// Longest a run may take before the test gives up on it (the binary's own timeouts are far
/// shorter; this only keeps a broken build from hanging the suite).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// One `kmstool-instance` invocation being put together.
#[derive(Debug)]
pub struct Instance {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    secrets: Vec<String>,
    home: tempfile::TempDir,
    stdout_to_full_device: bool,
    stdin: Option<Vec<u8>>,
}

impl Instance {
    /// The binary with no arguments, an empty environment but for `HOME` (a new temporary
    /// directory) and `AWS_EC2_METADATA_DISABLED=true`.
    pub fn new() -> Self {
        let home = tempfile::Builder::new()
            .prefix("kmstool-instance-home")
            .tempdir()
            .expect("temporary HOME");
        let mut env = BTreeMap::new();
        env.insert("HOME".to_owned(), home.path().display().to_string());
        env.insert("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned());
        Self {
            args: Vec::new(),
            env,
            secrets: Vec::new(),
            home,
            stdout_to_full_device: false,
            stdin: None,
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.insert(name.to_owned(), value.into());
        self
    }

    /// Unsets an environment variable set before (e.g. `AWS_EC2_METADATA_DISABLED`).
    pub fn env_remove(mut self, name: &str) -> Self {
        self.env.remove(name);
        self
    }

    /// Turns IMDS on at `endpoint` (`http://127.0.0.1:PORT`).
    pub fn imds(self, endpoint: &str) -> Self {
        self.env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
    }

    /// Puts `credentials` in `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN`.
    pub fn env_credentials(mut self, credentials: &Credentials) -> Self {
        self.watch(credentials);
        let mut this = self
            .env("AWS_ACCESS_KEY_ID", credentials.access_key_id.clone())
            .env(
                "AWS_SECRET_ACCESS_KEY",
                credentials.secret_access_key.expose(),
            );
        if let Some(token) = &credentials.session_token {
            this = this.env("AWS_SESSION_TOKEN", token.expose());
        }
        this
    }

    /// Makes the run fail if `credentials`' secret key or session token shows up in its
    /// stdout or stderr.
    pub fn watch(&mut self, credentials: &Credentials) {
        self.secrets
            .push(credentials.secret_access_key.expose().to_owned());
        if let Some(token) = &credentials.session_token {
            self.secrets.push(token.expose().to_owned());
        }
    }

    /// The temporary home directory.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Writes `contents` to `$HOME/.aws/credentials` (the file's default place).
    pub fn default_credentials_file(self, contents: &str) -> Self {
        let dir = self.home().join(".aws");
        std::fs::create_dir_all(&dir).expect("creating ~/.aws");
        std::fs::write(dir.join("credentials"), contents).expect("writing ~/.aws/credentials");
        self
    }

    /// Writes `contents` to a file in the home directory and points
    /// `AWS_SHARED_CREDENTIALS_FILE` at it.
    pub fn credentials_file(self, contents: &str) -> Self {
        let path = self.home().join("elsewhere-credentials");
        std::fs::write(&path, contents).expect("writing the credentials file");
        self.env("AWS_SHARED_CREDENTIALS_FILE", path.display().to_string())
    }

    /// Gives the run these bytes on standard input (else stdin is closed).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Writes `contents` to `$HOME/.aws/config` (the file's default place).
    pub fn default_config_file(self, contents: &str) -> Self {
        let dir = self.home().join(".aws");
        std::fs::create_dir_all(&dir).expect("creating ~/.aws");
        std::fs::write(dir.join("config"), contents).expect("writing ~/.aws/config");
        self
    }

    /// Sends stdout to `/dev/full`, where every write fails (the outcome's stdout is then
    /// empty).
    pub fn stdout_to_full_device(mut self) -> Self {
        self.stdout_to_full_device = true;
        self
    }

    /// Runs the binary to its end and checks that no watched secret was printed.
    pub async fn run(mut self) -> Outcome {
        let mut command = tokio::process::Command::new(crate::bin("kmstool-instance"));
        command
            .args(&self.args)
            .env_clear()
            .envs(&self.env)
            .current_dir(self.home.path())
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if self.stdout_to_full_device {
                let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
                Stdio::from(full.expect("opening /dev/full"))
            } else {
                Stdio::piped()
            })
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("starting kmstool-instance");
        if let (Some(bytes), Some(mut stdin)) = (self.stdin.take(), child.stdin.take()) {
            // The binary may exit before reading everything: a failed write is not the test's.
            let _ = stdin.write_all(&bytes).await;
            drop(stdin);
        }
        // On a timeout the child is dropped, hence killed (kill_on_drop) and reaped by tokio.
        let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
            .await
            .expect("kmstool-instance did not finish")
            .expect("waiting for kmstool-instance");
        let outcome = Outcome {
            code: output.status.code(),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            args: self.args,
        };
        for secret in &self.secrets {
            assert!(
                !contains(&outcome.stdout, secret.as_bytes()),
                "a secret was printed on stdout ({:?})",
                outcome.args
            );
            assert!(
                !outcome.stderr.contains(secret.as_str()),
                "a secret was printed on stderr ({:?})",
                outcome.args
            );
        }
        outcome
    }
}

impl Default for Instance {
    fn default() -> Self {
        Self::new()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Everything printed on stdout.
    pub stdout: Vec<u8>,
    /// Everything printed on stderr.
    pub stderr: String,
    args: Vec<String>,
}

impl Outcome {
    /// Checks for exit 0 and an empty stderr; returns stdout.
    pub fn success(&self) -> &[u8] {
        assert_eq!(
            self.code,
            Some(0),
            "{:?} failed; stderr: {}",
            self.args,
            self.stderr
        );
        assert_eq!(self.stderr, "", "{:?} wrote on stderr", self.args);
        &self.stdout
    }

    /// Checks for exit 1, nothing on stdout and exactly one `Error: …` line on stderr,
    /// optionally followed by one `Hint: …` line; returns the text after `Error: `.
    pub fn failure(&self) -> &str {
        assert_eq!(
            self.code,
            Some(1),
            "{:?} did not exit 1; stderr: {}",
            self.args,
            self.stderr
        );
        assert!(
            self.stdout.is_empty(),
            "{:?} failed but wrote on stdout",
            self.args
        );
        self.error_line()
    }

    /// The text after `Error: ` on stderr's first line, checking that stderr is that line and
    /// at most one `Hint: …` line.
    pub fn error_line(&self) -> &str {
        let (message, rest) = self
            .stderr
            .strip_prefix("Error: ")
            .and_then(|rest| rest.split_once('\n'))
            .unwrap_or_else(|| panic!("stderr is not an `Error: …` line: {:?}", self.stderr));
        let hint_ok = rest.is_empty()
            || rest
                .strip_prefix("Hint: ")
                .and_then(|hint| hint.strip_suffix('\n'))
                .is_some_and(|hint| !hint.contains('\n'));
        assert!(
            hint_ok,
            "stderr is more than an Error line and a Hint line: {:?}",
            self.stderr
        );
        message
    }

    /// The text after `Hint: ` on stderr, if there is such a line.
    pub fn hint(&self) -> Option<&str> {
        self.stderr
            .lines()
            .find_map(|line| line.strip_prefix("Hint: "))
    }

    /// Checks for exit 1 and returns stdout parsed as one JSON object (the `--output json`
    /// form of a failure), after checking stderr as [`Outcome::failure`] does.
    pub fn json_failure(&self) -> serde_json::Value {
        assert_eq!(
            self.code,
            Some(1),
            "{:?}; stderr: {}",
            self.args,
            self.stderr
        );
        self.error_line();
        let text = std::str::from_utf8(&self.stdout).expect("UTF-8 stdout");
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        serde_json::from_str(text).expect("stdout is one JSON object")
    }
}

/// What a fake enclave does with the next frame it reads.
#[derive(Debug, Clone)]
pub enum Step {
    /// Writes these bytes (any bytes: frames, several frames, garbage).
    Reply(Vec<u8>),
    /// Closes the connection without answering.
    Close,
    /// Never answers, keeps the connection open.
    Silent,
}

/// What a fake enclave saw on its one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Frames received, without their terminator.
    pub frames: Vec<Vec<u8>>,
    /// The client closed its side.
    pub client_closed: bool,
}

/// An enclave stand-in on 127.0.0.1 that serves one connection from a script: for each frame
/// it reads, the next [`Step`]. Once the script runs out it reads (and records) until the
/// client closes; with an empty script it is a server that never answers anything.
#[derive(Debug)]
pub struct FakeEnclave {
    address: String,
    seen: Arc<Mutex<Seen>>,
    task: Option<JoinHandle<()>>,
}

impl FakeEnclave {
    /// Starts one, inside a tokio runtime.
    pub async fn start(script: Vec<Step>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let address = format!("tcp:{}", listener.local_addr().expect("local address"));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(serve(listener, script, Arc::clone(&seen)));
        Self {
            address,
            seen,
            task: Some(task),
        }
    }

    /// Its address, for `--connect`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Waits until its connection is over (the client closed it, or the script closed it),
    /// then returns what it saw.
    pub async fn finish(mut self) -> Seen {
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the fake enclave's connection did not end")
                .expect("fake enclave task");
        }
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FakeEnclave {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn serve(listener: TcpListener, script: Vec<Step>, seen: Arc<Mutex<Seen>>) {
    let Ok((mut stream, _)) = listener.accept().await else {
        return;
    };
    let mut pending = Vec::new();
    let mut script = script.into_iter();
    loop {
        let Some(frame) = read_frame(&mut stream, &mut pending).await else {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .client_closed = true;
            return;
        };
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .frames
            .push(frame);
        match script.next() {
            Some(Step::Reply(bytes)) if stream.write_all(&bytes).await.is_err() => return,
            Some(Step::Reply(_)) | None => {}
            Some(Step::Close) => return,
            Some(Step::Silent) => {
                // Hold the connection until the client gives up.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .client_closed = true;
                return;
            }
        }
    }
}

/// The next 0-terminated frame, or `None` once the peer has closed.
async fn read_frame(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(frame) = take_frame(pending) {
            return Some(frame);
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// A credentials file with one profile per `(name, credentials)`.
pub fn credentials_file(profiles: &[(&str, &Credentials)]) -> String {
    let mut text = String::new();
    for (name, credentials) in profiles {
        text.push_str(&format!(
            "[{name}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            credentials.access_key_id,
            credentials.secret_access_key.expose()
        ));
        if let Some(token) = &credentials.session_token {
            text.push_str(&format!("aws_session_token = {}\n", token.expose()));
        }
        text.push('\n');
    }
    text
}
