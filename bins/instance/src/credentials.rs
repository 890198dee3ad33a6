//! The standard AWS credentials chain: environment, the profile (shared credentials file and
//! config file, with `credential_process`), container endpoint (ECS task role, EKS Pod
//! Identity), IMDSv2; and the region: `--region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the
//! profile's `region`, IMDSv2.

use std::path::Path;

use std::time::Instant;

use kmstool_core::credentials::chain::CredentialChain;
use kmstool_core::credentials::imds::ImdsEndpoint;
use kmstool_core::credentials::region::{Region, RegionSource, lookup_region};
use kmstool_core::secret::Credentials;
use kmstool_runtime_smol::credentials::fetch_imds_region;
use zeroize::Zeroizing;

/// The process environment, with `--profile` standing in for `AWS_PROFILE`.
fn environment(profile: Option<&str>) -> impl Fn(&str) -> Option<String> + '_ {
    move |name: &str| {
        if name == "AWS_PROFILE"
            && let Some(profile) = profile
        {
            return Some(profile.to_owned());
        }
        std::env::var(name).ok()
    }
}

fn read_file(path: &Path) -> std::io::Result<Zeroizing<String>> {
    std::fs::read_to_string(path).map(Zeroizing::new)
}

/// Credentials from the first source that has them, and where they came from; the error
/// lists every source tried.
pub async fn resolve(profile: Option<&str>) -> Result<(Credentials, String), String> {
    let chain = CredentialChain::new(environment(profile), read_file, Instant::now());
    match kmstool_runtime_smol::credentials::resolve(chain).await {
        Ok(found) => Ok((found.credentials, found.source)),
        Err(tried) => Err(tried.to_string()),
    }
}

/// The region given or configured: `--region`, else `AWS_REGION`, `AWS_DEFAULT_REGION`, the
/// profile's `region`; `None` when none is. A malformed region or config file is an error.
pub fn configured_region(
    flag: Option<&str>,
    profile: Option<&str>,
) -> Result<Option<Region>, String> {
    if let Some(flag) = flag {
        return Region::checked(flag, RegionSource::Flag)
            .map(Some)
            .map_err(|e| e.to_string());
    }
    lookup_region(environment(profile), read_file).map_err(|e| e.to_string())
}

/// The region IMDSv2 reports, when IMDS is on; `None` when it is off, does not know, or
/// cannot be reached (the enclave then decides). A malformed answer is an error.
pub async fn imds_region(profile: Option<&str>) -> Result<Option<Region>, String> {
    let endpoint = match ImdsEndpoint::from_env(environment(profile)) {
        Ok(Some(endpoint)) => endpoint,
        // A bad endpoint is reported by the credential chain, which reads the same variables.
        Ok(None) | Err(_) => return Ok(None),
    };
    match fetch_imds_region(endpoint).await {
        Ok(Some(name)) => Region::checked(&name, RegionSource::Imds)
            .map(Some)
            .map_err(|e| e.to_string()),
        Ok(None) => Ok(None),
        Err(error) => {
            tracing::debug!(%error, "no region from IMDS");
            Ok(None)
        }
    }
}
