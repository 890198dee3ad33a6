//! The crypto backends under the CMS unwrap: AES-256-CBC, RSA-OAEP-SHA256, key loading.
#![cfg(any(feature = "aws-lc", feature = "rustcrypto"))]

use crate::cms_common::*;
use kmstool_core::crypto::{
    Backend, CryptoError, KeyError, RecipientKey, aes256_cbc_decrypt, aes256_cbc_encrypt,
};

/// NIST SP 800-38A, F.2.5 CBC-AES256.Encrypt.
const NIST_KEY: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
const NIST_IV: &str = "000102030405060708090a0b0c0d0e0f";
const NIST_PLAINTEXT: &str = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51\
                              30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
const NIST_CIPHERTEXT: &str = "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d\
                               39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b";
/// The PKCS #7 block (16 x 0x10) that follows under the same key, computed with `openssl enc`.
const NIST_PADDING_BLOCK: &str = "3f461796d6b0d6b2e0c2a72b4d80e644";

fn nist_key_iv() -> ([u8; 32], [u8; 16]) {
    (
        hex_decode(NIST_KEY).try_into().expect("32 bytes"),
        hex_decode(NIST_IV).try_into().expect("16 bytes"),
    )
}

#[test]
fn backends_are_listed_named_and_found_by_name() {
    let all = Backend::all();
    assert_eq!(all.first(), Some(&Backend::DEFAULT));
    #[cfg(feature = "aws-lc")]
    assert_eq!(Backend::DEFAULT, Backend::AwsLc);
    assert_eq!(
        all.len(),
        usize::from(cfg!(feature = "aws-lc")) + usize::from(cfg!(feature = "rustcrypto"))
    );
    for &backend in all {
        assert_eq!(Backend::from_name(backend.name()), Some(backend));
        assert_eq!(backend.to_string(), backend.name());
    }
    assert_eq!(Backend::from_name("openssl"), None);
}

#[test]
fn aes256_cbc_matches_the_nist_vector_with_pkcs7_padding() {
    let (key, iv) = nist_key_iv();
    let plaintext = hex_decode(NIST_PLAINTEXT);
    let expected = [hex_decode(NIST_CIPHERTEXT), hex_decode(NIST_PADDING_BLOCK)].concat();
    assert_eq!(aes256_cbc_encrypt(&key, &iv, &plaintext), expected);
    for &backend in Backend::all() {
        let decrypted = aes256_cbc_decrypt(backend, &key, &iv, &expected).expect("decrypts");
        assert_eq!(decrypted.expose(), plaintext, "{backend}");
    }
}

#[test]
fn aes256_cbc_round_trips_every_length_around_the_block_size() {
    let key = [0x11; 32];
    let iv = [0x22; 16];
    for len in 0..=48 {
        let plaintext: Vec<u8> = (0..len as u8).collect();
        let ciphertext = aes256_cbc_encrypt(&key, &iv, &plaintext);
        assert_eq!(ciphertext.len(), (len / 16 + 1) * 16, "length {len}");
        for &backend in Backend::all() {
            let decrypted = aes256_cbc_decrypt(backend, &key, &iv, &ciphertext).expect("decrypts");
            assert_eq!(decrypted.expose(), plaintext, "{backend} length {len}");
        }
    }
}

#[test]
fn aes256_cbc_rejects_partial_blocks_and_bad_padding_in_every_backend() {
    let (key, iv) = nist_key_iv();
    // Without the padding block, the NIST plaintext's last byte (0x10) reads as 16 bytes of
    // padding that are not all 0x10.
    let unpadded = hex_decode(NIST_CIPHERTEXT);
    for &backend in Backend::all() {
        for len in [0, 1, 15, 17, 63] {
            assert_eq!(
                aes256_cbc_decrypt(backend, &key, &iv, &unpadded[..len]),
                Err(CryptoError::NotBlockAligned { len }),
                "{backend}"
            );
        }
        assert_eq!(
            aes256_cbc_decrypt(backend, &key, &iv, &unpadded),
            Err(CryptoError::BadPadding),
            "{backend}"
        );
    }
}

#[test]
fn oaep_decryption_checks_length_and_rejects_noise() {
    for &backend in Backend::all() {
        let key = keyed_key(backend);
        for len in [0, 255, 257] {
            assert_eq!(
                key.oaep_sha256_decrypt(&vec![1; len]),
                Err(CryptoError::RsaCiphertextLength { len }),
                "{backend}"
            );
        }
        assert_eq!(
            key.oaep_sha256_decrypt(&[0x01; 256]),
            Err(CryptoError::OaepDecryption),
            "{backend}"
        );
    }
}

#[test]
fn oaep_decrypts_what_each_library_encrypts_in_every_backend() {
    let spki = keyed_key(Backend::DEFAULT).public_key_der().to_vec();
    let message = b"thirty-two bytes of content key!";
    let mut ciphertexts = vec![oaep_encrypt(&spki, message, 7)];
    #[cfg(feature = "aws-lc")]
    ciphertexts.push(oaep_encrypt_aws_lc(&spki, message));
    #[cfg(feature = "rustcrypto")]
    ciphertexts.push(oaep_encrypt_rustcrypto(&spki, message, 8));
    for ciphertext in &ciphertexts {
        for &backend in Backend::all() {
            let plaintext = keyed_key(backend)
                .oaep_sha256_decrypt(ciphertext)
                .expect("decrypts");
            assert_eq!(plaintext.as_slice(), message, "{backend}");
        }
    }
}

#[test]
fn generated_keys_are_fresh_rsa2048_keys_that_decrypt_in_their_backend() {
    let message = b"thirty-two bytes of content key!";
    for &backend in Backend::all() {
        let key = RecipientKey::generate(backend).expect("generates");
        let other = RecipientKey::generate(backend).expect("generates");
        assert_eq!(key.backend(), backend);
        assert_ne!(key.public_key_der(), other.public_key_der(), "{backend}");
        // `from_pkcs8_der` behind `generate` refuses anything but RSA-2048 with e = 65537.
        let spki = key.public_key_der().to_vec();
        let ciphertext = oaep_encrypt(&spki, message, 9);
        let plaintext = key.oaep_sha256_decrypt(&ciphertext).expect("decrypts");
        assert_eq!(plaintext.as_slice(), message, "{backend}");
        assert!(other.oaep_sha256_decrypt(&ciphertext).is_err(), "{backend}");
    }
}

#[test]
fn both_backends_derive_the_same_public_key_and_id() {
    let keys: Vec<RecipientKey> = Backend::all().iter().map(|&b| keyed_key(b)).collect();
    for key in &keys {
        assert_eq!(key.public_key_der(), keys[0].public_key_der());
        assert_eq!(key.subject_key_id(), keys[0].subject_key_id());
    }
    // An RSA-2048 SPKI: SEQUENCE { rsaEncryption NULL, BIT STRING { n, e } } of 294 bytes.
    let spki = keys[0].public_key_der();
    assert_eq!(spki.len(), 294);
    assert_eq!(spki[..4], [0x30, 0x82, 0x01, 0x22]);
    assert_eq!(spki[spki.len() - 5..], [0x02, 0x03, 0x01, 0x00, 0x01]);
}

#[test]
fn debug_shows_backend_and_key_id_but_no_key_material() {
    for &backend in Backend::all() {
        let key = keyed_key(backend);
        let shown = format!("{key:?} {key:#?}");
        let ski_hex: String = key
            .subject_key_id()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(shown.contains(&ski_hex), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        // No run of modulus or private bytes: the only long hex run is the key id.
        let spki_hex: String = key.public_key_der()[40..60]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!shown.contains(&spki_hex), "{shown}");
        assert!(format!("{key:?}").len() < 160, "{shown}");
    }
}

#[test]
fn malformed_pem_and_der_are_rejected() {
    let public_pem = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    for &backend in Backend::all() {
        assert!(matches!(
            RecipientKey::from_pem(backend, b"not a pem"),
            Err(KeyError::Pem(_))
        ));
        assert_eq!(
            RecipientKey::from_pem(backend, public_pem).map(|_| ()),
            Err(KeyError::PemLabel("PUBLIC KEY".into()))
        );
        for der in [&[][..], &[0x30, 0x00], &keyed_pkcs8_der()[..100]] {
            assert!(matches!(
                RecipientKey::from_pkcs8_der(backend, der),
                Err(KeyError::Rejected(_))
            ));
            assert!(matches!(
                RecipientKey::from_pkcs1_der(backend, der),
                Err(KeyError::Rejected(_))
            ));
        }
        // A PKCS #8 document is not PKCS #1.
        assert!(matches!(
            RecipientKey::from_pkcs1_der(backend, &keyed_pkcs8_der()),
            Err(KeyError::Rejected(_))
        ));
    }
}

#[cfg(feature = "aws-lc")]
#[test]
fn keys_other_than_2048_bits_are_rejected() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
    let key = PrivateDecryptingKey::generate(KeySize::Rsa3072).expect("generates");
    let pkcs8 = key.as_der().expect("exports");
    for &backend in Backend::all() {
        assert_eq!(
            RecipientKey::from_pkcs8_der(backend, pkcs8.as_ref()).map(|_| ()),
            Err(KeyError::ModulusSize { bits: 3072 }),
            "{backend}"
        );
    }
}

#[cfg(feature = "rustcrypto")]
#[test]
fn public_exponent_other_than_65537_is_rejected() {
    use rsa::BoxedUint;
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::EncodePrivateKey;
    use rsa::traits::PrivateKeyParts;
    let (_, pkcs1) = der::pem::decode_vec(&keyed_pem()).expect("PEM");
    let original = rsa::PrivateKey::from_pkcs1_der(&pkcs1).expect("PKCS#1");
    let primes = original.primes();
    // Same primes, another exponent coprime to (p-1)(q-1).
    let other = [3u64, 5, 17, 257]
        .into_iter()
        .find_map(|e| {
            rsa::PrivateKey::from_p_q(
                primes[0].clone().get(),
                primes[1].clone().get(),
                BoxedUint::from(e),
            )
            .ok()
        })
        .expect("some small exponent fits");
    let pkcs8 = other.to_pkcs8_der().expect("PKCS#8");
    for &backend in Backend::all() {
        assert_eq!(
            RecipientKey::from_pkcs8_der(backend, pkcs8.as_bytes()).map(|_| ()),
            Err(KeyError::PublicExponent),
            "{backend}"
        );
    }
}

#[test]
fn key_errors_read_clearly() {
    assert_eq!(
        KeyError::ModulusSize { bits: 3072 }.to_string(),
        "RSA key has a 3072-bit modulus, expected 2048"
    );
    assert_eq!(
        KeyError::PemLabel("CERTIFICATE".into()).to_string(),
        "PEM label \"CERTIFICATE\" is neither \"RSA PRIVATE KEY\" nor \"PRIVATE KEY\""
    );
    assert_eq!(
        CryptoError::NotBlockAligned { len: 17 }.to_string(),
        "AES-CBC ciphertext is 17 bytes, not a non-zero multiple of 16"
    );
}

#[test]
fn recipient_key_can_be_shared_between_threads() {
    // The runtimes keep one key for the enclave's lifetime and use it from their tasks.
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<RecipientKey>();
}
