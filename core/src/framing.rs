//! The enclave protocol's framing: each message is one JSON object followed by a single `0x00`.
//!
//! [`FrameDecoder`] is incremental: bytes may arrive one at a time or many frames per read. It
//! remembers how far it has scanned, so feeding a large message in small pieces costs linear
//! time, and it enforces a cap on the size of one message (upstream: a buffer of 8192 bytes;
//! ours: [`DEFAULT_MAX_MESSAGE_BYTES`]). A message that does not fit is a [`FrameTooLarge`]
//! after which the decoder yields nothing more: upstream answers `Message size too large.` and
//! closes the connection, and so does our session.

use std::fmt;

use zeroize::Zeroize;

/// The byte that ends every message.
pub const TERMINATOR: u8 = 0;

/// Default cap on one message, terminator included.
///
/// Upstream uses 8192, which cannot carry the largest KMS ciphertext (6144 bytes become 8192
/// base64 characters before any JSON around them).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 65536;

/// The decoder's only error: a message did not fit in the configured cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    /// The cap, terminator included.
    pub max: usize,
}

impl fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message exceeds {} bytes without a terminator", self.max)
    }
}

impl std::error::Error for FrameTooLarge {}

/// Splits a byte stream into `0x00`-terminated messages.
///
/// Its `Debug` shows sizes only: the buffer holds messages that carry credentials.
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned without finding a terminator.
    scanned: usize,
    /// Start of the first unconsumed byte in `buf`.
    start: usize,
    max: usize,
    failed: bool,
}

impl FrameDecoder {
    /// A decoder accepting messages of at most `max` bytes including the terminator (at least 2).
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            start: 0,
            max: max.max(2),
            failed: false,
        }
    }

    /// The cap, terminator included.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Appends received bytes. Call [`FrameDecoder::next_frame`] until it returns `Ok(None)`
    /// before pushing more, so the buffer never holds more than one partial message.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.zeroize();
            self.scanned = 0;
            self.start = 0;
        }
        reserve_wiping(&mut self.buf, bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// Number of buffered bytes that do not yet form a whole message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether the decoder has failed; it then yields no more frames.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// The next whole message without its terminator, `Ok(None)` when more bytes are needed, or
    /// the error once the pending message exceeds the cap (after which it returns `Ok(None)`).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameTooLarge> {
        if self.failed {
            return Ok(None);
        }
        self.compact();
        let pending = &self.buf[self.start..];
        match memchr(TERMINATOR, &pending[self.scanned..]) {
            Some(offset) => {
                let end = self.scanned + offset;
                if end + 1 > self.max {
                    return Err(self.fail());
                }
                let frame_start = self.start;
                self.start += end + 1;
                self.scanned = 0;
                Ok(Some(&self.buf[frame_start..frame_start + end]))
            }
            None => {
                self.scanned = pending.len();
                if pending.len() >= self.max {
                    return Err(self.fail());
                }
                Ok(None)
            }
        }
    }

    fn fail(&mut self) -> FrameTooLarge {
        self.failed = true;
        self.buf.zeroize();
        self.start = 0;
        self.scanned = 0;
        FrameTooLarge { max: self.max }
    }

    /// Moves the partial message to the front once consumed frames dominate the buffer, and
    /// wipes the bytes of consumed messages (they may have carried credentials).
    fn compact(&mut self) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            let rest = self.buf.len() - self.start;
            self.buf.copy_within(self.start.., 0);
            self.buf[rest..].zeroize();
            self.buf.truncate(rest);
            self.start = 0;
        }
    }
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &self.buffered())
            .field("max", &self.max)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Drop for FrameDecoder {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

/// Appends one message and its terminator to `out`.
///
/// `message` must not contain `0x00`; JSON produced by `serde_json` never does (it escapes
/// U+0000 as `\u0000`).
pub fn encode(message: &[u8], out: &mut Vec<u8>) {
    debug_assert!(!message.contains(&TERMINATOR));
    out.reserve(message.len() + 1);
    out.extend_from_slice(message);
    out.push(TERMINATOR);
}

/// Makes room for `extra` more bytes. A `Vec` that reallocates frees its old buffer without
/// wiping it, which would leave a copy of a partial message (credentials) in freed memory: the
/// bytes move to a new buffer here, and the old one is zeroized before it is freed.
fn reserve_wiping(buf: &mut Vec<u8>, extra: usize) {
    let needed = buf.len().saturating_add(extra);
    if needed <= buf.capacity() {
        return;
    }
    let mut grown = Vec::with_capacity(needed.max(buf.capacity().saturating_mul(2)));
    grown.extend_from_slice(buf);
    buf.zeroize();
    *buf = grown;
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(decoder: &mut FrameDecoder) -> Result<Vec<Vec<u8>>, FrameTooLarge> {
        let mut frames = Vec::new();
        while let Some(frame) = decoder.next_frame()? {
            frames.push(frame.to_vec());
        }
        Ok(frames)
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut d = FrameDecoder::new(64);
        d.push(b"{\"a\":1}\0{}\0{\"b\"");
        assert_eq!(
            drain(&mut d).unwrap(),
            vec![b"{\"a\":1}".to_vec(), b"{}".to_vec()]
        );
        assert_eq!(d.buffered(), 4);
        d.push(b":2}\0");
        assert_eq!(drain(&mut d).unwrap(), vec![b"{\"b\":2}".to_vec()]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn empty_frame_is_a_frame() {
        let mut d = FrameDecoder::new(8);
        d.push(b"\0\0");
        assert_eq!(drain(&mut d).unwrap(), vec![Vec::<u8>::new(), Vec::new()]);
    }

    #[test]
    fn cap_counts_the_terminator_like_upstream() {
        // Upstream: 8192 bytes without a terminator is "Message size too large.".
        let mut d = FrameDecoder::new(8192);
        d.push(&vec![b'x'; 8191]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(b"x");
        assert_eq!(d.next_frame(), Err(FrameTooLarge { max: 8192 }));
        assert!(d.has_failed());
        d.push(b"\0{}\0");
        assert_eq!(d.next_frame(), Ok(None));

        let mut d = FrameDecoder::new(8192);
        let mut exact = vec![b'y'; 8191];
        exact.push(0);
        d.push(&exact);
        assert_eq!(d.next_frame().unwrap().map(<[u8]>::len), Some(8191));
    }

    #[test]
    fn oversized_frame_with_terminator_in_same_read_fails() {
        let mut d = FrameDecoder::new(4);
        d.push(b"abcd\0");
        assert_eq!(d.next_frame(), Err(FrameTooLarge { max: 4 }));
    }

    #[test]
    fn frames_before_an_oversized_one_are_delivered() {
        let mut d = FrameDecoder::new(4);
        d.push(b"ab\0abcdef");
        assert_eq!(d.next_frame(), Ok(Some(&b"ab"[..])));
        assert_eq!(d.next_frame(), Err(FrameTooLarge { max: 4 }));
    }

    #[test]
    fn debug_shows_sizes_not_the_buffered_bytes() {
        let mut d = FrameDecoder::new(64);
        d.push(b"{\"AwsSecretAccessKey\":\"hunter2\"");
        assert_eq!(d.next_frame(), Ok(None));
        let shown = format!("{d:?}");
        assert_eq!(
            shown,
            "FrameDecoder { buffered: 31, max: 64, failed: false, .. }"
        );
    }

    #[test]
    fn encode_appends_terminator() {
        let mut out = b"x\0".to_vec();
        encode(br#"{"Status":"Ok"}"#, &mut out);
        assert_eq!(out, b"x\0{\"Status\":\"Ok\"}\0");
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_frames(
            messages in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..40), 0..8),
            cuts in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let mut stream = Vec::new();
            for m in &messages {
                encode(m, &mut stream);
            }
            let mut whole = FrameDecoder::new(64);
            whole.push(&stream);
            let expected = drain(&mut whole).unwrap();
            prop_assert_eq!(&expected, &messages);

            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut pieces = FrameDecoder::new(64);
            let mut got = Vec::new();
            for w in cuts.windows(2) {
                pieces.push(&stream[w[0]..w[1]]);
                got.extend(drain(&mut pieces).unwrap());
            }
            prop_assert_eq!(got, messages);
        }

        #[test]
        fn never_panics_and_never_exceeds_cap(bytes in proptest::collection::vec(any::<u8>(), 0..300), max in 2usize..64) {
            let mut d = FrameDecoder::new(max);
            for chunk in bytes.chunks(7) {
                d.push(chunk);
                loop {
                    match d.next_frame() {
                        Ok(Some(f)) => prop_assert!(f.len() < max),
                        Ok(None) => break,
                        Err(_) => { prop_assert!(d.has_failed()); break; }
                    }
                }
                prop_assert!(d.has_failed() || d.buffered() < max);
            }
        }
    }
}
