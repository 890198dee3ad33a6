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
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
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
        Err(message) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}
