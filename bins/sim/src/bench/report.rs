//! The benchmark's results: what `--json` writes, and the table printed at the end.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

/// CPU per Decrypt over one RSA-2048 OAEP decrypt, at most.
pub const TARGET_CPU_RATIO: f64 = 1.5;
/// Throughput with many clients over one client, at least.
pub const TARGET_THROUGHPUT_RATIO: f64 = 20.0;
/// Idle RSS, at most.
pub const TARGET_IDLE_RSS: u64 = 10 << 20;
/// RSS with the open connections, at most.
pub const TARGET_CONNECTIONS_RSS: u64 = 32 << 20;
/// Start-up, at most (milliseconds).
pub const TARGET_STARTUP_MS: f64 = 200.0;

/// One benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `release` or `debug` (a debug build's numbers mean little).
    pub build: &'static str,
    /// CPUs available.
    pub cpus: usize,
    /// One-minute load average before and after the run (other processes skew the figures).
    pub load_average: [f64; 2],
    /// Sequential Decrypts measured per configuration.
    pub requests: usize,
    /// Reference costs.
    pub floor: Floor,
    /// Start-up times.
    pub startup: Startup,
    /// Results per enclave configuration.
    pub configurations: Vec<Configuration>,
}

/// Reference costs, timed in the benchmark process on one thread.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// One RSA-2048 OAEP-SHA256 decrypt (AWS-LC), µs.
    pub rsa_oaep_decrypt_us: f64,
    /// The same with RustCrypto's `rsa` (the floor of the `rustcrypto` configuration), µs.
    pub rustcrypto_rsa_oaep_decrypt_us: f64,
    /// One whole CMS unwrap: parse, RSA-OAEP, AES-256-CBC, µs.
    pub cms_unwrap_us: f64,
    /// One attestation document from the simulated NSM, µs.
    pub sim_nsm_attestation_us: f64,
}

/// Time from spawning the enclave to its first accepted connection, and to the answer of a
/// first Decrypt (which needs the enclave key, generated in the background).
#[derive(Debug, Clone, Serialize)]
pub struct Startup {
    /// Spawn to accepting, each run, ms.
    pub samples_ms: Vec<f64>,
    /// Median, ms.
    pub median_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Spawn to a first Decrypt answered, each run, ms.
    pub first_decrypt_samples_ms: Vec<f64>,
    /// Median, ms.
    pub first_decrypt_median_ms: f64,
    /// Slowest, ms.
    pub first_decrypt_max_ms: f64,
}

impl Startup {
    /// From the measured durations.
    pub fn from_samples(accepting: &[Duration], first_decrypt: &[Duration]) -> Self {
        let (samples_ms, median_ms, max_ms) = summary(accepting);
        let (first_decrypt_samples_ms, first_decrypt_median_ms, first_decrypt_max_ms) =
            summary(first_decrypt);
        Self {
            samples_ms,
            median_ms,
            max_ms,
            first_decrypt_samples_ms,
            first_decrypt_median_ms,
            first_decrypt_max_ms,
        }
    }
}

/// Samples, median and maximum, in ms.
fn summary(samples: &[Duration]) -> (Vec<f64>, f64, f64) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut sorted = samples.to_vec();
    sorted.sort();
    (
        samples.iter().copied().map(ms).collect(),
        ms(percentile(&sorted, 0.5)),
        ms(sorted.last().copied().unwrap_or_default()),
    )
}

/// Results of one enclave configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Configuration {
    /// `fresh-attestation` or `attestation-reuse`.
    pub name: String,
    /// Flags given to the enclave besides addresses.
    pub enclave_args: Vec<String>,
    /// Enclave CPU per Decrypt, one client, µs.
    pub cpu_per_decrypt_us: f64,
    /// That over [`Floor::rsa_oaep_decrypt_us`].
    pub cpu_ratio: f64,
    /// Enclave CPU per Decrypt in the concurrent throughput run, µs.
    pub cpu_per_decrypt_concurrent_us: f64,
    /// That over [`Floor::rsa_oaep_decrypt_us`].
    pub cpu_ratio_concurrent: f64,
    /// Latency of the sequential run.
    pub latency: Latency,
    /// Throughput runs.
    pub throughput: Throughput,
    /// Memory.
    pub memory: Memory,
}

/// Latency percentiles of the sequential run, µs.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Client-measured, send to reply.
    pub end_to_end_p50_us: f64,
    /// Client-measured, send to reply.
    pub end_to_end_p99_us: f64,
    /// The emulator's own time per request.
    pub emulator_p50_us: f64,
    /// The emulator's own time per request.
    pub emulator_p99_us: f64,
    /// Per request, end to end minus the emulator's time.
    pub added_p50_us: f64,
    /// Per request, end to end minus the emulator's time.
    pub added_p99_us: f64,
}

impl Latency {
    /// From paired samples: `end_to_end[i]` and `emulator[i]` belong to the same request.
    pub fn from_samples(end_to_end: &[Duration], emulator: &[Duration]) -> Self {
        let mut added: Vec<Duration> = end_to_end
            .iter()
            .zip(emulator)
            .map(|(total, kms)| total.saturating_sub(*kms))
            .collect();
        let mut end_to_end = end_to_end.to_vec();
        let mut emulator = emulator.to_vec();
        for samples in [&mut added, &mut end_to_end, &mut emulator] {
            samples.sort();
        }
        let us = |samples: &[Duration], q: f64| percentile(samples, q).as_secs_f64() * 1e6;
        Self {
            end_to_end_p50_us: us(&end_to_end, 0.5),
            end_to_end_p99_us: us(&end_to_end, 0.99),
            emulator_p50_us: us(&emulator, 0.5),
            emulator_p99_us: us(&emulator, 0.99),
            added_p50_us: us(&added, 0.5),
            added_p99_us: us(&added, 0.99),
        }
    }
}

/// Throughput runs.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Latency the emulator added per request, ms.
    pub kms_latency_ms: u64,
    /// Concurrent clients of the second run.
    pub clients: usize,
    /// Decrypts per second, one client.
    pub one_client_per_sec: f64,
    /// Decrypts per second, all clients.
    pub clients_per_sec: f64,
    /// `clients_per_sec / one_client_per_sec`.
    pub ratio: f64,
}

/// Resident memory of the enclave process, bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Just started, no connection yet.
    pub idle_rss_bytes: u64,
    /// Connections open for the next figure.
    pub connections: usize,
    /// With `connections` connections open, each having done a Decrypt.
    pub rss_with_connections_bytes: u64,
    /// After they closed.
    pub rss_after_bytes: u64,
    /// Peak (`VmHWM`) over the process's life.
    pub peak_rss_bytes: u64,
}

/// The `q` quantile of sorted samples (nearest rank).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len()) - 1)
        .copied()
        .unwrap_or_default()
}

fn mark(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

impl Report {
    /// Prints the table and the notes.
    pub fn write_table(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let f = &self.floor;
        writeln!(
            out,
            "kmstool-sim bench: {} build, {} CPUs, load average {:.2} before and {:.2} after.",
            self.build, self.cpus, self.load_average[0], self.load_average[1]
        )?;
        writeln!(
            out,
            "Enclave: `kmstool-sim enclave`, its own process. KMS emulator and clients: this process."
        )?;
        writeln!(out)?;
        writeln!(out, "Floor (CPU time, this process, one thread)")?;
        writeln!(
            out,
            "  RSA-2048 OAEP-SHA256 decrypt (AWS-LC)           {:>8.0} µs",
            f.rsa_oaep_decrypt_us
        )?;
        writeln!(
            out,
            "  RSA-2048 OAEP-SHA256 decrypt (RustCrypto rsa)   {:>8.0} µs",
            f.rustcrypto_rsa_oaep_decrypt_us
        )?;
        writeln!(
            out,
            "  CMS unwrap: parse + RSA + AES-256-CBC           {:>8.0} µs",
            f.cms_unwrap_us
        )?;
        writeln!(
            out,
            "  simulated NSM attestation (P-384 + CBOR)        {:>8.0} µs",
            f.sim_nsm_attestation_us
        )?;
        writeln!(out)?;
        let names: Vec<&str> = self
            .configurations
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        self.header(out, &names)?;
        self.configuration_rows(out)?;
        self.startup_row(out)?;
        writeln!(out)?;
        self.notes(out)
    }

    fn header(&self, out: &mut dyn Write, names: &[&str]) -> std::io::Result<()> {
        write!(out, "{:<46}", "")?;
        for name in names {
            write!(out, "{name:>20}")?;
        }
        writeln!(out, "   target")
    }

    fn row(
        &self,
        out: &mut dyn Write,
        label: &str,
        cells: &[String],
        target: &str,
    ) -> std::io::Result<()> {
        write!(out, "{label:<46}")?;
        for cell in cells {
            write!(out, "{cell:>20}")?;
        }
        writeln!(out, "   {target}")
    }

    fn configuration_rows(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let c = &self.configurations;
        let floor = self.floor.rsa_oaep_decrypt_us;
        let cells =
            |f: &dyn Fn(&Configuration) -> String| -> Vec<String> { c.iter().map(f).collect() };
        let requests = self.requests;
        let clients = c.first().map_or(0, |c| c.throughput.clients);
        let latency = c.first().map_or(0, |c| c.throughput.kms_latency_ms);
        let connections = c.first().map_or(0, |c| c.memory.connections);
        let ratio = |r: f64| format!("{r:.2} {}", mark(r <= TARGET_CPU_RATIO));

        self.row(
            out,
            &format!("Enclave CPU per Decrypt, 1 client ({requests})"),
            &cells(&|c| format!("{:.0} µs", c.cpu_per_decrypt_us)),
            "",
        )?;
        self.row(
            out,
            "  ÷ RSA-2048 OAEP decrypt",
            &cells(&|c| ratio(c.cpu_ratio)),
            "≤ 1.5",
        )?;
        self.row(
            out,
            "  ÷ RSA, simulated NSM's signing taken out",
            &cells(&|c| {
                if c.enclave_args.is_empty() {
                    ratio((c.cpu_per_decrypt_us - self.floor.sim_nsm_attestation_us) / floor)
                } else {
                    "-".to_owned()
                }
            }),
            "≤ 1.5",
        )?;
        self.row(
            out,
            &format!("Enclave CPU per Decrypt, {clients} clients"),
            &cells(&|c| format!("{:.0} µs", c.cpu_per_decrypt_concurrent_us)),
            "",
        )?;
        self.row(
            out,
            "  ÷ RSA-2048 OAEP decrypt",
            &cells(&|c| format!("{:.2}", c.cpu_ratio_concurrent)),
            "",
        )?;
        self.row(
            out,
            &format!("Decrypts/s, {latency} ms KMS latency, 1 client"),
            &cells(&|c| format!("{:.1}", c.throughput.one_client_per_sec)),
            "",
        )?;
        self.row(
            out,
            &format!("  {clients} clients"),
            &cells(&|c| format!("{:.1}", c.throughput.clients_per_sec)),
            "",
        )?;
        self.row(
            out,
            &format!("  ratio {clients} / 1"),
            &cells(&|c| {
                format!(
                    "{:.1} {}",
                    c.throughput.ratio,
                    mark(c.throughput.ratio >= TARGET_THROUGHPUT_RATIO)
                )
            }),
            "≥ 20",
        )?;
        let pair = |a: f64, b: f64| format!("{:.2} / {:.2}", a / 1e3, b / 1e3);
        self.row(
            out,
            "Latency p50 / p99 (ms), 1 client: end to end",
            &cells(&|c| pair(c.latency.end_to_end_p50_us, c.latency.end_to_end_p99_us)),
            "",
        )?;
        self.row(
            out,
            "  the emulator's own time",
            &cells(&|c| pair(c.latency.emulator_p50_us, c.latency.emulator_p99_us)),
            "",
        )?;
        self.row(
            out,
            "  added by the enclave",
            &cells(&|c| pair(c.latency.added_p50_us, c.latency.added_p99_us)),
            "",
        )?;
        let rss =
            |bytes: u64, limit: u64| format!("{:.1} MiB {}", mib(bytes), mark(bytes <= limit));
        self.row(
            out,
            "RSS idle (just started)",
            &cells(&|c| rss(c.memory.idle_rss_bytes, TARGET_IDLE_RSS)),
            "≤ 10 MiB",
        )?;
        self.row(
            out,
            &format!("RSS with {connections} open connections"),
            &cells(&|c| rss(c.memory.rss_with_connections_bytes, TARGET_CONNECTIONS_RSS)),
            "≤ 32 MiB",
        )?;
        self.row(
            out,
            "RSS after they closed",
            &cells(&|c| format!("{:.1} MiB", mib(c.memory.rss_after_bytes))),
            "",
        )?;
        self.row(
            out,
            "Peak RSS over the run",
            &cells(&|c| format!("{:.1} MiB", mib(c.memory.peak_rss_bytes))),
            "",
        )
    }

    fn startup_row(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let s = &self.startup;
        let label = format!("Start-up, spawn to accepting ({} runs)", s.samples_ms.len());
        let value = format!(
            "median {:.0} ms, max {:.0} ms {}",
            s.median_ms,
            s.max_ms,
            mark(s.max_ms <= TARGET_STARTUP_MS)
        );
        writeln!(out, "{label:<46}{value:>40}   ≤ 200 ms")?;
        let value = format!(
            "median {:.0} ms, max {:.0} ms",
            s.first_decrypt_median_ms, s.first_decrypt_max_ms
        );
        writeln!(
            out,
            "{:<46}{value:>40}",
            "  spawn to a first Decrypt answered"
        )
    }

    fn notes(&self, out: &mut dyn Write) -> std::io::Result<()> {
        const NOTES: &[&str] = &[
            "fresh-attestation: production's default, a new attestation document for every KMS call. Its",
            "  enclave CPU includes the simulated NSM signing each document (the floor's third line), which",
            "  real Nitro hardware does outside the enclave; the row \"simulated NSM's signing taken out\"",
            "  subtracts that measured cost. The emulator validates the certificate chain once while it",
            "  stays valid, then checks each new document's own signature (one ECDSA P-384 verification).",
            "attestation-reuse: --attestation-reuse-secs, a production option: one document per key and",
            "  period, so no NSM work per Decrypt. What remains is kmstool's own cost. The emulator",
            "  verifies a document once and accepts it again for 60 s of its clock.",
            "CPU: /proc/<pid>/stat utime+stime of the enclave process over the measured Decrypts (warm KMS",
            "  connection). Latency: per request, the client's send-to-reply time minus the emulator's own",
            "  time for that request. Throughput: each client its own connection, SetClient once, then",
            "  Decrypt after Decrypt; emulator, clients and enclave share this machine's CPUs, as does",
            "  anything else running (see the load average).",
        ];
        for line in NOTES {
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(5));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(10));
        assert_eq!(percentile(&sorted, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn added_latency_is_paired_per_request_before_sorting() {
        // Request 0 is slow at the emulator, request 1 slow in the enclave: pairing matters.
        let latency = Latency::from_samples(&ms(&[10, 10]), &ms(&[9, 1]));
        assert_eq!(latency.added_p50_us, 1000.0);
        assert_eq!(latency.added_p99_us, 9000.0);
        assert_eq!(latency.emulator_p50_us, 1000.0);
        assert_eq!(latency.end_to_end_p99_us, 10_000.0);
    }

    #[test]
    fn startup_reports_median_and_max() {
        let startup = Startup::from_samples(&ms(&[30, 10, 20]), &ms(&[90, 300, 100, 120]));
        assert_eq!(startup.median_ms, 20.0);
        assert_eq!(startup.max_ms, 30.0);
        assert_eq!(startup.samples_ms, vec![30.0, 10.0, 20.0]);
        assert_eq!(startup.first_decrypt_median_ms, 100.0);
        assert_eq!(startup.first_decrypt_max_ms, 300.0);
    }
}
