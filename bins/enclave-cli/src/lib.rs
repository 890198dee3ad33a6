//! kmstool-enclave-cli library: argument parsing and the run loop, shared with kmstool-sim.
