//! Helpers for the memory tests (`memory.rs`): the enclave as its own `kmstool-sim enclave`
//! process (so that its resident memory is its own, read from `/proc/<pid>/status`) behind a
//! KMS emulator in the test process, hostile clients that push bytes and never read, a
//! check that the enclave closed a connection whose replies are not taken, and the smol
//! enclave server on its own thread.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kmstool_core::address::Address;
use kmstool_core::keys::KeySettings;
use kmstool_core::nsm::Nsm;
use kmstool_core::secret::Credentials;
use kmstool_core::session::SessionConfig;
use kmstool_core::tls::{self, Roots};
use kmstool_sim::kms::{KmsConfig, KmsEmulator, KmsHandle, SimCredentials};
use kmstool_sim::local::{Local, REGION};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};

use crate::processes::{nsm_state, strip_ansi};
use crate::temp_dir;

/// Lines of the enclave's stderr kept for failure messages.
const STDERR_TAIL: usize = 30;

/// How long the enclave process may take to say it is ready.
const START_LIMIT: Duration = Duration::from_secs(30);

/// If the enclave's resident memory passes this, the watcher kills it: the test is failing
/// anyway, and the machine running it must not be pushed into swapping or the OOM killer.
const KILL_ABOVE: u64 = 4 << 30;

/// Resident memory of process `pid` now (`VmRSS`), bytes; `None` once it has exited.
pub fn rss_of(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS").map(|kib| kib * 1024)
}

/// Peak resident memory of process `pid` since it started (`VmHWM`), bytes.
pub fn peak_rss_of(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM").map(|kib| kib * 1024)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The soft limit on this process's open file descriptors (`Max open files` of
/// `/proc/self/limits`); `None` when unlimited or unreadable.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Mebibytes, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// `kmstool-sim enclave` as a child process, reaching a KMS emulator that runs in the test
/// process; killed (and reaped) on drop.
#[derive(Debug)]
pub struct EnclaveProcess {
    /// Where it listens (TCP on 127.0.0.1).
    pub address: Address,
    /// Credentials the emulator accepts.
    pub credentials: Credentials,
    /// The emulator (its faults can be changed while the enclave runs).
    pub kms: KmsHandle,
    pid: u32,
    child: Arc<Mutex<Child>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    watcher: RssWatcher,
    _dir: tempfile::TempDir,
}

impl EnclaveProcess {
    /// Starts the emulator, then `kmstool-sim enclave --listen tcp:127.0.0.1:0` with a state
    /// directory whose root the emulator trusts, the emulator as `--proxy` and its CA as
    /// `--ca-bundle`, `--region us-east-1`, and `args`. Returns once it accepts connections.
    pub async fn start(args: &[String]) -> Self {
        let dir = temp_dir("kmstool-memory");
        let state = dir.path().join("nsm");
        let root_der = nsm_state(&state, &dir.path().join("nsm-root.pem"));
        let credentials = kmstool_sim::imds::random_credentials();
        let mut config =
            KmsConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), REGION).with_nsm_root(root_der);
        config.credentials = vec![SimCredentials::new(credentials.clone(), &config.account_id)];
        let kms = KmsEmulator::start(config)
            .await
            .expect("starting the KMS emulator");
        let ca_file = dir.path().join("kms-ca.pem");
        std::fs::write(&ca_file, kms.ca_pem()).expect("writing the emulator's CA");

        let mut command = Command::new(crate::bin("kmstool-sim"));
        command
            .arg("enclave")
            // The ready line only: a line per command would flood the pipe under attack.
            .args(["--log-level", "warn,kmstool_enclave=info"])
            .args(["--listen", "tcp:127.0.0.1:0", "--region", REGION])
            .arg("--state-dir")
            .arg(&state)
            .args(["--proxy", &format!("tcp:{}", kms.local_addr())])
            .arg("--ca-bundle")
            .arg(&ca_file)
            .args(args)
            .env_remove("KMSTOOL_LOG")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting kmstool-sim enclave");
        let pid = child.id();
        let pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<String>();
        let tail = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                let line = strip_ansi(&line);
                if line.contains("kmstool-enclave ready")
                    && let Some(listen) = line
                        .split_whitespace()
                        .find_map(|word| word.strip_prefix("listen="))
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(listen.to_owned());
                }
                let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let child = Arc::new(Mutex::new(child));
        let listen = tokio::task::spawn_blocking(move || ready_rx.recv_timeout(START_LIMIT))
            .await
            .expect("waiting for the enclave");
        let tail_text = || {
            let tail = stderr.lock().unwrap_or_else(PoisonError::into_inner);
            tail.iter().cloned().collect::<Vec<_>>().join("\n")
        };
        let listen = match listen {
            Ok(listen) => listen,
            Err(_) => {
                let mut child = child.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = child.kill();
                let _ = child.wait();
                panic!("the enclave did not start; its stderr:\n{}", tail_text());
            }
        };
        let address: Address = listen.parse().expect("the enclave logs its address");
        let watcher = RssWatcher::start(pid, Arc::clone(&child));
        Self {
            address,
            credentials,
            kms,
            pid,
            child,
            stderr,
            watcher,
            _dir: dir,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resident memory now, bytes; fails the test if the process is gone.
    pub fn rss(&self) -> u64 {
        rss_of(self.pid).unwrap_or_else(|| self.died())
    }

    /// The highest resident memory seen, bytes: the kernel's own peak (`VmHWM`, which no
    /// sampling can miss) or the watcher's samples, whichever is higher.
    pub fn peak_rss(&self) -> u64 {
        let hwm = peak_rss_of(self.pid).unwrap_or_else(|| self.died());
        hwm.max(self.watcher.max())
    }

    /// Forgets the peak so far: from now on [`Self::peak_rss`] reports only what follows
    /// (writes `5` to `/proc/<pid>/clear_refs`, which resets `VmHWM`).
    pub fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5")
            .expect("resetting the enclave's VmHWM");
        self.watcher.reset();
    }

    /// Whether the watcher had to kill the enclave for using too much memory.
    pub fn killed_for_memory(&self) -> bool {
        self.watcher.killed.load(Ordering::Relaxed)
    }

    /// The last lines the enclave wrote on stderr.
    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(PoisonError::into_inner);
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn died(&self) -> ! {
        let status = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_wait();
        panic!(
            "the enclave process is gone ({status:?}, killed for memory: {}); its stderr:\n{}",
            self.killed_for_memory(),
            self.stderr_tail()
        );
    }
}

impl Drop for EnclaveProcess {
    fn drop(&mut self) {
        self.watcher.stop();
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Samples a process's resident memory every few milliseconds on its own thread, keeps the
/// highest sample, and kills the process above [`KILL_ABOVE`].
#[derive(Debug)]
struct RssWatcher {
    max: Arc<AtomicU64>,
    killed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl RssWatcher {
    fn start(pid: u32, child: Arc<Mutex<Child>>) -> Self {
        let max = Arc::new(AtomicU64::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (max_w, killed_w, stop_w) = (Arc::clone(&max), Arc::clone(&killed), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop_w.load(Ordering::Relaxed) {
                let Some(rss) = rss_of(pid) else { return };
                max_w.fetch_max(rss, Ordering::Relaxed);
                if rss > KILL_ABOVE {
                    killed_w.store(true, Ordering::Relaxed);
                    let _ = child.lock().unwrap_or_else(PoisonError::into_inner).kill();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { max, killed, stop }
    }

    fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    fn reset(&self) {
        self.max.store(0, Ordering::Relaxed);
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The TCP address of `address`.
pub fn socket_addr(address: &Address) -> SocketAddr {
    crate::robust::tcp_addr(address)
}

/// Connects to `addr`; with `receive_buffer`, the client's receive buffer is set that small
/// first, so that replies it does not read fill the buffers sooner.
pub async fn connect(addr: SocketAddr, receive_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = receive_buffer {
        socket
            .set_recv_buffer_size(size)
            .expect("setting SO_RCVBUF");
    }
    tokio::time::timeout(crate::robust::GUARD, socket.connect(addr))
        .await
        .expect("the enclave does not accept the connection")
        .expect("connecting to the enclave")
}

/// Writes as much of `bytes` as the enclave takes: stops once all is written, the
/// connection fails, or no byte has been taken for `stall`. Returns how many were written.
pub async fn push(stream: &mut TcpStream, bytes: &[u8], stall: Duration) -> usize {
    let mut written = 0;
    while written < bytes.len() {
        match tokio::time::timeout(stall, stream.write(&bytes[written..])).await {
            Ok(Ok(n)) if n > 0 => written += n,
            _ => break,
        }
    }
    written
}

/// A client that never reads: its connection, and how many bytes it got written.
#[derive(Debug)]
pub struct Hostile {
    /// The connection (dropping it is the client leaving).
    pub stream: TcpStream,
    /// Bytes written before the enclave stopped taking them.
    pub written: usize,
}

/// Opens `count` connections at once, each writing `payload(i)` as far as the enclave takes
/// it ([`push`] with `stall`); returns them once every one has stopped writing. None reads.
pub async fn hostile_clients(
    addr: SocketAddr,
    count: usize,
    receive_buffer: Option<u32>,
    stall: Duration,
    payload: impl Fn(usize) -> Arc<Vec<u8>>,
) -> Vec<Hostile> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let bytes = payload(i);
        tasks.spawn(async move {
            let mut stream = connect(addr, receive_buffer).await;
            let written = push(&mut stream, &bytes, stall).await;
            (i, Hostile { stream, written })
        });
    }
    let mut clients: Vec<(usize, Hostile)> = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        clients.push(done.expect("hostile client task"));
    }
    clients.sort_by_key(|(i, _)| *i);
    clients.into_iter().map(|(_, client)| client).collect()
}

/// How a connection whose replies the client did not take fared.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The enclave closed it while the client was not reading: it had left input unread,
    /// so the kernel reset the connection, which the client sees (`SO_ERROR`) without
    /// reading.
    Closed,
    /// Still open when the bound ran out. The client then read, to show what the enclave
    /// does once its replies are taken: it got this many replies, then `then`.
    NotClosed {
        /// Replies read after the bound.
        replies: usize,
        /// What ended the reading: end of stream, a reset, or the guard.
        then: &'static str,
    },
}

/// Waits up to `bound`, without reading, for the enclave to close `stream` (polling
/// `SO_ERROR` for the reset its close sends when it leaves input unread). If it does not,
/// reads (up to a guard) to report what the enclave does once its replies are taken.
pub async fn wait_for_close(stream: &TcpStream, bound: Duration) -> Ending {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = stream.take_error() {
            return Ending::Closed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut replies = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    let guard = Instant::now() + crate::robust::GUARD;
    loop {
        let left = guard.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, async {
            stream.readable().await?;
            match stream.try_read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e),
                Ok(n) => Ok(Some(n)),
            }
        })
        .await;
        let then = match read {
            Err(_) => "nothing more within the guard",
            Ok(Err(_)) => "a reset",
            Ok(Ok(Some(0))) => "end of stream",
            Ok(Ok(None)) => continue,
            Ok(Ok(Some(n))) => {
                replies += chunk[..n].iter().filter(|&&b| b == 0).count();
                continue;
            }
        };
        return Ending::NotClosed { replies, then };
    }
}

/// The enclave server on smol, on its own thread, with the given session settings, reaching
/// `local`'s KMS emulator directly (trusting only the emulator's CA) and using its NSM;
/// stopped and joined on drop.
#[derive(Debug)]
pub struct SmolEnclave {
    /// Where it listens (TCP on 127.0.0.1).
    pub address: Address,
    stop: Option<smol::channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SmolEnclave {
    /// Starts serving `session` (its region is set to `local`'s) with at most
    /// `max_connections` at once.
    pub async fn start(local: &Local, mut session: SessionConfig, max_connections: usize) -> Self {
        use kmstool_core::server::{ServerLimits, Stats};
        use kmstool_core::tls::KmsTransportConfig;
        use kmstool_runtime_smol::Shared;
        use kmstool_runtime_smol::keys::KeyService;
        use kmstool_runtime_smol::kms::KmsConnector;
        use kmstool_runtime_smol::net::Listener;
        use kmstool_runtime_smol::server::serve;

        session.region = Some(REGION.to_owned());
        let nsm = Arc::clone(&local.nsm) as Arc<dyn Nsm>;
        let ca_pem = local.kms.ca_pem().as_bytes().to_vec();
        let proxy = Address::Tcp {
            host: "127.0.0.1".into(),
            port: local.kms.local_addr().port(),
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || {
            smol::block_on(async move {
                let tls = tls::client_config(Roots::ExtraOnly, Some(&ca_pem)).expect("TLS");
                let kms = KmsConnector::new(KmsTransportConfig {
                    proxy,
                    tls,
                    connect_timeout: Duration::from_secs(3),
                    max_idle_per_host: 64,
                    idle_timeout: Duration::from_secs(30),
                });
                let keys = KeyService::with_settings(KeySettings::new(nsm, None, Duration::ZERO));
                keys.store().await.expect("enclave key");
                let shared = Arc::new(Shared {
                    session: Arc::new(session),
                    kms,
                    keys,
                    kms_clock: Default::default(),
                    stats: Stats::default(),
                });
                let listen = Address::Tcp {
                    host: "127.0.0.1".into(),
                    port: 0,
                };
                let limits = ServerLimits {
                    max_connections,
                    shutdown_grace: Duration::from_secs(5),
                };
                let listener = Listener::bind(&listen).await.expect("binding");
                let _ = ready_tx.send(listener.local_address().expect("local address"));

                let shutdown = async {
                    let _ = stopped.recv().await;
                };
                serve(listener, shared, limits, shutdown)
                    .await
                    .expect("smol server");
            });
        });
        let address = ready_rx.await.expect("smol server started");
        Self {
            address,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl SmolEnclave {
    /// Tells the server to stop (it drains in-flight commands) and waits for its thread.
    pub async fn stop(mut self) {
        drop(self.stop.take());
        let thread = self.thread.take();
        tokio::task::spawn_blocking(move || thread.map(std::thread::JoinHandle::join))
            .await
            .expect("joining")
            .transpose()
            .expect("the smol server thread did not panic");
    }
}

impl Drop for SmolEnclave {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
