//! The parent-side client fed arbitrary enclave replies: never panics, ends at most once.
#![no_main]

use std::time::{Duration, Instant};

use kmstool_core::instance::{InstanceClient, InstanceRequest};
use kmstool_core::secret::Credentials;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|pieces: Vec<Vec<u8>>| {
    let credentials = Credentials::new("AKIDEXAMPLE", "secret", None);
    let mut client = InstanceClient::new(
        &credentials,
        Some("us-east-1"),
        InstanceRequest::decrypt(vec![1, 2, 3]),
        Instant::now(),
        Duration::from_secs(5),
    );
    let mut results = 0;
    for piece in pieces {
        while client.poll_transmit().is_some() {}
        client.handle_bytes(&piece);
        if client.poll_result().is_some() {
            results += 1;
        }
    }
    client.handle_eof();
    if client.poll_result().is_some() {
        results += 1;
    }
    assert!(results <= 1);
});
