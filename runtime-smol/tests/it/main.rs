//! kmstool-runtime-smol's integration tests, in one test binary.

mod keys;
