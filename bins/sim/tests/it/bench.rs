//! `kmstool-sim bench` end to end with small numbers: the enclave runs as its own process, every
//! Decrypt is checked, and the JSON carries what was asked for.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_measures_both_configurations_and_writes_json() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let json_path = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_kmstool-sim"))
        .args([
            "bench",
            "--requests",
            "20",
            "--seconds",
            "0.2",
            "--startups",
            "1",
        ])
        .args(["--clients", "2", "--connections", "3", "--json"])
        .arg(&json_path)
        .output()
        .unwrap_or_else(|e| panic!("running kmstool-sim bench: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stderr}");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("÷ RSA-2048 OAEP decrypt"), "{table}");
    assert!(table.contains("RSS with 3 open connections"), "{table}");

    let bytes = std::fs::read(&json_path).unwrap_or_else(|e| panic!("{e}"));
    let report: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report["requests"], 20);
    assert_eq!(
        report["startup"]["samples_ms"].as_array().map(Vec::len),
        Some(1)
    );
    let floor = report["floor"]["rsa_oaep_decrypt_us"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(floor > 0.0, "no RSA floor: {report}");

    let configurations = report["configurations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = configurations
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["fresh-attestation", "attestation-reuse", "rustcrypto"]
    );
    assert_eq!(configurations[0]["enclave_args"], serde_json::json!([]));
    assert_eq!(
        configurations[1]["enclave_args"],
        serde_json::json!(["--attestation-reuse-secs", "300"])
    );
    assert_eq!(
        configurations[2]["enclave_args"],
        serde_json::json!([
            "--attestation-reuse-secs",
            "300",
            "--crypto-backend",
            "rustcrypto"
        ])
    );
    let pure_floor = report["floor"]["rustcrypto_rsa_oaep_decrypt_us"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(pure_floor > 0.0, "no RustCrypto RSA floor: {report}");
    for c in &configurations {
        let cpu = c["cpu_per_decrypt_us"].as_f64().unwrap_or(0.0);
        let ratio = c["cpu_ratio"].as_f64().unwrap_or(0.0);
        assert!(cpu > 0.0, "no enclave CPU measured: {c}");
        let its_floor = match c["name"].as_str() {
            Some("rustcrypto") => pure_floor,
            _ => floor,
        };
        assert!(
            (ratio - cpu / its_floor).abs() < 1e-6,
            "ratio is not CPU over floor: {c}"
        );
        assert_eq!(c["throughput"]["clients"], 2);
        assert!(
            c["throughput"]["one_client_per_sec"]
                .as_f64()
                .unwrap_or(0.0)
                > 0.0
        );
        assert_eq!(c["memory"]["connections"], 3);
        let idle = c["memory"]["idle_rss_bytes"].as_u64().unwrap_or(0);
        let peak = c["memory"]["peak_rss_bytes"].as_u64().unwrap_or(0);
        assert!(idle > 0 && peak >= idle, "RSS: {c}");
    }
}
