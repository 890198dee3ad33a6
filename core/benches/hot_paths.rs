//! Micro-benchmarks of the enclave's per-request work, on real fixture bytes where there are
//! some: frame decoding, command parsing, the KMS request (JSON body, SigV4, HTTP framing), the
//! KMS response, and the CMS unwrap with each crypto backend.
//!
//! `cargo bench -p kmstool-core --features rustcrypto --bench hot_paths` (without the feature,
//! only the AWS-LC backend is measured).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kmstool_core::cms;
use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::framing::{self, FrameDecoder};
use kmstool_core::kms::request::{AttestationDocument, KmsRequest, RequestTarget, http_request};
use kmstool_core::kms::response;
use kmstool_core::protocol::{Decrypt, EncryptionContext, parse_command};
use kmstool_core::secret::{Credentials, SecretString};
use kmstool_core::sigv4;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A real attestation document (the size KMS receives in every `Recipient`).
fn attestation_document() -> Vec<u8> {
    fixture("attestation/real-nitro-attestation-1.cose")
}

/// A real `CiphertextForRecipient` and the key it was made for.
fn keyed_cms(backend: Backend) -> (Vec<u8>, RecipientKey) {
    let pem = fixture("kms/real-kms-decrypt-with-key.key.pem");
    let key = RecipientKey::from_pem(backend, &pem).unwrap_or_else(|e| panic!("key: {e}"));
    (fixture("kms/real-kms-decrypt-with-key.ber"), key)
}

fn credentials() -> Credentials {
    Credentials::new(
        "ASIAEXAMPLEEXAMPLE00",
        SecretString::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned()),
        Some(SecretString::new("IQoJb3JpZ2luX2VjE".repeat(40))),
    )
}

fn decrypt_command() -> Vec<u8> {
    let ciphertext = STANDARD.encode([0x5a; 184]);
    format!(
        r#"{{"Operation":"Decrypt","Ciphertext":"{ciphertext}","EncryptionContext":{{"app":"bench","tenant":"t-0001"}}}}"#
    )
    .into_bytes()
}

fn set_client_command() -> Vec<u8> {
    let token = "IQoJb3JpZ2luX2VjE".repeat(40);
    format!(
        r#"{{"Operation":"SetClient","AwsAccessKeyId":"ASIAEXAMPLEEXAMPLE00","AwsSecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","AwsSessionToken":"{token}","AwsRegion":"us-east-1"}}"#
    )
    .into_bytes()
}

fn decrypt_call() -> KmsRequest {
    KmsRequest::Decrypt(Decrypt {
        ciphertext: vec![0x5a; 184],
        encryption_context: EncryptionContext::from([("app".to_owned(), "bench".to_owned())]),
        key_id: None,
        encryption_algorithm: None,
        grant_tokens: Vec::new(),
        dry_run: false,
    })
}

fn frame_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_decode");
    let mut one = Vec::new();
    framing::encode(&decrypt_command(), &mut one);
    group.throughput(Throughput::Bytes(one.len() as u64));
    group.bench_function("decrypt_command", |b| {
        let mut decoder = FrameDecoder::default();
        b.iter(|| {
            decoder.push(black_box(&one));
            let frame = decoder.next_frame().ok().flatten().map(<[u8]>::len);
            black_box(frame)
        });
    });
    let mut large = Vec::new();
    framing::encode(&vec![b'a'; 60 * 1024], &mut large);
    group.throughput(Throughput::Bytes(large.len() as u64));
    group.bench_function("60k_in_16k_reads", |b| {
        let mut decoder = FrameDecoder::default();
        b.iter(|| {
            let mut frames = 0;
            for chunk in large.chunks(16 * 1024) {
                decoder.push(black_box(chunk));
                while let Ok(Some(_)) = decoder.next_frame() {
                    frames += 1;
                }
            }
            black_box(frames)
        });
    });
    group.finish();
}

fn command_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("command_parse");
    let decrypt = decrypt_command();
    group.bench_function("decrypt", |b| {
        b.iter(|| black_box(parse_command(black_box(&decrypt)).is_ok()));
    });
    let set_client = set_client_command();
    group.bench_function("set_client", |b| {
        b.iter(|| black_box(parse_command(black_box(&set_client)).is_ok()));
    });
    group.finish();
}

fn kms_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("kms_request");
    let document = AttestationDocument::new(attestation_document());
    let call = decrypt_call();
    let credentials = credentials();
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_926_322);
    group.bench_function("decrypt_body", |b| {
        b.iter(|| black_box(call.body(black_box(&document)).len()));
    });
    let body = call.body(&document);
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("sigv4_sign", |b| {
        let headers = [
            ("Host", "kms.us-east-1.amazonaws.com"),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", "TrentService.Decrypt"),
        ];
        b.iter(|| {
            let signature = sigv4::sign(&sigv4::SigningInput {
                method: "POST",
                path: "/",
                query: "",
                headers: &headers,
                body: black_box(&body),
                credentials: &credentials,
                region: "us-east-1",
                service: "kms",
                time,
            });
            black_box(signature.map(|s| s.authorization.len()))
        });
    });
    let target = RequestTarget {
        host: "kms.us-east-1.amazonaws.com",
        region: "us-east-1",
        credentials: &credentials,
    };
    group.bench_function("signed_http_request", |b| {
        b.iter(|| {
            let request = http_request(&target, call.target(), black_box(&body), time);
            black_box(request.map(|r| r.len()))
        });
    });
    group.finish();
}

fn kms_response(c: &mut Criterion) {
    let (envelope, _) = keyed_cms(Backend::DEFAULT);
    let body = format!(
        r#"{{"KeyId":"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab","CiphertextForRecipient":"{}","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}}"#,
        STANDARD.encode(&envelope)
    );
    c.bench_function("kms_response/decrypt", |b| {
        b.iter(|| black_box(response::parse(200, None, black_box(body.as_bytes())).is_ok()));
    });
}

fn cms_unwrap(c: &mut Criterion) {
    let mut group = c.benchmark_group("cms");
    let (envelope, _) = keyed_cms(Backend::DEFAULT);
    group.bench_function("parse", |b| {
        b.iter(|| black_box(cms::parse(black_box(&envelope)).is_ok()));
    });
    for &backend in Backend::all() {
        let (envelope, key) = keyed_cms(backend);
        let encrypted_key = cms::parse(&envelope)
            .unwrap_or_else(|e| panic!("fixture: {e}"))
            .encrypted_key;
        group.bench_with_input(
            BenchmarkId::new("rsa_oaep_decrypt", backend.name()),
            &encrypted_key,
            |b, encrypted_key| {
                b.iter(|| black_box(key.oaep_sha256_decrypt(black_box(encrypted_key)).is_ok()));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("unwrap", backend.name()),
            &envelope,
            |b, envelope| {
                b.iter(|| black_box(cms::unwrap(black_box(envelope), &key).is_ok()));
            },
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    frame_decode,
    command_parse,
    kms_request,
    kms_response,
    cms_unwrap
);
criterion_main!(benches);
