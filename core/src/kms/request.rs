//! KMS requests: the JSON bodies (always with an attested `Recipient`) and the signed HTTP/1.1
//! request around them.

use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::http::{RequestError, write_request};
use crate::protocol::{
    DataKeySize, Decrypt, EncryptionContext, GenerateDataKey, GenerateRandom, Operation,
};
use crate::secret::Credentials;
use crate::sigv4::{self, SignError};

/// `Content-Type` of every KMS request.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The `KeyEncryptionAlgorithm` of every `Recipient`: the only one KMS supports.
pub const KEY_ENCRYPTION_ALGORITHM: &str = "RSAES_OAEP_SHA_256";
/// SigV4 service name.
pub const SERVICE: &str = "kms";
/// `User-Agent` we send (not signed, as the AWS SDKs do).
pub const USER_AGENT: &str = concat!("kmstool/", env!("CARGO_PKG_VERSION"));

/// A KMS call that returns key material, and so carries a `Recipient`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsCall {
    /// `TrentService.Decrypt`.
    Decrypt(Decrypt),
    /// `TrentService.GenerateDataKey`.
    GenerateDataKey(GenerateDataKey),
    /// `TrentService.GenerateRandom`.
    GenerateRandom(GenerateRandom),
}

impl KmsCall {
    /// The operation.
    pub fn operation(&self) -> Operation {
        match self {
            Self::Decrypt(_) => Operation::Decrypt,
            Self::GenerateDataKey(_) => Operation::GenerateDataKey,
            Self::GenerateRandom(_) => Operation::GenerateRandom,
        }
    }

    /// `X-Amz-Target`.
    pub fn target(&self) -> &'static str {
        match self {
            Self::Decrypt(_) => "TrentService.Decrypt",
            Self::GenerateDataKey(_) => "TrentService.GenerateDataKey",
            Self::GenerateRandom(_) => "TrentService.GenerateRandom",
        }
    }

    /// The JSON body with `Recipient` carrying `attestation_document`.
    pub fn body(&self, attestation_document: &[u8]) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let recipient = Recipient {
            key_encryption_algorithm: KEY_ENCRYPTION_ALGORITHM,
            attestation_document: b64.encode(attestation_document),
        };
        let result = match self {
            Self::Decrypt(d) => serde_json::to_vec(&DecryptBody {
                ciphertext_blob: b64.encode(&d.ciphertext),
                encryption_context: non_empty(&d.encryption_context),
                key_id: d.key_id.as_deref(),
                encryption_algorithm: d.encryption_algorithm.map(|a| a.as_str()),
                grant_tokens: non_empty_slice(&d.grant_tokens),
                recipient,
            }),
            Self::GenerateDataKey(g) => serde_json::to_vec(&GenerateDataKeyBody {
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
                recipient,
            }),
            Self::GenerateRandom(r) => serde_json::to_vec(&GenerateRandomBody {
                number_of_bytes: r.number_of_bytes,
                recipient,
            }),
        };
        // Serialising structs of strings, maps of strings and integers cannot fail.
        result.unwrap_or_default()
    }
}

fn non_empty(context: &EncryptionContext) -> Option<&EncryptionContext> {
    (!context.is_empty()).then_some(context)
}

fn non_empty_slice(items: &[String]) -> Option<&[String]> {
    (!items.is_empty()).then_some(items)
}

#[derive(Serialize)]
struct Recipient {
    #[serde(rename = "KeyEncryptionAlgorithm")]
    key_encryption_algorithm: &'static str,
    #[serde(rename = "AttestationDocument")]
    attestation_document: String,
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
    #[serde(rename = "Recipient")]
    recipient: Recipient,
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
    #[serde(rename = "Recipient")]
    recipient: Recipient,
}

#[derive(Serialize)]
struct GenerateRandomBody {
    #[serde(rename = "NumberOfBytes")]
    number_of_bytes: u32,
    #[serde(rename = "Recipient")]
    recipient: Recipient,
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
/// `time` by [`sigv4::sign`] (aws-sigv4). Signed headers:
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
        let call = KmsCall::GenerateDataKey(GenerateDataKey {
            key_id: "alias/kmstool".into(),
            size: DataKeySize::KeySpec(KeySpec::Aes256),
            encryption_context: EncryptionContext::from([("app".into(), "wire".into())]),
            grant_tokens: Vec::new(),
        });
        let body = call.body(b"attestation document");
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
}
