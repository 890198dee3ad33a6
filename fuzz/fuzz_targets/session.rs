//! A whole `EnclaveSession` fed an arbitrary interleaving of inputs — client bytes (random or
//! valid commands), attestation results, KMS bytes (random, or recorded responses cut and
//! flipped), connection failures, time passing. It must never panic, never reply more often
//! than it was asked, and go silent after closing.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use arbitrary::Arbitrary;
use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::session::{
    Attestation, AttestationFailure, CallId, EnclaveSession, Now, Output, SessionConfig,
    TransportFailure, TransportStage,
};
use libfuzzer_sys::fuzz_target;

const KEY_PEM: &[u8] = include_bytes!("../../../shared/fixtures/kms/real-kms-decrypt-with-key.key.pem");
const RESPONSES: [&[u8]; 7] = [
    include_bytes!("../../core/tests/fixtures/kms/decrypt-ok.http"),
    include_bytes!("../../core/tests/fixtures/kms/generatedatakey-ok.http"),
    include_bytes!("../../core/tests/fixtures/kms/generaterandom-ok.http"),
    include_bytes!("../../core/tests/fixtures/kms/accessdenied-400.http"),
    include_bytes!("../../core/tests/fixtures/kms/invalidciphertext-400.http"),
    include_bytes!("../../core/tests/fixtures/kms/throttling-400.http"),
    include_bytes!("../../core/tests/fixtures/kms/internal-500.http"),
];
const COMMANDS: [&[u8]; 6] = [
    b"{\"Operation\":\"SetClient\",\"AwsAccessKeyId\":\"AKID\",\"AwsSecretAccessKey\":\"S\"}\0",
    b"{\"Operation\":\"Decrypt\",\"Ciphertext\":\"AQIDBA==\"}\0",
    b"{\"Operation\":\"GenerateDataKey\",\"KeyId\":\"alias/a\"}\0",
    b"{\"Operation\":\"GenerateRandom\",\"NumberOfBytes\":32}\0",
    b"{\"Operation\":\"SetClient\",\"AwsAccessKeyId\":\"AKID\",\"AwsSecretAccessKey\":\"S\",\"AwsRegion\":\"eu-west-1\"}\0",
    b"{\"Operation\":\"Nope\"}\0",
];

fn key() -> Arc<RecipientKey> {
    static KEY: OnceLock<Arc<RecipientKey>> = OnceLock::new();
    Arc::clone(KEY.get_or_init(|| Arc::new(RecipientKey::from_pem(Backend::DEFAULT, KEY_PEM).expect("key"))))
}

#[derive(Arbitrary, Debug)]
enum Step {
    ClientBytes(Vec<u8>),
    Command(u8),
    ClientEof,
    Attest { ok: bool },
    KmsRecorded { which: u8, cut: u16, flip: Option<(u16, u8)> },
    KmsBytes(Vec<u8>),
    KmsEof,
    KmsFailure(u8),
    Advance(u16),
    Timeout,
}

fuzz_target!(|steps: Vec<Step>| {
    let start = Instant::now();
    let mut now = Now::new(start, UNIX_EPOCH + Duration::from_secs(1_795_953_600));
    let config = SessionConfig {
        max_message_bytes: 4096,
        max_pending_commands: 4,
        ..SessionConfig::default()
    };
    let mut session = EnclaveSession::new(Arc::new(config), 7, now);
    let mut call: Option<CallId> = None;
    let mut sent_terminators = 0usize;
    let mut replies = 0usize;
    let mut closed = false;
    for step in steps {
        match step {
            Step::ClientBytes(bytes) => {
                sent_terminators += bytes.iter().filter(|b| **b == 0).count();
                session.handle_client_bytes(now, &bytes);
            }
            Step::Command(which) => {
                let command = COMMANDS[usize::from(which) % COMMANDS.len()];
                sent_terminators += 1;
                session.handle_client_bytes(now, command);
            }
            Step::ClientEof => session.handle_client_eof(now),
            Step::Attest { ok } => {
                if let Some(id) = call {
                    let result = if ok {
                        Ok(Attestation { key: key(), document: b"doc".to_vec() })
                    } else {
                        Err(AttestationFailure { detail: "nsm".into() })
                    };
                    session.handle_attestation(now, id, result);
                }
            }
            Step::KmsRecorded { which, cut, flip } => {
                if let Some(id) = call {
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
                if let Some(id) = call {
                    session.handle_kms_bytes(now, id, &bytes);
                }
            }
            Step::KmsEof => {
                if let Some(id) = call {
                    session.handle_kms_eof(now, id);
                }
            }
            Step::KmsFailure(stage) => {
                if let Some(id) = call {
                    let stage = [TransportStage::Connect, TransportStage::Tls, TransportStage::Io][usize::from(stage) % 3];
                    session.handle_kms_failure(now, id, TransportFailure::new(stage, "fuzz"));
                }
            }
            Step::Advance(ms) => now = now.advance(Duration::from_millis(u64::from(ms))),
            Step::Timeout => session.handle_timeout(now),
        }
        while let Some(output) = session.poll_output() {
            assert!(!closed, "output after Close: {output:?}");
            match output {
                Output::ToClient(bytes) => {
                    assert_eq!(bytes.last(), Some(&0));
                    replies += bytes.iter().filter(|b| **b == 0).count();
                }
                Output::Attest(id) | Output::KmsSend { call: id, .. } => call = Some(id),
                Output::KmsRelease { .. } | Output::Event(_) => {}
                Output::Close(_) => closed = true,
            }
        }
        // One reply per message; an oversized message counts as one.
        assert!(replies <= sent_terminators + 1, "{replies} replies for {sent_terminators} messages");
        if let Some(deadline) = session.poll_timeout() {
            assert!(deadline >= start);
        }
    }
});
