//! `build` → `parse` → `unwrap` for every layout and backend, and keys generated the way the
//! runtimes generate them.
#![cfg(any(feature = "aws-lc", feature = "rustcrypto"))]

use crate::cms_common::*;
use kmstool_core::cms::{self, Layout};
use kmstool_core::crypto::{Backend, RecipientKey};

const LAYOUTS: [Layout; 6] = [
    Layout::KMS,
    Layout::KmsBer { chunk: 1 },
    Layout::KmsBer { chunk: 16 },
    Layout::KmsBer { chunk: 0 },
    Layout::BerPrimitive,
    Layout::Der,
];

/// A message for `key` carrying `plaintext`, with a fixed content key and IV.
fn message_for(key: &RecipientKey, layout: Layout, plaintext: &[u8]) -> Vec<u8> {
    let content_key = [0x42; 32];
    let encrypted_key = oaep_encrypt(key.public_key_der(), &content_key, plaintext.len() as u64);
    cms::build(
        layout,
        &key.subject_key_id(),
        &encrypted_key,
        &content_key,
        &[0x24; 16],
        plaintext,
    )
}

#[test]
fn every_layout_round_trips_through_every_backend() {
    let keys: Vec<RecipientKey> = Backend::all().iter().map(|&b| keyed_key(b)).collect();
    for layout in LAYOUTS {
        for len in [0, 1, 15, 16, 17, 32, 999, 1000, 4096] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let message = message_for(&keys[0], layout, &plaintext);
            let parsed = cms::parse(&message).expect("parses");
            assert_eq!(parsed.subject_key_id, keys[0].subject_key_id());
            assert_eq!(parsed.iv, [0x24; 16]);
            assert_eq!(parsed.encrypted_content.len(), (len / 16 + 1) * 16);
            for key in &keys {
                let unwrapped = cms::unwrap(&message, key).expect("unwraps");
                assert_eq!(
                    unwrapped.expose(),
                    plaintext,
                    "{layout:?} {len} {}",
                    key.backend()
                );
            }
        }
    }
}

#[test]
fn kms_layout_of_a_4096_byte_plaintext_has_the_shape_of_capture_4() {
    let capture = fixture("real-kms-parse-only-4.ber");
    let key = keyed_key(Backend::DEFAULT);
    let message = message_for(&key, Layout::KMS, &[0x33; 4096]);
    // Same length, and the same bytes wherever neither key, IV nor ciphertext sits.
    assert_eq!(message.len(), capture.len());
    let mut varying = vec![
        SKI_START..SKI_START + 32,
        ENC_KEY_START..SET_END,
        IV_START..IV_START + 16,
    ];
    varying.extend([437..1437, 1441..2441, 2445..3445, 3449..4449, 4451..4563]);
    for (i, (built, real)) in message.iter().zip(&capture).enumerate() {
        if !varying.iter().any(|range| range.contains(&i)) {
            assert_eq!(built, real, "byte {i}");
        }
    }
}

#[test]
fn der_layout_is_strict_der_and_ber_layouts_are_not() {
    use der::Decode;
    let key = keyed_key(Backend::DEFAULT);
    for layout in LAYOUTS {
        let message = message_for(&key, layout, b"plaintext");
        let strict = ::cms::content_info::ContentInfo::from_der(&message);
        assert_eq!(strict.is_ok(), layout == Layout::Der, "{layout:?}");
    }
}

#[test]
fn one_key_loaded_in_each_backend_gives_the_same_results() {
    let keys: Vec<RecipientKey> = Backend::all().iter().map(|&b| keyed_key(b)).collect();
    let messages = [
        keyed_capture(),
        message_for(&keys[0], Layout::KMS, b"cross-backend"),
        flip(&keyed_capture(), KEYED_CONTENT_BYTES + 31, 0x10),
        flip(&keyed_capture(), ENC_KEY_START, 0x01),
    ];
    for message in &messages {
        let results: Vec<_> = keys.iter().map(|key| cms::unwrap(message, key)).collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    }
}

/// What the runtimes do: generate with AWS-LC, export PKCS #8, hand the DER to core.
#[cfg(feature = "aws-lc")]
#[test]
fn a_key_generated_and_exported_by_aws_lc_loads_in_every_backend() {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};

    let generated = PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("generates");
    let pkcs8: Pkcs8V1Der<'static> = generated.as_der().expect("exports PKCS#8");
    let spki: PublicKeyX509Der<'static> = generated.public_key().as_der().expect("exports SPKI");
    let keys: Vec<RecipientKey> = Backend::all()
        .iter()
        .map(|&b| RecipientKey::from_pkcs8_der(b, pkcs8.as_ref()).expect("loads"))
        .collect();
    for key in &keys {
        assert_eq!(key.public_key_der(), spki.as_ref());
        assert_eq!(key.subject_key_id(), sha256(spki.as_ref()));
    }
    let message = message_for(&keys[0], Layout::KMS, b"generated in the enclave");
    for key in &keys {
        let plaintext = cms::unwrap(&message, key).expect("unwraps");
        assert_eq!(plaintext.expose(), b"generated in the enclave");
    }
    // The fixture's key cannot open it, and says why.
    assert_eq!(
        cms::unwrap(&message, &keyed_key(Backend::DEFAULT)),
        Err(cms::CmsError::SubjectKeyIdMismatch)
    );
}
