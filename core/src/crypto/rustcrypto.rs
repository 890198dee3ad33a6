//! The RustCrypto backend (`rsa`, `aes`, `cbc`): RSA-OAEP-SHA256 and AES-256-CBC.
//!
//! RSA decryption is blinded, as it must be against timing attacks, but core may not draw
//! randomness. The blinding factors come instead from [`BlindingRng`], an HMAC-SHA256 stream
//! keyed by a secret derived from the private key and seeded with the ciphertext: an attacker
//! who does not hold the key cannot predict or influence the factor, which is what blinding
//! needs. (`rsa` is built without its `getrandom` feature, so decryption never reaches the OS
//! RNG.) Only key generation draws from the operating system, through `getrandom`.

use std::convert::Infallible;

use aes::Aes256;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rsa::rand_core::{TryCryptoRng, TryRng};
use rsa::{Oaep, PrivateKey as RsaPrivateKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{AES_BLOCK_LEN, AES256_KEY_LEN, CryptoError, KeyError};

/// Domain separation for the blinding secret derived from the private key.
const BLINDING_LABEL: &[u8] = b"kmstool-core RSA-OAEP blinding v1";

/// An RSA private key held by the `rsa` crate (zeroized on drop by that crate).
pub(super) struct PrivateKey {
    key: RsaPrivateKey,
    /// HMAC key for [`BlindingRng`], derived from the private key.
    blinding_secret: Zeroizing<[u8; 32]>,
}

impl PrivateKey {
    /// Generates an RSA-2048 key (e = 65537) from the operating system's RNG; returns it as
    /// PKCS #8 DER, wiped when dropped.
    pub(super) fn generate_pkcs8_der() -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let key = RsaPrivateKey::new(&mut getrandom::SysRng, super::RSA_MODULUS_LEN * 8)
            .map_err(|_| KeyError::Generation)?;
        let der = key.to_pkcs8_der().map_err(|_| KeyError::Generation)?;
        Ok(Zeroizing::new(der.as_bytes().to_vec()))
    }

    /// Parses PKCS #8 DER; returns the key and its DER SubjectPublicKeyInfo.
    pub(super) fn from_pkcs8_der(der: &[u8]) -> Result<(Self, Vec<u8>), KeyError> {
        let key =
            RsaPrivateKey::from_pkcs8_der(der).map_err(|e| KeyError::Rejected(e.to_string()))?;
        let spki = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|_| KeyError::PublicKey)?
            .into_vec();
        let blinding_secret = Zeroizing::new(hmac_sha256(der, &[BLINDING_LABEL]));
        Ok((
            Self {
                key,
                blinding_secret,
            },
            spki,
        ))
    }

    /// RSA-OAEP (SHA-256, MGF1-SHA-256, no label) decryption, blinded.
    pub(super) fn oaep_sha256_decrypt(
        &self,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut rng = BlindingRng::new(&self.blinding_secret, ciphertext);
        self.key
            .decrypt_blinded(&mut rng, Oaep::<Sha256>::new(), ciphertext)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::OaepDecryption)
    }
}

/// AES-256-CBC decryption with PKCS #7 unpadding; the length is already block-aligned.
pub(super) fn aes256_cbc_decrypt(
    key: &[u8; AES256_KEY_LEN],
    iv: &[u8; AES_BLOCK_LEN],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    let len = cbc::Decryptor::<Aes256>::new(key.into(), iv.into())
        .decrypt_padded::<Pkcs7>(&mut buffer)
        .map_err(|_| CryptoError::BadPadding)?
        .len();
    buffer.truncate(len);
    Ok(buffer)
}

/// AES-256-CBC encryption with PKCS #7 padding.
#[cfg_attr(feature = "aws-lc", allow(dead_code))]
pub(super) fn aes256_cbc_encrypt(
    key: &[u8; AES256_KEY_LEN],
    iv: &[u8; AES_BLOCK_LEN],
    plaintext: &[u8],
) -> Vec<u8> {
    cbc::Encryptor::<Aes256>::new(key.into(), iv.into()).encrypt_padded_vec::<Pkcs7>(plaintext)
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length, so `new_from_slice` cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A deterministic, secret-keyed byte stream for RSA blinding: block `i` is
/// `HMAC-SHA256(K, i)` with `K = HMAC-SHA256(blinding secret, ciphertext)`.
struct BlindingRng {
    key: Zeroizing<[u8; 32]>,
    counter: u64,
    block: Zeroizing<[u8; 32]>,
    /// Bytes of `block` already handed out.
    used: usize,
}

impl BlindingRng {
    fn new(blinding_secret: &[u8; 32], ciphertext: &[u8]) -> Self {
        Self {
            key: Zeroizing::new(hmac_sha256(blinding_secret, &[ciphertext])),
            counter: 0,
            block: Zeroizing::new([0; 32]),
            used: 32,
        }
    }
}

impl TryRng for BlindingRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let mut filled = 0;
        while filled < dst.len() {
            if self.used == self.block.len() {
                *self.block = hmac_sha256(&*self.key, &[&self.counter.to_be_bytes()]);
                self.counter = self.counter.wrapping_add(1);
                self.used = 0;
            }
            let available = &self.block[self.used..];
            let take = available.len().min(dst.len() - filled);
            dst[filled..filled + take].copy_from_slice(&available[..take]);
            filled += take;
            self.used += take;
        }
        Ok(())
    }
}

impl TryCryptoRng for BlindingRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blinding_stream_depends_on_secret_and_ciphertext_and_does_not_repeat() {
        let draw = |secret: &[u8; 32], ciphertext: &[u8]| {
            let mut rng = BlindingRng::new(secret, ciphertext);
            let mut out = [0u8; 100];
            // Uneven reads cross block boundaries.
            let (a, rest) = out.split_at_mut(7);
            rng.try_fill_bytes(a).ok();
            rng.try_fill_bytes(rest).ok();
            out
        };
        let base = draw(&[1; 32], b"ciphertext");
        assert_eq!(base, draw(&[1; 32], b"ciphertext"));
        assert_ne!(base, draw(&[2; 32], b"ciphertext"));
        assert_ne!(base, draw(&[1; 32], b"ciphertext!"));
        assert_ne!(base[..32], base[32..64]);
        // Block 0 is HMAC(K, 0) with K = HMAC(secret, ciphertext).
        let key = hmac_sha256(&[1; 32], &[b"ciphertext"]);
        assert_eq!(base[..32], hmac_sha256(&key, &[&0u64.to_be_bytes()]));
    }
}
