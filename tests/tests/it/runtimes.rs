//! The sans-IO core does not care which runtime drives it: the enclave protocol served by
//! `kmstool_runtime_smol::server` and by `kmstool_runtime_tokio` (the real `kmstool-enclave`
//! setup), with the same simulated NSM and the same KMS emulator behind them, answers the
//! same scripted sessions with the same replies — byte for byte, except random bytes and data
//! keys, which are compared by length and checked to decode (and, for data keys, to decrypt
//! back to themselves).

// The helpers below are part of the tests: like the #[test] functions (clippy.toml), they
// may unwrap.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kmstool_core::address::Address;
use kmstool_core::framing::DEFAULT_MAX_MESSAGE_BYTES;
use kmstool_core::session::SessionConfig;
use kmstool_sim::kms::KeyMetadata;
use kmstool_sim::local::{Local, LocalOptions};
use kmstool_tests::framing::frame;
use kmstool_tests::hostile::SmolEnclave;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A client connection speaking raw frames.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Conn {
    async fn open(address: &Address) -> Self {
        let Address::Tcp { host, port } = address else {
            panic!("TCP expected: {address}");
        };
        let stream = TcpStream::connect((host.as_str(), *port))
            .await
            .expect("connecting to the enclave");
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("sending");
    }

    async fn send_json(&mut self, value: &Value) {
        self.send(&frame(value)).await;
    }

    /// The next reply frame as text, or `None` when the enclave has closed.
    async fn recv(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == 0) {
                let frame: Vec<u8> = self.pending.drain(..=end).take(end).collect();
                return Some(String::from_utf8(frame).expect("UTF-8 reply"));
            }
            let mut buf = [0u8; 16 * 1024];
            let read = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut buf))
                .await
                .expect("no reply from the enclave");
            match read {
                Ok(0) | Err(_) => {
                    assert!(self.pending.is_empty(), "closed mid-frame");
                    return None;
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    async fn recv_reply(&mut self) -> String {
        self.recv().await.expect("a reply, not a close")
    }
}

/// What the scenarios need: credentials and ciphertexts from the shared emulator.
struct Fixture {
    set_client: Value,
    key: KeyMetadata,
    ciphertext: String,
}

const MESSAGE: &[u8] = b"runtime-agnostic \x00\xff plaintext";

impl Fixture {
    fn new(local: &Local) -> Self {
        let credentials = &local.credentials;
        let mut set_client = json!({
            "Operation": "SetClient",
            "AwsAccessKeyId": credentials.access_key_id,
            "AwsSecretAccessKey": credentials.secret_access_key.expose(),
        });
        if let Some(token) = &credentials.session_token {
            set_client["AwsSessionToken"] = token.expose().into();
        }
        let key = local.kms.create_key("runtimes");
        let context = [("purpose".to_owned(), "runtimes".to_owned())].into();
        let ciphertext = B64.encode(
            local
                .kms
                .encrypt(&key.key_id, MESSAGE, &context)
                .expect("emulator Encrypt"),
        );
        Self {
            set_client,
            key,
            ciphertext,
        }
    }

    fn decrypt(&self, context: Value) -> Value {
        json!({"Operation": "Decrypt", "Ciphertext": self.ciphertext, "EncryptionContext": context})
    }
}

/// The scripted sessions, each played on a fresh connection.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// SetClient, Decrypt, GenerateRandom, GenerateDataKey (and its blob decrypted back),
    /// RequestId on each; a frame split across writes; two commands in one write.
    Operations,
    /// A Decrypt KMS refuses (wrong encryption context), then one it accepts.
    KmsError,
    /// Commands the enclave refuses without calling KMS; the connection stays open.
    Malformed,
    /// The largest message accepted, then one over the cap: an error, then the enclave
    /// closes.
    Oversize,
}

/// Plays `scenario`; returns the transcript, in which only random material is normalised.
async fn play(scenario: Scenario, address: &Address, fixture: &Fixture) -> Vec<String> {
    let mut conn = Conn::open(address).await;
    let mut transcript = Vec::new();
    match scenario {
        Scenario::Operations => {
            let mut set_client = fixture.set_client.clone();
            set_client["RequestId"] = "set-client".into();
            let bytes = frame(&set_client);
            let (first, second) = bytes.split_at(bytes.len() / 2);
            conn.send(first).await;
            conn.send(second).await;
            transcript.push(conn.recv_reply().await);

            let mut decrypt = fixture.decrypt(json!({"purpose": "runtimes"}));
            decrypt["RequestId"] = "decrypt-1".into();
            conn.send_json(&decrypt).await;
            let reply = conn.recv_reply().await;
            let value: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(value["Status"], "Ok", "{reply}");
            assert_eq!(value["RequestId"], "decrypt-1");
            let plaintext = B64.decode(value["Message"].as_str().unwrap()).unwrap();
            assert_eq!(plaintext, MESSAGE);
            transcript.push(reply);

            // Two commands in one write: replies in order.
            let mut both = Vec::new();
            for (n, id) in [(32, "random-32"), (1, "random-1")] {
                let command =
                    json!({"Operation": "GenerateRandom", "NumberOfBytes": n, "RequestId": id});
                both.extend(frame(&command));
            }
            conn.send(&both).await;
            for expected in [32, 1] {
                transcript.push(random_material(&conn.recv_reply().await, expected));
            }

            for (spec, length) in [
                (json!({"KeySpec": "AES_256"}), 32),
                (json!({"NumberOfBytes": 7}), 7),
            ] {
                let mut command = json!({
                    "Operation": "GenerateDataKey",
                    "KeyId": fixture.key.arn,
                    "EncryptionContext": {"purpose": "data key"},
                    "RequestId": "data-key",
                });
                command
                    .as_object_mut()
                    .unwrap()
                    .extend(spec.as_object().unwrap().clone());
                conn.send_json(&command).await;
                let reply = conn.recv_reply().await;
                let value: Value = serde_json::from_str(&reply).unwrap();
                // The blob decrypts, in the same session, to the data key.
                let blob = value["CiphertextBlob"].as_str().expect("CiphertextBlob");
                conn.send_json(&json!({
                    "Operation": "Decrypt",
                    "Ciphertext": blob,
                    "EncryptionContext": {"purpose": "data key"},
                }))
                .await;
                let decrypted: Value = serde_json::from_str(&conn.recv_reply().await).unwrap();
                assert_eq!(
                    decrypted["Message"], value["Message"],
                    "blob decrypts to the key"
                );
                assert_eq!(decrypted["KeyId"], fixture.key.arn.as_str());
                transcript.push(random_material(&reply, length));
            }
        }
        Scenario::KmsError => {
            conn.send_json(&fixture.set_client).await;
            transcript.push(conn.recv_reply().await);
            conn.send_json(&fixture.decrypt(json!({"purpose": "other"})))
                .await;
            let reply = conn.recv_reply().await;
            let value: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(value["ErrorKind"], "Kms", "{reply}");
            assert_eq!(value["KmsErrorType"], "InvalidCiphertextException");
            assert!(
                value["Message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Could not decrypt ciphertext: InvalidCiphertextException"),
                "{reply}"
            );
            transcript.push(reply);
            conn.send_json(&fixture.decrypt(json!({"purpose": "runtimes"})))
                .await;
            transcript.push(conn.recv_reply().await);
        }
        Scenario::Malformed => {
            let before_set_client: [&[u8]; 7] = [
                b"{\"Operation\":\"Decrypt\",\"Ciphertext\":\"AAAA\"}\0",
                b"not json\0",
                b"[1,2,3]\0",
                b"{\"foo\":1}\0",
                b"{\"Operation\":5}\0",
                b"{\"Operation\":\"Foo\",\"RequestId\":\"unknown-op\"}\0",
                b"{\"Operation\":\"SetClient\",\"AwsAccessKeyId\":\"AKID\"}\0",
            ];
            for frame in before_set_client {
                conn.send(frame).await;
                transcript.push(conn.recv_reply().await);
            }
            conn.send_json(&fixture.set_client).await;
            transcript.push(conn.recv_reply().await);
            let after_set_client: [&[u8]; 5] = [
                b"{\"Operation\":\"Decrypt\"}\0",
                b"{\"Operation\":\"Decrypt\",\"Ciphertext\":\"not base64!\"}\0",
                b"{\"Operation\":\"GenerateRandom\",\"NumberOfBytes\":0}\0",
                b"{\"Operation\":\"GenerateDataKey\"}\0",
                b"{\"Operation\":\"SetClient\",\"AwsAccessKeyId\":\"A\",\"AwsSecretAccessKey\":\"S\",\"AwsRegion\":\"eu-west-1\"}\0",
            ];
            for frame in after_set_client {
                conn.send(frame).await;
                transcript.push(conn.recv_reply().await);
            }
            // Still open, and the client still works.
            conn.send_json(&fixture.decrypt(json!({"purpose": "runtimes"})))
                .await;
            transcript.push(conn.recv_reply().await);
        }
        Scenario::Oversize => {
            conn.send_json(&fixture.set_client).await;
            transcript.push(conn.recv_reply().await);
            // The largest message accepted: the cap, terminator included.
            let mut largest = br#"{"Operation":"GenerateRandom","NumberOfBytes":2}"#.to_vec();
            largest.resize(DEFAULT_MAX_MESSAGE_BYTES - 1, b' ');
            largest.push(0);
            conn.send(&largest).await;
            transcript.push(random_material(&conn.recv_reply().await, 2));
            // One byte more. Exactly the cap without a terminator, so the enclave has read
            // everything when it closes (unread bytes would make its close a reset).
            let mut huge = br#"{"Operation":"Decrypt","Ciphertext":""#.to_vec();
            huge.resize(DEFAULT_MAX_MESSAGE_BYTES, b'A');
            conn.send(&huge).await;
            transcript.push(conn.recv_reply().await);
            assert_eq!(conn.recv().await, None, "closed after the error");
            transcript.push("<closed>".to_owned());
        }
    }
    transcript
}

/// An Ok reply carrying random material of `length` bytes: `Message` (and `CiphertextBlob`)
/// are replaced by their decoded lengths, everything else kept.
fn random_material(reply: &str, length: usize) -> String {
    let mut value: Value = serde_json::from_str(reply).expect("JSON reply");
    assert_eq!(value["Status"], "Ok", "{reply}");
    for (field, expected) in [("Message", Some(length)), ("CiphertextBlob", None)] {
        let Some(text) = value.get(field).and_then(Value::as_str) else {
            assert!(expected.is_none(), "{field} missing: {reply}");
            continue;
        };
        let decoded = B64.decode(text).expect("standard base64");
        if let Some(expected) = expected {
            assert_eq!(decoded.len(), expected, "{field} of {reply}");
        }
        value[field] = format!("<{} bytes>", decoded.len()).into();
    }
    value.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smol_and_tokio_enclaves_give_identical_replies() {
    let local = Local::start(LocalOptions::default())
        .await
        .expect("local setup");
    let smol = SmolEnclave::start(&local, SessionConfig::default(), 64).await;
    let fixture = Fixture::new(&local);
    for scenario in [
        Scenario::Operations,
        Scenario::KmsError,
        Scenario::Malformed,
        Scenario::Oversize,
    ] {
        let on_tokio = play(scenario, &local.enclave, &fixture).await;
        let on_smol = play(scenario, &smol.address, &fixture).await;
        assert_eq!(on_smol, on_tokio, "{scenario:?}");
        check_expectations(scenario, &on_tokio);
    }
    drop(smol);
    local.stop().await.expect("stopping the tokio enclave");
}

/// What the transcripts must say, whichever runtime: identical but wrong would not do.
fn check_expectations(scenario: Scenario, transcript: &[String]) {
    let messages: Vec<Value> = transcript
        .iter()
        .filter(|t| t.starts_with('{'))
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    let text = |i: usize| messages[i]["Message"].as_str().unwrap_or("").to_owned();
    match scenario {
        Scenario::Operations => {
            assert_eq!(transcript[0], r#"{"Status":"Ok","RequestId":"set-client"}"#);
            let ids: Vec<&str> = messages[2..]
                .iter()
                .map(|m| m["RequestId"].as_str().unwrap())
                .collect();
            assert_eq!(ids, ["random-32", "random-1", "data-key", "data-key"]);
        }
        Scenario::KmsError => {
            assert_eq!(transcript[0], r#"{"Status":"Ok"}"#);
            assert_eq!(messages[2]["Status"], "Ok");
        }
        Scenario::Malformed => {
            let starts = [
                "Client not initialized",
                "Error reading JSON object",
                "JSON is wrong type",
                "JSON structure incomplete",
                "Operation is wrong type",
                "Operation not recognized",
                "Could not read credentials",
            ];
            for (i, start) in starts.iter().enumerate() {
                assert!(text(i).starts_with(start), "{i}: {}", transcript[i]);
                assert_eq!(messages[i]["Status"], "Error");
            }
            assert_eq!(messages[5]["RequestId"], "unknown-op");
            assert_eq!(messages[7]["Status"], "Ok");
            let starts = [
                "Message does not contain a Ciphertext",
                "Ciphertext not a base64 string",
                "JSON is wrong type: NumberOfBytes",
                "JSON structure incomplete",
                "Could not set region correctly, check configuration.",
            ];
            for (i, start) in starts.iter().enumerate() {
                assert!(text(8 + i).starts_with(start), "{}", transcript[8 + i]);
            }
            assert_eq!(messages[13]["Status"], "Ok");
        }
        Scenario::Oversize => {
            assert_eq!(messages[1]["Status"], "Ok");
            assert!(
                text(2).starts_with("Message size too large."),
                "{transcript:?}"
            );
            assert_eq!(transcript.last().unwrap(), "<closed>");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_turn_away_a_connection_over_the_limit_alike() {
    let options = LocalOptions {
        enclave_args: vec!["--max-connections".into(), "1".into()],
        ..LocalOptions::default()
    };
    let local = Local::start(options).await.expect("local setup");
    let smol = SmolEnclave::start(&local, SessionConfig::default(), 1).await;
    let fixture = Fixture::new(&local);
    let mut transcripts = Vec::new();
    for address in [&local.enclave, &smol.address] {
        // The first connection is served (its reply proves it is counted)...
        let mut first = Conn::open(address).await;
        first.send_json(&fixture.set_client).await;
        assert_eq!(first.recv_reply().await, r#"{"Status":"Ok"}"#);
        // ...the second gets one error and is closed...
        let mut second = Conn::open(address).await;
        let busy = second.recv_reply().await;
        assert_eq!(second.recv().await, None, "closed after the busy reply");
        // ...and the first still works.
        first
            .send_json(&fixture.decrypt(json!({"purpose": "runtimes"})))
            .await;
        let decrypted: Value = serde_json::from_str(&first.recv_reply().await).unwrap();
        assert_eq!(decrypted["Status"], "Ok");
        transcripts.push(busy);
    }
    assert_eq!(transcripts[0], transcripts[1]);
    let busy: Value = serde_json::from_str(&transcripts[0]).unwrap();
    assert_eq!(busy["Status"], "Error");
    assert_eq!(busy["ErrorKind"], "Internal");
    assert!(
        busy["Message"].as_str().unwrap().starts_with("Server busy"),
        "{busy}"
    );
    drop(smol);
    local.stop().await.expect("stopping the tokio enclave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smol_server_finishes_in_flight_commands_on_shutdown_then_closes() {
    let options = LocalOptions {
        faults: kmstool_sim::kms::Faults {
            latency: Duration::from_millis(300),
            ..kmstool_sim::kms::Faults::default()
        },
        ..LocalOptions::default()
    };
    let local = Local::start(options).await.expect("local setup");
    let smol = SmolEnclave::start(&local, SessionConfig::default(), 64).await;
    let address = smol.address.clone();
    let fixture = Fixture::new(&local);
    let mut conn = Conn::open(&address).await;
    conn.send_json(&fixture.set_client).await;
    assert_eq!(conn.recv_reply().await, r#"{"Status":"Ok"}"#);
    let before = local.kms.stats().requests;
    conn.send_json(&fixture.decrypt(json!({"purpose": "runtimes"})))
        .await;
    for _ in 0..200 {
        if local.kms.stats().requests > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(local.kms.stats().requests > before, "the call reached KMS");

    let stopping = tokio::spawn(smol.stop());
    let reply: Value = serde_json::from_str(&conn.recv_reply().await).expect("JSON");
    assert_eq!(reply["Status"], "Ok", "{reply}");
    assert_eq!(
        B64.decode(reply["Message"].as_str().expect("Message"))
            .expect("base64"),
        MESSAGE
    );
    assert_eq!(conn.recv().await, None, "closed once answered");
    stopping.await.expect("the server stopped");
    let Address::Tcp { host, port } = &address else {
        panic!("TCP expected");
    };
    assert!(
        TcpStream::connect((host.as_str(), *port)).await.is_err(),
        "still accepting after shutdown"
    );
    local.stop().await.expect("stopping the tokio enclave");
}
