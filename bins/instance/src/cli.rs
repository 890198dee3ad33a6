//! Arguments, the exchange with the enclave, and output formats.

use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::{Parser, Subcommand, ValueEnum};
use kmstool_core::address::Address;
use kmstool_core::instance::{InstanceClient, InstanceRequest, InstanceResult};
use kmstool_core::protocol::{EncryptionAlgorithm, EncryptionContext, KeySpec};
use kmstool_runtime_smol::{client, net};
use smol::future::FutureExt as _;
use zeroize::Zeroizing;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "kmstool-instance",
    version,
    about = "Asks a kmstool enclave to decrypt with AWS KMS (or to generate a data key or random bytes)",
    subcommand_negates_reqs = true,
    after_help = "Credentials, first found: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN]; \
the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, --profile or \
AWS_PROFILE); a container endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI, token \
from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or _TOKEN); IMDSv2 \
(AWS_EC2_METADATA_SERVICE_ENDPOINT, off with AWS_EC2_METADATA_DISABLED=true)."
)]
pub struct Args {
    /// vsock CID of the enclave (required unless --connect).
    // Not `required_unless_present`: clap checks that in the subcommand, where a global
    // `--connect` given before the subcommand's name is not seen yet. `address` checks it.
    #[arg(long, global = true)]
    pub cid: Option<u32>,

    /// vsock port of the enclave.
    #[arg(long, global = true, default_value_t = 3000)]
    pub port: u32,

    /// Connect to ADDR (vsock:CID:PORT, tcp:HOST:PORT or unix:PATH) instead of --cid/--port.
    #[arg(long, global = true, value_name = "ADDR")]
    pub connect: Option<Address>,

    /// AWS region sent to the enclave (AwsRegion).
    #[arg(long, global = true)]
    pub region: Option<String>,

    /// Profile of the shared credentials file [default: $AWS_PROFILE, else "default"].
    #[arg(long, global = true)]
    pub profile: Option<String>,

    /// How to print the result [default: raw for decrypt, json for generate-data-key, base64
    /// for generate-random].
    #[arg(long, global = true, value_enum)]
    pub output: Option<Output>,

    /// Give up after this many seconds without a reply.
    #[arg(long, global = true, default_value_t = 30)]
    pub timeout_secs: u64,

    /// Encryption context entry KEY=VALUE (repeatable).
    #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = parse_context_entry)]
    pub encryption_context: Vec<(String, String)>,

    /// The ciphertext to decrypt, base64 (upstream's form; same as `decrypt CIPHERTEXT`).
    #[arg(required = true)]
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
        /// The ciphertext, base64.
        ciphertext: String,
        /// Key id (needed for asymmetric keys).
        #[arg(long)]
        key_id: Option<String>,
        /// SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256.
        #[arg(long, value_parser = parse_algorithm)]
        encryption_algorithm: Option<EncryptionAlgorithm>,
        /// Encryption context entry KEY=VALUE (repeatable).
        #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = parse_context_entry)]
        encryption_context: Vec<(String, String)>,
        /// Grant token (repeatable).
        #[arg(long = "grant-token")]
        grant_tokens: Vec<String>,
    },
    /// Generates a data key under a KMS key: its plaintext and its encrypted copy.
    GenerateDataKey {
        /// The KMS key (id, ARN or alias/NAME).
        #[arg(long)]
        key_id: String,
        /// AES_256 (default) or AES_128.
        #[arg(long, value_parser = parse_key_spec, conflicts_with = "number_of_bytes")]
        key_spec: Option<KeySpec>,
        /// Key length in bytes (1 to 1024) instead of --key-spec.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        number_of_bytes: Option<u32>,
        /// Encryption context entry KEY=VALUE (repeatable).
        #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = parse_context_entry)]
        encryption_context: Vec<(String, String)>,
        /// Grant token (repeatable).
        #[arg(long = "grant-token")]
        grant_tokens: Vec<String>,
    },
    /// Generates random bytes inside the enclave's attested channel.
    GenerateRandom {
        /// How many bytes (1 to 1024).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        number_of_bytes: u32,
    },
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The bytes themselves, then a newline (upstream's decrypt output).
    Raw,
    /// Standard base64, then a newline.
    Base64,
    /// A JSON object like the AWS CLI's (`Plaintext`, `KeyId`, `CiphertextBlob`, ...).
    Json,
}

fn parse_context_entry(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE".into()),
    }
}

fn parse_algorithm(text: &str) -> Result<EncryptionAlgorithm, String> {
    EncryptionAlgorithm::from_wire(text)
        .ok_or_else(|| "expected SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256".into())
}

fn parse_key_spec(text: &str) -> Result<KeySpec, String> {
    match text {
        "AES_256" | "AES-256" => Ok(KeySpec::Aes256),
        "AES_128" | "AES-128" => Ok(KeySpec::Aes128),
        _ => Err("expected AES_256 or AES_128".into()),
    }
}

fn decode_ciphertext(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "the ciphertext is not standard base64".to_owned())
}

impl Args {
    fn request(&self) -> Result<(InstanceRequest, Output), String> {
        let context = |entries: &[(String, String)]| -> EncryptionContext {
            self.encryption_context
                .iter()
                .chain(entries)
                .cloned()
                .collect()
        };
        if self.command.is_some() && self.ciphertext.is_some() {
            return Err("a CIPHERTEXT before a subcommand is not allowed".into());
        }
        Ok(match &self.command {
            None => {
                let ciphertext = self.ciphertext.as_deref().ok_or("no ciphertext given")?;
                (
                    InstanceRequest::Decrypt {
                        ciphertext: decode_ciphertext(ciphertext)?,
                        encryption_context: context(&[]),
                        key_id: None,
                        encryption_algorithm: None,
                        grant_tokens: Vec::new(),
                    },
                    Output::Raw,
                )
            }
            Some(Command::Decrypt {
                ciphertext,
                key_id,
                encryption_algorithm,
                encryption_context,
                grant_tokens,
            }) => (
                InstanceRequest::Decrypt {
                    ciphertext: decode_ciphertext(ciphertext)?,
                    encryption_context: context(encryption_context),
                    key_id: key_id.clone(),
                    encryption_algorithm: *encryption_algorithm,
                    grant_tokens: grant_tokens.clone(),
                },
                Output::Raw,
            ),
            Some(Command::GenerateDataKey {
                key_id,
                key_spec,
                number_of_bytes,
                encryption_context,
                grant_tokens,
            }) => (
                InstanceRequest::GenerateDataKey {
                    key_id: key_id.clone(),
                    key_spec: key_spec.or(number_of_bytes.is_none().then_some(KeySpec::Aes256)),
                    number_of_bytes: *number_of_bytes,
                    encryption_context: context(encryption_context),
                    grant_tokens: grant_tokens.clone(),
                },
                Output::Json,
            ),
            Some(Command::GenerateRandom { number_of_bytes }) => (
                InstanceRequest::GenerateRandom {
                    number_of_bytes: *number_of_bytes,
                },
                Output::Base64,
            ),
        })
    }

    fn address(&self) -> Result<Address, String> {
        match (&self.connect, self.cid) {
            (Some(address), _) => Ok(address.clone()),
            (None, Some(cid)) => Ok(Address::Vsock {
                cid,
                port: self.port,
            }),
            (None, None) => Err("no enclave address: give --cid CID or --connect ADDR".into()),
        }
    }
}

/// Runs the exchange; returns what to print on stdout.
pub async fn run(args: Args) -> Result<Zeroizing<Vec<u8>>, String> {
    let (request, default_output) = args.request()?;
    let output = args.output.unwrap_or(default_output);
    let address = args.address()?;
    let credentials = crate::credentials::resolve(args.profile.as_deref()).await?;
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let mut stream = net::connect(&address)
        .or(async {
            smol::Timer::after(timeout).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ))
        })
        .await
        .map_err(|e| format!("cannot connect to the enclave at {address}: {e}"))?;
    let exchange = InstanceClient::new(
        &credentials,
        args.region.as_deref(),
        request,
        Instant::now(),
        timeout,
    );
    let result = client::exchange(&mut stream, exchange)
        .await
        .map_err(|e| e.to_string())?;
    Ok(render(&result, output))
}

fn render(result: &InstanceResult, output: Output) -> Zeroizing<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Zeroizing::new(Vec::new());
    match output {
        Output::Raw => {
            out.extend_from_slice(result.plaintext.expose());
            out.push(b'\n');
        }
        Output::Base64 => {
            out.extend_from_slice(result.plaintext.to_base64().expose().as_bytes());
            out.push(b'\n');
        }
        Output::Json => {
            // Borrowed fields only: the plaintext is written straight into the zeroizing buffer.
            #[derive(serde::Serialize)]
            #[serde(rename_all = "PascalCase")]
            struct Json<'a> {
                #[serde(skip_serializing_if = "Option::is_none")]
                ciphertext_blob: Option<String>,
                #[serde(skip_serializing_if = "Option::is_none")]
                encryption_algorithm: Option<&'a str>,
                #[serde(skip_serializing_if = "Option::is_none")]
                key_id: Option<&'a str>,
                plaintext: &'a str,
            }
            let plaintext = result.plaintext.to_base64();
            let json = Json {
                ciphertext_blob: result.ciphertext_blob.as_ref().map(|b| b64.encode(b)),
                key_id: result.key_id.as_deref(),
                encryption_algorithm: result.encryption_algorithm.as_deref(),
                plaintext: plaintext.expose(),
            };
            if serde_json::to_writer_pretty(&mut *out, &json).is_ok() {
                out.push(b'\n');
            }
        }
    }
    out
}
