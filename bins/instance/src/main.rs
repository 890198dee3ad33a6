//! `kmstool-instance`: the parent-instance client of the enclave protocol.
//!
//! Upstream-compatible: `kmstool-instance --cid CID [--port 3000] [--region R]
//! [--encryption-context K=V]... CIPHERTEXT` prints the raw plaintext and a newline, exit 0;
//! any failure prints `Error: …` on stderr, exit 1. It also connects anywhere (`--connect`),
//! asks for data keys and random bytes, and prints raw, base64 or JSON. Credentials come from
//! the standard chain; nothing secret is ever printed except the result asked for.

use std::io::Write as _;
use std::process::ExitCode;

use async_signal::{Signal, Signals};
use clap::Parser as _;
use kmstool_instance::cli;
use smol::future::FutureExt as _;
use smol::stream::StreamExt as _;

/// How the run ended: it finished, or a signal stopped it first.
enum Ending<T> {
    Finished(T),
    /// SIGTERM or SIGINT, and the exit status: 128 + the signal's number, as a shell reports it.
    Signalled(&'static str, u8),
}

/// Waits for SIGTERM or SIGINT. As PID 1 in a container the kernel ignores both unless a
/// handler is installed, so `docker stop` would wait out its grace period and then kill.
async fn termination<T>() -> Ending<T> {
    let Ok(mut signals) = Signals::new([Signal::Term, Signal::Int]) else {
        // Without handlers the default action (terminate) still applies outside PID 1.
        return smol::future::pending().await;
    };
    loop {
        match signals.next().await {
            Some(Ok(Signal::Term)) => return Ending::Signalled("SIGTERM", 143),
            Some(Ok(Signal::Int)) => return Ending::Signalled("SIGINT", 130),
            Some(_) => {}
            None => return smol::future::pending().await,
        }
    }
}

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
    let ending = smol::block_on(async { Ending::Finished(cli::run(args).await) }.or(termination()));
    let result = match ending {
        Ending::Finished(result) => result,
        Ending::Signalled(name, status) => {
            eprintln!("Error: stopped by {name}");
            return ExitCode::from(status);
        }
    };
    match result {
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
