use proptest::prelude::*;

use super::*;

/// Feeds `pieces` in order; stops at the first complete response, calls `eof` if none came.
fn drive<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Result<Response, HttpError> {
    drive_with(HttpLimits::default(), pieces)
}

fn drive_with<'a>(
    limits: HttpLimits,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Response, HttpError> {
    let mut parser = ResponseParser::new(limits);
    for piece in pieces {
        if let Progress::Complete(response) = parser.feed(piece)? {
            return Ok(response);
        }
    }
    parser.eof()
}

fn whole(bytes: &[u8]) -> Result<Response, HttpError> {
    drive([bytes])
}

fn response(status: u16, headers: &[(&str, &str)], body: &[u8], reusable: bool) -> Response {
    Response {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: Zeroizing::new(body.to_vec()),
        reusable,
    }
}

const KMS_ERROR: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
x-amzn-RequestId: 5a5d1a4e-1d53-4a38-9d2c-000000000000\r\n\
x-amzn-ErrorType: AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/\r\n\
Content-Type: application/x-amz-json-1.1\r\n\
Content-Length: 70\r\n\
Date: Sun, 29 Nov 2026 04:26:21 GMT\r\n\
Connection: close\r\n\r\n\
{\"__type\":\"AccessDeniedException\",\"message\":\"User is not authorized\"}\n";

const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
5;name=value;flag\r\nhello\r\nA ; spaced-ext\r\n wide worl\r\n1\r\nd\r\n0\r\n\
X-Checksum: abc\r\nX-Other: 1\r\n\r\n";

/// Well-formed responses and what they parse to (`eof` is called if the bytes do not end the
/// response by themselves).
fn fixtures() -> Vec<(&'static str, &'static [u8], Response)> {
    vec![
        (
            "content-length",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n\
Content-Length: 13\r\nX-Amzn-RequestId: abc\r\n\r\n{\"KeyId\":\"k\"}",
            response(
                200,
                &[
                    ("content-type", "application/x-amz-json-1.1"),
                    ("content-length", "13"),
                    ("x-amzn-requestid", "abc"),
                ],
                b"{\"KeyId\":\"k\"}",
                true,
            ),
        ),
        (
            "kms error, connection close",
            KMS_ERROR,
            response(
                400,
                &[
                    ("x-amzn-requestid", "5a5d1a4e-1d53-4a38-9d2c-000000000000"),
                    (
                        "x-amzn-errortype",
                        "AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/",
                    ),
                    ("content-type", "application/x-amz-json-1.1"),
                    ("content-length", "70"),
                    ("date", "Sun, 29 Nov 2026 04:26:21 GMT"),
                    ("connection", "close"),
                ],
                b"{\"__type\":\"AccessDeniedException\",\"message\":\"User is not authorized\"}\n",
                false,
            ),
        ),
        (
            "chunked with extensions and trailers",
            CHUNKED,
            response(
                200,
                &[("transfer-encoding", "chunked")],
                b"hello wide world",
                true,
            ),
        ),
        (
            "chunked, no trailers, upper-case coding",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            response(200, &[("transfer-encoding", "Chunked")], b"abc", true),
        ),
        (
            "close-delimited",
            b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nuntil the peer closes",
            response(200, &[("server", "x")], b"until the peer closes", false),
        ),
        (
            "interim 100 Continue skipped",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX: y\r\n\r\n\
HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            response(201, &[("content-length", "2")], b"ok", true),
        ),
        (
            "204 has no body",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
            response(204, &[("content-length", "7")], b"", true),
        ),
        (
            "http/1.0 closes by default",
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
            response(200, &[("content-length", "2")], b"hi", false),
        ),
        (
            "http/1.0 keep-alive",
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi",
            response(
                200,
                &[("connection", "Keep-Alive"), ("content-length", "2")],
                b"hi",
                true,
            ),
        ),
        (
            "http/1.1 connection close among tokens",
            b"HTTP/1.1 200 OK\r\nConnection: upgrade, Close\r\nContent-Length: 0\r\n\r\n",
            response(
                200,
                &[("connection", "upgrade, Close"), ("content-length", "0")],
                b"",
                false,
            ),
        ),
        (
            "bare LF line ends, empty reason",
            b"HTTP/1.1 200 \nContent-Length: 2\n\nok",
            response(200, &[("content-length", "2")], b"ok", true),
        ),
        (
            "stray blank line before the status line, non-UTF-8 value",
            b"\r\nHTTP/1.1 200 OK\r\nX: \xff\r\nContent-Length: 0\r\n\r\n",
            response(
                200,
                &[("x", "\u{fffd}"), ("content-length", "0")],
                b"",
                true,
            ),
        ),
        (
            "500 with an HTML body",
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\n\
Content-Length: 30\r\n\r\n<html><body>oops</body></html>",
            response(
                500,
                &[("content-type", "text/html"), ("content-length", "30")],
                b"<html><body>oops</body></html>",
                true,
            ),
        ),
    ]
}

#[test]
fn fixtures_parse_in_one_piece() {
    for (name, bytes, expected) in fixtures() {
        assert_eq!(whole(bytes), Ok(expected), "{name}");
    }
}

#[test]
fn fixtures_parse_split_at_every_byte_boundary() {
    for (name, bytes, expected) in fixtures() {
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(drive([a, b]), Ok(expected.clone()), "{name} split at {at}");
        }
    }
}

#[test]
fn fixtures_parse_one_byte_at_a_time() {
    for (name, bytes, expected) in fixtures() {
        assert_eq!(drive(bytes.chunks(1)), Ok(expected), "{name}");
    }
}

#[test]
fn self_delimited_response_completes_on_its_last_byte() {
    let mut parser = ResponseParser::new(HttpLimits::default());
    let (last, head) = CHUNKED.split_last().expect("fixture is not empty");
    assert_eq!(parser.feed(head), Ok(Progress::NeedMore));
    assert!(matches!(parser.feed(&[*last]), Ok(Progress::Complete(_))));
    assert_eq!(parser.feed(b"x"), Err(HttpError::AlreadyComplete));
    assert_eq!(parser.eof(), Err(HttpError::AlreadyComplete));
}

#[test]
fn bytes_after_the_response_make_the_connection_not_reusable() {
    for (name, bytes, expected) in fixtures() {
        if !expected.reusable {
            continue;
        }
        let mut with_tail = bytes.to_vec();
        with_tail.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let response = whole(&with_tail).expect(name);
        assert_eq!(response.body, expected.body, "{name}");
        assert!(!response.reusable, "{name}");
    }
}

#[test]
fn header_lookup_is_case_insensitive() {
    let response = whole(KMS_ERROR).expect("fixture parses");
    assert_eq!(
        response.header("X-Amzn-ErrorType").map(|v| &v[..21]),
        Some("AccessDeniedException")
    );
    assert_eq!(response.header("content-length"), Some("70"));
    assert_eq!(response.header("x-missing"), None);
}

#[test]
fn malformed_responses_are_typed_errors() {
    let big_chunk_line = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;".as_slice(),
        &[b'x'; MAX_CHUNK_LINE_BYTES],
    ]
    .concat();
    let cases: Vec<(&str, &[u8], HttpError)> = vec![
        ("duplicate CL", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", HttpError::MultipleContentLength),
        ("conflicting CL", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", HttpError::MultipleContentLength),
        ("CL list", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", HttpError::MultipleContentLength),
        ("negative CL", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", HttpError::InvalidContentLength),
        ("signed CL", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", HttpError::InvalidContentLength),
        ("hex CL", b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello", HttpError::InvalidContentLength),
        ("empty CL", b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", HttpError::InvalidContentLength),
        ("overflowing CL", b"HTTP/1.1 200 OK\r\nContent-Length: 184467440737095516160\r\n\r\n", HttpError::InvalidContentLength),
        ("CL over the limit", b"HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n", HttpError::BodyTooLarge { limit: 1 << 20 }),
        ("CL and chunked", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", HttpError::ContentLengthWithTransferEncoding),
        ("gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HttpError::UnsupportedTransferEncoding),
        ("chunked twice", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", HttpError::UnsupportedTransferEncoding),
        ("bad chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", HttpError::InvalidChunkSize),
        ("empty chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n;ext\r\n", HttpError::InvalidChunkSize),
        ("negative chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", HttpError::InvalidChunkSize),
        ("LF-only chunk line", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc", HttpError::InvalidChunkSize),
        ("17-digit chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0ffffffffffffffff\r\n", HttpError::InvalidChunkSize),
        ("u64::MAX chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n", HttpError::BodyTooLarge { limit: 1 << 20 }),
        ("huge chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n", HttpError::BodyTooLarge { limit: 1 << 20 }),
        ("chunk without CRLF", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n", HttpError::InvalidChunkTerminator),
        ("chunk with LF only", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", HttpError::InvalidChunkTerminator),
        ("long chunk line", &big_chunk_line, HttpError::ChunkLineTooLong),
        ("bad trailer", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnot a field\r\n\r\n", HttpError::MalformedTrailers(httparse::Error::HeaderName)),
        ("upgrade", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", HttpError::UnexpectedUpgrade),
        ("status 099", b"HTTP/1.1 099 Odd\r\n\r\n", HttpError::InvalidStatus(99)),
        ("not HTTP", b"SSH-2.0-OpenSSH_9.6\r\n\r\n", HttpError::MalformedHead(httparse::Error::Version)),
        ("HTTP/2 preface", b"HTTP/2 200\r\n\r\n", HttpError::MalformedHead(httparse::Error::Version)),
        ("obsolete line folding", b"HTTP/1.1 200 OK\r\nX: a\r\n  folded\r\n\r\n", HttpError::MalformedHead(httparse::Error::HeaderName)),
        ("space in name", b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", HttpError::MalformedHead(httparse::Error::HeaderName)),
        ("truncated CL body", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", HttpError::TruncatedBody),
        ("no last chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", HttpError::TruncatedBody),
        ("truncated trailers", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n", HttpError::TruncatedBody),
        ("truncated head", b"HTTP/1.1 200 OK\r\nContent-Le", HttpError::TruncatedHead),
        ("only an interim response", b"HTTP/1.1 100 Continue\r\n\r\n", HttpError::TruncatedHead),
        ("nothing", b"", HttpError::ClosedBeforeResponse),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(whole(bytes), Err(expected), "{name}");
        assert_eq!(
            drive(bytes.chunks(1)),
            Err(expected),
            "{name}, byte by byte"
        );
    }
}

#[test]
fn limits_are_enforced() {
    let small = HttpLimits {
        max_head_bytes: 64,
        max_headers: 2,
        max_body_bytes: 4,
    };
    let cases: Vec<(&str, Vec<u8>, HttpError)> = vec![
        (
            "long head",
            [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; 64], b"\r\n\r\n"].concat(),
            HttpError::HeadTooLarge { limit: 64 },
        ),
        (
            "endless head without blank line",
            [b"HTTP/1.1 200 OK\r\n".as_slice(), &[b'a'; 100]].concat(),
            HttpError::HeadTooLarge { limit: 64 },
        ),
        (
            "interim heads count towards the head limit",
            b"HTTP/1.1 100 Continue\r\n\r\n".repeat(3),
            HttpError::HeadTooLarge { limit: 64 },
        ),
        (
            "too many headers",
            b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n".to_vec(),
            HttpError::TooManyHeaders { limit: 2 },
        ),
        (
            "too many trailers",
            // 47 head bytes + 17 trailer bytes: exactly the head limit.
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA:1\r\nB:2\r\nC:3\r\n\r\n".to_vec(),
            HttpError::TooManyHeaders { limit: 2 },
        ),
        (
            "CL body too large",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            HttpError::BodyTooLarge { limit: 4 },
        ),
        (
            "chunks add up too large",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_vec(),
            HttpError::BodyTooLarge { limit: 4 },
        ),
        (
            "close-delimited body too large",
            b"HTTP/1.1 200 OK\r\n\r\nhello".to_vec(),
            HttpError::BodyTooLarge { limit: 4 },
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(
            drive_with(small, [bytes.as_slice()]),
            Err(expected),
            "{name}"
        );
        assert_eq!(
            drive_with(small, bytes.chunks(1)),
            Err(expected),
            "{name}, byte by byte"
        );
    }
    let at_limit = b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 4\r\n\r\nabcd";
    assert_eq!(
        drive_with(small, [at_limit.as_slice()]).map(|r| r.body.to_vec()),
        Ok(b"abcd".to_vec())
    );
}

#[test]
fn an_error_sticks() {
    let mut parser = ResponseParser::new(HttpLimits::default());
    let bad = b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n";
    assert_eq!(parser.feed(bad), Err(HttpError::InvalidContentLength));
    assert_eq!(
        parser.feed(b"HTTP/1.1 200 OK\r\n\r\n"),
        Err(HttpError::InvalidContentLength)
    );
    assert_eq!(parser.eof(), Err(HttpError::InvalidContentLength));
}

#[test]
fn debug_output_does_not_show_the_body() {
    let response = whole(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nhunter2").expect("parses");
    let mut parser = ResponseParser::new(HttpLimits::default());
    assert_eq!(
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nhunter2"),
        Ok(Progress::NeedMore)
    );
    for shown in [format!("{response:?}"), format!("{parser:?}")] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[7 bytes]"), "{shown}");
    }
}

#[test]
fn write_request_keeps_order_and_case() {
    let mut out = b"previous".to_vec();
    write_request(
        &mut out,
        "POST",
        "/",
        &[
            ("host", "kms.us-east-1.amazonaws.com"),
            ("X-Amz-Target", "TrentService.Decrypt"),
            ("Content-Length", "2"),
        ],
        b"{}",
    )
    .expect("valid request");
    assert_eq!(
        out,
        b"previousPOST / HTTP/1.1\r\nhost: kms.us-east-1.amazonaws.com\r\n\
X-Amz-Target: TrentService.Decrypt\r\nContent-Length: 2\r\n\r\n{}"
            .to_vec()
    );
}

/// A request's method, target and headers.
type RequestParts = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

#[test]
fn write_request_refuses_to_split_a_request() {
    let bad_token = RequestError::InvalidHeaderValue {
        name: "X-Token".into(),
    };
    let cases: Vec<(RequestParts, RequestError)> = vec![
        (("GET\r\n", "/", vec![]), RequestError::InvalidMethod),
        (("", "/", vec![]), RequestError::InvalidMethod),
        (("GET", "/a b", vec![]), RequestError::InvalidTarget),
        (("GET", "/\r\nX: y", vec![]), RequestError::InvalidTarget),
        (("GET", "", vec![]), RequestError::InvalidTarget),
        (
            ("GET", "/", vec![("Host", "h"), ("X\r\nY", "v")]),
            RequestError::InvalidHeaderName { index: 1 },
        ),
        (
            ("GET", "/", vec![("", "v")]),
            RequestError::InvalidHeaderName { index: 0 },
        ),
        (
            ("GET", "/", vec![("Name:", "v")]),
            RequestError::InvalidHeaderName { index: 0 },
        ),
        (
            ("GET", "/", vec![("X-Token", "secret\r\nEvil: 1")]),
            bad_token.clone(),
        ),
        (("GET", "/", vec![("X-Token", "a\nb")]), bad_token.clone()),
        (("GET", "/", vec![("X-Token", "a\0b")]), bad_token.clone()),
    ];
    for ((method, target, headers), expected) in cases {
        let mut out = b"untouched".to_vec();
        assert_eq!(
            write_request(&mut out, method, target, &headers, b""),
            Err(expected.clone())
        );
        assert_eq!(out, b"untouched", "{expected}");
        assert!(!expected.to_string().contains("secret"));
    }
    let mut out = Vec::new();
    assert_eq!(
        write_request(&mut out, "GET", "/", &[("X", "tab\tand UTF-8 é")], b""),
        Ok(())
    );
}

fn encode_chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut rest = body;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let size = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(size);
        out.extend_from_slice(format!("{size:x};i={size}\r\n").as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        rest = tail;
    }
    out.extend_from_slice(b"0\r\nTrailer: t\r\n\r\n");
    out
}

/// Splits `bytes` at the given cut points (taken modulo the length).
fn pieces<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for point in points {
        out.push(&bytes[start..point]);
        start = point;
    }
    out.push(&bytes[start..]);
    out
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let _ = drive(pieces(&data, &cuts));
    }

    #[test]
    fn mutated_fixtures_never_panic(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let fixtures = fixtures();
        let mut bytes = fixtures[which.index(fixtures.len())].1.to_vec();
        let at = at.index(bytes.len());
        bytes[at] = byte;
        let _ = drive(pieces(&bytes, &cuts));
    }

    #[test]
    fn chunked_bodies_round_trip(body in proptest::collection::vec(any::<u8>(), 0..3000), sizes in proptest::collection::vec(1usize..700, 1..6), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let encoded = encode_chunked(&body, &sizes);
        let response = drive(pieces(&encoded, &cuts)).expect("valid chunked response");
        prop_assert_eq!(response.body.to_vec(), body);
        prop_assert!(response.reusable);
    }

    #[test]
    fn requests_round_trip_through_httparse(
        method in "[A-Z]{1,7}",
        target in "/[!-~]{0,40}",
        headers in proptest::collection::vec(("[A-Za-z0-9-]{1,20}", "[ -~]{0,40}"), 0..8),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.trim())).collect();
        let mut out = Vec::new();
        write_request(&mut out, &method, &target, &headers, &body).expect("valid parts");
        let mut slots = vec![httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut slots);
        let Ok(httparse::Status::Complete(len)) = parsed.parse(&out) else {
            return Err(TestCaseError::fail("request did not parse"));
        };
        prop_assert_eq!(parsed.method, Some(method.as_str()));
        prop_assert_eq!(parsed.path, Some(target.as_str()));
        let got: Vec<(&str, &[u8])> = parsed.headers.iter().map(|h| (h.name, h.value)).collect();
        let want: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(&out[len..], body.as_slice());
    }
}
