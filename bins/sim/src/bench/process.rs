//! The enclave under test as a child process (`kmstool-sim enclave`, this same executable), so
//! its CPU time and memory are its own: read from `/proc/<pid>/stat` and `/proc/<pid>/status`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Clock ticks per second of `/proc/<pid>/stat`'s `utime` and `stime` (USER_HZ: fixed at 100
/// by the kernel ABI on the architectures kmstool runs on, x86-64 and arm64).
const USER_HZ: u64 = 100;

/// Lines of the enclave's stderr kept for error messages.
const STDERR_TAIL: usize = 20;

/// How to start an enclave.
#[derive(Debug, Clone)]
pub struct EnclaveSpec {
    /// The `kmstool-sim` executable.
    pub exe: PathBuf,
    /// `--state-dir` of the simulated NSM (the emulator trusts its root).
    pub nsm_state: PathBuf,
    /// The KMS emulator, as `--proxy`.
    pub kms: SocketAddr,
    /// The emulator's CA, as `--ca-bundle`.
    pub ca_file: PathBuf,
    /// `--region`.
    pub region: String,
    /// More `kmstool-enclave` flags.
    pub extra_args: Vec<String>,
}

/// A running enclave process; killed (and reaped) on drop.
#[derive(Debug)]
pub struct EnclaveProcess {
    child: Child,
    /// Where it listens, once its ready line said (it binds port 0 itself).
    addr: Option<SocketAddr>,
    spawned: Instant,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl EnclaveProcess {
    /// Starts the enclave listening on a loopback port it picks (port 0): no port is chosen
    /// here and released for it to bind, which another process could take meanwhile.
    pub fn spawn(spec: &EnclaveSpec) -> anyhow::Result<Self> {
        let mut command = Command::new(&spec.exe);
        command
            .arg("enclave")
            .arg("--state-dir")
            .arg(&spec.nsm_state)
            .arg("--listen")
            .arg("tcp:127.0.0.1:0")
            .arg("--proxy")
            .arg(format!("tcp:{}", spec.kms))
            .arg("--ca-bundle")
            .arg(&spec.ca_file)
            .arg("--region")
            .arg(&spec.region)
            .args(&spec.extra_args)
            .env_remove("KMSTOOL_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} enclave", spec.exe.display()))?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(pipe) = child.stderr.take() {
            let tail = Arc::clone(&stderr);
            std::thread::spawn(move || keep_tail(BufReader::new(pipe), &tail));
        }
        Ok(Self {
            child,
            addr: None,
            spawned,
            stderr,
        })
    }

    /// Time since the process was spawned.
    pub fn since_spawn(&self) -> Duration {
        self.spawned.elapsed()
    }

    /// Where it listens (known once [`wait_accepting`](Self::wait_accepting) returned; the
    /// unspecified address before).
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Waits for the enclave's ready line (which names the address it bound), then polls
    /// that port until a connection is accepted, and returns the time since spawn. Blocks the
    /// calling thread (polls every 200 µs).
    pub fn wait_accepting(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        loop {
            if self.addr.is_none() {
                self.addr = self.ready_address();
            }
            if let Some(addr) = self.addr
                && TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
            {
                return Ok(self.spawned.elapsed());
            }
            if let Some(status) = self.child.try_wait().context("enclave process")? {
                anyhow::bail!("the enclave exited ({status}):\n{}", self.stderr_tail());
            }
            if self.spawned.elapsed() > limit {
                anyhow::bail!(
                    "the enclave did not accept connections within {limit:?}:\n{}",
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// CPU time used so far, user plus system, all threads.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = read_proc(self.child.id(), "stat")?;
        let ticks = parse_cpu_ticks(&stat).context("unexpected /proc/<pid>/stat")?;
        Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
    }

    /// Resident memory now (`VmRSS`), bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        self.status_kib("VmRSS").map(|kib| kib * 1024)
    }

    /// Peak resident memory (`VmHWM`), bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        self.status_kib("VmHWM").map(|kib| kib * 1024)
    }

    /// The address in the enclave's `kmstool-enclave ready listen=tcp:HOST:PORT` line, if it
    /// has written it.
    fn ready_address(&self) -> Option<SocketAddr> {
        let tail = self.stderr.lock().unwrap_or_else(PoisonError::into_inner);
        tail.iter()
            .filter(|line| line.contains("kmstool-enclave ready"))
            .find_map(|line| listen_address(line))
    }

    /// The last lines the enclave wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(PoisonError::into_inner);
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        let status = read_proc(self.child.id(), "status")?;
        parse_status_kib(&status, field)
            .with_context(|| format!("no {field} in /proc/<pid>/status"))
    }
}

impl Drop for EnclaveProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keep_tail(reader: impl BufRead, tail: &Mutex<VecDeque<String>>) {
    for line in reader.lines() {
        let Ok(line) = line else { return };
        let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// The `listen=tcp:HOST:PORT` field of a log line.
fn listen_address(line: &str) -> Option<SocketAddr> {
    let field = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("listen=tcp:"))?;
    field.parse().ok()
}

fn read_proc(pid: u32, file: &str) -> anyhow::Result<String> {
    let path = Path::new("/proc").join(pid.to_string()).join(file);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// `utime + stime` of a `/proc/<pid>/stat` line (fields 14 and 15, counted after the command
/// name, which may hold spaces and parentheses).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`, in KiB.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/<prefix>-<random>`.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let mut random = [0u8; 8];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let path = std::env::temp_dir().join(format!("{prefix}-{}", hex::encode(random)));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_names_the_bound_address() {
        let line = "2026-12-06T02:59:00Z  INFO kmstool_enclave: kmstool-enclave ready \
                    listen=tcp:127.0.0.1:40123 proxy=tcp:127.0.0.1:8443 region=us-east-1";
        assert_eq!(
            listen_address(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 40123)))
        );
        assert_eq!(
            listen_address("kmstool-enclave ready listen=vsock:any:5000"),
            None
        );
    }

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_odd_command_names() {
        // Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let stat = "4242 (kmstool) sim) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1290));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\tkmstool-sim\nVmHWM:\t   20480 kB\nVmRSS:\t    8192 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(8192));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(parse_status_kib("VmRSS:\tlots\n", "VmRSS"), None);
    }
}
