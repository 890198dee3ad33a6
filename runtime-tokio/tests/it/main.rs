//! kmstool-runtime-tokio's integration tests, in one test binary.

mod example;
mod keys;
mod net;
