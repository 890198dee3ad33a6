//! The whole system as separate processes: `kmstool-sim kms`, `kmstool-sim
//! enclave` and the real `kmstool-instance`, wired by their command lines and files; the
//! demo; and the documents a `kmstool-sim enclave` process sends, checked against the root it
//! writes.

use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use kmstool_core::address::Address;
use kmstool_core::secret::Credentials;
use kmstool_sim::attestation::AttestationDocument;
use kmstool_sim::imds::random_credentials;
use kmstool_sim::kms::{
    AttestationVerifier, AttestedRecipient, KmsConfig, KmsEmulator, NsmRootVerifier, SimCredentials,
};
use kmstool_sim::nsm::{SimConfig, SimNsm, system_clock};
use kmstool_sim::verify::{VerifyError, VerifyTime, verify};
use kmstool_tests::bin;
use kmstool_tests::connection::Conn;
use kmstool_tests::processes::{KmsProcess, Process, nsm_state};
use kmstool_tests::protocol::{assert_ok, b64, context, hex};
use kmstool_tests::temp_dir;
use serde_json::json;

const PCR0: [u8; 48] = [0x42; 48];

/// `kmstool-sim enclave` on an ephemeral port with `args`; returns it and its address.
fn start_enclave(args: &[&str]) -> (Process, String) {
    let mut command = Command::new(bin("kmstool-sim"));
    command
        .arg("enclave")
        .args(["--log-level", "trace"])
        .args(["--listen", "tcp:127.0.0.1:0", "--region", "us-east-1"])
        .args(args);
    let process = Process::spawn(command);
    let listen = process.wait_for_log_field("kmstool-enclave ready", "listen");
    (process, listen)
}

/// The real `kmstool-instance`, credentials in its environment and nothing else.
fn instance(credentials: &Credentials, args: &[&str]) -> Output {
    let mut command = Command::new(bin("kmstool-instance"));
    command
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", &credentials.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            credentials.secret_access_key.expose(),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(args);
    if let Some(token) = &credentials.session_token {
        command.env("AWS_SESSION_TOKEN", token.expose());
    }
    command.output().expect("running kmstool-instance")
}

/// Both simulators as processes sharing one NSM root through a state directory.
struct System {
    _dir: tempfile::TempDir,
    credentials: Credentials,
    kms: KmsProcess,
    enclave: Process,
    listen: String,
}

impl System {
    fn start(kms_args: &[&str]) -> Self {
        Self::start_trusting(true, kms_args)
    }

    /// With `same_root` false, the emulator trusts another simulated root than the enclave's.
    fn start_trusting(same_root: bool, kms_args: &[&str]) -> Self {
        let dir = temp_dir("kmstool-processes");
        let state = dir.path().join("nsm");
        let root = dir.path().join("nsm-root.pem");
        nsm_state(&state, &root);
        let kms_root = if same_root {
            root.clone()
        } else {
            let other = dir.path().join("other-root.pem");
            nsm_state(&dir.path().join("other-nsm"), &other);
            other
        };
        let credentials = random_credentials();
        let kms = KmsProcess::start(dir.path(), &[&credentials], &kms_root, kms_args);
        let enclave_root = dir.path().join("enclave-root.pem");
        let (enclave, listen) = start_enclave(&[
            "--state-dir",
            &state.display().to_string(),
            "--nsm-root-out",
            &enclave_root.display().to_string(),
            "--pcr0",
            &hex(&PCR0),
            "--proxy",
            &kms.proxy(),
            "--ca-bundle",
            &kms.ca_file.display().to_string(),
        ]);
        assert_eq!(
            std::fs::read(&enclave_root).expect("--nsm-root-out"),
            std::fs::read(&root).expect("root"),
            "the enclave's NSM does not use the state directory's root"
        );
        Self {
            _dir: dir,
            credentials,
            kms,
            enclave,
            listen,
        }
    }
}

#[test]
fn done_when_kmstool_instance_decrypts_through_the_processes() {
    let system = System::start(&[]);
    let plaintext = b"Hello from kmstool-instance";
    let ctx = context(&[("purpose", "done-when")]);
    let ciphertext = b64(&system.kms.encrypt(&system.credentials, plaintext, &ctx));

    let output = instance(
        &system.credentials,
        &[
            "--connect",
            &system.listen,
            "--encryption-context",
            "purpose=done-when",
            &ciphertext,
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, [&plaintext[..], b"\n"].concat());
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");

    // The same without the context: KMS's error on stderr, exit 1, nothing on stdout.
    let output = instance(
        &system.credentials,
        &["--connect", &system.listen, &ciphertext],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let mut lines = stderr.lines();
    assert_eq!(
        lines.next(),
        Some("Error: Could not decrypt ciphertext: InvalidCiphertextException")
    );
    assert!(
        lines.next().is_some_and(|hint| hint.starts_with("Hint: ")
            && hint.contains("--encryption-context")),
        "{stderr}"
    );
    assert_eq!(lines.next(), None);

    // A client region other than the enclave's: upstream's SetClient error.
    let output = instance(
        &system.credentials,
        &[
            "--connect",
            &system.listen,
            "--region",
            "eu-west-1",
            &ciphertext,
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Could not set region correctly, check configuration."),
        "{stderr}"
    );

    // The enclave logs at trace level, and no secret is in its log.
    let log = system.enclave.stderr();
    assert!(log.contains("kmstool-enclave ready"), "{log}");
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    let secrets = [
        system.credentials.secret_access_key.expose().to_owned(),
        system
            .credentials
            .session_token
            .as_ref()
            .map_or(String::new(), |t| t.expose().to_owned()),
        String::from_utf8_lossy(plaintext).into_owned(),
        b64(plaintext),
    ];
    for secret in secrets {
        assert!(!log.contains(&secret), "the enclave logged a secret: {log}");
    }
}

#[test]
fn a_kms_process_requiring_another_pcr0_denies_the_enclave() {
    let other = hex(&[0x43; 48]);
    let system = System::start(&["--require-pcr0", &other]);
    let ciphertext = b64(&system.kms.encrypt(&system.credentials, b"x", &context(&[])));
    let output = instance(
        &system.credentials,
        &["--connect", &system.listen, &ciphertext],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("Error: Could not decrypt ciphertext: AccessDeniedException: User: "),
        "{stderr}"
    );
}

#[test]
fn a_kms_process_trusting_another_root_refuses_the_documents() {
    let system = System::start_trusting(false, &[]);
    let ciphertext = b64(&system.kms.encrypt(&system.credentials, b"x", &context(&[])));
    let output = instance(
        &system.credentials,
        &["--connect", &system.listen, &ciphertext],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "Error: Could not decrypt ciphertext: ValidationException: The attestation document is \
         not valid.\n"
    );
}

#[test]
fn the_demo_exits_0_and_prints_the_message() {
    let output = Command::new(bin("kmstool-sim"))
        .arg("demo")
        .output()
        .expect("running the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().last(),
        Some("7. Decrypted message: Hello, KMS!"),
        "{stdout}"
    );
    // The PCR0 shown is explained as the simulator's, and the real one's source named.
    assert!(
        stdout.contains("simulator's stand-in measurements")
            && stdout.contains("`nitro-cli build-enclave` prints your image's real PCR0"),
        "{stdout}"
    );
    // The attestation time reads as RFC 3339 UTC beside the raw milliseconds.
    let timestamp = stdout
        .lines()
        .find_map(|l| l.strip_prefix("   timestamp     "))
        .unwrap_or_else(|| panic!("no timestamp line: {stdout}"));
    let (readable, raw) = timestamp.split_once(" (").expect("two forms");
    let millis: u64 = raw
        .strip_suffix(" ms since 1970)")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{timestamp}"));
    let shape: String = readable
        .chars()
        .map(|c| if c.is_ascii_digit() { '0' } else { c })
        .collect();
    assert_eq!(shape, "0000-00-00T00:00:00.000Z", "{timestamp}");
    assert!(
        readable.ends_with(&format!(".{:03}Z", millis % 1000)),
        "{timestamp}"
    );
    let seconds_of_minute = (millis / 1000) % 60;
    assert!(
        readable.contains(&format!(":{seconds_of_minute:02}.")),
        "{timestamp}"
    );
}

/// A KMS stand-in's verifier that keeps every document it is shown and checks it against a
/// root the test gives once the enclave process has written it.
#[derive(Debug, Default)]
struct Capture {
    documents: Mutex<Vec<Vec<u8>>>,
    root: OnceLock<Vec<u8>>,
}

impl AttestationVerifier for Capture {
    fn verify(&self, document: &[u8], at: SystemTime) -> Result<AttestedRecipient, String> {
        self.documents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(document.to_vec());
        let root = self.root.get().ok_or("no root yet")?;
        NsmRootVerifier::new(root.clone()).verify(document, at)
    }
}

/// The DER prefix of an RSA-2048 SubjectPublicKeyInfo (rsaEncryption, NULL parameters).
const RSA_2048_SPKI_PREFIX: [u8; 19] = [
    0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
    0x01, 0x05, 0x00,
];

#[test]
fn an_enclave_process_documents_verify_against_the_root_it_writes() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let capture = Arc::new(Capture::default());
    let credentials = random_credentials();
    let mut config = KmsConfig::new("127.0.0.1:0".parse().expect("address"), "us-east-1");
    config.credentials = vec![SimCredentials::new(credentials.clone(), "111122223333")];
    config.attestation = Some(Arc::clone(&capture) as Arc<dyn AttestationVerifier>);
    let kms = runtime
        .block_on(KmsEmulator::start(config))
        .expect("KMS emulator");
    let dir = temp_dir("kmstool-nsm-root");
    let ca_file = dir.path().join("kms-ca.pem");
    std::fs::write(&ca_file, kms.ca_pem()).expect("CA file");
    let root_file = dir.path().join("nsm-root.pem");

    let (_enclave, listen) = start_enclave(&[
        "--nsm-root-out",
        &root_file.display().to_string(),
        "--pcr0",
        &hex(&PCR0),
        "--proxy",
        &format!("tcp:{}", kms.local_addr()),
        "--ca-bundle",
        &ca_file.display().to_string(),
    ]);
    let pem = std::fs::read(&root_file).expect("--nsm-root-out");
    let root = kmstool_core::tls::parse_certificates(&pem).expect("root PEM");
    let root_der = root.first().expect("a certificate").as_ref().to_vec();
    assert!(capture.root.set(root_der.clone()).is_ok());

    // The emulator accepts the enclave's document only if it verifies under that root.
    let address: Address = listen.parse().expect("enclave address");
    let reply = runtime.block_on(async {
        let mut conn = Conn::connect(&address).await;
        conn.set_client(&credentials, None).await;
        conn.call(&json!({"Operation": "GenerateRandom", "NumberOfBytes": 16}))
            .await
    });
    assert_eq!(assert_ok(&reply).len(), 16);

    let documents = capture
        .documents
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(documents.len(), 1);
    let document = &documents[0];
    let payload = verify(document, &root_der, VerifyTime::DocumentTimestamp)
        .expect("the document verifies against the written root");
    let parsed = AttestationDocument::parse(document).expect("core parses the document");
    assert_eq!(parsed.doc, payload);
    assert_eq!(payload.pcrs.get(&0).map(Vec::as_slice), Some(&PCR0[..]));
    assert_eq!(payload.cabundle.first(), Some(&root_der));
    let public_key = payload.public_key.expect("public_key");
    assert_eq!(public_key.len(), 294);
    assert_eq!(
        public_key[..RSA_2048_SPKI_PREFIX.len()],
        RSA_2048_SPKI_PREFIX
    );
    assert_eq!((payload.user_data, payload.nonce), (None, None));

    // Not under another root.
    let other = SimNsm::new(SimConfig::default(), system_clock()).expect("another NSM");
    assert_eq!(
        verify(document, other.root_der(), VerifyTime::DocumentTimestamp),
        Err(VerifyError::UnknownRoot)
    );
    runtime.block_on(kms.shutdown());
}

/// Runs a workspace binary to completion with `args`, `KMSTOOL_LOG` and `RUST_LOG` unset
/// unless `env` sets them.
fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin(name));
    command
        .env_remove("KMSTOOL_LOG")
        .env_remove("KMSTOOL_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .env_remove("REGION")
        .env_remove("ENDPOINT")
        .env("NO_COLOR", "1")
        .args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("running the binary")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_log_filter_naming_no_level_and_no_crate_of_ours_is_a_usage_error() {
    let refused = "is neither a level (off, error, warn, info, debug, trace) nor one of our crates";
    for (name, args) in [
        ("kmstool-enclave", &[][..]),
        (
            "kmstool-sim",
            &["enclave", "--listen", "tcp:127.0.0.1:0"][..],
        ),
    ] {
        for (flag, env) in [
            (Some("chatty"), None),
            (Some("info,chatty"), None),
            (None, Some(("KMSTOOL_LOG", "chatty"))),
        ] {
            let mut all = args.to_vec();
            if let Some(filter) = flag {
                all.extend(["--log-level", filter]);
            }
            let output = run(name, &all, env.as_slice());
            let stderr = stderr_of(&output);
            assert_eq!(output.status.code(), Some(1), "{name} {all:?}: {stderr}");
            assert!(
                stderr.starts_with("error: invalid value ") && stderr.contains(refused),
                "{name} {all:?}: {stderr}"
            );
        }
        // A value that does not parse as a directive at all.
        let mut all = args.to_vec();
        all.extend(["--log-level", "kmstool_core=loud"]);
        let output = run(name, &all, &[]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
        assert!(
            stderr_of(&output).contains("does not parse"),
            "{}",
            stderr_of(&output)
        );
    }
    // RUST_LOG is read when neither the flag nor KMSTOOL_LOG is given, and checked alike.
    let output = run(
        "kmstool-sim",
        &["enclave", "--listen", "tcp:127.0.0.1:0"],
        &[("RUST_LOG", "chatty")],
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr_of(&output),
        format!(
            "Error: invalid log filter in RUST_LOG: \"chatty\" {refused} (kmstool_core, kmstool_runtime_tokio, kmstool_runtime_smol, kmstool_enclave, kmstool_enclave_cli, kmstool_instance, kmstool_sim, kmstool_tests); other targets need TARGET=LEVEL\n"
        )
    );
}

/// `kmstool-sim enclave` on an ephemeral port with this environment; returns it once ready.
fn start_enclave_with_env(args: &[&str], env: &[(&str, &str)]) -> Process {
    let mut command = Command::new(bin("kmstool-sim"));
    command
        .env_remove("KMSTOOL_LOG")
        .env_remove("RUST_LOG")
        .arg("enclave")
        .args(["--listen", "tcp:127.0.0.1:0", "--region", "us-east-1"])
        .args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let process = Process::spawn(command);
    process.wait_for(false, |text| {
        text.contains("kmstool-enclave ready").then_some(())
    });
    process
}

#[test]
fn the_log_filter_comes_from_the_flag_then_kmstool_log_then_rust_log() {
    // RUST_LOG alone is honoured: the key generation is logged at debug level.
    let enclave = start_enclave_with_env(&[], &[("RUST_LOG", "debug")]);
    enclave.wait_for(false, |text| {
        text.contains("DEBUG kmstool_runtime_tokio::keys: enclave key generated")
            .then_some(())
    });
    drop(enclave);
    // KMSTOOL_LOG wins over a RUST_LOG that would be refused, the flag over both.
    start_enclave_with_env(&[], &[("KMSTOOL_LOG", "info"), ("RUST_LOG", "chatty")]);
    start_enclave_with_env(
        &["--log-level", "info"],
        &[("KMSTOOL_LOG", "chatty"), ("RUST_LOG", "chatty")],
    );
    // -v raises the level to debug whatever KMSTOOL_LOG says.
    let enclave = start_enclave_with_env(&["-v"], &[("KMSTOOL_LOG", "warn")]);
    enclave.wait_for(false, |text| {
        text.contains("DEBUG kmstool_runtime_tokio::keys: enclave key generated")
            .then_some(())
    });
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let enclave = start_enclave_with_env(&["--log-format", "json"], &[]);
    let log = enclave.stderr();
    let ready = log
        .lines()
        .find(|line| line.contains("kmstool-enclave ready"))
        .expect("the ready line");
    let value: serde_json::Value = serde_json::from_str(ready).expect("a JSON log line");
    assert_eq!(value["level"], "INFO", "{ready}");
    assert_eq!(
        value["fields"]["message"], "kmstool-enclave ready",
        "{ready}"
    );
    assert!(
        value["fields"]["listen"]
            .as_str()
            .is_some_and(|l| l.starts_with("tcp:127.0.0.1:")),
        "{ready}"
    );
    let output = run("kmstool-enclave", &["--log-format", "xml"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
}

#[test]
fn a_missing_nsm_device_is_reported_once() {
    if std::path::Path::new("/dev/nsm").exists() {
        return; // Inside a real enclave the server would start.
    }
    let output = run("kmstool-enclave", &["--listen", "tcp:127.0.0.1:0"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr_of(&output),
        "Error: cannot open /dev/nsm: not running in a Nitro enclave (use kmstool-sim for \
         development)\n"
    );
}

#[test]
fn usage_errors_exit_1_and_help_and_version_exit_0() {
    for name in ["kmstool-enclave", "kmstool-sim"] {
        for flag in ["--help", "--version"] {
            let output = run(name, &[flag], &[]);
            assert_eq!(output.status.code(), Some(0), "{name} {flag}");
            assert!(!output.stdout.is_empty(), "{name} {flag}");
        }
        let output = run(name, &["--no-such-flag"], &[]);
        assert_eq!(output.status.code(), Some(1), "{name}");
        assert!(stderr_of(&output).starts_with("error: unexpected argument"));
        // --verbose is a flag of both, never answered with clap's "did you mean --version".
        let output = run(name, &["--verbose", "--no-such-flag"], &[]);
        assert_eq!(output.status.code(), Some(1), "{name}");
        assert!(
            !stderr_of(&output).contains("--version"),
            "{}",
            stderr_of(&output)
        );
        let help = String::from_utf8_lossy(&run(name, &["--help"], &[]).stdout).into_owned();
        assert!(help.contains("Exit status: 0 "), "{help}");
        assert!(help.contains("-v, --verbose"), "{help}");
    }
    for subcommand in ["kms", "imds", "encrypt", "enclave", "demo"] {
        let output = run("kmstool-sim", &[subcommand, "--no-such-flag"], &[]);
        assert_eq!(output.status.code(), Some(1), "{subcommand}");
    }
}

#[test]
fn the_enclave_help_reads_addresses_then_kms_then_limits_then_logging() {
    let help =
        String::from_utf8_lossy(&run("kmstool-enclave", &["--help"], &[]).stdout).into_owned();
    let at = |heading: &str| {
        help.find(&format!("\n{heading}:\n"))
            .unwrap_or_else(|| panic!("no {heading} heading: {help}"))
    };
    assert!(at("Addresses") < at("KMS and trust"));
    assert!(at("KMS and trust") < at("Limits and timeouts"));
    assert!(at("Limits and timeouts") < at("Logging"));
    assert!(help.find("--listen").unwrap() < at("KMS and trust"));
    assert!(help.find("--log-format").unwrap() > at("Logging"));
}

#[test]
fn listen_with_port_and_proxy_with_proxy_port_are_refused() {
    for name in ["kmstool-enclave", "kmstool-sim"] {
        let prefix: &[&str] = if name == "kmstool-sim" {
            &["enclave"]
        } else {
            &[]
        };
        for pair in [
            ["--listen", "tcp:127.0.0.1:0", "--port", "3000"],
            ["--proxy", "tcp:127.0.0.1:1", "--proxy-port", "8000"],
        ] {
            let args = [prefix, &pair[..]].concat();
            let output = run(name, &args, &[]);
            let stderr = stderr_of(&output);
            assert_eq!(output.status.code(), Some(1), "{name} {args:?}: {stderr}");
            assert!(stderr.contains("cannot be used with"), "{stderr}");
        }
    }
}

#[test]
fn configuration_errors_exit_1_before_anything_is_bound() {
    let dir = temp_dir("kmstool-config-errors");
    let socket = dir.path().join("enclave.sock");
    let listen = format!("unix:{}", socket.display());
    let missing = dir.path().join("missing.pem");
    let missing = missing.display().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["--region", "us east"], "Error: --region \"us east\": "),
        (
            &["--endpoint", "kms example"],
            "Error: --endpoint \"kms example\": ",
        ),
        (&["--ca-bundle", &missing], "Error: reading --ca-bundle "),
        (
            &["--max-message-bytes", "100"],
            "Error: --max-message-bytes must be from 1024 to 67108864\n",
        ),
        (
            &["--max-connection-bytes", "65535"],
            "Error: --max-connection-bytes must be from 65536 to 67108864\n",
        ),
    ];
    for (bad, expected) in cases {
        for name in ["kmstool-enclave", "kmstool-sim"] {
            let prefix: &[&str] = if name == "kmstool-sim" {
                &["enclave"]
            } else {
                &[]
            };
            let args = [prefix, &["--listen", &listen], bad].concat();
            let output = run(name, &args, &[]);
            let stderr = stderr_of(&output);
            assert_eq!(output.status.code(), Some(1), "{name} {args:?}: {stderr}");
            assert!(stderr.starts_with(expected), "{name} {args:?}: {stderr}");
            assert!(!socket.exists(), "{name} {args:?} bound its socket");
        }
    }
    let output = run(
        "kmstool-sim",
        &["kms", "--listen", "127.0.0.1:0", "--region", "us east"],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr_of(&output).starts_with("Error: --region \"us east\": "),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn the_kms_process_listens_on_every_address_syntax() {
    let dir = temp_dir("kmstool-kms-listen");
    let state = dir.path().join("nsm");
    let root = dir.path().join("nsm-root.pem");
    nsm_state(&state, &root);
    let credentials = random_credentials();
    let creds_file = dir.path().join("creds.json");
    std::fs::write(
        &creds_file,
        kmstool_tests::processes::credentials_json(&[&credentials]),
    )
    .expect("creds.json");
    let socket = dir.path().join("kms.sock");
    let kms_listen = format!("unix:{}", socket.display());
    let ca_file = dir.path().join("kms-ca.pem");
    let mut command = Command::new(bin("kmstool-sim"));
    command
        .env_remove("KMSTOOL_LOG")
        .env_remove("RUST_LOG")
        .args(["kms", "--listen", &kms_listen, "--ca-out"])
        .arg(&ca_file)
        .arg("--credentials")
        .arg(&creds_file)
        .arg("--nsm-root")
        .arg(&root);
    let kms = Process::spawn(command);
    assert_eq!(
        kms.wait_for_log_field("KMS emulator ready", "listen"),
        kms_listen
    );
    // The enclave reaches it through the Unix socket, as it would through a proxy.
    let (_enclave, listen) = start_enclave(&[
        "--state-dir",
        &state.display().to_string(),
        "--proxy",
        &kms_listen,
        "--ca-bundle",
        &ca_file.display().to_string(),
    ]);
    let address: Address = listen.parse().expect("enclave address");
    let reply = kmstool_tests::block_on(async {
        let mut conn = Conn::connect(&address).await;
        conn.set_client(&credentials, None).await;
        conn.call(&json!({"Operation": "GenerateRandom", "NumberOfBytes": 16}))
            .await
    });
    assert_eq!(assert_ok(&reply).len(), 16);
    drop(kms);

    // tcp:HOST:PORT and the older HOST:PORT both listen on TCP.
    for listen in ["tcp:127.0.0.1:0", "127.0.0.1:0"] {
        let mut command = Command::new(bin("kmstool-sim"));
        command.args(["kms", "--listen", listen]);
        let kms = Process::spawn(command);
        let addr = kms.wait_for_log_field("KMS emulator ready", "listen");
        assert!(
            addr.parse::<std::net::SocketAddr>().is_ok(),
            "{listen}: {addr}"
        );
    }
    // Addresses that are not TCP are refused where only TCP is served.
    for args in [
        &["imds", "--listen", "unix:/nonexistent/imds.sock"][..],
        &[
            "encrypt",
            "--kms",
            "vsock:3:8000",
            "--ca",
            "x",
            "--key-id",
            "k",
            "--plaintext",
            "p",
        ],
    ] {
        let output = run("kmstool-sim", args, &[]);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("is not a TCP address: use tcp:HOST:PORT"),
            "{stderr}"
        );
    }
    let output = run("kmstool-sim", &["kms", "--listen", "bogus"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr_of(&output).contains("expected vsock:CID:PORT, tcp:HOST:PORT or unix:PATH"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn every_kms_emulator_flag_has_a_help_line() {
    let output = run("kmstool-sim", &["kms", "--help"], &[]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let flags = [
        "--listen <ADDR>",
        "--region <REGION>",
        "--ca-out <FILE>",
        "--credentials <FILE>",
        "--nsm-root <FILE>",
        "--nsm-state-dir <DIR>",
        "--require-pcr0 <HEX>",
        "--create-key <ALIAS>",
        "--latency-ms <MS>",
        "--drop-first <N>",
        "--throttle-first <N>",
        "--fail-first <N>",
    ];
    for flag in flags {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} is not in the help: {help}"));
        let text = line.trim_start()[flag.len()..].trim();
        assert!(text.len() > 20, "{flag} has no help line: {line:?}");
    }
    assert!(help.contains("Exit status: 0 "), "{help}");
}

#[test]
fn version_names_the_build_the_crypto_backend_and_the_commit() {
    let commit = option_env!("KMSTOOL_BUILD_COMMIT")
        .map(str::trim)
        .filter(|commit| !commit.is_empty())
        .unwrap_or("not given at build time");
    for name in [
        "kmstool-enclave",
        "kmstool-enclave-cli",
        "kmstool-instance",
        "kmstool-sim",
    ] {
        let output = run(name, &["--version"], &[]);
        assert_eq!(output.status.code(), Some(0), "{name}");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{name}: {text}");
        assert_eq!(lines[0], format!("{name} {}", env!("CARGO_PKG_VERSION")));
        assert!(lines[1].starts_with("crypto: "), "{name}: {text}");
        assert_eq!(lines[2], format!("commit: {commit}"), "{name}");
    }
    // The enclave's binaries open envelopes: they name the backend that does it.
    let text = run("kmstool-enclave", &["--version"], &[]).stdout;
    assert!(String::from_utf8_lossy(&text).contains("crypto: aws-lc-rs (AWS-LC)"));
}

#[test]
fn completions_and_man_pages_cover_every_binary() {
    let dir = temp_dir("kmstool-docs");
    let completions = dir.path().join("completions");
    let output = run(
        "kmstool-sim",
        &[
            "completions",
            "bash",
            "--out-dir",
            &completions.to_string_lossy(),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    for name in [
        "kmstool-enclave",
        "kmstool-enclave-cli",
        "kmstool-instance",
        "kmstool-sim",
    ] {
        let script = std::fs::read_to_string(completions.join(format!("{name}.bash")))
            .unwrap_or_else(|e| panic!("{name}.bash: {e}"));
        assert!(
            script.contains(&format!("complete -F _{}", name.replace('-', "__"))),
            "{name}"
        );
    }
    let instance = std::fs::read_to_string(completions.join("kmstool-instance.bash"))
        .expect("instance completions");
    assert!(instance.contains("--ciphertext-file"), "{instance}");

    let man = dir.path().join("man");
    let output = run(
        "kmstool-sim",
        &["man", "--out-dir", &man.to_string_lossy()],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let listed = String::from_utf8_lossy(&output.stdout).into_owned();
    for page in [
        "kmstool-enclave.1",
        "kmstool-enclave-cli-decrypt.1",
        "kmstool-instance.1",
        "kmstool-instance-generate-data-key.1",
        "kmstool-sim-kms.1",
    ] {
        assert!(listed.contains(page), "{page} not in {listed}");
    }
    let page = std::fs::read_to_string(man.join("kmstool-enclave.1")).expect("enclave page");
    assert!(page.contains(".TH kmstool-enclave 1"), "{page}");
    assert!(page.contains("max\\-connections"), "{page}");
}

// Trust for KMS: `--trust-roots` and `--ca-bundle` on real processes.

/// An emulator and a `kmstool-sim enclave` reaching it with `enclave_args`, sharing one NSM
/// root; returns what must stay alive, the credentials the emulator accepts and a ciphertext
/// of `plaintext` (no encryption context).
fn emulator_and_enclave(
    enclave_args: &[&str],
    plaintext: &[u8],
) -> (
    tempfile::TempDir,
    KmsProcess,
    Process,
    String,
    Credentials,
    String,
) {
    let dir = temp_dir("kmstool-trust");
    let state = dir.path().join("nsm");
    let root = dir.path().join("nsm-root.pem");
    nsm_state(&state, &root);
    let credentials = random_credentials();
    let kms = KmsProcess::start(dir.path(), &[&credentials], &root, &[]);
    let state = state.display().to_string();
    let proxy = kms.proxy();
    let ca = kms.ca_file.display().to_string();
    let pcr0 = hex(&PCR0);
    let args: Vec<&str> = ["--state-dir", &state, "--pcr0", &pcr0, "--proxy", &proxy]
        .into_iter()
        .chain(
            enclave_args
                .iter()
                .map(|a| if *a == "{ca}" { &ca } else { *a }),
        )
        .collect();
    let (enclave, listen) = start_enclave(&args);
    let ciphertext = b64(&kms.encrypt(&credentials, plaintext, &context(&[])));
    (dir, kms, enclave, listen, credentials, ciphertext)
}

#[test]
fn the_enclave_trusts_the_bundle_on_top_of_either_root_set_and_nothing_else() {
    let plaintext = b"trusted through the bundle";
    for (args, trusted) in [
        // The default (partition roots: Amazon Trust Services for us-east-1) plus the bundle.
        (&["--ca-bundle", "{ca}"][..], true),
        (&["--trust-roots", "partition", "--ca-bundle", "{ca}"], true),
        (&["--trust-roots", "mozilla", "--ca-bundle", "{ca}"], true),
        // A private endpoint outside AWS's domains: the region's partition set plus the bundle.
        (&["--endpoint", "localhost", "--ca-bundle", "{ca}"], true),
        // The emulator's CA is in no compiled-in set.
        (&[], false),
        (&["--trust-roots", "mozilla"], false),
        (&["--endpoint", "localhost"], false),
    ] {
        let (_dir, _kms, _enclave, listen, credentials, ciphertext) =
            emulator_and_enclave(args, plaintext);
        let output = instance(&credentials, &["--connect", &listen, &ciphertext]);
        let stderr = stderr_of(&output);
        if trusted {
            assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
            assert_eq!(output.stdout, [&plaintext[..], b"\n"].concat(), "{args:?}");
        } else {
            assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(
                stderr.starts_with("Error: Could not decrypt ciphertext: TLS with KMS failed (")
                    && stderr.contains("UnknownIssuer"),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn trust_roots_is_in_the_help_of_both_enclave_binaries_and_checked() {
    for (name, args) in [
        ("kmstool-enclave", &["--help"][..]),
        ("kmstool-sim", &["enclave", "--help"]),
        ("kmstool-enclave-cli", &["decrypt", "--help"]),
        ("kmstool-enclave-cli", &["genrandom", "--help"]),
    ] {
        let output = run(name, args, &[]);
        assert_eq!(output.status.code(), Some(0), "{name} {args:?}");
        let help = String::from_utf8_lossy(&output.stdout).into_owned();
        let at = help
            .find("--trust-roots <SET>")
            .unwrap_or_else(|| panic!("{name} {args:?}: {help}"));
        let entry = &help[at..];
        assert!(entry.contains("partition"), "{name}: {entry}");
        assert!(entry.contains("mozilla"), "{name}: {entry}");
        assert!(entry.contains("[default: partition]"), "{name}: {entry}");
    }
    let output = run("kmstool-enclave", &["--trust-roots", "ats"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("invalid value 'ats' for '--trust-roots <SET>'"),
        "{}",
        stderr_of(&output)
    );
}

/// [`run`], but a process still running after a minute (a server that started when it should
/// have refused its configuration) is killed and fails the test instead of hanging it.
fn run_expecting_exit(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin(name));
    command
        .env_remove("KMSTOOL_LOG")
        .env_remove("KMSTOOL_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .env_remove("REGION")
        .env_remove("ENDPOINT")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("running the binary");
    for _ in 0..600 {
        if child.try_wait().expect("waiting for the binary").is_some() {
            return child.wait_with_output().expect("reading its output");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("reading its output");
    panic!("{name} {args:?} did not exit: {}", stderr_of(&output));
}

#[test]
fn huge_durations_are_configuration_errors_before_anything_is_bound() {
    let dir = temp_dir("kmstool-huge-durations");
    let socket = dir.path().join("enclave.sock");
    let listen = format!("unix:{}", socket.display());
    let max = u64::MAX.to_string();
    let day_ms = "86400000 (one day)";
    let day_secs = "86400 (one day)";
    let cases = [
        ("--idle-timeout-secs", day_secs),
        ("--message-timeout-secs", day_secs),
        ("--connect-timeout-ms", day_ms),
        ("--kms-timeout-ms", day_ms),
        ("--key-rotation-secs", "2592000 (30 days)"),
        ("--attestation-reuse-secs", "300 (five minutes)"),
    ];
    for (flag, limit) in cases {
        let expected = format!("Error: {flag} {max}: must be at most {limit}\n");
        for name in ["kmstool-enclave", "kmstool-sim"] {
            let prefix: &[&str] = if name == "kmstool-sim" {
                &["enclave"]
            } else {
                &[]
            };
            let args = [prefix, &["--listen", &listen, flag, &max]].concat();
            let output = run_expecting_exit(name, &args, &[]);
            let stderr = stderr_of(&output);
            assert_eq!(output.status.code(), Some(1), "{name} {args:?}: {stderr}");
            assert_eq!(stderr, expected, "{name} {args:?}");
            assert!(!socket.exists(), "{name} {args:?} bound its socket");
        }
    }
    let credentials = [
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let cli = ["genrandom", "--length", "8", "--proxy", "tcp:127.0.0.1:1"];
    let expected = format!("Error: --kms-timeout-ms {max}: must be at most {day_ms}\n");
    for (name, prefix) in [
        ("kmstool-enclave-cli", &[][..]),
        ("kmstool-sim", &["enclave-cli"][..]),
    ] {
        let args = [prefix, &cli, &["--kms-timeout-ms", &max]].concat();
        let output = run_expecting_exit(name, &args, &credentials);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{name}: {}",
            stderr_of(&output)
        );
        assert_eq!(stderr_of(&output), expected, "{name}");
    }
    let args = [
        "--connect",
        "tcp:127.0.0.1:1",
        "--timeout-secs",
        &max,
        "generate-random",
        "--number-of-bytes",
        "8",
    ];
    let output = run_expecting_exit("kmstool-instance", &args, &credentials);
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert_eq!(
        stderr_of(&output),
        format!("Error: --timeout-secs {max}: must be at most {day_secs}\n")
    );
}

#[test]
fn attestation_reuse_is_refused_past_five_minutes_and_accepted_up_to_them() {
    let output = run_expecting_exit(
        "kmstool-sim",
        &[
            "enclave",
            "--listen",
            "tcp:127.0.0.1:0",
            "--attestation-reuse-secs",
            "301",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert_eq!(
        stderr_of(&output),
        "Error: --attestation-reuse-secs 301: must be at most 300 (five minutes)\n"
    );
    start_enclave(&["--attestation-reuse-secs", "300"]);
}

/// `kmstool-sim enclave` at info level on an ephemeral port, started through `sh` after
/// `ulimit` runs with `ulimit_args` (`-n 200`: soft and hard limits 200); returns it and its
/// listen port once ready.
fn start_enclave_under_ulimit(ulimit_args: &str, args: &[&str]) -> (Process, u16) {
    let mut command = Command::new("sh");
    command
        .env_remove("KMSTOOL_LOG")
        .env_remove("RUST_LOG")
        .arg("-c")
        .arg(format!("ulimit {ulimit_args} && exec \"$0\" \"$@\""))
        .arg(bin("kmstool-sim"))
        .arg("enclave")
        .args(["--log-level", "info"])
        .args(["--listen", "tcp:127.0.0.1:0", "--region", "us-east-1"])
        .args(args);
    let process = Process::spawn(command);
    let listen = process.wait_for_log_field("kmstool-enclave ready", "listen");
    let port = listen
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("listen address {listen}"));
    (process, port)
}

/// Sends `SetClient` over a fresh TCP connection and returns the reply.
fn set_client_over_tcp(port: u16) -> serde_json::Value {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    stream
        .set_read_timeout(Some(kmstool_tests::PATIENCE))
        .expect("read timeout");
    let command = kmstool_tests::protocol::set_client(&random_credentials(), None);
    stream
        .write_all(&kmstool_tests::framing::frame(&command))
        .expect("sending SetClient");
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.last() != Some(&0) {
        match stream.read(&mut byte) {
            Ok(1) => reply.push(byte[0]),
            other => panic!("no whole reply ({other:?}): {reply:?}"),
        }
    }
    reply.pop();
    serde_json::from_slice(&reply).expect("a JSON reply")
}

#[test]
fn the_default_connection_limit_follows_the_descriptor_limit() {
    // Soft and hard limits 200: (200 - 112) / 2 connections, and clients are served.
    let (enclave, port) = start_enclave_under_ulimit("-n 200", &[]);
    assert_eq!(
        enclave.wait_for_log_field("limits", "max_connections"),
        "44"
    );
    assert_eq!(enclave.wait_for_log_field("limits", "nofile_soft"), "200");
    assert_eq!(set_client_over_tcp(port), json!({"Status": "Ok"}));
    // A low soft limit under a higher hard one is raised to the hard one.
    let (enclave, port) = start_enclave_under_ulimit("-S -n 150", &[]);
    let soft = enclave.wait_for_log_field("limits", "nofile_soft");
    let hard = enclave.wait_for_log_field("limits", "nofile_hard");
    assert_eq!(soft, hard, "{}", enclave.stderr());
    assert_eq!(set_client_over_tcp(port), json!({"Status": "Ok"}));
}

#[test]
fn running_out_of_descriptors_pauses_accepting_quietly_and_recovers() {
    // 64 descriptors, but up to 1000 connections: accept fails with EMFILE well before.
    let (enclave, port) = start_enclave_under_ulimit("-n 64", &["--max-connections", "1000"]);
    let clients: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting"))
        .collect();
    enclave.wait_for(false, |log| log.contains("accept failed").then_some(()));
    // Several pauses' worth of failures: a loop retrying every 50 ms would warn dozens of
    // times meanwhile.
    std::thread::sleep(std::time::Duration::from_secs(3));
    drop(clients);
    assert_eq!(set_client_over_tcp(port), json!({"Status": "Ok"}));
    let log = enclave.stderr();
    let accept_warnings = log
        .lines()
        .filter(|line| line.contains(" WARN ") && line.contains("accept failed"))
        .count();
    assert!((1..=2).contains(&accept_warnings), "{log}");
    let warnings = log.lines().filter(|line| line.contains(" WARN ")).count();
    assert!(warnings <= 3, "{log}");
}

/// An enclave whose clock is 15 minutes behind KMS's: the first call is refused for skew, signed
/// again at KMS's time (the `Date` of the refusal) and succeeds; later calls sign at KMS's time
/// from the start; the offset is logged once, at warn level. (Only this direction here: the
/// simulated NSM dates its certificates by the enclave's clock, so an emulator behind it would
/// see them as not yet valid, which a real NSM, on the host's clock, never causes. Core's
/// virtual-clock tests cover both directions.)
#[test]
fn an_enclave_signs_at_kms_time_when_the_clocks_are_15_minutes_apart() {
    let offset = "900";
    let system = System::start(&["--clock-offset-secs", offset]);
    let address: Address = system.listen.parse().expect("enclave address");
    kmstool_tests::block_on(async {
        let mut conn = Conn::connect(&address).await;
        conn.set_client(&system.credentials, None).await;
        for _ in 0..3 {
            let reply = conn
                .call(&json!({"Operation": "GenerateRandom", "NumberOfBytes": 16}))
                .await;
            assert_eq!(
                reply["Status"],
                "Ok",
                "offset {offset}: {reply}\nKMS: {}\nenclave: {}",
                system.kms.process.stderr(),
                system.enclave.stderr()
            );
            assert_eq!(assert_ok(&reply).len(), 16);
        }
        // A second connection shares the enclave's offset.
        let mut other = Conn::connect(&address).await;
        other.set_client(&system.credentials, None).await;
        let reply = other
            .call(&json!({"Operation": "GenerateRandom", "NumberOfBytes": 8}))
            .await;
        assert_eq!(assert_ok(&reply).len(), 8, "offset {offset}: {reply}");
    });
    let log = system.enclave.stderr();
    assert_eq!(
        log.matches("signing again with KMS's clock").count(),
        1,
        "offset {offset}: only the first call is refused: {log}"
    );
    assert_eq!(
        log.matches("KMS's clock differs from ours").count(),
        1,
        "offset {offset}: one warning: {log}"
    );
}
