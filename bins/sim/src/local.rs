//! A whole kmstool setup on loopback, in one process: a simulated NSM, the KMS emulator, and
//! the real enclave server (same code as `kmstool-enclave`) reaching the emulator through a
//! TCP "proxy" address. Used by the demo, the benchmark and the integration tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use kmstool_core::address::Address;
use kmstool_core::nsm::{Nsm, Request, Response};
use kmstool_core::secret::Credentials;
use kmstool_runtime_tokio::Shared;

use crate::kms::{Faults, KmsConfig, KmsEmulator, KmsHandle, SimCredentials};
use crate::nsm::{SimConfig, SimNsm, system_clock};

/// The region everything runs in (unless [`LocalOptions`] says otherwise).
pub const REGION: &str = "us-east-1";

/// What to start.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Boot PCRs of the simulated enclave (index → 48 bytes).
    pub pcr0: Option<Vec<u8>>,
    /// Debug mode (all PCRs zero).
    pub debug_mode: bool,
    /// Make the emulator require this PCR0 (as a key policy would).
    pub require_pcr0: Option<Vec<u8>>,
    /// Faults the emulator injects.
    pub faults: Faults,
    /// Extra `kmstool-enclave` arguments (e.g. `--kms-timeout-ms 2000`).
    pub enclave_args: Vec<String>,
    /// The enclave's `--region`; `None` leaves it out (the client's `AwsRegion`, else
    /// us-east-1, applies).
    pub region: Option<String>,
    /// The region the emulator serves (credential scopes must name it).
    pub kms_region: String,
    /// Pass the emulator's CA as `--ca-bundle`; without it the enclave trusts only the
    /// Mozilla roots (and whatever `enclave_args` adds).
    pub trust_emulator_ca: bool,
    /// `--proxy` address instead of the emulator's (e.g. a closed port).
    pub proxy: Option<String>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            pcr0: Some(vec![0x5a; 48]),
            debug_mode: false,
            require_pcr0: None,
            faults: Faults::default(),
            enclave_args: Vec::new(),
            region: Some(REGION.to_owned()),
            kms_region: REGION.to_owned(),
            trust_emulator_ca: true,
            proxy: None,
        }
    }
}

/// Remembers the last attestation document the NSM produced, so a demo can show it.
#[derive(Debug)]
pub struct RecordingNsm {
    inner: Arc<SimNsm>,
    last_document: Mutex<Option<Vec<u8>>>,
}

impl RecordingNsm {
    /// Wraps `inner`.
    pub fn new(inner: Arc<SimNsm>) -> Self {
        Self {
            inner,
            last_document: Mutex::new(None),
        }
    }

    /// The last attestation document produced.
    pub fn last_document(&self) -> Option<Vec<u8>> {
        self.last_document
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The simulated module.
    pub fn sim(&self) -> &SimNsm {
        &self.inner
    }
}

impl Nsm for RecordingNsm {
    fn process(&self, request: Request) -> Response {
        let response = self.inner.process(request);
        if let Response::Attestation { document } = &response {
            *self
                .last_document
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(document.clone());
        }
        response
    }
}

/// A running setup. Dropping it stops the enclave server; call [`Local::stop`] to wait.
#[derive(Debug)]
pub struct Local {
    /// The simulated NSM.
    pub nsm: Arc<RecordingNsm>,
    /// The KMS emulator.
    pub kms: KmsHandle,
    /// Credentials the emulator accepts.
    pub credentials: Credentials,
    /// Where the enclave listens.
    pub enclave: Address,
    /// The enclave server's counters.
    pub enclave_state: Arc<Shared>,
    /// The emulator's CA certificate, PEM, written to disk for `--ca-bundle`.
    pub ca_file: PathBuf,
    dir: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Local {
    /// Starts the emulator and the enclave on 127.0.0.1 (inside a tokio runtime).
    pub async fn start(options: LocalOptions) -> anyhow::Result<Self> {
        let mut config = SimConfig {
            debug: options.debug_mode,
            ..SimConfig::default()
        };
        if let Some(pcr0) = &options.pcr0 {
            config.set_pcr_hex(0, &hex::encode(pcr0)).context("PCR0")?;
        }
        let sim = Arc::new(SimNsm::new(config, system_clock()).context("simulated NSM")?);
        let nsm = Arc::new(RecordingNsm::new(Arc::clone(&sim)));

        let credentials = crate::imds::random_credentials();
        let mut kms_config =
            KmsConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), &options.kms_region)
                .with_nsm_root(sim.root_der().to_vec());
        kms_config.credentials = vec![SimCredentials::new(
            credentials.clone(),
            &kms_config.account_id,
        )];
        kms_config.require_pcr0 = options.require_pcr0.clone();
        kms_config.faults = options.faults;
        let kms = KmsEmulator::start(kms_config)
            .await
            .context("KMS emulator")?;

        let dir = TempDir::new("kmstool-local")?;
        let ca_file = dir.path().join("kms-ca.pem");
        std::fs::write(&ca_file, kms.ca_pem()).context("writing the emulator's CA")?;

        let proxy = match &options.proxy {
            Some(proxy) => proxy.clone(),
            None => format!("tcp:{}", kms.local_addr()),
        };
        let mut argv = vec![
            "kmstool-enclave".to_owned(),
            "--listen".into(),
            "tcp:127.0.0.1:0".into(),
            "--proxy".into(),
            proxy,
        ];
        if options.trust_emulator_ca {
            argv.extend(["--ca-bundle".into(), ca_file.display().to_string()]);
        }
        if let Some(region) = &options.region {
            argv.extend(["--region".into(), region.clone()]);
        }
        argv.extend(options.enclave_args.iter().cloned());
        let args = kmstool_enclave::Args::try_parse_from(argv).context("enclave arguments")?;
        let prepared = kmstool_enclave::prepare(&args, Arc::clone(&nsm) as Arc<dyn Nsm>).await?;
        let enclave = prepared.local_address().clone();
        let enclave_state = prepared.stats();
        // The server accepts before its key exists (start-up stays fast); wait for the key so
        // callers see steady-state behaviour, not the first call's key generation.
        enclave_state
            .keys
            .store()
            .await
            .map_err(anyhow::Error::msg)
            .context("enclave key")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(prepared.run(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            nsm,
            kms,
            credentials,
            enclave,
            enclave_state,
            ca_file,
            dir,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// The working directory (temporary, removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the enclave server (letting in-flight requests finish) and the emulator.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(20), server)
                .await
                .context("enclave did not stop")?
                .context("enclave task")??;
        }
        Ok(())
    }
}

/// A directory removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> anyhow::Result<Self> {
        let mut random = [0u8; 8];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let path = std::env::temp_dir().join(format!("{prefix}-{}", hex::encode(random)));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
