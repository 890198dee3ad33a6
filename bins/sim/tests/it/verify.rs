//! The verifier on real Nitro documents and on simulated ones.

use crate::clock::*;
use crate::fixtures::*;
use kmstool_sim::attestation::{AttestationDocument, AttestationError};
use kmstool_sim::nsm::SimConfig;
use kmstool_sim::verify::{ChainMemory, VerifyError, VerifyTime, verify, verify_remembering};

#[test]
fn real_documents_verify_against_the_aws_root_at_their_own_time() {
    let root = aws_root_der();
    for name in REAL_DOCUMENTS {
        let bytes = fixture(name);
        let payload = verify(&bytes, &root, VerifyTime::DocumentTimestamp)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let parsed = AttestationDocument::parse(&bytes).map(|d| d.doc);
        assert_eq!(Ok(payload.clone()), parsed, "{name}");
        // The same check at an explicit time equal to the timestamp.
        assert_eq!(
            verify(&bytes, &root, VerifyTime::UnixMillis(payload.timestamp)),
            Ok(payload),
            "{name}"
        );
    }
}

#[test]
fn real_documents_are_rejected_a_day_later_and_before_issue() {
    let root = aws_root_der();
    for name in REAL_DOCUMENTS {
        let bytes = fixture(name);
        let timestamp = AttestationDocument::parse(&bytes)
            .map(|d| d.doc.timestamp)
            .unwrap_or_default();
        assert_eq!(
            verify(&bytes, &root, VerifyTime::UnixMillis(timestamp + DAY_MS)),
            Err(VerifyError::Expired),
            "{name}"
        );
        assert_eq!(
            verify(&bytes, &root, VerifyTime::UnixMillis(timestamp - DAY_MS)),
            Err(VerifyError::NotYetValid),
            "{name}"
        );
    }
}

#[test]
fn real_documents_are_rejected_under_another_root() {
    let other_root = sim(SimConfig::default()).root_der().to_vec();
    for name in REAL_DOCUMENTS {
        assert_eq!(
            verify(&fixture(name), &other_root, VerifyTime::DocumentTimestamp),
            Err(VerifyError::UnknownRoot),
            "{name}"
        );
    }
}

/// Offset of the first byte of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("needle not found"))
}

#[test]
fn tampered_real_documents_are_rejected() {
    let root = aws_root_der();
    let bytes = fixture("real-nitro-attestation-2.cose");
    let len = bytes.len();

    // Flip a bit of PCR0's value inside the signed payload: still parses, signature fails.
    let mut pcr_tampered = bytes.clone();
    let pcr0 = find(&bytes, b"\x00\x58\x30") + 3;
    pcr_tampered[pcr0] ^= 1;
    assert_eq!(
        verify(&pcr_tampered, &root, VerifyTime::DocumentTimestamp),
        Err(VerifyError::BadSignature)
    );

    // Flip a bit of the signature (the last 96 bytes).
    let mut sig_tampered = bytes.clone();
    sig_tampered[len - 10] ^= 0x80;
    assert_eq!(
        verify(&sig_tampered, &root, VerifyTime::DocumentTimestamp),
        Err(VerifyError::BadSignature)
    );

    // Drop the last byte: no longer a document.
    assert_eq!(
        verify(&bytes[..len - 1], &root, VerifyTime::DocumentTimestamp),
        Err(VerifyError::Parse(AttestationError::Truncated))
    );
}

#[test]
fn simulated_documents_verify_against_the_sim_root_only() {
    let nsm = sim(SimConfig::default());
    let document = sim_document(&nsm, b"spki");
    let payload = verify(&document, nsm.root_der(), VerifyTime::DocumentTimestamp)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(payload.timestamp, NOW_MS);
    assert_eq!(payload.public_key.as_deref(), Some(&b"spki"[..]));
    assert_eq!(
        verify(&document, &aws_root_der(), VerifyTime::DocumentTimestamp),
        Err(VerifyError::UnknownRoot)
    );
    let other = sim(SimConfig::default());
    assert_eq!(
        verify(&document, other.root_der(), VerifyTime::DocumentTimestamp),
        Err(VerifyError::UnknownRoot)
    );
    assert_eq!(
        verify(
            &document,
            nsm.root_der(),
            VerifyTime::UnixMillis(NOW_MS + DAY_MS)
        ),
        Err(VerifyError::Expired)
    );
}

#[test]
fn tampered_simulated_documents_are_rejected() {
    let nsm = sim(SimConfig::default());
    let document = sim_document(&nsm, b"original key");
    let root = nsm.root_der();

    let mut key_swapped = document.clone();
    let at = find(&document, b"original key");
    key_swapped[at..at + 12].copy_from_slice(b"attacker key");
    assert_eq!(
        verify(&key_swapped, root, VerifyTime::DocumentTimestamp),
        Err(VerifyError::BadSignature)
    );

    let mut sig_tampered = document.clone();
    let last = sig_tampered.len() - 1;
    sig_tampered[last] ^= 1;
    assert_eq!(
        verify(&sig_tampered, root, VerifyTime::DocumentTimestamp),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn a_document_signed_by_another_modules_leaf_is_rejected() {
    // A genuine signature, but by another module's leaf: this document's leaf key refuses it.
    let nsm = sim(SimConfig::default());
    let other = sim(SimConfig::default());
    let mine =
        AttestationDocument::parse(&sim_document(&nsm, b"k")).unwrap_or_else(|e| panic!("{e}"));
    let theirs =
        AttestationDocument::parse(&sim_document(&other, b"k")).unwrap_or_else(|e| panic!("{e}"));
    let forged = kmstool_sim::attestation::encode_cose_sign1(
        &mine.protected,
        &mine.payload,
        &theirs.signature,
    );
    assert_eq!(
        verify(&forged, nsm.root_der(), VerifyTime::DocumentTimestamp),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn a_reordered_cabundle_is_rejected() {
    let nsm = sim(SimConfig::default());
    let parsed =
        AttestationDocument::parse(&sim_document(&nsm, b"k")).unwrap_or_else(|e| panic!("{e}"));
    let mut doc = parsed.doc.clone();
    doc.cabundle.swap(1, 2);
    // Re-sign is impossible without the key, but the chain check runs before the signature.
    let bytes = kmstool_sim::attestation::encode_cose_sign1(
        &parsed.protected,
        &doc.to_cbor(),
        &parsed.signature,
    );
    assert_eq!(
        verify(&bytes, nsm.root_der(), VerifyTime::DocumentTimestamp),
        Err(VerifyError::UnknownIssuer)
    );
}

#[test]
fn a_remembered_chain_still_checks_each_signature_and_the_time() {
    let root = aws_root_der();
    let bytes = fixture("real-nitro-attestation-2.cose");
    let timestamp = AttestationDocument::parse(&bytes)
        .map(|d| d.doc.timestamp)
        .unwrap_or_default();
    let chains = ChainMemory::new();
    let at = |ms| VerifyTime::UnixMillis(ms);
    let check = |doc: &[u8], ms| verify_remembering(doc, &root, at(ms), Some(&chains));

    let first = check(&bytes, timestamp);
    assert_eq!(first, verify(&bytes, &root, at(timestamp)));
    assert!(first.is_ok());
    assert_eq!(check(&bytes, timestamp + HOUR_MS), first);
    assert_eq!(chains.validations(), 1, "the chain is validated once");

    // Same chain, bad document signature: still refused.
    let mut sig_tampered = bytes.clone();
    let len = sig_tampered.len();
    sig_tampered[len - 10] ^= 0x80;
    assert_eq!(
        check(&sig_tampered, timestamp),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(chains.validations(), 1);

    // Outside the window of the remembered chain: validated again, and refused.
    assert_eq!(check(&bytes, timestamp + DAY_MS), Err(VerifyError::Expired));
    assert_eq!(
        check(&bytes, timestamp - DAY_MS),
        Err(VerifyError::NotYetValid)
    );
    assert_eq!(chains.validations(), 3);
    // The memory did not keep anything from the refusals.
    assert_eq!(check(&bytes, timestamp), first);
    assert_eq!(chains.validations(), 3);
}

#[test]
fn a_remembered_chain_covers_only_its_exact_bytes() {
    let nsm = sim(SimConfig::default());
    let root = nsm.root_der();
    let chains = ChainMemory::new();
    let check =
        |doc: &[u8]| verify_remembering(doc, root, VerifyTime::DocumentTimestamp, Some(&chains));
    // Documents for two keys from one module share a chain.
    let one = sim_document(&nsm, b"key one");
    let two = sim_document(&nsm, b"key two");
    assert_eq!(
        check(&one).map(|p| p.public_key),
        Ok(Some(b"key one".to_vec()))
    );
    assert_eq!(
        check(&two).map(|p| p.public_key),
        Ok(Some(b"key two".to_vec()))
    );
    assert_eq!(chains.validations(), 1);

    // The same certificates in another order are another chain, and do not pass.
    let parsed = AttestationDocument::parse(&one).unwrap_or_else(|e| panic!("{e}"));
    let mut doc = parsed.doc.clone();
    doc.cabundle.swap(1, 2);
    let reordered = kmstool_sim::attestation::encode_cose_sign1(
        &parsed.protected,
        &doc.to_cbor(),
        &parsed.signature,
    );
    assert_eq!(check(&reordered), Err(VerifyError::UnknownIssuer));
    assert_eq!(chains.validations(), 2);

    // Another module under another root never reaches the chain check.
    let other = sim(SimConfig::default());
    assert_eq!(
        check(&sim_document(&other, b"key one")),
        Err(VerifyError::UnknownRoot)
    );
    assert_eq!(chains.validations(), 2);
}

#[test]
fn the_emulators_verifier_validates_one_modules_chain_once() {
    use kmstool_sim::kms::{AttestationVerifier as _, NsmRootVerifier};
    use std::time::{Duration, UNIX_EPOCH};
    let nsm = sim(SimConfig::default());
    let verifier = NsmRootVerifier::new(nsm.root_der().to_vec());
    let at = UNIX_EPOCH + Duration::from_millis(NOW_MS);
    for key in [&b"first key"[..], b"second key", b"third key"] {
        let attested = verifier.verify(&sim_document(&nsm, key), at);
        assert_eq!(attested.map(|a| a.public_key), Ok(key.to_vec()));
    }
    assert_eq!(verifier.chain_validations(), 1);
    // A day later the leaf has expired: validated again, and refused.
    let later = verifier.verify(
        &sim_document(&nsm, b"k"),
        at + Duration::from_millis(DAY_MS),
    );
    assert!(later.is_err());
    assert_eq!(verifier.chain_validations(), 2);
}
