//! KeyService: the first key generated on demand or in the background, once; NSM calls on
//! bounded workers, with a queue and a deadline, and rotation that a hung NSM does not stop.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use kmstool_core::keys::KeySettings;
use kmstool_core::nsm::gate::NsmLimits;
use kmstool_core::nsm::{Nsm, Request, Response};
use kmstool_core::session::{Attestation, AttestationFailure};
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
    let keys = KeyService::with_settings(KeySettings::new(
        Arc::clone(&nsm) as Arc<dyn Nsm>,
        None,
        Duration::ZERO,
    ));
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
    let keys = KeyService::with_settings(KeySettings::new(nsm, None, Duration::from_secs(60)));
    keys.spawn_rotation();
    keys.store().await.unwrap_or_else(|e| panic!("{e}"));
    let attested = keys.attest().await.unwrap_or_else(|e| panic!("{e:?}"));
    let current = keys.current_key().expect("the first key exists");
    assert!(Arc::ptr_eq(&attested.key, &current));
    let again = keys.attest().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(again.document, attested.document, "reuse is on");
}

/// Upper bound on any wait in these tests, so that a bug fails them instead of hanging them.
const BOUND: Duration = Duration::from_secs(60);

/// A module that hangs: every call blocks until [`HungNsm::release`], then echoes the key.
#[derive(Default)]
struct HungNsm {
    entered: AtomicUsize,
    released: Mutex<bool>,
    wake: Condvar,
}

impl HungNsm {
    fn release(&self) {
        *self.released.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_all();
    }

    fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }
}

impl Nsm for HungNsm {
    fn process(&self, request: Request) -> Response {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let released = self.released.lock().unwrap_or_else(PoisonError::into_inner);
        let _released = self
            .wake
            .wait_while(released, |released| !*released)
            .unwrap_or_else(PoisonError::into_inner);
        EchoNsm::default().process(request)
    }
}

/// Releases the module's threads when the test ends, whether it passed or not.
struct ReleaseOnDrop(Arc<HungNsm>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Polls `done` until it holds or [`BOUND`] passes; says whether it held.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let give_up = tokio::time::Instant::now() + BOUND;
    while !done() {
        if tokio::time::Instant::now() > give_up {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

fn hung_service(
    workers: usize,
    queue: usize,
    deadline: Duration,
    rotate_every: Option<Duration>,
) -> (Arc<KeyService>, Arc<HungNsm>, ReleaseOnDrop) {
    let nsm = Arc::new(HungNsm::default());
    let keys = KeyService::with_settings(KeySettings {
        nsm_limits: NsmLimits {
            workers,
            queue,
            deadline,
        },
        ..KeySettings::new(Arc::clone(&nsm) as _, rotate_every, Duration::ZERO)
    });
    (keys, Arc::clone(&nsm), ReleaseOnDrop(nsm))
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within {BOUND:?}"))
}

fn failure(result: Result<Attestation, AttestationFailure>) -> String {
    match result {
        Ok(_) => panic!("attested by a hung NSM"),
        Err(failure) => failure.detail,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_nsm_holds_only_the_workers_and_callers_fail_at_the_deadline() {
    let (keys, nsm, _release) = hung_service(2, 8, Duration::from_millis(300), None);
    bounded("key generation", keys.store())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let keys = Arc::clone(&keys);
            tokio::spawn(async move { keys.attest().await })
        })
        .collect();
    for caller in callers {
        let result = bounded("a caller", caller)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The two on a worker and the four behind them alike: none is refused as busy.
        assert_eq!(failure(result), "NSM did not answer within 300 ms");
    }
    assert_eq!(
        nsm.entered(),
        2,
        "only the two workers ever reached the NSM"
    );
    let gate = keys.nsm_workers().gate();
    assert_eq!(
        (gate.running(), gate.waiting()),
        (2, 0),
        "hung calls keep their workers"
    );
    // The next caller finds both workers still hung: it waits out its own deadline.
    assert_eq!(
        failure(bounded("a later caller", keys.attest()).await),
        "NSM did not answer within 300 ms"
    );
    assert_eq!(nsm.entered(), 2);

    nsm.release();
    assert!(
        eventually(|| gate.running() == 0).await,
        "workers not freed"
    );
    let attested = bounded("attesting", keys.attest()).await;
    let attested = attested.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(attested.document, attested.key.public_key_der());
    assert_eq!(nsm.entered(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_beyond_the_queue_is_refused_at_once() {
    let (keys, nsm, _release) = hung_service(1, 1, BOUND * 2, None);
    bounded("key generation", keys.store())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let gate = keys.nsm_workers().gate();
    let on_worker = tokio::spawn({
        let keys = Arc::clone(&keys);
        async move { keys.attest().await }
    });
    assert!(
        eventually(|| nsm.entered() == 1).await,
        "the NSM was not called"
    );
    let queued = tokio::spawn({
        let keys = Arc::clone(&keys);
        async move { keys.attest().await }
    });
    assert!(
        eventually(|| gate.waiting() == 1).await,
        "the second caller did not queue"
    );
    // Refused without waiting for a deadline far beyond the test's bound.
    assert_eq!(
        failure(bounded("the refused caller", keys.attest()).await),
        "NSM is busy: 1 calls already wait for it"
    );
    assert_eq!((nsm.entered(), gate.waiting()), (1, 1));

    nsm.release();
    for caller in [on_worker, queued] {
        let result = bounded("a released caller", caller).await;
        let attested = result.unwrap_or_else(|e| panic!("{e}"));
        assert!(attested.is_ok(), "{attested:?}");
    }
    assert_eq!(nsm.entered(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_rotates_while_the_nsm_hangs() {
    let every = Duration::from_millis(200);
    let (keys, nsm, _release) = hung_service(1, 1, BOUND * 2, Some(every));
    let made = bounded("key generation", keys.store()).await;
    made.unwrap_or_else(|e| panic!("{e}"));
    let first = keys.current_key().expect("the first key exists");
    let hung = tokio::spawn({
        let keys = Arc::clone(&keys);
        async move { keys.attest().await }
    });
    assert!(
        eventually(|| nsm.entered() == 1).await,
        "the NSM was not called"
    );
    keys.spawn_rotation();
    assert!(
        eventually(|| keys.generation() >= Some(1)).await,
        "no rotation while the NSM hung"
    );
    let current = keys.current_key().expect("a key");
    assert_ne!(current.public_key_der(), first.public_key_der());
    assert_eq!(nsm.entered(), 1, "rotation does not call the NSM");

    nsm.release();
    let attested = bounded("the hung caller", hung)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let attested = attested.unwrap_or_else(|e| panic!("{e:?}"));
    assert!(
        Arc::ptr_eq(&attested.key, &first),
        "the document names the key it was asked for"
    );
    assert_eq!(attested.document, first.public_key_der());
}
