//! Idle KMS connections kept for reuse, per host. The runtimes keep their connection type in
//! it; the policy (most recently used first, bounded, expiring) lives here once.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
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

    /// An idle connection to `host`, the most recently used one first; expired ones are dropped.
    pub fn take(&mut self, host: &str, now: Instant) -> Option<C> {
        let list = self.idle.get_mut(host)?;
        let timeout = self.idle_timeout;
        list.retain(|(_, since)| now.saturating_duration_since(*since) < timeout);
        let conn = list.pop().map(|(conn, _)| conn);
        if list.is_empty() {
            self.idle.remove(host);
        }
        conn
    }

    /// Keeps `conn` for reuse. Returns it when the host already has the maximum idle, so the
    /// caller closes it.
    pub fn put(&mut self, host: &str, conn: C, now: Instant) -> Option<C> {
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

/// An [`IdlePool`] shared by every session of a server.
#[derive(Debug)]
pub struct SharedPool<C> {
    idle: Mutex<IdlePool<C>>,
}

impl<C> SharedPool<C> {
    /// See [`IdlePool::new`].
    pub fn new(max_idle_per_host: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(IdlePool::new(max_idle_per_host, idle_timeout)),
        }
    }

    /// See [`IdlePool::take`].
    pub fn take(&self, host: &str, now: Instant) -> Option<C> {
        self.lock().take(host, now)
    }

    /// Keeps `conn` for reuse; an excess connection is dropped (closed) here.
    pub fn put(&self, host: &str, conn: C, now: Instant) {
        let excess = self.lock().put(host, conn, now);
        drop(excess);
    }

    /// Idle connections across hosts.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, IdlePool<C>> {
        // Nothing panics while holding the lock; the pool stays consistent if something did.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut pool = IdlePool::new(0, Duration::from_secs(1));
        assert_eq!(pool.put("a", 1, Instant::now()), Some(1));
    }
}
