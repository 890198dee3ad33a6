//! HTTP/1.1, client side, over buffers the caller owns.
//!
//! [`write_request`](crate::http::write_request) serialises one request exactly as given
//! (header order and case kept).
//! [`ResponseParser`](crate::http::ResponseParser) turns the bytes of one response, fed in
//! pieces of any size, into a [`Response`](crate::http::Response). The parser reads no socket:
//! the driver feeds it what it read with [`feed`](crate::http::ResponseParser::feed) and tells
//! it about the peer closing with [`eof`](crate::http::ResponseParser::eof).
//!
//! Scope: one request, one response, no pipelining, no `HEAD` requests, no upgrades, no
//! transfer codings other than `chunked`. Every buffer the parser keeps is capped by
//! [`HttpLimits`], whatever the peer sends.

use std::fmt;

use zeroize::Zeroizing;

#[cfg(test)]
mod tests;

/// Longest chunk-size line (size, extensions and CRLF) the parser accepts.
pub const MAX_CHUNK_LINE_BYTES: usize = 4096;

/// Caps on what one response can make the parser hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most bytes of head (status line and header fields), counted over everything that is not
    /// body: skipped `1xx` interim heads, the final head and chunked trailers together.
    pub max_head_bytes: usize,
    /// Most header fields in one head, and in the trailer section.
    pub max_headers: usize,
    /// Most body bytes, after removing the chunked framing.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    /// 16 KiB of head, 64 header fields, 1 MiB of body.
    fn default() -> Self {
        Self {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Why a request could not be serialised. Values are never quoted: they may be secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The method is empty or not an HTTP token.
    InvalidMethod,
    /// The request target is empty or holds a byte that is not visible ASCII.
    InvalidTarget,
    /// The header name at this index is empty or not an HTTP token.
    InvalidHeaderName {
        /// Position of the header in the slice given.
        index: usize,
    },
    /// The value of this header holds CR, LF, NUL or another control byte.
    InvalidHeaderValue {
        /// The header's name (names are not secret).
        name: String,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidMethod => f.write_str("HTTP method is not a token"),
            Self::InvalidTarget => f.write_str("HTTP request target is empty or not visible ASCII"),
            Self::InvalidHeaderName { index } => {
                write!(f, "HTTP header name #{index} is empty or not a token")
            }
            Self::InvalidHeaderValue { name } => {
                write!(f, "value of HTTP header {name} holds a control character")
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// Appends one HTTP/1.1 request to `out`: request line, the headers in the order and case
/// given, an empty line, then `body`.
///
/// The caller supplies `Host` and `Content-Length` (nothing is added). Everything is checked
/// before anything is written, so on error `out` is unchanged: a name or value carrying CR or
/// LF can never split the request.
pub fn write_request(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), RequestError> {
    if !is_token(method) {
        return Err(RequestError::InvalidMethod);
    }
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::InvalidTarget);
    }
    for (index, (name, value)) in headers.iter().enumerate() {
        if !is_token(name) {
            return Err(RequestError::InvalidHeaderName { index });
        }
        if !is_field_value(value) {
            return Err(RequestError::InvalidHeaderValue {
                name: (*name).to_owned(),
            });
        }
    }
    let head_len: usize = headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum();
    // One reservation: a growing `out` would leave copies of (secret) bodies in freed memory.
    out.reserve(method.len() + target.len() + 12 + head_len + 2 + body.len());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(())
}

/// Whether `s` is an HTTP token (RFC 9110 §5.6.2).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `s` may be sent as a field value: no control bytes except horizontal tab.
fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A complete HTTP response.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 200..=999 (interim `1xx` responses are skipped).
    pub status: u16,
    /// Header fields in the order received, names lowercased, values as sent (invalid UTF-8
    /// replaced).
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed; zeroized on drop, as it may carry key
    /// material.
    pub body: Zeroizing<Vec<u8>>,
    /// Whether the connection may carry another request: the response was self-delimited,
    /// neither side asked to close, and nothing followed the response.
    pub reusable: bool,
}

impl Response {
    /// The value of the first header called `name` (compared case-insensitively).
    #[cfg(any(
        test,
        feature = "aws-lc",
        feature = "rustcrypto",
        feature = "_internal_test_exports"
    ))]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &format_args!("[{} bytes]", self.body.len()))
            .field("reusable", &self.reusable)
            .finish()
    }
}

/// What [`ResponseParser::feed`] made of the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Progress {
    /// The response is not complete: feed more bytes, or call `eof` when the peer closes.
    NeedMore,
    /// The response is complete; the parser is finished.
    Complete(Response),
}

/// Why a response could not be parsed. Once a parser has returned an error it returns the
/// same error for every later call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The status line or a header field is malformed.
    MalformedHead(httparse::Error),
    /// The status code is below 100.
    InvalidStatus(u16),
    /// The head (with interim heads and trailers) is longer than the limit.
    HeadTooLarge {
        /// [`HttpLimits::max_head_bytes`].
        limit: usize,
    },
    /// A head or the trailer section has more header fields than the limit.
    TooManyHeaders {
        /// [`HttpLimits::max_headers`].
        limit: usize,
    },
    /// `101 Switching Protocols`: we never ask for an upgrade.
    UnexpectedUpgrade,
    /// `Content-Length` is not a non-negative decimal number that fits in memory.
    InvalidContentLength,
    /// `Content-Length` appears more than once or lists several values.
    MultipleContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` are present.
    ContentLengthWithTransferEncoding,
    /// `Transfer-Encoding` is something other than exactly `chunked`.
    UnsupportedTransferEncoding,
    /// The body is longer than the limit.
    BodyTooLarge {
        /// [`HttpLimits::max_body_bytes`].
        limit: usize,
    },
    /// A chunk-size line is malformed.
    InvalidChunkSize,
    /// A chunk-size line (size, extensions and CRLF) is longer than the parser accepts:
    /// 4096 bytes (`MAX_CHUNK_LINE_BYTES`).
    ChunkLineTooLong,
    /// Chunk data is not followed by CRLF.
    InvalidChunkTerminator,
    /// The trailer section after the last chunk is malformed.
    MalformedTrailers(httparse::Error),
    /// The peer closed the connection before sending a byte of the response (typically a
    /// reused connection the server had already closed; safe to retry on a new one).
    ClosedBeforeResponse,
    /// The peer closed the connection in the middle of the head.
    TruncatedHead,
    /// The peer closed the connection before the body was complete.
    TruncatedBody,
    /// `feed` or `eof` was called after the response was complete (a driver bug).
    AlreadyComplete,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedHead(e) => write!(f, "malformed HTTP response head: {e}"),
            Self::InvalidStatus(code) => write!(f, "invalid HTTP status code {code}"),
            Self::HeadTooLarge { limit } => {
                write!(f, "HTTP response head is longer than {limit} bytes")
            }
            Self::TooManyHeaders { limit } => {
                write!(f, "HTTP response has more than {limit} header fields")
            }
            Self::UnexpectedUpgrade => f.write_str("unexpected HTTP 101 Switching Protocols"),
            Self::InvalidContentLength => f.write_str("invalid Content-Length in HTTP response"),
            Self::MultipleContentLength => {
                f.write_str("HTTP response has more than one Content-Length")
            }
            Self::ContentLengthWithTransferEncoding => {
                f.write_str("HTTP response has both Content-Length and Transfer-Encoding")
            }
            Self::UnsupportedTransferEncoding => {
                f.write_str("HTTP response Transfer-Encoding is not `chunked`")
            }
            Self::BodyTooLarge { limit } => {
                write!(f, "HTTP response body is longer than {limit} bytes")
            }
            Self::InvalidChunkSize => f.write_str("invalid chunk size in HTTP response"),
            Self::ChunkLineTooLong => write!(
                f,
                "chunk-size line in HTTP response is longer than {MAX_CHUNK_LINE_BYTES} bytes"
            ),
            Self::InvalidChunkTerminator => f.write_str("HTTP chunk data not followed by CRLF"),
            Self::MalformedTrailers(e) => write!(f, "malformed HTTP trailer section: {e}"),
            Self::ClosedBeforeResponse => {
                f.write_str("connection closed before any HTTP response byte")
            }
            Self::TruncatedHead => f.write_str("connection closed inside the HTTP response head"),
            Self::TruncatedBody => f.write_str("connection closed inside the HTTP response body"),
            Self::AlreadyComplete => f.write_str("HTTP response parser used after completion"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Incremental parser for one HTTP/1.x response.
///
/// Feed it every byte read from the connection, in pieces of any size, until it returns
/// [`Progress::Complete`]; if the peer closes first, call [`eof`](Self::eof), which completes a
/// body delimited by the close and reports a truncated one. Use a new parser per response.
///
/// Memory stays bounded by [`HttpLimits`]: only an unfinished head, chunk-size line or trailer
/// section is buffered, and body bytes go straight into the body.
pub struct ResponseParser {
    limits: HttpLimits,
    phase: Phase,
    /// Bytes of the head, chunk-size line or trailer section being collected.
    pending: Vec<u8>,
    scanner: BlankLineScanner,
    /// Head bytes still allowed (the limit less every head byte seen so far).
    head_budget: usize,
    status: u16,
    headers: Vec<(String, String)>,
    persistent: bool,
    body: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ResponseParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseParser")
            .field("phase", &self.phase)
            .field("status", &self.status)
            .field("body", &format_args!("[{} bytes]", self.body.len()))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Body(Framing),
    Done,
    Failed(HttpError),
}

/// Where the parser is inside the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length { remaining: usize },
    UntilClose,
    ChunkSize,
    ChunkData { remaining: usize },
    ChunkDataEnd { seen_cr: bool },
    Trailers,
}

/// Result of one parsing step.
enum Step {
    Continue,
    NeedMore,
    Finished,
}

impl ResponseParser {
    /// A parser waiting for the first byte of a response.
    pub fn new(limits: HttpLimits) -> Self {
        Self {
            limits,
            phase: Phase::Head,
            pending: Vec::new(),
            scanner: BlankLineScanner::default(),
            head_budget: limits.max_head_bytes,
            status: 0,
            headers: Vec::new(),
            persistent: false,
            body: Zeroizing::new(Vec::new()),
        }
    }

    /// Consumes the next bytes read from the connection.
    ///
    /// Bytes after the end of the response are dropped and make it not reusable (we never
    /// pipeline, so they can only be garbage).
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, HttpError> {
        let result = self.run(input);
        if let Err(error) = result {
            self.fail(error);
        }
        result
    }

    /// Reports that the peer closed the connection: completes a close-delimited body, and is an
    /// error anywhere else.
    pub fn eof(&mut self) -> Result<Response, HttpError> {
        let result = match self.phase {
            Phase::Head
                if self.pending.is_empty() && self.head_budget == self.limits.max_head_bytes =>
            {
                Err(HttpError::ClosedBeforeResponse)
            }
            Phase::Head => Err(HttpError::TruncatedHead),
            Phase::Body(Framing::UntilClose) => Ok(self.finish(false)),
            Phase::Body(_) => Err(HttpError::TruncatedBody),
            Phase::Done => Err(HttpError::AlreadyComplete),
            Phase::Failed(error) => Err(error),
        };
        if let Err(error) = result {
            self.fail(error);
        }
        result
    }

    fn fail(&mut self, error: HttpError) {
        if self.phase != Phase::Done {
            self.phase = Phase::Failed(error);
            self.pending.clear();
            self.body = Zeroizing::new(Vec::new());
        }
    }

    fn run(&mut self, mut input: &[u8]) -> Result<Progress, HttpError> {
        loop {
            let step = match self.phase {
                Phase::Head => self.read_head(&mut input)?,
                Phase::Body(Framing::Length { remaining }) => {
                    self.read_length(&mut input, remaining)?
                }
                Phase::Body(Framing::UntilClose) => self.read_until_close(&mut input)?,
                Phase::Body(Framing::ChunkSize) => self.read_chunk_size(&mut input)?,
                Phase::Body(Framing::ChunkData { remaining }) => {
                    self.read_chunk_data(&mut input, remaining)
                }
                Phase::Body(Framing::ChunkDataEnd { seen_cr }) => {
                    self.read_chunk_end(&mut input, seen_cr)?
                }
                Phase::Body(Framing::Trailers) => self.read_trailers(&mut input)?,
                Phase::Done => return Err(HttpError::AlreadyComplete),
                Phase::Failed(error) => return Err(error),
            };
            match step {
                Step::Continue => {}
                Step::NeedMore => return Ok(Progress::NeedMore),
                Step::Finished => return Ok(Progress::Complete(self.finish(input.is_empty()))),
            }
        }
    }

    /// Builds the response and ends the parser. `clean_end` is false when bytes followed the
    /// response or the body was delimited by the close.
    fn finish(&mut self, clean_end: bool) -> Response {
        let self_delimited = self.phase != Phase::Body(Framing::UntilClose);
        self.phase = Phase::Done;
        self.pending.clear();
        Response {
            status: self.status,
            headers: std::mem::take(&mut self.headers),
            body: std::mem::replace(&mut self.body, Zeroizing::new(Vec::new())),
            reusable: self.persistent && self_delimited && clean_end,
        }
    }

    /// Collects head bytes up to the blank line, then parses the head (skipping `1xx`).
    fn read_head(&mut self, input: &mut &[u8]) -> Result<Step, HttpError> {
        if !self.collect_section(input)? {
            return Ok(Step::NeedMore);
        }
        let mut slots = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut head = httparse::Response::new(&mut slots);
        let parsed_len = match head.parse(&self.pending) {
            // The blank line was a stray leading one; keep collecting.
            Ok(httparse::Status::Partial) => return Ok(Step::Continue),
            Ok(httparse::Status::Complete(len)) => len,
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::TooManyHeaders {
                    limit: self.limits.max_headers,
                });
            }
            Err(error) => return Err(HttpError::MalformedHead(error)),
        };
        if parsed_len != self.pending.len() {
            return Err(HttpError::MalformedHead(httparse::Error::NewLine));
        }
        let status = head
            .code
            .ok_or(HttpError::MalformedHead(httparse::Error::Status))?;
        let version = head
            .version
            .ok_or(HttpError::MalformedHead(httparse::Error::Version))?;
        let headers = owned_headers(head.headers);
        self.pending.clear();
        self.scanner = BlankLineScanner::default();

        match status {
            0..=99 => Err(HttpError::InvalidStatus(status)),
            101 => Err(HttpError::UnexpectedUpgrade),
            100..=199 => Ok(Step::Continue),
            _ => self.start_body(status, version, headers),
        }
    }

    fn start_body(
        &mut self,
        status: u16,
        version: u8,
        headers: Vec<(String, String)>,
    ) -> Result<Step, HttpError> {
        let framing = body_framing(status, &headers)?;
        self.status = status;
        self.persistent = is_persistent(version, &headers);
        self.headers = headers;
        match framing {
            None => Ok(Step::Finished),
            Some(Framing::Length { remaining }) => {
                if remaining > self.limits.max_body_bytes {
                    return Err(self.body_too_large());
                }
                // Exact size up front: the body never reallocates.
                self.body.reserve_exact(remaining);
                self.phase = Phase::Body(Framing::Length { remaining });
                Ok(if remaining == 0 {
                    Step::Finished
                } else {
                    Step::Continue
                })
            }
            Some(framing) => {
                self.phase = Phase::Body(framing);
                Ok(Step::Continue)
            }
        }
    }

    fn read_length(&mut self, input: &mut &[u8], remaining: usize) -> Result<Step, HttpError> {
        let take = remaining.min(input.len());
        let (data, rest) = input.split_at(take);
        extend_secret(&mut self.body, data);
        *input = rest;
        let remaining = remaining - take;
        self.phase = Phase::Body(Framing::Length { remaining });
        Ok(match remaining {
            0 => Step::Finished,
            _ => Step::NeedMore,
        })
    }

    fn read_until_close(&mut self, input: &mut &[u8]) -> Result<Step, HttpError> {
        if input.len() > self.limits.max_body_bytes - self.body.len() {
            return Err(self.body_too_large());
        }
        extend_secret(&mut self.body, input);
        *input = &[];
        Ok(Step::NeedMore)
    }

    fn read_chunk_size(&mut self, input: &mut &[u8]) -> Result<Step, HttpError> {
        let (take, line_complete) = match input.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (input.len(), false),
        };
        if self.pending.len() + take > MAX_CHUNK_LINE_BYTES {
            return Err(HttpError::ChunkLineTooLong);
        }
        let (line, rest) = input.split_at(take);
        self.pending.extend_from_slice(line);
        *input = rest;
        if !line_complete {
            return Ok(Step::NeedMore);
        }
        // httparse reads an empty size as 0; a size must have at least one digit.
        if !self.pending.first().is_some_and(u8::is_ascii_hexdigit) {
            return Err(HttpError::InvalidChunkSize);
        }
        let size = match httparse::parse_chunk_size(&self.pending) {
            Ok(httparse::Status::Complete((len, size))) if len == self.pending.len() => size,
            _ => return Err(HttpError::InvalidChunkSize),
        };
        self.pending.clear();
        if size == 0 {
            self.scanner = BlankLineScanner::default();
            self.phase = Phase::Body(Framing::Trailers);
            return Ok(Step::Continue);
        }
        let room = self.limits.max_body_bytes - self.body.len();
        match usize::try_from(size) {
            Ok(remaining) if remaining <= room => {
                self.phase = Phase::Body(Framing::ChunkData { remaining });
                Ok(Step::Continue)
            }
            _ => Err(self.body_too_large()),
        }
    }

    fn read_chunk_data(&mut self, input: &mut &[u8], remaining: usize) -> Step {
        let take = remaining.min(input.len());
        let (data, rest) = input.split_at(take);
        extend_secret(&mut self.body, data);
        *input = rest;
        let remaining = remaining - take;
        if remaining == 0 {
            self.phase = Phase::Body(Framing::ChunkDataEnd { seen_cr: false });
            Step::Continue
        } else {
            self.phase = Phase::Body(Framing::ChunkData { remaining });
            Step::NeedMore
        }
    }

    fn read_chunk_end(&mut self, input: &mut &[u8], seen_cr: bool) -> Result<Step, HttpError> {
        let Some((&byte, rest)) = input.split_first() else {
            return Ok(Step::NeedMore);
        };
        *input = rest;
        self.phase = match (seen_cr, byte) {
            (false, b'\r') => Phase::Body(Framing::ChunkDataEnd { seen_cr: true }),
            (true, b'\n') => Phase::Body(Framing::ChunkSize),
            _ => return Err(HttpError::InvalidChunkTerminator),
        };
        Ok(Step::Continue)
    }

    /// Collects and checks the trailer section after the last chunk; its fields are dropped.
    fn read_trailers(&mut self, input: &mut &[u8]) -> Result<Step, HttpError> {
        if !self.collect_section(input)? {
            return Ok(Step::NeedMore);
        }
        let mut slots = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        match httparse::parse_headers(&self.pending, &mut slots) {
            Ok(httparse::Status::Complete((len, _))) if len == self.pending.len() => {
                Ok(Step::Finished)
            }
            Ok(httparse::Status::Complete(_)) => {
                Err(HttpError::MalformedTrailers(httparse::Error::NewLine))
            }
            Ok(httparse::Status::Partial) => Ok(Step::Continue),
            Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders {
                limit: self.limits.max_headers,
            }),
            Err(error) => Err(HttpError::MalformedTrailers(error)),
        }
    }

    /// Moves bytes from `input` into `pending` up to and including the next blank line,
    /// charging them to the head budget. Returns whether a blank line now ends `pending`
    /// (if not, all of `input` was taken).
    fn collect_section(&mut self, input: &mut &[u8]) -> Result<bool, HttpError> {
        let found = self.scanner.scan(input);
        let take = found.unwrap_or(input.len());
        if take > self.head_budget {
            return Err(HttpError::HeadTooLarge {
                limit: self.limits.max_head_bytes,
            });
        }
        self.head_budget -= take;
        let (section, rest) = input.split_at(take);
        self.pending.extend_from_slice(section);
        *input = rest;
        Ok(found.is_some())
    }

    fn body_too_large(&self) -> HttpError {
        HttpError::BodyTooLarge {
            limit: self.limits.max_body_bytes,
        }
    }
}

/// Finds the end of a blank line (`\n` or `\r\n` at the start of a line) across pieces of
/// input, remembering where the previous piece left off so no byte is scanned twice.
#[derive(Debug, Default, Clone, Copy)]
struct BlankLineScanner {
    line: LineSoFar,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum LineSoFar {
    #[default]
    Empty,
    CarriageReturn,
    Text,
}

impl BlankLineScanner {
    /// The number of bytes of `input` up to and including the `\n` that ends a blank line.
    fn scan(&mut self, input: &[u8]) -> Option<usize> {
        for (at, &byte) in input.iter().enumerate() {
            self.line = match (byte, self.line) {
                (b'\n', LineSoFar::Empty | LineSoFar::CarriageReturn) => {
                    self.line = LineSoFar::Empty;
                    return Some(at + 1);
                }
                (b'\n', LineSoFar::Text) => LineSoFar::Empty,
                (b'\r', LineSoFar::Empty) => LineSoFar::CarriageReturn,
                _ => LineSoFar::Text,
            };
        }
        None
    }
}

/// Copies httparse's borrowed headers into owned pairs with lowercase names.
fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// Values of every header called `name`, split at commas and trimmed, empty items dropped.
fn list_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n == name)
        .flat_map(|(_, v)| v.split(','))
        .map(|item| item.trim_matches([' ', '\t']))
        .filter(|item| !item.is_empty())
}

/// How the body of a final response is delimited (RFC 9112 §6.3); `None` for no body.
fn body_framing(status: u16, headers: &[(String, String)]) -> Result<Option<Framing>, HttpError> {
    if status == 204 || status == 304 {
        return Ok(None);
    }
    let has_transfer_encoding = headers.iter().any(|(n, _)| n == "transfer-encoding");
    let mut lengths = headers.iter().filter(|(n, _)| n == "content-length");
    let first_length = lengths.next();
    if first_length.is_some() && has_transfer_encoding {
        return Err(HttpError::ContentLengthWithTransferEncoding);
    }
    if has_transfer_encoding {
        let mut codings = list_values(headers, "transfer-encoding");
        return match (codings.next(), codings.next()) {
            (Some(coding), None) if coding.eq_ignore_ascii_case("chunked") => {
                Ok(Some(Framing::ChunkSize))
            }
            _ => Err(HttpError::UnsupportedTransferEncoding),
        };
    }
    let Some((_, value)) = first_length else {
        return Ok(Some(Framing::UntilClose));
    };
    if lengths.next().is_some() || value.contains(',') {
        return Err(HttpError::MultipleContentLength);
    }
    let remaining = parse_content_length(value)?;
    Ok(Some(Framing::Length { remaining }))
}

/// A `Content-Length` value: ASCII digits only (no sign), fitting in `usize`.
fn parse_content_length(value: &str) -> Result<usize, HttpError> {
    let digits = value.trim_matches([' ', '\t']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::InvalidContentLength);
    }
    digits
        .parse::<usize>()
        .map_err(|_| HttpError::InvalidContentLength)
}

/// Whether the connection stays open after this response: `Connection: close` ends it,
/// HTTP/1.1 defaults to keep-alive, HTTP/1.0 needs `Connection: keep-alive`.
fn is_persistent(version: u8, headers: &[(String, String)]) -> bool {
    let mut keep_alive = false;
    for token in list_values(headers, "connection") {
        if token.eq_ignore_ascii_case("close") {
            return false;
        }
        keep_alive |= token.eq_ignore_ascii_case("keep-alive");
    }
    version >= 1 || keep_alive
}

/// Appends `data` to a secret buffer. When the buffer must grow, its contents move to a new
/// allocation and the old one is zeroized, so no copy is left behind in freed memory.
fn extend_secret(buffer: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    let needed = buffer.len() + data.len();
    if needed > buffer.capacity() {
        let mut grown = Zeroizing::new(Vec::with_capacity(needed.max(buffer.capacity() * 2)));
        grown.extend_from_slice(buffer);
        grown.extend_from_slice(data);
        *buffer = grown;
    } else {
        buffer.extend_from_slice(data);
    }
}
