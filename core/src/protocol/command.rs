//! Parsing commands from the parent instance.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::error::CommandError;
use crate::secret::{Credentials, SecretString};

/// Largest `CiphertextBlob` KMS accepts.
pub const MAX_CIPHERTEXT_BYTES: usize = 6144;
/// Most grant tokens KMS accepts in one request.
pub const MAX_GRANT_TOKENS: usize = 10;
/// Largest `NumberOfBytes` for `GenerateRandom` and `GenerateDataKey`.
pub const MAX_NUMBER_OF_BYTES: u32 = 1024;
/// Longest `KeyId` KMS accepts.
pub const MAX_KEY_ID_CHARS: usize = 2048;
/// Longest `RequestId` we echo.
pub const MAX_REQUEST_ID_CHARS: usize = 256;
/// Largest `PublicKey` (DER SubjectPublicKeyInfo) KMS accepts in `DeriveSharedSecret`.
pub const MAX_PUBLIC_KEY_BYTES: usize = 8192;
/// Longest `KeyPairSpec` passed through to KMS (today's longest is `ECC_SECG_P256K1`).
pub const MAX_KEY_PAIR_SPEC_CHARS: usize = 64;

/// An encryption context: string keys to string values, bound to the ciphertext by KMS.
pub type EncryptionContext = BTreeMap<String, String>;

wire_enum! {
    /// The operations of the enclave protocol (`"Operation"`); the KMS operations are spelled
    /// as KMS spells them.
    pub enum Operation {
        /// Sets this connection's AWS credentials and region.
        SetClient = "SetClient",
        /// KMS Decrypt.
        Decrypt = "Decrypt",
        /// KMS GenerateDataKey (extension).
        GenerateDataKey = "GenerateDataKey",
        /// KMS GenerateRandom (extension).
        GenerateRandom = "GenerateRandom",
        /// KMS GenerateDataKeyPair (extension).
        GenerateDataKeyPair = "GenerateDataKeyPair",
        /// KMS DeriveSharedSecret (extension).
        DeriveSharedSecret = "DeriveSharedSecret",
    }
}

impl Operation {
    /// How a failed command's error message starts: upstream's `Could not decrypt ciphertext`
    /// for Decrypt (and for SetClient, as upstream words it), ours for the extensions.
    pub fn failure_text(self) -> &'static str {
        match self {
            Self::Decrypt | Self::SetClient => "Could not decrypt ciphertext",
            Self::GenerateDataKey => "Could not generate data key",
            Self::GenerateRandom => "Could not generate random bytes",
            Self::GenerateDataKeyPair => "Could not generate data key pair",
            Self::DeriveSharedSecret => "Could not derive shared secret",
        }
    }
}

/// A command that named a known operation. Its arguments are parsed but kept as a `Result`, so
/// that a session can check its state first, in upstream's order (`Client not initialized`
/// comes before `Message does not contain a Ciphertext`).
#[derive(Debug)]
pub struct Command {
    /// `RequestId` to echo in the reply.
    pub request_id: Option<String>,
    /// Which operation.
    pub operation: Operation,
    /// Its arguments, or why they are invalid.
    pub args: Result<CommandArgs, CommandError>,
}

/// What the heap holds per `String` beyond its bytes: the allocator's smallest chunk and
/// header, and the pointer, length and capacity of the `String` itself.
const STRING_OVERHEAD: usize = 48;
/// What a `BTreeMap` entry costs beyond its key and value (its share of an 11-entry node).
const MAP_ENTRY_OVERHEAD: usize = 32;

fn string_bytes(text: &str) -> usize {
    text.len() + STRING_OVERHEAD
}

fn context_bytes(context: &EncryptionContext) -> usize {
    context
        .iter()
        .map(|(k, v)| string_bytes(k) + string_bytes(v) + MAP_ENTRY_OVERHEAD)
        .sum()
}

fn tokens_bytes(tokens: &[String]) -> usize {
    tokens.iter().map(|t| string_bytes(t)).sum()
}

impl Command {
    /// About how many bytes this parsed command keeps in memory while it waits for its turn: an
    /// upper estimate (strings and map entries at the allocator's granularity), so a session
    /// can hold its commands to a byte budget. A message of many tiny encryption-context keys
    /// costs several times its length once parsed; this counts that.
    pub fn retained_bytes(&self) -> usize {
        let request_id = self.request_id.as_deref().map_or(0, string_bytes);
        let args = match &self.args {
            Err(_) => 0,
            Ok(CommandArgs::SetClient(set)) => {
                let c = &set.credentials;
                string_bytes(&c.access_key_id)
                    + string_bytes(c.secret_access_key.expose())
                    + c.session_token
                        .as_ref()
                        .map_or(0, |t| string_bytes(t.expose()))
                    + set.region.as_deref().map_or(0, string_bytes)
            }
            Ok(CommandArgs::Decrypt(d)) => {
                d.ciphertext.len()
                    + context_bytes(&d.encryption_context)
                    + d.key_id.as_deref().map_or(0, string_bytes)
                    + tokens_bytes(&d.grant_tokens)
            }
            Ok(CommandArgs::GenerateDataKey(g)) => {
                string_bytes(&g.key_id)
                    + context_bytes(&g.encryption_context)
                    + tokens_bytes(&g.grant_tokens)
            }
            Ok(CommandArgs::GenerateRandom(r)) => {
                r.custom_key_store_id.as_deref().map_or(0, string_bytes)
            }
            Ok(CommandArgs::GenerateDataKeyPair(g)) => {
                string_bytes(&g.key_id)
                    + string_bytes(&g.key_pair_spec)
                    + context_bytes(&g.encryption_context)
                    + tokens_bytes(&g.grant_tokens)
            }
            Ok(CommandArgs::DeriveSharedSecret(d)) => {
                string_bytes(&d.key_id) + d.public_key.len() + tokens_bytes(&d.grant_tokens)
            }
        };
        size_of::<Self>() + request_id + args
    }
}

/// A message that is not a command at all (not JSON, no operation, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// `RequestId`, when the message was an object carrying one.
    pub request_id: Option<String>,
    /// Why.
    pub error: CommandError,
}

/// The arguments of each operation: what the enclave parses ([`parse_command`]) and what a
/// client encodes ([`CommandArgs::to_json`]), the same types both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandArgs {
    /// `SetClient`.
    SetClient(SetClient),
    /// `Decrypt`.
    Decrypt(Decrypt),
    /// `GenerateDataKey`.
    GenerateDataKey(GenerateDataKey),
    /// `GenerateRandom`.
    GenerateRandom(GenerateRandom),
    /// `GenerateDataKeyPair`.
    GenerateDataKeyPair(GenerateDataKeyPair),
    /// `DeriveSharedSecret`.
    DeriveSharedSecret(DeriveSharedSecret),
}

impl CommandArgs {
    /// A plain `Decrypt` of `ciphertext`: no context, key, algorithm or grant tokens.
    pub fn decrypt(ciphertext: Vec<u8>) -> Self {
        Self::Decrypt(Decrypt::new(ciphertext))
    }

    /// The operation these arguments are for.
    pub fn operation(&self) -> Operation {
        match self {
            Self::SetClient(_) => Operation::SetClient,
            Self::Decrypt(_) => Operation::Decrypt,
            Self::GenerateDataKey(_) => Operation::GenerateDataKey,
            Self::GenerateRandom(_) => Operation::GenerateRandom,
            Self::GenerateDataKeyPair(_) => Operation::GenerateDataKeyPair,
            Self::DeriveSharedSecret(_) => Operation::DeriveSharedSecret,
        }
    }

    /// The command as compact JSON, without the frame terminator: `Operation` first, then the
    /// fields that are set (empty contexts and token lists are left out), then `RequestId` when
    /// given. `SetClient` carries the secret key, so the buffer is zeroizing and sized exactly
    /// before it is written (growing would free an unwiped copy).
    pub fn to_json(&self, request_id: Option<&str>) -> Zeroizing<Vec<u8>> {
        crate::secret::zeroizing_json(&Wire {
            args: self,
            request_id,
        })
    }
}

/// A command as it goes on the wire.
struct Wire<'a> {
    args: &'a CommandArgs,
    request_id: Option<&'a str>,
}

/// Bytes as standard base64, written straight into the JSON string.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&base64::display::Base64Display::new(
            self.0,
            &STANDARD_STRICT,
        ))
    }
}

impl Serialize for Wire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(field::OPERATION, self.args.operation().as_str())?;
        match self.args {
            CommandArgs::SetClient(set) => {
                let credentials = &set.credentials;
                map.serialize_entry(field::ACCESS_KEY_ID, &credentials.access_key_id)?;
                let secret = credentials.secret_access_key.expose();
                map.serialize_entry(field::SECRET_ACCESS_KEY, secret)?;
                if let Some(token) = &credentials.session_token {
                    map.serialize_entry(field::SESSION_TOKEN, token.expose())?;
                }
                if let Some(region) = &set.region {
                    map.serialize_entry(field::REGION, region)?;
                }
            }
            CommandArgs::Decrypt(decrypt) => {
                map.serialize_entry(field::CIPHERTEXT, &Base64(&decrypt.ciphertext))?;
                if let Some(key_id) = &decrypt.key_id {
                    map.serialize_entry(field::KEY_ID, key_id)?;
                }
                if !decrypt.encryption_context.is_empty() {
                    map.serialize_entry(field::ENCRYPTION_CONTEXT, &decrypt.encryption_context)?;
                }
                if let Some(algorithm) = decrypt.encryption_algorithm {
                    map.serialize_entry(field::ENCRYPTION_ALGORITHM, algorithm.as_str())?;
                }
                if !decrypt.grant_tokens.is_empty() {
                    map.serialize_entry(field::GRANT_TOKENS, &decrypt.grant_tokens)?;
                }
                if decrypt.dry_run {
                    map.serialize_entry(field::DRY_RUN, &true)?;
                }
            }
            CommandArgs::GenerateDataKey(generate) => {
                map.serialize_entry(field::KEY_ID, &generate.key_id)?;
                match generate.size {
                    DataKeySize::KeySpec(spec) => {
                        map.serialize_entry(field::KEY_SPEC, spec.as_str())?;
                    }
                    DataKeySize::NumberOfBytes(n) => {
                        map.serialize_entry(field::NUMBER_OF_BYTES, &n)?;
                    }
                }
                let context = &generate.encryption_context;
                common_tail(&mut map, context, &generate.grant_tokens, generate.dry_run)?;
            }
            CommandArgs::GenerateRandom(random) => {
                map.serialize_entry(field::NUMBER_OF_BYTES, &random.number_of_bytes)?;
                if let Some(id) = &random.custom_key_store_id {
                    map.serialize_entry(field::CUSTOM_KEY_STORE_ID, id)?;
                }
            }
            CommandArgs::GenerateDataKeyPair(generate) => {
                map.serialize_entry(field::KEY_ID, &generate.key_id)?;
                map.serialize_entry(field::KEY_PAIR_SPEC, &generate.key_pair_spec)?;
                let context = &generate.encryption_context;
                common_tail(&mut map, context, &generate.grant_tokens, generate.dry_run)?;
            }
            CommandArgs::DeriveSharedSecret(derive) => {
                map.serialize_entry(field::KEY_ID, &derive.key_id)?;
                map.serialize_entry(field::PUBLIC_KEY, &Base64(&derive.public_key))?;
                map.serialize_entry(
                    field::KEY_AGREEMENT_ALGORITHM,
                    derive.key_agreement_algorithm.as_str(),
                )?;
                let none = EncryptionContext::new();
                common_tail(&mut map, &none, &derive.grant_tokens, derive.dry_run)?;
            }
        }
        if let Some(id) = self.request_id {
            map.serialize_entry(field::REQUEST_ID, id)?;
        }
        map.end()
    }
}

/// The optional fields most commands end with, each only when set.
fn common_tail<M: SerializeMap>(
    map: &mut M,
    encryption_context: &EncryptionContext,
    grant_tokens: &[String],
    dry_run: bool,
) -> Result<(), M::Error> {
    if !encryption_context.is_empty() {
        map.serialize_entry(field::ENCRYPTION_CONTEXT, encryption_context)?;
    }
    if !grant_tokens.is_empty() {
        map.serialize_entry(field::GRANT_TOKENS, grant_tokens)?;
    }
    if dry_run {
        map.serialize_entry(field::DRY_RUN, &true)?;
    }
    Ok(())
}

/// `SetClient`: the credentials and optional region for the following KMS calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetClient {
    /// `AwsAccessKeyId`, `AwsSecretAccessKey`, `AwsSessionToken`.
    pub credentials: Credentials,
    /// `AwsRegion`.
    pub region: Option<String>,
}

/// `Decrypt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypt {
    /// The decoded `Ciphertext`.
    pub ciphertext: Vec<u8>,
    /// `EncryptionContext`.
    pub encryption_context: EncryptionContext,
    /// `KeyId`.
    pub key_id: Option<String>,
    /// `EncryptionAlgorithm`.
    pub encryption_algorithm: Option<EncryptionAlgorithm>,
    /// `GrantTokens`.
    pub grant_tokens: Vec<String>,
    /// `DryRun` (extension): KMS checks the request, permissions included, and answers
    /// `DryRunOperationException` instead of doing it.
    pub dry_run: bool,
}

impl Decrypt {
    /// A plain `Decrypt` of `ciphertext`: no context, key, algorithm or grant tokens (set the
    /// fields for those).
    pub fn new(ciphertext: Vec<u8>) -> Self {
        Self {
            ciphertext,
            encryption_context: EncryptionContext::new(),
            key_id: None,
            encryption_algorithm: None,
            grant_tokens: Vec::new(),
            dry_run: false,
        }
    }
}

/// `GenerateDataKey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateDataKey {
    /// `KeyId`.
    pub key_id: String,
    /// `KeySpec` or `NumberOfBytes` (`AES_256` when neither is given).
    pub size: DataKeySize,
    /// `EncryptionContext`.
    pub encryption_context: EncryptionContext,
    /// `GrantTokens`.
    pub grant_tokens: Vec<String>,
    /// `DryRun` (extension): KMS checks the request, permissions included, and answers
    /// `DryRunOperationException` instead of doing it.
    pub dry_run: bool,
}

/// How large a data key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKeySize {
    /// `KeySpec`.
    KeySpec(KeySpec),
    /// `NumberOfBytes`.
    NumberOfBytes(u32),
}

impl DataKeySize {
    /// The size a request with these optional fields asks for: `KeySpec` when given, else
    /// `NumberOfBytes`, else `AES_256` (as the enclave reads a command with neither).
    pub fn new(key_spec: Option<KeySpec>, number_of_bytes: Option<u32>) -> Self {
        match (key_spec, number_of_bytes) {
            (Some(spec), _) => Self::KeySpec(spec),
            (None, Some(n)) => Self::NumberOfBytes(n),
            (None, None) => Self::KeySpec(KeySpec::Aes256),
        }
    }
}

/// `GenerateRandom`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateRandom {
    /// `NumberOfBytes`, 1 to 1024.
    pub number_of_bytes: u32,
    /// `CustomKeyStoreId` (extension): random bytes from this CloudHSM key store's cluster.
    pub custom_key_store_id: Option<String>,
}

/// `GenerateDataKeyPair`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateDataKeyPair {
    /// `KeyId`: the symmetric KMS key that encrypts the private key.
    pub key_id: String,
    /// `KeyPairSpec`, as given: KMS validates it, so that specs it adds later work at once.
    pub key_pair_spec: String,
    /// `EncryptionContext`.
    pub encryption_context: EncryptionContext,
    /// `GrantTokens`.
    pub grant_tokens: Vec<String>,
    /// `DryRun` (extension): KMS checks the request, permissions included, and answers
    /// `DryRunOperationException` instead of doing it.
    pub dry_run: bool,
}

/// `DeriveSharedSecret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeriveSharedSecret {
    /// `KeyId`: an asymmetric KMS key with key usage `KEY_AGREEMENT`.
    pub key_id: String,
    /// The decoded `PublicKey`: the peer's DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// `KeyAgreementAlgorithm` (`ECDH` when not given).
    pub key_agreement_algorithm: KeyAgreementAlgorithm,
    /// `GrantTokens`.
    pub grant_tokens: Vec<String>,
    /// `DryRun` (extension): KMS checks the request, permissions included, and answers
    /// `DryRunOperationException` instead of doing it.
    pub dry_run: bool,
}

wire_enum! {
    /// `KeyAgreementAlgorithm` of `DeriveSharedSecret`.
    pub enum KeyAgreementAlgorithm {
        /// `ECDH`: elliptic-curve Diffie-Hellman, the only one KMS offers.
        Ecdh = "ECDH",
    }
}

wire_enum! {
    /// `EncryptionAlgorithm` of `Decrypt`.
    pub enum EncryptionAlgorithm {
        /// `SYMMETRIC_DEFAULT`.
        SymmetricDefault = "SYMMETRIC_DEFAULT",
        /// `RSAES_OAEP_SHA_1`.
        RsaesOaepSha1 = "RSAES_OAEP_SHA_1",
        /// `RSAES_OAEP_SHA_256`.
        RsaesOaepSha256 = "RSAES_OAEP_SHA_256",
    }
}

wire_enum! {
    /// `KeySpec` of `GenerateDataKey`.
    pub enum KeySpec {
        /// `AES_256`: 32 bytes.
        Aes256 = "AES_256",
        /// `AES_128`: 16 bytes.
        Aes128 = "AES_128",
    }
}

/// A `--key-spec` argument of the command-line tools: KMS's spelling, or upstream's CLI's
/// `AES-256` and `AES-128`.
pub fn parse_key_spec_arg(text: &str) -> Result<KeySpec, super::UnknownName> {
    match text {
        "AES-256" => Ok(KeySpec::Aes256),
        "AES-128" => Ok(KeySpec::Aes128),
        _ => text.parse(),
    }
}

/// The JSON names of the commands' fields. The parser below and the encoder
/// ([`CommandArgs::to_json`]) both use these, so each name is spelled once.
pub(crate) mod field {
    pub const OPERATION: &str = "Operation";
    pub const REQUEST_ID: &str = "RequestId";
    pub const ACCESS_KEY_ID: &str = "AwsAccessKeyId";
    pub const SECRET_ACCESS_KEY: &str = "AwsSecretAccessKey";
    pub const SESSION_TOKEN: &str = "AwsSessionToken";
    pub const REGION: &str = "AwsRegion";
    pub const CIPHERTEXT: &str = "Ciphertext";
    pub const KEY_ID: &str = "KeyId";
    pub const KEY_SPEC: &str = "KeySpec";
    pub const NUMBER_OF_BYTES: &str = "NumberOfBytes";
    pub const ENCRYPTION_CONTEXT: &str = "EncryptionContext";
    pub const ENCRYPTION_ALGORITHM: &str = "EncryptionAlgorithm";
    pub const GRANT_TOKENS: &str = "GrantTokens";
    pub const KEY_PAIR_SPEC: &str = "KeyPairSpec";
    pub const PUBLIC_KEY: &str = "PublicKey";
    pub const KEY_AGREEMENT_ALGORITHM: &str = "KeyAgreementAlgorithm";
    pub const DRY_RUN: &str = "DryRun";
    pub const CUSTOM_KEY_STORE_ID: &str = "CustomKeyStoreId";
}

/// Parses one framed message (without its terminator) into a command.
///
/// Errors are upstream's, checked in upstream's order: not JSON, not an object, no
/// `Operation`, `Operation` not a string, unknown operation. Argument errors are inside
/// [`Command::args`].
pub fn parse_command(frame: &[u8]) -> Result<Command, Rejected> {
    let reject = |request_id, error| Rejected { request_id, error };
    let value: Value = serde_json::from_slice(frame)
        .map_err(|e| reject(None, CommandError::NotJson(json_error_detail(&e))))?;
    let Value::Object(mut object) = value else {
        return Err(reject(None, CommandError::NotAnObject));
    };
    let request_id = match take_request_id(&mut object) {
        Ok(id) => id,
        Err(error) => return Err(reject(None, error)),
    };
    let operation = match object.get(field::OPERATION) {
        None => return Err(reject(request_id, CommandError::MissingOperation)),
        Some(Value::String(name)) => match name.parse::<Operation>().ok() {
            Some(op) => op,
            None => return Err(reject(request_id, CommandError::UnknownOperation)),
        },
        Some(_) => return Err(reject(request_id, CommandError::OperationNotString)),
    };
    let args = match operation {
        Operation::SetClient => parse_set_client(&mut object).map(CommandArgs::SetClient),
        Operation::Decrypt => parse_decrypt(&mut object).map(CommandArgs::Decrypt),
        Operation::GenerateDataKey => {
            parse_generate_data_key(&mut object).map(CommandArgs::GenerateDataKey)
        }
        Operation::GenerateRandom => {
            parse_generate_random(&mut object).map(CommandArgs::GenerateRandom)
        }
        Operation::GenerateDataKeyPair => {
            parse_generate_data_key_pair(&object).map(CommandArgs::GenerateDataKeyPair)
        }
        Operation::DeriveSharedSecret => {
            parse_derive_shared_secret(&object).map(CommandArgs::DeriveSharedSecret)
        }
    };
    Ok(Command {
        request_id,
        operation,
        args,
    })
}

/// serde_json's error without the input (which may hold secrets): category and position.
fn json_error_detail(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Io => "read error",
        Category::Syntax => "syntax error",
        Category::Data => "invalid data",
        Category::Eof => "unexpected end of input",
    };
    format!("{what} at line {} column {}", error.line(), error.column())
}

fn take_request_id(object: &mut Map<String, Value>) -> Result<Option<String>, CommandError> {
    match object.remove(field::REQUEST_ID) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if id.chars().count() <= MAX_REQUEST_ID_CHARS => Ok(Some(id)),
        Some(Value::String(_)) => Err(CommandError::InvalidValue {
            field: field::REQUEST_ID,
            reason: format!("must be a string of at most {MAX_REQUEST_ID_CHARS} characters"),
        }),
        Some(_) => Err(CommandError::WrongType {
            field: field::REQUEST_ID,
            expected: "a string",
        }),
    }
}

fn parse_set_client(object: &mut Map<String, Value>) -> Result<SetClient, CommandError> {
    // A null key id or secret is "must be a string"; a null session token is none.
    let credential = |value: Option<Value>, name: &str| match value {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(CommandError::BadCredentials(format!(
            "{name} must be a string"
        ))),
    };
    let missing = |name: &str| CommandError::BadCredentials(format!("{name} is missing"));
    let access_key_id = credential(object.remove(field::ACCESS_KEY_ID), field::ACCESS_KEY_ID)?
        .ok_or_else(|| missing(field::ACCESS_KEY_ID))?;
    let secret_access_key = credential(
        object.remove(field::SECRET_ACCESS_KEY),
        field::SECRET_ACCESS_KEY,
    )?
    .map(SecretString::new)
    .ok_or_else(|| missing(field::SECRET_ACCESS_KEY))?;
    let session_token = match object.remove(field::SESSION_TOKEN) {
        Some(Value::Null) => None,
        token => credential(token, field::SESSION_TOKEN)?.map(SecretString::new),
    };
    let region = match object.remove(field::REGION) {
        None | Some(Value::Null) => None,
        Some(Value::String(region)) => Some(region),
        Some(_) => {
            let reason = format!("{} must be a string", field::REGION);
            return Err(CommandError::BadRegion(reason));
        }
    };
    let credentials = Credentials::new(access_key_id, secret_access_key, session_token);
    validate_credentials(&credentials)?;
    if let Some(region) = &region {
        crate::kms::endpoint::validate_region(region)
            .map_err(|reason| CommandError::BadRegion(reason.to_string()))?;
    }
    Ok(SetClient {
        credentials,
        region,
    })
}

/// Credentials go into HTTP headers: they must be non-empty visible ASCII.
fn validate_credentials(credentials: &Credentials) -> Result<(), CommandError> {
    fn check(value: &str, field: &str, max: usize) -> Result<(), CommandError> {
        if value.is_empty() {
            return Err(CommandError::InvalidClient(format!("{field} is empty")));
        }
        if value.len() > max {
            return Err(CommandError::InvalidClient(format!(
                "{field} is longer than {max} bytes"
            )));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CommandError::InvalidClient(format!(
                "{field} contains characters other than visible ASCII"
            )));
        }
        Ok(())
    }
    check(&credentials.access_key_id, field::ACCESS_KEY_ID, 128)?;
    check(
        credentials.secret_access_key.expose(),
        field::SECRET_ACCESS_KEY,
        256,
    )?;
    if let Some(token) = &credentials.session_token {
        check(token.expose(), field::SESSION_TOKEN, 8192)?;
    }
    Ok(())
}

fn parse_decrypt(object: &mut Map<String, Value>) -> Result<Decrypt, CommandError> {
    let ciphertext = match object.get(field::CIPHERTEXT) {
        None | Some(Value::Null) => return Err(CommandError::MissingCiphertext),
        Some(Value::String(text)) => STANDARD_STRICT
            .decode(text.as_bytes())
            .map_err(|e| CommandError::CiphertextNotBase64(e.to_string()))?,
        Some(_) => {
            return Err(CommandError::CiphertextNotBase64(
                "Ciphertext must be a string".into(),
            ));
        }
    };
    if ciphertext.is_empty() || ciphertext.len() > MAX_CIPHERTEXT_BYTES {
        return Err(CommandError::DecryptParameter {
            field: field::CIPHERTEXT,
            reason: format!("must decode to 1 to {MAX_CIPHERTEXT_BYTES} bytes"),
        });
    }
    let encryption_algorithm = match object.get(field::ENCRYPTION_ALGORITHM) {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.parse::<EncryptionAlgorithm>().map_err(|e| {
            CommandError::DecryptParameter {
                field: field::ENCRYPTION_ALGORITHM,
                reason: format!("must be {}", e.choices()),
            }
        })?),
        Some(_) => {
            return Err(CommandError::WrongType {
                field: field::ENCRYPTION_ALGORITHM,
                expected: "a string",
            });
        }
    };
    Ok(Decrypt {
        ciphertext,
        encryption_context: parse_encryption_context(object)?,
        key_id: parse_key_id(object).map_err(as_decrypt_parameter)?,
        encryption_algorithm,
        grant_tokens: parse_grant_tokens(object).map_err(as_decrypt_parameter)?,
        dry_run: parse_dry_run(object)?,
    })
}

/// A `Decrypt` field whose value KMS would refuse gets upstream's `Could not decrypt
/// ciphertext`; wrong types keep `JSON is wrong type`.
fn as_decrypt_parameter(error: CommandError) -> CommandError {
    match error {
        CommandError::InvalidValue { field, reason } => {
            CommandError::DecryptParameter { field, reason }
        }
        other => other,
    }
}

fn parse_generate_data_key(
    object: &mut Map<String, Value>,
) -> Result<GenerateDataKey, CommandError> {
    let key_id = parse_key_id(object)?.ok_or(CommandError::MissingField(field::KEY_ID))?;
    let key_spec = match object.get(field::KEY_SPEC) {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            Some(
                name.parse::<KeySpec>()
                    .map_err(|e| CommandError::InvalidValue {
                        field: field::KEY_SPEC,
                        reason: format!("must be {}", e.choices()),
                    })?,
            )
        }
        Some(_) => {
            return Err(CommandError::WrongType {
                field: field::KEY_SPEC,
                expected: "a string",
            });
        }
    };
    let size = match (key_spec, parse_number_of_bytes(object)?) {
        (Some(_), Some(_)) => {
            return Err(CommandError::InvalidValue {
                field: field::KEY_SPEC,
                reason: "and NumberOfBytes are mutually exclusive".into(),
            });
        }
        (Some(spec), None) => DataKeySize::KeySpec(spec),
        (None, Some(n)) => DataKeySize::NumberOfBytes(n),
        (None, None) => DataKeySize::KeySpec(KeySpec::Aes256),
    };
    Ok(GenerateDataKey {
        key_id,
        size,
        encryption_context: parse_encryption_context(object)?,
        grant_tokens: parse_grant_tokens(object)?,
        dry_run: parse_dry_run(object)?,
    })
}

fn parse_generate_random(object: &mut Map<String, Value>) -> Result<GenerateRandom, CommandError> {
    let number_of_bytes =
        parse_number_of_bytes(object)?.ok_or(CommandError::MissingField(field::NUMBER_OF_BYTES))?;
    Ok(GenerateRandom {
        number_of_bytes,
        custom_key_store_id: parse_custom_key_store_id(object)?,
    })
}

fn parse_generate_data_key_pair(
    object: &Map<String, Value>,
) -> Result<GenerateDataKeyPair, CommandError> {
    let key_id = parse_key_id(object)?.ok_or(CommandError::MissingField(field::KEY_ID))?;
    let key_pair_spec = match object.get(field::KEY_PAIR_SPEC) {
        None | Some(Value::Null) => return Err(CommandError::MissingField(field::KEY_PAIR_SPEC)),
        Some(Value::String(spec)) if is_spec_name(spec) => spec.clone(),
        Some(Value::String(_)) => {
            return Err(CommandError::InvalidValue {
                field: field::KEY_PAIR_SPEC,
                reason: format!(
                    "must be 1 to {MAX_KEY_PAIR_SPEC_CHARS} capital letters, digits and \
                     underscores, e.g. RSA_2048 or ECC_NIST_P256"
                ),
            });
        }
        Some(_) => {
            return Err(CommandError::WrongType {
                field: field::KEY_PAIR_SPEC,
                expected: "a string",
            });
        }
    };
    Ok(GenerateDataKeyPair {
        key_id,
        key_pair_spec,
        encryption_context: parse_encryption_context(object)?,
        grant_tokens: parse_grant_tokens(object)?,
        dry_run: parse_dry_run(object)?,
    })
}

/// A name shaped like KMS's spec names: what KMS may add later passes, anything else (which
/// KMS would refuse anyway) is refused here without a round trip.
fn is_spec_name(text: &str) -> bool {
    (1..=MAX_KEY_PAIR_SPEC_CHARS).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn parse_derive_shared_secret(
    object: &Map<String, Value>,
) -> Result<DeriveSharedSecret, CommandError> {
    let key_id = parse_key_id(object)?.ok_or(CommandError::MissingField(field::KEY_ID))?;
    let public_key = match object.get(field::PUBLIC_KEY) {
        None | Some(Value::Null) => return Err(CommandError::MissingField(field::PUBLIC_KEY)),
        Some(Value::String(text)) => {
            STANDARD_STRICT
                .decode(text.as_bytes())
                .map_err(|_| CommandError::InvalidValue {
                    field: field::PUBLIC_KEY,
                    reason: "must be standard padded base64".into(),
                })?
        }
        Some(_) => {
            return Err(CommandError::WrongType {
                field: field::PUBLIC_KEY,
                expected: "a string",
            });
        }
    };
    if public_key.is_empty() || public_key.len() > MAX_PUBLIC_KEY_BYTES {
        return Err(CommandError::InvalidValue {
            field: field::PUBLIC_KEY,
            reason: format!("must decode to 1 to {MAX_PUBLIC_KEY_BYTES} bytes"),
        });
    }
    let key_agreement_algorithm = match object.get(field::KEY_AGREEMENT_ALGORITHM) {
        None | Some(Value::Null) => KeyAgreementAlgorithm::Ecdh,
        Some(Value::String(name)) => {
            name.parse()
                .map_err(|e: super::UnknownName| CommandError::InvalidValue {
                    field: field::KEY_AGREEMENT_ALGORITHM,
                    reason: format!("must be {}", e.choices()),
                })?
        }
        Some(_) => {
            return Err(CommandError::WrongType {
                field: field::KEY_AGREEMENT_ALGORITHM,
                expected: "a string",
            });
        }
    };
    Ok(DeriveSharedSecret {
        key_id,
        public_key,
        key_agreement_algorithm,
        grant_tokens: parse_grant_tokens(object)?,
        dry_run: parse_dry_run(object)?,
    })
}

fn parse_dry_run(object: &Map<String, Value>) -> Result<bool, CommandError> {
    match object.get(field::DRY_RUN) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(dry_run)) => Ok(*dry_run),
        Some(_) => Err(CommandError::WrongType {
            field: field::DRY_RUN,
            expected: "a boolean",
        }),
    }
}

/// Longest `CustomKeyStoreId` KMS accepts.
pub const MAX_CUSTOM_KEY_STORE_ID_CHARS: usize = 64;

fn parse_custom_key_store_id(object: &Map<String, Value>) -> Result<Option<String>, CommandError> {
    match object.get(field::CUSTOM_KEY_STORE_ID) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if (1..=MAX_CUSTOM_KEY_STORE_ID_CHARS).contains(&id.len()) => {
            Ok(Some(id.clone()))
        }
        Some(Value::String(_)) => Err(CommandError::InvalidValue {
            field: field::CUSTOM_KEY_STORE_ID,
            reason: format!("must be 1 to {MAX_CUSTOM_KEY_STORE_ID_CHARS} characters"),
        }),
        Some(_) => Err(CommandError::WrongType {
            field: field::CUSTOM_KEY_STORE_ID,
            expected: "a string",
        }),
    }
}

fn parse_number_of_bytes(object: &Map<String, Value>) -> Result<Option<u32>, CommandError> {
    match object.get(field::NUMBER_OF_BYTES) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n @ 1..=1024) => Ok(Some(n as u32)),
            _ => Err(CommandError::InvalidValue {
                field: field::NUMBER_OF_BYTES,
                reason: format!("must be an integer from 1 to {MAX_NUMBER_OF_BYTES}"),
            }),
        },
        Some(_) => Err(CommandError::WrongType {
            field: field::NUMBER_OF_BYTES,
            expected: "an integer",
        }),
    }
}

fn parse_key_id(object: &Map<String, Value>) -> Result<Option<String>, CommandError> {
    match object.get(field::KEY_ID) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if !id.is_empty() && id.chars().count() <= MAX_KEY_ID_CHARS => {
            Ok(Some(id.clone()))
        }
        Some(Value::String(_)) => Err(CommandError::InvalidValue {
            field: field::KEY_ID,
            reason: format!("must be 1 to {MAX_KEY_ID_CHARS} characters"),
        }),
        Some(_) => Err(CommandError::WrongType {
            field: field::KEY_ID,
            expected: "a string",
        }),
    }
}

fn parse_encryption_context(
    object: &Map<String, Value>,
) -> Result<EncryptionContext, CommandError> {
    const EXPECTED: &str = "an object whose values are strings";
    match object.get(field::ENCRYPTION_CONTEXT) {
        None | Some(Value::Null) => Ok(EncryptionContext::new()),
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => Ok((key.clone(), text.clone())),
                _ => Err(CommandError::WrongType {
                    field: field::ENCRYPTION_CONTEXT,
                    expected: EXPECTED,
                }),
            })
            .collect(),
        Some(_) => Err(CommandError::WrongType {
            field: field::ENCRYPTION_CONTEXT,
            expected: EXPECTED,
        }),
    }
}

fn parse_grant_tokens(object: &Map<String, Value>) -> Result<Vec<String>, CommandError> {
    const EXPECTED: &str = "an array of strings";
    match object.get(field::GRANT_TOKENS) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= MAX_GRANT_TOKENS => items
            .iter()
            .map(|item| match item {
                Value::String(token) if !token.is_empty() => Ok(token.clone()),
                _ => Err(CommandError::WrongType {
                    field: field::GRANT_TOKENS,
                    expected: EXPECTED,
                }),
            })
            .collect(),
        Some(Value::Array(_)) => Err(CommandError::InvalidValue {
            field: field::GRANT_TOKENS,
            reason: format!("must hold at most {MAX_GRANT_TOKENS} tokens"),
        }),
        Some(_) => Err(CommandError::WrongType {
            field: field::GRANT_TOKENS,
            expected: EXPECTED,
        }),
    }
}

/// Standard alphabet, padding required, non-canonical trailing bits rejected.
const STANDARD_STRICT: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
