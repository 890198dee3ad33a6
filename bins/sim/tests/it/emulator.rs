//! The KMS emulator as the emulator tests run it: its configuration and credentials, a stand-in
//! attestation verifier and enclave, and signed calls through `kmstool_sim::kms_client`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_core::cms;
use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::secret::{Credentials, SecretString};
use kmstool_sim::kms::{
    AttestationVerifier, AttestedRecipient, KmsConfig, KmsEmulator, KmsHandle, SimCredentials,
};
use kmstool_sim::kms_client::{KmsClient, Reply, signed_request};
use serde_json::{Value, json};

pub const REGION: &str = "us-east-1";
pub const HOST: &str = "kms.us-east-1.amazonaws.com";

pub fn long_term() -> Credentials {
    Credentials::new("AKIDEXAMPLE", SecretString::new("s3cr3t".into()), None)
}

pub fn temporary() -> Credentials {
    Credentials::new(
        "ASIAEXAMPLE",
        SecretString::new("t3mp".into()),
        Some(SecretString::new("session-token".into())),
    )
}

/// A stand-in for the NSM-root verifier: accepts `TEST-DOC` + JSON naming a public key and
/// a PCR0, rejects everything else (as documents from another root are rejected).
#[derive(Debug)]
pub struct TestVerifier;

impl AttestationVerifier for TestVerifier {
    fn verify(&self, document: &[u8], _at: SystemTime) -> Result<AttestedRecipient, String> {
        let json = document
            .strip_prefix(b"TEST-DOC")
            .ok_or("not signed by the test root")?;
        let doc: Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let field = |name: &str| {
            doc[name]
                .as_str()
                .and_then(|v| STANDARD.decode(v).ok())
                .ok_or(format!("no {name}"))
        };
        Ok(AttestedRecipient {
            public_key: field("pk")?,
            pcrs: BTreeMap::from([(0, field("pcr0")?)]),
        })
    }
}

/// An enclave's key pair and an attestation document for it.
pub struct Enclave {
    pub key: RecipientKey,
    pub spki: Vec<u8>,
}

impl Enclave {
    pub fn new() -> Self {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("RSA key");
        let pkcs8 = private.as_der().expect("PKCS#8");
        let spki = private
            .public_key()
            .as_der()
            .expect("SPKI")
            .as_ref()
            .to_vec();
        let key = RecipientKey::from_pkcs8_der(Backend::AwsLc, pkcs8.as_ref()).expect("key");
        Self { key, spki }
    }

    pub fn document(&self, pcr0: &[u8]) -> Vec<u8> {
        let body = json!({"pk": STANDARD.encode(&self.spki), "pcr0": STANDARD.encode(pcr0)});
        [b"TEST-DOC".as_slice(), body.to_string().as_bytes()].concat()
    }

    /// A `Recipient` carrying `document` as is.
    pub fn recipient_for(document: &[u8]) -> Value {
        json!({
            "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
            "AttestationDocument": STANDARD.encode(document),
        })
    }

    pub fn recipient(&self, pcr0: &[u8]) -> Value {
        json!({
            "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
            "AttestationDocument": STANDARD.encode(self.document(pcr0)),
        })
    }

    pub fn open(&self, reply: &Reply) -> Vec<u8> {
        let sealed = reply.blob("CiphertextForRecipient");
        cms::unwrap(&sealed, &self.key)
            .expect("unwrap")
            .expose()
            .to_vec()
    }
}

pub fn config() -> KmsConfig {
    let mut config = KmsConfig::new("127.0.0.1:0".parse().expect("addr"), REGION);
    config.credentials = vec![
        SimCredentials::new(long_term(), "111122223333"),
        SimCredentials::new(temporary(), "111122223333"),
    ];
    config.attestation = Some(Arc::new(TestVerifier));
    config
}

pub async fn start(config: KmsConfig) -> KmsHandle {
    KmsEmulator::start(config).await.expect("start")
}

/// Checks of a KMS answer.
pub trait ReplyChecks {
    /// The base64 member `member` of the JSON body, decoded; panics when there is none.
    fn blob(&self, member: &str) -> Vec<u8>;
    /// Asserts a KMS error: status, `__type`, the `x-amzn-ErrorType` header.
    fn assert_error(&self, status: u16, error_type: &str);
}

impl ReplyChecks for Reply {
    fn blob(&self, member: &str) -> Vec<u8> {
        let json = self.json();
        let text = json[member].as_str().expect(member);
        STANDARD.decode(text).expect("base64")
    }

    fn assert_error(&self, status: u16, error_type: &str) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.json()["__type"], error_type);
        let header = self.header("x-amzn-ErrorType").expect("x-amzn-ErrorType");
        assert_eq!(header, error_type.rsplit('#').next().unwrap_or(error_type));
    }
}

/// A connection to `kms` expecting a certificate for `server_name`.
pub async fn connect_as(kms: &KmsHandle, server_name: &str) -> anyhow::Result<KmsClient> {
    KmsClient::connect(kms.local_addr(), kms.ca_pem().as_bytes(), server_name).await
}

/// A connection to `kms` as `kms.us-east-1.amazonaws.com`.
pub async fn connect(kms: &KmsHandle) -> KmsClient {
    connect_as(kms, HOST).await.expect("connect")
}

/// Signed calls on a connection.
pub trait Calls {
    /// Calls `op` with `body`, signed now with [`long_term`] credentials.
    async fn call(&mut self, op: &str, body: &Value) -> Reply;
    /// Calls `op` with `body`, signed with `creds` at `t`.
    async fn call_as(
        &mut self,
        op: &str,
        body: &Value,
        creds: &Credentials,
        t: SystemTime,
    ) -> Reply;
}

impl Calls for KmsClient {
    async fn call(&mut self, op: &str, body: &Value) -> Reply {
        self.call_as(op, body, &long_term(), SystemTime::now())
            .await
    }

    async fn call_as(
        &mut self,
        op: &str,
        body: &Value,
        creds: &Credentials,
        t: SystemTime,
    ) -> Reply {
        let request = signed(op, body.to_string().as_bytes(), creds, REGION, t);
        self.send(&request).await.expect("an answer")
    }
}

/// A KMS request for [`HOST`] signed in `region`, as the enclave signs them.
pub fn signed(
    op: &str,
    body: &[u8],
    creds: &Credentials,
    region: &str,
    time: SystemTime,
) -> Vec<u8> {
    signed_request(HOST, region, creds, op, body, time).expect("a signed request")
}

pub async fn key_and_blob(
    kms: &KmsHandle,
    plaintext: &[u8],
    ctx: &[(&str, &str)],
) -> (String, Vec<u8>) {
    let key = kms.create_key("test");
    let ctx = ctx
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let blob = kms.encrypt(&key.arn, plaintext, &ctx).expect("encrypt");
    (key.arn, blob)
}
