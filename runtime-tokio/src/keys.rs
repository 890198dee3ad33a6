//! The enclave key pair on tokio: generation ([`RecipientKey::generate`], on the blocking
//! pool), rotation, and attestation with the NSM's blocking calls on bounded workers
//! ([`NsmWorkers`]).
//!
//! `runtime-smol` offers the same [`KeyService`] API on smol.

use std::sync::Arc;
use std::time::Duration;

use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::keys::{KeySettings, KeyStore, MAX_DOCUMENT_REUSE};
use kmstool_core::nsm::Nsm;
use kmstool_core::session::{Attestation, AttestationFailure};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::nsm::NsmWorkers;

/// How long rotation waits after a failed key generation before it tries again.
const ROTATION_RETRY: Duration = Duration::from_secs(60);

/// Keys and attestation for every session of a server.
///
/// The first key can be generated in the background ([`KeyService::new`] then
/// [`KeyService::spawn_rotation`]): RSA-2048 generation takes tens to hundreds of
/// milliseconds, and a server need not wait for it to accept connections. A session that
/// asks for an attestation before the key exists waits for it.
///
/// Calls to the NSM go through [`NsmWorkers`] (within [`KeySettings::nsm_limits`]): a hung module costs a caller at most the
/// deadline and the server at most `workers` threads. Rotation never waits for the NSM.
pub struct KeyService {
    store: OnceCell<Arc<KeyStore>>,
    settings: KeySettings,
    workers: NsmWorkers,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyService")
            .field("key_ready", &self.store.initialized())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KeyService {
    /// A service whose first key is generated when first needed: by [`store`](Self::store),
    /// [`attest`](Self::attest), or the task [`spawn_rotation`](Self::spawn_rotation) starts.
    /// `rotate_every`: replace the key after this long (`None`: never). Documents are reused
    /// for `reuse_document_for`, at most [`MAX_DOCUMENT_REUSE`] (a warning says so when more is
    /// asked). NSM calls within [`NsmLimits::DEFAULT`](kmstool_core::nsm::gate::NsmLimits).
    pub fn new(
        nsm: Arc<dyn Nsm>,
        rotate_every: Option<Duration>,
        reuse_document_for: Duration,
    ) -> Arc<Self> {
        Self::with_settings(KeySettings::new(nsm, rotate_every, reuse_document_for))
    }

    /// [`new`](Self::new) with every setting given, the NSM bounds included.
    pub fn with_settings(settings: KeySettings) -> Arc<Self> {
        if settings.reuse_capped() {
            tracing::warn!(
                asked_secs = settings.reuse_document_for.as_secs(),
                max_secs = MAX_DOCUMENT_REUSE.as_secs(),
                "attestation documents are reused for at most the maximum"
            );
        }
        Arc::new(Self {
            store: OnceCell::new(),
            workers: NsmWorkers::new(settings.nsm_limits),
            settings,
        })
    }

    /// The key store, once the first key exists: generates it (on a blocking thread) if no
    /// one has yet, or waits for the generation under way. A failed generation is tried again
    /// by the next caller.
    pub async fn store(&self) -> Result<&Arc<KeyStore>, String> {
        self.store
            .get_or_try_init(|| async {
                let started = Instant::now();
                let key = generate(self.settings.backend).await?;
                tracing::debug!(
                    ms = started.elapsed().as_millis() as u64,
                    "enclave key generated"
                );
                Ok(Arc::new(self.settings.store(key, now())))
            })
            .await
    }

    /// The workers NSM calls run on: their limits, and how many calls run and wait.
    pub fn nsm_workers(&self) -> &NsmWorkers {
        &self.workers
    }

    /// An attestation document for the current key (see [`KeyStore::attest`]), once the key
    /// exists. A reusable document comes back at once; a call to the NSM goes to the bounded
    /// workers, and fails when they are busy or the deadline passes (see [`NsmWorkers::run`]).
    pub async fn attest(&self) -> Result<Attestation, AttestationFailure> {
        let store = match self.store.get() {
            Some(store) => store,
            None => self.store().await.map_err(|detail| AttestationFailure {
                detail: format!("no enclave key: {detail}"),
            })?,
        };
        let at = now();
        if let Some(reused) = store.reusable(at) {
            return Ok(reused);
        }
        let store = Arc::clone(store);
        self.workers
            .run(move || store.attest(at))
            .await
            .map_err(|e| AttestationFailure {
                detail: e.to_string(),
            })?
    }

    /// Generates the first key if no one has asked for it yet, then rotates it whenever it is
    /// due, for as long as the service lives. Rotation generates on the blocking pool and
    /// never waits for the NSM workers.
    pub fn spawn_rotation(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let backend = self.settings.backend;
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
                match generate(backend).await {
                    Ok(key) => {
                        store.rotate(key, now());
                        tracing::info!(generation = store.generation(), "enclave key rotated");
                    }
                    Err(error) => {
                        tracing::error!(%error, "enclave key rotation failed; retrying in 60 s");
                        tokio::time::sleep(ROTATION_RETRY).await;
                    }
                }
            }
        });
    }
}

/// A fresh key from the default backend, generated on the blocking pool.
async fn generate(backend: Backend) -> Result<RecipientKey, String> {
    tokio::task::spawn_blocking(move || RecipientKey::generate(backend))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}
