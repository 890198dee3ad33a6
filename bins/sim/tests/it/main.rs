//! kmstool-sim's integration tests, one module per subject, in one test binary.

mod bench;
mod common;
mod imds;
mod independent;
mod kms_attested;
mod kms_client;
mod kms_emulator;
mod sim_nsm;
mod verify;
