//! The IMDSv2 client (instance role credentials) fed arbitrary responses: never panics, sends
//! at most three well-formed requests (one head, no injected header or line, the session token
//! and role name only where they belong), finishes exactly once, and a success means the three
//! steps all answered.
//!
//! Input layout (see `fuzz/seed.sh`): one byte saying what follows each response (end of
//! stream, nothing, a transport error or a timeout), one byte where to cut each response in
//! two, then the responses to the three requests separated by `|||`.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use kmstool_core::credentials::CredentialFetch as _;
use kmstool_core::credentials::imds::{ImdsClient, ImdsEndpoint, ImdsOutput};
use libfuzzer_sys::fuzz_target;

const SEPARATOR: &[u8] = b"|||";

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    after: u8,
    cut: u8,
    stream: &'a [u8],
}

/// The responses, split at `SEPARATOR`.
fn responses(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = stream;
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

/// Checks one request: a single head ending the buffer, a request line of three parts, no
/// control bytes anywhere but the CRLFs.
fn check_request(request: &[u8], sent: usize) {
    let text = std::str::from_utf8(request).expect("request is UTF-8");
    let head = text
        .strip_suffix("\r\n\r\n")
        .expect("request ends its head");
    assert!(!head.contains("\r\n\r\n"), "two heads: {text:?}");
    let mut lines = head.split("\r\n");
    let request_line = lines.next().expect("request line");
    let parts: Vec<_> = request_line.split(' ').collect();
    assert_eq!(parts.len(), 3, "{request_line:?}");
    assert_eq!(parts[2], "HTTP/1.1");
    let expected_method = if sent == 0 { "PUT" } else { "GET" };
    assert_eq!(parts[0], expected_method);
    match sent {
        0 => assert_eq!(parts[1], "/latest/api/token"),
        1 => assert_eq!(parts[1], "/latest/meta-data/iam/security-credentials/"),
        _ => {
            let role = parts[1]
                .strip_prefix("/latest/meta-data/iam/security-credentials/")
                .expect("credentials path");
            assert!(!role.is_empty() && !role.contains('/'), "{role:?}");
        }
    }
    for line in lines {
        assert!(
            line.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
            "{line:?}"
        );
        let (name, _) = line.split_once(": ").expect("header line");
        assert!(!name.is_empty() && !name.contains(' '), "{line:?}");
    }
    let token_headers = head.matches("\r\nX-aws-ec2-metadata-token").count();
    assert_eq!(token_headers, 1, "{text:?}");
}

fuzz_target!(|input: Input<'_>| {
    let start = Instant::now();
    let endpoint = ImdsEndpoint {
        host: "169.254.169.254".into(),
        port: 80,
    };
    let mut client = ImdsClient::with_step_timeout(endpoint, Duration::from_secs(1), start);
    let responses = responses(input.stream);
    let mut next = responses.iter();
    let mut sent = 0;
    let mut done = None;
    let mut now = start;
    // Bounded: at most three requests, each answered by one response or an injected failure.
    for _ in 0..12 {
        match client.poll_output() {
            Some(ImdsOutput::Send { request_bytes, .. }) => {
                assert!(done.is_none(), "a request after Done");
                assert!(sent < 3, "a fourth request");
                check_request(&request_bytes, sent);
                sent += 1;
                let response = next.next().copied().unwrap_or_default();
                let cut = usize::from(input.cut) % (response.len() + 1);
                client.handle_response(now, &response[..cut]);
                client.handle_response(now, &response[cut..]);
                match input.after % 4 {
                    0 => client.handle_eof(now),
                    1 => {}
                    2 => client.handle_transport_error(now, "reset"),
                    _ => {
                        now += Duration::from_secs(2);
                        client.handle_timeout(now);
                    }
                }
            }
            Some(ImdsOutput::Done(result)) => {
                assert!(done.is_none(), "Done twice");
                if let Ok(credentials) = &result {
                    assert_eq!(sent, 3, "credentials after {sent} requests");
                    assert!(!credentials.role.is_empty());
                    assert!(!credentials.credentials.access_key_id.is_empty());
                } else {
                    let _ = result.as_ref().map_err(ToString::to_string);
                }
                done = Some(result.is_ok());
            }
            None => match client.poll_timeout() {
                Some(deadline) => {
                    assert!(done.is_none(), "a deadline after Done");
                    now = now.max(deadline);
                    client.handle_timeout(now);
                }
                None => break,
            },
        }
    }
    assert!(done.is_some(), "never finished");
    assert!(client.poll_output().is_none());
    assert!(client.poll_timeout().is_none());
});
