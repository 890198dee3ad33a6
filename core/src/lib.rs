//! The sans-IO core of kmstool.
//!
//! Everything here turns bytes into events and decisions into bytes; nothing here opens a
//! socket, reads a file or a clock, or draws randomness. Time arrives as arguments (`now`),
//! randomness as seeds, and the runtimes (`kmstool-runtime-tokio`, `kmstool-runtime-smol`) move
//! the bytes.
#![deny(missing_docs)]

pub mod credentials;
pub mod http;
/// AWS KMS over JSON 1.1: request and response bodies.
pub mod kms;
pub mod secret;
