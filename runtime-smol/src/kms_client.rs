//! [`KmsClient`]: AWS KMS from inside a Nitro enclave, in-process, every call attested — the
//! same client as `kmstool-runtime-tokio`'s, with the same
//! [`ClientConfig`](kmstool_core::kms::client::ClientConfig) and methods, driven by smol.
//!
//! Every operation that takes a `Recipient` is sent with an attestation document binding the
//! client's own enclave key, so the secret comes back sealed to that key and opens only here;
//! there is no unattested fallback. The client is cheap to clone and safe to share: clones
//! share the key, the pooled connections and the credentials.
//!
//! ```no_run
//! # fn nsm() -> std::sync::Arc<dyn kmstool_core::nsm::Nsm> { unimplemented!() }
//! # fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use kmstool_core::kms::client::ClientConfig;
//! use kmstool_core::protocol::Decrypt;
//! use kmstool_core::secret::{Credentials, SecretString};
//! use kmstool_runtime_smol::kms_client::KmsClient;
//!
//! smol::block_on(async {
//!     let credentials = Credentials::new(
//!         "AKIDEXAMPLE",
//!         SecretString::new("secret received from the parent".into()),
//!         None,
//!     );
//!     // `nsm()`: the NSM device (kmstool-runtime-tokio's `NitroNsm` is runtime-agnostic) or
//!     // kmstool-sim's simulated one.
//!     let config = ClientConfig::new("eu-west-1").credentials(credentials).nsm(nsm());
//!     let client = KmsClient::new(config).await?;
//!     let output = client.decrypt(Decrypt::new(std::fs::read("secret.bin")?)).await?;
//!     let plaintext: &[u8] = output.plaintext.expose(); // zeroized when `output` drops
//!     # let _ = plaintext;
//!     Ok(())
//! })
//! # }
//! ```

use std::time::Instant;

use smol::future::{self, FutureExt as _};
use smol::io::AsyncReadExt as _;

use crate::keys::KeyService;
use crate::kms::{KmsConnector, KmsStream};

kmstool_core::kms_client!(crate::now);

/// The first of the call's pending steps to finish, or its deadline: a race, as the smol
/// session driver runs its own.
async fn wait(io: &mut CallIo<'_>, buf: &mut [u8], deadline: Option<Instant>) -> Wake {
    let attested = async {
        match io.attesting.as_mut() {
            Some(pending) => Wake::Attested(pending.await),
            None => future::pending().await,
        }
    };
    let sent = async {
        match io.sending.as_mut() {
            Some(pending) => {
                let (host, sent) = pending.await;
                Wake::Sent(host, sent)
            }
            None => future::pending().await,
        }
    };
    let answer = async {
        match io.answering.as_mut() {
            Some((_, stream)) => Wake::Answer(stream.read(buf).await),
            None => future::pending().await,
        }
    };
    let timer = async {
        match deadline {
            Some(at) => {
                smol::Timer::at(at).await;
                Wake::Timer
            }
            None => future::pending().await,
        }
    };
    attested.or(sent).or(answer).or(timer).await
}
