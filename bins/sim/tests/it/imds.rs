//! The IMDS emulator over real HTTP on 127.0.0.1: the IMDSv2 token flow, 401 without a token,
//! TTL bounds, the credentials document, and the IMDSv1-only mode.

use kmstool_sim::imds::{
    CREDENTIALS_PATH, Imds, ImdsConfig, ImdsHandle, ImdsMode, MAX_TOKEN_TTL_SECS, REGION_PATH,
    TOKEN_PATH,
};
use kmstool_sim::kms::clock::parse_iso8601;
use kmstool_sim::kms::parse_credentials_file;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (as SDK IMDS clients do), `Connection: close`.
async fn request(imds: &ImdsHandle, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut tcp = TcpStream::connect(imds.local_addr())
        .await
        .expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read");
    let mut parsed_headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut parsed_headers);
    let head_len = match parsed.parse(&raw).expect("HTTP response") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("truncated response"),
    };
    Reply {
        status: parsed.code.expect("status"),
        headers: parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&raw[head_len..]).into_owned(),
    }
}

async fn token(imds: &ImdsHandle, ttl: &str) -> Reply {
    request(
        imds,
        "PUT",
        TOKEN_PATH,
        &[("X-aws-ec2-metadata-token-ttl-seconds", ttl)],
    )
    .await
}

async fn start(mode: ImdsMode) -> ImdsHandle {
    let mut config = ImdsConfig::new("127.0.0.1:0".parse().expect("addr"));
    config.mode = mode;
    config.role_name = "app-role".to_owned();
    Imds::start(config).await.expect("start")
}

#[tokio::test]
async fn token_flow_serves_role_and_credentials() {
    let imds = start(ImdsMode::V2Only).await;
    let issued = token(&imds, "60").await;
    assert_eq!(issued.status, 200);
    assert_eq!(
        issued.header("X-aws-ec2-metadata-token-ttl-seconds"),
        Some("60")
    );
    let tok = issued.body.clone();
    assert!(!tok.is_empty());

    let auth = [("X-aws-ec2-metadata-token", tok.as_str())];
    let role = request(&imds, "GET", CREDENTIALS_PATH, &auth).await;
    assert_eq!((role.status, role.body.as_str()), (200, "app-role"));

    let path = format!("{CREDENTIALS_PATH}app-role");
    let creds = request(&imds, "GET", &path, &auth).await;
    assert_eq!(creds.status, 200);
    let doc: Value = serde_json::from_str(&creds.body).expect("JSON");
    assert_eq!(doc["Code"], "Success");
    assert_eq!(doc["Type"], "AWS-HMAC");
    let served = imds.credentials();
    assert_eq!(doc["AccessKeyId"], served.access_key_id.as_str());
    assert!(served.access_key_id.starts_with("ASIA"));
    assert_eq!(doc["SecretAccessKey"], served.secret_access_key.expose());
    let token = served.session_token.as_ref().expect("session token");
    assert_eq!(doc["Token"], token.expose());
    for field in ["Expiration", "LastUpdated"] {
        let text = doc[field].as_str().expect(field);
        assert!(parse_iso8601(text).is_some(), "{field}: {text}");
    }

    // The document is a credentials file the KMS emulator accepts, as the same identity.
    let accepted = parse_credentials_file(creds.body.as_bytes(), "111122223333").expect("parse");
    let expected = imds.sim_credentials();
    assert_eq!(accepted[0].credentials, expected.credentials);
    assert_eq!(accepted[0].expiration, expected.expiration);

    let unknown = request(&imds, "GET", &format!("{CREDENTIALS_PATH}other"), &auth).await;
    assert_eq!(unknown.status, 404);
    let stats = imds.stats();
    assert_eq!((stats.tokens_issued, stats.credentials_served), (1, 1));
    imds.shutdown().await;
}

#[tokio::test]
async fn reads_without_a_valid_token_get_401() {
    let imds = start(ImdsMode::V2Only).await;
    let path = format!("{CREDENTIALS_PATH}app-role");
    assert_eq!(request(&imds, "GET", &path, &[]).await.status, 401);
    let bogus = [("X-aws-ec2-metadata-token", "not-a-token")];
    assert_eq!(request(&imds, "GET", &path, &bogus).await.status, 401);

    assert_eq!(imds.stats().unauthorized, 2);
    let tok = token(&imds, "1").await.body;
    let auth = [("X-aws-ec2-metadata-token", tok.as_str())];
    assert_eq!(request(&imds, "GET", &path, &auth).await.status, 200);
    imds.shutdown().await;
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let mut config = ImdsConfig::new("127.0.0.1:0".parse().expect("addr"));
    let clock = config.clock.clone();
    config.role_name = "app-role".to_owned();
    let imds = Imds::start(config).await.expect("start");
    let tok = token(&imds, "60").await.body;
    let auth = [("X-aws-ec2-metadata-token", tok.as_str())];
    assert_eq!(
        request(&imds, "GET", CREDENTIALS_PATH, &auth).await.status,
        200
    );
    clock.set_offset_secs(61);
    assert_eq!(
        request(&imds, "GET", CREDENTIALS_PATH, &auth).await.status,
        401
    );
    imds.shutdown().await;
}

#[tokio::test]
async fn token_ttl_must_be_between_1_and_21600() {
    let imds = start(ImdsMode::V2Only).await;
    let max = MAX_TOKEN_TTL_SECS.to_string();
    for ok in ["1", max.as_str()] {
        assert_eq!(token(&imds, ok).await.status, 200, "{ok}");
    }
    for bad in ["0", "21601", "-5", "ten", ""] {
        assert_eq!(token(&imds, bad).await.status, 400, "{bad:?}");
    }
    assert_eq!(request(&imds, "PUT", TOKEN_PATH, &[]).await.status, 400);
    let forwarded = request(
        &imds,
        "PUT",
        TOKEN_PATH,
        &[
            ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
            ("X-Forwarded-For", "10.0.0.1"),
        ],
    )
    .await;
    assert_eq!(forwarded.status, 403);
    assert_eq!(request(&imds, "POST", TOKEN_PATH, &[]).await.status, 405);
    imds.shutdown().await;
}

#[tokio::test]
async fn v1_only_mode_refuses_tokens_and_serves_without() {
    let imds = start(ImdsMode::V1Only { put_status: 405 }).await;
    assert_eq!(token(&imds, "60").await.status, 405);
    let role = request(&imds, "GET", CREDENTIALS_PATH, &[]).await;
    assert_eq!((role.status, role.body.as_str()), (200, "app-role"));
    imds.shutdown().await;
}

#[tokio::test]
async fn the_region_is_served_with_a_token_and_404_when_unset() {
    let mut config = ImdsConfig::new("127.0.0.1:0".parse().expect("addr"));
    config.region = Some("eu-west-1".to_owned());
    let imds = Imds::start(config).await.expect("start");
    assert_eq!(request(&imds, "GET", REGION_PATH, &[]).await.status, 401);
    let tok = token(&imds, "60").await.body;
    let auth = [("X-aws-ec2-metadata-token", tok.as_str())];
    let region = request(&imds, "GET", REGION_PATH, &auth).await;
    assert_eq!((region.status, region.body.as_str()), (200, "eu-west-1"));
    assert_eq!(imds.stats().regions_served, 1);
    imds.shutdown().await;

    let imds = start(ImdsMode::V2Only).await;
    let tok = token(&imds, "60").await.body;
    let auth = [("X-aws-ec2-metadata-token", tok.as_str())];
    assert_eq!(request(&imds, "GET", REGION_PATH, &auth).await.status, 404);
    imds.shutdown().await;
}
