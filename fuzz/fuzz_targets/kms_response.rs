//! KMS JSON 1.1 responses: the input is a body, read as the answer to a success status and to
//! several error statuses (with and without an `x-amzn-ErrorType` header, including one made of
//! the body itself). Never panics; success statuses never yield a service error and error
//! statuses always do; error types come out bare (no namespace, no URL, trimmed); retryability
//! follows the status and type; malformed-body messages never quote the body.
#![no_main]

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_core::kms::response::{KmsResponseError, parse};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

const RETRYABLE_TYPES: &[&str] = &[
    "ThrottlingException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestThrottledException",
    "RequestLimitExceeded",
];

const CASES: &[(u16, Option<&str>)] = &[
    (200, None),
    (204, Some("ThrottlingException:")),
    (400, None),
    (
        400,
        Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/"),
    ),
    (400, Some("com.amazonaws.kms#AccessDeniedException")),
    (429, Some("")),
    (500, Some("  ")),
    (503, None),
    (99, None),
    (302, Some("#:")),
];

fn check(status: u16, header: Option<&str>, body: &[u8]) {
    let result = parse(status, header, body);
    let success = (200..300).contains(&status);
    match result {
        Ok(output) => {
            assert!(success, "status {status} parsed as success");
            // What parses is UTF-8 JSON text holding an object, and every field agrees with a
            // generic reading of its members. (Members are read as raw JSON: `Value` would
            // refuse numbers beyond f64, which JSON allows.)
            let text = std::str::from_utf8(body).expect("accepted body is UTF-8");
            let Ok(object) = serde_json::from_str::<BTreeMap<String, &RawValue>>(text) else {
                panic!("parsed a body serde_json does not read as an object");
            };
            let text = |name: &str| {
                let raw = object.get(name)?.get();
                if raw == "null" {
                    return None;
                }
                match serde_json::from_str::<String>(raw) {
                    Ok(s) => Some(s),
                    Err(_) => panic!("{name} accepted as {raw}"),
                }
            };
            let bytes = |name: &str| {
                text(name).map(|s| STANDARD.decode(s).expect("accepted base64 decodes"))
            };
            assert_eq!(output.key_id, text("KeyId"));
            assert_eq!(output.encryption_algorithm, text("EncryptionAlgorithm"));
            assert_eq!(output.ciphertext_blob, bytes("CiphertextBlob"));
            assert_eq!(
                output.ciphertext_for_recipient,
                bytes("CiphertextForRecipient")
            );
            assert_eq!(
                output.key_material_in_plaintext,
                text("Plaintext").is_some_and(|p| !p.is_empty())
            );
        }
        Err(KmsResponseError::Malformed(reason)) => {
            assert!(success, "status {status} read as a malformed success");
            let shown = format!("{reason} {reason:?}");
            // Only fixed texts, field names and positions: never more than a short message.
            assert!(shown.len() < 200, "{shown}");
        }
        Err(KmsResponseError::Service(error)) => {
            assert!(!success, "status {status} read as a service error");
            assert_eq!(error.status, status);
            if let Some(kind) = &error.error_type {
                assert!(!kind.is_empty());
                assert!(!kind.contains(':') && !kind.contains('#'), "{kind:?}");
                assert_eq!(kind.trim(), kind);
            }
            let retryable = status >= 500
                || status == 429
                || error
                    .error_type
                    .as_deref()
                    .is_some_and(|kind| RETRYABLE_TYPES.contains(&kind));
            assert_eq!(error.retryable, retryable, "{error:?}");
            let _ = error.to_string();
        }
    }
}

fuzz_target!(|body: &[u8]| {
    for (status, header) in CASES {
        check(*status, *header, body);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        check(400, Some(text), b"");
        check(400, Some(text), body);
    }
});
