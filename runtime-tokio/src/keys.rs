//! The enclave key pair: generation (AWS-LC, drawing on the kernel RNG, which the NSM feeds),
//! rotation, and attestation with the NSM's blocking calls kept off the async threads.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::keys::{KeyStore, MAX_DOCUMENT_REUSE};
use kmstool_core::nsm::Nsm;
use kmstool_core::session::{Attestation, AttestationFailure};
use tokio::sync::OnceCell;
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
///
/// The first key can be generated in the background ([`KeyService::new`] then
/// [`KeyService::spawn_rotation`]): RSA-2048 generation takes tens to hundreds of
/// milliseconds, and a server need not wait for it to accept connections. A session that
/// asks for an attestation before the key exists waits for it.
pub struct KeyService {
    store: OnceCell<Arc<KeyStore>>,
    nsm: Arc<dyn Nsm>,
    rotate_every: Option<Duration>,
    reuse_document_for: Duration,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyService")
            .field("key_ready", &self.store.initialized())
            .field("rotate_every", &self.rotate_every)
            .field("reuse_document_for", &self.reuse_document_for)
            .finish_non_exhaustive()
    }
}

impl KeyService {
    /// A service whose first key is generated when first needed: by [`store`](Self::store),
    /// [`attest`](Self::attest), or the task [`spawn_rotation`](Self::spawn_rotation) starts.
    /// Documents are reused for `reuse_document_for`, at most [`MAX_DOCUMENT_REUSE`] (a
    /// warning says so when more is asked).
    pub fn new(
        nsm: Arc<dyn Nsm>,
        rotate_every: Option<Duration>,
        reuse_document_for: Duration,
    ) -> Arc<Self> {
        if reuse_document_for > MAX_DOCUMENT_REUSE {
            tracing::warn!(
                asked_secs = reuse_document_for.as_secs(),
                max_secs = MAX_DOCUMENT_REUSE.as_secs(),
                "attestation documents are reused for at most the maximum"
            );
        }
        Arc::new(Self {
            store: OnceCell::new(),
            nsm,
            rotate_every,
            reuse_document_for,
        })
    }

    /// Generates the first key (on a blocking thread) and returns the service.
    pub async fn start(
        nsm: Arc<dyn Nsm>,
        rotate_every: Option<Duration>,
        reuse_document_for: Duration,
    ) -> Result<Arc<Self>, String> {
        let service = Self::new(nsm, rotate_every, reuse_document_for);
        service.store().await?;
        Ok(service)
    }

    /// The key store, once the first key exists: generates it (on a blocking thread) if no
    /// one has yet, or waits for the generation under way. A failed generation is tried again
    /// by the next caller.
    pub async fn store(&self) -> Result<&Arc<KeyStore>, String> {
        self.store
            .get_or_try_init(|| async {
                let started = Instant::now();
                let key = tokio::task::spawn_blocking(generate_key)
                    .await
                    .map_err(|e| e.to_string())??;
                tracing::debug!(
                    ms = started.elapsed().as_millis() as u64,
                    "enclave key generated"
                );
                let store = KeyStore::new(
                    key,
                    Arc::clone(&self.nsm),
                    now(),
                    self.rotate_every,
                    self.reuse_document_for,
                );
                Ok(Arc::new(store))
            })
            .await
    }

    /// An attestation document for the current key (see [`KeyStore::attest`]), once the key
    /// exists. A reusable document comes back at once; only a call to the NSM goes to a
    /// blocking thread.
    pub async fn attest(&self) -> Result<Attestation, AttestationFailure> {
        let store = match self.store.get() {
            Some(store) => store,
            None => self.store().await.map_err(|detail| AttestationFailure {
                detail: format!("no enclave key: {detail}"),
            })?,
        };
        if let Some(reused) = store.reusable(now()) {
            return Ok(reused);
        }
        let store = Arc::clone(store);
        tokio::task::spawn_blocking(move || store.attest(now()))
            .await
            .map_err(|e| AttestationFailure {
                detail: format!("NSM task failed: {e}"),
            })?
    }

    /// Generates the first key if no one has asked for it yet, then rotates it whenever it is
    /// due, for as long as the service lives.
    pub fn spawn_rotation(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Some(service) = weak.upgrade()
                && let Err(error) = service.store().await
            {
                // Sessions asking for an attestation will try again.
                tracing::error!(%error, "generating the enclave key failed");
                return;
            }
            loop {
                // Only a weak reference across the sleep: the key goes when the service does.
                let due = weak
                    .upgrade()
                    .and_then(|service| service.store.get()?.rotation_due());
                let Some(due) = due else {
                    return;
                };
                tokio::time::sleep_until(due.into()).await;
                let Some(store) = weak.upgrade().and_then(|s| s.store.get().cloned()) else {
                    return;
                };
                match tokio::task::spawn_blocking(generate_key).await {
                    Ok(Ok(key)) => {
                        store.rotate(key, now());
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
