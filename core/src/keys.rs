//! The enclave's key pair and its attestation document, as policy: when to rotate the key,
//! and when a document may be reused. The runtimes generate keys and call the NSM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::crypto::{Backend, RecipientKey};
use crate::kms::request::AttestationDocument;
use crate::nsm::Nsm;
use crate::nsm::gate::NsmLimits;
use crate::session::Attestation;

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
    document: Option<(u64, AttestationDocument, Instant)>,
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
    pub fn store_document(
        &mut self,
        generation: u64,
        document: &AttestationDocument,
        now: Instant,
    ) {
        if !self.reuse_document_for.is_zero() && generation == self.generation {
            self.document = Some((generation, document.clone(), now));
        }
    }

    /// What an attestation for the current key needs at `now`: a document that may still be
    /// reused, or a call to the NSM for the key named. A runtime asks this under its lock,
    /// lets go of the lock while the NSM works, and reports with [`attested`](Self::attested).
    pub fn plan_attestation(&self, now: Instant) -> AttestationPlan {
        match self.reusable_document(now) {
            Some(attestation) => AttestationPlan::Reuse(attestation),
            None => AttestationPlan::Ask {
                key: Arc::clone(&self.key),
                generation: self.generation,
            },
        }
    }

    /// The NSM made `document` for `key` (of `generation`, as [`plan_attestation`] named it,
    /// asked at `now`): the attestation to hand out, kept for reuse when reuse is on and the
    /// key has not rotated since. A document for a rotated key still names that key.
    ///
    /// [`plan_attestation`]: Self::plan_attestation
    pub fn attested(
        &mut self,
        key: Arc<RecipientKey>,
        generation: u64,
        document: Vec<u8>,
        now: Instant,
    ) -> Attestation {
        let document = AttestationDocument::new(document);
        self.store_document(generation, &document, now);
        Attestation { key, document }
    }

    /// The current key's generation: 0 for the first key, one more at each rotation.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What [`EnclaveKeys::plan_attestation`] says an attestation needs.
#[derive(Debug)]
pub enum AttestationPlan {
    /// This document may be handed out again.
    Reuse(Attestation),
    /// Ask the NSM for a document binding `key` ([`crate::nsm::attest`], on a thread that may
    /// block), then report with [`EnclaveKeys::attested`].
    Ask {
        /// The key to attest.
        key: Arc<RecipientKey>,
        /// Its generation, for [`EnclaveKeys::attested`].
        generation: u64,
    },
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

    /// Keys with these settings starting with `key` at `now`.
    pub fn keys(&self, key: RecipientKey, now: Instant) -> EnclaveKeys {
        EnclaveKeys::new(key, now, self.rotate_every, self.reuse_document_for)
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

    /// The NSM's part, as a runtime would do it off its lock: a document for what `keys`
    /// plans at `now`, numbered by `nsm`.
    fn attest(keys: &mut EnclaveKeys, nsm: &CountingNsm, now: Instant) -> Attestation {
        match keys.plan_attestation(now) {
            AttestationPlan::Reuse(attestation) => attestation,
            AttestationPlan::Ask { key, generation } => {
                let document =
                    crate::nsm::attest(nsm, key.public_key_der()).unwrap_or_else(|e| panic!("{e}"));
                keys.attested(key, generation, document, now)
            }
        }
    }

    fn counting() -> CountingNsm {
        CountingNsm(AtomicU8::new(0))
    }

    fn reusable(keys: &EnclaveKeys, now: Instant) -> Option<Vec<u8>> {
        keys.reusable_document(now)
            .map(|a| a.document.as_bytes().to_vec())
    }

    #[test]
    fn a_plan_reuses_the_stored_document_without_the_nsm() {
        let start = Instant::now();
        let nsm = counting();
        let mut keys = EnclaveKeys::new(fixture_key(), start, None, Duration::from_secs(60));
        assert_eq!(reusable(&keys, start), None, "nothing stored yet");
        assert_eq!(attest(&mut keys, &nsm, start).document, vec![0x84, 1]);
        let later = start + Duration::from_secs(59);
        assert_eq!(attest(&mut keys, &nsm, later).document, vec![0x84, 1]);
        assert_eq!(nsm.0.load(Ordering::SeqCst), 1, "reuse asked the NSM again");
        let expired = start + Duration::from_secs(60);
        assert_eq!(reusable(&keys, expired), None);
        assert_eq!(attest(&mut keys, &nsm, expired).document, vec![0x84, 2]);
    }

    #[test]
    fn without_reuse_every_plan_asks_the_nsm() {
        let start = Instant::now();
        let nsm = counting();
        let mut keys = EnclaveKeys::new(fixture_key(), start, None, Duration::ZERO);
        assert_eq!(attest(&mut keys, &nsm, start).document, vec![0x84, 1]);
        assert_eq!(attest(&mut keys, &nsm, start).document, vec![0x84, 2]);
    }

    #[test]
    fn a_document_is_never_reused_past_the_cap_whatever_was_asked() {
        let start = Instant::now();
        let day = Duration::from_secs(24 * 60 * 60);
        for rotate_every in [None, Some(day)] {
            let nsm = counting();
            let mut keys = EnclaveKeys::new(fixture_key(), start, rotate_every, day);
            assert_eq!(attest(&mut keys, &nsm, start).document, vec![0x84, 1]);
            let just_inside = start + MAX_DOCUMENT_REUSE - Duration::from_millis(1);
            assert_eq!(reusable(&keys, just_inside), Some(vec![0x84, 1]));
            let at_cap = start + MAX_DOCUMENT_REUSE;
            assert_eq!(reusable(&keys, at_cap), None, "{rotate_every:?}");
            assert_eq!(attest(&mut keys, &nsm, at_cap).document, vec![0x84, 2]);
            assert_eq!(nsm.0.load(Ordering::SeqCst), 2);
        }
        let keys = EnclaveKeys::new(fixture_key(), start, None, Duration::MAX);
        assert_eq!(keys.reuse_document_for(), MAX_DOCUMENT_REUSE);
        let keys = EnclaveKeys::new(fixture_key(), start, None, Duration::from_secs(60));
        assert_eq!(keys.reuse_document_for(), Duration::from_secs(60));
    }

    #[test]
    fn a_document_that_comes_back_after_a_rotation_names_the_old_key_and_is_not_kept() {
        let start = Instant::now();
        let mut keys = EnclaveKeys::new(fixture_key(), start, None, Duration::from_secs(60));
        let AttestationPlan::Ask { key, generation } = keys.plan_attestation(start) else {
            panic!("nothing to reuse yet");
        };
        // While the NSM works (the runtime holds no lock), the key rotates.
        keys.rotate(fixture_key(), start);
        assert_eq!(keys.generation(), 1);
        let attestation = keys.attested(Arc::clone(&key), generation, vec![0x84], start);
        assert!(
            Arc::ptr_eq(&attestation.key, &key),
            "names the key it binds"
        );
        assert!(!Arc::ptr_eq(&keys.current().0, &key));
        assert_eq!(
            reusable(&keys, start),
            None,
            "a document for the old key is not reused for the new one"
        );
        match keys.plan_attestation(start) {
            AttestationPlan::Ask { generation, .. } => assert_eq!(generation, 1),
            AttestationPlan::Reuse(_) => panic!("reused a document of the old key"),
        }
    }

    #[test]
    fn settings_build_keys_and_say_when_reuse_is_capped() {
        let start = Instant::now();
        let nsm: Arc<dyn Nsm> = Arc::new(counting());
        let hour = Duration::from_secs(3600);
        let settings = KeySettings::new(Arc::clone(&nsm), Some(hour), MAX_DOCUMENT_REUSE);
        assert_eq!(settings.nsm_limits, NsmLimits::DEFAULT);
        assert!(!settings.reuse_capped());
        let keys = settings.keys(fixture_key(), start);
        assert_eq!(keys.rotation_due(), Some(start + hour));
        assert_eq!(keys.reuse_document_for(), MAX_DOCUMENT_REUSE);
        let more = KeySettings::new(nsm, None, MAX_DOCUMENT_REUSE + Duration::from_secs(1));
        assert!(more.reuse_capped());
        assert!(!format!("{more:?}").contains("CountingNsm"));
    }
}
