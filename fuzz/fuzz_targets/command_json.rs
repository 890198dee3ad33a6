//! Command parsing on arbitrary bytes: never panics; every rejection carries an upstream text;
//! every accepted command survives the round trip through the parent's encoder
//! (`kmstool_core::instance`) unchanged; and the KMS request body built from it is a JSON
//! object naming the same arguments.
#![no_main]

use kmstool_core::instance::{InstanceRequest, set_client_json};
use kmstool_core::kms::request::KmsCall;
use kmstool_core::protocol::{CommandArgs, DataKeySize, parse_command};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The arguments of `json`, which must parse.
fn reparse(json: &[u8]) -> CommandArgs {
    let command = parse_command(json).expect("our own encoding parses");
    command.args.expect("our own encoding has valid arguments")
}

/// The KMS request body of `call`, as JSON.
fn kms_body(call: &KmsCall) -> serde_json::Map<String, Value> {
    match serde_json::from_slice(&call.body(b"document")) {
        Ok(Value::Object(object)) => object,
        other => panic!("KMS body is not an object: {other:?}"),
    }
}

fn round_trip(args: CommandArgs) {
    match args {
        CommandArgs::SetClient(set) => {
            let json = set_client_json(&set.credentials, set.region.as_deref());
            let CommandArgs::SetClient(again) = reparse(&json) else {
                panic!("SetClient became another operation");
            };
            assert!(again.credentials == set.credentials, "credentials changed");
            assert_eq!(again.region, set.region);
        }
        CommandArgs::Decrypt(decrypt) => {
            let request = InstanceRequest::Decrypt {
                ciphertext: decrypt.ciphertext.clone(),
                encryption_context: decrypt.encryption_context.clone(),
                key_id: decrypt.key_id.clone(),
                encryption_algorithm: decrypt.encryption_algorithm,
                grant_tokens: decrypt.grant_tokens.clone(),
            };
            let CommandArgs::Decrypt(again) = reparse(&request.to_json()) else {
                panic!("Decrypt became another operation");
            };
            assert_eq!(again, decrypt);
            let body = kms_body(&KmsCall::Decrypt(decrypt.clone()));
            assert_eq!(
                body.get("KeyId").and_then(Value::as_str),
                decrypt.key_id.as_deref()
            );
            assert!(body.contains_key("CiphertextBlob"));
            assert!(body.contains_key("Recipient"));
        }
        CommandArgs::GenerateDataKey(generate) => {
            let (key_spec, number_of_bytes) = match generate.size {
                DataKeySize::KeySpec(spec) => (Some(spec), None),
                DataKeySize::NumberOfBytes(n) => (None, Some(n)),
            };
            let request = InstanceRequest::GenerateDataKey {
                key_id: generate.key_id.clone(),
                key_spec,
                number_of_bytes,
                encryption_context: generate.encryption_context.clone(),
                grant_tokens: generate.grant_tokens.clone(),
            };
            let CommandArgs::GenerateDataKey(again) = reparse(&request.to_json()) else {
                panic!("GenerateDataKey became another operation");
            };
            assert_eq!(again, generate);
            let body = kms_body(&KmsCall::GenerateDataKey(generate.clone()));
            assert_eq!(
                body.get("KeyId").and_then(Value::as_str),
                Some(generate.key_id.as_str())
            );
            assert!(body.contains_key("Recipient"));
        }
        CommandArgs::GenerateRandom(random) => {
            let request = InstanceRequest::GenerateRandom {
                number_of_bytes: random.number_of_bytes,
            };
            let CommandArgs::GenerateRandom(again) = reparse(&request.to_json()) else {
                panic!("GenerateRandom became another operation");
            };
            assert_eq!(again, random);
            let body = kms_body(&KmsCall::GenerateRandom(random));
            assert_eq!(
                body.get("NumberOfBytes").and_then(Value::as_u64),
                Some(u64::from(random.number_of_bytes))
            );
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
