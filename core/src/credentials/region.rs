//! The AWS region when no `--region` is given, found as the AWS CLI finds it: `AWS_REGION`,
//! then `AWS_DEFAULT_REGION`, then the profile's `region` in the config file
//! (`AWS_CONFIG_FILE`, else `~/.aws/config`; the profile from `AWS_PROFILE`, else
//! `default`). The instance then asks IMDS ([`super::imds::ImdsRegionClient`]).
//!
//! Nothing here reads the environment or a file: the caller passes `get_env` and
//! `read_file`, as to [`super::lookup_static`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::CredentialsError;
use super::env::non_empty;
use super::profile::{self, FileKind};
use crate::kms::endpoint::{RegionError, validate_region};

/// The region variable the AWS SDKs read first.
pub const REGION_VAR: &str = "AWS_REGION";
/// The region variable the AWS CLI reads.
pub const DEFAULT_REGION_VAR: &str = "AWS_DEFAULT_REGION";

/// Where a region came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionSource {
    /// The `--region` flag.
    Flag,
    /// An environment variable.
    Env(&'static str),
    /// The profile's `region` in the config file.
    Profile {
        /// The profile.
        name: String,
        /// The config file.
        path: PathBuf,
    },
    /// The instance metadata service.
    Imds,
    /// The built-in default (`us-east-1`, the enclave CLI's).
    Default,
}

impl fmt::Display for RegionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag => f.write_str("--region"),
            Self::Env(variable) => f.write_str(variable),
            Self::Profile { name, path } => {
                write!(f, "profile \"{name}\" in {}", path.display())
            }
            Self::Imds => f.write_str("IMDS"),
            Self::Default => f.write_str("the default"),
        }
    }
}

/// A region and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// The region, e.g. `eu-west-1`.
    pub name: String,
    /// Where it came from.
    pub source: RegionSource,
}

impl Region {
    /// `name` from `source` once checked as the enclave checks a region.
    pub fn checked(name: &str, source: RegionSource) -> Result<Self, RegionLookupError> {
        match validate_region(name) {
            Ok(()) => Ok(Self {
                name: name.to_owned(),
                source,
            }),
            Err(reason) => Err(RegionLookupError::Invalid {
                value: name.chars().take(64).collect(),
                source,
                reason,
            }),
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "region \"{}\" from {}", self.name, self.source)
    }
}

/// Why no region could be worked out: a configuration mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionLookupError {
    /// The region found is not a region name.
    Invalid {
        /// The value (at most 64 characters).
        value: String,
        /// Where it came from.
        source: RegionSource,
        /// What is wrong.
        reason: RegionError,
    },
    /// The config file exists but cannot be read.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error's text.
        error: String,
    },
    /// The config file is not valid INI.
    Syntax {
        /// The file.
        path: PathBuf,
        /// The error (line and reason).
        error: CredentialsError,
    },
}

impl fmt::Display for RegionLookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid {
                value,
                source,
                reason,
            } => write!(f, "invalid region \"{value}\" from {source}: {reason}"),
            Self::Unreadable { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            Self::Syntax { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for RegionLookupError {}

/// The region from the environment or the config file, checked; `Ok(None)` when none is set
/// (a missing config file or profile is not an error).
pub fn lookup_region(
    get_env: impl Fn(&str) -> Option<String>,
    read_file: impl Fn(&Path) -> io::Result<Zeroizing<String>>,
) -> Result<Option<Region>, RegionLookupError> {
    for variable in [REGION_VAR, DEFAULT_REGION_VAR] {
        if let Some(value) = non_empty(&get_env, variable) {
            return Region::checked(value.trim(), RegionSource::Env(variable)).map(Some);
        }
    }
    let Some(path) = profile::config_file_path(&get_env) else {
        return Ok(None);
    };
    let contents = match read_file(&path) {
        Ok(contents) => contents,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(RegionLookupError::Unreadable {
                path,
                error: error.to_string(),
            });
        }
    };
    let name = profile::profile_name(&get_env);
    let facts = match profile::read_profile(&contents, &name, FileKind::Config) {
        Ok(facts) => facts,
        Err(error) => return Err(RegionLookupError::Syntax { path, error }),
    };
    match facts.region {
        Some(region) => Region::checked(&region, RegionSource::Profile { name, path }).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::tests::lookup;

    fn config(contents: &'static str) -> impl Fn(&Path) -> io::Result<Zeroizing<String>> {
        move |path| {
            if path == Path::new("/h/.aws/config") || path == Path::new("/etc/aws-config") {
                Ok(Zeroizing::new(contents.to_owned()))
            } else {
                Err(io::ErrorKind::NotFound.into())
            }
        }
    }

    const CONFIG: &str = "[default]\nregion = eu-west-1\n\n[profile prod]\nregion = ap-south-1\n\
                          [prod]\nregion = us-west-2\n[profile bad]\nregion = Mars\n";

    fn found(name: &str, source: RegionSource) -> Result<Option<Region>, RegionLookupError> {
        Ok(Some(Region {
            name: name.to_owned(),
            source,
        }))
    }

    fn in_profile(name: &str, path: &str) -> RegionSource {
        RegionSource::Profile {
            name: name.to_owned(),
            path: PathBuf::from(path),
        }
    }

    #[test]
    fn order_is_aws_region_aws_default_region_then_the_profile() {
        type Expected = Result<Option<Region>, RegionLookupError>;
        let cases: Vec<(Vec<(&str, &str)>, Expected)> = vec![
            (
                vec![
                    ("HOME", "/h"),
                    ("AWS_REGION", "us-east-2"),
                    ("AWS_DEFAULT_REGION", "us-west-1"),
                ],
                found("us-east-2", RegionSource::Env(REGION_VAR)),
            ),
            (
                vec![
                    ("HOME", "/h"),
                    ("AWS_REGION", ""),
                    ("AWS_DEFAULT_REGION", "us-west-1"),
                ],
                found("us-west-1", RegionSource::Env(DEFAULT_REGION_VAR)),
            ),
            (
                vec![("HOME", "/h")],
                found("eu-west-1", in_profile("default", "/h/.aws/config")),
            ),
            (
                vec![("HOME", "/h"), ("AWS_PROFILE", "prod")],
                found("ap-south-1", in_profile("prod", "/h/.aws/config")),
            ),
            (
                vec![
                    ("AWS_CONFIG_FILE", "/etc/aws-config"),
                    ("AWS_PROFILE", "prod"),
                ],
                found("ap-south-1", in_profile("prod", "/etc/aws-config")),
            ),
            (vec![("HOME", "/h"), ("AWS_PROFILE", "none")], Ok(None)),
            (vec![("HOME", "/elsewhere")], Ok(None)),
            (vec![], Ok(None)),
        ];
        for (vars, expected) in cases {
            assert_eq!(
                lookup_region(lookup(&vars), config(CONFIG)),
                expected,
                "{vars:?}"
            );
        }
    }

    #[test]
    fn a_bad_region_or_file_is_an_error_that_says_where() {
        let error =
            lookup_region(lookup(&[("AWS_REGION", "Mars")]), config("")).expect_err("not a region");
        assert_eq!(
            error.to_string(),
            "invalid region \"Mars\" from AWS_REGION: region name must look like us-east-1"
        );
        let error = lookup_region(
            lookup(&[("HOME", "/h"), ("AWS_PROFILE", "bad")]),
            config(CONFIG),
        )
        .expect_err("not a region");
        assert_eq!(
            error.to_string(),
            "invalid region \"Mars\" from profile \"bad\" in /h/.aws/config: region name must \
             look like us-east-1"
        );
        let error = lookup_region(lookup(&[("HOME", "/h")]), config("region = x\n"))
            .expect_err("invalid file");
        assert_eq!(
            error.to_string(),
            "/h/.aws/config: line 1: setting before the first [section]"
        );
        let error = lookup_region(lookup(&[("HOME", "/h")]), |_: &Path| {
            Err(io::ErrorKind::PermissionDenied.into())
        })
        .expect_err("unreadable");
        assert!(
            error
                .to_string()
                .starts_with("cannot read /h/.aws/config: "),
            "{error}"
        );
    }
}
