//! The enclave protocol's framing: every message is JSON followed by a 0 byte. The one place
//! the tests write a message's frame and split frames off the bytes received.

use serde_json::Value;

/// One message of the enclave protocol: JSON and a 0 byte.
pub fn frame(message: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(message).expect("a JSON value serialises");
    bytes.push(0);
    bytes
}

/// Removes the first complete frame from `received` and returns it without its 0 byte;
/// `None` (and `received` unchanged) while no 0 byte has arrived.
pub fn take_frame(received: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = received.iter().position(|&b| b == 0)?;
    let frame = received[..end].to_vec();
    received.drain(..=end);
    Some(frame)
}
