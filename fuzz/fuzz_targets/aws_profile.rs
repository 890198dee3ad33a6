//! The AWS shared credentials and config files, and `credential_process` output, from
//! arbitrary bytes: never panics; a file's error never depends on the values it holds (the
//! same file with every letter and digit of every value changed gives the same error), so no
//! secret can reach an error message; and credentials parsed from a process never show their
//! secret in `Debug`.
//!
//! Input layout (see `fuzz/seed.sh`): one byte whose bit 0 picks the config file over the
//! credentials file, then `PROFILE|||FILE|||PROCESS_OUTPUT`.
#![no_main]

use std::time::{Duration, SystemTime};

use kmstool_core::credentials::process::parse_output;
use kmstool_core::credentials::profile::{FileKind, read_profile};
use libfuzzer_sys::fuzz_target;

const SEPARATOR: &[u8] = b"|||";

/// `stream` split at the first two separators.
fn parts(stream: &[u8]) -> [&[u8]; 3] {
    let mut out = [&[][..]; 3];
    let mut rest = stream;
    for slot in out.iter_mut().take(2) {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                *slot = &rest[..at];
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => {
                *slot = rest;
                rest = &[];
            }
        }
    }
    out[2] = rest;
    out
}

/// `contents` with every ASCII letter and digit after the first `=` of each line replaced, so
/// values change and the file's structure (sections, comments, indentation) does not.
fn other_values(contents: &str) -> String {
    contents
        .split_inclusive('\n')
        .map(|line| match line.split_once('=') {
            Some((name, value)) => {
                let value: String = value
                    .chars()
                    .map(|c| match c {
                        'a'..='z' | 'A'..='Z' => {
                            if c == 'Q' {
                                'R'
                            } else {
                                'Q'
                            }
                        }
                        '0'..='9' => {
                            if c == '7' {
                                '8'
                            } else {
                                '7'
                            }
                        }
                        other => other,
                    })
                    .collect();
                format!("{name}={value}")
            }
            None => line.to_owned(),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, stream)) = data.split_first() else {
        return;
    };
    let [profile, file, output] = parts(stream);
    let kind = if flags & 1 == 1 {
        FileKind::Config
    } else {
        FileKind::Credentials
    };
    if let (Ok(profile), Ok(contents)) = (std::str::from_utf8(profile), std::str::from_utf8(file)) {
        let first = read_profile(contents, profile, kind);
        let second = read_profile(&other_values(contents), profile, kind);
        match (&first, &second) {
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (Ok(_), Ok(_)) => {}
            _ => panic!("changing values changed the outcome: {first:?} / {second:?}"),
        }
    }

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if let Ok(parsed) = parse_output(output, now) {
        let secret = parsed.credentials.secret_access_key.expose();
        if secret.len() >= 8 {
            assert!(!format!("{parsed:?}").contains(secret));
        }
    }
});
