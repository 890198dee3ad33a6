//! Support for kmstool's integration tests (the tests themselves are in `tests/tests/`).
//!
//! [`bin`] finds the workspace's binaries, built by the same `cargo test --workspace` run.
#![deny(missing_docs)]

pub mod instance;
pub mod robust;

use std::path::PathBuf;

/// Path of a workspace binary (`kmstool-sim`, `kmstool-instance`, ...) next to the test
/// executable's directory (`target/<profile>/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

pub mod enclave;
pub mod hostile;
