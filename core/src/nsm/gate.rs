//! How many calls may wait for the NSM, and for how long: the admission policy the runtimes
//! carry out with their own threads, semaphores and timers.
//!
//! `/dev/nsm` is a blocking ioctl, and a module that stops answering would hold every thread
//! that calls it. So the runtimes put NSM calls on a fixed number of worker slots
//! ([`NsmLimits::workers`], each a blocking thread while in use), let a bounded number of
//! callers wait for a slot ([`NsmLimits::queue`]; one more is refused at once with
//! [`NsmUnavailable::Busy`]), and give every caller a deadline ([`NsmLimits::deadline`],
//! counted from admission; past it the caller gets [`NsmUnavailable::NoAnswer`]). A call whose
//! caller gave up keeps its slot until the module answers: at most `workers` threads ever hang
//! in the module, and callers beyond them wait and then fail in bounded time.
//!
//! [`NsmGate`] keeps the counts. The runtime's part, in order:
//!
//! 1. [`NsmGate::admit`] at `now`: refused, or a [`Waiting`] ticket with its deadline.
//! 2. Wait for one of `workers` permits (a semaphore) until the deadline. On time out,
//!    [`Waiting::timed_out`] leaves the queue and gives the error to report.
//! 3. [`Waiting::start`] turns the ticket into a [`Running`] one; move it and the permit into
//!    the blocking call, so both are released when the module answers, not before.
//! 4. Wait for the answer until the same deadline; on time out report
//!    [`NsmLimits::no_answer`] and leave the call running.
//!
//! Dropping a ticket (a caller cancelled while waiting, a call finished) updates the counts, so
//! cancellation needs no care. Nothing here reads a clock, blocks or locks: the two counts
//! share one atomic word, so admission reads and changes them in one step.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest deadline [`NsmGate`] applies, whatever [`NsmLimits::deadline`] asks for.
pub const MAX_NSM_DEADLINE: Duration = Duration::from_secs(60 * 60);

/// Bounds on the calls to the NSM. [`NsmLimits::DEFAULT`]: 2 workers, 1024 waiting, 10 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsmLimits {
    /// Calls to the module at once, hung ones included: at most this many threads ever block
    /// in the module. At least 1 is used.
    pub workers: usize,
    /// Callers that may wait for a worker; one more is refused at once.
    pub queue: usize,
    /// How long a caller waits, in the queue and for the module together, from admission.
    /// At most [`MAX_NSM_DEADLINE`] is used.
    pub deadline: Duration,
}

impl NsmLimits {
    /// Two workers (a healthy module answers in milliseconds, and one hung call leaves one
    /// worker to find out whether the next also hangs), 1024 waiting callers, ten seconds.
    ///
    /// A session waits for at most one document at a time, so a server passes its connection
    /// limit as the queue: a load the connection limit admits is never refused as busy (a
    /// waiting caller costs a few hundred bytes), and the deadline still bounds every wait.
    pub const DEFAULT: NsmLimits = NsmLimits {
        workers: 2,
        queue: 1024,
        deadline: Duration::from_secs(10),
    };

    /// The error for a caller whose deadline passed before the module answered.
    pub fn no_answer(&self) -> NsmUnavailable {
        NsmUnavailable::NoAnswer {
            within: self.deadline.min(MAX_NSM_DEADLINE),
        }
    }

    /// The error for a caller refused because the queue is full.
    pub fn busy(&self) -> NsmUnavailable {
        NsmUnavailable::Busy {
            waiting: self.queue,
        }
    }
}

impl Default for NsmLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a call was not put to the NSM, or not answered in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsmUnavailable {
    /// The queue was full: `waiting` callers already waited for a worker.
    Busy {
        /// Callers already waiting.
        waiting: usize,
    },
    /// The deadline passed first (in the queue, or in a module that did not answer).
    NoAnswer {
        /// The deadline.
        within: Duration,
    },
    /// The worker ended without an answer (the call panicked: a bug, never bad input).
    Lost,
}

impl fmt::Display for NsmUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy { waiting } => {
                write!(f, "NSM is busy: {waiting} calls already wait for it")
            }
            Self::NoAnswer { within } if within.subsec_nanos() == 0 => {
                write!(f, "NSM did not answer within {} s", within.as_secs())
            }
            Self::NoAnswer { within } => {
                write!(f, "NSM did not answer within {} ms", within.as_millis())
            }
            Self::Lost => f.write_str("NSM call ended without an answer"),
        }
    }
}

impl std::error::Error for NsmUnavailable {}

/// The counts behind [`NsmGate`], in one atomic word: calls on a worker (hung ones whose
/// caller gave up included) in the high half, admitted callers not yet on a worker in the low.
#[derive(Debug, Default)]
struct Counts(AtomicU64);

/// One call running, in [`Counts`].
const RUNNING: u64 = 1 << 32;
/// One caller waiting, in [`Counts`].
const WAITING: u64 = 1;

impl Counts {
    /// (running, waiting).
    fn read(&self) -> (usize, usize) {
        split(self.0.load(Ordering::Acquire))
    }

    fn add(&self, delta: u64) {
        self.0.fetch_add(delta, Ordering::AcqRel);
    }

    fn sub(&self, delta: u64) {
        self.0.fetch_sub(delta, Ordering::AcqRel);
    }
}

fn split(word: u64) -> (usize, usize) {
    ((word >> 32) as usize, (word & 0xffff_ffff) as usize)
}

/// Admission to the NSM's workers: who may wait, until when, and how many are busy. Cheap to
/// clone; clones share the counts.
#[derive(Clone, Debug)]
pub struct NsmGate {
    limits: NsmLimits,
    counts: Arc<Counts>,
}

impl NsmGate {
    /// A gate with `limits` (at least one worker, the deadline at most [`MAX_NSM_DEADLINE`]).
    pub fn new(limits: NsmLimits) -> Self {
        Self {
            limits: NsmLimits {
                workers: limits.workers.max(1),
                queue: limits.queue,
                deadline: limits.deadline.min(MAX_NSM_DEADLINE),
            },
            counts: Arc::default(),
        }
    }

    /// The limits in force (after the adjustments [`new`](Self::new) makes).
    pub fn limits(&self) -> NsmLimits {
        self.limits
    }

    /// A caller asks for the module at `now`. Admitted while fewer than `queue` callers wait
    /// beyond the free workers (a caller that a free worker will take at once does not count
    /// against the queue); refused with [`NsmUnavailable::Busy`] otherwise.
    pub fn admit(&self, now: Instant) -> Result<Waiting, NsmUnavailable> {
        let admitted = self
            .counts
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let (running, waiting) = split(word);
                let free = self.limits.workers.saturating_sub(running);
                // The queue fits in the low half: at most u32::MAX - 1 callers wait.
                let room = self
                    .limits
                    .queue
                    .saturating_add(free)
                    .min(u32::MAX as usize - 1);
                (waiting < room).then_some(word + WAITING)
            });
        if admitted.is_err() {
            return Err(self.limits.busy());
        }
        // An instant an hour ahead cannot overflow on a real clock; if it did, the caller
        // times out at once rather than never.
        let deadline = now.checked_add(self.limits.deadline).unwrap_or(now);
        Ok(Waiting {
            gate: self.clone(),
            deadline,
            left: false,
        })
    }

    /// Callers admitted and not yet on a worker.
    pub fn waiting(&self) -> usize {
        self.counts.read().1
    }

    /// Calls on a worker, hung ones whose caller gave up included.
    pub fn running(&self) -> usize {
        self.counts.read().0
    }
}

/// An admitted caller waiting for a worker. Dropping it leaves the queue.
#[derive(Debug)]
pub struct Waiting {
    gate: NsmGate,
    deadline: Instant,
    /// Already moved out of `waiting` (by `start`), so `drop` must not.
    left: bool,
}

impl Waiting {
    /// When the caller stops waiting, for a worker and for the module's answer together.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// The caller got a worker: it leaves the queue and the call counts as running until the
    /// returned ticket drops (when the module has answered).
    pub fn start(mut self) -> Running {
        // Leaves the queue and starts running in one step.
        self.gate.counts.add(RUNNING - WAITING);
        self.left = true;
        Running {
            gate: self.gate.clone(),
            deadline: self.deadline,
        }
    }

    /// The deadline passed before a worker was free: leaves the queue, and returns the error
    /// to report.
    pub fn timed_out(self) -> NsmUnavailable {
        self.gate.limits.no_answer()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.left {
            self.gate.counts.sub(WAITING);
        }
    }
}

/// A call on a worker. Keep it with the blocking call until the module answers: dropping it
/// frees the slot.
#[derive(Debug)]
pub struct Running {
    gate: NsmGate,
    deadline: Instant,
}

impl Running {
    /// When the caller stops waiting for the answer.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The limits of the gate this call went through (for [`NsmLimits::no_answer`]).
    pub fn limits(&self) -> NsmLimits {
        self.gate.limits
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.gate.counts.sub(RUNNING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(workers: usize, queue: usize, deadline_secs: u64) -> NsmLimits {
        NsmLimits {
            workers,
            queue,
            deadline: Duration::from_secs(deadline_secs),
        }
    }

    fn admitted(gate: &NsmGate, now: Instant) -> Waiting {
        gate.admit(now)
            .unwrap_or_else(|e| panic!("refused: {e} ({:?})", gate.limits()))
    }

    #[test]
    fn defaults_are_documented_values() {
        assert_eq!(NsmLimits::default(), NsmLimits::DEFAULT);
        assert_eq!(NsmLimits::DEFAULT, limits(2, 1024, 10));
    }

    #[test]
    fn free_workers_and_the_queue_admit_then_one_more_is_refused() {
        let gate = NsmGate::new(limits(2, 3, 10));
        let t0 = Instant::now();
        let tickets: Vec<Waiting> = (0..5).map(|_| admitted(&gate, t0)).collect();
        assert_eq!(gate.waiting(), 5);
        assert_eq!(
            gate.admit(t0).map(|_| ()),
            Err(NsmUnavailable::Busy { waiting: 3 })
        );
        // Two start on the workers: still 3 waiting, still full.
        let mut tickets = tickets.into_iter();
        let running: Vec<Running> = tickets.by_ref().take(2).map(Waiting::start).collect();
        assert_eq!((gate.running(), gate.waiting()), (2, 3));
        assert!(gate.admit(t0).is_err());
        drop(running);
        assert_eq!(gate.running(), 0);
        // Free workers again make room beyond the queue.
        let more: Vec<Waiting> = (0..2).map(|_| admitted(&gate, t0)).collect();
        assert_eq!(gate.waiting(), 5);
        assert!(gate.admit(t0).is_err());
        drop(more);
        drop(tickets);
        assert_eq!((gate.running(), gate.waiting()), (0, 0));
    }

    #[test]
    fn a_hung_call_keeps_its_worker_so_the_queue_alone_remains() {
        let gate = NsmGate::new(limits(2, 1, 10));
        let t0 = Instant::now();
        // Both workers hang: their callers time out, the calls keep running.
        let hung: Vec<Running> = (0..2).map(|_| admitted(&gate, t0).start()).collect();
        let later = t0 + Duration::from_secs(11);
        assert!(hung.iter().all(|r| later >= r.deadline()));
        assert_eq!(gate.running(), 2);
        let waiter = admitted(&gate, later);
        assert!(
            gate.admit(later).is_err(),
            "no free worker, queue of one full"
        );
        assert_eq!(waiter.timed_out(), gate.limits().no_answer());
        assert_eq!(gate.waiting(), 0);
        let _again = admitted(&gate, later);
        drop(hung);
        assert_eq!(gate.running(), 0);
    }

    #[test]
    fn deadlines_count_from_admission_on_the_caller_clock() {
        let gate = NsmGate::new(limits(1, 4, 10));
        let t0 = Instant::now();
        let first = admitted(&gate, t0);
        let second = admitted(&gate, t0 + Duration::from_secs(3));
        assert_eq!(first.deadline(), t0 + Duration::from_secs(10));
        assert_eq!(second.deadline(), t0 + Duration::from_secs(13));
        assert!(!first.expired(t0 + Duration::from_millis(9_999)));
        assert!(first.expired(t0 + Duration::from_secs(10)));
        let running = first.start();
        assert_eq!(running.deadline(), t0 + Duration::from_secs(10));
        assert!(!second.expired(t0 + Duration::from_secs(12)));
        assert!(second.expired(t0 + Duration::from_secs(13)));
    }

    #[test]
    fn dropping_a_waiting_caller_leaves_the_queue_once() {
        let gate = NsmGate::new(limits(1, 1, 10));
        let t0 = Instant::now();
        let _running = admitted(&gate, t0).start();
        let waiter = admitted(&gate, t0);
        assert!(gate.admit(t0).is_err());
        drop(waiter);
        assert_eq!(gate.waiting(), 0);
        let started = admitted(&gate, t0).start();
        assert_eq!(
            (gate.running(), gate.waiting()),
            (2, 0),
            "start left the queue once"
        );
        drop(started);
        assert_eq!(gate.running(), 1);
    }

    #[test]
    fn limits_are_adjusted_to_something_usable() {
        let gate = NsmGate::new(NsmLimits {
            workers: 0,
            queue: 0,
            deadline: Duration::MAX,
        });
        assert_eq!(gate.limits().workers, 1);
        assert_eq!(gate.limits().deadline, MAX_NSM_DEADLINE);
        let t0 = Instant::now();
        let only = admitted(&gate, t0);
        assert_eq!(only.deadline(), t0 + MAX_NSM_DEADLINE);
        assert_eq!(
            gate.admit(t0).map(|_| ()),
            Err(NsmUnavailable::Busy { waiting: 0 })
        );
    }

    #[test]
    fn errors_say_what_happened() {
        assert_eq!(
            NsmLimits::DEFAULT.no_answer().to_string(),
            "NSM did not answer within 10 s"
        );
        assert_eq!(
            limits(1, 1, 0).no_answer().to_string(),
            "NSM did not answer within 0 s"
        );
        let quick = NsmLimits {
            deadline: Duration::from_millis(250),
            ..NsmLimits::DEFAULT
        };
        assert_eq!(
            quick.no_answer().to_string(),
            "NSM did not answer within 250 ms"
        );
        assert_eq!(
            NsmLimits::DEFAULT.busy().to_string(),
            "NSM is busy: 1024 calls already wait for it"
        );
    }
}
