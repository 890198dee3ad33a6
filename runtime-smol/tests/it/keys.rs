//! KeyService on smol with a module that never answers until the test lets it: NSM calls stay
//! on the bounded workers, callers fail at their deadline or at once beyond the queue, and the
//! key still rotates.
#![cfg(feature = "enclave")]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kmstool_core::keys::KeySettings;
use kmstool_core::nsm::gate::NsmLimits;
use kmstool_core::nsm::{Nsm, Request, Response};
use kmstool_core::session::AttestationFailure;
use kmstool_runtime_smol::keys::KeyService;
use smol::channel::{Receiver, Sender};

/// How long any wait here may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(60);

/// Every call waits on a channel that only closes (when the test drops its [`Sender`]), then
/// answers with the public key it was asked to attest.
struct StuckNsm {
    calls: AtomicUsize,
    gate: Receiver<()>,
}

impl Nsm for StuckNsm {
    fn process(&self, request: Request) -> Response {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.gate.recv_blocking();
        let Request::Attestation {
            public_key: Some(key),
            ..
        } = request
        else {
            return Response::Error(kmstool_core::nsm::ErrorCode::InvalidArgument);
        };
        Response::Attestation {
            document: key.into_vec(),
        }
    }
}

/// A service over a [`StuckNsm`]; drop the returned sender to let the module answer (it is
/// dropped at the end of each test, failed or not, so no thread stays blocked).
fn stuck(
    limits: NsmLimits,
    rotate_every: Option<Duration>,
) -> (Arc<KeyService>, Arc<StuckNsm>, Sender<()>) {
    let (unstick, gate) = smol::channel::bounded(1);
    let nsm = Arc::new(StuckNsm {
        calls: AtomicUsize::new(0),
        gate,
    });
    let settings = KeySettings::new(
        Arc::clone(&nsm) as Arc<dyn Nsm>,
        rotate_every,
        Duration::ZERO,
    );
    let service = KeyService::with_settings(KeySettings {
        nsm_limits: limits,
        ..settings
    });
    (service, nsm, unstick)
}

/// `future`, failing the test if it takes longer than [`LIMIT`].
async fn within<T>(future: impl Future<Output = T>) -> T {
    let late = async {
        smol::Timer::after(LIMIT).await;
        panic!("no result within {LIMIT:?}")
    };
    smol::future::or(future, late).await
}

/// Waits (at most [`LIMIT`]) until `ready` holds.
async fn until(ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !ready() && start.elapsed() < LIMIT {
        smol::Timer::after(Duration::from_millis(5)).await;
    }
    ready()
}

fn detail<T: std::fmt::Debug>(outcome: Result<T, AttestationFailure>) -> String {
    outcome
        .err()
        .map(|f| f.detail)
        .unwrap_or_else(|| "attested".to_owned())
}

#[test]
fn only_the_workers_block_in_a_stuck_nsm_and_everyone_else_fails_at_the_deadline() {
    let limits = NsmLimits {
        workers: 2,
        queue: 16,
        deadline: Duration::from_millis(250),
    };
    let (keys, nsm, unstick) = stuck(limits, None);
    smol::block_on(async {
        within(KeyService::store(&keys)).await.expect("first key");
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                smol::spawn({
                    let keys = Arc::clone(&keys);
                    async move { keys.attest().await }
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(
                detail(within(task).await),
                "NSM did not answer within 250 ms"
            );
        }
        assert_eq!(
            nsm.calls.load(Ordering::SeqCst),
            2,
            "more threads than workers in the NSM"
        );
        let workers = keys.nsm_workers().gate();
        assert_eq!(workers.running(), 2);
        assert_eq!(workers.waiting(), 0, "timed-out callers left the queue");

        drop(unstick);
        assert!(until(|| workers.running() == 0).await);
        let attested = within(keys.attest())
            .await
            .expect("attested once the module answers");
        assert_eq!(attested.document, attested.key.public_key_der());
        assert_eq!(nsm.calls.load(Ordering::SeqCst), 3);
    });
}

#[test]
fn with_the_queue_full_the_next_caller_is_told_at_once() {
    let limits = NsmLimits {
        workers: 1,
        queue: 2,
        deadline: LIMIT * 10,
    };
    let (keys, nsm, unstick) = stuck(limits, None);
    smol::block_on(async {
        within(keys.store()).await.expect("first key");
        let workers = keys.nsm_workers().gate();
        let mut callers = Vec::new();
        for waiting in 0..3 {
            let keys = Arc::clone(&keys);
            callers.push(smol::spawn(async move { keys.attest().await }));
            assert!(until(|| workers.running() == 1 && workers.waiting() == waiting).await);
        }
        assert_eq!(
            detail(within(keys.attest()).await),
            "NSM is busy: 2 calls already wait for it"
        );
        assert_eq!(nsm.calls.load(Ordering::SeqCst), 1);

        drop(unstick);
        for caller in callers {
            assert!(within(caller).await.is_ok());
        }
        assert_eq!(nsm.calls.load(Ordering::SeqCst), 3);
    });
}

#[test]
fn rotation_installs_new_keys_while_the_nsm_is_stuck() {
    let limits = NsmLimits {
        workers: 1,
        queue: 0,
        deadline: LIMIT * 10,
    };
    let (keys, nsm, unstick) = stuck(limits, Some(Duration::from_millis(150)));
    smol::block_on(async {
        within(keys.store()).await.expect("first key");
        let old = keys.current_key().expect("first key");
        let stuck_call = smol::spawn({
            let keys = Arc::clone(&keys);
            async move { keys.attest().await }
        });
        assert!(until(|| nsm.calls.load(Ordering::SeqCst) == 1).await);
        keys.spawn_rotation();
        assert!(
            until(|| keys.generation() > Some(0)).await,
            "the key did not rotate"
        );
        let new = keys.current_key().expect("a key");
        assert_ne!(old.public_key_der(), new.public_key_der());
        assert!(
            detail(within(keys.attest()).await).starts_with("NSM is busy"),
            "the one worker is still stuck"
        );

        drop(unstick);
        let attested = within(stuck_call).await.expect("the stuck call's document");
        assert!(Arc::ptr_eq(&attested.key, &old));
    });
}
