//! The enclave server over TCP against the KMS emulator: SetClient and the three
//! KMS operations with their optional fields, the region rules, RequestId echo, and
//! pipelined commands.

use kmstool_core::secret::{Credentials, SecretString};
use kmstool_sim::kms::SimCredentials;
use kmstool_sim::local::{Local, LocalOptions};
use kmstool_tests::connection::Conn;
use kmstool_tests::framing::frame;
use kmstool_tests::protocol::{assert_error, assert_ok, b64, context, decrypt, unb64};
use serde_json::{Value, json};

async fn local() -> Local {
    Local::start(LocalOptions::default())
        .await
        .expect("local setup")
}

/// A connection with the setup's own credentials set.
async fn client(local: &Local) -> Conn {
    let mut conn = Conn::connect(&local.enclave).await;
    conn.set_client(&local.credentials, None).await;
    conn
}

#[tokio::test]
async fn decrypt_with_encryption_context_key_id_and_grant_tokens() {
    let local = local().await;
    let key = local.kms.create_key("protocol test");
    let other_key = local.kms.create_key("another key");
    let ctx = context(&[("purpose", "test"), ("tenant", "a=b")]);
    let blob = local
        .kms
        .encrypt(&key.key_id, b"attack at dawn", &ctx)
        .expect("Encrypt");
    let mut conn = client(&local).await;

    // Context only: the upstream form.
    let reply = conn.call(&decrypt(&blob, &ctx)).await;
    assert_eq!(assert_ok(&reply), b"attack at dawn");
    assert_eq!(reply["KeyId"], key.arn.as_str());
    assert_eq!(reply["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT");

    // KeyId, EncryptionAlgorithm and GrantTokens go to KMS as given.
    let mut command = decrypt(&blob, &ctx);
    command["KeyId"] = key.arn.as_str().into();
    command["EncryptionAlgorithm"] = "SYMMETRIC_DEFAULT".into();
    command["GrantTokens"] = json!(["grant-one", "grant-two"]);
    assert_eq!(assert_ok(&conn.call(&command).await), b"attack at dawn");
    let stats = local.kms.stats();
    let sent = stats.recent.back().expect("a KMS request");
    assert_eq!(sent.target.as_deref(), Some("TrentService.Decrypt"));
    assert_eq!(sent.key_id.as_deref(), Some(key.arn.as_str()));
    assert_eq!(sent.grant_tokens, ["grant-one", "grant-two"]);
    assert_eq!(sent.encryption_context_keys, ["purpose", "tenant"]);
    assert!(sent.attestation_document_chars.is_some_and(|n| n > 1000));
    assert!(sent.ciphertext_for_recipient_chars.is_some());
    assert_eq!(
        sent.access_key_id.as_deref(),
        Some(local.credentials.access_key_id.as_str())
    );

    // A KeyId naming another key is KMS's IncorrectKeyException.
    command["KeyId"] = other_key.key_id.as_str().into();
    let reply = conn.call(&command).await;
    assert_error(
        &reply,
        "Kms",
        "Could not decrypt ciphertext: IncorrectKeyException: ",
    );
    assert_eq!(reply["KmsErrorType"], "IncorrectKeyException");
    assert_eq!(reply["KmsStatus"], 400);
}

#[tokio::test]
async fn generate_data_key_and_random() {
    let local = local().await;
    let key = local.kms.create_key("data keys");
    local
        .kms
        .create_alias("alias/data", &key.key_id)
        .expect("alias");
    let mut conn = client(&local).await;
    let ctx = context(&[("app", "keys")]);

    let generate = |spec: Value| {
        let mut command = json!({
            "Operation": "GenerateDataKey",
            "KeyId": "alias/data",
            "EncryptionContext": {"app": "keys"},
            "GrantTokens": ["g"],
        });
        command
            .as_object_mut()
            .expect("object")
            .extend(spec.as_object().expect("spec object").clone());
        command
    };
    for (spec, length) in [
        (json!({}), 32),
        (json!({"KeySpec": "AES_128"}), 16),
        (json!({"KeySpec": "AES_256"}), 32),
        (json!({"NumberOfBytes": 7}), 7),
    ] {
        let reply = conn.call(&generate(spec.clone())).await;
        let data_key = assert_ok(&reply);
        assert_eq!(data_key.len(), length, "{spec}");
        assert_eq!(reply["KeyId"], key.arn.as_str());
        // The encrypted copy decrypts, through the enclave, to the same key, under the
        // same context only.
        let blob = unb64(reply["CiphertextBlob"].as_str().expect("CiphertextBlob"));
        assert_eq!(assert_ok(&conn.call(&decrypt(&blob, &ctx)).await), data_key);
        let wrong = conn.call(&decrypt(&blob, &context(&[]))).await;
        assert_eq!(
            wrong["KmsErrorType"], "InvalidCiphertextException",
            "{wrong}"
        );
    }
    assert_eq!(
        local
            .kms
            .stats()
            .recent
            .back()
            .map(|r| r.grant_tokens.len()),
        Some(0)
    );

    let mut seen = Vec::new();
    for n in [1, 32, 1024] {
        let reply = conn
            .call(&json!({"Operation": "GenerateRandom", "NumberOfBytes": n}))
            .await;
        let random = assert_ok(&reply);
        assert_eq!(random.len(), n);
        seen.push(random);
    }
    let again = assert_ok(
        &conn
            .call(&json!({"Operation": "GenerateRandom", "NumberOfBytes": 32}))
            .await,
    );
    assert_ne!(again, seen[1], "two random draws were equal");
    for n in [0, 1025] {
        let reply = conn
            .call(&json!({"Operation": "GenerateRandom", "NumberOfBytes": n}))
            .await;
        assert_error(&reply, "BadRequest", "JSON is wrong type: NumberOfBytes");
    }
    // A GenerateDataKey without KeyId does not reach KMS.
    let before = local.kms.stats().requests;
    let reply = conn
        .call(&json!({"Operation": "GenerateDataKey", "KeySpec": "AES_256"}))
        .await;
    assert_error(&reply, "BadRequest", "JSON structure incomplete");
    assert_eq!(local.kms.stats().requests, before);
}

#[tokio::test]
async fn commands_need_a_client_and_a_refused_set_client_keeps_the_old_one() {
    let local = local().await;
    let key = local.kms.create_key("k");
    let blob = local
        .kms
        .encrypt(&key.key_id, b"x", &context(&[]))
        .expect("Encrypt");
    let mut conn = Conn::connect(&local.enclave).await;
    let reply = conn.call(&decrypt(&blob, &context(&[]))).await;
    assert_eq!(
        reply,
        json!({"Status": "Error", "Message": "Client not initialized", "ErrorKind": "NoClient"})
    );
    let reply = conn
        .call(&json!({"Operation": "SetClient", "AwsAccessKeyId": "AKID"}))
        .await;
    assert_error(&reply, "BadRequest", "Could not read credentials");
    let reply = conn.call(&decrypt(&blob, &context(&[]))).await;
    assert_error(&reply, "NoClient", "Client not initialized");

    conn.set_client(&local.credentials, None).await;
    assert_eq!(
        assert_ok(&conn.call(&decrypt(&blob, &context(&[]))).await),
        b"x"
    );
    // A refused SetClient leaves the working client in place.
    let reply = conn
        .call(&json!({"Operation": "SetClient", "AwsAccessKeyId": "AKID", "AwsSecretAccessKey": 5}))
        .await;
    assert_error(&reply, "BadRequest", "Could not read credentials");
    assert_eq!(
        assert_ok(&conn.call(&decrypt(&blob, &context(&[]))).await),
        b"x"
    );
}

#[tokio::test]
async fn session_tokens_are_optional_and_checked() {
    let local = local().await;
    let long_term = Credentials::new("AKIDLONGTERM", SecretString::new("s3cr3t".into()), None);
    local
        .kms
        .add_credentials(SimCredentials::new(long_term.clone(), "111122223333"));
    let key = local.kms.create_key("k");
    let blob = local
        .kms
        .encrypt(&key.key_id, b"tok", &context(&[]))
        .expect("Encrypt");

    let mut conn = Conn::connect(&local.enclave).await;
    conn.set_client(&long_term, None).await;
    assert_eq!(
        assert_ok(&conn.call(&decrypt(&blob, &context(&[]))).await),
        b"tok"
    );

    // The setup's temporary credentials with a wrong token: KMS refuses them.
    let mut wrong = local.credentials.clone();
    wrong.session_token = Some(SecretString::new("not-the-token".into()));
    conn.set_client(&wrong, None).await;
    let reply = conn.call(&decrypt(&blob, &context(&[]))).await;
    assert_error(
        &reply,
        "Kms",
        "Could not decrypt ciphertext: UnrecognizedClientException: ",
    );
    // Without the token at all, likewise.
    wrong.session_token = None;
    conn.set_client(&wrong, None).await;
    let reply = conn.call(&decrypt(&blob, &context(&[]))).await;
    assert_eq!(reply["ErrorKind"], "Kms", "{reply}");
    assert_eq!(reply["KmsStatus"], 400, "{reply}");
}

/// One Decrypt through a fresh connection with `AwsRegion` = `client_region`.
async fn decrypt_in(local: &Local, client_region: Option<&str>) -> (Value, Value) {
    let key = local.kms.create_key("region");
    let blob = local
        .kms
        .encrypt(&key.key_id, b"region", &context(&[]))
        .expect("Encrypt");
    let mut conn = Conn::connect(&local.enclave).await;
    let set = conn
        .call(&kmstool_tests::protocol::set_client(
            &local.credentials,
            client_region,
        ))
        .await;
    let reply = conn.call(&decrypt(&blob, &context(&[]))).await;
    (set, reply)
}

async fn local_in(enclave_region: Option<&str>, kms_region: &str) -> Local {
    Local::start(LocalOptions {
        region: enclave_region.map(str::to_owned),
        kms_region: kms_region.to_owned(),
        ..LocalOptions::default()
    })
    .await
    .expect("local setup")
}

#[tokio::test]
async fn region_rules() {
    const CONFLICT: &str = "Could not set region correctly, check configuration.";

    // Neither side names a region: us-east-1.
    let local = local_in(None, "us-east-1").await;
    let (set, reply) = decrypt_in(&local, None).await;
    assert_eq!(set["Status"], "Ok");
    assert_eq!(assert_ok(&reply), b"region");

    // Only the client: its region is used (an emulator in eu-west-1 accepts only
    // eu-west-1 signatures, from kms.eu-west-1.amazonaws.com).
    let local = local_in(None, "eu-west-1").await;
    let (set, reply) = decrypt_in(&local, Some("eu-west-1")).await;
    assert_eq!(set["Status"], "Ok");
    assert_eq!(assert_ok(&reply), b"region");
    let (_, reply) = decrypt_in(&local, None).await;
    assert_error(
        &reply,
        "Kms",
        "Could not decrypt ciphertext: InvalidSignatureException: Credential should be scoped to a valid region",
    );

    // Only the enclave: its region is used.
    let local = local_in(Some("eu-west-1"), "eu-west-1").await;
    let (set, reply) = decrypt_in(&local, None).await;
    assert_eq!(set["Status"], "Ok");
    assert_eq!(assert_ok(&reply), b"region");

    // Both: equal is fine, different is upstream's error, and no client is set.
    let (set, reply) = decrypt_in(&local, Some("eu-west-1")).await;
    assert_eq!(set["Status"], "Ok");
    assert_eq!(assert_ok(&reply), b"region");
    let (set, reply) = decrypt_in(&local, Some("us-east-1")).await;
    assert_error(&set, "BadRequest", CONFLICT);
    assert_error(&reply, "NoClient", "Client not initialized");

    // A region that is no region is refused before anything else.
    let (set, _) = decrypt_in(&local, Some("not a region")).await;
    assert_error(&set, "BadRequest", CONFLICT);
}

#[tokio::test]
async fn request_ids_are_echoed_on_every_reply() {
    let local = local().await;
    let key = local.kms.create_key("k");
    let blob = local
        .kms
        .encrypt(&key.key_id, b"id", &context(&[]))
        .expect("Encrypt");
    let mut conn = Conn::connect(&local.enclave).await;

    let mut set = kmstool_tests::protocol::set_client(&local.credentials, None);
    set["RequestId"] = "set-1".into();
    assert_eq!(
        conn.call(&set).await,
        json!({"Status": "Ok", "RequestId": "set-1"})
    );

    let cases = [
        (decrypt(&blob, &context(&[])), "Ok"),
        (decrypt(&blob, &context(&[("wrong", "context")])), "Error"),
        (
            json!({"Operation": "GenerateRandom", "NumberOfBytes": 4}),
            "Ok",
        ),
        (json!({"Operation": "GenerateRandom"}), "Error"),
        (json!({"Operation": "Frobnicate"}), "Error"),
        (json!({"Operation": 7}), "Error"),
        (json!({"NoOperation": true}), "Error"),
    ];
    for (i, (mut command, status)) in cases.into_iter().enumerate() {
        let id = format!("req-{i}-\u{e9}");
        command["RequestId"] = id.as_str().into();
        let reply = conn.call(&command).await;
        assert_eq!(reply["Status"], status, "{command}: {reply}");
        assert_eq!(reply["RequestId"], id.as_str(), "{command}: {reply}");
    }
    // Without a RequestId, none comes back.
    let reply = conn.call(&decrypt(&blob, &context(&[]))).await;
    assert!(reply.get("RequestId").is_none(), "{reply}");
    // A RequestId that is not a string is refused, and not echoed.
    let reply = conn
        .call(&json!({"Operation": "GenerateRandom", "NumberOfBytes": 4, "RequestId": 5}))
        .await;
    assert_error(&reply, "BadRequest", "JSON is wrong type");
    assert!(reply.get("RequestId").is_none(), "{reply}");
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order_once_each() {
    let local = local().await;
    let key = local.kms.create_key("k");
    let ctx = context(&[("n", "1")]);
    let blob = local
        .kms
        .encrypt(&key.key_id, b"first", &ctx)
        .expect("Encrypt");
    let blob2 = local
        .kms
        .encrypt(&key.key_id, b"second", &context(&[]))
        .expect("Encrypt");

    let mut commands = [
        json!({"Operation": "Decrypt", "Ciphertext": b64(&blob)}), // before SetClient
        kmstool_tests::protocol::set_client(&local.credentials, None),
        decrypt(&blob, &ctx),
        json!({"Operation": "GenerateRandom", "NumberOfBytes": 16}),
        decrypt(&blob, &context(&[])), // wrong context
        json!({"Operation": "GenerateDataKey", "KeyId": key.arn, "KeySpec": "AES_128"}),
        json!({"Operation": "Decrypt", "Ciphertext": "not base64!"}),
        decrypt(&blob2, &context(&[])),
    ];
    for (i, command) in commands.iter_mut().enumerate() {
        command["RequestId"] = i.to_string().into();
    }
    let mut bytes: Vec<u8> = commands.iter().flat_map(frame).collect();
    bytes.extend_from_slice(b"{this is not json}\0");

    let mut conn = Conn::connect(&local.enclave).await;
    conn.send_bytes(&bytes).await;
    conn.finish().await;
    let replies = conn.replies_until_close().await;

    assert_eq!(replies.len(), commands.len() + 1, "{replies:#?}");
    for (i, reply) in replies.iter().take(commands.len()).enumerate() {
        assert_eq!(
            reply["RequestId"],
            i.to_string(),
            "reply {i} out of order: {reply}"
        );
    }
    assert_error(&replies[0], "NoClient", "Client not initialized");
    assert_eq!(replies[1]["Status"], "Ok");
    assert_eq!(assert_ok(&replies[2]), b"first");
    assert_eq!(assert_ok(&replies[3]).len(), 16);
    assert_eq!(replies[4]["KmsErrorType"], "InvalidCiphertextException");
    assert_eq!(assert_ok(&replies[5]).len(), 16);
    assert_error(&replies[6], "BadRequest", "Ciphertext not a base64 string");
    assert_eq!(assert_ok(&replies[7]), b"second");
    assert_error(&replies[8], "BadRequest", "Error reading JSON object");
}

#[tokio::test]
async fn frames_split_across_writes_are_reassembled() {
    let local = local().await;
    let mut conn = client(&local).await;
    let mut bytes =
        frame(&json!({"Operation": "GenerateRandom", "NumberOfBytes": 3, "RequestId": "a"}));
    bytes.extend(frame(
        &json!({"Operation": "GenerateRandom", "NumberOfBytes": 5, "RequestId": "b"}),
    ));
    for chunk in bytes.chunks(7) {
        conn.send_bytes(chunk).await;
    }
    let first = conn.reply().await;
    let second = conn.reply().await;
    assert_eq!(
        (first["RequestId"].as_str(), assert_ok(&first).len()),
        (Some("a"), 3)
    );
    assert_eq!(
        (second["RequestId"].as_str(), assert_ok(&second).len()),
        (Some("b"), 5)
    );
}

#[tokio::test]
async fn more_pipelined_commands_than_the_queue_holds_are_all_answered() {
    let local = local().await;
    let mut conn = client(&local).await;
    // The session queues 64 commands, then stops reading until it has answered some.
    let count = 150;
    let bytes: Vec<u8> = (0..count)
        .flat_map(|i| {
            frame(&json!({"Operation": "GenerateRandom", "NumberOfBytes": 1 + i % 7, "RequestId": i.to_string()}))
        })
        .collect();
    conn.send_bytes(&bytes).await;
    conn.finish().await;
    let replies = conn.replies_until_close().await;
    assert_eq!(replies.len(), count);
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply["RequestId"], i.to_string());
        assert_eq!(assert_ok(reply).len(), 1 + i % 7);
    }
}

#[tokio::test]
async fn the_largest_ciphertexts_and_messages_fit() {
    let local = local().await;
    let key = local.kms.create_key("large");
    // KMS's largest plaintext: the CiphertextForRecipient content spans several chunks.
    let plaintext: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let ctx = context(&[("size", "max")]);
    let blob = local
        .kms
        .encrypt(&key.key_id, &plaintext, &ctx)
        .expect("Encrypt");
    let mut conn = client(&local).await;
    assert_eq!(
        assert_ok(&conn.call(&decrypt(&blob, &ctx)).await),
        plaintext
    );

    // A message of exactly the cap (65536 bytes with its terminator) is read; one byte more
    // is too large and ends the connection.
    let command = json!({"Operation": "GenerateRandom", "NumberOfBytes": 4}).to_string();
    let padded = |len: usize| {
        let mut bytes = command.clone().into_bytes();
        bytes.resize(len, b' ');
        bytes.push(0);
        bytes
    };
    conn.send_bytes(&padded(65535)).await;
    assert_eq!(assert_ok(&conn.reply().await).len(), 4);
    conn.send_bytes(&padded(65536)).await;
    assert_eq!(
        conn.reply().await,
        json!({"Status": "Error", "Message": "Message size too large.", "ErrorKind": "BadRequest"})
    );
    assert_eq!(conn.next_reply().await, None);
}

#[tokio::test]
async fn other_partitions_and_endpoint_overrides() {
    // China: kms.cn-north-1.amazonaws.com.cn, reached and signed for cn-north-1.
    let local = local_in(None, "cn-north-1").await;
    let (set, reply) = decrypt_in(&local, Some("cn-north-1")).await;
    assert_eq!(set["Status"], "Ok");
    assert_eq!(assert_ok(&reply), b"region");

    // --endpoint names the host (TLS name and Host header); the region still signs.
    let fips = Local::start(LocalOptions {
        enclave_args: vec![
            "--endpoint".into(),
            "kms-fips.us-east-1.amazonaws.com".into(),
        ],
        ..LocalOptions::default()
    })
    .await
    .expect("local setup");
    let (_, reply) = decrypt_in(&fips, None).await;
    assert_eq!(assert_ok(&reply), b"region");

    // A host the emulator has no certificate for: the handshake fails.
    let elsewhere = Local::start(LocalOptions {
        enclave_args: vec!["--endpoint".into(), "kms.example.com".into()],
        ..LocalOptions::default()
    })
    .await
    .expect("local setup");
    let (_, reply) = decrypt_in(&elsewhere, None).await;
    assert_error(
        &reply,
        "Transport",
        "Could not decrypt ciphertext: TLS with KMS failed (kms.example.com): ",
    );
}

#[tokio::test]
async fn invalid_commands_are_refused_without_calling_kms() {
    let local = local().await;
    let mut conn = client(&local).await;
    let eleven: Vec<String> = (0..11).map(|i| format!("g{i}")).collect();
    let cases = [
        (
            json!({"Operation": "Decrypt"}),
            "Message does not contain a Ciphertext",
        ),
        (
            json!({"Operation": "Decrypt", "Ciphertext": 5}),
            "Ciphertext not a base64 string",
        ),
        (
            json!({"Operation": "Decrypt", "Ciphertext": "QQ"}),
            "Ciphertext not a base64 string",
        ),
        (
            json!({"Operation": "Decrypt", "Ciphertext": ""}),
            "Could not decrypt ciphertext: Ciphertext",
        ),
        (
            json!({"Operation": "Decrypt", "Ciphertext": b64(&[1; 6145])}),
            "Could not decrypt ciphertext: Ciphertext",
        ),
        (
            json!({"Operation": "Decrypt", "Ciphertext": "AAAA", "EncryptionContext": {"k": 1}}),
            "JSON is wrong type: EncryptionContext",
        ),
        (
            json!({"Operation": "Decrypt", "Ciphertext": "AAAA", "EncryptionContext": ["k"]}),
            "JSON is wrong type: EncryptionContext",
        ),
        (
            json!({"Operation": "Decrypt", "Ciphertext": "AAAA", "GrantTokens": eleven}),
            "Could not decrypt ciphertext: GrantTokens",
        ),
        (
            json!({"Operation": "Decrypt", "Ciphertext": "AAAA", "GrantTokens": "g"}),
            "JSON is wrong type: GrantTokens",
        ),
        (
            json!({"Operation": "Decrypt", "Ciphertext": "AAAA", "KeyId": ""}),
            "Could not decrypt ciphertext: KeyId",
        ),
        (
            json!({"Operation": "Decrypt", "Ciphertext": "AAAA", "EncryptionAlgorithm": "ROT13"}),
            "Could not decrypt ciphertext: EncryptionAlgorithm",
        ),
        (
            json!({"Operation": "GenerateDataKey", "KeyId": "k", "KeySpec": "AES_512"}),
            "JSON is wrong type: KeySpec",
        ),
        (
            json!({"Operation": "GenerateDataKey", "KeyId": "k", "KeySpec": "AES_128", "NumberOfBytes": 16}),
            "JSON is wrong type: KeySpec",
        ),
        (
            json!({"Operation": "GenerateDataKey", "KeyId": "k", "NumberOfBytes": "16"}),
            "JSON is wrong type: NumberOfBytes",
        ),
        (
            json!({"Operation": "GenerateRandom", "NumberOfBytes": 1.5}),
            "JSON is wrong type: NumberOfBytes",
        ),
        (
            json!({"Operation": "GenerateRandom", "NumberOfBytes": -1}),
            "JSON is wrong type: NumberOfBytes",
        ),
    ];
    for (command, prefix) in cases {
        let reply = conn.call(&command).await;
        assert_error(&reply, "BadRequest", prefix);
    }
    assert_eq!(local.kms.stats().requests, 0);
}
