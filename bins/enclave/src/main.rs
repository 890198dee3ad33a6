//! `kmstool-enclave` with the Nitro Secure Module device.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;
use kmstool_enclave::{Args, check_logging, init_logging, run};
use kmstool_runtime_tokio::nsm::{NitroNsm, seed_kernel_rng};

fn main() -> ExitCode {
    // Bad arguments exit 1, as in the other binaries (clap's own status is 2).
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // Configuration mistakes are reported before the device is opened or anything is bound.
    if let Err(error) = check_logging(args.log_filter()) {
        eprintln!("Error: {error}");
        return ExitCode::FAILURE;
    }
    if let Err(error) = args.validate() {
        eprintln!("Error: {error:#}");
        return ExitCode::FAILURE;
    }
    // Opened before logging starts: the device driver logs its own copy of a failure to
    // open, and the error below already says it once, with what to do instead.
    let nsm = match NitroNsm::open() {
        Ok(nsm) => Arc::new(nsm),
        Err(error) => {
            eprintln!("Error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = init_logging(args.log_filter(), args.log_format) {
        eprintln!("Error: {error}");
        return ExitCode::FAILURE;
    }
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
            eprintln!("Error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, nsm)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
