//! Attestation document parsing on arbitrary bytes: never panics; what parses re-encodes (as the
//! NSM would) to a payload that parses to the same fields, and to a COSE_Sign1 document that
//! parses to the same document; the signed structure is rebuilt from the exact bytes.
#![no_main]

use kmstool_sim::attestation::{
    AttestationDocument, AttestationPayload, ES384_SIGNATURE_LEN, MAX_CABUNDLE_CERTS, MAX_PCRS,
    cose_sign1_sig_structure, encode_cose_sign1,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(document) = AttestationDocument::parse(bytes) {
        assert_eq!(document.signature.len(), ES384_SIGNATURE_LEN);
        assert!(document.doc.pcrs.len() <= MAX_PCRS);
        assert!(document.doc.cabundle.len() <= MAX_CABUNDLE_CERTS);
        assert_eq!(
            AttestationPayload::from_cbor(&document.payload).as_ref(),
            Ok(&document.doc)
        );
        let again = AttestationPayload::from_cbor(&document.doc.to_cbor())
            .expect("re-encoded payload parses");
        assert_eq!(again, document.doc);
        let encoded =
            encode_cose_sign1(&document.protected, &document.payload, &document.signature);
        assert_eq!(AttestationDocument::parse(&encoded).as_ref(), Ok(&document));
        assert_eq!(
            document.sig_structure(),
            cose_sign1_sig_structure(&document.protected, &document.payload)
        );
    }
    // The payload parser on its own, on the same bytes.
    if let Ok(payload) = AttestationPayload::from_cbor(bytes) {
        assert_eq!(
            AttestationPayload::from_cbor(&payload.to_cbor()).as_ref(),
            Ok(&payload)
        );
    }
});
