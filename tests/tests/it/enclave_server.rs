//! The enclave server's connection handling: the connection limit, clients that
//! vanish mid-call, and shutdown letting in-flight commands finish.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kmstool_sim::kms::Faults;
use kmstool_sim::local::{Local, LocalOptions};
use kmstool_tests::PATIENCE;
use kmstool_tests::connection::Conn;
use kmstool_tests::protocol::{assert_error, assert_ok, context, decrypt};
use serde_json::json;

/// Polls `done` until it holds (at most [`PATIENCE`]).
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn slow_kms(latency_ms: u64) -> LocalOptions {
    LocalOptions {
        faults: Faults {
            latency: Duration::from_millis(latency_ms),
            ..Faults::default()
        },
        ..LocalOptions::default()
    }
}

#[tokio::test]
async fn connections_over_the_limit_are_told_and_closed() {
    let local = Local::start(LocalOptions {
        enclave_args: vec!["--max-connections".into(), "2".into()],
        ..LocalOptions::default()
    })
    .await
    .expect("local setup");
    let mut first = Conn::connect(&local.enclave).await;
    first.set_client(&local.credentials, None).await;
    let mut second = Conn::connect(&local.enclave).await;
    second.set_client(&local.credentials, None).await;

    let mut third = Conn::connect(&local.enclave).await;
    let reply = third.reply().await;
    assert_error(
        &reply,
        "Internal",
        "Server busy: 2 connections open, try again later",
    );
    assert_eq!(third.next_reply().await, None);
    let stats = &local.enclave_state.stats;
    assert_eq!(stats.refused.load(Ordering::Relaxed), 1);

    // The two served connections are unaffected; once one leaves, a new one is served.
    let random = json!({"Operation": "GenerateRandom", "NumberOfBytes": 2});
    assert_eq!(assert_ok(&second.call(&random).await).len(), 2);
    drop(first);
    until("the first connection is released", || {
        stats.open_connections.load(Ordering::Relaxed) < 2
    })
    .await;
    let mut fourth = Conn::connect(&local.enclave).await;
    fourth.set_client(&local.credentials, None).await;
    assert_eq!(assert_ok(&fourth.call(&random).await).len(), 2);
}

#[tokio::test]
async fn a_client_leaving_mid_call_disturbs_no_one() {
    let local = Local::start(slow_kms(200)).await.expect("local setup");
    let key = local.kms.create_key("k");
    let blob = local
        .kms
        .encrypt(&key.key_id, b"stay", &context(&[]))
        .expect("Encrypt");

    let mut leaving = Conn::connect(&local.enclave).await;
    leaving.set_client(&local.credentials, None).await;
    leaving.send(&decrypt(&blob, &context(&[]))).await;
    until("the call reached KMS", || local.kms.stats().requests == 1).await;
    drop(leaving);

    let mut staying = Conn::connect(&local.enclave).await;
    staying.set_client(&local.credentials, None).await;
    assert_eq!(
        assert_ok(&staying.call(&decrypt(&blob, &context(&[]))).await),
        b"stay"
    );
    let stats = &local.enclave_state.stats;
    until("the abandoned session ends", || {
        stats.open_connections.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(local.kms.stats().requests, 2);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_commands_then_closes() {
    let local = Local::start(slow_kms(300)).await.expect("local setup");
    let key = local.kms.create_key("k");
    let blob = local
        .kms
        .encrypt(&key.key_id, b"in flight", &context(&[]))
        .expect("Encrypt");
    let address = local.enclave.clone();

    let mut conn = Conn::connect(&address).await;
    conn.set_client(&local.credentials, None).await;
    conn.send(&decrypt(&blob, &context(&[]))).await;
    until("the call reached KMS", || local.kms.stats().requests == 1).await;
    let stopping = tokio::spawn(local.stop());

    assert_eq!(assert_ok(&conn.reply().await), b"in flight");
    assert_eq!(conn.next_reply().await, None);
    stopping
        .await
        .expect("stop task")
        .expect("the server stopped cleanly");
    assert!(
        kmstool_runtime_tokio::net::connect(&address).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_but_not_during_a_call() {
    let local = Local::start(LocalOptions {
        enclave_args: vec!["--idle-timeout-secs".into(), "1".into()],
        ..slow_kms(1500)
    })
    .await
    .expect("local setup");
    let mut conn = Conn::connect(&local.enclave).await;
    conn.set_client(&local.credentials, None).await;
    // A call longer than the idle timeout is answered.
    let random = json!({"Operation": "GenerateRandom", "NumberOfBytes": 3});
    assert_eq!(assert_ok(&conn.call(&random).await).len(), 3);
    // Then, with nothing to do, the connection is closed without a word (when: core's
    // virtual-clock tests `idle_connections_close` and
    // `the_idle_timer_waits_while_a_call_is_in_flight`).
    assert_eq!(conn.next_reply().await, None);
}
