//! [`KmsClient`]: AWS KMS from inside a Nitro enclave, in-process, every call attested.
//!
//! The client makes its own RSA-2048 enclave key, asks the NSM for an attestation document
//! binding it, and sends every operation that takes a `Recipient` with one, so that the
//! secret comes back sealed to the enclave key and opens only here. There is no unattested
//! fallback. It reaches KMS over TLS through the parent's vsock proxy, signs with SigV4,
//! retries within one deadline per call, and pools its connections. It is cheap to clone and
//! safe to share across tasks: clones share the key, the connections and the credentials.
//! `kmstool-runtime-smol` has the same client, from the same definition in `kmstool-core`.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use kmstool_core::kms::client::ClientConfig;
//! use kmstool_core::protocol::Decrypt;
//! use kmstool_core::secret::{Credentials, SecretString};
//! use kmstool_runtime_tokio::KmsClient;
//! use kmstool_runtime_tokio::nsm::NitroNsm;
//!
//! let credentials = Credentials::new(
//!     "AKIDEXAMPLE",
//!     SecretString::new("secret received from the parent".into()),
//!     None,
//! );
//! let config = ClientConfig::new("eu-west-1")
//!     .credentials(credentials)
//!     .nsm(Arc::new(NitroNsm::open()?));
//! let client = KmsClient::new(config).await?;
//! let ciphertext: Vec<u8> = std::fs::read("secret.bin")?;
//! let output = client.decrypt(Decrypt::new(ciphertext)).await?;
//! let plaintext: &[u8] = output.plaintext.expose(); // zeroized when `output` drops
//! # let _ = plaintext;
//! # Ok(()) }
//! ```
//!
//! The repository's `runtime-tokio/examples/kms_client.rs` runs the same against
//! `kmstool-sim`'s simulated NSM and KMS emulator.

use std::time::Instant;

use tokio::io::AsyncReadExt as _;

use crate::keys::KeyService;
use crate::kms::{KmsConnector, KmsStream};

kmstool_core::kms_client!(crate::now);

/// The first of the call's pending steps to finish, or its deadline.
async fn wait(io: &mut CallIo<'_>, buf: &mut [u8], deadline: Option<Instant>) -> Wake {
    tokio::select! {
        attested = pending(&mut io.attesting) => Wake::Attested(attested),
        (host, sent) = pending(&mut io.sending) => Wake::Sent(host, sent),
        read = read_answer(&mut io.answering, buf) => Wake::Answer(read),
        () = sleep_until(deadline) => Wake::Timer,
    }
}

/// The output of `future`; never, while there is none.
async fn pending<T>(future: &mut Option<Pending<'_, T>>) -> T {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Reads KMS's answer; never, while no request is out.
async fn read_answer(
    answering: &mut Option<(String, Box<KmsStream>)>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match answering {
        Some((_, stream)) => stream.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
