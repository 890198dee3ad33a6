//! Arguments, the exchange with the enclave, output formats, and failures as printed.

use std::io::Read as _;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use kmstool_core::address::Address;
use kmstool_core::instance::{InstanceClient, InstanceError, InstanceResult};
use kmstool_core::protocol::{
    CommandArgs, DataKeySize, Decrypt, DeriveSharedSecret, EncryptionAlgorithm, EncryptionContext,
    GenerateDataKey, GenerateDataKeyPair, GenerateRandom, KeyAgreementAlgorithm, KeySpec,
    MAX_PUBLIC_KEY_BYTES, Operation, parse_key_spec_arg,
};
use kmstool_runtime_smol::{client, net};
use smol::future::FutureExt as _;
use zeroize::Zeroizing;

/// Largest `--timeout-secs`: one day (`u64::MAX` seconds would overflow the clock).
const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;

const ADDRESS: &str = "Address";
const CREDENTIALS: &str = "Credentials";
const REQUEST: &str = "Request";
const OUTPUT: &str = "Output";

const AFTER_HELP: &str = "\
Credentials, first found:
  1. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY [and AWS_SESSION_TOKEN];
  2. the profile (--profile, else AWS_PROFILE, else \"default\"): its keys in the shared
     credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, [NAME]), else its
     credential_process (run through sh -c), else its keys in the config file (AWS_CONFIG_FILE
     or ~/.aws/config, [profile NAME] or [default]); a profile with role_arn, source_profile,
     credential_source, sso_session, sso_start_url or web_identity_token_file is refused;
  3. a container endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI, token from
     AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or _TOKEN);
  4. IMDSv2 (AWS_EC2_METADATA_SERVICE_ENDPOINT, off with AWS_EC2_METADATA_DISABLED=true).

Region (sent as AwsRegion), first found: --region; AWS_REGION; AWS_DEFAULT_REGION; the
profile's region in the config file; IMDSv2's placement/region (when IMDS is on). None found:
no region is sent and the enclave uses its own.

Ciphertext: base64 as an argument, or - to read it from standard input, or --ciphertext-file
PATH; surrounding whitespace is ignored.

Exit status: 0 success, 1 usage or configuration error or failed operation.";

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "kmstool-instance",
    version,
    long_version = kmstool_core::version::LONG_VERSION,
    about = "Asks a kmstool enclave to decrypt with AWS KMS (or to generate a data key, a data key pair or random bytes, or to derive a shared secret)",
    subcommand_negates_reqs = true,
    after_help = AFTER_HELP
)]
pub struct Args {
    /// vsock CID of the enclave (required unless --connect).
    // Not `required_unless_present`: clap checks that in the subcommand, where a global
    // `--connect` given before the subcommand's name is not seen yet. `address` checks it.
    #[arg(long, global = true, help_heading = ADDRESS, display_order = 1)]
    pub cid: Option<u32>,

    /// vsock port of the enclave.
    #[arg(long, global = true, default_value_t = 3000, help_heading = ADDRESS, display_order = 2)]
    pub port: u32,

    /// Connect to ADDR (vsock:CID:PORT, tcp:HOST:PORT or unix:PATH) instead of --cid/--port.
    #[arg(long, global = true, value_name = "ADDR", help_heading = ADDRESS, display_order = 3)]
    pub connect: Option<Address>,

    /// Give up after this many seconds without a reply (at most 86400, one day).
    #[arg(long, global = true, default_value_t = 30, help_heading = ADDRESS, display_order = 4)]
    pub timeout_secs: u64,

    /// Profile of the shared credentials and config files [default: $AWS_PROFILE, else
    /// "default"].
    #[arg(long, global = true, help_heading = CREDENTIALS, display_order = 10)]
    pub profile: Option<String>,

    /// AWS region sent to the enclave (AwsRegion) [default: see Region below].
    #[arg(long, global = true, help_heading = REQUEST, display_order = 20)]
    pub region: Option<String>,

    /// Key id (generate-data-key, generate-data-key-pair, derive-shared-secret: required;
    /// decrypt: for asymmetric keys).
    #[arg(long, global = true, help_heading = REQUEST, display_order = 21)]
    pub key_id: Option<String>,

    /// Encryption context entry KEY=VALUE (repeatable; a key at most once).
    #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = parse_context_entry, help_heading = REQUEST, display_order = 22)]
    pub encryption_context: Vec<(String, String)>,

    /// Read the base64 ciphertext from this file instead of the command line.
    #[arg(long, global = true, value_name = "PATH", help_heading = REQUEST, display_order = 23)]
    pub ciphertext_file: Option<PathBuf>,

    /// How to print the result [default: raw for decrypt, json for generate-data-key and
    /// generate-data-key-pair, base64 for generate-random and derive-shared-secret]. With json,
    /// a failure is printed as a JSON object too.
    #[arg(long, global = true, value_enum, help_heading = OUTPUT, display_order = 30)]
    pub output: Option<Output>,

    /// Diagnostics on stderr: -v debug, -vv trace (never secrets).
    #[arg(short, long, global = true, action = ArgAction::Count, help_heading = OUTPUT, display_order = 31)]
    pub verbose: u8,

    /// The ciphertext to decrypt, base64, or - for standard input (upstream's form; same as
    /// `decrypt CIPHERTEXT`).
    #[arg(
        required_unless_present = "ciphertext_file",
        conflicts_with = "ciphertext_file"
    )]
    pub ciphertext: Option<String>,

    /// An operation other than the default decrypt.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Operations.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decrypts a KMS ciphertext (the default operation).
    Decrypt {
        /// The ciphertext, base64, or - for standard input (or give --ciphertext-file).
        ciphertext: Option<String>,
        /// SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256.
        #[arg(long, value_parser = EncryptionAlgorithm::from_str, help_heading = REQUEST)]
        encryption_algorithm: Option<EncryptionAlgorithm>,
        /// Encryption context entry KEY=VALUE (repeatable; a key at most once).
        #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = parse_context_entry, help_heading = REQUEST)]
        encryption_context: Vec<(String, String)>,
        /// Grant token (repeatable).
        #[arg(long = "grant-token", help_heading = REQUEST)]
        grant_tokens: Vec<String>,
    },
    /// Generates a data key under a KMS key (--key-id): its plaintext and its encrypted copy.
    GenerateDataKey {
        /// AES_256 (default) or AES_128.
        #[arg(long, value_parser = parse_key_spec_arg, conflicts_with = "number_of_bytes", help_heading = REQUEST)]
        key_spec: Option<KeySpec>,
        /// Key length in bytes (1 to 1024) instead of --key-spec.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024), help_heading = REQUEST)]
        number_of_bytes: Option<u32>,
        /// Encryption context entry KEY=VALUE (repeatable; a key at most once).
        #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = parse_context_entry, help_heading = REQUEST)]
        encryption_context: Vec<(String, String)>,
        /// Grant token (repeatable).
        #[arg(long = "grant-token", help_heading = REQUEST)]
        grant_tokens: Vec<String>,
    },
    /// Generates random bytes inside the enclave's attested channel.
    GenerateRandom {
        /// How many bytes (1 to 1024).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024), help_heading = REQUEST)]
        number_of_bytes: u32,
    },
    /// Generates a data key pair under a symmetric KMS key (--key-id): its public key, its
    /// private key, and the private key encrypted under the KMS key.
    GenerateDataKeyPair {
        /// RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521,
        /// ECC_SECG_P256K1 or SM2 (passed to KMS as given, so later specs work too).
        #[arg(long, help_heading = REQUEST)]
        key_pair_spec: String,
        /// Encryption context entry KEY=VALUE (repeatable; a key at most once).
        #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = parse_context_entry, help_heading = REQUEST)]
        encryption_context: Vec<(String, String)>,
        /// Grant token (repeatable).
        #[arg(long = "grant-token", help_heading = REQUEST)]
        grant_tokens: Vec<String>,
    },
    /// Derives a shared secret (ECDH) from a KMS key agreement key (--key-id) and a public
    /// key.
    DeriveSharedSecret {
        /// The other party's public key: base64 of its DER SubjectPublicKeyInfo.
        #[arg(long, required_unless_present = "public_key_file", conflicts_with = "public_key_file", help_heading = REQUEST)]
        public_key: Option<String>,
        /// Read the public key from this file instead: PEM (`BEGIN PUBLIC KEY`) or DER.
        #[arg(long, value_name = "PATH", help_heading = REQUEST)]
        public_key_file: Option<PathBuf>,
        /// The key agreement algorithm: ECDH, the only one KMS offers.
        #[arg(long, value_parser = KeyAgreementAlgorithm::from_str, default_value = "ECDH", help_heading = REQUEST)]
        key_agreement_algorithm: KeyAgreementAlgorithm,
        /// Grant token (repeatable).
        #[arg(long = "grant-token", help_heading = REQUEST)]
        grant_tokens: Vec<String>,
    },
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The bytes themselves, then a newline (upstream's decrypt output).
    Raw,
    /// Standard base64, then a newline; generate-data-key prints `CIPHERTEXT: <base64>` then
    /// `PLAINTEXT: <base64>`, as kmstool-enclave-cli genkey does, and generate-data-key-pair
    /// `PUBLICKEY:`, `CIPHERTEXT:` (the encrypted private key) and `PLAINTEXT:` lines.
    Base64,
    /// A JSON object with every field, named as the AWS CLI names them (`Plaintext`, `KeyId`,
    /// `CiphertextBlob`, `PrivateKeyPlaintext`, `PublicKey`, `SharedSecret`, ...).
    Json,
}

/// Why a run failed, as printed: `Error: <message>` on stderr, then `Hint: <hint>` if any;
/// with `--output json` also one JSON object on stdout.
#[derive(Debug, Default)]
pub struct Failure {
    /// The message (never a secret).
    pub message: String,
    /// The enclave's `ErrorKind`, if it sent one.
    pub kind: Option<&'static str>,
    /// The enclave's `KmsErrorType`, for KMS errors.
    pub kms_error_type: Option<String>,
    /// The enclave's `KmsStatus`, for KMS errors.
    pub kms_status: Option<u16>,
    /// What to check, for the common failures.
    pub hint: Option<&'static str>,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self {
            message,
            ..Self::default()
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Self::from(message.to_owned())
    }
}

impl Failure {
    /// The failure as one JSON object and a newline.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::json!({
            "Message": self.message,
            "ErrorKind": self.kind,
            "KmsErrorType": self.kms_error_type,
            "KmsStatus": self.kms_status,
        });
        if let (Some(hint), Some(object)) = (self.hint, value.as_object_mut()) {
            object.insert("Hint".to_owned(), hint.into());
        }
        format!("{value}\n")
    }

    fn from_instance(
        error: &InstanceError,
        region: Option<&kmstool_core::credentials::region::Region>,
    ) -> Self {
        let mut failure = Self::from(error.to_string());
        match error {
            InstanceError::SetClient { message, kind } => {
                failure.kind = kind.map(|k| k.as_str());
                if let (Some(region), true) = (region, message.contains("Could not set region")) {
                    failure.message.push_str(&format!(" ({region})"));
                }
            }
            InstanceError::Operation {
                kind,
                kms_error_type,
                kms_status,
                ..
            } => {
                failure.kind = kind.map(|k| k.as_str());
                failure.kms_error_type = kms_error_type.clone();
                failure.kms_status = *kms_status;
            }
            _ => {}
        }
        failure.hint = hint(&failure.message, failure.kms_error_type.as_deref());
        failure
    }
}

/// One line of advice for the common failures.
fn hint(message: &str, kms_error_type: Option<&str>) -> Option<&'static str> {
    let is = |name: &str| kms_error_type == Some(name) || message.contains(name);
    if is("InvalidCiphertextException") {
        Some(
            "KMS could not decrypt: check that the ciphertext is whole and was made under this key, and that --encryption-context gives exactly the pairs used to encrypt",
        )
    } else if is("AccessDeniedException") {
        Some(
            "check the key policy: it must allow this principal, and its kms:RecipientAttestation:ImageSha384 condition must match the enclave's PCR0 (a debug-mode enclave has a PCR0 of zeros)",
        )
    } else if message.contains("UnknownIssuer") || message.contains("invalid peer certificate") {
        Some(
            "the enclave does not trust the certificate KMS presented: give the enclave the right CA with its --ca-bundle",
        )
    } else if is_refused_or_reset(message) {
        Some(
            "the enclave could not reach KMS: is vsock-proxy running on the parent instance (port 8000 by default, allowing the KMS endpoint)?",
        )
    } else {
        None
    }
}

fn is_refused_or_reset(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("connection refused") || message.contains("connection reset")
}

fn parse_context_entry(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE".into()),
    }
}

/// The most ciphertext text read from standard input or a file: the largest KMS ciphertext,
/// 6144 bytes, is 8192 base64 characters; the rest is room for whitespace.
const MAX_CIPHERTEXT_TEXT: u64 = 64 * 1024;

/// All of `reader` as text, refused past [`MAX_CIPHERTEXT_TEXT`] instead of filling memory.
fn read_bounded(reader: impl std::io::Read) -> std::io::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    reader
        .take(MAX_CIPHERTEXT_TEXT + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CIPHERTEXT_TEXT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than {MAX_CIPHERTEXT_TEXT} bytes: not a KMS ciphertext"),
        ));
    }
    Ok(text)
}

/// The ciphertext's bytes from the argument (`-`: standard input) or `--ciphertext-file`.
fn read_ciphertext(argument: Option<&str>, file: Option<&PathBuf>) -> Result<Vec<u8>, String> {
    let (text, from) = match (argument, file) {
        (Some(_), Some(_)) => {
            return Err(
                "give the ciphertext either as an argument or with --ciphertext-file, not both"
                    .into(),
            );
        }
        (Some("-"), None) => {
            let text = read_bounded(std::io::stdin())
                .map_err(|e| format!("cannot read the ciphertext from standard input: {e}"))?;
            (text, "the ciphertext from standard input".to_owned())
        }
        (Some(text), None) => (Zeroizing::new(text.to_owned()), "the ciphertext".to_owned()),
        (None, Some(path)) => {
            let text = std::fs::File::open(path)
                .and_then(read_bounded)
                .map_err(|e| format!("cannot read --ciphertext-file {}: {e}", path.display()))?;
            (text, format!("--ciphertext-file {}", path.display()))
        }
        (None, None) => {
            return Err("no ciphertext: give CIPHERTEXT (base64, or - for standard input) or --ciphertext-file PATH".into());
        }
    };
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| format!("{from} is not standard base64"))
}

/// A public key from `--public-key` (base64 DER) or `--public-key-file` (PEM or DER).
fn read_public_key(argument: Option<&str>, file: Option<&PathBuf>) -> Result<Vec<u8>, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let der = match (argument, file) {
        (Some(text), None) => b64
            .decode(text.trim())
            .map_err(|_| "--public-key is not standard base64".to_owned())?,
        (None, Some(path)) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read --public-key-file {}: {e}", path.display()))?;
            match pem_body(&bytes, "PUBLIC KEY") {
                Some(body) => b64
                    .decode(body)
                    .map_err(|_| format!("{}: the PEM body is not base64", path.display()))?,
                None => bytes,
            }
        }
        _ => return Err("give one of --public-key and --public-key-file".into()),
    };
    if der.is_empty() || der.len() > MAX_PUBLIC_KEY_BYTES {
        return Err(format!(
            "the public key must be 1 to {MAX_PUBLIC_KEY_BYTES} bytes of DER"
        ));
    }
    Ok(der)
}

/// The base64 between `-----BEGIN <label>-----` and `-----END <label>-----`, without line
/// breaks; `None` when `bytes` is not that PEM.
fn pem_body(bytes: &[u8], label: &str) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    Some(text[start..stop].split_whitespace().collect())
}

/// The encryption context, refusing a key given twice (in either position).
fn merge_context(
    global: &[(String, String)],
    local: &[(String, String)],
) -> Result<EncryptionContext, String> {
    let mut context = EncryptionContext::new();
    for (key, value) in global.iter().chain(local) {
        if context.insert(key.clone(), value.clone()).is_some() {
            return Err(format!("--encryption-context key \"{key}\" given twice"));
        }
    }
    Ok(context)
}

impl Args {
    fn request(&self) -> Result<(CommandArgs, Output), String> {
        let context =
            |entries: &[(String, String)]| merge_context(&self.encryption_context, entries);
        if self.command.is_some() && self.ciphertext.is_some() {
            return Err("a CIPHERTEXT before a subcommand is not allowed".into());
        }
        let file = self.ciphertext_file.as_ref();
        Ok(match &self.command {
            None => (
                CommandArgs::Decrypt(Decrypt {
                    ciphertext: read_ciphertext(self.ciphertext.as_deref(), file)?,
                    encryption_context: context(&[])?,
                    key_id: self.key_id.clone(),
                    encryption_algorithm: None,
                    grant_tokens: Vec::new(),
                    dry_run: false,
                }),
                Output::Raw,
            ),
            Some(Command::Decrypt {
                ciphertext,
                encryption_algorithm,
                encryption_context,
                grant_tokens,
            }) => (
                CommandArgs::Decrypt(Decrypt {
                    ciphertext: read_ciphertext(ciphertext.as_deref(), file)?,
                    encryption_context: context(encryption_context)?,
                    key_id: self.key_id.clone(),
                    encryption_algorithm: *encryption_algorithm,
                    grant_tokens: grant_tokens.clone(),
                    dry_run: false,
                }),
                Output::Raw,
            ),
            Some(Command::GenerateDataKey {
                key_spec,
                number_of_bytes,
                encryption_context,
                grant_tokens,
            }) => (
                CommandArgs::GenerateDataKey(GenerateDataKey {
                    key_id: self.key_id.clone().ok_or(
                        "generate-data-key needs --key-id (the KMS key: id, ARN or alias/NAME)",
                    )?,
                    size: DataKeySize::new(*key_spec, *number_of_bytes),
                    encryption_context: context(encryption_context)?,
                    grant_tokens: grant_tokens.clone(),
                    dry_run: false,
                }),
                Output::Json,
            ),
            Some(Command::GenerateDataKeyPair {
                key_pair_spec,
                encryption_context,
                grant_tokens,
            }) => (
                CommandArgs::GenerateDataKeyPair(GenerateDataKeyPair {
                    key_id: self.key_id.clone().ok_or(
                        "generate-data-key-pair needs --key-id (the symmetric KMS key that \
                         encrypts the private key)",
                    )?,
                    key_pair_spec: key_pair_spec.clone(),
                    encryption_context: context(encryption_context)?,
                    grant_tokens: grant_tokens.clone(),
                    dry_run: false,
                }),
                Output::Json,
            ),
            Some(Command::DeriveSharedSecret {
                public_key,
                public_key_file,
                key_agreement_algorithm,
                grant_tokens,
            }) => {
                if !self.encryption_context.is_empty() {
                    return Err("derive-shared-secret takes no --encryption-context".into());
                }
                (
                    CommandArgs::DeriveSharedSecret(DeriveSharedSecret {
                        key_id: self.key_id.clone().ok_or(
                            "derive-shared-secret needs --key-id (a KMS key with key usage \
                             KEY_AGREEMENT)",
                        )?,
                        public_key: read_public_key(
                            public_key.as_deref(),
                            public_key_file.as_ref(),
                        )?,
                        key_agreement_algorithm: *key_agreement_algorithm,
                        grant_tokens: grant_tokens.clone(),
                        dry_run: false,
                    }),
                    Output::Base64,
                )
            }
            Some(Command::GenerateRandom { number_of_bytes }) => {
                if self.key_id.is_some() || !self.encryption_context.is_empty() {
                    return Err("generate-random takes no --key-id or --encryption-context".into());
                }
                if self.ciphertext_file.is_some() {
                    return Err("generate-random takes no --ciphertext-file".into());
                }
                (
                    CommandArgs::GenerateRandom(GenerateRandom {
                        number_of_bytes: *number_of_bytes,
                        custom_key_store_id: None,
                    }),
                    Output::Base64,
                )
            }
        })
    }

    fn address(&self) -> Result<Address, String> {
        match (&self.connect, self.cid) {
            (Some(_), Some(_)) => {
                Err("--cid and --connect both give the enclave's address: give one".into())
            }
            (Some(address), None) => Ok(address.clone()),
            (None, Some(cid)) => Ok(Address::Vsock {
                cid,
                port: self.port,
            }),
            (None, None) => Err("no enclave address: give --cid CID or --connect ADDR".into()),
        }
    }

    /// Whether failures are printed as JSON on stdout.
    pub fn json_errors(&self) -> bool {
        self.output == Some(Output::Json)
    }
}

/// Runs the exchange; returns what to print on stdout.
pub async fn run(args: Args) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if args.timeout_secs > MAX_TIMEOUT_SECS {
        return Err(Failure::from(format!(
            "--timeout-secs {}: must be at most {MAX_TIMEOUT_SECS} (one day)",
            args.timeout_secs
        )));
    }
    let address = args.address()?;
    let (request, default_output) = args.request()?;
    let output = args.output.unwrap_or(default_output);
    let operation = request.operation();
    let started = Instant::now();
    let profile = args.profile.as_deref();
    let mut region = crate::credentials::configured_region(args.region.as_deref(), profile)?;
    let (credentials, source) = crate::credentials::resolve(profile).await?;
    tracing::debug!(
        source = %source,
        access_key_id = %credentials.access_key_id,
        elapsed_ms = started.elapsed().as_millis(),
        "credentials"
    );
    if region.is_none() {
        region = crate::credentials::imds_region(profile).await?;
    }
    match &region {
        Some(region) => tracing::debug!(%region, "region"),
        None => tracing::debug!("no region found: none sent, the enclave uses its own"),
    }
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let connecting = Instant::now();
    tracing::debug!(%address, "connecting to the enclave");
    let mut stream = net::connect(&address)
        .or(async {
            smol::Timer::after(timeout).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ))
        })
        .await
        .map_err(|e| {
            let mut failure = Failure::from(format!("cannot connect to the enclave at {address}: {e}"));
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
            ) || is_refused_or_reset(&e.to_string())
            {
                failure.hint = Some(
                    "is the enclave running and listening there (nitro-cli describe-enclaves; kmstool-enclave --port)?",
                );
            }
            failure
        })?;
    tracing::debug!(%address, elapsed_ms = connecting.elapsed().as_millis(), "connected");
    let exchange = InstanceClient::new(
        &credentials,
        region.as_ref().map(|r| r.name.as_str()),
        request,
        Instant::now(),
        timeout,
    );
    let exchanging = Instant::now();
    let result = client::exchange(&mut stream, exchange).await;
    tracing::debug!(
        elapsed_ms = exchanging.elapsed().as_millis(),
        ok = result.is_ok(),
        "enclave exchange"
    );
    let result = result.map_err(|e| Failure::from_instance(&e, region.as_ref()))?;
    Ok(render(&result, output, operation))
}

fn render(result: &InstanceResult, output: Output, operation: Operation) -> Zeroizing<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Zeroizing::new(Vec::new());
    let mut line = |label: &str, value: &str| {
        out.extend_from_slice(label.as_bytes());
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    };
    match (output, operation) {
        (Output::Raw, _) => {
            out.extend_from_slice(result.plaintext.expose());
            out.push(b'\n');
        }
        (Output::Base64, Operation::GenerateDataKey) => {
            if let Some(blob) = &result.ciphertext_blob {
                line("CIPHERTEXT: ", &b64.encode(blob));
            }
            line("PLAINTEXT: ", result.plaintext.to_base64().expose());
        }
        (Output::Base64, Operation::GenerateDataKeyPair) => {
            if let Some(public_key) = &result.public_key {
                line("PUBLICKEY: ", &b64.encode(public_key));
            }
            if let Some(blob) = &result.private_key_ciphertext_blob {
                line("CIPHERTEXT: ", &b64.encode(blob));
            }
            line("PLAINTEXT: ", result.plaintext.to_base64().expose());
        }
        (Output::Base64, _) => line("", result.plaintext.to_base64().expose()),
        (Output::Json, _) => {
            // Borrowed fields only: the plaintext is written straight into the zeroizing buffer.
            #[derive(serde::Serialize)]
            #[serde(rename_all = "PascalCase")]
            struct Json<'a> {
                #[serde(skip_serializing_if = "Option::is_none")]
                ciphertext_blob: Option<String>,
                #[serde(skip_serializing_if = "Option::is_none")]
                encryption_algorithm: Option<&'a str>,
                #[serde(skip_serializing_if = "Option::is_none")]
                key_agreement_algorithm: Option<&'a str>,
                #[serde(skip_serializing_if = "Option::is_none")]
                key_id: Option<&'a str>,
                #[serde(skip_serializing_if = "Option::is_none")]
                key_origin: Option<&'a str>,
                #[serde(skip_serializing_if = "Option::is_none")]
                key_pair_spec: Option<&'a str>,
                #[serde(skip_serializing_if = "Option::is_none")]
                plaintext: Option<&'a str>,
                #[serde(skip_serializing_if = "Option::is_none")]
                private_key_ciphertext_blob: Option<String>,
                #[serde(skip_serializing_if = "Option::is_none")]
                private_key_plaintext: Option<&'a str>,
                #[serde(skip_serializing_if = "Option::is_none")]
                public_key: Option<String>,
                #[serde(skip_serializing_if = "Option::is_none")]
                shared_secret: Option<&'a str>,
            }
            let secret = result.plaintext.to_base64();
            let secret = Some(secret.expose());
            let mut json = Json {
                ciphertext_blob: result.ciphertext_blob.as_ref().map(|b| b64.encode(b)),
                encryption_algorithm: result.encryption_algorithm.as_deref(),
                key_agreement_algorithm: result.key_agreement_algorithm.as_deref(),
                key_id: result.key_id.as_deref(),
                key_origin: result.key_origin.as_deref(),
                key_pair_spec: result.key_pair_spec.as_deref(),
                plaintext: None,
                private_key_ciphertext_blob: result
                    .private_key_ciphertext_blob
                    .as_ref()
                    .map(|b| b64.encode(b)),
                private_key_plaintext: None,
                public_key: result.public_key.as_ref().map(|k| b64.encode(k)),
                shared_secret: None,
            };
            // The secret under the name the AWS CLI gives it for this operation.
            match operation {
                Operation::GenerateDataKeyPair => json.private_key_plaintext = secret,
                Operation::DeriveSharedSecret => json.shared_secret = secret,
                _ => json.plaintext = secret,
            }
            if serde_json::to_writer_pretty(&mut *out, &json).is_ok() {
                out.push(b'\n');
            }
        }
    }
    out
}

/// When clap refuses an option given before the subcommand that owns it, the subcommand to
/// name: `(option, subcommands)`.
pub fn misplaced_option(error: &clap::Error) -> Option<(String, Vec<String>)> {
    use clap::CommandFactory as _;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(given)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = given.strip_prefix("--")?.split('=').next()?.to_owned();
    let command = Args::command();
    let owners: Vec<String> = command
        .get_subcommands()
        .filter(|sub| {
            sub.get_arguments()
                .any(|arg| arg.get_long() == Some(long.as_str()))
        })
        .map(|sub| sub.get_name().to_owned())
        .collect();
    (!owners.is_empty()).then(|| (format!("--{long}"), owners))
}
