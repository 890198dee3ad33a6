//! AWS KMS from inside a Nitro enclave, attested, on smol (feature `enclave`) — and the smol
//! runtime of kmstool.
//!
//! `kms_client::KmsClient` is the same attested client as `kmstool-runtime-tokio`'s, made
//! from the same `ClientConfig`:
//!
//! ```ignore
//! use kmstool_core::kms::client::ClientConfig;
//! use kmstool_core::protocol::Decrypt;
//! use kmstool_runtime_smol::kms_client::KmsClient;
//!
//! smol::block_on(async {
//!     let config = ClientConfig::new("eu-west-1")
//!         .credentials(credentials) // kmstool_core::secret::Credentials
//!         .nsm(nsm); // the NSM device, or kmstool-sim's simulated one
//!     let client = KmsClient::new(config).await?;
//!     let plaintext = client.decrypt(Decrypt::new(ciphertext)).await?.plaintext;
//!     # Ok::<_, kmstool_core::kms::client::ClientError>(())
//! })
//! ```
//!
//! (The `kms_client` module's documentation has it in full, compiled.) Every operation that
//! takes a `Recipient` is sent with an attestation document for the client's own enclave key,
//! so the secret opens only in the enclave; `encrypt` takes none, as KMS requires.
//!
//! Besides, the crate carries sockets (vsock via `async-io`, TCP, Unix), TLS to KMS, and the
//! loops that drive `kmstool_core`'s state machines — the parent's [`InstanceClient`] for
//! `kmstool-instance`, and the enclave's `EnclaveSession` (`kmstool_core::session`, which the
//! `enclave` feature brings in), the same sessions the tokio runtime serves, to keep the core
//! honest about being runtime-agnostic.
//!
//! [`InstanceClient`]: kmstool_core::instance::InstanceClient
//!
//! # Features, Rust versions and platforms
//!
//! Without features the crate is the parent's side only (no rustls, no crypto backend); the
//! `enclave` feature, with `aws-lc` or `rustcrypto`, adds the enclave's side and `KmsClient`.
//! The minimum supported Rust version is 1.95. The crate runs on Linux, on x86_64 and aarch64,
//! the architectures of Nitro Enclaves and their parent instances: vsock and `/dev/nsm` are
//! Linux-only. It is built and tested on `x86_64-unknown-linux-gnu`; the aarch64 build is
//! written, not tried.
#![deny(missing_docs)]

#[cfg(all(
    feature = "enclave",
    not(any(feature = "aws-lc", feature = "rustcrypto"))
))]
compile_error!("the `enclave` feature needs a crypto backend: enable `aws-lc` or `rustcrypto`");

pub mod client;
pub mod credentials;
#[cfg(feature = "enclave")]
mod driver;
#[cfg(feature = "enclave")]
pub mod keys;
#[cfg(feature = "enclave")]
pub mod kms;
#[cfg(feature = "enclave")]
pub mod kms_client;
pub mod net;
#[cfg(feature = "enclave")]
pub mod nsm;
#[cfg(feature = "enclave")]
pub mod server;

/// What every session of a smol server shares: core's [`kmstool_core::server::Shared`] with
/// smol's [`keys::KeyService`] and [`kms::KmsConnector`].
#[cfg(feature = "enclave")]
pub type Shared = kmstool_core::server::Shared<keys::KeyService, kms::KmsConnector>;

/// The runtime's clock, as the tokio runtime names its own.
#[cfg(feature = "enclave")]
pub(crate) fn now() -> std::time::Instant {
    std::time::Instant::now()
}
