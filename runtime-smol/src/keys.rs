//! The enclave key pair on smol: generation (AWS-LC) and attestation on the blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::keys::KeyStore;
use kmstool_core::nsm::Nsm;
use kmstool_core::session::{Attestation, AttestationFailure};

/// Generates an RSA-2048 enclave key (e = 65537) for the default crypto backend.
pub fn generate_key() -> Result<RecipientKey, String> {
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048)
        .map_err(|_| "RSA key generation failed".to_owned())?;
    let der = key
        .as_der()
        .map_err(|_| "RSA key export failed".to_owned())?;
    RecipientKey::from_pkcs8_der(Backend::DEFAULT, der.as_ref()).map_err(|e| e.to_string())
}

/// Keys and attestation for every session of a server.
#[derive(Debug)]
pub struct KeyService {
    store: Arc<KeyStore>,
}

impl KeyService {
    /// Generates the first key on the blocking pool. No rotation here: the smol server exists
    /// to run the same sessions on a second runtime, production uses the tokio one. Documents
    /// are reused for `reuse_document_for`, at most [`kmstool_core::keys::MAX_DOCUMENT_REUSE`].
    pub async fn start(
        nsm: Arc<dyn Nsm>,
        reuse_document_for: Duration,
    ) -> Result<Arc<Self>, String> {
        let key = smol::unblock(generate_key).await?;
        let store = KeyStore::new(key, nsm, Instant::now(), None, reuse_document_for);
        Ok(Arc::new(Self {
            store: Arc::new(store),
        }))
    }

    /// An attestation document for the current key (see [`KeyStore::attest`]).
    pub async fn attest(&self) -> Result<Attestation, AttestationFailure> {
        let store = Arc::clone(&self.store);
        smol::unblock(move || store.attest(Instant::now())).await
    }
}
