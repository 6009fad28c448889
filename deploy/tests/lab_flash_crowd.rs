//! The flash crowd in the NAT lab (root; CI runs as root), the short run
//! the issue asks CI for: `thesis-lan`, scenario `general`, three devices
//! behind one home router (one of them port-forwarded, hairpin NAT on, the
//! home and LAN links shaped), one run of a small package in `p2p` mode and
//! one in `client-server` mode. Checks that every device gets an identical
//! copy, that the records the billing report reads appear with the
//! per-device sources, and that the lab is gone afterwards. Needs the
//! workspace binaries: `cargo build --workspace`.

use std::path::Path;
use std::process::Command;

use ota_billing_report::savings::RunRecord;

/// Runs `flash-crowd` with `args`; its stdout, and its PID (the lab prefix
/// is `ota-<pid>-`).
fn flash_crowd(args: &[&str]) -> (String, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_flash-crowd"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "flash-crowd {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, pid)
}

fn lab_namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("ota-{pid}-")))
        .map(str::to_string)
        .collect()
}

#[test]
fn thesis_lan_general_with_three_devices_records_every_source_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let size = 2 * 1024 * 1024 + 4_321;
    let package: Vec<u8> = (0..size as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let pkg = dir.path().join("update-2.0.0.bin");
    std::fs::write(&pkg, &package).unwrap();
    let records = dir.path().join("records.json");
    let summary = dir.path().join("summary.json");
    let (pkg, records_s, summary_s) = (
        pkg.to_str().unwrap(),
        records.to_str().unwrap(),
        summary.to_str().unwrap(),
    );
    let common = [
        "--topology",
        "thesis-lan",
        "--scenario",
        "general",
        "--devices",
        "3",
        "--package",
        pkg,
        "--record",
        records_s,
        "--summary-json",
        summary_s,
        "--timeout-secs",
        "240",
    ];

    let (stdout, pid) = flash_crowd(&[&common[..], &["--mode", "p2p"]].concat());
    assert!(stdout.contains("origin egress"), "{stdout}");
    assert!(
        lab_namespaces_of(pid).is_empty(),
        "lab left behind: {:?}",
        lab_namespaces_of(pid)
    );
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["topology"], "thesis-lan");
    let devices = s["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 3);
    let open: Vec<_> = devices.iter().filter(|d| d["connectable"] == true).collect();
    assert_eq!(
        open.len(),
        1,
        "one device in five, at least one, is connectable: {devices:?}"
    );
    assert_eq!(open[0]["nat"], "port-forwarded");
    for d in devices {
        assert_eq!(d["identical"], true, "{d}");
        let sum = |k: &str| d[k].as_u64().unwrap();
        let received = sum("bytes_from_origin") + sum("bytes_from_origin_http") + sum("bytes_from_peers");
        assert!(received >= size as u64, "{d}: every byte is accounted to a source");
        assert_eq!(
            sum("bytes_from_peers"),
            sum("bytes_from_lan_peers") + sum("bytes_from_internet_peers"),
            "{d}"
        );
    }
    // Every process the run started is gone.
    for pid in s["pids"].as_array().unwrap() {
        let pid = pid.as_u64().unwrap();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still running"
        );
    }

    let (_, pid) = flash_crowd(&[&common[..], &["--mode", "client-server"]].concat());
    assert!(lab_namespaces_of(pid).is_empty());
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    for d in s["devices"].as_array().unwrap() {
        assert_eq!(d["identical"], true, "{d}");
        // The torrent is added before the HTTP fetch takes it out, so a
        // piece may come over BitTorrent from the origin first.
        let http = d["bytes_from_origin_http"].as_u64().unwrap();
        assert!(http >= size as u64 / 2, "client-server: over HTTP: {d}");
        assert_eq!(d["bytes_from_peers"], 0, "{d}");
    }
    assert!(s["origin_egress_bytes"].as_u64().unwrap() >= 3 * size as u64);

    // Both runs are in the records, readable by the billing report, with
    // the study's scenario name and the mode.
    let text = std::fs::read(&records).unwrap();
    let recs: Vec<RunRecord> = serde_json::from_slice(&text).unwrap();
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.scenario == "general" && r.run == "run-1"));
    assert!(recs.iter().all(|r| r.client_server_bytes == 3 * size as u64));
    let raw: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(raw[0]["mode"], "p2p");
    assert_eq!(raw[1]["mode"], "client-server");
    assert_eq!(raw[1]["devices"].as_array().unwrap().len(), 3);
}
