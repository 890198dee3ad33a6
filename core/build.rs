//! Passes the commit named at build time (`KMSTOOL_BUILD_COMMIT`) to `version`. It is never
//! read from `.git`: the same source must give the same binaries, and so the same PCR0, however
//! it was checked out.

fn main() {
    println!("cargo:rerun-if-env-changed=KMSTOOL_BUILD_COMMIT");
    let commit = std::env::var("KMSTOOL_BUILD_COMMIT")
        .ok()
        .map(|commit| commit.trim().to_owned())
        .filter(|commit| !commit.is_empty() && !commit.contains(['\n', '\r']))
        .unwrap_or_else(|| "not given at build time".to_owned());
    println!("cargo:rustc-env=KMSTOOL_COMMIT_LINE={commit}");
}
