//! `kmstool-sim bench`: the enclave server against the KMS emulator on loopback, measured.
//!
//! The enclave runs as its own process (`kmstool-sim enclave`, this executable), so its CPU
//! time and memory are read from `/proc/<pid>` and owe nothing to the benchmark's own work; the
//! KMS emulator and the clients run in this process. One run reports:
//!
//! - the floor: one RSA-2048 OAEP decrypt (every Decrypt needs exactly one), timed here on
//!   one thread, with the whole CMS unwrap and one simulated attestation beside it;
//! - CPU per Decrypt in the enclave over `--requests` sequential Decrypts on a warm connection,
//!   and its ratio to the floor;
//! - throughput with `--clients` concurrent clients over throughput with one, with
//!   `--latency-ms` added by the emulator;
//! - latency added by the enclave: each request's end-to-end time minus the emulator's own time
//!   for it ([`RequestRecord::service_time`](crate::kms::RequestRecord::service_time));
//! - RSS idle and with `--connections` open connections, and the start-up time (spawn to the
//!   first accepted connection).
//!
//! Each is measured for two enclave configurations: production's default (a fresh
//! attestation document per KMS call) and `--attestation-reuse-secs`. In the first, the
//! enclave's CPU includes the simulated NSM signing every document (ECDSA P-384 and CBOR),
//! work the Nitro hypervisor does outside the enclave in production.

mod client;
mod process;
mod report;
mod verifier;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use kmstool_core::cms::{self, Layout};
use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::protocol::EncryptionContext;

use self::client::{Client, Workload};
use self::process::{EnclaveProcess, EnclaveSpec, TempDir};
pub use self::report::{Configuration, Floor, Latency, Memory, Report, Startup, Throughput};
use self::verifier::CachedVerifier;
use crate::kms::{Faults, KmsConfig, KmsEmulator, KmsHandle, NsmRootVerifier, SimCredentials};
use crate::local::REGION;
use crate::nsm::{SimConfig, SimNsm, system_clock};

/// Decrypts sent before any measurement (TLS to the emulator, pool, allocator warm-up).
const WARMUP: usize = 50;
/// How long an enclave may take to start before the benchmark gives up.
const START_LIMIT: Duration = Duration::from_secs(20);

/// `kmstool-sim bench` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Sequential Decrypts measured for CPU and latency (after a warm-up).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,

    /// Concurrent clients in the throughput run (each its own connection).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,

    /// Latency the emulator adds to every request in the throughput runs, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,

    /// Length of each throughput run (one client, then all), in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,

    /// Connections held open for the memory measurement.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,

    /// Enclave start-ups timed.
    #[arg(long, default_value_t = 10)]
    pub startups: usize,

    /// `--attestation-reuse-secs` of the second configuration.
    #[arg(long, default_value_t = 300)]
    pub reuse_secs: u64,

    /// Enclave configurations to measure: fresh-attestation, attestation-reuse, rustcrypto
    /// (attestation reuse with `--crypto-backend rustcrypto`: RustCrypto RSA and AES, TLS with
    /// ring, as a `--features rustcrypto` build runs) (repeatable; default all three).
    #[arg(long = "config", value_name = "NAME", value_parser = ["fresh-attestation", "attestation-reuse", "rustcrypto"])]
    pub configs: Vec<String>,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// What every measurement shares.
struct Setup {
    kms: KmsHandle,
    spec: EnclaveSpec,
    workload: Arc<Workload>,
    args: BenchArgs,
}

/// Runs the benchmark, printing progress to stderr and the table to `out`.
pub async fn run(args: BenchArgs, out: &mut dyn Write) -> anyhow::Result<Report> {
    anyhow::ensure!(args.requests > 0, "--requests must be positive");
    anyhow::ensure!(args.clients > 0, "--clients must be positive");
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    let load_before = load_average();
    let dir = TempDir::new("kmstool-bench")?;
    let nsm_state = dir.path().join("nsm");
    let sim = SimNsm::load_or_create(&nsm_state, SimConfig::default(), system_clock())
        .context("simulated NSM")?;

    let credentials = crate::imds::random_credentials();
    let mut config = KmsConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), REGION);
    config.attestation = Some(Arc::new(CachedVerifier::new(NsmRootVerifier::new(
        sim.root_der().to_vec(),
    ))));
    config.credentials = vec![SimCredentials::new(credentials.clone(), &config.account_id)];
    let kms = KmsEmulator::start(config).await.context("KMS emulator")?;
    let ca_file = dir.path().join("kms-ca.pem");
    std::fs::write(&ca_file, kms.ca_pem()).context("writing the emulator's CA")?;
    let key = kms.create_key("kmstool-sim bench");
    let plaintext = [0x5a_u8; 32];
    let ciphertext = kms
        .encrypt(&key.key_id, &plaintext, &EncryptionContext::new())
        .map_err(|e| anyhow::anyhow!("emulator Encrypt: {e:?}"))?;

    let setup = Setup {
        spec: EnclaveSpec {
            exe: std::env::current_exe().context("finding this executable")?,
            nsm_state,
            kms: kms.local_addr(),
            ca_file,
            region: REGION.to_owned(),
            extra_args: Vec::new(),
        },
        workload: Workload::new(&credentials, REGION, ciphertext, &plaintext),
        kms,
        args,
    };

    progress("floor: RSA-2048 OAEP decrypt, CMS unwrap, simulated attestation");
    let floor = tokio::task::spawn_blocking(move || measure_floor(&sim))
        .await
        .context("floor task")??;

    progress(&format!("start-up: {} runs", setup.args.startups));
    let startup = measure_startup(&setup).await?;

    let reuse_flag = vec![
        "--attestation-reuse-secs".to_owned(),
        setup.args.reuse_secs.to_string(),
    ];
    let rustcrypto = [
        reuse_flag.clone(),
        vec!["--crypto-backend".into(), "rustcrypto".into()],
    ];
    let mut configurations = Vec::new();
    for (name, extra, floor_us) in [
        ("fresh-attestation", Vec::new(), floor.rsa_oaep_decrypt_us),
        ("attestation-reuse", reuse_flag, floor.rsa_oaep_decrypt_us),
        (
            "rustcrypto",
            rustcrypto.concat(),
            floor.rustcrypto_rsa_oaep_decrypt_us,
        ),
    ] {
        let wanted = &setup.args.configs;
        if !wanted.is_empty() && !wanted.iter().any(|c| c == name) {
            continue;
        }
        progress(&format!("configuration {name}"));
        configurations.push(measure_configuration(&setup, name, extra, floor_us).await?);
    }
    setup.kms.shutdown().await;

    let report = Report {
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        load_average: [load_before, load_average()],
        requests: setup.args.requests,
        floor,
        startup,
        configurations,
    };
    report.write_table(out)?;
    if let Some(path) = &setup.args.json {
        let json = serde_json::to_vec_pretty(&report).context("encoding JSON")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// The one-minute load average: other processes competing for the CPUs skew every figure.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn progress(what: &str) {
    eprintln!("kmstool-sim bench: {what}");
}

/// The reference costs, on this thread: RSA-2048 OAEP decrypt, the CMS unwrap around it, and
/// one attestation document from the simulated NSM.
fn measure_floor(sim: &SimNsm) -> anyhow::Result<Floor> {
    let key = RecipientKey::generate(Backend::DEFAULT)?;
    let content_key = [0x11_u8; 32];
    let encrypted_key = oaep_encrypt(key.public_key_der(), &content_key)?;
    let envelope = cms::build(
        Layout::KMS,
        &key.subject_key_id(),
        &encrypted_key,
        &content_key,
        &[0x22; 16],
        &[0x33; 32],
    );
    let rsa = rsa_decrypt_cost(&key, &encrypted_key, &content_key)?;
    let pure = RecipientKey::generate(Backend::RustCrypto)?;
    let pure_encrypted_key = oaep_encrypt(pure.public_key_der(), &content_key)?;
    let rustcrypto_rsa = rsa_decrypt_cost(&pure, &pure_encrypted_key, &content_key)?;
    let unwrap = per_call(200, || {
        cms::unwrap(&envelope, &key)?;
        Ok(())
    })?;
    let attestation = per_call(100, || {
        kmstool_core::nsm::attest(sim, key.public_key_der())?;
        Ok(())
    })?;
    Ok(Floor {
        rsa_oaep_decrypt_us: micros(rsa),
        rustcrypto_rsa_oaep_decrypt_us: micros(rustcrypto_rsa),
        cms_unwrap_us: micros(unwrap),
        sim_nsm_attestation_us: micros(attestation),
    })
}

/// CPU time of one RSA-OAEP decrypt of `encrypted` by `key`, checked against `expected`.
fn rsa_decrypt_cost(
    key: &RecipientKey,
    encrypted: &[u8],
    expected: &[u8],
) -> anyhow::Result<Duration> {
    per_call(200, || {
        let decrypted = key.oaep_sha256_decrypt(encrypted)?;
        anyhow::ensure!(decrypted.as_slice() == expected, "RSA round trip failed");
        Ok(())
    })
}

fn oaep_encrypt(spki_der: &[u8], message: &[u8]) -> anyhow::Result<Vec<u8>> {
    let public =
        PublicEncryptingKey::from_der(spki_der).map_err(|_| anyhow::anyhow!("bad public key"))?;
    let public =
        OaepPublicEncryptingKey::new(public).map_err(|_| anyhow::anyhow!("bad public key"))?;
    let mut out = vec![0; public.ciphertext_size()];
    let len = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, message, &mut out, None)
        .map_err(|_| anyhow::anyhow!("RSA-OAEP encryption failed"))?
        .len();
    out.truncate(len);
    Ok(out)
}

/// CPU time of one call of `f`: the least of five batches of `n` calls (after a few unmeasured
/// ones), from this thread's on-CPU time, so other processes competing for the CPUs do not
/// count. The least is the batch the rest of the machine disturbed least (caches, frequency).
fn per_call(n: u32, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    for _ in 0..n / 10 {
        f()?;
    }
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let before = thread_cpu_time()?;
        for _ in 0..n {
            f()?;
        }
        best = best.min(thread_cpu_time()?.saturating_sub(before) / n);
    }
    Ok(best)
}

/// This thread's CPU time (`/proc/thread-self/schedstat`). The kernel brings a running
/// thread's count up to date only at ticks and switches, so yield first: the count read is
/// then exact to the nanosecond rather than to the last tick.
fn thread_cpu_time() -> anyhow::Result<Duration> {
    std::thread::yield_now();
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("reading /proc/thread-self/schedstat")?;
    let nanos: u64 = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("unexpected /proc/thread-self/schedstat")?;
    Ok(Duration::from_nanos(nanos))
}

/// Starts the enclave `runs` times and times each until it accepts a connection, and until it
/// answers a first Decrypt (which waits for the enclave key).
async fn measure_startup(setup: &Setup) -> anyhow::Result<Startup> {
    let runs = setup.args.startups;
    let mut accepting = Vec::with_capacity(runs);
    let mut first_decrypt = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut enclave = EnclaveProcess::spawn(&setup.spec)?;
        accepting.push(tokio::task::block_in_place(|| {
            enclave.wait_accepting(START_LIMIT)
        })?);
        let mut client = Client::connect(enclave.addr(), Arc::clone(&setup.workload)).await?;
        client
            .decrypt()
            .await
            .with_context(|| format!("enclave stderr:\n{}", enclave.stderr_tail()))?;
        first_decrypt.push(enclave.since_spawn());
    }
    Ok(Startup::from_samples(&accepting, &first_decrypt))
}

/// Everything measured on one enclave process.
async fn measure_configuration(
    setup: &Setup,
    name: &str,
    extra_args: Vec<String>,
    floor_us: f64,
) -> anyhow::Result<Configuration> {
    let mut spec = setup.spec.clone();
    spec.extra_args = extra_args;
    let mut enclave = EnclaveProcess::spawn(&spec)?;
    tokio::task::block_in_place(|| enclave.wait_accepting(START_LIMIT))?;
    let measured = measure_running(setup, &enclave, floor_us).await;
    let mut configuration =
        measured.with_context(|| format!("enclave stderr:\n{}", enclave.stderr_tail()))?;
    configuration.name = name.to_owned();
    configuration.enclave_args = spec.extra_args;
    Ok(configuration)
}

async fn measure_running(
    setup: &Setup,
    enclave: &EnclaveProcess,
    floor_us: f64,
) -> anyhow::Result<Configuration> {
    let idle_rss = enclave.rss()?;
    let (cpu, latency) = sequential(setup, enclave).await?;
    let (throughput, concurrent_cpu) = throughput(setup, enclave).await?;
    let memory = open_connections(setup, enclave, idle_rss).await?;
    let cpu_us = micros(cpu);
    let concurrent_us = micros(concurrent_cpu);
    Ok(Configuration {
        name: String::new(),
        enclave_args: Vec::new(),
        cpu_per_decrypt_us: cpu_us,
        cpu_ratio: cpu_us / floor_us,
        cpu_per_decrypt_concurrent_us: concurrent_us,
        cpu_ratio_concurrent: concurrent_us / floor_us,
        latency,
        throughput,
        memory,
    })
}

/// One client, Decrypt after Decrypt, no injected latency: the enclave's CPU per Decrypt and
/// each request's latency beside the emulator's own time for it.
async fn sequential(
    setup: &Setup,
    enclave: &EnclaveProcess,
) -> anyhow::Result<(Duration, Latency)> {
    let n = setup.args.requests;
    setup.kms.set_faults(Faults::default());
    let mut client = Client::connect(enclave.addr(), Arc::clone(&setup.workload)).await?;
    for _ in 0..WARMUP {
        client.decrypt().await?;
    }
    let kms_before = setup.kms.stats().requests;
    let cpu_before = enclave.cpu_time()?;
    let mut end_to_end = Vec::with_capacity(n);
    let mut emulator = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        client.decrypt().await?;
        end_to_end.push(started.elapsed());
        let stats = setup.kms.stats();
        let record = stats.recent.back().context("the emulator saw no request")?;
        emulator.push(record.service_time);
    }
    let cpu = enclave.cpu_time()?.saturating_sub(cpu_before);
    let kms_requests = setup.kms.stats().requests - kms_before;
    anyhow::ensure!(
        kms_requests == n as u64,
        "the emulator saw {kms_requests} requests for {n} Decrypts (retries?)"
    );
    Ok((
        cpu / n as u32,
        Latency::from_samples(&end_to_end, &emulator),
    ))
}

/// Decrypts per second with one client, then with `--clients`, with `--latency-ms` injected,
/// and the enclave's CPU per Decrypt in the concurrent run.
async fn throughput(
    setup: &Setup,
    enclave: &EnclaveProcess,
) -> anyhow::Result<(Throughput, Duration)> {
    let args = &setup.args;
    let duration = Duration::from_secs_f64(args.seconds);
    setup.kms.set_faults(Faults {
        latency: Duration::from_millis(args.latency_ms),
        ..Faults::default()
    });
    // Every client once, concurrently: the enclave opens a KMS connection per client.
    let mut clients = client::open_warm(enclave.addr(), &setup.workload, args.clients).await?;
    let first = clients.pop().context("no client")?;
    let (one_done, one_took, back) = client::run_for(vec![first], duration).await?;
    clients.extend(back);
    let cpu_before = enclave.cpu_time()?;
    let (many_done, many_took, clients) = client::run_for(clients, duration).await?;
    let cpu = enclave.cpu_time()?.saturating_sub(cpu_before);
    drop(clients);
    setup.kms.set_faults(Faults::default());
    let one = one_done as f64 / one_took.as_secs_f64();
    let many = many_done as f64 / many_took.as_secs_f64();
    let per_decrypt = cpu / u32::try_from(many_done.max(1)).unwrap_or(u32::MAX);
    Ok((
        Throughput {
            kms_latency_ms: args.latency_ms,
            clients: args.clients,
            one_client_per_sec: one,
            clients_per_sec: many,
            ratio: many / one,
        },
        per_decrypt,
    ))
}

/// RSS with `--connections` connections open, each having done a Decrypt, then after they
/// close; and the peak over the process's life.
async fn open_connections(
    setup: &Setup,
    enclave: &EnclaveProcess,
    idle_rss: u64,
) -> anyhow::Result<Memory> {
    let n = setup.args.connections;
    let clients = client::open_warm(enclave.addr(), &setup.workload, n).await?;
    let with_connections = enclave.rss()?;
    drop(clients);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Memory {
        idle_rss_bytes: idle_rss,
        connections: n,
        rss_with_connections_bytes: with_connections,
        rss_after_bytes: enclave.rss()?,
        peak_rss_bytes: enclave.peak_rss()?,
    })
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
