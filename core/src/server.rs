//! What both runtimes' servers share besides their sessions: the accept loop's decisions
//! ([`Acceptor`]), what every session of a server holds ([`Shared`]), their limits and their
//! counters. Counters are atomics so a test or a benchmark can read them while the server runs;
//! nothing here does IO.
//!
//! # Driving an [`Acceptor`]
//!
//! A runtime's server owns the listener, the session tasks and a timer; the acceptor decides
//! when to accept, what to do with each accepted connection, when to sweep idle KMS
//! connections, and when a drain has run out of time:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use kmstool_core::server::{Acceptor, Admission, ServerLimits, ServerOutput, Stats};
//!
//! let start = Instant::now(); // a driver's clock; tests move a virtual one
//! let limits = ServerLimits { max_connections: 1, ..ServerLimits::default() };
//! let stats = Stats::default();
//! let mut acceptor = Acceptor::new(start, limits);
//!
//! // The driver accepts while `may_accept()`, and hands each connection over.
//! assert!(acceptor.may_accept());
//! let first = acceptor.handle_accepted(start, "127.0.0.1:40000", &stats);
//! assert_eq!(first.admission, Admission::Serve); // spawn a session for it
//! let second = acceptor.handle_accepted(start, "127.0.0.1:40001", &stats);
//! assert_eq!(second.admission, Admission::Refuse); // write `busy_reply`, then close
//!
//! // Shutdown: the listener closes, sessions are told to finish, and the grace starts.
//! acceptor.handle_shutdown(start, 1);
//! let mut outputs = Vec::new();
//! while let Some(output) = acceptor.poll_output() {
//!     outputs.push(output);
//! }
//! assert!(outputs.contains(&ServerOutput::StopAccepting));
//!
//! // Whatever is still running when the grace has passed is cut.
//! let deadline = acceptor.poll_timeout().expect("the grace is a deadline");
//! assert!(deadline <= start + limits.shutdown_grace);
//! acceptor.handle_timeout(start + limits.shutdown_grace);
//! assert!(std::iter::from_fn(|| acceptor.poll_output()).any(|o| o == ServerOutput::Cut));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::accept::{AcceptBackoff, AcceptFailure, MAX_REFUSING};
use crate::pool::SWEEP_EVERY;
use crate::session::SessionConfig;

/// What every session of a server shares. Each runtime names it with its own key service `K`
/// and KMS connector `C` (`kmstool_runtime_tokio::server::Shared`, and likewise on smol).
#[derive(Debug)]
pub struct Shared<K, C> {
    /// Session settings.
    pub session: Arc<SessionConfig>,
    /// KMS connections.
    pub kms: C,
    /// Enclave key and attestation.
    pub keys: Arc<K>,
    /// Counters.
    pub stats: Stats,
    /// KMS's clock offset, learned from every session's KMS responses and signed with by all.
    pub kms_clock: crate::kms::skew::KmsClock,
}

/// Server limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once; more are answered with an error and closed.
    pub max_connections: usize,
    /// After shutdown starts, how long in-flight work may take before connections are cut.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(15),
        }
    }
}

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections being served now.
    pub open_connections: AtomicUsize,
    /// Connections accepted and served since start.
    pub accepted: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub refused: AtomicU64,
    /// Refusals being written now (at most [`MAX_REFUSING`]).
    refusing: AtomicUsize,
}

/// What to do with a connection just accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Admission {
    /// Serve it; call [`Stats::closed`] when its session ends.
    Serve,
    /// Tell it the server is busy ([`crate::session::busy_reply`]) and close it; call
    /// [`Stats::refused_done`] after.
    Refuse,
    /// Close it without a word: [`MAX_REFUSING`] refusals are being written already, and
    /// refusals keep to their descriptors.
    Drop,
}

impl Stats {
    /// Decides about a connection just accepted under `limits`, and counts it.
    pub fn admit(&self, limits: &ServerLimits) -> Admission {
        if self.open_connections.load(Ordering::Relaxed) < limits.max_connections {
            self.open_connections.fetch_add(1, Ordering::Relaxed);
            self.accepted.fetch_add(1, Ordering::Relaxed);
            return Admission::Serve;
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        if self.refusing.load(Ordering::Relaxed) >= MAX_REFUSING {
            return Admission::Drop;
        }
        self.refusing.fetch_add(1, Ordering::Relaxed);
        Admission::Refuse
    }

    /// A served connection's session ended.
    pub fn closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// A refusal was written (or given up).
    pub fn refused_done(&self) {
        self.refusing.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections being served now.
    pub fn open(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }
}

/// The accept loop of a server, sans-IO: see the [module](self) documentation for how a runtime
/// drives it.
///
/// While serving, it accepts unless a failed `accept` paused it ([`AcceptBackoff`]), numbers
/// and admits each connection ([`Stats::admit`]), and asks for a sweep of idle KMS connections
/// every [`SWEEP_EVERY`]. On shutdown it asks the driver to close the listener and tell the
/// sessions to finish; once the drain has taken [`ServerLimits::shutdown_grace`], it asks for the
/// rest to be cut.
#[derive(Debug)]
pub struct Acceptor {
    limits: ServerLimits,
    backoff: AcceptBackoff,
    /// Connections numbered so far (the first is 1).
    numbered: u64,
    /// Nothing is accepted before this instant.
    paused_until: Option<Instant>,
    next_sweep: Instant,
    phase: Phase,
    outputs: VecDeque<ServerOutput>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Shut down: answering what is in flight until the deadline.
    Draining {
        deadline: Instant,
    },
    /// The grace passed and [`ServerOutput::Cut`] was given.
    Cut,
}

/// A connection just accepted: its number and what to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Accepted {
    /// Its number in this server's logs (the first is 1).
    pub connection: u64,
    /// Serve it, refuse it, or drop it.
    pub admission: Admission,
}

/// What an [`Acceptor`] asks of its driver, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutput {
    /// Close expired idle KMS connections (the shared pool's `expire_idle`).
    SweepIdleKms,
    /// Shutdown began: close the listener and tell every session to finish what it has.
    StopAccepting,
    /// The shutdown grace has passed: cut every connection still open.
    Cut,
    /// Something to log, at [`ServerEvent::level`].
    Event(ServerEvent),
}

/// Something a server may log. Peers are addresses, never secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A connection is served.
    Accepted {
        /// Its number.
        connection: u64,
        /// Who connected.
        peer: String,
    },
    /// A connection over the limit is told the server is busy.
    Refused {
        /// Its number.
        connection: u64,
        /// Who connected.
        peer: String,
        /// The limit.
        max: usize,
    },
    /// A connection over the limit is closed without a word (refusals in flight).
    Dropped {
        /// Its number.
        connection: u64,
        /// Who connected.
        peer: String,
        /// The limit.
        max: usize,
    },
    /// `accept` failed; accepting pauses for `pause` (zero when only that connection failed).
    AcceptFailed {
        /// The error, as the operating system put it.
        error: String,
        /// How long accepting pauses.
        pause: Duration,
        /// `Some(n)`: warn now, `n` failures went unreported since the last warning;
        /// `None`: only a debug line (a warning is due once a minute).
        warn: Option<u64>,
    },
    /// Shutdown began with this many connections open.
    ShuttingDown {
        /// Connections and refusals still running.
        open: usize,
    },
    /// The shutdown grace passed with connections still open.
    GraceExpired,
}

impl ServerEvent {
    /// The level to log this event at.
    pub fn level(&self) -> crate::session::EventLevel {
        use crate::session::EventLevel;
        match self {
            Self::Accepted { .. } | Self::ShuttingDown { .. } => EventLevel::Info,
            Self::AcceptFailed { warn: None, .. } => EventLevel::Debug,
            Self::Refused { .. }
            | Self::Dropped { .. }
            | Self::AcceptFailed { warn: Some(_), .. }
            | Self::GraceExpired => EventLevel::Warn,
        }
    }
}

impl fmt::Display for ServerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Accepted { connection, peer } => {
                write!(f, "connection {connection} from {peer} accepted")
            }
            Self::Refused {
                connection,
                peer,
                max,
            } => write!(
                f,
                "connection {connection} from {peer} refused: {max} connections open"
            ),
            Self::Dropped {
                connection,
                peer,
                max,
            } => write!(
                f,
                "connection {connection} from {peer} closed: {max} connections open and \
                 {MAX_REFUSING} refusals in flight"
            ),
            Self::AcceptFailed {
                error,
                pause,
                warn: Some(unreported),
            } => write!(
                f,
                "accept failed: {error}; pausing {} ms ({unreported} more failures since the \
                 last warning; one warning a minute while this goes on)",
                pause.as_millis()
            ),
            Self::AcceptFailed {
                error,
                pause,
                warn: None,
            } => write!(
                f,
                "accept failed: {error}; pausing {} ms",
                pause.as_millis()
            ),
            Self::ShuttingDown { open } => write!(
                f,
                "shutting down: finishing in-flight commands on {open} connection(s)"
            ),
            Self::GraceExpired => f.write_str("shutdown grace expired; closing the rest"),
        }
    }
}

impl Acceptor {
    /// An accept loop serving from `now` under `limits`.
    pub fn new(now: Instant, limits: ServerLimits) -> Self {
        Self {
            limits,
            backoff: AcceptBackoff::new(),
            numbered: 0,
            paused_until: None,
            next_sweep: now + SWEEP_EVERY,
            phase: Phase::Serving,
            outputs: VecDeque::new(),
        }
    }

    /// The limits it admits connections under.
    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// Whether the driver should wait for a connection now: serving, and not paused after a
    /// failed `accept`.
    pub fn may_accept(&self) -> bool {
        self.phase == Phase::Serving && self.paused_until.is_none()
    }

    /// Whether shutdown began: the driver returns once nothing it spawned is running, or after
    /// [`ServerOutput::Cut`].
    pub fn is_draining(&self) -> bool {
        self.phase != Phase::Serving
    }

    /// A connection from `peer` was accepted at `now`: numbers it and admits it against
    /// `stats` (which counts it). A [`Admission::Serve`] connection calls [`Stats::closed`]
    /// when its session ends, a [`Admission::Refuse`] one [`Stats::refused_done`].
    pub fn handle_accepted(&mut self, _now: Instant, peer: &str, stats: &Stats) -> Accepted {
        self.backoff.handle_accepted();
        self.numbered += 1;
        let connection = self.numbered;
        let admission = stats.admit(&self.limits);
        let peer = peer.to_owned();
        let max = self.limits.max_connections;
        self.outputs.push_back(ServerOutput::Event(match admission {
            Admission::Serve => ServerEvent::Accepted { connection, peer },
            Admission::Refuse => ServerEvent::Refused {
                connection,
                peer,
                max,
            },
            Admission::Drop => ServerEvent::Dropped {
                connection,
                peer,
                max,
            },
        }));
        Accepted {
            connection,
            admission,
        }
    }

    /// `accept` failed at `now`: accepting pauses as [`AcceptBackoff`] says (not at all when
    /// only that connection failed).
    pub fn handle_accept_error(&mut self, now: Instant, error: &io::Error) {
        let pause = self.backoff.handle_error(now, AcceptFailure::of(error));
        if pause.resume_at > now {
            self.paused_until = Some(pause.resume_at);
        }
        self.outputs
            .push_back(ServerOutput::Event(ServerEvent::AcceptFailed {
                error: error.to_string(),
                pause: pause.resume_at.saturating_duration_since(now),
                warn: pause.warn,
            }));
    }

    /// Shutdown was asked for at `now`, with `open` connections (and refusals) running:
    /// stop accepting, and drain within the grace. Later calls change nothing.
    pub fn handle_shutdown(&mut self, now: Instant, open: usize) {
        if self.phase != Phase::Serving {
            return;
        }
        self.phase = Phase::Draining {
            deadline: now + self.limits.shutdown_grace,
        };
        self.paused_until = None;
        self.outputs.push_back(ServerOutput::StopAccepting);
        self.outputs
            .push_back(ServerOutput::Event(ServerEvent::ShuttingDown { open }));
    }

    /// The driver's timer fired at `now` ([`poll_timeout`](Self::poll_timeout) passed).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
        if self.next_sweep <= now {
            self.next_sweep = now + SWEEP_EVERY;
            self.outputs.push_back(ServerOutput::SweepIdleKms);
        }
        if let Phase::Draining { deadline } = self.phase
            && deadline <= now
        {
            self.phase = Phase::Cut;
            self.outputs.push_back(ServerOutput::Cut);
            self.outputs
                .push_back(ServerOutput::Event(ServerEvent::GraceExpired));
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let drain = match self.phase {
            Phase::Draining { deadline } => Some(deadline),
            Phase::Serving | Phase::Cut => None,
        };
        [Some(self.next_sweep), self.paused_until, drain]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_over_the_limit_are_refused_then_dropped() {
        let stats = Stats::default();
        let limits = ServerLimits {
            max_connections: 2,
            ..ServerLimits::default()
        };
        assert_eq!(stats.admit(&limits), Admission::Serve);
        assert_eq!(stats.admit(&limits), Admission::Serve);
        for _ in 0..MAX_REFUSING {
            assert_eq!(stats.admit(&limits), Admission::Refuse);
        }
        assert_eq!(stats.admit(&limits), Admission::Drop, "refusals keep to 16");
        stats.refused_done();
        assert_eq!(stats.admit(&limits), Admission::Refuse);
        stats.closed();
        assert_eq!(stats.admit(&limits), Admission::Serve);
        assert_eq!(stats.open(), 2);
        assert_eq!(stats.accepted.load(Ordering::Relaxed), 3);
        assert_eq!(
            stats.refused.load(Ordering::Relaxed),
            MAX_REFUSING as u64 + 2
        );
    }

    fn outputs(acceptor: &mut Acceptor) -> Vec<ServerOutput> {
        std::iter::from_fn(|| acceptor.poll_output()).collect()
    }

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    #[test]
    fn idle_kms_connections_are_swept_every_second_while_serving_and_draining() {
        let start = Instant::now();
        let mut acceptor = Acceptor::new(start, ServerLimits::default());
        assert_eq!(acceptor.poll_timeout(), Some(start + SWEEP_EVERY));
        acceptor.handle_timeout(start + SWEEP_EVERY - Duration::from_millis(1));
        assert_eq!(outputs(&mut acceptor), [], "not due yet");
        acceptor.handle_timeout(start + SWEEP_EVERY);
        assert_eq!(outputs(&mut acceptor), [ServerOutput::SweepIdleKms]);
        assert_eq!(acceptor.poll_timeout(), Some(start + 2 * SWEEP_EVERY));
        acceptor.handle_shutdown(start + 2 * SWEEP_EVERY, 0);
        let _ = outputs(&mut acceptor);
        acceptor.handle_timeout(start + 2 * SWEEP_EVERY);
        assert_eq!(outputs(&mut acceptor), [ServerOutput::SweepIdleKms]);
    }

    #[test]
    fn connections_are_numbered_and_admitted_against_the_limit() {
        let start = Instant::now();
        let limits = ServerLimits {
            max_connections: 1,
            ..ServerLimits::default()
        };
        let stats = Stats::default();
        let mut acceptor = Acceptor::new(start, limits);
        let first = acceptor.handle_accepted(start, "a", &stats);
        let second = acceptor.handle_accepted(start, "b", &stats);
        assert_eq!((first.connection, first.admission), (1, Admission::Serve));
        assert_eq!(
            (second.connection, second.admission),
            (2, Admission::Refuse)
        );
        let logged = outputs(&mut acceptor);
        assert_eq!(
            logged,
            [
                ServerOutput::Event(ServerEvent::Accepted {
                    connection: 1,
                    peer: "a".into()
                }),
                ServerOutput::Event(ServerEvent::Refused {
                    connection: 2,
                    peer: "b".into(),
                    max: 1
                }),
            ]
        );
        assert_eq!(stats.open(), 1);
    }

    #[test]
    fn running_out_of_descriptors_pauses_accepting_until_the_backoff_ends() {
        let start = Instant::now();
        let mut acceptor = Acceptor::new(start, ServerLimits::default());
        acceptor.handle_accept_error(start, &emfile());
        assert!(!acceptor.may_accept());
        let pause = crate::accept::FIRST_PAUSE;
        assert_eq!(acceptor.poll_timeout(), Some(start + pause));
        match outputs(&mut acceptor).as_slice() {
            [ServerOutput::Event(event @ ServerEvent::AcceptFailed { warn: Some(0), .. })] => {
                assert_eq!(event.level(), crate::session::EventLevel::Warn);
            }
            other => panic!("expected one warning, got {other:?}"),
        }
        acceptor.handle_timeout(start + pause);
        assert!(acceptor.may_accept());
        // A second failure within the minute pauses twice as long, and only at debug level.
        acceptor.handle_accept_error(start + pause, &emfile());
        assert_eq!(acceptor.poll_timeout(), Some(start + pause * 3));
        match outputs(&mut acceptor).as_slice() {
            [ServerOutput::Event(event @ ServerEvent::AcceptFailed { warn: None, .. })] => {
                assert_eq!(event.level(), crate::session::EventLevel::Debug);
            }
            other => panic!("expected one debug line, got {other:?}"),
        }
    }

    #[test]
    fn a_failed_connection_does_not_pause_accepting() {
        let start = Instant::now();
        let mut acceptor = Acceptor::new(start, ServerLimits::default());
        acceptor.handle_accept_error(start, &io::Error::from(io::ErrorKind::ConnectionAborted));
        assert!(acceptor.may_accept());
        assert_eq!(acceptor.poll_timeout(), Some(start + SWEEP_EVERY));
    }

    #[test]
    fn shutdown_stops_accepting_and_cuts_the_rest_when_the_grace_passes() {
        let start = Instant::now();
        let limits = ServerLimits::default();
        let mut acceptor = Acceptor::new(start, limits);
        acceptor.handle_accept_error(start, &emfile());
        let _ = outputs(&mut acceptor);
        let at = start + Duration::from_millis(10);
        acceptor.handle_shutdown(at, 3);
        assert!(acceptor.is_draining() && !acceptor.may_accept());
        assert_eq!(
            outputs(&mut acceptor),
            [
                ServerOutput::StopAccepting,
                ServerOutput::Event(ServerEvent::ShuttingDown { open: 3 })
            ]
        );
        acceptor.handle_shutdown(at + Duration::from_secs(1), 3);
        assert_eq!(
            outputs(&mut acceptor),
            [],
            "a second signal changes nothing"
        );
        let deadline = at + limits.shutdown_grace;
        let mut now = at;
        while let Some(next) = acceptor.poll_timeout().filter(|&next| next < deadline) {
            now = next;
            acceptor.handle_timeout(now);
            assert!(!outputs(&mut acceptor).contains(&ServerOutput::Cut));
        }
        assert!(now < deadline);
        assert_eq!(acceptor.poll_timeout(), Some(deadline));
        acceptor.handle_timeout(deadline);
        let last = outputs(&mut acceptor);
        assert!(last.contains(&ServerOutput::Cut), "{last:?}");
        assert!(last.contains(&ServerOutput::Event(ServerEvent::GraceExpired)));
        acceptor.handle_timeout(deadline + Duration::from_secs(5));
        assert!(
            !outputs(&mut acceptor).contains(&ServerOutput::Cut),
            "cut once"
        );
    }
}
