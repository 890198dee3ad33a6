//! Writes the recorded KMS HTTP responses in `tests/fixtures/kms/` (run with
//! `KMSTOOL_REGENERATE=1 cargo test -p kmstool-core --test it kms_fixtures_gen -- --ignored`).
//!
//! `decrypt-ok.http` wraps the real KMS capture `real-kms-decrypt-with-key.ber` from
//! the repository's fixtures/kms/ unchanged. The GenerateDataKey and GenerateRandom successes carry
//! envelopes built in KMS's exact layout for the same (published) key, so the session tests
//! can open them. Error responses follow the shapes KMS documents (status, `__type`,
//! `message`, `x-amzn-ErrorType`).

#![cfg(feature = "aws-lc")]

use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use base64::Engine as _;
use kmstool_core::cms::{self, Layout};
use kmstool_core::crypto::{Backend, RecipientKey};

const REAL_KMS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/kms/");
const OUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kms/");
const KEY_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn response(status: &str, extra_headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    out.push_str("x-amzn-RequestId: 5d1f8a34-6b1e-4c2a-9f4e-0e1c2d3b4a59\r\n");
    out.push_str("Cache-Control: no-cache, no-store, must-revalidate, private\r\n");
    out.push_str("Expires: 0\r\nPragma: no-cache\r\nDate: Sun, 29 Nov 2026 12:00:01 GMT\r\n");
    for (name, value) in extra_headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("Content-Type: application/x-amz-json-1.1\r\n");
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

fn envelope_for(key: &RecipientKey, plaintext: &[u8], seed: u8) -> Vec<u8> {
    let public = PublicEncryptingKey::from_der(key.public_key_der()).expect("public key");
    let oaep = OaepPublicEncryptingKey::new(public).expect("oaep");
    let cek = [seed; 32];
    let iv = [seed.wrapping_add(1); 16];
    let mut encrypted_key = vec![0u8; oaep.ciphertext_size()];
    let written = oaep
        .encrypt(&OAEP_SHA256_MGF1SHA256, &cek, &mut encrypted_key, None)
        .expect("encrypt")
        .len();
    encrypted_key.truncate(written);
    cms::build(
        Layout::KmsBer { chunk: 1000 },
        &key.subject_key_id(),
        &encrypted_key,
        &cek,
        &iv,
        plaintext,
    )
}

#[test]
#[ignore = "writes fixtures; run with KMSTOOL_REGENERATE=1"]
fn regenerate_kms_fixtures() {
    if std::env::var_os("KMSTOOL_REGENERATE").is_none() {
        return;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let pem = std::fs::read(format!("{REAL_KMS}real-kms-decrypt-with-key.key.pem")).expect("key");
    let key = RecipientKey::from_pem(Backend::DEFAULT, &pem).expect("key");
    let real = std::fs::read(format!("{REAL_KMS}real-kms-decrypt-with-key.ber")).expect("capture");
    let write =
        |name: &str, bytes: Vec<u8>| std::fs::write(format!("{OUT}{name}"), bytes).expect("write");

    write(
        "decrypt-ok.http",
        response(
            "200 OK",
            &[],
            &format!(
                r#"{{"CiphertextForRecipient":"{}","EncryptionAlgorithm":"SYMMETRIC_DEFAULT","KeyId":"{KEY_ARN}","Plaintext":null}}"#,
                b64.encode(&real)
            ),
        ),
    );
    let data_key: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(7).wrapping_add(3))
        .collect();
    write(
        "generatedatakey-ok.http",
        response(
            "200 OK",
            &[],
            &format!(
                r#"{{"CiphertextBlob":"{}","CiphertextForRecipient":"{}","KeyId":"{KEY_ARN}","KeyMaterialId":"0a1b2c"}}"#,
                b64.encode(b"AQIDAHhBlobFromKmsForTheDataKey"),
                b64.encode(envelope_for(&key, &data_key, 11))
            ),
        ),
    );
    let random: Vec<u8> = (0u8..32).map(|i| i ^ 0xA5).collect();
    write(
        "generaterandom-ok.http",
        response(
            "200 OK",
            &[],
            &format!(
                r#"{{"CiphertextForRecipient":"{}","Plaintext":""}}"#,
                b64.encode(envelope_for(&key, &random, 42))
            ),
        ),
    );
    write(
        "accessdenied-400.http",
        response(
            "400 Bad Request",
            &[("x-amzn-ErrorType", "AccessDeniedException:")],
            r#"{"__type":"AccessDeniedException","message":"User: arn:aws:sts::111122223333:assumed-role/app/i-0abc is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab because no identity-based policy allows the kms:Decrypt action"}"#,
        ),
    );
    write(
        "invalidciphertext-400.http",
        response(
            "400 Bad Request",
            &[("x-amzn-ErrorType", "InvalidCiphertextException:")],
            r#"{"__type":"InvalidCiphertextException"}"#,
        ),
    );
    write(
        "throttling-400.http",
        response(
            "400 Bad Request",
            &[("x-amzn-ErrorType", "ThrottlingException:")],
            r#"{"__type":"com.amazonaws.kms#ThrottlingException","Message":"Rate exceeded"}"#,
        ),
    );
    write(
        "internal-500.http",
        response(
            "500 Internal Server Error",
            &[("x-amzn-ErrorType", "KMSInternalException:")],
            r#"{"__type":"KMSInternalException","message":"An internal error occurred."}"#,
        ),
    );
    std::fs::write(
        format!("{OUT}generatedatakey-ok.plaintext.hex"),
        hex(&data_key),
    )
    .expect("write");
    std::fs::write(
        format!("{OUT}generaterandom-ok.plaintext.hex"),
        hex(&random),
    )
    .expect("write");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
