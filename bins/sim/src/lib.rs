//! Simulators for testing kmstool without AWS: a KMS emulator over HTTPS and a fake EC2
//! instance-metadata service (IMDSv2).
#![deny(missing_docs)]

pub mod imds;
pub mod kms;
