//! The Nitro Secure Module interface shared by the runtimes and the simulator.
//!
//! The request and response types are those of `aws-nitro-enclaves-nsm-api` (types only, no
//! driver), re-exported here so that every crate speaks the same language. [`Nsm`] is the one
//! operation a module offers: take a [`Request`], give back a [`Response`]. The real device (an
//! ioctl on `/dev/nsm`) lives in a runtime; the simulator implements the same trait.
//!
//! The helpers below build the requests kmstool makes and turn the module's answers into typed
//! results, so no caller matches on [`Response`] by hand. [`gate`] bounds how many calls may
//! wait for the module, and for how long.

pub mod gate;

use std::fmt;

pub use aws_nitro_enclaves_nsm_api::api::{Digest, ErrorCode, Request, Response};
use serde_bytes::ByteBuf;

/// Largest attestation document [`attest`] accepts from a module, in bytes.
///
/// The same cap the document parser applies (`attestation::MAX_DOCUMENT_BYTES`).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024;

/// Largest number of random bytes [`get_random`] gathers in one call.
pub const MAX_RANDOM_BYTES: usize = 64 * 1024;

/// A Nitro Secure Module: answers one request at a time.
///
/// `process` blocks (the real module is an ioctl), possibly for ever if the module hangs;
/// async runtimes call it off their reactor threads, on the bounded workers [`gate`] governs. An implementation answers every request, failures included, with a [`Response`]
/// (`Response::Error` for a refused request); it never panics on a request.
pub trait Nsm: Send + Sync + 'static {
    /// Sends one request to the module and returns its response.
    fn process(&self, request: Request) -> Response;
}

/// Builds the attestation request kmstool sends: the enclave's public key, no user data, no
/// nonce (exactly what the upstream C tool asks for).
///
/// `public_key_der` is the DER SubjectPublicKeyInfo of the enclave's RSA key; KMS encrypts the
/// response to it.
pub fn attestation_request(public_key_der: &[u8]) -> Request {
    Request::Attestation {
        user_data: None,
        nonce: None,
        public_key: Some(ByteBuf::from(public_key_der.to_vec())),
    }
}

/// Asks the module for an attestation document binding `public_key_der` and returns the raw
/// document (an untagged COSE_Sign1; `kmstool-sim`'s `attestation` module parses and builds
/// them).
pub fn attest(nsm: &dyn Nsm, public_key_der: &[u8]) -> Result<Vec<u8>, NsmError> {
    match nsm.process(attestation_request(public_key_der)) {
        Response::Attestation { document } if document.is_empty() => Err(NsmError::EmptyDocument),
        Response::Attestation { document } if document.len() > MAX_DOCUMENT_BYTES => {
            Err(NsmError::DocumentTooLarge {
                len: document.len(),
                max: MAX_DOCUMENT_BYTES,
            })
        }
        Response::Attestation { document } => Ok(document),
        other => Err(unexpected(other, "Attestation")),
    }
}

/// Gathers `n` random bytes from the module, asking as many times as needed (the module hands
/// out a bounded amount per request).
///
/// `n` is capped at [`MAX_RANDOM_BYTES`]; a module that answers with no bytes is an error rather
/// than a reason to loop forever.
pub fn get_random(nsm: &dyn Nsm, n: usize) -> Result<Vec<u8>, NsmError> {
    if n > MAX_RANDOM_BYTES {
        return Err(NsmError::RandomTooLarge {
            requested: n,
            max: MAX_RANDOM_BYTES,
        });
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match nsm.process(Request::GetRandom) {
            Response::GetRandom { random } if random.is_empty() => {
                return Err(NsmError::EmptyRandom);
            }
            Response::GetRandom { random } => {
                let wanted = n - out.len();
                out.extend(random.iter().take(wanted));
            }
            other => return Err(unexpected(other, "GetRandom")),
        }
    }
    Ok(out)
}

/// Maps a response that is not the one asked for to an error.
fn unexpected(response: Response, expected: &'static str) -> NsmError {
    match response {
        Response::Error(code) => NsmError::Module(NsmErrorCode::from(&code)),
        _ => NsmError::UnexpectedResponse { expected },
    }
}

/// An error code returned by the module (a comparable copy of [`ErrorCode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsmErrorCode {
    /// The module said `Success` inside an error response.
    Success,
    /// An argument was invalid.
    InvalidArgument,
    /// The register index is out of bounds.
    InvalidIndex,
    /// The response did not match the request.
    InvalidResponse,
    /// The register is locked.
    ReadOnlyIndex,
    /// The module cannot perform this operation.
    InvalidOperation,
    /// The output buffer was too small.
    BufferTooSmall,
    /// The input was too large.
    InputTooLarge,
    /// The module failed internally.
    InternalError,
}

impl From<&ErrorCode> for NsmErrorCode {
    fn from(code: &ErrorCode) -> Self {
        match code {
            ErrorCode::Success => Self::Success,
            ErrorCode::InvalidArgument => Self::InvalidArgument,
            ErrorCode::InvalidIndex => Self::InvalidIndex,
            ErrorCode::InvalidResponse => Self::InvalidResponse,
            ErrorCode::ReadOnlyIndex => Self::ReadOnlyIndex,
            ErrorCode::InvalidOperation => Self::InvalidOperation,
            ErrorCode::BufferTooSmall => Self::BufferTooSmall,
            ErrorCode::InputTooLarge => Self::InputTooLarge,
            ErrorCode::InternalError => Self::InternalError,
        }
    }
}

impl From<NsmErrorCode> for ErrorCode {
    fn from(code: NsmErrorCode) -> Self {
        match code {
            NsmErrorCode::Success => Self::Success,
            NsmErrorCode::InvalidArgument => Self::InvalidArgument,
            NsmErrorCode::InvalidIndex => Self::InvalidIndex,
            NsmErrorCode::InvalidResponse => Self::InvalidResponse,
            NsmErrorCode::ReadOnlyIndex => Self::ReadOnlyIndex,
            NsmErrorCode::InvalidOperation => Self::InvalidOperation,
            NsmErrorCode::BufferTooSmall => Self::BufferTooSmall,
            NsmErrorCode::InputTooLarge => Self::InputTooLarge,
            NsmErrorCode::InternalError => Self::InternalError,
        }
    }
}

/// Why a request to the module did not give the expected result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NsmError {
    /// The module refused the request with this code.
    Module(NsmErrorCode),
    /// The module answered with a response of another kind than the request.
    UnexpectedResponse {
        /// The response kind that was expected.
        expected: &'static str,
    },
    /// The module returned an empty attestation document.
    EmptyDocument,
    /// The module returned an attestation document larger than the cap.
    DocumentTooLarge {
        /// Size of the document.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The module returned no random bytes.
    EmptyRandom,
    /// More random bytes were requested than one call gathers.
    RandomTooLarge {
        /// Bytes requested.
        requested: usize,
        /// The cap.
        max: usize,
    },
}

impl fmt::Display for NsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Module(code) => write!(f, "NSM refused the request: {code:?}"),
            Self::UnexpectedResponse { expected } => {
                write!(f, "NSM answered with a response other than {expected}")
            }
            Self::EmptyDocument => f.write_str("NSM returned an empty attestation document"),
            Self::DocumentTooLarge { len, max } => {
                write!(f, "NSM attestation document of {len} bytes exceeds {max}")
            }
            Self::EmptyRandom => f.write_str("NSM returned no random bytes"),
            Self::RandomTooLarge { requested, max } => {
                write!(
                    f,
                    "{requested} random bytes requested, at most {max} allowed"
                )
            }
        }
    }
}

impl std::error::Error for NsmError {}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

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
    fn attestation_request_carries_only_the_public_key() {
        match attestation_request(b"spki") {
            Request::Attestation {
                user_data,
                nonce,
                public_key,
            } => {
                assert_eq!(user_data, None);
                assert_eq!(nonce, None);
                assert_eq!(public_key.as_deref().map(|k| &k[..]), Some(&b"spki"[..]));
            }
            other => panic!("not an attestation request: {other:?}"),
        }
    }

    #[test]
    fn attest_returns_the_document() {
        let nsm = Scripted::new(vec![Response::Attestation {
            document: vec![0x84, 1, 2],
        }]);
        assert_eq!(attest(&nsm, b"key"), Ok(vec![0x84, 1, 2]));
        assert_eq!(nsm.seen().len(), 1);
        assert!(nsm.seen()[0].contains("Attestation"));
    }

    #[test]
    fn attest_maps_failures() {
        let cases: Vec<(Response, NsmError)> = vec![
            (
                Response::Error(ErrorCode::InvalidArgument),
                NsmError::Module(NsmErrorCode::InvalidArgument),
            ),
            (
                Response::GetRandom { random: vec![1] },
                NsmError::UnexpectedResponse {
                    expected: "Attestation",
                },
            ),
            (
                Response::Attestation { document: vec![] },
                NsmError::EmptyDocument,
            ),
            (
                Response::Attestation {
                    document: vec![0; MAX_DOCUMENT_BYTES + 1],
                },
                NsmError::DocumentTooLarge {
                    len: MAX_DOCUMENT_BYTES + 1,
                    max: MAX_DOCUMENT_BYTES,
                },
            ),
        ];
        for (response, expected) in cases {
            let nsm = Scripted::new(vec![response]);
            assert_eq!(attest(&nsm, b"key"), Err(expected));
        }
    }

    #[test]
    fn get_random_gathers_across_responses() {
        let nsm = Scripted::new(vec![
            Response::GetRandom {
                random: vec![1, 2, 3],
            },
            Response::GetRandom {
                random: vec![4, 5, 6],
            },
        ]);
        assert_eq!(get_random(&nsm, 5), Ok(vec![1, 2, 3, 4, 5]));
        assert_eq!(nsm.seen(), vec!["GetRandom", "GetRandom"]);
    }

    #[test]
    fn get_random_refuses_empty_answers_and_huge_requests() {
        let nsm = Scripted::new(vec![Response::GetRandom { random: vec![] }]);
        assert_eq!(get_random(&nsm, 1), Err(NsmError::EmptyRandom));
        let nsm = Scripted::new(vec![]);
        assert_eq!(
            get_random(&nsm, MAX_RANDOM_BYTES + 1),
            Err(NsmError::RandomTooLarge {
                requested: MAX_RANDOM_BYTES + 1,
                max: MAX_RANDOM_BYTES
            })
        );
        assert!(nsm.seen().is_empty());
        assert_eq!(get_random(&nsm, 0), Ok(vec![]));
    }

    #[test]
    fn error_codes_round_trip() {
        for code in [
            NsmErrorCode::Success,
            NsmErrorCode::InvalidArgument,
            NsmErrorCode::InvalidIndex,
            NsmErrorCode::InvalidResponse,
            NsmErrorCode::ReadOnlyIndex,
            NsmErrorCode::InvalidOperation,
            NsmErrorCode::BufferTooSmall,
            NsmErrorCode::InputTooLarge,
            NsmErrorCode::InternalError,
        ] {
            assert_eq!(NsmErrorCode::from(&ErrorCode::from(code)), code);
        }
    }
}
