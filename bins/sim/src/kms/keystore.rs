//! KMS keys (symmetric ones and ECDH `KEY_AGREEMENT` ones), their aliases, and the emulator's
//! ciphertext blobs.
//!
//! A key is 32 random bytes used with AES-256-GCM. A ciphertext blob is
//! `01 02 02 00 | key id (16 bytes) | nonce (12) | AES-GCM ciphertext and tag`, with the key's
//! ARN and the encryption context bound in as additional authenticated data — so, as with real
//! KMS, decrypting with any other context fails with `InvalidCiphertextException`.
//! (Only the first four bytes look like real KMS blobs; the layout is the emulator's own.)

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::asymmetric::{AgreementKey, KeySpec, KeyUsage};
use super::error::KmsError;

/// The encryption context of a request: string keys to string values.
pub type EncryptionContext = BTreeMap<String, String>;

/// Largest plaintext `Encrypt` takes (API Reference, Encrypt: "Length Constraints: Minimum
/// length of 1. Maximum length of 4096").
pub const MAX_PLAINTEXT: usize = 4096;
/// Largest `CiphertextBlob` (API Reference, Decrypt: maximum length 6144).
pub const MAX_CIPHERTEXT: usize = 6144;

const BLOB_MAGIC: [u8; 4] = [0x01, 0x02, 0x02, 0x00];
const KEY_ID_LEN: usize = 16;
const TAG_LEN: usize = 16;
const AAD_LABEL: &[u8] = b"kmstool-sim ciphertext v1\0";

/// What `DescribeKey` tells about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata {
    /// The key id, a UUID.
    pub key_id: String,
    /// `arn:aws:kms:<region>:<account>:key/<key id>`.
    pub arn: String,
    /// The account owning the key.
    pub account_id: String,
    /// Free text given at creation.
    pub description: String,
    /// When it was created.
    pub creation_date: SystemTime,
    /// `KeySpec`.
    pub key_spec: KeySpec,
    /// `KeyUsage`.
    pub key_usage: KeyUsage,
}

struct Key {
    metadata: KeyMetadata,
    material: Material,
}

/// What a key holds; neither kind shows in `Debug` (there is none).
enum Material {
    /// A `SYMMETRIC_DEFAULT` key: 32 bytes for AES-256-GCM.
    Symmetric(Zeroizing<[u8; 32]>),
    /// A `KEY_AGREEMENT` key pair.
    Agreement(AgreementKey),
}

/// All keys and aliases of one emulated account in one region.
pub struct Keystore {
    region: String,
    account_id: String,
    keys: BTreeMap<[u8; KEY_ID_LEN], Key>,
    aliases: BTreeMap<String, [u8; KEY_ID_LEN]>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("region", &self.region)
            .field("account_id", &self.account_id)
            .field("keys", &self.keys.len())
            .field("aliases", &self.aliases.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keystore {
    /// An empty keystore.
    pub fn new(region: &str, account_id: &str) -> Self {
        Self {
            region: region.to_owned(),
            account_id: account_id.to_owned(),
            keys: BTreeMap::new(),
            aliases: BTreeMap::new(),
        }
    }

    /// Creates a `SYMMETRIC_DEFAULT` key with fresh random material.
    pub fn create_key(&mut self, description: &str, now: SystemTime) -> KeyMetadata {
        let mut material = Zeroizing::new([0u8; 32]);
        fill_random(material.as_mut());
        self.insert(
            description,
            now,
            KeySpec::SymmetricDefault,
            KeyUsage::EncryptDecrypt,
            Material::Symmetric(material),
        )
    }

    /// Creates a key of `spec` and `usage` (a pair [`super::asymmetric::create_key_spec`]
    /// accepted) with fresh material.
    pub fn create_key_of(
        &mut self,
        description: &str,
        spec: KeySpec,
        usage: KeyUsage,
        now: SystemTime,
    ) -> Result<KeyMetadata, KmsError> {
        match (spec, usage) {
            (KeySpec::SymmetricDefault, KeyUsage::EncryptDecrypt) => {
                Ok(self.create_key(description, now))
            }
            (KeySpec::EccNistP256 | KeySpec::EccNistP384 | KeySpec::EccNistP521, _) => {
                let key = AgreementKey::generate(spec)?;
                Ok(self.insert(
                    description,
                    now,
                    spec,
                    KeyUsage::KeyAgreement,
                    Material::Agreement(key),
                ))
            }
            (KeySpec::SymmetricDefault, KeyUsage::KeyAgreement) => Err(KmsError::validation(
                "KeyUsage KEY_AGREEMENT is not compatible with KeySpec SYMMETRIC_DEFAULT",
            )),
        }
    }

    fn insert(
        &mut self,
        description: &str,
        now: SystemTime,
        key_spec: KeySpec,
        key_usage: KeyUsage,
        material: Material,
    ) -> KeyMetadata {
        let mut id = [0u8; KEY_ID_LEN];
        fill_random(&mut id);
        // A version-4 UUID, as KMS key ids are.
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        let key_id = format_uuid(&id);
        let metadata = KeyMetadata {
            arn: self.arn("key", &key_id),
            key_id,
            account_id: self.account_id.clone(),
            description: description.to_owned(),
            creation_date: now,
            key_spec,
            key_usage,
        };
        self.keys.insert(
            id,
            Key {
                metadata: metadata.clone(),
                material,
            },
        );
        metadata
    }

    /// The public key (DER SPKI) of an asymmetric key, as `GetPublicKey` returns it; a
    /// symmetric key has none (`UnsupportedOperationException`, API Reference, GetPublicKey:
    /// "The request was rejected because a specified parameter is not supported or a
    /// specified resource is not valid for this operation").
    pub fn public_key(&self, key_id: &str) -> Result<(&KeyMetadata, &[u8]), KmsError> {
        let key = self.key(key_id)?;
        match &key.material {
            Material::Agreement(pair) => Ok((&key.metadata, pair.public_key())),
            Material::Symmetric(_) => Err(KmsError::unsupported_operation(
                "The request was rejected because a specified parameter is not supported or a \
                 specified resource is not valid for this operation.",
            )),
        }
    }

    /// ECDH between a `KEY_AGREEMENT` key and the peer's public key (DER SPKI), as
    /// `DeriveSharedSecret` does. Any other key is an `InvalidKeyUsageException` in KMS's
    /// words (`<key ARN> key usage is <usage> which is not valid for <operation>.`).
    pub fn derive_shared_secret(
        &self,
        key_id: &str,
        peer_spki: &[u8],
    ) -> Result<(KeyMetadata, Zeroizing<Vec<u8>>), KmsError> {
        let key = self.key(key_id)?;
        match &key.material {
            Material::Agreement(pair) => Ok((key.metadata.clone(), pair.derive(peer_spki)?)),
            Material::Symmetric(_) => Err(wrong_usage(&key.metadata, "DeriveSharedSecret")),
        }
    }

    /// The metadata of a key whose `KeyUsage` is `usage`; another key is an
    /// `InvalidKeyUsageException` naming `operation`.
    pub fn usable_for(
        &self,
        key_id: &str,
        usage: KeyUsage,
        operation: &str,
    ) -> Result<&KeyMetadata, KmsError> {
        let key = self.key(key_id)?;
        if key.metadata.key_usage == usage {
            Ok(&key.metadata)
        } else {
            Err(wrong_usage(&key.metadata, operation))
        }
    }

    fn key(&self, key_id: &str) -> Result<&Key, KmsError> {
        let id = self.resolve(key_id)?;
        self.keys
            .get(&id)
            .ok_or_else(|| self.key_not_found(&format_uuid(&id)))
    }

    /// Points `alias/<name>` at a key (`CreateAlias`).
    pub fn create_alias(&mut self, alias: &str, target: &str) -> Result<(), KmsError> {
        let valid = alias.strip_prefix("alias/").is_some_and(|name| {
            !name.is_empty()
                && !name.starts_with("aws/")
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
        });
        if !valid {
            return Err(KmsError::constraint(
                alias,
                "aliasName",
                "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
            ));
        }
        let id = self.resolve(target)?;
        if self.aliases.contains_key(alias) {
            return Err(KmsError::already_exists(format!(
                "An alias with the name {} already exists",
                self.arn("alias", alias.trim_start_matches("alias/"))
            )));
        }
        self.aliases.insert(alias.to_owned(), id);
        Ok(())
    }

    /// The metadata of the key `key_id` names (id, ARN, alias or alias ARN).
    pub fn describe(&self, key_id: &str) -> Result<&KeyMetadata, KmsError> {
        let id = self.resolve(key_id)?;
        self.keys
            .get(&id)
            .map(|k| &k.metadata)
            .ok_or_else(|| self.key_not_found(&format_uuid(&id)))
    }

    /// Every key, in id order.
    pub fn list(&self) -> impl Iterator<Item = &KeyMetadata> {
        self.keys.values().map(|k| &k.metadata)
    }

    /// Encrypts `plaintext` under a key, binding `context`; `operation` names the KMS
    /// operation in the `InvalidKeyUsageException` a key that is not `ENCRYPT_DECRYPT` gets.
    pub fn encrypt_for(
        &self,
        operation: &str,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<(KeyMetadata, Vec<u8>), KmsError> {
        let id = self.resolve(key_id)?;
        let key = self
            .keys
            .get(&id)
            .ok_or_else(|| self.key_not_found(&format_uuid(&id)))?;
        let Material::Symmetric(material) = &key.material else {
            return Err(wrong_usage(&key.metadata, operation));
        };
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut sealed = plaintext.to_vec();
        let aad = aad(&key.metadata.arn, context);
        gcm_key(material)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut sealed,
            )
            .map_err(|_| KmsError::internal())?;
        let mut blob = Vec::with_capacity(BLOB_MAGIC.len() + KEY_ID_LEN + NONCE_LEN + sealed.len());
        blob.extend_from_slice(&BLOB_MAGIC);
        blob.extend_from_slice(&id);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok((key.metadata.clone(), blob))
    }

    /// Encrypts `plaintext` under a key, binding `context` (`Encrypt`).
    pub fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<(KeyMetadata, Vec<u8>), KmsError> {
        self.encrypt_for("Encrypt", key_id, plaintext, context)
    }

    /// The key a blob was made under (what KMS reads before it authorizes a Decrypt).
    pub fn blob_key(&self, blob: &[u8]) -> Result<&KeyMetadata, KmsError> {
        let (id, _, _) = split_blob(blob)?;
        self.keys
            .get(id)
            .map(|k| &k.metadata)
            .ok_or_else(unknown_blob_key)
    }

    /// Decrypts a blob made by [`Keystore::encrypt`] with the same context. With `key_id`,
    /// the blob must be under that key (`IncorrectKeyException` otherwise).
    pub fn decrypt(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        key_id: Option<&str>,
    ) -> Result<(KeyMetadata, Zeroizing<Vec<u8>>), KmsError> {
        let (id, nonce, sealed) = split_blob(blob)?;
        let key = self.keys.get(id).ok_or_else(unknown_blob_key)?;
        if let Some(requested) = key_id
            && self.resolve(requested)? != *id
        {
            return Err(KmsError::incorrect_key());
        }
        // Only symmetric keys make blobs, so a blob naming another key is not one of ours.
        let Material::Symmetric(material) = &key.material else {
            return Err(KmsError::invalid_ciphertext());
        };
        let mut opened = Zeroizing::new(sealed.to_vec());
        let aad = aad(&key.metadata.arn, context);
        let len = gcm_key(material)
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(&aad),
                opened.as_mut_slice(),
            )
            .map_err(|_| KmsError::invalid_ciphertext())?
            .len();
        opened.truncate(len);
        Ok((key.metadata.clone(), opened))
    }

    /// Resolves a key id, key ARN, `alias/<name>` or alias ARN to a key id.
    fn resolve(&self, key_id: &str) -> Result<[u8; KEY_ID_LEN], KmsError> {
        let arn_prefix = format!("arn:aws:kms:{}:{}:", self.region, self.account_id);
        let local = match key_id.strip_prefix(&arn_prefix) {
            Some(rest) => rest,
            None if key_id.starts_with("arn:") => {
                return Err(KmsError::not_found(format!("Invalid arn {key_id}")));
            }
            None => key_id,
        };
        if let Some(name) = local.strip_prefix("alias/") {
            return self.aliases.get(local).copied().ok_or_else(|| {
                KmsError::not_found(format!("Alias {} is not found.", self.arn("alias", name)))
            });
        }
        let uuid = local.strip_prefix("key/").unwrap_or(local);
        let id = parse_uuid(uuid)
            .ok_or_else(|| KmsError::not_found(format!("Invalid keyId '{key_id}'")))?;
        if self.keys.contains_key(&id) {
            Ok(id)
        } else {
            Err(self.key_not_found(uuid))
        }
    }

    fn key_not_found(&self, uuid: &str) -> KmsError {
        KmsError::not_found(format!("Key '{}' does not exist", self.arn("key", uuid)))
    }

    fn arn(&self, kind: &str, name: &str) -> String {
        format!(
            "arn:aws:kms:{}:{}:{kind}/{name}",
            self.region, self.account_id
        )
    }
}

/// A blob's parts: key id, nonce, sealed bytes.
type BlobParts<'a> = (&'a [u8; KEY_ID_LEN], &'a [u8; NONCE_LEN], &'a [u8]);

/// Splits a blob into key id, nonce and sealed bytes.
fn split_blob(blob: &[u8]) -> Result<BlobParts<'_>, KmsError> {
    let rest = blob
        .strip_prefix(BLOB_MAGIC.as_slice())
        .ok_or_else(KmsError::invalid_ciphertext)?;
    let (id, rest) = rest
        .split_first_chunk::<KEY_ID_LEN>()
        .ok_or_else(KmsError::invalid_ciphertext)?;
    let (nonce, sealed) = rest
        .split_first_chunk::<NONCE_LEN>()
        .ok_or_else(KmsError::invalid_ciphertext)?;
    if sealed.len() < TAG_LEN {
        return Err(KmsError::invalid_ciphertext());
    }
    Ok((id, nonce, sealed))
}

/// KMS's words for a key whose `KeyUsage` does not allow the operation: "<key ARN> key usage is
/// <usage> which is not valid for <operation>." (as KMS answers and local emulators such as
/// local-kms reproduce it; API Reference, InvalidKeyUsageException: "The KeyUsage value of the
/// KMS key is incompatible with the API operation").
fn wrong_usage(meta: &KeyMetadata, operation: &str) -> KmsError {
    KmsError::invalid_key_usage(format!(
        "{} key usage is {} which is not valid for {operation}.",
        meta.arn,
        meta.key_usage.name()
    ))
}

/// KMS's words for a blob whose key it cannot use.
fn unknown_blob_key() -> KmsError {
    KmsError::access_denied(
        "The ciphertext refers to a customer master key that does not exist, does not exist \
         in this region, or you are not allowed to access.",
    )
}

fn gcm_key(material: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is always valid for AES-256-GCM.
    match UnboundKey::new(&AES_256_GCM, material) {
        Ok(key) => LessSafeKey::new(key),
        Err(_) => unreachable!("AES-256-GCM takes 32-byte keys"),
    }
}

/// The additional authenticated data: a label, the key ARN, and the context as
/// length-prefixed key/value pairs in key order (so every context has one encoding).
fn aad(arn: &str, context: &EncryptionContext) -> Vec<u8> {
    let mut out = AAD_LABEL.to_vec();
    let mut field = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    field(arn.as_bytes());
    for (name, value) in context {
        field(name.as_bytes());
        field(value.as_bytes());
    }
    out
}

/// Fills `out` from AWS-LC's system RNG (aborts only if the OS RNG is broken).
pub fn fill_random(out: &mut [u8]) {
    if aws_lc_rs::rand::fill(out).is_err() {
        panic!("the system random number generator failed");
    }
}

/// `n` random bytes, zeroized on drop.
pub fn random_bytes(n: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![0u8; n]);
    fill_random(out.as_mut_slice());
    out
}

/// Formats 16 bytes as a lowercase UUID.
pub fn format_uuid(id: &[u8; KEY_ID_LEN]) -> String {
    let hex = hex::encode(id);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn parse_uuid(text: &str) -> Option<[u8; KEY_ID_LEN]> {
    let b = text.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b.get(i) != Some(&b'-')) {
        return None;
    }
    let digits: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
    let mut out = [0u8; KEY_ID_LEN];
    for (slot, pair) in out.iter_mut().zip(digits.chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *slot = u8::from_str_radix(pair, 16).ok()?;
    }
    (digits.len() == 32 && digits.iter().all(u8::is_ascii_hexdigit)).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_key() -> (Keystore, KeyMetadata) {
        let mut store = Keystore::new("us-east-1", "111122223333");
        let meta = store.create_key("test", SystemTime::UNIX_EPOCH);
        (store, meta)
    }

    fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn round_trips_and_binds_the_context() {
        let (store, meta) = store_with_key();
        let ctx = context(&[("purpose", "test"), ("a", "b")]);
        let (_, blob) = store
            .encrypt(&meta.key_id, b"secret", &ctx)
            .expect("should succeed");
        let (used, plain) = store.decrypt(&blob, &ctx, None).expect("should succeed");
        assert_eq!(used, meta);
        assert_eq!(plain.as_slice(), b"secret");
        for wrong in [
            context(&[]),
            context(&[("purpose", "test")]),
            context(&[("purpose", "other"), ("a", "b")]),
        ] {
            assert_eq!(
                store.decrypt(&blob, &wrong, None).expect_err("should fail"),
                KmsError::invalid_ciphertext()
            );
        }
        let mut flipped = blob.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        assert_eq!(
            store
                .decrypt(&flipped, &ctx, None)
                .expect_err("should fail"),
            KmsError::invalid_ciphertext()
        );
        assert_eq!(
            store
                .decrypt(&blob[..20], &ctx, None)
                .expect_err("should fail"),
            KmsError::invalid_ciphertext()
        );
    }

    #[test]
    fn resolves_ids_arns_and_aliases() {
        let (mut store, meta) = store_with_key();
        store
            .create_alias("alias/app", &meta.arn)
            .expect("should succeed");
        for name in [
            meta.key_id.as_str(),
            meta.arn.as_str(),
            "alias/app",
            "arn:aws:kms:us-east-1:111122223333:alias/app",
        ] {
            assert_eq!(
                store.describe(name).expect("should succeed"),
                &meta,
                "{name}"
            );
        }
        let missing = store.describe("alias/none").expect_err("should fail");
        assert_eq!(missing.error_type, "NotFoundException");
        assert_eq!(
            missing.message.as_deref(),
            Some("Alias arn:aws:kms:us-east-1:111122223333:alias/none is not found.")
        );
        let other = "0e8f9a3c-1111-4222-8333-944445555666";
        assert_eq!(
            store
                .describe(other)
                .expect_err("should fail")
                .message
                .as_deref(),
            Some(
                "Key 'arn:aws:kms:us-east-1:111122223333:key/0e8f9a3c-1111-4222-8333-944445555666' \
                 does not exist"
            )
        );
        assert_eq!(
            store
                .create_alias("alias/app", &meta.key_id)
                .expect_err("should fail")
                .error_type,
            "AlreadyExistsException"
        );
        assert_eq!(
            store
                .create_alias("app", &meta.key_id)
                .expect_err("should fail")
                .error_type,
            "ValidationException"
        );
    }

    #[test]
    fn checks_the_requested_key() {
        let (mut store, meta) = store_with_key();
        let other = store.create_key("other", SystemTime::UNIX_EPOCH);
        let (_, blob) = store
            .encrypt(&meta.key_id, b"x", &context(&[]))
            .expect("should succeed");
        assert_eq!(
            store
                .decrypt(&blob, &context(&[]), Some(&other.key_id))
                .expect_err("should fail"),
            KmsError::incorrect_key()
        );
        assert!(store.decrypt(&blob, &context(&[]), Some(&meta.arn)).is_ok());
        let stranger = Keystore::new("us-east-1", "111122223333");
        assert_eq!(
            stranger
                .decrypt(&blob, &context(&[]), None)
                .expect_err("should fail")
                .error_type,
            "AccessDeniedException"
        );
    }

    #[test]
    fn uuids_round_trip() {
        let id = [0xab; 16];
        assert_eq!(parse_uuid(&format_uuid(&id)), Some(id));
        assert_eq!(parse_uuid("abababab-abab-abab-abab-ababababab"), None);
        assert_eq!(parse_uuid("zbababab-abab-abab-abab-abababababab"), None);
    }
}
