//! The command line of `kmstool-enclave` (serving is tested through `kmstool-sim enclave`,
//! which runs the same code with a simulated NSM).

use std::process::Command;

#[test]
fn help_lists_upstream_flags_and_ours() {
    let out = Command::new(env!("CARGO_BIN_EXE_kmstool-enclave"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--region",
        "--port",
        "--proxy-port",
        "--listen",
        "--proxy",
        "--endpoint",
        "--ca-bundle",
        "--max-connections",
        "--max-message-bytes",
        "[env: REGION=]",
        "[env: ENDPOINT=]",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn without_an_nsm_it_says_so_and_fails() {
    let out = Command::new(env!("CARGO_BIN_EXE_kmstool-enclave"))
        .args(["--listen", "tcp:127.0.0.1:0"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/dev/nsm"), "{stderr}");
}
