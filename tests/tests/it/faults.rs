//! KMS and proxy faults: a slow KMS, connections dropped before and during the
//! reply, throttling, 500s, a certificate for another host, an untrusted CA, a refusing or
//! silent proxy, a failing NSM. Each call ends in a clear error of the right `ErrorKind`, or in
//! success after a bounded number of retries: the emulator (or the stand-in) counts the
//! attempts, which never exceed `--max-attempts` (3) per call.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kmstool_core::address::Address;
use kmstool_core::nsm::Nsm;
use kmstool_core::secret::Credentials;
use kmstool_sim::kms::{CertAuthority, Faults};
use kmstool_sim::local::{Local, LocalOptions};
use kmstool_sim::nsm::{SimConfig, SimNsm, system_clock};
use kmstool_tests::ports::ClosedPort;
use kmstool_tests::robust::{
    Enclave, FailingNsm, RawClient, StandIn, assert_error, assert_ok, generate_random, set_client,
};
use serde_json::Value;

/// The attempt limit (`--max-attempts`, default 3).
const MAX_ATTEMPTS: u64 = 3;

async fn local_with(faults: Faults, args: &[&str]) -> Local {
    Local::start(LocalOptions {
        faults,
        enclave_args: args.iter().map(|a| (*a).to_owned()).collect(),
        ..LocalOptions::default()
    })
    .await
    .expect("local setup")
}

/// Sets the client and asks for 16 random bytes on a fresh connection; returns the reply.
async fn generate(address: &Address, credentials: &Credentials) -> Value {
    let mut client = RawClient::connect(address).await;
    assert_ok(&client.call(&set_client(credentials)).await);
    client.call(&generate_random(16)).await
}

/// Requests the emulator has read so far.
fn kms_requests(local: &Local) -> u64 {
    local.kms.stats().requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_kms_is_waited_for_within_the_deadline_and_cut_off_past_it() {
    let slow = Faults {
        latency: Duration::from_millis(200),
        ..Faults::default()
    };
    let local = local_with(slow, &["--kms-timeout-ms", "1500"]).await;
    let reply = generate(&local.enclave, &local.credentials).await;
    assert_eq!(assert_ok(&reply).len(), 16);

    local.kms.set_faults(Faults {
        latency: Duration::from_secs(5),
        ..Faults::default()
    });
    let before = kms_requests(&local);
    let reply = generate(&local.enclave, &local.credentials).await;
    assert_error(
        &reply,
        "Timeout",
        "Could not generate random bytes: KMS did not answer within 1500 ms (1 attempt)",
    );
    assert_eq!(
        kms_requests(&local) - before,
        1,
        "no retry after the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_before_the_reply_is_retried() {
    let faults = Faults {
        drop_first: 2,
        ..Faults::default()
    };
    let local = local_with(faults, &[]).await;
    assert_eq!(
        assert_ok(&generate(&local.enclave, &local.credentials).await).len(),
        16
    );
    assert_eq!(kms_requests(&local), 3, "two dropped, the third answered");
    assert_eq!(local.kms.stats().faults_injected, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_every_time_ends_after_the_attempt_limit() {
    let faults = Faults {
        drop_first: 100,
        ..Faults::default()
    };
    let local = local_with(faults, &[]).await;
    let reply = generate(&local.enclave, &local.credentials).await;
    assert_error(&reply, "Transport", "Could not generate random bytes: ");
    assert_eq!(kms_requests(&local), MAX_ATTEMPTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_dropped_is_resent_at_most_once_per_attempt() {
    let local = local_with(Faults::default(), &[]).await;
    assert_ok(&generate(&local.enclave, &local.credentials).await);
    assert_eq!(local.enclave_state.kms.idle_connections(), 1, "pooled");
    // A pooled connection closed before any answer byte looks like one KMS closed while it
    // sat idle: the request goes again on a fresh connection, without counting an attempt.
    // Even when every connection drops, that at most doubles the requests.
    local.kms.set_faults(Faults {
        drop_first: 100,
        ..Faults::default()
    });
    let before = kms_requests(&local);
    let reply = generate(&local.enclave, &local.credentials).await;
    assert_error(&reply, "Transport", "Could not generate random bytes: ");
    let sent = kms_requests(&local) - before;
    assert!(
        (MAX_ATTEMPTS..=2 * MAX_ATTEMPTS).contains(&sent),
        "{sent} requests for one call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_during_the_reply_is_retried_then_given_up() {
    let faults = Faults {
        truncate_first: 2,
        ..Faults::default()
    };
    let local = local_with(faults, &[]).await;
    assert_eq!(
        assert_ok(&generate(&local.enclave, &local.credentials).await).len(),
        16
    );
    assert_eq!(kms_requests(&local), 3, "two cut off, the third whole");
    assert_eq!(local.kms.stats().faults_injected, 2);

    local.kms.set_faults(Faults {
        truncate_first: 100,
        ..Faults::default()
    });
    let before = kms_requests(&local);
    let reply = generate(&local.enclave, &local.credentials).await;
    assert_error(&reply, "Transport", "Could not generate random bytes: ");
    assert_eq!(kms_requests(&local) - before, MAX_ATTEMPTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_then_reported_with_its_type() {
    let faults = Faults {
        throttle_first: 2,
        ..Faults::default()
    };
    let local = local_with(faults, &[]).await;
    assert_eq!(
        assert_ok(&generate(&local.enclave, &local.credentials).await).len(),
        16
    );
    assert_eq!(kms_requests(&local), 3);

    // Five clients throttled at once: each gives up after its attempts, no more.
    local.kms.set_faults(Faults {
        throttle_first: 1000,
        ..Faults::default()
    });
    let before = kms_requests(&local);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (address, credentials) = (local.enclave.clone(), local.credentials.clone());
        clients.spawn(async move { generate(&address, &credentials).await });
    }
    while let Some(reply) = clients.join_next().await {
        let reply = reply.expect("client task");
        assert_error(
            &reply,
            "Kms",
            "Could not generate random bytes: ThrottlingException: Rate exceeded",
        );
        assert_eq!(reply["KmsErrorType"], "ThrottlingException");
        assert_eq!(reply["KmsStatus"], 400);
    }
    assert_eq!(kms_requests(&local) - before, 5 * MAX_ATTEMPTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_are_retried_then_reported_with_their_type() {
    let faults = Faults {
        fail_500_first: 2,
        ..Faults::default()
    };
    let local = local_with(faults, &[]).await;
    assert_eq!(
        assert_ok(&generate(&local.enclave, &local.credentials).await).len(),
        16
    );
    assert_eq!(kms_requests(&local), 3);

    local.kms.set_faults(Faults {
        fail_500_first: 100,
        ..Faults::default()
    });
    let before = kms_requests(&local);
    let reply = generate(&local.enclave, &local.credentials).await;
    assert_error(
        &reply,
        "Kms",
        "Could not generate random bytes: KMSInternalException",
    );
    assert_eq!(reply["KmsStatus"], 500);
    assert_eq!(kms_requests(&local) - before, MAX_ATTEMPTS);

    // With --max-attempts 1 nothing is retried.
    let local = local_with(faults_500(), &["--max-attempts", "1"]).await;
    let reply = generate(&local.enclave, &local.credentials).await;
    assert_error(&reply, "Kms", "Could not generate random bytes: ");
    assert_eq!(kms_requests(&local), 1);
}

fn faults_500() -> Faults {
    Faults {
        fail_500_first: 100,
        ..Faults::default()
    }
}

fn sim_nsm() -> Arc<dyn Nsm> {
    Arc::new(SimNsm::new(SimConfig::default(), system_clock()).expect("simulated NSM"))
}

/// An enclave reaching KMS through `proxy`, trusting `ca_bundle` on top of Mozilla's roots.
async fn enclave_behind(
    proxy: &StandIn,
    ca_bundle: Option<&tempfile::NamedTempFile>,
    nsm: Arc<dyn Nsm>,
) -> Enclave {
    let mut args = vec![
        "--proxy".to_owned(),
        format!("tcp:{}", proxy.addr),
        "--region".to_owned(),
        "us-east-1".to_owned(),
        "--connect-timeout-ms".to_owned(),
        "1000".to_owned(),
    ];
    if let Some(file) = ca_bundle {
        args.extend(["--ca-bundle".to_owned(), file.path().display().to_string()]);
    }
    Enclave::start(&args, nsm).await
}

/// Credentials nobody checks: these calls never reach a KMS.
fn any_credentials() -> Credentials {
    Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_is_refused_without_retry() {
    let ca = CertAuthority::generate().expect("CA");
    let ca_file = kmstool_tests::temp_file("kmstool-robust-ca", ca.cert_pem().as_bytes());
    let impostor = StandIn::tls(ca.leaf("kms.eu-west-1.amazonaws.com").expect("leaf")).await;
    let enclave = enclave_behind(&impostor, Some(&ca_file), sim_nsm()).await;
    let reply = generate(&enclave.address, &any_credentials()).await;
    assert_error(
        &reply,
        "Transport",
        "Could not generate random bytes: TLS with KMS failed (kms.us-east-1.amazonaws.com)",
    );
    let message = reply["Message"].as_str().expect("Message");
    assert!(
        message.contains("invalid peer certificate: certificate not valid for name"),
        "{message}"
    );
    assert_eq!(
        impostor.accepted(),
        1,
        "a certificate failure is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_is_refused_without_retry() {
    let trusted = CertAuthority::generate().expect("CA");
    let ca_file = kmstool_tests::temp_file("kmstool-robust-ca", trusted.cert_pem().as_bytes());
    let untrusted = CertAuthority::generate().expect("CA");
    let impostor = StandIn::tls(untrusted.leaf("kms.us-east-1.amazonaws.com").expect("leaf")).await;
    let enclave = enclave_behind(&impostor, Some(&ca_file), sim_nsm()).await;
    let reply = generate(&enclave.address, &any_credentials()).await;
    assert_error(
        &reply,
        "Transport",
        "Could not generate random bytes: TLS with KMS failed (kms.us-east-1.amazonaws.com)",
    );
    let message = reply["Message"].as_str().expect("Message");
    assert!(message.contains("invalid peer certificate"), "{message}");
    assert_eq!(
        impostor.accepted(),
        1,
        "a certificate failure is not retried"
    );

    // With Mozilla's roots only, the issuer is not even known.
    let enclave = enclave_behind(&impostor, None, sim_nsm()).await;
    let reply = generate(&enclave.address, &any_credentials()).await;
    let message = reply["Message"].as_str().expect("Message");
    assert_eq!(reply["ErrorKind"], "Transport", "{reply}");
    assert!(
        message.contains("invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
    assert_eq!(impostor.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_ends_in_a_transport_error_after_the_attempts() {
    // A proxy that accepts, then hangs up (as vsock-proxy does for a host off its allowlist).
    let proxy = StandIn::closing().await;
    let enclave = enclave_behind(&proxy, None, sim_nsm()).await;
    let reply = generate(&enclave.address, &any_credentials()).await;
    assert_error(&reply, "Transport", "Could not generate random bytes: ");
    assert_eq!(proxy.accepted(), MAX_ATTEMPTS);

    // Nothing listening at all.
    let closed = ClosedPort::new();
    let args = ["--proxy".to_owned(), format!("tcp:{}", closed.addr())];
    let enclave = Enclave::start(&args, sim_nsm()).await;
    let reply = generate(&enclave.address, &any_credentials()).await;
    assert_error(
        &reply,
        "Transport",
        "Could not generate random bytes: could not connect to KMS",
    );
    let message = reply["Message"].as_str().expect("Message");
    assert!(message.contains("refused"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_never_answers_is_cut_off_at_the_connect_timeout_and_retried() {
    let proxy = StandIn::silent().await;
    let enclave = enclave_behind(&proxy, None, sim_nsm()).await;
    let reply = generate(&enclave.address, &any_credentials()).await;
    assert_error(&reply, "Transport", "Could not generate random bytes: ");
    let message = reply["Message"].as_str().expect("Message");
    assert!(
        message.contains("no TLS handshake within 1000 ms"),
        "{message}"
    );
    // A slow handshake may be a slow proxy: retried, unlike a refused certificate.
    assert_eq!(proxy.accepted(), MAX_ATTEMPTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nsm_error_ends_in_an_attestation_error_without_calling_kms() {
    let nsm = Arc::new(FailingNsm::default());
    let proxy = StandIn::closing().await;
    let enclave = enclave_behind(&proxy, None, Arc::clone(&nsm) as Arc<dyn Nsm>).await;
    let mut client = RawClient::connect(&enclave.address).await;
    assert_ok(&client.call(&set_client(&any_credentials())).await);
    let reply = client.call(&generate_random(16)).await;
    assert_error(
        &reply,
        "Attestation",
        "Could not generate random bytes: attestation failed",
    );
    let reply = client
        .call(&serde_json::json!({"Operation": "Decrypt", "Ciphertext": "AAAA"}))
        .await;
    assert_error(
        &reply,
        "Attestation",
        "Could not decrypt ciphertext: attestation failed",
    );
    assert_eq!(nsm.requests.load(Ordering::Relaxed), 2, "one try per call");
    assert_eq!(proxy.accepted(), 0, "never an unattested KMS call");
}
