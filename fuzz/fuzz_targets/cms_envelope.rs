//! `CiphertextForRecipient` values that get past the RSA step: the real KMS capture's encrypted
//! content key (whose content key the published fixture key recovers) wrapped by
//! `cms::build` / `cms::build_encrypted` around fuzzed content, in every layout KMS uses.
//! Raw bytes rarely survive RSA-OAEP, so this is what reaches AES-256-CBC and the padding
//! check. A chosen plaintext must come back exactly; both backends' AES-CBC must agree with
//! each other and with `unwrap`; encrypted content that opens must be the encryption of what
//! it opened to; and a corrupted content key must be refused.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use kmstool_core::cms::{self, CmsError, EnvelopedKey, Layout};
use kmstool_core::crypto::{self, Backend, CryptoError, RecipientKey};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

const KEY_PEM: &[u8] = include_bytes!("../../fixtures/kms/real-kms-decrypt-with-key.key.pem");
const CAPTURE: &[u8] = include_bytes!("../../fixtures/kms/real-kms-decrypt-with-key.ber");

struct Fixture {
    keys: Vec<RecipientKey>,
    envelope: EnvelopedKey,
    content_key: Zeroizing<[u8; 32]>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys: Vec<_> = Backend::all()
            .iter()
            .map(|b| RecipientKey::from_pem(*b, KEY_PEM).expect("fixture key"))
            .collect();
        let envelope = cms::parse(CAPTURE).expect("capture parses");
        let decrypted = keys[0]
            .oaep_sha256_decrypt(&envelope.encrypted_key)
            .expect("fixture key opens the capture");
        let mut content_key = Zeroizing::new([0; 32]);
        content_key.copy_from_slice(&decrypted);
        Fixture {
            keys,
            envelope,
            content_key,
        }
    })
}

#[derive(Arbitrary, Debug)]
enum Mode {
    /// Encrypt `data` properly: every backend must return it.
    Plaintext,
    /// Use `data` as the encrypted content as is.
    Ciphertext,
    /// Use `data` as the encrypted content under a corrupted content key.
    CorruptKey { at: u8, mask: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    mode: Mode,
    layout: u8,
    chunk: u16,
    iv: [u8; 16],
    data: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let Fixture {
        keys,
        envelope,
        content_key,
    } = fixture();
    let layout = match input.layout % 3 {
        0 => Layout::KmsBer {
            chunk: usize::from(input.chunk),
        },
        1 => Layout::BerPrimitive,
        _ => Layout::Der,
    };
    let skid = &envelope.subject_key_id;
    let mut encrypted_key = envelope.encrypted_key.clone();
    let bytes = match input.mode {
        Mode::Plaintext => cms::build(
            layout,
            skid,
            &encrypted_key,
            content_key,
            &input.iv,
            input.data,
        ),
        Mode::Ciphertext => {
            cms::build_encrypted(layout, skid, &encrypted_key, &input.iv, input.data)
        }
        Mode::CorruptKey { at, mask } => {
            let at = usize::from(at) % encrypted_key.len();
            encrypted_key[at] ^= mask.max(1);
            cms::build_encrypted(layout, skid, &encrypted_key, &input.iv, input.data)
        }
    };
    // Through the whole unwrap (RSA included) with the default backend; RustCrypto's RSA is
    // too slow under the sanitizer to run on every input, so the backends are compared on the
    // AES step directly, where the fuzzed bytes go.
    let result = cms::unwrap(&bytes, &keys[0]).map(|p| p.expose().to_vec());
    match input.mode {
        Mode::Plaintext => {
            assert_eq!(result.as_deref(), Ok(input.data), "{layout:?}");
        }
        Mode::Ciphertext => {
            let opened: Vec<_> = Backend::all()
                .iter()
                .map(|b| {
                    crypto::aes256_cbc_decrypt(*b, content_key, &input.iv, input.data)
                        .map(|p| p.expose().to_vec())
                })
                .collect();
            for pair in opened.windows(2) {
                assert_eq!(pair[0], pair[1], "backends disagree");
            }
            match (&result, &opened[0]) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(CmsError::Crypto(a)), Err(b)) => assert_eq!(a, b),
                (Err(CmsError::ContentLength(_)), Err(CryptoError::NotBlockAligned { .. })) => {}
                (a, b) => panic!("unwrap {a:?}, AES {b:?}"),
            }
            if let Ok(plaintext) = &result {
                let again = crypto::aes256_cbc_encrypt(content_key, &input.iv, plaintext);
                assert_eq!(again, input.data, "opened content is not its encryption");
            }
        }
        Mode::CorruptKey { .. } => {
            // RSA-OAEP on corrupted ciphertexts across backends is cms_unwrap's job.
            assert!(result.is_err(), "a corrupted content key opened");
        }
    }
});
