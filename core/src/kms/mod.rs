//! AWS KMS over its JSON 1.1 protocol: endpoints, signed requests, responses.

pub mod endpoint;
pub mod request;
pub mod response;
