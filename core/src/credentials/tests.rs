use std::io;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::*;
use crate::secret::{Credentials, SecretString};

/// Environment variables for a test case.
pub(crate) type Vars = Vec<(&'static str, &'static str)>;

/// An environment lookup over a fixed table.
pub(crate) fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// A file reader that serves one file and fails with `error` for every other path.
fn files(
    served: &'static str,
    contents: &'static str,
    error: io::ErrorKind,
) -> impl FnOnce(&Path) -> io::Result<Zeroizing<String>> {
    move |path| {
        if path == Path::new(served) {
            Ok(Zeroizing::new(contents.to_owned()))
        } else {
            Err(io::Error::from(error))
        }
    }
}

const FILE: &str = "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = hunter2\n\
[other]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = hunter2\n";

fn profile_source(name: &str, path: Option<&str>) -> Source {
    Source::Profile {
        name: name.to_owned(),
        path: path.map(PathBuf::from),
    }
}

#[test]
fn environment_comes_first() {
    let env = lookup(&[
        ("AWS_ACCESS_KEY_ID", "AKIDENV"),
        ("AWS_SECRET_ACCESS_KEY", "hunter2"),
        ("HOME", "/root"),
    ]);
    assert_eq!(
        lookup_static(
            env,
            files("/root/.aws/credentials", FILE, io::ErrorKind::NotFound)
        ),
        StaticLookup::Found {
            credentials: Credentials::new("AKIDENV", "hunter2", None),
            source: Source::Environment,
        }
    );
}

#[test]
fn profile_comes_second() {
    let env = lookup(&[("HOME", "/root"), ("AWS_PROFILE", "other")]);
    assert_eq!(
        lookup_static(
            env,
            files("/root/.aws/credentials", FILE, io::ErrorKind::NotFound)
        ),
        StaticLookup::Found {
            credentials: Credentials::new("AKIDOTHER", SecretString::from("hunter2"), None),
            source: profile_source("other", Some("/root/.aws/credentials")),
        }
    );
}

#[test]
fn nothing_configured_goes_on_to_imds_with_a_readable_trail() {
    let env = lookup(&[("HOME", "/root")]);
    let StaticLookup::NotFound(mut tried) =
        lookup_static(env, files("/elsewhere", "", io::ErrorKind::NotFound))
    else {
        panic!("no source is configured");
    };
    tried.record(Source::Imds, Miss::Disabled);
    assert_eq!(
        tried.to_string(),
        "no credentials: environment (AWS_ACCESS_KEY_ID unset), \
profile \"default\" in /root/.aws/credentials (file not found), IMDS (disabled)"
    );
    assert_eq!(tried.attempts().len(), 3);
}

#[test]
fn missing_default_profile_goes_on_but_a_chosen_one_stops() {
    let only_other = "[other]\naws_access_key_id = A\naws_secret_access_key = hunter2\n";
    let env = lookup(&[("HOME", "/h")]);
    let StaticLookup::NotFound(tried) = lookup_static(
        env,
        files("/h/.aws/credentials", only_other, io::ErrorKind::NotFound),
    ) else {
        panic!("default profile missing must move on");
    };
    assert_eq!(
        tried.to_string(),
        "no credentials: environment (AWS_ACCESS_KEY_ID unset), \
profile \"default\" in /h/.aws/credentials (no [default] section)"
    );

    let env = lookup(&[("HOME", "/h"), ("AWS_PROFILE", "prod")]);
    let StaticLookup::Failed(tried) = lookup_static(
        env,
        files("/h/.aws/credentials", only_other, io::ErrorKind::NotFound),
    ) else {
        panic!("a chosen profile that is missing must stop the chain");
    };
    assert!(
        tried.to_string().ends_with("(no [prod] section)"),
        "{tried}"
    );
}

#[test]
fn configuration_mistakes_stop_the_chain() {
    // Environment, file contents, error reading any other file, expected message.
    let cases: Vec<(Vars, &str, io::ErrorKind, &str)> = vec![
        (
            vec![("AWS_ACCESS_KEY_ID", "AKID")],
            "",
            io::ErrorKind::NotFound,
            "no credentials: environment (AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not)",
        ),
        (
            vec![("AWS_SHARED_CREDENTIALS_FILE", "/c")],
            "",
            io::ErrorKind::PermissionDenied,
            "no credentials: environment (AWS_ACCESS_KEY_ID unset), profile \"default\" in /c (unreadable: permission denied)",
        ),
        (
            vec![("HOME", "/h")],
            "aws_access_key_id = x\n",
            io::ErrorKind::NotFound,
            "no credentials: environment (AWS_ACCESS_KEY_ID unset), profile \"default\" in /h/.aws/credentials (line 1: setting before the first [section])",
        ),
    ];
    for (vars, contents, error, expected) in cases {
        let env = lookup(&vars);
        let result = lookup_static(env, files("/h/.aws/credentials", contents, error));
        let StaticLookup::Failed(tried) = result else {
            panic!("{expected}: got {result:?}");
        };
        assert_eq!(tried.to_string(), expected);
    }
}

#[test]
fn no_home_and_no_file_variable() {
    let StaticLookup::NotFound(tried) =
        lookup_static(lookup(&[]), files("/", "", io::ErrorKind::NotFound))
    else {
        panic!("nothing configured");
    };
    assert_eq!(
        tried.attempts().last(),
        Some(&Attempt {
            source: profile_source("default", None),
            miss: Miss::NoPath,
        })
    );
    assert!(
        tried
            .to_string()
            .ends_with("profile \"default\" (AWS_SHARED_CREDENTIALS_FILE and HOME unset)")
    );
}
