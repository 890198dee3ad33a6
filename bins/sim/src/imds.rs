//! A fake EC2 instance-metadata service: plain HTTP on a local address, serving an instance
//! role's temporary credentials the way IMDS does, so credential-chain code can be tested and
//! its credentials accepted by the KMS emulator ([`ImdsHandle::sim_credentials`]).
//!
//! IMDSv2 (EC2 User Guide, "Use the Instance Metadata Service to access instance metadata"):
//! `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1 to 21600, else 400)
//! returns a session token; every `GET` must carry it in `X-aws-ec2-metadata-token` (401
//! without a valid one); a token request carrying `X-Forwarded-For` is refused (403).
//! `GET /latest/meta-data/iam/security-credentials/` lists the role name,
//! `…/security-credentials/<role>` returns `Code`, `LastUpdated`, `Type` (`AWS-HMAC`),
//! `AccessKeyId`, `SecretAccessKey`, `Token` and `Expiration` (ISO 8601 UTC).
//! `GET /latest/meta-data/placement/region` returns [`ImdsConfig::region`] (404 when `None`).
//! [`ImdsMode::V1Only`] makes it an IMDSv1-only service, for error-path tests.
//!
//! The same service also answers as a container credentials endpoint (ECS task role at
//! `GET /v2/credentials/<id>`, EKS Pod Identity at `GET /v1/credentials`): no IMDS token, the
//! `Authorization` header must equal [`ImdsConfig::container_token`] when one is set (401
//! otherwise), and the document has `RoleArn`, `AccessKeyId`, `SecretAccessKey`, `Token` and
//! `Expiration`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmstool_core::secret::{Credentials, SecretString};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::kms::clock::{Clock, iso8601, parse_iso8601};
use crate::kms::http::{ReadOutcome, Request, Response, read_request};
use crate::kms::keystore::random_bytes;
use crate::kms::{DEFAULT_ACCOUNT_ID, SimCredentials};

/// The ECS task-role credentials path prefix.
pub const ECS_CREDENTIALS_PREFIX: &str = "/v2/credentials/";
/// The EKS Pod Identity credentials path.
pub const EKS_CREDENTIALS_PATH: &str = "/v1/credentials";

/// The token endpoint.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// The role listing; the role's credentials are at this path plus the role name.
pub const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
/// The instance's region.
pub const REGION_PATH: &str = "/latest/meta-data/placement/region";
/// Header carrying the requested token lifetime.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// Header carrying the token on reads.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// Longest token lifetime IMDS grants (6 hours).
pub const MAX_TOKEN_TTL_SECS: u64 = 21_600;
/// Largest request body read (IMDS requests have none).
const MAX_BODY: usize = 1024;

/// Which protocol versions the service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImdsMode {
    /// IMDSv2 only (`HttpTokens=required`): reads without a token get 401.
    V2Only,
    /// IMDSv1 only: the token `PUT` is answered with this status (403, 404 or 405, as
    /// services that block or predate IMDSv2 answer) and reads need no token.
    V1Only {
        /// Status of the token `PUT`.
        put_status: u16,
    },
}

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ImdsConfig {
    /// Address to listen on (tests use `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The instance role's name.
    pub role_name: String,
    /// The role's credentials (temporary: a session token is expected).
    pub credentials: Credentials,
    /// When the credentials expire.
    pub expiration: SystemTime,
    /// Protocol versions spoken.
    pub mode: ImdsMode,
    /// The service's wall clock (token expiry, `LastUpdated`).
    pub clock: Clock,
    /// The account the role belongs to (names the principal for the KMS emulator).
    pub account_id: String,
    /// The `Authorization` value the container credentials paths require; `None` requires
    /// none.
    pub container_token: Option<SecretString>,
    /// The region served at [`REGION_PATH`]; `None` answers 404 (so a client that asks IMDS
    /// for its region finds none unless a test sets one).
    pub region: Option<String>,
}

impl ImdsConfig {
    /// IMDSv2 with role `kmstool-sim-role` and fresh random temporary credentials valid for
    /// six hours.
    pub fn new(listen: SocketAddr) -> Self {
        let clock = Clock::system();
        Self {
            listen,
            role_name: "kmstool-sim-role".to_owned(),
            credentials: random_credentials(),
            expiration: clock.now() + Duration::from_secs(6 * 3600),
            mode: ImdsMode::V2Only,
            clock,
            account_id: DEFAULT_ACCOUNT_ID.to_owned(),
            container_token: None,
            region: None,
        }
    }
}

/// Random credentials shaped like STS's: an `ASIA…` key id, a 40-character secret, a long
/// session token.
pub fn random_credentials() -> Credentials {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id: String = random_bytes(16)
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect();
    let secret = STANDARD.encode(random_bytes(30).as_slice());
    let token = STANDARD.encode(random_bytes(300).as_slice());
    Credentials::new(
        format!("ASIA{id}"),
        SecretString::new(secret),
        Some(SecretString::new(token)),
    )
}

/// Counters of what the service has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImdsStats {
    /// Tokens issued.
    pub tokens_issued: u64,
    /// Requests answered 401.
    pub unauthorized: u64,
    /// Credential documents served.
    pub credentials_served: u64,
    /// Credential documents served on the container paths.
    pub container_credentials_served: u64,
    /// Region requests answered (with the region or 404).
    pub regions_served: u64,
}

#[derive(Debug)]
struct Shared {
    config: ImdsConfig,
    last_updated: SystemTime,
    tokens: Mutex<HashMap<String, SystemTime>>,
    stats: Mutex<ImdsStats>,
}

/// Starts instance-metadata services.
#[derive(Debug)]
pub struct Imds;

impl Imds {
    /// Binds `config.listen` and serves until [`ImdsHandle::shutdown`]. Must be called inside
    /// a tokio runtime.
    pub async fn start(config: ImdsConfig) -> io::Result<ImdsHandle> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            last_updated: config.clock.now(),
            config,
            tokens: Mutex::new(HashMap::new()),
            stats: Mutex::new(ImdsStats::default()),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, Arc::clone(&shared), stopped));
        Ok(ImdsHandle {
            local_addr,
            shared,
            stop,
            task,
        })
    }
}

/// A running service.
#[derive(Debug)]
pub struct ImdsHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ImdsHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The endpoint URL, for `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The role name served.
    pub fn role_name(&self) -> &str {
        &self.shared.config.role_name
    }

    /// The credentials served.
    pub fn credentials(&self) -> &Credentials {
        &self.shared.config.credentials
    }

    /// The same credentials as the KMS emulator accepts them (with their expiration, and the
    /// role's assumed-role principal).
    pub fn sim_credentials(&self) -> SimCredentials {
        let config = &self.shared.config;
        let mut sim = SimCredentials::new(config.credentials.clone(), &config.account_id);
        // As served: whole seconds.
        sim.expiration = parse_iso8601(&iso8601(config.expiration));
        sim.principal_arn = format!(
            "arn:aws:sts::{}:assumed-role/{}/i-0123456789abcdef0",
            config.account_id, config.role_name
        );
        sim
    }

    /// The credentials document, exactly as served (a KMS emulator credentials file too).
    pub fn credentials_json(&self) -> String {
        credentials_document(&self.shared)
    }

    /// What the service has seen so far.
    pub fn stats(&self) -> ImdsStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Stops the service and waits for it to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _peer)) = accepted else { continue };
                connections.spawn(connection(tcp, Arc::clone(&shared), shutdown.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    connections.shutdown().await;
}

async fn connection(mut tcp: TcpStream, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut buf = Vec::new();
    loop {
        let next = tokio::select! {
            read = read_request(&mut tcp, &mut buf, MAX_BODY) => read,
            _ = shutdown.changed() => return,
        };
        let response = match next {
            Ok(ReadOutcome::Request(request)) => {
                let close = request.close;
                let response = respond(&shared, &request);
                if response.write_to(&mut tcp).await.is_err() || close {
                    return;
                }
                continue;
            }
            Ok(ReadOutcome::Invalid(_)) => {
                text(400, "Bad Request").with_header("Connection", "close")
            }
            Ok(ReadOutcome::Closed) | Err(_) => return,
        };
        let _ = response.write_to(&mut tcp).await;
        return;
    }
}

fn text(status: u16, body: &str) -> Response {
    Response::new(status, body.as_bytes().to_vec())
        .with_header("Content-Type", "text/plain")
        .with_header("Server", "EC2ws")
}

fn count(shared: &Shared, update: impl FnOnce(&mut ImdsStats)) {
    if let Ok(mut stats) = shared.stats.lock() {
        update(&mut stats);
    }
}

fn respond(shared: &Shared, request: &Request) -> Response {
    let path = request
        .target
        .split_once('?')
        .map_or(request.target.as_str(), |(p, _)| p);
    match (request.method.as_str(), path) {
        ("PUT", TOKEN_PATH) => issue_token(shared, request),
        ("GET", EKS_CREDENTIALS_PATH) => container_credentials(shared, request),
        ("GET", p) if p.starts_with(ECS_CREDENTIALS_PREFIX) => {
            container_credentials(shared, request)
        }
        ("GET", _) => read(shared, request, path),
        (_, _) => text(405, "Method Not Allowed").with_header("Allow", "GET, PUT"),
    }
}

fn issue_token(shared: &Shared, request: &Request) -> Response {
    if let ImdsMode::V1Only { put_status } = shared.config.mode {
        return text(put_status, "");
    }
    if request.header("x-forwarded-for").is_some() {
        return text(403, "Forbidden");
    }
    let ttl = request
        .header(TTL_HEADER)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ttl| (1..=MAX_TOKEN_TTL_SECS).contains(ttl));
    let Some(ttl) = ttl else {
        return text(400, "Bad Request");
    };
    let token = STANDARD.encode(random_bytes(42).as_slice());
    let expires = shared.config.clock.now() + Duration::from_secs(ttl);
    if let Ok(mut tokens) = shared.tokens.lock() {
        let now = shared.config.clock.now();
        tokens.retain(|_, expiry| *expiry > now);
        tokens.insert(token.clone(), expires);
    }
    count(shared, |s| s.tokens_issued += 1);
    text(200, &token).with_header("X-aws-ec2-metadata-token-ttl-seconds", ttl.to_string())
}

fn token_valid(shared: &Shared, request: &Request) -> bool {
    let Some(token) = request.header(TOKEN_HEADER) else {
        return false;
    };
    let now = shared.config.clock.now();
    shared
        .tokens
        .lock()
        .ok()
        .and_then(|tokens| tokens.get(token).copied())
        .is_some_and(|expiry| expiry > now)
}

fn read(shared: &Shared, request: &Request, path: &str) -> Response {
    let needs_token = shared.config.mode == ImdsMode::V2Only;
    if needs_token && !token_valid(shared, request) {
        count(shared, |s| s.unauthorized += 1);
        return text(401, "Unauthorized");
    }
    if path == REGION_PATH {
        count(shared, |s| s.regions_served += 1);
        return match &shared.config.region {
            Some(region) => text(200, region),
            None => text(404, "Not Found"),
        };
    }
    let Some(role) = path.strip_prefix(CREDENTIALS_PATH) else {
        return text(404, "Not Found");
    };
    let role = role.trim_end_matches('/');
    if role.is_empty() {
        return text(200, &shared.config.role_name);
    }
    if role != shared.config.role_name {
        return text(404, "Not Found");
    }
    count(shared, |s| s.credentials_served += 1);
    text(200, &credentials_document(shared))
}

/// A container credentials path: the token (if one is configured), then the document.
fn container_credentials(shared: &Shared, request: &Request) -> Response {
    if let Some(expected) = &shared.config.container_token {
        let given = request.header("authorization").unwrap_or_default();
        // Constant time: the token is a credential.
        let same = given.len() == expected.expose().len()
            && given
                .bytes()
                .zip(expected.expose().bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            count(shared, |s| s.unauthorized += 1);
            return text(401, r#"{"code":"Unauthorized"}"#);
        }
    }
    count(shared, |s| s.container_credentials_served += 1);
    let config = &shared.config;
    let document = ContainerDocument {
        role_arn: format!(
            "arn:aws:iam::{}:role/{}",
            config.account_id, config.role_name
        ),
        keys: RoleKeys::of(config),
    };
    text(200, &serde_json::to_string(&document).unwrap_or_default())
}

/// The fields both documents carry.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RoleKeys<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
}

impl<'a> RoleKeys<'a> {
    fn of(config: &'a ImdsConfig) -> Self {
        Self {
            access_key_id: &config.credentials.access_key_id,
            secret_access_key: config.credentials.secret_access_key.expose(),
            token: config
                .credentials
                .session_token
                .as_ref()
                .map_or("", |t| t.expose()),
            expiration: iso8601(config.expiration),
        }
    }
}

/// What ECS and EKS Pod Identity send.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerDocument<'a> {
    role_arn: String,
    #[serde(flatten)]
    keys: RoleKeys<'a>,
}

/// What IMDS sends.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsDocument<'a> {
    code: &'static str,
    last_updated: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(flatten)]
    keys: RoleKeys<'a>,
}

fn credentials_document(shared: &Shared) -> String {
    let document = CredentialsDocument {
        code: "Success",
        last_updated: iso8601(shared.last_updated),
        kind: "AWS-HMAC",
        keys: RoleKeys::of(&shared.config),
    };
    serde_json::to_string_pretty(&document).unwrap_or_default()
}
