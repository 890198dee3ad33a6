//! `kmstool-enclave-cli`: one KMS call from inside the enclave, for scripts. Upstream-compatible
//! (`decrypt`, `genkey`, `genrandom`; `PLAINTEXT:`/`CIPHERTEXT:` lines; exit 0, 1 for bad
//! arguments, 255 when the operation fails), plus credentials from the `AWS_*` variables,
//! encryption contexts, `--proxy`, `--endpoint` and `--ca-bundle`.
//!
//! The command runs through the enclave server's own session code: an in-process pipe connects
//! an [`InstanceClient`] to an `EnclaveSession`.
#![deny(missing_docs)]

use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::{Args as ClapArgs, Parser, Subcommand};
use kmstool_core::address::{Address, PARENT_CID};
use kmstool_core::credentials;
use kmstool_core::credentials::region::{Region, RegionSource, lookup_region};
use kmstool_core::instance::{InstanceClient, InstanceError};
use kmstool_core::nsm::Nsm;
use kmstool_core::protocol::{
    CommandArgs, DataKeySize, Decrypt, EncryptionAlgorithm, EncryptionContext, GenerateDataKey,
    GenerateRandom, KeySpec, parse_key_spec_arg,
};
use kmstool_core::secret::{Credentials, SecretString};
use kmstool_core::session::SessionConfig;
use kmstool_enclave::{KmsSetup, TrustRoots};

/// Exit status after a failed operation (upstream: -1).
pub const EXIT_FAILED: u8 = 255;
/// Exit status for bad arguments.
pub const EXIT_USAGE: u8 = 1;

const AFTER_HELP: &str = "\
Region, first found: --region; AWS_REGION; AWS_DEFAULT_REGION; the profile's region (AWS_PROFILE,
else \"default\") in the config file (AWS_CONFIG_FILE or ~/.aws/config); us-east-1.
Credentials: --aws-access-key-id/--aws-secret-access-key[/--aws-session-token], else
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN].
Ciphertext (decrypt): base64 with --ciphertext (- reads standard input) or --ciphertext-file;
surrounding whitespace is ignored.

Exit status: 0 success, 1 bad arguments or configuration, 255 operation failed.";

const ADDRESS: &str = "Address";
const CREDENTIALS: &str = "Credentials";
const REQUEST: &str = "Request";
const OUTPUT: &str = "Output";

/// Command line of `kmstool-enclave-cli`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kmstool-enclave-cli",
    version,
    long_version = kmstool_core::version::LONG_VERSION,
    about = "Calls AWS KMS with attestation from inside a Nitro enclave and prints the result",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The operation.
    #[command(subcommand)]
    pub command: Command,
}

/// The operations.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Decrypts a KMS ciphertext; prints `PLAINTEXT: <base64>`.
    #[command(after_help = AFTER_HELP)]
    Decrypt(DecryptArgs),
    /// Generates a data key; prints `CIPHERTEXT: <base64>` then `PLAINTEXT: <base64>`.
    #[command(after_help = AFTER_HELP)]
    Genkey(GenkeyArgs),
    /// Generates random bytes; prints `PLAINTEXT: <base64>`.
    #[command(after_help = AFTER_HELP)]
    Genrandom(GenrandomArgs),
}

/// Options every operation takes.
#[derive(Debug, Clone, ClapArgs)]
pub struct CommonArgs {
    /// Where to reach KMS through: vsock:CID:PORT, tcp:HOST:PORT or unix:PATH.
    #[arg(long, value_name = "ADDR", help_heading = ADDRESS, display_order = 1)]
    pub proxy: Option<Address>,

    /// vsock port of the parent's vsock-proxy (CID 3; ignored with --proxy).
    #[arg(long = "proxy-port", default_value_t = 8000, help_heading = ADDRESS, display_order = 2)]
    pub proxy_port: u32,

    /// KMS host name to use instead of the region's.
    #[arg(long, env = "ENDPOINT", value_name = "HOST", help_heading = ADDRESS, display_order = 3)]
    pub endpoint: Option<String>,

    /// Extra trust roots for KMS's certificate (PEM), added to the compiled-in ones.
    #[arg(long, value_name = "PEM", help_heading = ADDRESS, display_order = 4)]
    pub ca_bundle: Option<PathBuf>,

    /// Compiled-in roots KMS's certificate must chain to (the --ca-bundle roots are added).
    #[arg(long, value_enum, value_name = "SET", default_value_t = TrustRoots::Partition, help_heading = ADDRESS, display_order = 4)]
    pub trust_roots: TrustRoots,

    /// Deadline for the KMS call, all attempts included, in milliseconds (at most one day).
    #[arg(long, default_value_t = 10_000, help_heading = ADDRESS, display_order = 5)]
    pub kms_timeout_ms: u64,

    /// Access key id [default: $AWS_ACCESS_KEY_ID].
    #[arg(long = "aws-access-key-id", value_name = "ID", help_heading = CREDENTIALS, display_order = 10)]
    pub access_key_id: Option<String>,

    /// Secret access key [default: $AWS_SECRET_ACCESS_KEY].
    #[arg(long = "aws-secret-access-key", value_name = "SECRET", value_parser = secret_arg, help_heading = CREDENTIALS, display_order = 11)]
    pub secret_access_key: Option<SecretString>,

    /// Session token, for temporary credentials [default: $AWS_SESSION_TOKEN].
    #[arg(long = "aws-session-token", value_name = "TOKEN", value_parser = secret_arg, help_heading = CREDENTIALS, display_order = 12)]
    pub session_token: Option<SecretString>,

    /// AWS region [default: see Region below, else us-east-1].
    #[arg(long, help_heading = REQUEST, display_order = 20)]
    pub region: Option<String>,

    /// Diagnostics on stderr: -v debug, -vv trace (never secrets).
    #[arg(short, long, action = clap::ArgAction::Count, help_heading = OUTPUT, display_order = 30)]
    pub verbose: u8,
}

/// `decrypt`.
#[derive(Debug, Clone, ClapArgs)]
pub struct DecryptArgs {
    /// Options every operation takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The ciphertext, base64; - reads it from standard input.
    #[arg(long, required_unless_present = "ciphertext_file", conflicts_with = "ciphertext_file", help_heading = REQUEST, display_order = 21)]
    pub ciphertext: Option<String>,
    /// Read the base64 ciphertext from this file.
    #[arg(long, value_name = "PATH", help_heading = REQUEST, display_order = 22)]
    pub ciphertext_file: Option<PathBuf>,
    /// Key id (needed for asymmetric keys).
    #[arg(long, help_heading = REQUEST, display_order = 23)]
    pub key_id: Option<String>,
    /// SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256.
    #[arg(long, value_parser = EncryptionAlgorithm::from_str, help_heading = REQUEST, display_order = 24)]
    pub encryption_algorithm: Option<EncryptionAlgorithm>,
    /// Encryption context entry, KEY=VALUE (repeatable; a key at most once).
    #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = parse_context_entry, help_heading = REQUEST, display_order = 25)]
    pub encryption_context: Vec<(String, String)>,
}

/// `genkey`.
#[derive(Debug, Clone, ClapArgs)]
pub struct GenkeyArgs {
    /// Options every operation takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The KMS key to generate under.
    #[arg(long, help_heading = REQUEST, display_order = 21)]
    pub key_id: String,
    /// AES_256 or AES_128 (AES-256, AES-128 too) [default: AES_256 unless --number-of-bytes].
    #[arg(long, value_parser = parse_key_spec_arg, conflicts_with = "number_of_bytes", help_heading = REQUEST, display_order = 22)]
    pub key_spec: Option<KeySpec>,
    /// Data key length in bytes (1 to 1024) instead of --key-spec.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024), help_heading = REQUEST, display_order = 23)]
    pub number_of_bytes: Option<u32>,
    /// Encryption context entry, KEY=VALUE (repeatable; a key at most once).
    #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = parse_context_entry, help_heading = REQUEST, display_order = 24)]
    pub encryption_context: Vec<(String, String)>,
}

/// `genrandom`.
#[derive(Debug, Clone, ClapArgs)]
pub struct GenrandomArgs {
    /// Options every operation takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Number of random bytes (1 to 1024).
    #[arg(long, help_heading = REQUEST, display_order = 21, visible_alias = "number-of-bytes", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub length: u32,
}

/// Parses `KEY=VALUE` (the value may contain `=`).
pub fn parse_context_entry(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE".into()),
    }
}

impl Command {
    fn common(&self) -> &CommonArgs {
        match self {
            Self::Decrypt(a) => &a.common,
            Self::Genkey(a) => &a.common,
            Self::Genrandom(a) => &a.common,
        }
    }

    fn request(&self, host: &Host<'_>) -> Result<CommandArgs, String> {
        Ok(match self {
            Self::Decrypt(a) => CommandArgs::Decrypt(Decrypt {
                ciphertext: read_ciphertext(a, host)?,
                encryption_context: context(&a.encryption_context)?,
                key_id: a.key_id.clone(),
                encryption_algorithm: a.encryption_algorithm,
                grant_tokens: Vec::new(),
            }),
            Self::Genkey(a) => CommandArgs::GenerateDataKey(GenerateDataKey {
                key_id: a.key_id.clone(),
                size: DataKeySize::new(a.key_spec, a.number_of_bytes),
                encryption_context: context(&a.encryption_context)?,
                grant_tokens: Vec::new(),
            }),
            Self::Genrandom(a) => CommandArgs::GenerateRandom(GenerateRandom {
                number_of_bytes: a.length,
            }),
        })
    }
}

/// Keeps a secret argument in a type that prints as `[redacted]` (`Cli` derives `Debug`).
fn secret_arg(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

/// The encryption context, refusing a key given twice.
fn context(entries: &[(String, String)]) -> Result<EncryptionContext, String> {
    let mut context = EncryptionContext::new();
    for (key, value) in entries {
        if context.insert(key.clone(), value.clone()).is_some() {
            return Err(format!("--encryption-context key \"{key}\" given twice"));
        }
    }
    Ok(context)
}

/// The most read from standard input or from one file (a ciphertext, the AWS config file): the
/// largest KMS ciphertext, 6144 bytes, is 8192 base64 characters.
const MAX_INPUT_BYTES: u64 = 1 << 20;

/// All of `reader` as UTF-8 text, refused past `limit` bytes instead of filling memory.
fn read_bounded(reader: impl std::io::Read, limit: u64) -> std::io::Result<String> {
    let mut text = String::new();
    reader.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than {limit} bytes"),
        ));
    }
    Ok(text)
}

/// The ciphertext's bytes from `--ciphertext` (`-`: standard input) or `--ciphertext-file`.
fn read_ciphertext(args: &DecryptArgs, host: &Host<'_>) -> Result<Vec<u8>, String> {
    let (text, from) = match (args.ciphertext.as_deref(), &args.ciphertext_file) {
        (Some(_), Some(_)) => {
            return Err("give --ciphertext or --ciphertext-file, not both".into());
        }
        (Some("-"), None) => (
            (host.read_stdin)()
                .map_err(|e| format!("cannot read the ciphertext from standard input: {e}"))?,
            "the ciphertext from standard input".to_owned(),
        ),
        (Some(text), None) => (text.to_owned(), "--ciphertext".to_owned()),
        (None, Some(path)) => (
            (host.read_file)(path)
                .map(|text| text.to_string())
                .map_err(|e| format!("cannot read --ciphertext-file {}: {e}", path.display()))?,
            format!("--ciphertext-file {}", path.display()),
        ),
        (None, None) => return Err("give --ciphertext or --ciphertext-file".into()),
    };
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| format!("{from} is not base64"))
}

/// What `execute` reads from its surroundings: the environment, files, standard input.
/// Tests inject their own.
#[allow(missing_debug_implementations)]
pub struct Host<'a> {
    /// Looks up an environment variable.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Reads a whole file (text that may hold secrets, hence zeroized).
    pub read_file: &'a dyn Fn(&Path) -> std::io::Result<zeroize::Zeroizing<String>>,
    /// Reads all of standard input.
    pub read_stdin: &'a dyn Fn() -> std::io::Result<String>,
}

/// The region: `--region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region` in
/// the config file, else `us-east-1` (upstream's default).
fn region_of(common: &CommonArgs, host: &Host<'_>) -> Result<Region, String> {
    if let Some(flag) = &common.region {
        return Region::checked(flag, RegionSource::Flag).map_err(|e| e.to_string());
    }
    Ok(lookup_region(host.env, host.read_file)
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| Region {
            name: "us-east-1".to_owned(),
            source: RegionSource::Default,
        }))
}

/// One line of advice for the common failures.
fn hint(message: &str) -> Option<&'static str> {
    let lower = message.to_ascii_lowercase();
    if message.contains("InvalidCiphertextException") {
        Some(
            "KMS could not decrypt: check that the ciphertext is whole and was made under this key, and that --encryption-context gives exactly the pairs used to encrypt",
        )
    } else if message.contains("AccessDeniedException") {
        Some(
            "check the key policy: it must allow this principal, and its kms:RecipientAttestation:ImageSha384 condition must match the enclave's PCR0 (a debug-mode enclave has a PCR0 of zeros)",
        )
    } else if message.contains("UnknownIssuer") || message.contains("invalid peer certificate") {
        Some("KMS's certificate is not trusted: give the CA that signed it with --ca-bundle")
    } else if lower.contains("connection refused") || lower.contains("connection reset") {
        Some(
            "is vsock-proxy running on the parent instance (CID 3, --proxy-port, 8000 by default) and allowing the KMS endpoint?",
        )
    } else {
        None
    }
}

/// Credentials from the flags, else from the `AWS_*` environment variables.
fn credentials_from(
    common: &CommonArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, String> {
    // An empty token means none, for the flag as for the variable (scripts pass
    // `--aws-session-token "$AWS_SESSION_TOKEN"` with long-term credentials too).
    let token_flag = common.session_token.clone().filter(|t| !t.is_empty());
    match (&common.access_key_id, &common.secret_access_key) {
        (Some(id), Some(secret)) => Ok(Credentials::new(
            id.clone(),
            secret.clone(),
            token_flag.or_else(|| {
                env("AWS_SESSION_TOKEN")
                    .filter(|t| !t.is_empty())
                    .map(SecretString::new)
            }),
        )),
        (Some(_), None) => Err("--aws-access-key-id needs --aws-secret-access-key".into()),
        (None, Some(_)) => Err("--aws-secret-access-key needs --aws-access-key-id".into()),
        (None, None) => match credentials::env::from_env(env) {
            Ok(Some(mut creds)) => {
                if let Some(token) = token_flag {
                    creds.session_token = Some(token);
                }
                Ok(creds)
            }
            Ok(None) => Err(
                "no credentials: pass --aws-access-key-id and --aws-secret-access-key or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    .into(),
            ),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// Runs `command` with the NSM `nsm` opens (after the arguments and the configuration are
/// checked), writing the result lines to `out` and errors to `err`; returns the exit status.
pub async fn execute(
    command: Command,
    nsm: impl FnOnce() -> Result<Arc<dyn Nsm>, String>,
    host: &Host<'_>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mut common = command.common().clone();
    let prepared = (|| {
        kmstool_enclave::check_at_most(
            "--kms-timeout-ms",
            common.kms_timeout_ms,
            kmstool_enclave::MAX_TIMEOUT.as_secs() * 1000,
            "one day",
        )?;
        let region = region_of(&common, host)?;
        tracing::debug!(%region, "region");
        if let Some(path) = &common.ca_bundle {
            (host.read_file)(path)
                .map_err(|e| format!("cannot read --ca-bundle {}: {e}", path.display()))?;
        }
        let credentials = credentials_from(&common, host.env)?;
        Ok::<_, String>((region, credentials, command.request(host)?))
    })();
    let (credentials, request) = match prepared {
        Ok((region, credentials, request)) => {
            common.region = Some(region.name);
            (credentials, request)
        }
        Err(message) => {
            let _ = writeln!(err, "Error: {message}");
            return EXIT_USAGE;
        }
    };
    let nsm = match nsm() {
        Ok(nsm) => nsm,
        Err(message) => {
            let _ = writeln!(err, "Error: {message}");
            return EXIT_FAILED;
        }
    };
    match call(&common, credentials, request, nsm).await {
        Ok(lines) => {
            let _ = out.write_all(lines.expose().as_bytes());
            let _ = out.flush();
            0
        }
        Err(message) => {
            let _ = writeln!(err, "Error: {message}");
            if let Some(hint) = hint(&message) {
                let _ = writeln!(err, "Hint: {hint}");
            }
            EXIT_FAILED
        }
    }
}

async fn call(
    common: &CommonArgs,
    credentials: Credentials,
    request: CommandArgs,
    nsm: Arc<dyn Nsm>,
) -> Result<SecretString, String> {
    let timeout = Duration::from_millis(common.kms_timeout_ms);
    let session = SessionConfig {
        region: common.region.clone(),
        endpoint: common.endpoint.clone(),
        kms_call_timeout: timeout,
        idle_timeout: None,
        ..SessionConfig::default()
    };
    let setup = KmsSetup {
        proxy: common.proxy.clone().unwrap_or(Address::Vsock {
            cid: PARENT_CID,
            port: common.proxy_port,
        }),
        ca_bundle: common.ca_bundle.clone(),
        trust_roots: common.trust_roots,
        connect_timeout: Duration::from_secs(3),
        key_rotation: None,
        attestation_reuse: Duration::ZERO,
        backend: kmstool_core::crypto::Backend::DEFAULT,
    };
    let shared = kmstool_enclave::build_shared(session, &setup, nsm)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let (mut ours, theirs) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(kmstool_runtime_tokio::server::serve_connection(
        theirs, shared,
    ));
    let client = InstanceClient::new(
        &credentials,
        None,
        request.clone(),
        Instant::now(),
        timeout + Duration::from_secs(5),
    );
    let result = kmstool_runtime_tokio::client::exchange(&mut ours, client).await;
    drop(ours);
    let _ = server.await;
    let result = result.map_err(|e| describe(&e))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut lines = String::new();
    if let Some(blob) = &result.ciphertext_blob {
        lines.push_str(&format!("CIPHERTEXT: {}\n", b64.encode(blob)));
    }
    lines.push_str("PLAINTEXT: ");
    lines.push_str(result.plaintext.to_base64().expose());
    lines.push('\n');
    Ok(SecretString::new(lines))
}

fn describe(error: &InstanceError) -> String {
    error.to_string()
}

/// Parses `argv` and runs; `--help`/`--version` exit 0, bad arguments exit 1.
pub fn main_with(
    argv: Vec<std::ffi::OsString>,
    nsm: impl FnOnce() -> Result<Arc<dyn Nsm>, String>,
) -> u8 {
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { EXIT_USAGE } else { 0 };
        }
    };
    run_parsed(cli.command, nsm)
}

/// Runs an already parsed command on a fresh runtime, writing to the process's stdout/stderr.
pub fn run_parsed(command: Command, nsm: impl FnOnce() -> Result<Arc<dyn Nsm>, String>) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the runtime: {error}");
            return EXIT_FAILED;
        }
    };
    // Fixed, valid filters: initialisation cannot fail on them.
    let text = kmstool_enclave::LogFormat::Text;
    let _ = match command.common().verbose {
        0 => Ok(()),
        1 => kmstool_enclave::init_logging(Some("debug"), text),
        _ => kmstool_enclave::init_logging(Some("trace"), text),
    };
    let env = |name: &str| std::env::var(name).ok();
    let read_file = |path: &Path| {
        read_bounded(std::fs::File::open(path)?, MAX_INPUT_BYTES).map(zeroize::Zeroizing::new)
    };
    let read_stdin = || read_bounded(std::io::stdin(), MAX_INPUT_BYTES);
    let host = Host {
        env: &env,
        read_file: &read_file,
        read_stdin: &read_stdin,
    };
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    runtime.block_on(execute(command, nsm, &host, &mut stdout, &mut stderr))
}
