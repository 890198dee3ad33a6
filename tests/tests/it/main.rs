//! kmstool's cross-crate and process-level tests, one module per subject, in one test
//! binary; the helpers they share are the `kmstool_tests` library (`tests/src/`).

mod enclave_cli;
mod enclave_concurrency;
mod enclave_errors;
mod enclave_protocol;
mod enclave_server;
mod faults;
mod hostile;
mod instance;
mod key_pairs;
mod kms_client;
mod memory;
mod processes;
mod runtimes;
mod secrets;
