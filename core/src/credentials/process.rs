//! Credentials from a profile's `credential_process`: the output it must print, and why it
//! may be refused. Running the command is the caller's (through `sh -c`, as the AWS CLI
//! does on Unix, with a deadline and stdin closed).
//!
//! The output is a JSON object: `Version` (must be 1), `AccessKeyId`, `SecretAccessKey`, an
//! optional `SessionToken` and an optional `Expiration` (ISO 8601 UTC, e.g.
//! `2026-11-29T10:26:21Z`); credentials whose expiration has passed are refused.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::SecretField;
use crate::secret::Credentials;
use crate::sigv4::AmzDate;

/// Default time the command is given to print its credentials.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest output read from the command.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// Why `credential_process` gave no credentials. Never holds a secret (no output, no
/// command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessError {
    /// The command could not be started (the I/O error's text).
    Spawn(String),
    /// Reading its output or waiting for it failed (the I/O error's text).
    Io(String),
    /// It ran longer than allowed.
    Timeout(Duration),
    /// It exited unsuccessfully (how, e.g. `exit status: 2`).
    Status(String),
    /// It printed more than [`MAX_OUTPUT_BYTES`].
    TooLong,
    /// Its output is not what the AWS CLI expects (names the problem, never a value).
    Malformed(&'static str),
    /// `Version` is not 1.
    Version(i64),
    /// The credentials expired at this time (as printed).
    Expired(String),
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("credential_process ")?;
        match self {
            Self::Spawn(error) => write!(f, "could not be started: {error}"),
            Self::Io(error) => write!(f, "failed: {error}"),
            Self::Timeout(after) => write!(f, "did not finish within {} s", after.as_secs()),
            Self::Status(status) => write!(f, "failed ({status})"),
            Self::TooLong => write!(f, "printed more than {MAX_OUTPUT_BYTES} bytes"),
            Self::Malformed(what) => write!(f, "printed an unusable document: {what}"),
            Self::Version(version) => write!(f, "printed Version {version}; only 1 is supported"),
            Self::Expired(at) => write!(f, "returned credentials that expired at {at}"),
        }
    }
}

impl std::error::Error for ProcessError {}

/// Credentials a process printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessCredentials {
    /// The credentials.
    pub credentials: Credentials,
    /// When they expire, if the process said (as printed).
    pub expiration: Option<String>,
}

#[derive(Deserialize)]
struct Document {
    #[serde(rename = "Version")]
    version: Option<i64>,
    #[serde(rename = "AccessKeyId")]
    access_key_id: Option<String>,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: Option<SecretField>,
    #[serde(rename = "SessionToken")]
    session_token: Option<SecretField>,
    #[serde(rename = "Expiration")]
    expiration: Option<String>,
}

/// Parses what the process printed on stdout; `now` is the caller's clock, to refuse expired
/// credentials.
pub fn parse_output(stdout: &[u8], now: SystemTime) -> Result<ProcessCredentials, ProcessError> {
    if stdout.len() > MAX_OUTPUT_BYTES {
        return Err(ProcessError::TooLong);
    }
    let text = std::str::from_utf8(stdout).map_err(|_| ProcessError::Malformed("not UTF-8"))?;
    let document: Document = serde_json::from_str(text)
        .map_err(|_| ProcessError::Malformed("not a JSON object with the expected fields"))?;
    match document.version {
        Some(1) => {}
        Some(version) => return Err(ProcessError::Version(version)),
        None => return Err(ProcessError::Malformed("Version missing")),
    }
    let access_key_id = document
        .access_key_id
        .filter(|id| !id.is_empty())
        .ok_or(ProcessError::Malformed("AccessKeyId missing"))?;
    let secret_access_key = document
        .secret_access_key
        .map(|field| field.0)
        .filter(|secret| !secret.is_empty())
        .ok_or(ProcessError::Malformed("SecretAccessKey missing"))?;
    let session_token = document
        .session_token
        .map(|field| field.0)
        .filter(|token| !token.is_empty());
    let expiration = document.expiration.filter(|e| !e.is_empty());
    if let Some(expiration) = &expiration {
        let at = parse_utc(expiration).ok_or(ProcessError::Malformed(
            "Expiration is not an ISO 8601 UTC time",
        ))?;
        if at <= now {
            return Err(ProcessError::Expired(expiration.chars().take(40).collect()));
        }
    }
    Ok(ProcessCredentials {
        credentials: Credentials::new(access_key_id, secret_access_key, session_token),
        expiration,
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`, to whole seconds.
fn parse_utc(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let body = text
        .strip_suffix(['Z', 'z'])
        .or_else(|| text.strip_suffix("+00:00"))?;
    let body = match body.split_once('.') {
        Some((whole, fraction))
            if !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit()) =>
        {
            whole
        }
        Some(_) => return None,
        None => body,
    };
    let b = body.as_bytes();
    let shaped = b.len() == 19
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':';
    if !shaped {
        return None;
    }
    let compact: String = body
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    AmzDate::parse(&format!("{compact}Z"))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::secret::SecretString;

    fn now() -> SystemTime {
        // 2026-01-01T00:00:00Z
        UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    #[test]
    fn reads_the_documented_output() {
        let got = parse_output(
            br#"{"Version":1,"AccessKeyId":"AKIDPROC","SecretAccessKey":"hunter2",
                "SessionToken":"hunter2-token","Expiration":"2026-01-01T00:00:01Z"}"#,
            now(),
        )
        .expect("valid");
        assert_eq!(
            got.credentials,
            Credentials::new(
                "AKIDPROC",
                SecretString::from("hunter2"),
                Some(SecretString::from("hunter2-token"))
            )
        );
        assert_eq!(got.expiration.as_deref(), Some("2026-01-01T00:00:01Z"));
        let long_term = parse_output(
            br#"{"Version":1,"AccessKeyId":"AKIDPROC","SecretAccessKey":"hunter2"}"#,
            now(),
        )
        .expect("valid");
        assert_eq!(long_term.credentials.session_token, None);
        assert_eq!(long_term.expiration, None);
        for expiration in [
            "2026-06-01T10:00:00.123Z",
            "2026-06-01T10:00:00+00:00",
            "2026-06-01t10:00:00z",
        ] {
            let json = format!(
                r#"{{"Version":1,"AccessKeyId":"A","SecretAccessKey":"hunter2","Expiration":"{expiration}"}}"#
            );
            assert!(parse_output(json.as_bytes(), now()).is_ok(), "{expiration}");
        }
    }

    #[test]
    fn refuses_what_the_aws_cli_refuses_without_printing_secrets() {
        let cases: Vec<(&[u8], ProcessError)> = vec![
            (b"hunter2", ProcessError::Malformed("not a JSON object with the expected fields")),
            (
                br#"{"Version":2,"AccessKeyId":"A","SecretAccessKey":"hunter2"}"#,
                ProcessError::Version(2),
            ),
            (
                br#"{"AccessKeyId":"A","SecretAccessKey":"hunter2"}"#,
                ProcessError::Malformed("Version missing"),
            ),
            (
                br#"{"Version":1,"SecretAccessKey":"hunter2"}"#,
                ProcessError::Malformed("AccessKeyId missing"),
            ),
            (
                br#"{"Version":1,"AccessKeyId":"A"}"#,
                ProcessError::Malformed("SecretAccessKey missing"),
            ),
            (
                br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"hunter2","Expiration":"2025-12-31T23:59:59Z"}"#,
                ProcessError::Expired("2025-12-31T23:59:59Z".into()),
            ),
            (
                br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"hunter2","Expiration":"tomorrow"}"#,
                ProcessError::Malformed("Expiration is not an ISO 8601 UTC time"),
            ),
            (
                br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"hunter2","Expiration":"2027-01-01T00:00:00+02:00"}"#,
                ProcessError::Malformed("Expiration is not an ISO 8601 UTC time"),
            ),
        ];
        for (output, expected) in cases {
            let error = parse_output(output, now()).expect_err("refused");
            assert!(!error.to_string().contains("hunter2"), "{error}");
            assert_eq!(error, expected, "{}", String::from_utf8_lossy(output));
        }
        let huge = vec![b' '; MAX_OUTPUT_BYTES + 1];
        assert_eq!(parse_output(&huge, now()), Err(ProcessError::TooLong));
    }
}
