use std::collections::HashMap;

use super::*;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.hunter2-pod-identity.c2ln";
const DOCUMENT: &str = r#"{
  "RoleArn" : "arn:aws:iam::111122223333:role/pod-role",
  "AccessKeyId" : "ASIAIOSFODNN7EXAMPLE",
  "SecretAccessKey" : "hunter2/K7MDENG/bPxRfiCYEXAMPLEKEY",
  "Token" : "IQoJb3JpZ2luX2VjEHunter2Token",
  "Expiration" : "2026-11-29T10:26:21Z"
}"#;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| vars.get(name).cloned()
}

fn no_file(path: &Path) -> io::Result<Zeroizing<String>> {
    panic!("no file should be read, asked for {}", path.display())
}

fn endpoint(vars: &[(&str, &str)]) -> Result<Option<ContainerEndpoint>, CredentialsError> {
    ContainerEndpoint::from_env(env(vars), no_file)
}

fn reply(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Runs a client to the end against one canned reply (fed 5 bytes at a time); returns the
/// request it sent and the result.
fn run(
    endpoint: ContainerEndpoint,
    reply: Option<&[u8]>,
) -> (Vec<u8>, Result<ContainerCredentials, ContainerError>) {
    let now = Instant::now();
    let mut client = ContainerClient::new(endpoint, DEFAULT_TIMEOUT, now);
    let mut sent = Vec::new();
    loop {
        match client.poll_output() {
            Some(FetchOutput::Send {
                request_bytes,
                host,
                port,
            }) => {
                assert_eq!(sent, Vec::<u8>::new(), "one request only");
                assert!(!host.is_empty() && port != 0);
                sent = request_bytes.to_vec();
                match reply {
                    Some(reply) => {
                        for chunk in reply.chunks(5) {
                            client.handle_response(now, chunk);
                        }
                    }
                    None => client.handle_timeout(client.poll_timeout().expect("deadline")),
                }
            }
            Some(FetchOutput::Done(result)) => return (sent, result),
            None => client.handle_eof(now),
        }
    }
}

#[test]
fn not_configured_without_either_uri() {
    assert_eq!(endpoint(&[]), Ok(None));
    assert_eq!(
        endpoint(&[(RELATIVE_URI_VAR, ""), (FULL_URI_VAR, "")]),
        Ok(None)
    );
    // A token alone configures nothing.
    assert_eq!(endpoint(&[(AUTHORIZATION_TOKEN_VAR, TOKEN)]), Ok(None));
}

#[test]
fn ecs_relative_uri() {
    let ep = endpoint(&[(RELATIVE_URI_VAR, "/v2/credentials/7c2e4d4f-uuid")])
        .expect("valid")
        .expect("configured");
    assert_eq!((ep.host.as_str(), ep.port), ("169.254.170.2", 80));
    assert_eq!(ep.path, "/v2/credentials/7c2e4d4f-uuid");
    assert!(!ep.has_authorization());
    let (request, result) = run(ep, Some(&reply(200, DOCUMENT)));
    assert_eq!(
        String::from_utf8(request).expect("ASCII"),
        "GET /v2/credentials/7c2e4d4f-uuid HTTP/1.1\r\nHost: 169.254.170.2\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    let got = result.expect("credentials");
    assert_eq!(got.credentials.access_key_id, "ASIAIOSFODNN7EXAMPLE");
    assert_eq!(
        got.credentials.secret_access_key.expose(),
        "hunter2/K7MDENG/bPxRfiCYEXAMPLEKEY"
    );
    assert_eq!(
        got.credentials
            .session_token
            .as_ref()
            .map(SecretString::expose),
        Some("IQoJb3JpZ2luX2VjEHunter2Token")
    );
    assert_eq!(got.expiration, "2026-11-29T10:26:21Z");
}

#[test]
fn eks_pod_identity_full_uri_with_a_token_file() {
    let read = |path: &Path| {
        assert_eq!(
            path,
            Path::new(
                "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"
            )
        );
        Ok(Zeroizing::new(format!("{TOKEN}\n")))
    };
    let ep = ContainerEndpoint::from_env(
        env(&[
            (FULL_URI_VAR, "http://169.254.170.23/v1/credentials"),
            (
                AUTHORIZATION_TOKEN_FILE_VAR,
                "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
            ),
            // The file wins over the variable.
            (AUTHORIZATION_TOKEN_VAR, "ignored"),
        ]),
        read,
    )
    .expect("valid")
    .expect("configured");
    assert!(ep.has_authorization());
    let (request, result) = run(ep, Some(&reply(200, DOCUMENT)));
    assert_eq!(
        String::from_utf8(request).expect("ASCII"),
        format!(
            "GET /v1/credentials HTTP/1.1\r\nHost: 169.254.170.23\r\nAuthorization: {TOKEN}\r\n\
             Accept: application/json\r\nConnection: close\r\n\r\n"
        )
    );
    assert!(result.is_ok());
}

#[test]
fn full_uri_hosts_and_schemes() {
    for (url, host, port, path) in [
        (
            "http://127.0.0.1:9911/creds?x=1",
            "127.0.0.1",
            9911,
            "/creds?x=1",
        ),
        ("http://localhost:8080", "localhost", 8080, "/"),
        ("HTTP://[::1]:80/c", "::1", 80, "/c"),
        (
            "http://[fd00:ec2::23]/v1/credentials",
            "fd00:ec2::23",
            80,
            "/v1/credentials",
        ),
        (
            "http://169.254.170.2/v2/credentials/x",
            "169.254.170.2",
            80,
            "/v2/credentials/x",
        ),
    ] {
        let ep = endpoint(&[(FULL_URI_VAR, url)])
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .expect("configured");
        assert_eq!(
            (ep.host.as_str(), ep.port, ep.path.as_str()),
            (host, port, path),
            "{url}"
        );
    }
    for (url, reason) in [
        ("https://creds.example.com/v1", "https is not supported"),
        (
            "http://creds.example.com/v1",
            "plain HTTP is allowed only to loopback",
        ),
        (
            "http://169.254.169.254/",
            "plain HTTP is allowed only to loopback",
        ),
        (
            "http://10.0.0.1:80/",
            "plain HTTP is allowed only to loopback",
        ),
        ("ftp://127.0.0.1/", "not an http:// URL"),
        ("127.0.0.1:80/creds", "not a URL"),
        ("http://127.0.0.1:0/", "invalid port"),
        ("http://127.0.0.1/a b", "characters a URL cannot carry"),
    ] {
        let error = endpoint(&[(FULL_URI_VAR, url)]).expect_err(url);
        let shown = error.to_string();
        assert!(
            shown.starts_with("invalid AWS_CONTAINER_CREDENTIALS_FULL_URI: "),
            "{shown}"
        );
        assert!(shown.contains(reason), "{url}: {shown}");
    }
}

#[test]
fn the_relative_uri_wins_and_must_be_a_path() {
    let ep = endpoint(&[
        (RELATIVE_URI_VAR, "/v2/credentials/a"),
        (FULL_URI_VAR, "http://127.0.0.1:1/"),
    ])
    .expect("valid")
    .expect("configured");
    assert_eq!((ep.host.as_str(), ep.port), (ECS_HOST, 80));
    let error = endpoint(&[(RELATIVE_URI_VAR, "v2/credentials/a")]).expect_err("no slash");
    assert_eq!(
        error.to_string(),
        "invalid AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: the path must start with /"
    );
}

#[test]
fn tokens_that_cannot_be_a_header_are_refused_without_showing_them() {
    for token in ["a\r\nX-Injected: 1", "tab\there", " \n", "é"] {
        let error = endpoint(&[
            (FULL_URI_VAR, "http://127.0.0.1:1/"),
            (AUTHORIZATION_TOKEN_VAR, token),
        ])
        .expect_err(token);
        let shown = format!("{error} {error:?}");
        assert!(
            shown.starts_with("AWS_CONTAINER_AUTHORIZATION_TOKEN: "),
            "{shown}"
        );
        assert!(
            !shown.contains("Injected") && !shown.contains("tab"),
            "{shown}"
        );
    }
    let unreadable = ContainerEndpoint::from_env(
        env(&[
            (FULL_URI_VAR, "http://127.0.0.1:1/"),
            (AUTHORIZATION_TOKEN_FILE_VAR, "/no/such/token"),
        ]),
        |_| Err(io::Error::from(io::ErrorKind::NotFound)),
    )
    .expect_err("unreadable");
    assert_eq!(
        unreadable.to_string(),
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: /no/such/token: entity not found"
    );
}

#[test]
fn failures_name_the_endpoint_and_never_a_secret() {
    let with_token = || {
        endpoint(&[
            (FULL_URI_VAR, "http://127.0.0.1:9911/v1/credentials"),
            (AUTHORIZATION_TOKEN_VAR, TOKEN),
        ])
        .expect("valid")
        .expect("configured")
    };
    let without_token = || {
        endpoint(&[(RELATIVE_URI_VAR, "/v2/credentials/secret-id")])
            .expect("valid")
            .expect("configured")
    };
    let cases: Vec<(ContainerEndpoint, Option<Vec<u8>>, &str)> = vec![
        (
            with_token(),
            Some(reply(401, "{}")),
            "container endpoint http://127.0.0.1:9911: HTTP 401: the authorization token was refused",
        ),
        (
            without_token(),
            Some(reply(403, "")),
            "container endpoint http://169.254.170.2: HTTP 403: no authorization token was sent (set AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or AWS_CONTAINER_AUTHORIZATION_TOKEN)",
        ),
        (
            with_token(),
            Some(reply(500, "")),
            "container endpoint http://127.0.0.1:9911: unexpected HTTP 500",
        ),
        (
            with_token(),
            Some(reply(
                200,
                r#"{"AccessKeyId":"A","SecretAccessKey":"hunter2"}"#,
            )),
            "container endpoint http://127.0.0.1:9911: malformed credentials document: Token missing",
        ),
        (
            with_token(),
            Some(reply(200, "hunter2")),
            "container endpoint http://127.0.0.1:9911: malformed credentials document: not a JSON object with string fields",
        ),
        (
            with_token(),
            None,
            "container endpoint http://127.0.0.1:9911: no response in time",
        ),
        (
            with_token(),
            Some(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{".to_vec()),
            "container endpoint http://127.0.0.1:9911: ",
        ),
    ];
    for (ep, reply, expected) in cases {
        let (_, result) = run(ep, reply.as_deref());
        let error = result.expect_err(expected);
        let shown = format!("{error} {error:?}");
        assert!(shown.starts_with(expected), "{shown}");
        for secret in ["hunter2", TOKEN, "secret-id"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}

#[test]
fn a_transport_error_ends_the_fetch_and_later_input_is_ignored() {
    let ep = endpoint(&[(FULL_URI_VAR, "http://127.0.0.1:9911/")])
        .expect("valid")
        .expect("configured");
    let now = Instant::now();
    let mut client = ContainerClient::new(ep, DEFAULT_TIMEOUT, now);
    assert_eq!(client.poll_timeout(), Some(now + DEFAULT_TIMEOUT));
    assert!(matches!(
        client.poll_output(),
        Some(FetchOutput::Send { .. })
    ));
    client.handle_transport_error(now, "connection refused");
    client.handle_response(now, &reply(200, DOCUMENT));
    match client.poll_output() {
        Some(FetchOutput::Done(Err(error))) => assert_eq!(
            error.to_string(),
            "container endpoint http://127.0.0.1:9911: transport error: connection refused"
        ),
        other => panic!("{other:?}"),
    }
    assert!(client.poll_output().is_none());
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn debug_output_hides_the_token_and_the_path() {
    let ep = endpoint(&[
        (RELATIVE_URI_VAR, "/v2/credentials/secret-id"),
        (AUTHORIZATION_TOKEN_VAR, TOKEN),
    ])
    .expect("valid")
    .expect("configured");
    let client = ContainerClient::new(ep.clone(), DEFAULT_TIMEOUT, Instant::now());
    for shown in [format!("{ep:?} {ep}"), format!("{client:?}")] {
        assert!(
            !shown.contains(TOKEN) && !shown.contains("secret-id"),
            "{shown}"
        );
    }
}
