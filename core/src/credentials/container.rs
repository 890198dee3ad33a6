//! Credentials from a container credentials endpoint, as a sans-IO state machine: the ECS task
//! role (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, served at `169.254.170.2`) and EKS Pod
//! Identity or another local agent (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, usually with
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`).
//!
//! One `GET` on a fresh connection, with the authorization token in `Authorization` when one is
//! configured; the answer is the JSON document IMDS also sends (`AccessKeyId`,
//! `SecretAccessKey`, `Token`, `Expiration`).
//!
//! `kmstool-instance` carries no TLS, so only `http://` endpoints are supported, and, as the
//! AWS SDKs require for plain HTTP, only on the ECS and EKS link-local addresses or loopback:
//! the token and the credentials must not cross a network in the clear.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::env::non_empty;
use super::exchange::Exchange;
use super::imds::{DocumentError, LIMITS, parse_credentials_document, parse_port, split_authority};
use super::{CredentialFetch, CredentialsError, FetchOutput};
use crate::http::{self, HttpError, RequestError, Response};
use crate::secret::{Credentials, SecretString};

/// Path on the ECS endpoint `169.254.170.2`, e.g. `/v2/credentials/<id>`.
pub const RELATIVE_URI_VAR: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
/// A whole `http://` URL, e.g. EKS Pod Identity's `http://169.254.170.23/v1/credentials`.
pub const FULL_URI_VAR: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
/// The authorization token itself.
pub const AUTHORIZATION_TOKEN_VAR: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN";
/// A file holding the authorization token (read at every fetch: agents rotate it); wins over
/// [`AUTHORIZATION_TOKEN_VAR`].
pub const AUTHORIZATION_TOKEN_FILE_VAR: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";
/// The ECS credentials endpoint's address.
pub const ECS_HOST: &str = "169.254.170.2";
/// Default time allowed for the request (connect, send, full response); the AWS SDKs allow
/// 2 s to connect and 5 s to read.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest authorization token accepted (EKS's are JWTs of about 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest request path accepted.
const MAX_PATH_BYTES: usize = 2048;

/// Where the container credentials endpoint listens, and what to authorize with.
#[derive(Clone, PartialEq, Eq)]
pub struct ContainerEndpoint {
    /// Host name or IP address, IPv6 without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    authorization: Option<SecretString>,
}

impl fmt::Debug for ContainerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ContainerEndpoint {
    /// `http://host[:port]`; the path is left out (ECS's carries the task's credential id).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.host_header())
    }
}

impl ContainerEndpoint {
    /// The endpoint the environment configures, `None` when neither
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` nor `AWS_CONTAINER_CREDENTIALS_FULL_URI` is set
    /// (the relative one wins, as in the AWS SDKs). The authorization token comes from the file
    /// named by `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, read with `read_file`, else from
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    pub fn from_env(
        get_env: impl Fn(&str) -> Option<String>,
        read_file: impl FnOnce(&Path) -> io::Result<Zeroizing<String>>,
    ) -> Result<Option<Self>, CredentialsError> {
        let (host, port, path) = if let Some(relative) = non_empty(&get_env, RELATIVE_URI_VAR) {
            let path = check_path(&relative).map_err(|reason| invalid(RELATIVE_URI_VAR, reason))?;
            (ECS_HOST.to_owned(), 80, path.to_owned())
        } else if let Some(url) = non_empty(&get_env, FULL_URI_VAR) {
            parse_full_uri(&url).map_err(|reason| invalid(FULL_URI_VAR, reason))?
        } else {
            return Ok(None);
        };
        let authorization = match non_empty(&get_env, AUTHORIZATION_TOKEN_FILE_VAR) {
            Some(file) => {
                let contents = read_file(Path::new(&file)).map_err(|error| {
                    CredentialsError::ContainerToken {
                        variable: AUTHORIZATION_TOKEN_FILE_VAR,
                        reason: format!("{file}: {error}"),
                    }
                })?;
                Some(check_token(&contents, AUTHORIZATION_TOKEN_FILE_VAR)?)
            }
            None => match get_env(AUTHORIZATION_TOKEN_VAR).filter(|t| !t.is_empty()) {
                Some(token) => Some(check_token(
                    &Zeroizing::new(token),
                    AUTHORIZATION_TOKEN_VAR,
                )?),
                None => None,
            },
        };
        Ok(Some(Self {
            host,
            port,
            path,
            authorization,
        }))
    }

    /// Whether an authorization token will be sent.
    pub fn has_authorization(&self) -> bool {
        self.authorization.is_some()
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            80 => host,
            port => format!("{host}:{port}"),
        }
    }
}

fn invalid(variable: &'static str, reason: &'static str) -> CredentialsError {
    CredentialsError::InvalidContainerEndpoint { variable, reason }
}

/// A path and query that can go into a request line as they are.
fn check_path(path: &str) -> Result<&str, &'static str> {
    if !path.starts_with('/') {
        return Err("the path must start with /");
    }
    if path.len() > MAX_PATH_BYTES || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the path has characters a URL cannot carry");
    }
    Ok(path)
}

/// `http://host[:port]/path` with a host plain HTTP may go to.
fn parse_full_uri(url: &str) -> Result<(String, u16, String), &'static str> {
    let scheme_end = url.find("://").ok_or("not a URL")?;
    let scheme = &url[..scheme_end];
    if scheme.eq_ignore_ascii_case("https") {
        return Err(
            "https is not supported (kmstool-instance has no TLS); use the agent's http:// address",
        );
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err("not an http:// URL");
    }
    let rest = &url[scheme_end + 3..];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() {
        "/"
    } else {
        check_path(path)?
    };
    let (host, port) = split_authority(authority)?;
    let port = match port {
        None => 80,
        Some(port) => parse_port(port).ok_or("invalid port")?,
    };
    if !plain_http_allowed(host) {
        return Err(
            "plain HTTP is allowed only to loopback or the ECS/EKS addresses 169.254.170.2, 169.254.170.23 and fd00:ec2::23",
        );
    }
    Ok((host.to_owned(), port, path.to_owned()))
}

/// Loopback, or an address only the container's host can answer on.
fn plain_http_allowed(host: &str) -> bool {
    const ECS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
    const EKS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 23);
    const EKS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback() || ip == ECS || ip == EKS,
        Ok(IpAddr::V6(ip)) => ip.is_loopback() || ip == EKS_V6,
        Err(_) => false,
    }
}

/// The token as a header value: surrounding whitespace (a file's final newline) removed, then
/// visible ASCII and spaces only, so it cannot end the header early.
fn check_token(raw: &str, variable: &'static str) -> Result<SecretString, CredentialsError> {
    let token = raw.trim_ascii();
    let valid = !token.is_empty()
        && token.len() <= MAX_TOKEN_BYTES
        && token.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if !valid {
        return Err(CredentialsError::ContainerToken {
            variable,
            reason: "the token is empty, too long or has characters a header cannot carry"
                .to_owned(),
        });
    }
    Ok(SecretString::from(token))
}

/// What went wrong fetching from the container endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerErrorKind {
    /// The driver could not connect, send or receive (its error text).
    Transport(String),
    /// No complete response before the deadline.
    Timeout,
    /// The response is not valid HTTP.
    Http(HttpError),
    /// Any other status than 200.
    Status(u16),
    /// The credentials document is not what the endpoint sends (names the problem, never a
    /// value).
    Malformed(&'static str),
    /// The request could not be built (a bug: every part is validated before).
    Request(RequestError),
}

/// A container endpoint failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerError {
    /// The endpoint, without its path.
    pub endpoint: String,
    /// Whether an authorization token was sent.
    pub authorized: bool,
    /// What went wrong.
    pub kind: ContainerErrorKind,
}

impl fmt::Display for ContainerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "container endpoint {}: ", self.endpoint)?;
        match &self.kind {
            ContainerErrorKind::Transport(error) => write!(f, "transport error: {error}"),
            ContainerErrorKind::Timeout => f.write_str("no response in time"),
            ContainerErrorKind::Http(error) => error.fmt(f),
            ContainerErrorKind::Status(status @ (401 | 403)) if self.authorized => {
                write!(f, "HTTP {status}: the authorization token was refused")
            }
            ContainerErrorKind::Status(status @ (401 | 403)) => write!(
                f,
                "HTTP {status}: no authorization token was sent (set {AUTHORIZATION_TOKEN_FILE_VAR} or {AUTHORIZATION_TOKEN_VAR})"
            ),
            ContainerErrorKind::Status(status) => write!(f, "unexpected HTTP {status}"),
            ContainerErrorKind::Malformed(what) => {
                write!(f, "malformed credentials document: {what}")
            }
            ContainerErrorKind::Request(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ContainerError {}

/// Credentials from the container endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCredentials {
    /// The temporary credentials (with session token).
    pub credentials: Credentials,
    /// When they expire, as the endpoint wrote it (ISO 8601).
    pub expiration: String,
}

/// Fetches credentials from a container endpoint without doing any IO itself; driven through
/// [`CredentialFetch`] (see its driving contract).
pub struct ContainerClient {
    endpoint: String,
    authorized: bool,
    host: String,
    port: u16,
    deadline: Instant,
    exchange: Exchange<Result<ContainerCredentials, ContainerError>>,
}

impl fmt::Debug for ContainerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerClient")
            .field("endpoint", &self.endpoint)
            .field("state", &self.exchange.describe(Result::is_ok))
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl ContainerClient {
    /// A client whose request is queued at once, allowed `timeout` from `now`.
    pub fn new(endpoint: ContainerEndpoint, timeout: Duration, now: Instant) -> Self {
        let host_header = endpoint.host_header();
        let mut headers: Vec<(&str, &str)> = vec![("Host", &host_header)];
        if let Some(token) = &endpoint.authorization {
            headers.push(("Authorization", token.expose()));
        }
        headers.push(("Accept", "application/json"));
        headers.push(("Connection", "close"));
        let mut request = Zeroizing::new(Vec::new());
        let written = http::write_request(&mut request, "GET", &endpoint.path, &headers, b"");
        let mut client = Self {
            endpoint: endpoint.to_string(),
            authorized: endpoint.authorization.is_some(),
            host: endpoint.host.clone(),
            port: endpoint.port,
            deadline: now + timeout,
            exchange: Exchange::Closed,
        };
        match written {
            Ok(()) => client.exchange = Exchange::Queued(request),
            Err(error) => client.fail(ContainerErrorKind::Request(error)),
        }
        client
    }

    fn error(&self, kind: ContainerErrorKind) -> ContainerError {
        ContainerError {
            endpoint: self.endpoint.clone(),
            authorized: self.authorized,
            kind,
        }
    }

    fn fail(&mut self, kind: ContainerErrorKind) {
        self.exchange = Exchange::Finished(Err(self.error(kind)));
    }

    fn on_response(&mut self, response: Result<Response, HttpError>) {
        let response = match response {
            Ok(response) if response.status == 200 => response,
            Ok(response) => return self.fail(ContainerErrorKind::Status(response.status)),
            Err(error) => return self.fail(ContainerErrorKind::Http(error)),
        };
        match parse_credentials_document(&response.body) {
            Ok((credentials, expiration)) => {
                self.exchange = Exchange::Finished(Ok(ContainerCredentials {
                    credentials,
                    expiration,
                }));
            }
            Err(DocumentError::Malformed(what)) => self.fail(ContainerErrorKind::Malformed(what)),
            // ECS and EKS send no `Code`; one that is not `Success` is as bad as a broken body.
            Err(DocumentError::Code(_)) => {
                self.fail(ContainerErrorKind::Malformed("Code is not Success"));
            }
        }
    }
}

impl CredentialFetch for ContainerClient {
    type Result = Result<ContainerCredentials, ContainerError>;

    fn poll_output(&mut self) -> Option<FetchOutput<Self::Result>> {
        self.exchange.poll_output(&self.host, self.port, LIMITS)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.exchange.is_open().then_some(self.deadline)
    }

    fn handle_response(&mut self, _now: Instant, bytes: &[u8]) {
        if let Some(response) = self.exchange.feed(bytes) {
            self.on_response(response);
        }
    }

    fn handle_eof(&mut self, _now: Instant) {
        if let Some(response) = self.exchange.eof() {
            self.on_response(response);
        }
    }

    fn handle_transport_error(&mut self, _now: Instant, error: &str) {
        if self.exchange.is_open() {
            self.fail(ContainerErrorKind::Transport(error.to_owned()));
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline && self.exchange.is_open() {
            self.fail(ContainerErrorKind::Timeout);
        }
    }
}

#[cfg(test)]
mod tests;
