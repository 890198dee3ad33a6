//! A whole `EnclaveSession` fed an arbitrary interleaving of inputs — valid commands or random
//! client bytes, attestation results with the published fixture key, KMS bytes (recorded
//! responses, whose envelopes that key opens, cut and flipped; or random), connection failures,
//! time passing, inputs for calls that are over, and a client taking its replies in arbitrary
//! pieces (or not at all). It must never panic, never reply more often than it was asked, never
//! hold more than its byte bound, only work on one call at a time, ignore inputs for finished
//! calls, go silent after closing, and never show a credential or a plaintext in an event, a
//! close reason or a KMS request (the secret key never leaves the enclave).
//!
//! Input layout (see `fuzz/seed.sh`, which encodes a few full exchanges): two bytes of session
//! settings, then the steps, each preceded by an odd byte and the list ended by an even one.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use arbitrary::Arbitrary;
use base64::Engine as _;
use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::session::{
    Attestation, AttestationFailure, CallId, EnclaveSession, Now, Output, SessionConfig,
    TransportFailure, TransportStage,
};
use libfuzzer_sys::fuzz_target;

const KEY_PEM: &[u8] = include_bytes!("../../fixtures/kms/real-kms-decrypt-with-key.key.pem");
const RESPONSES: [&[u8]; 7] = [
    include_bytes!("../../core/tests/fixtures/kms/decrypt-ok.http"),
    include_bytes!("../../core/tests/fixtures/kms/generatedatakey-ok.http"),
    include_bytes!("../../core/tests/fixtures/kms/generaterandom-ok.http"),
    include_bytes!("../../core/tests/fixtures/kms/accessdenied-400.http"),
    include_bytes!("../../core/tests/fixtures/kms/invalidciphertext-400.http"),
    include_bytes!("../../core/tests/fixtures/kms/throttling-400.http"),
    include_bytes!("../../core/tests/fixtures/kms/internal-500.http"),
];
/// The plaintexts the recorded successes carry, hex.
const PLAINTEXTS: [&str; 3] = [
    include_str!("../../fixtures/kms/real-kms-decrypt-with-key.plaintext.hex"),
    include_str!("../../core/tests/fixtures/kms/generatedatakey-ok.plaintext.hex"),
    include_str!("../../core/tests/fixtures/kms/generaterandom-ok.plaintext.hex"),
];
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEFuzzSessionToken0123456789";
const COMMANDS: [&[u8]; 9] = [
    b"{\"Operation\":\"SetClient\",\"AwsAccessKeyId\":\"AKIDEXAMPLE\",\"AwsSecretAccessKey\":\"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\",\"AwsSessionToken\":\"FwoGZXIvYXdzEFuzzSessionToken0123456789\",\"AwsRegion\":\"us-east-1\"}\0",
    b"{\"Operation\":\"Decrypt\",\"Ciphertext\":\"AQIDBA==\"}\0",
    b"{\"Operation\":\"GenerateDataKey\",\"KeyId\":\"alias/a\"}\0",
    b"{\"Operation\":\"GenerateRandom\",\"NumberOfBytes\":32}\0",
    b"{\"Operation\":\"SetClient\",\"AwsAccessKeyId\":\"AKIDEXAMPLE\",\"AwsSecretAccessKey\":\"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\"}\0",
    b"{\"Operation\":\"Decrypt\",\"Ciphertext\":\"AQIDBA==\",\"RequestId\":\"r-1\",\"EncryptionContext\":{\"k\":\"v\"},\"KeyId\":\"alias/a\"}\0",
    b"{\"Operation\":\"GenerateDataKey\",\"KeyId\":\"alias/a\",\"KeySpec\":\"AES_128\"}\0",
    b"{\"Operation\":\"Nope\"}\0",
    b"{\"Operation\":\"SetClient\",\"AwsAccessKeyId\":\"AKIDEXAMPLE\",\"AwsSecretAccessKey\":\"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\",\"AwsRegion\":\"eu-west-1\"}\0",
];

fn key() -> Arc<RecipientKey> {
    static KEY: OnceLock<Arc<RecipientKey>> = OnceLock::new();
    Arc::clone(
        KEY.get_or_init(|| {
            Arc::new(RecipientKey::from_pem(Backend::DEFAULT, KEY_PEM).expect("key"))
        }),
    )
}

/// Texts no event, close reason or KMS request may contain: the secret key and the plaintexts
/// (hex and base64).
fn forbidden() -> &'static [String] {
    static TEXTS: OnceLock<Vec<String>> = OnceLock::new();
    TEXTS.get_or_init(|| {
        let mut texts = vec![SECRET_KEY.to_owned()];
        for hex in PLAINTEXTS {
            let hex = hex.trim();
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            texts.push(base64::engine::general_purpose::STANDARD.encode(&bytes));
            texts.push(hex.to_owned());
        }
        texts
    })
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in forbidden() {
        assert!(
            !text.contains(secret.as_str()),
            "{what} shows a secret: {text}"
        );
    }
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// The enclave's own region: none, or `us-east-1`.
    region: bool,
    /// Attempts per KMS call, 1 to 3.
    attempts: u8,
    steps: Vec<Step<'a>>,
}

/// One input to the session. Variants without byte slices first: `seed.sh` encodes those.
#[derive(Arbitrary, Debug)]
enum Step<'a> {
    Command(u8),
    Attest {
        ok: bool,
    },
    KmsRecorded {
        which: u8,
        cut: u16,
        flip: Option<(u16, u8)>,
    },
    Advance(u16),
    Timeout,
    KmsEof,
    KmsFailure(u8),
    ClientEof,
    /// The client takes up to this many bytes of its replies.
    Take(u16),
    /// The current call's request is written, on a pooled connection or not.
    KmsSent(bool),
    /// An input for an earlier call (or a call id never handed out).
    Stale {
        which: u8,
        input: u8,
    },
    ClientBytes(&'a [u8]),
    KmsBytes(&'a [u8]),
}

/// What the harness knows about the session.
#[derive(Default)]
struct Seen {
    /// Every call id handed out, in order.
    calls: Vec<CallId>,
    /// The last call started.
    active: Option<CallId>,
    replies: usize,
    /// Bytes from `poll_transmit` the client has not taken yet.
    outbox: Vec<u8>,
    closed: bool,
}

impl Seen {
    fn drain(&mut self, session: &mut EnclaveSession) -> usize {
        let mut count = 0;
        while let Some(output) = session.poll_output() {
            count += 1;
            assert!(!self.closed, "output after Close: {output:?}");
            match output {
                Output::Attest(id) => {
                    assert!(!self.calls.contains(&id), "{id} reused");
                    self.calls.push(id);
                    self.active = Some(id);
                }
                Output::KmsSend {
                    call,
                    host,
                    request,
                    may_reuse: _,
                } => {
                    assert_eq!(Some(call), self.active, "KmsSend for a call not running");
                    assert!(host.starts_with("kms."), "{host}");
                    assert!(request.starts_with(b"POST / HTTP/1.1\r\n"));
                    assert_no_secret("KMS request", &String::from_utf8_lossy(&request));
                }
                Output::KmsRelease { call, .. } => {
                    assert_eq!(Some(call), self.active, "KmsRelease for a call not running");
                }
                Output::Event(event) => {
                    assert_no_secret("event", &format!("{event} {event:?}"));
                    assert!(!format!("{event} {event:?}").contains(SESSION_TOKEN));
                }
                Output::Close(reason) => {
                    assert_no_secret("close reason", &format!("{reason} {reason:?}"));
                    self.closed = true;
                }
            }
        }
        if self.outbox.is_empty()
            && let Some(bytes) = session.poll_transmit()
        {
            assert!(!self.closed, "bytes to send after Close");
            assert_eq!(bytes.last(), Some(&0), "whole replies");
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(SECRET_KEY), "reply shows the secret key");
            assert!(!text.contains(SESSION_TOKEN), "reply shows the token");
            self.outbox = bytes.to_vec();
        }
        count
    }

    /// The client takes up to `n` bytes of its replies.
    fn take(&mut self, session: &mut EnclaveSession, now: Now, n: usize) {
        let n = n.min(self.outbox.len());
        let taken: Vec<u8> = self.outbox.drain(..n).collect();
        self.replies += taken.iter().filter(|b| **b == 0).count();
        session.handle_client_written(now, n);
    }
}

fuzz_target!(|input: Input<'_>| {
    let start = Instant::now();
    let mut now = Now::new(start, UNIX_EPOCH + Duration::from_secs(1_795_953_600));
    let config = SessionConfig {
        region: input.region.then(|| "us-east-1".to_owned()),
        max_message_bytes: 4096,
        max_connection_bytes: kmstool_core::session::MIN_CONNECTION_BYTES,
        max_attempts: 1 + u32::from(input.attempts % 3),
        ..SessionConfig::default()
    };
    let bound = config.connection_bound();
    let mut session = EnclaveSession::new(Arc::new(config), 7, now);
    let mut seen = Seen::default();
    let mut sent_terminators = 0usize;
    for step in input.steps {
        let current = seen.active;
        match step {
            Step::ClientBytes(bytes) => {
                sent_terminators += bytes.iter().filter(|b| **b == 0).count();
                session.handle_client_bytes(now, bytes);
            }
            Step::Command(which) => {
                let command = COMMANDS[usize::from(which) % COMMANDS.len()];
                sent_terminators += 1;
                session.handle_client_bytes(now, command);
            }
            Step::ClientEof => session.handle_client_eof(now),
            Step::Take(n) => seen.take(&mut session, now, usize::from(n)),
            Step::KmsSent(reused) => {
                if let Some(id) = current {
                    session.handle_kms_sent(id, reused);
                }
            }
            Step::Attest { ok } => {
                if let Some(id) = current {
                    let result = if ok {
                        Ok(Attestation {
                            key: key(),
                            document: b"doc".to_vec().into(),
                        })
                    } else {
                        Err(AttestationFailure {
                            detail: "nsm".into(),
                        })
                    };
                    session.handle_attestation(now, id, result);
                }
            }
            Step::KmsRecorded { which, cut, flip } => {
                if let Some(id) = current {
                    let mut bytes = RESPONSES[usize::from(which) % RESPONSES.len()].to_vec();
                    if let Some((at, mask)) = flip {
                        let at = usize::from(at) % bytes.len();
                        bytes[at] ^= mask;
                    }
                    let cut = usize::from(cut) % (bytes.len() + 1);
                    session.handle_kms_bytes(now, id, &bytes[..cut]);
                    session.handle_kms_bytes(now, id, &bytes[cut..]);
                }
            }
            Step::KmsBytes(bytes) => {
                if let Some(id) = current {
                    session.handle_kms_bytes(now, id, bytes);
                }
            }
            Step::KmsEof => {
                if let Some(id) = current {
                    session.handle_kms_eof(now, id);
                }
            }
            Step::KmsFailure(stage) => {
                if let Some(id) = current {
                    session.handle_kms_failure(now, id, failure(stage));
                }
            }
            Step::Stale { which, input } => {
                let old: Vec<_> = seen.calls.iter().filter(|c| Some(**c) != current).collect();
                if let Some(&&id) = old.get(usize::from(which) % old.len().max(1)) {
                    match input % 4 {
                        0 => session.handle_kms_bytes(now, id, RESPONSES[0]),
                        1 => session.handle_kms_eof(now, id),
                        2 => session.handle_kms_failure(now, id, failure(input / 4)),
                        _ => session.handle_attestation(
                            now,
                            id,
                            Ok(Attestation {
                                key: key(),
                                document: b"doc".to_vec().into(),
                            }),
                        ),
                    }
                    assert_eq!(seen.drain(&mut session), 0, "{id} is over but was heard");
                }
            }
            Step::Advance(ms) => now = now.advance(Duration::from_millis(u64::from(ms))),
            Step::Timeout => session.handle_timeout(now),
        }
        seen.drain(&mut session);
        assert!(
            session.held_bytes() <= bound,
            "{} bytes held",
            session.held_bytes()
        );
        // One reply per message; an oversized message counts as one.
        assert!(
            seen.replies <= sent_terminators + 1,
            "{} replies for {sent_terminators} messages",
            seen.replies
        );
        if seen.closed {
            assert!(session.is_closed());
            assert!(!session.wants_client_bytes());
            assert_eq!(session.poll_timeout(), None);
        }
        if let Some(deadline) = session.poll_timeout() {
            assert!(deadline >= start);
        }
    }
});

fn failure(stage: u8) -> TransportFailure {
    let stage = [
        TransportStage::Connect,
        TransportStage::Tls,
        TransportStage::Io,
    ][usize::from(stage) % 3];
    TransportFailure::new(stage, "fuzz")
}
