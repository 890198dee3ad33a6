//! The frame decoder on arbitrary bytes in arbitrary pieces: never panics, never yields a frame
//! over the cap or containing a terminator, and splitting never changes the frames.
#![no_main]

use kmstool_core::framing::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, Vec<u8>, Vec<u8>)| {
    let (max, cuts, bytes) = input;
    let max = usize::from(max % 4096).max(2);
    let collect = |pieces: &[&[u8]]| {
        let mut decoder = FrameDecoder::new(max);
        let mut frames = Vec::new();
        let mut failed = false;
        for piece in pieces {
            decoder.push(piece);
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        assert!(frame.len() < max);
                        assert!(!frame.contains(&0));
                        frames.push(frame.to_vec());
                    }
                    Ok(None) => break,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
        }
        (frames, failed)
    };
    let whole = collect(&[&bytes]);
    let mut pieces = Vec::new();
    let mut rest = &bytes[..];
    for cut in cuts {
        let at = usize::from(cut) % (rest.len() + 1);
        let (head, tail) = rest.split_at(at);
        pieces.push(head);
        rest = tail;
    }
    pieces.push(rest);
    let split = collect(&pieces);
    assert_eq!(whole, split);
});
