//! Reading a `CiphertextForRecipient` into an [`EnvelopedKey`], with the RustCrypto `cms` crate.

use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
};
use cms::spki::AlgorithmIdentifierOwned;
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Any, Decode, EncodingRules, Sequence, Tag, Tagged};

use super::{CmsError, EnvelopedKey, MAX_CIPHERTEXT_LEN, SUBJECT_KEY_ID_LEN};
use crate::crypto::{AES_BLOCK_LEN, RSA_MODULUS_LEN};

/// id-envelopedData (RFC 5652).
const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
/// id-data (RFC 5652).
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// id-RSAES-OAEP (RFC 8017).
const ID_RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
/// id-mgf1 (RFC 8017).
const ID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
/// id-pSpecified (RFC 8017).
const ID_P_SPECIFIED: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.9");
/// id-sha256 (NIST).
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// id-aes256-CBC (NIST).
const ID_AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");

/// `RSAES-OAEP-params` (RFC 8017 A.2.1); absent fields mean the SHA-1 defaults.
#[derive(Sequence)]
struct OaepParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    p_source: Option<AlgorithmIdentifierOwned>,
}

/// Parses a BER or DER `CiphertextForRecipient` and checks that it is exactly what KMS sends
/// (see the [module docs](super)): one RSA-OAEP-SHA256 key transport recipient named by a
/// 32-byte key id, and AES-256-CBC content. Decrypts nothing.
pub fn parse(ber_or_der: &[u8]) -> Result<EnvelopedKey, CmsError> {
    if ber_or_der.len() > MAX_CIPHERTEXT_LEN {
        return Err(CmsError::TooLarge {
            len: ber_or_der.len(),
        });
    }
    let content_info = ContentInfo::from_ber(ber_or_der).map_err(CmsError::Malformed)?;
    if content_info.content_type != ID_ENVELOPED_DATA {
        return Err(CmsError::ContentType(content_info.content_type));
    }
    let enveloped: EnvelopedData = content_info
        .content
        .decode_as_encoding(EncodingRules::Ber)
        .map_err(CmsError::NotEnvelopedData)?;
    check_version("EnvelopedData", enveloped.version)?;

    let recipient = only_recipient(&enveloped)?;
    let (iv, encrypted_content) = read_content(&enveloped.encrypted_content)?;
    Ok(EnvelopedKey {
        subject_key_id: recipient_key_id(recipient)?,
        encrypted_key: read_encrypted_key(recipient)?,
        iv,
        encrypted_content,
    })
}

/// Requires CMS version 2, the only one KMS writes for these structures.
fn check_version(structure: &'static str, version: CmsVersion) -> Result<(), CmsError> {
    if version != CmsVersion::V2 {
        return Err(CmsError::Version {
            structure,
            found: version as u8,
        });
    }
    Ok(())
}

/// The single KeyTransRecipientInfo.
fn only_recipient(enveloped: &EnvelopedData) -> Result<&KeyTransRecipientInfo, CmsError> {
    let recipients = &enveloped.recip_infos.0;
    let mut iter = recipients.iter();
    let (Some(recipient), None) = (iter.next(), iter.next()) else {
        return Err(CmsError::RecipientCount(recipients.len()));
    };
    let RecipientInfo::Ktri(ktri) = recipient else {
        return Err(CmsError::NotKeyTransRecipient);
    };
    check_version("KeyTransRecipientInfo", ktri.version)?;
    Ok(ktri)
}

/// The recipient's 32-byte subjectKeyIdentifier.
fn recipient_key_id(
    recipient: &KeyTransRecipientInfo,
) -> Result<[u8; SUBJECT_KEY_ID_LEN], CmsError> {
    let RecipientIdentifier::SubjectKeyIdentifier(ski) = &recipient.rid else {
        return Err(CmsError::RecipientNotSubjectKeyId);
    };
    let bytes = ski.0.as_bytes();
    bytes
        .try_into()
        .map_err(|_| CmsError::SubjectKeyIdLength(bytes.len()))
}

/// The RSA-OAEP-SHA256-encrypted content key, after checking the algorithm.
fn read_encrypted_key(recipient: &KeyTransRecipientInfo) -> Result<Vec<u8>, CmsError> {
    let algorithm = &recipient.key_enc_alg;
    if algorithm.oid != ID_RSAES_OAEP {
        return Err(CmsError::KeyEncryptionAlgorithm(algorithm.oid));
    }
    check_oaep_params(algorithm.parameters.as_ref())?;
    let key = recipient.enc_key.as_bytes();
    if key.len() != RSA_MODULUS_LEN {
        return Err(CmsError::EncryptedKeyLength(key.len()));
    }
    Ok(key.to_vec())
}

/// Requires hash SHA-256, MGF1 with SHA-256 and the empty label; the SHA-256 parameters may be
/// NULL (as KMS writes them) or absent (RFC 4055 allows both).
fn check_oaep_params(params: Option<&Any>) -> Result<(), CmsError> {
    let params = params.ok_or(CmsError::OaepParameters(
        "absent (would mean SHA-1 and MGF1-SHA-1)",
    ))?;
    let params: OaepParams = params
        .decode_as_encoding(EncodingRules::Ber)
        .map_err(|_| CmsError::OaepParameters("malformed"))?;
    let hash_is_sha256 = params.hash.as_ref().is_some_and(is_sha256);
    if !hash_is_sha256 {
        return Err(CmsError::OaepParameters("hash is not SHA-256"));
    }
    let mgf_is_mgf1_sha256 = params.mask_gen.as_ref().is_some_and(|mgf| {
        mgf.oid == ID_MGF1
            && mgf
                .parameters
                .as_ref()
                .and_then(|p| {
                    p.decode_as_encoding::<AlgorithmIdentifierOwned>(EncodingRules::Ber)
                        .ok()
                })
                .is_some_and(|hash| is_sha256(&hash))
    });
    if !mgf_is_mgf1_sha256 {
        return Err(CmsError::OaepParameters(
            "mask generation is not MGF1-SHA-256",
        ));
    }
    if let Some(source) = &params.p_source {
        let label_is_empty = source.oid == ID_P_SPECIFIED
            && source
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as_encoding::<OctetString>(EncodingRules::Ber).ok())
                .is_some_and(|label| label.as_bytes().is_empty());
        if !label_is_empty {
            return Err(CmsError::OaepParameters("label is not empty"));
        }
    }
    Ok(())
}

/// Whether an AlgorithmIdentifier is SHA-256 with NULL or absent parameters.
fn is_sha256(algorithm: &AlgorithmIdentifierOwned) -> bool {
    algorithm.oid == ID_SHA256 && algorithm.parameters.as_ref().is_none_or(Any::is_null)
}

/// The IV and the encrypted content, after checking type and algorithm.
fn read_content(content: &EncryptedContentInfo) -> Result<([u8; 16], Vec<u8>), CmsError> {
    if content.content_type != ID_DATA {
        return Err(CmsError::EncryptedContentType(content.content_type));
    }
    let algorithm = &content.content_enc_alg;
    if algorithm.oid != ID_AES256_CBC {
        return Err(CmsError::ContentEncryptionAlgorithm(algorithm.oid));
    }
    let iv = match &algorithm.parameters {
        Some(p) if p.tag() == Tag::OctetString => p
            .decode_as_encoding::<OctetString>(EncodingRules::Ber)
            .map_err(|_| CmsError::IvMissing)?,
        _ => return Err(CmsError::IvMissing),
    };
    let iv = iv
        .as_bytes()
        .try_into()
        .map_err(|_| CmsError::IvLength(iv.as_bytes().len()))?;
    let encrypted = content
        .encrypted_content
        .as_ref()
        .ok_or(CmsError::MissingEncryptedContent)?
        .as_bytes();
    if encrypted.is_empty() || !encrypted.len().is_multiple_of(AES_BLOCK_LEN) {
        return Err(CmsError::ContentLength(encrypted.len()));
    }
    Ok((iv, encrypted.to_vec()))
}
