//! One definition per wire name: every command and reply survives `parse(encode(x))`, the
//! encoder writes the bytes the instance has always sent, and the wire enums read back what
//! they print.

use std::fmt;
use std::str::FromStr;

use proptest::prelude::*;

use super::*;
use crate::secret::{Credentials, SecretString};

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("\\PC{{1,{max}}}")).expect("regex")
}

/// Visible ASCII, as credentials must be.
fn credential(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[!-~]{{1,{max}}}")).expect("regex")
}

fn context() -> impl Strategy<Value = EncryptionContext> {
    proptest::collection::btree_map(
        proptest::string::string_regex("\\PC{0,12}").expect("regex"),
        proptest::string::string_regex("\\PC{0,12}").expect("regex"),
        0..4,
    )
}

fn grant_tokens() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(text(16), 0..=MAX_GRANT_TOKENS)
}

fn one_of<T: Copy + fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(all)
}

fn set_client() -> impl Strategy<Value = CommandArgs> {
    const REGIONS: &[&str] = &["us-east-1", "eu-west-3", "cn-north-1", "us-gov-west-1"];
    (
        credential(128),
        credential(256),
        proptest::option::of(credential(512)),
        proptest::option::of(one_of(REGIONS)),
    )
        .prop_map(|(id, secret, token, region)| {
            CommandArgs::SetClient(SetClient {
                credentials: Credentials::new(id, secret, token.map(SecretString::new)),
                region: region.map(str::to_owned),
            })
        })
}

fn decrypt() -> impl Strategy<Value = CommandArgs> {
    (
        proptest::collection::vec(any::<u8>(), 1..300),
        context(),
        proptest::option::of(text(64)),
        proptest::option::of(one_of(EncryptionAlgorithm::ALL)),
        grant_tokens(),
    )
        .prop_map(|(ciphertext, context, key_id, algorithm, tokens)| {
            CommandArgs::Decrypt(Decrypt {
                ciphertext,
                encryption_context: context,
                key_id,
                encryption_algorithm: algorithm,
                grant_tokens: tokens,
                dry_run: false,
            })
        })
}

fn generate_data_key() -> impl Strategy<Value = CommandArgs> {
    let size = prop_oneof![
        one_of(KeySpec::ALL).prop_map(DataKeySize::KeySpec),
        (1..=MAX_NUMBER_OF_BYTES).prop_map(DataKeySize::NumberOfBytes),
    ];
    (text(64), size, context(), grant_tokens()).prop_map(|(key_id, size, context, tokens)| {
        CommandArgs::GenerateDataKey(GenerateDataKey {
            key_id,
            size,
            encryption_context: context,
            grant_tokens: tokens,
            dry_run: false,
        })
    })
}

fn generate_data_key_pair() -> impl Strategy<Value = CommandArgs> {
    let spec = proptest::string::string_regex("[A-Z0-9_]{1,64}").expect("regex");
    (text(64), spec, context(), grant_tokens()).prop_map(|(key_id, spec, context, tokens)| {
        CommandArgs::GenerateDataKeyPair(GenerateDataKeyPair {
            key_id,
            key_pair_spec: spec,
            encryption_context: context,
            grant_tokens: tokens,
            dry_run: false,
        })
    })
}

fn derive_shared_secret() -> impl Strategy<Value = CommandArgs> {
    (
        text(64),
        proptest::collection::vec(any::<u8>(), 1..200),
        grant_tokens(),
    )
        .prop_map(|(key_id, public_key, tokens)| {
            CommandArgs::DeriveSharedSecret(DeriveSharedSecret {
                key_id,
                public_key,
                key_agreement_algorithm: KeyAgreementAlgorithm::Ecdh,
                grant_tokens: tokens,
                dry_run: false,
            })
        })
}

fn generate_random() -> impl Strategy<Value = CommandArgs> {
    let store =
        proptest::option::of(proptest::string::string_regex("cks-[0-9a-f]{8}").expect("regex"));
    (1..=MAX_NUMBER_OF_BYTES, store).prop_map(|(n, store)| {
        CommandArgs::GenerateRandom(GenerateRandom {
            number_of_bytes: n,
            custom_key_store_id: store,
        })
    })
}

/// `args` with `DryRun` set, where the operation has it.
fn with_dry_run(mut args: CommandArgs, dry_run: bool) -> CommandArgs {
    match &mut args {
        CommandArgs::Decrypt(d) => d.dry_run = dry_run,
        CommandArgs::GenerateDataKey(g) => g.dry_run = dry_run,
        CommandArgs::GenerateDataKeyPair(g) => g.dry_run = dry_run,
        CommandArgs::DeriveSharedSecret(d) => d.dry_run = dry_run,
        CommandArgs::SetClient(_) | CommandArgs::GenerateRandom(_) => {}
    }
    args
}

fn command() -> impl Strategy<Value = CommandArgs> {
    let any_command = prop_oneof![
        set_client(),
        decrypt(),
        generate_data_key(),
        generate_data_key_pair(),
        derive_shared_secret(),
        generate_random(),
    ];
    (any_command, any::<bool>()).prop_map(|(args, dry_run)| with_dry_run(args, dry_run))
}

fn reply() -> impl Strategy<Value = Reply> {
    let strings = || proptest::option::of(text(40));
    (
        any::<bool>(),
        strings(),
        strings(),
        strings(),
        strings(),
        proptest::option::of(one_of(ErrorKind::ALL)),
        strings(),
        proptest::option::of(any::<u16>()),
        strings(),
        (strings(), strings(), strings(), strings(), strings()),
    )
        .prop_map(
            |(
                ok,
                message,
                key_id,
                algorithm,
                blob,
                kind,
                kms_type,
                kms_status,
                request_id,
                pair,
            )| {
                let (public_key, private_blob, spec, agreement, origin) = pair;
                Reply {
                    status: if ok { Status::Ok } else { Status::Error },
                    message: message.map(SecretString::new),
                    key_id,
                    encryption_algorithm: algorithm,
                    ciphertext_blob: blob,
                    public_key,
                    private_key_ciphertext_blob: private_blob,
                    key_pair_spec: spec,
                    key_agreement_algorithm: agreement,
                    key_origin: origin,
                    error_kind: kind,
                    kms_error_type: kms_type,
                    kms_status,
                    request_id,
                }
            },
        )
}

proptest! {
    #[test]
    fn every_command_parses_back_to_itself(
        args in command(),
        request_id in proptest::option::of(text(40)),
    ) {
        let json = args.to_json(request_id.as_deref());
        prop_assert_eq!(json.capacity(), json.len(), "sized once, never grown");
        let command = parse_command(&json).expect("our own encoding parses");
        prop_assert_eq!(command.operation, args.operation());
        prop_assert_eq!(command.request_id, request_id);
        prop_assert!(command.args.as_ref() == Ok(&args), "{:?}", command.args);
    }

    #[test]
    fn every_reply_parses_back_to_itself(reply in reply()) {
        let json = reply.to_json();
        prop_assert_eq!(Reply::parse(&json).expect("our own encoding parses"), reply);
    }
}

#[test]
fn commands_encode_to_the_bytes_the_instance_always_sent() {
    let decrypt = CommandArgs::Decrypt(Decrypt {
        ciphertext: vec![1, 2, 3],
        encryption_context: [("a".to_owned(), "b\"".to_owned())].into(),
        key_id: Some("alias/k".into()),
        encryption_algorithm: Some(EncryptionAlgorithm::SymmetricDefault),
        grant_tokens: vec!["g".into()],
        dry_run: false,
    });
    assert_eq!(
        String::from_utf8_lossy(&decrypt.to_json(None)),
        r#"{"Operation":"Decrypt","Ciphertext":"AQID","KeyId":"alias/k","EncryptionContext":{"a":"b\""},"EncryptionAlgorithm":"SYMMETRIC_DEFAULT","GrantTokens":["g"]}"#
    );
    // A plain Decrypt leaves every optional field out.
    assert_eq!(
        &*CommandArgs::decrypt(vec![0xff]).to_json(None),
        br#"{"Operation":"Decrypt","Ciphertext":"/w=="}"#
    );
    let generate = CommandArgs::GenerateDataKey(GenerateDataKey {
        key_id: "k".into(),
        size: DataKeySize::NumberOfBytes(64),
        encryption_context: EncryptionContext::new(),
        grant_tokens: Vec::new(),
        dry_run: false,
    });
    assert_eq!(
        &*generate.to_json(Some("r1")),
        br#"{"Operation":"GenerateDataKey","KeyId":"k","NumberOfBytes":64,"RequestId":"r1"}"#
    );
    let set = CommandArgs::SetClient(SetClient {
        credentials: Credentials::new("AKID", "SECRET", Some(SecretString::new("TOKEN".into()))),
        region: Some("eu-west-3".into()),
    });
    assert_eq!(
        &*set.to_json(None),
        br#"{"Operation":"SetClient","AwsAccessKeyId":"AKID","AwsSecretAccessKey":"SECRET","AwsSessionToken":"TOKEN","AwsRegion":"eu-west-3"}"#
    );
}

#[test]
fn wire_enums_read_back_what_they_print() {
    for op in Operation::ALL {
        assert_eq!(Operation::from_str(&op.to_string()), Ok(*op));
    }
    for algorithm in EncryptionAlgorithm::ALL {
        assert_eq!(algorithm.to_string().parse(), Ok(*algorithm));
    }
    for spec in KeySpec::ALL {
        assert_eq!(spec.to_string().parse(), Ok(*spec));
    }
    for kind in ErrorKind::ALL {
        assert_eq!(kind.to_string().parse(), Ok(*kind));
    }
    let unknown = "aes_256"
        .parse::<KeySpec>()
        .expect_err("case matters on the wire");
    assert_eq!(unknown.to_string(), "expected AES_256 or AES_128");
    assert_eq!(
        "RSA"
            .parse::<EncryptionAlgorithm>()
            .map_err(|e| e.to_string()),
        Err("expected SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256".to_owned())
    );
}

#[test]
fn the_command_line_also_takes_upstreams_hyphenated_key_specs() {
    assert_eq!(parse_key_spec_arg("AES-256"), Ok(KeySpec::Aes256));
    assert_eq!(parse_key_spec_arg("AES-128"), Ok(KeySpec::Aes128));
    assert_eq!(parse_key_spec_arg("AES_128"), Ok(KeySpec::Aes128));
    assert!(parse_key_spec_arg("AES-512").is_err());
    // The wire does not: only KMS's spelling parses there.
    let json = br#"{"Operation":"GenerateDataKey","KeyId":"k","KeySpec":"AES-256"}"#;
    let command = parse_command(json).expect("a command");
    assert!(command.args.is_err(), "{:?}", command.args);
}
