//! What a server's accept loop does when `accept` fails: an error about one connection is
//! skipped at once; running out of descriptors or memory pauses accepting, 100 ms at first and
//! doubling to 1 s, until a connection is accepted again; and a warning is due at most once a
//! minute, so that a server out of descriptors neither spins nor floods its log.
//!
//! A driver calls [`AcceptBackoff::handle_error`] with each failure and stops accepting until
//! the [`AcceptPause::resume_at`] it returns, logging when [`AcceptPause::warn`] says so, and
//! calls [`AcceptBackoff::handle_accepted`] after each accepted connection.

use std::io;
use std::time::{Duration, Instant};

/// The first pause after a failure that is not about one connection.
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause: each further failure doubles the pause up to this.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);
/// At most one warning this often while failures go on.
pub const WARN_EVERY: Duration = Duration::from_secs(60);
/// Excess connections told "server busy" at once; more are closed without a reply, so that
/// refusals never take more than this many descriptors.
pub const MAX_REFUSING: usize = 16;

/// Linux's (and the BSDs') `ENFILE`: the system's table of open files is full.
const ENFILE: i32 = 23;
/// `EMFILE`: the process has as many descriptors open as its `RLIMIT_NOFILE` allows.
const EMFILE: i32 = 24;
/// Linux's `ENOBUFS`: no socket buffers left.
const ENOBUFS: i32 = 105;

/// Why `accept` failed, as far as the loop cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFailure {
    /// The pending connection failed (aborted, reset, its network went away): accept the next.
    Connection,
    /// Out of descriptors or memory: accepting again at once would fail again.
    Resources,
    /// Anything else: paused like [`Resources`](Self::Resources), so a broken listener cannot
    /// spin.
    Other,
}

impl AcceptFailure {
    /// Classifies an error from `accept`.
    pub fn of(error: &io::Error) -> Self {
        if matches!(error.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS)) {
            return Self::Resources;
        }
        match error.kind() {
            io::ErrorKind::OutOfMemory => Self::Resources,
            io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NetworkDown => Self::Connection,
            _ => Self::Other,
        }
    }
}

/// What to do after a failed `accept`.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptPause {
    /// Accept nothing before this instant.
    pub resume_at: Instant,
    /// `Some(n)`: log a warning now; `n` failures went unreported since the last one.
    pub warn: Option<u64>,
}

/// The accept loop's pause and warning state; see the [module](self) documentation.
#[derive(Debug, Clone, Default)]
pub struct AcceptBackoff {
    pause: Option<Duration>,
    last_warning: Option<Instant>,
    unreported: u64,
}

impl AcceptBackoff {
    /// A loop that has not failed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection was accepted: the next failure pauses for [`FIRST_PAUSE`] again.
    pub fn handle_accepted(&mut self) {
        self.pause = None;
    }

    /// `accept` failed at `now` with `failure`: when to accept again, and whether to warn.
    pub fn handle_error(&mut self, now: Instant, failure: AcceptFailure) -> AcceptPause {
        if failure == AcceptFailure::Connection {
            return AcceptPause {
                resume_at: now,
                warn: None,
            };
        }
        let pause = match self.pause {
            None => FIRST_PAUSE,
            Some(pause) => (pause * 2).min(MAX_PAUSE),
        };
        self.pause = Some(pause);
        let warn_due = self
            .last_warning
            .is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY);
        let warn = if warn_due {
            self.last_warning = Some(now);
            Some(std::mem::take(&mut self.unreported))
        } else {
            self.unreported += 1;
            None
        };
        AcceptPause {
            resume_at: now + pause,
            warn,
        }
    }

    /// How long the last pause was (`None` after an accepted connection).
    pub fn current_pause(&self) -> Option<Duration> {
        self.pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(EMFILE)
    }

    #[test]
    fn errors_are_classified_by_what_retrying_would_do() {
        assert_eq!(AcceptFailure::of(&emfile()), AcceptFailure::Resources);
        let enfile = io::Error::from_raw_os_error(ENFILE);
        assert_eq!(AcceptFailure::of(&enfile), AcceptFailure::Resources);
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(AcceptFailure::of(&aborted), AcceptFailure::Connection);
        let other = io::Error::from(io::ErrorKind::InvalidInput);
        assert_eq!(AcceptFailure::of(&other), AcceptFailure::Other);
    }

    #[test]
    fn pauses_double_from_100_ms_to_1_s_and_start_over_after_an_accept() {
        let start = Instant::now();
        let mut backoff = AcceptBackoff::new();
        let mut now = start;
        let mut pauses = Vec::new();
        for _ in 0..7 {
            let pause = backoff.handle_error(now, AcceptFailure::Resources);
            pauses.push(pause.resume_at - now);
            now = pause.resume_at;
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            pauses,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000),
                ms(1000)
            ]
        );
        backoff.handle_accepted();
        let pause = backoff.handle_error(now, AcceptFailure::Other);
        assert_eq!(pause.resume_at - now, ms(100));
    }

    #[test]
    fn one_warning_a_minute_while_descriptors_stay_exhausted() {
        let start = Instant::now();
        let mut backoff = AcceptBackoff::new();
        let mut now = start;
        let mut warnings = Vec::new();
        // Five minutes of EMFILE, retried whenever the pause allows.
        while now < start + Duration::from_secs(300) {
            let pause = backoff.handle_error(now, AcceptFailure::of(&emfile()));
            if let Some(unreported) = pause.warn {
                warnings.push(((now - start).as_secs(), unreported));
            }
            now = pause.resume_at;
        }
        // Failures at 0, 0.1, 0.3, 0.7, 1.5, 2.5, ... s: each minute's warning comes with the
        // first failure past it (60.5 s, 120.5 s...) and counts the ones held back.
        assert_eq!(
            warnings,
            [(0, 0), (60, 62), (120, 59), (180, 59), (240, 59)]
        );
    }

    #[test]
    fn a_failed_connection_is_skipped_at_once_without_a_warning() {
        let now = Instant::now();
        let mut backoff = AcceptBackoff::new();
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let pause = backoff.handle_error(now, AcceptFailure::of(&reset));
        assert_eq!(
            pause,
            AcceptPause {
                resume_at: now,
                warn: None
            }
        );
        assert_eq!(backoff.current_pause(), None);
    }
}
