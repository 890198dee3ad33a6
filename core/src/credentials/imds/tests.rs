use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::credentials::tests::{Vars, lookup};

const TOKEN: &str = "AQAEAHunter2SessionToken==";
const DOCUMENT: &str = r#"{
  "Code" : "Success",
  "LastUpdated" : "2026-11-29T04:26:21Z",
  "Type" : "AWS-HMAC",
  "AccessKeyId" : "ASIAIOSFODNN7EXAMPLE",
  "SecretAccessKey" : "hunter2/K7MDENG/bPxRfiCYEXAMPLEKEY",
  "Token" : "IQoJb3JpZ2luX2VjEHunter2Token",
  "Expiration" : "2026-11-29T10:26:21Z"
}"#;

fn ok(body: &str) -> Vec<u8> {
    status(200, body)
}

fn status(code: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn default_endpoint() -> ImdsEndpoint {
    ImdsEndpoint {
        host: "169.254.169.254".into(),
        port: 80,
    }
}

/// What a scripted run saw.
struct Run {
    requests: Vec<Vec<u8>>,
    result: Result<ImdsCredentials, ImdsError>,
}

/// Drives a client, answering the n-th request with `replies[n]` fed one byte at a time,
/// followed by a close. Runs out of replies → the connection is refused.
fn run(endpoint: ImdsEndpoint, replies: &[Vec<u8>]) -> Run {
    let now = Instant::now();
    let mut client = ImdsClient::new(endpoint, now);
    let mut requests = Vec::new();
    let mut replies = replies.iter();
    loop {
        match client.poll_output() {
            Some(ImdsOutput::Send { request_bytes, .. }) => {
                requests.push(request_bytes.to_vec());
                match replies.next() {
                    Some(reply) => {
                        for byte in reply.chunks(1) {
                            client.handle_response(now, byte);
                        }
                        client.handle_eof(now);
                    }
                    None => client.handle_transport_error(now, "connection refused"),
                }
            }
            Some(ImdsOutput::Done(result)) => {
                assert!(client.poll_output().is_none());
                assert_eq!(client.poll_timeout(), None);
                return Run { requests, result };
            }
            None => panic!("a scripted run never waits"),
        }
    }
}

type Outcome = Result<ImdsCredentials, ImdsError>;

fn failure(step: ImdsStep, kind: ImdsErrorKind) -> Outcome {
    Err(ImdsError { step, kind })
}

#[test]
fn three_steps_with_exact_requests() {
    let run = run(
        default_endpoint(),
        &[
            ok(TOKEN),
            ok("my-role\nsecond-line-ignored\n"),
            ok(DOCUMENT),
        ],
    );
    let expected_requests: [&[u8]; 3] = [
        b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n\
X-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\
X-aws-ec2-metadata-token: AQAEAHunter2SessionToken==\r\nConnection: close\r\n\r\n",
        b"GET /latest/meta-data/iam/security-credentials/my-role HTTP/1.1\r\nHost: 169.254.169.254\r\n\
X-aws-ec2-metadata-token: AQAEAHunter2SessionToken==\r\nConnection: close\r\n\r\n",
    ];
    assert_eq!(run.requests, expected_requests.map(<[u8]>::to_vec));
    assert_eq!(
        run.result,
        Ok(ImdsCredentials {
            credentials: Credentials::new(
                "ASIAIOSFODNN7EXAMPLE",
                "hunter2/K7MDENG/bPxRfiCYEXAMPLEKEY",
                Some("IQoJb3JpZ2luX2VjEHunter2Token".into()),
            ),
            expiration: "2026-11-29T10:26:21Z".into(),
            role: "my-role".into(),
        })
    );
}

#[test]
fn host_header_carries_a_custom_port() {
    let endpoint = ImdsEndpoint::parse("http://127.0.0.1:1338").expect("valid");
    let run = run(endpoint, &[]);
    assert!(
        run.requests[0]
            .windows(22)
            .any(|w| w == b"Host: 127.0.0.1:1338\r\n"),
        "{:?}",
        String::from_utf8_lossy(&run.requests[0])
    );
    assert_eq!(
        run.result,
        failure(
            ImdsStep::Token,
            ImdsErrorKind::Transport("connection refused".into())
        )
    );
}

#[test]
fn failures_name_their_step() {
    use ImdsErrorKind as K;
    use ImdsStep as S;
    let long_role = "r".repeat(65);
    let cases: Vec<(&str, Vec<Vec<u8>>, Outcome)> = vec![
        (
            "IMDSv1 only",
            vec![status(405, "")],
            failure(S::Token, K::TokenRefused(405)),
        ),
        (
            "forbidden",
            vec![status(403, "")],
            failure(S::Token, K::TokenRefused(403)),
        ),
        (
            "unauthorised",
            vec![status(401, "")],
            failure(S::Token, K::TokenRefused(401)),
        ),
        (
            "no token route",
            vec![status(404, "")],
            failure(S::Token, K::TokenRefused(404)),
        ),
        (
            "token 500",
            vec![status(500, "")],
            failure(S::Token, K::Status(500)),
        ),
        (
            "empty token",
            vec![ok(" \n")],
            failure(S::Token, K::InvalidToken),
        ),
        (
            "token with space",
            vec![ok("a b")],
            failure(S::Token, K::InvalidToken),
        ),
        (
            "closed at once",
            vec![Vec::new()],
            failure(S::Token, K::Http(HttpError::ClosedBeforeResponse)),
        ),
        (
            "not HTTP",
            vec![b"SSH-2.0-x\r\n\r\n".to_vec()],
            failure(
                S::Token,
                K::Http(HttpError::MalformedHead(httparse::Error::Version)),
            ),
        ),
        (
            "truncated",
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nAQ".to_vec()],
            failure(S::Token, K::Http(HttpError::TruncatedBody)),
        ),
        (
            "no role",
            vec![ok(TOKEN), status(404, "")],
            failure(S::RoleName, K::NoRole),
        ),
        (
            "token expired",
            vec![ok(TOKEN), status(401, "")],
            failure(S::RoleName, K::Status(401)),
        ),
        (
            "path in role",
            vec![ok(TOKEN), ok("../../user-data")],
            failure(S::RoleName, K::InvalidRoleName),
        ),
        (
            "empty role",
            vec![ok(TOKEN), ok("\n")],
            failure(S::RoleName, K::InvalidRoleName),
        ),
        (
            "long role",
            vec![ok(TOKEN), ok(&long_role)],
            failure(S::RoleName, K::InvalidRoleName),
        ),
        (
            "refused at step 2",
            vec![ok(TOKEN)],
            failure(S::RoleName, K::Transport("connection refused".into())),
        ),
        (
            "role gone",
            vec![ok(TOKEN), ok("r"), status(404, "")],
            failure(S::Credentials, K::Status(404)),
        ),
        (
            "code",
            vec![
                ok(TOKEN),
                ok("r"),
                ok(r#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"hunter2?"}"#),
            ],
            failure(
                S::Credentials,
                K::Code("AssumeRoleUnauthorizedAccess".into()),
            ),
        ),
        (
            "no token field",
            vec![
                ok(TOKEN),
                ok("r"),
                ok(
                    r#"{"Code":"Success","AccessKeyId":"A","SecretAccessKey":"hunter2","Expiration":"e"}"#,
                ),
            ],
            failure(S::Credentials, K::Malformed("Token missing")),
        ),
        (
            "no expiration",
            vec![
                ok(TOKEN),
                ok("r"),
                ok(r#"{"AccessKeyId":"A","SecretAccessKey":"hunter2","Token":"t"}"#),
            ],
            failure(S::Credentials, K::Malformed("Expiration missing")),
        ),
        (
            "empty secret",
            vec![
                ok(TOKEN),
                ok("r"),
                ok(r#"{"AccessKeyId":"A","SecretAccessKey":"","Token":"t","Expiration":"e"}"#),
            ],
            failure(S::Credentials, K::Malformed("SecretAccessKey missing")),
        ),
        (
            "wrong type",
            vec![
                ok(TOKEN),
                ok("r"),
                ok(r#"{"AccessKeyId":"A","SecretAccessKey":"hunter2","Token":7}"#),
            ],
            failure(
                S::Credentials,
                K::Malformed("not a JSON object with string fields"),
            ),
        ),
        (
            "invalid UTF-8 in a field that is not read",
            vec![ok(TOKEN), ok("r"), {
                let mut reply = ok(DOCUMENT.replacen('{', "{\"Other\":\"\u{b7}\",", 1).as_str());
                // Turn the two-byte U+00B7 into a lone continuation byte, keeping the length.
                let at = reply
                    .windows(2)
                    .position(|w| w == [0xc2, 0xb7])
                    .expect("U+00B7");
                reply[at] = b' ';
                reply
            }],
            failure(S::Credentials, K::Malformed("not UTF-8 text")),
        ),
        (
            "not JSON",
            vec![ok(TOKEN), ok("r"), ok("<html>hunter2</html>")],
            failure(
                S::Credentials,
                K::Malformed("not a JSON object with string fields"),
            ),
        ),
    ];
    for (name, replies, expected) in cases {
        let run = run(default_endpoint(), &replies);
        if let Err(error) = &run.result {
            let shown = format!("{error} {error:?}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("AQAEA"),
                "{name}: {shown}"
            );
        }
        assert_eq!(run.result, expected, "{name}");
    }
}

#[test]
fn close_delimited_responses_complete_on_eof() {
    let close_delimited = |body: &str| format!("HTTP/1.0 200 OK\r\n\r\n{body}").into_bytes();
    let run = run(
        default_endpoint(),
        &[
            close_delimited(TOKEN),
            close_delimited("r"),
            close_delimited(DOCUMENT),
        ],
    );
    assert_eq!(run.result.map(|c| c.role), Ok("r".to_owned()));
}

#[test]
fn each_step_has_its_own_deadline() {
    let start = Instant::now();
    let mut client =
        ImdsClient::with_step_timeout(default_endpoint(), Duration::from_secs(2), start);
    assert_eq!(client.poll_timeout(), Some(start + Duration::from_secs(2)));
    assert!(matches!(
        client.poll_output(),
        Some(ImdsOutput::Send { .. })
    ));
    assert!(client.poll_output().is_none());

    // Early wake-ups change nothing.
    client.handle_timeout(start + Duration::from_millis(1999));
    assert!(client.poll_output().is_none());

    let later = start + Duration::from_millis(1500);
    client.handle_response(later, &ok(TOKEN));
    assert_eq!(client.poll_timeout(), Some(later + Duration::from_secs(2)));
    assert!(matches!(
        client.poll_output(),
        Some(ImdsOutput::Send { .. })
    ));

    client.handle_timeout(later + Duration::from_secs(2));
    let Some(ImdsOutput::Done(result)) = client.poll_output() else {
        panic!("the deadline passed");
    };
    assert_eq!(result, failure(ImdsStep::RoleName, ImdsErrorKind::Timeout));
    assert!(client.poll_output().is_none());
}

#[test]
fn a_token_timeout_hints_at_the_hop_limit() {
    let start = Instant::now();
    let mut client = ImdsClient::new(default_endpoint(), start);
    let _ = client.poll_output();
    client.handle_timeout(start + DEFAULT_STEP_TIMEOUT);
    let Some(ImdsOutput::Done(Err(error))) = client.poll_output() else {
        panic!("timed out");
    };
    assert_eq!(
        error.to_string(),
        "IMDS step 1/3 (PUT /latest/api/token): no response in time \
(in a container, the instance's metadata hop limit may be too low)"
    );
}

#[test]
fn input_without_an_outstanding_request_is_ignored() {
    let now = Instant::now();
    let mut client = ImdsClient::new(default_endpoint(), now);
    client.handle_response(now, &status(403, ""));
    client.handle_eof(now);
    assert!(matches!(
        client.poll_output(),
        Some(ImdsOutput::Send { .. })
    ));
}

#[test]
fn debug_output_hides_the_session_token() {
    let now = Instant::now();
    let mut client = ImdsClient::new(default_endpoint(), now);
    let _ = client.poll_output();
    client.handle_response(now, &ok(TOKEN));
    let shown = format!("{client:?}");
    let output = client.poll_output().expect("step 2 queued");
    let shown = format!("{shown} {output:?}");
    assert!(!shown.contains("Hunter2"), "{shown}");
    assert!(shown.contains("RoleName"), "{shown}");
}

#[test]
fn endpoint_from_the_environment() {
    let v4 = Some(default_endpoint());
    let v6 = Some(ImdsEndpoint {
        host: "fd00:ec2::254".into(),
        port: 80,
    });
    let cases: Vec<(Vars, Result<Option<ImdsEndpoint>, &str>)> = vec![
        (vec![], Ok(v4.clone())),
        (vec![("AWS_EC2_METADATA_DISABLED", "true")], Ok(None)),
        (vec![("AWS_EC2_METADATA_DISABLED", " TRUE ")], Ok(None)),
        (vec![("AWS_EC2_METADATA_DISABLED", "false")], Ok(v4.clone())),
        (vec![("AWS_EC2_METADATA_DISABLED", "1")], Ok(v4.clone())),
        (
            vec![("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6")],
            Ok(v6.clone()),
        ),
        (
            vec![("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "ipv4")],
            Ok(v4.clone()),
        ),
        (
            vec![("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "ipx")],
            Err("endpoint mode is neither IPv4 nor IPv6"),
        ),
        (
            vec![
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1338"),
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6"),
            ],
            Ok(Some(ImdsEndpoint {
                host: "127.0.0.1".into(),
                port: 1338,
            })),
        ),
        (
            vec![
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1338"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
            Ok(None),
        ),
    ];
    for (vars, expected) in cases {
        let got = ImdsEndpoint::from_env(lookup(&vars)).map_err(|e| match e {
            CredentialsError::InvalidImdsEndpoint { reason, .. } => reason,
            other => panic!("{other}"),
        });
        assert_eq!(got, expected, "{vars:?}");
    }
}

#[test]
fn endpoint_urls() {
    // URL, then host and port or the error's reason.
    type HostPort = (&'static str, u16);
    let cases: Vec<(&str, Result<HostPort, &str>)> = vec![
        ("http://169.254.169.254", Ok(("169.254.169.254", 80))),
        ("http://127.0.0.1:1338/", Ok(("127.0.0.1", 1338))),
        ("HTTP://imds.local:8080", Ok(("imds.local", 8080))),
        ("http://[fd00:ec2::254]", Ok(("fd00:ec2::254", 80))),
        ("http://[::1]:1338", Ok(("::1", 1338))),
        ("https://169.254.169.254", Err("not an http:// URL")),
        ("169.254.169.254", Err("not an http:// URL")),
        ("http://h/latest", Err("a path is not supported")),
        ("http://", Err("invalid host")),
        ("http://:80", Err("invalid host")),
        ("http://user@h", Err("invalid host")),
        ("http://fd00::1", Err("invalid host")),
        ("http://[fd00::1", Err("IPv6 address without a closing ]")),
        ("http://[zz]", Err("invalid IPv6 address")),
        ("http://[::1]80", Err("invalid port")),
        ("http://h:0", Err("invalid port")),
        ("http://h:+80", Err("invalid port")),
        ("http://h:65536", Err("invalid port")),
        ("http://h:", Err("invalid port")),
    ];
    for (url, expected) in cases {
        let got = ImdsEndpoint::parse(url);
        let got = match &got {
            Ok(endpoint) => Ok((endpoint.host.as_str(), endpoint.port)),
            Err(CredentialsError::InvalidImdsEndpoint { value, reason }) => {
                assert_eq!(value, url);
                Err(*reason)
            }
            Err(other) => panic!("{other}"),
        };
        assert_eq!(got, expected, "{url}");
    }
    let endpoint = ImdsEndpoint::parse("http://[::1]:1338").expect("valid");
    assert_eq!(endpoint.to_string(), "http://[::1]:1338");
    assert_eq!(default_endpoint().to_string(), "http://169.254.169.254");
}

proptest! {
    #[test]
    fn arbitrary_replies_always_end(
        replies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..4),
        prefix_valid in 0usize..3,
    ) {
        // Start with some valid steps so every step's reader sees garbage.
        let mut script: Vec<Vec<u8>> = [ok(TOKEN), ok("r")].into_iter().take(prefix_valid).collect();
        script.extend(replies);
        let run = run(default_endpoint(), &script);
        prop_assert!(run.requests.len() <= 3);
    }

    #[test]
    fn arbitrary_documents_never_panic(body in "\\{(\"(Code|AccessKeyId|SecretAccessKey|Token|Expiration)\":(\"[A-Za-z0-9]{0,8}\"|null|1|\\[\\]),?){0,6}\\}") {
        let run = run(default_endpoint(), &[ok(TOKEN), ok("r"), ok(&body)]);
        prop_assert_eq!(run.requests.len(), 3);
    }
}

/// Drives a region client like [`run`].
fn run_region(replies: &[Vec<u8>]) -> (Vec<Vec<u8>>, Result<Option<String>, ImdsError>) {
    let now = Instant::now();
    let mut client = ImdsRegionClient::new(default_endpoint(), DEFAULT_STEP_TIMEOUT, now);
    let mut requests = Vec::new();
    let mut replies = replies.iter();
    loop {
        match client.poll_output() {
            Some(FetchOutput::Send { request_bytes, .. }) => {
                requests.push(request_bytes.to_vec());
                match replies.next() {
                    Some(reply) => {
                        client.handle_response(now, reply);
                        client.handle_eof(now);
                    }
                    None => client.handle_transport_error(now, "connection refused"),
                }
            }
            Some(FetchOutput::Done(result)) => return (requests, result),
            None => match client.poll_timeout() {
                Some(deadline) => client.handle_timeout(deadline),
                None => panic!("a client that is not done has a deadline"),
            },
        }
    }
}

#[test]
fn the_region_comes_from_placement_with_the_token() {
    let (requests, result) = run_region(&[ok(TOKEN), ok("eu-west-1\n")]);
    assert_eq!(result, Ok(Some("eu-west-1".to_owned())));
    let second = String::from_utf8(requests[1].clone()).expect("text");
    assert!(
        second.starts_with("GET /latest/meta-data/placement/region HTTP/1.1\r\n"),
        "{second}"
    );
    assert!(second.contains(&format!("X-aws-ec2-metadata-token: {TOKEN}\r\n")));
    assert!(String::from_utf8_lossy(&requests[0]).starts_with("PUT /latest/api/token "));

    assert_eq!(run_region(&[ok(TOKEN), status(404, "")]).1, Ok(None));
    let error = run_region(&[status(403, "")]).1.expect_err("refused");
    assert_eq!(error.step, ImdsStep::RegionToken);
    assert_eq!(
        error.to_string(),
        "IMDS region step 1/2 (PUT /latest/api/token): HTTP 403: IMDSv2 is unsupported or \
         metadata access is disabled for this instance"
    );
    let error = run_region(&[ok(TOKEN), ok("eu west")]).1.expect_err("bad");
    assert_eq!(
        (error.step, error.kind),
        (ImdsStep::Region, ImdsErrorKind::InvalidRegion)
    );
    let error = run_region(&[ok(TOKEN)]).1.expect_err("refused");
    assert_eq!(
        error.to_string(),
        "IMDS region step 2/2 (GET /latest/meta-data/placement/region): transport error: \
         connection refused"
    );
}
