//! The sans-IO core of kmstool: the enclave protocol, KMS requests and responses, and the
//! state machines that decide everything a runtime does, with no IO, no async and no clock.
//!
//! # The state machines, in reading order
//!
//! 1. [`kms::call::Call`]: one attested KMS call — attestation, signed request, retries and
//!    backoff within its deadline, response, CMS unwrap. Start here.
//! 2. [`session::EnclaveSession`]: one client connection of the enclave server, from framed
//!    commands to replies, running a `Call` per KMS command.
//! 3. [`server::Acceptor`]: the server's accept loop (admission, backoff, drain).
//! 4. [`instance::InstanceClient`]: the parent's side of one exchange with the enclave.
//! 5. [`credentials::CredentialFetch`]: the parent's HTTP credential sources,
//!    [`credentials::imds::ImdsClient`] and [`credentials::container::ContainerClient`].
//!
//! [`kms::client`] holds what the runtimes' attested library clients share (`KmsClient` in
//! `kmstool-runtime-tokio` and `kmstool-runtime-smol`): their settings, typed results and
//! errors.
//!
//! All of them are driven alike: feed one input with a `handle_*` method, passing the
//! driver's `now`; then drain the `poll_*` methods (`poll_output`, `poll_transmit`, ...) and
//! carry out what they return; then wait for input or for the instant `poll_timeout`
//! returns, and call `handle_timeout`. Each type's documentation has a runnable example.
//!
//! Around them: [`protocol`] (commands and replies, one definition per wire name),
//! [`framing`], [`kms`] (requests and responses), [`cms`] (opening
//! `CiphertextForRecipient`), [`crypto`] (the AWS-LC and RustCrypto backends).
//!
//! Time arrives as arguments (`now`), randomness as seeds, and the runtimes
//! (`kmstool-runtime-tokio`, `kmstool-runtime-smol`) move the bytes. One exception:
//! `crypto::RecipientKey::generate` makes the enclave key from the operating system's RNG, so
//! that every runtime makes it the same way.
//!
//! # Rust versions and platforms
//!
//! The minimum supported Rust version is 1.95. kmstool runs on Linux, on x86_64 and aarch64,
//! the architectures of Nitro Enclaves and their parent instances: vsock and `/dev/nsm`, which
//! the runtimes use, are Linux-only. This crate itself does no IO and has no platform-specific
//! code, but it is built and tested only on `x86_64-unknown-linux-gnu`; the aarch64 build is
//! written, not tried.
#![deny(missing_docs)]

#[cfg(all(feature = "tls", not(any(feature = "aws-lc", feature = "rustcrypto"))))]
compile_error!("the `tls` feature needs a crypto backend: enable `aws-lc` or `rustcrypto`");

pub mod accept;
pub mod address;
pub mod cms;
pub mod credentials;
pub mod crypto;
pub mod framing;
/// HTTP/1.1 request writing and response parsing for the KMS and credential clients. Public
/// only with `_internal_test_exports` (the simulator and the fuzz targets use it); the types
/// that appear in public signatures are re-exported below.
#[cfg(feature = "_internal_test_exports")]
pub mod http;
#[cfg(not(feature = "_internal_test_exports"))]
mod http;
pub mod instance;
#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
pub mod keys;
pub mod kms;
pub mod nsm;
pub mod pool;
pub mod protocol;
pub mod secret;
#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
pub mod server;
#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
pub mod session;
/// SigV4 signing through `aws-sigv4`. Public only with `_internal_test_exports` (the simulator's
/// KMS emulator and the signing vectors use it); [`SignError`] is re-exported below.
#[cfg(feature = "_internal_test_exports")]
pub mod sigv4;
#[cfg(not(feature = "_internal_test_exports"))]
mod sigv4;
#[cfg(feature = "tls")]
pub mod tls;
pub mod version;

pub use http::{HttpError, HttpLimits, RequestError};
pub use sigv4::SignError;
