//! `kmstool-instance`'s command line and exchange, as a library so that other tools (the
//! simulator's completion and man-page generator) can read its [`cli::Args`] definition.
#![deny(missing_docs)]

pub mod cli;
mod credentials;
