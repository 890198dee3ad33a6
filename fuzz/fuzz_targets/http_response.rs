//! The HTTP/1.1 response parser on arbitrary bytes fed in arbitrary pieces: never panics, stays
//! within its limits, and gives the same response (status, headers, body) or the same error
//! however the bytes were split.
//!
//! Input layout (see `fuzz/seed.sh`): `eof: bool`, then the cut points (each preceded by an
//! odd byte, the list ended by an even one), then the response bytes — so `00 00` followed by a
//! raw response is a valid seed.
#![no_main]

use arbitrary::Arbitrary;
use kmstool_core::http::{HttpError, HttpLimits, Progress, Response, ResponseParser};
use libfuzzer_sys::fuzz_target;

const LIMITS: HttpLimits = HttpLimits {
    max_head_bytes: 2048,
    max_headers: 16,
    max_body_bytes: 8192,
};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    eof: bool,
    cuts: Vec<u16>,
    bytes: &'a [u8],
}

/// A response in comparable form.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    reusable: bool,
}

impl From<Response> for Seen {
    fn from(r: Response) -> Self {
        assert!((200..=999).contains(&r.status), "final status {}", r.status);
        assert!(r.headers.len() <= LIMITS.max_headers);
        assert!(r.body.len() <= LIMITS.max_body_bytes);
        for (name, _) in &r.headers {
            assert!(!name.is_empty());
            assert_eq!(*name, name.to_ascii_lowercase());
        }
        Seen {
            status: r.status,
            headers: r.headers.clone(),
            body: r.body.to_vec(),
            reusable: r.reusable,
        }
    }
}

/// Feeds the pieces (then the end of stream if `eof`); `None` if the parser still needs more.
fn run(pieces: &[&[u8]], eof: bool) -> Option<Result<Seen, HttpError>> {
    let mut parser = ResponseParser::new(LIMITS);
    for piece in pieces {
        match parser.feed(piece) {
            Ok(Progress::NeedMore) => {}
            Ok(Progress::Complete(r)) => {
                // A finished parser refuses more input.
                assert_eq!(parser.feed(b"x").err(), Some(HttpError::AlreadyComplete));
                return Some(Ok(r.into()));
            }
            Err(e) => {
                // Errors are sticky.
                assert_eq!(parser.feed(b"").err(), Some(e));
                assert_eq!(parser.eof().err(), Some(e));
                return Some(Err(e));
            }
        }
    }
    eof.then(|| parser.eof().map(Seen::from))
}

fuzz_target!(|input: Input<'_>| {
    let Input { eof, cuts, bytes } = input;
    let whole = run(&[bytes], eof);
    let mut pieces = Vec::new();
    let mut rest = bytes;
    for cut in cuts {
        let at = usize::from(cut) % (rest.len() + 1);
        let (head, tail) = rest.split_at(at);
        pieces.push(head);
        rest = tail;
    }
    pieces.push(rest);
    let split = run(&pieces, eof);
    match (whole, split) {
        (Some(Ok(mut a)), Some(Ok(b))) => {
            // A response that ends inside a piece with bytes after it is not reusable; split
            // elsewhere, the parser never sees those bytes. Only that may differ.
            assert!(!a.reusable || b.reusable, "whole reusable, split not");
            a.reusable = b.reusable;
            assert_eq!(a, b);
        }
        (whole, split) => assert_eq!(whole, split, "the split changed the outcome"),
    }
});
