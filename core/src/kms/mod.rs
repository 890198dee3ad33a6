//! AWS KMS over its JSON 1.1 protocol: endpoints, signed requests, responses, and
//! [`call::Call`], one attested call as a state machine.

#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
pub mod call;
#[cfg(feature = "tls")]
pub mod client;
pub mod endpoint;
pub mod request;
pub mod response;
pub mod skew;
