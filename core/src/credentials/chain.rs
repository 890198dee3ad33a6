//! The credential chain in the AWS SDKs' order, as a state machine: environment, then the
//! profile (static keys or `credential_process`), then the container endpoint, then IMDSv2.
//!
//! Everything that reads no network is decided when the chain is made: the environment and
//! the shared files (through the caller's lookups), and which endpoints are configured. What
//! remains is at most one slow step, which the driver carries out and reports back:
//!
//! - a profile's `credential_process` ([`ChainOutput::RunProcess`]): its outcome ends the
//!   chain, success or failure, as in the AWS CLI;
//! - a configured container endpoint ([`ChainOutput::FetchContainer`]): its outcome ends the
//!   chain too (a configured endpoint that fails is an error, not a reason to ask IMDS);
//! - IMDSv2 ([`ChainOutput::FetchImds`]), unless `AWS_EC2_METADATA_DISABLED` switches it off.
//!
//! When every source comes up empty, the [`Tried`] list says what each one lacked.
//!
//! ```
//! use std::time::Instant;
//! use kmstool_core::credentials::chain::{ChainOutput, CredentialChain};
//!
//! // Nothing configured but IMDS: the chain asks for one IMDS fetch.
//! let env = |name: &str| (name == "HOME").then(|| "/nonexistent".to_owned());
//! let read_file = |_: &std::path::Path| Err(std::io::ErrorKind::NotFound.into());
//! let now = Instant::now();
//! let mut chain = CredentialChain::new(env, read_file, now);
//! let Some(ChainOutput::FetchImds(_client)) = chain.poll_output() else {
//!     panic!("expected an IMDS fetch")
//! };
//! // A driver runs the client (see `CredentialFetch`) and reports how it went; here, IMDS
//! // cannot be reached.
//! let unreachable = kmstool_core::credentials::imds::ImdsError {
//!     step: kmstool_core::credentials::imds::ImdsStep::Token,
//!     kind: kmstool_core::credentials::imds::ImdsErrorKind::Timeout,
//! };
//! chain.handle_imds(now, Err(unreachable));
//! let Some(ChainOutput::Done(Err(tried))) = chain.poll_output() else { panic!() };
//! assert_eq!(tried.attempts().len(), 5, "{tried}");
//! ```

use std::fmt;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::container::{
    self, ContainerClient, ContainerCredentials, ContainerEndpoint, ContainerError,
};
use super::imds::{ImdsClient, ImdsCredentials, ImdsEndpoint, ImdsError};
use super::process::{self, ProcessCredentials, ProcessError};
use super::{CredentialsError, Miss, Source, StaticLookup, Tried, lookup_static};
use crate::secret::{Credentials, SecretString};

/// How an unconfigured container endpoint reads in the list of sources tried.
const CONTAINER_VARS: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI";

/// Credentials the chain found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The credentials.
    pub credentials: Credentials,
    /// Where they came from, as a log line says it: `environment`, `profile "p" in FILE`,
    /// `credential_process of profile "p" in FILE`, `container endpoint`, `IMDS (role R)`.
    pub source: String,
}

/// What the driver of a [`CredentialChain`] does next.
pub enum ChainOutput {
    /// Run `command` as the AWS CLI does (`sh -c`, stdin closed, killed after `timeout`), parse
    /// what it prints with [`process::parse_output`], and report with
    /// [`CredentialChain::handle_process`].
    RunProcess {
        /// The profile's `credential_process` (secret: it may carry arguments).
        command: SecretString,
        /// How long it may run.
        timeout: Duration,
    },
    /// Drive this client to its result (it is a [`super::CredentialFetch`]) and report with
    /// [`CredentialChain::handle_container`].
    FetchContainer(ContainerClient),
    /// Drive this client to its result and report with [`CredentialChain::handle_imds`].
    FetchImds(ImdsClient),
    /// Finished: the credentials, or every source tried and why it gave none.
    Done(Result<Found, Tried>),
}

impl fmt::Debug for ChainOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RunProcess { timeout, .. } => f
                .debug_struct("RunProcess")
                .field("timeout", timeout)
                .finish_non_exhaustive(),
            Self::FetchContainer(client) => f.debug_tuple("FetchContainer").field(client).finish(),
            Self::FetchImds(client) => f.debug_tuple("FetchImds").field(client).finish(),
            Self::Done(result) => f.debug_tuple("Done").field(result).finish(),
        }
    }
}

/// The step the chain waits on.
#[derive(Debug)]
enum Waiting {
    Process(Source),
    Container,
    Imds,
}

/// The credential chain: see the [module](self) documentation.
#[derive(Debug)]
pub struct CredentialChain {
    tried: Tried,
    next: Option<ChainOutput>,
    waiting: Option<Waiting>,
}

impl CredentialChain {
    /// A chain over the process environment as `get_env` and `read_file` show it
    /// (`|name| std::env::var(name).ok()`, and a whole-file reader whose text is wrapped in
    /// [`Zeroizing`]: it holds secret keys). Everything but the network is decided here.
    pub fn new(
        get_env: impl Fn(&str) -> Option<String>,
        read_file: impl Fn(&Path) -> io::Result<Zeroizing<String>>,
        now: Instant,
    ) -> Self {
        let mut chain = Self {
            tried: Tried::new(),
            next: None,
            waiting: None,
        };
        chain.tried = match lookup_static(&get_env, &read_file) {
            StaticLookup::Found {
                credentials,
                source,
            } => {
                chain.finish(Ok(Found {
                    credentials,
                    source: source.to_string(),
                }));
                return chain;
            }
            StaticLookup::Process {
                command,
                source,
                tried,
            } => {
                chain.tried = tried;
                chain.waiting = Some(Waiting::Process(source));
                chain.next = Some(ChainOutput::RunProcess {
                    command,
                    timeout: process::DEFAULT_TIMEOUT,
                });
                return chain;
            }
            StaticLookup::Failed(tried) => {
                chain.next = Some(ChainOutput::Done(Err(tried)));
                return chain;
            }
            StaticLookup::NotFound(tried) => tried,
        };
        match ContainerEndpoint::from_env(&get_env, &read_file) {
            Ok(Some(endpoint)) => {
                let client = ContainerClient::new(endpoint, container::DEFAULT_TIMEOUT, now);
                chain.waiting = Some(Waiting::Container);
                chain.next = Some(ChainOutput::FetchContainer(client));
                return chain;
            }
            Ok(None) => chain
                .tried
                .record(Source::Container, Miss::Unset(CONTAINER_VARS)),
            Err(error) => {
                chain.tried.record(Source::Container, Miss::Failed(error));
                chain.fail();
                return chain;
            }
        }
        match ImdsEndpoint::from_env(&get_env) {
            Ok(Some(endpoint)) => {
                chain.waiting = Some(Waiting::Imds);
                chain.next = Some(ChainOutput::FetchImds(ImdsClient::new(endpoint, now)));
            }
            Ok(None) => {
                chain.tried.record(Source::Imds, Miss::Disabled);
                chain.fail();
            }
            Err(error) => {
                chain.tried.record(Source::Imds, Miss::Failed(error));
                chain.fail();
            }
        }
        chain
    }

    /// The next thing to do; `None` while a step is out with the driver, and after
    /// [`ChainOutput::Done`].
    pub fn poll_output(&mut self) -> Option<ChainOutput> {
        self.next.take()
    }

    /// The profile's `credential_process` finished at `now` with `result`.
    pub fn handle_process(
        &mut self,
        _now: Instant,
        result: Result<ProcessCredentials, ProcessError>,
    ) {
        if !matches!(self.waiting, Some(Waiting::Process(_))) {
            return;
        }
        let Some(Waiting::Process(source)) = self.waiting.take() else {
            return;
        };
        match result {
            Ok(fetched) => self.finish(Ok(Found {
                credentials: fetched.credentials,
                source: format!("credential_process of {source}"),
            })),
            Err(error) => {
                let miss = Miss::Failed(CredentialsError::Process(error));
                self.tried.record(source, miss);
                self.fail();
            }
        }
    }

    /// The container endpoint's fetch finished at `now` with `result`.
    pub fn handle_container(
        &mut self,
        _now: Instant,
        result: Result<ContainerCredentials, ContainerError>,
    ) {
        if !matches!(self.waiting, Some(Waiting::Container)) {
            return;
        }
        self.waiting = None;
        match result {
            Ok(fetched) => self.finish(Ok(Found {
                credentials: fetched.credentials,
                source: Source::Container.to_string(),
            })),
            Err(error) => {
                let miss = Miss::Failed(CredentialsError::Container(error));
                self.tried.record(Source::Container, miss);
                self.fail();
            }
        }
    }

    /// The IMDS fetch finished at `now` with `result`.
    pub fn handle_imds(&mut self, _now: Instant, result: Result<ImdsCredentials, ImdsError>) {
        if !matches!(self.waiting, Some(Waiting::Imds)) {
            return;
        }
        self.waiting = None;
        match result {
            Ok(imds) => self.finish(Ok(Found {
                credentials: imds.credentials,
                source: format!("IMDS (role {})", imds.role),
            })),
            Err(error) => {
                let miss = Miss::Failed(CredentialsError::Imds(error));
                self.tried.record(Source::Imds, miss);
                self.fail();
            }
        }
    }

    fn finish(&mut self, result: Result<Found, Tried>) {
        self.waiting = None;
        self.next = Some(ChainOutput::Done(result));
    }

    fn fail(&mut self) {
        let tried = std::mem::take(&mut self.tried);
        self.finish(Err(tried));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;
    use crate::credentials::container::ContainerErrorKind;
    use crate::credentials::imds::{ImdsErrorKind, ImdsStep};

    /// A chain over these variables and files (every other file is missing).
    fn chain(vars: &[(&str, &str)], files: &[(&str, &str)]) -> CredentialChain {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), (*v).to_owned()))
            .collect();
        CredentialChain::new(
            move |name| vars.get(name).cloned(),
            move |path| {
                files
                    .get(path)
                    .map(|text| Zeroizing::new(text.clone()))
                    .ok_or_else(|| io::ErrorKind::NotFound.into())
            },
            Instant::now(),
        )
    }

    fn tried(output: Option<ChainOutput>) -> Tried {
        match output {
            Some(ChainOutput::Done(Err(tried))) => tried,
            other => panic!("expected the chain to fail, got {other:?}"),
        }
    }

    #[test]
    fn the_environment_answers_before_anything_is_fetched() {
        let mut chain = chain(
            &[
                ("AWS_ACCESS_KEY_ID", "AKIDENV"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds"),
            ],
            &[],
        );
        match chain.poll_output() {
            Some(ChainOutput::Done(Ok(found))) => {
                assert_eq!(found.credentials.access_key_id, "AKIDENV");
                assert_eq!(found.source, "environment");
            }
            other => panic!("{other:?}"),
        }
        assert!(chain.poll_output().is_none(), "done once");
    }

    #[test]
    fn a_failing_credential_process_ends_the_chain() {
        let mut chain = chain(
            &[("HOME", "/home/u")],
            &[(
                "/home/u/.aws/config",
                "[default]\ncredential_process = /bin/creds --json\n",
            )],
        );
        let Some(ChainOutput::RunProcess { command, timeout }) = chain.poll_output() else {
            panic!("expected the process step");
        };
        assert_eq!(command.expose(), "/bin/creds --json");
        assert_eq!(timeout, process::DEFAULT_TIMEOUT);
        assert!(chain.poll_output().is_none(), "waits for the process");
        chain.handle_imds(Instant::now(), Err(imds_timeout()));
        assert!(
            chain.poll_output().is_none(),
            "another step's result is ignored"
        );
        chain.handle_process(
            Instant::now(),
            Err(ProcessError::Status("exit status: 2".into())),
        );
        let tried = tried(chain.poll_output()).to_string();
        assert!(tried.contains("exit status: 2"), "{tried}");
        assert!(
            !tried.contains("IMDS") && !tried.contains("container"),
            "{tried}"
        );
    }

    #[test]
    fn a_configured_container_endpoint_that_fails_is_the_answer() {
        let mut chain = chain(
            &[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds")],
            &[],
        );
        let Some(ChainOutput::FetchContainer(_)) = chain.poll_output() else {
            panic!("expected the container step");
        };
        let refused = ContainerError {
            endpoint: "http://169.254.170.2:80".into(),
            authorized: false,
            kind: ContainerErrorKind::Transport("connection refused".into()),
        };
        chain.handle_container(Instant::now(), Err(refused));
        let tried = tried(chain.poll_output());
        let last = tried.attempts().last().expect("attempts");
        assert_eq!(last.source, Source::Container);
        assert!(tried.to_string().contains("connection refused"), "{tried}");
        assert!(
            !tried.to_string().contains("IMDS"),
            "IMDS is not asked: {tried}"
        );
    }

    #[test]
    fn with_nothing_configured_imds_is_last_unless_disabled() {
        let mut chain = chain(&[("HOME", "/home/u")], &[]);
        let Some(ChainOutput::FetchImds(_)) = chain.poll_output() else {
            panic!("expected the IMDS step");
        };
        let now = Instant::now();
        chain.handle_imds(
            now,
            Ok(ImdsCredentials {
                credentials: Credentials::new("ASIAROLE", "secret", None),
                expiration: "2026-12-06T10:00:00Z".into(),
                role: "app".into(),
            }),
        );
        match chain.poll_output() {
            Some(ChainOutput::Done(Ok(found))) => assert_eq!(found.source, "IMDS (role app)"),
            other => panic!("{other:?}"),
        }

        let mut off = chain_with_imds_off();
        let tried = tried(off.poll_output());
        let sources: Vec<String> = tried.attempts().iter().map(|a| a.to_string()).collect();
        assert_eq!(sources.last().map(String::as_str), Some("IMDS (disabled)"));
        assert!(
            sources.iter().any(|s| s.starts_with("container endpoint")),
            "{sources:?}"
        );
    }

    fn chain_with_imds_off() -> CredentialChain {
        chain(
            &[("HOME", "/home/u"), ("AWS_EC2_METADATA_DISABLED", "true")],
            &[],
        )
    }

    fn imds_timeout() -> ImdsError {
        ImdsError {
            step: ImdsStep::Token,
            kind: ImdsErrorKind::Timeout,
        }
    }
}
