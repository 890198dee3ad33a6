//! Containers for secret values: credentials, plaintexts, data keys.
//!
//! Each type zeroizes its memory on drop and prints as `[redacted]` through both `Debug` and
//! `Display`, so a secret cannot reach a log line, an error message or a panic by accident.
//! Reading the value takes an explicit call (`expose`), which is easy to find in review.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Secret bytes: a plaintext, a data key, a private key in DER.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps bytes; the vector's buffer is zeroized when this value drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Standard padded base64 of the secret, itself secret.
    pub fn to_base64(&self) -> SecretString {
        use base64::Engine as _;
        SecretString::new(base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretBytes {
    fn from(mut bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(std::mem::take(&mut *bytes))
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([redacted; {} bytes])", self.0.len())
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A secret string: a secret access key, a session token, a base64 plaintext.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a string; its buffer is zeroized when this value drops.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// AWS credentials. The access key id is an identifier, not a secret, and is printed; the
/// secret key and session token are not.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `AKIA…`/`ASIA…` access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// The session token of temporary credentials.
    pub session_token: Option<SecretString>,
}

impl Credentials {
    /// Credentials from their parts.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<SecretString>,
        session_token: Option<SecretString>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// `value` as compact JSON in a zeroizing buffer sized exactly before it is written: growing
/// would free an unwiped copy of whatever secret the JSON carries. Empty if serialising fails,
/// which it does not for structs of strings, numbers and maps of strings.
pub(crate) fn zeroizing_json<T: serde::Serialize + ?Sized>(value: &T) -> Zeroizing<Vec<u8>> {
    struct ByteCount(usize);
    impl std::io::Write for ByteCount {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = ByteCount(0);
    if serde_json::to_writer(&mut counter, value).is_err() {
        return Zeroizing::new(Vec::new());
    }
    let mut out = Zeroizing::new(Vec::with_capacity(counter.0));
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let bytes = SecretBytes::new(b"hunter2-bytes".to_vec());
        let text = SecretString::from("hunter2-text");
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "hunter2-secret",
            Some("hunter2-token".into()),
        );
        for shown in [
            format!("{bytes:?} {bytes} {:?}", bytes.to_base64()),
            format!("{text:?} {text}"),
            format!("{creds:?} {creds:#?}"),
        ] {
            assert!(!shown.contains("hunter2"), "leaked: {shown}");
        }
        assert!(format!("{creds:?}").contains("AKIDEXAMPLE"));
        assert_eq!(format!("{bytes:?}"), "SecretBytes([redacted; 13 bytes])");
    }

    #[test]
    fn base64_of_secret_bytes_is_standard_padded() {
        let bytes = SecretBytes::new(b"Hello, KMS!".to_vec());
        assert_eq!(bytes.to_base64().expose(), "SGVsbG8sIEtNUyE=");
    }
}
