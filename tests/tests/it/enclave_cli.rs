//! `kmstool-sim enclave-cli` (kmstool-enclave-cli's code with a simulated NSM) as a process,
//! against a `kmstool-sim kms` process: each subcommand, byte-exact output, each exit
//! status, credentials from flags or the environment, and KMS's error on stderr.

use std::path::PathBuf;
use std::process::{Command, Output};

use kmstool_core::secret::{Credentials, SecretString};
use kmstool_sim::imds::random_credentials;
use kmstool_tests::ports::ClosedPort;
use kmstool_tests::processes::{KmsProcess, nsm_state};
use kmstool_tests::protocol::{b64, context, unb64};
use kmstool_tests::temp_dir;

/// A KMS emulator process trusting the NSM state directory the CLI runs with.
struct Setup {
    _dir: tempfile::TempDir,
    state_dir: PathBuf,
    credentials: Credentials,
    long_term: Credentials,
    kms: KmsProcess,
}

impl Setup {
    fn start() -> Self {
        let dir = temp_dir("kmstool-enclave-cli");
        let state_dir = dir.path().join("nsm");
        let root = dir.path().join("nsm-root.pem");
        nsm_state(&state_dir, &root);
        let credentials = random_credentials();
        let long_term = Credentials::new(
            "AKIDLONGTERMCLI",
            SecretString::new("long-term-secret".into()),
            None,
        );
        let kms = KmsProcess::start(dir.path(), &[&credentials, &long_term], &root, &[]);
        Self {
            _dir: dir,
            state_dir,
            credentials,
            long_term,
            kms,
        }
    }

    /// `kmstool-sim enclave-cli <subcommand> --proxy … --ca-bundle … <args>`, empty environment.
    fn cli(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut command = Command::new(kmstool_tests::bin("kmstool-sim"));
        command
            .env_clear()
            .arg("enclave-cli")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg(subcommand)
            .args(["--proxy", &self.kms.proxy(), "--ca-bundle"])
            .arg(&self.kms.ca_file)
            .args(args);
        command
    }

    /// Like [`Setup::cli`], with the temporary credentials as flags.
    fn cli_as_user(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut command = self.cli(subcommand, args);
        command.args([
            "--aws-access-key-id",
            &self.credentials.access_key_id,
            "--aws-secret-access-key",
            self.credentials.secret_access_key.expose(),
            "--aws-session-token",
            self.credentials
                .session_token
                .as_ref()
                .map_or("", |t| t.expose()),
        ]);
        command
    }

    fn encrypt(&self, plaintext: &[u8], pairs: &[(&str, &str)]) -> String {
        b64(&self
            .kms
            .encrypt(&self.credentials, plaintext, &context(pairs)))
    }
}

fn run(mut command: Command) -> Output {
    command.output().expect("running kmstool-sim enclave-cli")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn success(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(output));
    stdout(output)
}

/// Asserts the failure status, nothing on stdout, and returns stderr.
fn failure(output: &Output, status: i32) -> String {
    assert_eq!(
        output.status.code(),
        Some(status),
        "stdout: {} stderr: {}",
        stdout(output),
        stderr(output)
    );
    assert!(output.stdout.is_empty(), "stdout: {}", stdout(output));
    stderr(output)
}

/// The base64 of a `PLAINTEXT: ` line.
fn plaintext_of(line: &str) -> Vec<u8> {
    unb64(line.strip_prefix("PLAINTEXT: ").expect("a PLAINTEXT: line"))
}

#[test]
fn decrypt_prints_one_plaintext_line() {
    let setup = Setup::start();
    let ciphertext = setup.encrypt(
        b"enclave cli \x00\xff bytes",
        &[("app", "cli"), ("n", "a=b")],
    );
    let output = run(setup.cli_as_user(
        "decrypt",
        &[
            "--ciphertext",
            &ciphertext,
            "--encryption-context",
            "app=cli",
            "--encryption-context",
            "n=a=b",
        ],
    ));
    assert_eq!(
        success(&output),
        format!("PLAINTEXT: {}\n", b64(b"enclave cli \x00\xff bytes"))
    );
    assert_eq!(stderr(&output), "");

    // With KeyId and the (only) symmetric algorithm spelled out.
    let plain = setup.encrypt(b"no context", &[]);
    let output = run(setup.cli_as_user(
        "decrypt",
        &[
            "--ciphertext",
            &plain,
            "--key-id",
            "alias/test",
            "--encryption-algorithm",
            "SYMMETRIC_DEFAULT",
        ],
    ));
    assert_eq!(
        success(&output),
        format!("PLAINTEXT: {}\n", b64(b"no context"))
    );
}

#[test]
fn genkey_prints_ciphertext_then_plaintext() {
    let setup = Setup::start();
    for (args, length) in [
        (&[][..], 32),
        (&["--key-spec", "AES-128"][..], 16),
        (&["--key-spec", "AES-256"][..], 32),
        (&["--number-of-bytes", "5"][..], 5),
    ] {
        let mut all = vec![
            "--key-id",
            "alias/test",
            "--encryption-context",
            "use=genkey",
        ];
        all.extend_from_slice(args);
        let out = success(&run(setup.cli_as_user("genkey", &all)));
        let lines: Vec<&str> = out.split_inclusive('\n').collect();
        assert_eq!(lines.len(), 2, "{out}");
        let ciphertext = lines[0]
            .strip_prefix("CIPHERTEXT: ")
            .and_then(|l| l.strip_suffix('\n'))
            .expect("a CIPHERTEXT: line");
        let data_key = plaintext_of(lines[1].strip_suffix('\n').expect("newline"));
        assert_eq!(data_key.len(), length, "{args:?}");

        // The encrypted copy decrypts to the same key, under the same context.
        let again = success(&run(setup.cli_as_user(
            "decrypt",
            &[
                "--ciphertext",
                ciphertext,
                "--encryption-context",
                "use=genkey",
            ],
        )));
        assert_eq!(again, format!("PLAINTEXT: {}\n", b64(&data_key)));
    }
}

#[test]
fn genrandom_prints_the_asked_number_of_bytes() {
    let setup = Setup::start();
    let mut draws = Vec::new();
    for (flag, length) in [
        ("--length", 1),
        ("--length", 48),
        ("--number-of-bytes", 1024),
    ] {
        let out = success(&run(
            setup.cli_as_user("genrandom", &[flag, &length.to_string()])
        ));
        let line = out.strip_suffix('\n').expect("newline");
        assert!(!line.contains('\n'), "{out}");
        let bytes = plaintext_of(line);
        assert_eq!(bytes.len(), length);
        draws.push(bytes);
    }
    let again = success(&run(setup.cli_as_user("genrandom", &["--length", "48"])));
    assert_ne!(plaintext_of(again.trim_end()), draws[1]);
}

#[test]
fn genkeypair_prints_public_key_ciphertext_then_plaintext() {
    use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
    let setup = Setup::start();
    let out = success(&run(setup.cli_as_user(
        "genkeypair",
        &[
            "--key-id",
            "alias/test",
            "--key-pair-spec",
            "ECC_NIST_P256",
            "--encryption-context",
            "use=pair",
        ],
    )));
    let lines: Vec<&str> = out.lines().collect();
    let [public, ciphertext, plaintext] = lines[..] else {
        panic!("three lines expected: {out}")
    };
    let public = unb64(public.strip_prefix("PUBLICKEY: ").expect("PUBLICKEY: line"));
    let ciphertext = ciphertext
        .strip_prefix("CIPHERTEXT: ")
        .expect("CIPHERTEXT: line");
    let private = plaintext_of(plaintext);
    // The private key is the public key's, by RustCrypto's arithmetic (the emulator uses
    // AWS-LC's).
    let secret = p256::SecretKey::from_pkcs8_der(&private).expect("PKCS #8 P-256 key");
    let derived = secret.public_key().to_public_key_der().expect("SPKI");
    assert_eq!(derived.as_bytes(), &public[..]);
    // The encrypted copy decrypts to the same private key, under the same context.
    let again = success(&run(setup.cli_as_user(
        "decrypt",
        &[
            "--ciphertext",
            ciphertext,
            "--encryption-context",
            "use=pair",
        ],
    )));
    assert_eq!(again, format!("PLAINTEXT: {}\n", b64(&private)));
}

#[test]
fn derive_prints_the_ecdh_secret_from_a_pem_or_base64_public_key() {
    use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
    let setup = Setup::start();
    let created = setup.kms.call(
        &setup.credentials,
        "CreateKey",
        &serde_json::json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "KEY_AGREEMENT"}),
    );
    let key_id = created["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("KeyId")
        .to_owned();
    let got = setup.kms.call(
        &setup.credentials,
        "GetPublicKey",
        &serde_json::json!({"KeyId": key_id}),
    );
    let kms_public = unb64(got["PublicKey"].as_str().expect("PublicKey"));
    let ours = p256::SecretKey::from_bytes(&[0x29; 32].into()).expect("scalar");
    let our_public = ours.public_key().to_public_key_der().expect("SPKI");
    let theirs = p256::PublicKey::from_public_key_der(&kms_public).expect("KMS's SPKI");
    let expected = p256::ecdh::diffie_hellman(ours.to_nonzero_scalar(), theirs.as_affine());
    let expected = format!("PLAINTEXT: {}\n", b64(&expected.raw_secret_bytes()[..]));

    let out = success(&run(setup.cli_as_user(
        "derive",
        &[
            "--key-id",
            &key_id,
            "--public-key",
            &b64(our_public.as_bytes()),
        ],
    )));
    assert_eq!(out, expected);

    let dir = temp_dir("derive");
    let pem = dir.path().join("peer.pem");
    let body = b64(our_public.as_bytes());
    let wrapped: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    let text = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        wrapped.join("\n")
    );
    std::fs::write(&pem, text).expect("PEM file");
    let pem = pem.to_str().expect("UTF-8 path");
    let out = success(&run(
        setup.cli_as_user("derive", &["--key-id", &key_id, "--public-key-file", pem])
    ));
    assert_eq!(out, expected);

    // The symmetric key cannot agree: KMS's error, exit 255.
    let err = failure(
        &run(setup.cli_as_user(
            "derive",
            &[
                "--key-id",
                "alias/test",
                "--public-key",
                &b64(our_public.as_bytes()),
            ],
        )),
        255,
    );
    assert!(
        err.contains("Could not derive shared secret: InvalidKeyUsageException"),
        "{err}"
    );
    // A public key that is not base64 is a usage error, before any KMS work.
    let err = failure(
        &run(setup.cli_as_user("derive", &["--key-id", &key_id, "--public-key", "!!"])),
        1,
    );
    assert!(
        err.contains("--public-key is neither a PEM public key nor base64"),
        "{err}"
    );
}

#[test]
fn credentials_come_from_the_environment_and_the_token_is_optional() {
    let setup = Setup::start();
    let ciphertext = setup.encrypt(b"from env", &[]);
    let token = setup
        .credentials
        .session_token
        .as_ref()
        .expect("temporary credentials")
        .expose();
    let expected = format!("PLAINTEXT: {}\n", b64(b"from env"));

    let mut command = setup.cli("decrypt", &["--ciphertext", &ciphertext]);
    command
        .env("AWS_ACCESS_KEY_ID", &setup.credentials.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            setup.credentials.secret_access_key.expose(),
        )
        .env("AWS_SESSION_TOKEN", token);
    assert_eq!(success(&run(command)), expected);

    // Long-term credentials: no token anywhere.
    let mut command = setup.cli("decrypt", &["--ciphertext", &ciphertext]);
    command
        .env("AWS_ACCESS_KEY_ID", &setup.long_term.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            setup.long_term.secret_access_key.expose(),
        );
    assert_eq!(success(&run(command)), expected);
    let command = setup.cli(
        "decrypt",
        &[
            "--ciphertext",
            &ciphertext,
            "--aws-access-key-id",
            &setup.long_term.access_key_id,
            "--aws-secret-access-key",
            setup.long_term.secret_access_key.expose(),
        ],
    );
    assert_eq!(success(&run(command)), expected);

    // The flags win over the environment.
    let mut command = setup.cli_as_user("decrypt", &["--ciphertext", &ciphertext]);
    command
        .env("AWS_ACCESS_KEY_ID", "AKIDNOBODY")
        .env("AWS_SECRET_ACCESS_KEY", "nothing");
    assert_eq!(success(&run(command)), expected);

    // Temporary credentials without their token are refused by KMS: status 255.
    let mut command = setup.cli("decrypt", &["--ciphertext", &ciphertext]);
    command
        .env("AWS_ACCESS_KEY_ID", &setup.credentials.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            setup.credentials.secret_access_key.expose(),
        );
    let err = failure(&run(command), 255);
    assert!(
        err.starts_with("Error: Could not decrypt ciphertext: "),
        "{err}"
    );
}

#[test]
fn bad_arguments_exit_1() {
    let setup = Setup::start();
    let ciphertext = setup.encrypt(b"x", &[]);
    for (subcommand, args, says) in [
        ("decrypt", &[][..], "--ciphertext"),
        (
            "decrypt",
            &["--ciphertext", "not base64!"][..],
            "--ciphertext is not base64",
        ),
        (
            "decrypt",
            &[
                "--ciphertext",
                &ciphertext,
                "--encryption-context",
                "novalue",
            ][..],
            "KEY=VALUE",
        ),
        (
            "decrypt",
            &[
                "--ciphertext",
                &ciphertext,
                "--encryption-algorithm",
                "ROT13",
            ][..],
            "SYMMETRIC_DEFAULT",
        ),
        ("genkey", &[][..], "--key-id"),
        (
            "genkey",
            &["--key-id", "alias/test", "--key-spec", "AES-512"][..],
            "expected AES_256 or AES_128",
        ),
        (
            "genkey",
            &[
                "--key-id",
                "k",
                "--key-spec",
                "AES-128",
                "--number-of-bytes",
                "4",
            ][..],
            "cannot be used with",
        ),
        ("genrandom", &["--length", "0"][..], "1..=1024"),
        ("genrandom", &["--length", "1025"][..], "1..=1024"),
        ("genrandom", &[][..], "--length"),
    ] {
        let output = run(setup.cli_as_user(subcommand, args));
        let err = failure(&output, 1);
        assert!(err.contains(says), "{subcommand} {args:?}: {err}");
    }
    let output = run(setup.cli("frobnicate", &[]));
    failure(&output, 1);

    // No credentials at all.
    let err = failure(&run(setup.cli("genrandom", &["--length", "4"])), 1);
    assert!(err.starts_with("Error: no credentials"), "{err}");
    let err = failure(
        &run(setup.cli(
            "genrandom",
            &["--length", "4", "--aws-access-key-id", "AKID"],
        )),
        1,
    );
    assert!(err.contains("--aws-secret-access-key"), "{err}");
}

#[test]
fn failed_operations_exit_255_with_kms_error_on_stderr() {
    let setup = Setup::start();
    let ciphertext = setup.encrypt(b"guarded", &[("k", "v")]);

    // Wrong encryption context.
    let output = run(setup.cli_as_user(
        "decrypt",
        &["--ciphertext", &ciphertext, "--encryption-context", "k=w"],
    ));
    let err = failure(&output, 255);
    assert!(
        err.starts_with("Error: Could not decrypt ciphertext: InvalidCiphertextException\nHint: "),
        "{err}"
    );
    assert!(err.contains("--encryption-context"), "{err}");

    // Unknown credentials.
    let output = run(setup.cli(
        "decrypt",
        &[
            "--ciphertext",
            &ciphertext,
            "--encryption-context",
            "k=v",
            "--aws-access-key-id",
            "AKIDUNKNOWN",
            "--aws-secret-access-key",
            "whatever",
        ],
    ));
    assert_eq!(
        failure(&output, 255),
        "Error: Could not decrypt ciphertext: UnrecognizedClientException: The security token \
         included in the request is invalid.\n"
    );

    // The right key id with the wrong secret.
    let output = run(setup.cli(
        "genrandom",
        &[
            "--length",
            "8",
            "--aws-access-key-id",
            &setup.long_term.access_key_id,
            "--aws-secret-access-key",
            "not-the-secret",
        ],
    ));
    let err = failure(&output, 255);
    assert!(
        err.starts_with("Error: Could not generate random bytes: InvalidSignatureException: "),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "{err}");

    // An unknown key.
    let output = run(setup.cli_as_user("genkey", &["--key-id", "alias/nothing"]));
    let err = failure(&output, 255);
    assert!(
        err.starts_with("Error: Could not generate data key: NotFoundException: "),
        "{err}"
    );
}

#[test]
fn an_unreachable_proxy_exits_255() {
    let setup = Setup::start();
    let closed = ClosedPort::new();
    let port = closed.port();
    let mut command = Command::new(kmstool_tests::bin("kmstool-sim"));
    command
        .env_clear()
        .args(["enclave-cli", "--state-dir"])
        .arg(&setup.state_dir)
        .args([
            "genrandom",
            "--length",
            "8",
            "--proxy",
            &format!("tcp:127.0.0.1:{port}"),
        ])
        .args([
            "--aws-access-key-id",
            "AKID",
            "--aws-secret-access-key",
            "S",
        ]);
    let err = failure(&run(command), 255);
    assert!(
        err.starts_with(&format!(
            "Error: Could not generate random bytes: could not connect to KMS \
             (kms.us-east-1.amazonaws.com): proxy tcp:127.0.0.1:{port}: "
        )),
        "{err}"
    );
}

#[test]
fn an_empty_session_token_flag_means_none() {
    let setup = Setup::start();
    let ciphertext = setup.encrypt(b"scripted", &[]);
    // Scripts pass `--aws-session-token "$AWS_SESSION_TOKEN"` with long-term credentials too.
    let output = run(setup.cli(
        "decrypt",
        &[
            "--ciphertext",
            &ciphertext,
            "--aws-access-key-id",
            &setup.long_term.access_key_id,
            "--aws-secret-access-key",
            setup.long_term.secret_access_key.expose(),
            "--aws-session-token",
            "",
        ],
    ));
    assert_eq!(
        success(&output),
        format!("PLAINTEXT: {}\n", b64(b"scripted"))
    );
}

/// `kmstool-sim enclave-cli genrandom` against a closed proxy port, with `args` and `env`:
/// stderr of the failed run, which names the KMS host (hence the region) it tried.
fn kms_host_tried(setup: &Setup, args: &[&str], env: &[(&str, &str)]) -> String {
    let closed = ClosedPort::new();
    let port = closed.port();
    let mut command = Command::new(kmstool_tests::bin("kmstool-sim"));
    command
        .env_clear()
        .envs(env.iter().copied())
        .args(["enclave-cli", "--state-dir"])
        .arg(&setup.state_dir)
        .args(["genrandom", "--length", "8"])
        .args(["--proxy", &format!("tcp:127.0.0.1:{port}")])
        .args([
            "--aws-access-key-id",
            "AKID",
            "--aws-secret-access-key",
            "S",
        ])
        .args(args);
    let err = failure(&run(command), 255);
    let host = err
        .split("could not connect to KMS (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(err.contains("\nHint: is vsock-proxy running"), "{err}");
    host.to_owned()
}

#[test]
fn the_region_comes_from_the_flag_environment_then_the_config_file() {
    let setup = Setup::start();
    let dir = temp_dir("kmstool-enclave-cli-config");
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        "[default]\nregion = ap-south-1\n[profile prod]\nregion = eu-north-1\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let home = dir.path().display().to_string();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec![], vec![], "kms.us-east-1.amazonaws.com"),
        (vec![], vec![("HOME", &home)], "kms.us-east-1.amazonaws.com"),
        (
            vec![],
            vec![("AWS_CONFIG_FILE", &config)],
            "kms.ap-south-1.amazonaws.com",
        ),
        (
            vec![],
            vec![("AWS_CONFIG_FILE", &config), ("AWS_PROFILE", "prod")],
            "kms.eu-north-1.amazonaws.com",
        ),
        (
            vec![],
            vec![
                ("AWS_CONFIG_FILE", &config),
                ("AWS_DEFAULT_REGION", "us-west-1"),
            ],
            "kms.us-west-1.amazonaws.com",
        ),
        (
            vec![],
            vec![
                ("AWS_DEFAULT_REGION", "us-west-1"),
                ("AWS_REGION", "us-east-2"),
            ],
            "kms.us-east-2.amazonaws.com",
        ),
        (
            vec!["--region", "ca-central-1"],
            vec![("AWS_REGION", "us-east-2")],
            "kms.ca-central-1.amazonaws.com",
        ),
    ];
    for (args, env, expected) in cases {
        assert_eq!(
            kms_host_tried(&setup, &args, &env),
            expected,
            "{args:?} {env:?}"
        );
    }
}

#[test]
fn configuration_errors_exit_1_before_any_kms_work() {
    let setup = Setup::start();
    let ciphertext = setup.encrypt(b"x", &[]);
    let mut bad_region = setup.cli_as_user("genrandom", &["--length", "4"]);
    bad_region.env("AWS_REGION", "Mars");
    assert_eq!(
        failure(&run(bad_region), 1),
        "Error: invalid region \"Mars\" from AWS_REGION: region name must look like us-east-1\n"
    );
    let mut flag = setup.cli_as_user("genrandom", &["--length", "4", "--region", "eu_west_1"]);
    flag.env_clear();
    assert!(
        failure(&run(flag), 1).starts_with("Error: invalid region \"eu_west_1\" from --region")
    );

    // An unreadable --ca-bundle is configuration, not a failed KMS call.
    let mut command = Command::new(kmstool_tests::bin("kmstool-sim"));
    command
        .env_clear()
        .args(["enclave-cli", "--state-dir"])
        .arg(&setup.state_dir)
        .args(["genrandom", "--length", "4", "--proxy", &setup.kms.proxy()])
        .args(["--ca-bundle", "/nonexistent/ca.pem"])
        .args([
            "--aws-access-key-id",
            "AKID",
            "--aws-secret-access-key",
            "S",
        ]);
    let err = failure(&run(command), 1);
    assert!(
        err.starts_with("Error: cannot read --ca-bundle /nonexistent/ca.pem: "),
        "{err}"
    );

    let output = run(setup.cli_as_user(
        "decrypt",
        &[
            "--ciphertext",
            &ciphertext,
            "--encryption-context",
            "k=1",
            "--encryption-context",
            "k=2",
        ],
    ));
    assert_eq!(
        failure(&output, 1),
        "Error: --encryption-context key \"k\" given twice\n"
    );
}

#[test]
fn the_ciphertext_comes_from_stdin_or_a_file() {
    use std::io::Write as _;
    let setup = Setup::start();
    let ciphertext = setup.encrypt(b"piped", &[]);
    let expected = format!("PLAINTEXT: {}\n", b64(b"piped"));

    let mut command = setup.cli_as_user("decrypt", &["--ciphertext", "-"]);
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("  {ciphertext}\n\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(success(&output), expected);

    let dir = temp_dir("kmstool-enclave-cli-ct");
    let file = dir.path().join("ct.b64");
    std::fs::write(&file, format!("{ciphertext}\n")).unwrap();
    let file = file.display().to_string();
    let output = run(setup.cli_as_user("decrypt", &["--ciphertext-file", &file]));
    assert_eq!(success(&output), expected);

    let output = run(setup.cli_as_user(
        "decrypt",
        &["--ciphertext-file", &file, "--ciphertext", &ciphertext],
    ));
    assert!(failure(&output, 1).contains("cannot be used with"));
}

#[test]
fn help_gives_the_orders_and_the_exit_status_and_verbose_is_a_flag() {
    let setup = Setup::start();
    let help = success(&run(setup.cli("decrypt", &["--help"])));
    let at = |text: &str| {
        help.find(text)
            .unwrap_or_else(|| panic!("{text} not in help:\n{help}"))
    };
    assert!(at("Address:") < at("Credentials:"));
    assert!(at("Credentials:") < at("Request:"));
    assert!(at("Request:") < at("Output:"));
    assert!(at("--proxy <ADDR>") < at("--proxy-port"));
    assert!(at("--proxy-port") < at("--aws-access-key-id"));
    assert!(at("--aws-access-key-id") < at("--region"));
    assert!(at("--region") < at("--verbose"));
    at("Exit status: 0 success, 1 bad arguments or configuration, 255 operation failed.");
    at("Region, first found: --region; AWS_REGION; AWS_DEFAULT_REGION;");

    let ciphertext = setup.encrypt(b"v", &[]);
    let output = run(setup.cli_as_user("decrypt", &["--ciphertext", &ciphertext, "-v"]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), format!("PLAINTEXT: {}\n", b64(b"v")));
    let err = stderr(&output);
    assert!(err.contains("region"), "{err}");
    for secret in [
        setup.credentials.secret_access_key.expose(),
        setup.credentials.session_token.as_ref().unwrap().expose(),
    ] {
        assert!(!err.contains(secret), "a secret in the log");
    }
}

/// Like upstream's CLI: randomness from the NSM goes into the kernel's pool before the enclave
/// key (drawn from the kernel) is made and attested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_rng_is_seeded_from_the_nsm_before_the_key_is_made() {
    use std::sync::{Arc, Mutex};

    use clap::Parser as _;
    use kmstool_core::nsm::{Nsm, Request, Response};
    use kmstool_sim::local::{Local, LocalOptions};

    /// The kinds of requests the NSM got, in order.
    struct InOrder {
        inner: Arc<dyn Nsm>,
        seen: Mutex<Vec<&'static str>>,
    }
    impl Nsm for InOrder {
        fn process(&self, request: Request) -> Response {
            let kind = match &request {
                Request::GetRandom => "GetRandom",
                Request::Attestation { .. } => "Attestation",
                _ => "other",
            };
            self.seen.lock().expect("lock").push(kind);
            self.inner.process(request)
        }
    }

    let local = Local::start(LocalOptions::default()).await.expect("local");
    let nsm = Arc::new(InOrder {
        inner: Arc::clone(&local.nsm) as Arc<dyn Nsm>,
        seen: Mutex::default(),
    });
    let credentials = &local.credentials;
    let ca = local.ca_file.to_str().expect("UTF-8 path").to_owned();
    let cli = kmstool_enclave_cli::Cli::try_parse_from([
        "kmstool-enclave-cli",
        "genrandom",
        "--length",
        "8",
        "--region",
        local.kms.region(),
        "--proxy",
        &format!("tcp:{}", local.kms.local_addr()),
        "--ca-bundle",
        &ca,
        "--aws-access-key-id",
        &credentials.access_key_id,
        "--aws-secret-access-key",
        credentials.secret_access_key.expose(),
        "--aws-session-token",
        credentials
            .session_token
            .as_ref()
            .map_or("", |t| t.expose()),
    ])
    .expect("arguments");
    let env = |_: &str| None;
    let read_file =
        |path: &std::path::Path| std::fs::read_to_string(path).map(zeroize::Zeroizing::new);
    let read_stdin = || Ok(String::new());
    let host = kmstool_enclave_cli::Host {
        env: &env,
        read_file: &read_file,
        read_stdin: &read_stdin,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let for_cli = Arc::clone(&nsm) as Arc<dyn Nsm>;
    let status =
        kmstool_enclave_cli::execute(cli.command, || Ok(for_cli), &host, &mut out, &mut err).await;
    assert_eq!(status, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(
        plaintext_of(String::from_utf8(out).expect("UTF-8").trim_end()).len(),
        8
    );
    assert_eq!(
        *nsm.seen.lock().expect("lock"),
        ["GetRandom", "Attestation"]
    );
}
