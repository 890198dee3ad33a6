//! AWS KMS from inside a Nitro enclave, attested, on tokio — and the tokio runtime of the
//! kmstool enclave server.
//!
//! [`KmsClient`] is the attested KMS client a Rust enclave application imports: it makes its
//! own enclave key, has the NSM attest it, and sends every operation that takes a `Recipient`
//! with one, so that the secret comes back sealed to that key and opens only in the enclave.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use kmstool_core::kms::client::ClientConfig;
//! use kmstool_core::protocol::{DataKeySize, Decrypt, GenerateDataKey, KeySpec};
//! use kmstool_core::secret::{Credentials, SecretString};
//! use kmstool_runtime_tokio::KmsClient;
//! use kmstool_runtime_tokio::nsm::NitroNsm;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Credentials the parent sent in (an instance role's, for example).
//!     let credentials = Credentials::new(
//!         "AKIDEXAMPLE",
//!         SecretString::new("the secret access key".into()),
//!         Some(SecretString::new("the session token".into())),
//!     );
//!     // KMS through the parent's vsock-proxy (vsock:3:8000), trusting Amazon Trust Services.
//!     let config = ClientConfig::new("eu-west-1")
//!         .credentials(credentials)
//!         .nsm(Arc::new(NitroNsm::open()?));
//!     let client = KmsClient::new(config).await?;
//!
//!     // A data key only this enclave sees in the clear; store its encrypted copy.
//!     let data_key = client
//!         .generate_data_key(GenerateDataKey {
//!             key_id: "alias/my-app".into(),
//!             size: DataKeySize::KeySpec(KeySpec::Aes256),
//!             encryption_context: Default::default(),
//!             grant_tokens: Vec::new(),
//!             dry_run: false,
//!         })
//!         .await?;
//!     // Later, the encrypted copy opens again, here only.
//!     let again = client.decrypt(Decrypt::new(data_key.ciphertext_blob)).await?;
//!     assert_eq!(again.plaintext, data_key.plaintext); // both zeroized when dropped
//!     Ok(())
//! }
//! ```
//!
//! The repository's `runtime-tokio/examples/kms_client.rs` runs the same against
//! `kmstool-sim`'s simulated NSM and KMS emulator, on any Linux machine.
//!
//! The rest of the crate carries out `kmstool_core`'s state machines with tokio's sockets
//! (vsock, TCP, Unix), TLS to KMS, the NSM device and timers: [`server::serve`] runs the
//! enclave server, one [`EnclaveSession`] per connection. Everything protocol-shaped is in
//! `kmstool-core`; this crate only moves bytes and time.
//!
//! [`EnclaveSession`]: kmstool_core::session::EnclaveSession
//!
//! # Rust versions and platforms
//!
//! The minimum supported Rust version is 1.95. This crate runs on Linux, on x86_64 and
//! aarch64, the architectures of Nitro Enclaves: vsock and the NSM device (`/dev/nsm`) are
//! Linux-only. It is built and tested on `x86_64-unknown-linux-gnu`; the aarch64 build is
//! written, not tried. Outside an enclave, `kmstool-sim`'s simulated NSM stands in for the
//! device.
#![deny(missing_docs)]

pub mod client;
mod driver;
pub mod keys;
pub mod kms;
pub mod kms_client;
pub mod net;
pub mod nsm;
pub mod server;

pub use kms_client::KmsClient;

/// What every session of a server shares: its settings, KMS connections, enclave key and
/// counters (core's [`kmstool_core::server::Shared`], with this runtime's key service and KMS
/// connector).
pub type Shared = kmstool_core::server::Shared<keys::KeyService, kms::KmsConnector>;

/// The runtime's clock: tokio's, so that a test's paused clock applies to every deadline.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
