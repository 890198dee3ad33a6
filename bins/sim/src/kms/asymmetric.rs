//! Asymmetric key material: the data key pairs of `GenerateDataKeyPair` and the ECDH key pairs
//! behind `KEY_AGREEMENT` KMS keys (`GetPublicKey`, `DeriveSharedSecret`).
//!
//! Encodings are KMS's: public keys are DER X.509 SubjectPublicKeyInfo ("The value is a
//! DER-encoded X.509 public key, also known as SubjectPublicKeyInfo (SPKI), as defined in
//! RFC 5280", API Reference, GetPublicKey and GenerateDataKeyPair `PublicKey`), private keys are
//! DER PKCS#8 PrivateKeyInfo ("The plaintext private key ... is a DER-encoded PKCS8
//! PrivateKeyInfo, as defined in RFC 5958", API Reference, GenerateDataKeyPair
//! `PrivateKeyPlaintext`), and a shared secret is the raw ECDH x-coordinate (API Reference,
//! DeriveSharedSecret: KMS returns "the raw shared secret" of the ECC CDH primitive).
//!
//! AWS-LC makes the RSA and NIST-curve keys and computes ECDH; it has neither secp256k1 nor SM2,
//! which RustCrypto's `k256` and `sm2` make. Private keys live only in [`Zeroizing`] buffers or
//! inside AWS-LC (which clears them when it frees them) and no `Debug` shows them.

use std::fmt;

use aws_lc_rs::agreement::{
    self, ECDH_P256, ECDH_P384, ECDH_P521, ParsedPublicKey, ParsedPublicKeyFormat,
    UnparsedPublicKey,
};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use zeroize::Zeroizing;

use super::error::KmsError;
use super::keystore::fill_random;

/// The `KeySpec` of a KMS key the emulator can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// `SYMMETRIC_DEFAULT`: AES-256-GCM.
    SymmetricDefault,
    /// `ECC_NIST_P256`.
    EccNistP256,
    /// `ECC_NIST_P384`.
    EccNistP384,
    /// `ECC_NIST_P521`.
    EccNistP521,
}

impl KeySpec {
    /// KMS's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::SymmetricDefault => "SYMMETRIC_DEFAULT",
            Self::EccNistP256 => "ECC_NIST_P256",
            Self::EccNistP384 => "ECC_NIST_P384",
            Self::EccNistP521 => "ECC_NIST_P521",
        }
    }

    /// The ECDH algorithm of an elliptic-curve spec.
    fn agreement(self) -> Option<&'static agreement::Algorithm> {
        match self {
            Self::SymmetricDefault => None,
            Self::EccNistP256 => Some(&ECDH_P256),
            Self::EccNistP384 => Some(&ECDH_P384),
            Self::EccNistP521 => Some(&ECDH_P521),
        }
    }
}

/// Every `KeySpec` KMS knows (API Reference, CreateKey, `KeySpec` valid values), for messages.
pub const KMS_KEY_SPECS: &str = "[RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384, \
     ECC_NIST_P521, ECC_SECG_P256K1, SYMMETRIC_DEFAULT, HMAC_224, HMAC_256, HMAC_384, HMAC_512, \
     SM2, ML_DSA_44, ML_DSA_65, ML_DSA_87]";

/// Every `KeyUsage` KMS knows (API Reference, CreateKey, `KeyUsage` valid values).
pub const KMS_KEY_USAGES: &str =
    "[SIGN_VERIFY, ENCRYPT_DECRYPT, GENERATE_VERIFY_MAC, KEY_AGREEMENT]";

/// The `KeyUsage` of a KMS key the emulator can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUsage {
    /// `ENCRYPT_DECRYPT`.
    EncryptDecrypt,
    /// `KEY_AGREEMENT`.
    KeyAgreement,
}

impl KeyUsage {
    /// KMS's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::EncryptDecrypt => "ENCRYPT_DECRYPT",
            Self::KeyAgreement => "KEY_AGREEMENT",
        }
    }
}

/// Decides the spec and usage of a new key from CreateKey's `KeySpec` and `KeyUsage`, refusing
/// what KMS refuses.
///
/// Modelled on the KMS Developer Guide's key-spec table ("Choosing a KMS key type", key usage
/// per key spec) and the API Reference, CreateKey, `KeyUsage`: symmetric encryption keys are
/// `ENCRYPT_DECRYPT` only; RSA keys `ENCRYPT_DECRYPT` or `SIGN_VERIFY`; NIST-curve keys
/// `SIGN_VERIFY` or `KEY_AGREEMENT`; `ECC_SECG_P256K1` `SIGN_VERIFY` only; HMAC keys
/// `GENERATE_VERIFY_MAC` only; ML-DSA keys `SIGN_VERIFY` only; SM2 (China Regions only)
/// `ENCRYPT_DECRYPT`, `SIGN_VERIFY` or `KEY_AGREEMENT`. `KeyUsage` defaults to
/// `ENCRYPT_DECRYPT` and `KeySpec` to `SYMMETRIC_DEFAULT`. A combination KMS refuses gets
/// KMS's wording, "KeyUsage X is not compatible with KeySpec Y"; a valid one the emulator does
/// not implement says so.
pub fn create_key_spec(
    key_spec: Option<&str>,
    key_usage: Option<&str>,
) -> Result<(KeySpec, KeyUsage), KmsError> {
    let spec = key_spec.unwrap_or("SYMMETRIC_DEFAULT");
    let usage = key_usage.unwrap_or("ENCRYPT_DECRYPT");
    let valid_usages: &[&str] = match spec {
        "SYMMETRIC_DEFAULT" => &["ENCRYPT_DECRYPT"],
        "RSA_2048" | "RSA_3072" | "RSA_4096" => &["ENCRYPT_DECRYPT", "SIGN_VERIFY"],
        "ECC_NIST_P256" | "ECC_NIST_P384" | "ECC_NIST_P521" => &["SIGN_VERIFY", "KEY_AGREEMENT"],
        "ECC_SECG_P256K1" | "ML_DSA_44" | "ML_DSA_65" | "ML_DSA_87" => &["SIGN_VERIFY"],
        "HMAC_224" | "HMAC_256" | "HMAC_384" | "HMAC_512" => &["GENERATE_VERIFY_MAC"],
        "SM2" => &["ENCRYPT_DECRYPT", "SIGN_VERIFY", "KEY_AGREEMENT"],
        other => {
            return Err(KmsError::constraint(
                other,
                "keySpec",
                &format!("Member must satisfy enum value set: {KMS_KEY_SPECS}"),
            ));
        }
    };
    if ![
        "SIGN_VERIFY",
        "ENCRYPT_DECRYPT",
        "GENERATE_VERIFY_MAC",
        "KEY_AGREEMENT",
    ]
    .contains(&usage)
    {
        return Err(KmsError::constraint(
            usage,
            "keyUsage",
            &format!("Member must satisfy enum value set: {KMS_KEY_USAGES}"),
        ));
    }
    if !valid_usages.contains(&usage) {
        return Err(KmsError::validation(format!(
            "KeyUsage {usage} is not compatible with KeySpec {spec}"
        )));
    }
    match (spec, usage) {
        ("SYMMETRIC_DEFAULT", _) => Ok((KeySpec::SymmetricDefault, KeyUsage::EncryptDecrypt)),
        ("ECC_NIST_P256", "KEY_AGREEMENT") => Ok((KeySpec::EccNistP256, KeyUsage::KeyAgreement)),
        ("ECC_NIST_P384", "KEY_AGREEMENT") => Ok((KeySpec::EccNistP384, KeyUsage::KeyAgreement)),
        ("ECC_NIST_P521", "KEY_AGREEMENT") => Ok((KeySpec::EccNistP521, KeyUsage::KeyAgreement)),
        _ => Err(KmsError::validation(format!(
            "The emulator does not support KeySpec {spec} with KeyUsage {usage}; it creates \
             SYMMETRIC_DEFAULT ENCRYPT_DECRYPT keys and ECC_NIST_P256, ECC_NIST_P384 or \
             ECC_NIST_P521 KEY_AGREEMENT keys."
        ))),
    }
}

/// The `KeyPairSpec` of GenerateDataKeyPair (API Reference, GenerateDataKeyPair, `KeyPairSpec`
/// valid values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPairSpec {
    /// `RSA_2048`.
    Rsa2048,
    /// `RSA_3072`.
    Rsa3072,
    /// `RSA_4096`.
    Rsa4096,
    /// `ECC_NIST_P256`.
    EccNistP256,
    /// `ECC_NIST_P384`.
    EccNistP384,
    /// `ECC_NIST_P521`.
    EccNistP521,
    /// `ECC_SECG_P256K1`.
    EccSecgP256k1,
    /// `SM2` (China Regions only at KMS; the emulator serves it in any region).
    Sm2,
}

impl KeyPairSpec {
    /// Every spec, in the order of KMS's enum.
    pub const ALL: [KeyPairSpec; 8] = [
        Self::Rsa2048,
        Self::Rsa3072,
        Self::Rsa4096,
        Self::EccNistP256,
        Self::EccNistP384,
        Self::EccNistP521,
        Self::EccSecgP256k1,
        Self::Sm2,
    ];

    /// KMS's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rsa2048 => "RSA_2048",
            Self::Rsa3072 => "RSA_3072",
            Self::Rsa4096 => "RSA_4096",
            Self::EccNistP256 => "ECC_NIST_P256",
            Self::EccNistP384 => "ECC_NIST_P384",
            Self::EccNistP521 => "ECC_NIST_P521",
            Self::EccSecgP256k1 => "ECC_SECG_P256K1",
            Self::Sm2 => "SM2",
        }
    }

    /// The spec `name` names; otherwise the Coral framework's enum-constraint
    /// `ValidationException`, as KMS answers an unknown `KeyPairSpec`.
    pub fn parse(name: &str) -> Result<Self, KmsError> {
        Self::ALL
            .into_iter()
            .find(|spec| spec.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                KmsError::constraint(
                    name,
                    "keyPairSpec",
                    &format!("Member must satisfy enum value set: [{}]", names.join(", ")),
                )
            })
    }
}

/// A data key pair: the public key (DER SPKI) and the private key (DER PKCS#8).
pub struct DataKeyPair {
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// DER PKCS#8 PrivateKeyInfo.
    pub private_key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for DataKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyPair")
            .field("public_key", &hex::encode(&self.public_key))
            .field("private_key", &"[redacted]")
            .finish()
    }
}

/// Makes a fresh key pair of `spec`.
pub fn generate_data_key_pair(spec: KeyPairSpec) -> Result<DataKeyPair, KmsError> {
    match spec {
        KeyPairSpec::Rsa2048 => rsa_pair(KeySize::Rsa2048),
        KeyPairSpec::Rsa3072 => rsa_pair(KeySize::Rsa3072),
        KeyPairSpec::Rsa4096 => rsa_pair(KeySize::Rsa4096),
        KeyPairSpec::EccNistP256 => AgreementKey::generate(KeySpec::EccNistP256)?.into_pair(),
        KeyPairSpec::EccNistP384 => AgreementKey::generate(KeySpec::EccNistP384)?.into_pair(),
        KeyPairSpec::EccNistP521 => AgreementKey::generate(KeySpec::EccNistP521)?.into_pair(),
        KeyPairSpec::EccSecgP256k1 => secp256k1_pair(),
        KeyPairSpec::Sm2 => sm2_pair(),
    }
}

fn rsa_pair(size: KeySize) -> Result<DataKeyPair, KmsError> {
    let private = PrivateDecryptingKey::generate(size).map_err(|_| KmsError::internal())?;
    let pkcs8: Pkcs8V1Der<'static> = private.as_der().map_err(|_| KmsError::internal())?;
    let spki: PublicKeyX509Der<'static> = private
        .public_key()
        .as_der()
        .map_err(|_| KmsError::internal())?;
    Ok(DataKeyPair {
        public_key: spki.as_ref().to_vec(),
        private_key: Zeroizing::new(pkcs8.as_ref().to_vec()),
    })
}

/// A key pair on a RustCrypto curve: a scalar drawn from AWS-LC's RNG by rejection (a value of
/// zero or not below the group order is drawn again), PKCS#8 and SPKI by the `pkcs8` crate.
macro_rules! rustcrypto_pair {
    ($curve:ident) => {{
        use $curve::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
        let secret = loop {
            // Both curves have 32-byte scalars.
            let mut bytes = Zeroizing::new([0u8; 32]);
            fill_random(bytes.as_mut_slice());
            if let Ok(secret) = $curve::SecretKey::from_slice(bytes.as_slice()) {
                break secret;
            }
        };
        let pkcs8 = secret.to_pkcs8_der().map_err(|_| KmsError::internal())?;
        let spki = secret
            .public_key()
            .to_public_key_der()
            .map_err(|_| KmsError::internal())?;
        Ok(DataKeyPair {
            public_key: spki.as_bytes().to_vec(),
            private_key: Zeroizing::new(pkcs8.as_bytes().to_vec()),
        })
    }};
}

fn secp256k1_pair() -> Result<DataKeyPair, KmsError> {
    rustcrypto_pair!(k256)
}

fn sm2_pair() -> Result<DataKeyPair, KmsError> {
    rustcrypto_pair!(sm2)
}

/// The private half of a `KEY_AGREEMENT` KMS key, held by AWS-LC, and its public key.
pub struct AgreementKey {
    spec: KeySpec,
    private: agreement::PrivateKey,
    public_key: Vec<u8>,
}

impl fmt::Debug for AgreementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgreementKey")
            .field("spec", &self.spec)
            .field("public_key", &hex::encode(&self.public_key))
            .finish_non_exhaustive()
    }
}

impl AgreementKey {
    /// A fresh key pair on the curve of `spec` (an `ECC_NIST_*` spec).
    pub fn generate(spec: KeySpec) -> Result<Self, KmsError> {
        let algorithm = spec.agreement().ok_or_else(KmsError::internal)?;
        let private =
            agreement::PrivateKey::generate(algorithm).map_err(|_| KmsError::internal())?;
        let public: PublicKeyX509Der<'static> = private
            .compute_public_key()
            .and_then(|key| key.as_der())
            .map_err(|_| KmsError::internal())?;
        Ok(Self {
            spec,
            private,
            public_key: public.as_ref().to_vec(),
        })
    }

    /// The key spec.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// The public key, DER SPKI.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    fn into_pair(self) -> Result<DataKeyPair, KmsError> {
        let pkcs8: Pkcs8V1Der<'static> = self.private.as_der().map_err(|_| KmsError::internal())?;
        Ok(DataKeyPair {
            public_key: self.public_key,
            private_key: Zeroizing::new(pkcs8.as_ref().to_vec()),
        })
    }

    /// ECDH with the peer's public key `peer_spki` (DER SPKI on this key's curve): the shared
    /// point's x-coordinate. Anything but an SPKI of a valid point on this curve is a
    /// `ValidationException` (KMS: "The public key must be a DER-encoded X.509 public key ...
    /// on the same curve as the KMS key", API Reference, DeriveSharedSecret `PublicKey`).
    pub fn derive(&self, peer_spki: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let algorithm = self.private.algorithm();
        // AWS-LC also takes bare SEC1 points; KMS takes only an SPKI.
        let peer = ParsedPublicKey::try_from(&UnparsedPublicKey::new(algorithm, peer_spki))
            .ok()
            .filter(|key| key.format() == ParsedPublicKeyFormat::X509)
            .ok_or_else(|| invalid_peer_key(self.spec))?;
        agreement::agree(&self.private, peer, KmsError::internal(), |secret| {
            Ok(Zeroizing::new(secret.to_vec()))
        })
    }
}

fn invalid_peer_key(spec: KeySpec) -> KmsError {
    KmsError::validation(format!(
        "PublicKey must be a DER-encoded X.509 SubjectPublicKeyInfo of a point on the curve of \
         the KMS key ({}).",
        spec.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_key_specs_follow_the_kms_table() {
        assert_eq!(
            create_key_spec(None, None).expect("default"),
            (KeySpec::SymmetricDefault, KeyUsage::EncryptDecrypt)
        );
        assert_eq!(
            create_key_spec(Some("ECC_NIST_P384"), Some("KEY_AGREEMENT")).expect("agreement"),
            (KeySpec::EccNistP384, KeyUsage::KeyAgreement)
        );
        let refused =
            create_key_spec(Some("SYMMETRIC_DEFAULT"), Some("KEY_AGREEMENT")).expect_err("refused");
        assert_eq!(
            refused.message.as_deref(),
            Some("KeyUsage KEY_AGREEMENT is not compatible with KeySpec SYMMETRIC_DEFAULT")
        );
        for (spec, usage) in [
            ("ECC_SECG_P256K1", "KEY_AGREEMENT"),
            ("RSA_2048", "KEY_AGREEMENT"),
            ("ECC_NIST_P256", "ENCRYPT_DECRYPT"),
            ("HMAC_256", "ENCRYPT_DECRYPT"),
        ] {
            let e = create_key_spec(Some(spec), Some(usage)).expect_err(spec);
            assert_eq!(e.error_type, "ValidationException");
            assert!(
                e.message
                    .as_deref()
                    .unwrap_or_default()
                    .contains("not compatible"),
                "{e}"
            );
        }
        let unsupported = create_key_spec(Some("RSA_2048"), Some("SIGN_VERIFY")).expect_err("");
        assert!(
            unsupported
                .message
                .as_deref()
                .unwrap_or_default()
                .starts_with("The emulator does not support")
        );
        let unknown = create_key_spec(Some("AES_256"), None).expect_err("unknown");
        assert!(
            unknown
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("'AES_256' at 'keySpec'")
        );
    }

    #[test]
    fn key_pair_spec_names_round_trip() {
        for spec in KeyPairSpec::ALL {
            assert_eq!(KeyPairSpec::parse(spec.name()).expect("known"), spec);
        }
        assert_eq!(
            KeyPairSpec::parse("RSA_1024")
                .expect_err("unknown")
                .message
                .as_deref(),
            Some(
                "1 validation error detected: Value 'RSA_1024' at 'keyPairSpec' failed to \
                 satisfy constraint: Member must satisfy enum value set: [RSA_2048, RSA_3072, \
                 RSA_4096, ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521, ECC_SECG_P256K1, SM2]"
            )
        );
    }

    #[test]
    fn debug_hides_private_keys() {
        let pair = generate_data_key_pair(KeyPairSpec::EccNistP256).expect("pair");
        let shown = format!("{pair:?}");
        assert!(!shown.contains(&hex::encode(pair.private_key.as_slice())));
        assert!(shown.contains("[redacted]"));
        let key = AgreementKey::generate(KeySpec::EccNistP256).expect("key");
        assert!(!format!("{key:?}").contains("private"));
    }

    #[test]
    fn derive_refuses_bare_points_and_other_curves() {
        let key = AgreementKey::generate(KeySpec::EccNistP256).expect("key");
        let other = AgreementKey::generate(KeySpec::EccNistP256).expect("key");
        let p384 = AgreementKey::generate(KeySpec::EccNistP384).expect("key");
        let ab = key.derive(other.public_key()).expect("derive");
        let ba = other.derive(key.public_key()).expect("derive");
        assert_eq!(ab.as_slice(), ba.as_slice());
        assert_eq!(ab.len(), 32);
        // The SPKI's last 65 bytes are the uncompressed point.
        let spki = other.public_key();
        let point = &spki[spki.len() - 65..];
        assert_eq!(point[0], 4);
        for bad in [point, p384.public_key(), b"garbage".as_slice(), &[]] {
            assert_eq!(
                key.derive(bad).expect_err("refused").error_type,
                "ValidationException"
            );
        }
    }
}
