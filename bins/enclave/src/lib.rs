//! `kmstool-enclave`: the server inside the enclave. The binary wires the real NSM device in;
//! `kmstool-sim enclave` runs the same [`Args`] and [`run`] with a simulated NSM.
#![deny(missing_docs)]

pub mod limits;
pub mod logging;
pub mod memory;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kmstool_core::address::{ANY_CID, Address, PARENT_CID};
use kmstool_core::crypto::Backend;
use kmstool_core::framing::DEFAULT_MAX_MESSAGE_BYTES;
use kmstool_core::keys::KeySettings;
use kmstool_core::nsm::Nsm;
use kmstool_core::session::{
    Backoff, DEFAULT_MAX_CONNECTION_BYTES, MIN_CONNECTION_BYTES, SessionConfig,
};

/// The largest `--max-message-bytes` and `--max-connection-bytes`: 64 MiB, far beyond use.
const MAX_SIZE_BYTES: usize = 64 * 1024 * 1024;
use kmstool_core::server::{ServerLimits, Stats};
use kmstool_core::tls;
use kmstool_core::tls::KmsTransportConfig;
use kmstool_runtime_tokio::Shared;
use kmstool_runtime_tokio::keys::KeyService;
use kmstool_runtime_tokio::kms::KmsConnector;
use kmstool_runtime_tokio::net::Listener;
use kmstool_runtime_tokio::server::serve;
pub use logging::{LogFormat, check_logging, init_logging};

/// What `--help` says about exit statuses.
pub const EXIT_STATUS_HELP: &str = "Exit status: 0 after a clean shutdown (SIGTERM or SIGINT) \
and for --help/--version; 1 for a usage or configuration error (reported on stderr before \
anything is bound) and when the server cannot start or fails.";

/// Largest value of a timeout flag: one day. A larger one is a mistake (and `u64::MAX` seconds
/// would overflow the clock when a deadline is computed).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Largest `--key-rotation-secs`: 30 days (0 still means never).
pub const MAX_KEY_ROTATION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Largest `--attestation-reuse-secs`: the core's cap on a document's reuse. A larger value is
/// refused rather than quietly lowered, so the configuration says what the server does.
pub const MAX_ATTESTATION_REUSE: Duration = kmstool_core::keys::MAX_DOCUMENT_REUSE;

/// Checks that `flag`'s `value` is at most `max` (both in the flag's unit), `limit` naming the
/// maximum for people: `--kms-timeout-ms 99999999999: must be at most 86400000 (one day)`.
pub fn check_at_most(flag: &str, value: u64, max: u64, limit: &str) -> Result<(), String> {
    if value > max {
        return Err(format!("{flag} {value}: must be at most {max} ({limit})"));
    }
    Ok(())
}

/// Command line of `kmstool-enclave` (upstream flags plus ours).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kmstool-enclave",
    version,
    long_version = kmstool_core::version::LONG_VERSION,
    about = "Serves AWS KMS Decrypt, GenerateDataKey and GenerateRandom to the parent instance, \
             with attestation, from inside a Nitro enclave",
    after_help = EXIT_STATUS_HELP
)]
pub struct Args {
    /// vsock port to listen on, as --listen vsock:any:PORT (not with --listen).
    #[arg(
        short = 'p',
        long,
        default_value_t = 3000,
        conflicts_with = "listen",
        help_heading = "Addresses"
    )]
    pub port: u32,

    /// vsock port of the parent's vsock-proxy (CID 3), as --proxy vsock:3:PORT (not with
    /// --proxy).
    #[arg(
        short = 'x',
        long = "proxy-port",
        default_value_t = 8000,
        conflicts_with = "proxy",
        help_heading = "Addresses"
    )]
    pub proxy_port: u32,

    /// Listen address: `vsock:CID:PORT`, `tcp:HOST:PORT` or `unix:PATH`; by default
    /// `vsock:any:<port>`, on the `--port` port.
    // The help text is given apart from the doc comment: rustdoc would read its `[default: …]`
    // as a link and `<port>` as an HTML tag, and clap prints doc comments as they are written.
    #[arg(
        long,
        value_name = "ADDR",
        help_heading = "Addresses",
        help = "Listen address: vsock:CID:PORT, tcp:HOST:PORT or unix:PATH \
                [default: vsock:any:<port>]"
    )]
    pub listen: Option<Address>,

    /// Where to reach KMS through: `vsock:CID:PORT`, `tcp:HOST:PORT` or `unix:PATH`; by
    /// default `vsock:3:<proxy-port>`, the parent's vsock proxy on the `--proxy-port` port.
    #[arg(
        long,
        value_name = "ADDR",
        help_heading = "Addresses",
        help = "Where to reach KMS through: vsock:CID:PORT, tcp:HOST:PORT or unix:PATH \
                [default: vsock:3:<proxy-port>]"
    )]
    pub proxy: Option<Address>,

    /// AWS region of the enclave (a client's AwsRegion must match it when both are set).
    #[arg(short = 'r', long, env = "REGION", help_heading = "KMS and trust")]
    pub region: Option<String>,

    /// KMS host name to use instead of the region's (TLS name and Host header).
    #[arg(
        long,
        env = "ENDPOINT",
        value_name = "HOST",
        help_heading = "KMS and trust"
    )]
    pub endpoint: Option<String>,

    /// Extra trust roots for KMS's certificate (PEM), added to the compiled-in ones.
    #[arg(long, value_name = "PEM", help_heading = "KMS and trust")]
    pub ca_bundle: Option<PathBuf>,

    /// Compiled-in roots KMS's certificate must chain to (the --ca-bundle roots are added).
    #[arg(
        long,
        value_enum,
        value_name = "SET",
        default_value_t = TrustRoots::Partition,
        help_heading = "KMS and trust"
    )]
    pub trust_roots: TrustRoots,

    /// Crypto backend for the enclave key, the envelopes and TLS to KMS, among those built in:
    /// aws-lc (the default build), rustcrypto (RustCrypto RSA and AES, TLS with ring; built
    /// with `--no-default-features --features rustcrypto`).
    #[arg(
        long,
        value_name = "NAME",
        default_value_t = Backend::DEFAULT,
        value_parser = parse_backend,
        help_heading = "KMS and trust"
    )]
    pub crypto_backend: Backend,

    /// Replace the enclave's RSA key this often, in seconds (0: never; at most 30 days).
    #[arg(long, default_value_t = 3600, help_heading = "KMS and trust")]
    pub key_rotation_secs: u64,

    /// Reuse an attestation document for this many seconds (0: a fresh one per KMS call; at
    /// most 300, whatever the key rotation).
    #[arg(long, default_value_t = 0, help_heading = "KMS and trust")]
    pub attestation_reuse_secs: u64,

    /// Connections served at once (default: from the descriptor limit, see
    /// [`limits::default_max_connections`]).
    #[arg(long, help = limits::MAX_CONNECTIONS_HELP, help_heading = "Limits and timeouts")]
    pub max_connections: Option<usize>,

    /// Largest message from a client, terminator included (at least 1024).
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES, help_heading = "Limits and timeouts")]
    pub max_message_bytes: usize,

    /// Bytes one connection may hold besides the message it is receiving: half for parsed
    /// commands waiting for KMS, half for replies its client has not read. At either half the
    /// enclave stops reading from that client until it reads its replies; a command needing
    /// more than a quarter once parsed is refused (at least 65536).
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTION_BYTES, help_heading = "Limits and timeouts")]
    pub max_connection_bytes: usize,

    /// Close a connection idle for this many seconds (0: never; at most one day).
    #[arg(long, default_value_t = 300, help_heading = "Limits and timeouts")]
    pub idle_timeout_secs: u64,

    /// A message must arrive whole within this many seconds of its first byte; a client
    /// trickling bytes is closed after its earlier commands are answered (0: no limit; at most
    /// one day).
    #[arg(long, default_value_t = 30, help_heading = "Limits and timeouts")]
    pub message_timeout_secs: u64,

    /// Deadline for connecting to the proxy plus the TLS handshake, in milliseconds (at most one
    /// day).
    #[arg(long, default_value_t = 3000, help_heading = "Limits and timeouts")]
    pub connect_timeout_ms: u64,

    /// Deadline for one KMS call, all attempts and backoff included, in milliseconds (at most
    /// one day).
    #[arg(long, default_value_t = 10_000, help_heading = "Limits and timeouts")]
    pub kms_timeout_ms: u64,

    /// Attempts per KMS call (throttling, 5xx and dropped connections are retried).
    #[arg(long, default_value_t = 3, help_heading = "Limits and timeouts")]
    pub max_attempts: u32,

    /// Log filter: a level (off, error, warn, info, debug, trace), one of our crates
    /// (kmstool_core, kmstool_runtime_tokio, ...) or TARGET=LEVEL directives, comma-separated
    /// [default: RUST_LOG if set, else info].
    #[arg(
        long,
        env = "KMSTOOL_LOG",
        value_name = "FILTER",
        value_parser = logging::parse_filter,
        help_heading = "Logging"
    )]
    pub log_level: Option<String>,

    /// Log at debug level (overrides --log-level, KMSTOOL_LOG and RUST_LOG).
    #[arg(short = 'v', long, help_heading = "Logging")]
    pub verbose: bool,

    /// Log line format on stderr.
    #[arg(
        long,
        env = "KMSTOOL_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        help_heading = "Logging"
    )]
    pub log_format: LogFormat,
}

impl Args {
    /// The log filter the command line (or `KMSTOOL_LOG`) asks for, if any.
    pub fn log_filter(&self) -> Option<&str> {
        match (self.verbose, &self.log_level) {
            (true, _) => Some("debug"),
            (false, Some(filter)) => Some(filter),
            (false, None) => None,
        }
    }

    /// Checks the configuration (durations, region, endpoint, message cap, CA bundle) without
    /// binding or opening anything else, so that a mistake is reported before the server starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.session_config()?;
        read_ca_bundle(self.ca_bundle.as_deref())?;
        Ok(())
    }

    /// The listen address.
    pub fn listen_address(&self) -> Address {
        self.listen.clone().unwrap_or(Address::Vsock {
            cid: ANY_CID,
            port: self.port,
        })
    }

    /// The proxy address.
    pub fn proxy_address(&self) -> Address {
        self.proxy.clone().unwrap_or(Address::Vsock {
            cid: PARENT_CID,
            port: self.proxy_port,
        })
    }

    /// Checks every duration flag against its maximum, so that no deadline computed from one
    /// can overflow the clock.
    fn check_durations(&self) -> anyhow::Result<()> {
        let day_secs = MAX_TIMEOUT.as_secs();
        let day_ms = day_secs * 1000;
        let checks = [
            (
                "--idle-timeout-secs",
                self.idle_timeout_secs,
                day_secs,
                "one day",
            ),
            (
                "--message-timeout-secs",
                self.message_timeout_secs,
                day_secs,
                "one day",
            ),
            (
                "--connect-timeout-ms",
                self.connect_timeout_ms,
                day_ms,
                "one day",
            ),
            ("--kms-timeout-ms", self.kms_timeout_ms, day_ms, "one day"),
            (
                "--key-rotation-secs",
                self.key_rotation_secs,
                MAX_KEY_ROTATION.as_secs(),
                "30 days",
            ),
            (
                "--attestation-reuse-secs",
                self.attestation_reuse_secs,
                MAX_ATTESTATION_REUSE.as_secs(),
                "five minutes",
            ),
        ];
        for (flag, value, max, limit) in checks {
            check_at_most(flag, value, max, limit).map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    fn session_config(&self) -> anyhow::Result<SessionConfig> {
        self.check_durations()?;
        if let Some(region) = &self.region {
            kmstool_core::kms::endpoint::validate_region(region)
                .with_context(|| format!("--region {region:?}"))?;
        }
        if let Some(host) = &self.endpoint {
            tls::server_name(host).with_context(|| format!("--endpoint {host:?}"))?;
        }
        anyhow::ensure!(
            (1024..=MAX_SIZE_BYTES).contains(&self.max_message_bytes),
            "--max-message-bytes must be from 1024 to {MAX_SIZE_BYTES}"
        );
        anyhow::ensure!(
            (MIN_CONNECTION_BYTES..=MAX_SIZE_BYTES).contains(&self.max_connection_bytes),
            "--max-connection-bytes must be from {MIN_CONNECTION_BYTES} to {MAX_SIZE_BYTES}"
        );
        Ok(SessionConfig {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            max_message_bytes: self.max_message_bytes,
            max_connection_bytes: self.max_connection_bytes,
            idle_timeout: (self.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(self.idle_timeout_secs)),
            message_timeout: (self.message_timeout_secs > 0)
                .then(|| Duration::from_secs(self.message_timeout_secs)),
            kms_call_timeout: Duration::from_millis(self.kms_timeout_ms),
            max_attempts: self.max_attempts.max(1),
            backoff: Backoff::default(),
            ..SessionConfig::default()
        })
    }
}

/// A server ready to run: bound, its key generated or being generated.
#[derive(Debug)]
pub struct Prepared {
    listener: Listener,
    shared: Arc<Shared>,
    limits: ServerLimits,
    address: Address,
    max_connections: usize,
}

impl Prepared {
    /// Connections it serves at once: `--max-connections`, else the default the descriptor
    /// limit allows.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The bound address.
    pub fn local_address(&self) -> &Address {
        &self.address
    }

    /// Counters of the running server.
    pub fn stats(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Serves until `shutdown` completes, handing freed memory back to the kernel after
    /// connections close ([`memory`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let trimmer = tokio::spawn(memory::trim_after_connections_close(self.stats()));
        let served = serve(self.listener, self.shared, self.limits, shutdown)
            .await
            .context("server failed");
        trimmer.abort();
        served
    }
}

/// Which compiled-in roots KMS's certificate must chain to (`--trust-roots`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TrustRoots {
    /// Only the roots the KMS host's AWS partition uses: Amazon Trust Services for aws and
    /// aws-eusc, Mozilla's set for the others. A host outside AWS's domains (a private
    /// --endpoint) gets the set of the region's partition.
    #[default]
    Partition,
    /// Every root in Mozilla's program, for every host.
    Mozilla,
}

impl TrustRoots {
    /// The TLS trust for a server or CLI configured with `region` (`None`: the default region).
    pub fn roots(self, region: Option<&str>) -> tls::Roots {
        match self {
            Self::Partition => tls::Roots::Partition {
                fallback: tls::Partition::of_region(
                    region.unwrap_or(kmstool_core::kms::endpoint::DEFAULT_REGION),
                ),
            },
            Self::Mozilla => tls::Roots::MozillaAndExtra,
        }
    }
}

/// How the enclave reaches KMS and attests: shared by the server and `kmstool-enclave-cli`.
#[derive(Debug, Clone)]
pub struct KmsSetup {
    /// Proxy address.
    pub proxy: Address,
    /// Extra trust roots (PEM file).
    pub ca_bundle: Option<PathBuf>,
    /// Compiled-in roots to trust, with the extra ones.
    pub trust_roots: TrustRoots,
    /// Connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Key rotation interval.
    pub key_rotation: Option<Duration>,
    /// Attestation document reuse.
    pub attestation_reuse: Duration,
    /// The crypto backend of the key, the envelopes and TLS.
    pub backend: Backend,
}

/// Parses `--crypto-backend`: a backend compiled into this binary.
fn parse_backend(name: &str) -> Result<Backend, String> {
    Backend::from_name(name).ok_or_else(|| {
        let built: Vec<&str> = Backend::all().iter().map(|b| b.name()).collect();
        format!("not built into this binary; it has: {}", built.join(", "))
    })
}

/// Builds what the one session of `kmstool-enclave-cli` uses: TLS settings, the KMS
/// connector, the enclave key (generated before this returns).
pub async fn build_shared(
    session: SessionConfig,
    setup: &KmsSetup,
    nsm: Arc<dyn Nsm>,
) -> anyhow::Result<Arc<Shared>> {
    let shared = shared_state(session, setup, nsm, 1)?;
    shared
        .keys
        .store()
        .await
        .map_err(anyhow::Error::msg)
        .context("generating the enclave key")?;
    Ok(shared)
}

/// What sessions share, with the enclave key being generated in the background (sessions
/// that need it wait for it).
fn shared_state(
    session: SessionConfig,
    setup: &KmsSetup,
    nsm: Arc<dyn Nsm>,
    max_connections: usize,
) -> anyhow::Result<Arc<Shared>> {
    let roots = setup.trust_roots.roots(session.region.as_deref());
    let tls = kms_tls(setup.ca_bundle.as_deref(), roots, setup.backend)?;
    let kms = KmsConnector::new(KmsTransportConfig {
        proxy: setup.proxy.clone(),
        tls,
        connect_timeout: setup.connect_timeout,
        max_idle_per_host: 64,
        idle_timeout: Duration::from_secs(30),
    });
    let mut settings = KeySettings::new(nsm, setup.key_rotation, setup.attestation_reuse);
    settings.backend = setup.backend;
    // One document at a time per session: the queue holds every connection's.
    settings.nsm_limits.queue = max_connections;
    let keys = KeyService::with_settings(settings);
    keys.spawn_rotation();
    Ok(Arc::new(Shared {
        session: Arc::new(session),
        kms,
        keys,
        kms_clock: Default::default(),
        stats: Stats::default(),
    }))
}

/// Reads `--ca-bundle` (if any) and builds the default TLS settings for KMS with it.
fn read_ca_bundle(path: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    kms_tls(path, TrustRoots::default().roots(None), Backend::DEFAULT)
}

/// Reads `--ca-bundle` (if any) and builds the TLS settings for KMS trusting `roots` and it.
fn kms_tls(
    path: Option<&Path>,
    roots: tls::Roots,
    backend: Backend,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let extra_roots = match path {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading --ca-bundle {}", path.display()))?,
        ),
        None => None,
    };
    tls::client_config_for(backend, roots, extra_roots.as_deref()).with_context(|| match path {
        Some(path) => format!("--ca-bundle {}", path.display()),
        None => "TLS setup".to_owned(),
    })
}

/// Binds the listener and starts generating the enclave key. The server accepts connections
/// at once: RSA-2048 generation takes tens to hundreds of milliseconds, and only a command that
/// needs an attestation waits for it.
pub async fn prepare(args: &Args, nsm: Arc<dyn Nsm>) -> anyhow::Result<Prepared> {
    let setup = KmsSetup {
        proxy: args.proxy_address(),
        ca_bundle: args.ca_bundle.clone(),
        trust_roots: args.trust_roots,
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        key_rotation: (args.key_rotation_secs > 0)
            .then(|| Duration::from_secs(args.key_rotation_secs)),
        attestation_reuse: Duration::from_secs(args.attestation_reuse_secs),
        backend: args.crypto_backend,
    };
    let session = args.session_config()?;
    let max_connections = match args.max_connections {
        Some(max) => max.max(1),
        None => {
            let soft = limits::nofile_limits().map_or(u64::MAX, |nofile| nofile.soft);
            limits::default_max_connections(soft, session.connection_bound())
        }
    };
    let shared = shared_state(session, &setup, nsm, max_connections)?;
    let limits = ServerLimits {
        max_connections,
        shutdown_grace: Duration::from_millis(args.kms_timeout_ms) + Duration::from_secs(2),
    };
    let listen = args.listen_address();
    let listener = Listener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener
        .local_address()
        .with_context(|| format!("the address bound for {listen}"))?;
    Ok(Prepared {
        listener,
        shared,
        limits,
        address,
        max_connections,
    })
}

/// Logs the descriptor limits and the connection limit, with a warning when a given
/// `--max-connections` may run out of descriptors.
fn log_limits(given: bool, max_connections: usize) {
    let nofile = match limits::nofile_limits() {
        Ok(nofile) => nofile,
        Err(error) => {
            tracing::warn!(%error, max_connections, "cannot read the file descriptor limit");
            return;
        }
    };
    tracing::info!(
        nofile_soft = nofile.soft,
        nofile_hard = nofile.hard,
        max_connections,
        "limits"
    );
    let allowed = limits::connections_allowed(nofile.soft);
    if given && max_connections as u64 > allowed {
        tracing::warn!(
            max_connections,
            allowed,
            nofile_soft = nofile.soft,
            "--max-connections is more than the descriptor limit allows: accepting pauses \
             when descriptors run out"
        );
    }
}

/// Runs the server until SIGTERM/SIGINT, after raising the descriptor limit as far as allowed.
pub async fn run(args: Args, nsm: Arc<dyn Nsm>) -> anyhow::Result<()> {
    if let Err(error) = limits::raise_nofile_limit() {
        tracing::warn!(%error, "cannot raise the file descriptor limit");
    }
    let prepared = prepare(&args, nsm).await?;
    log_limits(args.max_connections.is_some(), prepared.max_connections());
    let address = prepared.local_address();
    tracing::info!(
        listen = %address,
        proxy = %args.proxy_address(),
        region = args.region.as_deref().unwrap_or("(from client, else us-east-1)"),
        "kmstool-enclave ready"
    );
    prepared
        .run(kmstool_runtime_tokio::server::shutdown_signal())
        .await
}
