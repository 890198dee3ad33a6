//! CMS parsing and unwrapping on arbitrary bytes, with the published fixture key, through
//! both crypto backends: never panics, both backends agree, and whatever parses is rebuilt by
//! `cms::build_encrypted` (DER and KMS's BER layout) into bytes that parse to the same fields.
#![no_main]

use std::sync::OnceLock;

use kmstool_core::cms::{self, Layout};
use kmstool_core::crypto::{Backend, RecipientKey};
use libfuzzer_sys::fuzz_target;

const KEY_PEM: &[u8] = include_bytes!("../../fixtures/kms/real-kms-decrypt-with-key.key.pem");

fn keys() -> &'static Vec<RecipientKey> {
    static KEYS: OnceLock<Vec<RecipientKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        Backend::all()
            .iter()
            .map(|b| RecipientKey::from_pem(*b, KEY_PEM).expect("fixture key"))
            .collect()
    })
}

fuzz_target!(|bytes: &[u8]| {
    let parsed = cms::parse(bytes);
    if let Ok(key) = &parsed {
        for layout in [Layout::Der, Layout::KMS, Layout::BerPrimitive] {
            let rebuilt = cms::build_encrypted(
                layout,
                &key.subject_key_id,
                &key.encrypted_key,
                &key.iv,
                &key.encrypted_content,
            );
            assert_eq!(cms::parse(&rebuilt).as_ref(), Ok(key), "{layout:?}");
        }
    }
    let results: Vec<_> = keys()
        .iter()
        .map(|key| cms::unwrap(bytes, key).map(|p| p.expose().to_vec()))
        .collect();
    if let Err(error) = &parsed {
        for result in &results {
            assert_eq!(
                result.as_ref().err(),
                Some(error),
                "unwrap disagrees with parse"
            );
        }
    }
    for pair in results.windows(2) {
        assert_eq!(pair[0], pair[1], "backends disagree");
    }
});
