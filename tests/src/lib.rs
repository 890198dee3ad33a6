//! Support for kmstool's integration tests (the tests themselves are in `tests/tests/it/`).
//!
//! [`bin`] finds the workspace's binaries, built by the same `cargo test --workspace` run.
//! The modules hold: [`framing`] the enclave protocol's 0-terminated messages, [`protocol`]
//! its commands and reply checks, [`connection`] a client connection to an enclave,
//! [`processes`] the `kmstool-sim` processes tests start, [`ports`] a port where nothing
//! answers, [`instance`] runs of `kmstool-instance` against a scripted enclave, [`robust`] and
//! [`hostile`] the misbehaving peers and measurements of the robustness and memory tests.
#![deny(missing_docs)]

pub mod connection;
pub mod framing;
pub mod hostile;
pub mod instance;
pub mod ports;
pub mod processes;
pub mod protocol;
pub mod robust;

use std::path::PathBuf;
use std::time::Duration;

/// How long a test waits for anything (a reply, a process to be ready) before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

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

/// A fresh directory under the system's temporary directory whose name starts with
/// `prefix`, removed when the returned guard is dropped.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
        .expect("creating a temporary directory")
}

/// A file under the system's temporary directory whose name starts with `prefix`, holding
/// `contents`, removed when the returned guard is dropped.
pub fn temp_file(prefix: &str, contents: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempfile()
        .expect("creating a temporary file");
    std::io::Write::write_all(&mut file, contents).expect("writing a temporary file");
    file
}

/// Runs `future` on a fresh runtime (for synchronous tests).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}
