//! What the attested KMS clients of `kmstool-runtime-tokio` and `kmstool-runtime-smol` share,
//! so that both offer the same API from one definition: the typed results and errors, the
//! checks a request passes before it costs an attestation, the credentials cache, and the
//! methods themselves ([`kms_client_methods!`](crate::kms_client_methods)), which each runtime
//! expands over its own way of driving a [`Call`](super::call::Call).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::call::{CallConfig, CallError, CallOutput, TransportStage};
use super::endpoint;
use super::request::{Encrypt, KmsRequest, MAX_ENCRYPT_PLAINTEXT_BYTES};
use crate::address::{Address, PARENT_CID};
use crate::crypto::Backend;
use crate::keys::KeySettings;
use crate::nsm::Nsm;
use crate::protocol::{
    MAX_CIPHERTEXT_BYTES, MAX_GRANT_TOKENS, MAX_KEY_ID_CHARS, MAX_NUMBER_OF_BYTES,
    MAX_PUBLIC_KEY_BYTES,
};
use crate::secret::{Credentials, SecretBytes};
use crate::tls::{self, KmsTransportConfig, Partition, Roots};

/// Where a client's AWS credentials come from when they are not static: the application
/// implements it (for example with the credentials its parent sends it over vsock), and the
/// client asks again when the last ones are about to expire.
pub trait ProvideCredentials: Send + Sync + 'static {
    /// The current credentials and when they expire (`None`: they do not). Called from the
    /// async task making a KMS call, so it must not block: hand out what was fetched before.
    fn provide(&self) -> Result<(Credentials, Option<SystemTime>), String>;
}

/// How long before their expiry credentials are asked for again (the AWS SDKs' margin).
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// A client's credentials: static, or from a provider, cached until shortly before they
/// expire. `&mut self`: a client shares it behind its own lock.
#[derive(Clone)]
pub struct CredentialSource {
    provider: Option<Arc<dyn ProvideCredentials>>,
    cached: Option<(Credentials, Option<SystemTime>)>,
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialSource")
            .field("provider", &self.provider.as_ref().map(|_| "..."))
            .field("cached", &self.cached)
            .finish()
    }
}

impl CredentialSource {
    /// The same credentials for every call.
    pub fn fixed(credentials: Credentials) -> Self {
        Self {
            provider: None,
            cached: Some((credentials, None)),
        }
    }

    /// Credentials from `provider`, asked again within [`REFRESH_BEFORE_EXPIRY`] of their
    /// expiry.
    pub fn provider(provider: Arc<dyn ProvideCredentials>) -> Self {
        Self {
            provider: Some(provider),
            cached: None,
        }
    }

    /// The credentials to sign a request made at `now` (wall clock) with.
    pub fn get(&mut self, now: SystemTime) -> Result<Credentials, ClientError> {
        if let Some((credentials, expiry)) = &self.cached
            && expiry.is_none_or(|at| now + REFRESH_BEFORE_EXPIRY < at)
        {
            return Ok(credentials.clone());
        }
        let Some(provider) = &self.provider else {
            return Err(ClientError::Credentials("no credentials".into()));
        };
        let (credentials, expiry) = provider.provide().map_err(ClientError::Credentials)?;
        if expiry.is_some_and(|at| at <= now) {
            return Err(ClientError::Credentials(
                "the credentials provider gave credentials that have expired".into(),
            ));
        }
        self.cached = Some((credentials.clone(), expiry));
        Ok(credentials)
    }
}

/// Everything a runtime's `KmsClient` is made from: the same settings for the tokio and the
/// smol client. Set what differs from the defaults, then hand it to `KmsClient::new`, which
/// checks it ([`ClientConfig::check`]), makes the enclave key and starts its rotation.
#[derive(Clone)]
#[must_use]
pub struct ClientConfig {
    region: String,
    endpoint: Option<String>,
    proxy: Address,
    credentials: Option<CredentialSource>,
    roots: Option<Roots>,
    extra_roots_pem: Option<Vec<u8>>,
    nsm: Option<Arc<dyn Nsm>>,
    connect_timeout: Duration,
    call: CallConfig,
    attestation_reuse: Duration,
    key_rotation: Option<Duration>,
    backend: Backend,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("proxy", &self.proxy)
            .field("credentials", &self.credentials)
            .field("roots", &self.roots)
            .field("nsm", &self.nsm.as_ref().map(|_| "..."))
            .field("call", &self.call)
            .field("attestation_reuse", &self.attestation_reuse)
            .field("key_rotation", &self.key_rotation)
            .finish_non_exhaustive()
    }
}

/// The vsock port the parent's `vsock-proxy` listens on by default.
pub const DEFAULT_PROXY_PORT: u32 = 8000;

/// The longest call deadline a client takes: one day.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

impl ClientConfig {
    /// Settings for KMS in `region` (it names KMS's host and signs the requests), with the
    /// defaults: the parent's `vsock-proxy` at `vsock:3:8000`, the region's partition's trust
    /// roots (Amazon Trust Services for `aws`), 3 s to connect, 10 s and 3 attempts per call,
    /// a fresh attestation document per call, and an hourly new enclave key. Credentials and
    /// the NSM have no default.
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            endpoint: None,
            proxy: Address::Vsock {
                cid: PARENT_CID,
                port: DEFAULT_PROXY_PORT,
            },
            credentials: None,
            roots: None,
            extra_roots_pem: None,
            nsm: None,
            connect_timeout: Duration::from_secs(3),
            call: CallConfig::default(),
            attestation_reuse: Duration::ZERO,
            key_rotation: Some(Duration::from_secs(3600)),
            backend: Backend::DEFAULT,
        }
    }

    /// A KMS host name instead of the region's (a VPC endpoint, an emulator).
    pub fn endpoint(mut self, host: impl Into<String>) -> Self {
        self.endpoint = Some(host.into());
        self
    }

    /// Where to reach KMS through [default: `vsock:3:8000`].
    pub fn proxy(mut self, address: Address) -> Self {
        self.proxy = address;
        self
    }

    /// The same credentials for every call.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(CredentialSource::fixed(credentials));
        self
    }

    /// Credentials from `provider`, asked again five minutes before they expire.
    pub fn credentials_provider(mut self, provider: impl ProvideCredentials) -> Self {
        self.credentials = Some(CredentialSource::provider(Arc::new(provider)));
        self
    }

    /// Which roots KMS's certificate must chain to [default: the region's partition's].
    pub fn trust_roots(mut self, roots: Roots) -> Self {
        self.roots = Some(roots);
        self
    }

    /// Extra trust roots, PEM, added to the others (the only ones with [`Roots::ExtraOnly`]).
    pub fn extra_roots_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_roots_pem = Some(pem.into());
        self
    }

    /// The Nitro Secure Module: the device (`NitroNsm` of `kmstool-runtime-tokio`) in an
    /// enclave, a simulated one (`kmstool-sim`) in development.
    pub fn nsm(mut self, nsm: Arc<dyn Nsm>) -> Self {
        self.nsm = Some(nsm);
        self
    }

    /// Deadline to connect to the proxy, and again for the TLS handshake [default: 3 s].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline of one call, every attempt and backoff included [default: 10 s].
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call.timeout = timeout;
        self
    }

    /// Attempts per call, 1 for no retry [default: 3].
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.call.max_attempts = attempts;
        self
    }

    /// Reuse an attestation document for this long [default: 0, a fresh one per call]; at
    /// most [`MAX_DOCUMENT_REUSE`](crate::keys::MAX_DOCUMENT_REUSE).
    pub fn attestation_reuse(mut self, reuse: Duration) -> Self {
        self.attestation_reuse = reuse;
        self
    }

    /// Replace the enclave key this often (`None`: never) [default: hourly].
    pub fn key_rotation(mut self, every: Option<Duration>) -> Self {
        self.key_rotation = every;
        self
    }

    /// The crypto backend of the enclave key and of TLS [default: AWS-LC when built with it].
    pub fn crypto_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// The settings, checked: what a runtime's client is made of.
    pub fn check(self) -> Result<CheckedConfig, ClientError> {
        let bad = |text: String| ClientError::BadInput(text);
        endpoint::validate_region(&self.region)
            .map_err(|e| bad(format!("region {:?}: {e}", self.region)))?;
        let credentials = self.credentials.ok_or_else(|| {
            bad("no credentials: give .credentials(...) or .credentials_provider(...)".into())
        })?;
        let nsm = self
            .nsm
            .ok_or_else(|| bad("no NSM: give .nsm(...)".into()))?;
        for (name, value) in [
            ("call timeout", self.call.timeout),
            ("connect timeout", self.connect_timeout),
        ] {
            if value.is_zero() || value > MAX_CALL_TIMEOUT {
                return Err(bad(format!(
                    "the {name} must be more than 0 and at most one day"
                )));
            }
        }
        let host = match self.endpoint {
            Some(host) => host,
            None => endpoint::kms_host(&self.region),
        };
        let roots = self.roots.unwrap_or(Roots::Partition {
            fallback: Partition::of_region(&self.region),
        });
        let tls = tls::client_config_for(self.backend, roots, self.extra_roots_pem.as_deref())
            .map_err(|e| bad(format!("trust roots: {e}")))?;
        let mut keys = KeySettings::new(nsm, self.key_rotation, self.attestation_reuse);
        keys.backend = self.backend;
        Ok(CheckedConfig {
            region: self.region,
            host,
            credentials,
            call: self.call,
            transport: KmsTransportConfig {
                proxy: self.proxy,
                tls,
                connect_timeout: self.connect_timeout,
                max_idle_per_host: 16,
                idle_timeout: Duration::from_secs(30),
            },
            keys,
        })
    }
}

/// [`ClientConfig`], checked.
#[derive(Debug)]
pub struct CheckedConfig {
    /// The signing region.
    pub region: String,
    /// KMS's host name.
    pub host: String,
    /// The credentials.
    pub credentials: CredentialSource,
    /// Deadline and retries of each call.
    pub call: CallConfig,
    /// How to reach KMS.
    pub transport: KmsTransportConfig,
    /// The enclave key's NSM, rotation, reuse and backend.
    pub keys: KeySettings,
}

/// Why a client call failed. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// KMS answered with an error.
    Kms {
        /// Its type without namespace, e.g. `AccessDeniedException`.
        error_type: Option<String>,
        /// Its message.
        message: Option<String>,
        /// The HTTP status.
        status: u16,
    },
    /// KMS could not be reached, or its answer was not HTTP this client reads.
    Transport(String),
    /// TLS with KMS failed: an untrusted certificate, or the wrong host.
    Tls(String),
    /// The NSM could not attest.
    Attestation(String),
    /// No answer within the call's deadline.
    Timeout(String),
    /// The request is not one KMS would accept; nothing was sent.
    BadInput(String),
    /// The credentials provider failed.
    Credentials(String),
    /// KMS's answer could not be used (`CiphertextForRecipient` did not open, a field is
    /// missing), or the client is misconfigured.
    Internal(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kms {
                error_type,
                message,
                status,
            } => {
                f.write_str(error_type.as_deref().unwrap_or("KMS error"))?;
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                write!(f, " (HTTP {status})")
            }
            Self::Transport(detail) => write!(f, "transport: {detail}"),
            Self::Tls(detail) => write!(f, "TLS: {detail}"),
            Self::Attestation(detail) => write!(f, "attestation: {detail}"),
            Self::Timeout(detail) => write!(f, "timeout: {detail}"),
            Self::BadInput(detail) => write!(f, "bad input: {detail}"),
            Self::Credentials(detail) => write!(f, "credentials: {detail}"),
            Self::Internal(detail) => write!(f, "internal: {detail}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<CallError> for ClientError {
    fn from(error: CallError) -> Self {
        let text = error.to_string();
        match error {
            CallError::Kms(kms) => Self::Kms {
                error_type: kms.error_type,
                message: kms.message,
                status: kms.status,
            },
            CallError::Transport { failure, .. } if failure.stage == TransportStage::Tls => {
                Self::Tls(text)
            }
            CallError::Transport { .. } | CallError::Http { .. } => Self::Transport(text),
            CallError::Attestation(_) => Self::Attestation(text),
            CallError::Timeout { .. } => Self::Timeout(text),
            CallError::BadResponse(_) | CallError::Unwrap(_) | CallError::Internal(_) => {
                Self::Internal(text)
            }
        }
    }
}

/// Decrypt's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptOutput {
    /// The plaintext.
    pub plaintext: SecretBytes,
    /// The ARN of the KMS key that decrypted.
    pub key_id: Option<String>,
    /// The algorithm used.
    pub encryption_algorithm: Option<String>,
}

/// GenerateDataKey's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKey {
    /// The data key.
    pub plaintext: SecretBytes,
    /// The data key encrypted under the KMS key: store it, and Decrypt it later.
    pub ciphertext_blob: Vec<u8>,
    /// The ARN of the KMS key.
    pub key_id: Option<String>,
}

/// GenerateDataKeyPair's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyPair {
    /// The private key, DER PKCS #8 PrivateKeyInfo.
    pub private_key: SecretBytes,
    /// The public key, DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// The private key encrypted under the KMS key.
    pub private_key_ciphertext_blob: Vec<u8>,
    /// The ARN of the KMS key.
    pub key_id: Option<String>,
    /// The key pair's spec.
    pub key_pair_spec: Option<String>,
}

/// DeriveSharedSecret's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSecret {
    /// The raw shared secret.
    pub secret: SecretBytes,
    /// The ARN of the KMS key.
    pub key_id: Option<String>,
    /// `ECDH`.
    pub key_agreement_algorithm: Option<String>,
    /// Where the KMS key's material comes from, e.g. `AWS_KMS`.
    pub key_origin: Option<String>,
}

/// Encrypt's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptOutput {
    /// The ciphertext.
    pub ciphertext_blob: Vec<u8>,
    /// The ARN of the KMS key.
    pub key_id: Option<String>,
    /// The algorithm used.
    pub encryption_algorithm: Option<String>,
}

impl From<CallOutput> for DecryptOutput {
    fn from(output: CallOutput) -> Self {
        Self {
            plaintext: output.secret,
            key_id: output.key_id,
            encryption_algorithm: output.encryption_algorithm,
        }
    }
}

impl From<CallOutput> for DataKey {
    /// The call checked that `CiphertextBlob` is there.
    fn from(output: CallOutput) -> Self {
        Self {
            plaintext: output.secret,
            ciphertext_blob: output.ciphertext_blob.unwrap_or_default(),
            key_id: output.key_id,
        }
    }
}

impl From<CallOutput> for DataKeyPair {
    /// The call checked that `PublicKey` and `PrivateKeyCiphertextBlob` are there.
    fn from(output: CallOutput) -> Self {
        Self {
            private_key: output.secret,
            public_key: output.public_key.unwrap_or_default(),
            private_key_ciphertext_blob: output.private_key_ciphertext_blob.unwrap_or_default(),
            key_id: output.key_id,
            key_pair_spec: output.key_pair_spec,
        }
    }
}

impl From<CallOutput> for SharedSecret {
    fn from(output: CallOutput) -> Self {
        Self {
            secret: output.secret,
            key_id: output.key_id,
            key_agreement_algorithm: output.key_agreement_algorithm,
            key_origin: output.key_origin,
        }
    }
}

impl From<CallOutput> for EncryptOutput {
    /// The call checked that `CiphertextBlob` is there.
    fn from(output: CallOutput) -> Self {
        Self {
            ciphertext_blob: output.ciphertext_blob.unwrap_or_default(),
            key_id: output.key_id,
            encryption_algorithm: output.encryption_algorithm,
        }
    }
}

/// Refuses, before any attestation or network use, what KMS would refuse for its size or
/// shape (API Reference limits). What needs KMS's knowledge (key ids, specs) is left to KMS.
pub fn validate(request: &KmsRequest) -> Result<(), ClientError> {
    let bad = |text: String| Err(ClientError::BadInput(text));
    let tokens = |grant_tokens: &[String]| {
        if grant_tokens.len() > MAX_GRANT_TOKENS {
            return bad(format!("at most {MAX_GRANT_TOKENS} grant tokens"));
        }
        Ok(())
    };
    let key_id = |key_id: &str| {
        if key_id.is_empty() || key_id.len() > MAX_KEY_ID_CHARS {
            return bad("KeyId must be 1 to 2048 characters".into());
        }
        Ok(())
    };
    match request {
        KmsRequest::Decrypt(d) => {
            if d.ciphertext.is_empty() || d.ciphertext.len() > MAX_CIPHERTEXT_BYTES {
                return bad(format!(
                    "the ciphertext must be 1 to {MAX_CIPHERTEXT_BYTES} bytes"
                ));
            }
            if let Some(id) = &d.key_id {
                key_id(id)?;
            }
            tokens(&d.grant_tokens)
        }
        KmsRequest::GenerateDataKey(g) => {
            if let crate::protocol::DataKeySize::NumberOfBytes(n) = g.size
                && !(1..=MAX_NUMBER_OF_BYTES).contains(&n)
            {
                return bad(format!("NumberOfBytes must be 1 to {MAX_NUMBER_OF_BYTES}"));
            }
            key_id(&g.key_id)?;
            tokens(&g.grant_tokens)
        }
        KmsRequest::GenerateRandom(r) => {
            if !(1..=MAX_NUMBER_OF_BYTES).contains(&r.number_of_bytes) {
                return bad(format!("NumberOfBytes must be 1 to {MAX_NUMBER_OF_BYTES}"));
            }
            Ok(())
        }
        KmsRequest::GenerateDataKeyPair(g) => {
            if g.key_pair_spec.is_empty() {
                return bad("KeyPairSpec is empty".into());
            }
            key_id(&g.key_id)?;
            tokens(&g.grant_tokens)
        }
        KmsRequest::DeriveSharedSecret(d) => {
            if d.public_key.is_empty() || d.public_key.len() > MAX_PUBLIC_KEY_BYTES {
                return bad(format!(
                    "the public key must be 1 to {MAX_PUBLIC_KEY_BYTES} bytes of DER"
                ));
            }
            key_id(&d.key_id)?;
            tokens(&d.grant_tokens)
        }
        KmsRequest::Encrypt(Encrypt {
            key_id: id,
            plaintext,
            grant_tokens,
            ..
        }) => {
            if plaintext.is_empty() || plaintext.len() > MAX_ENCRYPT_PLAINTEXT_BYTES {
                return bad(format!(
                    "the plaintext must be 1 to {MAX_ENCRYPT_PLAINTEXT_BYTES} bytes"
                ));
            }
            key_id(id)?;
            tokens(grant_tokens)
        }
    }
}

/// A runtime's `KmsClient`, written once and expanded in `kmstool-runtime-tokio` and
/// `kmstool-runtime-smol`: the type, `new`, the methods, and the loop that drives one
/// [`Call`](super::call::Call) per method call. Each runtime supplies only what differs:
/// `KeyService` (attestation), `KmsConnector` and `KmsStream` (connections), its clock `$now`
/// (returning a `std::time::Instant`), and `async fn wait(io: &mut CallIo<'_>, buf: &mut [u8],
/// deadline: Option<Instant>) -> Wake`, which waits for the first of the call's pending steps
/// (`CallIo::attesting`, `sending`, `answering`) or the deadline.
#[doc(hidden)]
#[macro_export]
macro_rules! kms_client {
    ($now:path) => {
        /// An attested KMS client; see the [module docs](self). Cheap to clone: clones share
        /// the enclave key, the pooled connections and the credentials.
        #[derive(Clone, Debug)]
        pub struct KmsClient {
            inner: std::sync::Arc<Inner>,
        }

        #[derive(Debug)]
        struct Inner {
            region: String,
            host: String,
            call: $crate::kms::call::CallConfig,
            credentials: std::sync::Mutex<$crate::kms::client::CredentialSource>,
            kms: KmsConnector,
            keys: std::sync::Arc<KeyService>,
            /// KMS's clock offset, shared by every clone's calls.
            clock: $crate::kms::skew::KmsClock,
        }

        /// A step of a call under way (the attestation, or taking a connection and writing).
        type Pending<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

        /// What a call's driver waits for.
        struct CallIo<'a> {
            attesting: Option<
                Pending<
                    'a,
                    Result<$crate::kms::call::Attestation, $crate::kms::call::AttestationFailure>,
                >,
            >,
            sending: Option<
                Pending<
                    'a,
                    (
                        String,
                        Result<(Box<KmsStream>, bool), $crate::kms::call::TransportFailure>,
                    ),
                >,
            >,
            answering: Option<(String, Box<KmsStream>)>,
        }

        /// What woke a call's driver.
        enum Wake {
            Attested(Result<$crate::kms::call::Attestation, $crate::kms::call::AttestationFailure>),
            Sent(
                String,
                Result<(Box<KmsStream>, bool), $crate::kms::call::TransportFailure>,
            ),
            Answer(std::io::Result<usize>),
            Timer,
        }

        impl KmsClient {
            /// A client with `config`'s settings: checks them, makes the enclave key (on a
            /// blocking thread) and starts its rotation.
            pub async fn new(
                config: $crate::kms::client::ClientConfig,
            ) -> Result<Self, $crate::kms::client::ClientError> {
                let config = config.check()?;
                let keys = KeyService::with_settings(config.keys);
                keys.store().await.map_err(|e| {
                    $crate::kms::client::ClientError::Internal(format!("enclave key: {e}"))
                })?;
                keys.spawn_rotation();
                let inner = Inner {
                    region: config.region,
                    host: config.host,
                    call: config.call,
                    credentials: std::sync::Mutex::new(config.credentials),
                    kms: KmsConnector::new(config.transport),
                    keys,
                    clock: $crate::kms::skew::KmsClock::default(),
                };
                Ok(Self {
                    inner: std::sync::Arc::new(inner),
                })
            }

            $crate::kms_client_methods!();

            /// Runs one call to its result.
            async fn call(
                &self,
                request: $crate::kms::request::KmsRequest,
            ) -> Result<$crate::kms::call::CallOutput, $crate::kms::client::ClientError> {
                use $crate::kms::call::{CallAction, CallEvent, TransportFailure, TransportStage};
                $crate::kms::client::validate(&request)?;
                let inner = &*self.inner;
                let now = || {
                    $crate::session::Now::new($now(), std::time::SystemTime::now())
                        .with_kms_clock_offset(inner.clock.offset())
                };
                let start = now();
                let mut call = {
                    let mut source = inner
                        .credentials
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let credentials = source.get(start.wall)?;
                    let target = $crate::kms::request::RequestTarget {
                        host: &inner.host,
                        region: &inner.region,
                        credentials: &credentials,
                    };
                    let seed = start
                        .wall
                        .duration_since(std::time::SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64);
                    $crate::kms::call::Call::new(request, target, &inner.call, start, seed)
                };
                let mut io = CallIo {
                    attesting: None,
                    sending: None,
                    answering: None,
                };
                let mut buf = zeroize::Zeroizing::new(vec![0u8; 16 * 1024]);
                loop {
                    while let Some(event) = call.poll_event() {
                        match event {
                            CallEvent::ClockOffset { offset } => {
                                if let Some(offset) = inner.clock.record(offset) {
                                    tracing::warn!(
                                        %offset,
                                        "KMS's clock differs from ours; signing at KMS's time"
                                    );
                                }
                            }
                            CallEvent::Retry { .. } => tracing::warn!(?event, "KMS call"),
                            _ => tracing::debug!(?event, "KMS call"),
                        }
                    }
                    while let Some(action) = call.poll_action() {
                        match action {
                            CallAction::Attest => {
                                io.attesting = Some(Box::pin(inner.keys.attest()))
                            }
                            CallAction::Send {
                                host,
                                request,
                                may_reuse,
                            } => {
                                let kms = &inner.kms;
                                io.sending = Some(Box::pin(async move {
                                    let sent = kms.send(&host, &request, may_reuse).await;
                                    (host, sent)
                                }));
                            }
                            CallAction::Release { reusable } => {
                                io.sending = None;
                                if let Some((host, stream)) = io.answering.take()
                                    && reusable
                                {
                                    inner.kms.checkin(&host, stream);
                                }
                            }
                        }
                    }
                    if let Some(result) = call.poll_result() {
                        return result.map_err($crate::kms::client::ClientError::from);
                    }
                    let deadline = call.poll_timeout();
                    match wait(&mut io, &mut buf[..], deadline).await {
                        Wake::Attested(result) => {
                            io.attesting = None;
                            call.handle_attestation(now(), result);
                        }
                        Wake::Sent(host, Ok((stream, reused))) => {
                            io.sending = None;
                            io.answering = Some((host, stream));
                            call.handle_sent(reused);
                        }
                        Wake::Sent(_, Err(failure)) => {
                            io.sending = None;
                            call.handle_transport_failure(now(), failure);
                        }
                        Wake::Answer(Ok(0)) => {
                            io.answering = None;
                            call.handle_eof(now());
                        }
                        Wake::Answer(Ok(n)) => {
                            call.handle_bytes(now(), buf.get(..n).unwrap_or_default())
                        }
                        Wake::Answer(Err(error)) => {
                            io.answering = None;
                            let failure =
                                TransportFailure::new(TransportStage::Io, error.to_string());
                            call.handle_transport_failure(now(), failure);
                        }
                        Wake::Timer => call.handle_timeout(now()),
                    }
                }
            }
        }
    };
}

/// The methods of a runtime's `KmsClient`, written once: each builds its [`KmsRequest`] and
/// hands it to the client's own `async fn call(&self, KmsRequest) -> Result<CallOutput,
/// ClientError>`, which each runtime implements over its sockets, timers and NSM threads.
#[doc(hidden)]
#[macro_export]
macro_rules! kms_client_methods {
    () => {
        /// KMS Decrypt, with an attested `Recipient`: the plaintext opens only inside this
        /// enclave.
        pub async fn decrypt(
            &self,
            request: $crate::protocol::Decrypt,
        ) -> Result<$crate::kms::client::DecryptOutput, $crate::kms::client::ClientError> {
            let request = $crate::kms::request::KmsRequest::Decrypt(request);
            self.call(request).await.map(Into::into)
        }

        /// KMS GenerateDataKey, with an attested `Recipient`.
        pub async fn generate_data_key(
            &self,
            request: $crate::protocol::GenerateDataKey,
        ) -> Result<$crate::kms::client::DataKey, $crate::kms::client::ClientError> {
            let request = $crate::kms::request::KmsRequest::GenerateDataKey(request);
            self.call(request).await.map(Into::into)
        }

        /// KMS GenerateDataKeyPair, with an attested `Recipient`: the private key (DER
        /// PKCS #8) opens only inside this enclave.
        pub async fn generate_data_key_pair(
            &self,
            request: $crate::protocol::GenerateDataKeyPair,
        ) -> Result<$crate::kms::client::DataKeyPair, $crate::kms::client::ClientError> {
            let request = $crate::kms::request::KmsRequest::GenerateDataKeyPair(request);
            self.call(request).await.map(Into::into)
        }

        /// KMS GenerateRandom, with an attested `Recipient`: `number_of_bytes` (1 to 1024)
        /// random bytes.
        pub async fn generate_random(
            &self,
            number_of_bytes: u32,
        ) -> Result<$crate::secret::SecretBytes, $crate::kms::client::ClientError> {
            let request = $crate::kms::request::KmsRequest::GenerateRandom(
                $crate::protocol::GenerateRandom {
                    number_of_bytes,
                    custom_key_store_id: None,
                },
            );
            self.call(request).await.map(|output| output.secret)
        }

        /// KMS DeriveSharedSecret, with an attested `Recipient`: ECDH between a
        /// `KEY_AGREEMENT` KMS key and `request.public_key`.
        pub async fn derive_shared_secret(
            &self,
            request: $crate::protocol::DeriveSharedSecret,
        ) -> Result<$crate::kms::client::SharedSecret, $crate::kms::client::ClientError> {
            let request = $crate::kms::request::KmsRequest::DeriveSharedSecret(request);
            self.call(request).await.map(Into::into)
        }

        /// KMS Encrypt, for sealing data from inside the enclave. It carries no `Recipient`:
        /// KMS takes none on Encrypt, whose answer holds no secret.
        pub async fn encrypt(
            &self,
            request: $crate::kms::request::Encrypt,
        ) -> Result<$crate::kms::client::EncryptOutput, $crate::kms::client::ClientError> {
            let request = $crate::kms::request::KmsRequest::Encrypt(request);
            self.call(request).await.map(Into::into)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;

    struct Counting {
        calls: std::sync::atomic::AtomicU32,
        lifetime: Duration,
        start: SystemTime,
    }

    impl ProvideCredentials for Counting {
        fn provide(&self) -> Result<(Credentials, Option<SystemTime>), String> {
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let credentials =
                Credentials::new(format!("AKID{n}"), SecretString::new("secret".into()), None);
            Ok((credentials, Some(self.start + self.lifetime * (n + 1))))
        }
    }

    #[test]
    fn provided_credentials_are_cached_until_shortly_before_they_expire() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let provider = Arc::new(Counting {
            calls: 0.into(),
            lifetime: Duration::from_secs(3600),
            start,
        });
        let mut source = CredentialSource::provider(provider.clone());
        let mut id = |at: SystemTime| source.get(at).expect("credentials").access_key_id;
        assert_eq!(id(start), "AKID0");
        assert_eq!(id(start + Duration::from_secs(3600 - 301)), "AKID0");
        // Within five minutes of expiry: asked again.
        assert_eq!(id(start + Duration::from_secs(3600 - 299)), "AKID1");
        assert_eq!(id(start + Duration::from_secs(3600)), "AKID1");
        assert_eq!(provider.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Credentials that have already expired are refused, not used.
        let late = start + Duration::from_secs(100_000);
        assert!(matches!(source.get(late), Err(ClientError::Credentials(_))));
    }

    #[test]
    fn requests_kms_would_refuse_are_refused_before_anything_is_sent() {
        use crate::protocol::{Decrypt, GenerateRandom};
        let random = |n| {
            KmsRequest::GenerateRandom(GenerateRandom {
                number_of_bytes: n,
                custom_key_store_id: None,
            })
        };
        assert!(validate(&random(1)).is_ok());
        assert!(validate(&random(1024)).is_ok());
        for n in [0, 1025] {
            assert!(matches!(
                validate(&random(n)),
                Err(ClientError::BadInput(_))
            ));
        }
        let encrypt = |bytes: usize| {
            KmsRequest::Encrypt(Encrypt {
                key_id: "alias/k".into(),
                plaintext: SecretBytes::new(vec![1; bytes]),
                encryption_context: Default::default(),
                grant_tokens: Vec::new(),
                encryption_algorithm: None,
                dry_run: false,
            })
        };
        assert!(validate(&encrypt(4096)).is_ok());
        assert!(validate(&encrypt(4097)).is_err());
        assert!(validate(&encrypt(0)).is_err());
        let mut decrypt = Decrypt {
            ciphertext: vec![1; 10],
            encryption_context: Default::default(),
            key_id: None,
            encryption_algorithm: None,
            grant_tokens: vec!["t".into(); 11],
            dry_run: false,
        };
        let error = validate(&KmsRequest::Decrypt(decrypt.clone())).expect_err("11 tokens");
        assert_eq!(error.to_string(), "bad input: at most 10 grant tokens");
        decrypt.grant_tokens.clear();
        assert!(validate(&KmsRequest::Decrypt(decrypt)).is_ok());
    }
}
