//! The enclave key pair on smol, with the API of `runtime-tokio`'s `KeyService`: generation
//! ([`RecipientKey::generate`] on the blocking pool), rotation, and attestation through the
//! bounded [`NsmWorkers`].

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::keys::{KeySettings, KeyStore, MAX_DOCUMENT_REUSE};
use kmstool_core::nsm::Nsm;
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
    store: OnceCell<Arc<KeyStore>>,
}

impl KeyService {
    /// A service with no key yet. `rotate_every`: a new key after this long (`None`: never);
    /// documents reused for `reuse_document_for`, at most [`MAX_DOCUMENT_REUSE`] (with a
    /// warning when more is asked); NSM calls within the default [`KeySettings::nsm_limits`].
    pub fn new(
        nsm: Arc<dyn Nsm>,
        rotate_every: Option<Duration>,
        reuse_document_for: Duration,
    ) -> Arc<Self> {
        let settings = KeySettings::new(nsm, rotate_every, reuse_document_for);
        Self::with_settings(settings)
    }

    /// A service with no key yet, configured by `settings` (NSM bounds included).
    pub fn with_settings(settings: KeySettings) -> Arc<Self> {
        if settings.reuse_capped() {
            let asked_secs = settings.reuse_document_for.as_secs();
            let max_secs = MAX_DOCUMENT_REUSE.as_secs();
            tracing::warn!(asked_secs, max_secs, "document reuse capped at the maximum");
        }
        let workers = NsmWorkers::new(settings.nsm_limits);
        let store = OnceCell::new();
        Arc::new(Self {
            settings,
            workers,
            store,
        })
    }

    /// The key store: at once when the first key exists; else after generating it (on the
    /// blocking pool) or waiting for the generation in progress. A caller after a failed
    /// generation tries again.
    pub async fn store(&self) -> Result<&Arc<KeyStore>, String> {
        let first = || async {
            let key = generate(self.settings.backend).await?;
            Ok(Arc::new(self.settings.store(key, Instant::now())))
        };
        self.store.get_or_try_init(first).await
    }

    /// The workers NSM calls run on: their limits, and how many calls run and wait.
    pub fn nsm_workers(&self) -> &NsmWorkers {
        &self.workers
    }

    /// A document for the current key ([`KeyStore::attest`]) once the key exists: a reusable
    /// one at once, else the NSM's answer through [`NsmWorkers::run`] (refused when its queue
    /// is full, an error at the deadline).
    pub async fn attest(&self) -> Result<Attestation, AttestationFailure> {
        let no_key = |detail| AttestationFailure {
            detail: format!("no enclave key: {detail}"),
        };
        let store = Arc::clone(self.store().await.map_err(no_key)?);
        let at = Instant::now();
        match store.reusable(at) {
            Some(reused) => Ok(reused),
            None => match self.workers.run(move || store.attest(at)).await {
                Ok(attested) => attested,
                Err(unavailable) => Err(AttestationFailure {
                    detail: unavailable.to_string(),
                }),
            },
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
    let store = || service.upgrade().and_then(|s| s.store.get().cloned());
    while let Some(due) = store().and_then(|store| store.rotation_due()) {
        Timer::at(due).await;
        let Some(current) = store() else { break };
        let Err(error) = generate(backend)
            .await
            .map(|key| current.rotate(key, Instant::now()))
        else {
            tracing::info!(generation = current.generation(), "enclave key rotated");
            continue;
        };
        tracing::error!(%error, "enclave key rotation failed; retrying in 60 s");
        Timer::after(RETRY_AFTER_FAILED_ROTATION).await;
    }
}

/// A new key in the default backend, made on the blocking pool.
async fn generate(backend: Backend) -> Result<RecipientKey, String> {
    let made = smol::unblock(move || RecipientKey::generate(backend)).await;
    made.map_err(|e| e.to_string())
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ready = self.store.is_initialized();
        f.debug_struct("KeyService")
            .field("settings", &self.settings)
            .field("key_ready", &ready)
            .finish_non_exhaustive()
    }
}
