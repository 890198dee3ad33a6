//! Command parsing on arbitrary bytes: never panics; every rejection carries an upstream text.
#![no_main]

use kmstool_core::protocol::parse_command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match parse_command(bytes) {
        Ok(command) => {
            if let Err(error) = command.args {
                assert!(error.to_string().starts_with(error.upstream_text()));
            }
        }
        Err(rejected) => {
            assert!(rejected.error.to_string().starts_with(rejected.error.upstream_text()));
        }
    }
});
