//! GenerateDataKeyPair and DeriveSharedSecret through the enclave server, against the KMS
//! emulator: the private key and the shared secret reach the client only by way of the
//! attested `CiphertextForRecipient`, and they are the right ones, checked with RustCrypto's
//! arithmetic (the emulator makes its keys with AWS-LC).

use kmstool_sim::kms::KeySpec;
use kmstool_sim::local::{Local, LocalOptions};
use kmstool_tests::connection::Conn;
use kmstool_tests::protocol::{assert_error, assert_ok, b64, context, decrypt, unb64};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _};
use serde_json::json;

async fn client(local: &Local) -> Conn {
    let mut conn = Conn::connect(&local.enclave).await;
    conn.set_client(&local.credentials, None).await;
    conn
}

#[tokio::test]
async fn a_data_key_pair_arrives_whole_and_its_encrypted_copy_decrypts_to_it() {
    let local = Local::start(LocalOptions::default()).await.expect("local");
    let key = local.kms.create_key("key pairs");
    let mut conn = client(&local).await;
    let command = json!({
        "Operation": "GenerateDataKeyPair",
        "KeyId": key.key_id,
        "KeyPairSpec": "ECC_NIST_P256",
        "EncryptionContext": {"use": "pair"},
        "RequestId": "pair-1",
    });
    let reply = conn.call(&command).await;
    let private_der = assert_ok(&reply);
    assert_eq!(reply["RequestId"], "pair-1");
    assert_eq!(reply["KeyPairSpec"], "ECC_NIST_P256");
    assert_eq!(reply["KeyId"], key.arn.as_str());
    let public_der = unb64(reply["PublicKey"].as_str().expect("PublicKey"));

    // The private key is the public key's, by independent arithmetic.
    let secret = p256::SecretKey::from_pkcs8_der(&private_der).expect("PKCS #8 P-256 key");
    let derived = secret.public_key().to_public_key_der().expect("SPKI");
    assert_eq!(derived.as_bytes(), &public_der[..]);

    // The attested request carried a Recipient, and KMS answered for it, not in the clear.
    let stats = local.kms.stats();
    let sent = stats.recent.back().expect("a KMS request");
    assert_eq!(
        sent.target.as_deref(),
        Some("TrentService.GenerateDataKeyPair")
    );
    assert!(sent.attestation_document_chars.is_some_and(|n| n > 1000));
    assert!(sent.ciphertext_for_recipient_chars.is_some());

    // PrivateKeyCiphertextBlob decrypts, through the enclave, to the same private key, under
    // the same context only.
    let blob = unb64(
        reply["PrivateKeyCiphertextBlob"]
            .as_str()
            .expect("PrivateKeyCiphertextBlob"),
    );
    let again = conn
        .call(&decrypt(&blob, &context(&[("use", "pair")])))
        .await;
    assert_eq!(assert_ok(&again), private_der);

    // An RSA pair too: KMS chooses the format, the enclave passes it on.
    let reply = conn
        .call(&json!({"Operation": "GenerateDataKeyPair", "KeyId": key.key_id, "KeyPairSpec": "RSA_2048"}))
        .await;
    let rsa_der = assert_ok(&reply);
    assert!(rsa_der.len() > 1000, "{} bytes", rsa_der.len());

    // A spec KMS does not know is KMS's ValidationException, passed on.
    let reply = conn
        .call(&json!({"Operation": "GenerateDataKeyPair", "KeyId": key.key_id, "KeyPairSpec": "RSA_1024"}))
        .await;
    assert_error(
        &reply,
        "Kms",
        "Could not generate data key pair: ValidationException",
    );
}

#[tokio::test]
async fn a_derived_secret_equals_ecdh_on_the_client_side() {
    let local = Local::start(LocalOptions::default()).await.expect("local");
    let agreement = local
        .kms
        .create_agreement_key("ecdh", KeySpec::EccNistP256)
        .expect("KEY_AGREEMENT key");
    let kms_public = local.kms.public_key(&agreement.key_id).expect("public key");
    let ours = p256::SecretKey::from_bytes(&[0x17; 32].into()).expect("scalar");
    let our_public = ours.public_key().to_public_key_der().expect("SPKI");
    let mut conn = client(&local).await;

    let reply = conn
        .call(&json!({
            "Operation": "DeriveSharedSecret",
            "KeyId": agreement.key_id,
            "PublicKey": b64(our_public.as_bytes()),
        }))
        .await;
    let secret = assert_ok(&reply);
    assert_eq!(reply["KeyAgreementAlgorithm"], "ECDH");
    assert_eq!(reply["KeyOrigin"], "AWS_KMS");
    let theirs = p256::PublicKey::from_public_key_der(&kms_public).expect("KMS's SPKI");
    let expected = p256::ecdh::diffie_hellman(ours.to_nonzero_scalar(), theirs.as_affine());
    assert_eq!(&secret[..], &expected.raw_secret_bytes()[..]);

    // A symmetric key cannot agree: KMS's InvalidKeyUsageException, passed on.
    let symmetric = local.kms.create_key("not for ECDH");
    let reply = conn
        .call(&json!({
            "Operation": "DeriveSharedSecret",
            "KeyId": symmetric.key_id,
            "PublicKey": b64(our_public.as_bytes()),
        }))
        .await;
    assert_error(
        &reply,
        "Kms",
        "Could not derive shared secret: InvalidKeyUsageException",
    );
}
