//! Parsing commands from the parent instance.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value};

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

/// An encryption context: string keys to string values, bound to the ciphertext by KMS.
pub type EncryptionContext = BTreeMap<String, String>;

/// The operations of the enclave protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Sets this connection's AWS credentials and region.
    SetClient,
    /// KMS Decrypt.
    Decrypt,
    /// KMS GenerateDataKey (extension).
    GenerateDataKey,
    /// KMS GenerateRandom (extension).
    GenerateRandom,
}

impl Operation {
    /// The wire spelling, also the KMS operation name for the KMS operations.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SetClient => "SetClient",
            Self::Decrypt => "Decrypt",
            Self::GenerateDataKey => "GenerateDataKey",
            Self::GenerateRandom => "GenerateRandom",
        }
    }

    fn from_wire(name: &str) -> Option<Self> {
        [
            Self::SetClient,
            Self::Decrypt,
            Self::GenerateDataKey,
            Self::GenerateRandom,
        ]
        .into_iter()
        .find(|op| op.as_str() == name)
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
                    + d.grant_tokens
                        .iter()
                        .map(|t| string_bytes(t))
                        .sum::<usize>()
            }
            Ok(CommandArgs::GenerateDataKey(g)) => {
                string_bytes(&g.key_id)
                    + context_bytes(&g.encryption_context)
                    + g.grant_tokens
                        .iter()
                        .map(|t| string_bytes(t))
                        .sum::<usize>()
            }
            Ok(CommandArgs::GenerateRandom(_)) => 0,
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

/// The arguments of each operation.
#[derive(Debug)]
pub enum CommandArgs {
    /// `SetClient`.
    SetClient(SetClient),
    /// `Decrypt`.
    Decrypt(Decrypt),
    /// `GenerateDataKey`.
    GenerateDataKey(GenerateDataKey),
    /// `GenerateRandom`.
    GenerateRandom(GenerateRandom),
}

/// `SetClient`: the credentials and optional region for the following KMS calls.
#[derive(Debug)]
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
}

/// How large a data key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKeySize {
    /// `KeySpec`.
    KeySpec(KeySpec),
    /// `NumberOfBytes`.
    NumberOfBytes(u32),
}

/// `GenerateRandom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateRandom {
    /// `NumberOfBytes`, 1 to 1024.
    pub number_of_bytes: u32,
}

/// `EncryptionAlgorithm` of `Decrypt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionAlgorithm {
    /// `SYMMETRIC_DEFAULT`.
    SymmetricDefault,
    /// `RSAES_OAEP_SHA_1`.
    RsaesOaepSha1,
    /// `RSAES_OAEP_SHA_256`.
    RsaesOaepSha256,
}

impl EncryptionAlgorithm {
    /// The KMS spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SymmetricDefault => "SYMMETRIC_DEFAULT",
            Self::RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
            Self::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
        }
    }

    /// Parses the KMS spelling.
    pub fn from_wire(text: &str) -> Option<Self> {
        [
            Self::SymmetricDefault,
            Self::RsaesOaepSha1,
            Self::RsaesOaepSha256,
        ]
        .into_iter()
        .find(|a| a.as_str() == text)
    }
}

/// `KeySpec` of `GenerateDataKey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// `AES_256`: 32 bytes.
    Aes256,
    /// `AES_128`: 16 bytes.
    Aes128,
}

impl KeySpec {
    /// The KMS spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aes256 => "AES_256",
            Self::Aes128 => "AES_128",
        }
    }

    /// Parses the KMS spelling.
    pub fn from_wire(text: &str) -> Option<Self> {
        [Self::Aes256, Self::Aes128]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
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
    let operation = match object.get("Operation") {
        None => return Err(reject(request_id, CommandError::MissingOperation)),
        Some(Value::String(name)) => match Operation::from_wire(name) {
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
    match object.remove("RequestId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if id.chars().count() <= MAX_REQUEST_ID_CHARS => Ok(Some(id)),
        Some(Value::String(_)) => Err(CommandError::InvalidValue {
            field: "RequestId",
            reason: format!("must be a string of at most {MAX_REQUEST_ID_CHARS} characters"),
        }),
        Some(_) => Err(CommandError::WrongType {
            field: "RequestId",
            expected: "a string",
        }),
    }
}

fn parse_set_client(object: &mut Map<String, Value>) -> Result<SetClient, CommandError> {
    let access_key_id = match object.remove("AwsAccessKeyId") {
        Some(Value::String(id)) => id,
        Some(_) => {
            return Err(CommandError::BadCredentials(
                "AwsAccessKeyId must be a string".into(),
            ));
        }
        None => {
            return Err(CommandError::BadCredentials(
                "AwsAccessKeyId is missing".into(),
            ));
        }
    };
    let secret_access_key = match object.remove("AwsSecretAccessKey") {
        Some(Value::String(secret)) => SecretString::new(secret),
        Some(_) => {
            return Err(CommandError::BadCredentials(
                "AwsSecretAccessKey must be a string".into(),
            ));
        }
        None => {
            return Err(CommandError::BadCredentials(
                "AwsSecretAccessKey is missing".into(),
            ));
        }
    };
    let session_token = match object.remove("AwsSessionToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(SecretString::new(token)),
        Some(_) => {
            return Err(CommandError::BadCredentials(
                "AwsSessionToken must be a string".into(),
            ));
        }
    };
    let region = match object.remove("AwsRegion") {
        None | Some(Value::Null) => None,
        Some(Value::String(region)) => Some(region),
        Some(_) => return Err(CommandError::BadRegion("AwsRegion must be a string".into())),
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
    check(&credentials.access_key_id, "AwsAccessKeyId", 128)?;
    check(
        credentials.secret_access_key.expose(),
        "AwsSecretAccessKey",
        256,
    )?;
    if let Some(token) = &credentials.session_token {
        check(token.expose(), "AwsSessionToken", 8192)?;
    }
    Ok(())
}

fn parse_decrypt(object: &mut Map<String, Value>) -> Result<Decrypt, CommandError> {
    let ciphertext = match object.get("Ciphertext") {
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
            field: "Ciphertext",
            reason: format!("must decode to 1 to {MAX_CIPHERTEXT_BYTES} bytes"),
        });
    }
    let encryption_algorithm = match object.get("EncryptionAlgorithm") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            Some(EncryptionAlgorithm::from_wire(name).ok_or_else(|| {
                CommandError::DecryptParameter {
                    field: "EncryptionAlgorithm",
                    reason: "must be SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256"
                        .into(),
                }
            })?)
        }
        Some(_) => {
            return Err(CommandError::WrongType {
                field: "EncryptionAlgorithm",
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
    let key_id = parse_key_id(object)?.ok_or(CommandError::MissingField("KeyId"))?;
    let key_spec = match object.get("KeySpec") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            Some(
                KeySpec::from_wire(name).ok_or_else(|| CommandError::InvalidValue {
                    field: "KeySpec",
                    reason: "must be AES_256 or AES_128".into(),
                })?,
            )
        }
        Some(_) => {
            return Err(CommandError::WrongType {
                field: "KeySpec",
                expected: "a string",
            });
        }
    };
    let size = match (key_spec, parse_number_of_bytes(object)?) {
        (Some(_), Some(_)) => {
            return Err(CommandError::InvalidValue {
                field: "KeySpec",
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
    })
}

fn parse_generate_random(object: &mut Map<String, Value>) -> Result<GenerateRandom, CommandError> {
    let number_of_bytes =
        parse_number_of_bytes(object)?.ok_or(CommandError::MissingField("NumberOfBytes"))?;
    Ok(GenerateRandom { number_of_bytes })
}

fn parse_number_of_bytes(object: &Map<String, Value>) -> Result<Option<u32>, CommandError> {
    match object.get("NumberOfBytes") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n @ 1..=1024) => Ok(Some(n as u32)),
            _ => Err(CommandError::InvalidValue {
                field: "NumberOfBytes",
                reason: format!("must be an integer from 1 to {MAX_NUMBER_OF_BYTES}"),
            }),
        },
        Some(_) => Err(CommandError::WrongType {
            field: "NumberOfBytes",
            expected: "an integer",
        }),
    }
}

fn parse_key_id(object: &Map<String, Value>) -> Result<Option<String>, CommandError> {
    match object.get("KeyId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if !id.is_empty() && id.chars().count() <= MAX_KEY_ID_CHARS => {
            Ok(Some(id.clone()))
        }
        Some(Value::String(_)) => Err(CommandError::InvalidValue {
            field: "KeyId",
            reason: format!("must be 1 to {MAX_KEY_ID_CHARS} characters"),
        }),
        Some(_) => Err(CommandError::WrongType {
            field: "KeyId",
            expected: "a string",
        }),
    }
}

fn parse_encryption_context(
    object: &Map<String, Value>,
) -> Result<EncryptionContext, CommandError> {
    const EXPECTED: &str = "an object whose values are strings";
    match object.get("EncryptionContext") {
        None | Some(Value::Null) => Ok(EncryptionContext::new()),
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => Ok((key.clone(), text.clone())),
                _ => Err(CommandError::WrongType {
                    field: "EncryptionContext",
                    expected: EXPECTED,
                }),
            })
            .collect(),
        Some(_) => Err(CommandError::WrongType {
            field: "EncryptionContext",
            expected: EXPECTED,
        }),
    }
}

fn parse_grant_tokens(object: &Map<String, Value>) -> Result<Vec<String>, CommandError> {
    const EXPECTED: &str = "an array of strings";
    match object.get("GrantTokens") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= MAX_GRANT_TOKENS => items
            .iter()
            .map(|item| match item {
                Value::String(token) if !token.is_empty() => Ok(token.clone()),
                _ => Err(CommandError::WrongType {
                    field: "GrantTokens",
                    expected: EXPECTED,
                }),
            })
            .collect(),
        Some(Value::Array(_)) => Err(CommandError::InvalidValue {
            field: "GrantTokens",
            reason: format!("must hold at most {MAX_GRANT_TOKENS} tokens"),
        }),
        Some(_) => Err(CommandError::WrongType {
            field: "GrantTokens",
            expected: EXPECTED,
        }),
    }
}

/// Standard alphabet, padding required, non-canonical trailing bits rejected.
const STANDARD_STRICT: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
