//! The operations, in KMS's JSON 1.1 protocol with KMS's member names (AWS KMS API Reference:
//! CreateKey, CreateAlias, DescribeKey, ListKeys, Encrypt, Decrypt, GenerateDataKey,
//! GenerateDataKeyPair, GenerateRandom, GetPublicKey, DeriveSharedSecret). Requests are parsed
//! into typed structs at the edge; unknown members are ignored, as KMS ignores them.
//!
//! `DryRun` (GenerateDataKeyPair, DeriveSharedSecret): the request is checked as far as it
//! would be without it, then answered with `DryRunOperationException` (API Reference,
//! DryRunOperationException) and no key material. The older operations ignore `DryRun`.

use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::asymmetric::{self, KeyPairSpec, KeyUsage};
use super::clock::epoch_seconds;
use super::credentials::SimCredentials;
use super::error::KmsError;
use super::keystore::{
    EncryptionContext, KeyMetadata, Keystore, MAX_CIPHERTEXT, MAX_PLAINTEXT, random_bytes,
};
use super::recipient::{self, AttestationPolicy, AttestationVerifier, Recipient, RecipientParam};

/// The only encryption algorithm of symmetric keys.
const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
/// Largest `NumberOfBytes` of GenerateDataKey and GenerateRandom.
pub const MAX_RANDOM_BYTES: u32 = 1024;

/// The operations the emulator implements, named as in `X-Amz-Target: TrentService.<Op>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// `CreateKey`.
    CreateKey,
    /// `CreateAlias`.
    CreateAlias,
    /// `DescribeKey`.
    DescribeKey,
    /// `ListKeys`.
    ListKeys,
    /// `Encrypt`.
    Encrypt,
    /// `Decrypt`.
    Decrypt,
    /// `GenerateDataKey`.
    GenerateDataKey,
    /// `GenerateRandom`.
    GenerateRandom,
    /// `GetPublicKey`.
    GetPublicKey,
    /// `GenerateDataKeyPair`.
    GenerateDataKeyPair,
    /// `DeriveSharedSecret`.
    DeriveSharedSecret,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 11] = [
        Self::CreateKey,
        Self::CreateAlias,
        Self::DescribeKey,
        Self::ListKeys,
        Self::Encrypt,
        Self::Decrypt,
        Self::GenerateDataKey,
        Self::GenerateRandom,
        Self::GetPublicKey,
        Self::GenerateDataKeyPair,
        Self::DeriveSharedSecret,
    ];

    /// The operation's name, e.g. `Decrypt`.
    pub fn name(self) -> &'static str {
        match self {
            Self::CreateKey => "CreateKey",
            Self::CreateAlias => "CreateAlias",
            Self::DescribeKey => "DescribeKey",
            Self::ListKeys => "ListKeys",
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
            Self::GenerateDataKey => "GenerateDataKey",
            Self::GenerateRandom => "GenerateRandom",
            Self::GetPublicKey => "GetPublicKey",
            Self::GenerateDataKeyPair => "GenerateDataKeyPair",
            Self::DeriveSharedSecret => "DeriveSharedSecret",
        }
    }

    /// The operation an `X-Amz-Target` value names.
    pub fn from_target(target: &str) -> Option<Self> {
        let name = target.strip_prefix("TrentService.")?;
        Self::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// What an operation runs against.
#[derive(Debug)]
pub struct Context<'a> {
    /// The keys.
    pub keystore: &'a Mutex<Keystore>,
    /// Checks `Recipient` documents; `None` rejects every `Recipient`.
    pub verifier: Option<&'a dyn AttestationVerifier>,
    /// The key policy's attestation condition.
    pub policy: AttestationPolicy<'a>,
    /// Who signed the request.
    pub principal: &'a SimCredentials,
    /// The emulator's time.
    pub now: SystemTime,
}

/// Runs one operation on a JSON body and returns the JSON answer.
pub fn handle(op: Operation, body: &[u8], ctx: &Context<'_>) -> Result<Vec<u8>, KmsError> {
    match op {
        Operation::CreateKey => create_key(parse(op, body)?, ctx),
        Operation::CreateAlias => create_alias(parse(op, body)?, ctx),
        Operation::DescribeKey => describe_key(parse(op, body)?, ctx),
        Operation::ListKeys => list_keys(ctx),
        Operation::Encrypt => encrypt(parse(op, body)?, ctx),
        Operation::Decrypt => decrypt(parse(op, body)?, ctx),
        Operation::GenerateDataKey => generate_data_key(parse(op, body)?, ctx),
        Operation::GenerateRandom => generate_random(parse(op, body)?, ctx),
        Operation::GetPublicKey => get_public_key(parse(op, body)?, ctx),
        Operation::GenerateDataKeyPair => generate_data_key_pair(parse(op, body)?, ctx),
        Operation::DeriveSharedSecret => derive_shared_secret(parse(op, body)?, ctx),
    }
}

fn parse<T: DeserializeOwned>(op: Operation, body: &[u8]) -> Result<T, KmsError> {
    // An empty body is an empty input structure, as with KMS.
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    // serde's text can quote values (secrets among them), so the answer does not repeat it.
    serde_json::from_slice(body).map_err(|_| {
        KmsError::serialization(format!(
            "The request body is not a valid TrentService.{} input.",
            op.name()
        ))
    })
}

/// Decodes a base64 blob member; `member` names it in the error as KMS does.
pub fn decode_blob(encoded: &str, member: &str) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    STANDARD
        .decode(encoded)
        .map(Zeroizing::new)
        .map_err(|_| KmsError::serialization(format!("Invalid base64 in '{member}'.")))
}

fn required<'a>(value: &'a Option<String>, member: &str) -> Result<&'a str, KmsError> {
    value.as_deref().ok_or_else(|| {
        KmsError::validation(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy \
             constraint: Member must not be null"
        ))
    })
}

fn keystore<'a>(ctx: &'a Context<'_>) -> Result<std::sync::MutexGuard<'a, Keystore>, KmsError> {
    ctx.keystore.lock().map_err(|_| KmsError::internal())
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, KmsError> {
    serde_json::to_vec(value).map_err(|_| KmsError::internal())
}

fn check_symmetric(algorithm: &Option<String>) -> Result<(), KmsError> {
    match algorithm.as_deref() {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(other @ ("RSAES_OAEP_SHA_1" | "RSAES_OAEP_SHA_256" | "SM2PKE")) => {
            Err(KmsError::invalid_key_usage(format!(
                "The encryption algorithm {other} is not compatible with a symmetric key."
            )))
        }
        Some(other) => Err(KmsError::constraint(
            other,
            "encryptionAlgorithm",
            "Member must satisfy enum value set: [SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1, \
             RSAES_OAEP_SHA_256, SM2PKE]",
        )),
    }
}

fn accept_recipient(
    param: Option<&RecipientParam>,
    ctx: &Context<'_>,
) -> Result<Option<Recipient>, KmsError> {
    param
        .map(|p| recipient::accept(p, ctx.verifier, ctx.now))
        .transpose()
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadataJson<'a> {
    #[serde(rename = "AWSAccountId")]
    aws_account_id: &'a str,
    key_id: &'a str,
    arn: &'a str,
    creation_date: f64,
    enabled: bool,
    description: &'a str,
    key_usage: &'static str,
    key_state: &'static str,
    origin: &'static str,
    key_manager: &'static str,
    customer_master_key_spec: &'static str,
    key_spec: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_algorithms: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_agreement_algorithms: Option<[&'static str; 1]>,
    multi_region: bool,
}

/// The only key agreement algorithm (API Reference, DeriveSharedSecret,
/// `KeyAgreementAlgorithm`: "The only valid value is ECDH").
const ECDH: &str = "ECDH";

/// `EncryptionAlgorithms` and `KeyAgreementAlgorithms` of a key: KMS lists the first only for
/// `ENCRYPT_DECRYPT` keys and the second only for `KEY_AGREEMENT` keys (API Reference,
/// KeyMetadata and GetPublicKey).
type Algorithms = (Option<[&'static str; 1]>, Option<[&'static str; 1]>);

fn algorithms(meta: &KeyMetadata) -> Algorithms {
    match meta.key_usage {
        KeyUsage::EncryptDecrypt => (Some([SYMMETRIC_DEFAULT]), None),
        KeyUsage::KeyAgreement => (None, Some([ECDH])),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadataOutput<'a> {
    key_metadata: KeyMetadataJson<'a>,
}

fn metadata_json(meta: &KeyMetadata) -> KeyMetadataOutput<'_> {
    let (encryption_algorithms, key_agreement_algorithms) = algorithms(meta);
    KeyMetadataOutput {
        key_metadata: KeyMetadataJson {
            aws_account_id: &meta.account_id,
            key_id: &meta.key_id,
            arn: &meta.arn,
            creation_date: epoch_seconds(meta.creation_date),
            enabled: true,
            description: &meta.description,
            key_usage: meta.key_usage.name(),
            key_state: "Enabled",
            origin: "AWS_KMS",
            key_manager: "CUSTOMER",
            customer_master_key_spec: meta.key_spec.name(),
            key_spec: meta.key_spec.name(),
            encryption_algorithms,
            key_agreement_algorithms,
            multi_region: false,
        },
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateKeyInput {
    description: Option<String>,
    key_usage: Option<String>,
    key_spec: Option<String>,
    customer_master_key_spec: Option<String>,
}

fn create_key(input: CreateKeyInput, ctx: &Context<'_>) -> Result<Vec<u8>, KmsError> {
    // `CustomerMasterKeySpec` is the deprecated name of `KeySpec` (API Reference, CreateKey).
    let spec = input.key_spec.or(input.customer_master_key_spec);
    let (spec, usage) = asymmetric::create_key_spec(spec.as_deref(), input.key_usage.as_deref())?;
    let description = input.description.unwrap_or_default();
    let meta = keystore(ctx)?.create_key_of(&description, spec, usage, ctx.now)?;
    to_json(&metadata_json(&meta))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateAliasInput {
    alias_name: Option<String>,
    target_key_id: Option<String>,
}

fn create_alias(input: CreateAliasInput, ctx: &Context<'_>) -> Result<Vec<u8>, KmsError> {
    let alias = required(&input.alias_name, "aliasName")?;
    let target = required(&input.target_key_id, "targetKeyId")?;
    keystore(ctx)?.create_alias(alias, target)?;
    // CreateAlias has no output members: KMS answers 200 with an empty body.
    Ok(Vec::new())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdInput {
    key_id: Option<String>,
}

fn describe_key(input: KeyIdInput, ctx: &Context<'_>) -> Result<Vec<u8>, KmsError> {
    let key_id = required(&input.key_id, "keyId")?;
    let store = keystore(ctx)?;
    to_json(&metadata_json(store.describe(key_id)?))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyListEntry<'a> {
    key_arn: &'a str,
    key_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListKeysOutput<'a> {
    keys: Vec<KeyListEntry<'a>>,
    truncated: bool,
}

fn list_keys(ctx: &Context<'_>) -> Result<Vec<u8>, KmsError> {
    let store = keystore(ctx)?;
    let keys = store
        .list()
        .map(|m| KeyListEntry {
            key_arn: &m.arn,
            key_id: &m.key_id,
        })
        .collect();
    to_json(&ListKeysOutput {
        keys,
        truncated: false,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptInput {
    key_id: Option<String>,
    plaintext: Option<String>,
    #[serde(default)]
    encryption_context: EncryptionContext,
    encryption_algorithm: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptOutput<'a> {
    ciphertext_blob: String,
    key_id: &'a str,
    encryption_algorithm: &'static str,
}

fn encrypt(input: EncryptInput, ctx: &Context<'_>) -> Result<Vec<u8>, KmsError> {
    let key_id = required(&input.key_id, "keyId")?;
    let plaintext = decode_blob(required(&input.plaintext, "plaintext")?, "plaintext")?;
    if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
        return Err(KmsError::constraint(
            "[sensitive]",
            "plaintext",
            "Member must have length between 1 and 4096",
        ));
    }
    check_symmetric(&input.encryption_algorithm)?;
    let (meta, blob) = keystore(ctx)?.encrypt(key_id, &plaintext, &input.encryption_context)?;
    to_json(&EncryptOutput {
        ciphertext_blob: STANDARD.encode(blob),
        key_id: &meta.arn,
        encryption_algorithm: SYMMETRIC_DEFAULT,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptInput {
    ciphertext_blob: Option<String>,
    #[serde(default)]
    encryption_context: EncryptionContext,
    key_id: Option<String>,
    encryption_algorithm: Option<String>,
    recipient: Option<RecipientParam>,
}

/// The answer of Decrypt, GenerateDataKey and GenerateRandom: key material either in
/// `Plaintext` or, for an attested caller, only in `CiphertextForRecipient`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMaterialOutput<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_blob: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_for_recipient: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_algorithm: Option<&'static str>,
}

/// Puts key material in `Plaintext`, or seals it for the recipient and leaves `Plaintext` out.
fn deliver(
    material: &[u8],
    recipient: Option<&Recipient>,
) -> Result<(Option<Zeroizing<String>>, Option<String>), KmsError> {
    match recipient {
        Some(r) => Ok((None, Some(STANDARD.encode(recipient::seal(r, material)?)))),
        None => Ok((Some(Zeroizing::new(STANDARD.encode(material))), None)),
    }
}

fn decrypt(input: DecryptInput, ctx: &Context<'_>) -> Result<Vec<u8>, KmsError> {
    let blob = decode_blob(
        required(&input.ciphertext_blob, "ciphertextBlob")?,
        "ciphertextBlob",
    )?;
    if blob.is_empty() || blob.len() > MAX_CIPHERTEXT {
        return Err(KmsError::constraint(
            "[binary]",
            "ciphertextBlob",
            "Member must have length between 1 and 6144",
        ));
    }
    check_symmetric(&input.encryption_algorithm)?;
    let recipient = accept_recipient(input.recipient.as_ref(), ctx)?;
    let store = keystore(ctx)?;
    let owner = store.blob_key(&blob)?;
    ctx.policy.check(
        recipient.as_ref(),
        &ctx.principal.principal_arn,
        "Decrypt",
        Some(&owner.arn),
    )?;
    let (meta, plaintext) =
        store.decrypt(&blob, &input.encryption_context, input.key_id.as_deref())?;
    drop(store);
    let (plaintext, for_recipient) = deliver(&plaintext, recipient.as_ref())?;
    to_json(&KeyMaterialOutput {
        ciphertext_blob: None,
        key_id: Some(&meta.arn),
        plaintext: plaintext.as_deref().map(String::as_str),
        ciphertext_for_recipient: for_recipient,
        encryption_algorithm: Some(SYMMETRIC_DEFAULT),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyInput {
    key_id: Option<String>,
    #[serde(default)]
    encryption_context: EncryptionContext,
    number_of_bytes: Option<i64>,
    key_spec: Option<String>,
    recipient: Option<RecipientParam>,
}

fn number_of_bytes(value: i64) -> Result<usize, KmsError> {
    if value < 1 {
        return Err(KmsError::constraint(
            &value.to_string(),
            "numberOfBytes",
            "Member must have value greater than or equal to 1",
        ));
    }
    if value > i64::from(MAX_RANDOM_BYTES) {
        return Err(KmsError::constraint(
            &value.to_string(),
            "numberOfBytes",
            "Member must have value less than or equal to 1024",
        ));
    }
    usize::try_from(value).map_err(|_| KmsError::internal())
}

fn data_key_length(input: &GenerateDataKeyInput) -> Result<usize, KmsError> {
    match (input.key_spec.as_deref(), input.number_of_bytes) {
        (Some("AES_256"), None) => Ok(32),
        (Some("AES_128"), None) => Ok(16),
        (Some(other), None) => Err(KmsError::constraint(
            other,
            "keySpec",
            "Member must satisfy enum value set: [AES_256, AES_128]",
        )),
        (None, Some(n)) => number_of_bytes(n),
        (Some(_), Some(_)) | (None, None) => Err(KmsError::validation(
            "Please specify either number of bytes or key spec.",
        )),
    }
}

fn generate_data_key(input: GenerateDataKeyInput, ctx: &Context<'_>) -> Result<Vec<u8>, KmsError> {
    let key_id = required(&input.key_id, "keyId")?;
    let length = data_key_length(&input)?;
    let recipient = accept_recipient(input.recipient.as_ref(), ctx)?;
    let store = keystore(ctx)?;
    let arn = store.describe(key_id)?.arn.clone();
    ctx.policy.check(
        recipient.as_ref(),
        &ctx.principal.principal_arn,
        "GenerateDataKey",
        Some(&arn),
    )?;
    let data_key = random_bytes(length);
    let (meta, blob) = store.encrypt_for(
        "GenerateDataKey",
        key_id,
        &data_key,
        &input.encryption_context,
    )?;
    drop(store);
    let (plaintext, for_recipient) = deliver(&data_key, recipient.as_ref())?;
    to_json(&KeyMaterialOutput {
        ciphertext_blob: Some(STANDARD.encode(blob)),
        key_id: Some(&meta.arn),
        plaintext: plaintext.as_deref().map(String::as_str),
        ciphertext_for_recipient: for_recipient,
        encryption_algorithm: None,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateRandomInput {
    number_of_bytes: Option<i64>,
    recipient: Option<RecipientParam>,
}

fn generate_random(input: GenerateRandomInput, ctx: &Context<'_>) -> Result<Vec<u8>, KmsError> {
    let length = match input.number_of_bytes {
        Some(n) => number_of_bytes(n)?,
        None => return Err(KmsError::validation("NumberOfBytes is required.")),
    };
    let recipient = accept_recipient(input.recipient.as_ref(), ctx)?;
    ctx.policy.check(
        recipient.as_ref(),
        &ctx.principal.principal_arn,
        "GenerateRandom",
        None,
    )?;
    let random = random_bytes(length);
    let (plaintext, for_recipient) = deliver(&random, recipient.as_ref())?;
    to_json(&KeyMaterialOutput {
        ciphertext_blob: None,
        key_id: None,
        plaintext: plaintext.as_deref().map(String::as_str),
        ciphertext_for_recipient: for_recipient,
        encryption_algorithm: None,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetPublicKeyOutput<'a> {
    key_id: &'a str,
    public_key: String,
    customer_master_key_spec: &'static str,
    key_spec: &'static str,
    key_usage: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_algorithms: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_agreement_algorithms: Option<[&'static str; 1]>,
}

fn get_public_key(input: KeyIdInput, ctx: &Context<'_>) -> Result<Vec<u8>, KmsError> {
    let key_id = required(&input.key_id, "keyId")?;
    let store = keystore(ctx)?;
    let (meta, public_key) = store.public_key(key_id)?;
    let (encryption_algorithms, key_agreement_algorithms) = algorithms(meta);
    to_json(&GetPublicKeyOutput {
        key_id: &meta.arn,
        public_key: STANDARD.encode(public_key),
        customer_master_key_spec: meta.key_spec.name(),
        key_spec: meta.key_spec.name(),
        key_usage: meta.key_usage.name(),
        encryption_algorithms,
        key_agreement_algorithms,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyPairInput {
    key_id: Option<String>,
    key_pair_spec: Option<String>,
    #[serde(default)]
    encryption_context: EncryptionContext,
    #[serde(default)]
    dry_run: bool,
    recipient: Option<RecipientParam>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyPairOutput<'a> {
    private_key_ciphertext_blob: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_plaintext: Option<&'a str>,
    public_key: String,
    key_id: &'a str,
    key_pair_spec: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_for_recipient: Option<String>,
}

/// GenerateDataKeyPair: a fresh pair, the PKCS#8 private key encrypted under a symmetric
/// `ENCRYPT_DECRYPT` key as Encrypt would (so Decrypt of `PrivateKeyCiphertextBlob` with the
/// same context gives the PKCS#8 back), and the PKCS#8 in `PrivateKeyPlaintext` or, for an
/// attested caller, only in `CiphertextForRecipient` (API Reference, GenerateDataKeyPair).
fn generate_data_key_pair(
    input: GenerateDataKeyPairInput,
    ctx: &Context<'_>,
) -> Result<Vec<u8>, KmsError> {
    let key_id = required(&input.key_id, "keyId")?;
    let spec = KeyPairSpec::parse(required(&input.key_pair_spec, "keyPairSpec")?)?;
    let recipient = accept_recipient(input.recipient.as_ref(), ctx)?;
    let arn = keystore(ctx)?
        .usable_for(key_id, KeyUsage::EncryptDecrypt, "GenerateDataKeyPair")?
        .arn
        .clone();
    ctx.policy.check(
        recipient.as_ref(),
        &ctx.principal.principal_arn,
        "GenerateDataKeyPair",
        Some(&arn),
    )?;
    if input.dry_run {
        return Err(KmsError::dry_run());
    }
    // Outside the keystore's lock: an RSA-4096 pair takes a while.
    let pair = asymmetric::generate_data_key_pair(spec)?;
    let (meta, blob) = keystore(ctx)?.encrypt_for(
        "GenerateDataKeyPair",
        key_id,
        &pair.private_key,
        &input.encryption_context,
    )?;
    let (plaintext, for_recipient) = deliver(&pair.private_key, recipient.as_ref())?;
    to_json(&GenerateDataKeyPairOutput {
        private_key_ciphertext_blob: STANDARD.encode(blob),
        private_key_plaintext: plaintext.as_deref().map(String::as_str),
        public_key: STANDARD.encode(&pair.public_key),
        key_id: &meta.arn,
        key_pair_spec: spec.name(),
        ciphertext_for_recipient: for_recipient,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeriveSharedSecretInput {
    key_id: Option<String>,
    key_agreement_algorithm: Option<String>,
    public_key: Option<String>,
    #[serde(default)]
    dry_run: bool,
    recipient: Option<RecipientParam>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeriveSharedSecretOutput<'a> {
    key_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_for_recipient: Option<String>,
    key_agreement_algorithm: &'static str,
    key_origin: &'static str,
}

/// Largest `PublicKey` of DeriveSharedSecret (API Reference: length 1 to 8192).
const MAX_PEER_PUBLIC_KEY: usize = 8192;

/// DeriveSharedSecret: ECDH between a `KEY_AGREEMENT` key's private key and the peer's public
/// key; the raw secret in `SharedSecret` or, for an attested caller, only in
/// `CiphertextForRecipient` (API Reference, DeriveSharedSecret).
fn derive_shared_secret(
    input: DeriveSharedSecretInput,
    ctx: &Context<'_>,
) -> Result<Vec<u8>, KmsError> {
    let key_id = required(&input.key_id, "keyId")?;
    let algorithm = required(&input.key_agreement_algorithm, "keyAgreementAlgorithm")?;
    if algorithm != ECDH {
        return Err(KmsError::constraint(
            algorithm,
            "keyAgreementAlgorithm",
            "Member must satisfy enum value set: [ECDH]",
        ));
    }
    let peer = decode_blob(required(&input.public_key, "publicKey")?, "publicKey")?;
    if peer.is_empty() || peer.len() > MAX_PEER_PUBLIC_KEY {
        return Err(KmsError::constraint(
            "[binary]",
            "publicKey",
            "Member must have length between 1 and 8192",
        ));
    }
    let recipient = accept_recipient(input.recipient.as_ref(), ctx)?;
    let store = keystore(ctx)?;
    let arn = store
        .usable_for(key_id, KeyUsage::KeyAgreement, "DeriveSharedSecret")?
        .arn
        .clone();
    ctx.policy.check(
        recipient.as_ref(),
        &ctx.principal.principal_arn,
        "DeriveSharedSecret",
        Some(&arn),
    )?;
    // The public key is checked (by deriving) before a dry run answers.
    let (meta, secret) = store.derive_shared_secret(key_id, &peer)?;
    drop(store);
    if input.dry_run {
        return Err(KmsError::dry_run());
    }
    let (plaintext, for_recipient) = deliver(&secret, recipient.as_ref())?;
    to_json(&DeriveSharedSecretOutput {
        key_id: &meta.arn,
        shared_secret: plaintext.as_deref().map(String::as_str),
        ciphertext_for_recipient: for_recipient,
        key_agreement_algorithm: ECDH,
        key_origin: "AWS_KMS",
    })
}
