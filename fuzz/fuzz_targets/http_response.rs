//! The HTTP/1.1 response parser on arbitrary bytes fed in arbitrary pieces: never panics, and
//! the outcome does not depend on how the bytes were split.
#![no_main]

use kmstool_core::http::{HttpLimits, Progress, ResponseParser};
use libfuzzer_sys::fuzz_target;

fn run(pieces: &[&[u8]], eof: bool) -> Option<Result<(u16, Vec<u8>, bool), String>> {
    let limits = HttpLimits {
        max_head_bytes: 2048,
        max_headers: 16,
        max_body_bytes: 8192,
    };
    let mut parser = ResponseParser::new(limits);
    for piece in pieces {
        match parser.feed(piece) {
            Ok(Progress::NeedMore) => {}
            Ok(Progress::Complete(r)) => return Some(Ok((r.status, r.body.to_vec(), r.reusable))),
            Err(e) => return Some(Err(e.to_string())),
        }
    }
    if eof {
        return Some(
            parser
                .eof()
                .map(|r| (r.status, r.body.to_vec(), r.reusable))
                .map_err(|e| e.to_string()),
        );
    }
    None
}

fuzz_target!(|input: (bool, Vec<u8>, Vec<u8>)| {
    let (eof, cuts, bytes) = input;
    let whole = run(&[&bytes], eof);
    let mut pieces = Vec::new();
    let mut rest = &bytes[..];
    for cut in cuts {
        let at = usize::from(cut) % (rest.len() + 1);
        let (head, tail) = rest.split_at(at);
        pieces.push(head);
        rest = tail;
    }
    pieces.push(rest);
    let split = run(&pieces, eof);
    // A complete response may end before the last piece; the decision itself must not change.
    match (&whole, &split) {
        (Some(Ok(a)), Some(Ok(b))) => assert_eq!(a.0, b.0),
        (Some(Err(_)), Some(Ok(_))) | (Some(Ok(_)), Some(Err(_))) => {
            panic!("split changed the outcome: {whole:?} vs {split:?}")
        }
        _ => {}
    }
});
