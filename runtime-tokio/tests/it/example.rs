//! Runs `examples/kms_client.rs` — the crate documentation's example against `kmstool-sim` —
//! and checks what it got back.

#[path = "../../examples/kms_client.rs"]
#[allow(dead_code)] // its `main`
mod kms_client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_seals_and_opens_through_attested_calls() {
    let message = b"a secret only this enclave may read";
    let seen = kms_client::run(message).await.expect("the example runs");
    assert_eq!(seen.opened.expose(), message);
    assert_eq!(seen.data_key.len(), 32);
    assert_eq!(seen.data_key, seen.data_key_again);
    assert_eq!(seen.random.len(), 32);
    assert_ne!(seen.random.expose(), &[0u8; 32]);
}
