//! The container credentials client (ECS task role, EKS Pod Identity) from arbitrary
//! environment values and an arbitrary response: never panics; a configured endpoint sends
//! exactly one well-formed request (one head, no injected header or line, the path and token
//! only where they belong); it finishes exactly once; and no error or Debug text depends on
//! the token (the same run with every visible byte of the token changed shows the same).
//!
//! Input layout (see `fuzz/seed.sh`): one byte saying what follows the response (end of
//! stream, nothing, a transport error or a timeout), one byte where to cut the response in
//! two, then `FLAGS URI|||TOKEN|||RESPONSE`, where FLAGS bit 0 picks
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` over `_FULL_URI` and bit 1 the token file over
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use kmstool_core::credentials::container::{
    AUTHORIZATION_TOKEN_FILE_VAR, AUTHORIZATION_TOKEN_VAR, ContainerClient, ContainerEndpoint,
    FULL_URI_VAR, RELATIVE_URI_VAR,
};
use kmstool_core::credentials::{CredentialFetch, FetchOutput};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

const SEPARATOR: &[u8] = b"|||";
const TOKEN_FILE: &str = "/token";

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    after: u8,
    cut: u8,
    stream: &'a [u8],
}

/// `stream` split at the first two separators.
fn parts(stream: &[u8]) -> [&[u8]; 3] {
    let mut out = [&[][..]; 3];
    let mut rest = stream;
    for slot in out.iter_mut().take(2) {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                *slot = &rest[..at];
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => {
                *slot = rest;
                return out;
            }
        }
    }
    out[2] = rest;
    out
}

/// One head ending the buffer, `GET <path> HTTP/1.1`, no control bytes but the CRLFs, and the
/// token in exactly one `Authorization` header when there is one.
fn check_request(request: &[u8], endpoint: &ContainerEndpoint, token: Option<&str>) {
    let text = std::str::from_utf8(request).expect("request is UTF-8");
    let head = text
        .strip_suffix("\r\n\r\n")
        .expect("request ends its head");
    assert!(!head.contains("\r\n\r\n"), "two heads: {text:?}");
    let mut lines = head.split("\r\n");
    let request_line = lines.next().expect("request line");
    assert_eq!(request_line, format!("GET {} HTTP/1.1", endpoint.path));
    let mut authorization = 0;
    for line in lines {
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line:?}");
        let (name, value) = line.split_once(": ").expect("header line");
        assert!(!name.is_empty() && !name.contains(' '), "{line:?}");
        if name == "Authorization" {
            authorization += 1;
            assert_eq!(Some(value), token.map(str::trim_ascii), "{line:?}");
        }
    }
    assert_eq!(authorization, usize::from(endpoint.has_authorization()));
}

/// Every visible ASCII byte moved to the next one (spaces, controls and non-ASCII kept), so a
/// token stays exactly as valid and as long but differs in every visible byte.
fn rotated(token: &str) -> String {
    token
        .chars()
        .map(|c| match c {
            '!'..='~' => char::from(b'!' + (c as u8 - b'!' + 1) % 94),
            other => other,
        })
        .collect()
}

/// Runs the client for one token value; returns what a user or a log could see: the error
/// (Display and Debug, with the client's Debug) or that it succeeded.
fn scenario(input: &Input<'_>, flags: u8, uri: &str, token: &str, response: &[u8]) -> String {
    let uri_var = if flags & 1 == 0 {
        FULL_URI_VAR
    } else {
        RELATIVE_URI_VAR
    };
    let token_var = if flags & 2 == 0 {
        AUTHORIZATION_TOKEN_VAR
    } else {
        AUTHORIZATION_TOKEN_FILE_VAR
    };
    let get_env = |name: &str| {
        if name == uri_var {
            Some(uri.to_owned())
        } else if name == token_var && token_var == AUTHORIZATION_TOKEN_FILE_VAR {
            Some(TOKEN_FILE.to_owned())
        } else if name == token_var {
            Some(token.to_owned())
        } else {
            None
        }
    };
    let read_file = |path: &std::path::Path| {
        assert_eq!(path, std::path::Path::new(TOKEN_FILE));
        Ok(Zeroizing::new(token.to_owned()))
    };
    let endpoint = match ContainerEndpoint::from_env(get_env, read_file) {
        Ok(Some(endpoint)) => endpoint,
        Ok(None) => {
            assert!(uri.is_empty(), "{uri:?} configures nothing");
            return "not configured".to_owned();
        }
        Err(error) => return format!("{error} {error:?}"),
    };
    let token = endpoint.has_authorization().then_some(token);
    let start = Instant::now();
    let mut client = ContainerClient::new(endpoint.clone(), Duration::from_secs(1), start);
    let mut now = start;
    let mut sent = 0;
    let mut outcome = None;
    for _ in 0..6 {
        match client.poll_output() {
            Some(FetchOutput::Send {
                request_bytes,
                host,
                port,
            }) => {
                assert!(outcome.is_none() && sent == 0, "one request only");
                assert_eq!(
                    (host.as_str(), port),
                    (endpoint.host.as_str(), endpoint.port)
                );
                check_request(&request_bytes, &endpoint, token);
                sent += 1;
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
            Some(FetchOutput::Done(result)) => {
                assert!(outcome.is_none(), "Done twice");
                outcome = Some(match &result {
                    Ok(credentials) => {
                        assert_eq!(sent, 1);
                        assert!(!credentials.credentials.access_key_id.is_empty());
                        "ok".to_owned()
                    }
                    Err(error) => format!("{error} {error:?} {client:?}"),
                });
            }
            None => match client.poll_timeout() {
                Some(deadline) => {
                    assert!(outcome.is_none(), "a deadline after Done");
                    now = now.max(deadline);
                    client.handle_timeout(now);
                }
                None => break,
            },
        }
    }
    outcome.expect("never finished")
}

fuzz_target!(|input: Input<'_>| {
    let [uri, token, response] = parts(input.stream);
    let Some((&flags, uri)) = uri.split_first() else {
        return;
    };
    let uri = String::from_utf8_lossy(uri).into_owned();
    let token = String::from_utf8_lossy(token).into_owned();
    let seen = scenario(&input, flags, &uri, &token, response);
    // Nothing seen depends on the token's content (Instant's Debug aside, equal here).
    let other = scenario(&input, flags, &uri, &rotated(&token), response);
    let strip = |s: &str| s.split("deadline:").next().unwrap_or_default().to_owned();
    assert_eq!(
        strip(&seen),
        strip(&other),
        "the token shows in what is seen"
    );
});
