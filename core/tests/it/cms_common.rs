//! Shared helpers for the CMS and crypto tests: fixtures, keys, OAEP encryption, BER surgery.
#![allow(dead_code)]

use kmstool_core::crypto::{Backend, RecipientKey};
use sha2::{Digest, Sha256};

/// Bytes of a file under `fixtures/kms/` (repository root).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../fixtures/kms/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The real KMS Decrypt capture whose recipient key is published.
pub fn keyed_capture() -> Vec<u8> {
    fixture("real-kms-decrypt-with-key.ber")
}

/// The PKCS #1 PEM of the keyed capture's recipient.
pub fn keyed_pem() -> Vec<u8> {
    fixture("real-kms-decrypt-with-key.key.pem")
}

/// The 32 bytes the keyed capture decrypts to.
pub fn keyed_plaintext() -> Vec<u8> {
    let text = String::from_utf8(fixture("real-kms-decrypt-with-key.plaintext.hex"))
        .expect("hex file is text");
    hex_decode(text.trim())
}

/// The keyed capture's recipient key, loaded into `backend`.
pub fn keyed_key(backend: Backend) -> RecipientKey {
    RecipientKey::from_pem(backend, &keyed_pem()).expect("fixture key loads")
}

/// Decodes lower- or upper-case hex.
pub fn hex_decode(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// A TLV with a definite length (tests build malformed structures with it).
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// Offsets in every real capture (they share the layout up to the content): the
/// `recipientInfos` SET spans `SET_START..SET_END`; its single recipient starts at `SET_START+4`.
pub const SET_START: usize = 20;
pub const SET_END: usize = 387;
/// The KeyTransRecipientInfo's parts, as offsets into a capture.
pub const KTRI_VERSION: usize = 30;
pub const SKI_START: usize = 33;
pub const OAEP_ALG_START: usize = 65;
pub const OAEP_ALG_END: usize = 127;
pub const ENC_KEY_START: usize = 131;
/// EnvelopedData's version byte, and the last bytes of the OIDs we mutate.
pub const ENVELOPED_VERSION: usize = 19;
pub const CONTENT_TYPE_OID_LAST: usize = 12;
pub const OAEP_OID_LAST: usize = 77;
pub const OAEP_HASH_OID_LAST: usize = 94;
pub const MGF1_OID_LAST: usize = 111;
pub const MGF1_HASH_OID_LAST: usize = 124;
pub const DATA_OID_LAST: usize = 399;
pub const CONTENT_ALG_START: usize = 400;
pub const AES_OID_LAST: usize = 412;
pub const IV_START: usize = 415;
/// Where the encrypted content `[0]` starts (all captures), and its first byte in the keyed one.
pub const CONTENT_START: usize = 431;
pub const KEYED_CONTENT_BYTES: usize = 435;

/// `capture` with its recipientInfos SET replaced by one holding `recipients`. The outer layers
/// use indefinite lengths, so no other length changes.
pub fn with_recipients(capture: &[u8], recipients: &[Vec<u8>]) -> Vec<u8> {
    let set = tlv(0x31, &recipients.concat());
    [&capture[..SET_START], &set, &capture[SET_END..]].concat()
}

/// The capture's own KeyTransRecipientInfo, whole.
pub fn capture_recipient(capture: &[u8]) -> Vec<u8> {
    capture[SET_START + 4..SET_END].to_vec()
}

/// A KeyTransRecipientInfo from its parts (version 2).
pub fn ktri(rid: &[u8], algorithm: &[u8], encrypted_key: &[u8]) -> Vec<u8> {
    tlv(
        0x30,
        &[
            &[0x02, 0x01, 0x02][..],
            rid,
            algorithm,
            &tlv(0x04, encrypted_key),
        ]
        .concat(),
    )
}

/// `capture` with `[start, end)` replaced by `with`.
pub fn splice(capture: &[u8], start: usize, end: usize, with: &[u8]) -> Vec<u8> {
    [&capture[..start], with, &capture[end..]].concat()
}

/// `capture` with byte `at` XORed by `mask`.
pub fn flip(capture: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut out = capture.to_vec();
    out[at] ^= mask;
    out
}

/// A deterministic RNG for RSA-OAEP encryption in tests (SHA-256 in counter mode).
#[cfg(feature = "rustcrypto")]
pub struct TestRng {
    seed: [u8; 32],
    counter: u64,
}

#[cfg(feature = "rustcrypto")]
impl TestRng {
    pub fn new(seed: u64) -> Self {
        Self {
            seed: Sha256::digest(seed.to_be_bytes()).into(),
            counter: 0,
        }
    }
}

#[cfg(feature = "rustcrypto")]
impl rsa::rand_core::TryRng for TestRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(self.seed)
                .chain_update(self.counter.to_be_bytes())
                .finalize();
            self.counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }
}

#[cfg(feature = "rustcrypto")]
impl rsa::rand_core::TryCryptoRng for TestRng {}

/// RSA-OAEP-SHA256 encryption of `message` to the SPKI `public_key_der`, with the `rsa` crate
/// and a seeded RNG.
#[cfg(feature = "rustcrypto")]
pub fn oaep_encrypt_rustcrypto(public_key_der: &[u8], message: &[u8], seed: u64) -> Vec<u8> {
    use rsa::pkcs8::DecodePublicKey;
    let key = rsa::PublicKey::from_public_key_der(public_key_der).expect("SPKI parses");
    key.encrypt(&mut TestRng::new(seed), rsa::Oaep::<Sha256>::new(), message)
        .expect("OAEP encryption")
}

/// RSA-OAEP-SHA256 encryption of `message` to the SPKI `public_key_der`, with AWS-LC.
#[cfg(feature = "aws-lc")]
pub fn oaep_encrypt_aws_lc(public_key_der: &[u8], message: &[u8]) -> Vec<u8> {
    use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
    let key = PublicEncryptingKey::from_der(public_key_der).expect("SPKI parses");
    let key = OaepPublicEncryptingKey::new(key).expect("OAEP key");
    let mut out = vec![0; key.ciphertext_size()];
    let len = key
        .encrypt(&OAEP_SHA256_MGF1SHA256, message, &mut out, None)
        .expect("OAEP encryption")
        .len();
    out.truncate(len);
    out
}

/// RSA-OAEP-SHA256 encryption with whichever library is compiled in (RustCrypto preferred,
/// being seedable).
pub fn oaep_encrypt(public_key_der: &[u8], message: &[u8], seed: u64) -> Vec<u8> {
    #[cfg(feature = "rustcrypto")]
    return oaep_encrypt_rustcrypto(public_key_der, message, seed);
    #[cfg(not(feature = "rustcrypto"))]
    {
        let _ = seed;
        oaep_encrypt_aws_lc(public_key_der, message)
    }
}

/// The keyed capture's private key as PKCS #8 DER, converted by a library (not by core).
pub fn keyed_pkcs8_der() -> Vec<u8> {
    let pem = String::from_utf8(keyed_pem()).expect("PEM is text");
    let (label, pkcs1) = der::pem::decode_vec(pem.as_bytes()).expect("PEM decodes");
    assert_eq!(label, "RSA PRIVATE KEY");
    #[cfg(feature = "aws-lc")]
    {
        use aws_lc_rs::encoding::AsDer;
        let pair = aws_lc_rs::rsa::KeyPair::from_der(&pkcs1).expect("PKCS#1 parses");
        let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = pair.as_der().expect("PKCS#8");
        der.as_ref().to_vec()
    }
    #[cfg(not(feature = "aws-lc"))]
    {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::PrivateKey::from_pkcs1_der(&pkcs1).expect("PKCS#1 parses");
        key.to_pkcs8_der().expect("PKCS#8").as_bytes().to_vec()
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `material` sealed to the harness's key as KMS seals it for a `Recipient`.
pub fn sealed_for(key: &RecipientKey, material: &[u8]) -> Vec<u8> {
    use kmstool_core::cms::{Layout, build};
    let content_key = [0x42; 32];
    let encrypted_key = oaep_encrypt(key.public_key_der(), &content_key, 11);
    build(
        Layout::KmsBer { chunk: 1000 },
        &key.subject_key_id(),
        &encrypted_key,
        &content_key,
        &[7; 16],
        material,
    )
}
