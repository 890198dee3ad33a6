//! What both runtimes' servers share besides their sessions: what every session of a server
//! holds ([`Shared`]), their limits, their counters, and the decision of what to do with each
//! accepted connection ([`Stats::admit`]). Counters are atomics so a test or a benchmark can
//! read them while the server runs; nothing here does IO.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::accept::MAX_REFUSING;
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
}
