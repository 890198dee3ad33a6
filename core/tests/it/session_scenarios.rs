//! Scenario tests: an `EnclaveSession` driven on a virtual clock with recorded KMS responses
//! (tests/fixtures/kms/, one of them wrapping the real KMS capture), asserting the exact
//! sequence of outputs.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine as _;
use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::protocol::{ErrorKind, Reply, Status};
use kmstool_core::session::{
    Attestation, AttestationFailure, CallId, CloseReason, EnclaveSession, MIN_CONNECTION_BYTES,
    Now, Output, SessionConfig, SessionEvent, TransportFailure, TransportStage,
};

const RECORDED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kms/");
const REAL_KMS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/kms/");
const SET_CLIENT: &[u8] =
    b"{\"Operation\":\"SetClient\",\"AwsAccessKeyId\":\"AKIDEXAMPLE\",\"AwsSecretAccessKey\":\"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\",\"AwsSessionToken\":\"TOKEN\"}\0";
const DECRYPT: &[u8] =
    b"{\"Operation\":\"Decrypt\",\"Ciphertext\":\"AQIDBA==\",\"RequestId\":\"r1\"}\0";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{RECORDED}{name}")).expect("fixture")
}

fn hex_file(path: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(path).expect("hex");
    let text = text.trim();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn key() -> Arc<RecipientKey> {
    let pem = std::fs::read(format!("{REAL_KMS}real-kms-decrypt-with-key.key.pem")).expect("key");
    Arc::new(RecipientKey::from_pem(Backend::DEFAULT, &pem).expect("key"))
}

/// A session on a virtual clock, with everything it emitted.
struct Harness {
    session: EnclaveSession,
    now: Now,
    start: Instant,
    key: Arc<RecipientKey>,
}

/// Outputs in a comparable form.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "short-lived test values, compared whole"
)]
enum Seen {
    Reply(Reply),
    Attest(CallId),
    KmsSend {
        call: CallId,
        host: String,
        request: Vec<u8>,
    },
    Release {
        call: CallId,
        reusable: bool,
    },
    Close(CloseReason),
}

impl Harness {
    fn new(config: SessionConfig) -> Self {
        let start = Instant::now();
        let now = Now::new(start, UNIX_EPOCH + Duration::from_secs(1_795_953_600));
        Self {
            session: EnclaveSession::new(Arc::new(config), 1, now),
            now,
            start,
            key: key(),
        }
    }

    fn default() -> Self {
        Self::new(SessionConfig::default())
    }

    /// Acts on every output, the client taking every reply at once.
    fn drain(&mut self) -> Vec<Seen> {
        let mut seen = Vec::new();
        loop {
            while let Some(output) = self.session.poll_output() {
                match output {
                    Output::Attest(call) => seen.push(Seen::Attest(call)),
                    Output::KmsSend {
                        call,
                        host,
                        request,
                        may_reuse: _,
                    } => seen.push(Seen::KmsSend {
                        call,
                        host,
                        request: request.to_vec(),
                    }),
                    Output::KmsRelease { call, reusable } => {
                        seen.push(Seen::Release { call, reusable })
                    }
                    Output::Event(_) => {}
                    Output::Close(reason) => seen.push(Seen::Close(reason)),
                }
            }
            let Some(bytes) = self.session.poll_transmit() else {
                return seen;
            };
            for frame in bytes.split(|b| *b == 0).filter(|f| !f.is_empty()) {
                seen.push(Seen::Reply(Reply::parse(frame).expect("reply parses")));
            }
            self.session.handle_client_written(self.now, bytes.len());
        }
    }

    fn client(&mut self, bytes: &[u8]) -> Vec<Seen> {
        self.session.handle_client_bytes(self.now, bytes);
        self.drain()
    }

    fn attest(&mut self, call: CallId) -> Vec<Seen> {
        let attestation = Attestation {
            key: Arc::clone(&self.key),
            document: b"attestation-document".to_vec().into(),
        };
        self.session
            .handle_attestation(self.now, call, Ok(attestation));
        self.drain()
    }

    fn kms(&mut self, call: CallId, bytes: &[u8]) -> Vec<Seen> {
        self.session.handle_kms_bytes(self.now, call, bytes);
        self.drain()
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now.advance(by);
    }

    fn fire_timer(&mut self) -> Vec<Seen> {
        let deadline = self.session.poll_timeout().expect("a timer is due");
        if deadline > self.now.instant {
            let by = deadline - self.now.instant;
            self.advance(by);
        }
        self.session.handle_timeout(self.now);
        self.drain()
    }

    /// SetClient, then a command up to its KMS request; returns the call and the request.
    fn start_call(&mut self, command: &[u8]) -> (CallId, Vec<u8>) {
        let seen = self.client(SET_CLIENT);
        assert_eq!(seen, vec![Seen::Reply(Reply::ok())]);
        let seen = self.client(command);
        let [Seen::Attest(call)] = seen[..] else {
            panic!("expected an attestation request, got {seen:?}");
        };
        let seen = self.attest(call);
        let [
            Seen::KmsSend {
                call: sent,
                ref host,
                ref request,
            },
        ] = seen[..]
        else {
            panic!("expected a KMS request, got {seen:?}");
        };
        assert_eq!(sent, call);
        assert_eq!(host, "kms.us-east-1.amazonaws.com");
        (call, request.clone())
    }
}

fn ok_reply(message: &[u8]) -> Reply {
    Reply::ok_with(
        base64::engine::general_purpose::STANDARD
            .encode(message)
            .into(),
    )
}

fn only_reply(seen: &[Seen]) -> &Reply {
    let replies: Vec<&Reply> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Reply(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1, "exactly one reply in {seen:?}");
    replies[0]
}

#[test]
fn decrypt_with_the_real_kms_capture() {
    let mut h = Harness::default();
    let (call, request) = h.start_call(DECRYPT);
    let text = String::from_utf8(request).expect("request is text");
    assert!(
        text.starts_with("POST / HTTP/1.1\r\nHost: kms.us-east-1.amazonaws.com\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nX-Amz-Target: TrentService.Decrypt\r\n"));
    assert!(text.contains("\r\nX-Amz-Date: 20261129T120000Z\r\n"));
    assert!(text.contains("\r\nX-Amz-Security-Token: TOKEN\r\n"));
    assert!(
        text.contains(
            "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        )
    );
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    assert_eq!(
        body,
        format!(
            r#"{{"CiphertextBlob":"AQIDBA==","Recipient":{{"KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256","AttestationDocument":"{}"}}}}"#,
            base64::engine::general_purpose::STANDARD.encode(b"attestation-document")
        )
    );

    let seen = h.kms(call, &fixture("decrypt-ok.http"));
    let plaintext = hex_file(&format!(
        "{REAL_KMS}real-kms-decrypt-with-key.plaintext.hex"
    ));
    let mut expected = ok_reply(&plaintext);
    expected.key_id =
        Some("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".into());
    expected.encryption_algorithm = Some("SYMMETRIC_DEFAULT".into());
    expected.request_id = Some("r1".into());
    assert_eq!(
        seen,
        vec![
            Seen::Release {
                call,
                reusable: true
            },
            Seen::Reply(expected)
        ]
    );
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now.instant + Duration::from_secs(300))
    );
}

#[test]
fn response_fed_one_byte_at_a_time_gives_the_same_reply() {
    let mut whole = Harness::default();
    let (call, _) = whole.start_call(DECRYPT);
    let expected = whole.kms(call, &fixture("decrypt-ok.http"));

    let mut bytes = Harness::default();
    let (call, _) = bytes.start_call(DECRYPT);
    let response = fixture("decrypt-ok.http");
    let mut seen = Vec::new();
    for (i, byte) in response.iter().enumerate() {
        let out = bytes.kms(call, std::slice::from_ref(byte));
        if i + 1 < response.len() {
            assert!(out.is_empty(), "output before the response ended: {out:?}");
        }
        seen.extend(out);
    }
    assert_eq!(seen, expected);
}

#[test]
fn commands_fed_one_byte_at_a_time_give_the_same_outputs() {
    let stream = [SET_CLIENT, DECRYPT].concat();
    let mut whole = Harness::default();
    let all_at_once = whole.client(&stream);
    let mut bytes = Harness::default();
    let mut one_by_one = Vec::new();
    for byte in &stream {
        one_by_one.extend(bytes.client(std::slice::from_ref(byte)));
    }
    // Replies go out through the transmit buffer, after the drain's other outputs: compare
    // each kind in its own order.
    let split = |seen: Vec<Seen>| -> (Vec<Seen>, Vec<Seen>) {
        seen.into_iter().partition(|s| matches!(s, Seen::Reply(_)))
    };
    assert_eq!(all_at_once.len(), 2, "{all_at_once:?}");
    assert_eq!(split(all_at_once), split(one_by_one));
}

#[test]
fn generate_data_key_and_generate_random() {
    let mut h = Harness::default();
    let (call, request) =
        h.start_call(b"{\"Operation\":\"GenerateDataKey\",\"KeyId\":\"alias/app\"}\0");
    assert!(
        String::from_utf8_lossy(&request)
            .contains(r#"{"KeyId":"alias/app","KeySpec":"AES_256","Recipient""#)
    );
    let seen = h.kms(call, &fixture("generatedatakey-ok.http"));
    let reply = only_reply(&seen);
    let data_key = hex_file(&format!("{RECORDED}generatedatakey-ok.plaintext.hex"));
    assert_eq!(reply.status, Status::Ok);
    assert_eq!(reply.message, ok_reply(&data_key).message);
    assert_eq!(
        reply.ciphertext_blob.as_deref(),
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(b"AQIDAHhBlobFromKmsForTheDataKey")
                .as_str()
        )
    );
    assert!(reply.key_id.is_some());

    let seen = h.client(b"{\"Operation\":\"GenerateRandom\",\"NumberOfBytes\":32}\0");
    let [Seen::Attest(call)] = seen[..] else {
        panic!("{seen:?}")
    };
    let seen = h.attest(call);
    assert!(matches!(seen[..], [Seen::KmsSend { .. }]), "{seen:?}");
    let seen = h.kms(call, &fixture("generaterandom-ok.http"));
    let random = hex_file(&format!("{RECORDED}generaterandom-ok.plaintext.hex"));
    assert_eq!(only_reply(&seen), &ok_reply(&random));
}

#[test]
fn wrong_length_of_key_material_is_refused() {
    let mut h = Harness::default();
    // The recorded envelope holds 32 bytes; ask for 16.
    let (call, _) = h.start_call(b"{\"Operation\":\"GenerateRandom\",\"NumberOfBytes\":16}\0");
    let seen = h.kms(call, &fixture("generaterandom-ok.http"));
    let reply = only_reply(&seen);
    assert_eq!(reply.error_kind, Some(ErrorKind::Internal));
    assert!(
        reply.error_message().unwrap().contains("expected 16 bytes"),
        "{reply:?}"
    );
}

#[test]
fn kms_errors_reach_the_client_with_their_type() {
    for (file, error_type, message) in [
        (
            "accessdenied-400.http",
            "AccessDeniedException",
            "Could not decrypt ciphertext: AccessDeniedException: User: arn:aws:sts::111122223333:assumed-role/app/i-0abc is not authorized",
        ),
        (
            "invalidciphertext-400.http",
            "InvalidCiphertextException",
            "Could not decrypt ciphertext: InvalidCiphertextException",
        ),
    ] {
        let mut h = Harness::default();
        let (call, _) = h.start_call(DECRYPT);
        let seen = h.kms(call, &fixture(file));
        assert_eq!(
            seen[0],
            Seen::Release {
                call,
                reusable: true
            }
        );
        let reply = only_reply(&seen);
        assert_eq!(reply.error_kind, Some(ErrorKind::Kms), "{file}");
        assert_eq!(reply.kms_error_type.as_deref(), Some(error_type));
        assert_eq!(reply.kms_status, Some(400));
        assert_eq!(reply.request_id.as_deref(), Some("r1"));
        assert!(
            reply.error_message().unwrap().starts_with(message),
            "{reply:?}"
        );
    }
}

#[test]
fn throttling_is_retried_after_backoff_then_succeeds() {
    let mut h = Harness::default();
    let (call, first) = h.start_call(DECRYPT);
    let seen = h.kms(call, &fixture("throttling-400.http"));
    assert_eq!(
        seen,
        vec![Seen::Release {
            call,
            reusable: true
        }]
    );
    let backoff = h.session.poll_timeout().expect("retry timer") - h.now.instant;
    assert!(
        (Duration::from_millis(50)..=Duration::from_millis(100)).contains(&backoff),
        "{backoff:?}"
    );
    let seen = h.fire_timer();
    let [
        Seen::KmsSend {
            call: again,
            ref request,
            ..
        },
    ] = seen[..]
    else {
        panic!("{seen:?}")
    };
    assert_eq!(again, call);
    // The throttled answer's Date showed KMS's clock a second ahead: the retry is signed at
    // KMS's time, the first request at ours.
    let date = |request: &[u8]| {
        let text = String::from_utf8_lossy(request).into_owned();
        text.lines()
            .find_map(|line| line.strip_prefix("X-Amz-Date: ").map(str::to_owned))
            .expect("X-Amz-Date")
    };
    assert_eq!(date(&first), "20261129T120000Z");
    assert_eq!(date(request), "20261129T120001Z");
    let seen = h.kms(call, &fixture("decrypt-ok.http"));
    assert_eq!(only_reply(&seen).status, Status::Ok);
}

#[test]
fn server_errors_are_retried_at_most_three_times() {
    let mut h = Harness::default();
    let (call, _) = h.start_call(DECRYPT);
    let mut sends = 1;
    loop {
        let seen = h.kms(call, &fixture("internal-500.http"));
        if let Some(reply) = seen.iter().find_map(|s| match s {
            Seen::Reply(r) => Some(r),
            _ => None,
        }) {
            assert_eq!(reply.error_kind, Some(ErrorKind::Kms));
            assert_eq!(
                reply.kms_error_type.as_deref(),
                Some("KMSInternalException")
            );
            assert_eq!(reply.kms_status, Some(500));
            break;
        }
        let seen = h.fire_timer();
        assert!(matches!(seen[..], [Seen::KmsSend { .. }]), "{seen:?}");
        sends += 1;
    }
    assert_eq!(sends, 3);
}

#[test]
fn a_silent_kms_times_out_at_the_call_deadline() {
    let mut h = Harness::default();
    let (call, _) = h.start_call(DECRYPT);
    let started = h.now.instant;
    assert_eq!(
        h.session.poll_timeout(),
        Some(started + Duration::from_secs(10))
    );
    h.advance(Duration::from_secs(9));
    h.session.handle_timeout(h.now);
    assert!(h.drain().is_empty(), "nothing before the deadline");
    let seen = h.fire_timer();
    assert_eq!(h.now.instant, started + Duration::from_secs(10));
    assert_eq!(
        seen[0],
        Seen::Release {
            call,
            reusable: false
        }
    );
    let reply = only_reply(&seen);
    assert_eq!(reply.error_kind, Some(ErrorKind::Timeout));
    assert!(
        reply.error_message().unwrap().starts_with(
            "Could not decrypt ciphertext: KMS did not answer within 10000 ms (1 attempt)"
        ),
        "{reply:?}"
    );
    // A late answer is ignored.
    assert!(h.kms(call, &fixture("decrypt-ok.http")).is_empty());
}

#[test]
fn transport_failures() {
    // TLS problems are not retried.
    let mut h = Harness::default();
    let (call, _) = h.start_call(DECRYPT);
    h.session.handle_kms_failure(
        h.now,
        call,
        TransportFailure::new(
            TransportStage::Tls,
            "invalid peer certificate: UnknownIssuer",
        ),
    );
    let seen = h.drain();
    let reply = only_reply(&seen);
    assert_eq!(reply.error_kind, Some(ErrorKind::Transport));
    assert!(reply.error_message().unwrap().contains("UnknownIssuer"));

    // A refused proxy is retried, then reported.
    let mut h = Harness::default();
    let (call, _) = h.start_call(DECRYPT);
    let mut attempts = 1;
    loop {
        h.session.handle_kms_failure(
            h.now,
            call,
            TransportFailure::new(TransportStage::Connect, "Connection refused"),
        );
        let seen = h.drain();
        assert_eq!(
            seen[0],
            Seen::Release {
                call,
                reusable: false
            }
        );
        if seen.len() > 1 {
            let reply = only_reply(&seen);
            assert_eq!(reply.error_kind, Some(ErrorKind::Transport));
            assert!(
                reply
                    .error_message()
                    .unwrap()
                    .contains("could not connect to KMS")
            );
            break;
        }
        assert!(matches!(h.fire_timer()[..], [Seen::KmsSend { .. }]));
        attempts += 1;
    }
    assert_eq!(attempts, 3);

    // A connection dropped mid-response is retried.
    let mut h = Harness::default();
    let (call, _) = h.start_call(DECRYPT);
    let response = fixture("decrypt-ok.http");
    assert!(h.kms(call, &response[..100]).is_empty());
    h.session.handle_kms_eof(h.now, call);
    assert_eq!(
        h.drain(),
        vec![Seen::Release {
            call,
            reusable: false
        }]
    );
    assert!(matches!(h.fire_timer()[..], [Seen::KmsSend { .. }]));
    assert_eq!(only_reply(&h.kms(call, &response)).status, Status::Ok);
}

#[test]
fn attestation_failure_is_reported() {
    let mut h = Harness::default();
    h.client(SET_CLIENT);
    let seen = h.client(DECRYPT);
    let [Seen::Attest(call)] = seen[..] else {
        panic!()
    };
    h.session.handle_attestation(
        h.now,
        call,
        Err(AttestationFailure {
            detail: "NSM: InternalError".into(),
        }),
    );
    let seen = h.drain();
    let reply = only_reply(&seen);
    assert_eq!(reply.error_kind, Some(ErrorKind::Attestation));
    assert_eq!(
        reply.error_message(),
        Some("Could not decrypt ciphertext: attestation failed: NSM: InternalError")
    );
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let mut h = Harness::default();
    let stream = [
        &b"{\"Operation\":\"Decrypt\",\"Ciphertext\":\"AAAA\",\"RequestId\":\"early\"}\0"[..],
        SET_CLIENT,
        DECRYPT,
        b"{\"Operation\":\"Nope\",\"RequestId\":\"after\"}\0",
    ]
    .concat();
    let seen = h.client(&stream);
    assert_eq!(seen.len(), 3, "{seen:?}");
    let Seen::Attest(call) = seen[0] else {
        panic!()
    };
    let Seen::Reply(first) = &seen[1] else {
        panic!()
    };
    assert_eq!(first.error_kind, Some(ErrorKind::NoClient));
    assert_eq!(first.request_id.as_deref(), Some("early"));
    assert_eq!(seen[2], Seen::Reply(Reply::ok()));
    let seen = h.attest(call);
    assert!(matches!(seen[..], [Seen::KmsSend { .. }]));
    let seen = h.kms(call, &fixture("decrypt-ok.http"));
    let replies: Vec<_> = seen
        .iter()
        .filter_map(|s| {
            if let Seen::Reply(r) = s {
                Some(r)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0].request_id.as_deref(), Some("r1"));
    assert_eq!(replies[0].status, Status::Ok);
    assert_eq!(replies[1].request_id.as_deref(), Some("after"));
    assert_eq!(replies[1].error_message(), Some("Operation not recognized"));
}

#[test]
fn region_rules_and_a_rejected_set_client_keeps_the_old_client() {
    let config = SessionConfig {
        region: Some("eu-west-1".into()),
        ..SessionConfig::default()
    };
    let mut h = Harness::new(config);
    let set = |region: &str| {
        format!(
            "{{\"Operation\":\"SetClient\",\"AwsAccessKeyId\":\"AKID\",\"AwsSecretAccessKey\":\"S\",\"AwsRegion\":\"{region}\"}}\0"
        )
    };
    assert_eq!(
        h.client(set("eu-west-1").as_bytes()),
        vec![Seen::Reply(Reply::ok())]
    );
    let seen = h.client(set("us-east-1").as_bytes());
    assert_eq!(
        only_reply(&seen).error_message(),
        Some(
            "Could not set region correctly, check configuration.: the enclave is configured for a different region than AwsRegion"
        )
    );
    let seen = h.client(set("bad region!").as_bytes());
    assert!(
        only_reply(&seen)
            .error_message()
            .unwrap()
            .starts_with("Could not set region correctly")
    );
    let seen = h.client(DECRYPT);
    let [Seen::Attest(call)] = seen[..] else {
        panic!("old client still set: {seen:?}")
    };
    let seen = h.attest(call);
    let [
        Seen::KmsSend {
            ref host,
            ref request,
            ..
        },
    ] = seen[..]
    else {
        panic!()
    };
    assert_eq!(host, "kms.eu-west-1.amazonaws.com");
    assert!(
        String::from_utf8_lossy(request)
            .contains("Credential=AKID/20261129/eu-west-1/kms/aws4_request")
    );
}

#[test]
fn endpoint_override_changes_the_host_only() {
    let config = SessionConfig {
        endpoint: Some("kms-fips.us-east-1.amazonaws.com".into()),
        ..SessionConfig::default()
    };
    let mut h = Harness::new(config);
    h.client(SET_CLIENT);
    let seen = h.client(DECRYPT);
    let [Seen::Attest(call)] = seen[..] else {
        panic!()
    };
    let seen = h.attest(call);
    let [
        Seen::KmsSend {
            ref host,
            ref request,
            ..
        },
    ] = seen[..]
    else {
        panic!()
    };
    assert_eq!(host, "kms-fips.us-east-1.amazonaws.com");
    assert!(String::from_utf8_lossy(request).contains("/us-east-1/kms/aws4_request"));
}

#[test]
fn oversized_message_gets_upstream_error_then_close() {
    let config = SessionConfig {
        max_message_bytes: 8192,
        ..SessionConfig::default()
    };
    let mut h = Harness::new(config);
    let seen = h.client(&vec![b'x'; 8192]);
    assert_eq!(
        seen,
        vec![
            Seen::Reply(Reply::error(
                ErrorKind::BadRequest,
                "Message size too large."
            )),
            Seen::Close(CloseReason::MessageTooLarge)
        ]
    );
    assert!(h.session.is_closed());
    assert!(h.client(SET_CLIENT).is_empty());
}

#[test]
fn eof_answers_what_is_queued_then_closes() {
    let mut h = Harness::default();
    h.client(SET_CLIENT);
    let seen = h.client(DECRYPT);
    let [Seen::Attest(call)] = seen[..] else {
        panic!()
    };
    h.session.handle_client_eof(h.now);
    assert!(h.drain().is_empty(), "waits for the call");
    assert!(!h.session.wants_client_bytes());
    h.attest(call);
    let seen = h.kms(call, &fixture("decrypt-ok.http"));
    assert_eq!(seen.last(), Some(&Seen::Close(CloseReason::ClientClosed)));
    assert_eq!(
        seen.iter().filter(|s| matches!(s, Seen::Reply(_))).count(),
        1
    );
}

#[test]
fn idle_connections_close() {
    let mut h = Harness::default();
    h.client(SET_CLIENT);
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.start + Duration::from_secs(300))
    );
    assert_eq!(h.fire_timer(), vec![Seen::Close(CloseReason::IdleTimeout)]);
    assert_eq!(h.session.poll_timeout(), None);
}

/// The idle timeout does not run while a call is in flight, however long KMS takes: a call
/// longer than it is answered, and the idle time counts from that reply.
#[test]
fn the_idle_timer_waits_while_a_call_is_in_flight() {
    let mut h = Harness::new(SessionConfig {
        idle_timeout: Some(Duration::from_secs(1)),
        ..SessionConfig::default()
    });
    let (call, _) = h.start_call(DECRYPT);
    // Only the call's deadline is due.
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now.instant + Duration::from_secs(10))
    );
    h.advance(Duration::from_secs(5));
    h.session.handle_timeout(h.now);
    assert!(h.drain().is_empty(), "nothing 5 s into a call");
    let seen = h.kms(call, &fixture("decrypt-ok.http"));
    assert_eq!(only_reply(&seen).status, Status::Ok);
    let replied = h.now.instant;
    assert_eq!(h.fire_timer(), vec![Seen::Close(CloseReason::IdleTimeout)]);
    assert_eq!(h.now.instant, replied + Duration::from_secs(1));
}

/// A `Decrypt` whose encryption context holds one value of `n` bytes: about `n` bytes parsed.
fn big_decrypt(n: usize) -> Vec<u8> {
    let mut bytes = format!(
        "{{\"Operation\":\"Decrypt\",\"Ciphertext\":\"AQIDBA==\",\"EncryptionContext\":{{\"k\":\"{}\"}}}}",
        "x".repeat(n)
    )
    .into_bytes();
    bytes.push(0);
    bytes
}

/// The smallest budget: commands are parsed while they hold at most 16 KiB.
fn small_budget() -> SessionConfig {
    SessionConfig {
        max_connection_bytes: MIN_CONNECTION_BYTES,
        ..SessionConfig::default()
    }
}

#[test]
fn backpressure_stops_reading_when_parsed_commands_hold_a_quarter_of_the_budget() {
    let mut h = Harness::new(small_budget());
    h.client(SET_CLIENT);
    let big = big_decrypt(12_000);
    let three: Vec<u8> = [&big[..], &big, &big].concat();
    let seen = h.client(&three);
    assert!(matches!(seen[..], [Seen::Attest(_)]));
    assert!(
        !h.session.wants_client_bytes(),
        "two commands of 12 KB wait behind the active call: more than 16 KiB"
    );
    assert!(
        h.session.held_bytes() > 24_000,
        "{}",
        h.session.held_bytes()
    );

    // Small commands: reading stops at the same quarter, after many more of them.
    let mut h = Harness::new(small_budget());
    h.client(SET_CLIENT);
    let many: Vec<u8> = DECRYPT.repeat(400);
    let seen = h.client(&many);
    assert!(matches!(seen[..], [Seen::Attest(_)]));
    assert!(!h.session.wants_client_bytes());
    let held = h.session.held_bytes();
    assert!(
        held <= many.len() + MIN_CONNECTION_BYTES / 2,
        "{held} bytes held"
    );
}

#[test]
fn a_command_too_large_once_parsed_is_refused_and_the_connection_goes_on() {
    let mut h = Harness::new(small_budget());
    h.client(SET_CLIENT);
    // 2,000 one-letter keys: 12 KB on the wire, far more once parsed.
    let pairs: Vec<String> = (0..2000).map(|i| format!("\"{i}\":\"v\"")).collect();
    let mut message = format!(
        "{{\"Operation\":\"Decrypt\",\"Ciphertext\":\"AQIDBA==\",\"RequestId\":\"big\",\"EncryptionContext\":{{{}}}}}",
        pairs.join(",")
    )
    .into_bytes();
    message.push(0);
    assert!(message.len() < 32 * 1024);
    let seen = h.client(&message);
    let reply = only_reply(&seen);
    assert_eq!(reply.status, Status::Error);
    assert_eq!(reply.error_kind, Some(ErrorKind::BadRequest));
    assert_eq!(reply.request_id.as_deref(), Some("big"));
    let text = reply
        .message
        .as_ref()
        .map(|m| m.expose().to_owned())
        .unwrap_or_default();
    assert!(
        text.starts_with("Message size too large.: once parsed it needs about "),
        "{text}"
    );
    assert!(
        text.ends_with("more than the 16384 one command may hold"),
        "{text}"
    );
    assert!(!h.session.is_closed());
    // The next command is served as usual.
    let seen = h.client(DECRYPT);
    assert!(matches!(seen[..], [Seen::Attest(_)]), "{seen:?}");
}

#[test]
fn events_never_carry_secrets() {
    let mut h = Harness::default();
    h.session.handle_client_bytes(h.now, SET_CLIENT);
    let mut events = Vec::new();
    while let Some(output) = h.session.poll_output() {
        if let Output::Event(event) = output {
            events.push(format!("{event} {event:?}"));
        }
    }
    assert!(events.iter().any(|e| e.contains("client set")));
    for event in &events {
        assert!(!event.contains("wJalrXUtnFEMI"), "{event}");
        assert!(!event.contains("TOKEN"), "{event}");
    }
}

#[test]
fn an_nsm_that_never_answers_times_out_as_attestation_timeout() {
    let mut h = Harness::default();
    h.client(SET_CLIENT);
    let seen = h.client(DECRYPT);
    let [Seen::Attest(call)] = seen[..] else {
        panic!("{seen:?}")
    };
    let seen = h.fire_timer();
    let reply = only_reply(&seen);
    assert_eq!(reply.error_kind, Some(ErrorKind::Timeout));
    assert_eq!(
        reply.error_message(),
        Some("Could not decrypt ciphertext: no attestation document from the NSM within 10000 ms")
    );
    // The late document is ignored: no KMS request follows.
    assert!(h.attest(call).is_empty());
}

#[test]
fn a_message_trickled_past_the_message_timeout_closes_the_connection() {
    let mut h = Harness::default();
    h.client(SET_CLIENT);
    let (first, rest) = DECRYPT.split_at(10);
    assert!(h.client(first).is_empty());
    let due = h.now.instant + Duration::from_secs(30);
    assert_eq!(h.session.poll_timeout(), Some(due));
    // A byte every 10 s keeps the idle timer back but not the message's deadline.
    for byte in &rest[..2] {
        h.advance(Duration::from_secs(10));
        h.session.handle_timeout(h.now);
        let seen = h.client(std::slice::from_ref(byte));
        assert!(seen.is_empty(), "{seen:?}");
        assert_eq!(h.session.poll_timeout(), Some(due));
    }
    assert_eq!(
        h.fire_timer(),
        vec![Seen::Close(CloseReason::MessageTimeout)]
    );
    assert_eq!(h.now.instant, due);
    assert!(!h.session.wants_client_bytes());
}

#[test]
fn each_message_has_its_own_time_and_those_before_a_late_one_are_answered() {
    let config = SessionConfig {
        kms_call_timeout: Duration::from_secs(60),
        ..SessionConfig::default()
    };
    let mut h = Harness::new(config);
    h.client(SET_CLIENT);
    // A whole message after 25 s of trickling is in time, and the next starts its own clock.
    let (first, rest) = DECRYPT.split_at(10);
    h.client(first);
    h.advance(Duration::from_secs(25));
    let mut bytes = rest.to_vec();
    bytes.extend_from_slice(&DECRYPT[..5]);
    let seen = h.client(&bytes);
    let [Seen::Attest(call)] = seen[..] else {
        panic!("expected the Decrypt to start, got {seen:?}")
    };
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now.instant + Duration::from_secs(30)),
        "the partial message has 30 s from now, the call 60 s"
    );
    // The partial message runs out while the call is in flight: reading stops, the call
    // still gets its reply, then the connection closes.
    h.attest(call);
    h.advance(Duration::from_secs(30));
    h.session.handle_timeout(h.now);
    assert!(!h.session.wants_client_bytes());
    assert!(h.drain().is_empty(), "waits for the call");
    let seen = h.kms(call, &fixture("decrypt-ok.http"));
    assert_eq!(only_reply(&seen).status, Status::Ok);
    assert_eq!(seen.last(), Some(&Seen::Close(CloseReason::MessageTimeout)));
}

#[test]
fn the_message_clock_stops_while_backpressure_holds_reading() {
    let mut h = Harness::new(small_budget());
    h.client(SET_CLIENT);
    let big = big_decrypt(12_000);
    let bytes: Vec<u8> = [&big[..], &big, &big, &DECRYPT[..7]].concat();
    let seen = h.client(&bytes);
    let [Seen::Attest(call)] = seen[..] else {
        panic!("{seen:?}")
    };
    assert!(
        !h.session.wants_client_bytes(),
        "two queued behind the call"
    );
    h.attest(call);
    // KMS is slow: 9 s, within the call's deadline but long past nothing for the client.
    h.advance(Duration::from_secs(9));
    let seen = h.kms(call, &fixture("decrypt-ok.http"));
    let next = seen.iter().find_map(|s| match s {
        Seen::Attest(next) => Some(*next),
        _ => None,
    });
    assert!(next.is_some(), "the queued Decrypt starts: {seen:?}");
    assert!(h.session.wants_client_bytes());
    // The partial third message's clock started when reading resumed, not when it arrived.
    let resumed = h.now.instant;
    for _ in 0..3 {
        h.advance(Duration::from_secs(9));
        h.session.handle_timeout(h.now);
    }
    assert!(!h.session.is_closed());
    assert!(h.session.poll_timeout() <= Some(resumed + Duration::from_secs(30)));
}

#[test]
fn no_message_timeout_when_it_is_off() {
    let config = SessionConfig {
        message_timeout: None,
        ..SessionConfig::default()
    };
    let mut h = Harness::new(config);
    h.client(&SET_CLIENT[..5]);
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.start + Duration::from_secs(300)),
        "only the idle timer"
    );
}

/// A 200 answer to Decrypt or GenerateDataKey carrying `envelope` as its
/// `CiphertextForRecipient`, shaped like `decrypt-ok.http`.
fn kms_answer_with(envelope: &[u8]) -> Vec<u8> {
    let body = format!(
        r#"{{"CiphertextBlob":"QUFBQQ==","CiphertextForRecipient":"{}","EncryptionAlgorithm":"SYMMETRIC_DEFAULT","KeyId":"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab","Plaintext":null}}"#,
        base64::engine::general_purpose::STANDARD.encode(envelope)
    );
    format!(
        "HTTP/1.1 200 OK\r\nx-amzn-RequestId: 5d1f8a34-6b1e-4c2a-9f4e-0e1c2d3b4a59\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The raw bytes sent to the client and the unwrap-failure details logged after `command`
/// gets `answer` from KMS.
fn client_bytes_for(command: &[u8], answer: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut h = Harness::default();
    let (call, _) = h.start_call(command);
    h.session.handle_kms_bytes(h.now, call, answer);
    let mut details = Vec::new();
    while let Some(output) = h.session.poll_output() {
        if let Output::Event(SessionEvent::UnwrapFailed { detail, .. }) = output {
            details.push(detail);
        }
    }
    let bytes = h.session.poll_transmit().expect("a reply").to_vec();
    (bytes, details)
}

#[test]
fn every_cms_failure_gets_the_same_reply_bytes() {
    use crate::cms_common::*;
    let capture = keyed_capture();
    // Each corruption fails in a different place: parse, key id, RSA-OAEP, AES padding.
    let corrupted: [(&str, Vec<u8>); 7] = [
        // The plaintext is 32 bytes, so the last block is all padding; flipping the block
        // before it turns the final padding byte into 0x00.
        (
            "bad padding",
            flip(&capture, KEYED_CONTENT_BYTES + 31, 0x10),
        ),
        ("another key id", flip(&capture, SKI_START + 31, 0x01)),
        (
            "RSA-OAEP failure",
            flip(&capture, ENC_KEY_START + 100, 0x40),
        ),
        ("content cipher OID", flip(&capture, AES_OID_LAST, 0x01)),
        ("key encryption OID", flip(&capture, OAEP_OID_LAST, 0x01)),
        ("truncated", capture[..300].to_vec()),
        ("not CMS at all", b"garbage".to_vec()),
    ];
    for command in [
        DECRYPT,
        &b"{\"Operation\":\"GenerateDataKey\",\"KeyId\":\"alias/app\",\"RequestId\":\"r1\"}\0"[..],
    ] {
        let mut first: Option<Vec<u8>> = None;
        let mut details = Vec::new();
        for (what, envelope) in &corrupted {
            let (bytes, logged) = client_bytes_for(command, &kms_answer_with(envelope));
            let [detail] = &logged[..] else {
                panic!("{what}: one debug detail expected, got {logged:?}");
            };
            details.push(detail.clone());
            match &first {
                None => first = Some(bytes),
                Some(first) => assert_eq!(
                    String::from_utf8_lossy(&bytes),
                    String::from_utf8_lossy(first),
                    "{what}"
                ),
            }
        }
        // The causes really differ; only the log tells them apart.
        let mut distinct = details.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), corrupted.len(), "{details:?}");

        let first = first.expect("a reply");
        let reply = Reply::parse(&first[..first.len() - 1]).expect("reply parses");
        assert_eq!(reply.error_kind, Some(ErrorKind::Internal));
        assert_eq!(reply.request_id.as_deref(), Some("r1"));
        let expected = if command == DECRYPT {
            "Could not decrypt ciphertext: the response from KMS could not be opened"
        } else {
            "Could not generate data key: the response from KMS could not be opened"
        };
        assert_eq!(reply.error_message(), Some(expected));
    }
    // The uncorrupted capture still opens through the same path.
    let (bytes, logged) = client_bytes_for(DECRYPT, &kms_answer_with(&capture));
    assert!(logged.is_empty(), "{logged:?}");
    let reply = Reply::parse(&bytes[..bytes.len() - 1]).expect("reply parses");
    assert_eq!(reply.status, Status::Ok);
}

/// Every output, the client taking none of its replies.
fn outputs_of(session: &mut EnclaveSession) -> Vec<Output> {
    std::iter::from_fn(|| session.poll_output()).collect()
}

#[test]
fn a_client_that_does_not_take_its_replies_is_cut_at_the_message_timeout() {
    let mut h = Harness::default();
    let queued = h.now.instant;
    h.session.handle_client_bytes(h.now, SET_CLIENT);
    let _ = outputs_of(&mut h.session);
    let reply = h.session.poll_transmit().expect("the SetClient reply");
    // The reply's deadline, not the idle timeout, while it waits to be taken.
    let deadline = queued + Duration::from_secs(30);
    assert_eq!(h.session.poll_timeout(), Some(deadline));
    // Taking part of it is progress for the idle timer, not for the reply's deadline.
    h.advance(Duration::from_secs(20));
    h.session.handle_client_written(h.now, reply.len() / 2);
    assert_eq!(h.session.poll_timeout(), Some(deadline));
    h.advance(Duration::from_millis(9_999));
    h.session.handle_timeout(h.now);
    assert!(outputs_of(&mut h.session).is_empty());
    assert!(!h.session.is_closed());
    h.advance(Duration::from_millis(1));
    h.session.handle_timeout(h.now);
    let outputs = outputs_of(&mut h.session);
    assert!(
        matches!(outputs[..], [Output::Close(CloseReason::WriteTimeout)]),
        "{outputs:?}"
    );
    assert!(h.session.is_closed());
    assert!(h.session.poll_transmit().is_none(), "the rest is dropped");
    assert_eq!(h.session.poll_timeout(), None);
}

#[test]
fn the_idle_timer_counts_from_the_last_reply_taken() {
    let mut h = Harness::default();
    h.session.handle_client_bytes(h.now, SET_CLIENT);
    let _ = outputs_of(&mut h.session);
    let reply = h.session.poll_transmit().expect("a reply");
    h.advance(Duration::from_secs(25));
    h.session.handle_client_written(h.now, reply.len());
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now.instant + Duration::from_secs(300))
    );
}

#[test]
fn the_end_of_stream_closes_only_after_every_reply_is_taken() {
    let mut h = Harness::default();
    h.session
        .handle_client_bytes(h.now, &[SET_CLIENT, b"{}\0"].concat());
    h.session.handle_client_eof(h.now);
    assert!(
        !outputs_of(&mut h.session)
            .iter()
            .any(|o| matches!(o, Output::Close(_)))
    );
    let replies = h
        .session
        .poll_transmit()
        .expect("two replies in one transmit");
    assert_eq!(replies.iter().filter(|b| **b == 0).count(), 2);
    h.session.handle_client_written(h.now, replies.len() - 1);
    assert!(outputs_of(&mut h.session).is_empty());
    h.session.handle_client_written(h.now, 1);
    let outputs = outputs_of(&mut h.session);
    assert!(
        matches!(outputs[..], [Output::Close(CloseReason::ClientClosed)]),
        "{outputs:?}"
    );
}

#[test]
fn a_flood_of_empty_frames_is_answered_within_the_budget() {
    let mut h = Harness::new(small_budget());
    let flood = vec![0u8; 16 * 1024];
    h.session.handle_client_bytes(h.now, &flood);
    let _ = outputs_of(&mut h.session);
    let config = small_budget();
    let held = h.session.held_bytes();
    assert!(
        held <= config.connection_bound(),
        "{held} > {}",
        config.connection_bound()
    );
    assert!(
        !h.session.wants_client_bytes(),
        "no reading while replies wait"
    );
    // Every frame is answered as the client takes the replies, in bounded steps.
    let mut replies = 0;
    while let Some(bytes) = h.session.poll_transmit() {
        assert!(bytes.len() <= MIN_CONNECTION_BYTES / 2);
        replies += bytes.iter().filter(|b| **b == 0).count();
        h.session.handle_client_written(h.now, bytes.len());
        assert!(h.session.held_bytes() <= config.connection_bound());
        let _ = outputs_of(&mut h.session);
    }
    assert_eq!(replies, flood.len());
    assert!(h.session.wants_client_bytes());
}

#[test]
fn garbage_logs_a_burst_then_a_count_of_what_was_left_out() {
    let mut h = Harness::default();
    h.session.handle_client_bytes(h.now, &b"x\0".repeat(100));
    let events: Vec<SessionEvent> = outputs_of(&mut h.session)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(event) => Some(event),
            _ => None,
        })
        .collect();
    let rejected = |events: &[SessionEvent]| {
        events
            .iter()
            .filter(|e| matches!(e, SessionEvent::CommandRejected { .. }))
            .count()
    };
    assert_eq!(rejected(&events), 10, "{events:?}");
    let replies = h.session.poll_transmit().expect("replies");
    assert_eq!(
        replies.iter().filter(|b| **b == 0).count(),
        100,
        "all answered"
    );
    h.session.handle_client_written(h.now, replies.len());
    // A minute later the next one is logged, after the count of those left out.
    h.advance(Duration::from_secs(60));
    h.session.handle_client_bytes(h.now, b"x\0");
    let events: Vec<SessionEvent> = outputs_of(&mut h.session)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(event) => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(events[0], SessionEvent::Suppressed { replies: 90 });
    assert_eq!(rejected(&events), 1);
}

#[test]
fn a_pooled_connection_closed_before_answering_is_replaced_within_the_attempt() {
    let mut h = Harness::default();
    let (call, request) = h.start_call(DECRYPT);
    h.session.handle_kms_sent(call, true);
    h.session.handle_kms_eof(h.now, call);
    let outputs = outputs_of(&mut h.session);
    let [
        Output::KmsRelease {
            call: released,
            reusable: false,
        },
        Output::KmsSend {
            call: again,
            request: ref resent,
            may_reuse: false,
            ..
        },
    ] = outputs[..]
    else {
        panic!("{outputs:?}")
    };
    assert_eq!((released, again), (call, call));
    assert_eq!(
        resent.to_vec(),
        request,
        "the same request, not a new attempt"
    );
    // On the fresh connection an end of stream is a failure like any other: retried after a
    // backoff as attempt 2.
    h.session.handle_kms_sent(call, false);
    h.session.handle_kms_eof(h.now, call);
    let outputs = outputs_of(&mut h.session);
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Event(SessionEvent::KmsRetry { .. }))),
        "{outputs:?}"
    );
    assert!(!outputs.iter().any(|o| matches!(o, Output::KmsSend { .. })));
}

#[test]
fn a_pooled_connection_that_answered_in_part_is_not_resent() {
    let mut h = Harness::default();
    let (call, _) = h.start_call(DECRYPT);
    h.session.handle_kms_sent(call, true);
    h.session.handle_kms_bytes(h.now, call, b"HTTP/1.1 200");
    h.session.handle_kms_eof(h.now, call);
    let outputs = outputs_of(&mut h.session);
    assert!(!outputs.iter().any(|o| matches!(o, Output::KmsSend { .. })));
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Event(SessionEvent::KmsRetry { .. }))),
        "{outputs:?}"
    );
}

/// A 200 answer with `body`.
fn kms_ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn generate_data_key_pair_and_derive_shared_secret() {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let mut h = Harness::default();

    // The spec goes to KMS as given, whether or not this build knows it.
    let (call, request) = h.start_call(
        b"{\"Operation\":\"GenerateDataKeyPair\",\"KeyId\":\"alias/app\",\"KeyPairSpec\":\"ECC_NIST_P999\",\"EncryptionContext\":{\"app\":\"x\"},\"RequestId\":\"p\"}\0",
    );
    let request = String::from_utf8_lossy(&request);
    assert!(request.contains("X-Amz-Target: TrentService.GenerateDataKeyPair\r\n"));
    assert!(
        request.contains(
            r#"{"KeyId":"alias/app","KeyPairSpec":"ECC_NIST_P999","EncryptionContext":{"app":"x"},"Recipient":{"KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256","AttestationDocument":""#
        ),
        "{request}"
    );
    let private_key = b"\x30\x81\x87 a PKCS #8 private key".to_vec();
    let body = format!(
        r#"{{"CiphertextForRecipient":"{}","KeyId":"{arn}","KeyPairSpec":"ECC_NIST_P999","PrivateKeyCiphertextBlob":"{}","PrivateKeyPlaintext":null,"PublicKey":"{}"}}"#,
        b64(&crate::cms_common::sealed_for(&h.key, &private_key)),
        b64(b"encrypted private key"),
        b64(b"public key"),
    );
    let seen = h.kms(call, &kms_ok(&body));
    let reply = only_reply(&seen);
    assert_eq!(reply.status, Status::Ok, "{reply:?}");
    assert_eq!(reply.message, ok_reply(&private_key).message);
    assert_eq!(
        reply.public_key.as_deref(),
        Some(b64(b"public key").as_str())
    );
    assert_eq!(
        reply.private_key_ciphertext_blob.as_deref(),
        Some(b64(b"encrypted private key").as_str())
    );
    assert_eq!(reply.key_pair_spec.as_deref(), Some("ECC_NIST_P999"));
    assert_eq!(reply.key_id.as_deref(), Some(arn));
    assert_eq!(reply.request_id.as_deref(), Some("p"));

    // A key pair answer without its public key is refused, not passed on half.
    let (call, _) = h.start_call(
        b"{\"Operation\":\"GenerateDataKeyPair\",\"KeyId\":\"alias/app\",\"KeyPairSpec\":\"RSA_2048\"}\0",
    );
    let body = format!(
        r#"{{"CiphertextForRecipient":"{}","PrivateKeyCiphertextBlob":"{}"}}"#,
        b64(&crate::cms_common::sealed_for(&h.key, &private_key)),
        b64(b"encrypted private key"),
    );
    let seen = h.kms(call, &kms_ok(&body));
    let reply = only_reply(&seen);
    assert_eq!(reply.error_kind, Some(ErrorKind::Internal));
    assert!(
        reply
            .error_message()
            .unwrap()
            .starts_with("Could not generate data key pair: ")
            && reply.error_message().unwrap().contains("no PublicKey"),
        "{reply:?}"
    );

    let peer = b"\x30\x59 the peer's SubjectPublicKeyInfo";
    let command = format!(
        "{{\"Operation\":\"DeriveSharedSecret\",\"KeyId\":\"alias/ecdh\",\"PublicKey\":\"{}\"}}\0",
        b64(peer)
    );
    let (call, request) = h.start_call(command.as_bytes());
    let request = String::from_utf8_lossy(&request);
    assert!(request.contains("X-Amz-Target: TrentService.DeriveSharedSecret\r\n"));
    let expected_body = format!(
        r#"{{"KeyId":"alias/ecdh","KeyAgreementAlgorithm":"ECDH","PublicKey":"{}","Recipient""#,
        b64(peer)
    );
    assert!(request.contains(&expected_body), "{request}");
    let secret = [0x5a; 32];
    let body = format!(
        r#"{{"CiphertextForRecipient":"{}","KeyAgreementAlgorithm":"ECDH","KeyId":"{arn}","KeyOrigin":"AWS_KMS","SharedSecret":null}}"#,
        b64(&crate::cms_common::sealed_for(&h.key, &secret)),
    );
    let seen = h.kms(call, &kms_ok(&body));
    let reply = only_reply(&seen);
    assert_eq!(reply.message, ok_reply(&secret).message);
    assert_eq!(reply.key_agreement_algorithm.as_deref(), Some("ECDH"));
    assert_eq!(reply.key_origin.as_deref(), Some("AWS_KMS"));

    // A shared secret in the clear is refused: an attested call never takes one.
    let (call, _) = h.start_call(command.as_bytes());
    let body = format!(r#"{{"KeyId":"{arn}","SharedSecret":"{}"}}"#, b64(&secret));
    let seen = h.kms(call, &kms_ok(&body));
    let reply = only_reply(&seen);
    assert_eq!(reply.status, Status::Error);
    assert!(
        reply
            .error_message()
            .unwrap()
            .starts_with("Could not derive shared secret: "),
        "{reply:?}"
    );
    assert!(!format!("{reply:?}").contains(&b64(&secret)));
}
