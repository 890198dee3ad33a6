//! The command line of `kmstool-enclave-cli` (operations are tested through
//! `kmstool-sim enclave-cli`, the same code with a simulated NSM).

use std::process::Command;

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kmstool-enclave-cli"))
}

#[test]
fn help_lists_the_upstream_subcommands() {
    let out = cli().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["decrypt", "genkey", "genrandom"] {
        assert!(help.contains(word), "{help}");
    }
    let out = cli().args(["genkey", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--key-spec",
        "--number-of-bytes",
        "--aws-access-key-id",
        "--proxy-port",
        "--encryption-context",
    ] {
        assert!(help.contains(flag), "{help}");
    }
}

#[test]
fn bad_arguments_exit_1() {
    for args in [
        &[][..],
        &["decrypt"][..],
        &["genrandom", "--length", "0"][..],
        &["genrandom", "--length", "1025"][..],
        &["genkey", "--key-id", "k", "--key-spec", "AES-512"][..],
        &["frobnicate"][..],
    ] {
        let out = cli().args(args).env_clear().output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
}

#[test]
fn missing_credentials_exit_1_before_touching_the_nsm() {
    let out = cli()
        .args(["genrandom", "--length", "16"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credentials"));
}

#[test]
fn outside_an_enclave_the_operation_fails_with_255() {
    let out = cli()
        .args([
            "genrandom",
            "--length",
            "16",
            "--aws-access-key-id",
            "AKID",
            "--aws-secret-access-key",
            "S",
        ])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/dev/nsm"));
}
