//! [`NsmWorkers`]: the NSM's blocking calls on a bounded set of smol's blocking threads.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use kmstool_core::nsm::gate::{NsmGate, NsmLimits, NsmUnavailable};
use smol::Timer;
use smol::lock::Semaphore;

/// Blocking NSM calls on a bounded set of threads, with a bounded queue and a deadline (the
/// policy of [`kmstool_core::nsm::gate`], carried out with an `async-lock` semaphore,
/// `blocking`'s pool and `async-io` timers).
///
/// At most [`NsmLimits::workers`] calls run at once; a call whose caller gave up keeps its
/// permit until the module answers, so a hung module holds at most that many threads. Up to
/// [`NsmLimits::queue`] callers wait; one more is refused at once. Every caller has its
/// answer, or an error, by its deadline.
#[derive(Debug)]
pub struct NsmWorkers {
    /// One permit a worker thread.
    slots: Arc<Semaphore>,
    gate: NsmGate,
}

impl NsmWorkers {
    /// Workers within `limits` (adjusted as [`NsmGate::new`] says).
    pub fn new(limits: NsmLimits) -> Self {
        let gate = NsmGate::new(limits);
        Self {
            slots: Arc::new(Semaphore::new(gate.limits().workers)),
            gate,
        }
    }

    /// The limits in force and the admission counts.
    pub fn gate(&self) -> &NsmGate {
        &self.gate
    }

    /// Runs `call` (a call to the NSM) on a worker thread. Refused at once
    /// ([`NsmUnavailable::Busy`]) when the queue is full; [`NsmUnavailable::NoAnswer`] when
    /// the deadline passes first, `call` then running on to its end on its thread.
    pub async fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NsmUnavailable> {
        let waiting = self.gate.admit(Instant::now())?;
        let deadline = waiting.deadline();
        let Some(permit) = until(deadline, self.slots.acquire_arc()).await else {
            return Err(waiting.timed_out());
        };
        let running = waiting.start();
        let limits = running.limits();
        let mut task = smol::unblock(move || {
            let answer = call();
            // Only now, with the module's answer in, are the thread and its permit free.
            drop((permit, running));
            answer
        });
        match until(deadline, &mut task).await {
            Some(answer) => Ok(answer),
            None => {
                // Let a call in progress finish (and free its permit) on its own.
                task.detach();
                Err(limits.no_answer())
            }
        }
    }
}

/// `future`'s output, or `None` once `deadline` has passed.
async fn until<T>(deadline: Instant, future: impl Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(future.await) }, async {
        Timer::at(deadline).await;
        None
    })
    .await
}
