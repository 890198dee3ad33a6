//! `kmstool-sim`: everything needed to run kmstool without Nitro hardware or AWS — a simulated
//! NSM, a KMS emulator, a fake instance metadata service, the real enclave server and CLI with
//! the simulated NSM swapped in, and a one-command demo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args as ClapArgs, Parser, Subcommand};
use kmstool_core::nsm::Nsm;
use kmstool_sim::nsm::{SimConfig, SimNsm, system_clock};

#[derive(Debug, Parser)]
#[command(
    name = "kmstool-sim",
    version,
    about = "Run kmstool without Nitro hardware: simulated NSM, KMS emulator, fake IMDS, demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The real enclave server (kmstool-enclave's flags) with a simulated NSM.
    Enclave {
        #[command(flatten)]
        nsm: NsmArgs,
        #[command(flatten)]
        enclave: kmstool_enclave::Args,
    },
    /// The real enclave CLI (kmstool-enclave-cli's subcommands) with a simulated NSM.
    EnclaveCli {
        #[command(flatten)]
        nsm: NsmArgs,
        #[command(subcommand)]
        command: kmstool_enclave_cli::Command,
    },
}

/// How the simulated NSM is set up.
#[derive(Debug, Clone, ClapArgs)]
struct NsmArgs {
    /// Keep the simulated Nitro root here (created on first use), so documents chain to the
    /// same root across runs. Without it, a fresh root every start.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Write the simulated root certificate (PEM) here, for the KMS emulator and verifiers.
    #[arg(long, value_name = "FILE")]
    nsm_root_out: Option<PathBuf>,

    /// PCR0 (enclave image measurement), 96 hex digits.
    #[arg(long, value_name = "HEX")]
    pcr0: Option<String>,

    /// PCR1 (kernel and boot ramfs), 96 hex digits.
    #[arg(long, value_name = "HEX")]
    pcr1: Option<String>,

    /// PCR2 (application), 96 hex digits.
    #[arg(long, value_name = "HEX")]
    pcr2: Option<String>,

    /// Any boot PCR as INDEX=HEX (repeatable).
    #[arg(long = "pcr", value_name = "INDEX=HEX")]
    pcrs: Vec<String>,

    /// Debug mode: all PCRs read zero, as in an enclave started with --debug-mode.
    #[arg(long)]
    debug_mode: bool,
}

impl NsmArgs {
    fn build(&self) -> anyhow::Result<Arc<SimNsm>> {
        let mut config = SimConfig {
            debug: self.debug_mode,
            ..SimConfig::default()
        };
        for (index, value) in [(0, &self.pcr0), (1, &self.pcr1), (2, &self.pcr2)] {
            if let Some(hex) = value {
                config
                    .set_pcr_hex(index, hex)
                    .with_context(|| format!("--pcr{index}"))?;
            }
        }
        for arg in &self.pcrs {
            config
                .set_pcr_arg(arg)
                .with_context(|| format!("--pcr {arg}"))?;
        }
        let nsm = match &self.state_dir {
            Some(dir) => SimNsm::load_or_create(dir, config, system_clock()),
            None => SimNsm::new(config, system_clock()),
        }
        .context("simulated NSM")?;
        if let Some(path) = &self.nsm_root_out {
            std::fs::write(path, nsm.root_pem())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Arc::new(nsm))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Enclave { nsm, enclave } => {
            kmstool_enclave::init_logging(&enclave.log_level);
            let result = nsm.build().and_then(|nsm| {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("tokio runtime")?;
                runtime.block_on(kmstool_enclave::run(enclave, nsm as Arc<dyn Nsm>))
            });
            exit(result)
        }
        Command::EnclaveCli { nsm, command } => {
            let status = kmstool_enclave_cli::run_parsed(command, || {
                nsm.build()
                    .map(|n| n as Arc<dyn Nsm>)
                    .map_err(|e| format!("{e:#}"))
            });
            ExitCode::from(status)
        }
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
