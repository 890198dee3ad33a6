//! The NSM's describe requests, for the simulator's tests and tools (the enclave never asks
//! them): `DescribePCR`, `DescribeNSM`, and the digest names attestation documents use. The
//! simulator's tests (`sim_nsm`) ask them of [`super::SimNsm`], errors included.

use std::collections::BTreeSet;

use kmstool_core::nsm::{Digest, Nsm, NsmError, NsmErrorCode, Request, Response};

/// The state of one platform configuration register, as `DescribePCR` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrState {
    /// Whether the register is locked (read-only).
    pub locked: bool,
    /// The register's current value (48 bytes with SHA-384).
    pub data: Vec<u8>,
}

/// Reads platform configuration register `index`.
pub fn describe_pcr(nsm: &dyn Nsm, index: u16) -> Result<PcrState, NsmError> {
    match nsm.process(Request::DescribePCR { index }) {
        Response::DescribePCR { lock, data } => Ok(PcrState { locked: lock, data }),
        other => Err(unexpected(other, "DescribePCR")),
    }
}

/// What `DescribeNSM` reports about a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsmDescription {
    /// Module API version: major, minor, patch.
    pub version: (u16, u16, u16),
    /// The module's identifier (`i-…-enc…`), as it appears in attestation documents.
    pub module_id: String,
    /// Number of registers the module exposes.
    pub max_pcrs: u16,
    /// Registers that are read-only.
    pub locked_pcrs: BTreeSet<u16>,
    /// Name of the register digest: `SHA256`, `SHA384` or `SHA512`.
    pub digest: &'static str,
}

/// Asks the module to describe itself.
pub fn describe_nsm(nsm: &dyn Nsm) -> Result<NsmDescription, NsmError> {
    match nsm.process(Request::DescribeNSM) {
        Response::DescribeNSM {
            version_major,
            version_minor,
            version_patch,
            module_id,
            max_pcrs,
            locked_pcrs,
            digest,
        } => Ok(NsmDescription {
            version: (version_major, version_minor, version_patch),
            module_id,
            max_pcrs,
            locked_pcrs,
            digest: digest_name(digest),
        }),
        other => Err(unexpected(other, "DescribeNSM")),
    }
}

/// The name the NSM uses for a digest in attestation documents (`SHA384`, …).
pub fn digest_name(digest: Digest) -> &'static str {
    match digest {
        Digest::SHA256 => "SHA256",
        Digest::SHA384 => "SHA384",
        Digest::SHA512 => "SHA512",
    }
}

/// The length in bytes of a register value under `digest`.
pub fn digest_len(digest: Digest) -> usize {
    match digest {
        Digest::SHA256 => 32,
        Digest::SHA384 => 48,
        Digest::SHA512 => 64,
    }
}

/// Maps a response that is not the one asked for to an error.
fn unexpected(response: Response, expected: &'static str) -> NsmError {
    match response {
        Response::Error(code) => NsmError::Module(NsmErrorCode::from(&code)),
        _ => NsmError::UnexpectedResponse { expected },
    }
}
