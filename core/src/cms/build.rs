//! Writing a `CiphertextForRecipient` byte for byte the way KMS does, for the KMS emulator and
//! for tests.
//!
//! `der` cannot emit BER indefinite lengths, so the few TLVs are written by hand here; everything
//! written is read back by [`parse`](super::parse) in the tests, and the KMS layout reproduces
//! real KMS captures exactly.

use super::SUBJECT_KEY_ID_LEN;

/// How to lay out the bytes of a `CiphertextForRecipient`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// What KMS sends: BER with indefinite lengths on ContentInfo, its `[0]`, EnvelopedData and
    /// EncryptedContentInfo (the recipient set is definite), and the encrypted content as a
    /// constructed, indefinite `[0]` of OCTET STRINGs of `chunk` bytes (the last one shorter).
    /// KMS uses 1000-byte chunks ([`Layout::KMS`]); a `chunk` of 0 is taken as 1.
    KmsBer {
        /// Bytes per OCTET STRING chunk.
        chunk: usize,
    },
    /// The same BER, with the encrypted content as one primitive `[0]` (also seen from KMS).
    BerPrimitive,
    /// DER: definite lengths throughout, primitive `[0]` content.
    Der,
}

impl Layout {
    /// Exactly what real KMS sends.
    pub const KMS: Layout = Layout::KmsBer { chunk: 1000 };
}

/// ASN.1 identifier octets used here.
mod tag {
    pub(super) const INTEGER: u8 = 0x02;
    pub(super) const OCTET_STRING: u8 = 0x04;
    pub(super) const SEQUENCE: u8 = 0x30;
    pub(super) const SET: u8 = 0x31;
    /// `[0]` primitive: IMPLICIT subjectKeyIdentifier, primitive encryptedContent.
    pub(super) const CONTEXT_0: u8 = 0x80;
    /// `[0]` constructed: ContentInfo's EXPLICIT content, chunked encryptedContent.
    pub(super) const CONTEXT_0_CONSTRUCTED: u8 = 0xa0;
}

/// The first octet of an indefinite length, and the end-of-contents marker.
const INDEFINITE: u8 = 0x80;
const END_OF_CONTENTS: [u8; 2] = [0x00, 0x00];

/// `OBJECT IDENTIFIER id-envelopedData` (1.2.840.113549.1.7.3).
const OID_ENVELOPED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03,
];
/// `OBJECT IDENTIFIER id-data` (1.2.840.113549.1.7.1).
const OID_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
];
/// `OBJECT IDENTIFIER id-aes256-CBC` (2.16.840.1.101.3.4.1.42).
const OID_AES256_CBC: &[u8] = &[
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a,
];
/// `INTEGER 2`: the version of EnvelopedData and of KeyTransRecipientInfo.
const VERSION_2: &[u8] = &[tag::INTEGER, 0x01, 0x02];

/// The keyEncryptionAlgorithm exactly as KMS writes it: RSAES-OAEP with
/// `[0] sha256 NULL` and `[1] mgf1 (sha256 NULL)`, and no `[2]` (the empty label).
const RSAES_OAEP_SHA256: &[u8] = &[
    0x30, 0x3c, // AlgorithmIdentifier
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07, // id-RSAES-OAEP
    0x30, 0x2f, // RSAES-OAEP-params
    0xa0, 0x0f, 0x30, 0x0d, // [0] hashAlgorithm
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, // sha256, NULL
    0xa1, 0x1c, 0x30, 0x1a, // [1] maskGenAlgorithm
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, // id-mgf1
    0x30, 0x0d, // its hash
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, // sha256, NULL
];

/// Builds a `CiphertextForRecipient` around content that is already encrypted: one v2
/// KeyTransRecipientInfo for `subject_key_id` carrying `encrypted_key` (the caller's RSA-OAEP
/// encryption of the content key), AES-256-CBC with `iv`, and `encrypted_content` verbatim.
/// Writes any lengths it is given, so tests can build malformed messages with it.
pub fn build_encrypted(
    layout: Layout,
    subject_key_id: &[u8; SUBJECT_KEY_ID_LEN],
    encrypted_key: &[u8],
    iv: &[u8; 16],
    encrypted_content: &[u8],
) -> Vec<u8> {
    let recipient = tlv(
        tag::SEQUENCE,
        &[
            VERSION_2,
            &tlv(tag::CONTEXT_0, subject_key_id),
            RSAES_OAEP_SHA256,
            &tlv(tag::OCTET_STRING, encrypted_key),
        ]
        .concat(),
    );
    let recipient_infos = tlv(tag::SET, &recipient);
    let content_algorithm = tlv(
        tag::SEQUENCE,
        &[OID_AES256_CBC, &tlv(tag::OCTET_STRING, iv)].concat(),
    );
    let content = match layout {
        Layout::KmsBer { chunk } => chunked_octets(encrypted_content, chunk.max(1)),
        Layout::BerPrimitive | Layout::Der => tlv(tag::CONTEXT_0, encrypted_content),
    };
    let indefinite = layout != Layout::Der;
    let encrypted_content_info = constructed(
        indefinite,
        tag::SEQUENCE,
        &[OID_DATA, &content_algorithm, &content].concat(),
    );
    let enveloped_data = constructed(
        indefinite,
        tag::SEQUENCE,
        &[VERSION_2, &recipient_infos, &encrypted_content_info].concat(),
    );
    let content = constructed(indefinite, tag::CONTEXT_0_CONSTRUCTED, &enveloped_data);
    constructed(
        indefinite,
        tag::SEQUENCE,
        &[OID_ENVELOPED_DATA, &content].concat(),
    )
}

/// Builds a `CiphertextForRecipient` the way KMS does (see [`build_encrypted`]), encrypting
/// `plaintext` under `content_key` and `iv` with AES-256-CBC and PKCS #7 padding.
/// `encrypted_key` must be the RSA-OAEP-SHA256 encryption of `content_key` to the recipient
/// named by `subject_key_id`; that needs randomness, so the caller does it.
#[cfg(any(feature = "aws-lc", feature = "rustcrypto"))]
pub fn build(
    layout: Layout,
    subject_key_id: &[u8; SUBJECT_KEY_ID_LEN],
    encrypted_key: &[u8],
    content_key: &[u8; 32],
    iv: &[u8; 16],
    plaintext: &[u8],
) -> Vec<u8> {
    let encrypted_content = crate::crypto::aes256_cbc_encrypt(content_key, iv, plaintext);
    build_encrypted(
        layout,
        subject_key_id,
        encrypted_key,
        iv,
        &encrypted_content,
    )
}

/// A constructed, indefinite `[0]` holding `data` as OCTET STRINGs of `chunk` bytes.
fn chunked_octets(data: &[u8], chunk: usize) -> Vec<u8> {
    let pieces: Vec<u8> = data
        .chunks(chunk)
        .flat_map(|piece| tlv(tag::OCTET_STRING, piece))
        .collect();
    constructed(true, tag::CONTEXT_0_CONSTRUCTED, &pieces)
}

/// A constructed TLV, with an indefinite length and end-of-contents or a definite length.
fn constructed(indefinite: bool, tag: u8, content: &[u8]) -> Vec<u8> {
    if !indefinite {
        return tlv(tag, content);
    }
    let mut out = Vec::with_capacity(content.len() + 4);
    out.extend_from_slice(&[tag, INDEFINITE]);
    out.extend_from_slice(content);
    out.extend_from_slice(&END_OF_CONTENTS);
    out
}

/// A TLV with a definite length in its shortest form.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let len_bytes = len.to_be_bytes();
    let significant = len_bytes.iter().skip_while(|&&b| b == 0).count();
    let mut out = Vec::with_capacity(content.len() + 2 + significant);
    out.push(tag);
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        // `significant` is at most `size_of::<usize>()`, far below 0x7f.
        _ => {
            out.push(0x80 | significant as u8);
            out.extend_from_slice(&len_bytes[len_bytes.len() - significant..]);
        }
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definite_lengths_use_the_shortest_form() {
        let cases: &[(usize, &[u8])] = &[
            (0, &[0x04, 0x00]),
            (0x7f, &[0x04, 0x7f]),
            (0x80, &[0x04, 0x81, 0x80]),
            (0xff, &[0x04, 0x81, 0xff]),
            (0x100, &[0x04, 0x82, 0x01, 0x00]),
            (1000, &[0x04, 0x82, 0x03, 0xe8]),
            (0x1_0000, &[0x04, 0x83, 0x01, 0x00, 0x00]),
        ];
        for &(len, header) in cases {
            let out = tlv(tag::OCTET_STRING, &vec![0xaa; len]);
            assert_eq!(&out[..header.len()], header, "length {len}");
            assert_eq!(out.len(), header.len() + len);
        }
    }

    #[test]
    fn chunks_are_cut_at_the_chunk_size_with_a_short_tail() {
        let out = chunked_octets(&[7; 5], 2);
        assert_eq!(
            out,
            [
                0xa0, 0x80, 0x04, 0x02, 7, 7, 0x04, 0x02, 7, 7, 0x04, 0x01, 7, 0x00, 0x00
            ]
        );
        assert_eq!(chunked_octets(&[], 1000), [0xa0, 0x80, 0x00, 0x00]);
    }
}
