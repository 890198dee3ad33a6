//! `kmstool-sim`: everything needed to run kmstool without Nitro hardware or AWS — a simulated
//! NSM, a KMS emulator, a fake instance metadata service, the real enclave server and CLI with
//! the simulated NSM swapped in, and a one-command demo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args as ClapArgs, Parser, Subcommand};
use kmstool_core::address::Address;
use kmstool_core::nsm::Nsm;
use kmstool_enclave::LogFormat;
use kmstool_sim::nsm::{SimConfig, SimNsm, system_clock};

/// What `--help` says about exit statuses.
const EXIT_STATUS_HELP: &str = "Exit status: 0 on success (a server: after SIGTERM or SIGINT) \
and for --help/--version; 1 for a usage or configuration error (reported on stderr before \
anything is bound) and when the command fails; enclave-cli keeps kmstool-enclave-cli's statuses \
(255 when the operation fails).";

#[derive(Debug, Parser)]
#[command(
    name = "kmstool-sim",
    version,
    long_version = kmstool_core::version::LONG_VERSION,
    about = "Run kmstool without Nitro hardware: simulated NSM, KMS emulator, fake IMDS, demo",
    after_help = EXIT_STATUS_HELP,
    subcommand_help_heading = "Subcommands"
)]
struct Cli {
    /// Log filter of the servers (kms, imds, enclave): a level (off, error, warn, info, debug,
    /// trace), one of our crates or TARGET=LEVEL directives [default: KMSTOOL_LOG if set, else
    /// RUST_LOG if set, else info]; `enclave --log-level` wins over it.
    #[arg(
        long,
        value_name = "FILTER",
        value_parser = kmstool_enclave::logging::parse_filter
    )]
    log_level: Option<String>,

    /// Log at debug level (overrides --log-level, KMSTOOL_LOG and RUST_LOG).
    #[arg(short = 'v', long)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The log filter asked for by the top-level flags, if any.
    fn log_filter(&self) -> Option<&str> {
        match (self.verbose, &self.log_level) {
            (true, _) => Some("debug"),
            (false, Some(filter)) => Some(filter),
            (false, None) => None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the whole flow on loopback (KMS emulator, enclave, instance) and explains it.
    #[command(after_help = EXIT_STATUS_HELP)]
    Demo,
    /// The KMS emulator: KMS's JSON 1.1 API over HTTPS, attestation-aware.
    #[command(after_help = EXIT_STATUS_HELP)]
    Kms(KmsArgs),
    /// A fake EC2 instance metadata service (IMDSv2) serving role credentials.
    #[command(after_help = EXIT_STATUS_HELP)]
    Imds(ImdsArgs),
    /// Encrypts with the emulator (like `aws kms encrypt`) and prints the ciphertext, base64.
    #[command(after_help = EXIT_STATUS_HELP)]
    Encrypt(EncryptArgs),
    /// The real enclave server (kmstool-enclave's flags) with a simulated NSM.
    #[command(after_help = kmstool_enclave::EXIT_STATUS_HELP)]
    Enclave {
        #[command(flatten)]
        nsm: NsmArgs,
        #[command(flatten)]
        enclave: kmstool_enclave::Args,
    },
    /// The real enclave CLI (kmstool-enclave-cli's subcommands) with a simulated NSM.
    EnclaveCli {
        #[command(flatten)]
        nsm: NsmArgs,
        #[command(subcommand)]
        command: kmstool_enclave_cli::Command,
    },
    /// Benchmarks the enclave (its own process) against the KMS emulator on loopback: CPU per
    /// Decrypt against the RSA floor, throughput, latency, memory, start-up. Build with
    /// --release first.
    Bench(kmstool_sim::bench::BenchArgs),
    /// Writes shell completion scripts for kmstool-enclave, kmstool-enclave-cli,
    /// kmstool-instance and kmstool-sim into a directory.
    #[command(after_help = EXIT_STATUS_HELP)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: kmstool_sim::docs::Shell,
        /// Where to write them (created if absent).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Writes man pages (section 1) for the four binaries and their subcommands into a
    /// directory.
    #[command(after_help = EXIT_STATUS_HELP)]
    Man {
        /// Where to write them (created if absent).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

/// The command-line definitions of every kmstool binary, for completions and man pages.
fn all_commands() -> Vec<clap::Command> {
    use clap::CommandFactory as _;
    vec![
        kmstool_enclave::Args::command(),
        kmstool_enclave_cli::Cli::command(),
        kmstool_instance::cli::Args::command(),
        Cli::command(),
    ]
}

/// Prints each file written, one per line.
fn report_written(
    written: std::io::Result<Vec<PathBuf>>,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let written = written.with_context(|| format!("writing into {}", dir.display()))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

#[derive(Debug, ClapArgs)]
struct KmsArgs {
    /// Address to listen on: tcp:HOST:PORT, unix:PATH or vsock:CID:PORT (HOST:PORT alone
    /// means tcp:HOST:PORT).
    #[arg(long, value_name = "ADDR", default_value = "tcp:127.0.0.1:8443", value_parser = parse_listen_address)]
    listen: Address,

    /// Region of this emulated KMS (requests must be signed for it).
    #[arg(long, default_value = "us-east-1")]
    region: String,

    /// Write the emulator's CA certificate (PEM) here: give it to the enclave's --ca-bundle.
    #[arg(long, value_name = "FILE")]
    ca_out: Option<PathBuf>,

    /// Credentials to accept (repeatable): a JSON file holding a list of
    /// {"AccessKeyId","SecretAccessKey","SessionToken"} or an IMDS credentials document (imds
    /// --credentials-out writes one). Without any, every request is refused.
    #[arg(long, value_name = "FILE")]
    credentials: Vec<PathBuf>,

    /// Root certificate (PEM) attestation documents must chain to (kmstool-sim enclave
    /// --nsm-root-out writes it). Without it or --nsm-state-dir, requests with a Recipient are
    /// refused. Not with --nsm-state-dir.
    #[arg(long, value_name = "FILE", conflicts_with = "nsm_state_dir")]
    nsm_root: Option<PathBuf>,

    /// Trust the simulated Nitro root kept in this state directory (created if absent), the
    /// one `kmstool-sim enclave --state-dir DIR` uses: start the emulator first, then the
    /// enclave, with the same DIR.
    #[arg(long, value_name = "DIR")]
    nsm_state_dir: Option<PathBuf>,

    /// Refuse Recipient requests whose attested PCR0 differs, as a key policy's
    /// kms:RecipientAttestation:ImageSha384 condition does (96 hex digits).
    #[arg(long, value_name = "HEX")]
    require_pcr0: Option<String>,

    /// Create a key with this alias (e.g. alias/demo) at start and print "ALIAS ARN" on stdout.
    #[arg(long, value_name = "ALIAS")]
    create_key: Option<String>,

    /// Fault injection: added latency per request, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,

    /// Fault injection: drop the connection of the first N requests without answering.
    #[arg(long, value_name = "N", default_value_t = 0)]
    drop_first: u32,

    /// Fault injection: then answer the next N requests with HTTP 400 ThrottlingException.
    #[arg(long, value_name = "N", default_value_t = 0)]
    throttle_first: u32,

    /// Fault injection: then answer the next N requests with HTTP 500 KMSInternalException.
    #[arg(long, value_name = "N", default_value_t = 0)]
    fail_first: u32,

    /// Run the emulator's clock this many seconds ahead of the system's (behind when
    /// negative): its `Date` headers and its SigV4 window (5 minutes) follow it, as a KMS
    /// whose clock the enclave's has drifted from.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    clock_offset_secs: i64,
}

#[derive(Debug, ClapArgs)]
struct EncryptArgs {
    /// The emulator's address: tcp:HOST:PORT (or HOST:PORT).
    #[arg(long, value_name = "ADDR", default_value = "tcp:127.0.0.1:8443", value_parser = parse_tcp_address)]
    kms: std::net::SocketAddr,

    /// The emulator's CA certificate (`kms --ca-out`).
    #[arg(long, value_name = "PEM")]
    ca: PathBuf,

    /// Region.
    #[arg(long, default_value = "us-east-1")]
    region: String,

    /// Credentials file as `kms --credentials` takes (first entry used); else the AWS_* variables.
    #[arg(long, value_name = "FILE")]
    credentials: Option<PathBuf>,

    /// Key id, ARN or alias/NAME.
    #[arg(long)]
    key_id: String,

    /// Text to encrypt.
    #[arg(long)]
    plaintext: String,

    /// Encryption context entry KEY=VALUE (repeatable).
    #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = kmstool_enclave_cli::parse_context_entry)]
    encryption_context: Vec<(String, String)>,
}

#[derive(Debug, ClapArgs)]
struct ImdsArgs {
    /// Address to listen on (plain HTTP): tcp:HOST:PORT (or HOST:PORT).
    #[arg(long, value_name = "ADDR", default_value = "tcp:127.0.0.1:1338", value_parser = parse_tcp_address)]
    listen: std::net::SocketAddr,

    /// Role name to serve.
    #[arg(long, default_value = "kmstool-sim-role")]
    role: String,

    /// Write the served credentials (JSON, as IMDS serves them) here, for `kms --credentials`.
    #[arg(long, value_name = "FILE")]
    credentials_out: Option<PathBuf>,

    /// Behave like an IMDSv1-only service (token requests refused).
    #[arg(long)]
    v1_only: bool,

    /// Require the token in this file as `Authorization` on the container credentials paths
    /// (`/v1/credentials` as EKS Pod Identity, `/v2/credentials/ID` as ECS), like
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`; without it they need none.
    #[arg(long, value_name = "FILE")]
    container_token_file: Option<PathBuf>,

    /// Region to serve at /latest/meta-data/placement/region (without it: 404).
    #[arg(long)]
    region: Option<String>,
}

/// How the simulated NSM is set up.
#[derive(Debug, Clone, ClapArgs)]
struct NsmArgs {
    /// Keep the simulated Nitro root here (created on first use), so documents chain to the
    /// same root across runs. Without it, a fresh root every start.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Write the simulated root certificate (PEM) here, for the KMS emulator and verifiers.
    #[arg(long, value_name = "FILE")]
    nsm_root_out: Option<PathBuf>,

    /// PCR0 (enclave image measurement), 96 hex digits.
    #[arg(long, value_name = "HEX")]
    pcr0: Option<String>,

    /// PCR1 (kernel and boot ramfs), 96 hex digits.
    #[arg(long, value_name = "HEX")]
    pcr1: Option<String>,

    /// PCR2 (application), 96 hex digits.
    #[arg(long, value_name = "HEX")]
    pcr2: Option<String>,

    /// Any boot PCR as INDEX=HEX (repeatable).
    #[arg(long = "pcr", value_name = "INDEX=HEX")]
    pcrs: Vec<String>,

    /// Debug mode: all PCRs read zero, as in an enclave started with --debug-mode.
    #[arg(long)]
    debug_mode: bool,
}

impl NsmArgs {
    fn build(&self) -> anyhow::Result<Arc<SimNsm>> {
        let mut config = SimConfig {
            debug: self.debug_mode,
            ..SimConfig::default()
        };
        for (index, value) in [(0, &self.pcr0), (1, &self.pcr1), (2, &self.pcr2)] {
            if let Some(hex) = value {
                config
                    .set_pcr_hex(index, hex)
                    .with_context(|| format!("--pcr{index}"))?;
            }
        }
        for arg in &self.pcrs {
            config
                .set_pcr_arg(arg)
                .with_context(|| format!("--pcr {arg}"))?;
        }
        let nsm = match &self.state_dir {
            Some(dir) => SimNsm::load_or_create(dir, config, system_clock()),
            None => SimNsm::new(config, system_clock()),
        }
        .context("simulated NSM")?;
        if let Some(path) = &self.nsm_root_out {
            std::fs::write(path, nsm.root_pem())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Arc::new(nsm))
    }
}

fn main() -> ExitCode {
    // Bad arguments exit 1, as kmstool-enclave-cli's do (clap's own status is 2).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let top_filter = cli.log_filter().map(str::to_owned);
    let top_verbose = cli.verbose;
    let start_logging = |flag: Option<&str>, format| {
        kmstool_enclave::init_logging(flag, format).map_err(anyhow::Error::new)
    };
    match cli.command {
        Command::Demo => exit(runtime().and_then(|rt| {
            let mut stdout = std::io::stdout();
            rt.block_on(kmstool_sim::demo::run(&mut stdout)).map(|_| ())
        })),
        Command::Kms(args) => exit(
            start_logging(top_filter.as_deref(), LogFormat::Text)
                .and_then(|()| runtime())
                .and_then(|rt| rt.block_on(serve_kms(args))),
        ),
        Command::Encrypt(args) => exit(runtime().and_then(|rt| rt.block_on(encrypt(args)))),
        Command::Imds(args) => exit(
            start_logging(top_filter.as_deref(), LogFormat::Text)
                .and_then(|()| runtime())
                .and_then(|rt| rt.block_on(serve_imds(args))),
        ),
        Command::Enclave { nsm, enclave } => {
            let filter = match top_verbose {
                true => top_filter.as_deref(),
                false => enclave.log_filter().or(top_filter.as_deref()),
            };
            let result = start_logging(filter, enclave.log_format)
                .and_then(|()| enclave.validate())
                .and_then(|()| nsm.build())
                .and_then(|nsm| {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .enable_all()
                        .build()
                        .context("tokio runtime")?;
                    runtime.block_on(kmstool_enclave::run(enclave, nsm as Arc<dyn Nsm>))
                });
            exit(result)
        }
        Command::Bench(args) => exit(runtime().and_then(|rt| {
            let mut stdout = std::io::stdout();
            rt.block_on(kmstool_sim::bench::run(args, &mut stdout))
                .map(|_| ())
        })),
        Command::Completions { shell, out_dir } => exit(report_written(
            kmstool_sim::docs::write_completions(&all_commands(), shell, &out_dir),
            &out_dir,
        )),
        Command::Man { out_dir } => exit(report_written(
            kmstool_sim::docs::write_man_pages(&all_commands(), &out_dir),
            &out_dir,
        )),
        Command::EnclaveCli { nsm, command } => {
            let status = kmstool_enclave_cli::run_parsed(command, || {
                nsm.build()
                    .map(|n| n as Arc<dyn Nsm>)
                    .map_err(|e| format!("{e:#}"))
            });
            ExitCode::from(status)
        }
    }
}

/// Parses a listen address as every binary spells it (`tcp:HOST:PORT`, `unix:PATH`,
/// `vsock:CID:PORT`), and the older bare `HOST:PORT` as TCP.
fn parse_listen_address(text: &str) -> Result<Address, String> {
    match text.parse::<Address>() {
        Ok(address) => Ok(address),
        Err(error) => match text.parse::<std::net::SocketAddr>() {
            Ok(addr) => Ok(Address::Tcp {
                host: addr.ip().to_string(),
                port: addr.port(),
            }),
            Err(_) => Err(error.to_string()),
        },
    }
}

/// Parses a TCP address given as `tcp:HOST:PORT` or `HOST:PORT` (the host is resolved now);
/// other kinds are refused: these servers and clients speak TCP only.
fn parse_tcp_address(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    match parse_listen_address(text)? {
        Address::Tcp { host, port } => (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host:?} has no address")),
        other => Err(format!("{other} is not a TCP address: use tcp:HOST:PORT")),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

async fn serve_kms(args: KmsArgs) -> anyhow::Result<()> {
    use kmstool_sim::kms::{Faults, KmsConfig, KmsEmulator, parse_credentials_file};
    kmstool_core::kms::endpoint::validate_region(&args.region)
        .with_context(|| format!("--region {:?}", args.region))?;
    let mut config = KmsConfig::new(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        &args.region,
    );
    config.listen_at = Some(args.listen.clone());
    for path in &args.credentials {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let parsed = parse_credentials_file(&bytes, &config.account_id)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        config.credentials.extend(parsed);
    }
    if config.credentials.is_empty() {
        tracing::warn!("no --credentials: every request will be refused");
    }
    if let Some(path) = &args.nsm_root {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let certs = kmstool_core::tls::parse_certificates(&pem)
            .with_context(|| format!("{}", path.display()))?;
        let root = certs.into_iter().next().context("no certificate")?;
        config = config.with_nsm_root(root.as_ref().to_vec());
    }
    if let Some(dir) = &args.nsm_state_dir {
        let nsm = SimNsm::load_or_create(dir, SimConfig::default(), system_clock())
            .with_context(|| format!("simulated NSM root in {}", dir.display()))?;
        config = config.with_nsm_root(nsm.root_der().to_vec());
    }
    if let Some(hex_value) = &args.require_pcr0 {
        config.require_pcr0 =
            Some(hex::decode(hex_value.trim()).context("--require-pcr0 is not hex")?);
    }
    config.faults = Faults {
        latency: std::time::Duration::from_millis(args.latency_ms),
        drop_first: args.drop_first,
        throttle_first: args.throttle_first,
        fail_500_first: args.fail_first,
        ..Faults::default()
    };
    config.clock.set_offset_secs(args.clock_offset_secs);
    let handle = KmsEmulator::start(config)
        .await
        .context("starting the KMS emulator")?;
    if let Some(path) = &args.ca_out {
        std::fs::write(path, handle.ca_pem())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(alias) = &args.create_key {
        let key = handle.create_key("created by kmstool-sim kms --create-key");
        handle
            .create_alias(alias, &key.key_id)
            .map_err(|e| anyhow::anyhow!("creating {alias}: {e:?}"))?;
        println!("{alias} {}", key.arn);
    }
    // A TCP address is logged as HOST:PORT, as `kmstool-sim encrypt --kms` takes it.
    let listen = match handle.local_address() {
        Address::Tcp { .. } => handle.local_addr().to_string(),
        other => other.to_string(),
    };
    tracing::info!(listen = %listen, region = %args.region, "KMS emulator ready");
    kmstool_runtime_tokio::server::shutdown_signal().await;
    handle.shutdown().await;
    Ok(())
}

async fn encrypt(args: EncryptArgs) -> anyhow::Result<()> {
    use base64::Engine as _;
    let credentials = match &args.credentials {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            kmstool_sim::kms::parse_credentials_file(&bytes, "111122223333")
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                .into_iter()
                .next()
                .context("no credentials in the file")?
                .credentials
        }
        None => kmstool_core::credentials::env::from_env(|name| std::env::var(name).ok())?
            .context(
                "no credentials: give --credentials or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            )?,
    };
    let ca_pem =
        std::fs::read(&args.ca).with_context(|| format!("reading {}", args.ca.display()))?;
    let context = args.encryption_context.iter().cloned().collect();
    let blob = kmstool_sim::kms_client::encrypt(&kmstool_sim::kms_client::EncryptRequest {
        kms: args.kms,
        ca_pem: &ca_pem,
        region: &args.region,
        credentials: &credentials,
        key_id: &args.key_id,
        plaintext: args.plaintext.as_bytes(),
        encryption_context: &context,
    })
    .await?;
    println!("{}", base64::engine::general_purpose::STANDARD.encode(blob));
    Ok(())
}

async fn serve_imds(args: ImdsArgs) -> anyhow::Result<()> {
    use kmstool_sim::imds::{Imds, ImdsConfig, ImdsMode};
    let mut config = ImdsConfig::new(args.listen);
    config.role_name = args.role;
    config.region = args.region;
    if args.v1_only {
        config.mode = ImdsMode::V1Only { put_status: 403 };
    }
    if let Some(path) = &args.container_token_file {
        let token = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        config.container_token = Some(kmstool_core::secret::SecretString::from(token.trim()));
    }
    let handle = Imds::start(config).await.context("starting IMDS")?;
    if let Some(path) = &args.credentials_out {
        std::fs::write(path, handle.credentials_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(endpoint = %handle.endpoint(), "IMDS ready");
    kmstool_runtime_tokio::server::shutdown_signal().await;
    handle.shutdown().await;
    Ok(())
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
