//! The whole system end to end: the flash-crowd runner starts the embedded
//! S3 server, the tracker, the seeder and 4 device agents as processes, and
//! the package reaches every agent intact with less origin egress than 4
//! plain downloads. Needs the workspace binaries: `cargo build --workspace`.

use std::path::Path;

#[test]
fn four_agents_get_identical_copies_and_everything_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    // A few MB, not a multiple of the piece length.
    let size = 3 * 1024 * 1024 + 12_345;
    let package: Vec<u8> = (0..size as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let pkg_path = dir.path().join("update-1.2.3.bin");
    std::fs::write(&pkg_path, &package).unwrap();
    let summary_path = dir.path().join("summary.json");
    let records = dir.path().join("records.json");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flash-crowd"))
        .args(["--devices", "4", "--package"])
        .arg(&pkg_path)
        .arg("--summary-json")
        .arg(&summary_path)
        .arg("--record")
        .arg(&records)
        .args(["--timeout-secs", "120"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "flash-crowd failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("origin egress"), "{stdout}");

    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(s["package_bytes"], size as u64);
    let devices = s["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 4);
    for d in devices {
        assert_eq!(d["identical"], true, "{d}");
        let received = d["bytes_from_origin"].as_u64().unwrap() + d["bytes_from_peers"].as_u64().unwrap();
        assert!(received >= size as u64, "{d}: every byte is accounted to a source");
    }
    let egress = s["origin_egress_bytes"].as_u64().unwrap();
    assert!(egress >= size as u64, "the origin sent at least one copy");
    assert!(egress < 4 * size as u64, "origin egress {egress} is not below 4 copies");

    // Every process the run started is gone, and so is its work folder.
    for pid in s["pids"].as_array().unwrap() {
        let pid = pid.as_u64().unwrap();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still running"
        );
    }
    let work = s["work_dir"].as_str().unwrap();
    assert!(!Path::new(work).exists(), "work folder {work} left behind");

    // The run is recorded for the billing report.
    let recs: serde_json::Value = serde_json::from_slice(&std::fs::read(&records).unwrap()).unwrap();
    assert_eq!(recs[0]["client_server_bytes"], 4 * size as u64);
    assert_eq!(recs[0]["p2p_bytes"], egress);
}
