//! The crate documentation's example, run against `kmstool-sim`: a simulated NSM and the KMS
//! emulator on 127.0.0.1 stand in for `/dev/nsm` and AWS KMS behind the parent's proxy.
//!
//! `cargo run -p kmstool-runtime-tokio --example kms_client` prints what it sealed and opened
//! again. `tests/example.rs` runs the same code and checks what it returns.

use std::sync::Arc;

use kmstool_core::address::Address;
use kmstool_core::kms::client::ClientConfig;
use kmstool_core::kms::request::Encrypt;
use kmstool_core::protocol::{DataKeySize, Decrypt, GenerateDataKey, KeySpec};
use kmstool_core::secret::SecretBytes;
use kmstool_core::tls::Roots;
use kmstool_runtime_tokio::KmsClient;
use kmstool_sim::local::{Local, LocalOptions};

/// What the example got back.
#[derive(Debug)]
pub struct Seen {
    /// `message`, sealed with Encrypt and opened again with an attested Decrypt.
    pub opened: SecretBytes,
    /// A data key and its encrypted copy, opened again with an attested Decrypt.
    pub data_key: SecretBytes,
    /// The data key's copy, decrypted.
    pub data_key_again: SecretBytes,
    /// 32 random bytes from an attested GenerateRandom.
    pub random: SecretBytes,
}

/// Starts the simulation, builds a client against it, and seals and opens `message`.
pub async fn run(message: &[u8]) -> Result<Seen, Box<dyn std::error::Error>> {
    let local = Local::start(LocalOptions::default()).await?;
    let key = local.kms.create_key("library example");

    // In an enclave: `.nsm(Arc::new(NitroNsm::open()?))`, the default proxy (vsock 3:8000)
    // and the default trust roots. Here: the simulated NSM, the emulator's address and its CA.
    let config = ClientConfig::new(local.kms.region())
        .credentials(local.credentials.clone())
        .nsm(Arc::clone(&local.nsm) as _)
        .proxy(Address::Tcp {
            host: "127.0.0.1".into(),
            port: local.kms.local_addr().port(),
        })
        .trust_roots(Roots::ExtraOnly)
        .extra_roots_pem(local.kms.ca_pem().as_bytes());
    let client = KmsClient::new(config).await?;

    let sealed = client
        .encrypt(Encrypt {
            key_id: key.key_id.clone(),
            plaintext: SecretBytes::new(message.to_vec()),
            encryption_context: [("app".to_owned(), "example".to_owned())].into(),
            grant_tokens: Vec::new(),
            encryption_algorithm: None,
            dry_run: false,
        })
        .await?;
    let mut decrypt = Decrypt::new(sealed.ciphertext_blob);
    decrypt.encryption_context = [("app".to_owned(), "example".to_owned())].into();
    let opened = client.decrypt(decrypt).await?.plaintext;

    let data_key = client
        .generate_data_key(GenerateDataKey {
            key_id: key.key_id.clone(),
            size: DataKeySize::KeySpec(KeySpec::Aes256),
            encryption_context: Default::default(),
            grant_tokens: Vec::new(),
            dry_run: false,
        })
        .await?;
    let data_key_again = client
        .decrypt(Decrypt::new(data_key.ciphertext_blob))
        .await?
        .plaintext;
    let random = client.generate_random(32).await?;
    Ok(Seen {
        opened,
        data_key: data_key.plaintext,
        data_key_again,
        random,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seen = run(b"Hello from inside the enclave").await?;
    println!(
        "Encrypt, then attested Decrypt: {}",
        String::from_utf8_lossy(seen.opened.expose())
    );
    println!(
        "GenerateDataKey: {} bytes, its copy decrypts to the same key: {}",
        seen.data_key.len(),
        seen.data_key == seen.data_key_again
    );
    println!("GenerateRandom: {} bytes", seen.random.len());
    Ok(())
}
