//! kmstool-instance's integration tests, in one test binary.

mod cli;
