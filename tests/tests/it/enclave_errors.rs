//! Failures between the enclave and KMS reach the client as typed error replies:
//! KMS's own errors with `KmsErrorType` and `KmsStatus`, retried throttling and server errors,
//! and transport failures that come back promptly, well before the 10 s call deadline.

use std::time::Duration;

use kmstool_sim::kms::{CertAuthority, Faults};
use kmstool_sim::local::{Local, LocalOptions};
use kmstool_tests::connection::Conn;
use kmstool_tests::ports::ClosedPort;
use kmstool_tests::protocol::{assert_error, assert_ok, context, decrypt};
use serde_json::{Value, json};

/// What the emulator names the setup's (temporary) credentials in access denials.
const PRINCIPAL: &str = "arn:aws:sts::111122223333:assumed-role/kmstool-sim/i-0123456789abcdef0";

async fn start(options: LocalOptions) -> Local {
    Local::start(options).await.expect("local setup")
}

/// Sets the client, then sends Decrypt, GenerateDataKey and GenerateRandom; their replies.
async fn three_calls(local: &Local) -> (Vec<Value>, String) {
    let key = local.kms.create_key("errors");
    let blob = local
        .kms
        .encrypt(&key.key_id, b"secret", &context(&[]))
        .expect("Encrypt");
    let mut conn = Conn::connect(&local.enclave).await;
    conn.set_client(&local.credentials, None).await;
    let replies = vec![
        conn.call(&decrypt(&blob, &context(&[]))).await,
        conn.call(&json!({"Operation": "GenerateDataKey", "KeyId": key.arn}))
            .await,
        conn.call(&json!({"Operation": "GenerateRandom", "NumberOfBytes": 8}))
            .await,
    ];
    for reply in &replies {
        let text = reply.to_string();
        assert!(
            !text.contains(local.credentials.secret_access_key.expose()),
            "a reply carries the secret key: {text}"
        );
    }
    (replies, key.arn)
}

#[tokio::test]
async fn a_key_policy_on_another_pcr0_is_access_denied() {
    let local = start(LocalOptions {
        pcr0: Some(vec![0x5a; 48]),
        require_pcr0: Some(vec![0x11; 48]),
        ..LocalOptions::default()
    })
    .await;
    let (replies, arn) = three_calls(&local).await;
    let expected = [
        format!(
            "Could not decrypt ciphertext: AccessDeniedException: User: {PRINCIPAL} is not \
             authorized to perform: kms:Decrypt on resource: {arn} because no resource-based \
             policy allows the kms:Decrypt action"
        ),
        format!(
            "Could not generate data key: AccessDeniedException: User: {PRINCIPAL} is not \
             authorized to perform: kms:GenerateDataKey on resource: {arn} because no \
             resource-based policy allows the kms:GenerateDataKey action"
        ),
        format!(
            "Could not generate random bytes: AccessDeniedException: User: {PRINCIPAL} is not \
             authorized to perform: kms:GenerateRandom because no identity-based policy allows \
             the kms:GenerateRandom action"
        ),
    ];
    for (reply, message) in replies.iter().zip(expected) {
        assert_eq!(
            reply,
            &json!({
                "Status": "Error",
                "Message": message,
                "ErrorKind": "Kms",
                "KmsErrorType": "AccessDeniedException",
                "KmsStatus": 400,
            })
        );
    }
}

#[tokio::test]
async fn the_right_pcr0_is_allowed_and_debug_mode_is_not() {
    let local = start(LocalOptions {
        pcr0: Some(vec![0x11; 48]),
        require_pcr0: Some(vec![0x11; 48]),
        ..LocalOptions::default()
    })
    .await;
    let (replies, _) = three_calls(&local).await;
    assert_eq!(assert_ok(&replies[0]), b"secret");
    assert_eq!(assert_ok(&replies[1]).len(), 32);
    assert_eq!(assert_ok(&replies[2]).len(), 8);

    // The same image in debug mode attests all-zero PCRs.
    let local = start(LocalOptions {
        pcr0: Some(vec![0x11; 48]),
        debug_mode: true,
        require_pcr0: Some(vec![0x11; 48]),
        ..LocalOptions::default()
    })
    .await;
    let (replies, _) = three_calls(&local).await;
    for reply in &replies {
        assert_eq!(reply["KmsErrorType"], "AccessDeniedException", "{reply}");
    }
}

#[tokio::test]
async fn a_wrong_encryption_context_is_invalid_ciphertext() {
    let local = start(LocalOptions::default()).await;
    let key = local.kms.create_key("ctx");
    let blob = local
        .kms
        .encrypt(&key.key_id, b"bound", &context(&[("k", "v")]))
        .expect("Encrypt");
    let mut conn = Conn::connect(&local.enclave).await;
    conn.set_client(&local.credentials, None).await;
    let invalid = json!({
        "Status": "Error",
        "Message": "Could not decrypt ciphertext: InvalidCiphertextException",
        "ErrorKind": "Kms",
        "KmsErrorType": "InvalidCiphertextException",
        "KmsStatus": 400,
    });
    for wrong in [
        context(&[]),
        context(&[("k", "w")]),
        context(&[("k", "v"), ("extra", "x")]),
    ] {
        assert_eq!(
            conn.call(&decrypt(&blob, &wrong)).await,
            invalid,
            "{wrong:?}"
        );
    }
    let mut tampered = blob.clone();
    if let Some(last) = tampered.last_mut() {
        *last ^= 1;
    }
    assert_eq!(
        conn.call(&decrypt(&tampered, &context(&[("k", "v")])))
            .await,
        invalid
    );
    // The right one still works on the same connection.
    let reply = conn.call(&decrypt(&blob, &context(&[("k", "v")]))).await;
    assert_eq!(assert_ok(&reply), b"bound");
}

#[tokio::test]
async fn throttling_then_success_is_retried() {
    let local = start(LocalOptions {
        faults: Faults {
            throttle_first: 2,
            ..Faults::default()
        },
        ..LocalOptions::default()
    })
    .await;
    let (replies, _) = three_calls(&local).await;
    assert_eq!(assert_ok(&replies[0]), b"secret");
    let stats = local.kms.stats();
    // Decrypt took 3 requests (2 throttled), the other two one each.
    assert_eq!(stats.requests, 5, "{stats:?}");
    assert_eq!(stats.faults_injected, 2);
    let decrypts: Vec<_> = stats
        .recent
        .iter()
        .filter(|r| r.target.as_deref() == Some("TrentService.Decrypt"))
        .map(|r| (r.status, r.error_type.clone()))
        .collect();
    let throttled = (400, Some("ThrottlingException".to_owned()));
    assert_eq!(decrypts, [throttled.clone(), throttled, (200, None)]);
}

#[tokio::test]
async fn dropped_connections_and_internal_errors_are_retried() {
    let local = start(LocalOptions {
        faults: Faults {
            drop_first: 1,
            fail_500_first: 1,
            ..Faults::default()
        },
        ..LocalOptions::default()
    })
    .await;
    let (replies, _) = three_calls(&local).await;
    assert_eq!(assert_ok(&replies[0]), b"secret");
    assert_eq!(local.kms.stats().requests, 5);
}

#[tokio::test]
async fn throttling_past_the_last_attempt_reaches_the_client() {
    let local = start(LocalOptions {
        faults: Faults {
            throttle_first: 3,
            ..Faults::default()
        },
        ..LocalOptions::default()
    })
    .await;
    let (replies, _) = three_calls(&local).await;
    assert_eq!(
        replies[0],
        json!({
            "Status": "Error",
            "Message": "Could not decrypt ciphertext: ThrottlingException: Rate exceeded",
            "ErrorKind": "Kms",
            "KmsErrorType": "ThrottlingException",
            "KmsStatus": 400,
        })
    );
    // Three attempts, then the next commands are served normally.
    assert_eq!(local.kms.stats().requests, 5);
    assert_eq!(replies[2]["Status"], "Ok");

    let local = start(LocalOptions {
        faults: Faults {
            throttle_first: 1,
            ..Faults::default()
        },
        enclave_args: vec!["--max-attempts".into(), "1".into()],
        ..LocalOptions::default()
    })
    .await;
    let (replies, _) = three_calls(&local).await;
    assert_eq!(replies[0]["KmsErrorType"], "ThrottlingException");
    assert_eq!(local.kms.stats().requests, 3);
}

/// Sends one Decrypt through `local` and returns its reply.
async fn decrypt_once(local: &Local) -> Value {
    let mut conn = Conn::connect(&local.enclave).await;
    conn.set_client(&local.credentials, None).await;
    let key = local.kms.create_key("t");
    let blob = local
        .kms
        .encrypt(&key.key_id, b"t", &context(&[]))
        .expect("Encrypt");
    conn.call(&decrypt(&blob, &context(&[]))).await
}

/// A refused connection is reported as what it is, a `Transport` error naming the refusal,
/// and not as the call's `Timeout`: the enclave did not wait for the deadline. (The virtual
/// clock tests in core time the attempts.)
#[tokio::test]
async fn a_refused_proxy_is_a_transport_error() {
    let closed = ClosedPort::new();
    let port = closed.port();
    let local = start(LocalOptions {
        proxy: Some(format!("tcp:127.0.0.1:{port}")),
        ..LocalOptions::default()
    })
    .await;
    let reply = decrypt_once(&local).await;
    assert_error(
        &reply,
        "Transport",
        &format!(
            "Could not decrypt ciphertext: could not connect to KMS (kms.us-east-1.amazonaws.com): proxy tcp:127.0.0.1:{port}: "
        ),
    );
    assert!(reply.get("KmsErrorType").is_none(), "{reply}");
    let message = reply["Message"].as_str().expect("Message");
    assert!(message.contains("refused"), "{message}");
}

#[tokio::test]
async fn an_untrusted_kms_certificate_is_a_transport_error_before_any_request() {
    // Only the Mozilla roots.
    let local = start(LocalOptions {
        trust_emulator_ca: false,
        ..LocalOptions::default()
    })
    .await;
    let reply = decrypt_once(&local).await;
    assert_error(
        &reply,
        "Transport",
        "Could not decrypt ciphertext: TLS with KMS failed (kms.us-east-1.amazonaws.com): ",
    );
    assert_eq!(local.kms.stats().requests, 0, "a request went out");

    // Another CA than the emulator's.
    let other = CertAuthority::generate().expect("CA");
    let dir = kmstool_tests::temp_dir("kmstool-other-ca");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert_pem()).expect("write CA");
    let local = start(LocalOptions {
        trust_emulator_ca: false,
        enclave_args: vec!["--ca-bundle".into(), other_ca.display().to_string()],
        ..LocalOptions::default()
    })
    .await;
    let reply = decrypt_once(&local).await;
    let message = assert_error(
        &reply,
        "Transport",
        "Could not decrypt ciphertext: TLS with KMS failed",
    );
    assert!(message.contains("certificate"), "{message}");
    assert_eq!(local.kms.stats().requests, 0, "a request went out");
}

/// KMS would answer after 4 s: a `Timeout` error, not the answer, shows the enclave gave up at
/// its 500 ms deadline (core's `a_silent_kms_times_out_at_the_call_deadline` times it on the
/// virtual clock).
#[tokio::test]
async fn a_kms_slower_than_the_call_deadline_is_a_timeout() {
    let local = start(LocalOptions {
        faults: Faults {
            latency: Duration::from_secs(4),
            ..Faults::default()
        },
        enclave_args: vec!["--kms-timeout-ms".into(), "500".into()],
        ..LocalOptions::default()
    })
    .await;
    let reply = decrypt_once(&local).await;
    assert_error(
        &reply,
        "Timeout",
        "Could not decrypt ciphertext: KMS did not answer within 500 ms (1 attempt)",
    );
}

#[tokio::test]
async fn a_skewed_clock_is_corrected_and_expired_credentials_are_kms_errors() {
    let local = start(LocalOptions::default()).await;
    // KMS's clock 10 minutes ahead: the enclave's first signature is too old, KMS's refusal
    // says what time it is, and the request signed again at that time succeeds.
    local.kms.clock().set_offset_secs(600);
    let reply = decrypt_once(&local).await;
    assert_eq!(assert_ok(&reply), b"t");
    // The clocks back in step: the enclave's offset is stale, the refusal corrects it again.
    local.kms.clock().set_offset_secs(0);
    let reply = decrypt_once(&local).await;
    assert_eq!(assert_ok(&reply), b"t");
    let refused: Vec<_> = local
        .kms
        .stats()
        .recent
        .iter()
        .filter_map(|r| r.error_type.clone())
        .collect();
    assert_eq!(
        refused,
        ["InvalidSignatureException", "InvalidSignatureException"]
    );

    // Temporary credentials past their expiration.
    let expired = kmstool_sim::imds::random_credentials();
    let mut sim = kmstool_sim::kms::SimCredentials::new(expired.clone(), "111122223333");
    sim.expiration = Some(std::time::SystemTime::now() - Duration::from_secs(60));
    local.kms.add_credentials(sim);
    let mut conn = Conn::connect(&local.enclave).await;
    conn.set_client(&expired, None).await;
    let reply = conn
        .call(&json!({"Operation": "GenerateRandom", "NumberOfBytes": 8}))
        .await;
    assert_eq!(reply["KmsErrorType"], "ExpiredTokenException", "{reply}");
    assert_error(
        &reply,
        "Kms",
        "Could not generate random bytes: ExpiredTokenException: The security token included in the request is expired",
    );
}
