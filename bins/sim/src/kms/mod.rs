//! A KMS emulator: AWS KMS's JSON 1.1 protocol over HTTPS on a TCP address, close enough to
//! the real service that a client passing against it can be expected to pass against AWS.
//!
//! - TLS with a CA made at start ([`KmsHandle::ca_pem`]) and a leaf for whatever KMS host name
//!   the client sends by SNI (`kms.<region>.amazonaws.com` and the other partitions' hosts).
//! - `CreateKey`, `CreateAlias`, `DescribeKey`, `ListKeys`, `Encrypt`, `Decrypt`,
//!   `GenerateDataKey`, `GenerateDataKeyPair`, `GenerateRandom`, `GetPublicKey`,
//!   `DeriveSharedSecret` with KMS's member names.
//! - Keys: `SYMMETRIC_DEFAULT` (`ENCRYPT_DECRYPT`) and ECDH `KEY_AGREEMENT` keys on
//!   `ECC_NIST_P256`, `ECC_NIST_P384`, `ECC_NIST_P521`; data key pairs of every
//!   `KeyPairSpec` ([`asymmetric`]).
//! - SigV4 verified against the configured credentials, session tokens included, with AWS's
//!   5-minute clock-skew window.
//! - `Recipient`: the attestation document is verified ([`AttestationVerifier`]), key material
//!   comes back only in `CiphertextForRecipient`, laid out byte for byte like KMS's.
//! - A key-policy stand-in requiring a PCR0 value (`kms:RecipientAttestation:ImageSha384`).
//! - Errors in KMS's shape: status, `{"__type":…,"message":…}` and `x-amzn-ErrorType`.
//! - Fault injection ([`Faults`]) and counters ([`Stats`]) for tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use kmstool_sim::kms::{KmsConfig, KmsEmulator};
//! let config = KmsConfig::new("127.0.0.1:0".parse().unwrap(), "us-east-1");
//! let kms = KmsEmulator::start(config).await?;
//! let key = kms.create_key("demo");
//! println!("{} at {} trusting {}", key.arn, kms.local_addr(), kms.ca_pem());
//! kms.shutdown().await;
//! # Ok(()) }
//! ```

pub mod asymmetric;
pub mod auth;
pub mod certs;
pub mod clock;
pub mod credentials;
pub mod error;
pub mod faults;
pub mod handlers;
pub mod http;
pub mod keystore;
pub mod recipient;
mod server;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kmstool_core::address::Address;
use kmstool_runtime_tokio::net::Listener;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use self::asymmetric::{KeyPairSpec, KeySpec, KeyUsage};
pub use self::certs::CertAuthority;
pub use self::clock::Clock;
pub use self::credentials::{CredentialsFileError, SimCredentials, parse_credentials_file};
pub use self::error::KmsError;
pub use self::faults::Faults;
pub use self::handlers::Operation;
pub use self::keystore::{EncryptionContext, KeyMetadata};
pub use self::recipient::{AttestationVerifier, AttestedRecipient, NsmRootVerifier};
pub use self::server::{JOURNAL_LEN, RequestRecord, Stats};

use self::certs::LeafResolver;
use self::faults::FaultSchedule;
use self::keystore::Keystore;
use self::server::Shared;

/// The account the emulator's keys belong to unless configured otherwise (the example
/// account of AWS's documentation).
pub const DEFAULT_ACCOUNT_ID: &str = "111122223333";
/// AWS's clock-skew window for SigV4.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Largest request body accepted (a Decrypt with a 6144-byte blob and a 256 KiB attestation
/// document, base64, fits).
pub const DEFAULT_MAX_BODY_BYTES: usize = 512 * 1024;

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// TCP address to listen on (tests use `127.0.0.1:0`), unless `listen_at` is set.
    pub listen: SocketAddr,
    /// Any address to listen on instead of `listen`: `tcp:HOST:PORT`, `unix:PATH` (a stale
    /// socket file is replaced) or `vsock:CID:PORT`.
    pub listen_at: Option<Address>,
    /// The region served: credential scopes must name it, key ARNs carry it.
    pub region: String,
    /// The account owning the keys.
    pub account_id: String,
    /// Identities accepted (more can be added while running).
    pub credentials: Vec<SimCredentials>,
    /// Verifies `Recipient` attestation documents; `None` rejects every `Recipient`. KMS's
    /// own check is [`KmsConfig::with_nsm_root`].
    pub attestation: Option<Arc<dyn AttestationVerifier>>,
    /// PCR0 that Decrypt, GenerateDataKey, GenerateDataKeyPair, DeriveSharedSecret and
    /// GenerateRandom must attest to.
    pub require_pcr0: Option<Vec<u8>>,
    /// Faults to inject from the start.
    pub faults: Faults,
    /// Largest accepted difference between a request's `X-Amz-Date` and the clock.
    pub max_clock_skew: Duration,
    /// The emulator's wall clock.
    pub clock: Clock,
    /// Host names served besides KMS's own, `localhost` and IP addresses.
    pub extra_host_names: Vec<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// An idle keep-alive connection is closed after this long.
    pub idle_timeout: Duration,
}

impl KmsConfig {
    /// Defaults: account [`DEFAULT_ACCOUNT_ID`], no credentials, no attestation verifier, no
    /// PCR0 requirement, no faults, a 5-minute skew window, the system clock.
    pub fn new(listen: SocketAddr, region: &str) -> Self {
        Self {
            listen,
            listen_at: None,
            region: region.to_owned(),
            account_id: DEFAULT_ACCOUNT_ID.to_owned(),
            credentials: Vec::new(),
            attestation: None,
            require_pcr0: None,
            faults: Faults::default(),
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            clock: Clock::system(),
            extra_host_names: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl KmsConfig {
    /// Accepts `Recipient` documents that chain to the Nitro root `root_der` (DER), as KMS
    /// accepts those chaining to the AWS Nitro root.
    #[must_use]
    pub fn with_nsm_root(mut self, root_der: Vec<u8>) -> Self {
        self.attestation = Some(Arc::new(NsmRootVerifier::new(root_der)));
        self
    }
}

/// Starts emulators.
#[derive(Debug)]
pub struct KmsEmulator;

impl KmsEmulator {
    /// Binds `config.listen`, makes the CA, and serves until [`KmsHandle::shutdown`]. Must be
    /// called inside a tokio runtime.
    pub async fn start(config: KmsConfig) -> io::Result<KmsHandle> {
        let ca = Arc::new(CertAuthority::generate().map_err(io::Error::other)?);
        let resolver = LeafResolver::new(Arc::clone(&ca), config.extra_host_names.clone());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = match &config.listen_at {
            Some(address) => Listener::bind(address).await?,
            None => Listener::Tcp(TcpListener::bind(config.listen).await?),
        };
        let local_address = listener.local_address()?;
        let local_addr = match &listener {
            Listener::Tcp(tcp) => tcp.local_addr()?,
            Listener::Unix(_) | Listener::Vsock(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let shared = Arc::new(Shared {
            keystore: Mutex::new(Keystore::new(&config.region, &config.account_id)),
            credentials: RwLock::new(config.credentials),
            verifier: config.attestation,
            require_pcr0: config.require_pcr0,
            schedule: Mutex::new(FaultSchedule::new(config.faults)),
            stats: Mutex::new(Stats::default()),
            clock: config.clock,
            region: config.region,
            max_skew: config.max_clock_skew,
            max_body: config.max_body_bytes,
            idle_timeout: config.idle_timeout,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(server::serve(
            listener,
            TlsAcceptor::from(Arc::new(tls)),
            Arc::clone(&shared),
            stopped,
        ));
        Ok(KmsHandle {
            local_addr,
            local_address,
            ca,
            shared,
            stop,
            task,
        })
    }
}

/// A running emulator.
#[derive(Debug)]
pub struct KmsHandle {
    local_addr: SocketAddr,
    local_address: Address,
    ca: Arc<CertAuthority>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl KmsHandle {
    /// The TCP address it listens on (`0.0.0.0:0` when it listens on a Unix or vsock socket:
    /// see [`KmsHandle::local_address`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address it listens on, of any kind (with the real port when port 0 was asked for).
    pub fn local_address(&self) -> &Address {
        &self.local_address
    }

    /// The CA certificate clients must trust, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &[u8] {
        self.ca.cert_der()
    }

    /// The region served.
    pub fn region(&self) -> &str {
        &self.shared.region
    }

    /// The emulator's clock (shift it to test skew and expiry).
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Creates a key, as `CreateKey` does.
    pub fn create_key(&self, description: &str) -> KeyMetadata {
        let now = self.shared.clock.now();
        let mut store = lock(&self.shared.keystore);
        store.create_key(description, now)
    }

    /// Creates an ECDH key pair (`KeyUsage` `KEY_AGREEMENT`) on the curve of `spec`
    /// (`ECC_NIST_P256`, `ECC_NIST_P384` or `ECC_NIST_P521`), as `CreateKey` does.
    pub fn create_agreement_key(
        &self,
        description: &str,
        spec: KeySpec,
    ) -> Result<KeyMetadata, KmsError> {
        if spec == KeySpec::SymmetricDefault {
            return Err(KmsError::validation(
                "KeyUsage KEY_AGREEMENT is not compatible with KeySpec SYMMETRIC_DEFAULT",
            ));
        }
        let now = self.shared.clock.now();
        lock(&self.shared.keystore).create_key_of(description, spec, KeyUsage::KeyAgreement, now)
    }

    /// The public key (DER SPKI) of an asymmetric key, as `GetPublicKey` returns it.
    pub fn public_key(&self, key_id: &str) -> Result<Vec<u8>, KmsError> {
        lock(&self.shared.keystore)
            .public_key(key_id)
            .map(|(_, spki)| spki.to_vec())
    }

    /// Points `alias/<name>` at a key, as `CreateAlias` does.
    pub fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), KmsError> {
        lock(&self.shared.keystore).create_alias(alias, key_id)
    }

    /// Encrypts under a key, as `Encrypt` does: the `CiphertextBlob` a client later decrypts.
    pub fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        lock(&self.shared.keystore)
            .encrypt(key_id, plaintext, context)
            .map(|(_, blob)| blob)
    }

    /// Accepts one more identity (e.g. the credentials an IMDS emulator serves).
    pub fn add_credentials(&self, credentials: SimCredentials) {
        if let Ok(mut all) = self.shared.credentials.write() {
            all.push(credentials);
        }
    }

    /// Replaces the faults; the failure schedule restarts with the next request.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.schedule) = FaultSchedule::new(faults);
    }

    /// What the emulator has seen so far.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Stops accepting, closes open connections and waits for the server to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Locks a mutex, going on with the data if a panicking thread poisoned it (every update here
/// leaves the data consistent).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
