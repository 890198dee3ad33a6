//! The KMS emulator over real HTTPS on 127.0.0.1: requests signed with core's SigV4, answers
//! checked against KMS's shapes, CiphertextForRecipient checked against real KMS captures.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_core::cms;
use kmstool_core::secret::{Credentials, SecretString};
use kmstool_sim::kms::{Faults, SimCredentials};
use serde_json::{Value, json};

use crate::emulator::*;

#[tokio::test]
async fn key_management_operations() {
    let kms = start(config()).await;
    let mut c = connect(&kms).await;

    let created = c
        .call("CreateKey", &json!({"Description": "app key"}))
        .await;
    assert_eq!(created.status, 200);
    assert_eq!(
        created.header("Content-Type"),
        Some("application/x-amz-json-1.1")
    );
    assert!(created.header("x-amzn-RequestId").is_some());
    let meta = &created.json()["KeyMetadata"];
    let key_id = meta["KeyId"].as_str().expect("KeyId").to_owned();
    let arn = meta["Arn"].as_str().expect("Arn").to_owned();
    assert_eq!(
        arn,
        format!("arn:aws:kms:us-east-1:111122223333:key/{key_id}")
    );
    assert_eq!(meta["KeyState"], "Enabled");
    assert_eq!(meta["KeySpec"], "SYMMETRIC_DEFAULT");
    assert_eq!(meta["Description"], "app key");

    let alias = c
        .call(
            "CreateAlias",
            &json!({"AliasName": "alias/app", "TargetKeyId": key_id}),
        )
        .await;
    assert_eq!((alias.status, alias.body.len()), (200, 0));
    let described = c.call("DescribeKey", &json!({"KeyId": "alias/app"})).await;
    assert_eq!(described.json()["KeyMetadata"]["Arn"], arn);

    let listed = c.call("ListKeys", &json!({})).await;
    assert_eq!(
        listed.json()["Keys"],
        json!([{"KeyArn": arn, "KeyId": key_id}])
    );
    assert_eq!(listed.json()["Truncated"], false);

    let missing = c.call("DescribeKey", &json!({"KeyId": "alias/none"})).await;
    missing.assert_error(400, "NotFoundException");
    let no_id = c.call("DescribeKey", &json!({})).await;
    no_id.assert_error(400, "ValidationException");

    let stats = kms.stats();
    assert_eq!(
        stats.connections, 1,
        "one keep-alive connection carried every call"
    );
    assert_eq!(stats.requests, 6);
    assert_eq!(stats.by_operation.get("DescribeKey"), Some(&3));
    kms.shutdown().await;
}

#[tokio::test]
async fn encrypt_decrypt_binds_the_encryption_context() {
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    let key = kms.create_key("k");
    let ctx = json!({"purpose": "test"});
    let encrypted = c
        .call(
            "Encrypt",
            &json!({"KeyId": key.key_id, "Plaintext": STANDARD.encode(b"hello"), "EncryptionContext": ctx}),
        )
        .await;
    assert_eq!(encrypted.status, 200);
    assert_eq!(encrypted.json()["KeyId"], key.arn.as_str());
    let blob = encrypted.json()["CiphertextBlob"].clone();

    let decrypted = c
        .call(
            "Decrypt",
            &json!({"CiphertextBlob": blob, "EncryptionContext": ctx}),
        )
        .await;
    assert_eq!(decrypted.status, 200);
    assert_eq!(decrypted.blob("Plaintext"), b"hello");
    assert_eq!(decrypted.json()["KeyId"], key.arn.as_str());
    assert_eq!(decrypted.json()["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT");

    for wrong in [json!({}), json!({"purpose": "other"})] {
        let reply = c
            .call(
                "Decrypt",
                &json!({"CiphertextBlob": blob, "EncryptionContext": wrong}),
            )
            .await;
        reply.assert_error(400, "InvalidCiphertextException");
    }
    let other = kms.create_key("other");
    let reply = c
        .call(
            "Decrypt",
            &json!({"CiphertextBlob": blob, "EncryptionContext": ctx, "KeyId": other.key_id}),
        )
        .await;
    reply.assert_error(400, "IncorrectKeyException");
    let garbage = c
        .call(
            "Decrypt",
            &json!({"CiphertextBlob": STANDARD.encode([7u8; 64])}),
        )
        .await;
    garbage.assert_error(400, "InvalidCiphertextException");
    kms.shutdown().await;
}

#[tokio::test]
async fn generate_data_key_and_random_without_recipient() {
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    let key = kms.create_key("k");
    for (spec, len) in [
        (json!({"KeySpec": "AES_256"}), 32),
        (json!({"NumberOfBytes": 7}), 7),
    ] {
        let mut body = spec.clone();
        body["KeyId"] = json!(key.key_id);
        body["EncryptionContext"] = json!({"a": "b"});
        let reply = c.call("GenerateDataKey", &body).await;
        assert_eq!(reply.status, 200, "{spec}");
        let plaintext = reply.blob("Plaintext");
        assert_eq!(plaintext.len(), len);
        let blob = reply.json()["CiphertextBlob"].clone();
        let back = c
            .call(
                "Decrypt",
                &json!({"CiphertextBlob": blob, "EncryptionContext": {"a": "b"}}),
            )
            .await;
        assert_eq!(
            back.blob("Plaintext"),
            plaintext,
            "the data key round-trips"
        );
    }
    let both = json!({"KeyId": key.key_id, "KeySpec": "AES_128", "NumberOfBytes": 16});
    c.call("GenerateDataKey", &both)
        .await
        .assert_error(400, "ValidationException");

    let random = c
        .call("GenerateRandom", &json!({"NumberOfBytes": 1024}))
        .await;
    assert_eq!(random.blob("Plaintext").len(), 1024);
    for n in [0, 1025] {
        let reply = c.call("GenerateRandom", &json!({"NumberOfBytes": n})).await;
        reply.assert_error(400, "ValidationException");
        assert!(
            reply.message().contains("numberOfBytes"),
            "{}",
            reply.message()
        );
    }
    kms.shutdown().await;
}

#[tokio::test]
async fn recipient_gets_ciphertext_for_recipient_only() {
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    let enclave = Enclave::new();
    let pcr0 = [0x11u8; 48];
    let (arn, blob) = key_and_blob(&kms, b"top secret", &[("app", "x")]).await;

    let reply = c
        .call(
            "Decrypt",
            &json!({
                "CiphertextBlob": STANDARD.encode(&blob),
                "EncryptionContext": {"app": "x"},
                "Recipient": enclave.recipient(&pcr0),
            }),
        )
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        reply.json().get("Plaintext").is_none(),
        "no Plaintext with a Recipient"
    );
    assert_eq!(reply.json()["KeyId"], arn.as_str());
    assert_eq!(enclave.open(&reply), b"top secret");

    let gdk = c
        .call(
            "GenerateDataKey",
            &json!({"KeyId": arn, "KeySpec": "AES_256", "Recipient": enclave.recipient(&pcr0)}),
        )
        .await;
    assert!(gdk.json().get("Plaintext").is_none());
    let data_key = enclave.open(&gdk);
    assert_eq!(data_key.len(), 32);
    let again = c
        .call(
            "Decrypt",
            &json!({"CiphertextBlob": gdk.json()["CiphertextBlob"]}),
        )
        .await;
    assert_eq!(
        again.blob("Plaintext"),
        data_key,
        "CiphertextBlob holds the same key"
    );

    let random = c
        .call(
            "GenerateRandom",
            &json!({"NumberOfBytes": 16, "Recipient": enclave.recipient(&pcr0)}),
        )
        .await;
    assert_eq!(enclave.open(&random).len(), 16);
    kms.shutdown().await;
}

#[tokio::test]
async fn ciphertext_for_recipient_is_shaped_like_real_kms() {
    let real = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/kms/real-kms-parse-only-4.ber"
    ))
    .expect("fixture");
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    let enclave = Enclave::new();
    let reply = c
        .call(
            "GenerateRandom",
            &json!({"NumberOfBytes": 1024, "Recipient": enclave.recipient(&[0; 48])}),
        )
        .await;
    let ours = reply.blob("CiphertextForRecipient");

    // Everything up to the first content chunk's header matches the capture byte for byte,
    // except the subjectKeyIdentifier, the encrypted content key and the IV: BER indefinite
    // lengths, versions, OAEP parameters with explicit NULLs, AES-256-CBC, 1000-byte chunks.
    let variable = [33..65, 131..387, 415..431];
    let skeleton = |bytes: &[u8]| -> Vec<u8> {
        (0..437)
            .filter(|i| !variable.iter().any(|r| r.contains(i)))
            .map(|i| bytes[i])
            .collect()
    };
    assert_eq!(skeleton(&ours), skeleton(&real));
    assert_eq!(
        &ours[433..437],
        [0x04, 0x82, 0x03, 0xe8],
        "a 1000-byte chunk"
    );
    assert!(
        ours.ends_with(&[0; 8]) && real.ends_with(&[0; 8]),
        "four end-of-contents"
    );

    let parsed = cms::parse(&ours).expect("parse");
    let ski: [u8; 32] = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &enclave.spki)
        .as_ref()
        .try_into()
        .expect("32 bytes");
    assert_eq!(parsed.subject_key_id, ski, "SKI = SHA-256 of the SPKI");
    assert_eq!(parsed.encrypted_content.len(), 1040);
    kms.shutdown().await;
}

#[tokio::test]
async fn rejects_unattested_documents_and_wrong_pcr0() {
    let pcr0 = [0x42u8; 48];
    let mut config = config();
    config.require_pcr0 = Some(pcr0.to_vec());
    let kms = start(config).await;
    let mut c = connect(&kms).await;
    let enclave = Enclave::new();
    let (arn, blob) = key_and_blob(&kms, b"s", &[]).await;
    let decrypt = |recipient: Value| json!({"CiphertextBlob": STANDARD.encode(&blob), "Recipient": recipient});

    let ok = c.call("Decrypt", &decrypt(enclave.recipient(&pcr0))).await;
    assert_eq!(enclave.open(&ok), b"s");

    let wrong = c
        .call("Decrypt", &decrypt(enclave.recipient(&[0x43; 48])))
        .await;
    wrong.assert_error(400, "AccessDeniedException");
    assert!(
        wrong.json()["Message"].as_str().is_some(),
        "KMS capitalises Message here"
    );
    assert_eq!(
        wrong.message(),
        format!(
            "User: arn:aws:iam::111122223333:user/kmstool-sim is not authorized to perform: \
             kms:Decrypt on resource: {arn} because no resource-based policy allows the \
             kms:Decrypt action"
        )
    );
    let unattested = c
        .call(
            "Decrypt",
            &json!({"CiphertextBlob": STANDARD.encode(&blob)}),
        )
        .await;
    unattested.assert_error(400, "AccessDeniedException");
    let random = c.call("GenerateRandom", &json!({"NumberOfBytes": 8})).await;
    random.assert_error(400, "AccessDeniedException");

    let forged = json!({
        "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
        "AttestationDocument": STANDARD.encode(b"FORGED-DOC{}"),
    });
    c.call("Decrypt", &decrypt(forged))
        .await
        .assert_error(400, "ValidationException");
    let mut bad_algorithm = enclave.recipient(&pcr0);
    bad_algorithm["KeyEncryptionAlgorithm"] = json!("RSAES_OAEP_SHA_1");
    c.call("Decrypt", &decrypt(bad_algorithm))
        .await
        .assert_error(400, "ValidationException");
    kms.shutdown().await;
}

#[tokio::test]
async fn verifies_sigv4() {
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    let body = json!({"NumberOfBytes": 4});
    let now = SystemTime::now();

    let ok = c.call_as("GenerateRandom", &body, &temporary(), now).await;
    assert_eq!(ok.status, 200, "temporary credentials with their token");

    let wrong_secret = Credentials::new("AKIDEXAMPLE", SecretString::new("nope".into()), None);
    let reply = c.call_as("GenerateRandom", &body, &wrong_secret, now).await;
    reply.assert_error(400, "InvalidSignatureException");
    assert!(
        reply
            .message()
            .starts_with("The request signature we calculated does not match")
    );

    let wrong_token = Credentials::new(
        "ASIAEXAMPLE",
        SecretString::new("t3mp".into()),
        Some(SecretString::new("another-token".into())),
    );
    let reply = c.call_as("GenerateRandom", &body, &wrong_token, now).await;
    reply.assert_error(400, "UnrecognizedClientException");
    assert_eq!(
        reply.message(),
        "The security token included in the request is invalid."
    );
    let unknown = Credentials::new("AKIDUNKNOWN", SecretString::new("s3cr3t".into()), None);
    let reply = c.call_as("GenerateRandom", &body, &unknown, now).await;
    reply.assert_error(400, "UnrecognizedClientException");

    let late = now - Duration::from_secs(6 * 60);
    let reply = c.call_as("GenerateRandom", &body, &long_term(), late).await;
    reply.assert_error(400, "InvalidSignatureException");
    assert!(
        reply.message().starts_with("Signature expired: "),
        "{}",
        reply.message()
    );
    assert!(
        reply.message().ends_with(" - 5 min.)"),
        "{}",
        reply.message()
    );
    let early = now + Duration::from_secs(6 * 60);
    let reply = c
        .call_as("GenerateRandom", &body, &long_term(), early)
        .await;
    assert!(reply.message().starts_with("Signature not yet current: "));
    let slightly_off = now - Duration::from_secs(4 * 60);
    let reply = c
        .call_as("GenerateRandom", &body, &long_term(), slightly_off)
        .await;
    assert_eq!(reply.status, 200, "within the 5-minute window");

    // The emulator's clock moves too: a request signed now is stale to a clock 10 min ahead.
    kms.clock().set_offset_secs(600);
    let reply = c.call_as("GenerateRandom", &body, &long_term(), now).await;
    reply.assert_error(400, "InvalidSignatureException");
    kms.clock().set_offset_secs(0);

    let other_region = signed("GenerateRandom", b"{}", &long_term(), "us-west-2", now);
    let reply = c.send(&other_region).await.expect("answer");
    reply.assert_error(400, "InvalidSignatureException");
    assert_eq!(
        reply.message(),
        "Credential should be scoped to a valid region, not 'us-west-2'. "
    );

    let mut tampered = signed(
        "GenerateRandom",
        br#"{"NumberOfBytes":4}"#,
        &long_term(),
        REGION,
        now,
    );
    let at = tampered.len() - 2;
    tampered[at] = b'5';
    c.send(&tampered)
        .await
        .expect("answer")
        .assert_error(400, "InvalidSignatureException");

    let unsigned = format!(
        "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: TrentService.GenerateRandom\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let reply = c.send(unsigned.as_bytes()).await.expect("answer");
    reply.assert_error(400, "MissingAuthenticationTokenException");
    kms.shutdown().await;
}

#[tokio::test]
async fn expired_credentials_are_refused() {
    let mut config = config();
    let mut expired = SimCredentials::new(
        Credentials::new(
            "ASIAEXPIRED",
            SecretString::new("x".into()),
            Some(SecretString::new("tok".into())),
        ),
        "111122223333",
    );
    expired.expiration = Some(SystemTime::now() - Duration::from_secs(1));
    config.credentials = vec![expired.clone()];
    let kms = start(config).await;
    let mut c = connect(&kms).await;
    let reply = c
        .call_as(
            "GenerateRandom",
            &json!({"NumberOfBytes": 1}),
            &expired.credentials,
            SystemTime::now(),
        )
        .await;
    reply.assert_error(400, "ExpiredTokenException");
    kms.shutdown().await;
}

#[tokio::test]
async fn protocol_errors_are_kms_shaped() {
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    let now = SystemTime::now();
    let unknown = c.call_as("Frobnicate", &json!({}), &long_term(), now).await;
    unknown.assert_error(400, "com.amazon.coral.service#UnknownOperationException");

    let mut not_json = signed("GenerateRandom", b"{]", &long_term(), REGION, now);
    c.send(&not_json)
        .await
        .expect("answer")
        .assert_error(400, "SerializationException");
    // The same request with another Content-Type is not a KMS operation.
    let text = String::from_utf8(not_json.clone()).expect("ASCII");
    not_json = text
        .replace("application/x-amz-json-1.1", "application/json")
        .into_bytes();
    c.send(&not_json)
        .await
        .expect("answer")
        .assert_error(400, "com.amazon.coral.service#UnknownOperationException");

    let reply = c
        .send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        .await
        .expect("answer");
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("Connection"), Some("close"));
    assert!(
        c.send(b"POST / HTTP/1.1\r\n\r\n").await.is_err(),
        "closed after a bad request"
    );
    kms.shutdown().await;
}

#[tokio::test]
async fn serves_kms_host_names_only() {
    let kms = start(config()).await;
    for name in [
        "kms.eu-west-1.amazonaws.com",
        "kms.cn-north-1.amazonaws.com.cn",
        "localhost",
    ] {
        let mut c = connect_as(&kms, name).await.expect(name);
        let reply = c.call("ListKeys", &json!({})).await;
        assert_eq!(reply.status, 200, "{name}");
    }
    assert!(
        connect_as(&kms, "s3.us-east-1.amazonaws.com")
            .await
            .is_err()
    );
    kms.shutdown().await;
}

#[tokio::test]
async fn faults_behave_as_configured() {
    let mut config = config();
    config.faults = Faults {
        drop_first: 1,
        throttle_first: 2,
        fail_500_first: 1,
        ..Faults::default()
    };
    let kms = start(config).await;
    let body = json!({"NumberOfBytes": 1});
    let request = signed(
        "GenerateRandom",
        body.to_string().as_bytes(),
        &long_term(),
        REGION,
        SystemTime::now(),
    );

    let mut c = connect(&kms).await;
    assert!(c.send(&request).await.is_err(), "dropped without an answer");
    let mut c = connect(&kms).await;
    for _ in 0..2 {
        let reply = c.send(&request).await.expect("answer");
        reply.assert_error(400, "ThrottlingException");
        assert_eq!(reply.message(), "Rate exceeded");
    }
    c.send(&request)
        .await
        .expect("answer")
        .assert_error(500, "KMSInternalException");
    assert_eq!(c.send(&request).await.expect("answer").status, 200);
    assert_eq!(kms.stats().faults_injected, 4);

    kms.set_faults(Faults {
        throttle_first: 1,
        ..Faults::default()
    });
    c.send(&request)
        .await
        .expect("answer")
        .assert_error(400, "ThrottlingException");
    assert_eq!(c.send(&request).await.expect("answer").status, 200);
    kms.shutdown().await;
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    let request = signed("ListKeys", b"{}", &long_term(), REGION, SystemTime::now());
    let text = String::from_utf8(request).expect("ASCII");
    let closing = text.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    let reply = c.send(closing.as_bytes()).await.expect("answer");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Connection"), Some("close"));
    assert!(
        c.send(text.as_bytes()).await.is_err(),
        "the server closed the connection"
    );
    kms.shutdown().await;
}

#[tokio::test]
async fn accepts_the_credentials_imds_serves() {
    use kmstool_sim::imds::{Imds, ImdsConfig};
    let imds = Imds::start(ImdsConfig::new("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("imds");
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    let body = json!({"NumberOfBytes": 2});
    let served = imds.credentials().clone();
    let refused = c
        .call_as("GenerateRandom", &body, &served, SystemTime::now())
        .await;
    refused.assert_error(400, "UnrecognizedClientException");
    kms.add_credentials(imds.sim_credentials());
    let accepted = c
        .call_as("GenerateRandom", &body, &served, SystemTime::now())
        .await;
    assert_eq!(accepted.status, 200);
    kms.shutdown().await;
    imds.shutdown().await;
}
