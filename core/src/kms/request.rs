//! KMS requests: the JSON bodies (always with an attested `Recipient`) and the signed HTTP/1.1
//! request around them.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use serde::Serialize;
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use crate::http::{RequestError, write_request};
use crate::protocol::{
    DataKeySize, Decrypt, DeriveSharedSecret, EncryptionAlgorithm, EncryptionContext,
    GenerateDataKey, GenerateDataKeyPair, GenerateRandom, Operation,
};
use crate::secret::{Credentials, SecretBytes, zeroizing_json};
use crate::sigv4::{self, SignError};

/// `Content-Type` of every KMS request.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The `KeyEncryptionAlgorithm` of every `Recipient`: the only one KMS supports.
pub const KEY_ENCRYPTION_ALGORITHM: &str = "RSAES_OAEP_SHA_256";
/// SigV4 service name.
pub const SERVICE: &str = "kms";
/// `User-Agent` we send (not signed, as the AWS SDKs do).
pub const USER_AGENT: &str = concat!("kmstool/", env!("CARGO_PKG_VERSION"));

/// A KMS request: every operation that returns key material, and so carries a `Recipient`, and
/// `Encrypt`, which returns none and takes none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsRequest {
    /// `TrentService.Decrypt`.
    Decrypt(Decrypt),
    /// `TrentService.GenerateDataKey`.
    GenerateDataKey(GenerateDataKey),
    /// `TrentService.GenerateRandom`.
    GenerateRandom(GenerateRandom),
    /// `TrentService.GenerateDataKeyPair`.
    GenerateDataKeyPair(GenerateDataKeyPair),
    /// `TrentService.DeriveSharedSecret`.
    DeriveSharedSecret(DeriveSharedSecret),
    /// `TrentService.Encrypt`: sealing data from inside the enclave. It carries no
    /// `Recipient`, because KMS accepts none on Encrypt (its answer holds no secret).
    Encrypt(Encrypt),
}

/// `Encrypt`'s fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypt {
    /// `KeyId`: the KMS key to encrypt under.
    pub key_id: String,
    /// `Plaintext`: at most 4096 bytes.
    pub plaintext: SecretBytes,
    /// `EncryptionContext`.
    pub encryption_context: EncryptionContext,
    /// `GrantTokens`.
    pub grant_tokens: Vec<String>,
    /// `EncryptionAlgorithm` (`SYMMETRIC_DEFAULT` when not given).
    pub encryption_algorithm: Option<EncryptionAlgorithm>,
    /// `DryRun`: KMS checks the request, permissions included, and answers
    /// `DryRunOperationException` instead of doing it.
    pub dry_run: bool,
}

/// Largest `Plaintext` KMS's Encrypt takes.
pub const MAX_ENCRYPT_PLAINTEXT_BYTES: usize = 4096;

impl KmsRequest {
    /// The enclave protocol's operation of the same name; `None` for `Encrypt`, which the
    /// protocol does not offer.
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Self::Decrypt(_) => Some(Operation::Decrypt),
            Self::GenerateDataKey(_) => Some(Operation::GenerateDataKey),
            Self::GenerateRandom(_) => Some(Operation::GenerateRandom),
            Self::GenerateDataKeyPair(_) => Some(Operation::GenerateDataKeyPair),
            Self::DeriveSharedSecret(_) => Some(Operation::DeriveSharedSecret),
            Self::Encrypt(_) => None,
        }
    }

    /// Whether the request carries an attested `Recipient` (every operation but `Encrypt`).
    pub fn takes_recipient(&self) -> bool {
        !matches!(self, Self::Encrypt(_))
    }

    /// `X-Amz-Target`.
    pub fn target(&self) -> &'static str {
        match self {
            Self::Decrypt(_) => "TrentService.Decrypt",
            Self::GenerateDataKey(_) => "TrentService.GenerateDataKey",
            Self::GenerateRandom(_) => "TrentService.GenerateRandom",
            Self::GenerateDataKeyPair(_) => "TrentService.GenerateDataKeyPair",
            Self::DeriveSharedSecret(_) => "TrentService.DeriveSharedSecret",
            Self::Encrypt(_) => "TrentService.Encrypt",
        }
    }

    /// The JSON body, with `Recipient` carrying `attestation_document` when the request
    /// [takes one](KmsRequest::takes_recipient) (`Encrypt` ignores it). Zeroizing: Encrypt's
    /// carries its plaintext.
    pub fn body(&self, attestation_document: &AttestationDocument) -> Zeroizing<Vec<u8>> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let recipient = Recipient {
            key_encryption_algorithm: KEY_ENCRYPTION_ALGORITHM,
            attestation_document: &attestation_document.0.json,
        };
        match self {
            Self::Decrypt(d) => zeroizing_json(&DecryptBody {
                ciphertext_blob: b64.encode(&d.ciphertext),
                encryption_context: non_empty(&d.encryption_context),
                key_id: d.key_id.as_deref(),
                encryption_algorithm: d.encryption_algorithm.map(|a| a.as_str()),
                grant_tokens: non_empty_slice(&d.grant_tokens),
                dry_run: d.dry_run,
                recipient,
            }),
            Self::GenerateDataKey(g) => zeroizing_json(&GenerateDataKeyBody {
                key_id: &g.key_id,
                key_spec: match g.size {
                    DataKeySize::KeySpec(spec) => Some(spec.as_str()),
                    DataKeySize::NumberOfBytes(_) => None,
                },
                number_of_bytes: match g.size {
                    DataKeySize::KeySpec(_) => None,
                    DataKeySize::NumberOfBytes(n) => Some(n),
                },
                encryption_context: non_empty(&g.encryption_context),
                grant_tokens: non_empty_slice(&g.grant_tokens),
                dry_run: g.dry_run,
                recipient,
            }),
            Self::GenerateRandom(r) => zeroizing_json(&GenerateRandomBody {
                number_of_bytes: r.number_of_bytes,
                custom_key_store_id: r.custom_key_store_id.as_deref(),
                recipient,
            }),
            Self::GenerateDataKeyPair(g) => zeroizing_json(&GenerateDataKeyPairBody {
                key_id: &g.key_id,
                key_pair_spec: &g.key_pair_spec,
                encryption_context: non_empty(&g.encryption_context),
                grant_tokens: non_empty_slice(&g.grant_tokens),
                dry_run: g.dry_run,
                recipient,
            }),
            Self::DeriveSharedSecret(d) => zeroizing_json(&DeriveSharedSecretBody {
                key_id: &d.key_id,
                key_agreement_algorithm: d.key_agreement_algorithm.as_str(),
                public_key: b64.encode(&d.public_key),
                grant_tokens: non_empty_slice(&d.grant_tokens),
                dry_run: d.dry_run,
                recipient,
            }),
            Self::Encrypt(e) => {
                // Into the zeroizing body directly, never through an unwiped string.
                let plaintext = e.plaintext.to_base64();
                zeroizing_json(&EncryptBody {
                    key_id: &e.key_id,
                    plaintext: plaintext.expose(),
                    encryption_context: non_empty(&e.encryption_context),
                    grant_tokens: non_empty_slice(&e.grant_tokens),
                    encryption_algorithm: e.encryption_algorithm.map(|a| a.as_str()),
                    dry_run: e.dry_run,
                })
            }
        }
    }
}

fn is_false(value: &bool) -> bool {
    !value
}

fn non_empty(context: &EncryptionContext) -> Option<&EncryptionContext> {
    (!context.is_empty()).then_some(context)
}

fn non_empty_slice(items: &[String]) -> Option<&[String]> {
    (!items.is_empty()).then_some(items)
}

/// An attestation document from the NSM, with the JSON string that carries it in a request's
/// `Recipient` (its base64, quoted), made once. Cheap to clone: a document reused for many
/// calls is neither copied nor encoded again for each; a body takes its JSON as it is, with no
/// escaping pass over its 6 KB (base64 needs none).
#[derive(Clone)]
pub struct AttestationDocument(Arc<DocumentForms>);

struct DocumentForms {
    bytes: Vec<u8>,
    json: Box<RawValue>,
}

impl AttestationDocument {
    /// The document `bytes` (a COSE_Sign1 structure from the NSM).
    pub fn new(bytes: Vec<u8>) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut quoted =
            String::with_capacity(base64::encoded_len(bytes.len(), true).unwrap_or(0) + 2);
        quoted.push('"');
        b64.encode_string(&bytes, &mut quoted);
        quoted.push('"');
        // A quoted base64 string is a JSON string: its alphabet needs no escape.
        let json = RawValue::from_string(quoted).expect("quoted base64 is a JSON string");
        Self(Arc::new(DocumentForms { bytes, json }))
    }

    /// The document's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0.bytes
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.bytes.len()
    }

    /// Whether it has no bytes (as the document an `Encrypt` call, which takes none, is built
    /// with).
    pub fn is_empty(&self) -> bool {
        self.0.bytes.is_empty()
    }
}

impl Default for AttestationDocument {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl From<Vec<u8>> for AttestationDocument {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl PartialEq for AttestationDocument {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for AttestationDocument {}

impl PartialEq<[u8]> for AttestationDocument {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_bytes() == other
    }
}

impl PartialEq<&[u8]> for AttestationDocument {
    fn eq(&self, other: &&[u8]) -> bool {
        self.as_bytes() == *other
    }
}

impl PartialEq<Vec<u8>> for AttestationDocument {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_bytes() == other.as_slice()
    }
}

impl fmt::Debug for AttestationDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttestationDocument({} bytes)", self.len())
    }
}

#[derive(Serialize)]
struct Recipient<'a> {
    #[serde(rename = "KeyEncryptionAlgorithm")]
    key_encryption_algorithm: &'static str,
    #[serde(rename = "AttestationDocument")]
    attestation_document: &'a RawValue,
}

#[derive(Serialize)]
struct DecryptBody<'a> {
    #[serde(rename = "CiphertextBlob")]
    ciphertext_blob: String,
    #[serde(rename = "EncryptionContext", skip_serializing_if = "Option::is_none")]
    encryption_context: Option<&'a EncryptionContext>,
    #[serde(rename = "KeyId", skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
    #[serde(
        rename = "EncryptionAlgorithm",
        skip_serializing_if = "Option::is_none"
    )]
    encryption_algorithm: Option<&'static str>,
    #[serde(rename = "GrantTokens", skip_serializing_if = "Option::is_none")]
    grant_tokens: Option<&'a [String]>,
    #[serde(rename = "DryRun", skip_serializing_if = "is_false")]
    dry_run: bool,
    #[serde(rename = "Recipient")]
    recipient: Recipient<'a>,
}

#[derive(Serialize)]
struct GenerateDataKeyBody<'a> {
    #[serde(rename = "KeyId")]
    key_id: &'a str,
    #[serde(rename = "KeySpec", skip_serializing_if = "Option::is_none")]
    key_spec: Option<&'static str>,
    #[serde(rename = "NumberOfBytes", skip_serializing_if = "Option::is_none")]
    number_of_bytes: Option<u32>,
    #[serde(rename = "EncryptionContext", skip_serializing_if = "Option::is_none")]
    encryption_context: Option<&'a EncryptionContext>,
    #[serde(rename = "GrantTokens", skip_serializing_if = "Option::is_none")]
    grant_tokens: Option<&'a [String]>,
    #[serde(rename = "DryRun", skip_serializing_if = "is_false")]
    dry_run: bool,
    #[serde(rename = "Recipient")]
    recipient: Recipient<'a>,
}

#[derive(Serialize)]
struct GenerateRandomBody<'a> {
    #[serde(rename = "NumberOfBytes")]
    number_of_bytes: u32,
    #[serde(rename = "CustomKeyStoreId", skip_serializing_if = "Option::is_none")]
    custom_key_store_id: Option<&'a str>,
    #[serde(rename = "Recipient")]
    recipient: Recipient<'a>,
}

#[derive(Serialize)]
struct GenerateDataKeyPairBody<'a> {
    #[serde(rename = "KeyId")]
    key_id: &'a str,
    #[serde(rename = "KeyPairSpec")]
    key_pair_spec: &'a str,
    #[serde(rename = "EncryptionContext", skip_serializing_if = "Option::is_none")]
    encryption_context: Option<&'a EncryptionContext>,
    #[serde(rename = "GrantTokens", skip_serializing_if = "Option::is_none")]
    grant_tokens: Option<&'a [String]>,
    #[serde(rename = "DryRun", skip_serializing_if = "is_false")]
    dry_run: bool,
    #[serde(rename = "Recipient")]
    recipient: Recipient<'a>,
}

#[derive(Serialize)]
struct EncryptBody<'a> {
    #[serde(rename = "KeyId")]
    key_id: &'a str,
    #[serde(rename = "Plaintext")]
    plaintext: &'a str,
    #[serde(rename = "EncryptionContext", skip_serializing_if = "Option::is_none")]
    encryption_context: Option<&'a EncryptionContext>,
    #[serde(rename = "GrantTokens", skip_serializing_if = "Option::is_none")]
    grant_tokens: Option<&'a [String]>,
    #[serde(
        rename = "EncryptionAlgorithm",
        skip_serializing_if = "Option::is_none"
    )]
    encryption_algorithm: Option<&'static str>,
    #[serde(rename = "DryRun", skip_serializing_if = "is_false")]
    dry_run: bool,
}

#[derive(Serialize)]
struct DeriveSharedSecretBody<'a> {
    #[serde(rename = "KeyId")]
    key_id: &'a str,
    #[serde(rename = "KeyAgreementAlgorithm")]
    key_agreement_algorithm: &'static str,
    #[serde(rename = "PublicKey")]
    public_key: String,
    #[serde(rename = "GrantTokens", skip_serializing_if = "Option::is_none")]
    grant_tokens: Option<&'a [String]>,
    #[serde(rename = "DryRun", skip_serializing_if = "is_false")]
    dry_run: bool,
    #[serde(rename = "Recipient")]
    recipient: Recipient<'a>,
}

/// Everything needed to sign and frame one KMS request.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    /// Host name (SNI and `Host`).
    pub host: &'a str,
    /// Signing region.
    pub region: &'a str,
    /// Credentials.
    pub credentials: &'a Credentials,
}

/// Why a KMS request could not be built. Never holds a secret or a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// The signer refused the request.
    Sign(SignError),
    /// The signed request could not be framed.
    Http(RequestError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sign(error) => error.fmt(f),
            Self::Http(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for BuildError {}

impl From<SignError> for BuildError {
    fn from(error: SignError) -> Self {
        Self::Sign(error)
    }
}

impl From<RequestError> for BuildError {
    fn from(error: RequestError) -> Self {
        Self::Http(error)
    }
}

/// The signed HTTP/1.1 request for `target` (`TrentService.*`) with JSON `body`, signed at
/// `time` by `sigv4::sign` (aws-sigv4). Signed headers:
/// `content-type;host;x-amz-date[;x-amz-security-token];x-amz-target`.
/// The bytes hold the session token, so they come in a zeroizing buffer. Fails only when a
/// header value could not be signed or sent (control characters), which validated inputs
/// never have.
pub fn http_request(
    to: &RequestTarget<'_>,
    x_amz_target: &str,
    body: &[u8],
    time: SystemTime,
) -> Result<Zeroizing<Vec<u8>>, BuildError> {
    let signed = [
        ("Host", to.host),
        ("Content-Type", CONTENT_TYPE),
        ("X-Amz-Target", x_amz_target),
    ];
    let signature = sigv4::sign(&sigv4::SigningInput {
        method: "POST",
        path: "/",
        query: "",
        headers: &signed,
        body,
        credentials: to.credentials,
        region: to.region,
        service: SERVICE,
        time,
    })?;
    let content_length = body.len().to_string();
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(8);
    headers.extend_from_slice(&signed);
    headers.push(("X-Amz-Date", &signature.x_amz_date));
    if let Some(token) = &to.credentials.session_token {
        headers.push(("X-Amz-Security-Token", token.expose()));
    }
    headers.push(("Authorization", &signature.authorization));
    headers.push(("Content-Length", &content_length));
    headers.push(("User-Agent", USER_AGENT));
    // Room for everything up front: growing would free an unwiped copy of the session token.
    let header_bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + header_bytes + 64));
    write_request(&mut out, "POST", "/", &headers, body)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::protocol::{DataKeySize, KeySpec};
    use crate::secret::SecretString;

    /// One GenerateDataKey request as the enclave sends it, every byte of it: the request line,
    /// the headers in their order and case, the signature, the body.
    fn wire(credentials: &Credentials) -> String {
        let call = KmsRequest::GenerateDataKey(GenerateDataKey {
            key_id: "alias/kmstool".into(),
            size: DataKeySize::KeySpec(KeySpec::Aes256),
            encryption_context: EncryptionContext::from([("app".into(), "wire".into())]),
            grant_tokens: Vec::new(),
            dry_run: false,
        });
        let body = call.body(&AttestationDocument::new(b"attestation document".to_vec()));
        let target = RequestTarget {
            host: "kms.eu-west-1.amazonaws.com",
            region: "eu-west-1",
            credentials,
        };
        // 2026-11-29T12:00:00Z
        let time = UNIX_EPOCH + Duration::from_secs(1_795_953_600);
        let bytes = http_request(&target, call.target(), &body, time).expect("sendable");
        String::from_utf8(bytes.to_vec()).expect("ASCII")
    }

    #[test]
    fn wire_bytes_with_a_session_token() {
        let credentials = Credentials::new(
            "ASIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            Some(SecretString::from("IQoJb3JpZ2luX2VjEXAMPLETOKEN//+==")),
        );
        assert_eq!(
            wire(&credentials),
            [
                "POST / HTTP/1.1\r\n",
                "Host: kms.eu-west-1.amazonaws.com\r\n",
                "Content-Type: application/x-amz-json-1.1\r\n",
                "X-Amz-Target: TrentService.GenerateDataKey\r\n",
                "X-Amz-Date: 20261129T120000Z\r\n",
                "X-Amz-Security-Token: IQoJb3JpZ2luX2VjEXAMPLETOKEN//+==\r\n",
                "Authorization: AWS4-HMAC-SHA256 Credential=ASIAIOSFODNN7EXAMPLE/20261129/eu-west-1/kms/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature=e39caa99de303a5593ba87363130f78519c2acfcebb45b1857c6a4bbf24a86da\r\n",
                "Content-Length: 193\r\n",
                &format!("User-Agent: {USER_AGENT}\r\n"),
                "\r\n",
                r#"{"KeyId":"alias/kmstool","KeySpec":"AES_256","EncryptionContext":{"app":"wire"},"Recipient":{"KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256","AttestationDocument":"YXR0ZXN0YXRpb24gZG9jdW1lbnQ="}}"#,
            ]
            .concat()
        );
    }

    #[test]
    fn wire_bytes_with_long_term_credentials() {
        let credentials = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
        );
        assert_eq!(
            wire(&credentials),
            [
                "POST / HTTP/1.1\r\n",
                "Host: kms.eu-west-1.amazonaws.com\r\n",
                "Content-Type: application/x-amz-json-1.1\r\n",
                "X-Amz-Target: TrentService.GenerateDataKey\r\n",
                "X-Amz-Date: 20261129T120000Z\r\n",
                "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261129/eu-west-1/kms/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=bc3a11d34377f29486ec728cb14f18a24e54f0768e13c40eae7f509e1b261ee5\r\n",
                "Content-Length: 193\r\n",
                &format!("User-Agent: {USER_AGENT}\r\n"),
                "\r\n",
                r#"{"KeyId":"alias/kmstool","KeySpec":"AES_256","EncryptionContext":{"app":"wire"},"Recipient":{"KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256","AttestationDocument":"YXR0ZXN0YXRpb24gZG9jdW1lbnQ="}}"#,
            ]
            .concat()
        );
    }

    #[test]
    fn a_document_is_carried_as_its_base64_whatever_its_bytes() {
        let bytes: Vec<u8> = (0..=255).cycle().take(6000).collect();
        let document = AttestationDocument::new(bytes.clone());
        let call = KmsRequest::GenerateRandom(GenerateRandom {
            number_of_bytes: 32,
            custom_key_store_id: None,
        });
        let body: serde_json::Value = serde_json::from_slice(&call.body(&document)).unwrap();
        let carried = body["Recipient"]["AttestationDocument"].as_str().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(b64.decode(carried).unwrap(), bytes);
        // A clone is the same document, and Debug shows its size, never its bytes.
        assert_eq!(document.clone(), bytes);
        assert_eq!(format!("{document:?}"), "AttestationDocument(6000 bytes)");
        let empty = AttestationDocument::default();
        assert!(empty.is_empty());
        let body: serde_json::Value = serde_json::from_slice(&call.body(&empty)).unwrap();
        assert_eq!(body["Recipient"]["AttestationDocument"], "");
    }
}
