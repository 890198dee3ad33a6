//! The emulator's asymmetric operations over HTTPS (CreateKey KEY_AGREEMENT, GetPublicKey,
//! GenerateDataKeyPair, DeriveSharedSecret), checked with arithmetic the emulator does not
//! use: it makes RSA and NIST-curve keys and computes ECDH with AWS-LC, so those are checked
//! with RustCrypto (`rsa`, `p256`, `p384`, `p521`); it makes secp256k1 and SM2 keys with
//! RustCrypto, so those are checked with OpenSSL.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_sim::kms::KeySpec;
use kmstool_sim::kms_client::{KmsClient, Reply};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcPoint};
use openssl::nid::Nid;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};

use crate::emulator::*;

/// A symmetric key's ARN.
async fn symmetric_key(c: &mut KmsClient) -> String {
    let created = c.call("CreateKey", &json!({})).await;
    assert_eq!(created.status, 200);
    created.json()["KeyMetadata"]["Arn"]
        .as_str()
        .expect("Arn")
        .to_owned()
}

/// Calls GenerateDataKeyPair under `key` with a fixed context; asserts success.
async fn data_key_pair(c: &mut KmsClient, key: &str, spec: &str, extra: Value) -> Reply {
    let mut body = json!({
        "KeyId": key,
        "KeyPairSpec": spec,
        "EncryptionContext": {"purpose": "pair"},
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let reply = c.call("GenerateDataKeyPair", &body).await;
    assert_eq!(
        reply.status,
        200,
        "{spec}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["KeyPairSpec"], spec);
    assert_eq!(reply.json()["KeyId"], key);
    reply
}

/// Decrypts `PrivateKeyCiphertextBlob` with the context it was made under.
async fn decrypt_private_key(c: &mut KmsClient, reply: &Reply) -> Vec<u8> {
    let decrypted = c
        .call(
            "Decrypt",
            &json!({
                "CiphertextBlob": reply.json()["PrivateKeyCiphertextBlob"],
                "EncryptionContext": {"purpose": "pair"},
            }),
        )
        .await;
    assert_eq!(decrypted.status, 200);
    decrypted.blob("Plaintext")
}

/// RustCrypto computes d·G from the PKCS#8's scalar; it must be the SPKI's point.
macro_rules! nist_pair_matches {
    ($curve:ident, $pkcs8:expr, $spki:expr) => {{
        use $curve::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
        let private = $curve::SecretKey::from_pkcs8_der($pkcs8).expect("EC PKCS#8");
        let public = $curve::PublicKey::from_public_key_der($spki).expect("EC SPKI");
        let derived = $curve::PublicKey::from_secret_scalar(&private.to_nonzero_scalar());
        assert_eq!(derived, public, stringify!($curve));
    }};
}

/// Asserts that the PKCS#8 private key `pkcs8` of `spec` belongs to the SPKI public key `spki`,
/// recomputing the public key from the private one with another library than the emulator's.
fn assert_pair_matches(spec: &str, pkcs8: &[u8], spki: &[u8]) {
    match spec {
        "RSA_2048" | "RSA_3072" | "RSA_4096" => {
            let private = rsa::PrivateKey::from_pkcs8_der(pkcs8).expect("RSA PKCS#8");
            // n = p·q, d·e ≡ 1 (mod λ(n)): the private key is consistent in itself …
            private.validate().expect("a consistent RSA key");
            let bits: usize = spec[4..].parse().expect("bits");
            assert_eq!(private.size() * 8, bits, "{spec}");
            // … and its (n, e) is the public key KMS returned, byte for byte.
            let public = private.to_public_key().to_public_key_der().expect("SPKI");
            assert_eq!(public.as_bytes(), spki, "{spec}");
        }
        "ECC_NIST_P256" => nist_pair_matches!(p256, pkcs8, spki),
        "ECC_NIST_P384" => nist_pair_matches!(p384, pkcs8, spki),
        "ECC_NIST_P521" => nist_pair_matches!(p521, pkcs8, spki),
        "ECC_SECG_P256K1" => openssl_pair_matches(Nid::SECP256K1, "1.3.132.0.10", pkcs8, spki),
        "SM2" => openssl_pair_matches(Nid::SM2, "1.2.156.10197.1.301", pkcs8, spki),
        other => panic!("no check for {other}"),
    }
}

/// OpenSSL multiplies its own generator of curve `nid` by the PKCS#8's scalar; it must be the
/// SPKI's point. The DER is taken apart by hand (OpenSSL 3 reads SM2 keys as a key type of
/// their own, not as EC keys), checking both name the curve `curve_oid` under id-ecPublicKey.
fn openssl_pair_matches(nid: Nid, curve_oid: &str, pkcs8: &[u8], spki: &[u8]) {
    use der::{Decode as _, Reader as _};
    const ID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
    let info = rsa::pkcs8::PrivateKeyInfoRef::from_der(pkcs8).expect("PKCS#8");
    assert_eq!(info.algorithm.oid.to_string(), ID_EC_PUBLIC_KEY);
    let curve = info.algorithm.parameters_oid().expect("a named curve");
    assert_eq!(curve.to_string(), curve_oid);
    // ECPrivateKey (RFC 5915): SEQUENCE { version INTEGER 1, privateKey OCTET STRING, ... }.
    let ec_private_key =
        der::asn1::AnyRef::from_der(info.private_key.as_bytes()).expect("ECPrivateKey");
    let mut reader = der::SliceReader::new(ec_private_key.value()).expect("reader");
    assert_eq!(reader.decode::<u8>().expect("version"), 1);
    let scalar: &der::asn1::OctetStringRef = reader.decode().expect("privateKey");

    let public = rsa::pkcs8::spki::SubjectPublicKeyInfoRef::from_der(spki).expect("SPKI");
    assert_eq!(public.algorithm.oid.to_string(), ID_EC_PUBLIC_KEY);
    let curve = public.algorithm.parameters_oid().expect("a named curve");
    assert_eq!(curve.to_string(), curve_oid);
    let point = public.subject_public_key.as_bytes().expect("whole octets");

    let group = EcGroup::from_curve_name(nid).expect("curve");
    let mut ctx = BigNumContext::new().expect("ctx");
    let public = EcPoint::from_bytes(&group, point, &mut ctx).expect("a point on the curve");
    let d = BigNum::from_slice(scalar.as_bytes()).expect("scalar");
    let mut derived = EcPoint::new(&group).expect("point");
    derived.mul_generator2(&group, &d, &mut ctx).expect("d·G");
    assert!(
        derived.eq(&group, &public, &mut ctx).expect("compare"),
        "{nid:?}: the private key does not match PublicKey"
    );
}

#[tokio::test]
async fn data_key_pairs_of_every_spec_match_and_decrypt() {
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    let key = symmetric_key(&mut c).await;
    // RSA_4096 once only: it is slow to make in debug builds.
    for spec in [
        "RSA_2048",
        "RSA_3072",
        "RSA_4096",
        "ECC_NIST_P256",
        "ECC_NIST_P384",
        "ECC_NIST_P521",
        "ECC_SECG_P256K1",
        "SM2",
    ] {
        let reply = data_key_pair(&mut c, &key, spec, json!({})).await;
        let pkcs8 = reply.blob("PrivateKeyPlaintext");
        let spki = reply.blob("PublicKey");
        assert!(reply.json().get("CiphertextForRecipient").is_none());
        assert_pair_matches(spec, &pkcs8, &spki);
        assert_eq!(
            decrypt_private_key(&mut c, &reply).await,
            pkcs8,
            "{spec}: Decrypt of PrivateKeyCiphertextBlob is the PKCS#8"
        );
    }
    // The blob binds the context, as Encrypt's do.
    let reply = data_key_pair(&mut c, &key, "ECC_NIST_P256", json!({})).await;
    let wrong = c
        .call(
            "Decrypt",
            &json!({
                "CiphertextBlob": reply.json()["PrivateKeyCiphertextBlob"],
                "EncryptionContext": {"purpose": "other"},
            }),
        )
        .await;
    wrong.assert_error(400, "InvalidCiphertextException");
    kms.shutdown().await;
}

#[tokio::test]
async fn data_key_pair_with_recipient_comes_only_in_ciphertext_for_recipient() {
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    let key = symmetric_key(&mut c).await;
    let enclave = Enclave::new();
    let pcr0 = [0x22u8; 48];
    for spec in ["ECC_NIST_P384", "RSA_2048", "SM2"] {
        let reply = data_key_pair(
            &mut c,
            &key,
            spec,
            json!({"Recipient": enclave.recipient(&pcr0)}),
        )
        .await;
        assert!(
            reply.json().get("PrivateKeyPlaintext").is_none(),
            "{spec}: no PrivateKeyPlaintext with a Recipient"
        );
        let pkcs8 = enclave.open(&reply);
        assert_pair_matches(spec, &pkcs8, &reply.blob("PublicKey"));
        assert_eq!(decrypt_private_key(&mut c, &reply).await, pkcs8);
    }
    kms.shutdown().await;
}

/// An agreement key's ARN and its public key from GetPublicKey (checked against
/// DescribeKey's metadata on the way).
async fn agreement_key(c: &mut KmsClient, spec: &str) -> (String, Vec<u8>) {
    let created = c
        .call(
            "CreateKey",
            &json!({"KeySpec": spec, "KeyUsage": "KEY_AGREEMENT"}),
        )
        .await;
    assert_eq!(
        created.status,
        200,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let meta = &created.json()["KeyMetadata"];
    assert_eq!(meta["KeySpec"], spec);
    assert_eq!(meta["CustomerMasterKeySpec"], spec);
    assert_eq!(meta["KeyUsage"], "KEY_AGREEMENT");
    assert_eq!(meta["KeyAgreementAlgorithms"], json!(["ECDH"]));
    assert!(meta.get("EncryptionAlgorithms").is_none());
    let arn = meta["Arn"].as_str().expect("Arn").to_owned();
    let described = c.call("DescribeKey", &json!({"KeyId": arn})).await;
    assert_eq!(&described.json()["KeyMetadata"], meta);

    let public = c
        .call("GetPublicKey", &json!({"KeyId": arn, "GrantTokens": []}))
        .await;
    assert_eq!(public.status, 200);
    let json = public.json();
    assert_eq!(json["KeyId"], arn.as_str());
    assert_eq!(json["KeySpec"], spec);
    assert_eq!(json["KeyUsage"], "KEY_AGREEMENT");
    assert_eq!(json["KeyAgreementAlgorithms"], json!(["ECDH"]));
    (arn, public.blob("PublicKey"))
}

/// The caller's key pair and the ECDH secret with the KMS key's public key, by RustCrypto:
/// (caller's SPKI, shared secret).
macro_rules! caller_ecdh {
    ($curve:ident, $kms_spki:expr) => {{
        use $curve::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
        let secret = loop {
            let mut bytes = vec![0u8; $curve::FieldBytes::default().len()];
            openssl::rand::rand_bytes(&mut bytes).expect("random");
            if bytes.len() == 66 {
                // P-521: a scalar below the order has a top byte of 0 or 1.
                bytes[0] &= 1;
            }
            if let Ok(secret) = $curve::SecretKey::from_slice(&bytes) {
                break secret;
            }
        };
        let kms_public = $curve::PublicKey::from_public_key_der($kms_spki).expect("KMS SPKI");
        let shared =
            $curve::ecdh::diffie_hellman(secret.to_nonzero_scalar(), kms_public.as_affine());
        let spki = secret
            .public_key()
            .to_public_key_der()
            .expect("SPKI")
            .as_bytes()
            .to_vec();
        (spki, shared.raw_secret_bytes().to_vec())
    }};
}

async fn derive(c: &mut KmsClient, key: &str, peer: &[u8], extra: Value) -> Reply {
    let mut body = json!({
        "KeyId": key,
        "KeyAgreementAlgorithm": "ECDH",
        "PublicKey": STANDARD.encode(peer),
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    c.call("DeriveSharedSecret", &body).await
}

#[tokio::test]
async fn derive_shared_secret_equals_the_callers_ecdh() {
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    for spec in ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"] {
        let (arn, kms_spki) = agreement_key(&mut c, spec).await;
        let (caller_spki, expected) = match spec {
            "ECC_NIST_P256" => caller_ecdh!(p256, &kms_spki),
            "ECC_NIST_P384" => caller_ecdh!(p384, &kms_spki),
            _ => caller_ecdh!(p521, &kms_spki),
        };
        let reply = derive(&mut c, &arn, &caller_spki, json!({"GrantTokens": []})).await;
        assert_eq!(
            reply.status,
            200,
            "{spec}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let json = reply.json();
        assert_eq!(json["KeyId"], arn.as_str());
        assert_eq!(json["KeyAgreementAlgorithm"], "ECDH");
        assert_eq!(json["KeyOrigin"], "AWS_KMS");
        assert!(json.get("CiphertextForRecipient").is_none());
        assert_eq!(reply.blob("SharedSecret"), expected, "{spec}");
    }
    kms.shutdown().await;
}

#[tokio::test]
async fn derive_shared_secret_with_recipient_and_handle_helpers() {
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    let enclave = Enclave::new();
    let meta = kms
        .create_agreement_key("helper", KeySpec::EccNistP256)
        .expect("agreement key");
    let kms_spki = kms.public_key(&meta.key_id).expect("public key");
    let (caller_spki, expected) = caller_ecdh!(p256, &kms_spki);
    let reply = derive(
        &mut c,
        &meta.arn,
        &caller_spki,
        json!({"Recipient": enclave.recipient(&[0x33; 48])}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.json().get("SharedSecret").is_none(),
        "no SharedSecret with a Recipient"
    );
    assert_eq!(enclave.open(&reply), expected);
    kms.shutdown().await;
}

#[tokio::test]
async fn asymmetric_errors_are_kms_shaped() {
    let kms = start(config()).await;
    let mut c = connect(&kms).await;
    let symmetric = symmetric_key(&mut c).await;
    let (p256_key, p256_spki) = agreement_key(&mut c, "ECC_NIST_P256").await;
    let (_, p384_spki) = agreement_key(&mut c, "ECC_NIST_P384").await;

    // CreateKey: what KMS refuses, and what the emulator does not implement.
    let refused = c
        .call(
            "CreateKey",
            &json!({"KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "KEY_AGREEMENT"}),
        )
        .await;
    refused.assert_error(400, "ValidationException");
    assert_eq!(
        refused.message(),
        "KeyUsage KEY_AGREEMENT is not compatible with KeySpec SYMMETRIC_DEFAULT"
    );
    let k1 = c
        .call(
            "CreateKey",
            &json!({"CustomerMasterKeySpec": "ECC_SECG_P256K1", "KeyUsage": "KEY_AGREEMENT"}),
        )
        .await;
    k1.assert_error(400, "ValidationException");
    assert!(k1.message().contains("not compatible"), "{}", k1.message());
    let signing = c
        .call(
            "CreateKey",
            &json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}),
        )
        .await;
    signing.assert_error(400, "ValidationException");
    assert!(
        signing
            .message()
            .starts_with("The emulator does not support")
    );

    // GetPublicKey of a symmetric key.
    c.call("GetPublicKey", &json!({"KeyId": symmetric}))
        .await
        .assert_error(400, "UnsupportedOperationException");

    // GenerateDataKeyPair.
    let unknown = c
        .call(
            "GenerateDataKeyPair",
            &json!({"KeyId": symmetric, "KeyPairSpec": "RSA_1024"}),
        )
        .await;
    unknown.assert_error(400, "ValidationException");
    assert!(
        unknown
            .message()
            .starts_with("1 validation error detected: Value 'RSA_1024' at 'keyPairSpec'"),
        "{}",
        unknown.message()
    );
    c.call("GenerateDataKeyPair", &json!({"KeyId": symmetric}))
        .await
        .assert_error(400, "ValidationException");
    let agreement = c
        .call(
            "GenerateDataKeyPair",
            &json!({"KeyId": p256_key, "KeyPairSpec": "ECC_NIST_P256"}),
        )
        .await;
    agreement.assert_error(400, "InvalidKeyUsageException");
    assert_eq!(
        agreement.message(),
        format!(
            "{p256_key} key usage is KEY_AGREEMENT which is not valid for GenerateDataKeyPair."
        )
    );
    let dry = c
        .call(
            "GenerateDataKeyPair",
            &json!({"KeyId": symmetric, "KeyPairSpec": "ECC_NIST_P256", "DryRun": true}),
        )
        .await;
    dry.assert_error(400, "DryRunOperationException");
    assert!(dry.json().get("PrivateKeyPlaintext").is_none());

    // DeriveSharedSecret.
    let symmetric_derive = derive(&mut c, &symmetric, &p256_spki, json!({})).await;
    symmetric_derive.assert_error(400, "InvalidKeyUsageException");
    assert_eq!(
        symmetric_derive.message(),
        format!(
            "{symmetric} key usage is ENCRYPT_DECRYPT which is not valid for DeriveSharedSecret."
        )
    );
    let bare_point = &p256_spki[p256_spki.len() - 65..];
    for bad in [p384_spki.as_slice(), b"not a key".as_slice(), bare_point] {
        let reply = derive(&mut c, &p256_key, bad, json!({})).await;
        reply.assert_error(400, "ValidationException");
        assert!(reply.json().get("SharedSecret").is_none());
    }
    let algorithm = c
        .call(
            "DeriveSharedSecret",
            &json!({
                "KeyId": p256_key,
                "KeyAgreementAlgorithm": "ECMQV",
                "PublicKey": STANDARD.encode(&p256_spki),
            }),
        )
        .await;
    algorithm.assert_error(400, "ValidationException");
    assert!(algorithm.message().contains("[ECDH]"));
    let dry = derive(&mut c, &p256_key, &p256_spki, json!({"DryRun": true})).await;
    dry.assert_error(400, "DryRunOperationException");
    assert!(dry.json().get("SharedSecret").is_none());

    // An agreement key cannot encrypt or make data keys.
    c.call(
        "GenerateDataKey",
        &json!({"KeyId": p256_key, "KeySpec": "AES_256"}),
    )
    .await
    .assert_error(400, "InvalidKeyUsageException");
    c.call(
        "Encrypt",
        &json!({"KeyId": p256_key, "Plaintext": STANDARD.encode(b"x")}),
    )
    .await
    .assert_error(400, "InvalidKeyUsageException");
    kms.shutdown().await;
}
