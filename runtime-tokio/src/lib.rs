//! The tokio runtime of kmstool: sockets (vsock, TCP, Unix), TLS to KMS, the NSM device,
//! timers, and the loop that drives `kmstool_core`'s [`EnclaveSession`] per connection.
//!
//! Everything protocol-shaped is in `kmstool-core`; this crate only moves bytes and time.
//!
//! [`EnclaveSession`]: kmstool_core::session::EnclaveSession
#![deny(missing_docs)]

pub mod client;
mod driver;
pub mod keys;
pub mod kms;
pub mod net;
pub mod nsm;
pub mod server;

/// What every session of a server shares: its settings, KMS connections, enclave key and
/// counters (core's [`kmstool_core::server::Shared`], with this runtime's key service and KMS
/// connector).
pub type Shared = kmstool_core::server::Shared<keys::KeyService, kms::KmsConnector>;
