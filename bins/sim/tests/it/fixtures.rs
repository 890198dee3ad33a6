//! The attestation fixtures of the repository (`fixtures/attestation/`): real Nitro
//! documents and the AWS Nitro root.
#![allow(dead_code)]

pub const REAL_DOCUMENTS: [&str; 3] = [
    "real-nitro-attestation-1.cose",
    "real-nitro-attestation-2.cose",
    "real-nitro-attestation-debug.cose",
];

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../fixtures/attestation/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The AWS Nitro Enclaves root G1, DER.
pub fn aws_root_der() -> Vec<u8> {
    pem_to_der(&String::from_utf8_lossy(&fixture("aws-nitro-root-g1.pem")))
}

pub fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .unwrap_or_else(|e| panic!("bad PEM: {e}"))
}
