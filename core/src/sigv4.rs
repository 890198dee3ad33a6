//! AWS Signature Version 4 for the requests kmstool sends (and, in the KMS emulator, verifies).
//!
//! The signing time is an argument: nothing here reads a clock. [`sign`] produces exactly the
//! `X-Amz-Date` and `Authorization` headers an AWS SDK produces for the same inputs; the
//! building blocks ([`canonical_request`], [`string_to_sign`], [`signing_key`],
//! [`signature_hex`]) are public so a verifier can recompute a signature over the headers a
//! request says it signed.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::Credentials;

/// The algorithm name in `Authorization` and the string to sign.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// What to sign: one HTTP request and the identity signing it.
#[derive(Debug, Clone, Copy)]
pub struct SigningInput<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Absolute path, already URI-encoded (`/` for KMS).
    pub path: &'a str,
    /// Canonical query string (empty for KMS).
    pub query: &'a str,
    /// Headers to sign, as (name, value); names in any case. `X-Amz-Date` and
    /// `X-Amz-Security-Token` are added by [`sign`] and must not be listed.
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

/// The headers that [`sign`] adds to the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `X-Amz-Date`, e.g. `20261129T120000Z`.
    pub x_amz_date: String,
    /// `Authorization`.
    pub authorization: String,
}

/// Signs a request: canonical request → string to sign → HMAC chain, with `x-amz-date` and,
/// with temporary credentials, `x-amz-security-token` among the signed headers.
pub fn sign(input: &SigningInput<'_>) -> Signature {
    let date = AmzDate::from_system_time(input.time);
    let mut headers: Vec<(&str, &str)> = input.headers.to_vec();
    headers.push(("x-amz-date", &date.date_time));
    if let Some(token) = &input.credentials.session_token {
        headers.push(("x-amz-security-token", token.expose()));
    }
    let payload_hash = hex(&Sha256::digest(input.body));
    let canonical = canonical_request(
        input.method,
        input.path,
        input.query,
        &headers,
        &payload_hash,
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        date.date, input.region, input.service
    );
    let to_sign = string_to_sign(&date.date_time, &scope, &canonical.text);
    let key = signing_key(
        input.credentials.secret_access_key.expose(),
        &date.date,
        input.region,
        input.service,
    );
    let signature = signature_hex(&key, &to_sign);
    Signature {
        authorization: format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
            input.credentials.access_key_id, canonical.signed_headers
        ),
        x_amz_date: date.date_time,
    }
}

/// A canonical request and the `SignedHeaders` list it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    /// The canonical request text.
    pub text: String,
    /// Lowercase header names joined by `;`, sorted.
    pub signed_headers: String,
}

/// Builds the canonical request: method, path, query, canonical headers (lowercase names,
/// sorted, values trimmed with inner whitespace runs folded to one space, repeated names joined
/// with `,`), the signed header list and the payload hash.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    payload_sha256_hex: &str,
) -> CanonicalRequest {
    let mut sorted: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), fold_whitespace(value)))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(String, String)> = Vec::with_capacity(sorted.len());
    for (name, value) in sorted {
        match merged.last_mut() {
            Some((last, joined)) if *last == name => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => merged.push((name, value)),
        }
    }
    let mut text = String::with_capacity(256);
    let _ = write!(text, "{method}\n{path}\n{query}\n");
    for (name, value) in &merged {
        let _ = writeln!(text, "{name}:{value}");
    }
    let signed_headers = merged
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let _ = write!(text, "\n{signed_headers}\n{payload_sha256_hex}");
    CanonicalRequest {
        text,
        signed_headers,
    }
}

fn fold_whitespace(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The string to sign: algorithm, request time, scope and the canonical request's hash.
pub fn string_to_sign(amz_date_time: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date_time}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    )
}

/// The signing key: `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(
    secret_access_key: &str,
    date: &str,
    region: &str,
    service: &str,
) -> Zeroizing<[u8; 32]> {
    let mut seed = Zeroizing::new(Vec::with_capacity(4 + secret_access_key.len()));
    seed.extend_from_slice(b"AWS4");
    seed.extend_from_slice(secret_access_key.as_bytes());
    let k_date = hmac_sha256(&seed, date.as_bytes());
    let k_region = hmac_sha256(&*k_date, region.as_bytes());
    let k_service = hmac_sha256(&*k_region, service.as_bytes());
    hmac_sha256(&*k_service, b"aws4_request")
}

/// Hex of `HMAC-SHA256(signing_key, string_to_sign)`.
pub fn signature_hex(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    hex(&*hmac_sha256(signing_key, string_to_sign.as_bytes()))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
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

    #[test]
    fn canonical_headers_are_sorted_folded_and_merged() {
        let c = canonical_request(
            "POST",
            "/",
            "",
            &[
                ("X-Amz-Target", "TrentService.Decrypt"),
                ("Host", "kms.us-east-1.amazonaws.com"),
                ("My-Header", "  a   b  "),
                ("my-header", "c"),
            ],
            "e3b0",
        );
        assert_eq!(c.signed_headers, "host;my-header;x-amz-target");
        assert_eq!(
            c.text,
            "POST\n/\n\nhost:kms.us-east-1.amazonaws.com\nmy-header:a b,c\n\
             x-amz-target:TrentService.Decrypt\n\nhost;my-header;x-amz-target\ne3b0"
        );
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
