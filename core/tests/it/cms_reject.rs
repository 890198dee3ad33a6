//! Every way a `CiphertextForRecipient` can be wrong, each with its own error. The inputs are
//! real captures changed in one place, or messages built with `build_encrypted`.
#![cfg(any(feature = "aws-lc", feature = "rustcrypto"))]

use crate::cms_common::*;
use der::asn1::ObjectIdentifier;
use kmstool_core::cms::{self, CmsError, Layout, MAX_CIPHERTEXT_LEN};
use kmstool_core::crypto::{Backend, CryptoError};

fn oid(dotted: &str) -> ObjectIdentifier {
    ObjectIdentifier::new(dotted).expect("valid OID")
}

/// Parses `input` and returns the error, failing the test if it parses.
fn parse_error(input: &[u8]) -> CmsError {
    match cms::parse(input) {
        Ok(parsed) => panic!("parsed: {parsed:?}"),
        Err(e) => e,
    }
}

/// Unwraps `input` with the keyed capture's key in every backend; all must fail alike.
fn unwrap_error(input: &[u8]) -> CmsError {
    let errors: Vec<CmsError> = Backend::all()
        .iter()
        .map(|&backend| match cms::unwrap(input, &keyed_key(backend)) {
            Ok(_) => panic!("{backend}: unwrapped"),
            Err(e) => e,
        })
        .collect();
    assert!(errors.windows(2).all(|w| w[0] == w[1]), "{errors:?}");
    errors.into_iter().next().expect("at least one backend")
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let input = vec![0x30; MAX_CIPHERTEXT_LEN + 1];
    assert_eq!(
        parse_error(&input),
        CmsError::TooLarge {
            len: MAX_CIPHERTEXT_LEN + 1
        }
    );
}

#[test]
fn truncated_empty_or_trailing_garbage_is_malformed() {
    let capture = keyed_capture();
    for input in [
        &capture[..capture.len() - 1],
        &capture[..capture.len() - 2],
        &capture[..300],
        &capture[..1],
        &[][..],
        &[capture.as_slice(), &[0x00]].concat()[..],
    ] {
        assert!(
            matches!(parse_error(input), CmsError::Malformed(_)),
            "{} bytes",
            input.len()
        );
    }
}

#[test]
fn content_type_other_than_enveloped_data_is_rejected() {
    // id-envelopedData ...7.3 becomes id-signedData ...7.2.
    let input = flip(&keyed_capture(), CONTENT_TYPE_OID_LAST, 0x01);
    assert_eq!(
        parse_error(&input),
        CmsError::ContentType(oid("1.2.840.113549.1.7.2"))
    );
}

#[test]
fn content_that_is_not_enveloped_data_is_rejected() {
    let capture = keyed_capture();
    // ContentInfo { envelopedData, [0] OCTET STRING } and { envelopedData, [0] SEQUENCE {} }.
    for content in [&[0x04, 0x01, 0x00][..], &[0x30, 0x00][..]] {
        let input = [&capture[..15], content, &[0, 0, 0, 0]].concat();
        assert!(matches!(parse_error(&input), CmsError::NotEnvelopedData(_)));
    }
}

#[test]
fn versions_other_than_2_are_rejected() {
    let capture = keyed_capture();
    assert_eq!(
        parse_error(&flip(&capture, ENVELOPED_VERSION, 0x02)),
        CmsError::Version {
            structure: "EnvelopedData",
            found: 0
        }
    );
    assert_eq!(
        parse_error(&flip(&capture, KTRI_VERSION, 0x02)),
        CmsError::Version {
            structure: "KeyTransRecipientInfo",
            found: 0
        }
    );
}

#[test]
fn anything_but_exactly_one_recipient_is_rejected() {
    let capture = keyed_capture();
    let recipient = capture_recipient(&capture);
    assert_eq!(
        parse_error(&with_recipients(&capture, &[recipient.clone(), recipient])),
        CmsError::RecipientCount(2)
    );
    assert_eq!(
        parse_error(&with_recipients(&capture, &[])),
        CmsError::RecipientCount(0)
    );
}

#[test]
fn recipient_kinds_other_than_key_transport_are_rejected() {
    // [4] OtherRecipientInfo { oriType 1.2.3, oriValue NULL }.
    let other = tlv(0xa4, &[0x06, 0x02, 0x2a, 0x03, 0x05, 0x00]);
    assert_eq!(
        parse_error(&with_recipients(&keyed_capture(), &[other])),
        CmsError::NotKeyTransRecipient
    );
}

#[test]
fn recipient_named_by_issuer_and_serial_is_rejected() {
    let capture = keyed_capture();
    // IssuerAndSerialNumber { issuer (empty Name), serialNumber 1 }.
    let rid = tlv(0x30, &[0x30, 0x00, 0x02, 0x01, 0x01]);
    let recipient = ktri(
        &rid,
        &capture[OAEP_ALG_START..OAEP_ALG_END],
        &capture[ENC_KEY_START..SET_END],
    );
    assert_eq!(
        parse_error(&with_recipients(&capture, &[recipient])),
        CmsError::RecipientNotSubjectKeyId
    );
}

#[test]
fn subject_key_id_of_another_length_is_rejected() {
    let capture = keyed_capture();
    let recipient = ktri(
        &tlv(0x80, &[0xab; 20]),
        &capture[OAEP_ALG_START..OAEP_ALG_END],
        &capture[ENC_KEY_START..SET_END],
    );
    assert_eq!(
        parse_error(&with_recipients(&capture, &[recipient])),
        CmsError::SubjectKeyIdLength(20)
    );
}

#[test]
fn subject_key_id_of_another_key_is_rejected_before_decrypting() {
    let input = flip(&keyed_capture(), SKI_START + 31, 0x01);
    assert!(cms::parse(&input).is_ok());
    assert_eq!(unwrap_error(&input), CmsError::SubjectKeyIdMismatch);
}

#[test]
fn key_encryption_other_than_rsaes_oaep_is_rejected() {
    // id-RSAES-OAEP ...1.1.7 becomes rsaEncryption ...1.1.1 (PKCS #1 v1.5).
    let input = flip(&keyed_capture(), OAEP_OID_LAST, 0x06);
    assert_eq!(
        parse_error(&input),
        CmsError::KeyEncryptionAlgorithm(oid("1.2.840.113549.1.1.1"))
    );
}

#[test]
fn oaep_hash_or_mgf_other_than_sha256_is_rejected() {
    let capture = keyed_capture();
    // sha256 (...2.1) becomes sha384 (...2.2); id-mgf1 (...1.8) becomes id-pSpecified (...1.9).
    let cases = [
        (OAEP_HASH_OID_LAST, 0x03, "hash is not SHA-256"),
        (MGF1_OID_LAST, 0x01, "mask generation is not MGF1-SHA-256"),
        (
            MGF1_HASH_OID_LAST,
            0x03,
            "mask generation is not MGF1-SHA-256",
        ),
    ];
    for (at, mask, what) in cases {
        assert_eq!(
            parse_error(&flip(&capture, at, mask)),
            CmsError::OaepParameters(what),
            "byte {at}"
        );
    }
}

/// The keyed capture with its OAEP AlgorithmIdentifier replaced by one with `params`.
fn with_oaep_params(params: Option<&[u8]>) -> Vec<u8> {
    let capture = keyed_capture();
    let oaep_oid = &capture[OAEP_ALG_START + 2..OAEP_ALG_START + 13];
    let algorithm = tlv(0x30, &[oaep_oid, params.unwrap_or_default()].concat());
    let recipient = ktri(
        &capture[SKI_START - 2..SKI_START + 32],
        &algorithm,
        &capture[ENC_KEY_START..SET_END],
    );
    with_recipients(&capture, &[recipient])
}

#[test]
fn oaep_parameters_absent_default_or_with_a_label_are_rejected() {
    let sha256 = tlv(0x30, &hex_decode("0609608648016503040201"));
    let mgf1_sha256 = tlv(
        0x30,
        &[hex_decode("06092a864886f70d010108"), sha256.clone()].concat(),
    );
    let hash = tlv(0xa0, &sha256);
    let mgf = tlv(0xa1, &mgf1_sha256);
    let p_specified = |label: &[u8]| {
        tlv(
            0xa2,
            &tlv(
                0x30,
                &[hex_decode("06092a864886f70d010109"), tlv(0x04, label)].concat(),
            ),
        )
    };
    let cases: Vec<(Option<Vec<u8>>, &str)> = vec![
        (None, "absent (would mean SHA-1 and MGF1-SHA-1)"),
        (Some(tlv(0x30, &[])), "hash is not SHA-256"),
        (
            Some(tlv(0x30, &hash)),
            "mask generation is not MGF1-SHA-256",
        ),
        (Some(tlv(0x30, &mgf)), "hash is not SHA-256"),
        (
            Some(tlv(
                0x30,
                &[hash.clone(), mgf.clone(), p_specified(b"x")].concat(),
            )),
            "label is not empty",
        ),
        (Some(vec![0x05, 0x00]), "malformed"),
    ];
    for (params, what) in cases {
        assert_eq!(
            parse_error(&with_oaep_params(params.as_deref())),
            CmsError::OaepParameters(what),
            "{params:02x?}"
        );
    }
    // Equivalent encodings are accepted: SHA-256 without the NULLs, an explicit empty label.
    let lenient = [
        tlv(
            0x30,
            &[
                tlv(0xa0, &tlv(0x30, &hex_decode("0609608648016503040201"))),
                mgf.clone(),
            ]
            .concat(),
        ),
        tlv(0x30, &[hash, mgf, p_specified(b"")].concat()),
    ];
    for params in lenient {
        let input = with_oaep_params(Some(&params));
        for &backend in Backend::all() {
            let plaintext = cms::unwrap(&input, &keyed_key(backend)).expect("unwraps");
            assert_eq!(plaintext.expose(), keyed_plaintext());
        }
    }
}

#[test]
fn encrypted_key_of_the_wrong_length_is_rejected() {
    let parsed = cms::parse(&keyed_capture()).expect("parses");
    let input = cms::build_encrypted(
        Layout::KMS,
        &parsed.subject_key_id,
        &parsed.encrypted_key[..255],
        &parsed.iv,
        &parsed.encrypted_content,
    );
    assert_eq!(parse_error(&input), CmsError::EncryptedKeyLength(255));
}

#[test]
fn encrypted_content_type_other_than_data_is_rejected() {
    let input = flip(&keyed_capture(), DATA_OID_LAST, 0x03);
    assert_eq!(
        parse_error(&input),
        CmsError::EncryptedContentType(oid("1.2.840.113549.1.7.2"))
    );
}

#[test]
fn content_encryption_other_than_aes256_cbc_is_rejected() {
    // aes256-CBC (...1.42) becomes aes128-CBC (...1.2).
    let input = flip(&keyed_capture(), AES_OID_LAST, 0x28);
    assert_eq!(
        parse_error(&input),
        CmsError::ContentEncryptionAlgorithm(oid("2.16.840.1.101.3.4.1.2"))
    );
}

#[test]
fn iv_of_8_bytes_or_missing_is_rejected() {
    let capture = keyed_capture();
    let aes_oid = &capture[CONTENT_ALG_START + 2..CONTENT_ALG_START + 13];
    let with_params = |params: &[u8]| {
        let algorithm = tlv(0x30, &[aes_oid, params].concat());
        splice(&capture, CONTENT_ALG_START, CONTENT_START, &algorithm)
    };
    let iv8 = with_params(&tlv(0x04, &capture[IV_START..IV_START + 8]));
    assert_eq!(parse_error(&iv8), CmsError::IvLength(8));
    assert_eq!(
        parse_error(&with_params(&[0x05, 0x00])),
        CmsError::IvMissing
    );
    assert_eq!(parse_error(&with_params(&[])), CmsError::IvMissing);
}

#[test]
fn missing_encrypted_content_is_rejected() {
    // Parse-only #1: `[0]` at 431..453, then the EncryptedContentInfo's end-of-contents.
    let capture = fixture("real-kms-parse-only-1.ber");
    assert_eq!(capture[451..455], [0, 0, 0, 0]);
    let input = splice(&capture, CONTENT_START, 453, &[]);
    assert_eq!(parse_error(&input), CmsError::MissingEncryptedContent);
}

#[test]
fn content_not_a_whole_number_of_blocks_is_rejected() {
    let parsed = cms::parse(&keyed_capture()).expect("parses");
    for (layout, len) in [
        (Layout::KMS, 47),
        (Layout::Der, 0),
        (Layout::BerPrimitive, 49),
    ] {
        let input = cms::build_encrypted(
            layout,
            &parsed.subject_key_id,
            &parsed.encrypted_key,
            &parsed.iv,
            &vec![0xcc; len],
        );
        assert_eq!(
            parse_error(&input),
            CmsError::ContentLength(len),
            "{layout:?}"
        );
    }
}

#[test]
fn corrupted_encrypted_key_fails_oaep() {
    let input = flip(&keyed_capture(), ENC_KEY_START + 100, 0x40);
    assert_eq!(
        unwrap_error(&input),
        CmsError::Crypto(CryptoError::OaepDecryption)
    );
}

#[test]
fn content_key_that_is_not_32_bytes_is_rejected() {
    let key = keyed_key(Backend::DEFAULT);
    for len in [16, 31, 33] {
        let encrypted_key = oaep_encrypt(key.public_key_der(), &vec![7; len], len as u64);
        let input = cms::build_encrypted(
            Layout::KMS,
            &key.subject_key_id(),
            &encrypted_key,
            &[1; 16],
            &[2; 32],
        );
        assert_eq!(unwrap_error(&input), CmsError::ContentKeyLength(len));
    }
}

#[test]
fn bad_padding_is_rejected() {
    // The keyed plaintext is 32 bytes, so the third block is all padding (0x10 x 16). Flipping
    // bit 4 of the second block's last byte turns the final padding byte into 0x00.
    let input = flip(&keyed_capture(), KEYED_CONTENT_BYTES + 31, 0x10);
    assert_eq!(
        unwrap_error(&input),
        CmsError::Crypto(CryptoError::BadPadding)
    );
    // Same for a wrong content key of the right length: the padding comes out as noise.
    let key = keyed_key(Backend::DEFAULT);
    let parsed = cms::parse(&keyed_capture()).expect("parses");
    let wrong_key = oaep_encrypt(key.public_key_der(), &[0x5a; 32], 1);
    let input = cms::build_encrypted(
        Layout::KMS,
        &parsed.subject_key_id,
        &wrong_key,
        &parsed.iv,
        &parsed.encrypted_content,
    );
    // 1 in 256 wrong keys would end in a valid 0x01 pad; this one is checked not to.
    assert_eq!(
        unwrap_error(&input),
        CmsError::Crypto(CryptoError::BadPadding)
    );
}

#[test]
fn errors_name_the_problem_without_secrets() {
    let shown = [
        CmsError::SubjectKeyIdMismatch.to_string(),
        CmsError::IvLength(8).to_string(),
        CmsError::Crypto(CryptoError::BadPadding).to_string(),
        CmsError::ContentType(oid("1.2.840.113549.1.7.2")).to_string(),
    ];
    assert_eq!(
        shown,
        [
            "CMS recipient key id does not match our public key",
            "CMS AES-256-CBC IV is 8 bytes, expected 16",
            "CMS decryption failed: AES-CBC plaintext has invalid PKCS#7 padding",
            "CMS content type is 1.2.840.113549.1.7.2, not envelopedData",
        ]
    );
}
