//! Instance role credentials from the EC2 instance metadata service, IMDSv2, as a sans-IO
//! state machine.
//!
//! Three requests, each on a fresh connection:
//! 1. `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 21600` → a session
//!    token;
//! 2. `GET /latest/meta-data/iam/security-credentials/` with `X-aws-ec2-metadata-token` → the
//!    role name (first line);
//! 3. `GET /latest/meta-data/iam/security-credentials/<role>` → JSON with `Code`,
//!    `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`.
//!
//! No retries: IMDS is link-local and answers in milliseconds, and each step has a deadline;
//! a failure names its step.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;
use zeroize::Zeroizing;

use super::env::non_empty;
use super::exchange::Exchange;
use super::{CredentialFetch, CredentialsError, FetchOutput, SecretField};
use crate::http::{self, HttpError, HttpLimits, RequestError, Response};
use crate::secret::{Credentials, SecretString};

/// Switches IMDS off when `true` (any case).
pub const DISABLED_VAR: &str = "AWS_EC2_METADATA_DISABLED";
/// Overrides the endpoint, e.g. `http://127.0.0.1:1338`.
pub const ENDPOINT_VAR: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// `IPv4` (default) or `IPv6`: which default endpoint to use.
pub const ENDPOINT_MODE_VAR: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE";
/// Session token lifetime asked for, in seconds (the maximum, six hours).
pub const TOKEN_TTL_SECONDS: &str = "21600";
/// Default time allowed for each of the three steps (connect, send, full response).
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(1);

const TOKEN_PATH: &str = "/latest/api/token";
const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
const REGION_PATH: &str = "/latest/meta-data/placement/region";
/// Longest region name accepted from IMDS (the caller validates it further).
const MAX_REGION_BYTES: usize = 64;
/// Longest session token accepted (real ones are about 60 bytes).
const MAX_TOKEN_BYTES: usize = 1024;
/// Longest IAM role name.
const MAX_ROLE_NAME_BYTES: usize = 64;
pub(super) const LIMITS: HttpLimits = HttpLimits {
    max_head_bytes: 16 * 1024,
    max_headers: 64,
    max_body_bytes: 64 * 1024,
};

/// Where IMDS listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsEndpoint {
    /// Host name or IP address, IPv6 without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ImdsEndpoint {
    /// The endpoint the environment selects, `None` if `AWS_EC2_METADATA_DISABLED=true`:
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else `http://169.254.169.254` (or
    /// `http://[fd00:ec2::254]` with `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`).
    pub fn from_env(
        get_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, CredentialsError> {
        if non_empty(&get_env, DISABLED_VAR).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        {
            return Ok(None);
        }
        if let Some(url) = non_empty(&get_env, ENDPOINT_VAR) {
            return Self::parse(&url).map(Some);
        }
        let host = match non_empty(&get_env, ENDPOINT_MODE_VAR) {
            None => "169.254.169.254",
            Some(mode) if mode.eq_ignore_ascii_case("ipv4") => "169.254.169.254",
            Some(mode) if mode.eq_ignore_ascii_case("ipv6") => "fd00:ec2::254",
            Some(mode) => {
                return Err(CredentialsError::InvalidImdsEndpoint {
                    value: mode,
                    reason: "endpoint mode is neither IPv4 nor IPv6",
                });
            }
        };
        Ok(Some(Self {
            host: host.to_owned(),
            port: 80,
        }))
    }

    /// Parses `http://host[:port][/]` (IPv6 hosts in brackets).
    pub fn parse(url: &str) -> Result<Self, CredentialsError> {
        let invalid = |reason| CredentialsError::InvalidImdsEndpoint {
            value: url.to_owned(),
            reason,
        };
        let rest = url
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
            .and_then(|_| url.get(7..))
            .ok_or_else(|| invalid("not an http:// URL"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if !path.is_empty() && path != "/" {
            return Err(invalid("a path is not supported"));
        }
        let (host, port) = split_authority(authority).map_err(invalid)?;
        let port = match port {
            None => 80,
            Some(port) => parse_port(port).ok_or_else(|| invalid("invalid port"))?,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// The `Host` header value: the host (bracketed if IPv6), with `:port` unless 80.
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

/// Splits `host[:port]` or `[ipv6][:port]` and checks the host's characters.
pub(super) fn split_authority(authority: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("IPv6 address without a closing ]")?;
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !valid {
            return Err("invalid IPv6 address");
        }
        return match after {
            "" => Ok((host, None)),
            _ => Ok((host, Some(after.strip_prefix(':').ok_or("invalid port")?))),
        };
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !valid {
        return Err("invalid host");
    }
    Ok((host, port))
}

/// A decimal TCP port, 1..=65535, digits only.
pub(super) fn parse_port(port: &str) -> Option<u16> {
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| port.parse().ok())
        .flatten()
        .filter(|port| *port != 0)
}

impl fmt::Display for ImdsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.host_header())
    }
}

/// The three requests of an IMDSv2 credential fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImdsStep {
    /// `PUT /latest/api/token`.
    Token,
    /// `GET /latest/meta-data/iam/security-credentials/`.
    RoleName,
    /// `GET /latest/meta-data/iam/security-credentials/<role>`.
    Credentials,
    /// `PUT /latest/api/token`, first of the two requests of a region fetch.
    RegionToken,
    /// `GET /latest/meta-data/placement/region`.
    Region,
}

impl fmt::Display for ImdsStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Token => "step 1/3 (PUT /latest/api/token)",
            Self::RoleName => "step 2/3 (GET /latest/meta-data/iam/security-credentials/)",
            Self::Credentials => "step 3/3 (GET /latest/meta-data/iam/security-credentials/<role>)",
            Self::RegionToken => "region step 1/2 (PUT /latest/api/token)",
            Self::Region => "region step 2/2 (GET /latest/meta-data/placement/region)",
        })
    }
}

/// What went wrong in an IMDS step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImdsErrorKind {
    /// The driver could not connect, send or receive (its error text).
    Transport(String),
    /// No complete response before the step's deadline.
    Timeout,
    /// The response is not valid HTTP.
    Http(HttpError),
    /// The token `PUT` was refused (401/403/404/405): IMDSv2 is unsupported, or IMDS access
    /// is turned off for this instance.
    TokenRefused(u16),
    /// 404 for the role list: no instance profile is attached to the instance.
    NoRole,
    /// Any other status than 200.
    Status(u16),
    /// The session token is empty, too long or not printable ASCII.
    InvalidToken,
    /// The role name is empty, too long or has characters an IAM role name cannot have.
    InvalidRoleName,
    /// The credentials document is not what IMDS sends (names the problem, never a value).
    Malformed(&'static str),
    /// The region IMDS sent is empty, too long or not printable ASCII.
    InvalidRegion,
    /// The credentials document's `Code` is not `Success`.
    Code(String),
    /// A request could not be built (a bug: every part is validated before).
    Request(RequestError),
}

impl fmt::Display for ImdsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(error) => write!(f, "transport error: {error}"),
            Self::Timeout => f.write_str("no response in time"),
            Self::Http(error) => error.fmt(f),
            Self::TokenRefused(status) => write!(
                f,
                "HTTP {status}: IMDSv2 is unsupported or metadata access is disabled for this instance"
            ),
            Self::NoRole => f.write_str("HTTP 404: no IAM role is attached to this instance"),
            Self::Status(status) => write!(f, "unexpected HTTP {status}"),
            Self::InvalidToken => f.write_str("invalid session token"),
            Self::InvalidRoleName => f.write_str("invalid IAM role name"),
            Self::InvalidRegion => f.write_str("invalid region name"),
            Self::Malformed(what) => write!(f, "malformed credentials document: {what}"),
            Self::Code(code) => write!(f, "credentials document says Code={code}"),
            Self::Request(error) => error.fmt(f),
        }
    }
}

/// An IMDS failure and the step it happened in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsError {
    /// The step that failed.
    pub step: ImdsStep,
    /// What went wrong.
    pub kind: ImdsErrorKind,
}

impl fmt::Display for ImdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IMDS {}: {}", self.step, self.kind)?;
        let token_step = matches!(self.step, ImdsStep::Token | ImdsStep::RegionToken);
        if token_step && self.kind == ImdsErrorKind::Timeout {
            // The classic cause: a container one hop further than the PUT response may travel.
            f.write_str(" (in a container, the instance's metadata hop limit may be too low)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ImdsError {}

/// Credentials of the instance role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsCredentials {
    /// The temporary credentials (with session token).
    pub credentials: Credentials,
    /// When they expire, as IMDS wrote it (ISO 8601, e.g. `2026-11-29T10:26:21Z`).
    pub expiration: String,
    /// The role they belong to.
    pub role: String,
}

/// What the driver must do next.
pub type ImdsOutput = FetchOutput<Result<ImdsCredentials, ImdsError>>;

/// Fetches instance role credentials from IMDSv2 without doing any IO itself.
///
/// Driven through [`CredentialFetch`], whose documentation gives the driving contract. Every
/// step (token, role, credentials) has its own deadline, set when its request is queued; `now`
/// is the driver's clock, never read here. Input that arrives when no request is outstanding
/// is ignored.
///
/// ```
/// use std::time::Instant;
/// use kmstool_core::credentials::CredentialFetch as _;
/// use kmstool_core::credentials::imds::{ImdsClient, ImdsEndpoint, ImdsOutput};
///
/// let reply = |body: &str| {
///     format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
/// };
/// let mut canned = vec![
///     reply("AQAEAExampleSessionToken=="),
///     reply("my-instance-role\n"),
///     reply(r#"{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"ASIAEXAMPLE",
///              "SecretAccessKey":"wJalrXUtnFEMI/K7MDENG","Token":"IQoJb3JpZ2luX2Vj",
///              "Expiration":"2026-11-29T10:26:21Z"}"#),
/// ]
/// .into_iter();
///
/// let endpoint = ImdsEndpoint::from_env(|_| None)?.expect("IMDS is on by default");
/// let now = Instant::now(); // the driver's clock; the core never reads one
/// let mut imds = ImdsClient::new(endpoint, now);
/// let result = loop {
///     match imds.poll_output() {
///         Some(ImdsOutput::Send { host, port, request_bytes }) => {
///             // A real driver connects to (host, port) and writes `request_bytes`.
///             assert_eq!((host.as_str(), port), ("169.254.169.254", 80));
///             assert!(request_bytes.starts_with(b"PUT ") || request_bytes.starts_with(b"GET "));
///             // ...then feeds whatever it reads, in pieces of any size.
///             for byte in canned.next().expect("one reply per request").chunks(7) {
///                 imds.handle_response(now, byte);
///             }
///         }
///         Some(ImdsOutput::Done(result)) => break result,
///         // Nothing to send: wait for input or the deadline.
///         None => match imds.poll_timeout() {
///             Some(deadline) => imds.handle_timeout(deadline),
///             None => unreachable!("a client that is not done always has a deadline"),
///         },
///     }
/// };
/// let role = result?;
/// assert_eq!(role.role, "my-instance-role");
/// assert_eq!(role.credentials.access_key_id, "ASIAEXAMPLE");
/// assert_eq!(role.expiration, "2026-11-29T10:26:21Z");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ImdsClient {
    endpoint: ImdsEndpoint,
    step_timeout: Duration,
    /// The step whose request is queued, outstanding or last answered.
    step: ImdsStep,
    exchange: Exchange<Result<ImdsCredentials, ImdsError>>,
    deadline: Instant,
    /// The session token, from step 1 until the end.
    token: Option<SecretString>,
    /// The role name, from step 2.
    role: String,
}

impl fmt::Debug for ImdsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImdsClient")
            .field("endpoint", &self.endpoint)
            .field("step", &self.step)
            .field("state", &self.exchange.describe(Result::is_ok))
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl ImdsClient {
    /// A client that will fetch credentials from `endpoint`, each step allowed
    /// [`DEFAULT_STEP_TIMEOUT`]; the token request is queued at once.
    pub fn new(endpoint: ImdsEndpoint, now: Instant) -> Self {
        Self::with_step_timeout(endpoint, DEFAULT_STEP_TIMEOUT, now)
    }

    /// Like [`new`](Self::new) with another per-step timeout.
    pub fn with_step_timeout(endpoint: ImdsEndpoint, step_timeout: Duration, now: Instant) -> Self {
        let mut client = Self {
            endpoint,
            step_timeout,
            step: ImdsStep::Token,
            exchange: Exchange::Closed,
            deadline: now,
            token: None,
            role: String::new(),
        };
        client.queue(ImdsStep::Token, "PUT", TOKEN_PATH, now);
        client
    }

    fn fail(&mut self, kind: ImdsErrorKind) {
        self.token = None;
        let step = self.step;
        self.exchange = Exchange::Finished(Err(ImdsError { step, kind }));
    }

    /// Builds the request for `step` (with the session token after step 1) and queues it with
    /// a fresh deadline.
    fn queue(&mut self, step: ImdsStep, method: &str, path: &str, now: Instant) {
        self.deadline = now + self.step_timeout;
        self.step = step;
        match build_request(&self.endpoint, self.token.as_ref(), method, path) {
            Ok(request) => self.exchange = Exchange::Queued(request),
            Err(error) => self.fail(ImdsErrorKind::Request(error)),
        }
    }

    fn on_response(&mut self, response: Result<Response, HttpError>, now: Instant) {
        let result = response
            .map_err(ImdsErrorKind::Http)
            .and_then(|response| self.advance(&response, now));
        if let Err(kind) = result {
            self.fail(kind);
        }
    }

    /// Takes what the current step's response gives and queues the next step, or finishes.
    fn advance(&mut self, response: &Response, now: Instant) -> Result<(), ImdsErrorKind> {
        match self.step {
            ImdsStep::Token => {
                self.token = Some(read_token(response)?);
                self.queue(ImdsStep::RoleName, "GET", CREDENTIALS_PATH, now);
            }
            ImdsStep::RoleName => {
                let role = read_role_name(response)?;
                let path = format!("{CREDENTIALS_PATH}{role}");
                self.role = role;
                self.queue(ImdsStep::Credentials, "GET", &path, now);
            }
            // Steps of `ImdsRegionClient`, never this client's.
            ImdsStep::RegionToken | ImdsStep::Region => {}
            ImdsStep::Credentials => {
                let (credentials, expiration) = read_credentials(response)?;
                self.token = None;
                self.exchange = Exchange::Finished(Ok(ImdsCredentials {
                    credentials,
                    expiration,
                    role: std::mem::take(&mut self.role),
                }));
            }
        }
        Ok(())
    }
}

/// An IMDS request: the token `PUT` when `token` is `None`, else a read carrying the token.
fn build_request(
    endpoint: &ImdsEndpoint,
    token: Option<&SecretString>,
    method: &str,
    path: &str,
) -> Result<Zeroizing<Vec<u8>>, RequestError> {
    let host = endpoint.host_header();
    let mut headers: Vec<(&str, &str)> = vec![("Host", &host)];
    match token {
        None => headers.push(("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)),
        Some(token) => headers.push(("X-aws-ec2-metadata-token", token.expose())),
    }
    if method == "PUT" {
        headers.push(("Content-Length", "0"));
    }
    headers.push(("Connection", "close"));
    let mut request = Zeroizing::new(Vec::new());
    http::write_request(&mut request, method, path, &headers, b"")?;
    Ok(request)
}

/// The instance's region from IMDSv2, as a sans-IO state machine driven like [`ImdsClient`]
/// (it implements [`CredentialFetch`]): `PUT /latest/api/token`, then
/// `GET /latest/meta-data/placement/region` with the token. The result is `Ok(None)` when
/// IMDS answers 404 for the region (a service that does not know it).
///
/// ```
/// use std::time::{Duration, Instant};
/// use kmstool_core::credentials::{CredentialFetch, FetchOutput};
/// use kmstool_core::credentials::imds::{ImdsEndpoint, ImdsRegionClient};
///
/// let reply = |status: &str, body: &str| {
///     format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
/// };
/// let mut canned = [reply("200 OK", "AQAEAToken=="), reply("200 OK", "eu-west-3\n")].into_iter();
/// let endpoint = ImdsEndpoint::from_env(|_| None)?.expect("IMDS is on by default");
/// let now = Instant::now(); // the driver's clock
/// let mut client = ImdsRegionClient::new(endpoint, Duration::from_secs(1), now);
/// let region = loop {
///     match client.poll_output() {
///         Some(FetchOutput::Send { request_bytes, .. }) => {
///             assert!(request_bytes.starts_with(b"PUT ") || request_bytes.starts_with(b"GET "));
///             client.handle_response(now, canned.next().expect("two requests").as_bytes());
///         }
///         Some(FetchOutput::Done(result)) => break result?,
///         None => client.handle_timeout(client.poll_timeout().expect("a deadline")),
///     }
/// };
/// assert_eq!(region.as_deref(), Some("eu-west-3"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ImdsRegionClient {
    endpoint: ImdsEndpoint,
    step_timeout: Duration,
    step: ImdsStep,
    exchange: Exchange<Result<Option<String>, ImdsError>>,
    deadline: Instant,
    token: Option<SecretString>,
}

impl fmt::Debug for ImdsRegionClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImdsRegionClient")
            .field("endpoint", &self.endpoint)
            .field("step", &self.step)
            .field("state", &self.exchange.describe(Result::is_ok))
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl ImdsRegionClient {
    /// A client that will ask `endpoint` for the region, each step allowed `step_timeout`;
    /// the token request is queued at once.
    pub fn new(endpoint: ImdsEndpoint, step_timeout: Duration, now: Instant) -> Self {
        let mut client = Self {
            endpoint,
            step_timeout,
            step: ImdsStep::RegionToken,
            exchange: Exchange::Closed,
            deadline: now,
            token: None,
        };
        client.queue(ImdsStep::RegionToken, "PUT", TOKEN_PATH, now);
        client
    }

    fn queue(&mut self, step: ImdsStep, method: &str, path: &str, now: Instant) {
        self.deadline = now + self.step_timeout;
        self.step = step;
        match build_request(&self.endpoint, self.token.as_ref(), method, path) {
            Ok(request) => self.exchange = Exchange::Queued(request),
            Err(error) => self.fail(ImdsErrorKind::Request(error)),
        }
    }

    fn fail(&mut self, kind: ImdsErrorKind) {
        self.token = None;
        let step = self.step;
        self.exchange = Exchange::Finished(Err(ImdsError { step, kind }));
    }

    fn on_response(&mut self, response: Result<Response, HttpError>, now: Instant) {
        let response = match response {
            Ok(response) => response,
            Err(error) => return self.fail(ImdsErrorKind::Http(error)),
        };
        let result = match self.step {
            ImdsStep::RegionToken => read_token(&response).map(|token| {
                self.token = Some(token);
                self.queue(ImdsStep::Region, "GET", REGION_PATH, now);
            }),
            _ => read_region(&response).map(|region| {
                self.token = None;
                self.exchange = Exchange::Finished(Ok(region));
            }),
        };
        if let Err(kind) = result {
            self.fail(kind);
        }
    }
}

/// The region document: one line, the region's name.
fn read_region(response: &Response) -> Result<Option<String>, ImdsErrorKind> {
    match response.status {
        200 => {}
        404 => return Ok(None),
        status => return Err(ImdsErrorKind::Status(status)),
    }
    let text = std::str::from_utf8(&response.body).map_err(|_| ImdsErrorKind::InvalidRegion)?;
    let region = text.trim_ascii();
    let valid = !region.is_empty()
        && region.len() <= MAX_REGION_BYTES
        && region.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(ImdsErrorKind::InvalidRegion);
    }
    Ok(Some(region.to_owned()))
}

impl CredentialFetch for ImdsRegionClient {
    type Result = Result<Option<String>, ImdsError>;

    fn poll_output(&mut self) -> Option<FetchOutput<Self::Result>> {
        self.exchange
            .poll_output(&self.endpoint.host, self.endpoint.port, LIMITS)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.exchange.is_open().then_some(self.deadline)
    }

    fn handle_response(&mut self, now: Instant, bytes: &[u8]) {
        if let Some(response) = self.exchange.feed(bytes) {
            self.on_response(response, now);
        }
    }

    fn handle_eof(&mut self, now: Instant) {
        if let Some(response) = self.exchange.eof() {
            self.on_response(response, now);
        }
    }

    fn handle_transport_error(&mut self, _now: Instant, error: &str) {
        if self.exchange.is_open() {
            self.fail(ImdsErrorKind::Transport(error.to_owned()));
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline && self.exchange.is_open() {
            self.fail(ImdsErrorKind::Timeout);
        }
    }
}

/// Step 1: the body is the session token.
fn read_token(response: &Response) -> Result<SecretString, ImdsErrorKind> {
    match response.status {
        200 => {}
        status @ (401 | 403 | 404 | 405) => return Err(ImdsErrorKind::TokenRefused(status)),
        status => return Err(ImdsErrorKind::Status(status)),
    }
    let token = std::str::from_utf8(&response.body)
        .map_err(|_| ImdsErrorKind::InvalidToken)?
        .trim_ascii();
    let valid = !token.is_empty()
        && token.len() <= MAX_TOKEN_BYTES
        && token.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(ImdsErrorKind::InvalidToken);
    }
    Ok(SecretString::from(token))
}

/// Step 2: the first line of the body is the role name.
fn read_role_name(response: &Response) -> Result<String, ImdsErrorKind> {
    match response.status {
        200 => {}
        404 => return Err(ImdsErrorKind::NoRole),
        status => return Err(ImdsErrorKind::Status(status)),
    }
    let text = std::str::from_utf8(&response.body).map_err(|_| ImdsErrorKind::InvalidRoleName)?;
    let role = text.lines().next().unwrap_or_default().trim_ascii();
    // IAM role names: 1 to 64 of [A-Za-z0-9+=,.@_-]; nothing else may reach a request path.
    let valid = !role.is_empty()
        && role.len() <= MAX_ROLE_NAME_BYTES
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if !valid {
        return Err(ImdsErrorKind::InvalidRoleName);
    }
    Ok(role.to_owned())
}

/// The credentials document; the secret fields go straight into zeroizing containers.
#[derive(Deserialize)]
struct CredentialsDocument {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "AccessKeyId")]
    access_key_id: Option<String>,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: Option<SecretField>,
    #[serde(rename = "Token")]
    token: Option<SecretField>,
    #[serde(rename = "Expiration")]
    expiration: Option<String>,
}

/// Step 3: the credentials document.
fn read_credentials(response: &Response) -> Result<(Credentials, String), ImdsErrorKind> {
    if response.status != 200 {
        return Err(ImdsErrorKind::Status(response.status));
    }
    parse_credentials_document(&response.body).map_err(|error| match error {
        DocumentError::Malformed(what) => ImdsErrorKind::Malformed(what),
        DocumentError::Code(code) => ImdsErrorKind::Code(code),
    })
}

/// Why a credentials document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DocumentError {
    /// Not what the service sends (names the problem, never a value).
    Malformed(&'static str),
    /// `Code` is present and not `Success`.
    Code(String),
}

/// The JSON document IMDS and the container credentials endpoints both send: `AccessKeyId`,
/// `SecretAccessKey`, `Token`, `Expiration`, and from IMDS a `Code`.
pub(super) fn parse_credentials_document(
    body: &[u8],
) -> Result<(Credentials, String), DocumentError> {
    // JSON is UTF-8 (RFC 8259 §8.1); serde_json would skip unknown fields' strings unchecked.
    let text = std::str::from_utf8(body).map_err(|_| DocumentError::Malformed("not UTF-8 text"))?;
    let document: CredentialsDocument = serde_json::from_str(text)
        .map_err(|_| DocumentError::Malformed("not a JSON object with string fields"))?;
    if let Some(code) = document.code.filter(|code| code != "Success") {
        return Err(DocumentError::Code(code.chars().take(100).collect()));
    }
    let present = |field: Option<SecretField>, missing| {
        field
            .map(|field| field.0)
            .filter(|value| !value.is_empty())
            .ok_or(DocumentError::Malformed(missing))
    };
    let access_key_id = document
        .access_key_id
        .filter(|id| !id.is_empty())
        .ok_or(DocumentError::Malformed("AccessKeyId missing"))?;
    let secret_access_key = present(document.secret_access_key, "SecretAccessKey missing")?;
    let token = present(document.token, "Token missing")?;
    let expiration = document
        .expiration
        .filter(|expiration| !expiration.is_empty())
        .ok_or(DocumentError::Malformed("Expiration missing"))?;
    Ok((
        Credentials::new(access_key_id, secret_access_key, Some(token)),
        expiration,
    ))
}

impl CredentialFetch for ImdsClient {
    type Result = Result<ImdsCredentials, ImdsError>;

    fn poll_output(&mut self) -> Option<ImdsOutput> {
        self.exchange
            .poll_output(&self.endpoint.host, self.endpoint.port, LIMITS)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.exchange.is_open().then_some(self.deadline)
    }

    fn handle_response(&mut self, now: Instant, bytes: &[u8]) {
        if let Some(response) = self.exchange.feed(bytes) {
            self.on_response(response, now);
        }
    }

    fn handle_eof(&mut self, now: Instant) {
        if let Some(response) = self.exchange.eof() {
            self.on_response(response, now);
        }
    }

    fn handle_transport_error(&mut self, _now: Instant, error: &str) {
        if self.exchange.is_open() {
            self.fail(ImdsErrorKind::Transport(error.to_owned()));
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline && self.exchange.is_open() {
            self.fail(ImdsErrorKind::Timeout);
        }
    }
}

#[cfg(test)]
mod tests;
