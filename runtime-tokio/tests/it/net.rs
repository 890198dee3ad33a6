//! Listeners and streams for each address kind. vsock is only bound, never connected: there
//! is no vsock loopback here and a connection would leave the machine.

use kmstool_core::address::{ANY_CID, Address};
use kmstool_runtime_tokio::net::{Listener, connect};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn echo_once(listener: Listener) {
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.expect("read");
    stream.write_all(&buf).await.expect("write");
}

async fn round_trip(address: Address) {
    let listener = Listener::bind(&address).await.expect("bind");
    let bound = listener.local_address().expect("local address");
    let server = tokio::spawn(echo_once(listener));
    let mut client = connect(&bound).await.expect("connect");
    client.write_all(b"hello").await.expect("write");
    let mut back = [0u8; 5];
    client.read_exact(&mut back).await.expect("read");
    assert_eq!(&back, b"hello");
    server.await.expect("server");
}

#[tokio::test]
async fn tcp_round_trip_and_real_port() {
    let address: Address = "tcp:127.0.0.1:0".parse().unwrap();
    let listener = Listener::bind(&address).await.unwrap();
    let Address::Tcp { host, port } = listener.local_address().unwrap() else {
        panic!("not tcp");
    };
    assert_eq!(host, "127.0.0.1");
    assert_ne!(port, 0);
    drop(listener);
    round_trip(address).await;
}

#[tokio::test]
async fn unix_round_trip_replacing_a_stale_socket_file() {
    let dir = std::env::temp_dir().join(format!("kmstool-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("enclave.sock");
    std::fs::write(&path, b"stale").unwrap();
    round_trip(Address::Unix(path.clone())).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn vsock_binds_with_a_32_bit_port() {
    // Upstream's C stack once broke above 65535; binding proves the full range reaches the
    // kernel. Never connected here.
    let port = 70_000 + std::process::id() % 1_000_000;
    let listener = Listener::bind(&Address::Vsock { cid: ANY_CID, port })
        .await
        .expect("AF_VSOCK bind");
    assert_eq!(
        listener.local_address().unwrap(),
        Address::Vsock { cid: ANY_CID, port }
    );
}

#[tokio::test]
async fn connecting_nowhere_fails_cleanly() {
    let error = connect(&Address::Unix("/nonexistent/kmstool.sock".into()))
        .await
        .expect_err("no such socket");
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
}
