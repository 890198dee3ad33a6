//! Time for the simulated NSM's tests: a fixed instant, clocks fixed or moved by the test, and
//! simulated NSMs whose clock is fixed at that instant.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kmstool_sim::nsm::{Clock, SimConfig, SimNsm};

/// A fixed time: 2023-11-14T22:13:20Z, in milliseconds.
pub const NOW_MS: u64 = 1_700_000_000_000;
pub const HOUR_MS: u64 = 3_600_000;
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// A clock tests can move.
#[derive(Clone)]
pub struct TestClock(Arc<AtomicU64>);

impl TestClock {
    pub fn new(ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(ms)))
    }

    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn clock(&self) -> Clock {
        let time = self.0.clone();
        Arc::new(move || time.load(Ordering::SeqCst))
    }
}

pub fn fixed_clock(ms: u64) -> Clock {
    Arc::new(move || ms)
}

pub fn sim(config: SimConfig) -> SimNsm {
    SimNsm::new(config, fixed_clock(NOW_MS)).unwrap_or_else(|e| panic!("SimNsm::new: {e}"))
}

pub fn sim_document(nsm: &SimNsm, public_key: &[u8]) -> Vec<u8> {
    kmstool_core::nsm::attest(nsm, public_key).unwrap_or_else(|e| panic!("attest: {e}"))
}
