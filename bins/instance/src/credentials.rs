//! The standard AWS credentials chain: environment, shared credentials file, container
//! endpoint (ECS task role, EKS Pod Identity), IMDSv2.

use kmstool_core::credentials::container::{self, ContainerEndpoint};
use kmstool_core::credentials::imds::ImdsEndpoint;
use kmstool_core::credentials::{CredentialsError, Miss, Source, StaticLookup, lookup_static};
use kmstool_core::secret::Credentials;
use kmstool_runtime_smol::credentials::{fetch_container, fetch_imds};
use zeroize::Zeroizing;

/// How an unconfigured container endpoint reads in the list of sources tried.
const CONTAINER_VARS: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI";

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
    // A configured container endpoint is the answer or the error, as in the AWS SDKs.
    match ContainerEndpoint::from_env(get_env, read_file) {
        Ok(None) => tried.record(Source::Container, Miss::Unset(CONTAINER_VARS)),
        Ok(Some(endpoint)) => match fetch_container(endpoint, container::DEFAULT_TIMEOUT).await {
            Ok(fetched) => return Ok(fetched.credentials),
            Err(error) => {
                let miss = Miss::Failed(CredentialsError::Container(error));
                tried.record(Source::Container, miss);
                return Err(tried.to_string());
            }
        },
        Err(error) => {
            tried.record(Source::Container, Miss::Failed(error));
            return Err(tried.to_string());
        }
    }
    match ImdsEndpoint::from_env(get_env) {
        Ok(None) => tried.record(Source::Imds, Miss::Disabled),
        Ok(Some(endpoint)) => match fetch_imds(endpoint).await {
            Ok(imds) => return Ok(imds.credentials),
            Err(error) => tried.record(Source::Imds, Miss::Failed(CredentialsError::Imds(error))),
        },
        Err(error) => tried.record(Source::Imds, Miss::Failed(error)),
    }
    Err(tried.to_string())
}
