//! KeyService: the first key generated on demand or in the background, once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kmstool_core::nsm::{Nsm, Request, Response};
use kmstool_runtime_tokio::keys::KeyService;

/// Answers every attestation request with a document naming the public key it was given.
#[derive(Default)]
struct EchoNsm(AtomicUsize);

impl Nsm for EchoNsm {
    fn process(&self, request: Request) -> Response {
        self.0.fetch_add(1, Ordering::SeqCst);
        match request {
            Request::Attestation {
                public_key: Some(key),
                ..
            } => Response::Attestation {
                document: key.into_vec(),
            },
            _ => Response::Error(kmstool_core::nsm::ErrorCode::InvalidOperation),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_attestations_share_one_generated_key() {
    let nsm = Arc::new(EchoNsm::default());
    let keys = KeyService::new(Arc::clone(&nsm) as Arc<dyn Nsm>, None, Duration::ZERO);
    let (a, b) = tokio::join!(keys.attest(), keys.attest());
    let (a, b) = (
        a.unwrap_or_else(|e| panic!("{e:?}")),
        b.unwrap_or_else(|e| panic!("{e:?}")),
    );
    assert!(Arc::ptr_eq(&a.key, &b.key), "two keys were generated");
    assert_eq!(
        a.document,
        a.key.public_key_der(),
        "document for another key"
    );
    assert_eq!(
        nsm.0.load(Ordering::SeqCst),
        2,
        "no reuse: one NSM call each"
    );
}

#[tokio::test]
async fn spawn_rotation_generates_the_first_key_in_the_background() {
    let nsm: Arc<dyn Nsm> = Arc::new(EchoNsm::default());
    let keys = KeyService::new(nsm, None, Duration::from_secs(60));
    keys.spawn_rotation();
    let store = keys.store().await.unwrap_or_else(|e| panic!("{e}"));
    let attested = keys.attest().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert!(Arc::ptr_eq(&attested.key, &store.current_key()));
    let again = keys.attest().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(again.document, attested.document, "reuse is on");
}
