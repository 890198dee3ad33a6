//! The emulator's attestation check with a memory: a document verified once is accepted again
//! without its signature check for a minute of the emulator's clock.
//!
//! [`NsmRootVerifier`](crate::kms::NsmRootVerifier) already validates a certificate chain only
//! once; this also skips the document's own ECDSA P-384 verification, work that would
//! otherwise share the enclave's CPUs on every request. With attestation reuse the enclave
//! sends one document many times, and the emulator then does almost none of its own. Only a document that passed is remembered, keyed by its SHA-256, and only for
//! [`REMEMBER_FOR`] of the clock the emulator verifies with, so a test that moves that clock
//! past a certificate's expiry still sees the document refused.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use crate::kms::{AttestationVerifier, AttestedRecipient};

/// How long a verified document is accepted without verifying it again.
pub const REMEMBER_FOR: Duration = Duration::from_secs(60);
/// Documents remembered at most (then the memory starts over).
const CAPACITY: usize = 4096;

/// Wraps a verifier with a memory of the documents it accepted.
pub struct CachedVerifier<V> {
    inner: V,
    verified: Mutex<HashMap<[u8; 32], (SystemTime, AttestedRecipient)>>,
}

impl<V> CachedVerifier<V> {
    /// Remembers what `inner` accepts.
    pub fn new(inner: V) -> Self {
        Self {
            inner,
            verified: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: fmt::Debug> fmt::Debug for CachedVerifier<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedVerifier")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<V: AttestationVerifier> AttestationVerifier for CachedVerifier<V> {
    fn verify(&self, document: &[u8], at: SystemTime) -> Result<AttestedRecipient, String> {
        let digest: [u8; 32] = Sha256::digest(document).into();
        let remembered = {
            let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            verified.get(&digest).and_then(|(when, recipient)| {
                let age = at.duration_since(*when).ok()?;
                (age < REMEMBER_FOR).then(|| recipient.clone())
            })
        };
        if let Some(recipient) = remembered {
            return Ok(recipient);
        }
        let recipient = self.inner.verify(document, at)?;
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= CAPACITY {
            verified.clear();
        }
        verified.insert(digest, (at, recipient.clone()));
        Ok(recipient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Accepts documents starting with `b'ok'`, counting the calls.
    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    impl AttestationVerifier for Counting {
        fn verify(&self, document: &[u8], _at: SystemTime) -> Result<AttestedRecipient, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            if document.starts_with(b"ok") {
                Ok(AttestedRecipient {
                    public_key: document.to_vec(),
                    pcrs: Default::default(),
                })
            } else {
                Err("refused".to_owned())
            }
        }
    }

    fn calls(verifier: &CachedVerifier<Counting>) -> usize {
        verifier.inner.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_verified_document_is_accepted_again_without_the_inner_verifier() {
        let verifier = CachedVerifier::new(Counting::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = verifier.verify(b"ok-1", t0);
        let again = verifier.verify(b"ok-1", t0 + Duration::from_secs(59));
        assert_eq!(first, again);
        assert_eq!(first.map(|r| r.public_key), Ok(b"ok-1".to_vec()));
        assert_eq!(calls(&verifier), 1);
        assert!(verifier.verify(b"ok-2", t0).is_ok(), "another document");
        assert_eq!(calls(&verifier), 2);
    }

    #[test]
    fn memory_ends_after_a_minute_of_the_verifying_clock_or_when_it_goes_back() {
        let verifier = CachedVerifier::new(Counting::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(verifier.verify(b"ok", t0).is_ok());
        assert!(verifier.verify(b"ok", t0 + REMEMBER_FOR).is_ok());
        assert_eq!(calls(&verifier), 2, "verified again after a minute");
        assert!(verifier.verify(b"ok", t0).is_ok());
        assert_eq!(calls(&verifier), 3, "verified again for an earlier time");
    }

    #[test]
    fn refusals_are_not_remembered() {
        let verifier = CachedVerifier::new(Counting::default());
        let t0 = SystemTime::UNIX_EPOCH;
        assert_eq!(verifier.verify(b"bad", t0), Err("refused".to_owned()));
        assert_eq!(verifier.verify(b"bad", t0), Err("refused".to_owned()));
        assert_eq!(calls(&verifier), 2);
    }
}
