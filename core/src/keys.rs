//! The enclave's key pair and its attestation document, as policy: when to rotate the key,
//! and when a document may be reused. The runtimes generate keys and call the NSM.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::crypto::{Backend, RecipientKey};
use crate::nsm::gate::NsmLimits;
use crate::nsm::{self, Nsm};
use crate::session::{Attestation, AttestationFailure};

/// How long an attestation document may be reused, at most, whatever a caller asks for.
///
/// KMS checks a document's signature chain when a call arrives, and the NSM's leaf certificate
/// in it lives about three hours on real hardware, counted from when the NSM issued the leaf
/// rather than from when it signed the document: an old leaf may have little of its life left.
/// What KMS sees of the document's age is its `timestamp`, and AWS accepts five minutes of age
/// on a signed request. Five minutes keeps a reused document as fresh as a signature KMS
/// accepts, far inside the leaf's life, and still spares the NSM all but one call in five
/// minutes under load.
pub const MAX_DOCUMENT_REUSE: Duration = Duration::from_secs(5 * 60);

/// The current enclave key and, when reuse is on, its last attestation document.
#[derive(Debug)]
pub struct EnclaveKeys {
    key: Arc<RecipientKey>,
    generation: u64,
    created: Instant,
    rotate_every: Option<Duration>,
    reuse_document_for: Duration,
    document: Option<(u64, Vec<u8>, Instant)>,
}

impl EnclaveKeys {
    /// Starts with `key`. `rotate_every`: replace the key after this long (`None`: never).
    /// `reuse_document_for`: hand out one attestation document for this long, at most
    /// [`MAX_DOCUMENT_REUSE`] (zero: a fresh document for every KMS call, as upstream does).
    pub fn new(
        key: RecipientKey,
        now: Instant,
        rotate_every: Option<Duration>,
        reuse_document_for: Duration,
    ) -> Self {
        Self {
            key: Arc::new(key),
            generation: 0,
            created: now,
            rotate_every,
            reuse_document_for: reuse_document_for.min(MAX_DOCUMENT_REUSE),
            document: None,
        }
    }

    /// How long a document is reused: what was asked for, capped at [`MAX_DOCUMENT_REUSE`].
    pub fn reuse_document_for(&self) -> Duration {
        self.reuse_document_for
    }

    /// The current key and its generation number.
    pub fn current(&self) -> (Arc<RecipientKey>, u64) {
        (Arc::clone(&self.key), self.generation)
    }

    /// When the key is due for rotation, if ever.
    pub fn rotation_due(&self) -> Option<Instant> {
        self.rotate_every.map(|every| self.created + every)
    }

    /// Installs a new key; the old one stays alive in calls that still hold it.
    pub fn rotate(&mut self, key: RecipientKey, now: Instant) {
        self.key = Arc::new(key);
        self.generation += 1;
        self.created = now;
        self.document = None;
    }

    /// A document for the current key that may still be reused.
    pub fn reusable_document(&self, now: Instant) -> Option<Attestation> {
        let (generation, document, at) = self.document.as_ref()?;
        let fresh = *generation == self.generation
            && now.saturating_duration_since(*at) < self.reuse_document_for;
        fresh.then(|| Attestation {
            key: Arc::clone(&self.key),
            document: document.clone(),
        })
    }

    /// Remembers a document made at `now` for key `generation` (ignored when reuse is off or
    /// the key has rotated since).
    pub fn store_document(&mut self, generation: u64, document: &[u8], now: Instant) {
        if !self.reuse_document_for.is_zero() && generation == self.generation {
            self.document = Some((generation, document.to_vec(), now));
        }
    }
}

/// What a runtime's key service is made of: the NSM, the key and document policy, and the
/// bounds on NSM calls. Both runtimes' `KeyService`s take one, so they are configured alike.
#[derive(Clone)]
pub struct KeySettings {
    /// The module that attests the keys.
    pub nsm: Arc<dyn Nsm>,
    /// Replace the key after this long (`None`: never).
    pub rotate_every: Option<Duration>,
    /// Reuse a document this long, as asked (the store caps it at [`MAX_DOCUMENT_REUSE`]).
    pub reuse_document_for: Duration,
    /// Bounds on the calls to the NSM.
    pub nsm_limits: NsmLimits,
    /// The crypto backend of the keys made ([`Backend::DEFAULT`] unless chosen).
    pub backend: Backend,
}

impl KeySettings {
    /// Settings with the default NSM bounds ([`NsmLimits::DEFAULT`]).
    pub fn new(
        nsm: Arc<dyn Nsm>,
        rotate_every: Option<Duration>,
        reuse_document_for: Duration,
    ) -> Self {
        Self {
            nsm,
            rotate_every,
            reuse_document_for,
            nsm_limits: NsmLimits::DEFAULT,
            backend: Backend::DEFAULT,
        }
    }

    /// Whether more reuse was asked than [`MAX_DOCUMENT_REUSE`] allows (runtimes warn).
    pub fn reuse_capped(&self) -> bool {
        self.reuse_document_for > MAX_DOCUMENT_REUSE
    }

    /// A store with these settings starting with `key` at `now`.
    pub fn store(&self, key: RecipientKey, now: Instant) -> KeyStore {
        KeyStore::new(
            key,
            Arc::clone(&self.nsm),
            now,
            self.rotate_every,
            self.reuse_document_for,
        )
    }
}

impl std::fmt::Debug for KeySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySettings")
            .field("rotate_every", &self.rotate_every)
            .field("reuse_document_for", &self.reuse_document_for)
            .field("nsm_limits", &self.nsm_limits)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// [`EnclaveKeys`] shared by every session, with the NSM that attests them.
///
/// [`KeyStore::attest`] blocks on the NSM (an ioctl on `/dev/nsm`): runtimes call it from a
/// blocking thread (one of the workers [`crate::nsm::gate`] bounds). It performs no IO itself
/// beyond calling the [`Nsm`] it was given, and never holds its lock while the NSM works: a
/// hung module stalls only the calls waiting for it, never [`rotate`](Self::rotate),
/// [`reusable`](Self::reusable) or [`current_key`](Self::current_key).
pub struct KeyStore {
    keys: Mutex<EnclaveKeys>,
    nsm: Arc<dyn Nsm>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

impl KeyStore {
    /// A store starting with `key`; see [`EnclaveKeys::new`] for the policy arguments.
    pub fn new(
        key: RecipientKey,
        nsm: Arc<dyn Nsm>,
        now: Instant,
        rotate_every: Option<Duration>,
        reuse_document_for: Duration,
    ) -> Self {
        Self {
            keys: Mutex::new(EnclaveKeys::new(key, now, rotate_every, reuse_document_for)),
            nsm,
        }
    }

    /// A document for the current key that may still be reused, if any. Never blocks on the
    /// NSM: runtimes try this on their async thread before handing [`attest`](Self::attest)
    /// to a blocking one.
    pub fn reusable(&self, now: Instant) -> Option<Attestation> {
        self.lock().reusable_document(now)
    }

    /// An attestation document for the current key: reused when allowed, else fresh from the
    /// NSM (blocking, without the store's lock held). A document that comes back after the
    /// key rotated is returned for the key it names, but not kept for reuse.
    pub fn attest(&self, now: Instant) -> Result<Attestation, AttestationFailure> {
        let (key, generation) = {
            let keys = self.lock();
            if let Some(cached) = keys.reusable_document(now) {
                return Ok(cached);
            }
            keys.current()
        };
        let document = nsm::attest(self.nsm.as_ref(), key.public_key_der()).map_err(|e| {
            AttestationFailure {
                detail: e.to_string(),
            }
        })?;
        self.lock().store_document(generation, &document, now);
        Ok(Attestation { key, document })
    }

    /// When the key is due for rotation.
    pub fn rotation_due(&self) -> Option<Instant> {
        self.lock().rotation_due()
    }

    /// Installs a fresh key.
    pub fn rotate(&self, key: RecipientKey, now: Instant) {
        self.lock().rotate(key, now);
    }

    /// The current key.
    pub fn current_key(&self) -> Arc<RecipientKey> {
        self.lock().current().0
    }

    /// The current key's generation: 0 for the first key, one more at each rotation.
    pub fn generation(&self) -> u64 {
        self.lock().current().1
    }

    fn lock(&self) -> MutexGuard<'_, EnclaveKeys> {
        // Nothing panics while holding the lock; if something did, the state is still valid.
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nsm::{Request, Response};
    use std::sync::atomic::{AtomicU8, Ordering};

    /// Numbers its documents 1, 2, 3… so a test sees which one it got.
    struct CountingNsm(AtomicU8);

    impl Nsm for CountingNsm {
        fn process(&self, _request: Request) -> Response {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Response::Attestation {
                document: vec![0x84, n],
            }
        }
    }

    fn fixture_key() -> RecipientKey {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/kms/real-kms-decrypt-with-key.key.pem"
        );
        let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        RecipientKey::from_pem(Backend::DEFAULT, &pem)
            .unwrap_or_else(|e| panic!("fixture key: {e}"))
    }

    fn new_store(reuse: Duration, now: Instant) -> (KeyStore, Arc<CountingNsm>) {
        let nsm = Arc::new(CountingNsm(AtomicU8::new(0)));
        let store = KeyStore::new(
            fixture_key(),
            Arc::clone(&nsm) as Arc<dyn Nsm>,
            now,
            None,
            reuse,
        );
        (store, nsm)
    }

    fn document(attestation: Option<Attestation>) -> Option<Vec<u8>> {
        attestation.map(|a| a.document)
    }

    #[test]
    fn reusable_hands_out_the_stored_document_without_the_nsm() {
        let start = Instant::now();
        let (store, nsm) = new_store(Duration::from_secs(60), start);
        assert_eq!(document(store.reusable(start)), None, "nothing stored yet");
        let first = store.attest(start).map(|a| a.document);
        assert_eq!(first, Ok(vec![0x84, 1]));
        let later = start + Duration::from_secs(59);
        assert_eq!(document(store.reusable(later)), Some(vec![0x84, 1]));
        assert_eq!(nsm.0.load(Ordering::SeqCst), 1, "reuse asked the NSM again");
        let expired = start + Duration::from_secs(60);
        assert_eq!(document(store.reusable(expired)), None);
        assert_eq!(store.attest(expired).map(|a| a.document), Ok(vec![0x84, 2]));
    }

    #[test]
    fn a_document_is_never_reused_past_the_cap_whatever_was_asked() {
        let start = Instant::now();
        let day = Duration::from_secs(24 * 60 * 60);
        for rotate_every in [None, Some(day)] {
            let nsm = Arc::new(CountingNsm(AtomicU8::new(0)));
            let store = KeyStore::new(
                fixture_key(),
                Arc::clone(&nsm) as Arc<dyn Nsm>,
                start,
                rotate_every,
                day,
            );
            assert_eq!(store.attest(start).map(|a| a.document), Ok(vec![0x84, 1]));
            let just_inside = start + MAX_DOCUMENT_REUSE - Duration::from_millis(1);
            assert_eq!(document(store.reusable(just_inside)), Some(vec![0x84, 1]));
            let at_cap = start + MAX_DOCUMENT_REUSE;
            assert_eq!(document(store.reusable(at_cap)), None, "{rotate_every:?}");
            assert_eq!(store.attest(at_cap).map(|a| a.document), Ok(vec![0x84, 2]));
            assert_eq!(nsm.0.load(Ordering::SeqCst), 2);
        }
        let keys = EnclaveKeys::new(fixture_key(), start, None, Duration::MAX);
        assert_eq!(keys.reuse_document_for(), MAX_DOCUMENT_REUSE);
        let keys = EnclaveKeys::new(fixture_key(), start, None, Duration::from_secs(60));
        assert_eq!(keys.reuse_document_for(), Duration::from_secs(60));
    }

    /// Blocks in `process` until the test sends on the channel (or drops it).
    struct HeldNsm {
        entered: std::sync::mpsc::SyncSender<()>,
        release: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl Nsm for HeldNsm {
        fn process(&self, _request: Request) -> Response {
            let _ = self.entered.send(());
            if let Ok(release) = self.release.lock() {
                let _ = release.recv();
            }
            Response::Attestation {
                document: vec![0x84],
            }
        }
    }

    #[test]
    fn rotation_does_not_wait_for_an_nsm_call_in_progress() {
        use std::sync::mpsc;
        let bound = Duration::from_secs(30);
        let (entered_tx, entered) = mpsc::sync_channel(1);
        let (release, release_rx) = mpsc::channel();
        let nsm = Arc::new(HeldNsm {
            entered: entered_tx,
            release: Mutex::new(release_rx),
        });
        let start = Instant::now();
        let store = Arc::new(KeyStore::new(
            fixture_key(),
            nsm,
            start,
            None,
            Duration::from_secs(60),
        ));
        let first_key = store.current_key();
        let attesting = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.attest(start))
        };
        assert_eq!(
            entered.recv_timeout(bound),
            Ok(()),
            "the NSM was not called"
        );
        // The NSM holds the attesting thread; rotating on another thread must still finish.
        let (rotated_tx, rotated) = mpsc::channel();
        let rotating = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                store.rotate(fixture_key(), start);
                let _ = rotated_tx.send((store.generation(), store.reusable(start).is_none()));
            })
        };
        let outcome = rotated.recv_timeout(bound);
        let _ = release.send(());
        assert_eq!(outcome, Ok((1, true)), "rotation waited for the NSM");
        let attested = attesting.join().map_err(|_| "attesting thread panicked");
        let attested = attested.and_then(|a| a.map_err(|_| "attestation failed"));
        let attested = attested.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            Arc::ptr_eq(&attested.key, &first_key),
            "document names the old key"
        );
        assert!(!Arc::ptr_eq(&store.current_key(), &first_key));
        assert_eq!(
            document(store.reusable(start)),
            None,
            "a document for the old key is not reused for the new one"
        );
        assert!(rotating.join().is_ok());
    }

    #[test]
    fn settings_build_stores_and_say_when_reuse_is_capped() {
        let start = Instant::now();
        let nsm: Arc<dyn Nsm> = Arc::new(CountingNsm(AtomicU8::new(0)));
        let hour = Duration::from_secs(3600);
        let settings = KeySettings::new(Arc::clone(&nsm), Some(hour), MAX_DOCUMENT_REUSE);
        assert_eq!(settings.nsm_limits, NsmLimits::DEFAULT);
        assert!(!settings.reuse_capped());
        let store = settings.store(fixture_key(), start);
        assert_eq!(store.rotation_due(), Some(start + hour));
        assert_eq!(store.attest(start).map(|a| a.document), Ok(vec![0x84, 1]));
        let just_inside = start + MAX_DOCUMENT_REUSE - Duration::from_millis(1);
        assert!(store.reusable(just_inside).is_some());
        let more = KeySettings::new(nsm, None, MAX_DOCUMENT_REUSE + Duration::from_secs(1));
        assert!(more.reuse_capped());
        assert!(!format!("{more:?}").contains("CountingNsm"));
    }

    #[test]
    fn reusable_is_empty_when_reuse_is_off_or_the_key_rotated() {
        let start = Instant::now();
        let (store, _) = new_store(Duration::ZERO, start);
        assert!(store.attest(start).is_ok());
        assert_eq!(document(store.reusable(start)), None);

        let (store, _) = new_store(Duration::from_secs(60), start);
        assert!(store.attest(start).is_ok());
        store.rotate(fixture_key(), start);
        assert_eq!(document(store.reusable(start)), None);
    }
}
