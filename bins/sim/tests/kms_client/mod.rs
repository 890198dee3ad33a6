//! HTTPS client, SigV4-signed requests and a test enclave for the KMS emulator tests.
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
use kmstool_core::sigv4::{SigningInput, sign};
use kmstool_sim::kms::{
    AttestationVerifier, AttestedRecipient, KmsConfig, KmsEmulator, KmsHandle, SimCredentials,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

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

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    pub fn blob(&self, member: &str) -> Vec<u8> {
        let json = self.json();
        let text = json[member].as_str().expect(member);
        STANDARD.decode(text).expect("base64")
    }

    /// Asserts a KMS error: status, `__type`, the `x-amzn-ErrorType` header.
    pub fn assert_error(&self, status: u16, error_type: &str) {
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

    pub fn message(&self) -> String {
        let json = self.json();
        json["message"]
            .as_str()
            .or(json["Message"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}

pub struct Client {
    pub stream: TlsStream<TcpStream>,
    pub buf: Vec<u8>,
}

pub async fn connect_as(kms: &KmsHandle, server_name: &str) -> std::io::Result<Client> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            kms.ca_der().to_vec(),
        ))
        .expect("CA");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(kms.local_addr()).await?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).expect("name");
    let stream = TlsConnector::from(Arc::new(tls)).connect(name, tcp).await?;
    Ok(Client {
        stream,
        buf: Vec::new(),
    })
}

pub async fn connect(kms: &KmsHandle) -> Client {
    connect_as(kms, HOST).await.expect("connect")
}

impl Client {
    /// Sends raw bytes and reads one answer; `None` when the server closed without one.
    pub async fn send(&mut self, request: &[u8]) -> Option<Reply> {
        self.stream.write_all(request).await.ok()?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = parsed.parse(&self.buf) {
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).into_owned();
                        (h.name.to_owned(), value)
                    })
                    .collect();
                let status = parsed.code.expect("status");
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .expect("Content-Length");
                if self.buf.len() >= head + length {
                    let body = self.buf[head..head + length].to_vec();
                    self.buf.drain(..head + length);
                    return Some(Reply {
                        status,
                        headers,
                        body,
                    });
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub async fn call(&mut self, op: &str, body: &Value) -> Reply {
        self.call_as(op, body, &long_term(), SystemTime::now())
            .await
    }

    pub async fn call_as(
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

/// A KMS request signed with core's SigV4, headers as the AWS SDKs send them.
pub fn signed(
    op: &str,
    body: &[u8],
    creds: &Credentials,
    region: &str,
    time: SystemTime,
) -> Vec<u8> {
    let target = format!("TrentService.{op}");
    let headers = [
        ("Content-Type", "application/x-amz-json-1.1"),
        ("Host", HOST),
        ("X-Amz-Target", target.as_str()),
    ];
    let signature = sign(&SigningInput {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body,
        credentials: creds,
        region,
        service: "kms",
        time,
    })
    .expect("signable");
    let mut head = format!(
        "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: {target}\r\nX-Amz-Date: {}\r\n",
        signature.x_amz_date
    );
    if let Some(token) = &creds.session_token {
        head.push_str(&format!("X-Amz-Security-Token: {}\r\n", token.expose()));
    }
    head.push_str(&format!(
        "Authorization: {}\r\nContent-Length: {}\r\n\r\n",
        signature.authorization,
        body.len()
    ));
    [head.as_bytes(), body].concat()
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
