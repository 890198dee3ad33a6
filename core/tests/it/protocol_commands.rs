//! Command parsing: every upstream error text for every malformed input, the extensions, and
//! a property test that no input makes the parser panic.

use kmstool_core::protocol::{
    CommandArgs, CommandError, DataKeySize, EncryptionAlgorithm, ErrorKind, KeySpec, Operation,
    Rejected, Reply, Status, parse_command,
};
use proptest::prelude::*;

/// Message text a session would send for a frame, whether rejected or with invalid args.
fn error_text(frame: &[u8]) -> Option<String> {
    match parse_command(frame) {
        Err(Rejected { error, .. }) => Some(error.to_string()),
        Ok(command) => command.args.err().map(|e| e.to_string()),
    }
}

#[test]
fn frame_level_errors_have_upstream_texts() {
    // Inputs from fixtures/upstream-wire/enclave-error-frames.txt and beyond.
    let cases: &[(&[u8], &str)] = &[
        (b"not json", "Error reading JSON object"),
        (b"", "Error reading JSON object"),
        (b"{\"Operation\":\"Foo\"", "Error reading JSON object"),
        (
            b"{\"Operation\":\"Foo\"} trailing",
            "Error reading JSON object",
        ),
        (b"\xff\xfe{}", "Error reading JSON object"),
        (b"[1,2,3]", "JSON is wrong type"),
        (b"\"Decrypt\"", "JSON is wrong type"),
        (b"42", "JSON is wrong type"),
        (b"null", "JSON is wrong type"),
        (b"{\"foo\":1}", "JSON structure incomplete"),
        (b"{}", "JSON structure incomplete"),
        (b"{\"Operation\":5}", "Operation is wrong type"),
        (b"{\"Operation\":null}", "Operation is wrong type"),
        (b"{\"Operation\":[\"Decrypt\"]}", "Operation is wrong type"),
        (b"{\"Operation\":\"Foo\"}", "Operation not recognized"),
        (b"{\"Operation\":\"decrypt\"}", "Operation not recognized"),
    ];
    for (frame, text) in cases {
        let got = error_text(frame).unwrap_or_default();
        assert!(
            got == *text || got.starts_with(&format!("{text}: ")),
            "{:?}: got {got:?}, want {text:?}",
            String::from_utf8_lossy(frame)
        );
    }
}

#[test]
fn argument_errors_have_upstream_texts() {
    let cases: &[(&str, &str)] = &[
        (r#"{"Operation":"SetClient"}"#, "Could not read credentials"),
        (
            r#"{"Operation":"SetClient","AwsAccessKeyId":"AKID"}"#,
            "Could not read credentials",
        ),
        (
            r#"{"Operation":"SetClient","AwsAccessKeyId":"AKID","AwsSecretAccessKey":5}"#,
            "Could not read credentials",
        ),
        (
            r#"{"Operation":"SetClient","AwsAccessKeyId":7,"AwsSecretAccessKey":"S"}"#,
            "Could not read credentials",
        ),
        (
            r#"{"Operation":"SetClient","AwsAccessKeyId":"AKID","AwsSecretAccessKey":"S","AwsSessionToken":1}"#,
            "Could not read credentials",
        ),
        (
            r#"{"Operation":"SetClient","AwsAccessKeyId":"AKID","AwsSecretAccessKey":"SECRET","AwsRegion":7}"#,
            "Could not set region correctly, check configuration.",
        ),
        (
            r#"{"Operation":"SetClient","AwsAccessKeyId":"AKID","AwsSecretAccessKey":"SECRET","AwsRegion":"evil.example/x"}"#,
            "Could not set region correctly, check configuration.",
        ),
        (
            r#"{"Operation":"SetClient","AwsAccessKeyId":"","AwsSecretAccessKey":"SECRET"}"#,
            "Could not create new client",
        ),
        (
            r#"{"Operation":"SetClient","AwsAccessKeyId":"AKID","AwsSecretAccessKey":"SE\r\nCRET"}"#,
            "Could not create new client",
        ),
        (
            r#"{"Operation":"Decrypt"}"#,
            "Message does not contain a Ciphertext",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":null}"#,
            "Message does not contain a Ciphertext",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":5}"#,
            "Ciphertext not a base64 string",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"!!!notbase64"}"#,
            "Ciphertext not a base64 string",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"AAA"}"#,
            "Ciphertext not a base64 string",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"AAAA","EncryptionContext":"x"}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"AAAA","EncryptionContext":[]}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"AAAA","EncryptionContext":{"a":1}}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"AAAA","EncryptionContext":{"a":{}}}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"AAAA","KeyId":1}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"AAAA","GrantTokens":"t"}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"AAAA","GrantTokens":[1]}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"AAAA","EncryptionAlgorithm":"ROT13"}"#,
            "Could not decrypt ciphertext: EncryptionAlgorithm must be SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":""}"#,
            "Could not decrypt ciphertext: Ciphertext must decode to 1 to 6144 bytes",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"AAAA","KeyId":""}"#,
            "Could not decrypt ciphertext: KeyId must be 1 to 2048 characters",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"AAAA","GrantTokens":["1","2","3","4","5","6","7","8","9","10","11"]}"#,
            "Could not decrypt ciphertext: GrantTokens must hold at most 10 tokens",
        ),
        (
            r#"{"Operation":"GenerateDataKey"}"#,
            "JSON structure incomplete",
        ),
        (
            r#"{"Operation":"GenerateDataKey","KeyId":"k","KeySpec":"AES_512"}"#,
            "JSON is wrong type: KeySpec must be AES_256 or AES_128",
        ),
        (
            r#"{"Operation":"GenerateDataKey","KeyId":"k","KeySpec":"AES_256","NumberOfBytes":32}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"GenerateRandom"}"#,
            "JSON structure incomplete",
        ),
        (
            r#"{"Operation":"GenerateRandom","NumberOfBytes":0}"#,
            "JSON is wrong type: NumberOfBytes must be an integer from 1 to 1024",
        ),
        (
            r#"{"Operation":"GenerateRandom","NumberOfBytes":1025}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"GenerateRandom","NumberOfBytes":1.5}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"GenerateRandom","NumberOfBytes":"32"}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"Decrypt","Ciphertext":"AAAA","RequestId":5}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"GenerateDataKeyPair","KeyId":"k"}"#,
            "JSON structure incomplete: KeyPairSpec is required",
        ),
        (
            r#"{"Operation":"GenerateDataKeyPair","KeyPairSpec":"RSA_2048"}"#,
            "JSON structure incomplete: KeyId is required",
        ),
        (
            r#"{"Operation":"GenerateDataKeyPair","KeyId":"k","KeyPairSpec":"rsa 2048"}"#,
            "JSON is wrong type: KeyPairSpec must be 1 to 64 capital letters, digits and underscores, e.g. RSA_2048 or ECC_NIST_P256",
        ),
        (
            r#"{"Operation":"GenerateDataKeyPair","KeyId":"k","KeyPairSpec":2048}"#,
            "JSON is wrong type",
        ),
        (
            r#"{"Operation":"DeriveSharedSecret","KeyId":"k"}"#,
            "JSON structure incomplete: PublicKey is required",
        ),
        (
            r#"{"Operation":"DeriveSharedSecret","KeyId":"k","PublicKey":"!!"}"#,
            "JSON is wrong type: PublicKey must be standard padded base64",
        ),
        (
            r#"{"Operation":"DeriveSharedSecret","KeyId":"k","PublicKey":""}"#,
            "JSON is wrong type: PublicKey must decode to 1 to 8192 bytes",
        ),
        (
            r#"{"Operation":"DeriveSharedSecret","KeyId":"k","PublicKey":"AAAA","KeyAgreementAlgorithm":"DH"}"#,
            "JSON is wrong type: KeyAgreementAlgorithm must be ECDH",
        ),
    ];
    for (frame, text) in cases {
        let got = error_text(frame.as_bytes()).unwrap_or_default();
        assert!(
            got == *text || got.starts_with(&format!("{text}: ")),
            "{frame}: got {got:?}, want {text:?}"
        );
    }
}

/// Every text upstream's enclave replies with; each of our error messages starts with one.
const UPSTREAM_TEXTS: &[&str] = &[
    "Message size too large.",
    "Error reading JSON object",
    "JSON is wrong type",
    "JSON structure incomplete",
    "Operation is wrong type",
    "Could not read credentials",
    "Could not set region correctly, check configuration.",
    "Could not create new client",
    "Client not initialized",
    "Message does not contain a Ciphertext",
    "Ciphertext not a base64 string",
    "Could not decrypt ciphertext",
    "Operation not recognized",
];

fn starts_with_upstream_text(message: &str) -> bool {
    UPSTREAM_TEXTS
        .iter()
        .any(|text| message == *text || message.starts_with(&format!("{text}: ")))
}

#[test]
fn request_id_too_long_has_an_upstream_text() {
    let frame = format!(
        r#"{{"Operation":"Decrypt","Ciphertext":"AAAA","RequestId":"{}"}}"#,
        "r".repeat(257)
    );
    assert_eq!(
        error_text(frame.as_bytes()).as_deref(),
        Some("JSON is wrong type: RequestId must be a string of at most 256 characters")
    );
}

#[test]
fn error_details_never_echo_secrets() {
    let frame = br#"{"Operation":"SetClient","AwsAccessKeyId":"AKID","AwsSecretAccessKey":"hunter2\u0001"}"#;
    let text = error_text(frame).unwrap_or_default();
    assert!(text.starts_with("Could not create new client"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let broken = br#"{"Operation":"SetClient","AwsSecretAccessKey":"hunter2" oops}"#;
    let text = error_text(broken).unwrap_or_default();
    assert!(text.starts_with("Error reading JSON object"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn kinds_of_errors() {
    assert_eq!(
        CommandError::ClientNotInitialized.kind(),
        ErrorKind::NoClient
    );
    assert_eq!(CommandError::UnknownOperation.kind(), ErrorKind::BadRequest);
    assert_eq!(
        CommandError::MessageTooLarge.to_string(),
        "Message size too large."
    );
}

#[test]
fn set_client_parses_upstream_messages() {
    // From fixtures/upstream-wire/instance-enclave-frames.log (spaced JSON).
    let frame = br#"{ "Operation": "SetClient", "AwsAccessKeyId": "AKIDEXAMPLE", "AwsSecretAccessKey": "SECRET", "AwsSessionToken": "TOKEN" }"#;
    let command = parse_command(frame).expect("command");
    assert_eq!(command.operation, Operation::SetClient);
    let Ok(CommandArgs::SetClient(set)) = command.args else {
        panic!("not SetClient");
    };
    assert_eq!(set.credentials.access_key_id, "AKIDEXAMPLE");
    assert_eq!(set.credentials.secret_access_key.expose(), "SECRET");
    assert_eq!(
        set.credentials.session_token.as_ref().map(|t| t.expose()),
        Some("TOKEN")
    );
    assert_eq!(set.region, None);
}

#[test]
fn decrypt_parses_upstream_and_extension_fields() {
    let frame = br#"{ "Operation": "Decrypt", "Ciphertext": "aGVsbG8gd29ybGQ=", "EncryptionContext": { "purpose": "test", "k2": "v2" }, "Unknown": [1], "RequestId": "r-1", "KeyId": "alias/app", "EncryptionAlgorithm": "SYMMETRIC_DEFAULT", "GrantTokens": ["g1", "g2"] }"#;
    let command = parse_command(frame).expect("command");
    assert_eq!(command.request_id.as_deref(), Some("r-1"));
    let Ok(CommandArgs::Decrypt(d)) = command.args else {
        panic!("not Decrypt");
    };
    assert_eq!(d.ciphertext, b"hello world");
    assert_eq!(
        d.encryption_context.get("purpose").map(String::as_str),
        Some("test")
    );
    assert_eq!(d.encryption_context.len(), 2);
    assert_eq!(d.key_id.as_deref(), Some("alias/app"));
    assert_eq!(
        d.encryption_algorithm,
        Some(EncryptionAlgorithm::SymmetricDefault)
    );
    assert_eq!(d.grant_tokens, ["g1", "g2"]);
}

#[test]
fn generate_data_key_sizes() {
    let size = |json: &str| match parse_command(json.as_bytes()).map(|c| c.args) {
        Ok(Ok(CommandArgs::GenerateDataKey(g))) => Some(g.size),
        _ => None,
    };
    assert_eq!(
        size(r#"{"Operation":"GenerateDataKey","KeyId":"k"}"#),
        Some(DataKeySize::KeySpec(KeySpec::Aes256))
    );
    assert_eq!(
        size(r#"{"Operation":"GenerateDataKey","KeyId":"k","KeySpec":"AES_128"}"#),
        Some(DataKeySize::KeySpec(KeySpec::Aes128))
    );
    assert_eq!(
        size(r#"{"Operation":"GenerateDataKey","KeyId":"k","NumberOfBytes":64}"#),
        Some(DataKeySize::NumberOfBytes(64))
    );
}

#[test]
fn request_id_is_kept_on_rejection() {
    let rejected = parse_command(br#"{"Operation":"Nope","RequestId":"abc"}"#).unwrap_err();
    assert_eq!(rejected.request_id.as_deref(), Some("abc"));
    assert_eq!(rejected.error, CommandError::UnknownOperation);
}

#[test]
fn replies_serialise_compactly_and_parse_both_spacings() {
    let mut reply = Reply::error(
        ErrorKind::Kms,
        "Could not decrypt ciphertext: AccessDeniedException: no",
    );
    reply.kms_error_type = Some("AccessDeniedException".into());
    reply.kms_status = Some(400);
    reply.request_id = Some("r-9".into());
    let json = reply.to_json();
    assert_eq!(
        std::str::from_utf8(&json).unwrap(),
        r#"{"Status":"Error","Message":"Could not decrypt ciphertext: AccessDeniedException: no","ErrorKind":"Kms","KmsErrorType":"AccessDeniedException","KmsStatus":400,"RequestId":"r-9"}"#
    );
    assert_eq!(Reply::parse(&json).unwrap(), reply);
    let upstream = Reply::parse(br#"{ "Status": "Ok", "Message": "aGVsbG8gd29ybGQ=" }"#).unwrap();
    assert_eq!(upstream.status, Status::Ok);
    assert_eq!(upstream.message.unwrap().expose(), "aGVsbG8gd29ybGQ=");
    assert_eq!(
        Reply::parse(br#"{ "Status": "Error" }"#).unwrap().status,
        Status::Error
    );
    assert!(Reply::parse(b"{}").is_err());
    assert!(Reply::parse(b"nope").is_err());
}

#[test]
fn reply_debug_hides_plaintext_but_shows_errors() {
    let ok = Reply::ok_with("c2VjcmV0LXBsYWludGV4dA==".into());
    assert!(!format!("{ok:?}").contains("c2VjcmV0"));
    let err = Reply::error(ErrorKind::BadRequest, "JSON is wrong type");
    assert!(format!("{err:?}").contains("JSON is wrong type"));
}

proptest! {
    #[test]
    fn parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_command(&bytes);
    }

    #[test]
    fn parser_never_panics_on_json(value in arbitrary_json()) {
        let text = serde_json::to_vec(&value).unwrap();
        let _ = parse_command(&text);
    }

    #[test]
    fn every_error_text_starts_with_an_upstream_text(value in arbitrary_json()) {
        let text = serde_json::to_vec(&value).unwrap();
        if let Some(message) = error_text(&text) {
            prop_assert!(starts_with_upstream_text(&message), "{message}");
        }
    }
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let fields = prop_oneof![
        Just("Operation".to_owned()),
        Just("Ciphertext".to_owned()),
        Just("EncryptionContext".to_owned()),
        Just("AwsAccessKeyId".to_owned()),
        Just("AwsSecretAccessKey".to_owned()),
        Just("AwsSessionToken".to_owned()),
        Just("AwsRegion".to_owned()),
        Just("KeyId".to_owned()),
        Just("KeySpec".to_owned()),
        Just("NumberOfBytes".to_owned()),
        Just("GrantTokens".to_owned()),
        Just("RequestId".to_owned()),
        Just("EncryptionAlgorithm".to_owned()),
        "[A-Za-z]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just("SetClient".to_owned()),
            Just("Decrypt".to_owned()),
            Just("GenerateDataKey".to_owned()),
            Just("GenerateRandom".to_owned()),
            Just("AAAA".to_owned()),
            Just("us-east-1".to_owned()),
            Just("AES_256".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(fields.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
