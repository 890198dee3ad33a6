//! The AWS-LC backend (`aws-lc-rs`): RSA-OAEP-SHA256 and AES-256-CBC.

use aws_lc_rs::cipher::{
    AES_256, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey,
};
use zeroize::Zeroizing;

use super::{AES_BLOCK_LEN, AES256_KEY_LEN, CryptoError, KeyError};

/// An RSA private key held by AWS-LC, ready for OAEP decryption.
pub(super) struct PrivateKey(OaepPrivateDecryptingKey);

impl PrivateKey {
    /// Generates an RSA-2048 key (e = 65537) from AWS-LC's RNG, which draws on the kernel's;
    /// returns it as PKCS #8 DER, wiped when dropped.
    pub(super) fn generate_pkcs8_der() -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let key =
            PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generation)?;
        let der = key.as_der().map_err(|_| KeyError::Generation)?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    }

    /// Parses PKCS #8 DER; returns the key and its DER SubjectPublicKeyInfo.
    pub(super) fn from_pkcs8_der(der: &[u8]) -> Result<(Self, Vec<u8>), KeyError> {
        let key =
            PrivateDecryptingKey::from_pkcs8(der).map_err(|e| KeyError::Rejected(e.to_string()))?;
        let spki = key
            .public_key()
            .as_der()
            .map_err(|_| KeyError::PublicKey)?
            .as_ref()
            .to_vec();
        let key = OaepPrivateDecryptingKey::new(key).map_err(|_| KeyError::PublicKey)?;
        Ok((Self(key), spki))
    }

    /// RSA-OAEP (SHA-256, MGF1-SHA-256, no label) decryption.
    pub(super) fn oaep_sha256_decrypt(
        &self,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut plaintext = Zeroizing::new(vec![0; self.0.min_output_size()]);
        let len = self
            .0
            .decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut plaintext, None)
            .map_err(|_| CryptoError::OaepDecryption)?
            .len();
        plaintext.truncate(len);
        Ok(plaintext)
    }
}

/// AES-256-CBC decryption with PKCS #7 unpadding; the length is already block-aligned.
pub(super) fn aes256_cbc_decrypt(
    key: &[u8; AES256_KEY_LEN],
    iv: &[u8; AES_BLOCK_LEN],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    // Only a wrong key length or context makes these fail, and both are fixed by the types;
    // after the length check the caller made, a failure can only be the padding.
    let key = UnboundCipherKey::new(&AES_256, key).map_err(|_| CryptoError::BadPadding)?;
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(key).map_err(|_| CryptoError::BadPadding)?;
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    let len = key
        .decrypt(
            &mut buffer,
            DecryptionContext::Iv128(FixedLength::from(*iv)),
        )
        .map_err(|_| CryptoError::BadPadding)?
        .len();
    buffer.truncate(len);
    Ok(buffer)
}

/// AES-256-CBC encryption with PKCS #7 padding.
pub(super) fn aes256_cbc_encrypt(
    key: &[u8; AES256_KEY_LEN],
    iv: &[u8; AES_BLOCK_LEN],
    plaintext: &[u8],
) -> Vec<u8> {
    // Room for the padding up front, so padding does not reallocate and leave a copy behind.
    let mut buffer = Vec::with_capacity(plaintext.len() + AES_BLOCK_LEN);
    buffer.extend_from_slice(plaintext);
    let sealed = UnboundCipherKey::new(&AES_256, key)
        .and_then(PaddedBlockEncryptingKey::cbc_pkcs7)
        .and_then(|key| {
            key.less_safe_encrypt(
                &mut buffer,
                EncryptionContext::Iv128(FixedLength::from(*iv)),
            )
        });
    // AES-256 with a 32-byte key and CBC with a 16-byte IV are fixed by the argument types;
    // AWS-LC has no other failure for them.
    #[allow(clippy::expect_used)]
    sealed.expect("AES-256-CBC with a 32-byte key and a 16-byte IV");
    buffer
}
