//! Helpers shared by the simulator's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kmstool_sim::nsm::{Clock, SimConfig, SimNsm};

/// A fixed time: 2023-11-14T22:13:20Z, in milliseconds.
pub const NOW_MS: u64 = 1_700_000_000_000;
pub const HOUR_MS: u64 = 3_600_000;
pub const DAY_MS: u64 = 24 * HOUR_MS;

pub const REAL_DOCUMENTS: [&str; 3] = [
    "real-nitro-attestation-1.cose",
    "real-nitro-attestation-2.cose",
    "real-nitro-attestation-debug.cose",
];

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../fixtures/attestation/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The AWS Nitro Enclaves root G1, DER.
pub fn aws_root_der() -> Vec<u8> {
    pem_to_der(&String::from_utf8_lossy(&fixture("aws-nitro-root-g1.pem")))
}

pub fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .unwrap_or_else(|e| panic!("bad PEM: {e}"))
}

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
