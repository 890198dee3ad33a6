//! CMS parsing and unwrapping on arbitrary bytes, with the published fixture key, through
//! both crypto backends: never panics, and both backends agree.
#![no_main]

use std::sync::OnceLock;

use kmstool_core::cms;
use kmstool_core::crypto::{Backend, RecipientKey};
use libfuzzer_sys::fuzz_target;

const KEY_PEM: &[u8] = include_bytes!("../../../shared/fixtures/kms/real-kms-decrypt-with-key.key.pem");

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
    let results: Vec<_> = keys()
        .iter()
        .map(|key| cms::unwrap(bytes, key).map(|p| p.expose().to_vec()))
        .collect();
    if parsed.is_err() {
        assert!(results.iter().all(Result::is_err));
    }
    for pair in results.windows(2) {
        assert_eq!(pair[0].is_ok(), pair[1].is_ok());
        if let (Ok(a), Ok(b)) = (&pair[0], &pair[1]) {
            assert_eq!(a, b);
        }
    }
});
