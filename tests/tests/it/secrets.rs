//! No secret leaks. Credentials, session tokens, plaintexts, data keys, random bytes
//! and the enclave's private key must never show in a log line, an error message, a `Debug`
//! print, or a reply other than the one meant to carry them — in any of the renderings
//! [`leak_forms`] knows (raw, base64 at any alignment, hex, a `Debug` byte list).
//!
//! The first test runs whole sessions of every operation against an in-process enclave and KMS
//! emulator with every log (both sides, TRACE, `log` records included) captured; the second
//! drives an [`EnclaveSession`] and an [`InstanceClient`] by hand with a real KMS capture and
//! its private key, printing every state and output in between.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_core::crypto::{Backend, RecipientKey};
use kmstool_core::instance::InstanceClient;
use kmstool_core::protocol::{CommandArgs, Decrypt, Reply};
use kmstool_core::secret::{Credentials, SecretBytes, SecretString};
use kmstool_core::session::{Attestation, EnclaveSession, Now, Output, SessionConfig};
use kmstool_sim::kms::{EncryptionContext, SimCredentials};
use kmstool_sim::local::{Local, LocalOptions, REGION};
use kmstool_tests::framing::frame;
use kmstool_tests::robust::{
    RawClient, assert_error, assert_no_leak, assert_ok, capture_logs, generate_random, set_client,
    tcp_addr,
};
use serde_json::{Value, json};

const PLAINTEXT: &[u8] = b"plaintext: the launch code is 7f3a9c-0420-kmstool";

/// A secret and where it may legitimately appear.
struct Secret {
    name: &'static str,
    value: Vec<u8>,
    /// Labels of the replies meant to carry it.
    intended: Vec<&'static str>,
}

impl Secret {
    fn new(name: &'static str, value: &[u8], intended: &[&'static str]) -> Self {
        Self {
            name,
            value: value.to_vec(),
            intended: intended.to_vec(),
        }
    }
}

fn assert_none_leaks(what: &str, haystack: &str, secrets: &[Secret]) {
    let pairs: Vec<(&str, &[u8])> = secrets.iter().map(|s| (s.name, &s.value[..])).collect();
    assert_no_leak(what, haystack, &pairs);
}

/// Replies of a session, each with a label.
#[derive(Default)]
struct Transcript(Vec<(&'static str, Value)>);

impl Transcript {
    async fn call(
        &mut self,
        client: &mut RawClient,
        label: &'static str,
        command: &Value,
    ) -> Value {
        let reply = client.call(command).await;
        self.0.push((label, reply.clone()));
        reply
    }

    async fn send_raw(&mut self, client: &mut RawClient, label: &'static str, bytes: &[u8]) {
        client.send(bytes).await.expect("send");
        let reply = client.reply().await;
        assert_eq!(reply["Status"], "Error", "{label}: {reply}");
        self.0.push((label, reply));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sessions_leak_no_secret_into_logs_errors_or_other_replies() {
    let logs = capture_logs();
    let local = Local::start(LocalOptions::default())
        .await
        .expect("local setup");
    let key = local.kms.create_key("secrets");
    let context: EncryptionContext = [("purpose".to_owned(), "secrets-test".to_owned())].into();
    let ciphertext = local
        .kms
        .encrypt(&key.key_id, PLAINTEXT, &context)
        .expect("encrypt");
    // A second identity KMS accepts, and one it does not know.
    let other = Credentials::new(
        "ASIAOTHERIDENTITY001",
        "other/secret/key/0123456789/abcdefghijkl",
        Some(SecretString::from(
            "other-session-token-QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
        )),
    );
    local
        .kms
        .add_credentials(SimCredentials::new(other.clone(), "111122223333"));
    let unknown = Credentials::new(
        "AKIAUNKNOWNIDENTITY1",
        "unknown/secret/key/9876543210/zyxwvutsrq",
        None,
    );
    let invalid_secret = "invalid secret with spaces 5a1b2c3d4e5f";

    let decrypt = json!({
        "Operation": "Decrypt",
        "Ciphertext": STANDARD.encode(&ciphertext),
        "EncryptionContext": context,
    });
    let mut transcript = Transcript::default();
    let mut client = RawClient::connect(&local.enclave).await;
    let t = &mut transcript;
    assert_ok(
        &t.call(&mut client, "set-client", &set_client(&local.credentials))
            .await,
    );
    let plaintext = assert_ok(&t.call(&mut client, "decrypt", &decrypt).await);
    assert_eq!(plaintext, PLAINTEXT);
    let data_key_command = json!({"Operation": "GenerateDataKey", "KeyId": key.key_id});
    let data_key = assert_ok(&t.call(&mut client, "data-key", &data_key_command).await);
    assert_eq!(data_key.len(), 32);
    let random = assert_ok(&t.call(&mut client, "random", &generate_random(48)).await);
    assert_eq!(random.len(), 48);

    // Failures with secrets around: a wrong context (KMS refuses), a missing key, malformed
    // messages carrying credentials, credentials that cannot be used or that KMS rejects.
    let mut wrong_context = decrypt.clone();
    wrong_context["EncryptionContext"] = json!({"purpose": "other"});
    let reply = t.call(&mut client, "wrong-context", &wrong_context).await;
    assert_error(
        &reply,
        "Kms",
        "Could not decrypt ciphertext: InvalidCiphertextException",
    );
    let no_key = json!({"Operation": "GenerateDataKey", "KeyId": "alias/missing"});
    assert_error(
        &t.call(&mut client, "no-key", &no_key).await,
        "Kms",
        "Could not generate data key",
    );
    let mut broken = set_client(&other).to_string().into_bytes();
    broken.truncate(broken.len() - 1);
    broken.extend_from_slice(b",]\0");
    t.send_raw(&mut client, "broken-json", &broken).await;
    let mut wrong_type = set_client(&other);
    wrong_type["AwsRegion"] = json!(["us-east-1"]);
    assert_error(
        &t.call(&mut client, "wrong-type", &wrong_type).await,
        "BadRequest",
        "Could not set region",
    );
    let mut unusable = set_client(&other);
    unusable["AwsSecretAccessKey"] = json!(invalid_secret);
    assert_error(
        &t.call(&mut client, "unusable", &unusable).await,
        "BadRequest",
        "Could not create new client",
    );
    assert_ok(
        &t.call(&mut client, "set-unknown", &set_client(&unknown))
            .await,
    );
    let reply = t.call(&mut client, "unknown-decrypt", &decrypt).await;
    assert_error(
        &reply,
        "Kms",
        "Could not decrypt ciphertext: UnrecognizedClientException",
    );
    // A known key id with a wrong secret key (a signature mismatch), then a wrong token.
    let wrong_secret = Credentials::new(
        local.credentials.access_key_id.clone(),
        "wrong/secret/for/a/known/key/id/0123456",
        local.credentials.session_token.clone(),
    );
    assert_ok(
        &t.call(&mut client, "set-wrong-secret", &set_client(&wrong_secret))
            .await,
    );
    let reply = t.call(&mut client, "wrong-secret-decrypt", &decrypt).await;
    assert_error(
        &reply,
        "Kms",
        "Could not decrypt ciphertext: InvalidSignatureException",
    );
    let mut wrong_token = set_client(&local.credentials);
    wrong_token["AwsSessionToken"] = json!(session_token_of(&other));
    assert_ok(&t.call(&mut client, "set-wrong-token", &wrong_token).await);
    let reply = t.call(&mut client, "wrong-token-decrypt", &decrypt).await;
    assert_error(
        &reply,
        "Kms",
        "Could not decrypt ciphertext: UnrecognizedClientException",
    );
    // The second identity, with its own session token, decrypts too.
    assert_ok(&t.call(&mut client, "set-other", &set_client(&other)).await);
    assert_eq!(
        assert_ok(&t.call(&mut client, "decrypt-other", &decrypt).await),
        PLAINTEXT
    );
    drop(client);

    // The parent's own client (kmstool-instance's core) for a whole Decrypt, and a failure.
    let mut debug_prints = Vec::new();
    for (credentials, succeeds) in [(&local.credentials, true), (&unknown, false)] {
        let mut stream = tokio::net::TcpStream::connect(tcp_addr(&local.enclave))
            .await
            .expect("connect");
        let request = CommandArgs::Decrypt(Decrypt {
            ciphertext: ciphertext.clone(),
            encryption_context: context.clone(),
            key_id: None,
            encryption_algorithm: None,
            grant_tokens: Vec::new(),
            dry_run: false,
        });
        let instance = InstanceClient::new(
            credentials,
            Some(REGION),
            request,
            Instant::now(),
            Duration::from_secs(20),
        );
        debug_prints.push(format!("{instance:?}"));
        let result = kmstool_runtime_tokio::client::exchange(&mut stream, instance).await;
        match (&result, succeeds) {
            (Ok(done), true) => assert_eq!(done.plaintext.expose(), PLAINTEXT),
            (Err(error), false) => debug_prints.push(error.to_string()),
            _ => panic!("unexpected outcome: {result:?}"),
        }
        debug_prints.push(format!("{result:?} {result:#?}"));
    }

    let secrets = [
        Secret::new(
            "secret key",
            local.credentials.secret_access_key.expose().as_bytes(),
            &[],
        ),
        Secret::new("session token", session_token(&local.credentials), &[]),
        Secret::new(
            "other secret key",
            other.secret_access_key.expose().as_bytes(),
            &[],
        ),
        Secret::new("other session token", session_token(&other), &[]),
        Secret::new(
            "unknown secret key",
            unknown.secret_access_key.expose().as_bytes(),
            &[],
        ),
        Secret::new("unusable secret key", invalid_secret.as_bytes(), &[]),
        Secret::new(
            "wrong secret key",
            wrong_secret.secret_access_key.expose().as_bytes(),
            &[],
        ),
        Secret::new("plaintext", PLAINTEXT, &["decrypt", "decrypt-other"]),
        Secret::new("data key", &data_key, &["data-key"]),
        Secret::new("random bytes", &random, &["random"]),
    ];

    // Replies: each secret only where it is meant to be.
    for (label, reply) in &transcript.0 {
        let unintended: Vec<Secret> = secrets
            .iter()
            .filter(|s| !s.intended.contains(label))
            .map(|s| Secret::new(s.name, &s.value, &[]))
            .collect();
        assert_none_leaks(
            &format!("the {label} reply"),
            &reply.to_string(),
            &unintended,
        );
        let parsed = Reply::parse(reply.to_string().as_bytes()).expect("a reply");
        assert_none_leaks(
            &format!("Debug of the {label} reply"),
            &format!("{parsed:?}"),
            &secrets,
        );
    }
    // Debug prints of what holds secrets.
    debug_prints.push(format!("{:?} {:#?}", local.credentials, other));
    debug_prints.push(format!("{:?}", SecretBytes::new(data_key.clone())));
    debug_prints.push(format!("{:?}", local.kms.stats()));
    debug_prints.push(format!("{local:?}"));
    for print in &debug_prints {
        assert_none_leaks("a Debug print or error", print, &secrets);
    }

    // Logs of both sides, which must have been captured at all.
    local.stop().await.expect("stop");
    let captured = logs.contents();
    for expected in [
        "Decrypt ok",
        "GenerateDataKey ok",
        "UnrecognizedClientException",
    ] {
        assert!(
            captured.contains(expected),
            "no {expected:?} in the logs:\n{captured}"
        );
    }
    assert!(
        captured.contains("TRACE") && captured.contains("rustls::server"),
        "the emulator's TLS (rustls, through `log`) was not captured at TRACE"
    );
    assert_none_leaks("the logs", &captured, &secrets);
}

fn session_token_of(credentials: &Credentials) -> &str {
    std::str::from_utf8(session_token(credentials)).expect("a text token")
}

fn session_token(credentials: &Credentials) -> &[u8] {
    credentials
        .session_token
        .as_ref()
        .expect("a session token")
        .expose()
        .as_bytes()
}

/// The real KMS capture with its recipient key (see `fixtures/README.md`).
struct Capture {
    key_pem: Vec<u8>,
    envelope: Vec<u8>,
    plaintext: Vec<u8>,
}

fn capture() -> Capture {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/kms");
    let read = |name: &str| std::fs::read(format!("{dir}/{name}")).expect("fixture");
    let hex = String::from_utf8(read("real-kms-decrypt-with-key.plaintext.hex")).expect("hex");
    let hex = hex.trim();
    let plaintext = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    Capture {
        key_pem: read("real-kms-decrypt-with-key.key.pem"),
        envelope: read("real-kms-decrypt-with-key.ber"),
        plaintext,
    }
}

/// The private key's DER and its PEM body lines.
fn private_key_forms(pem: &[u8]) -> (Vec<u8>, Vec<String>) {
    let text = String::from_utf8(pem.to_vec()).expect("PEM");
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .map(str::to_owned)
        .collect();
    let der = STANDARD.decode(lines.concat()).expect("PEM body");
    (der, lines)
}

fn kms_answer(envelope: &[u8]) -> Vec<u8> {
    let body = json!({
        "KeyId": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "CiphertextForRecipient": STANDARD.encode(envelope),
    })
    .to_string();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n";
    format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

#[test]
fn every_state_and_output_of_a_session_prints_without_secrets() {
    let capture = capture();
    let (key_der, pem_lines) = private_key_forms(&capture.key_pem);
    let key = Arc::new(RecipientKey::from_pem(Backend::DEFAULT, &capture.key_pem).expect("key"));
    let credentials = Credentials::new(
        "ASIASANSIOEXAMPLE001",
        "sans/io/secret/key/0123456789/abcdefghij",
        Some(SecretString::from(
            "sans-io-session-token-ZmVkY2JhOTg3NjU0MzIxMA",
        )),
    );
    let secrets = [
        Secret::new(
            "secret key",
            credentials.secret_access_key.expose().as_bytes(),
            &[],
        ),
        Secret::new("session token", session_token(&credentials), &[]),
        Secret::new("plaintext", &capture.plaintext, &[]),
        Secret::new("private key", &key_der, &[]),
        Secret::new("private key PEM line", pem_lines[1].as_bytes(), &[]),
    ];
    let mut prints = Vec::new();
    let now = Now::new(Instant::now(), SystemTime::now());

    // The enclave side, printed after every step.
    let mut session = EnclaveSession::new(Arc::new(SessionConfig::default()), 1, now);
    let set_client_bytes = frame(&set_client(&credentials));
    // All but the terminator first: the whole message then waits in the session's buffer.
    let (first, rest) = set_client_bytes.split_at(set_client_bytes.len() - 1);
    session.handle_client_bytes(now, first);
    prints.push(format!("{session:?}"));
    session.handle_client_bytes(now, rest);
    let decrypt = frame(&json!({"Operation": "Decrypt", "Ciphertext": STANDARD.encode([1u8; 32])}));
    session.handle_client_bytes(now, &decrypt);
    prints.push(format!("{session:?}"));
    let mut call = None;
    let mut reply = Vec::new();
    let mut drain = |session: &mut EnclaveSession, prints: &mut Vec<String>| {
        while let Some(output) = session.poll_output() {
            prints.push(format!("{output:?} {output:#?}"));
            if let Output::Attest(id) | Output::KmsSend { call: id, .. } = output {
                call = Some(id);
            }
            prints.push(format!("{session:?}"));
        }
        if let Some(bytes) = session.poll_transmit() {
            reply.extend_from_slice(&bytes);
            prints.push(format!("{session:?}"));
            session.handle_client_written(now, bytes.len());
        }
        call
    };
    let attest = drain(&mut session, &mut prints).expect("an attestation request");
    let attestation = Attestation {
        key: Arc::clone(&key),
        document: vec![0xd2; 64].into(),
    };
    prints.push(format!("{attestation:?}"));
    session.handle_attestation(now, attest, Ok(attestation));
    let send = drain(&mut session, &mut prints).expect("a KMS request");
    let answer = kms_answer(&capture.envelope);
    let (first, rest) = answer.split_at(answer.len() - 1);
    session.handle_kms_bytes(now, send, first);
    prints.push(format!("{session:?}"));
    session.handle_kms_bytes(now, send, rest);
    drain(&mut session, &mut prints);
    // The reply is the one place the plaintext belongs.
    let reply = reply.split(|&b| b == 0).nth(1).expect("the Decrypt reply");
    let parsed = Reply::parse(reply).expect("reply");
    let message = parsed.message.as_ref().expect("Message").expose();
    assert_eq!(STANDARD.decode(message).expect("base64"), capture.plaintext);
    prints.push(format!("{parsed:?} {key:?}"));

    // The parent side, printed after every step.
    let request = CommandArgs::decrypt(vec![1u8; 32]);
    let mut instance = InstanceClient::new(
        &credentials,
        None,
        request,
        Instant::now(),
        Duration::from_secs(5),
    );
    prints.push(format!("{instance:?}"));
    while instance.poll_transmit().is_some() {}
    prints.push(format!("{instance:?}"));
    instance.handle_bytes(Instant::now(), b"{\"Status\":\"Ok\"}\0");
    while instance.poll_transmit().is_some() {}
    let mut framed = reply.to_vec();
    framed.push(0);
    let (first, rest) = framed.split_at(framed.len() - 1);
    instance.handle_bytes(Instant::now(), first);
    prints.push(format!("{instance:?}"));
    instance.handle_bytes(Instant::now(), rest);
    prints.push(format!("{instance:?}"));
    let result = instance.poll_result().expect("done");
    assert_eq!(
        result.as_ref().expect("success").plaintext.expose(),
        &capture.plaintext[..]
    );
    prints.push(format!("{result:?} {result:#?}"));

    for print in &prints {
        assert_none_leaks("a Debug print", print, &secrets);
    }
}

#[test]
fn secret_types_and_command_lines_redact_and_zeroize() {
    fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    zeroize_on_drop::<SecretBytes>();
    zeroize_on_drop::<SecretString>();
    let credentials = Credentials::new(
        "AKIDEXAMPLE",
        "types/secret/key/0123456789/abcdefghijklm",
        Some(SecretString::from("types-session-token-0123456789abcdef")),
    );
    let bytes = SecretBytes::new(b"secret bytes: 0123456789abcdef".to_vec());
    let secrets = [
        Secret::new(
            "secret key",
            credentials.secret_access_key.expose().as_bytes(),
            &[],
        ),
        Secret::new("session token", session_token(&credentials), &[]),
        Secret::new("bytes", bytes.expose(), &[]),
    ];
    let prints = format!(
        "{credentials:?} {credentials:#?} {bytes:?} {bytes} {:?} {} {:?} {}",
        bytes.to_base64(),
        bytes.to_base64(),
        credentials.secret_access_key,
        credentials.secret_access_key,
    );
    assert_none_leaks("Debug and Display", &prints, &secrets);
    assert!(prints.contains("AKIDEXAMPLE"), "the key id is not secret");

    // kmstool-enclave-cli takes credentials on its command line.
    let cli = <kmstool_enclave_cli::Cli as clap::Parser>::try_parse_from([
        "kmstool-enclave-cli",
        "genrandom",
        "--length",
        "16",
        "--aws-access-key-id",
        "AKIDEXAMPLE",
        "--aws-secret-access-key",
        credentials.secret_access_key.expose(),
        "--aws-session-token",
        std::str::from_utf8(session_token(&credentials)).expect("token"),
    ])
    .expect("command line");
    assert_none_leaks(
        "Debug of the parsed command line",
        &format!("{cli:?}"),
        &secrets,
    );
}
