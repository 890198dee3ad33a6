use proptest::prelude::*;

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/attestation/");

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn real_documents() -> Vec<(&'static str, Vec<u8>)> {
    [
        "real-nitro-attestation-1.cose",
        "real-nitro-attestation-2.cose",
        "real-nitro-attestation-debug.cose",
    ]
    .into_iter()
    .map(|name| (name, fixture(name)))
    .collect()
}

/// The DER inside a PEM file (base64 between the armor lines).
fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(pem);
    let body: String = text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .unwrap_or_else(|e| panic!("bad PEM: {e}"))
}

fn parse(bytes: &[u8]) -> AttestationDocument {
    AttestationDocument::parse(bytes).unwrap_or_else(|e| panic!("parse failed: {e}"))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `i-<17 hex>-enc<16 hex>`, the shape of every Nitro module id.
fn is_module_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("i-") else {
        return false;
    };
    let Some((instance, enclave)) = rest.split_once("-enc") else {
        return false;
    };
    instance.len() == 17 && enclave.len() == 16 && is_lower_hex(instance) && is_lower_hex(enclave)
}

#[test]
fn real_documents_parse_with_nitro_shapes() {
    let root = pem_to_der(&fixture("aws-nitro-root-g1.pem"));
    for (name, bytes) in real_documents() {
        let parsed = parse(&bytes);
        assert_eq!(parsed.protected, PROTECTED_HEADER_ES384, "{name}");
        assert_eq!(parsed.signature.len(), ES384_SIGNATURE_LEN, "{name}");
        let doc = &parsed.doc;
        assert!(is_module_id(&doc.module_id), "{name}: {}", doc.module_id);
        assert_eq!(doc.digest, Digest::SHA384, "{name}");
        assert_eq!(doc.pcrs.len(), 16, "{name}");
        assert!(doc.pcrs.keys().copied().eq(0..16), "{name}");
        assert!(doc.pcrs.values().all(|v| v.len() == 48), "{name}");
        assert_eq!(doc.cabundle.len(), 4, "{name}");
        assert_eq!(
            doc.cabundle.first(),
            Some(&root),
            "{name}: cabundle[0] is the AWS root"
        );
        // Every certificate is a DER SEQUENCE with a two-byte long length.
        for cert in doc.cabundle.iter().chain([&doc.certificate]) {
            assert_eq!(cert.first(), Some(&0x30), "{name}");
        }
        // Timestamps are milliseconds in 2022–2023.
        assert!((1_640_995_200_000..1_704_067_200_000).contains(&doc.timestamp));
    }
}

#[test]
fn real_document_field_values() {
    let first = parse(&fixture("real-nitro-attestation-1.cose")).doc;
    assert_eq!(first.module_id, "i-0918f6c55e3b61d89-enc018aa8b8e2285d13");
    assert_eq!(first.timestamp, 0x0000_018a_a8d1_692c);
    assert_eq!(first.public_key, None);
    assert!(first.nonce.is_some());

    let debug = parse(&fixture("real-nitro-attestation-debug.cose")).doc;
    assert_eq!(debug.module_id, "i-03ad7cdb817437eeb-enc0183cc7569b3f6e1");
    for index in [0, 1, 2] {
        assert_eq!(debug.pcr(index), Some(&[0u8; 48][..]), "debug PCR{index}");
    }
    assert_eq!(
        debug.public_key.as_deref(),
        Some(&b"my super secret key"[..])
    );
    assert_eq!(debug.user_data.as_deref(), Some(&b"hello, world!"[..]));
    assert_eq!(debug.nonce, None);

    let production = parse(&fixture("real-nitro-attestation-2.cose")).doc;
    for index in [0, 1, 2] {
        let pcr = production.pcr(index).unwrap_or_default();
        assert!(
            pcr.iter().any(|&b| b != 0),
            "production PCR{index} is measured"
        );
    }
}

#[test]
fn encoder_reproduces_real_documents_byte_for_byte() {
    for (name, bytes) in real_documents() {
        let parsed = parse(&bytes);
        assert_eq!(parsed.doc.to_cbor(), parsed.payload, "{name}: payload");
        assert_eq!(
            encode_cose_sign1(&parsed.protected, &parsed.payload, &parsed.signature),
            bytes,
            "{name}: COSE_Sign1"
        );
    }
}

#[test]
fn tagged_documents_are_accepted() {
    let bytes = fixture("real-nitro-attestation-2.cose");
    let mut tagged = vec![0xd2];
    tagged.extend_from_slice(&bytes);
    assert_eq!(parse(&tagged), parse(&bytes));
}

#[test]
fn sig_structure_is_the_rfc_9052_array() {
    let parsed = parse(&fixture("real-nitro-attestation-1.cose"));
    let sig = parsed.sig_structure();
    let value: Value = ciborium::de::from_reader(&sig[..]).unwrap_or(Value::Null);
    assert_eq!(
        value,
        Value::Array(vec![
            Value::Text("Signature1".into()),
            Value::Bytes(PROTECTED_HEADER_ES384.to_vec()),
            Value::Bytes(vec![]),
            Value::Bytes(parsed.payload.clone()),
        ])
    );
    // 0x84, text(10) "Signature1", bytes(4) protected, bytes(0): the fixed prefix.
    let prefix = b"\x84\x6aSignature1\x44\xa1\x01\x38\x22\x40";
    assert!(sig.starts_with(prefix));
}

/// A COSE_Sign1 with the given items, for the malformed-input table.
fn cose(protected: &[u8], unprotected: &[u8], payload: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut out = vec![0x84];
    for item in [protected, unprotected, payload, signature] {
        out.extend_from_slice(item);
    }
    out
}

/// `bytes(96)` of zeros, a signature of the right shape.
fn sig96() -> Vec<u8> {
    let mut out = vec![0x58, 96];
    out.extend_from_slice(&[0; 96]);
    out
}

#[test]
fn malformed_documents_are_rejected() {
    let es384 = [0x44, 0xa1, 0x01, 0x38, 0x22];
    let empty_map_payload = [0x41, 0xa0];
    let cases: Vec<(&str, Vec<u8>, AttestationError)> = vec![
        ("empty", vec![], AttestationError::Truncated),
        (
            "break byte",
            vec![0xff],
            AttestationError::Cbor { offset: None },
        ),
        (
            "reserved additional info",
            vec![0x1c],
            AttestationError::Cbor { offset: Some(0) },
        ),
        ("empty array", vec![0x80], AttestationError::NotCoseSign1),
        (
            "three items",
            vec![0x83, 0x40, 0xa0, 0x40],
            AttestationError::NotCoseSign1,
        ),
        ("a map", vec![0xa0], AttestationError::NotCoseSign1),
        (
            "COSE_Sign tag 98",
            vec![0xd8, 0x62, 0x80],
            AttestationError::UnexpectedTag(98),
        ),
        (
            "huge bstr claim",
            vec![0x5a, 0xff, 0xff, 0xff, 0xff],
            AttestationError::Truncated,
        ),
        ("deep nesting", vec![0x81; 64], AttestationError::TooDeep),
        (
            "protected not bytes",
            cose(&[0xa0], &[0xa0], &empty_map_payload, &sig96()),
            AttestationError::ProtectedHeader,
        ),
        (
            "protected not a map",
            cose(&[0x41, 0x80], &[0xa0], &empty_map_payload, &sig96()),
            AttestationError::ProtectedHeader,
        ),
        (
            "protected empty",
            cose(&[0x40], &[0xa0], &empty_map_payload, &sig96()),
            AttestationError::MissingAlgorithm,
        ),
        (
            "alg ES256",
            cose(
                &[0x43, 0xa1, 0x01, 0x26],
                &[0xa0],
                &empty_map_payload,
                &sig96(),
            ),
            AttestationError::UnsupportedAlgorithm(Some(-7)),
        ),
        (
            "alg text",
            cose(
                &[0x44, 0xa1, 0x01, 0x61, 0x78],
                &[0xa0],
                &empty_map_payload,
                &sig96(),
            ),
            AttestationError::UnsupportedAlgorithm(None),
        ),
        (
            "unprotected not a map",
            cose(&es384, &[0x80], &empty_map_payload, &sig96()),
            AttestationError::UnprotectedHeader,
        ),
        (
            "detached payload",
            cose(&es384, &[0xa0], &[0xf6], &sig96()),
            AttestationError::PayloadNotBytes,
        ),
        (
            "64-byte signature",
            cose(
                &es384,
                &[0xa0],
                &empty_map_payload,
                &[&[0x58, 64][..], &[0; 64]].concat(),
            ),
            AttestationError::SignatureLength(64),
        ),
        (
            "signature not bytes",
            cose(&es384, &[0xa0], &empty_map_payload, &[0xf6]),
            AttestationError::SignatureLength(0),
        ),
        (
            "payload is an array",
            cose(&es384, &[0xa0], &[0x41, 0x80], &sig96()),
            AttestationError::PayloadNotMap,
        ),
        (
            "payload is an empty map",
            cose(&es384, &[0xa0], &empty_map_payload, &sig96()),
            AttestationError::MissingField("module_id"),
        ),
        (
            "trailing byte",
            [
                cose(&es384, &[0xa0], &empty_map_payload, &sig96()),
                vec![0x00],
            ]
            .concat(),
            AttestationError::TrailingBytes(1),
        ),
        (
            "too large",
            vec![0; MAX_DOCUMENT_BYTES + 1],
            AttestationError::TooLarge {
                len: MAX_DOCUMENT_BYTES + 1,
                max: MAX_DOCUMENT_BYTES,
            },
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(AttestationDocument::parse(&bytes), Err(expected), "{name}");
    }
}

#[test]
fn malformed_payload_literals_are_rejected() {
    let cases: Vec<(&str, &[u8], AttestationError)> = vec![
        ("array", b"\x80", AttestationError::PayloadNotMap),
        ("integer key", b"\xa1\x01\x00", AttestationError::NonTextKey),
        (
            "module_id is an integer",
            b"\xa1\x69module_id\x01",
            AttestationError::WrongType("module_id"),
        ),
        (
            "module_id twice",
            b"\xa2\x69module_id\x61a\x69module_id\x61b",
            AttestationError::DuplicateField("module_id"),
        ),
        (
            "digest MD5",
            b"\xa1\x66digest\x63MD5",
            AttestationError::UnknownDigest,
        ),
        (
            "negative timestamp",
            b"\xa1\x69timestamp\x20",
            AttestationError::WrongType("timestamp"),
        ),
        (
            "pcrs an array",
            b"\xa1\x64pcrs\x80",
            AttestationError::WrongType("pcrs"),
        ),
        (
            "pcr index 32",
            b"\xa1\x64pcrs\xa1\x18\x20\x40",
            AttestationError::PcrIndex(32),
        ),
        (
            "pcr index -1",
            b"\xa1\x64pcrs\xa1\x20\x40",
            AttestationError::PcrIndex(-1),
        ),
        (
            "cabundle empty",
            b"\xa1\x68cabundle\x80",
            AttestationError::EmptyCabundle,
        ),
        (
            "cabundle of text",
            b"\xa1\x68cabundle\x81\x61x",
            AttestationError::WrongType("cabundle"),
        ),
        (
            "nonce is text",
            b"\xa1\x65nonce\x61x",
            AttestationError::WrongType("nonce"),
        ),
        ("truncated", b"\xa1\x69module_", AttestationError::Truncated),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(
            AttestationPayload::from_cbor(bytes),
            Err(expected),
            "{name}"
        );
    }
}

fn sample_payload() -> AttestationPayload {
    AttestationPayload {
        module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
        digest: Digest::SHA384,
        timestamp: 1_700_000_000_000,
        pcrs: (0..16).map(|i| (i, vec![i as u8; 48])).collect(),
        certificate: vec![0x30, 0x01],
        cabundle: vec![vec![0x30, 0x02], vec![0x30, 0x03]],
        public_key: Some(vec![0x30, 0x04]),
        user_data: None,
        nonce: None,
    }
}

/// The payload map of `payload` with one field replaced (or removed when `value` is None).
fn payload_with(field: &str, value: Option<Value>) -> Vec<u8> {
    let Ok(Value::Map(entries)) = ciborium::de::from_reader(&sample_payload().to_cbor()[..]) else {
        panic!("sample payload is not a map");
    };
    let entries = entries
        .into_iter()
        .filter_map(|(k, v)| match (&k, &value) {
            (Value::Text(name), Some(new)) if name == field => Some((k, new.clone())),
            (Value::Text(name), None) if name == field => None,
            _ => Some((k, v)),
        })
        .collect();
    encode(&Value::Map(entries))
}

#[test]
fn payload_field_checks() {
    let pcr_map = |n: u16, len: usize| {
        Value::Map(
            (0..n)
                .map(|i| (Value::Integer(i.into()), Value::Bytes(vec![0; len])))
                .collect(),
        )
    };
    let certs = |n: usize| Value::Array(vec![Value::Bytes(vec![0x30]); n]);
    let cases: Vec<(&str, Vec<u8>, AttestationError)> = vec![
        (
            "no digest",
            payload_with("digest", None),
            AttestationError::MissingField("digest"),
        ),
        (
            "no pcrs",
            payload_with("pcrs", None),
            AttestationError::MissingField("pcrs"),
        ),
        (
            "no certificate",
            payload_with("certificate", None),
            AttestationError::MissingField("certificate"),
        ),
        (
            "empty module_id",
            payload_with("module_id", Some(Value::Text(String::new()))),
            AttestationError::EmptyField("module_id"),
        ),
        (
            "empty certificate",
            payload_with("certificate", Some(Value::Bytes(vec![]))),
            AttestationError::EmptyField("certificate"),
        ),
        (
            "33 pcrs",
            payload_with("pcrs", Some(pcr_map(33, 48))),
            AttestationError::TooManyPcrs(33),
        ),
        (
            "32-byte pcrs under SHA384",
            payload_with("pcrs", Some(pcr_map(1, 32))),
            AttestationError::PcrLength {
                index: 0,
                len: 32,
                expected: 48,
            },
        ),
        (
            "repeated pcr index",
            payload_with(
                "pcrs",
                Some(Value::Map(vec![
                    (Value::Integer(3.into()), Value::Bytes(vec![0; 48])),
                    (Value::Integer(3.into()), Value::Bytes(vec![1; 48])),
                ])),
            ),
            AttestationError::DuplicatePcr(3),
        ),
        (
            "9 CA certificates",
            payload_with("cabundle", Some(certs(9))),
            AttestationError::TooManyCertificates(9),
        ),
        (
            "timestamp as text",
            payload_with("timestamp", Some(Value::Text("now".into()))),
            AttestationError::WrongType("timestamp"),
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(
            AttestationPayload::from_cbor(&bytes),
            Err(expected),
            "{name}"
        );
    }
}

#[test]
fn payload_options_may_be_absent_and_unknown_keys_are_ignored() {
    let absent = AttestationPayload::from_cbor(&payload_with("public_key", None));
    assert_eq!(absent.map(|p| p.public_key), Ok(None));
    let mut with_extra = sample_payload().to_cbor();
    // Bump the map header from 9 to 10 entries and append "extra": 1.
    assert_eq!(with_extra.first(), Some(&0xa9));
    if let Some(first) = with_extra.first_mut() {
        *first = 0xaa;
    }
    with_extra.extend_from_slice(b"\x65extra\x01");
    assert_eq!(
        AttestationPayload::from_cbor(&with_extra),
        Ok(sample_payload())
    );
    // SHA-256 and SHA-512 registers are 32 and 64 bytes.
    for (digest, len) in [(Digest::SHA256, 32), (Digest::SHA512, 64)] {
        let payload = AttestationPayload {
            digest,
            pcrs: [(0, vec![9; len])].into_iter().collect(),
            ..sample_payload()
        };
        assert_eq!(
            AttestationPayload::from_cbor(&payload.to_cbor()),
            Ok(payload)
        );
    }
}

#[test]
fn signed_sample_round_trips() {
    let payload = sample_payload();
    let bytes = encode_cose_sign1(&PROTECTED_HEADER_ES384, &payload.to_cbor(), &[7; 96]);
    let parsed = parse(&bytes);
    assert_eq!(parsed.doc, payload);
    assert_eq!(parsed.signature, vec![7; 96]);
    assert_eq!(parsed.payload, payload.to_cbor());
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn arb_payload() -> impl Strategy<Value = AttestationPayload> {
    (
        "[a-z0-9-]{1,40}",
        any::<u64>(),
        proptest::collection::btree_map(0u16..32, Just(()), 0..32),
        arb_bytes(64),
        proptest::collection::vec(arb_bytes(64), 1..=MAX_CABUNDLE_CERTS),
        proptest::option::of(arb_bytes(64)),
        proptest::option::of(arb_bytes(64)),
        proptest::option::of(arb_bytes(64)),
    )
        .prop_map(
            |(
                module_id,
                timestamp,
                indexes,
                certificate,
                cabundle,
                public_key,
                user_data,
                nonce,
            )| {
                AttestationPayload {
                    module_id,
                    digest: Digest::SHA384,
                    timestamp,
                    pcrs: indexes
                        .into_keys()
                        .map(|i| (i, vec![i as u8; 48]))
                        .collect(),
                    certificate: [&[0x30][..], &certificate].concat(),
                    cabundle: cabundle
                        .into_iter()
                        .map(|c| [&[0x30][..], &c].concat())
                        .collect(),
                    public_key,
                    user_data,
                    nonce,
                }
            },
        )
}

proptest! {
    #[test]
    fn parser_never_panics_on_arbitrary_bytes(bytes in arb_bytes(2048)) {
        let _ = AttestationDocument::parse(&bytes);
        let _ = AttestationPayload::from_cbor(&bytes);
    }

    #[test]
    fn parser_never_panics_on_mutated_real_documents(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = fixture("real-nitro-attestation-1.cose");
        for (at, value) in flips {
            let at = at.index(bytes.len());
            if let Some(byte) = bytes.get_mut(at) {
                *byte = value;
            }
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(parsed) = AttestationDocument::parse(&bytes) {
            // Whatever still parses re-encodes to a document that parses the same.
            let again = encode_cose_sign1(&parsed.protected, &parsed.payload, &parsed.signature);
            prop_assert_eq!(AttestationDocument::parse(&again), Ok(parsed));
        }
    }

    #[test]
    fn payload_round_trips(payload in arb_payload()) {
        let bytes = payload.to_cbor();
        prop_assert_eq!(AttestationPayload::from_cbor(&bytes), Ok(payload.clone()));
        let document = encode_cose_sign1(&PROTECTED_HEADER_ES384, &bytes, &[1; 96]);
        let parsed = AttestationDocument::parse(&document);
        prop_assert_eq!(parsed.map(|d| d.doc), Ok(payload));
    }
}
