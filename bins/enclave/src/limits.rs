//! File descriptors: the soft `RLIMIT_NOFILE` raised to the hard limit at start (Nitro's init
//! leaves the default 1024), and the default connection limit derived from what it allows.

use kmstool_core::accept::MAX_REFUSING;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Most connections served at once when `--max-connections` is not given and descriptors
/// allow it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Descriptors for everything but the sessions: stdio, the listener, `/dev/nsm`, the runtime's
/// own (epoll, wakers, the signal pipe), a file being read, and slack.
pub const FIXED_DESCRIPTORS: u64 = 32;

/// Idle KMS connections the pool may keep for another host (region) than the ones in-flight
/// calls use. A call takes an idle connection to its host before opening one, so the
/// connections to one host never outnumber the calls once in flight together.
pub const IDLE_KMS_DESCRIPTORS: u64 = 64;

/// Descriptors kept out of the connection budget: [`FIXED_DESCRIPTORS`], the
/// [`IDLE_KMS_DESCRIPTORS`], and one per refusal being written ([`MAX_REFUSING`]).
pub const RESERVED_DESCRIPTORS: u64 =
    FIXED_DESCRIPTORS + IDLE_KMS_DESCRIPTORS + MAX_REFUSING as u64;

/// Descriptors one client connection may hold: its socket and one KMS connection (a session
/// runs one KMS call at a time).
pub const DESCRIPTORS_PER_CONNECTION: u64 = 2;

/// What `--help` says about the default of `--max-connections`.
pub const MAX_CONNECTIONS_HELP: &str = "Connections served at once; more are refused with an \
error reply [default: 1024, or fewer when descriptors are short: (soft RLIMIT_NOFILE - 112) / 2, \
at least 1; each connection may hold a KMS connection too, and 112 descriptors stay for the \
listener, logs, /dev/nsm, 16 refusals and 64 idle KMS connections]";

/// The descriptor limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimits {
    /// The soft limit: what `open`, `socket` and `accept` are held to.
    pub soft: u64,
    /// The hard limit: how far an unprivileged process may raise the soft one.
    pub hard: u64,
}

/// The current limits.
pub fn nofile_limits() -> std::io::Result<NofileLimits> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    Ok(NofileLimits { soft, hard })
}

/// Raises the soft limit to the hard one; returns the limits in force afterwards.
pub fn raise_nofile_limit() -> std::io::Result<NofileLimits> {
    let limits = nofile_limits()?;
    if limits.soft < limits.hard {
        setrlimit(Resource::RLIMIT_NOFILE, limits.hard, limits.hard)
            .map_err(std::io::Error::from)?;
    }
    nofile_limits()
}

/// The most connections `soft` descriptors allow: what is left after
/// [`RESERVED_DESCRIPTORS`], [`DESCRIPTORS_PER_CONNECTION`] each.
pub fn connections_allowed(soft: u64) -> u64 {
    soft.saturating_sub(RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_CONNECTION
}

/// The default connection limit under a soft limit of `soft` descriptors: the smaller of
/// [`DEFAULT_MAX_CONNECTIONS`] and [`connections_allowed`], at least 1.
pub fn default_max_connections(soft: u64) -> usize {
    let allowed = usize::try_from(connections_allowed(soft)).unwrap_or(usize::MAX);
    allowed.clamp(1, DEFAULT_MAX_CONNECTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_keeps_two_descriptors_a_connection_after_the_reserve() {
        assert_eq!(RESERVED_DESCRIPTORS, 112, "MAX_CONNECTIONS_HELP states 112");
        // Nitro's default soft limit, if it could not be raised.
        assert_eq!(default_max_connections(1024), 456);
        // The kernel's default hard limit, and anything larger.
        assert_eq!(default_max_connections(4096), 1024);
        assert_eq!(default_max_connections(1 << 20), 1024);
        assert_eq!(default_max_connections(u64::MAX), 1024);
        // 2 × 1024 + 112: the least that allows the full default.
        assert_eq!(default_max_connections(2160), 1024);
        assert_eq!(default_max_connections(2159), 1023);
        assert_eq!(default_max_connections(200), 44);
        // Below the reserve, one connection still.
        assert_eq!(default_max_connections(64), 1);
        assert_eq!(default_max_connections(0), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let raised = raise_nofile_limit().expect("RLIMIT_NOFILE");
        assert_eq!(raised.soft, raised.hard);
        assert_eq!(nofile_limits().expect("RLIMIT_NOFILE"), raised);
    }
}
