//! The NSM's describe requests, for the simulator's tests and tools (the enclave never asks
//! them): `DescribePCR`, `DescribeNSM`, and the digest names attestation documents use.

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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use kmstool_core::nsm::ErrorCode;

    use super::*;

    /// A module that answers from a script and records the requests it saw.
    struct Scripted {
        responses: Mutex<Vec<Response>>,
        seen: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(mut responses: Vec<Response>) -> Self {
            responses.reverse();
            Self {
                responses: Mutex::new(responses),
                seen: Mutex::new(Vec::new()),
            }
        }

        fn seen(&self) -> Vec<String> {
            self.seen.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    impl Nsm for Scripted {
        fn process(&self, request: Request) -> Response {
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(format!("{request:?}"));
            }
            self.responses
                .lock()
                .ok()
                .and_then(|mut r| r.pop())
                .unwrap_or(Response::Error(ErrorCode::InternalError))
        }
    }

    #[test]
    fn describe_pcr_reads_lock_and_value() {
        let nsm = Scripted::new(vec![
            Response::DescribePCR {
                lock: true,
                data: vec![7; 48],
            },
            Response::Error(ErrorCode::InvalidIndex),
        ]);
        assert_eq!(
            describe_pcr(&nsm, 0),
            Ok(PcrState {
                locked: true,
                data: vec![7; 48]
            })
        );
        assert_eq!(
            describe_pcr(&nsm, 99),
            Err(NsmError::Module(NsmErrorCode::InvalidIndex))
        );
        assert_eq!(
            nsm.seen(),
            vec!["DescribePCR { index: 0 }", "DescribePCR { index: 99 }"]
        );
    }

    #[test]
    fn describe_nsm_reports_the_module() {
        let nsm = Scripted::new(vec![Response::DescribeNSM {
            version_major: 1,
            version_minor: 0,
            version_patch: 0,
            module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
            max_pcrs: 32,
            locked_pcrs: [0, 1, 2].into_iter().collect(),
            digest: Digest::SHA384,
        }]);
        assert_eq!(
            describe_nsm(&nsm),
            Ok(NsmDescription {
                version: (1, 0, 0),
                module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
                max_pcrs: 32,
                locked_pcrs: [0, 1, 2].into_iter().collect(),
                digest: "SHA384",
            })
        );
    }
}
