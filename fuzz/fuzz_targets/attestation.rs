//! Attestation document parsing on arbitrary bytes: never panics, and what parses re-encodes
//! to a payload that parses to the same fields.
#![no_main]

use kmstool_core::attestation::{AttestationDocument, AttestationPayload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(document) = AttestationDocument::parse(bytes) {
        let again = AttestationPayload::from_cbor(&document.doc.to_cbor()).expect("re-encoded payload parses");
        assert_eq!(again, document.doc);
    }
});
