//! Credentials from environment variables.

use super::CredentialsError;
use crate::secret::{Credentials, SecretString};

/// The access key id variable.
pub const ACCESS_KEY_ID_VAR: &str = "AWS_ACCESS_KEY_ID";
/// The secret access key variable.
pub const SECRET_ACCESS_KEY_VAR: &str = "AWS_SECRET_ACCESS_KEY";
/// The (optional) session token variable.
pub const SESSION_TOKEN_VAR: &str = "AWS_SESSION_TOKEN";

/// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and the optional `AWS_SESSION_TOKEN`
/// through `get` (an empty variable counts as unset).
///
/// `Ok(None)` when neither key variable is set; an error naming the missing one when only one
/// is. A session token without keys is ignored.
pub fn from_env(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, CredentialsError> {
    let access_key_id = non_empty(&get, ACCESS_KEY_ID_VAR);
    let secret_access_key = non_empty(&get, SECRET_ACCESS_KEY_VAR).map(SecretString::new);
    match (access_key_id, secret_access_key) {
        (None, None) => Ok(None),
        (Some(access_key_id), Some(secret_access_key)) => {
            let session_token = non_empty(&get, SESSION_TOKEN_VAR).map(SecretString::new);
            Ok(Some(Credentials::new(
                access_key_id,
                secret_access_key,
                session_token,
            )))
        }
        (Some(_), None) => Err(CredentialsError::IncompleteEnvironment {
            missing: SECRET_ACCESS_KEY_VAR,
            present: ACCESS_KEY_ID_VAR,
        }),
        (None, Some(_)) => Err(CredentialsError::IncompleteEnvironment {
            missing: ACCESS_KEY_ID_VAR,
            present: SECRET_ACCESS_KEY_VAR,
        }),
    }
}

/// The variable's value, `None` when unset or empty.
pub(crate) fn non_empty(get: impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name).filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::tests::lookup;

    type Expected = Result<Option<Credentials>, CredentialsError>;

    #[test]
    fn table() {
        let creds = |token: Option<&str>| {
            Ok(Some(Credentials::new(
                "AKIDEXAMPLE",
                "hunter2-secret",
                token.map(SecretString::from),
            )))
        };
        let half =
            |missing, present| Err(CredentialsError::IncompleteEnvironment { missing, present });
        let cases: Vec<(&[(&str, &str)], Expected)> = vec![
            (&[], Ok(None)),
            (&[("AWS_SESSION_TOKEN", "t")], Ok(None)),
            (
                &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
                Ok(None),
            ),
            (
                &[
                    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                    ("AWS_SECRET_ACCESS_KEY", "hunter2-secret"),
                ],
                creds(None),
            ),
            (
                &[
                    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                    ("AWS_SECRET_ACCESS_KEY", "hunter2-secret"),
                    ("AWS_SESSION_TOKEN", "hunter2-token"),
                ],
                creds(Some("hunter2-token")),
            ),
            (
                &[
                    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                    ("AWS_SECRET_ACCESS_KEY", "hunter2-secret"),
                    ("AWS_SESSION_TOKEN", ""),
                ],
                creds(None),
            ),
            (
                &[("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")],
                half(SECRET_ACCESS_KEY_VAR, ACCESS_KEY_ID_VAR),
            ),
            (
                &[
                    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                    ("AWS_SECRET_ACCESS_KEY", ""),
                ],
                half(SECRET_ACCESS_KEY_VAR, ACCESS_KEY_ID_VAR),
            ),
            (
                &[("AWS_SECRET_ACCESS_KEY", "hunter2-secret")],
                half(ACCESS_KEY_ID_VAR, SECRET_ACCESS_KEY_VAR),
            ),
        ];
        for (vars, expected) in cases {
            let got = from_env(lookup(vars));
            if let Err(error) = &got {
                assert!(!error.to_string().contains("hunter2"));
            }
            assert_eq!(got, expected, "{vars:?}");
        }
    }

    #[test]
    fn error_names_the_missing_variable() {
        let error =
            from_env(lookup(&[("AWS_SECRET_ACCESS_KEY", "hunter2")])).expect_err("half set");
        assert_eq!(
            error.to_string(),
            "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"
        );
    }
}
