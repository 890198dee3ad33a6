//! The enclave protocol as the tests write it: commands (`SetClient`, `Decrypt`), the base64
//! and encryption contexts they carry, and checks of the replies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_core::protocol::EncryptionContext;
use kmstool_core::secret::Credentials;
use serde_json::{Value, json};

/// Standard padded base64.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard padded base64, panicking with the text when it is not.
pub fn unb64(text: &str) -> Vec<u8> {
    STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text:?}"))
}

/// An encryption context from pairs.
pub fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A `SetClient` command for `credentials` (with its session token, if any) and `region`.
pub fn set_client(credentials: &Credentials, region: Option<&str>) -> Value {
    let mut command = json!({
        "Operation": "SetClient",
        "AwsAccessKeyId": credentials.access_key_id,
        "AwsSecretAccessKey": credentials.secret_access_key.expose(),
    });
    if let Some(token) = &credentials.session_token {
        command["AwsSessionToken"] = token.expose().into();
    }
    if let Some(region) = region {
        command["AwsRegion"] = region.into();
    }
    command
}

/// A `Decrypt` command.
pub fn decrypt(ciphertext: &[u8], encryption_context: &EncryptionContext) -> Value {
    let mut command = json!({"Operation": "Decrypt", "Ciphertext": b64(ciphertext)});
    if !encryption_context.is_empty() {
        command["EncryptionContext"] = json!(encryption_context);
    }
    command
}

/// Asserts an error reply: its `ErrorKind` and that `Message` starts with `prefix`; returns
/// the message.
pub fn assert_error(reply: &Value, kind: &str, prefix: &str) -> String {
    assert_eq!(reply["Status"], "Error", "{reply}");
    assert_eq!(reply["ErrorKind"], kind, "{reply}");
    let message = reply["Message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.starts_with(prefix),
        "message should start with {prefix:?}: {reply}"
    );
    message
}

/// The decoded `Message` of a success reply.
pub fn assert_ok(reply: &Value) -> Vec<u8> {
    assert_eq!(reply["Status"], "Ok", "{reply}");
    unb64(reply["Message"].as_str().expect("Message"))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
