//! kmstool-core's integration tests, one module per subject, in one test binary.

mod cms_common;
mod cms_crypto;
mod cms_fixtures;
mod cms_proptest;
mod cms_reject;
mod cms_roundtrip;
mod kms_call;
mod kms_fixtures_gen;
mod protocol_commands;
mod session_scenarios;
mod sigv4_vectors;
