//! The kmstool simulator's library: a simulated Nitro Secure Module and a verifier for
//! attestation documents.
//!
//! [`nsm::SimNsm`] stands in for `/dev/nsm` outside an enclave and mints attestation documents
//! shaped like real ones under a simulated Nitro PKI; [`verify::verify`] checks a document
//! against a root (the AWS Nitro root for real documents, [`nsm::SimNsm::root_der`] for
//! simulated ones), as KMS does before it encrypts to the document's key.
#![deny(missing_docs)]

pub mod nsm;
pub mod verify;
