//! Real KMS `CiphertextForRecipient` captures: parse, unwrap with every backend, and rebuild
//! byte for byte.
#![cfg(any(feature = "aws-lc", feature = "rustcrypto"))]

use crate::cms_common::*;
use kmstool_core::cms::{self, Layout};
use kmstool_core::crypto::{Backend, RecipientKey};

#[test]
fn keyed_capture_unwraps_to_the_published_plaintext_with_every_backend() {
    let capture = keyed_capture();
    let expected = keyed_plaintext();
    assert_eq!(expected.len(), 32);
    assert!(!Backend::all().is_empty());
    for &backend in Backend::all() {
        let key = keyed_key(backend);
        let plaintext = cms::unwrap(&capture, &key).expect("real capture unwraps");
        assert_eq!(plaintext.expose(), expected, "{backend}");
    }
}

#[test]
fn subject_key_id_of_the_key_is_the_captures_rid_and_sha256_of_its_spki() {
    let parsed = cms::parse(&keyed_capture()).expect("parses");
    let rid: [u8; 32] = keyed_capture()[SKI_START..SKI_START + 32]
        .try_into()
        .expect("32 bytes");
    assert_eq!(parsed.subject_key_id, rid);
    for &backend in Backend::all() {
        let key = keyed_key(backend);
        assert_eq!(key.subject_key_id(), rid, "{backend}");
        assert_eq!(key.subject_key_id(), sha256(key.public_key_der()));
        assert_eq!(key.backend(), backend);
    }
}

#[test]
fn parse_only_captures_parse_with_the_fields_kms_writes() {
    // (file, IV, encrypted content length, first bytes of the encrypted key)
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "real-kms-parse-only-1.ber",
            "37343df1470df625eeb6f4bfd2f1acc3",
            16,
            "29cffeb1",
        ),
        (
            "real-kms-parse-only-3.ber",
            "e66c1172aee0f2f7be34e3afc6b0e4fe",
            16,
            "4a1ca122",
        ),
        (
            "real-kms-parse-only-4.ber",
            "f92dcb53d4617d10fc5a8bff96d7d6ff",
            4112,
            "a848346b",
        ),
        (
            "real-kms-decrypt-with-key.ber",
            "432bffaba264af82ce07c9bebeb52531",
            48,
            "179a34e2",
        ),
    ];
    for &(file, iv, content_len, key_prefix) in cases {
        let capture = fixture(file);
        let parsed = cms::parse(&capture).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(parsed.iv.to_vec(), hex_decode(iv), "{file}");
        assert_eq!(parsed.encrypted_content.len(), content_len, "{file}");
        assert_eq!(parsed.encrypted_key.len(), 256, "{file}");
        assert_eq!(
            parsed.encrypted_key[..4],
            hex_decode(key_prefix)[..],
            "{file}"
        );
        assert_eq!(
            parsed.subject_key_id[..],
            capture[SKI_START..SKI_START + 32],
            "{file}"
        );
    }
}

#[test]
fn capture_4_reassembles_its_1000_byte_chunks_in_order() {
    let capture = fixture("real-kms-parse-only-4.ber");
    let parsed = cms::parse(&capture).expect("parses");
    // Chunk headers `04 82 03 e8` at 433, 1437, 2441, 3445, then `04 70` (112 bytes) at 4449.
    let mut expected = Vec::new();
    for start in [433, 1437, 2441, 3445] {
        assert_eq!(capture[start..start + 4], [0x04, 0x82, 0x03, 0xe8]);
        expected.extend_from_slice(&capture[start + 4..start + 1004]);
    }
    assert_eq!(capture[4449..4451], [0x04, 0x70]);
    expected.extend_from_slice(&capture[4451..4563]);
    assert_eq!(parsed.encrypted_content, expected);
}

#[test]
fn kms_layout_rebuilds_the_keyed_capture_byte_for_byte() {
    let capture = keyed_capture();
    let parsed = cms::parse(&capture).expect("parses");
    let key = keyed_key(Backend::DEFAULT);
    let content_key: [u8; 32] = key
        .oaep_sha256_decrypt(&parsed.encrypted_key)
        .expect("OAEP")
        .as_slice()
        .try_into()
        .expect("AES-256 key");
    let rebuilt = cms::build(
        Layout::KMS,
        &parsed.subject_key_id,
        &parsed.encrypted_key,
        &content_key,
        &parsed.iv,
        &keyed_plaintext(),
    );
    assert_eq!(rebuilt, capture);
}

#[test]
fn layouts_rebuild_the_parse_only_captures_byte_for_byte() {
    // #1 and #4 carry chunked content, #3 a primitive [0].
    for (file, layout) in [
        ("real-kms-parse-only-1.ber", Layout::KMS),
        ("real-kms-parse-only-3.ber", Layout::BerPrimitive),
        ("real-kms-parse-only-4.ber", Layout::KmsBer { chunk: 1000 }),
    ] {
        let capture = fixture(file);
        let parsed = cms::parse(&capture).expect("parses");
        let rebuilt = cms::build_encrypted(
            layout,
            &parsed.subject_key_id,
            &parsed.encrypted_key,
            &parsed.iv,
            &parsed.encrypted_content,
        );
        assert_eq!(rebuilt, capture, "{file}");
    }
}

#[test]
fn keyed_capture_in_der_parses_and_unwraps_the_same() {
    let parsed = cms::parse(&keyed_capture()).expect("parses");
    let der = cms::build_encrypted(
        Layout::Der,
        &parsed.subject_key_id,
        &parsed.encrypted_key,
        &parsed.iv,
        &parsed.encrypted_content,
    );
    // Strict DER: the `cms` crate reads it without BER rules.
    use der::Decode;
    let info = ::cms::content_info::ContentInfo::from_der(&der).expect("valid DER");
    assert_eq!(info.content_type.to_string(), "1.2.840.113549.1.7.3");
    assert_eq!(cms::parse(&der).expect("parses"), parsed);
    for &backend in Backend::all() {
        let plaintext = cms::unwrap(&der, &keyed_key(backend)).expect("unwraps");
        assert_eq!(plaintext.expose(), keyed_plaintext());
    }
}

#[test]
fn pkcs1_pem_pkcs1_der_pkcs8_der_and_pkcs8_pem_load_the_same_key() {
    let pkcs8 = keyed_pkcs8_der();
    let pkcs8_pem = der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, &pkcs8)
        .expect("PEM encodes");
    let (_, pkcs1) = der::pem::decode_vec(&keyed_pem()).expect("PEM decodes");
    for &backend in Backend::all() {
        let from_pkcs1_pem = keyed_key(backend);
        let loaded = [
            RecipientKey::from_pkcs1_der(backend, &pkcs1).expect("PKCS#1 DER"),
            RecipientKey::from_pkcs8_der(backend, &pkcs8).expect("PKCS#8 DER"),
            RecipientKey::from_pem(backend, pkcs8_pem.as_bytes()).expect("PKCS#8 PEM"),
        ];
        for key in loaded {
            assert_eq!(key.public_key_der(), from_pkcs1_pem.public_key_der());
            let plaintext = cms::unwrap(&keyed_capture(), &key).expect("unwraps");
            assert_eq!(plaintext.expose(), keyed_plaintext());
        }
    }
}
