//! The enclave key pair on tokio: generation ([`RecipientKey::generate`], on the blocking
//! pool), rotation, and attestation with the NSM's blocking calls on bounded workers
//! ([`NsmWorkers`]).
//!
//! `runtime-smol` offers the same [`KeyService`] API on smol.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::keys::{AttestationPlan, EnclaveKeys, KeySettings, MAX_DOCUMENT_REUSE};

use kmstool_core::session::{Attestation, AttestationFailure};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::now;
use crate::nsm::NsmWorkers;

/// How long rotation waits after a failed key generation before it tries again.
const ROTATION_RETRY: Duration = Duration::from_secs(60);

/// Keys and attestation for every session of a server.
///
/// The first key can be generated in the background ([`KeyService::with_settings`] then
/// [`KeyService::spawn_rotation`]): RSA-2048 generation takes tens to hundreds of
/// milliseconds, and a server need not wait for it to accept connections. A session that
/// asks for an attestation before the key exists waits for it.
///
/// Calls to the NSM go through [`NsmWorkers`] (within [`KeySettings::nsm_limits`]): a hung module costs a caller at most the
/// deadline and the server at most `workers` threads. Rotation never waits for the NSM.
pub struct KeyService {
    /// Core's key policy, behind this runtime's lock (never held across an await or an NSM
    /// call); set once the first key exists.
    keys: OnceCell<Mutex<EnclaveKeys>>,
    settings: KeySettings,
    workers: NsmWorkers,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyService")
            .field("key_ready", &self.keys.initialized())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KeyService {
    /// A service whose first key is generated when first needed: by [`store`](Self::store),
    /// [`attest`](Self::attest), or the task [`spawn_rotation`](Self::spawn_rotation) starts.
    /// Documents are reused for at most [`MAX_DOCUMENT_REUSE`], whatever the settings ask (a
    /// warning says so when they ask for more).
    pub fn with_settings(settings: KeySettings) -> Arc<Self> {
        if settings.reuse_capped() {
            tracing::warn!(
                asked_secs = settings.reuse_document_for.as_secs(),
                max_secs = MAX_DOCUMENT_REUSE.as_secs(),
                "attestation documents are reused for at most the maximum"
            );
        }
        Arc::new(Self {
            keys: OnceCell::new(),
            workers: NsmWorkers::new(settings.nsm_limits),
            settings,
        })
    }

    /// Returns once the first key exists: generates it (on a blocking thread) if no one has
    /// yet, or waits for the generation under way. A failed generation is tried again by the
    /// next caller.
    pub async fn store(&self) -> Result<(), String> {
        self.ready().await.map(|_| ())
    }

    async fn ready(&self) -> Result<&Mutex<EnclaveKeys>, String> {
        self.keys
            .get_or_try_init(|| async {
                let started = Instant::now();
                let key = generate(self.settings.backend).await?;
                tracing::debug!(
                    ms = started.elapsed().as_millis() as u64,
                    "enclave key generated"
                );
                Ok(Mutex::new(self.settings.keys(key, now())))
            })
            .await
    }

    /// The current key, once the first exists.
    pub fn current_key(&self) -> Option<Arc<RecipientKey>> {
        self.keys.get().map(|keys| lock(keys).current().0)
    }

    /// The current key's generation (0 for the first key), once the first exists.
    pub fn generation(&self) -> Option<u64> {
        self.keys.get().map(|keys| lock(keys).generation())
    }

    /// The workers NSM calls run on: their limits, and how many calls run and wait.
    pub fn nsm_workers(&self) -> &NsmWorkers {
        &self.workers
    }

    /// An attestation document for the current key, once the key exists. A reusable
    /// document comes back at once; a call to the NSM goes to the bounded workers, and fails
    /// when they are busy or the deadline passes (see [`NsmWorkers::run`]). The lock is not
    /// held while the NSM works, so a hung module never stalls rotation or reuse.
    pub async fn attest(&self) -> Result<Attestation, AttestationFailure> {
        let keys = self.ready().await.map_err(|detail| AttestationFailure {
            detail: format!("no enclave key: {detail}"),
        })?;
        let at = now();
        let (key, generation) = match lock(keys).plan_attestation(at) {
            AttestationPlan::Reuse(attestation) => return Ok(attestation),
            AttestationPlan::Ask { key, generation } => (key, generation),
        };
        let nsm = Arc::clone(&self.settings.nsm);
        let subject = Arc::clone(&key);
        let made = self
            .workers
            .run(move || kmstool_core::nsm::attest(nsm.as_ref(), subject.public_key_der()))
            .await;
        let failed = |detail: String| AttestationFailure { detail };
        let document = made
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
        Ok(lock(keys).attested(key, generation, document, at))
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
                    .and_then(|service| lock(service.keys.get()?).rotation_due());
                let Some(due) = due else {
                    return;
                };
                tokio::time::sleep_until(due.into()).await;
                let generated = generate(backend).await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                let Some(keys) = service.keys.get() else {
                    return;
                };
                match generated {
                    Ok(key) => {
                        let mut keys = lock(keys);
                        keys.rotate(key, now());
                        tracing::info!(generation = keys.generation(), "enclave key rotated");
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

/// The keys, locked for one short use.
fn lock(keys: &Mutex<EnclaveKeys>) -> MutexGuard<'_, EnclaveKeys> {
    // Nothing panics while holding the lock; the keys stay consistent if something did.
    keys.lock().unwrap_or_else(PoisonError::into_inner)
}
