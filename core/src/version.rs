//! What every kmstool binary prints for `--version`: the version, the crypto backend compiled
//! in, and the commit when the build named one in `KMSTOOL_BUILD_COMMIT` (never read from
//! `.git`, so that the same source gives the same binary, and the same PCR0, however it was
//! checked out; naming a commit changes the binary).

/// The crypto backend that opens KMS's envelopes in this build.
#[cfg(feature = "aws-lc")]
macro_rules! crypto_backend {
    () => {
        "aws-lc-rs (AWS-LC)"
    };
}
#[cfg(all(feature = "rustcrypto", not(feature = "aws-lc")))]
macro_rules! crypto_backend {
    () => {
        "RustCrypto rsa and aes (TLS: rustls with ring)"
    };
}
#[cfg(not(any(feature = "aws-lc", feature = "rustcrypto")))]
macro_rules! crypto_backend {
    () => {
        "none (this binary opens no envelopes)"
    };
}

/// The crypto backend compiled in, as `--version` names it.
pub const CRYPTO_BACKEND: &str = crypto_backend!();

/// The text after the binary's name in `--version`: version, crypto backend and commit, one
/// per line.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncrypto: ",
    crypto_backend!(),
    "\ncommit: ",
    env!("KMSTOOL_COMMIT_LINE"),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_version_the_backend_and_the_commit_line() {
        let lines: Vec<&str> = LONG_VERSION.lines().collect();
        assert_eq!(lines.len(), 3, "{LONG_VERSION}");
        assert_eq!(lines[0], env!("CARGO_PKG_VERSION"));
        assert_eq!(lines[1], format!("crypto: {CRYPTO_BACKEND}"));
        let expected_commit = option_env!("KMSTOOL_BUILD_COMMIT")
            .map(str::trim)
            .filter(|commit| !commit.is_empty())
            .unwrap_or("not given at build time");
        assert_eq!(lines[2], format!("commit: {expected_commit}"));
    }

    #[cfg(feature = "aws-lc")]
    #[test]
    fn aws_lc_wins_when_both_backends_are_built() {
        assert_eq!(CRYPTO_BACKEND, "aws-lc-rs (AWS-LC)");
    }
}
