//! Third-party checks: real documents and simulated ones go through verifiers that share no
//! code with ours — AWS's payload type (`aws-nitro-enclaves-nsm-api`, serde_cbor), AWS's COSE
//! library (`aws-nitro-enclaves-cose`, OpenSSL keys) and OpenSSL's X.509 path validation at the
//! document's time. That the simulator's documents pass the same checks
//! under the sim root as real ones under the AWS root is the evidence that they are realistic.

use crate::clock::*;
use crate::fixtures::*;
use aws_nitro_enclaves_cose::CoseSign1;
use aws_nitro_enclaves_cose::crypto::Openssl;
use aws_nitro_enclaves_nsm_api::api::AttestationDoc;
use kmstool_sim::nsm::{SimConfig, SimNsm};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509, X509StoreContext};

/// Why the independent verifier refused a document.
#[derive(Debug, PartialEq)]
enum Refused {
    Cose,
    Payload,
    Chain(String),
    Signature,
}

/// Verifies `document` with OpenSSL and AWS's crates only; returns the decoded payload.
fn independent_verify(document: &[u8], root_der: &[u8]) -> Result<AttestationDoc, Refused> {
    let cose = CoseSign1::from_bytes(document).map_err(|_| Refused::Cose)?;
    // Unverified read first: the chain is needed to find the key.
    let payload = cose
        .get_payload::<Openssl>(None)
        .map_err(|_| Refused::Cose)?;
    let doc = AttestationDoc::from_binary(&payload).map_err(|_| Refused::Payload)?;

    let root = X509::from_der(root_der).map_err(|e| Refused::Chain(e.to_string()))?;
    let leaf = X509::from_der(&doc.certificate).map_err(|e| Refused::Chain(e.to_string()))?;
    let mut store = X509StoreBuilder::new().map_err(|e| Refused::Chain(e.to_string()))?;
    store
        .add_cert(root)
        .map_err(|e| Refused::Chain(e.to_string()))?;
    let mut param = X509VerifyParam::new().map_err(|e| Refused::Chain(e.to_string()))?;
    param.set_time((doc.timestamp / 1000) as _);
    store
        .set_param(&param)
        .map_err(|e| Refused::Chain(e.to_string()))?;
    let store = store.build();
    let mut chain = Stack::new().map_err(|e| Refused::Chain(e.to_string()))?;
    for der in doc.cabundle.iter().skip(1) {
        let cert = X509::from_der(der).map_err(|e| Refused::Chain(e.to_string()))?;
        chain
            .push(cert)
            .map_err(|e| Refused::Chain(e.to_string()))?;
    }
    let mut context = X509StoreContext::new().map_err(|e| Refused::Chain(e.to_string()))?;
    let verdict = context
        .init(&store, &leaf, &chain, |ctx| {
            Ok(ctx
                .verify_cert()?
                .then_some(())
                .ok_or(ctx.error().to_string()))
        })
        .map_err(|e| Refused::Chain(e.to_string()))?;
    verdict.map_err(Refused::Chain)?;

    let key = leaf
        .public_key()
        .map_err(|e| Refused::Chain(e.to_string()))?;
    match cose.verify_signature::<Openssl>(&key) {
        Ok(true) => Ok(doc),
        _ => Err(Refused::Signature),
    }
}

#[test]
fn real_documents_pass_the_independent_verifier_under_the_aws_root() {
    let root = aws_root_der();
    for name in REAL_DOCUMENTS {
        let doc =
            independent_verify(&fixture(name), &root).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(doc.pcrs.len(), 16, "{name}");
    }
}

#[test]
fn simulated_documents_pass_the_independent_verifier_under_the_sim_root() {
    let mut config = SimConfig::default();
    config
        .set_pcr_hex(0, &"5a".repeat(48))
        .unwrap_or_else(|e| panic!("{e}"));
    let nsm = sim(config);
    let document = sim_document(&nsm, b"public key");
    let doc = independent_verify(&document, nsm.root_der()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(doc.module_id, nsm.module_id());
    assert_eq!(doc.timestamp, NOW_MS);
    assert_eq!(doc.pcrs.get(&0).map(|v| v.to_vec()), Some(vec![0x5a; 48]));
    assert_eq!(
        doc.public_key.map(|k| k.to_vec()),
        Some(b"public key".to_vec())
    );

    // Also from a root kept in a state directory.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let nsm = SimNsm::load_or_create(dir.path(), SimConfig::default(), fixed_clock(NOW_MS))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(independent_verify(&sim_document(&nsm, b"k"), nsm.root_der()).is_ok());
}

#[test]
fn real_and_simulated_chains_fail_openssl_strict_mode_alike() {
    // Real Nitro leaf and instance certificates lack an Authority Key Identifier, which
    // OpenSSL's strict mode requires; the simulated ones copy that too.
    let strict = |document: &[u8], root: &[u8]| {
        let cose = CoseSign1::from_bytes(document).unwrap_or_else(|e| panic!("{e}"));
        let payload = cose
            .get_payload::<Openssl>(None)
            .unwrap_or_else(|e| panic!("{e}"));
        let doc = AttestationDoc::from_binary(&payload).unwrap_or_else(|e| panic!("{e:?}"));
        let mut store = X509StoreBuilder::new().unwrap_or_else(|e| panic!("{e}"));
        store
            .add_cert(X509::from_der(root).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut param = X509VerifyParam::new().unwrap_or_else(|e| panic!("{e}"));
        param.set_time((doc.timestamp / 1000) as _);
        param
            .set_flags(openssl::x509::verify::X509VerifyFlags::X509_STRICT)
            .unwrap_or_else(|e| panic!("{e}"));
        store.set_param(&param).unwrap_or_else(|e| panic!("{e}"));
        let store = store.build();
        let mut chain = Stack::new().unwrap_or_else(|e| panic!("{e}"));
        for der in doc.cabundle.iter().skip(1) {
            chain
                .push(X509::from_der(der).unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let leaf = X509::from_der(&doc.certificate).unwrap_or_else(|e| panic!("{e}"));
        let mut context = X509StoreContext::new().unwrap_or_else(|e| panic!("{e}"));
        context
            .init(&store, &leaf, &chain, |ctx| {
                ctx.verify_cert()?;
                Ok(ctx.error().to_string())
            })
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let nsm = sim(SimConfig::default());
    let real = strict(&fixture("real-nitro-attestation-1.cose"), &aws_root_der());
    let simulated = strict(&sim_document(&nsm, b"k"), nsm.root_der());
    assert_eq!(real, "Missing Authority Key Identifier");
    assert_eq!(simulated, real);
}

#[test]
fn the_independent_verifier_rejects_what_ours_rejects() {
    let nsm = sim(SimConfig::default());
    let document = sim_document(&nsm, b"public key");
    // Under the AWS root the simulated chain does not verify.
    assert!(matches!(
        independent_verify(&document, &aws_root_der()),
        Err(Refused::Chain(_))
    ));
    // A real document under the sim root neither.
    assert!(matches!(
        independent_verify(&fixture("real-nitro-attestation-1.cose"), nsm.root_der()),
        Err(Refused::Chain(_))
    ));
    // A flipped signature bit.
    let mut tampered = document.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        independent_verify(&tampered, nsm.root_der()).map(drop),
        Err(Refused::Signature)
    );
}

/// The X.509v3 extension lines OpenSSL prints for a certificate: name and criticality, in
/// order, plus the key usage and basic constraints values.
fn extension_outline(der: &[u8]) -> Vec<String> {
    let cert = X509::from_der(der).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&cert.to_text().unwrap_or_default()).into_owned();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut outline = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("X509v3 ") && !line.starts_with("X509v3 extensions") {
            outline.push((*line).to_owned());
            let value = lines.get(i + 1).copied().unwrap_or_default();
            if line.starts_with("X509v3 Key Usage") || line.starts_with("X509v3 Basic Constraints")
            {
                outline.push(value.to_owned());
            }
        }
    }
    let algorithm = lines
        .iter()
        .find(|l| l.starts_with("Signature Algorithm"))
        .copied()
        .unwrap_or_default();
    let curve = lines
        .iter()
        .find(|l| l.starts_with("NIST CURVE"))
        .copied()
        .unwrap_or_default();
    outline.push(algorithm.to_owned());
    outline.push(curve.to_owned());
    outline
}

#[test]
fn simulated_certificates_carry_the_extensions_of_real_ones() {
    let real = kmstool_sim::attestation::AttestationDocument::parse(&fixture(
        "real-nitro-attestation-1.cose",
    ))
    .unwrap_or_else(|e| panic!("{e}"))
    .doc;
    let nsm = sim(SimConfig::default());
    let simulated = kmstool_sim::attestation::AttestationDocument::parse(&sim_document(&nsm, b"k"))
        .unwrap_or_else(|e| panic!("{e}"))
        .doc;
    let certs = |doc: &kmstool_sim::attestation::AttestationPayload| {
        doc.cabundle
            .iter()
            .chain([&doc.certificate])
            .cloned()
            .collect::<Vec<_>>()
    };
    for (depth, (real, sim)) in certs(&real).iter().zip(certs(&simulated)).enumerate() {
        let expected = extension_outline(real);
        assert!(expected.len() >= 4, "{expected:?}");
        assert_eq!(extension_outline(&sim), expected, "certificate {depth}");
    }
}
