//! The Nitro Secure Module device (`/dev/nsm`) through `aws-nitro-enclaves-nsm-api`'s driver.

use std::io::Write as _;

use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use aws_nitro_enclaves_nsm_api::driver;
use kmstool_core::nsm::Nsm;

/// The NSM device of a Nitro enclave. Its calls are blocking ioctls: call
/// [`Nsm::process`] from a blocking thread (as [`crate::keys::KeyService`] does).
#[derive(Debug)]
pub struct NitroNsm {
    fd: i32,
}

impl NitroNsm {
    /// Opens `/dev/nsm`. Fails outside an enclave.
    pub fn open() -> std::io::Result<Self> {
        let fd = driver::nsm_init();
        if fd < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "cannot open /dev/nsm: not running in a Nitro enclave (use kmstool-sim for development)",
            ));
        }
        Ok(Self { fd })
    }
}

impl Nsm for NitroNsm {
    fn process(&self, request: Request) -> Response {
        driver::nsm_process_request(self.fd, request)
    }
}

impl Drop for NitroNsm {
    fn drop(&mut self) {
        driver::nsm_exit(self.fd);
    }
}

/// Mixes `bytes` of NSM randomness into the kernel's pool, as upstream seeds its RNG from the
/// NSM at start. Writing to `/dev/random` adds entropy without crediting it; AWS-LC then draws
/// from the kernel.
pub fn seed_kernel_rng(nsm: &dyn Nsm, bytes: usize) -> Result<usize, String> {
    let random = kmstool_core::nsm::get_random(nsm, bytes).map_err(|e| e.to_string())?;
    let mut device = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/random")
        .map_err(|e| format!("/dev/random: {e}"))?;
    device
        .write_all(&random)
        .map_err(|e| format!("/dev/random: {e}"))?;
    Ok(random.len())
}
