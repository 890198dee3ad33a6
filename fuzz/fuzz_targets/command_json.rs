//! Command parsing on arbitrary bytes: never panics; every rejection carries an upstream text;
//! every accepted command survives the round trip through the parent's encoder
//! (`kmstool_core::instance`) unchanged; and the KMS request body built from it is a JSON
//! object naming the same arguments.
#![no_main]

use kmstool_core::instance::set_client_json;
use kmstool_core::kms::request::{AttestationDocument, KmsRequest};
use kmstool_core::protocol::{CommandArgs, parse_command};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The arguments of `json`, which must parse.
fn reparse(json: &[u8]) -> CommandArgs {
    let command = parse_command(json).expect("our own encoding parses");
    command.args.expect("our own encoding has valid arguments")
}

/// The KMS request body of `call`, as JSON.
fn kms_body(call: &KmsRequest) -> serde_json::Map<String, Value> {
    match serde_json::from_slice(&call.body(&AttestationDocument::new(b"document".to_vec()))) {
        Ok(Value::Object(object)) => object,
        other => panic!("KMS body is not an object: {other:?}"),
    }
}

fn round_trip(args: CommandArgs) {
    // The parent's encoder and the enclave's parser are one definition: what parses, encodes
    // back to the same arguments.
    let again = reparse(&args.to_json(Some("request-1")));
    assert!(
        again == args,
        "{:?} changed in a round trip",
        args.operation()
    );
    if let CommandArgs::SetClient(set) = &args {
        let json = set_client_json(&set.credentials, set.region.as_deref());
        assert!(
            reparse(&json) == args,
            "set_client_json differs from to_json"
        );
    }
    match args {
        CommandArgs::SetClient(_) => {}
        CommandArgs::Decrypt(decrypt) => {
            let body = kms_body(&KmsRequest::Decrypt(decrypt.clone()));
            assert_eq!(
                body.get("KeyId").and_then(Value::as_str),
                decrypt.key_id.as_deref()
            );
            assert!(body.contains_key("CiphertextBlob"));
            assert!(body.contains_key("Recipient"));
        }
        CommandArgs::GenerateDataKey(generate) => {
            let body = kms_body(&KmsRequest::GenerateDataKey(generate.clone()));
            assert_eq!(
                body.get("KeyId").and_then(Value::as_str),
                Some(generate.key_id.as_str())
            );
            assert!(body.contains_key("Recipient"));
        }
        CommandArgs::GenerateRandom(random) => {
            let body = kms_body(&KmsRequest::GenerateRandom(random.clone()));
            assert_eq!(
                body.get("NumberOfBytes").and_then(Value::as_u64),
                Some(u64::from(random.number_of_bytes))
            );
        }
        CommandArgs::GenerateDataKeyPair(generate) => {
            let body = kms_body(&KmsRequest::GenerateDataKeyPair(generate.clone()));
            assert_eq!(
                body.get("KeyPairSpec").and_then(Value::as_str),
                Some(generate.key_pair_spec.as_str())
            );
            assert_eq!(body.contains_key("DryRun"), generate.dry_run);
            assert!(body.contains_key("Recipient"));
        }
        CommandArgs::DeriveSharedSecret(derive) => {
            let body = kms_body(&KmsRequest::DeriveSharedSecret(derive.clone()));
            assert!(body.contains_key("PublicKey"));
            assert!(body.contains_key("Recipient"));
        }
    }
}

fuzz_target!(|bytes: &[u8]| {
    match parse_command(bytes) {
        Ok(command) => match command.args {
            Ok(args) => round_trip(args),
            Err(error) => assert!(error.to_string().starts_with(error.upstream_text())),
        },
        Err(rejected) => {
            assert!(
                rejected
                    .error
                    .to_string()
                    .starts_with(rejected.error.upstream_text())
            );
        }
    }
});
