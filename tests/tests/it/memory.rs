//! The enclave's memory under clients that never read their replies, measured on the real
//! `kmstool-sim enclave` as its own process (its `VmRSS` and `VmHWM`): a hundred clients of
//! each hostile kind — a flood of empty frames, pipelined large commands while KMS is slow,
//! valid commands whose replies are never taken — must keep the enclave's peak resident
//! memory under the bound the limits state, RSS ≤ base + max-connections × (byte budget +
//! fixed cost per connection), while a well-behaved client keeps being served; and after they
//! leave, its memory must come back to its baseline plus 16 MiB. Then the outcome for a client
//! that does not take its replies, on both runtimes: the connection is closed (the bounds on
//! waiting only keep the tests from hanging).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_core::secret::Credentials;
use kmstool_core::session::{DEFAULT_MAX_CONNECTION_BYTES, SessionConfig};
use kmstool_enclave::limits::DRIVER_BYTES_PER_CONNECTION;
use kmstool_sim::kms::Faults;
use kmstool_sim::local::{Local, LocalOptions};
use kmstool_tests::framing::frame;
use kmstool_tests::hostile::{
    EnclaveProcess, Ending, Hostile, SmolEnclave, hostile_clients, mib, open_files_limit,
    socket_addr, wait_for_close,
};
use kmstool_tests::robust::{Canary, assert_served, generate_random, set_client};
use serde_json::json;

/// Hostile clients of each kind, all connected at once (the README states the bound under at
/// least 100 of each).
const HOSTILE: usize = 100;

/// `--max-connections`: the hostile clients, the canary and the honest probes, with room to
/// spare. The bound below is stated per allowed connection, so this is its `n`.
const MAX_CONNECTIONS: u64 = 128;

/// `--max-connection-bytes`, the byte budget of one connection: the default, passed
/// explicitly so the flag is exercised.
const CONNECTION_BUDGET: usize = DEFAULT_MAX_CONNECTION_BYTES;

/// The `base` of the bound, above the baseline measured after start-up and one honest call:
/// what the process may use whatever its number of connections — per-thread allocator
/// arenas of the runtime's workers and blocking threads, the KMS connection pool, and the
/// allocator's slack. An allowance, not a measurement: the baseline itself is measured.
const BASE: u64 = 16 << 20;

/// What one connection may hold by the README's statement: its session's bound (the message
/// being received, one read, the budget) and its driver's fixed share.
fn per_connection() -> u64 {
    let session = SessionConfig {
        max_connection_bytes: CONNECTION_BUDGET,
        ..SessionConfig::default()
    };
    (session.connection_bound() + DRIVER_BYTES_PER_CONNECTION) as u64
}

/// After the hostile clients leave, resident memory must come back to the baseline plus
/// this...
const RETURN_MARGIN: u64 = 16 << 20;

/// ...which the test waits for at most this long: a bound so that it cannot hang, not a
/// speed it requires.
const RETURN_WITHIN: Duration = kmstool_tests::PATIENCE;

/// How long the hostile clients stay connected after they stopped writing, while the
/// enclave's memory is watched.
const HOLD: Duration = Duration::from_secs(3);

/// A hostile client stops writing once the enclave has taken nothing for this long.
const STALL: Duration = Duration::from_secs(1);

/// The latency of the KMS emulator while the large commands wait ("KMS slow to answer").
/// Below the enclave's `--kms-timeout-ms` (10 s), so calls are slow, not failed.
const SLOW_KMS: Duration = Duration::from_secs(2);

/// The client's receive buffer where replies should back up quickly (the kernel doubles it
/// and enforces its own minimum).
const SMALL_RECEIVE_BUFFER: u32 = 4096;

/// Time a closure test allows the enclave to close a connection whose replies are not
/// taken, with `--message-timeout-secs 2`: only so the test cannot hang.
const CLOSE_BOUND: Duration = Duration::from_secs(30);

/// The memory tests run one at a time: each drives an enclave hard on a shared two-core
/// machine, and the 5 s return window must not be eaten by a neighbour's attack.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The byte-budget flag.
fn budget_args() -> Vec<String> {
    vec![
        "--max-connection-bytes".to_owned(),
        CONNECTION_BUDGET.to_string(),
    ]
}

/// The bound of the limits' statement for these flags, above `baseline`.
fn bound(baseline: u64) -> u64 {
    baseline + BASE + MAX_CONNECTIONS * per_connection()
}

/// A `Decrypt` of a made-up ciphertext whose framed message is about `size` bytes, nearly
/// all of it an `EncryptionContext` of tiny distinct keys (`"k1234":"v"`): its parsed map
/// is several times the message's size.
fn large_decrypt(size: usize) -> Vec<u8> {
    let ciphertext = STANDARD.encode([0x5a; 96]);
    let head =
        format!(r#"{{"Operation":"Decrypt","Ciphertext":"{ciphertext}","EncryptionContext":{{"#);
    let mut text = head;
    let mut i = 0;
    while text.len() + 32 < size {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(r#""k{i}":"v""#));
        i += 1;
    }
    text.push_str("}}");
    let mut bytes = text.into_bytes();
    bytes.push(0);
    assert!(bytes.len() <= size, "{} > {size}", bytes.len());
    bytes
}

/// Frames repeated up to about `total` bytes.
fn repeated(frame: &[u8], total: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(total + frame.len());
    while bytes.len() + frame.len() <= total {
        bytes.extend_from_slice(frame);
    }
    bytes
}

/// Builds what the hostile clients write from the credentials the emulator accepts.
type Payloads = Box<dyn FnOnce(&Credentials) -> Vec<Arc<Vec<u8>>>>;

/// One hostile kind.
struct Attack {
    name: &'static str,
    /// Extra enclave flags (besides `--max-connections` and the budget).
    enclave_args: Vec<String>,
    /// KMS latency while the clients are connected.
    kms_latency: Option<Duration>,
    receive_buffer: Option<u32>,
    /// What the clients write, given the credentials the emulator accepts: client `i`
    /// writes the `i % len`th.
    payloads: Payloads,
}

/// Starts an enclave process, measures its baseline after one honest call, connects
/// [`HOSTILE`] clients of `attack`'s kind with a canary running, and asserts the bound
/// while they are connected and the return to baseline after they leave.
async fn measure(attack: Attack) {
    let _serial = SERIAL.lock().await;
    if let Some(limit) = open_files_limit() {
        // The hostile clients, the canary and probes here; the enclave's KMS connections
        // end in this process too (the emulator runs here).
        let needed = 2 * MAX_CONNECTIONS + 64;
        assert!(
            limit >= needed,
            "the open-files limit ({limit}) is below the {needed} this test needs: raise \
             `ulimit -n`"
        );
    }
    let mut args = vec!["--max-connections".to_owned(), MAX_CONNECTIONS.to_string()];
    args.extend(budget_args());
    args.extend(attack.enclave_args.iter().cloned());
    let enclave = EnclaveProcess::start(&args).await;
    assert_served(&enclave.address, &enclave.credentials).await;
    let baseline = enclave.rss();
    let limit = bound(baseline);
    let mut canary = Canary::start(&enclave.address, &enclave.credentials).await;
    canary.served_more(1).await;
    enclave.reset_peak();

    if let Some(latency) = attack.kms_latency {
        enclave.kms.set_faults(Faults {
            latency,
            ..Faults::default()
        });
    }
    let payloads = (attack.payloads)(&enclave.credentials);
    let started = Instant::now();
    let clients: Vec<Hostile> = hostile_clients(
        socket_addr(&enclave.address),
        HOSTILE,
        attack.receive_buffer,
        STALL,
        |i| Arc::clone(&payloads[i % payloads.len()]),
    )
    .await;
    let written: usize = clients.iter().map(|c| c.written).sum();
    let pushed = started.elapsed();
    tokio::time::sleep(HOLD).await;
    let peak_connected = enclave.peak_rss();
    let report = |peak: u64, after: Option<(u64, Duration)>| {
        let after = after.map_or_else(String::new, |(rss, when)| {
            format!("; {} {when:.1?} after they left", mib(rss))
        });
        format!(
            "{}: {HOSTILE} clients wrote {} in {pushed:.1?}; enclave RSS baseline {}, peak \
             {} while they were connected, peak {} in all{after}; bound {} = baseline + {} + \
             {MAX_CONNECTIONS} x {} KiB ({} KiB budget)",
            attack.name,
            mib(written as u64),
            mib(baseline),
            mib(peak_connected),
            mib(peak),
            mib(limit),
            mib(BASE),
            per_connection() >> 10,
            CONNECTION_BUDGET >> 10,
        )
    };
    eprintln!("{}", report(peak_connected, None));
    assert!(
        !enclave.killed_for_memory(),
        "the enclave was killed for using more than 4 GiB: {}",
        report(peak_connected, None)
    );
    // The well-behaved client is served while every hostile client is still connected.
    canary.served_more(1).await;

    // They leave (KMS stays as slow as it was: its slowness is not theirs).
    drop(clients);
    let left = Instant::now();
    let target = baseline + RETURN_MARGIN;
    let mut after = enclave.rss();
    while after > target && left.elapsed() < RETURN_WITHIN {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = enclave.rss();
    }
    let after = (after, left.elapsed());
    // The bound holds at every moment, also while the enclave works off what they left.
    let peak = enclave.peak_rss();
    let report = report(peak, Some(after));
    eprintln!("{report}");
    assert!(
        peak <= limit,
        "the enclave's peak RSS is over the bound by {}: {report}",
        mib(peak.saturating_sub(limit))
    );
    assert!(
        after.0 <= target,
        "{RETURN_WITHIN:?} after the hostile clients left, the enclave's RSS is over its \
         baseline + {}: {report}",
        mib(RETURN_MARGIN),
    );
    enclave.kms.set_faults(Faults::default());
    assert_served(&enclave.address, &enclave.credentials).await;
    canary.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_flood_from_100_clients_stays_under_the_bound_and_is_given_back() {
    // 256 KiB of empty frames each: every byte a frame, every frame an error reply of
    // about 90 bytes (over 20 MiB of replies per client), never read.
    measure(Attack {
        name: "reply flood",
        enclave_args: Vec::new(),
        kms_latency: None,
        receive_buffer: None,
        payloads: Box::new(|_| vec![Arc::new(vec![0u8; 256 * 1024])]),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_commands_queued_by_100_clients_while_kms_is_slow_stay_under_the_bound() {
    // After a SetClient, about 1 MiB of pipelined Decrypts each: half the clients send
    // messages just under the 64 KiB cap (their parsed context is larger than the whole
    // byte budget), half 16 KiB ones (a few fit in the budget). KMS answers each call only
    // after 2 s, so they wait.
    measure(Attack {
        name: "large queued commands",
        enclave_args: Vec::new(),
        kms_latency: Some(SLOW_KMS),
        receive_buffer: None,
        payloads: Box::new(|credentials| {
            [60 * 1024, 16 * 1024]
                .map(|size| {
                    let mut bytes = frame(&set_client(credentials));
                    bytes.extend(repeated(&large_decrypt(size), 1 << 20));
                    Arc::new(bytes)
                })
                .to_vec()
        }),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_commands_from_100_clients_that_never_read_stay_under_the_bound() {
    // Valid commands whose replies are never taken, into a 4 KiB receive buffer: a few
    // GenerateRandom of 1 KiB (each a KMS call and a 1.4 KiB reply), then 256 KiB of cheap
    // ones, each answered with an error.
    measure(Attack {
        name: "never-reading clients",
        enclave_args: Vec::new(),
        kms_latency: None,
        receive_buffer: Some(SMALL_RECEIVE_BUFFER),
        payloads: Box::new(|credentials| {
            let mut bytes = frame(&set_client(credentials));
            for _ in 0..4 {
                bytes.extend(frame(&generate_random(1024)));
            }
            bytes.extend(repeated(
                &frame(&json!({"Operation": "Decrypt"})),
                256 * 1024,
            ));
            vec![Arc::new(bytes)]
        }),
    })
    .await;
}

/// `count` clients that send 256 KiB of empty frames into a small receive buffer and never
/// read; the enclave must close each within [`CLOSE_BOUND`] while it still does not read.
async fn assert_closed(address: &kmstool_core::address::Address, count: usize) {
    let flood = Arc::new(vec![0u8; 256 * 1024]);
    let clients = hostile_clients(
        socket_addr(address),
        count,
        Some(SMALL_RECEIVE_BUFFER),
        STALL,
        |_| Arc::clone(&flood),
    )
    .await;
    let mut waits = tokio::task::JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        waits.spawn(async move {
            let ending = wait_for_close(&client.stream, CLOSE_BOUND).await;
            (i, client.written, ending)
        });
    }
    let mut not_closed = Vec::new();
    while let Some(done) = waits.join_next().await {
        let (i, frames, ending) = done.expect("waiting task");
        if let Ending::NotClosed { replies, then } = ending {
            not_closed.push(format!(
                "client {i} ({frames} frames sent): once it read, {replies} replies, then {then}"
            ));
        }
    }
    assert!(
        not_closed.is_empty(),
        "{} of {count} clients that did not read their replies were still connected \
         {CLOSE_BOUND:?} later:\n{}",
        not_closed.len(),
        not_closed.join("\n")
    );
}

/// Clients that do not take their replies, in the closure tests.
const CLOSE_CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_closes_a_client_that_does_not_take_its_replies() {
    let _serial = SERIAL.lock().await;
    let mut args: Vec<String> = [
        "--message-timeout-secs",
        "2",
        "--idle-timeout-secs",
        "5",
        "--max-connections",
        "64",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(budget_args());
    let enclave = EnclaveProcess::start(&args).await;
    let mut canary = Canary::start(&enclave.address, &enclave.credentials).await;
    assert_closed(&enclave.address, CLOSE_CLIENTS).await;
    canary.served_more(1).await;
    assert_served(&enclave.address, &enclave.credentials).await;
    canary.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smol_closes_a_client_that_does_not_take_its_replies() {
    let _serial = SERIAL.lock().await;
    let local = Local::start(LocalOptions::default())
        .await
        .expect("local setup");
    let session = SessionConfig {
        message_timeout: Some(Duration::from_secs(2)),
        idle_timeout: Some(Duration::from_secs(5)),
        ..SessionConfig::default()
    };
    let smol = SmolEnclave::start(&local, session, 64).await;
    let mut canary = Canary::start(&smol.address, &local.credentials).await;
    assert_closed(&smol.address, CLOSE_CLIENTS).await;
    canary.served_more(1).await;
    assert_served(&smol.address, &local.credentials).await;
    canary.finish().await;
}
