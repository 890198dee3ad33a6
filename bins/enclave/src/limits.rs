//! File descriptors and memory: the soft `RLIMIT_NOFILE` raised to the hard limit at start
//! (Nitro's init leaves the default 1024), and the default connection limit derived from what
//! the descriptors and the memory budget allow.

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

/// Memory the default connection limit gives all connections together: half of the 512 MiB
/// the README's deployment gives the enclave, the other half for the process itself (about
/// 20 MiB), the kernel's socket buffers and slack.
pub const CONNECTION_MEMORY: u64 = 256 * 1024 * 1024;

/// What a connection's driver holds beside its session's bound
/// ([`kmstool_core::session::SessionConfig::connection_bound`]): the client and KMS read
/// buffers (16 KiB each), a KMS TLS connection's state and buffers, and the task.
pub const DRIVER_BYTES_PER_CONNECTION: usize = 64 * 1024;

/// What `--help` says about the default of `--max-connections`.
pub const MAX_CONNECTIONS_HELP: &str = "Connections served at once; more are refused with an \
error reply [default: the smallest of 1024; (soft RLIMIT_NOFILE - 112) / 2, as each connection \
may hold a KMS connection too and 112 descriptors stay for the listener, logs, /dev/nsm, 16 \
refusals and 64 idle KMS connections; and 256 MiB / (--max-message-bytes + 16 KiB + \
--max-connection-bytes + 64 KiB), the most each connection may hold: 963 with the defaults. \
At least 1]";

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

/// The most connections [`CONNECTION_MEMORY`] holds when each may hold `session_bound` bytes
/// in its session and [`DRIVER_BYTES_PER_CONNECTION`] in its driver.
pub fn memory_allows(session_bound: usize) -> u64 {
    let per_connection = session_bound.saturating_add(DRIVER_BYTES_PER_CONNECTION);
    CONNECTION_MEMORY / u64::try_from(per_connection).unwrap_or(u64::MAX)
}

/// The default connection limit under a soft limit of `soft` descriptors, with sessions
/// bounded to `session_bound` bytes: the smallest of [`DEFAULT_MAX_CONNECTIONS`],
/// [`connections_allowed`] and [`memory_allows`], at least 1.
pub fn default_max_connections(soft: u64, session_bound: usize) -> usize {
    let allowed = connections_allowed(soft).min(memory_allows(session_bound));
    usize::try_from(allowed)
        .unwrap_or(usize::MAX)
        .clamp(1, DEFAULT_MAX_CONNECTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session bound small enough that memory never is the limit.
    const SMALL: usize = 1024;

    #[test]
    fn the_default_keeps_two_descriptors_a_connection_after_the_reserve() {
        assert_eq!(RESERVED_DESCRIPTORS, 112, "MAX_CONNECTIONS_HELP states 112");
        // Nitro's default soft limit, if it could not be raised.
        assert_eq!(default_max_connections(1024, SMALL), 456);
        // The kernel's default hard limit, and anything larger.
        assert_eq!(default_max_connections(4096, SMALL), 1024);
        assert_eq!(default_max_connections(1 << 20, SMALL), 1024);
        assert_eq!(default_max_connections(u64::MAX, SMALL), 1024);
        // 2 × 1024 + 112: the least that allows the full default.
        assert_eq!(default_max_connections(2160, SMALL), 1024);
        assert_eq!(default_max_connections(2159, SMALL), 1023);
        assert_eq!(default_max_connections(200, SMALL), 44);
        // Below the reserve, one connection still.
        assert_eq!(default_max_connections(64, SMALL), 1);
        assert_eq!(default_max_connections(0, SMALL), 1);
    }

    #[test]
    fn the_default_keeps_every_connection_at_its_bound_within_256_mib() {
        use kmstool_core::session::SessionConfig;
        let bound = SessionConfig::default().connection_bound();
        // 64 KiB message + 16 KiB read + 128 KiB budget.
        assert_eq!(bound, 208 * 1024);
        assert_eq!(
            default_max_connections(1 << 20, bound),
            963,
            "the help states 963"
        );
        assert!(963 * (bound + DRIVER_BYTES_PER_CONNECTION) as u64 <= CONNECTION_MEMORY);
        // Descriptors still win when they are shorter.
        assert_eq!(default_max_connections(1024, bound), 456);
        // A larger budget lowers the default; a huge one still allows one connection.
        assert_eq!(default_max_connections(1 << 20, 1024 * 1024), 240);
        assert_eq!(default_max_connections(1 << 20, usize::MAX), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let raised = raise_nofile_limit().expect("RLIMIT_NOFILE");
        assert_eq!(raised.soft, raised.hard);
        assert_eq!(nofile_limits().expect("RLIMIT_NOFILE"), raised);
    }
}
