//! A simulated Nitro Secure Module.
//!
//! [`SimNsm`] implements [`kmstool_core::nsm::Nsm`] and answers like the real module:
//! `Attestation` returns an untagged COSE_Sign1 document shaped byte for byte like a real one
//! (protected header `{1: -35}`, empty unprotected map, the payload's nine fields in the NSM's
//! order and CBOR types, a 96-byte ES384 signature) and signed by a leaf certificate under a
//! simulated Nitro PKI (see `chain`); `GetRandom`, `DescribePCR`, `ExtendPCR`, `LockPCR`,
//! `LockPCRs` and `DescribeNSM` behave as documented for the NSM.
//!
//! The root CA is created at start or kept in a state directory
//! ([`SimNsm::load_or_create`]); its certificate ([`SimNsm::root_pem`]) is what a verifier
//! (the simulated KMS) trusts in place of the AWS root. Time comes from a [`Clock`] so tests
//! can fix it.

mod chain;
mod describe;

pub use self::describe::{
    NsmDescription, PcrState, describe_nsm, describe_pcr, digest_len, digest_name,
};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::attestation::{
    AttestationPayload, PROTECTED_HEADER_ES384, cose_sign1_sig_structure, encode_cose_sign1,
};
use aws_lc_rs::digest::{SHA384, digest};
use kmstool_core::nsm::{Digest, ErrorCode, Nsm, Request, Response};

use self::chain::{Chain, Identity};

/// Milliseconds since the Unix epoch, as attestation timestamps count.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The real clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    })
}

/// Number of registers the module exposes.
pub const PCR_COUNT: u16 = 32;
/// Registers 0 to 15 are measured at boot and locked; they are the ones documents carry.
pub const LOCKED_AT_BOOT: u16 = 16;
/// Register length (SHA-384).
pub const PCR_LEN: usize = 48;
/// Random bytes returned by one `GetRandom`.
pub const RANDOM_BYTES_PER_REQUEST: usize = 256;
/// Largest `user_data` and `nonce` an attestation request may carry (as on Nitro).
pub const MAX_USER_DATA: usize = 512;
/// Largest `public_key` an attestation request may carry (as on Nitro).
pub const MAX_PUBLIC_KEY: usize = 1024;

/// File names of the saved root in the state directory.
const ROOT_CERT_FILE: &str = "nsm-root.pem";
const ROOT_KEY_FILE: &str = "nsm-root.key.pem";

/// How the simulated enclave was launched.
#[derive(Clone, Debug, Default)]
pub struct SimConfig {
    /// Register values at boot (index < 16, 48 bytes each); unset registers are zero.
    pub pcrs: BTreeMap<u16, Vec<u8>>,
    /// Debug mode: every register reads zero, whatever `pcrs` says.
    pub debug: bool,
    /// The module id; a fresh `i-<17 hex>-enc<16 hex>` when `None`.
    pub module_id: Option<String>,
}

impl SimConfig {
    /// Sets boot register `index` from 96 hex digits.
    pub fn set_pcr_hex(&mut self, index: u16, hex_value: &str) -> Result<(), SimError> {
        let value = hex::decode(hex_value.trim()).map_err(|_| SimError::Pcr {
            index,
            problem: "not hex",
        })?;
        check_boot_pcr(index, &value)?;
        self.pcrs.insert(index, value);
        Ok(())
    }

    /// Sets a boot register from `INDEX=HEX` (the form of a `--pcr` argument).
    pub fn set_pcr_arg(&mut self, arg: &str) -> Result<(), SimError> {
        let (index, value) = arg.split_once('=').ok_or(SimError::Pcr {
            index: 0,
            problem: "expected INDEX=HEX",
        })?;
        let index = index.trim().parse::<u16>().map_err(|_| SimError::Pcr {
            index: 0,
            problem: "index is not a number",
        })?;
        self.set_pcr_hex(index, value)
    }
}

fn check_boot_pcr(index: u16, value: &[u8]) -> Result<(), SimError> {
    if index >= LOCKED_AT_BOOT {
        return Err(SimError::Pcr {
            index,
            problem: "only registers 0 to 15 are set at boot",
        });
    }
    if value.len() != PCR_LEN {
        return Err(SimError::Pcr {
            index,
            problem: "a register is 48 bytes (96 hex digits)",
        });
    }
    Ok(())
}

/// One platform configuration register.
#[derive(Clone)]
struct Pcr {
    value: Vec<u8>,
    locked: bool,
}

/// The mutable part of the module: registers and certificates.
struct State {
    pcrs: Vec<Pcr>,
    chain: Chain,
}

/// A simulated NSM. Cheap to share (`Arc<SimNsm>`); requests are serialized internally.
pub struct SimNsm {
    module_id: String,
    root_der: Vec<u8>,
    clock: Clock,
    state: Mutex<State>,
}

impl fmt::Debug for SimNsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimNsm")
            .field("module_id", &self.module_id)
            .finish_non_exhaustive()
    }
}

impl SimNsm {
    /// A module with a fresh root CA kept only in memory.
    pub fn new(config: SimConfig, clock: Clock) -> Result<Self, SimError> {
        Self::with_root(chain::new_root()?, config, clock)
    }

    /// A module whose root CA is kept in `dir`: loaded when `dir` holds one, otherwise created
    /// and saved there (the private key readable by the owner only). A loaded root is checked
    /// by attesting once and verifying the document against it.
    pub fn load_or_create(dir: &Path, config: SimConfig, clock: Clock) -> Result<Self, SimError> {
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_path = dir.join(ROOT_KEY_FILE);
        let root = match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert = read(&cert_path)?;
                let key = read(&key_path)?;
                chain::root_from_pem(&cert, &key)?
            }
            (false, false) => {
                let root = chain::new_root()?;
                std::fs::create_dir_all(dir).map_err(|e| SimError::io(dir, e))?;
                let (cert, key) = chain::root_to_pem(&root);
                write_private(&key_path, &key)?;
                std::fs::write(&cert_path, cert).map_err(|e| SimError::io(&cert_path, e))?;
                root
            }
            _ => {
                return Err(SimError::State(format!(
                    "{} holds only one of {ROOT_CERT_FILE} and {ROOT_KEY_FILE}",
                    dir.display()
                )));
            }
        };
        let nsm = Self::with_root(root, config, clock)?;
        nsm.self_check()?;
        Ok(nsm)
    }

    fn with_root(root: chain::Ca, config: SimConfig, clock: Clock) -> Result<Self, SimError> {
        let identity = match &config.module_id {
            Some(module_id) => parse_module_id(module_id)?,
            None => new_identity(clock())?,
        };
        let pcrs = boot_pcrs(&config)?;
        let root_der = root.der().to_vec();
        Ok(Self {
            module_id: identity.module_id(),
            root_der,
            clock,
            state: Mutex::new(State {
                pcrs,
                chain: Chain::new(root, identity),
            }),
        })
    }

    /// The module id documents carry.
    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    /// The root CA certificate, DER (what a verifier trusts).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The root CA certificate, PEM (for `--nsm-root-out FILE`).
    pub fn root_pem(&self) -> String {
        chain::pem("CERTIFICATE", &self.root_der)
    }

    /// Creates a signed attestation document at the clock's current time.
    pub fn attestation_document(
        &self,
        public_key: Option<Vec<u8>>,
        user_data: Option<Vec<u8>>,
        nonce: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, SimError> {
        let now_ms = (self.clock)();
        let mut state = self
            .state
            .lock()
            .map_err(|_| SimError::Internal("poisoned"))?;
        state.chain.refresh(now_ms / 1000)?;
        let pcrs = state
            .pcrs
            .iter()
            .take(usize::from(LOCKED_AT_BOOT))
            .zip(0u16..)
            .map(|(pcr, index)| (index, pcr.value.clone()))
            .collect();
        let payload = AttestationPayload {
            module_id: self.module_id.clone(),
            digest: Digest::SHA384,
            timestamp: now_ms,
            pcrs,
            certificate: state.chain.leaf_der()?.to_vec(),
            cabundle: state.chain.cabundle(),
            public_key,
            user_data,
            nonce,
        }
        .to_cbor();
        let signature = state
            .chain
            .sign(&cose_sign1_sig_structure(&PROTECTED_HEADER_ES384, &payload))?;
        Ok(encode_cose_sign1(
            &PROTECTED_HEADER_ES384,
            &payload,
            &signature,
        ))
    }

    /// Attests once and verifies the document against the root.
    fn self_check(&self) -> Result<(), SimError> {
        let document = self.attestation_document(None, None, None)?;
        crate::verify::verify(
            &document,
            &self.root_der,
            crate::verify::VerifyTime::DocumentTimestamp,
        )
        .map(drop)
        .map_err(SimError::SelfCheck)
    }

    fn attest(
        &self,
        user_data: Option<Vec<u8>>,
        nonce: Option<Vec<u8>>,
        public_key: Option<Vec<u8>>,
    ) -> Response {
        let too_large = |v: &Option<Vec<u8>>, max| v.as_ref().is_some_and(|v| v.len() > max);
        if too_large(&user_data, MAX_USER_DATA)
            || too_large(&nonce, MAX_USER_DATA)
            || too_large(&public_key, MAX_PUBLIC_KEY)
        {
            return Response::Error(ErrorCode::InputTooLarge);
        }
        match self.attestation_document(public_key, user_data, nonce) {
            Ok(document) => Response::Attestation { document },
            Err(_) => Response::Error(ErrorCode::InternalError),
        }
    }

    /// Runs `f` on the registers, answering `InternalError` if the lock is poisoned.
    fn with_pcrs(&self, f: impl FnOnce(&mut [Pcr]) -> Response) -> Response {
        match self.state.lock() {
            Ok(mut state) => f(&mut state.pcrs),
            Err(_) => Response::Error(ErrorCode::InternalError),
        }
    }

    fn describe_nsm(&self) -> Response {
        self.with_pcrs(|pcrs| Response::DescribeNSM {
            version_major: 1,
            version_minor: 0,
            version_patch: 0,
            module_id: self.module_id.clone(),
            max_pcrs: PCR_COUNT,
            locked_pcrs: (0u16..)
                .zip(pcrs.iter())
                .filter(|(_, p)| p.locked)
                .map(|(i, _)| i)
                .collect(),
            digest: Digest::SHA384,
        })
    }
}

impl Nsm for SimNsm {
    fn process(&self, request: Request) -> Response {
        match request {
            Request::Attestation {
                user_data,
                nonce,
                public_key,
            } => self.attest(
                user_data.map(|b| b.into_vec()),
                nonce.map(|b| b.into_vec()),
                public_key.map(|b| b.into_vec()),
            ),
            Request::GetRandom => match chain::random_bytes(RANDOM_BYTES_PER_REQUEST) {
                Ok(random) => Response::GetRandom { random },
                Err(_) => Response::Error(ErrorCode::InternalError),
            },
            Request::DescribePCR { index } => self.with_pcrs(|pcrs| match pcr(pcrs, index) {
                Some(pcr) => Response::DescribePCR {
                    lock: pcr.locked,
                    data: pcr.value.clone(),
                },
                None => Response::Error(ErrorCode::InvalidIndex),
            }),
            Request::ExtendPCR { index, data } => self.with_pcrs(|pcrs| match pcr(pcrs, index) {
                None => Response::Error(ErrorCode::InvalidIndex),
                Some(pcr) if pcr.locked => Response::Error(ErrorCode::ReadOnlyIndex),
                Some(pcr) => {
                    let extended = digest(&SHA384, &[pcr.value.as_slice(), &data].concat());
                    pcr.value = extended.as_ref().to_vec();
                    Response::ExtendPCR {
                        data: pcr.value.clone(),
                    }
                }
            }),
            Request::LockPCR { index } => self.with_pcrs(|pcrs| match pcr(pcrs, index) {
                Some(pcr) => {
                    pcr.locked = true;
                    Response::LockPCR
                }
                None => Response::Error(ErrorCode::InvalidIndex),
            }),
            Request::LockPCRs { range } if range > PCR_COUNT => {
                Response::Error(ErrorCode::InvalidIndex)
            }
            Request::LockPCRs { range } => self.with_pcrs(|pcrs| {
                pcrs.iter_mut()
                    .take(usize::from(range))
                    .for_each(|pcr| pcr.locked = true);
                Response::LockPCRs
            }),
            Request::DescribeNSM => self.describe_nsm(),
            _ => Response::Error(ErrorCode::InvalidOperation),
        }
    }
}

fn pcr(pcrs: &mut [Pcr], index: u16) -> Option<&mut Pcr> {
    pcrs.get_mut(usize::from(index))
}

/// The registers at boot: configured values (zero in debug mode), 0–15 locked.
fn boot_pcrs(config: &SimConfig) -> Result<Vec<Pcr>, SimError> {
    let mut pcrs: Vec<Pcr> = (0..PCR_COUNT)
        .map(|index| Pcr {
            value: vec![0; PCR_LEN],
            locked: index < LOCKED_AT_BOOT,
        })
        .collect();
    for (&index, value) in &config.pcrs {
        check_boot_pcr(index, value)?;
        if let Some(pcr) = pcrs.get_mut(usize::from(index))
            && !config.debug
        {
            pcr.value = value.clone();
        }
    }
    Ok(pcrs)
}

/// A fresh identity: a random instance id and an enclave id that, as on Nitro, is the launch
/// time in milliseconds (12 hex digits) followed by 4 random hex digits.
fn new_identity(now_ms: u64) -> Result<Identity, SimError> {
    let instance = chain::random_bytes(9)?;
    let instance_id = format!("i-{}", hex::encode(instance).get(..17).unwrap_or_default());
    let mut random = [0u8; 8];
    random
        .iter_mut()
        .skip(6)
        .zip(chain::random_bytes(2)?)
        .for_each(|(slot, byte)| *slot = byte);
    let enclave = ((now_ms & 0xffff_ffff_ffff) << 16) | u64::from_be_bytes(random);
    Ok(Identity {
        instance_id,
        enclave_id: enclave.to_be_bytes(),
    })
}

/// Reads `i-<17 hex>-enc<16 hex>`.
fn parse_module_id(module_id: &str) -> Result<Identity, SimError> {
    let bad = || SimError::ModuleId(module_id.to_owned());
    let (instance_id, enclave) = module_id.split_once("-enc").ok_or_else(bad)?;
    let instance_hex = instance_id.strip_prefix("i-").ok_or_else(bad)?;
    let is_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if instance_hex.len() != 17 || !is_hex(instance_hex) || enclave.len() != 16 || !is_hex(enclave)
    {
        return Err(bad());
    }
    let enclave_id = hex::decode(enclave)
        .ok()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .ok_or_else(bad)?;
    Ok(Identity {
        instance_id: instance_id.to_owned(),
        enclave_id,
    })
}

fn read(path: &Path) -> Result<String, SimError> {
    std::fs::read_to_string(path).map_err(|e| SimError::io(path, e))
}

/// Writes a private key readable by the owner only.
fn write_private(path: &Path, contents: &str) -> Result<(), SimError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SimError::io(path, e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| SimError::io(path, e))
}

/// Why the simulated module could not be set up or could not answer.
#[derive(Debug)]
pub enum SimError {
    /// A register setting is invalid.
    Pcr {
        /// The register.
        index: u16,
        /// What is wrong.
        problem: &'static str,
    },
    /// The module id is not `i-<17 hex>-enc<16 hex>`.
    ModuleId(String),
    /// Reading or writing the state directory failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The state directory's contents are unusable.
    State(String),
    /// Certificate generation failed.
    Certificate(rcgen::Error),
    /// A cryptographic operation failed.
    Crypto(&'static str),
    /// The clock gave a time no certificate can carry (seconds).
    Clock(u64),
    /// A document from a loaded root did not verify against it.
    SelfCheck(crate::verify::VerifyError),
    /// An internal invariant broke.
    Internal(&'static str),
}

impl SimError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

impl From<rcgen::Error> for SimError {
    fn from(error: rcgen::Error) -> Self {
        Self::Certificate(error)
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pcr { index, problem } => write!(f, "PCR{index}: {problem}"),
            Self::ModuleId(id) => write!(f, "module id {id:?} is not i-<17 hex>-enc<16 hex>"),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::State(problem) => write!(f, "NSM state directory: {problem}"),
            Self::Certificate(error) => write!(f, "certificate generation failed: {error}"),
            Self::Crypto(what) => f.write_str(what),
            Self::Clock(secs) => write!(f, "time {secs} s cannot go into a certificate"),
            Self::SelfCheck(error) => write!(f, "simulated attestation does not verify: {error}"),
            Self::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

impl std::error::Error for SimError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Certificate(error) => Some(error),
            Self::SelfCheck(error) => Some(error),
            _ => None,
        }
    }
}
