//! The command line of `kmstool-instance` itself (the end-to-end tests are in `tests/`).

use std::process::Command;

fn instance() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kmstool-instance"))
}

#[test]
fn help_lists_upstream_flags_and_ours() {
    let out = instance().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--cid",
        "--port",
        "--region",
        "--encryption-context",
        "--connect",
        "--output",
        "generate-data-key",
        "generate-random",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn usage_errors_exit_1_with_a_message() {
    for args in [
        &[][..],
        &["--cid", "16"][..],
        &["--cid", "x", "AAAA"][..],
        &["--connect", "ftp:x", "AAAA"][..],
    ] {
        let out = instance().args(args).env_clear().output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn bad_ciphertext_is_refused_before_connecting() {
    let out = instance()
        .args(["--connect", "tcp:127.0.0.1:9", "not base64!"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: the ciphertext is not standard base64\n"
    );
}

#[test]
fn an_address_is_required_whatever_the_operation() {
    for args in [
        &["AAAA"][..],
        &["generate-random", "--number-of-bytes", "4"][..],
        &[
            "--region",
            "us-east-1",
            "generate-data-key",
            "--key-id",
            "k",
        ][..],
    ] {
        let out = instance().args(args).env_clear().output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "Error: no enclave address: give --cid CID or --connect ADDR\n",
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_ciphertext_and_a_subcommand_do_not_mix() {
    let out = instance()
        .args(["--connect", "tcp:127.0.0.1:9", "AAAA", "generate-random"])
        .args(["--number-of-bytes", "4"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: a CIPHERTEXT before a subcommand is not allowed\n"
    );
    assert!(out.stdout.is_empty());
}
