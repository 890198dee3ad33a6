//! The frame decoder on arbitrary bytes in arbitrary pieces, checked against a one-line model:
//! the frames are the terminator-separated segments, in order, until the first segment that
//! does not fit the cap (after which nothing more comes out), whatever the split.
//!
//! Input layout (see `fuzz/seed.sh`): `max: u16`, then the cut points (each preceded by an odd
//! byte, the list ended by an even one), then the stream itself — so `ff 0f 00` followed by
//! raw frames is a valid seed.
#![no_main]

use arbitrary::Arbitrary;
use kmstool_core::framing::FrameDecoder;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    max: u16,
    cuts: Vec<u16>,
    bytes: &'a [u8],
}

/// What the decoder must yield: every terminated segment that fits, in order, and whether it
/// failed (a terminated segment too long, or an unterminated tail already at the cap).
fn model(bytes: &[u8], max: usize) -> (Vec<Vec<u8>>, bool) {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|b| *b == 0) {
        if at + 1 > max {
            return (frames, true);
        }
        frames.push(rest[..at].to_vec());
        rest = &rest[at + 1..];
    }
    (frames, rest.len() >= max)
}

fn decode(pieces: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, bool) {
    let mut decoder = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut failed = false;
    for piece in pieces {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(!failed, "a frame after the error");
                    frames.push(frame.to_vec());
                }
                Ok(None) => break,
                Err(error) => {
                    assert!(!failed, "two errors");
                    assert_eq!(error.max, max);
                    failed = true;
                    break;
                }
            }
        }
        assert_eq!(decoder.has_failed(), failed);
        if !failed {
            assert!(
                decoder.buffered() < max,
                "holds {} bytes",
                decoder.buffered()
            );
        }
    }
    (frames, failed)
}

fuzz_target!(|input: Input<'_>| {
    let Input { max, cuts, bytes } = input;
    let max = usize::from(max % 4096).max(2);
    let mut pieces = Vec::new();
    let mut rest = bytes;
    for cut in cuts {
        let at = usize::from(cut) % (rest.len() + 1);
        let (head, tail) = rest.split_at(at);
        pieces.push(head);
        rest = tail;
    }
    pieces.push(rest);

    let expected = model(bytes, max);
    assert_eq!(decode(&[bytes], max), expected);
    assert_eq!(decode(&pieces, max), expected);
});
