//! `kmstool-enclave-cli`: one KMS call from inside the enclave, for scripts. Upstream-compatible
//! (`decrypt`, `genkey`, `genrandom`; `PLAINTEXT:`/`CIPHERTEXT:` lines; exit 0, 1 for bad
//! arguments, 255 when the operation fails), plus `genkeypair` and `derive`, credentials from
//! the `AWS_*` variables, encryption contexts, `--proxy`, `--endpoint` and `--ca-bundle`.
//!
//! It is built on [`KmsClient`], the library client an enclave application imports: one client,
//! one attested call. Like upstream's CLI, it first seeds the kernel's RNG from the NSM, then
//! makes its enclave key.
#![deny(missing_docs)]

use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use clap::{Args as ClapArgs, Parser, Subcommand};
use kmstool_core::address::{Address, PARENT_CID};
use kmstool_core::credentials;
use kmstool_core::credentials::region::{Region, RegionSource, lookup_region};
use kmstool_core::kms::client::{ClientConfig, ClientError};
use kmstool_core::nsm::Nsm;
use kmstool_core::protocol::{
    CommandArgs, DataKeySize, Decrypt, DeriveSharedSecret, EncryptionAlgorithm, EncryptionContext,
    GenerateDataKey, GenerateDataKeyPair, GenerateRandom, KeyAgreementAlgorithm, KeySpec,
    MAX_PUBLIC_KEY_BYTES, parse_key_spec_arg,
};
use kmstool_core::secret::{Credentials, SecretString};
use kmstool_enclave::TrustRoots;
use kmstool_runtime_tokio::KmsClient;

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
    /// Generates a data key pair; prints `PUBLICKEY: <base64 DER SubjectPublicKeyInfo>`,
    /// `CIPHERTEXT: <base64 encrypted private key>` and `PLAINTEXT: <base64 DER PKCS #8>`.
    #[command(after_help = AFTER_HELP)]
    Genkeypair(GenkeypairArgs),
    /// Derives a shared secret (ECDH) with a KMS key agreement key; prints
    /// `PLAINTEXT: <base64>`.
    #[command(after_help = AFTER_HELP)]
    Derive(DeriveArgs),
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

/// `genkeypair`.
#[derive(Debug, Clone, ClapArgs)]
pub struct GenkeypairArgs {
    /// Options every operation takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The symmetric KMS key that encrypts the private key.
    #[arg(long, help_heading = REQUEST, display_order = 21)]
    pub key_id: String,
    /// RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521,
    /// ECC_SECG_P256K1 or SM2 (passed to KMS as given, so later specs work too).
    #[arg(long, help_heading = REQUEST, display_order = 22)]
    pub key_pair_spec: String,
    /// Encryption context entry, KEY=VALUE (repeatable; a key at most once).
    #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = parse_context_entry, help_heading = REQUEST, display_order = 23)]
    pub encryption_context: Vec<(String, String)>,
}

/// `derive`.
#[derive(Debug, Clone, ClapArgs)]
pub struct DeriveArgs {
    /// Options every operation takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The KMS key: an asymmetric key with key usage KEY_AGREEMENT.
    #[arg(long, help_heading = REQUEST, display_order = 21)]
    pub key_id: String,
    /// The other party's public key: base64 of its DER SubjectPublicKeyInfo; - reads it from
    /// standard input.
    #[arg(long, required_unless_present = "public_key_file", conflicts_with = "public_key_file", help_heading = REQUEST, display_order = 22)]
    pub public_key: Option<String>,
    /// Read the public key from this file: PEM (`BEGIN PUBLIC KEY`) or base64 DER.
    #[arg(long, value_name = "PATH", help_heading = REQUEST, display_order = 23)]
    pub public_key_file: Option<PathBuf>,
    /// ECDH, the only key agreement algorithm KMS offers.
    #[arg(long, value_parser = KeyAgreementAlgorithm::from_str, default_value = "ECDH", help_heading = REQUEST, display_order = 24)]
    pub key_agreement_algorithm: KeyAgreementAlgorithm,
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
            Self::Genkeypair(a) => &a.common,
            Self::Derive(a) => &a.common,
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
                dry_run: false,
            }),
            Self::Genkey(a) => CommandArgs::GenerateDataKey(GenerateDataKey {
                key_id: a.key_id.clone(),
                size: DataKeySize::new(a.key_spec, a.number_of_bytes),
                encryption_context: context(&a.encryption_context)?,
                grant_tokens: Vec::new(),
                dry_run: false,
            }),
            Self::Genrandom(a) => CommandArgs::GenerateRandom(GenerateRandom {
                number_of_bytes: a.length,
                custom_key_store_id: None,
            }),
            Self::Genkeypair(a) => CommandArgs::GenerateDataKeyPair(GenerateDataKeyPair {
                key_id: a.key_id.clone(),
                key_pair_spec: a.key_pair_spec.clone(),
                encryption_context: context(&a.encryption_context)?,
                grant_tokens: Vec::new(),
                dry_run: false,
            }),
            Self::Derive(a) => CommandArgs::DeriveSharedSecret(DeriveSharedSecret {
                key_id: a.key_id.clone(),
                public_key: read_public_key(a, host)?,
                key_agreement_algorithm: a.key_agreement_algorithm,
                grant_tokens: Vec::new(),
                dry_run: false,
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

/// The public key's DER from `--public-key` (`-`: standard input) or `--public-key-file`
/// (PEM, or base64 of the DER).
fn read_public_key(args: &DeriveArgs, host: &Host<'_>) -> Result<Vec<u8>, String> {
    let (text, from) = match (args.public_key.as_deref(), &args.public_key_file) {
        (Some("-"), None) => (
            (host.read_stdin)()
                .map_err(|e| format!("cannot read the public key from standard input: {e}"))?,
            "the public key from standard input".to_owned(),
        ),
        (Some(text), None) => (text.to_owned(), "--public-key".to_owned()),
        (None, Some(path)) => (
            (host.read_file)(path)
                .map(|text| text.to_string())
                .map_err(|e| format!("cannot read --public-key-file {}: {e}", path.display()))?,
            format!("--public-key-file {}", path.display()),
        ),
        _ => return Err("give one of --public-key and --public-key-file".into()),
    };
    let body = match (
        text.find("-----BEGIN PUBLIC KEY-----"),
        text.find("-----END PUBLIC KEY-----"),
    ) {
        (Some(begin), Some(end)) if begin < end => {
            text[begin + "-----BEGIN PUBLIC KEY-----".len()..end].to_owned()
        }
        _ => text,
    };
    let compact: String = body.split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| format!("{from} is neither a PEM public key nor base64"))?;
    if der.is_empty() || der.len() > MAX_PUBLIC_KEY_BYTES {
        return Err(format!(
            "{from}: the public key must be 1 to {MAX_PUBLIC_KEY_BYTES} bytes of DER"
        ));
    }
    Ok(der)
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
        let ca_bundle = match &common.ca_bundle {
            Some(path) => Some(
                (host.read_file)(path)
                    .map_err(|e| format!("cannot read --ca-bundle {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let credentials = credentials_from(&common, host.env)?;
        Ok::<_, String>((region, ca_bundle, credentials, command.request(host)?))
    })();
    let (ca_bundle, credentials, request) = match prepared {
        Ok((region, ca_bundle, credentials, request)) => {
            common.region = Some(region.name);
            (ca_bundle, credentials, request)
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
    // As upstream's CLI does before it makes its key: AWS-LC draws from the kernel.
    match kmstool_runtime_tokio::nsm::seed_kernel_rng(nsm.as_ref(), 256) {
        Ok(n) => tracing::debug!(bytes = n, "kernel RNG seeded from the NSM"),
        Err(error) => tracing::warn!(%error, "could not seed the kernel RNG from the NSM"),
    }
    let config = client_config(&common, ca_bundle, credentials, nsm);
    match call(config, request).await {
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

/// The library client's settings for this command line.
fn client_config(
    common: &CommonArgs,
    ca_bundle: Option<zeroize::Zeroizing<String>>,
    credentials: Credentials,
    nsm: Arc<dyn Nsm>,
) -> ClientConfig {
    let region = common.region.clone().unwrap_or_else(|| "us-east-1".into());
    let proxy = common.proxy.clone().unwrap_or(Address::Vsock {
        cid: PARENT_CID,
        port: common.proxy_port,
    });
    let mut config = ClientConfig::new(region.as_str())
        .credentials(credentials)
        .nsm(nsm)
        .proxy(proxy)
        .trust_roots(common.trust_roots.roots(Some(&region)))
        .call_timeout(Duration::from_millis(common.kms_timeout_ms))
        // One call: no rotation, no reuse.
        .key_rotation(None);
    if let Some(host) = &common.endpoint {
        config = config.endpoint(host.as_str());
    }
    if let Some(pem) = ca_bundle {
        config = config.extra_roots_pem(pem.as_bytes());
    }
    config
}

/// Runs `request` with a client made from `config`; returns the output lines.
async fn call(config: ClientConfig, request: CommandArgs) -> Result<SecretString, String> {
    let operation = request.operation();
    let failed = |error: ClientError| format!("{}: {}", operation.failure_text(), describe(&error));
    let client = KmsClient::new(config).await.map_err(failed)?;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let (public_key, encrypted, plaintext) = match request {
        CommandArgs::Decrypt(decrypt) => {
            let output = client.decrypt(decrypt).await.map_err(failed)?;
            (None, None, output.plaintext)
        }
        CommandArgs::GenerateDataKey(generate) => {
            let key = client.generate_data_key(generate).await.map_err(failed)?;
            (None, Some(b64(&key.ciphertext_blob)), key.plaintext)
        }
        CommandArgs::GenerateRandom(random) => {
            let bytes = client.generate_random(random.number_of_bytes).await;
            (None, None, bytes.map_err(failed)?)
        }
        CommandArgs::GenerateDataKeyPair(generate) => {
            let pair = client
                .generate_data_key_pair(generate)
                .await
                .map_err(failed)?;
            let encrypted = b64(&pair.private_key_ciphertext_blob);
            (
                Some(b64(&pair.public_key)),
                Some(encrypted),
                pair.private_key,
            )
        }
        CommandArgs::DeriveSharedSecret(derive) => {
            let shared = client.derive_shared_secret(derive).await.map_err(failed)?;
            (None, None, shared.secret)
        }
        CommandArgs::SetClient(_) => return Err("SetClient is not a KMS operation".into()),
    };
    let plaintext = plaintext.to_base64();
    let lines = [
        ("PUBLICKEY: ", public_key.as_deref()),
        ("CIPHERTEXT: ", encrypted.as_deref()),
        ("PLAINTEXT: ", Some(plaintext.expose())),
    ];
    // Sized once: growing would free an unwiped copy of the plaintext.
    let size = lines
        .iter()
        .filter_map(|(label, value)| value.map(|v| label.len() + v.len() + 1))
        .sum();
    let mut text = String::with_capacity(size);
    for (label, value) in lines {
        if let Some(value) = value {
            text.push_str(label);
            text.push_str(value);
            text.push('\n');
        }
    }
    Ok(SecretString::new(text))
}

/// What went wrong, as upstream's CLI words a KMS error (`<type>: <message>`) and otherwise
/// without the error's category.
fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Kms {
            error_type,
            message,
            status,
        } => {
            let mut text = error_type
                .clone()
                .unwrap_or_else(|| format!("HTTP {status}"));
            if let Some(message) = message {
                text.push_str(": ");
                text.push_str(message);
            }
            text
        }
        ClientError::Transport(detail)
        | ClientError::Tls(detail)
        | ClientError::Attestation(detail)
        | ClientError::Timeout(detail)
        | ClientError::BadInput(detail)
        | ClientError::Credentials(detail)
        | ClientError::Internal(detail) => detail.clone(),
        other => other.to_string(),
    }
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
