//! AWS Signature Version 4 for the requests kmstool sends, computed by AWS's own signer, the
//! `aws-sigv4` crate (the one the AWS SDK for Rust signs with).
//!
//! This module is glue: [`sign`](crate::sigv4::sign) hands aws-sigv4 the request (method, URI, the headers to sign,
//! the body), the identity and the signing time, and returns the `X-Amz-Date` and
//! `Authorization` headers it computed. Nothing here reads a clock: the time is an argument.
//! aws-sigv4 does no IO either; through `aws-smithy-async` it links tokio's `sync` feature only
//! (no runtime, no reactor, no socket), which the workspace's purity check pins.
//!
//! Secrets: the identity aws-sigv4 signs with is built per call from [`Credentials`](crate::secret::Credentials) and holds
//! its copies of the secret access key and session token in zeroizing buffers
//! (`aws_credential_types::Credentials` zeroizes on drop); errors carry aws-sigv4's messages,
//! which name the problem and never a value, and its trace-level events print the identity
//! redacted and the canonical request with the token redacted. The transient copies aws-sigv4
//! makes while signing (the `AWS4` + secret key seed, the token in its canonical request and in
//! its output header, which is not used) are its own and are freed without being wiped.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use crate::secret::Credentials;

/// 9999-12-31T23:59:59Z, the last second a four-digit `X-Amz-Date` can name.
const LAST_SECOND_OF_9999: u64 = 253_402_300_799;

/// The algorithm name in `Authorization` and the string to sign.
#[cfg(any(test, feature = "_internal_test_exports"))]
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// What to sign: one HTTP request and the identity signing it.
#[derive(Debug, Clone, Copy)]
pub struct SigningInput<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Absolute path, already URI-encoded (`/` for KMS).
    pub path: &'a str,
    /// Query string without the `?` (empty for KMS).
    pub query: &'a str,
    /// Headers to sign, as (name, value); names in any case; `Host` must be among them.
    /// `X-Amz-Date` and `X-Amz-Security-Token` are added by the signer and must not be listed;
    /// `Authorization`, `User-Agent`, `Transfer-Encoding` and `X-Amzn-Trace-Id` are never
    /// signed (as with the AWS SDKs).
    pub headers: &'a [(&'a str, &'a str)],
    /// Request body.
    pub body: &'a [u8],
    /// Credentials.
    pub credentials: &'a Credentials,
    /// Region, e.g. `us-east-1`.
    pub region: &'a str,
    /// Service, `kms`.
    pub service: &'a str,
    /// Signing time.
    pub time: SystemTime,
}

/// The headers that [`sign`] adds to the request, besides `X-Amz-Security-Token` (with
/// temporary credentials: the session token itself, which the caller sends from its own
/// zeroizing copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `X-Amz-Date`, e.g. `20261129T120000Z`.
    pub x_amz_date: String,
    /// `Authorization`.
    pub authorization: String,
}

/// Why a request could not be signed. Never holds a header value or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// No `Host` among the headers to sign.
    NoHost,
    /// The signing time is before 1970 or after 9999 (a clock that is wrong; the signer's
    /// date arithmetic would panic past 9999).
    TimeOutOfRange,
    /// aws-sigv4 refused the request (its message, e.g. an invalid header value or URI).
    Refused(String),
    /// aws-sigv4 answered with headers other than the ones expected (names the header).
    UnexpectedOutput(String),
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoHost => f.write_str("SigV4: no Host header among the headers to sign"),
            Self::TimeOutOfRange => f.write_str("SigV4: signing time outside 1970 to 9999"),
            Self::Refused(why) => write!(f, "SigV4: {why}"),
            Self::UnexpectedOutput(what) => write!(f, "SigV4: unexpected signer output: {what}"),
        }
    }
}

impl std::error::Error for SignError {}

/// An error and its sources as one line (aws-sigv4's messages name no values).
fn refused(error: &dyn std::error::Error) -> SignError {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    SignError::Refused(text)
}

/// The identity aws-sigv4 signs with: a copy of `credentials` in zeroizing buffers.
fn identity(credentials: &Credentials) -> aws_smithy_runtime_api::client::identity::Identity {
    aws_credential_types::Credentials::new(
        credentials.access_key_id.as_str(),
        credentials.secret_access_key.expose(),
        credentials
            .session_token
            .as_ref()
            .map(|token| token.expose().to_owned()),
        None,
        "kmstool",
    )
    .into()
}

/// Signs a request with aws-sigv4 and the AWS SDKs' settings (headers, not query; the payload
/// hashed; `x-amz-date` and, with temporary credentials, `x-amz-security-token` among the
/// signed headers; no `x-amz-content-sha256`).
pub fn sign(input: &SigningInput<'_>) -> Result<Signature, SignError> {
    let secs = input
        .time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| SignError::TimeOutOfRange)?
        .as_secs();
    if secs > LAST_SECOND_OF_9999 {
        return Err(SignError::TimeOutOfRange);
    }
    let host = input
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map(|(_, value)| *value)
        .ok_or(SignError::NoHost)?;
    let uri = if input.query.is_empty() {
        format!("https://{host}{}", input.path)
    } else {
        format!("https://{host}{}?{}", input.path, input.query)
    };
    let identity = identity(input.credentials);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(input.region)
        .name(input.service)
        .time(input.time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|error| refused(&error))?
        .into();
    let request = SignableRequest::new(
        input.method,
        uri,
        input.headers.iter().copied(),
        SignableBody::Bytes(input.body),
    )
    .map_err(|error| refused(&error))?;
    let (instructions, _) = aws_sigv4::http_request::sign(request, &params)
        .map_err(|error| refused(&error))?
        .into_parts();
    let (mut x_amz_date, mut authorization, mut token) = (None, None, false);
    for (name, value) in instructions.headers() {
        match name {
            "x-amz-date" => x_amz_date = Some(value.to_owned()),
            "authorization" => authorization = Some(value.to_owned()),
            "x-amz-security-token" => token = true,
            other => return Err(SignError::UnexpectedOutput(format!("header {other}"))),
        }
    }
    if !instructions.params().is_empty() {
        return Err(SignError::UnexpectedOutput("query parameters".into()));
    }
    if token != input.credentials.session_token.is_some() {
        return Err(SignError::UnexpectedOutput("x-amz-security-token".into()));
    }
    match (x_amz_date, authorization) {
        (Some(x_amz_date), Some(authorization)) => Ok(Signature {
            x_amz_date,
            authorization,
        }),
        (None, _) => Err(SignError::UnexpectedOutput("no x-amz-date".into())),
        (_, None) => Err(SignError::UnexpectedOutput("no authorization".into())),
    }
}

/// A signing time in SigV4's two formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmzDate {
    /// `YYYYMMDDTHHMMSSZ`.
    pub date_time: String,
    /// `YYYYMMDD`.
    pub date: String,
}

impl AmzDate {
    /// Formats a time (UTC, whole seconds; times before 1970 format as the epoch).
    #[cfg(any(test, feature = "_internal_test_exports"))]
    pub fn from_system_time(time: SystemTime) -> Self {
        let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_from_days(days);
        let date = format!("{year:04}{month:02}{day:02}");
        let date_time = format!(
            "{date}T{:02}{:02}{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        );
        Self { date_time, date }
    }

    /// Parses `YYYYMMDDTHHMMSSZ`.
    pub fn parse(text: &str) -> Option<SystemTime> {
        let b = text.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<u64> {
            let digits = text.get(range)?;
            if !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        };
        let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
        let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
        if !(1970..=9999).contains(&year)
            || !(1..=12).contains(&month)
            || !(1..=days_in_month(year, month)).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
        UNIX_EPOCH.checked_add(Duration::from_secs(secs))
    }
}

fn is_leap(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 → (year, month, day), for dates from 1970 on (Hinnant's algorithm).
#[cfg(any(test, feature = "_internal_test_exports"))]
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01, for dates from 1970 on.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;
    use proptest::prelude::*;

    #[test]
    fn formats_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_953_600); // 2026-11-29T12:00:00Z
        let d = AmzDate::from_system_time(t);
        assert_eq!(d.date_time, "20261129T120000Z");
        assert_eq!(d.date, "20261129");
        assert_eq!(AmzDate::parse("20261129T120000Z"), Some(t));
        assert_eq!(
            AmzDate::from_system_time(UNIX_EPOCH + Duration::from_secs(951_782_400)).date,
            "20000229"
        );
    }

    #[test]
    fn rejects_malformed_dates() {
        for bad in [
            "",
            "20261129T120000",
            "20261129 120000Z",
            "20261329T120000Z",
            "20260230T120000Z",
            "20261129T250000Z",
            "2026112aT120000Z",
            "+0261129T120000Z",
        ] {
            assert_eq!(AmzDate::parse(bad), None, "{bad}");
        }
    }

    fn input<'a>(
        headers: &'a [(&'a str, &'a str)],
        credentials: &'a Credentials,
        time: SystemTime,
    ) -> SigningInput<'a> {
        SigningInput {
            method: "POST",
            path: "/",
            query: "",
            headers,
            body: b"{}",
            credentials,
            region: "us-east-1",
            service: "kms",
            time,
        }
    }

    fn temporary() -> Credentials {
        Credentials::new(
            "ASIAEXAMPLE",
            "hunter2-secret",
            Some(SecretString::from("hunter2-token")),
        )
    }

    const HEADERS: &[(&str, &str)] = &[
        ("Host", "kms.us-east-1.amazonaws.com"),
        ("Content-Type", "application/x-amz-json-1.1"),
        ("X-Amz-Target", "TrentService.Decrypt"),
    ];

    #[test]
    fn signs_at_the_time_given() {
        let credentials = temporary();
        let t = UNIX_EPOCH + Duration::from_secs(1_795_953_600);
        let first = sign(&input(HEADERS, &credentials, t)).expect("signs");
        assert_eq!(first.x_amz_date, "20261129T120000Z");
        assert!(
            first.authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261129/us-east-1/kms/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, \
                 Signature="
            ),
            "{}",
            first.authorization
        );
        assert_eq!(sign(&input(HEADERS, &credentials, t)), Ok(first.clone()));
        let later = sign(&input(HEADERS, &credentials, t + Duration::from_secs(1))).expect("signs");
        assert_eq!(later.x_amz_date, "20261129T120001Z");
        assert_ne!(later.authorization, first.authorization);
    }

    #[test]
    fn long_term_credentials_sign_no_token() {
        let credentials = Credentials::new("AKIDEXAMPLE", "hunter2-secret", None);
        let t = UNIX_EPOCH + Duration::from_secs(1_795_953_600);
        let signature = sign(&input(HEADERS, &credentials, t)).expect("signs");
        assert!(
            signature
                .authorization
                .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target, "),
            "{}",
            signature.authorization
        );
    }

    #[test]
    fn header_names_case_and_value_spaces_do_not_change_the_signature() {
        let credentials = temporary();
        let t = UNIX_EPOCH + Duration::from_secs(1_795_953_600);
        let plain = sign(&input(HEADERS, &credentials, t)).expect("signs");
        let shouty = [
            ("HOST", "kms.us-east-1.amazonaws.com"),
            ("content-type", "  application/x-amz-json-1.1 "),
            ("x-amz-TARGET", "TrentService.Decrypt"),
        ];
        assert_eq!(sign(&input(&shouty, &credentials, t)), Ok(plain.clone()));
        let other_target = [
            ("Host", "kms.us-east-1.amazonaws.com"),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", "TrentService.Encrypt"),
        ];
        let other = sign(&input(&other_target, &credentials, t)).expect("signs");
        assert_ne!(other.authorization, plain.authorization);
    }

    #[test]
    fn refuses_unsignable_requests_without_quoting_them() {
        let credentials = temporary();
        let t = UNIX_EPOCH;
        let no_host = [("X-Amz-Target", "TrentService.Decrypt")];
        assert_eq!(
            sign(&input(&no_host, &credentials, t)),
            Err(SignError::NoHost)
        );
        let bad_value = [
            ("Host", "kms.us-east-1.amazonaws.com"),
            ("X-Amz-Target", "hunter2-value\r\nInjected: yes"),
        ];
        let error = sign(&input(&bad_value, &credentials, t)).expect_err("refused");
        assert!(matches!(error, SignError::Refused(_)), "{error:?}");
        for t in [
            UNIX_EPOCH - Duration::from_secs(1),
            UNIX_EPOCH + Duration::from_secs(LAST_SECOND_OF_9999 + 1),
        ] {
            assert_eq!(
                sign(&input(HEADERS, &credentials, t)),
                Err(SignError::TimeOutOfRange)
            );
        }
        let last = UNIX_EPOCH + Duration::from_secs(LAST_SECOND_OF_9999);
        let signature = sign(&input(HEADERS, &credentials, last)).expect("signs");
        assert_eq!(signature.x_amz_date, "99991231T235959Z");
        let bad_host = [("Host", "kms hunter2-host")];
        let host_error = sign(&input(&bad_host, &credentials, t)).expect_err("refused");
        for shown in [
            format!("{error} {error:?} {host_error} {host_error:?}"),
            format!("{:?}", input(HEADERS, &credentials, t)),
        ] {
            assert!(!shown.contains("hunter2-secret"), "leaked: {shown}");
            assert!(!shown.contains("hunter2-token"), "leaked: {shown}");
            assert!(!shown.contains("hunter2-value"), "leaked: {shown}");
            assert!(!shown.contains("hunter2-host"), "leaked: {shown}");
        }
    }

    proptest! {
        #[test]
        fn date_round_trips(secs in 0u64..253_402_300_799) {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let d = AmzDate::from_system_time(t);
            prop_assert_eq!(AmzDate::parse(&d.date_time), Some(t));
        }
    }
}
