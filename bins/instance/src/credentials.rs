//! The standard AWS credentials chain: environment, shared credentials file, IMDSv2.

use kmstool_core::credentials::imds::ImdsEndpoint;
use kmstool_core::credentials::{CredentialsError, Miss, Source, StaticLookup, lookup_static};
use kmstool_core::secret::Credentials;
use zeroize::Zeroizing;

/// Credentials from the first source that has them; the error lists every source tried.
pub async fn resolve(profile: Option<&str>) -> Result<Credentials, String> {
    let get_env = |name: &str| {
        if name == "AWS_PROFILE"
            && let Some(profile) = profile
        {
            return Some(profile.to_owned());
        }
        std::env::var(name).ok()
    };
    let read_file = |path: &std::path::Path| std::fs::read_to_string(path).map(Zeroizing::new);
    let mut tried = match lookup_static(get_env, read_file) {
        StaticLookup::Found { credentials, .. } => return Ok(credentials),
        StaticLookup::Failed(tried) => return Err(tried.to_string()),
        StaticLookup::NotFound(tried) => tried,
    };
    match ImdsEndpoint::from_env(get_env) {
        Ok(None) => tried.record(Source::Imds, Miss::Disabled),
        Ok(Some(endpoint)) => match kmstool_runtime_smol::imds::fetch(endpoint).await {
            Ok(imds) => return Ok(imds.credentials),
            Err(error) => tried.record(Source::Imds, Miss::Failed(CredentialsError::Imds(error))),
        },
        Err(error) => tried.record(Source::Imds, Miss::Failed(error)),
    }
    Err(tried.to_string())
}
