//! kmstool-sim's integration tests, one module per subject, in one test binary.

// Shared by the tests below.
mod clock;
mod emulator;
mod fixtures;

mod asymmetric;
mod bench;
mod imds;
mod independent;
mod kms_attested;
mod kms_emulator;
mod sim_nsm;
mod verify;
