//! The library clients (`kmstool_runtime_tokio::KmsClient`, `kmstool_runtime_smol`'s) against
//! the simulated NSM and the KMS emulator: the same scenarios on both runtimes. Key pairs and
//! derived secrets are checked with RustCrypto's arithmetic (the emulator uses AWS-LC's).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use kmstool_core::address::Address;
use kmstool_core::kms::client::{ClientConfig, ClientError, ProvideCredentials};
use kmstool_core::protocol::{
    Decrypt, DeriveSharedSecret, GenerateDataKeyPair, KeyAgreementAlgorithm,
};
use kmstool_core::secret::Credentials;
use kmstool_core::tls::Roots;
use kmstool_sim::kms::KeySpec;
use kmstool_sim::local::{Local, LocalOptions};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _};

/// A client configuration for `local`'s emulator and simulated NSM.
fn config(local: &Local) -> ClientConfig {
    ClientConfig::new(local.kms.region())
        .nsm(Arc::clone(&local.nsm) as _)
        .proxy(Address::Tcp {
            host: "127.0.0.1".into(),
            port: local.kms.local_addr().port(),
        })
        .trust_roots(Roots::ExtraOnly)
        .extra_roots_pem(local.kms.ca_pem().as_bytes())
}

/// Counts how often the client asks; its credentials expire `lifetime` after being handed out.
struct Provider {
    credentials: Credentials,
    lifetime: Duration,
    asked: Arc<AtomicU32>,
}

impl ProvideCredentials for Provider {
    fn provide(&self) -> Result<(Credentials, Option<SystemTime>), String> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Ok((
            self.credentials.clone(),
            Some(SystemTime::now() + self.lifetime),
        ))
    }
}

/// The scenarios, for a client type with `new(ClientConfig)` and the shared methods. Each
/// returns nothing and panics on a failed check.
macro_rules! scenarios {
    ($Client:ty) => {
        /// A key pair's private key matches its public key; its encrypted copy decrypts to it.
        pub async fn key_pair(local: Arc<Local>) {
            let local = &*local;
            let key = local.kms.create_key("client key pairs");
            let config = config(local).credentials(local.credentials.clone());
            let client = <$Client>::new(config).await.expect("client");
            let pair = client
                .generate_data_key_pair(GenerateDataKeyPair {
                    key_id: key.key_id.clone(),
                    key_pair_spec: "ECC_NIST_P256".into(),
                    encryption_context: Default::default(),
                    grant_tokens: Vec::new(),
                    dry_run: false,
                })
                .await
                .expect("GenerateDataKeyPair");
            let secret =
                p256::SecretKey::from_pkcs8_der(pair.private_key.expose()).expect("PKCS #8");
            let derived = secret.public_key().to_public_key_der().expect("SPKI");
            assert_eq!(derived.as_bytes(), &pair.public_key[..]);
            assert_eq!(pair.key_pair_spec.as_deref(), Some("ECC_NIST_P256"));
            let again = client
                .decrypt(Decrypt::new(pair.private_key_ciphertext_blob.clone()))
                .await
                .expect("Decrypt");
            assert_eq!(again.plaintext, pair.private_key);
            // DryRun reaches KMS, which checks the request and does not make a pair.
            let error = client
                .generate_data_key_pair(GenerateDataKeyPair {
                    key_id: key.key_id.clone(),
                    key_pair_spec: "ECC_NIST_P256".into(),
                    encryption_context: Default::default(),
                    grant_tokens: Vec::new(),
                    dry_run: true,
                })
                .await
                .expect_err("a dry run");
            let ClientError::Kms { error_type, .. } = &error else {
                panic!("{error:?}")
            };
            assert_eq!(error_type.as_deref(), Some("DryRunOperationException"));
            // Debug never shows the private key.
            let shown = format!("{pair:?}");
            assert!(
                !shown.contains(&format!("{:?}", &pair.private_key.expose()[..8])),
                "{shown}"
            );
        }

        /// A derived secret equals ECDH on this side; a symmetric key is KMS's typed error.
        pub async fn shared_secret(local: Arc<Local>) {
            let local = &*local;
            let agreement = local
                .kms
                .create_agreement_key("client ecdh", KeySpec::EccNistP256)
                .expect("KEY_AGREEMENT key");
            let kms_public = local.kms.public_key(&agreement.key_id).expect("public key");
            let ours = p256::SecretKey::from_bytes(&[0x33; 32].into()).expect("scalar");
            let our_public = ours
                .public_key()
                .to_public_key_der()
                .expect("SPKI")
                .to_vec();
            let client = <$Client>::new(config(local).credentials(local.credentials.clone()))
                .await
                .expect("client");
            let derive = |key_id: &str| DeriveSharedSecret {
                key_id: key_id.to_owned(),
                public_key: our_public.clone(),
                key_agreement_algorithm: KeyAgreementAlgorithm::Ecdh,
                grant_tokens: Vec::new(),
                dry_run: false,
            };
            let shared = client
                .derive_shared_secret(derive(&agreement.key_id))
                .await
                .expect("DeriveSharedSecret");
            let theirs = p256::PublicKey::from_public_key_der(&kms_public).expect("KMS's SPKI");
            let expected = p256::ecdh::diffie_hellman(ours.to_nonzero_scalar(), theirs.as_affine());
            assert_eq!(shared.secret.expose(), &expected.raw_secret_bytes()[..]);
            assert_eq!(shared.key_origin.as_deref(), Some("AWS_KMS"));

            let symmetric = local.kms.create_key("not for ECDH");
            let error = client
                .derive_shared_secret(derive(&symmetric.key_id))
                .await
                .expect_err("a symmetric key cannot agree");
            let ClientError::Kms {
                error_type, status, ..
            } = &error
            else {
                panic!("{error:?}")
            };
            assert_eq!(error_type.as_deref(), Some("InvalidKeyUsageException"));
            assert_eq!(*status, 400);
        }

        /// With KMS's clock 15 minutes ahead, the first call learns the offset from the refusal
        /// and succeeds; the client's clones then sign at KMS's time from the start.
        pub async fn clock_skew(local: Arc<Local>) {
            let local = &*local;
            local.kms.clock().set_offset_secs(15 * 60);
            let client = <$Client>::new(config(local).credentials(local.credentials.clone()))
                .await
                .expect("client");
            let refused = || {
                local
                    .kms
                    .stats()
                    .recent
                    .iter()
                    .filter(|r| r.error_type.as_deref() == Some("InvalidSignatureException"))
                    .count()
            };
            let before = refused();
            assert_eq!(client.generate_random(8).await.expect("random").len(), 8);
            assert_eq!(
                refused(),
                before + 1,
                "the first request was signed at our time"
            );
            let clone = client.clone();
            assert_eq!(clone.generate_random(8).await.expect("random").len(), 8);
            assert_eq!(refused(), before + 1, "the clone signed at KMS's time");
            local.kms.clock().set_offset_secs(0);
        }

        /// Bad input never reaches KMS; a provider is asked again only near expiry; an
        /// untrusted certificate is a TLS error; clones share one pool.
        pub async fn errors_credentials_and_clones(local: Arc<Local>) {
            let local = &*local;
            let asked = Arc::new(AtomicU32::new(0));
            let provider = Provider {
                credentials: local.credentials.clone(),
                lifetime: Duration::from_secs(3600),
                asked: Arc::clone(&asked),
            };
            let client = <$Client>::new(config(local).credentials_provider(provider))
                .await
                .expect("client");
            let before = local.kms.stats().requests;
            let error = client.generate_random(0).await.expect_err("0 bytes");
            assert!(matches!(error, ClientError::BadInput(_)), "{error:?}");
            assert_eq!(local.kms.stats().requests, before, "nothing was sent");

            let connections = local.kms.stats().connections;
            let clone = client.clone();
            assert_eq!(client.generate_random(16).await.expect("random").len(), 16);
            assert_eq!(clone.generate_random(16).await.expect("random").len(), 16);
            assert_eq!(asked.load(Ordering::SeqCst), 1, "cached for an hour");
            assert_eq!(
                local.kms.stats().connections,
                connections + 1,
                "the clone reused the first call's connection"
            );

            let short = Arc::new(AtomicU32::new(0));
            let provider = Provider {
                credentials: local.credentials.clone(),
                lifetime: Duration::from_secs(60),
                asked: Arc::clone(&short),
            };
            let client = <$Client>::new(config(local).credentials_provider(provider))
                .await
                .expect("client");
            for _ in 0..2 {
                client.generate_random(8).await.expect("random");
            }
            assert_eq!(
                short.load(Ordering::SeqCst),
                2,
                "within five minutes of expiry"
            );

            // An empty CA bundle is refused when the client is made.
            let empty = config(local)
                .extra_roots_pem(Vec::new())
                .credentials(local.credentials.clone());
            let error = <$Client>::new(empty).await.expect_err("no certificate");
            assert!(matches!(error, ClientError::BadInput(_)), "{error:?}");
            // Mozilla's roots do not include the emulator's CA.
            let untrusted = ClientConfig::new(local.kms.region())
                .nsm(Arc::clone(&local.nsm) as _)
                .proxy(Address::Tcp {
                    host: "127.0.0.1".into(),
                    port: local.kms.local_addr().port(),
                })
                .trust_roots(Roots::MozillaAndExtra)
                .credentials(local.credentials.clone());
            let client = <$Client>::new(untrusted).await.expect("client");
            let error = client
                .generate_random(8)
                .await
                .expect_err("untrusted emulator");
            assert!(matches!(error, ClientError::Tls(_)), "{error:?}");
        }
    };
}

mod on_tokio {
    use super::*;
    scenarios!(kmstool_runtime_tokio::KmsClient);
}

mod on_smol {
    use super::*;
    scenarios!(kmstool_runtime_smol::kms_client::KmsClient);
}

async fn local() -> Arc<Local> {
    Arc::new(Local::start(LocalOptions::default()).await.expect("local"))
}

/// Runs a smol scenario on its own thread, beside the tokio runtime the simulation runs on.
async fn on_smol<F>(local: Arc<Local>, scenario: fn(Arc<Local>) -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::task::spawn_blocking(move || smol::block_on(scenario(local)))
        .await
        .expect("the smol scenario passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_pairs_match_on_both_runtimes() {
    let local = local().await;
    on_tokio::key_pair(Arc::clone(&local)).await;
    on_smol(local, on_smol::key_pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_secrets_match_on_both_runtimes() {
    let local = local().await;
    on_tokio::shared_secret(Arc::clone(&local)).await;
    on_smol(local, on_smol::shared_secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_credentials_and_clones_on_both_runtimes() {
    let local = local().await;
    on_tokio::errors_credentials_and_clones(Arc::clone(&local)).await;
    on_smol(local, on_smol::errors_credentials_and_clones).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_on_both_runtimes() {
    let local = local().await;
    on_tokio::clock_skew(Arc::clone(&local)).await;
    on_smol(local, on_smol::clock_skew).await;
}
