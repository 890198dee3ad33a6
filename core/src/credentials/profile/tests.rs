use std::path::PathBuf;

use proptest::prelude::*;

use super::*;
use crate::credentials::tests::{Vars, lookup};

fn keys(id: &str, secret: &str, token: Option<&str>) -> Result<Credentials, CredentialsError> {
    Ok(Credentials::new(
        id,
        SecretString::from(secret),
        token.map(SecretString::from),
    ))
}

fn syntax(line: usize, reason: &'static str) -> Result<Credentials, CredentialsError> {
    Err(CredentialsError::ProfileSyntax { line, reason })
}

/// As `aws configure` writes it, plus the comment and spacing variants people add by hand.
const CLI_FILE: &str = "\
# written by aws configure
[default]
aws_access_key_id = AKIAIOSFODNN7EXAMPLE
aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY

; a second profile
[dev]   # trailing comment
aws_access_key_id=AKIDDEV
aws_secret_access_key=dev/secret+key==   ; inline comment
aws_session_token = FwoGZXIvYXdzEJr#not-a-comment
  \t
[  spaced name  ]
AWS_ACCESS_KEY_ID = AKIDSPACED
Aws_Secret_Access_Key =\tspaced-secret\t
aws_security_token = legacy-token
";

#[test]
fn profiles_from_a_cli_written_file() {
    let cases: Vec<(&str, &str, Result<Credentials, CredentialsError>)> = vec![
        (
            CLI_FILE,
            "default",
            keys(
                "AKIAIOSFODNN7EXAMPLE",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                None,
            ),
        ),
        (
            CLI_FILE,
            "dev",
            keys(
                "AKIDDEV",
                "dev/secret+key==",
                Some("FwoGZXIvYXdzEJr#not-a-comment"),
            ),
        ),
        (
            CLI_FILE,
            "spaced name",
            keys("AKIDSPACED", "spaced-secret", Some("legacy-token")),
        ),
        (
            "\u{feff}[default]\r\naws_access_key_id = A\r\naws_secret_access_key = S\r\n",
            "default",
            keys("A", "S", None),
        ),
        (
            "[default]\naws_access_key_id = OLD\n[x]\na=b\n[default]\naws_access_key_id = NEW\naws_secret_access_key = S\n",
            "default",
            keys("NEW", "S", None),
        ),
        (
            "[default]\naws_access_key_id = A\naws_secret_access_key = S\naws_session_token =\n\
             s3 =\n  max_concurrent_requests = 10\n",
            "default",
            keys("A", "S", None),
        ),
        (
            "[Default]\naws_access_key_id = WRONG\naws_secret_access_key = S\n\
             [default]\naws_access_key_id = RIGHT\naws_secret_access_key = S\n",
            "default",
            keys("RIGHT", "S", None),
        ),
    ];
    for (contents, profile, expected) in cases {
        assert_eq!(
            from_credentials_file(contents, profile),
            expected,
            "{profile}"
        );
    }
}

#[test]
fn errors_name_the_problem_not_the_value() {
    let not_found = |profile: &str, config_style_header| {
        Err(CredentialsError::ProfileNotFound {
            profile: profile.into(),
            config_style_header,
        })
    };
    let cases: Vec<(&str, &str, Result<Credentials, CredentialsError>)> = vec![
        ("", "default", not_found("default", false)),
        ("# only comments\n", "default", not_found("default", false)),
        (CLI_FILE, "prod", not_found("prod", false)),
        (
            "[profile prod]\naws_access_key_id = A\naws_secret_access_key = hunter2\n",
            "prod",
            not_found("prod", true),
        ),
        (
            "[default]\naws_access_key_id = A\n",
            "default",
            Err(CredentialsError::ProfileIncomplete {
                profile: "default".into(),
                missing: "aws_secret_access_key",
            }),
        ),
        (
            "[default]\naws_access_key_id =\naws_secret_access_key = hunter2\n",
            "default",
            Err(CredentialsError::ProfileIncomplete {
                profile: "default".into(),
                missing: "aws_access_key_id",
            }),
        ),
        (
            "[default]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = base\n",
            "default",
            Err(CredentialsError::ProfileUnsupported {
                profile: "default".into(),
                setting: "role_arn",
            }),
        ),
        (
            "aws_secret_access_key = hunter2\n[default]\n",
            "default",
            syntax(1, "setting before the first [section]"),
        ),
        (
            "  hunter2\n",
            "default",
            syntax(1, "indented line before the first [section]"),
        ),
        (
            "[default\naws_secret_access_key = hunter2\n",
            "default",
            syntax(1, "section header without a closing ]"),
        ),
        (
            "[default] hunter2\n",
            "default",
            syntax(1, "text after a section header"),
        ),
        ("[ ]\n", "default", syntax(1, "empty section name")),
        (
            "[default]\nhunter2\n",
            "default",
            syntax(2, "line is neither a [section], a comment nor name = value"),
        ),
        (
            "[default]\n= hunter2\n",
            "default",
            syntax(2, "setting without a name"),
        ),
        (
            "[default]\naws_secret_access_key = hunter2\n  continued-hunter2\n",
            "default",
            syntax(3, "credential value continues on an indented line"),
        ),
        (
            "[other]\nhunter2\n[default]\n",
            "default",
            syntax(2, "line is neither a [section], a comment nor name = value"),
        ),
    ];
    for (contents, profile, expected) in cases {
        let got = from_credentials_file(contents, profile);
        if let Err(error) = &got {
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        assert_eq!(got, expected, "{contents:?}");
    }
}

#[test]
fn config_style_header_gets_a_hint() {
    let error = from_credentials_file("[profile prod]\n", "prod").expect_err("not the profile");
    assert_eq!(
        error.to_string(),
        "no [prod] section ([profile prod] is config-file syntax; the credentials file uses [prod])"
    );
}

#[test]
fn file_path_and_profile_name_from_the_environment() {
    let path_cases: Vec<(Vars, Option<&str>)> = vec![
        (vec![("HOME", "/root")], Some("/root/.aws/credentials")),
        (
            vec![
                ("HOME", "/root"),
                ("AWS_SHARED_CREDENTIALS_FILE", "/etc/creds"),
            ],
            Some("/etc/creds"),
        ),
        (
            vec![
                ("HOME", "/home/u"),
                ("AWS_SHARED_CREDENTIALS_FILE", "~/creds"),
            ],
            Some("/home/u/creds"),
        ),
        (
            vec![("AWS_SHARED_CREDENTIALS_FILE", "~/creds")],
            Some("~/creds"),
        ),
        (
            vec![("HOME", "/root"), ("AWS_SHARED_CREDENTIALS_FILE", "")],
            Some("/root/.aws/credentials"),
        ),
        (vec![("HOME", "")], None),
        (vec![], None),
    ];
    for (vars, expected) in path_cases {
        assert_eq!(
            credentials_file_path(lookup(&vars)),
            expected.map(PathBuf::from),
            "{vars:?}"
        );
    }
    assert_eq!(profile_name(lookup(&[])), "default");
    assert_eq!(profile_name(lookup(&[("AWS_PROFILE", "")])), "default");
    assert_eq!(profile_name(lookup(&[("AWS_PROFILE", "prod")])), "prod");
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(contents in "(\\PC|[\\[\\]=#; \t\r\n]){0,200}", profile in "[a-z]{0,8}") {
        let _ = from_credentials_file(&contents, &profile);
    }

    #[test]
    fn written_profiles_read_back(
        profiles in proptest::collection::vec(("[a-z][a-z0-9_-]{0,10}", "[A-Z0-9]{1,20}", "[A-Za-z0-9/+=]{1,40}", proptest::option::of("[A-Za-z0-9/+=]{1,60}")), 1..5),
        spacing in " {0,2}",
        pick in any::<prop::sample::Index>(),
    ) {
        let mut file = String::new();
        for (name, id, secret, token) in &profiles {
            file += &format!("[{name}]\naws_access_key_id{spacing}={spacing}{id}\naws_secret_access_key{spacing}={spacing}{secret}\n");
            if let Some(token) = token {
                file += &format!("aws_session_token = {token} # comment\n");
            }
            file += "\n";
        }
        let (name, _, _, _) = &profiles[pick.index(profiles.len())];
        // Repeated sections merge, a later value replacing an earlier one of the same setting.
        let mut expected = ("", "", None);
        for (_, id, secret, token) in profiles.iter().filter(|p| &p.0 == name) {
            expected = (id.as_str(), secret.as_str(), token.as_deref().or(expected.2));
        }
        let got = from_credentials_file(&file, name);
        prop_assert_eq!(got, keys(expected.0, expected.1, expected.2));
    }
}
