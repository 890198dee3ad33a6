//! `kms::call::Call` on its own, on a virtual clock: what it asks the driver to do and when,
//! retries and their exact deadlines, a stale pooled connection, the deadline, Encrypt without
//! a `Recipient`, and the typed results a library client gets.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::kms::call::{
    Attestation, Call, CallAction, CallConfig, CallError, CallEvent, SharedRequest,
    TransportFailure, TransportStage,
};
use kmstool_core::kms::client::{ClientError, DataKey, EncryptOutput};
use kmstool_core::kms::request::{Encrypt, KmsRequest, RequestTarget};
use kmstool_core::kms::skew::ClockOffset;
use kmstool_core::protocol::{DataKeySize, GenerateDataKey, GenerateRandom, KeySpec};
use kmstool_core::secret::{Credentials, SecretBytes, SecretString};
use kmstool_core::session::Now;

use crate::cms_common::{keyed_pem, sealed_for};

const HOST: &str = "kms.eu-west-1.amazonaws.com";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn credentials() -> Credentials {
    Credentials::new(
        "AKIDEXAMPLE",
        SecretString::new("wJalrXUtnFEMI".into()),
        None,
    )
}

fn start() -> Now {
    Now::new(
        Instant::now(),
        UNIX_EPOCH + Duration::from_secs(1_750_000_000),
    )
}

fn key() -> Arc<RecipientKey> {
    Arc::new(RecipientKey::from_pem(Backend::DEFAULT, &keyed_pem()).expect("key"))
}

fn call(request: KmsRequest, now: Now) -> Call {
    let credentials = credentials();
    let target = RequestTarget {
        host: HOST,
        region: "eu-west-1",
        credentials: &credentials,
    };
    Call::new(request, target, &CallConfig::default(), now, 42)
}

fn answer(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The next action, which must be a `Send`: its request and `may_reuse`.
fn expect_send(call: &mut Call) -> (SharedRequest, bool) {
    match call.poll_action() {
        Some(CallAction::Send {
            host,
            request,
            may_reuse,
        }) => {
            assert_eq!(host, HOST);
            (request, may_reuse)
        }
        other => panic!("expected Send, got {other:?}"),
    }
}

fn expect_release(call: &mut Call, reusable: bool) {
    match call.poll_action() {
        Some(CallAction::Release { reusable: r }) => assert_eq!(r, reusable),
        other => panic!("expected Release, got {other:?}"),
    }
}

fn events(call: &mut Call) -> Vec<CallEvent> {
    std::iter::from_fn(|| call.poll_event()).collect()
}

fn attested_call(request: KmsRequest, now: Now, key: &Arc<RecipientKey>) -> Call {
    let mut call = call(request, now);
    assert!(matches!(call.poll_action(), Some(CallAction::Attest)));
    assert!(
        call.poll_action().is_none(),
        "nothing is sent before the document"
    );
    let attestation = Attestation {
        key: Arc::clone(key),
        document: b"attestation document".to_vec().into(),
    };
    call.handle_attestation(now, Ok(attestation));
    call
}

#[test]
fn encrypt_goes_out_at_once_without_a_recipient() {
    let now = start();
    let request = KmsRequest::Encrypt(Encrypt {
        key_id: "alias/app".into(),
        plaintext: SecretBytes::new(b"seal me".to_vec()),
        encryption_context: [("app".to_owned(), "x".to_owned())].into(),
        grant_tokens: Vec::new(),
        encryption_algorithm: None,
        dry_run: false,
    });
    let mut call = call(request, now);
    let (request, may_reuse) = expect_send(&mut call);
    assert!(may_reuse);
    let text = String::from_utf8_lossy(&request);
    assert!(
        text.contains("X-Amz-Target: TrentService.Encrypt\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            r#"{{"KeyId":"alias/app","Plaintext":"{}","EncryptionContext":{{"app":"x"}}}}"#,
            b64(b"seal me")
        )),
        "{text}"
    );
    assert!(!text.contains("Recipient"));
    call.handle_sent(false);
    let body = format!(
        r#"{{"CiphertextBlob":"{}","KeyId":"arn:k","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}}"#,
        b64(b"sealed")
    );
    call.handle_bytes(now.advance(Duration::from_millis(30)), &answer(200, &body));
    expect_release(&mut call, true);
    let output = EncryptOutput::from(call.poll_result().expect("done").expect("success"));
    assert_eq!(output.ciphertext_blob, b"sealed");
    assert_eq!(output.key_id.as_deref(), Some("arn:k"));
    assert_eq!(call.poll_timeout(), None, "done: no more deadlines");
}

#[test]
fn a_throttled_attempt_is_retried_after_its_backoff_and_then_succeeds() {
    let key = key();
    let now = start();
    let request = KmsRequest::GenerateDataKey(GenerateDataKey {
        key_id: "alias/app".into(),
        size: DataKeySize::KeySpec(KeySpec::Aes128),
        encryption_context: Default::default(),
        grant_tokens: Vec::new(),
        dry_run: false,
    });
    let mut call = attested_call(request, now, &key);
    let (first, _) = expect_send(&mut call);
    call.handle_sent(false);
    let later = now.advance(Duration::from_millis(20));
    call.handle_bytes(
        later,
        &answer(
            400,
            r#"{"__type":"ThrottlingException","message":"slow down"}"#,
        ),
    );
    expect_release(&mut call, true);
    let [
        CallEvent::Attempt { attempt: 1, .. },
        CallEvent::Answered { status: 400, .. },
        CallEvent::Retry { delay, .. },
    ] = &events(&mut call)[..]
    else {
        panic!("attempt, answer and retry expected")
    };
    // The first backoff is between half and all of 100 ms, and it is the next deadline.
    assert!((50..=100).contains(&delay.as_millis()), "{delay:?}");
    assert_eq!(call.poll_timeout(), Some(later.instant + *delay));
    call.handle_timeout(later.advance(*delay - Duration::from_millis(1)));
    assert!(
        call.poll_action().is_none(),
        "not before the backoff is over"
    );
    let retry_at = later.advance(*delay);
    call.handle_timeout(retry_at);
    let (second, _) = expect_send(&mut call);
    assert_eq!(signed_at(&second), signed_at(&first), "the same second");
    assert!(
        matches!(
            events(&mut call)[..],
            [CallEvent::Attempt { attempt: 2, .. }]
        ),
        "the retry is the second attempt"
    );
    let data_key = [7u8; 16];
    let body = format!(
        r#"{{"CiphertextBlob":"{}","CiphertextForRecipient":"{}","KeyId":"arn:k"}}"#,
        b64(b"blob"),
        b64(&sealed_for(&key, &data_key))
    );
    call.handle_bytes(retry_at, &answer(200, &body));
    expect_release(&mut call, true);
    let summary = call.kms_summary().expect("answered");
    assert_eq!((summary.status, summary.attempts), (200, 2));
    let data = DataKey::from(call.poll_result().expect("done").expect("success"));
    assert_eq!(data.plaintext.expose(), data_key);
    assert_eq!(data.ciphertext_blob, b"blob");
}

#[test]
fn a_pooled_connection_closed_before_answering_is_replaced_within_the_same_attempt() {
    let key = key();
    let now = start();
    let request = KmsRequest::GenerateRandom(GenerateRandom {
        number_of_bytes: 8,
        custom_key_store_id: None,
    });
    let mut call = attested_call(request, now, &key);
    let (request, may_reuse) = expect_send(&mut call);
    assert!(may_reuse);
    call.handle_sent(true);
    call.handle_eof(now.advance(Duration::from_millis(1)));
    expect_release(&mut call, false);
    let (again, may_reuse) = expect_send(&mut call);
    assert!(Arc::ptr_eq(&request, &again), "the same signed request");
    assert!(!may_reuse, "on a fresh connection this time");
    // A fresh connection that fails is an attempt that failed.
    call.handle_sent(false);
    call.handle_transport_failure(
        now.advance(Duration::from_millis(2)),
        TransportFailure::new(TransportStage::Io, "reset"),
    );
    expect_release(&mut call, false);
    assert!(
        events(&mut call)
            .iter()
            .any(|e| matches!(e, CallEvent::Retry { .. }))
    );
    assert_eq!(call.kms_summary(), None, "KMS never answered");
}

#[test]
fn the_deadline_ends_the_call_and_releases_its_connection() {
    let key = key();
    let now = start();
    let request = KmsRequest::GenerateRandom(GenerateRandom {
        number_of_bytes: 8,
        custom_key_store_id: None,
    });
    let mut call = attested_call(request, now, &key);
    let _ = expect_send(&mut call);
    call.handle_sent(false);
    let deadline = now.instant + Duration::from_secs(10);
    assert_eq!(call.poll_timeout(), Some(deadline));
    call.handle_timeout(now.advance(Duration::from_secs(10)));
    expect_release(&mut call, false);
    let error = call.poll_result().expect("done").expect_err("timed out");
    assert!(
        matches!(error, CallError::Timeout { attempts: 1, .. }),
        "{error:?}"
    );
    assert!(matches!(ClientError::from(error), ClientError::Timeout(_)));
}

#[test]
fn a_tls_failure_is_not_retried_and_is_a_tls_error() {
    let key = key();
    let now = start();
    let request = KmsRequest::GenerateRandom(GenerateRandom {
        number_of_bytes: 8,
        custom_key_store_id: None,
    });
    let mut call = attested_call(request, now, &key);
    let _ = expect_send(&mut call);
    call.handle_transport_failure(
        now,
        TransportFailure::new(TransportStage::Tls, "UnknownIssuer"),
    );
    expect_release(&mut call, false);
    let error = ClientError::from(call.poll_result().expect("done").expect_err("TLS"));
    let ClientError::Tls(text) = &error else {
        panic!("{error:?}")
    };
    assert!(text.contains("UnknownIssuer"), "{text}");
}

// --- the clock offset (KMS's `Date` against ours) -------------------------------------------

/// An answer carrying KMS's `Date` header for `at`.
fn answer_at(status: u16, body: &str, at: SystemTime) -> Vec<u8> {
    let date = aws_smithy_types::DateTime::from(at)
        .fmt(aws_smithy_types::date_time::Format::HttpDate)
        .expect("a date");
    format!(
        "HTTP/1.1 {status} X\r\nDate: {date}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `X-Amz-Date` of a signed request.
fn signed_at(request: &[u8]) -> String {
    String::from_utf8_lossy(request)
        .lines()
        .find_map(|line| line.strip_prefix("X-Amz-Date: ").map(str::to_owned))
        .expect("X-Amz-Date")
}

fn amz_date(at: SystemTime) -> String {
    kmstool_core::sigv4::AmzDate::from_system_time(at).date_time
}

const EXPIRED: &str = r#"{"__type":"InvalidSignatureException","message":"Signature expired"}"#;

fn offsets(call: &mut Call) -> Vec<ClockOffset> {
    events(call)
        .into_iter()
        .filter_map(|event| match event {
            CallEvent::ClockOffset { offset } => Some(offset),
            _ => None,
        })
        .collect()
}

fn random_call(now: Now, key: &Arc<RecipientKey>) -> Call {
    let request = KmsRequest::GenerateRandom(GenerateRandom {
        number_of_bytes: 8,
        custom_key_store_id: None,
    });
    attested_call(request, now, key)
}

#[test]
fn a_refusal_for_skew_is_signed_again_at_kms_time_once_without_using_an_attempt() {
    let key = key();
    for kms_ahead in [true, false] {
        let now = start();
        let skew = Duration::from_secs(15 * 60);
        let kms_time = |local: SystemTime| {
            if kms_ahead {
                local + skew
            } else {
                local - skew
            }
        };
        let mut call = random_call(now, &key);
        let (first, _) = expect_send(&mut call);
        assert_eq!(signed_at(&first), amz_date(now.wall));
        let answered = now.advance(Duration::from_millis(100));
        call.handle_bytes(answered, &answer_at(400, EXPIRED, kms_time(answered.wall)));
        expect_release(&mut call, true);
        let (second, may_reuse) = expect_send(&mut call);
        assert!(may_reuse);
        // Signed at KMS's time, to the second (the offset is taken at the midpoint).
        assert_eq!(
            signed_at(&second),
            amz_date(kms_time(answered.wall)),
            "ahead {kms_ahead}"
        );
        let learned = offsets(&mut call);
        let [offset] = learned[..] else {
            panic!("{learned:?}")
        };
        let expected_ms = if kms_ahead {
            900_000 - 50
        } else {
            -900_000 - 50
        };
        // `Date` has whole seconds.
        assert!((offset.as_millis() - expected_ms).abs() < 1000, "{offset}");
        // A refusal that persists after the correction is reported, not retried forever.
        let later = answered.advance(Duration::from_millis(100));
        call.handle_bytes(later, &answer_at(400, EXPIRED, kms_time(later.wall)));
        expect_release(&mut call, true);
        assert!(call.poll_action().is_none(), "no third request");
        let error = call.poll_result().expect("done").expect_err("refused");
        let CallError::Kms(kms) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(kms.error_type.as_deref(), Some("InvalidSignatureException"));
        assert_eq!(call.kms_summary().expect("answered").attempts, 1);
    }
}

#[test]
fn a_corrected_request_succeeds_and_the_offset_follows_a_clock_back_in_step() {
    let key = key();
    let now = start();
    let shared = ClockOffset::from_millis(15 * 60 * 1000);
    // The shared clock says KMS is 15 minutes ahead: the first request is signed so.
    let mut call = random_call(now.with_kms_clock_offset(shared), &key);
    let (first, _) = expect_send(&mut call);
    assert_eq!(signed_at(&first), amz_date(shared.apply(now.wall)));
    // But KMS's clock is ours again: its refusal says so, and the retry is signed at our time.
    let answered = now.advance(Duration::from_millis(200));
    call.handle_bytes(answered, &answer_at(400, EXPIRED, answered.wall));
    expect_release(&mut call, true);
    let learned = offsets(&mut call);
    assert!(
        learned.len() == 1 && learned[0].magnitude() < Duration::from_secs(1),
        "{learned:?}"
    );
    let (second, _) = expect_send(&mut call);
    assert_eq!(signed_at(&second), amz_date(answered.wall));
    let body = format!(
        r#"{{"CiphertextForRecipient":"{}"}}"#,
        b64(&sealed_for(&key, &[1; 8]))
    );
    call.handle_bytes(answered, &answer_at(200, &body, answered.wall));
    expect_release(&mut call, true);
    assert_eq!(
        offsets(&mut call).len(),
        1,
        "every response teaches the offset"
    );
    assert!(call.poll_result().expect("done").is_ok());
}

#[test]
fn no_resend_without_a_trustworthy_date_far_enough_off() {
    let key = key();
    let now = start();
    let cases: [(&str, Duration, Option<Duration>); 3] = [
        ("no Date header", Duration::from_millis(100), None),
        (
            "a slow round trip",
            Duration::from_secs(3),
            Some(Duration::from_secs(900)),
        ),
        (
            "a skew under four minutes",
            Duration::from_millis(100),
            Some(Duration::from_secs(180)),
        ),
    ];
    for (what, round_trip, kms_ahead) in cases {
        let mut call = random_call(now, &key);
        let _ = expect_send(&mut call);
        let answered = now.advance(round_trip);
        let answer = match kms_ahead {
            Some(ahead) => answer_at(400, EXPIRED, answered.wall + ahead),
            None => answer(400, EXPIRED),
        };
        call.handle_bytes(answered, &answer);
        expect_release(&mut call, true);
        assert!(call.poll_action().is_none(), "{what}: no resend");
        let learned = offsets(&mut call);
        match (what, &learned[..]) {
            ("a skew under four minutes", [offset]) => {
                assert!(offset.as_millis() > 170_000, "{what}: {offset}");
            }
            (_, []) => {}
            _ => panic!("{what}: {learned:?}"),
        }
        let error = call.poll_result().expect("done").expect_err(what);
        assert!(matches!(error, CallError::Kms(_)), "{what}: {error:?}");
    }
}

/// A real KMS answer (its `CiphertextForRecipient` made by KMS for the fixture's key), split
/// at every byte, drives the bare call to the typed result a library client returns.
#[test]
fn a_recorded_kms_answer_opens_to_its_plaintext_whatever_the_reads() {
    use kmstool_core::kms::client::DecryptOutput;
    use kmstool_core::protocol::Decrypt;

    let recorded = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kms/decrypt-ok.http"
    ))
    .expect("fixture");
    let plaintext = crate::cms_common::keyed_plaintext();
    let key = key();
    for chunk in [1, 7, recorded.len()] {
        let now = start();
        let mut call = attested_call(
            KmsRequest::Decrypt(Decrypt::new(vec![1, 2, 3, 4])),
            now,
            &key,
        );
        let _ = expect_send(&mut call);
        call.handle_sent(false);
        for piece in recorded.chunks(chunk) {
            assert!(call.poll_result().is_none(), "not before the whole answer");
            call.handle_bytes(now.advance(Duration::from_millis(40)), piece);
        }
        expect_release(&mut call, true);
        let output = DecryptOutput::from(call.poll_result().expect("done").expect("success"));
        assert_eq!(output.plaintext.expose(), plaintext, "chunks of {chunk}");
        assert_eq!(
            output.encryption_algorithm.as_deref(),
            Some("SYMMETRIC_DEFAULT")
        );
    }
}
