//! KMS endpoints: region names and the host name for each region's partition.

use std::fmt;

/// The region used when neither the enclave nor the client names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Why a region name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionError {
    /// Empty or longer than 32 characters.
    Length,
    /// Not lowercase letters, digits and single hyphens, starting with a letter and ending with a digit.
    Syntax,
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Length => "region name must be 1 to 32 characters",
            Self::Syntax => "region name must look like us-east-1",
        })
    }
}

impl std::error::Error for RegionError {}

/// Checks that `region` is shaped like an AWS region name (`us-east-1`, `us-gov-west-1`,
/// `cn-north-1`, `us-isob-east-1`). It ends up in a host name, so nothing else is accepted.
pub fn validate_region(region: &str) -> Result<(), RegionError> {
    if region.is_empty() || region.len() > 32 {
        return Err(RegionError::Length);
    }
    let bytes = region.as_bytes();
    let shaped = bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_digit()
        && region.contains('-')
        && !region.contains("--")
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if shaped {
        Ok(())
    } else {
        Err(RegionError::Syntax)
    }
}

/// The DNS suffix of the AWS partition a region belongs to.
pub fn partition_dns_suffix(region: &str) -> &'static str {
    const PREFIXES: [(&str, &str); 6] = [
        ("cn-", "amazonaws.com.cn"),
        ("us-isob-", "sc2s.sgov.gov"),
        ("us-isof-", "csp.hci.ic.gov"),
        ("us-iso-", "c2s.ic.gov"),
        ("eu-isoe-", "cloud.adc-e.uk"),
        ("eusc-", "amazonaws.eu"),
    ];
    PREFIXES
        .iter()
        .find(|(prefix, _)| region.starts_with(prefix))
        .map_or("amazonaws.com", |(_, suffix)| suffix)
}

/// The KMS host name for `region`: `kms.<region>.<partition suffix>`.
pub fn kms_host(region: &str) -> String {
    format!("kms.{region}.{}", partition_dns_suffix(region))
}

/// Picks the region for a client from the enclave's and the client's: neither gives
/// [`DEFAULT_REGION`], one gives that one, both must agree.
pub fn resolve_region<'a>(
    enclave: Option<&'a str>,
    client: Option<&'a str>,
) -> Result<&'a str, RegionConflict> {
    match (enclave, client) {
        (None, None) => Ok(DEFAULT_REGION),
        (Some(region), None) | (None, Some(region)) => Ok(region),
        (Some(enclave), Some(client)) if enclave == client => Ok(enclave),
        (Some(_), Some(_)) => Err(RegionConflict),
    }
}

/// The enclave and the client named different regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionConflict;

impl fmt::Display for RegionConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the enclave is configured for a different region than AwsRegion")
    }
}

impl std::error::Error for RegionConflict {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_per_partition() {
        for (region, host) in [
            ("us-east-1", "kms.us-east-1.amazonaws.com"),
            ("eu-west-1", "kms.eu-west-1.amazonaws.com"),
            ("us-gov-west-1", "kms.us-gov-west-1.amazonaws.com"),
            ("cn-north-1", "kms.cn-north-1.amazonaws.com.cn"),
            ("cn-northwest-1", "kms.cn-northwest-1.amazonaws.com.cn"),
            ("us-iso-east-1", "kms.us-iso-east-1.c2s.ic.gov"),
            ("us-isob-east-1", "kms.us-isob-east-1.sc2s.sgov.gov"),
            ("us-isof-south-1", "kms.us-isof-south-1.csp.hci.ic.gov"),
            ("eu-isoe-west-1", "kms.eu-isoe-west-1.cloud.adc-e.uk"),
        ] {
            assert_eq!(kms_host(region), host);
        }
    }

    #[test]
    fn region_names() {
        for good in [
            "us-east-1",
            "ap-southeast-4",
            "us-gov-east-1",
            "il-central-1",
        ] {
            assert_eq!(validate_region(good), Ok(()), "{good}");
        }
        for (bad, error) in [
            ("", RegionError::Length),
            (
                "us-east-1-aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                RegionError::Length,
            ),
            ("US-EAST-1", RegionError::Syntax),
            ("us-east-", RegionError::Syntax),
            ("useast1", RegionError::Syntax),
            ("us--east-1", RegionError::Syntax),
            ("evil.com/x-1", RegionError::Syntax),
            ("us-east-1\r\nHost: x", RegionError::Syntax),
            ("1us-east-1", RegionError::Syntax),
        ] {
            assert_eq!(validate_region(bad), Err(error), "{bad:?}");
        }
    }

    #[test]
    fn region_resolution_follows_spec() {
        assert_eq!(resolve_region(None, None), Ok("us-east-1"));
        assert_eq!(resolve_region(Some("eu-west-1"), None), Ok("eu-west-1"));
        assert_eq!(resolve_region(None, Some("eu-west-2")), Ok("eu-west-2"));
        assert_eq!(
            resolve_region(Some("eu-west-1"), Some("eu-west-1")),
            Ok("eu-west-1")
        );
        assert_eq!(
            resolve_region(Some("eu-west-1"), Some("us-east-1")),
            Err(RegionConflict)
        );
    }
}
