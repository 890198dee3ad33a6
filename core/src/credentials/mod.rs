//! AWS credentials for the parent instance: the standard chain of environment variables,
//! shared credentials file, container credentials endpoint and IMDSv2, decided here and
//! driven from outside.
//!
//! Nothing here reads the environment, a file or the network. The caller passes an
//! environment lookup (`|name| std::env::var(name).ok()`), a file reader, and drives the
//! [`container::ContainerClient`] and [`imds::ImdsClient`] state machines over its own sockets
//! (both implement [`CredentialFetch`], so one driver serves both).
//!
//! The chain, in the AWS SDKs' order, is [`chain::CredentialChain`]: [`lookup_static`] tries
//! the environment then the profile; then the container endpoint when
//! [`container::ContainerEndpoint::from_env`] finds one configured (a configured endpoint that
//! fails ends the chain), else IMDS (unless [`imds::ImdsEndpoint::from_env`] says it is
//! disabled). Each outcome is recorded in a [`Tried`], whose `Display` is the message to print
//! when every source came up empty.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use zeroize::Zeroizing;

use crate::secret::{Credentials, SecretString};

pub mod chain;
pub mod container;
pub mod env;
mod exchange;
pub mod imds;
pub mod process;
pub mod profile;
pub mod region;

/// An HTTP credential source as a sans-IO state machine: [`imds::ImdsClient`] and
/// [`container::ContainerClient`].
///
/// # Driving contract
///
/// After creating the client and after every `handle_*` call, drain
/// [`poll_output`](Self::poll_output) until it returns `None`:
/// - [`FetchOutput::Send`]: open a new connection to `host:port` (closing the previous one)
///   and write the bytes. Feed everything read from it to
///   [`handle_response`](Self::handle_response); report a close with
///   [`handle_eof`](Self::handle_eof) and a connect/read/write failure with
///   [`handle_transport_error`](Self::handle_transport_error).
/// - [`FetchOutput::Done`]: the result; stop.
///
/// When `poll_output` returns `None`, wait for input or until
/// [`poll_timeout`](Self::poll_timeout), then call [`handle_timeout`](Self::handle_timeout).
/// Every input takes the driver's `now`; nothing here reads a clock.
///
/// A driver that serves every source (this one answers from memory; a real one connects to
/// `host:port`, writes the request and feeds back what it reads):
///
/// ```
/// use std::time::{Duration, Instant};
/// use kmstool_core::credentials::{CredentialFetch, FetchOutput};
/// use kmstool_core::credentials::container::{ContainerClient, ContainerEndpoint};
///
/// fn drive<C: CredentialFetch>(mut client: C, now: Instant, answer: &[u8]) -> C::Result {
///     loop {
///         match client.poll_output() {
///             Some(FetchOutput::Send { host, port, request_bytes }) => {
///                 assert!(request_bytes.starts_with(b"GET "), "to {host}:{port}");
///                 client.handle_response(now, answer);
///                 client.handle_eof(now);
///             }
///             Some(FetchOutput::Done(result)) => return result,
///             None => {
///                 let deadline = client.poll_timeout().expect("not done: a deadline");
///                 client.handle_timeout(deadline);
///             }
///         }
///     }
/// }
///
/// let env = |name: &str| {
///     (name == "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").then(|| "/v2/credentials/id".to_owned())
/// };
/// let endpoint = ContainerEndpoint::from_env(env, |_| unreachable!("no token file"))?
///     .expect("configured");
/// let body = r#"{"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"wJalr","Token":"IQoJ","Expiration":"2026-12-06T10:00:00Z"}"#;
/// let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
/// let now = Instant::now();
/// let client = ContainerClient::new(endpoint, Duration::from_secs(2), now);
/// let fetched = drive(client, now, answer.as_bytes())?;
/// assert_eq!(fetched.credentials.access_key_id, "ASIAEXAMPLE");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait CredentialFetch {
    /// The credentials, or why there are none.
    type Result;
    /// The next thing for the driver to do, `None` to wait for input or the deadline.
    fn poll_output(&mut self) -> Option<FetchOutput<Self::Result>>;
    /// When the current request times out; `None` once finished.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Bytes read from the current connection.
    fn handle_response(&mut self, now: Instant, bytes: &[u8]);
    /// The current connection was closed by the peer.
    fn handle_eof(&mut self, now: Instant);
    /// Connecting, writing or reading failed at `now`; `error` says how.
    fn handle_transport_error(&mut self, now: Instant, error: &str);
    /// Time has passed; fails the current request if its deadline is reached.
    fn handle_timeout(&mut self, now: Instant);
}

/// What the driver of a [`CredentialFetch`] must do next.
#[must_use]
pub enum FetchOutput<T> {
    /// Drop any previous connection, connect to `host:port` over TCP, write `request_bytes`,
    /// then pass what is read to the client's `handle_response` (a clean close to
    /// `handle_eof`, a failure to `handle_transport_error`).
    Send {
        /// Host to connect to (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
        /// The request; it may hold a token, so it is zeroized on drop.
        request_bytes: Zeroizing<Vec<u8>>,
    },
    /// Finished: the credentials or why there are none. Nothing more will be output.
    Done(T),
}

impl<T: fmt::Debug> fmt::Debug for FetchOutput<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send {
                host,
                port,
                request_bytes,
            } => f
                .debug_struct("Send")
                .field("host", host)
                .field("port", port)
                .field(
                    "request_bytes",
                    &format_args!("[{} bytes]", request_bytes.len()),
                )
                .finish(),
            Self::Done(result) => f.debug_tuple("Done").field(result).finish(),
        }
    }
}

/// Why a credential source failed. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsError {
    /// One variable of the key pair is set and the other is not.
    IncompleteEnvironment {
        /// The variable that is unset or empty.
        missing: &'static str,
        /// The variable that is set.
        present: &'static str,
    },
    /// The credentials file is not valid INI.
    ProfileSyntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: &'static str,
    },
    /// The credentials file has no section for this profile.
    ProfileNotFound {
        /// The profile looked for.
        profile: String,
        /// The file has `[profile <name>]`, a header only the config file uses.
        config_style_header: bool,
    },
    /// The config file has no `[profile <name>]` section (`[default]` for the default).
    ConfigProfileNotFound {
        /// The profile looked for.
        profile: String,
        /// The file has `[<name>]`, a header only the credentials file uses.
        bare_header: bool,
    },
    /// The profile has no value for a required setting.
    ProfileIncomplete {
        /// The profile.
        profile: String,
        /// The missing setting, e.g. `aws_secret_access_key`.
        missing: &'static str,
    },
    /// The profile gets credentials some other way (role assumption, SSO, web identity), which
    /// kmstool does not implement.
    ProfileUnsupported {
        /// The profile.
        profile: String,
        /// The setting found, e.g. `role_arn`.
        setting: &'static str,
    },
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT` (or `_MODE`) is not usable.
    InvalidImdsEndpoint {
        /// The value given (an endpoint is not secret).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The IMDSv2 exchange failed.
    Imds(imds::ImdsError),
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI` is not usable (the value is
    /// not repeated: ECS's carries the task's credential id).
    InvalidContainerEndpoint {
        /// The variable.
        variable: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The container authorization token could not be read or is not a valid header value.
    ContainerToken {
        /// The variable it came from.
        variable: &'static str,
        /// What is wrong (a path and an I/O error, never the token).
        reason: String,
    },
    /// The container endpoint exchange failed.
    Container(container::ContainerError),
    /// The profile's `credential_process` failed or printed something unusable.
    Process(process::ProcessError),
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IncompleteEnvironment { missing, present } => {
                write!(f, "{present} is set but {missing} is not")
            }
            Self::ProfileSyntax { line, reason } => write!(f, "line {line}: {reason}"),
            Self::ProfileNotFound {
                profile,
                config_style_header,
            } => {
                write!(f, "no [{profile}] section")?;
                if *config_style_header {
                    write!(
                        f,
                        " ([profile {profile}] is config-file syntax; the credentials file uses [{profile}])"
                    )?;
                }
                Ok(())
            }
            Self::ConfigProfileNotFound {
                profile,
                bare_header,
            } => {
                if profile == profile::DEFAULT_PROFILE {
                    return f.write_str("no [default] section");
                }
                write!(f, "no [profile {profile}] section")?;
                if *bare_header {
                    write!(
                        f,
                        " ([{profile}] is credentials-file syntax; the config file uses [profile {profile}])"
                    )?;
                }
                Ok(())
            }
            Self::ProfileIncomplete { profile, missing } => {
                write!(f, "profile \"{profile}\" has no {missing}")
            }
            Self::ProfileUnsupported { profile, setting } => write!(
                f,
                "profile \"{profile}\" uses {setting}, which is not supported (static keys and credential_process are)"
            ),
            Self::InvalidImdsEndpoint { value, reason } => {
                write!(f, "invalid IMDS endpoint \"{value}\": {reason}")
            }
            Self::Imds(error) => error.fmt(f),
            Self::InvalidContainerEndpoint { variable, reason } => {
                write!(f, "invalid {variable}: {reason}")
            }
            Self::ContainerToken { variable, reason } => write!(f, "{variable}: {reason}"),
            Self::Container(error) => error.fmt(f),
            Self::Process(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for CredentialsError {}

/// A place credentials can come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`.
    Environment,
    /// A profile in the shared credentials file or the config file.
    Profile {
        /// The profile name.
        name: String,
        /// The file, if a path could be worked out.
        path: Option<PathBuf>,
    },
    /// A container credentials endpoint (ECS task role, EKS Pod Identity).
    Container,
    /// The instance metadata service (IMDSv2).
    Imds,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment => f.write_str("environment"),
            Self::Profile {
                name,
                path: Some(path),
            } => write!(f, "profile \"{name}\" in {}", path.display()),
            Self::Profile { name, path: None } => write!(f, "profile \"{name}\""),
            Self::Container => f.write_str("container endpoint"),
            Self::Imds => f.write_str("IMDS"),
        }
    }
}

/// Why a source gave no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// This environment variable is not set.
    Unset(&'static str),
    /// Neither the file's variable (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`) nor
    /// `HOME` is set.
    NoPath(&'static str),
    /// The file does not exist.
    FileNotFound,
    /// The file could not be read (the I/O error's text).
    Unreadable(String),
    /// The source is switched off (`AWS_EC2_METADATA_DISABLED=true`).
    Disabled,
    /// The source is configured but failed.
    Failed(CredentialsError),
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unset(variable) => write!(f, "{variable} unset"),
            Self::NoPath(variable) => write!(f, "{variable} and HOME unset"),
            Self::FileNotFound => f.write_str("file not found"),
            Self::Unreadable(error) => write!(f, "unreadable: {error}"),
            Self::Disabled => f.write_str("disabled"),
            Self::Failed(error) => error.fmt(f),
        }
    }
}

/// One source tried and why it gave nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The source.
    pub source: Source,
    /// Why it gave no credentials.
    pub miss: Miss,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.source, self.miss)
    }
}

/// The sources tried so far, in order; prints as
/// `no credentials: environment (AWS_ACCESS_KEY_ID unset), profile "default" in /root/.aws/credentials (file not found), IMDS (disabled)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tried {
    attempts: Vec<Attempt>,
}

impl Tried {
    /// Nothing tried yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `source` gave nothing, and why.
    pub fn record(&mut self, source: Source, miss: Miss) {
        self.attempts.push(Attempt { source, miss });
    }

    /// The attempts in the order they were made.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }
}

impl fmt::Display for Tried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no credentials")?;
        for (index, attempt) in self.attempts.iter().enumerate() {
            f.write_str(if index == 0 { ": " } else { ", " })?;
            attempt.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for Tried {}

/// A JSON string field read straight into a [`SecretString`] (a secret key or a session
/// token in a credentials document), so the plain text never sits in an ordinary `String`
/// field.
pub(crate) struct SecretField(pub(crate) SecretString);

impl<'de> serde::Deserialize<'de> for SecretField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|value| Self(SecretString::new(value)))
    }
}

/// Outcome of the sources that need no network: environment, then the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticLookup {
    /// Credentials found.
    Found {
        /// The credentials.
        credentials: Credentials,
        /// Where they came from.
        source: Source,
    },
    /// The profile's `credential_process` gives the credentials: run `command` through
    /// `sh -c`, parse its output with [`process::parse_output`]. A failure ends the chain (as
    /// in the AWS CLI): record it in `tried` under `source`.
    Process {
        /// The command line (kept secret: it may carry arguments).
        command: SecretString,
        /// The profile and the file that set it.
        source: Source,
        /// The sources tried before.
        tried: Tried,
    },
    /// Neither source is configured: go on with IMDS.
    NotFound(Tried),
    /// A source is configured but broken (half-set environment, unreadable or invalid file,
    /// an explicitly chosen profile that does not exist): stop and report; the last attempt
    /// holds the error.
    Failed(Tried),
}

/// One of the two shared files as read for a profile.
struct ReadFile {
    source: Source,
    kind: profile::FileKind,
    /// `None`: no path, or the file does not exist (the miss is in `miss`).
    facts: Option<profile::ProfileFacts>,
    miss: Option<Miss>,
}

/// Reads one shared file for `name`: `Err` (a recorded failure) for an unreadable or invalid
/// file.
fn read_shared_file(
    name: &str,
    path: Option<PathBuf>,
    variable: &'static str,
    kind: profile::FileKind,
    read_file: &impl Fn(&Path) -> io::Result<Zeroizing<String>>,
) -> Result<ReadFile, Attempt> {
    let source = Source::Profile {
        name: name.to_owned(),
        path: path.clone(),
    };
    let absent = |source, miss| {
        Ok(ReadFile {
            source,
            kind,
            facts: None,
            miss: Some(miss),
        })
    };
    let Some(path) = path else {
        return absent(source, Miss::NoPath(variable));
    };
    let contents = match read_file(&path) {
        Ok(contents) => contents,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return absent(source, Miss::FileNotFound);
        }
        Err(error) => {
            return Err(Attempt {
                source,
                miss: Miss::Unreadable(error.to_string()),
            });
        }
    };
    match profile::read_profile(&contents, name, kind) {
        Ok(facts) => Ok(ReadFile {
            source,
            kind,
            facts: Some(facts),
            miss: None,
        }),
        Err(error) => Err(Attempt {
            source,
            miss: Miss::Failed(error),
        }),
    }
}

/// Tries the environment, then the profile (`AWS_PROFILE`, else `default`) in the shared
/// credentials file and the config file, read as the AWS CLI reads them.
///
/// `get_env` looks up an environment variable; `read_file` reads a whole file (wrap the text
/// in [`Zeroizing`]: it holds secret keys). Within the profile: a setting kmstool cannot
/// follow (`role_arn`, SSO, …) in either file is refused, naming the setting and the file;
/// then the credentials file's static keys; then `credential_process` (the credentials
/// file's if both set one); then the config file's static keys. Missing files, or a missing
/// `default` profile, move on; anything that looks like a configuration mistake stops the
/// chain, as the AWS CLI does.
pub fn lookup_static(
    get_env: impl Fn(&str) -> Option<String>,
    read_file: impl Fn(&Path) -> io::Result<Zeroizing<String>>,
) -> StaticLookup {
    let mut tried = Tried::new();
    match env::from_env(&get_env) {
        Ok(Some(credentials)) => {
            return StaticLookup::Found {
                credentials,
                source: Source::Environment,
            };
        }
        Ok(None) => tried.record(Source::Environment, Miss::Unset(env::ACCESS_KEY_ID_VAR)),
        Err(error) => {
            tried.record(Source::Environment, Miss::Failed(error));
            return StaticLookup::Failed(tried);
        }
    }

    let name = profile::profile_name(&get_env);
    let explicit_profile = env::non_empty(&get_env, profile::PROFILE_VAR).is_some();
    let mut files = Vec::with_capacity(2);
    for (path, variable, kind) in [
        (
            profile::credentials_file_path(&get_env),
            profile::SHARED_CREDENTIALS_FILE_VAR,
            profile::FileKind::Credentials,
        ),
        (
            profile::config_file_path(&get_env),
            profile::CONFIG_FILE_VAR,
            profile::FileKind::Config,
        ),
    ] {
        match read_shared_file(&name, path, variable, kind, &read_file) {
            Ok(file) => files.push(file),
            Err(attempt) => {
                tried.record(attempt.source, attempt.miss);
                return StaticLookup::Failed(tried);
            }
        }
    }
    let failed = |mut tried: Tried, file: &ReadFile, error| {
        tried.record(file.source.clone(), Miss::Failed(error));
        StaticLookup::Failed(tried)
    };
    let seen = |file: &&ReadFile| file.facts.as_ref().is_some_and(|f| f.section_seen);
    for file in &files {
        if let Some(setting) = file.facts.as_ref().and_then(|f| f.unsupported) {
            let error = CredentialsError::ProfileUnsupported {
                profile: name.clone(),
                setting,
            };
            return failed(tried, file, error);
        }
    }
    let keys_of = |file: &ReadFile| {
        file.facts
            .as_ref()
            .map_or(profile::Keys::Absent, |f| f.keys.clone())
    };
    // The credentials file's keys, then a process from either file, then the config file's keys.
    let (credentials_file, config_file) = (&files[0], &files[1]);
    let process = files.iter().find_map(|file| {
        let command = file.facts.as_ref()?.credential_process.clone()?;
        Some((command, file))
    });
    let order = [
        (credentials_file, false),
        (credentials_file, true),
        (config_file, false),
    ];
    for (file, process_step) in order {
        if process_step {
            if let Some((command, file)) = process {
                return StaticLookup::Process {
                    command,
                    source: file.source.clone(),
                    tried,
                };
            }
            continue;
        }
        match keys_of(file) {
            profile::Keys::Absent => {}
            profile::Keys::Complete(credentials) => {
                return StaticLookup::Found {
                    credentials,
                    source: file.source.clone(),
                };
            }
            profile::Keys::Incomplete(missing) => {
                let error = CredentialsError::ProfileIncomplete {
                    profile: name.clone(),
                    missing,
                };
                return failed(tried, file, error);
            }
        }
    }
    let any_seen = files.iter().any(|file| seen(&file));
    for file in &files {
        let miss = match (&file.miss, &file.facts) {
            (Some(miss), _) => miss.clone(),
            (None, Some(facts)) if !facts.section_seen => {
                Miss::Failed(facts.not_found(&name, file.kind))
            }
            (None, _) => Miss::Failed(CredentialsError::ProfileIncomplete {
                profile: name.clone(),
                missing: "credentials",
            }),
        };
        tried.record(file.source.clone(), miss);
    }
    if explicit_profile && !any_seen {
        StaticLookup::Failed(tried)
    } else {
        StaticLookup::NotFound(tried)
    }
}

#[cfg(test)]
mod tests;
