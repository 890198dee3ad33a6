//! The parent-side client fed arbitrary enclave replies in arbitrary pieces, for each kind of
//! request: never panics, sends one or two messages, ends exactly once (at the latest at end of
//! stream) and then has no deadline.
//!
//! (The outcome may depend on the split: bytes that arrive before the operation is sent stay
//! buffered until the next read, as the driving contract says; a real enclave never answers
//! ahead.)
//!
//! Input layout (see `fuzz/seed.sh`): the request kind (one byte), then the cut points (each
//! preceded by an odd byte, the list ended by an even one), then the enclave's byte stream —
//! so `00 00` followed by raw reply frames is a valid seed.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use kmstool_core::instance::InstanceClient;
use kmstool_core::protocol::{
    CommandArgs, DataKeySize, Decrypt, GenerateDataKey, GenerateRandom, KeySpec,
};
use kmstool_core::secret::Credentials;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    request: u8,
    cuts: Vec<u16>,
    stream: &'a [u8],
}

fn request(kind: u8) -> CommandArgs {
    match kind % 4 {
        0 => CommandArgs::decrypt(vec![1, 2, 3]),
        1 => CommandArgs::GenerateDataKey(GenerateDataKey {
            key_id: "alias/app".into(),
            size: DataKeySize::KeySpec(KeySpec::Aes256),
            encryption_context: [("k".to_owned(), "v".to_owned())].into(),
            grant_tokens: Vec::new(),
            dry_run: false,
        }),
        2 => CommandArgs::GenerateRandom(GenerateRandom {
            number_of_bytes: 32,
            custom_key_store_id: None,
        }),
        _ => CommandArgs::Decrypt(Decrypt {
            ciphertext: vec![0xff; 40],
            encryption_context: Default::default(),
            key_id: Some("arn:aws:kms:us-east-1:111122223333:key/k".into()),
            encryption_algorithm: None,
            grant_tokens: vec!["grant".into()],
            dry_run: false,
        }),
    }
}

/// Runs one exchange as a driver would.
fn exchange(kind: u8, pieces: &[&[u8]]) {
    let credentials = Credentials::new("AKIDEXAMPLE", "secret", Some("token".into()));
    let start = Instant::now();
    let mut client = InstanceClient::new(
        &credentials,
        Some("us-east-1"),
        request(kind),
        start,
        Duration::from_secs(5),
    );
    let mut results = 0;
    let mut sent = 0;
    for piece in pieces {
        while let Some(bytes) = client.poll_transmit() {
            assert_eq!(bytes.last(), Some(&0));
            sent += 1;
        }
        client.handle_bytes(start, piece);
        if client.poll_result().is_some() {
            results += 1;
        }
    }
    while client.poll_transmit().is_some() {
        sent += 1;
    }
    client.handle_eof(start);
    if client.poll_result().is_some() {
        results += 1;
    }
    assert!(
        client.poll_timeout().is_none(),
        "a finished client still has a deadline"
    );
    assert!(client.poll_result().is_none(), "a result returned twice");
    assert!((1..=2).contains(&sent), "{sent} messages sent");
    assert_eq!(results, 1, "not exactly one result by the end of stream");
}

fuzz_target!(|input: Input<'_>| {
    let Input {
        request,
        cuts,
        stream,
    } = input;
    let mut pieces = Vec::new();
    let mut rest = stream;
    for cut in cuts {
        let at = usize::from(cut) % (rest.len() + 1);
        let (head, tail) = rest.split_at(at);
        pieces.push(head);
        rest = tail;
    }
    pieces.push(rest);
    exchange(request, &[stream]);
    exchange(request, &pieces);
});
