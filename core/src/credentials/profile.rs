//! Profiles of the shared credentials file (`~/.aws/credentials`) and the config file
//! (`~/.aws/config`).
//!
//! Both files are INI as the AWS CLI writes them:
//!
//! ```ini
//! # comment
//! [default]
//! aws_access_key_id = AKIDEXAMPLE
//! aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ; comment
//!
//! [other]
//! aws_access_key_id=...
//! ```
//!
//! Rules (those of the AWS SDKs' shared-file format): a section header is `[name]` in the
//! credentials file and `[profile name]` in the config file (where the default profile is
//! `[default]`, or `[profile default]`); a section spelled the other file's way is not the
//! profile; lines whose first non-blank character is `#` or `;` are
//! comments; a setting is `name = value`, whitespace around both trimmed; a `#` or `;` preceded
//! by whitespace starts a comment inside a value (and anywhere after a header's `]`); an
//! indented line continues the previous setting (nested config settings) and is skipped;
//! setting names match case-insensitively, section names exactly; sections repeated are merged,
//! later values winning. A setting outside any section, or a line that is neither, makes the
//! whole file invalid, as in the SDKs.

use std::path::PathBuf;

use super::CredentialsError;
use super::env::non_empty;
use crate::secret::{Credentials, SecretString};

/// The variable that names the credentials file.
pub const SHARED_CREDENTIALS_FILE_VAR: &str = "AWS_SHARED_CREDENTIALS_FILE";
/// The variable that names the config file.
pub const CONFIG_FILE_VAR: &str = "AWS_CONFIG_FILE";
/// The variable that names the profile.
pub const PROFILE_VAR: &str = "AWS_PROFILE";
/// The profile used when `AWS_PROFILE` is unset.
pub const DEFAULT_PROFILE: &str = "default";

/// Settings that mean the profile gets credentials in a way kmstool does not implement
/// (role assumption, SSO, web identity). The AWS CLI gives them precedence over static keys.
const UNSUPPORTED_SETTINGS: &[&str] = &[
    "role_arn",
    "source_profile",
    "credential_source",
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "web_identity_token_file",
];

/// Which of the two shared files a text comes from (they spell profile headers differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The credentials file: `[name]`.
    Credentials,
    /// The config file: `[profile name]`, and `[default]` for the default profile.
    Config,
}

/// The credentials file: `AWS_SHARED_CREDENTIALS_FILE` (a leading `~/` means `$HOME/`), else
/// `$HOME/.aws/credentials`; `None` if neither variable is set.
pub fn credentials_file_path(get_env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    file_path(get_env, SHARED_CREDENTIALS_FILE_VAR, "credentials")
}

/// The config file: `AWS_CONFIG_FILE` (a leading `~/` means `$HOME/`), else
/// `$HOME/.aws/config`; `None` if neither variable is set.
pub fn config_file_path(get_env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    file_path(get_env, CONFIG_FILE_VAR, "config")
}

fn file_path(
    get_env: impl Fn(&str) -> Option<String>,
    variable: &str,
    default_name: &str,
) -> Option<PathBuf> {
    let home = non_empty(&get_env, "HOME");
    match non_empty(&get_env, variable) {
        Some(path) => match (path.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => Some(PathBuf::from(home).join(rest)),
            _ => Some(PathBuf::from(path)),
        },
        None => home.map(|home| PathBuf::from(home).join(".aws").join(default_name)),
    }
}

/// The static keys a profile sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// Neither `aws_access_key_id` nor `aws_secret_access_key`.
    Absent,
    /// Both (and the optional session token).
    Complete(Credentials),
    /// One of the two; names the missing setting.
    Incomplete(&'static str),
}

/// What one file says about one profile. Never prints a secret (`Debug` of [`Credentials`]
/// redacts; the process command is kept as a [`SecretString`] as it may carry arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileFacts {
    /// The file has a section for the profile.
    pub section_seen: bool,
    /// The file has the profile's section spelled the other file's way.
    pub other_style_header: bool,
    /// The static keys.
    pub keys: Keys,
    /// `credential_process`: a command line whose output is the credentials.
    pub credential_process: Option<SecretString>,
    /// `region`.
    pub region: Option<String>,
    /// The first setting that needs something kmstool does not implement, e.g. `role_arn`.
    pub unsupported: Option<&'static str>,
}

impl ProfileFacts {
    /// Whether the profile sets anything that gives credentials.
    pub fn has_credentials(&self) -> bool {
        self.keys != Keys::Absent || self.credential_process.is_some() || self.unsupported.is_some()
    }

    /// The error for a file without the profile's section.
    pub fn not_found(&self, profile: &str, kind: FileKind) -> CredentialsError {
        match kind {
            FileKind::Credentials => CredentialsError::ProfileNotFound {
                profile: profile.to_owned(),
                config_style_header: self.other_style_header,
            },
            FileKind::Config => CredentialsError::ConfigProfileNotFound {
                profile: profile.to_owned(),
                bare_header: self.other_style_header,
            },
        }
    }
}

/// Reads what `contents` (a credentials or config file, as `kind` says) sets for `profile`:
/// static keys, `credential_process`, `region`, and settings kmstool cannot follow.
///
/// Errors are syntax errors, with line numbers, never values.
pub fn read_profile(
    contents: &str,
    profile: &str,
    kind: FileKind,
) -> Result<ProfileFacts, CredentialsError> {
    let found = scan(contents, profile, kind)?;
    let keys = match (found.access_key_id, found.secret_access_key) {
        (None, None) => Keys::Absent,
        (Some(id), Some(secret)) => Keys::Complete(Credentials::new(
            id,
            SecretString::from(secret),
            found
                .session_token
                .or(found.security_token)
                .map(SecretString::from),
        )),
        (Some(_), None) => Keys::Incomplete("aws_secret_access_key"),
        (None, Some(_)) => Keys::Incomplete("aws_access_key_id"),
    };
    Ok(ProfileFacts {
        section_seen: found.section_seen,
        other_style_header: found.config_style_header,
        keys,
        credential_process: found.credential_process.map(SecretString::from),
        region: found.region.map(str::to_owned),
        unsupported: found.unsupported,
    })
}

/// The profile to use: `AWS_PROFILE`, else `default`.
pub fn profile_name(get_env: impl Fn(&str) -> Option<String>) -> String {
    non_empty(get_env, PROFILE_VAR).unwrap_or_else(|| DEFAULT_PROFILE.to_owned())
}

/// Reads the static keys of `profile` from the text of a credentials file.
///
/// Needs `aws_access_key_id` and `aws_secret_access_key`; `aws_session_token` (or its old name
/// `aws_security_token`) is optional. Errors give line numbers and setting names, never values.
pub fn from_credentials_file(
    contents: &str,
    profile: &str,
) -> Result<Credentials, CredentialsError> {
    let found = scan(contents, profile, FileKind::Credentials)?;
    if !found.section_seen {
        return Err(CredentialsError::ProfileNotFound {
            profile: profile.to_owned(),
            config_style_header: found.config_style_header,
        });
    }
    let incomplete = |missing| match found.unsupported {
        Some(setting) => CredentialsError::ProfileUnsupported {
            profile: profile.to_owned(),
            setting,
        },
        None => CredentialsError::ProfileIncomplete {
            profile: profile.to_owned(),
            missing,
        },
    };
    let access_key_id = found
        .access_key_id
        .ok_or_else(|| incomplete("aws_access_key_id"))?;
    let secret_access_key = found
        .secret_access_key
        .ok_or_else(|| incomplete("aws_secret_access_key"))?;
    let session_token = found.session_token.or(found.security_token);
    Ok(Credentials::new(
        access_key_id,
        SecretString::from(secret_access_key),
        session_token.map(SecretString::from),
    ))
}

/// What the file says about one profile; values borrowed from the file text.
#[derive(Default)]
struct ProfileSettings<'a> {
    section_seen: bool,
    config_style_header: bool,
    access_key_id: Option<&'a str>,
    secret_access_key: Option<&'a str>,
    session_token: Option<&'a str>,
    security_token: Option<&'a str>,
    credential_process: Option<&'a str>,
    region: Option<&'a str>,
    unsupported: Option<&'static str>,
}

/// A credential setting of the chosen profile (a continuation line after one is an error).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    Other,
    Credential,
}

fn scan<'a>(
    contents: &'a str,
    profile: &str,
    kind: FileKind,
) -> Result<ProfileSettings<'a>, CredentialsError> {
    let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
    let mut settings = ProfileSettings::default();
    // None before the first header; Some(true) inside the chosen profile.
    let mut in_profile: Option<bool> = None;
    let mut last = Last::Other;
    for (index, line) in contents.lines().enumerate() {
        let syntax = |reason| CredentialsError::ProfileSyntax {
            line: index + 1,
            reason,
        };
        let trimmed = line.trim_matches(WHITESPACE);
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        if trimmed.starts_with('[') {
            let name = section_name(trimmed).map_err(syntax)?;
            let (chosen, other_style) = match kind {
                FileKind::Credentials => (name == profile, is_config_style(name, profile)),
                FileKind::Config => (
                    is_config_style(name, profile)
                        || (profile == DEFAULT_PROFILE && name == DEFAULT_PROFILE),
                    profile != DEFAULT_PROFILE && name == profile,
                ),
            };
            settings.section_seen |= chosen;
            settings.config_style_header |= other_style;
            in_profile = Some(chosen);
            last = Last::Other;
            continue;
        }
        if line.starts_with(WHITESPACE) {
            match (in_profile, last) {
                (None, _) => return Err(syntax("indented line before the first [section]")),
                (Some(true), Last::Credential) => {
                    return Err(syntax("credential value continues on an indented line"));
                }
                _ => continue,
            }
        }
        let (name, value) = setting(trimmed).map_err(syntax)?;
        let Some(chosen) = in_profile else {
            return Err(syntax("setting before the first [section]"));
        };
        last = Last::Other;
        if chosen {
            last = record(&mut settings, name, value);
        }
    }
    Ok(settings)
}

/// Blanks as the shared-file format counts them.
const WHITESPACE: [char; 2] = [' ', '\t'];

/// The name inside `[ name ] # comment`.
fn section_name(line: &str) -> Result<&str, &'static str> {
    let inner = line.strip_prefix('[').unwrap_or(line);
    let (name, after) = inner
        .split_once(']')
        .ok_or("section header without a closing ]")?;
    let after = after.trim_matches(WHITESPACE);
    if !after.is_empty() && !after.starts_with(['#', ';']) {
        return Err("text after a section header");
    }
    let name = name.trim_matches(WHITESPACE);
    if name.is_empty() {
        return Err("empty section name");
    }
    Ok(name)
}

/// Whether `name` is `profile <profile>`, the config file's spelling.
fn is_config_style(name: &str, profile: &str) -> bool {
    name.strip_prefix("profile")
        .filter(|rest| rest.starts_with(WHITESPACE))
        .is_some_and(|rest| rest.trim_matches(WHITESPACE) == profile)
}

/// Splits `name = value ; comment`.
fn setting(line: &str) -> Result<(&str, &str), &'static str> {
    let (name, value) = line
        .split_once('=')
        .ok_or("line is neither a [section], a comment nor name = value")?;
    let name = name.trim_matches(WHITESPACE);
    if name.is_empty() {
        return Err("setting without a name");
    }
    Ok((name, strip_comment(value).trim_matches(WHITESPACE)))
}

/// Cuts a value at the first `#` or `;` that follows a blank.
fn strip_comment(value: &str) -> &str {
    let mut previous_blank = false;
    for (at, c) in value.char_indices() {
        if previous_blank && (c == '#' || c == ';') {
            return &value[..at];
        }
        previous_blank = WHITESPACE.contains(&c);
    }
    value
}

/// Stores a setting of the chosen profile; empty values count as absent.
fn record<'a>(settings: &mut ProfileSettings<'a>, name: &str, value: &'a str) -> Last {
    let value = (!value.is_empty()).then_some(value);
    let slot = match name.to_ascii_lowercase().as_str() {
        "aws_access_key_id" => &mut settings.access_key_id,
        "aws_secret_access_key" => &mut settings.secret_access_key,
        "aws_session_token" => &mut settings.session_token,
        "aws_security_token" => &mut settings.security_token,
        "credential_process" => &mut settings.credential_process,
        "region" => {
            settings.region = value;
            return Last::Other;
        }
        other => {
            if let Some(setting) = UNSUPPORTED_SETTINGS.iter().find(|s| **s == other) {
                settings.unsupported.get_or_insert(setting);
            }
            return Last::Other;
        }
    };
    *slot = value;
    Last::Credential
}

#[cfg(test)]
mod tests;
