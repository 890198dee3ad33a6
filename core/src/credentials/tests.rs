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
) -> impl Fn(&Path) -> io::Result<Zeroizing<String>> {
    move |path| {
        if path == Path::new(served) {
            Ok(Zeroizing::new(contents.to_owned()))
        } else {
            Err(io::Error::from(error))
        }
    }
}

/// A file reader that serves several files; any other path is not found.
fn tree(
    served: &'static [(&'static str, &'static str)],
) -> impl Fn(&Path) -> io::Result<Zeroizing<String>> {
    move |path| {
        served
            .iter()
            .find(|(p, _)| path == Path::new(p))
            .map(|(_, contents)| Zeroizing::new((*contents).to_owned()))
            .ok_or_else(|| io::ErrorKind::NotFound.into())
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
profile \"default\" in /root/.aws/credentials (file not found), \
profile \"default\" in /root/.aws/config (file not found), IMDS (disabled)"
    );
    assert_eq!(tried.attempts().len(), 4);
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
profile \"default\" in /h/.aws/credentials (no [default] section), \
profile \"default\" in /h/.aws/config (file not found)"
    );

    let env = lookup(&[("HOME", "/h"), ("AWS_PROFILE", "prod")]);
    let StaticLookup::Failed(tried) = lookup_static(
        env,
        files("/h/.aws/credentials", only_other, io::ErrorKind::NotFound),
    ) else {
        panic!("a chosen profile that is missing must stop the chain");
    };
    assert!(
        tried
            .to_string()
            .contains("/h/.aws/credentials (no [prod] section)"),
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
            miss: Miss::NoPath("AWS_CONFIG_FILE"),
        })
    );
    assert!(tried.to_string().ends_with(
        "profile \"default\" (AWS_SHARED_CREDENTIALS_FILE and HOME unset), \
profile \"default\" (AWS_CONFIG_FILE and HOME unset)"
    ));
}

const CREDS: &str = "/h/.aws/credentials";
const CONFIG: &str = "/h/.aws/config";

fn home_with(profile: Option<&'static str>) -> impl Fn(&str) -> Option<String> + use<> {
    match profile {
        Some(profile) => lookup(&[("HOME", "/h"), ("AWS_PROFILE", profile)]),
        None => lookup(&[("HOME", "/h")]),
    }
}

#[test]
fn config_file_profiles_give_static_keys() {
    static FILES: &[(&str, &str)] = &[(
        CONFIG,
        "[default]\nregion = eu-west-1\naws_access_key_id = AKIDCONFDEF\n\
         aws_secret_access_key = hunter2\n[profile prod]\naws_access_key_id = AKIDCONFPROD\n\
         aws_secret_access_key = hunter2\naws_session_token = hunter2-token\n\
         [staging]\naws_access_key_id = AKIDBARE\naws_secret_access_key = hunter2\n",
    )];
    assert_eq!(
        lookup_static(home_with(None), tree(FILES)),
        StaticLookup::Found {
            credentials: Credentials::new("AKIDCONFDEF", SecretString::from("hunter2"), None),
            source: profile_source("default", Some(CONFIG)),
        }
    );
    assert_eq!(
        lookup_static(home_with(Some("prod")), tree(FILES)),
        StaticLookup::Found {
            credentials: Credentials::new(
                "AKIDCONFPROD",
                SecretString::from("hunter2"),
                Some(SecretString::from("hunter2-token"))
            ),
            source: profile_source("prod", Some(CONFIG)),
        }
    );
    // `[staging]` is credentials-file syntax: in the config file it is not the profile.
    let StaticLookup::Failed(tried) = lookup_static(home_with(Some("staging")), tree(FILES)) else {
        panic!("an explicit profile found nowhere stops the chain");
    };
    assert!(
        tried.to_string().ends_with(
            "profile \"staging\" in /h/.aws/config (no [profile staging] section ([staging] is \
             credentials-file syntax; the config file uses [profile staging]))"
        ),
        "{tried}"
    );
}

#[test]
fn the_credentials_file_wins_over_the_config_file() {
    static FILES: &[(&str, &str)] = &[
        (
            CREDS,
            "[prod]\naws_access_key_id = AKIDCREDS\naws_secret_access_key = hunter2\n",
        ),
        (
            CONFIG,
            "[profile prod]\naws_access_key_id = AKIDCONFIG\naws_secret_access_key = hunter2\n\
             credential_process = /bin/false\n",
        ),
    ];
    let StaticLookup::Found {
        credentials,
        source,
    } = lookup_static(home_with(Some("prod")), tree(FILES))
    else {
        panic!("found");
    };
    assert_eq!(credentials.access_key_id, "AKIDCREDS");
    assert_eq!(source, profile_source("prod", Some(CREDS)));
}

#[test]
fn credential_process_comes_after_the_credentials_files_keys_and_before_the_configs() {
    static FILES: &[(&str, &str)] = &[(
        CONFIG,
        "[default]\ncredential_process = my-helper --secret hunter2\n\
         aws_access_key_id = AKIDCONFIG\naws_secret_access_key = hunter2\n",
    )];
    let result = lookup_static(home_with(None), tree(FILES));
    assert!(!format!("{result:?}").contains("hunter2"), "{result:?}");
    let StaticLookup::Process {
        command,
        source,
        tried,
    } = result
    else {
        panic!("a process: {result:?}");
    };
    assert_eq!(command.expose(), "my-helper --secret hunter2");
    assert_eq!(source, profile_source("default", Some(CONFIG)));
    assert_eq!(tried.attempts().len(), 1);
}

#[test]
fn unsupported_settings_are_refused_naming_the_setting_and_the_file() {
    for (setting, files) in [
        (
            "role_arn",
            &[(
                CONFIG,
                "[profile prod]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = base\n",
            )][..],
        ),
        (
            "sso_session",
            &[(CONFIG, "[profile prod]\nsso_session = corp\n")][..],
        ),
        (
            "web_identity_token_file",
            &[(
                CREDS,
                "[prod]\nweb_identity_token_file = /t\naws_access_key_id = A\naws_secret_access_key = hunter2\n",
            )][..],
        ),
        (
            "credential_source",
            &[(
                CONFIG,
                "[profile prod]\ncredential_source = Ec2InstanceMetadata\n",
            )][..],
        ),
    ] {
        let files: &'static [(&str, &str)] = files;
        let StaticLookup::Failed(tried) = lookup_static(home_with(Some("prod")), tree(files))
        else {
            panic!("{setting} must be refused");
        };
        let file = files[0].0;
        let message = tried.to_string();
        assert!(
            message.ends_with(&format!(
                "profile \"prod\" in {file} (profile \"prod\" uses {setting}, which is not \
                 supported (static keys and credential_process are))"
            )),
            "{message}"
        );
        assert!(!message.contains("hunter2"));
    }
}

#[test]
fn a_profile_with_only_a_region_moves_on() {
    static FILES: &[(&str, &str)] = &[(CONFIG, "[profile prod]\nregion = eu-west-1\n")];
    let StaticLookup::NotFound(tried) = lookup_static(home_with(Some("prod")), tree(FILES)) else {
        panic!("moves on to the container and IMDS");
    };
    assert!(
        tried
            .to_string()
            .ends_with("profile \"prod\" in /h/.aws/config (profile \"prod\" has no credentials)"),
        "{tried}"
    );
}
