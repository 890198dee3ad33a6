//! A client of KMS's JSON 1.1 protocol over HTTPS, for the KMS emulator: requests signed by
//! core's KMS request builder ([`kmstool_core::kms::request::http_request`], the bytes the
//! enclave sends), answers read by core's HTTP parser. `kmstool-sim encrypt` (the
//! `aws kms encrypt` of the local setup) uses [`encrypt`]; the tests use [`KmsClient`] to send
//! signed requests and hand-made ones alike.

use std::net::SocketAddr;
use std::time::SystemTime;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_core::http::{HttpLimits, Progress, ResponseParser};
use kmstool_core::kms::endpoint::kms_host;
use kmstool_core::kms::request::{RequestTarget, http_request};
use kmstool_core::protocol::EncryptionContext;
use kmstool_core::secret::Credentials;
use kmstool_core::tls;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The signed HTTP/1.1 request for operation `operation` (`Encrypt`, `GenerateRandom`, ...)
/// with JSON `body`, to `host` in `region`, signed with `credentials` at `time`.
pub fn signed_request(
    host: &str,
    region: &str,
    credentials: &Credentials,
    operation: &str,
    body: &[u8],
    time: SystemTime,
) -> anyhow::Result<Vec<u8>> {
    let target = RequestTarget {
        host,
        region,
        credentials,
    };
    let request = http_request(&target, &format!("TrentService.{operation}"), body, time)
        .context("building the request")?;
    Ok(request.to_vec())
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header fields in the order received, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A KMS error's message (`message`, or `Message` as some errors spell it); empty when
    /// there is none.
    pub fn message(&self) -> String {
        let json = self.json();
        json["message"]
            .as_str()
            .or(json["Message"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}

/// A TLS connection to a KMS endpoint.
#[derive(Debug)]
pub struct KmsClient {
    stream: TlsStream<TcpStream>,
}

impl KmsClient {
    /// Connects to `kms`, trusting only the CA certificates in `ca_pem`, and expects a
    /// certificate for `server_name` (also sent as SNI).
    pub async fn connect(
        kms: SocketAddr,
        ca_pem: &[u8],
        server_name: &str,
    ) -> anyhow::Result<Self> {
        let config = tls::client_config(tls::Roots::ExtraOnly, Some(ca_pem))?;
        let tcp = TcpStream::connect(kms)
            .await
            .with_context(|| format!("connecting to {kms}"))?;
        let stream = TlsConnector::from(config)
            .connect(tls::server_name(server_name)?, tcp)
            .await
            .context("TLS")?;
        Ok(Self { stream })
    }

    /// Sends `request` as it is and reads one answer; fails when the server closes the
    /// connection (or breaks HTTP) before a whole answer.
    pub async fn send(&mut self, request: &[u8]) -> anyhow::Result<Reply> {
        self.stream.write_all(request).await?;
        let mut parser = ResponseParser::new(HttpLimits::default());
        let mut buf = vec![0u8; 16 * 1024];
        let response = loop {
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                break parser.eof()?;
            }
            if let Progress::Complete(response) = parser.feed(&buf[..n])? {
                break response;
            }
        };
        Ok(Reply {
            status: response.status,
            headers: response.headers,
            body: response.body.to_vec(),
        })
    }
}

/// What to encrypt, and where.
#[derive(Debug)]
pub struct EncryptRequest<'a> {
    /// The emulator's address.
    pub kms: SocketAddr,
    /// Its CA certificate (PEM).
    pub ca_pem: &'a [u8],
    /// Region (the host name is `kms.<region>.amazonaws.com`).
    pub region: &'a str,
    /// Signing credentials.
    pub credentials: &'a Credentials,
    /// Key id, ARN or alias.
    pub key_id: &'a str,
    /// The plaintext.
    pub plaintext: &'a [u8],
    /// Encryption context.
    pub encryption_context: &'a EncryptionContext,
}

/// Sends one signed Encrypt request; returns the `CiphertextBlob` bytes.
pub async fn encrypt(request: &EncryptRequest<'_>) -> anyhow::Result<Vec<u8>> {
    let host = kms_host(request.region);
    let body = serde_json::to_vec(&serde_json::json!({
        "KeyId": request.key_id,
        "Plaintext": STANDARD.encode(request.plaintext),
        "EncryptionContext": request.encryption_context,
    }))?;
    let bytes = signed_request(
        &host,
        request.region,
        request.credentials,
        "Encrypt",
        &body,
        SystemTime::now(),
    )?;
    let mut client = KmsClient::connect(request.kms, request.ca_pem, &host).await?;
    let response = client.send(&bytes).await?;
    let json: Value = serde_json::from_slice(&response.body).context("the answer is not JSON")?;
    if response.status != 200 {
        anyhow::bail!(
            "KMS answered {}: {} {}",
            response.status,
            json["__type"].as_str().unwrap_or("?"),
            response.message()
        );
    }
    let blob = json["CiphertextBlob"]
        .as_str()
        .context("no CiphertextBlob in the answer")?;
    Ok(STANDARD.decode(blob)?)
}
