//! `kmstool-instance`, the real binary, against the real enclave server (in-process, with the
//! simulated NSM and the KMS emulator on loopback), against the IMDS emulator, and against
//! fake enclaves: credential sources, error paths, output formats, upstream compatibility.
//!
//! Every run starts from an empty environment with a temporary `HOME`; every run checks that
//! no secret key or session token it was given appears on stdout or stderr.

// The helpers below are part of the tests: like the #[test] functions (clippy.toml), they
// may unwrap.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kmstool_core::secret::{Credentials, SecretString};
use kmstool_sim::imds::{Imds, ImdsConfig, ImdsMode, random_credentials};
use kmstool_sim::kms::{DEFAULT_ACCOUNT_ID, EncryptionContext, KeyMetadata, SimCredentials};
use kmstool_sim::local::{Local, LocalOptions};
use kmstool_tests::framing::frame;
use kmstool_tests::instance::{FakeEnclave, Instance, Seen, Step, credentials_file};
use kmstool_tests::ports::ClosedPort;
use serde_json::{Value, json};

const MESSAGE: &[u8] = b"Hello, KMS!";

/// A running setup with a key and `MESSAGE` encrypted under it with context `app=test`.
struct Setup {
    local: Local,
    key: KeyMetadata,
    ciphertext: String,
}

impl Setup {
    async fn start() -> Self {
        let local = Local::start(LocalOptions::default())
            .await
            .expect("local setup");
        let key = local.kms.create_key("instance tests");
        let ciphertext = encrypt(&local, &key, MESSAGE, &context("app", "test"));
        Self {
            local,
            key,
            ciphertext,
        }
    }

    fn enclave(&self) -> String {
        self.local.enclave.to_string()
    }

    /// Credentials the emulator accepts, added under a new identity.
    fn new_identity(&self) -> Credentials {
        let credentials = random_credentials();
        self.local
            .kms
            .add_credentials(SimCredentials::new(credentials.clone(), DEFAULT_ACCOUNT_ID));
        credentials
    }

    /// `kmstool-instance --connect <enclave> --encryption-context app=test <ciphertext>`.
    fn decrypt(&self) -> Instance {
        Instance::new().args([
            "--connect",
            &self.enclave(),
            "--encryption-context",
            "app=test",
            &self.ciphertext,
        ])
    }
}

fn context(key: &str, value: &str) -> EncryptionContext {
    [(key.to_owned(), value.to_owned())].into()
}

fn encrypt(local: &Local, key: &KeyMetadata, plaintext: &[u8], ec: &EncryptionContext) -> String {
    B64.encode(
        local
            .kms
            .encrypt(&key.key_id, plaintext, ec)
            .expect("emulator Encrypt"),
    )
}

fn ok_frame() -> Vec<u8> {
    b"{\"Status\":\"Ok\"}\0".to_vec()
}

fn parse(frame: &[u8]) -> Value {
    serde_json::from_slice(frame).expect("the instance sent JSON")
}

// --- credential sources -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypts_with_environment_credentials() {
    let setup = Setup::start().await;
    let out = setup
        .decrypt()
        .env_credentials(&setup.local.credentials)
        .run()
        .await;
    assert_eq!(out.success(), b"Hello, KMS!\n");

    let stats = setup.local.kms.stats();
    let decrypt = stats
        .recent
        .iter()
        .find(|r| r.target.as_deref() == Some("TrentService.Decrypt"))
        .expect("the emulator saw a Decrypt");
    assert_eq!(decrypt.encryption_context_keys, ["app"]);
    assert!(
        decrypt.attestation_document_chars.is_some(),
        "attested call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_wins_over_the_credentials_file_and_imds() {
    let setup = Setup::start().await;
    let imds = Imds::start(ImdsConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let unknown = random_credentials();
    let mut instance = setup
        .decrypt()
        .env_credentials(&setup.local.credentials)
        .default_credentials_file(&credentials_file(&[("default", &unknown)]))
        .imds(&imds.endpoint());
    instance.watch(&unknown);
    instance.watch(imds.credentials());
    assert_eq!(instance.run().await.success(), b"Hello, KMS!\n");
    // IMDS is asked for the region only (no region is configured), not for credentials.
    assert_eq!(
        imds.stats().credentials_served,
        0,
        "IMDS credentials were not asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypts_with_the_default_profile_of_the_credentials_file() {
    let setup = Setup::start().await;
    let good = setup.new_identity();
    let file = credentials_file(&[("other", &random_credentials()), ("default", &good)]);

    // In its default place, ~/.aws/credentials.
    let mut instance = setup.decrypt().default_credentials_file(&file);
    instance.watch(&good);
    assert_eq!(instance.run().await.success(), b"Hello, KMS!\n");

    // Where AWS_SHARED_CREDENTIALS_FILE says.
    let mut instance = setup.decrypt().credentials_file(&file);
    instance.watch(&good);
    assert_eq!(instance.run().await.success(), b"Hello, KMS!\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypts_with_a_named_profile() {
    let setup = Setup::start().await;
    let good = setup.new_identity();
    let unknown = random_credentials();
    let file = credentials_file(&[("default", &unknown), ("team", &good)]);

    // AWS_PROFILE picks the profile.
    let mut instance = setup
        .decrypt()
        .credentials_file(&file)
        .env("AWS_PROFILE", "team");
    instance.watch(&good);
    instance.watch(&unknown);
    assert_eq!(instance.run().await.success(), b"Hello, KMS!\n");

    // --profile wins over AWS_PROFILE.
    let mut instance = setup
        .decrypt()
        .args(["--profile", "team"])
        .credentials_file(&file)
        .env("AWS_PROFILE", "default");
    instance.watch(&good);
    instance.watch(&unknown);
    assert_eq!(instance.run().await.success(), b"Hello, KMS!\n");

    // The default profile's unknown identity is refused by KMS: the choice above mattered.
    let mut instance = setup.decrypt().credentials_file(&file);
    instance.watch(&unknown);
    let out = instance.run().await;
    assert!(
        out.failure()
            .starts_with("Could not decrypt ciphertext: UnrecognizedClientException"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypts_with_imds_credentials() {
    let setup = Setup::start().await;
    let imds = Imds::start(ImdsConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    setup.local.kms.add_credentials(imds.sim_credentials());
    let mut instance = setup.decrypt().imds(&imds.endpoint());
    instance.watch(imds.credentials());
    assert_eq!(instance.run().await.success(), b"Hello, KMS!\n");
    let stats = imds.stats();
    // One token for the credentials, one for the region.
    assert_eq!(stats.tokens_issued, 2);
    assert_eq!(stats.credentials_served, 1);
    assert_eq!(stats.regions_served, 1);
    assert_eq!(stats.unauthorized, 0, "every read carried the token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypts_with_container_credentials_as_eks_pod_identity_and_ecs() {
    let setup = Setup::start().await;
    let token = "eks-pod-identity-token-for-this-test";
    let mut config = ImdsConfig::new("127.0.0.1:0".parse().unwrap());
    config.container_token = Some(SecretString::from(token));
    let agent = Imds::start(config).await.unwrap();
    setup.local.kms.add_credentials(agent.sim_credentials());
    let address = agent.local_addr();

    // EKS Pod Identity: a full URI and a token file (with the newline a file has), and IMDS
    // configured too: the container endpoint comes first.
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), format!("{token}\n")).unwrap();
    let mut instance = setup
        .decrypt()
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{address}/v1/credentials"),
        )
        .env(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.path().display().to_string(),
        )
        .imds(&agent.endpoint());
    instance.watch(agent.credentials());
    assert_eq!(instance.run().await.success(), b"Hello, KMS!\n");
    let stats = agent.stats();
    assert_eq!(stats.container_credentials_served, 1);
    assert_eq!(
        stats.credentials_served, 0,
        "IMDS credentials were not asked"
    );

    // The ECS form: a path under /v2/credentials/ (on 169.254.170.2 in ECS; here the full URI
    // points at the same kind of path on loopback), the token from the environment.
    let mut instance = setup
        .decrypt()
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{address}/v2/credentials/task-credential-id"),
        )
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", token);
    instance.watch(agent.credentials());
    assert_eq!(instance.run().await.success(), b"Hello, KMS!\n");
    assert_eq!(agent.stats().container_credentials_served, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_container_token_ends_the_chain_with_a_clear_message() {
    let mut config = ImdsConfig::new("127.0.0.1:0".parse().unwrap());
    config.container_token = Some(SecretString::from("the-right-token"));
    let agent = Imds::start(config).await.unwrap();
    let address = agent.local_addr();
    let mut instance = Instance::new()
        .args(["--connect", "tcp:127.0.0.1:9", "AAAA"])
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{address}/v1/credentials"),
        )
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", "a-wrong-token")
        .imds(&agent.endpoint());
    instance.watch(agent.credentials());
    let expected = format!(
        "{}container endpoint (container endpoint http://{address}: HTTP 401: the authorization token was refused)",
        nothing_local(instance.home())
    );
    assert_eq!(instance.run().await.failure(), expected);
    let stats = agent.stats();
    assert_eq!(stats.unauthorized, 1);
    assert_eq!(
        stats.tokens_issued, 0,
        "a configured container endpoint is not skipped"
    );

    // An endpoint plain HTTP must not go to is refused before any request.
    let instance = Instance::new()
        .args(["--connect", "tcp:127.0.0.1:9", "AAAA"])
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://credentials.example.com/v1",
        );
    let out = instance.run().await;
    let message = out.failure();
    assert!(
        message.ends_with(
            "container endpoint (invalid AWS_CONTAINER_CREDENTIALS_FULL_URI: plain HTTP is allowed only to loopback or the ECS/EKS addresses 169.254.170.2, 169.254.170.23 and fd00:ec2::23)"
        ),
        "{message}"
    );
}

// --- error paths ----------------------------------------------------------------------------

/// The text every "no credentials" message starts with, for a run whose HOME is `home` and
/// with no container endpoint configured.
fn nothing_static(home: &std::path::Path) -> String {
    format!(
        "{}container endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI unset), ",
        nothing_local(home)
    )
}

/// Environment and credentials file, both empty.
fn nothing_local(home: &std::path::Path) -> String {
    format!(
        "no credentials: environment (AWS_ACCESS_KEY_ID unset), profile \"default\" in {home}/.aws/credentials (file not found), profile \"default\" in {home}/.aws/config (file not found), ",
        home = home.display()
    )
}

#[tokio::test]
async fn imds_disabled_and_nothing_else_names_every_source() {
    let instance = Instance::new().args(["--connect", "tcp:127.0.0.1:9", "AAAA"]);
    let expected = format!("{}IMDS (disabled)", nothing_static(instance.home()));
    assert_eq!(instance.run().await.failure(), expected);
}

#[tokio::test]
async fn imds_unreachable_and_nothing_else_names_every_source() {
    let closed = ClosedPort::new();
    let address = closed.addr();
    let instance = Instance::new()
        .args(["--connect", "tcp:127.0.0.1:9", "AAAA"])
        .imds(&format!("http://{address}"));
    let expected = format!(
        "{}IMDS (IMDS step 1/3 (PUT /latest/api/token): transport error: ",
        nothing_static(instance.home())
    );
    let out = instance.run().await;
    let message = out.failure();
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.contains("refused"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_without_tokens_is_refused_with_a_clear_message() {
    let mut config = ImdsConfig::new("127.0.0.1:0".parse().unwrap());
    config.mode = ImdsMode::V1Only { put_status: 403 };
    let imds = Imds::start(config).await.unwrap();
    let mut instance = Instance::new()
        .args(["--connect", "tcp:127.0.0.1:9", "AAAA"])
        .imds(&imds.endpoint());
    instance.watch(imds.credentials());
    let expected = format!(
        "{}IMDS (IMDS step 1/3 (PUT /latest/api/token): HTTP 403: IMDSv2 is unsupported or metadata access is disabled for this instance)",
        nothing_static(instance.home())
    );
    assert_eq!(instance.run().await.failure(), expected);
    assert_eq!(imds.stats().credentials_served, 0, "no IMDSv1 fallback");
}

#[tokio::test]
async fn a_silent_imds_times_out_with_a_clear_message() {
    // Accepts the connection, reads the token request, never answers.
    let silent = FakeEnclave::start(Vec::new()).await;
    let endpoint = silent.address().replace("tcp:", "http://");
    let instance = Instance::new()
        .args(["--connect", "tcp:127.0.0.1:9", "AAAA"])
        .imds(&endpoint);
    let expected = format!(
        "{}IMDS (IMDS step 1/3 (PUT /latest/api/token): no response in time (in a container, the instance's metadata hop limit may be too low))",
        nothing_static(instance.home())
    );
    assert_eq!(instance.run().await.failure(), expected);
    assert!(silent.finish().await.client_closed);
}

#[tokio::test]
async fn broken_credential_configuration_stops_the_chain() {
    let out = Instance::new()
        .args(["--connect", "tcp:127.0.0.1:9", "AAAA"])
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .run()
        .await;
    assert_eq!(
        out.failure(),
        "no credentials: environment (AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not)"
    );

    let someone = random_credentials();
    let mut instance = Instance::new()
        .args(["--connect", "tcp:127.0.0.1:9", "--profile", "nope", "AAAA"])
        .default_credentials_file(&credentials_file(&[("default", &someone)]));
    instance.watch(&someone);
    let expected = format!(
        "no credentials: environment (AWS_ACCESS_KEY_ID unset), profile \"nope\" in {home}/.aws/credentials (no [nope] section), profile \"nope\" in {home}/.aws/config (file not found)",
        home = instance.home().display()
    );
    assert_eq!(instance.run().await.failure(), expected);
}

#[tokio::test]
async fn enclave_down() {
    let closed = ClosedPort::new();
    let address = format!("tcp:{}", closed.addr());
    let credentials = random_credentials();
    let out = Instance::new()
        .args(["--connect", &address, "AAAA"])
        .env_credentials(&credentials)
        .run()
        .await;
    let message = out.failure();
    let expected = format!("cannot connect to the enclave at {address}: ");
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.contains("refused"), "{message}");
}

/// Runs a decrypt against a fake enclave playing `script`; returns the error message and
/// what the fake saw.
async fn against_fake(script: Vec<Step>, extra: &[&str]) -> (String, Seen) {
    let fake = FakeEnclave::start(script).await;
    let out = Instance::new()
        .args(["--connect", fake.address()])
        .args(extra.iter().copied())
        .args(["AAAA"])
        .env_credentials(&random_credentials())
        .run()
        .await;
    let message = out.failure().to_owned();
    (message, fake.finish().await)
}

/// As [`against_fake`], for scripts that leave the closing to the instance.
async fn error_from_fake(script: Vec<Step>, extra: &[&str]) -> String {
    let (message, seen) = against_fake(script, extra).await;
    assert!(seen.client_closed, "the instance closed its connection");
    message
}

#[tokio::test]
async fn garbage_from_the_enclave_is_a_bad_reply() {
    let message = error_from_fake(vec![Step::Reply(b"this is not json\0".to_vec())], &[]).await;
    assert_eq!(
        message,
        "bad reply from the enclave: the enclave's reply is not JSON"
    );
    let message = error_from_fake(
        vec![Step::Reply(ok_frame()), Step::Reply(b"[1,2,3]\0".to_vec())],
        &[],
    )
    .await;
    assert_eq!(
        message,
        "bad reply from the enclave: the enclave's reply is not a reply object with a Status"
    );
    let ok_not_base64 = frame(&json!({"Status": "Ok", "Message": "%%%"}));
    let message = error_from_fake(
        vec![Step::Reply(ok_frame()), Step::Reply(ok_not_base64)],
        &[],
    )
    .await;
    assert_eq!(message, "bad reply from the enclave: Message is not base64");
}

#[tokio::test]
async fn enclave_errors_are_printed_with_their_message() {
    let kms_error = "Could not decrypt ciphertext: AccessDeniedException: not allowed";
    let error = frame(&json!({
        "Status": "Error",
        "Message": kms_error,
        "ErrorKind": "Kms",
        "KmsErrorType": "AccessDeniedException",
        "KmsStatus": 400,
    }));
    let message = error_from_fake(vec![Step::Reply(ok_frame()), Step::Reply(error)], &[]).await;
    assert_eq!(message, kms_error);

    let bare = b"{ \"Status\": \"Error\" }\0".to_vec();
    let message = error_from_fake(vec![Step::Reply(ok_frame()), Step::Reply(bare)], &[]).await;
    assert_eq!(message, "the enclave answered Error without a message");

    let set_client_error =
        b"{ \"Status\": \"Error\", \"Message\": \"Could not read credentials\" }\0";
    let message = error_from_fake(vec![Step::Reply(set_client_error.to_vec())], &[]).await;
    assert_eq!(message, "SetClient failed: Could not read credentials");
}

#[tokio::test]
async fn enclave_closing_or_silent() {
    let (message, seen) = against_fake(vec![Step::Close], &[]).await;
    assert_eq!(seen.frames.len(), 1, "SetClient only");
    assert_eq!(
        message,
        "the enclave closed the connection without replying"
    );
    let message = error_from_fake(
        vec![Step::Reply(ok_frame()), Step::Silent],
        &["--timeout-secs", "1"],
    )
    .await;
    assert_eq!(message, "no reply from the enclave within 1 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_and_enclave_errors_from_the_real_enclave() {
    let setup = Setup::start().await;
    // Wrong encryption context: KMS refuses.
    let out = Instance::new()
        .args([
            "--connect",
            &setup.enclave(),
            "--encryption-context",
            "app=other",
            &setup.ciphertext,
        ])
        .env_credentials(&setup.local.credentials)
        .run()
        .await;
    let message = out.failure();
    assert!(
        message.starts_with("Could not decrypt ciphertext: InvalidCiphertextException"),
        "{message}"
    );

    // A region other than the enclave's.
    let out = setup
        .decrypt()
        .args(["--region", "eu-west-1"])
        .env_credentials(&setup.local.credentials)
        .run()
        .await;
    let message = out.failure();
    assert!(
        message
            .starts_with("SetClient failed: Could not set region correctly, check configuration."),
        "{message}"
    );
}

// --- output formats -------------------------------------------------------------------------

/// Runs the instance with `args` against a fake enclave that accepts `SetClient` and answers
/// the operation with `reply`; returns stdout and the operation's frame as JSON.
async fn output_from_fake(reply: &Value, args: &[&str]) -> (Vec<u8>, Value) {
    let fake = FakeEnclave::start(vec![Step::Reply(ok_frame()), Step::Reply(frame(reply))]).await;
    let out = Instance::new()
        .args(["--connect", fake.address()])
        .args(args.iter().copied())
        .env_credentials(&random_credentials())
        .run()
        .await;
    let stdout = out.success().to_vec();
    let seen = fake.finish().await;
    assert!(seen.client_closed);
    assert_eq!(seen.frames.len(), 2, "SetClient and one operation");
    (stdout, parse(&seen.frames[1]))
}

const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

#[tokio::test]
async fn decrypt_output_formats_are_byte_exact() {
    let plaintext: Vec<u8> = (0..=255u8).collect();
    let reply = json!({
        "Status": "Ok",
        "Message": B64.encode(&plaintext),
        "KeyId": ARN,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    });
    let ciphertext = B64.encode(b"a ciphertext");
    let expected_command = json!({
        "Operation": "Decrypt",
        "Ciphertext": ciphertext,
        "EncryptionContext": {"a": "1", "b": "x=y"},
    });
    let context = [
        "--encryption-context",
        "a=1",
        "--encryption-context",
        "b=x=y",
    ];

    // Upstream's form and the subcommand give the same raw bytes plus a newline.
    let (raw, command) = output_from_fake(&reply, &[&context[..], &[&ciphertext]].concat()).await;
    assert_eq!(raw, [&plaintext[..], b"\n"].concat());
    assert_eq!(command, expected_command);
    let args = [&["decrypt", &ciphertext][..], &context].concat();
    let (raw, command) = output_from_fake(&reply, &args).await;
    assert_eq!(raw, [&plaintext[..], b"\n"].concat());
    assert_eq!(command, expected_command);

    let args = [&args[..], &["--output", "base64"]].concat();
    let (base64, _) = output_from_fake(&reply, &args).await;
    assert_eq!(base64, format!("{}\n", B64.encode(&plaintext)).into_bytes());

    let (json, _) = output_from_fake(&reply, &["--output", "json", &ciphertext]).await;
    let expected = format!(
        "{{\n  \"EncryptionAlgorithm\": \"SYMMETRIC_DEFAULT\",\n  \"KeyId\": \"{ARN}\",\n  \"Plaintext\": \"{}\"\n}}\n",
        B64.encode(&plaintext)
    );
    assert_eq!(String::from_utf8(json).unwrap(), expected);
}

#[tokio::test]
async fn generate_data_key_output_formats_are_byte_exact() {
    let key: Vec<u8> = (0..32).collect();
    let reply = json!({
        "Status": "Ok",
        "Message": B64.encode(&key),
        "CiphertextBlob": B64.encode(b"encrypted data key"),
        "KeyId": ARN,
    });
    let args = ["generate-data-key", "--key-id", "alias/app"];
    let (json, command) = output_from_fake(&reply, &args).await;
    let expected = format!(
        "{{\n  \"CiphertextBlob\": \"{}\",\n  \"KeyId\": \"{ARN}\",\n  \"Plaintext\": \"{}\"\n}}\n",
        B64.encode(b"encrypted data key"),
        B64.encode(&key)
    );
    assert_eq!(String::from_utf8(json).unwrap(), expected);
    assert_eq!(
        command,
        json!({"Operation": "GenerateDataKey", "KeyId": "alias/app", "KeySpec": "AES_256"})
    );

    let (raw, _) = output_from_fake(&reply, &[&args[..], &["--output", "raw"]].concat()).await;
    assert_eq!(raw, [&key[..], b"\n"].concat());
    let (base64, command) = output_from_fake(
        &reply,
        &[
            &args[..],
            &["--output", "base64", "--number-of-bytes", "32"],
            &["--encryption-context", "k=v", "--grant-token", "g1"],
        ]
        .concat(),
    )
    .await;
    // Both the encrypted copy and the key, as kmstool-enclave-cli genkey prints them.
    assert_eq!(
        String::from_utf8(base64).unwrap(),
        format!(
            "CIPHERTEXT: {}\nPLAINTEXT: {}\n",
            B64.encode(b"encrypted data key"),
            B64.encode(&key)
        )
    );
    assert_eq!(
        command,
        json!({
            "Operation": "GenerateDataKey",
            "KeyId": "alias/app",
            "NumberOfBytes": 32,
            "EncryptionContext": {"k": "v"},
            "GrantTokens": ["g1"],
        })
    );
}

#[tokio::test]
async fn generate_random_output_formats_are_byte_exact() {
    let random = b"\x00\x01\n\xfe\xffrandom bytes".to_vec();
    let reply = json!({"Status": "Ok", "Message": B64.encode(&random)});
    let args = ["generate-random", "--number-of-bytes", "17"];
    let (base64, command) = output_from_fake(&reply, &args).await;
    assert_eq!(base64, format!("{}\n", B64.encode(&random)).into_bytes());
    assert_eq!(
        command,
        json!({"Operation": "GenerateRandom", "NumberOfBytes": 17})
    );
    let (raw, _) = output_from_fake(&reply, &[&args[..], &["--output", "raw"]].concat()).await;
    assert_eq!(raw, [&random[..], b"\n"].concat());
    let (json, _) = output_from_fake(&reply, &[&args[..], &["--output", "json"]].concat()).await;
    let expected = format!("{{\n  \"Plaintext\": \"{}\"\n}}\n", B64.encode(&random));
    assert_eq!(String::from_utf8(json).unwrap(), expected);
}

#[tokio::test]
async fn generate_data_key_pair_output_formats_are_byte_exact() {
    let private_key = b"\x30\x81\x87 PKCS #8".to_vec();
    let reply = json!({
        "Status": "Ok",
        "Message": B64.encode(&private_key),
        "PublicKey": B64.encode(b"SPKI"),
        "PrivateKeyCiphertextBlob": B64.encode(b"encrypted private key"),
        "KeyId": ARN,
        "KeyPairSpec": "ECC_NIST_P256",
    });
    let args = [
        "generate-data-key-pair",
        "--key-id",
        "alias/app",
        "--key-pair-spec",
        "ECC_NIST_P256",
    ];
    let (json, command) = output_from_fake(&reply, &args).await;
    // Every field, named as `aws kms generate-data-key-pair` names them.
    let expected = format!(
        "{{\n  \"KeyId\": \"{ARN}\",\n  \"KeyPairSpec\": \"ECC_NIST_P256\",\n  \"PrivateKeyCiphertextBlob\": \"{}\",\n  \"PrivateKeyPlaintext\": \"{}\",\n  \"PublicKey\": \"{}\"\n}}\n",
        B64.encode(b"encrypted private key"),
        B64.encode(&private_key),
        B64.encode(b"SPKI"),
    );
    assert_eq!(String::from_utf8(json).unwrap(), expected);
    assert_eq!(
        command,
        json!({"Operation": "GenerateDataKeyPair", "KeyId": "alias/app", "KeyPairSpec": "ECC_NIST_P256"})
    );
    let (base64, command) = output_from_fake(
        &reply,
        &[
            &args[..],
            &[
                "--output",
                "base64",
                "--encryption-context",
                "k=v",
                "--grant-token",
                "g",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(
        String::from_utf8(base64).unwrap(),
        format!(
            "PUBLICKEY: {}\nCIPHERTEXT: {}\nPLAINTEXT: {}\n",
            B64.encode(b"SPKI"),
            B64.encode(b"encrypted private key"),
            B64.encode(&private_key)
        )
    );
    assert_eq!(command["EncryptionContext"], json!({"k": "v"}));
    assert_eq!(command["GrantTokens"], json!(["g"]));
}

#[tokio::test]
async fn derive_shared_secret_output_formats_are_byte_exact() {
    let secret = [0x5au8; 32];
    let reply = json!({
        "Status": "Ok",
        "Message": B64.encode(secret),
        "KeyId": ARN,
        "KeyAgreementAlgorithm": "ECDH",
        "KeyOrigin": "AWS_KMS",
    });
    let peer = b"\x30\x59 peer SPKI";
    let args = [
        "derive-shared-secret",
        "--key-id",
        "alias/ecdh",
        "--public-key",
        &B64.encode(peer),
    ];
    let (base64, command) = output_from_fake(&reply, &args).await;
    assert_eq!(base64, format!("{}\n", B64.encode(secret)).into_bytes());
    assert_eq!(
        command,
        json!({
            "Operation": "DeriveSharedSecret",
            "KeyId": "alias/ecdh",
            "PublicKey": B64.encode(peer),
            "KeyAgreementAlgorithm": "ECDH",
        })
    );
    let (json, _) = output_from_fake(&reply, &[&args[..], &["--output", "json"]].concat()).await;
    let expected = format!(
        "{{\n  \"KeyAgreementAlgorithm\": \"ECDH\",\n  \"KeyId\": \"{ARN}\",\n  \"KeyOrigin\": \"AWS_KMS\",\n  \"SharedSecret\": \"{}\"\n}}\n",
        B64.encode(secret)
    );
    assert_eq!(String::from_utf8(json).unwrap(), expected);

    // A PEM file gives the same request.
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("peer.pem");
    std::fs::write(
        &pem,
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(peer)
        ),
    )
    .unwrap();
    let pem = pem.to_str().unwrap();
    let (_, from_file) = output_from_fake(
        &reply,
        &[
            "derive-shared-secret",
            "--key-id",
            "alias/ecdh",
            "--public-key-file",
            pem,
        ],
    )
    .await;
    assert_eq!(from_file, command);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_data_keys_and_random_bytes_from_the_real_enclave() {
    let setup = Setup::start().await;
    let run = |args: Vec<String>| {
        Instance::new()
            .args(["--connect".to_owned(), setup.enclave()])
            .args(args)
            .env_credentials(&setup.local.credentials)
            .run()
    };
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    // JSON: exactly the three fields, in this layout.
    let out = run(args(&[
        "generate-data-key",
        "--key-id",
        &setup.key.key_id,
        "--encryption-context",
        "purpose=dk",
    ]))
    .await;
    let stdout = String::from_utf8(out.success().to_vec()).unwrap();
    let reply: Value = serde_json::from_str(&stdout).unwrap();
    let plaintext = reply["Plaintext"].as_str().unwrap();
    let blob = reply["CiphertextBlob"].as_str().unwrap();
    assert_eq!(reply["KeyId"], setup.key.arn.as_str());
    assert_eq!(B64.decode(plaintext).unwrap().len(), 32, "AES_256");
    let expected = format!(
        "{{\n  \"CiphertextBlob\": \"{blob}\",\n  \"KeyId\": \"{}\",\n  \"Plaintext\": \"{plaintext}\"\n}}\n",
        setup.key.arn
    );
    assert_eq!(stdout, expected);

    // The encrypted copy decrypts, through the enclave, to the same key.
    let out = run(args(&[
        "--output",
        "base64",
        "--encryption-context",
        "purpose=dk",
        blob,
    ]))
    .await;
    assert_eq!(out.success(), format!("{plaintext}\n").as_bytes());

    let out = run(args(&[
        "generate-data-key",
        "--key-id",
        &setup.key.arn,
        "--key-spec",
        "AES_128",
        "--output",
        "raw",
    ]))
    .await;
    let raw = out.success();
    assert_eq!((raw.len(), raw.last()), (17, Some(&b'\n')));

    let random = |n: &str| {
        let out = run(args(&["generate-random", "--number-of-bytes", n]));
        async move {
            let stdout = String::from_utf8(out.await.success().to_vec()).unwrap();
            let line = stdout.strip_suffix('\n').expect("one line").to_owned();
            B64.decode(line).expect("base64")
        }
    };
    let (first, second) = (random("100").await, random("100").await);
    assert_eq!((first.len(), second.len()), (100, 100));
    assert_ne!(first, second);
    assert_eq!(random("1").await.len(), 1);
    assert_eq!(random("1024").await.len(), 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypt_json_from_the_real_enclave_names_the_key() {
    let setup = Setup::start().await;
    let out = setup
        .decrypt()
        .args(["--output", "json"])
        .env_credentials(&setup.local.credentials)
        .run()
        .await;
    let expected = format!(
        "{{\n  \"EncryptionAlgorithm\": \"SYMMETRIC_DEFAULT\",\n  \"KeyId\": \"{}\",\n  \"Plaintext\": \"{}\"\n}}\n",
        setup.key.arn,
        B64.encode(MESSAGE)
    );
    assert_eq!(String::from_utf8(out.success().to_vec()).unwrap(), expected);
}

#[tokio::test]
async fn a_failed_write_of_the_result_is_an_error() {
    let fake = FakeEnclave::start(vec![
        Step::Reply(ok_frame()),
        Step::Reply(frame(
            &json!({"Status": "Ok", "Message": B64.encode(MESSAGE)}),
        )),
    ])
    .await;
    let out = Instance::new()
        .args(["--connect", fake.address(), "AAAA"])
        .env_credentials(&random_credentials())
        .stdout_to_full_device()
        .run()
        .await;
    assert_eq!(
        out.failure(),
        "cannot write the result to stdout: No space left on device (os error 28)"
    );
}

// --- upstream compatibility -----------------------------------------------------------------

/// The byte strings of `direction` (`C->S` or `S->C`) in the capture of the C tools' traffic,
/// in order (Python `b'…'` literals).
fn captured(direction: &str) -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/upstream-wire/instance-enclave-frames.log"
    );
    let log = std::fs::read_to_string(path).expect("upstream capture");
    let marker = format!("{direction} b'");
    let mut out = Vec::new();
    let mut rest = log.as_str();
    while let Some(start) = rest.find(&marker) {
        rest = &rest[start + marker.len()..];
        let mut bytes = Vec::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' => {
                    rest = &rest[i + 1..];
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'x')) => {
                        let hex: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
                        bytes.push(u8::from_str_radix(&hex, 16).expect("\\x escape"));
                    }
                    Some((_, escaped)) => bytes.push(escaped as u8),
                    None => panic!("unterminated escape"),
                },
                c => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        out.push(bytes);
    }
    out
}

/// Splits captured bytes into frames (without terminators).
fn frames_of(bytes: &[u8]) -> Vec<&[u8]> {
    let mut frames: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
    assert_eq!(frames.pop(), Some(&[][..]), "ends with a terminator");
    frames
}

#[tokio::test]
async fn works_with_the_upstream_enclave_and_sends_what_upstream_sends() {
    let client = captured("C->S");
    let server = captured("S->C");
    assert_eq!(
        (client.len(), server.len()),
        (4, 4),
        "two sessions captured"
    );
    // The capture's credentials, so the commands can be compared field for field.
    let credentials = |token: Option<&str>| {
        Credentials::new(
            "AKIDEXAMPLE",
            SecretString::new("SECRET".to_owned()),
            token.map(|t| SecretString::new(t.to_owned())),
        )
    };
    let sessions: [(&[&str], Option<&str>); 2] = [
        (
            &[
                "--encryption-context",
                "purpose=test",
                "--encryption-context",
                "k2=v2",
            ],
            Some("TOKEN"),
        ),
        (&["--region", "us-east-1"], None),
    ];
    for (index, (args, token)) in sessions.into_iter().enumerate() {
        // The enclave's replies, byte for byte: spaced JSON, and the stray Error after Decrypt.
        let replies = &server[2 * index..2 * index + 2];
        assert!(replies[1].ends_with(b"{ \"Status\": \"Error\" }\0"));
        let fake = FakeEnclave::start(replies.iter().cloned().map(Step::Reply).collect()).await;
        let instance = Instance::new()
            .args(["--connect", fake.address()])
            .args(args.iter().copied())
            .args(["aGVsbG8gd29ybGQ="])
            .env_credentials(&credentials(token));
        assert_eq!(instance.run().await.success(), b"hello world\n");

        let seen = fake.finish().await;
        assert!(seen.client_closed, "the instance hangs up after one reply");
        let sent: Vec<Value> = seen.frames.iter().map(|f| parse(f)).collect();
        let upstream: Vec<Value> = client[2 * index..2 * index + 2]
            .iter()
            .flat_map(|bytes| frames_of(bytes))
            .map(parse)
            .collect();
        assert_eq!(sent, upstream, "session {index}");
    }
}

// --- region, profiles, input, failures as JSON, usage -----------------------------------------

/// The `SetClient` frame a run sent to a fake enclave that accepts it and answers the decrypt.
async fn set_client_of(instance: Instance) -> Value {
    let reply = frame(&json!({"Status": "Ok", "Message": B64.encode(b"pt")}));
    let fake = FakeEnclave::start(vec![Step::Reply(ok_frame()), Step::Reply(reply)]).await;
    let out = instance
        .args(["--connect", fake.address(), "AAAA"])
        .env_credentials(&random_credentials())
        .run()
        .await;
    assert_eq!(out.success(), b"pt\n");
    parse(&fake.finish().await.frames[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_comes_from_the_flag_environment_config_file_then_imds() {
    let config = "[default]\nregion = ap-south-1\n[profile prod]\nregion = eu-north-1\n";
    let cases: Vec<(Instance, Option<&str>)> = vec![
        (Instance::new(), None),
        (
            Instance::new().default_config_file(config),
            Some("ap-south-1"),
        ),
        (
            Instance::new()
                .default_config_file(config)
                .args(["--profile", "prod"]),
            Some("eu-north-1"),
        ),
        (
            Instance::new()
                .default_config_file(config)
                .env("AWS_PROFILE", "prod"),
            Some("eu-north-1"),
        ),
        (
            Instance::new()
                .default_config_file(config)
                .env("AWS_DEFAULT_REGION", "us-west-1"),
            Some("us-west-1"),
        ),
        (
            Instance::new()
                .default_config_file(config)
                .env("AWS_DEFAULT_REGION", "us-west-1")
                .env("AWS_REGION", "us-east-2"),
            Some("us-east-2"),
        ),
        (
            Instance::new()
                .env("AWS_REGION", "us-east-2")
                .args(["--region", "ca-central-1"]),
            Some("ca-central-1"),
        ),
    ];
    for (instance, expected) in cases {
        let set_client = set_client_of(instance).await;
        assert_eq!(
            set_client.get("AwsRegion").and_then(Value::as_str),
            expected,
            "{set_client}"
        );
    }

    // IMDS last, when it is on and nothing else gives one.
    let mut config = ImdsConfig::new("127.0.0.1:0".parse().unwrap());
    config.region = Some("sa-east-1".to_owned());
    let imds = Imds::start(config).await.unwrap();
    let set_client = set_client_of(Instance::new().imds(&imds.endpoint())).await;
    assert_eq!(set_client["AwsRegion"], "sa-east-1");
    assert_eq!(imds.stats().credentials_served, 0);
    let set_client = set_client_of(
        Instance::new()
            .imds(&imds.endpoint())
            .env("AWS_REGION", "eu-west-3"),
    )
    .await;
    assert_eq!(set_client["AwsRegion"], "eu-west-3");
    assert_eq!(imds.stats().regions_served, 1, "IMDS is not asked then");
}

#[tokio::test]
async fn a_malformed_region_is_a_usage_error_naming_its_source() {
    for (instance, expected) in [
        (
            Instance::new().env("AWS_REGION", "Mars"),
            "invalid region \"Mars\" from AWS_REGION: region name must look like us-east-1",
        ),
        (
            Instance::new().args(["--region", "us_east_1"]),
            "invalid region \"us_east_1\" from --region: region name must look like us-east-1",
        ),
    ] {
        let out = instance
            .args(["--connect", "tcp:127.0.0.1:9", "AAAA"])
            .env_credentials(&random_credentials())
            .run()
            .await;
        assert_eq!(out.failure(), expected);
    }
    let instance = Instance::new().default_config_file("[default]\nregion = eu west\n");
    let path = instance.home().join(".aws/config");
    let out = instance
        .args(["--connect", "tcp:127.0.0.1:9", "AAAA"])
        .env_credentials(&random_credentials())
        .run()
        .await;
    assert_eq!(
        out.failure(),
        format!(
            "invalid region \"eu west\" from profile \"default\" in {}: region name must look like us-east-1",
            path.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_enclave_refuses_a_configured_region_and_the_error_says_where_it_came_from() {
    let setup = Setup::start().await;
    let out = setup
        .decrypt()
        .env("AWS_REGION", "eu-west-1")
        .env_credentials(&setup.local.credentials)
        .run()
        .await;
    let message = out.failure();
    assert!(
        message
            .starts_with("SetClient failed: Could not set region correctly, check configuration."),
        "{message}"
    );
    assert!(
        message.ends_with(" (region \"eu-west-1\" from AWS_REGION)"),
        "{message}"
    );
}

/// A config-file profile with `credentials`' static keys.
fn config_profile(name: &str, credentials: &Credentials) -> String {
    let header = if name == "default" {
        "[default]".to_owned()
    } else {
        format!("[profile {name}]")
    };
    let body = credentials_file(&[("x", credentials)]);
    format!("{header}{}", body.strip_prefix("[x]").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_profiles_give_credentials_and_the_credentials_file_wins() {
    let setup = Setup::start().await;
    let good = setup.new_identity();
    let unknown = random_credentials();

    // Static keys in the config file, [profile NAME].
    let mut instance = setup
        .decrypt()
        .args(["--profile", "prod"])
        .default_config_file(&config_profile("prod", &good));
    instance.watch(&good);
    assert_eq!(instance.run().await.success(), b"Hello, KMS!\n");

    // Both files set keys for the profile: the credentials file's are used.
    let mut instance = setup
        .decrypt()
        .env("AWS_PROFILE", "prod")
        .default_credentials_file(&credentials_file(&[("prod", &good)]))
        .default_config_file(&config_profile("prod", &unknown));
    instance.watch(&good);
    instance.watch(&unknown);
    assert_eq!(instance.run().await.success(), b"Hello, KMS!\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_is_run_through_sh_and_its_failures_are_clear() {
    let setup = Setup::start().await;
    let good = setup.new_identity();
    let dir = tempfile::tempdir().unwrap();
    let document = json!({
        "Version": 1,
        "AccessKeyId": good.access_key_id,
        "SecretAccessKey": good.secret_access_key.expose(),
        "SessionToken": good.session_token.as_ref().unwrap().expose(),
        "Expiration": "2999-01-01T00:00:00Z",
    });
    let json_path = dir.path().join("creds.json");
    std::fs::write(&json_path, document.to_string()).unwrap();
    let config = format!(
        "[default]\ncredential_process = cat '{}' # a comment\n\
         [profile failing]\ncredential_process = echo oops >&2; exit 3\n\
         [profile stale]\ncredential_process = echo '{{\"Version\":1,\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"hunter2\",\"Expiration\":\"2001-01-01T00:00:00Z\"}}'\n\
         [profile role]\nrole_arn = arn:aws:iam::111122223333:role/r\nsource_profile = default\n\
         [profile endless]\ncredential_process = yes\n",
        json_path.display()
    );
    let mut instance = setup.decrypt().default_config_file(&config);
    instance.watch(&good);
    assert_eq!(instance.run().await.success(), b"Hello, KMS!\n");

    for (profile, says) in [
        (
            "failing",
            "(credential_process failed (exit status: 3))".to_owned(),
        ),
        (
            "stale",
            "(credential_process returned credentials that expired at 2001-01-01T00:00:00Z)"
                .to_owned(),
        ),
        (
            "role",
            "(profile \"role\" uses role_arn, which is not supported (static keys and \
             credential_process are))"
                .to_owned(),
        ),
        // A process that prints without end is stopped at the output limit, not buffered.
        (
            "endless",
            "(credential_process printed more than 65536 bytes)".to_owned(),
        ),
    ] {
        let instance = setup
            .decrypt()
            .args(["--profile", profile])
            .default_config_file(&config);
        let path = instance.home().join(".aws/config");
        let out = instance.run().await;
        assert_eq!(out.code, Some(1));
        // The process's own stderr passes through; the error is the last line.
        let message = out
            .stderr
            .lines()
            .find_map(|line| line.strip_prefix("Error: "))
            .unwrap_or_else(|| panic!("no Error line: {}", out.stderr));
        assert!(
            message.ends_with(&format!(
                "profile \"{profile}\" in {} {says}",
                path.display()
            )),
            "{message}"
        );
        assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    }
}

#[tokio::test]
async fn failures_as_json_carry_the_enclave_fields_and_a_hint() {
    let error = frame(&json!({
        "Status": "Error",
        "Message": "Could not decrypt ciphertext: AccessDeniedException: not allowed",
        "ErrorKind": "Kms",
        "KmsErrorType": "AccessDeniedException",
        "KmsStatus": 400,
    }));
    let fake = FakeEnclave::start(vec![Step::Reply(ok_frame()), Step::Reply(error)]).await;
    let out = Instance::new()
        .args(["--connect", fake.address(), "--output", "json", "AAAA"])
        .env_credentials(&random_credentials())
        .run()
        .await;
    let json = out.json_failure();
    assert_eq!(
        json["Message"],
        "Could not decrypt ciphertext: AccessDeniedException: not allowed"
    );
    assert_eq!(json["ErrorKind"], "Kms");
    assert_eq!(json["KmsErrorType"], "AccessDeniedException");
    assert_eq!(json["KmsStatus"], 400);
    let hint = out.hint().expect("a hint");
    assert_eq!(json["Hint"], hint);
    assert!(
        hint.contains("kms:RecipientAttestation:ImageSha384"),
        "{hint}"
    );
    assert!(hint.contains("PCR0"), "{hint}");

    // A local failure: the enclave's fields are null.
    let out = Instance::new()
        .args(["--connect", "tcp:127.0.0.1:9", "--output", "json", "AAAA"])
        .run()
        .await;
    let json = out.json_failure();
    assert!(
        json["Message"]
            .as_str()
            .unwrap()
            .starts_with("no credentials: ")
    );
    for field in ["ErrorKind", "KmsErrorType", "KmsStatus"] {
        assert_eq!(json[field], Value::Null, "{field}");
    }
}

#[tokio::test]
async fn common_failures_get_a_hint() {
    let cases = [
        (
            json!({"Status": "Error", "Message": "Could not decrypt ciphertext: InvalidCiphertextException", "ErrorKind": "Kms", "KmsErrorType": "InvalidCiphertextException", "KmsStatus": 400}),
            "--encryption-context",
        ),
        (
            json!({"Status": "Error", "Message": "Could not decrypt ciphertext: could not connect to KMS (kms.us-east-1.amazonaws.com): TLS: invalid peer certificate: UnknownIssuer", "ErrorKind": "Transport"}),
            "--ca-bundle",
        ),
        (
            json!({"Status": "Error", "Message": "Could not decrypt ciphertext: could not connect to KMS (kms.us-east-1.amazonaws.com): proxy vsock:3:8000: Connection refused (os error 111)", "ErrorKind": "Transport"}),
            "vsock-proxy",
        ),
    ];
    for (reply, says) in cases {
        let fake =
            FakeEnclave::start(vec![Step::Reply(ok_frame()), Step::Reply(frame(&reply))]).await;
        let out = Instance::new()
            .args(["--connect", fake.address(), "AAAA"])
            .env_credentials(&random_credentials())
            .run()
            .await;
        assert_eq!(out.failure(), reply["Message"].as_str().unwrap());
        let hint = out.hint().expect("a hint");
        assert!(hint.contains(says), "{hint}");
    }
    let closed = ClosedPort::new();
    let out = Instance::new()
        .args(["--connect", &format!("tcp:{}", closed.addr()), "AAAA"])
        .env_credentials(&random_credentials())
        .run()
        .await;
    out.failure();
    assert!(out.hint().expect("a hint").contains("enclave running"));
}

#[tokio::test]
async fn the_ciphertext_comes_from_stdin_or_a_file() {
    let reply = frame(&json!({"Status": "Ok", "Message": B64.encode(b"pt")}));
    let ciphertext = B64.encode(b"some ciphertext");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("\n  {ciphertext}\n\n")).unwrap();
    let file_path = file.path().display().to_string();
    for (args, stdin) in [
        (vec!["-"], Some(format!(" {ciphertext}\n"))),
        (vec!["decrypt", "-"], Some(format!("{ciphertext}\r\n"))),
        (vec!["--ciphertext-file", &file_path], None),
        (vec!["decrypt", "--ciphertext-file", &file_path], None),
        (vec!["--ciphertext-file", &file_path, "decrypt"], None),
    ] {
        let fake =
            FakeEnclave::start(vec![Step::Reply(ok_frame()), Step::Reply(reply.clone())]).await;
        let mut instance = Instance::new()
            .args(["--connect", fake.address()])
            .args(args.iter().copied())
            .env_credentials(&random_credentials());
        if let Some(stdin) = stdin {
            instance = instance.stdin(stdin);
        }
        assert_eq!(instance.run().await.success(), b"pt\n", "{args:?}");
        let frames = fake.finish().await.frames;
        assert_eq!(parse(&frames[1])["Ciphertext"], ciphertext.as_str());
    }

    // Both, or an unreadable file, or bad text: usage errors.
    let out = Instance::new()
        .args(["--connect", "tcp:127.0.0.1:9", "decrypt", &ciphertext])
        .args(["--ciphertext-file", &file_path])
        .run()
        .await;
    assert_eq!(
        out.failure(),
        "give the ciphertext either as an argument or with --ciphertext-file, not both"
    );
    let out = Instance::new()
        .args(["--connect", "tcp:127.0.0.1:9", &ciphertext])
        .args(["--ciphertext-file", &file_path])
        .run()
        .await;
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
    let out = Instance::new()
        .args([
            "--connect",
            "tcp:127.0.0.1:9",
            "--ciphertext-file",
            "/nonexistent/ct",
        ])
        .env_credentials(&random_credentials())
        .run()
        .await;
    assert!(
        out.failure()
            .starts_with("cannot read --ciphertext-file /nonexistent/ct: "),
        "{}",
        out.stderr
    );
    let out = Instance::new()
        .args(["--connect", "tcp:127.0.0.1:9", "-"])
        .stdin("not base64!")
        .run()
        .await;
    assert_eq!(
        out.failure(),
        "the ciphertext from standard input is not standard base64"
    );
    // A stream or file far larger than any KMS ciphertext is refused, not read into memory.
    let out = Instance::new()
        .args(["--connect", "tcp:127.0.0.1:9", "-"])
        .stdin("A".repeat(70_000))
        .run()
        .await;
    assert_eq!(
        out.failure(),
        "cannot read the ciphertext from standard input: more than 65536 bytes: not a KMS ciphertext"
    );
}

#[tokio::test]
async fn conflicting_or_ambiguous_input_is_refused_with_exit_1() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--cid", "16", "--connect", "tcp:127.0.0.1:9", "AAAA"],
            "--cid and --connect both give the enclave's address: give one",
        ),
        (
            vec![
                "--connect",
                "tcp:127.0.0.1:9",
                "--encryption-context",
                "a=1",
                "--encryption-context",
                "a=2",
                "AAAA",
            ],
            "--encryption-context key \"a\" given twice",
        ),
        (
            vec![
                "--connect",
                "tcp:127.0.0.1:9",
                "--encryption-context",
                "a=1",
                "decrypt",
                "AAAA",
                "--encryption-context",
                "a=1",
            ],
            "--encryption-context key \"a\" given twice",
        ),
        (
            vec!["--connect", "tcp:127.0.0.1:9", "generate-data-key"],
            "generate-data-key needs --key-id (the KMS key: id, ARN or alias/NAME)",
        ),
    ];
    for (args, expected) in cases {
        let out = Instance::new().args(args.iter().copied()).run().await;
        assert_eq!(out.failure(), expected, "{args:?}");
    }
    // Clap's own usage errors exit 1 too.
    for args in [
        vec!["--connect", "tcp:127.0.0.1:9"],
        vec!["--frobnicate"],
        vec!["generate-random", "--number-of-bytes", "0"],
    ] {
        let out = Instance::new().args(args.iter().copied()).run().await;
        assert_eq!(out.code, Some(1), "{args:?}");
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn options_before_the_subcommand_are_accepted_or_the_error_names_it() {
    let reply =
        json!({"Status": "Ok", "Message": B64.encode(b"k"), "CiphertextBlob": B64.encode(b"c")});
    let fake = FakeEnclave::start(vec![Step::Reply(ok_frame()), Step::Reply(frame(&reply))]).await;
    let out = Instance::new()
        .args(["--connect", fake.address(), "--key-id", "alias/app"])
        .args(["--encryption-context", "a=b", "generate-data-key"])
        .env_credentials(&random_credentials())
        .run()
        .await;
    out.success();
    let command = parse(&fake.finish().await.frames[1]);
    assert_eq!(command["KeyId"], "alias/app");
    assert_eq!(command["EncryptionContext"], json!({"a": "b"}));

    let out = Instance::new()
        .args([
            "--key-spec",
            "AES_128",
            "generate-data-key",
            "--key-id",
            "k",
        ])
        .run()
        .await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains(
            "Hint: --key-spec is an option of generate-data-key: put it after the subcommand's name"
        ),
        "{}",
        out.stderr
    );
    let out = Instance::new()
        .args([
            "generate-data-key",
            "--key-id",
            "k",
            "--key-spec",
            "AES-512",
        ])
        .run()
        .await;
    assert!(
        out.stderr.contains("expected AES_256 or AES_128"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn help_gives_the_orders_and_the_exit_status() {
    let out = Instance::new().args(["--help"]).run().await;
    assert_eq!(out.code, Some(0));
    let help = String::from_utf8(out.stdout.clone()).unwrap();
    let at = |text: &str| {
        help.find(text)
            .unwrap_or_else(|| panic!("{text} not in help:\n{help}"))
    };
    assert!(at("Address:") < at("Credentials:"));
    assert!(at("Credentials:") < at("Request:"));
    assert!(at("Request:") < at("Output:"));
    assert!(at("--cid") < at("--profile"));
    assert!(at("--profile") < at("--region"));
    assert!(at("--region") < at("--output"));
    at("Exit status: 0 success, 1 usage or configuration error or failed operation");
    at("credential_process");
    at("Region (sent as AwsRegion), first found: --region; AWS_REGION; AWS_DEFAULT_REGION;");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_logs_sources_and_the_address_never_secrets() {
    let reply = frame(&json!({"Status": "Ok", "Message": B64.encode(b"pt")}));
    let fake = FakeEnclave::start(vec![Step::Reply(ok_frame()), Step::Reply(reply)]).await;
    let credentials = random_credentials();
    let out = Instance::new()
        .args(["--connect", fake.address(), "-v", "AAAA"])
        .env("AWS_REGION", "eu-west-1")
        .env_credentials(&credentials)
        .run()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, b"pt\n");
    for says in [
        "source=environment",
        "region \"eu-west-1\" from AWS_REGION",
        fake.address(),
        "elapsed_ms",
    ] {
        assert!(out.stderr.contains(says), "{says} in {}", out.stderr);
    }
    // Without -v, nothing.
    let quiet = set_client_of(Instance::new()).await;
    assert!(quiet.get("AwsRegion").is_none());
}

/// As PID 1 in a container the kernel ignores SIGTERM and SIGINT unless the process handles
/// them. Handled, they end the instance with the shell's status (128 + the signal number)
/// instead of the kernel killing it, which is what makes `docker stop` work.
#[test]
fn sigterm_and_sigint_end_a_waiting_instance_with_128_plus_the_signal() {
    use std::io::Read as _;
    use std::os::unix::process::ExitStatusExt as _;

    for (signal, status) in [("TERM", 143), ("INT", 130)] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let home = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(kmstool_tests::bin("kmstool-instance"))
            .env_clear()
            .env("HOME", home.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
            .args(["--connect", &format!("tcp:{address}"), "AQIDBA=="])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The instance has connected and sent SetClient: it now waits for a reply that never
        // comes, with its signal handlers in place.
        let (mut stream, _) = listener.accept().unwrap();
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).unwrap();
        let killed = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(status),
            "SIG{signal}: {:?} (signal {:?})",
            output.status,
            output.status.signal()
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr, format!("Error: stopped by SIG{signal}\n"));
        assert!(output.stdout.is_empty());
    }
}
