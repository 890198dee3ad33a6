//! The identities the emulator accepts, and the JSON file they are read from.
//!
//! A credentials file is either a list
//! `[{"AccessKeyId":"…","SecretAccessKey":"…","SessionToken":"…"}]` (`SessionToken`, `Token`,
//! `Expiration` and `Arn` optional), one such object, or exactly what the IMDS emulator serves
//! for a role (`{"Code":"Success","AccessKeyId":…,"Token":…,"Expiration":…}`), so the two
//! simulators can share a file.

use std::fmt;
use std::time::SystemTime;

use kmstool_core::secret::{Credentials, SecretString};
use serde::Deserialize;

use super::clock::parse_iso8601;

/// One identity the emulator accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct SimCredentials {
    /// The access key, secret key and (for temporary credentials) session token.
    pub credentials: Credentials,
    /// After this time, requests signed with these credentials get `ExpiredTokenException`.
    pub expiration: Option<SystemTime>,
    /// The principal named in `AccessDeniedException` texts, e.g.
    /// `arn:aws:sts::111122223333:assumed-role/app/i-0abc`.
    pub principal_arn: String,
}

impl SimCredentials {
    /// Credentials with a principal derived from `account_id`: an assumed role for temporary
    /// credentials, an IAM user otherwise.
    pub fn new(credentials: Credentials, account_id: &str) -> Self {
        let principal_arn = if credentials.session_token.is_some() {
            format!("arn:aws:sts::{account_id}:assumed-role/kmstool-sim/i-0123456789abcdef0")
        } else {
            format!("arn:aws:iam::{account_id}:user/kmstool-sim")
        };
        Self {
            credentials,
            expiration: None,
            principal_arn,
        }
    }
}

impl fmt::Debug for SimCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimCredentials")
            .field("credentials", &self.credentials)
            .field("expiration", &self.expiration)
            .field("principal_arn", &self.principal_arn)
            .finish()
    }
}

/// Why a credentials file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsFileError {
    /// Not JSON of one of the accepted shapes (serde's reason; it never quotes values).
    Json(String),
    /// An entry lacks `AccessKeyId` or `SecretAccessKey`, or has one empty.
    MissingField(&'static str),
    /// `Expiration` is not `YYYY-MM-DDTHH:MM:SSZ`.
    BadExpiration,
    /// The file holds no credentials.
    Empty,
}

impl fmt::Display for CredentialsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(why) => write!(f, "credentials file is not valid JSON: {why}"),
            Self::MissingField(name) => write!(f, "credentials entry without {name}"),
            Self::BadExpiration => write!(f, "credentials Expiration is not ISO 8601 UTC"),
            Self::Empty => write!(f, "credentials file holds no credentials"),
        }
    }
}

impl std::error::Error for CredentialsFileError {}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileShape {
    List(Vec<Entry>),
    One(Entry),
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "AccessKeyId")]
    access_key_id: Option<String>,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: Option<String>,
    #[serde(rename = "SessionToken")]
    session_token: Option<String>,
    /// IMDS's name for the session token.
    #[serde(rename = "Token")]
    token: Option<String>,
    #[serde(rename = "Expiration")]
    expiration: Option<String>,
    #[serde(rename = "Arn")]
    arn: Option<String>,
}

/// Parses a credentials file (see the module doc), naming principals in `account_id`.
pub fn parse_credentials_file(
    json: &[u8],
    account_id: &str,
) -> Result<Vec<SimCredentials>, CredentialsFileError> {
    let shape: FileShape = serde_json::from_slice(json).map_err(|e| {
        CredentialsFileError::Json(format!("line {} column {}", e.line(), e.column()))
    })?;
    let entries = match shape {
        FileShape::List(entries) => entries,
        FileShape::One(entry) => vec![entry],
    };
    if entries.is_empty() {
        return Err(CredentialsFileError::Empty);
    }
    entries
        .into_iter()
        .map(|entry| entry_credentials(entry, account_id))
        .collect()
}

fn entry_credentials(
    entry: Entry,
    account_id: &str,
) -> Result<SimCredentials, CredentialsFileError> {
    let access_key_id = entry
        .access_key_id
        .filter(|v| !v.is_empty())
        .ok_or(CredentialsFileError::MissingField("AccessKeyId"))?;
    let secret = entry
        .secret_access_key
        .filter(|v| !v.is_empty())
        .ok_or(CredentialsFileError::MissingField("SecretAccessKey"))?;
    let token = entry
        .session_token
        .or(entry.token)
        .filter(|t| !t.is_empty());
    let expiration = match entry.expiration {
        Some(text) => Some(parse_iso8601(&text).ok_or(CredentialsFileError::BadExpiration)?),
        None => None,
    };
    let credentials = Credentials::new(
        access_key_id,
        SecretString::new(secret),
        token.map(SecretString::new),
    );
    let mut sim = SimCredentials::new(credentials, account_id);
    sim.expiration = expiration;
    if let Some(arn) = entry.arn {
        sim.principal_arn = arn;
    }
    Ok(sim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_credentials_file(&input, "1");
        }

        #[test]
        fn round_trips(id in "[A-Z0-9]{1,20}", secret in "[a-zA-Z0-9/+]{1,40}") {
            let json = serde_json::json!([{"AccessKeyId": id, "SecretAccessKey": secret}]);
            let parsed = parse_credentials_file(json.to_string().as_bytes(), "1")
                .expect("valid file");
            prop_assert_eq!(&parsed[0].credentials.access_key_id, &id);
            prop_assert_eq!(parsed[0].credentials.secret_access_key.expose(), secret.as_str());
        }
    }

    #[test]
    fn reads_lists_single_objects_and_imds_answers() {
        let list = br#"[{"AccessKeyId":"AKIDEXAMPLE","SecretAccessKey":"s1"},
            {"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"s2","SessionToken":"t2"}]"#;
        let creds = parse_credentials_file(list, "111122223333").expect("should succeed");
        assert_eq!(creds.len(), 2);
        assert_eq!(creds[0].credentials.session_token, None);
        assert_eq!(
            creds[0].principal_arn,
            "arn:aws:iam::111122223333:user/kmstool-sim"
        );
        assert_eq!(
            creds[1]
                .credentials
                .session_token
                .as_ref()
                .map(|t| t.expose()),
            Some("t2")
        );

        let imds = br#"{"Code":"Success","LastUpdated":"2026-11-29T12:00:00Z",
            "Type":"AWS-HMAC","AccessKeyId":"ASIAX","SecretAccessKey":"s","Token":"tok",
            "Expiration":"2026-11-29T18:00:00Z"}"#;
        let creds = parse_credentials_file(imds, "111122223333").expect("should succeed");
        assert_eq!(
            creds[0]
                .credentials
                .session_token
                .as_ref()
                .map(|t| t.expose()),
            Some("tok")
        );
        assert_eq!(creds[0].expiration, parse_iso8601("2026-11-29T18:00:00Z"));
    }

    #[test]
    fn rejects_incomplete_files() {
        let cases: &[(&[u8], CredentialsFileError)] = &[
            (b"[]", CredentialsFileError::Empty),
            (
                br#"[{"SecretAccessKey":"s"}]"#,
                CredentialsFileError::MissingField("AccessKeyId"),
            ),
            (
                br#"{"AccessKeyId":"A","SecretAccessKey":""}"#,
                CredentialsFileError::MissingField("SecretAccessKey"),
            ),
            (
                br#"{"AccessKeyId":"A","SecretAccessKey":"s","Expiration":"soon"}"#,
                CredentialsFileError::BadExpiration,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_credentials_file(input, "1").as_ref().err(),
                Some(expected)
            );
        }
        assert!(matches!(
            parse_credentials_file(b"{", "1"),
            Err(CredentialsFileError::Json(_))
        ));
    }
}
