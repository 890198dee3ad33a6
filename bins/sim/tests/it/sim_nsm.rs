//! The simulated NSM: requests, registers, the state directory, and documents shaped like
//! real ones.

use crate::clock::*;
use crate::fixtures::*;
use ciborium::value::Value;
use kmstool_core::nsm::{self, Digest, ErrorCode, Nsm, NsmError, NsmErrorCode, Request, Response};
use kmstool_sim::attestation::{AttestationDocument, PROTECTED_HEADER_ES384};
use kmstool_sim::nsm::{PcrState, SimConfig, SimError, SimNsm, describe_nsm, describe_pcr};
use kmstool_sim::verify::{VerifyTime, verify};
use serde_bytes::ByteBuf;

const PCR0_HEX: &str = "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b";

fn parse(document: &[u8]) -> AttestationDocument {
    AttestationDocument::parse(document).unwrap_or_else(|e| panic!("core parser: {e}"))
}

fn configured() -> SimConfig {
    let mut config = SimConfig::default();
    config
        .set_pcr_hex(0, PCR0_HEX)
        .unwrap_or_else(|e| panic!("{e}"));
    config
        .set_pcr_arg(&format!("4={}", "ab".repeat(48)))
        .unwrap_or_else(|e| panic!("{e}"));
    config
}

#[test]
fn configured_pcrs_show_up_in_documents_and_describe_pcr() {
    let nsm = sim(configured());
    let doc = parse(&sim_document(&nsm, b"k")).doc;
    assert_eq!(doc.pcr(0).map(hex::encode).as_deref(), Some(PCR0_HEX));
    assert_eq!(doc.pcr(4), Some(&[0xab; 48][..]));
    assert_eq!(doc.pcr(1), Some(&[0; 48][..]));
    assert_eq!(doc.pcrs.len(), 16);
    assert_eq!(
        describe_pcr(&nsm, 0).map(|p| hex::encode(p.data)),
        Ok(PCR0_HEX.to_owned())
    );
}

#[test]
fn debug_mode_zeroes_every_register() {
    let nsm = sim(SimConfig {
        debug: true,
        ..configured()
    });
    let doc = parse(&sim_document(&nsm, b"k")).doc;
    assert_eq!(doc.pcrs.len(), 16);
    assert!(doc.pcrs.values().all(|v| v == &[0; 48]), "{:?}", doc.pcrs);
    assert_eq!(
        describe_pcr(&nsm, 0),
        Ok(PcrState {
            locked: true,
            data: vec![0; 48]
        })
    );
}

#[test]
fn bad_pcr_settings_are_refused() {
    let mut config = SimConfig::default();
    assert!(matches!(
        config.set_pcr_hex(0, "abcd"),
        Err(SimError::Pcr { index: 0, .. })
    ));
    assert!(matches!(
        config.set_pcr_hex(16, PCR0_HEX),
        Err(SimError::Pcr { index: 16, .. })
    ));
    assert!(matches!(
        config.set_pcr_hex(2, "zz"),
        Err(SimError::Pcr { .. })
    ));
    assert!(matches!(
        config.set_pcr_arg(PCR0_HEX),
        Err(SimError::Pcr { .. })
    ));
    assert!(config.pcrs.is_empty());
}

#[test]
fn module_id_is_nitro_shaped_and_configurable() {
    let nsm = sim(SimConfig::default());
    let id = nsm.module_id();
    let (instance, enclave) = id.split_once("-enc").unwrap_or_default();
    assert!(instance.starts_with("i-") && instance.len() == 19, "{id}");
    assert_eq!(enclave.len(), 16, "{id}");
    // As on Nitro, the enclave id starts with the launch time in milliseconds.
    assert_eq!(&enclave[..12], &format!("{NOW_MS:012x}"), "{id}");

    let fixed = "i-0123456789abcdef0-enc0123456789abcdef";
    let nsm = sim(SimConfig {
        module_id: Some(fixed.into()),
        ..SimConfig::default()
    });
    assert_eq!(nsm.module_id(), fixed);
    assert_eq!(parse(&sim_document(&nsm, b"k")).doc.module_id, fixed);
    for bad in [
        "enclave",
        "i-0123-enc0123456789abcdef",
        "i-0123456789abcdef0-encXYZ",
    ] {
        let result = SimNsm::new(
            SimConfig {
                module_id: Some(bad.into()),
                ..SimConfig::default()
            },
            fixed_clock(NOW_MS),
        );
        assert!(matches!(result, Err(SimError::ModuleId(_))), "{bad}");
    }
}

#[test]
fn attestation_carries_the_request_fields() {
    let nsm = sim(SimConfig::default());
    let response = nsm.process(Request::Attestation {
        user_data: Some(ByteBuf::from(b"user".to_vec())),
        nonce: Some(ByteBuf::from(b"nonce".to_vec())),
        public_key: None,
    });
    let Response::Attestation { document } = response else {
        panic!("not an attestation: {response:?}");
    };
    let doc = parse(&document).doc;
    assert_eq!(doc.user_data.as_deref(), Some(&b"user"[..]));
    assert_eq!(doc.nonce.as_deref(), Some(&b"nonce"[..]));
    assert_eq!(doc.public_key, None);
    assert_eq!(doc.digest, Digest::SHA384);
    assert_eq!(doc.timestamp, NOW_MS);
    assert_eq!(doc.module_id, nsm.module_id());
}

#[test]
fn oversized_attestation_inputs_are_refused() {
    let nsm = sim(SimConfig::default());
    let too_large = |user_data: usize, public_key: usize| {
        let response = nsm.process(Request::Attestation {
            user_data: Some(ByteBuf::from(vec![0; user_data])),
            nonce: None,
            public_key: Some(ByteBuf::from(vec![0; public_key])),
        });
        matches!(response, Response::Error(ErrorCode::InputTooLarge))
    };
    assert!(too_large(513, 10));
    assert!(too_large(10, 1025));
    assert!(!too_large(512, 1024));
}

#[test]
fn random_bytes_come_in_256_byte_chunks_and_differ() {
    let nsm = sim(SimConfig::default());
    let Response::GetRandom { random } = nsm.process(Request::GetRandom) else {
        panic!("not random");
    };
    assert_eq!(random.len(), 256);
    let a = nsm::get_random(&nsm, 600);
    let b = nsm::get_random(&nsm, 600);
    assert_eq!(a.as_ref().map(Vec::len), Ok(600));
    assert_ne!(a, b);
}

#[test]
fn registers_extend_lock_and_describe_like_the_nsm() {
    let nsm = sim(SimConfig::default());
    // Boot registers are locked.
    assert!(matches!(
        nsm.process(Request::ExtendPCR {
            index: 0,
            data: vec![1]
        }),
        Response::Error(ErrorCode::ReadOnlyIndex)
    ));
    // PCR16 extends as SHA-384(old ‖ data).
    let Response::ExtendPCR { data } = nsm.process(Request::ExtendPCR {
        index: 16,
        data: b"abc".to_vec(),
    }) else {
        panic!("extend failed");
    };
    let expected = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA384,
        &[&[0u8; 48][..], b"abc"].concat(),
    );
    assert_eq!(data, expected.as_ref());
    assert_eq!(
        describe_pcr(&nsm, 16),
        Ok(PcrState {
            locked: false,
            data: expected.as_ref().to_vec()
        })
    );
    // Locking makes it read-only.
    assert!(matches!(
        nsm.process(Request::LockPCR { index: 16 }),
        Response::LockPCR
    ));
    assert!(matches!(
        nsm.process(Request::ExtendPCR {
            index: 16,
            data: vec![1]
        }),
        Response::Error(ErrorCode::ReadOnlyIndex)
    ));
    // Out-of-range indexes.
    assert_eq!(
        describe_pcr(&nsm, 32),
        Err(NsmError::Module(NsmErrorCode::InvalidIndex))
    );
    assert!(matches!(
        nsm.process(Request::LockPCRs { range: 33 }),
        Response::Error(ErrorCode::InvalidIndex)
    ));
    assert!(matches!(
        nsm.process(Request::LockPCRs { range: 20 }),
        Response::LockPCRs
    ));
    let description = describe_nsm(&nsm).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(description.max_pcrs, 32);
    assert_eq!(description.digest, "SHA384");
    assert_eq!(description.module_id, nsm.module_id());
    assert_eq!(description.locked_pcrs, (0..20).collect());
}

#[test]
fn the_state_directory_keeps_the_root() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let state = dir.path().join("nsm");
    let first = SimNsm::load_or_create(&state, SimConfig::default(), fixed_clock(NOW_MS))
        .unwrap_or_else(|e| panic!("create: {e}"));
    let key_mode = std::fs::metadata(state.join("nsm-root.key.pem"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(key_mode.ok(), Some(0o600));
    // A later run, at a later time, has the same root and its documents verify under it.
    let later = NOW_MS + 40 * DAY_MS;
    let second = SimNsm::load_or_create(&state, SimConfig::default(), fixed_clock(later))
        .unwrap_or_else(|e| panic!("load: {e}"));
    assert_eq!(first.root_pem(), second.root_pem());
    assert_eq!(pem_to_der(&second.root_pem()), second.root_der());
    let document = sim_document(&second, b"k");
    assert!(verify(&document, first.root_der(), VerifyTime::DocumentTimestamp).is_ok());
    // A fresh module has another root.
    assert_ne!(sim(SimConfig::default()).root_der(), first.root_der());
}

#[test]
fn a_broken_state_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let state = dir.path();
    SimNsm::load_or_create(state, SimConfig::default(), fixed_clock(NOW_MS))
        .unwrap_or_else(|e| panic!("create: {e}"));
    // A certificate that does not belong to the key.
    let other = sim(SimConfig::default()).root_pem();
    std::fs::write(state.join("nsm-root.pem"), other).unwrap_or_else(|e| panic!("{e}"));
    let result = SimNsm::load_or_create(state, SimConfig::default(), fixed_clock(NOW_MS));
    assert!(matches!(result, Err(SimError::State(_))), "{result:?}");
    // Only one of the two files.
    std::fs::remove_file(state.join("nsm-root.key.pem")).unwrap_or_else(|e| panic!("{e}"));
    let result = SimNsm::load_or_create(state, SimConfig::default(), fixed_clock(NOW_MS));
    assert!(matches!(result, Err(SimError::State(_))), "{result:?}");
}

#[test]
fn certificates_are_reissued_as_time_passes() {
    let clock = TestClock::new(NOW_MS);
    let nsm = SimNsm::new(SimConfig::default(), clock.clock()).unwrap_or_else(|e| panic!("{e}"));
    let leaf_at = |ms: u64| {
        clock.set(ms);
        let document = sim_document(&nsm, b"k");
        let result = verify(&document, nsm.root_der(), VerifyTime::DocumentTimestamp);
        assert!(result.is_ok(), "at {ms}: {result:?}");
        parse(&document).doc
    };
    let first = leaf_at(NOW_MS);
    // For two hours the leaf is reused (it then has an hour left).
    assert!(leaf_at(NOW_MS + 2 * HOUR_MS).certificate == first.certificate);
    // Later it is replaced, and documents still verify at their time.
    let later = leaf_at(NOW_MS + 2 * HOUR_MS + 1000);
    assert!(later.certificate != first.certificate);
    assert!(later.cabundle == first.cabundle);
    // After days the intermediates are replaced too; the root stays.
    let days = leaf_at(NOW_MS + 10 * DAY_MS);
    assert!(days.cabundle[3] != first.cabundle[3]);
    assert!(days.cabundle[0] == first.cabundle[0]);
    // A clock that goes back still gets valid documents.
    leaf_at(NOW_MS - DAY_MS);
}

/// The payload's keys and the CBOR type of each value.
fn shape(payload: &[u8]) -> Vec<(String, &'static str)> {
    let Ok(Value::Map(entries)) = ciborium::de::from_reader::<Value, _>(payload) else {
        panic!("payload is not a map");
    };
    entries
        .into_iter()
        .map(|(k, v)| {
            let key = k.as_text().unwrap_or("?").to_owned();
            let kind = match v {
                Value::Text(_) => "text",
                Value::Integer(_) => "uint",
                Value::Map(_) => "map",
                Value::Bytes(_) => "bytes",
                Value::Array(_) => "array",
                Value::Null => "null",
                _ => "other",
            };
            (key, kind)
        })
        .collect()
}

#[test]
fn simulated_documents_have_the_byte_structure_of_real_ones() {
    let real = fixture("real-nitro-attestation-debug.cose");
    let nsm = sim(SimConfig::default());
    let response = nsm.process(Request::Attestation {
        user_data: Some(ByteBuf::from(b"hello, world!".to_vec())),
        nonce: None,
        public_key: Some(ByteBuf::from(b"my super secret key".to_vec())),
    });
    let Response::Attestation { document } = response else {
        panic!("no document");
    };
    // Same COSE framing: untagged array of 4, bstr(4) protected header {1: -35}, empty
    // unprotected map, then a two-byte-length payload bstr.
    assert_eq!(document[..7], real[..7]);
    assert_eq!(&document[..7], &[0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0]);
    assert_eq!(document[7], 0x59);
    // A 96-byte signature closes the document.
    assert_eq!(
        &document[document.len() - 98..document.len() - 96],
        &[0x58, 0x60]
    );
    let (real, sim) = (parse(&real), parse(&document));
    assert_eq!(sim.protected, PROTECTED_HEADER_ES384);
    assert_eq!(shape(&sim.payload), shape(&real.payload));
    assert_eq!(sim.doc.cabundle.len(), real.doc.cabundle.len());
    assert_eq!(
        sim.doc.pcrs.keys().collect::<Vec<_>>(),
        real.doc.pcrs.keys().collect::<Vec<_>>()
    );
    // Within a few percent of the real size (certificates of the same shape).
    let ratio = sim.payload.len() as f64 / real.payload.len() as f64;
    assert!(
        (0.9..1.1).contains(&ratio),
        "{} vs {}",
        sim.payload.len(),
        real.payload.len()
    );
}
