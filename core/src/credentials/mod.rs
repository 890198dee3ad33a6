//! AWS credentials for the parent instance: the standard chain of environment variables,
//! shared credentials file, container credentials endpoint and IMDSv2, decided here and
//! driven from outside.
//!
//! Nothing here reads the environment, a file or the network. The caller passes an
//! environment lookup (`|name| std::env::var(name).ok()`), a file reader, and drives the
//! [`container::ContainerClient`] and [`imds::ImdsClient`] state machines over its own sockets
//! (both implement [`CredentialFetch`], so one driver serves both).
//!
//! The chain, in the AWS SDKs' order: [`lookup_static`] tries the environment then the
//! profile; if it returns [`StaticLookup::NotFound`], the caller tries the container endpoint
//! when [`container::ContainerEndpoint::from_env`] finds one configured (a configured endpoint
//! that fails ends the chain), else IMDS (unless [`imds::ImdsEndpoint::from_env`] says it is
//! disabled), recording each outcome in the returned [`Tried`], whose `Display` is the message
//! to print when every source came up empty.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use zeroize::Zeroizing;

use crate::secret::Credentials;

pub mod container;
pub mod env;
mod exchange;
pub mod imds;
pub mod profile;

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
    /// Connecting, writing or reading failed; `error` says how.
    fn handle_transport_error(&mut self, error: &str);
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
    /// The profile has no value for a required setting.
    ProfileIncomplete {
        /// The profile.
        profile: String,
        /// The missing setting, e.g. `aws_secret_access_key`.
        missing: &'static str,
    },
    /// The profile gets credentials some other way (role assumption, SSO, a process), which
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
            Self::ProfileIncomplete { profile, missing } => {
                write!(f, "profile \"{profile}\" has no {missing}")
            }
            Self::ProfileUnsupported { profile, setting } => write!(
                f,
                "profile \"{profile}\" uses {setting}, which is not supported (only static keys are)"
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
        }
    }
}

impl std::error::Error for CredentialsError {}

/// A place credentials can come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`.
    Environment,
    /// A profile in the shared credentials file.
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
    /// Neither `AWS_SHARED_CREDENTIALS_FILE` nor `HOME` is set.
    NoPath,
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
            Self::NoPath => write!(f, "{} and HOME unset", profile::SHARED_CREDENTIALS_FILE_VAR),
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

/// Outcome of the sources that need no network: environment, then credentials file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticLookup {
    /// Credentials found.
    Found {
        /// The credentials.
        credentials: Credentials,
        /// Where they came from.
        source: Source,
    },
    /// Neither source is configured: go on with IMDS.
    NotFound(Tried),
    /// A source is configured but broken (half-set environment, unreadable or invalid file,
    /// an explicitly chosen profile that does not exist): stop and report; the last attempt
    /// holds the error.
    Failed(Tried),
}

/// Tries the environment, then the profile in the shared credentials file.
///
/// `get_env` looks up an environment variable; `read_file` reads a whole file (wrap the text
/// in [`Zeroizing`]: it holds secret keys). A missing file, or a missing `default` profile,
/// moves on; anything that looks like a configuration mistake stops the chain, as the AWS CLI
/// does.
pub fn lookup_static(
    get_env: impl Fn(&str) -> Option<String>,
    read_file: impl FnOnce(&Path) -> io::Result<Zeroizing<String>>,
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
    let path = profile::credentials_file_path(&get_env);
    let source = Source::Profile {
        name: name.clone(),
        path: path.clone(),
    };
    let Some(path) = path else {
        tried.record(source, Miss::NoPath);
        return StaticLookup::NotFound(tried);
    };
    let contents = match read_file(&path) {
        Ok(contents) => contents,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            tried.record(source, Miss::FileNotFound);
            return StaticLookup::NotFound(tried);
        }
        Err(error) => {
            tried.record(source, Miss::Unreadable(error.to_string()));
            return StaticLookup::Failed(tried);
        }
    };
    match profile::from_credentials_file(&contents, &name) {
        Ok(credentials) => StaticLookup::Found {
            credentials,
            source,
        },
        Err(error @ CredentialsError::ProfileNotFound { .. }) if !explicit_profile => {
            tried.record(source, Miss::Failed(error));
            StaticLookup::NotFound(tried)
        }
        Err(error) => {
            tried.record(source, Miss::Failed(error));
            StaticLookup::Failed(tried)
        }
    }
}

#[cfg(test)]
mod tests;
