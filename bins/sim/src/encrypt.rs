//! `kmstool-sim encrypt`: the `aws kms encrypt` of the local setup. It signs an Encrypt request
//! with core's SigV4 (aws-sigv4), sends it to the emulator over TLS and prints the ciphertext
//! (base64), so there is something for `kmstool-instance` to decrypt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use base64::Engine as _;
use kmstool_core::http::{HttpLimits, Progress, ResponseParser, write_request};
use kmstool_core::kms::request::CONTENT_TYPE;
use kmstool_core::protocol::EncryptionContext;
use kmstool_core::secret::Credentials;
use kmstool_core::sigv4::{self, SigningInput};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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

/// Sends one Encrypt request; returns the `CiphertextBlob` bytes.
pub async fn encrypt(request: &EncryptRequest<'_>) -> anyhow::Result<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let host = kmstool_core::kms::endpoint::kms_host(request.region);
    let body = serde_json::to_vec(&serde_json::json!({
        "KeyId": request.key_id,
        "Plaintext": b64.encode(request.plaintext),
        "EncryptionContext": request.encryption_context,
    }))?;
    let headers = [
        ("Host", host.as_str()),
        ("Content-Type", CONTENT_TYPE),
        ("X-Amz-Target", "TrentService.Encrypt"),
    ];
    let signature = sigv4::sign(&SigningInput {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: &body,
        credentials: request.credentials,
        region: request.region,
        service: "kms",
        time: SystemTime::now(),
    })
    .context("signing the request")?;
    let length = body.len().to_string();
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("X-Amz-Date", &signature.x_amz_date));
    if let Some(token) = &request.credentials.session_token {
        all.push(("X-Amz-Security-Token", token.expose()));
    }
    all.push(("Authorization", &signature.authorization));
    all.push(("Content-Length", &length));
    all.push(("Connection", "close"));
    let mut bytes = Vec::new();
    write_request(&mut bytes, "POST", "/", &all, &body).context("building the request")?;

    let config = kmstool_core::tls::client_config(
        kmstool_core::tls::Roots::ExtraOnly,
        Some(request.ca_pem),
    )?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&config));
    let tcp = tokio::net::TcpStream::connect(request.kms)
        .await
        .with_context(|| format!("connecting to {}", request.kms))?;
    let mut tls = connector
        .connect(kmstool_core::tls::server_name(&host)?, tcp)
        .await
        .context("TLS")?;
    tls.write_all(&bytes).await?;
    let mut parser = ResponseParser::new(HttpLimits::default());
    let mut buf = vec![0u8; 16 * 1024];
    let response = loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            break parser.eof()?;
        }
        if let Progress::Complete(response) = parser.feed(&buf[..n])? {
            break response;
        }
    };
    let json: serde_json::Value =
        serde_json::from_slice(&response.body).context("the answer is not JSON")?;
    if response.status != 200 {
        anyhow::bail!(
            "KMS answered {}: {} {}",
            response.status,
            json["__type"].as_str().unwrap_or("?"),
            json["message"]
                .as_str()
                .or(json["Message"].as_str())
                .unwrap_or("")
        );
    }
    let blob = json["CiphertextBlob"]
        .as_str()
        .context("no CiphertextBlob in the answer")?;
    Ok(b64.decode(blob)?)
}
