//! The smol runtime of kmstool: sockets (vsock via `async-io`, TCP, Unix), TLS to KMS, and the
//! loops that drive `kmstool_core`'s state machines — the parent's [`InstanceClient`] for
//! `kmstool-instance`, and the enclave's [`EnclaveSession`], the same sessions the tokio runtime
//! serves, to keep the core honest about being runtime-agnostic.
//!
//! [`InstanceClient`]: kmstool_core::instance::InstanceClient
//! [`EnclaveSession`]: kmstool_core::session::EnclaveSession
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
pub mod net;
#[cfg(feature = "enclave")]
pub mod nsm;
#[cfg(feature = "enclave")]
pub mod server;

/// What every session of a smol server shares: core's [`kmstool_core::server::Shared`] with
/// smol's [`keys::KeyService`] and [`kms::KmsConnector`].
#[cfg(feature = "enclave")]
pub type Shared = kmstool_core::server::Shared<keys::KeyService, kms::KmsConnector>;
