//! SigV4: the independent vectors in fixtures/sigv4/, byte for byte, and a
//! differential test on random inputs: core's signing glue against AWS's own signer (the
//! `aws-sigv4` crate, which core signs with) called directly as the AWS SDK calls it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kmstool_core::kms::request::CONTENT_TYPE;
use kmstool_core::secret::{Credentials, SecretString};
use kmstool_core::sigv4::{self, AmzDate, SigningInput};
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    name: String,
    region: String,
    host: String,
    time: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    x_amz_target: String,
    body: String,
    expected: Expected,
}

#[derive(Deserialize)]
struct Expected {
    #[serde(rename = "X-Amz-Date")]
    x_amz_date: String,
    #[serde(rename = "X-Amz-Security-Token")]
    x_amz_security_token: Option<String>,
    #[serde(rename = "Authorization")]
    authorization: String,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/sigv4/kms-sigv4-vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("read the SigV4 vectors");
    serde_json::from_str(&text).expect("parse the SigV4 vectors")
}

fn iso_time(text: &str) -> SystemTime {
    // "2026-11-29T12:00:00Z" -> "20261129T120000Z"
    let compact: String = text.chars().filter(|c| *c != '-' && *c != ':').collect();
    AmzDate::parse(&compact).expect("vector time")
}

#[test]
fn reproduces_every_vector() {
    let vectors = vectors();
    assert!(vectors.len() >= 4);
    for v in vectors {
        let credentials = Credentials::new(
            v.access_key_id.clone(),
            v.secret_access_key.as_str(),
            v.session_token.clone().map(SecretString::new),
        );
        let signature = sigv4::sign(&SigningInput {
            method: "POST",
            path: "/",
            query: "",
            headers: &[
                ("Host", &v.host),
                ("Content-Type", CONTENT_TYPE),
                ("X-Amz-Target", &v.x_amz_target),
            ],
            body: v.body.as_bytes(),
            credentials: &credentials,
            region: &v.region,
            service: "kms",
            time: iso_time(&v.time),
        })
        .expect("signable");
        assert_eq!(signature.x_amz_date, v.expected.x_amz_date, "{}", v.name);
        assert_eq!(
            signature.authorization, v.expected.authorization,
            "{}",
            v.name
        );
        assert_eq!(
            v.session_token, v.expected.x_amz_security_token,
            "{}: the token header is the token",
            v.name
        );
    }
}

/// The vectors through the request builder the enclave sends with: its signed headers are the
/// vector's, byte for byte, on the wire.
#[test]
fn the_enclave_request_carries_every_vector() {
    for v in vectors() {
        let credentials = Credentials::new(
            v.access_key_id.clone(),
            v.secret_access_key.as_str(),
            v.session_token.clone().map(SecretString::new),
        );
        let target = kmstool_core::kms::request::RequestTarget {
            host: &v.host,
            region: &v.region,
            credentials: &credentials,
        };
        let bytes = kmstool_core::kms::request::http_request(
            &target,
            &v.x_amz_target,
            v.body.as_bytes(),
            iso_time(&v.time),
        )
        .expect("sendable");
        let text = String::from_utf8(bytes.to_vec()).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        assert_eq!(body, v.body, "{}", v.name);
        let mut expected = vec![
            format!("Host: {}", v.host),
            format!("Content-Type: {CONTENT_TYPE}"),
            format!("X-Amz-Target: {}", v.x_amz_target),
            format!("X-Amz-Date: {}", v.expected.x_amz_date),
        ];
        if let Some(token) = &v.expected.x_amz_security_token {
            expected.push(format!("X-Amz-Security-Token: {token}"));
        }
        expected.push(format!("Authorization: {}", v.expected.authorization));
        let lines: Vec<&str> = head.split("\r\n").skip(1).collect();
        assert_eq!(lines[..expected.len()], expected[..], "{}", v.name);
    }
}

/// What AWS's own signer produces for the same request.
fn reference_signature(
    host: &str,
    target: &str,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> (String, String) {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    let identity = aws_credential_types::Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.expose().to_owned(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        None,
        "test",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kms")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("params")
        .into();
    let headers = [
        ("host", host),
        ("content-type", CONTENT_TYPE),
        ("x-amz-target", target),
    ];
    let request = SignableRequest::new(
        "POST",
        format!("https://{host}/"),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .expect("signable");
    let (instructions, _) = sign(request, &params).expect("sign").into_parts();
    let mut date = String::new();
    let mut authorization = String::new();
    for (name, value) in instructions.headers() {
        match name {
            "x-amz-date" => date = value.to_owned(),
            "authorization" => authorization = value.to_owned(),
            _ => {}
        }
    }
    (date, authorization)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn agrees_with_aws_sigv4(
        secs in 0u64..4_102_444_800,
        key_id in "[A-Z0-9]{16,20}",
        secret in "[A-Za-z0-9/+]{40}",
        token in proptest::option::of("[A-Za-z0-9/+=]{20,200}"),
        region in prop_oneof![Just("us-east-1"), Just("eu-west-1"), Just("cn-north-1"), Just("ap-southeast-2")],
        body in proptest::collection::vec(any::<u8>(), 0..300),
        target in prop_oneof![Just("TrentService.Decrypt"), Just("TrentService.GenerateDataKey")],
    ) {
        let time = UNIX_EPOCH + Duration::from_secs(secs);
        let credentials = Credentials::new(key_id, secret.as_str(), token.map(SecretString::new));
        let host = kmstool_core::kms::endpoint::kms_host(region);
        let ours = sigv4::sign(&SigningInput {
            method: "POST",
            path: "/",
            query: "",
            headers: &[("Host", &host), ("Content-Type", CONTENT_TYPE), ("X-Amz-Target", target)],
            body: &body,
            credentials: &credentials,
            region,
            service: "kms",
            time,
        })
        .expect("signable");
        let (date, authorization) = reference_signature(&host, target, &body, &credentials, region, time);
        prop_assert_eq!(ours.x_amz_date, date);
        prop_assert_eq!(ours.authorization, authorization);
    }
}
