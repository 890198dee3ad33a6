//! `kmstool-enclave` with the Nitro Secure Module device.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;
use kmstool_enclave::{Args, init_logging, run};
use kmstool_runtime_tokio::nsm::{NitroNsm, seed_kernel_rng};

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args.log_level);
    let nsm = match NitroNsm::open() {
        Ok(nsm) => Arc::new(nsm),
        Err(error) => {
            tracing::error!(%error, "no NSM");
            return ExitCode::FAILURE;
        }
    };
    match seed_kernel_rng(nsm.as_ref(), 256) {
        Ok(n) => tracing::debug!(bytes = n, "kernel RNG seeded from the NSM"),
        Err(error) => tracing::warn!(%error, "could not seed the kernel RNG from the NSM"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, nsm)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
