//! The kmstool simulator's library: a simulated Nitro Secure Module, a verifier for
//! attestation documents, a KMS emulator over HTTPS and a fake EC2 instance-metadata service.
//!
//! [`nsm::SimNsm`] stands in for `/dev/nsm` outside an enclave and mints attestation documents
//! shaped like real ones under a simulated Nitro PKI; [`verify::verify`] checks a document
//! against a root (the AWS Nitro root for real documents, [`nsm::SimNsm::root_der`] for
//! simulated ones), as KMS does before it encrypts to the document's key.
//! [`kms::KmsEmulator`] serves KMS's JSON 1.1 protocol over TLS and [`imds::Imds`] serves
//! IMDSv2 credentials it accepts.
#![deny(missing_docs)]

pub mod attestation;
pub mod nsm;
pub mod verify;

pub mod bench;
pub mod demo;
pub mod docs;
pub mod imds;
pub mod kms;
pub mod kms_client;
pub mod local;
