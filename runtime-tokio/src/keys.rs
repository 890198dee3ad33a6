//! The enclave key pair: generation (AWS-LC, drawing on the kernel RNG, which the NSM feeds),
//! rotation, and attestation with the NSM's blocking calls kept off the async threads.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::keys::KeyStore;
use kmstool_core::nsm::Nsm;
use kmstool_core::session::{Attestation, AttestationFailure};
use tokio::time::Instant;

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
    /// Generates the first key (on a blocking thread) and returns the service.
    pub async fn start(
        nsm: Arc<dyn Nsm>,
        rotate_every: Option<Duration>,
        reuse_document_for: Duration,
    ) -> Result<Arc<Self>, String> {
        let key = tokio::task::spawn_blocking(generate_key)
            .await
            .map_err(|e| e.to_string())??;
        let store = KeyStore::new(key, nsm, now(), rotate_every, reuse_document_for);
        Ok(Arc::new(Self {
            store: Arc::new(store),
        }))
    }

    /// An attestation document for the current key (see [`KeyStore::attest`]). A reusable
    /// document comes back at once; only a call to the NSM goes to a blocking thread.
    pub async fn attest(&self) -> Result<Attestation, AttestationFailure> {
        if let Some(reused) = self.store.reusable(now()) {
            return Ok(reused);
        }
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.attest(now()))
            .await
            .map_err(|e| AttestationFailure {
                detail: format!("NSM task failed: {e}"),
            })?
    }

    /// The key store.
    pub fn store(&self) -> &Arc<KeyStore> {
        &self.store
    }

    /// Rotates the key whenever it is due, for as long as the service lives.
    pub fn spawn_rotation(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(due) = weak.upgrade().and_then(|s| s.store.rotation_due()) else {
                    return;
                };
                tokio::time::sleep_until(due.into()).await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                match tokio::task::spawn_blocking(generate_key).await {
                    Ok(Ok(key)) => {
                        service.store.rotate(key, now());
                        tracing::info!("enclave key rotated");
                    }
                    Ok(Err(error)) => {
                        tracing::error!(%error, "enclave key rotation failed; retrying in 60 s");
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Err(error) => {
                        tracing::error!(%error, "enclave key rotation task failed");
                        return;
                    }
                }
            }
        });
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}
