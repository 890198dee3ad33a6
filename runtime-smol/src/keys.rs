//! The enclave key pair on smol, with the API of `runtime-tokio`'s `KeyService`: generation
//! ([`RecipientKey::generate`] on the blocking pool), rotation, and attestation through the
//! bounded [`NsmWorkers`].

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::keys::{AttestationPlan, EnclaveKeys, KeySettings, MAX_DOCUMENT_REUSE};
use kmstool_core::nsm;
use kmstool_core::session::{Attestation, AttestationFailure};
use smol::Timer;
use smol::lock::OnceCell;

use crate::nsm::NsmWorkers;

/// The pause after a failed rotation before the next attempt.
const RETRY_AFTER_FAILED_ROTATION: Duration = Duration::from_secs(60);

/// Keys and attestation for every session of a server.
///
/// The first key is made on first use ([`store`](Self::store), [`attest`](Self::attest)), or
/// in the background by [`spawn_rotation`](Self::spawn_rotation);
/// sessions that need it before it exists wait for it. NSM calls run on [`NsmWorkers`]
/// (within [`KeySettings::nsm_limits`]); key rotation never waits for them.
pub struct KeyService {
    settings: KeySettings,
    workers: NsmWorkers,
    /// Core's key policy behind a lock held only for short, non-blocking uses; set once the
    /// first key exists.
    keys: OnceCell<Mutex<EnclaveKeys>>,
}

impl KeyService {
    /// A service with no key yet, configured by `settings` (NSM bounds included).
    pub fn with_settings(settings: KeySettings) -> Arc<Self> {
        if settings.reuse_capped() {
            let asked_secs = settings.reuse_document_for.as_secs();
            let max_secs = MAX_DOCUMENT_REUSE.as_secs();
            tracing::warn!(asked_secs, max_secs, "document reuse capped at the maximum");
        }
        let workers = NsmWorkers::new(settings.nsm_limits);
        Arc::new(Self {
            settings,
            workers,
            keys: OnceCell::new(),
        })
    }

    /// Done at once when the first key exists; else after generating it (on the blocking
    /// pool) or waiting for the generation in progress. A caller after a failed generation
    /// tries again.
    pub async fn store(&self) -> Result<(), String> {
        self.keys().await.map(|_| ())
    }

    async fn keys(&self) -> Result<&Mutex<EnclaveKeys>, String> {
        let first = || async {
            let key = generate(self.settings.backend).await?;
            Ok(Mutex::new(self.settings.keys(key, Instant::now())))
        };
        self.keys.get_or_try_init(first).await
    }

    /// The current key, if the first one exists.
    pub fn current_key(&self) -> Option<Arc<RecipientKey>> {
        Some(locked(self.keys.get()?).current().0)
    }

    /// How many times the key rotated, if the first one exists.
    pub fn generation(&self) -> Option<u64> {
        Some(locked(self.keys.get()?).generation())
    }

    /// The workers NSM calls run on: their limits, and how many calls run and wait.
    pub fn nsm_workers(&self) -> &NsmWorkers {
        &self.workers
    }

    /// A document for the current key once the key exists: a reusable one at once, else the
    /// NSM's answer through [`NsmWorkers::run`] (refused when its queue is full, an error at
    /// the deadline), with no lock held while the module works.
    pub async fn attest(&self) -> Result<Attestation, AttestationFailure> {
        let failure = |detail: String| AttestationFailure { detail };
        let keys = self
            .keys()
            .await
            .map_err(|detail| failure(format!("no enclave key: {detail}")))?;
        let at = Instant::now();
        let (key, generation) = match locked(keys).plan_attestation(at) {
            AttestationPlan::Reuse(reused) => return Ok(reused),
            AttestationPlan::Ask { key, generation } => (key, generation),
        };
        let nsm = Arc::clone(&self.settings.nsm);
        let der = Arc::clone(&key);
        match self
            .workers
            .run(move || nsm::attest(nsm.as_ref(), der.public_key_der()))
            .await
        {
            Ok(Ok(document)) => Ok(locked(keys).attested(key, generation, document, at)),
            Ok(Err(error)) => Err(failure(error.to_string())),
            Err(unavailable) => Err(failure(unavailable.to_string())),
        }
    }

    /// Starts a detached task on smol's global executor: it makes the first key if it does
    /// not exist yet, then a new one whenever one is due, until the service is dropped. It
    /// generates on the blocking pool and never waits for the NSM workers.
    pub fn spawn_rotation(self: &Arc<Self>) {
        smol::spawn(rotate(Arc::downgrade(self), self.settings.backend)).detach();
    }
}

/// The rotation task: holds the service only while it works, never while it sleeps.
async fn rotate(service: Weak<KeyService>, backend: Backend) {
    let first = match service.upgrade() {
        Some(service) => service.store().await.map(|_| ()),
        None => return,
    };
    if let Err(error) = first {
        // Sessions will try again when they need the key.
        tracing::error!(%error, "generating the enclave key failed");
        return;
    }
    let due = || {
        let service = service.upgrade()?;
        locked(service.keys.get()?).rotation_due()
    };
    while let Some(at) = due() {
        Timer::at(at).await;
        let made = generate(backend).await;
        let Some(service) = service.upgrade() else {
            break;
        };
        let Some(keys) = service.keys.get() else {
            break;
        };
        let Err(error) = made.map(|key| locked(keys).rotate(key, Instant::now())) else {
            let generation = locked(keys).generation();
            tracing::info!(generation, "enclave key rotated");
            continue;
        };
        tracing::error!(%error, "enclave key rotation failed; retrying in 60 s");
        Timer::after(RETRY_AFTER_FAILED_ROTATION).await;
    }
}

/// The keys, locked for one short use (poisoning cannot leave them inconsistent: nothing
/// panics under the lock).
fn locked(keys: &Mutex<EnclaveKeys>) -> MutexGuard<'_, EnclaveKeys> {
    keys.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A new key in the default backend, made on the blocking pool.
async fn generate(backend: Backend) -> Result<RecipientKey, String> {
    let made = smol::unblock(move || RecipientKey::generate(backend)).await;
    made.map_err(|e| e.to_string())
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ready = self.keys.is_initialized();
        f.debug_struct("KeyService")
            .field("settings", &self.settings)
            .field("key_ready", &ready)
            .finish_non_exhaustive()
    }
}
