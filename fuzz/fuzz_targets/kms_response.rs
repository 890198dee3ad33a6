//! KMS JSON responses with any status and error-type header: never panics.
#![no_main]

use kmstool_core::kms::response::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, Option<&str>, &[u8])| {
    let (status, header, body) = input;
    let _ = parse(status, header, body);
});
