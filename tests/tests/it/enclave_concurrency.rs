//! Many clients at once: 50 connections, each with its own credentials, ciphertext
//! and encryption context, all get their own plaintext while another connection sends garbage
//! the whole time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kmstool_core::address::Address;
use kmstool_core::secret::Credentials;
use kmstool_sim::imds::random_credentials;
use kmstool_sim::kms::SimCredentials;
use kmstool_sim::local::{Local, LocalOptions};
use kmstool_tests::connection::Conn;
use kmstool_tests::protocol::{assert_error, assert_ok, context, decrypt};
use tokio::sync::Barrier;

const CLIENTS: usize = 50;
/// The enclave's default cap on a message, terminator included.
const MAX_MESSAGE: usize = 65536;

/// What the garbage connection saw.
#[derive(Debug, Default)]
struct Garbage {
    error_replies: u64,
    closed_on_oversize: u64,
}

/// Sends malformed messages, then an oversized one, over and over on fresh connections until
/// `stop`; checks every reply on the way.
async fn send_garbage(address: Address, stop: Arc<AtomicBool>) -> Garbage {
    let mut seen = Garbage::default();
    let junk: [(&[u8], &str); 5] = [
        (
            b"\xff\xfe\xfd not even UTF-8\0",
            "Error reading JSON object",
        ),
        (b"[1,2,3]\0", "JSON is wrong type"),
        (b"{\"Operation\":\"Decrypt\"\0", "Error reading JSON object"),
        (b"{\"Operation\":\"Nope\"}\0", "Operation not recognized"),
        (
            b"{\"Operation\":\"Decrypt\",\"Ciphertext\":\"AAAA\"}\0",
            "Client not initialized",
        ),
    ];
    loop {
        let mut conn = Conn::connect(&address).await;
        for (bytes, text) in junk {
            conn.send_bytes(bytes).await;
            let reply = conn.reply().await;
            assert_eq!(reply["Status"], "Error", "{reply}");
            assert!(
                reply["Message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(text)),
                "{reply}"
            );
            seen.error_replies += 1;
        }
        // A message reaching the cap without a terminator: one reply, then the close.
        conn.send_bytes(&vec![b'x'; MAX_MESSAGE]).await;
        let reply = conn.reply().await;
        assert_error(&reply, "BadRequest", "Message size too large.");
        assert_eq!(conn.next_reply().await, None, "the connection stays open");
        seen.closed_on_oversize += 1;
        if stop.load(Ordering::SeqCst) {
            return seen;
        }
    }
}

/// One client: its own credentials, then its own ciphertext under its own context.
async fn client(
    address: Address,
    credentials: Credentials,
    blob: Vec<u8>,
    index: usize,
    start: Arc<Barrier>,
) -> Vec<u8> {
    let mut conn = Conn::connect(&address).await;
    conn.set_client(&credentials, None).await;
    start.wait().await;
    let ctx = context(&[("client", &index.to_string())]);
    assert_ok(&conn.call(&decrypt(&blob, &ctx)).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_with_their_own_credentials_and_a_garbage_sender() {
    let local = Local::start(LocalOptions::default())
        .await
        .expect("local setup");
    let key = local.kms.create_key("concurrency");
    let mut identities = Vec::new();
    for index in 0..CLIENTS {
        let credentials = random_credentials();
        local
            .kms
            .add_credentials(SimCredentials::new(credentials.clone(), "111122223333"));
        let ctx = context(&[("client", &index.to_string())]);
        let plaintext = format!("plaintext of client {index}").into_bytes();
        let blob = local
            .kms
            .encrypt(&key.key_id, &plaintext, &ctx)
            .expect("Encrypt");
        identities.push((credentials, blob, plaintext));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let garbage = tokio::spawn(send_garbage(local.enclave.clone(), Arc::clone(&stop)));
    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = identities
        .iter()
        .enumerate()
        .map(|(index, (credentials, blob, _))| {
            tokio::spawn(client(
                local.enclave.clone(),
                credentials.clone(),
                blob.clone(),
                index,
                Arc::clone(&start),
            ))
        })
        .collect();
    let mut results = Vec::new();
    for handle in clients {
        results.push(handle.await.expect("client task"));
    }
    stop.store(true, Ordering::SeqCst);
    let garbage = garbage.await.expect("garbage task");

    for (index, (result, (_, _, plaintext))) in results.iter().zip(&identities).enumerate() {
        assert_eq!(result, plaintext, "client {index}");
    }
    assert!(garbage.error_replies >= 5, "{garbage:?}");
    assert!(garbage.closed_on_oversize >= 1, "{garbage:?}");

    // Every Decrypt was signed with one client's credentials, each client's exactly once:
    // no connection used another's client.
    let stats = local.kms.stats();
    assert_eq!(stats.by_operation.get("Decrypt"), Some(&(CLIENTS as u64)));
    let mut signers: BTreeMap<String, usize> = BTreeMap::new();
    for record in &stats.recent {
        if record.target.as_deref() == Some("TrentService.Decrypt") {
            let id = record.access_key_id.clone().unwrap_or_default();
            *signers.entry(id).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, usize> = identities
        .iter()
        .map(|(c, _, _)| (c.access_key_id.clone(), 1))
        .collect();
    assert_eq!(signers, expected);
    let enclave = &local.enclave_state.stats;
    assert_eq!(enclave.refused.load(Ordering::Relaxed), 0);
    assert!(enclave.accepted.load(Ordering::Relaxed) > CLIENTS as u64);
}
