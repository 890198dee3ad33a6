//! `kmstool-enclave-cli` with the Nitro Secure Module device.

use std::process::ExitCode;
use std::sync::Arc;

use kmstool_core::nsm::Nsm;
use kmstool_runtime_tokio::nsm::NitroNsm;

fn main() -> ExitCode {
    let status = kmstool_enclave_cli::main_with(std::env::args_os().collect(), || {
        let nsm = NitroNsm::open().map_err(|e| e.to_string())?;
        Ok(Arc::new(nsm) as Arc<dyn Nsm>)
    });
    ExitCode::from(status)
}
