//! Hostile clients against a running enclave: garbage, oversized and unterminated
//! frames, slow and abandoned connections, pipelining, wrong JSON types, huge strings, deep
//! nesting, and the two inputs that broke the C tool. Each gets its documented reply or a clean
//! close, while a well-behaved client ([`Canary`]) keeps being served on its own connection,
//! and nothing is left behind (connection counter, memory).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_sim::kms::EncryptionContext;
use kmstool_sim::local::{Local, LocalOptions};
use kmstool_tests::framing::frame;
use kmstool_tests::robust::{
    Canary, RawClient, assert_error, assert_ok, assert_served, eventually, generate_random,
    open_connections, rss_bytes, set_client,
};
use serde_json::{Value, json};

/// Starts an enclave (with extra `args`) and a canary on it.
async fn start(args: &[&str]) -> (Local, Canary) {
    let local = Local::start(LocalOptions {
        enclave_args: args.iter().map(|a| (*a).to_owned()).collect(),
        ..LocalOptions::default()
    })
    .await
    .expect("local setup");
    let canary = Canary::start(&local.enclave, &local.credentials).await;
    (local, canary)
}

/// A connection with the client set.
async fn client_with_credentials(local: &Local) -> RawClient {
    let mut client = RawClient::connect(&local.enclave).await;
    assert_ok(&client.call(&set_client(&local.credentials)).await);
    client
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn pseudo_random(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_get_one_error_per_frame_and_the_stream_stays_in_sync() {
    let (local, mut canary) = start(&[]).await;
    let mut client = client_with_credentials(&local).await;
    let mut garbage = pseudo_random(16 * 1024, 0x5eed_1234_abcd_0001);
    garbage.push(0);
    let frames = garbage.iter().filter(|&&b| b == 0).count();
    // Sent in uneven pieces, so frames are split across reads.
    for piece in garbage.chunks(1000) {
        client.send(piece).await.expect("send");
    }
    canary.served_more(2).await;
    for _ in 0..frames {
        let reply = client.reply().await;
        assert_eq!(reply["ErrorKind"], "BadRequest", "{reply}");
        let message = reply["Message"].as_str().expect("Message");
        assert!(
            message.starts_with("Error reading JSON object") || message == "JSON is wrong type",
            "{reply}"
        );
    }
    // Still in sync, and the client set before the garbage still works.
    let random = assert_ok(&client.call(&generate_random(32)).await);
    assert_eq!(random.len(), 32);
    drop(client);

    // Garbage without any terminator, then a disconnect: no reply, a clean close.
    let mut client = RawClient::connect(&local.enclave).await;
    let unterminated: Vec<u8> = pseudo_random(8 * 1024, 77)
        .into_iter()
        .map(|b| b.max(1))
        .collect();
    client.send(&unterminated).await.expect("send");
    client.shutdown_write().await;
    client.expect_close().await;
    drop(client);

    assert!(canary.finish().await >= 2);
    eventually("every connection is closed", || {
        open_connections(&local.enclave_state) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_a_json_error_and_the_connection_goes_on() {
    let (local, mut canary) = start(&[]).await;
    let mut client = client_with_credentials(&local).await;
    let frames: [&[u8]; 7] = [
        b"{\"Operation\":\"Decrypt\",\"Ciphertext\":\"\xff\xfe\"}",
        b"\xc3\x28",
        b"{\"Operation\":\"SetClient\",\"AwsAccessKeyId\":\"\xed\xa0\x80\"}",
        b"{\"Operation\":\"GenerateRandom\xc0\xaf\",\"NumberOfBytes\":8}",
        b"{\"Operation\":\"\\ud800\"}",
        b"{\xf8\x88\x80\x80\x80}",
        b"\xef\xbb\xbf{\"Operation\":\"GenerateRandom\",\"NumberOfBytes\":8}",
    ];
    for frame in frames {
        let mut bytes = frame.to_vec();
        bytes.push(0);
        client.send(&bytes).await.expect("send");
        let reply = client.reply().await;
        assert_error(&reply, "BadRequest", "Error reading JSON object");
    }
    canary.served_more(1).await;
    assert_eq!(
        assert_ok(&client.call(&generate_random(16)).await).len(),
        16
    );
    canary.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_at_the_cap_is_served_and_one_over_it_is_refused_and_closed() {
    let (local, mut canary) = start(&["--max-message-bytes", "1024"]).await;
    let mut client = client_with_credentials(&local).await;

    // Exactly at the cap: 1023 bytes and the terminator.
    let mut command = generate_random(8);
    command["Padding"] = json!("");
    let padding = 1023 - serde_json::to_vec(&command).expect("JSON").len();
    command["Padding"] = json!("p".repeat(padding));
    let at_cap = frame(&command);
    assert_eq!(at_cap.len(), 1024);
    client.send(&at_cap).await.expect("send");
    assert_eq!(assert_ok(&client.reply().await).len(), 8);

    // A command, then 1024 bytes without a terminator: the command is answered, then the
    // oversized message is refused and the connection closed.
    let mut bytes = frame(&generate_random(4));
    bytes.extend(std::iter::repeat_n(b'x', 1024));
    client.send(&bytes).await.expect("send");
    assert_eq!(assert_ok(&client.reply().await).len(), 4);
    let reply = client.reply().await;
    assert_error(&reply, "BadRequest", "Message size too large.");
    client.expect_close().await;

    // A megabyte streamed at the enclave: it stops reading at the cap and closes (a reset is
    // a clean close too: the enclave does not read what it will not use).
    let mut client = RawClient::connect(&local.enclave).await;
    let _ = client.send(&vec![b'{'; 1 << 20]).await;
    if let Some(frame) = client.next_frame().await {
        let reply: Value = serde_json::from_slice(&frame).expect("JSON");
        assert_error(&reply, "BadRequest", "Message size too large.");
        client.expect_close().await;
    }
    drop(client);

    canary.served_more(2).await;
    canary.finish().await;
    eventually("the refused connections are gone", || {
        open_connections(&local.enclave_state) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unterminated_frame_then_a_disconnect_is_a_clean_close() {
    let (local, mut canary) = start(&[]).await;
    let partial = br#"{"Operation":"GenerateRandom","NumberOfBytes":16"#;

    // Half-close after a partial message: nothing to answer, the enclave closes.
    let mut client = client_with_credentials(&local).await;
    client.send(partial).await.expect("send");
    client.shutdown_write().await;
    client.expect_close().await;

    // A complete command, a partial one, then end of stream: the complete one is still
    // answered (a KMS call), then the connection closes.
    let mut client = client_with_credentials(&local).await;
    let mut bytes = frame(&generate_random(24));
    bytes.extend_from_slice(partial);
    client.send(&bytes).await.expect("send");
    client.shutdown_write().await;
    assert_eq!(assert_ok(&client.reply().await).len(), 24);
    client.expect_close().await;

    // Partial message, then the socket simply goes away.
    for _ in 0..10 {
        let mut client = client_with_credentials(&local).await;
        client.send(partial).await.expect("send");
        drop(client);
    }
    canary.served_more(2).await;
    eventually("the abandoned connections are closed", || {
        open_connections(&local.enclave_state) == 1
    })
    .await;
    canary.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_byte_by_byte_is_served_and_holds_up_no_one() {
    let (local, mut canary) = start(&[]).await;
    let mut slow = client_with_credentials(&local).await;
    let command = frame(&generate_random(20));
    let (first_half, second_half) = command.split_at(command.len() / 2);
    for byte in first_half {
        slow.send(std::slice::from_ref(byte)).await.expect("send");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Half a message is pending on the slow connection: others are served meanwhile.
    canary.served_more(3).await;
    assert_served(&local.enclave, &local.credentials).await;
    for byte in second_half {
        slow.send(std::slice::from_ref(byte)).await.expect("send");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(assert_ok(&slow.reply().await).len(), 20);
    canary.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_mid_message_is_closed_at_the_idle_timeout() {
    let (local, mut canary) = start(&["--idle-timeout-secs", "1"]).await;
    let mut stalled = client_with_credentials(&local).await;
    stalled
        .send(br#"{"Operation":"GenerateRandom","#)
        .await
        .expect("send");
    // No reply for half a message: the connection is closed once idle for a second.
    stalled.expect_close().await;
    eventually("only the canary's connection is open", || {
        open_connections(&local.enclave_state) == 1
    })
    .await;
    canary.served_more(1).await;
    canary.finish().await;
}

/// One batch of abandoned connections: some send nothing, some a partial message of 32 KiB,
/// some a whole command whose reply they never read, some a byte; all are dropped.
async fn abandon_connections(local: &Local, count: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let address = local.enclave.clone();
        tasks.spawn(async move {
            let mut client = RawClient::connect(&address).await;
            let bytes: Vec<u8> = match i % 4 {
                0 => Vec::new(),
                1 => vec![b'['; 32 * 1024],
                2 => frame(&json!({"Operation": "Decrypt", "Ciphertext": "AAAA"})),
                _ => vec![b'{'],
            };
            if !bytes.is_empty() {
                let _ = client.send(&bytes).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("client task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_abandoned_connections_leave_nothing_behind() {
    const ROUND: usize = 1000;
    // Below the listen backlog (128), so that no connection waits for a SYN retransmission.
    const BATCH: usize = 50;
    let (local, mut canary) = start(&[]).await;
    let stats = &local.enclave_state.stats;
    let round = async |rounds_done: usize| {
        for _ in 0..ROUND / BATCH {
            abandon_connections(&local, BATCH).await;
        }
        let expected = 1 + (rounds_done as u64 + 1) * ROUND as u64;
        eventually("every connection was accepted and is closed again", || {
            stats.accepted.load(std::sync::atomic::Ordering::Relaxed) == expected
                && open_connections(&local.enclave_state) == 1
        })
        .await;
    };
    // A first round warms up allocator arenas and the runtime; later rounds must reuse that
    // memory. Leaking the per-connection buffers (32 KiB of read buffers and up to 32 KiB of
    // partial message each) would add at least 32 MiB per round.
    round(0).await;
    let warm = rss_bytes();
    for done in 1..5 {
        round(done).await;
        canary.served_more(1).await;
    }
    let grown = rss_bytes().saturating_sub(warm);
    assert!(
        grown < 32 << 20,
        "resident memory grew by {} MiB over 4000 abandoned connections",
        grown >> 20
    );
    assert_eq!(stats.refused.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_served(&local.enclave, &local.credentials).await;
    canary.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_with_a_reply() {
    const LIMIT: usize = 16;
    let (local, mut canary) = start(&["--max-connections", "16"]).await;
    // The canary holds one connection; fill the rest with clients that never send anything.
    let mut holders = Vec::new();
    for _ in 1..LIMIT {
        holders.push(RawClient::connect(&local.enclave).await);
    }
    eventually("the enclave has accepted every holder", || {
        open_connections(&local.enclave_state) == LIMIT
    })
    .await;
    for _ in 0..10 {
        let mut excess = RawClient::connect(&local.enclave).await;
        let reply = excess.reply().await;
        assert_error(&reply, "Internal", "Server busy: 16 connections open");
        excess.expect_close().await;
    }
    assert_eq!(
        local
            .enclave_state
            .stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        10
    );
    // At the limit, the connections already open are still served.
    canary.served_more(2).await;
    drop(holders);
    eventually("the holders' connections are closed", || {
        open_connections(&local.enclave_state) == 1
    })
    .await;
    assert_served(&local.enclave, &local.credentials).await;
    canary.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pipelined_commands_are_answered_in_order() {
    let (local, mut canary) = start(&[]).await;
    let mut client = RawClient::connect(&local.enclave).await;
    let mut bytes = frame(&set_client(&local.credentials));
    for i in 1..100u32 {
        let mut command = match i % 3 {
            0 => generate_random(i % 32 + 1),
            1 => json!({"Operation": "Decrypt"}),
            _ => json!({"Operation": "Encrypt"}),
        };
        command["RequestId"] = json!(format!("r{i}"));
        bytes.extend(frame(&command));
    }
    client.send(&bytes).await.expect("send");
    canary.served_more(1).await;
    assert_ok(&client.reply().await);
    for i in 1..100u32 {
        let reply = client.reply().await;
        assert_eq!(reply["RequestId"], format!("r{i}"), "out of order: {reply}");
        match i % 3 {
            0 => assert_eq!(assert_ok(&reply).len(), (i % 32 + 1) as usize),
            1 => assert_error(
                &reply,
                "BadRequest",
                "Message does not contain a Ciphertext",
            ),
            _ => assert_error(&reply, "BadRequest", "Operation not recognized"),
        }
    }
    canary.finish().await;
}

/// A JSON value of each type, named.
fn values_of_every_type() -> Vec<(&'static str, Value)> {
    vec![
        ("null", Value::Null),
        ("boolean", json!(true)),
        ("integer", json!(42)),
        ("negative number", json!(-1.5)),
        ("string", json!("text")),
        ("empty array", json!([])),
        ("array of strings", json!(["a", "b"])),
        ("empty object", json!({})),
        ("object of strings", json!({"a": "b"})),
    ]
}

/// The JSON types a field accepts.
#[derive(Clone, Copy)]
enum Accepts {
    String,
    OptionalString,
    Integer,
    OptionalInteger,
    StringMap,
    StringArray,
}

impl Accepts {
    fn accepts(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::OptionalString => value.is_string() || value.is_null(),
            // Numbers out of range are tested on their own.
            Self::Integer => value.is_number(),
            Self::OptionalInteger => value.is_number() || value.is_null(),
            Self::StringMap => {
                value.is_null()
                    || value
                        .as_object()
                        .is_some_and(|m| m.values().all(Value::is_string))
            }
            Self::StringArray => {
                value.is_null()
                    || value
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_string))
            }
        }
    }
}

/// One field of one command: what it accepts and what a wrong type gets (a null may get a
/// different text: "missing" rather than "wrong type").
struct Field {
    base: Value,
    name: &'static str,
    accepts: Accepts,
    wrong_type: &'static str,
    when_null: &'static str,
}

fn fields() -> Vec<Field> {
    let decrypt = json!({"Operation": "Decrypt", "Ciphertext": STANDARD.encode([7u8; 64])});
    let data_key = json!({"Operation": "GenerateDataKey", "KeyId": "alias/none"});
    let random = generate_random(8);
    let set_client = json!({
        "Operation": "SetClient", "AwsAccessKeyId": "AKIDEXAMPLE", "AwsSecretAccessKey": "secret",
    });
    let field = |base: &Value, name, accepts, wrong_type, when_null| Field {
        base: base.clone(),
        name,
        accepts,
        wrong_type,
        when_null,
    };
    use Accepts::{Integer as Int, OptionalInteger as OptInt, OptionalString as OptStr};
    use Accepts::{String as Str, StringArray as StrArray, StringMap as StrMap};
    let wrong = "JSON is wrong type";
    let op = "Operation is wrong type";
    let creds = "Could not read credentials";
    let region = "Could not set region correctly, check configuration.";
    let incomplete = "JSON structure incomplete";
    let not_base64 = "Ciphertext not a base64 string";
    let no_ciphertext = "Message does not contain a Ciphertext";
    vec![
        field(&random, "Operation", Str, op, op),
        field(&random, "RequestId", OptStr, wrong, ""),
        field(&set_client, "AwsAccessKeyId", Str, creds, creds),
        field(&set_client, "AwsSecretAccessKey", Str, creds, creds),
        field(&set_client, "AwsSessionToken", OptStr, creds, ""),
        field(&set_client, "AwsRegion", OptStr, region, ""),
        field(&decrypt, "Ciphertext", Str, not_base64, no_ciphertext),
        field(&decrypt, "EncryptionContext", StrMap, wrong, ""),
        field(&decrypt, "KeyId", OptStr, wrong, ""),
        field(&decrypt, "EncryptionAlgorithm", OptStr, wrong, ""),
        field(&decrypt, "GrantTokens", StrArray, wrong, ""),
        field(&data_key, "KeyId", Str, wrong, incomplete),
        field(&data_key, "KeySpec", OptStr, wrong, ""),
        field(&data_key, "NumberOfBytes", OptInt, wrong, ""),
        field(&data_key, "EncryptionContext", StrMap, wrong, ""),
        field(&data_key, "GrantTokens", StrArray, wrong, ""),
        field(&random, "NumberOfBytes", Int, wrong, incomplete),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_with_every_wrong_type_gets_its_documented_error() {
    let (local, mut canary) = start(&[]).await;
    let mut client = client_with_credentials(&local).await;
    let mut cases = 0;
    for field in fields() {
        for (type_name, value) in values_of_every_type() {
            if field.accepts.accepts(&value) {
                continue;
            }
            let expected = if value.is_null() {
                field.when_null
            } else {
                field.wrong_type
            };
            let mut command = field.base.clone();
            command[field.name] = value.clone();
            let request_id = format!("case-{cases}");
            if field.name != "RequestId" {
                command["RequestId"] = json!(request_id);
            }
            let reply = client.call(&command).await;
            let context = format!("{} as {type_name}: {reply}", field.name);
            assert_eq!(reply["Status"], "Error", "{context}");
            assert_eq!(reply["ErrorKind"], "BadRequest", "{context}");
            let message = reply["Message"].as_str().expect("Message");
            assert!(message.starts_with(expected), "{context}");
            if field.name != "RequestId" {
                assert_eq!(reply["RequestId"], request_id, "{context}");
            }
            cases += 1;
        }
    }
    assert!(cases >= 100, "only {cases} cases");

    // The whole message of a wrong type.
    for message in ["[]", "\"SetClient\"", "42", "null", "true"] {
        let mut bytes = message.as_bytes().to_vec();
        bytes.push(0);
        client.send(&bytes).await.expect("send");
        let reply = client.reply().await;
        assert_error(&reply, "BadRequest", "JSON is wrong type");
    }
    // Numbers of the right type but out of range.
    for n in [json!(0), json!(1025), json!(1.5), json!(-1), json!(1e3)] {
        let reply = client
            .call(&json!({"Operation": "GenerateRandom", "NumberOfBytes": n}))
            .await;
        assert_error(&reply, "BadRequest", "JSON is wrong type: NumberOfBytes");
    }
    // None of the refused SetClients replaced the client set first.
    canary.served_more(1).await;
    assert_eq!(assert_ok(&client.call(&generate_random(8)).await).len(), 8);
    canary.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_strings_are_refused_without_being_echoed() {
    let (local, mut canary) = start(&[]).await;
    let mut client = client_with_credentials(&local).await;
    let huge = "A".repeat(60_000);
    let not_base64 = "A".repeat(59_999);
    let huge_base64 = STANDARD.encode(vec![1u8; 45_000]);
    let good_set_client = set_client(&local.credentials);
    let with = |base: &Value, field: &str, value: &str| {
        let mut command = base.clone();
        command[field] = json!(value);
        command
    };
    let data_key = json!({"Operation": "GenerateDataKey", "KeyId": "alias/none"});
    let decrypt = json!({"Operation": "Decrypt", "Ciphertext": "AAAA"});
    let cases = [
        (
            with(&generate_random(8), "Operation", &huge),
            "Operation not recognized",
        ),
        (
            with(&generate_random(8), "RequestId", &huge),
            "JSON is wrong type: RequestId",
        ),
        (
            with(&good_set_client, "AwsAccessKeyId", &huge),
            "Could not create new client: AwsAccessKeyId is longer",
        ),
        (
            with(&good_set_client, "AwsSecretAccessKey", &huge),
            "Could not create new client: AwsSecretAccessKey is longer",
        ),
        (
            with(&good_set_client, "AwsSessionToken", &huge),
            "Could not create new client: AwsSessionToken is longer",
        ),
        (
            with(&good_set_client, "AwsRegion", &huge),
            "Could not set region correctly, check configuration.",
        ),
        (
            with(&decrypt, "Ciphertext", &huge_base64),
            "Could not decrypt ciphertext: Ciphertext",
        ),
        (
            with(&decrypt, "Ciphertext", &not_base64),
            "Ciphertext not a base64 string",
        ),
        (
            with(&decrypt, "KeyId", &huge),
            "Could not decrypt ciphertext: KeyId",
        ),
        (
            with(&decrypt, "EncryptionAlgorithm", &huge),
            "Could not decrypt ciphertext: EncryptionAlgorithm",
        ),
        (
            with(&data_key, "KeySpec", &huge),
            "JSON is wrong type: KeySpec",
        ),
    ];
    for (command, expected) in cases {
        let reply = client.call(&command).await;
        assert_error(&reply, "BadRequest", expected);
        assert!(
            reply.to_string().len() < 1024,
            "the reply echoes the input: {} bytes",
            reply.to_string().len()
        );
    }
    // A huge field the enclave does not know is ignored; the command is served.
    let mut command = generate_random(8);
    command["Unknown"] = json!(huge);
    assert_eq!(assert_ok(&client.call(&command).await).len(), 8);
    // A huge encryption context goes to KMS, which refuses it; the reply stays small.
    let mut context = EncryptionContext::new();
    context.insert("k".repeat(20_000), "v".repeat(20_000));
    let mut command = data_key.clone();
    command["EncryptionContext"] = json!(context);
    let reply = client.call(&command).await;
    assert_eq!(reply["Status"], "Error", "{reply}");
    assert!(reply.to_string().len() < 1024);

    canary.served_more(1).await;
    assert_eq!(assert_ok(&client.call(&generate_random(8)).await).len(), 8);
    canary.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_without_exhausting_the_stack() {
    let (local, mut canary) = start(&[]).await;
    let mut client = client_with_credentials(&local).await;
    let nested = |open: &str, inner: &str, close: &str, depth: usize| {
        format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
    };
    // Far deeper than any parser's recursion could survive unchecked, within the 64 KiB cap.
    let too_deep = [
        format!(
            r#"{{"Operation":"Decrypt","Ciphertext":"AAAA","EncryptionContext":{}}}"#,
            nested("[", "", "]", 30_000)
        ),
        format!(
            r#"{{"Operation":"GenerateRandom","NumberOfBytes":8,"X":{}}}"#,
            nested(r#"{"a":"#, "1", "}", 10_000)
        ),
        "[".repeat(60_000),
    ];
    for message in too_deep {
        let mut bytes = message.into_bytes();
        bytes.push(0);
        client.send(&bytes).await.expect("send");
        let reply = client.reply().await;
        assert_error(&reply, "BadRequest", "Error reading JSON object");
    }
    // Nesting a parser accepts: in a known field it is the wrong type, in an unknown one it
    // is ignored.
    let mut command = json!({"Operation": "Decrypt", "Ciphertext": "AAAA"});
    command["EncryptionContext"] =
        serde_json::from_str(&nested("{\"a\":", "\"b\"", "}", 100)).expect("JSON");
    assert_error(
        &client.call(&command).await,
        "BadRequest",
        "JSON is wrong type: EncryptionContext",
    );
    let mut command = generate_random(8);
    command["Deep"] = serde_json::from_str(&nested("[", "", "]", 100)).expect("JSON");
    assert_eq!(assert_ok(&client.call(&command).await).len(), 8);
    canary.served_more(1).await;
    canary.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_object_encryption_context_is_an_error_not_a_crash() {
    let (local, mut canary) = start(&[]).await;
    let key = local.kms.create_key("robust");
    let context: EncryptionContext = [("purpose".to_owned(), "test".to_owned())].into();
    let ciphertext = local
        .kms
        .encrypt(&key.key_id, b"still here", &context)
        .expect("encrypt");
    let mut client = client_with_credentials(&local).await;
    let bad_contexts = [
        json!("purpose=test"),
        json!(["purpose", "test"]),
        json!(1),
        json!(true),
        json!({"purpose": 1}),
        json!({"purpose": null}),
        json!({"purpose": {"nested": "test"}}),
        json!({"purpose": ["test"]}),
    ];
    for bad in &bad_contexts {
        for base in [
            json!({"Operation": "Decrypt", "Ciphertext": STANDARD.encode(&ciphertext)}),
            json!({"Operation": "GenerateDataKey", "KeyId": key.key_id}),
        ] {
            let mut command = base;
            command["EncryptionContext"] = bad.clone();
            let reply = client.call(&command).await;
            assert_error(
                &reply,
                "BadRequest",
                "JSON is wrong type: EncryptionContext must be an object whose values are strings",
            );
        }
    }
    canary.served_more(1).await;
    // The same connection then decrypts with the right context.
    let reply = client
        .call(&json!({
            "Operation": "Decrypt",
            "Ciphertext": STANDARD.encode(&ciphertext),
            "EncryptionContext": context,
        }))
        .await;
    assert_eq!(assert_ok(&reply), b"still here");
    canary.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_set_client_after_a_good_one_leaves_the_good_client_in_place() {
    // Local runs the enclave with --region us-east-1.
    let (local, mut canary) = start(&[]).await;
    let key = local.kms.create_key("robust");
    let ciphertext = local
        .kms
        .encrypt(&key.key_id, b"the good client", &EncryptionContext::new())
        .expect("encrypt");
    let decrypt = json!({"Operation": "Decrypt", "Ciphertext": STANDARD.encode(&ciphertext)});
    let mut client = client_with_credentials(&local).await;
    let bogus = json!({
        "Operation": "SetClient",
        "AwsAccessKeyId": "AKIAIOSFODNN7BOGUS00",
        "AwsSecretAccessKey": "bogus/bogus/bogus/bogus/bogus/bogus/bogu",
    });
    let bad_regions = [
        json!("eu-west-1"),
        json!("not a region"),
        json!(""),
        json!(7),
    ];
    for region in bad_regions {
        let mut command = bogus.clone();
        command["AwsRegion"] = region.clone();
        let reply = client.call(&command).await;
        assert_error(
            &reply,
            "BadRequest",
            "Could not set region correctly, check configuration.",
        );
        // KMS accepts the signature: the request was signed with the good client's keys.
        let reply = client.call(&decrypt).await;
        assert_eq!(
            assert_ok(&reply),
            b"the good client",
            "after region {region}"
        );
    }
    // A valid SetClient does replace the client: the bogus keys are then refused by KMS...
    assert_ok(&client.call(&bogus).await);
    let reply = client.call(&decrypt).await;
    assert_error(&reply, "Kms", "Could not decrypt ciphertext: ");
    // ...and the good keys work again once set.
    assert_ok(&client.call(&set_client(&local.credentials)).await);
    assert_eq!(assert_ok(&client.call(&decrypt).await), b"the good client");
    canary.served_more(1).await;
    canary.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_one_message_is_closed_at_the_message_timeout() {
    let (local, mut canary) = start(&["--message-timeout-secs", "2"]).await;
    let mut trickler = client_with_credentials(&local).await;
    // One byte per second never lets the idle timer (300 s) run out; the message's 2 s do.
    let started = tokio::time::Instant::now();
    let command = frame(&generate_random(20));
    let mut closed = false;
    for byte in &command[..command.len() - 1] {
        if trickler.send(std::slice::from_ref(byte)).await.is_err() {
            closed = true;
            break;
        }
        canary.served_more(1).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    // The terminator never went out, so no whole message ended the connection: the message
    // timeout did (the idle timeout, 300 s, is far beyond the wait's guard). Exactly when is
    // core's `a_message_trickled_past_the_message_timeout_closes_the_connection`.
    if !closed {
        trickler.expect_close().await;
    }
    eventually("only the canary's connection is open", || {
        open_connections(&local.enclave_state) == 1
    })
    .await;
    canary.served_more(1).await;
    canary.finish().await;
}
