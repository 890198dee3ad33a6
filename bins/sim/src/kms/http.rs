//! The server side of HTTP/1.1 for the emulators: requests parsed with `httparse` from a
//! caller-owned buffer (with caps on head and body), responses written whole.
//!
//! Only what AWS clients send is accepted: a request line, headers, and a `Content-Length`
//! body. `Transfer-Encoding` is refused (KMS clients never chunk a JSON body).

use std::fmt;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 64;

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method, e.g. `POST`.
    pub method: String,
    /// Request target as sent, e.g. `/`.
    pub target: String,
    /// Headers in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body (`Content-Length` bytes).
    pub body: Vec<u8>,
    /// `true` when the client asked to close the connection after the answer.
    pub close: bool,
}

impl Request {
    /// The first header named `name` (any case).
    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.headers_named(name).next()
    }

    /// Every header named `name` (any case), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The head exceeds [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`].
    HeadTooLarge,
    /// `Content-Length` exceeds the body cap.
    BodyTooLarge {
        /// The declared length.
        declared: usize,
        /// The cap.
        max: usize,
    },
    /// Not HTTP/1.1 as this server reads it.
    Malformed(&'static str),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeadTooLarge => write!(f, "request head larger than {MAX_HEAD_BYTES} bytes"),
            Self::BodyTooLarge { declared, max } => {
                write!(f, "request body of {declared} bytes, more than {max}")
            }
            Self::Malformed(why) => write!(f, "malformed request: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Parses one request from the start of `buf`: `Ok(Some((request, consumed)))`, or
/// `Ok(None)` when more bytes are needed.
pub fn parse_request(buf: &[u8], max_body: usize) -> Result<Option<(Request, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::Malformed("bad request head")),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(HttpError::HeadTooLarge);
    }
    if parsed.version != Some(1) {
        return Err(HttpError::Malformed("only HTTP/1.1 is served"));
    }
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or_default().to_owned();
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| HttpError::Malformed("header value is not UTF-8"))?;
        fields.push((header.name.to_owned(), value.to_owned()));
    }
    let request = Request {
        method,
        target,
        close: false,
        headers: fields,
        body: Vec::new(),
    };
    if request.header("transfer-encoding").is_some() {
        return Err(HttpError::Malformed("Transfer-Encoding is not supported"));
    }
    let declared = content_length(&request)?;
    if declared > max_body {
        return Err(HttpError::BodyTooLarge {
            declared,
            max: max_body,
        });
    }
    let Some(body) = buf.get(head_len..head_len + declared) else {
        return Ok(None);
    };
    let close = request
        .headers_named("connection")
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"));
    Ok(Some((
        Request {
            body: body.to_vec(),
            close,
            ..request
        },
        head_len + declared,
    )))
}

fn content_length(request: &Request) -> Result<usize, HttpError> {
    let mut values = request.headers_named("content-length");
    let Some(first) = values.next() else {
        return Ok(0);
    };
    if values.any(|other| other.trim() != first.trim()) {
        return Err(HttpError::Malformed("conflicting Content-Length"));
    }
    let first = first.trim();
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::Malformed("bad Content-Length"));
    }
    first
        .parse()
        .map_err(|_| HttpError::Malformed("bad Content-Length"))
}

/// What [`read_request`] found.
#[derive(Debug)]
pub enum ReadOutcome {
    /// A complete request.
    Request(Request),
    /// The peer closed the connection between requests.
    Closed,
    /// The bytes are not a request this server reads.
    Invalid(HttpError),
}

/// Reads the next request from `stream`, keeping any bytes past it in `buf` for the next call.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    max_body: usize,
) -> std::io::Result<ReadOutcome> {
    let mut chunk = [0u8; 8192];
    loop {
        match parse_request(buf, max_body) {
            Ok(Some((request, consumed))) => {
                buf.drain(..consumed);
                return Ok(ReadOutcome::Request(request));
            }
            Ok(None) => {}
            Err(e) => return Ok(ReadOutcome::Invalid(e)),
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(ReadOutcome::Closed);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers besides `Content-Length` (added on writing).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a status, no headers yet, and a body.
    pub fn new(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Writes the response and flushes.
    pub async fn write_to<S: AsyncWrite + Unpin>(&self, stream: &mut S) -> std::io::Result<()> {
        stream.write_all(&self.to_bytes()).await?;
        stream.flush().await
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POST: &[u8] = b"POST / HTTP/1.1\r\nHost: kms.us-east-1.amazonaws.com\r\n\
        X-Amz-Target: TrentService.Decrypt\r\nContent-Length: 2\r\n\r\n{}";

    #[test]
    fn parses_requests_and_keeps_the_rest() {
        let mut two = POST.to_vec();
        two.extend_from_slice(b"PUT /x HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n");
        let (first, used) = parse_request(&two, 100)
            .expect("should succeed")
            .expect("should succeed");
        assert_eq!(used, POST.len());
        assert_eq!(first.method, "POST");
        assert_eq!(first.target, "/");
        assert_eq!(first.header("x-amz-target"), Some("TrentService.Decrypt"));
        assert_eq!(first.body, b"{}");
        assert!(!first.close);
        let (second, _) = parse_request(&two[used..], 100)
            .expect("should succeed")
            .expect("should succeed");
        assert_eq!(second.method, "PUT");
        assert!(second.close);
    }

    #[test]
    fn waits_for_partial_input() {
        for end in 0..POST.len() {
            assert_eq!(parse_request(&POST[..end], 100), Ok(None), "{end}");
        }
    }

    #[test]
    fn rejects_what_it_does_not_serve() {
        let cases: &[(&[u8], HttpError)] = &[
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                HttpError::BodyTooLarge {
                    declared: 5,
                    max: 4,
                },
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                HttpError::Malformed("conflicting Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                HttpError::Malformed("bad Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::Malformed("Transfer-Encoding is not supported"),
            ),
            (
                b"POST / HTTP/1.0\r\n\r\n",
                HttpError::Malformed("only HTTP/1.1 is served"),
            ),
            (
                b"\x00\x01 / HTTP/1.1\r\n\r\n",
                HttpError::Malformed("bad request head"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_request(input, 4).as_ref().err(),
                Some(expected),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let mut huge = b"POST / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD_BYTES + 10, b'a');
        assert_eq!(parse_request(&huge, 4), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn writes_responses() {
        let r = Response::new(400, b"{}".to_vec()).with_header("x-amzn-ErrorType", "X");
        assert_eq!(
            r.to_bytes(),
            b"HTTP/1.1 400 Bad Request\r\nx-amzn-ErrorType: X\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    proptest! {
        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_request(&input, 64);
        }

        #[test]
        fn round_trips_bodies(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut wire = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len())
                .into_bytes();
            wire.extend_from_slice(&body);
            let (request, used) = parse_request(&wire, 300).expect("should succeed").expect("should succeed");
            prop_assert_eq!(used, wire.len());
            prop_assert_eq!(request.body, body);
        }
    }
}
