//! Idle KMS connections kept for reuse, per host. The runtimes keep their connection type in
//! it and share it behind their own lock; the policy (most recently used first, bounded,
//! expiring) lives here once, and so does the reuse half of their KMS connectors
//! ([`KmsConnections`]). Nothing here locks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Idle connections by host.
#[derive(Debug)]
pub struct IdlePool<C> {
    idle: HashMap<String, Vec<(C, Instant)>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
}

impl<C> IdlePool<C> {
    /// A pool keeping at most `max_idle_per_host` connections per host, each for at most
    /// `idle_timeout` (KMS closes idle connections after a while; reusing one it closed costs
    /// an attempt).
    pub fn new(max_idle_per_host: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: HashMap::new(),
            max_idle_per_host,
            idle_timeout,
        }
    }

    /// An idle connection to `host`, the most recently used one first. Expired connections
    /// of every host are dropped (closed) first, so a host no longer used keeps none open.
    pub fn take(&mut self, host: &str, now: Instant) -> Option<C> {
        self.expire(now);
        let list = self.idle.get_mut(host)?;
        let conn = list.pop().map(|(conn, _)| conn);
        if list.is_empty() {
            self.idle.remove(host);
        }
        conn
    }

    /// Keeps `conn` for reuse. Returns it when the host already has the maximum idle, so the
    /// caller closes it. Expired connections of every host are dropped first.
    pub fn put(&mut self, host: &str, conn: C, now: Instant) -> Option<C> {
        self.expire(now);
        if self.max_idle_per_host == 0 {
            return Some(conn);
        }
        let list = self.idle.entry(host.to_owned()).or_default();
        if list.len() >= self.max_idle_per_host {
            return Some(conn);
        }
        list.push((conn, now));
        None
    }

    /// Drops expired connections of every host.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.idle_timeout;
        self.idle.retain(|_, list| {
            list.retain(|(_, since)| now.saturating_duration_since(*since) < timeout);
            !list.is_empty()
        });
    }

    /// Idle connections across hosts.
    pub fn len(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }
}

/// What a runtime's KMS connector does besides connecting: its settings, and the idle
/// connections `C`, reused when a call may reuse one. A runtime shares it between the
/// sessions of a server behind its own lock, and adds only the making of a new connection
/// (proxy stream and TLS handshake, with their timeouts).
#[cfg(feature = "tls")]
pub struct KmsConnections<C> {
    config: crate::tls::KmsTransportConfig,
    idle: IdlePool<C>,
}

#[cfg(feature = "tls")]
impl<C> std::fmt::Debug for KmsConnections<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsConnections")
            .field("proxy", &self.config.proxy)
            .field("idle", &self.idle.len())
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tls")]
impl<C> KmsConnections<C> {
    /// Connections made by `config`, none idle yet.
    pub fn new(config: crate::tls::KmsTransportConfig) -> Self {
        Self {
            idle: IdlePool::new(config.max_idle_per_host, config.idle_timeout),
            config,
        }
    }

    /// How to make a new connection.
    pub fn config(&self) -> &crate::tls::KmsTransportConfig {
        &self.config
    }

    /// An idle connection to `host` when `may_reuse` and one is pooled; else the settings to
    /// make a new one with (cloned, so that the caller connects without holding its lock).
    pub fn checkout(
        &mut self,
        host: &str,
        may_reuse: bool,
        now: Instant,
    ) -> Result<C, crate::tls::KmsTransportConfig> {
        let pooled = if may_reuse {
            self.idle.take(host, now)
        } else {
            None
        };
        pooled.ok_or_else(|| self.config.clone())
    }

    /// Keeps a connection whose last response was complete and reusable, or returns it when
    /// `host` has the most idle already (the caller drops it, closing it, after letting go of
    /// any lock around the pool).
    pub fn checkin(&mut self, host: &str, conn: C, now: Instant) -> Option<C> {
        self.idle.put(host, conn, now)
    }

    /// Idle connections in the pool.
    pub fn idle_connections(&self) -> usize {
        self.idle.len()
    }

    /// Closes the connections idle longer than the idle timeout, whatever their host: a
    /// server calls this every [`SWEEP_EVERY`], so connections to a region no client uses any
    /// more do not stay open until the next call.
    pub fn expire_idle(&mut self, now: Instant) {
        self.idle.expire(now);
    }
}

/// A runtime's `KmsStream` (`$stream`) and `KmsConnector`, written once: core's [`KmsConnections`] behind a short-held lock
/// (a runtime concern, so not a core type), with `checkout`, `send`, `checkin`, `expire_idle`
/// and `idle_connections`, on the runtime's clock `$now`. Expanded in `kmstool-runtime-tokio`
/// and `kmstool-runtime-smol`, where `connect` and the runtime's `AsyncWriteExt` are in scope.
#[doc(hidden)]
#[macro_export]
macro_rules! kms_connector {
    (stream = $stream:ty, now = $now:path) => {
        /// A TLS connection to KMS.
        pub type KmsStream = $stream;

        /// The KMS connections every session of a server and every clone of a client share: core's
        /// pool of idle ones, behind a lock held only for a moment (never across an await), and
        /// [`connect`] for new ones.
        #[derive(Debug)]
        pub struct KmsConnector(std::sync::Mutex<$crate::pool::KmsConnections<Box<KmsStream>>>);

        impl KmsConnector {
            /// Makes connections as `config` says; none idle yet.
            pub fn new(config: $crate::tls::KmsTransportConfig) -> Self {
                Self(std::sync::Mutex::new($crate::pool::KmsConnections::new(
                    config,
                )))
            }

            /// An idle connection to `host` when `may_reuse` and one is pooled (`true` beside it), or a
            /// new one (`false`).
            pub async fn checkout(
                &self,
                host: &str,
                may_reuse: bool,
            ) -> Result<(Box<KmsStream>, bool), $crate::session::TransportFailure> {
                let pooled = self.pool().checkout(host, may_reuse, $now());
                match pooled {
                    Ok(pooled) => Ok((pooled, true)),
                    Err(config) => Ok((Box::new(connect(&config, host).await?), false)),
                }
            }

            /// [`checkout`](Self::checkout), then `request` written on the connection.
            pub async fn send(
                &self,
                host: &str,
                request: &[u8],
                may_reuse: bool,
            ) -> Result<(Box<KmsStream>, bool), $crate::session::TransportFailure> {
                let (mut stream, reused) = self.checkout(host, may_reuse).await?;
                let written = match stream.write_all(request).await {
                    Ok(()) => stream.flush().await,
                    Err(error) => Err(error),
                };
                match written {
                    Ok(()) => Ok((stream, reused)),
                    Err(error) => Err($crate::session::TransportFailure::new(
                        $crate::session::TransportStage::Io,
                        error.to_string(),
                    )),
                }
            }

            /// Keeps a connection whose last response was complete and reusable; closes it instead
            /// when `host` has the most idle already.
            pub fn checkin(&self, host: &str, stream: Box<KmsStream>) {
                let excess = self.pool().checkin(host, stream, $now());
                drop(excess); // closed outside the lock
            }

            /// Closes the connections idle too long, whatever their host.
            pub fn expire_idle(&self) {
                self.pool().expire_idle($now());
            }

            /// Idle connections in the pool.
            pub fn idle_connections(&self) -> usize {
                self.pool().idle_connections()
            }

            fn pool(
                &self,
            ) -> std::sync::MutexGuard<'_, $crate::pool::KmsConnections<Box<KmsStream>>> {
                // Nothing panics while holding the lock; the pool stays consistent if something did.
                self.0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            }
        }
    };
}

/// How often a server closes expired idle KMS connections ([`KmsConnections::expire_idle`]).
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_closes_expired_connections_of_every_host() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(4, Duration::from_secs(30));
        assert_eq!(pool.put("kms.eu-west-1.amazonaws.com", 1, t0), None);
        let later = t0 + Duration::from_secs(20);
        assert_eq!(pool.put("kms.us-east-1.amazonaws.com", 2, later), None);
        pool.expire(t0 + Duration::from_secs(30));
        assert_eq!(
            pool.len(),
            1,
            "the eu-west-1 connection is closed untouched"
        );
        pool.expire(t0 + Duration::from_secs(49));
        assert_eq!(pool.len(), 1);
        pool.expire(t0 + Duration::from_secs(50));
        assert!(pool.is_empty());
    }

    #[test]
    fn reuses_most_recent_and_expires() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(2, Duration::from_secs(10));
        assert_eq!(pool.put("a", 1, t0), None);
        assert_eq!(pool.put("a", 2, t0 + Duration::from_secs(5)), None);
        assert_eq!(pool.put("a", 3, t0), Some(3), "full");
        assert_eq!(pool.take("b", t0), None);
        assert_eq!(pool.take("a", t0 + Duration::from_secs(6)), Some(2));
        assert_eq!(
            pool.take("a", t0 + Duration::from_secs(11)),
            None,
            "1 expired"
        );
        assert!(pool.is_empty());
        pool.put("a", 4, t0);
        pool.put("b", 5, t0 + Duration::from_secs(9));
        pool.expire(t0 + Duration::from_secs(12));
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.take("b", t0 + Duration::from_secs(12)), Some(5));
    }

    /// A connection that counts its drops (closing it, for a real one).
    #[derive(Debug)]
    struct Counted(std::rc::Rc<std::cell::Cell<u32>>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn using_the_pool_for_one_host_closes_expired_connections_of_every_host() {
        let closed = std::rc::Rc::new(std::cell::Cell::new(0));
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut pool = IdlePool::new(4, timeout);
        assert!(
            pool.put("kms.eu-west-1", Counted(closed.clone()), t0)
                .is_none()
        );
        assert!(
            pool.put("kms.eu-west-1", Counted(closed.clone()), t0)
                .is_none()
        );
        // Still fresh: a take for another host leaves them.
        assert!(pool.take("kms.us-east-1", t0 + timeout / 2).is_none());
        assert_eq!((closed.get(), pool.len()), (0, 2));
        // Expired: a take for another host closes them.
        assert!(pool.take("kms.us-east-1", t0 + timeout).is_none());
        assert_eq!((closed.get(), pool.len()), (2, 0));
        // And so does a put for another host.
        assert!(
            pool.put("kms.eu-west-1", Counted(closed.clone()), t0)
                .is_none()
        );
        let later = t0 + timeout * 2;
        assert!(
            pool.put("kms.us-east-1", Counted(closed.clone()), later)
                .is_none()
        );
        assert_eq!((closed.get(), pool.len()), (3, 1));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn kms_connections_reuse_only_when_the_call_may() {
        use crate::address::Address;
        use crate::tls::{KmsTransportConfig, Roots, client_config};
        let mut connections = KmsConnections::new(KmsTransportConfig {
            proxy: Address::vsock(3, 8000),
            tls: client_config(Roots::MozillaAndExtra, None).expect("config"),
            connect_timeout: Duration::from_secs(1),
            max_idle_per_host: 1,
            idle_timeout: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        assert!(
            connections.checkout("kms", true, t0).is_err(),
            "nothing pooled"
        );
        assert_eq!(connections.checkin("kms", 1, t0), None);
        assert_eq!(
            connections.checkin("kms", 2, t0),
            Some(2),
            "handed back to close"
        );
        assert_eq!(connections.idle_connections(), 1, "one kept per host");
        assert!(
            connections.checkout("kms", false, t0).is_err(),
            "may not reuse"
        );
        assert_eq!(connections.checkout("kms", true, t0).ok(), Some(1));
        assert_eq!(connections.idle_connections(), 0);
        assert!(
            format!("{connections:?}").contains("Vsock"),
            "shows the proxy"
        );
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut pool = IdlePool::new(0, Duration::from_secs(1));
        assert_eq!(pool.put("a", 1, Instant::now()), Some(1));
    }
}
