//! The Nitro Secure Module device (`/dev/nsm`) through `aws-nitro-enclaves-nsm-api`'s driver,
//! and [`NsmWorkers`], the bounded threads its blocking calls run on.

use std::io::Write as _;
use std::sync::Arc;

use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use aws_nitro_enclaves_nsm_api::driver;
use kmstool_core::nsm::Nsm;
use kmstool_core::nsm::gate::{NsmGate, NsmLimits, NsmUnavailable};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The NSM device of a Nitro enclave. Its calls are blocking ioctls: call
/// [`Nsm::process`] from a blocking thread ([`crate::keys::KeyService`] uses [`NsmWorkers`]).
#[derive(Debug)]
pub struct NitroNsm {
    fd: i32,
}

impl NitroNsm {
    /// Opens `/dev/nsm`. Fails outside an enclave.
    pub fn open() -> std::io::Result<Self> {
        let fd = driver::nsm_init();
        if fd < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "cannot open /dev/nsm: not running in a Nitro enclave (use kmstool-sim for development)",
            ));
        }
        Ok(Self { fd })
    }
}

impl Nsm for NitroNsm {
    fn process(&self, request: Request) -> Response {
        driver::nsm_process_request(self.fd, request)
    }
}

impl Drop for NitroNsm {
    fn drop(&mut self) {
        driver::nsm_exit(self.fd);
    }
}

/// Mixes `bytes` of NSM randomness into the kernel's pool, as upstream seeds its RNG from the
/// NSM at start. Writing to `/dev/random` adds entropy without crediting it; AWS-LC then draws
/// from the kernel.
pub fn seed_kernel_rng(nsm: &dyn Nsm, bytes: usize) -> Result<usize, String> {
    let random = kmstool_core::nsm::get_random(nsm, bytes).map_err(|e| e.to_string())?;
    let mut device = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/random")
        .map_err(|e| format!("/dev/random: {e}"))?;
    device
        .write_all(&random)
        .map_err(|e| format!("/dev/random: {e}"))?;
    Ok(random.len())
}

/// Blocking NSM calls on a bounded set of threads, with a bounded queue and a deadline (the
/// policy of [`kmstool_core::nsm::gate`], carried out with a tokio semaphore, the blocking
/// pool and timers).
///
/// At most [`NsmLimits::workers`] calls run at once, each on a blocking thread it keeps until
/// the module answers; a call whose caller gave up still holds its permit, so a hung module
/// ties up at most that many threads. Up to [`NsmLimits::queue`] callers wait for a permit;
/// one more is refused at once. Each caller gets its answer, or an error, by its deadline.
#[derive(Debug)]
pub struct NsmWorkers {
    gate: NsmGate,
    permits: Arc<Semaphore>,
}

impl NsmWorkers {
    /// Workers within `limits` (see [`NsmGate::new`] for how they are adjusted).
    pub fn new(limits: NsmLimits) -> Self {
        let gate = NsmGate::new(limits);
        let permits = Arc::new(Semaphore::new(gate.limits().workers));
        Self { gate, permits }
    }

    /// The admission counts and the limits in force.
    pub fn gate(&self) -> &NsmGate {
        &self.gate
    }

    /// Runs `call` (which talks to the NSM) on a worker thread and returns what it returns,
    /// unless the queue is full ([`NsmUnavailable::Busy`], at once) or the deadline passes
    /// first ([`NsmUnavailable::NoAnswer`]; `call` then still runs to its end, on its thread).
    pub async fn run<T, F>(&self, call: F) -> Result<T, NsmUnavailable>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let waiting = self.gate.admit(Instant::now().into_std())?;
        let deadline = Instant::from_std(waiting.deadline());
        let permits = Arc::clone(&self.permits);
        let permit = match tokio::time::timeout_at(deadline, permits.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            // Out of time (the semaphore is never closed).
            Ok(Err(_)) | Err(_) => return Err(waiting.timed_out()),
        };
        let running = waiting.start();
        let limits = running.limits();
        let task = tokio::task::spawn_blocking(move || {
            let answer = call();
            // The worker slot is free only once the module has answered.
            drop((running, permit));
            answer
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(NsmUnavailable::Lost),
            Err(_) => Err(limits.no_answer()),
        }
    }
}
