//! `kmstool-instance`: the parent-instance client of the enclave protocol.
//!
//! Upstream-compatible: `kmstool-instance --cid CID [--port 3000] [--region R]
//! [--encryption-context K=V]... CIPHERTEXT` prints the raw plaintext and a newline, exit 0;
//! any failure prints `Error: …` on stderr, exit 1. It also connects anywhere (`--connect`),
//! asks for data keys and random bytes, and prints raw, base64 or JSON. Credentials come from
//! the standard chain; nothing secret is ever printed except the result asked for.

mod cli;
mod credentials;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            if let Some((option, owners)) = cli::misplaced_option(&error) {
                eprintln!(
                    "Hint: {option} is an option of {}: put it after the subcommand's name",
                    owners.join(" and ")
                );
            }
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing(args.verbose);
    let json_errors = args.json_errors();
    match smol::block_on(cli::run(args)) {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&output).and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("Error: cannot write the result to stdout: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(failure) => {
            eprintln!("Error: {}", failure.message);
            if let Some(hint) = failure.hint {
                eprintln!("Hint: {hint}");
            }
            if json_errors {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout
                    .write_all(failure.to_json().as_bytes())
                    .and_then(|()| stdout.flush());
            }
            ExitCode::FAILURE
        }
    }
}

/// Diagnostics on stderr for `-v` (debug) and `-vv` (trace), from kmstool's crates only.
fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => return,
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "kmstool_instance={level},kmstool_runtime_smol={level},kmstool_core={level}"
    ));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}
