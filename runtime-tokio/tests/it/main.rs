//! kmstool-runtime-tokio's integration tests, in one test binary.

mod keys;
mod net;
