//! The KMS emulator checking real attestation documents the way KMS does: against the
//! simulated NSM's Nitro-shaped PKI, at the emulator's current time, with the PCR0 condition.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_sim::kms::{KmsConfig, KmsHandle};
use kmstool_sim::nsm::{SimConfig, SimNsm, system_clock};
use serde_json::{Value, json};

use crate::emulator::*;

const PCR0: [u8; 48] = [0xa0; 48];

fn nsm(state_dir: Option<&std::path::Path>, pcr0: &[u8]) -> SimNsm {
    let mut config = SimConfig::default();
    config.pcrs.insert(0, pcr0.to_vec());
    match state_dir {
        Some(dir) => SimNsm::load_or_create(dir, config, system_clock()).expect("nsm"),
        None => SimNsm::new(config, system_clock()).expect("nsm"),
    }
}

/// An emulator trusting `nsm`'s root, as KMS trusts the AWS Nitro root.
async fn kms_trusting(nsm: &SimNsm, require_pcr0: Option<&[u8]>) -> KmsHandle {
    let mut config: KmsConfig = config().with_nsm_root(nsm.root_der().to_vec());
    config.require_pcr0 = require_pcr0.map(<[u8]>::to_vec);
    start(config).await
}

fn attested(nsm: &SimNsm, enclave: &Enclave) -> Value {
    let document = nsm
        .attestation_document(Some(enclave.spki.clone()), None, None)
        .expect("document");
    Enclave::recipient_for(&document)
}

fn decrypt_body(blob: &[u8], recipient: Value) -> Value {
    json!({"CiphertextBlob": STANDARD.encode(blob), "Recipient": recipient})
}

#[tokio::test]
async fn accepts_documents_of_the_trusted_root() {
    let nsm = nsm(None, &PCR0);
    let kms = kms_trusting(&nsm, Some(&PCR0)).await;
    let mut c = connect(&kms).await;
    let enclave = Enclave::new();
    let (arn, blob) = key_and_blob(&kms, b"attested secret", &[]).await;

    let reply = c
        .call("Decrypt", &decrypt_body(&blob, attested(&nsm, &enclave)))
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(reply.json().get("Plaintext").is_none());
    assert_eq!(enclave.open(&reply), b"attested secret");

    let gdk = c
        .call(
            "GenerateDataKey",
            &json!({"KeyId": arn, "NumberOfBytes": 24, "Recipient": attested(&nsm, &enclave)}),
        )
        .await;
    assert_eq!(enclave.open(&gdk).len(), 24);
    kms.shutdown().await;
}

#[tokio::test]
async fn rejects_documents_of_other_roots() {
    let trusted = nsm(None, &PCR0);
    let kms = kms_trusting(&trusted, None).await;
    let mut c = connect(&kms).await;
    let enclave = Enclave::new();
    let (_, blob) = key_and_blob(&kms, b"s", &[]).await;

    let impostor = nsm(None, &PCR0);
    let reply = c
        .call(
            "Decrypt",
            &decrypt_body(&blob, attested(&impostor, &enclave)),
        )
        .await;
    reply.assert_error(400, "ValidationException");
    assert!(reply.json().get("CiphertextForRecipient").is_none());

    // A genuine AWS document is from another root too (and its leaf expired long ago).
    let real = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/attestation/real-nitro-attestation-1.cose"
    ))
    .expect("fixture");
    let reply = c
        .call(
            "Decrypt",
            &decrypt_body(&blob, Enclave::recipient_for(&real)),
        )
        .await;
    reply.assert_error(400, "ValidationException");

    let mut tampered = trusted
        .attestation_document(Some(enclave.spki.clone()), None, None)
        .expect("document");
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let reply = c
        .call(
            "Decrypt",
            &decrypt_body(&blob, Enclave::recipient_for(&tampered)),
        )
        .await;
    reply.assert_error(400, "ValidationException");

    let keyless = trusted
        .attestation_document(None, None, None)
        .expect("document");
    let reply = c
        .call(
            "Decrypt",
            &decrypt_body(&blob, Enclave::recipient_for(&keyless)),
        )
        .await;
    reply.assert_error(400, "ValidationException");
    kms.shutdown().await;
}

#[tokio::test]
async fn verifies_documents_at_the_current_time() {
    let nsm = nsm(None, &PCR0);
    let kms = kms_trusting(&nsm, None).await;
    let mut c = connect(&kms).await;
    let enclave = Enclave::new();
    let (_, blob) = key_and_blob(&kms, b"s", &[]).await;
    let recipient = attested(&nsm, &enclave);

    // A day later the document's leaf certificate (hours of validity) has expired. Requests
    // are signed at the emulator's time so only the document is stale.
    kms.clock().set_offset_secs(24 * 3600);
    let later = SystemTime::now() + Duration::from_secs(24 * 3600);
    let reply = c
        .call_as(
            "Decrypt",
            &decrypt_body(&blob, recipient.clone()),
            &long_term(),
            later,
        )
        .await;
    reply.assert_error(400, "ValidationException");
    kms.clock().set_offset_secs(0);
    let reply = c.call("Decrypt", &decrypt_body(&blob, recipient)).await;
    assert_eq!(reply.status, 200);
    kms.shutdown().await;
}

#[tokio::test]
async fn requires_the_configured_pcr0() {
    let state = tempfile::tempdir().expect("tempdir");
    let expected = nsm(Some(state.path()), &PCR0);
    let other_image = nsm(Some(state.path()), &[0xb1; 48]);
    assert_eq!(
        expected.root_der(),
        other_image.root_der(),
        "one PKI, two images"
    );
    let kms = kms_trusting(&expected, Some(&PCR0)).await;
    let mut c = connect(&kms).await;
    let enclave = Enclave::new();
    let (_, blob) = key_and_blob(&kms, b"s", &[]).await;

    let ok = c
        .call(
            "Decrypt",
            &decrypt_body(&blob, attested(&expected, &enclave)),
        )
        .await;
    assert_eq!(enclave.open(&ok), b"s");
    let denied = c
        .call(
            "Decrypt",
            &decrypt_body(&blob, attested(&other_image, &enclave)),
        )
        .await;
    denied.assert_error(400, "AccessDeniedException");
    assert!(
        denied
            .message()
            .contains("is not authorized to perform: kms:Decrypt")
    );
    let random = c
        .call(
            "GenerateRandom",
            &json!({"NumberOfBytes": 8, "Recipient": attested(&other_image, &enclave)}),
        )
        .await;
    random.assert_error(400, "AccessDeniedException");
    kms.shutdown().await;
}
