//! The sans-IO core of kmstool.
//!
//! Everything here turns bytes into events and decisions into bytes; nothing here opens a
//! socket, reads a file or a clock, or draws randomness. Time arrives as arguments (`now`),
//! randomness as seeds, and the runtimes (`kmstool-runtime-tokio`, `kmstool-runtime-smol`) move
//! the bytes. One exception: `crypto::RecipientKey::generate` makes the enclave key from
//! the operating system's RNG, so that every runtime makes it the same way.
#![deny(missing_docs)]

#[cfg(all(feature = "tls", not(any(feature = "aws-lc", feature = "rustcrypto"))))]
compile_error!("the `tls` feature needs a crypto backend: enable `aws-lc` or `rustcrypto`");

pub mod accept;
pub mod address;
pub mod attestation;
pub mod cms;
pub mod credentials;
pub mod crypto;
pub mod framing;
pub mod http;
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
pub mod sigv4;
#[cfg(feature = "tls")]
pub mod tls;
pub mod version;
