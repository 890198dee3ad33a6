//! A client connection to an enclave (TCP, Unix socket or vsock address) that speaks the
//! protocol byte by byte.

use kmstool_core::address::Address;
use kmstool_core::secret::Credentials;
use kmstool_runtime_tokio::net::{Stream, connect};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::PATIENCE;
use crate::framing::{frame, take_frame};
use crate::protocol::set_client;

/// A connection to an enclave that speaks the protocol byte by byte, so tests can send
/// anything (pipelined commands, garbage) and see every reply.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `address`.
    pub async fn connect(address: &Address) -> Self {
        let stream = connect(address)
            .await
            .unwrap_or_else(|e| panic!("connecting to the enclave at {address}: {e}"));
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends one framed command.
    pub async fn send(&mut self, command: &Value) {
        self.send_bytes(&frame(command)).await;
    }

    /// Sends raw bytes in one write.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("writing to the enclave: {e}"));
    }

    /// Sends raw bytes; `false` when the enclave has closed the connection.
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Closes the sending side (the enclave answers what it has, then closes).
    pub async fn finish(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// The next reply, `None` when the enclave closed the connection (or reset it) first.
    pub async fn next_reply(&mut self) -> Option<Value> {
        tokio::time::timeout(PATIENCE, self.read_frame())
            .await
            .unwrap_or_else(|_| panic!("no reply within {PATIENCE:?}"))
            .map(|bytes| {
                serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "reply is not JSON ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    )
                })
            })
    }

    /// The next reply; panics when the connection closes first.
    pub async fn reply(&mut self) -> Value {
        self.next_reply()
            .await
            .expect("the enclave closed the connection instead of replying")
    }

    /// Sends `command` and returns its reply.
    pub async fn call(&mut self, command: &Value) -> Value {
        self.send(command).await;
        self.reply().await
    }

    /// Sends `SetClient` and asserts it succeeded.
    pub async fn set_client(&mut self, credentials: &Credentials, region: Option<&str>) {
        let reply = self.call(&set_client(credentials, region)).await;
        assert_eq!(reply, json!({"Status": "Ok"}), "SetClient");
    }

    /// Every reply until the enclave closes the connection.
    pub async fn replies_until_close(&mut self) -> Vec<Value> {
        let mut replies = Vec::new();
        while let Some(reply) = self.next_reply().await {
            replies.push(reply);
        }
        replies
    }

    async fn read_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(frame) = take_frame(&mut self.buf) {
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    assert!(
                        self.buf.is_empty(),
                        "connection closed after a partial reply: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
