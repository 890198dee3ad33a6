//! kmstool-enclave-cli's integration tests, in one test binary.

mod cli;
