//! Property tests: `parse` and `unwrap` never panic, on noise or on mutated real captures, and
//! whatever `build_encrypted`/`build` writes parses and unwraps back.
#![cfg(any(feature = "aws-lc", feature = "rustcrypto"))]

use std::sync::OnceLock;

use crate::cms_common::*;
use kmstool_core::cms::{self, Layout};
use kmstool_core::crypto::{Backend, RecipientKey};
use proptest::prelude::*;

/// The keyed capture's key in every backend, loaded once.
fn keys() -> &'static [RecipientKey] {
    static KEYS: OnceLock<Vec<RecipientKey>> = OnceLock::new();
    KEYS.get_or_init(|| Backend::all().iter().map(|&b| keyed_key(b)).collect())
}

fn capture() -> &'static [u8] {
    static CAPTURE: OnceLock<Vec<u8>> = OnceLock::new();
    CAPTURE.get_or_init(keyed_capture)
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        (0usize..1200).prop_map(|chunk| Layout::KmsBer { chunk }),
        Just(Layout::BerPrimitive),
        Just(Layout::Der),
    ]
}

/// One edit to a byte string: overwrite, insert, remove or truncate at a position.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Xor(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), 1u8..).prop_map(|(i, b)| Edit::Xor(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match *edit {
        Edit::Set(i, b) => bytes[i % len] = b,
        Edit::Xor(i, b) => bytes[i % len] ^= b,
        Edit::Insert(i, b) => bytes.insert(i % (len + 1), b),
        Edit::Remove(i) => {
            bytes.remove(i % len);
        }
        Edit::Truncate(i) => bytes.truncate(i % len),
    }
}

proptest! {
    #[test]
    fn parse_and_unwrap_never_panic_on_noise(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = cms::parse(&bytes);
        let _ = cms::unwrap(&bytes, &keys()[0]);
    }

    #[test]
    fn parse_never_panics_on_noise_behind_a_plausible_header(
        tail in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        // ContentInfo { envelopedData, [0] ... } with indefinite lengths, then noise.
        let input = [&capture()[..17], &tail].concat();
        let _ = cms::parse(&input);
    }

    #[test]
    fn parse_and_unwrap_never_panic_on_mutated_real_captures(
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let mut input = capture().to_vec();
        for e in &edits {
            apply(&mut input, e);
        }
        let parsed = cms::parse(&input);
        let results: Vec<_> = keys().iter().map(|key| cms::unwrap(&input, key)).collect();
        // unwrap fails whenever parse does, with the same error ...
        if let Err(e) = &parsed {
            prop_assert_eq!(results[0].as_ref().err(), Some(e));
        }
        // ... and every backend comes to the same plaintext or the same error.
        for result in &results[1..] {
            prop_assert_eq!(result, &results[0]);
        }
    }

    #[test]
    fn built_messages_parse_back_to_their_fields(
        layout in layout(),
        subject_key_id in any::<[u8; 32]>(),
        encrypted_key in proptest::collection::vec(any::<u8>(), 256),
        iv in any::<[u8; 16]>(),
        blocks in 1usize..300,
        fill in any::<u8>(),
    ) {
        let content = vec![fill; blocks * 16];
        let message = cms::build_encrypted(layout, &subject_key_id, &encrypted_key, &iv, &content);
        let parsed = cms::parse(&message).expect("built message parses");
        prop_assert_eq!(parsed.subject_key_id, subject_key_id);
        prop_assert_eq!(parsed.encrypted_key, encrypted_key);
        prop_assert_eq!(parsed.iv, iv);
        prop_assert_eq!(parsed.encrypted_content, content);
    }
}

proptest! {
    // Each case does a real RSA decryption per backend; fewer cases keep the debug build quick.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn built_messages_unwrap_to_their_plaintext(
        layout in layout(),
        content_key in any::<[u8; 32]>(),
        iv in any::<[u8; 16]>(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..2000),
        seed in any::<u64>(),
    ) {
        let encrypted_key = oaep_encrypt(keys()[0].public_key_der(), &content_key, seed);
        let message = cms::build(
            layout,
            &keys()[0].subject_key_id(),
            &encrypted_key,
            &content_key,
            &iv,
            &plaintext,
        );
        for key in keys() {
            let unwrapped = cms::unwrap(&message, key).expect("unwraps");
            prop_assert_eq!(unwrapped.expose(), plaintext.as_slice());
        }
    }
}
