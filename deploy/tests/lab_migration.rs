//! Connection migration in the NAT lab (issue 16; root, as CI runs; needs
//! the workspace binaries: `cargo build --workspace --bins`).
//!
//! One device behind an endpoint-independent-mapping home router (Linux
//! masquerade, `--mix cone=1`) fetches a 6 MB package from the origin over
//! QUIC, through an 8 Mbit/s origin uplink and 40 ms round-trip home links.
//! At 30 % the lab cuts its link to router A and brings up a link to router
//! B of the same kind (`--move-at-pct 30`): its address, NAT mapping and
//! default route all change, as when a phone leaves its WiFi.
//!
//! Asserted: the package is byte-identical; the agent followed the change
//! (one switch logged, the QUIC endpoint rebound to the new address, a
//! STUN probe from the new socket finding router B's public address); the
//! QUIC connection to the origin migrated rather than being dialed again
//! (one established origin path in the whole run); and the seeder's
//! ledger shows exactly one package's worth of bytes sent, so no piece
//! went to the device twice. The detection time and the longest gap in
//! received bytes around the switch are printed (the target for
//! the gap is a median under 100 ms, measured by the benchmark, not here).

use std::process::Command;

mod common;
use common::log_field;

fn agent_log(work: &std::path::Path) -> String {
    std::fs::read_to_string(work.join("logs").join("dev-01.log")).unwrap_or_default()
}

#[test]
fn a_device_that_changes_router_mid_download_keeps_its_origin_connection() {
    let dir = tempfile::tempdir().unwrap();
    let size = 6 * 1024 * 1024 + 4_321;
    let package = ota_testkit::package::package(size, 16);
    let pkg = dir.path().join("update-5.0.0.bin");
    std::fs::write(&pkg, &package).unwrap();
    let records = dir.path().join("records.json");
    let work = dir.path().join("work");
    let out = Command::new(env!("CARGO_BIN_EXE_flash-crowd"))
        .args([
            "--topology",
            "internet",
            "--mode",
            "p2p",
            "--devices",
            "1",
            "--mix",
            "cone=1",
            "--wan-delay-ms",
            "20",
            "--origin-uplink-mbit",
            "8",
            "--move-at-pct",
            "30",
            "--package",
            pkg.to_str().unwrap(),
            "--record",
            records.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--timeout-secs",
            "180",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let log = agent_log(&work);
    let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
    assert!(
        out.status.success(),
        "flash-crowd failed:\n{stdout}\n{}\nagent log (last lines, newest first):\n{tail}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");

    let moves: serde_json::Value = serde_json::from_slice(&std::fs::read(work.join("moves.json")).unwrap()).unwrap();
    assert_eq!(moves.as_array().map(|m| m.len()), Some(1), "{moves}");
    let new_addr = moves[0]["addr"].as_str().unwrap().to_string();

    let recs: serde_json::Value = serde_json::from_slice(&std::fs::read(&records).unwrap()).unwrap();
    let run = &recs[0];
    let device = &run["devices"][0];
    assert_eq!(device["identical"], true, "{device}");
    assert_eq!(device["bytes_from_origin"], size as u64, "{device}");
    assert_eq!(
        run["p2p_bytes"], size as u64,
        "the seeder's ledger: one package's worth sent, no piece twice: {run}"
    );

    let switches: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("network changed: route to the tracker now leaves from a new address"))
        .collect();
    assert_eq!(switches.len(), 1, "one switch followed:\n{tail}");
    let to = log_field(switches[0], "to").unwrap_or_default();
    assert_eq!(to, new_addr, "the agent saw the address the lab gave it");
    assert!(
        log.contains("QUIC endpoint rebound; dialed connections migrate"),
        "the QUIC endpoint moved:\n{tail}"
    );
    let origin_paths = log
        .lines()
        .filter(|l| l.contains("QUIC path established") && log_field(l, "how").as_deref() == Some("origin"))
        .count();
    assert_eq!(
        origin_paths, 1,
        "the origin connection migrated instead of being dialed again:\n{tail}"
    );
    // The new network's reflexive address, from a STUN probe on the new
    // socket, differs from the first one (another router's public address).
    let reflexive = |marker: &str| {
        log.lines()
            .find(|l| l.contains(marker))
            .and_then(|l| log_field(l, "reflexive"))
            .unwrap_or_default()
    };
    let (before, after) = (
        reflexive("STUN probe "),
        reflexive("STUN probe after the network change"),
    );
    let ip = |r: &str| {
        r.trim_start_matches("Some(")
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        after.starts_with("Some("),
        "a reflexive address after the move: {after:?}\n{tail}"
    );
    assert_ne!(ip(&before), ip(&after), "a new public address: {before} then {after}");
    let gap_line = log
        .lines()
        .find(|l| l.contains("network switch: longest gap in received bytes"))
        .unwrap_or_else(|| panic!("the gap was measured:\n{tail}"));
    assert_eq!(
        log_field(gap_line, "measured").as_deref(),
        Some("true"),
        "bytes were arriving around the switch: {gap_line}"
    );
    println!(
        "switch: detection {} ms, longest gap in received bytes {} ms (QUIC reads: {} ms), lab link change {} ms",
        log_field(gap_line, "detection_ms").unwrap_or_default(),
        log_field(gap_line, "longest_gap_ms").unwrap_or_default(),
        log_field(gap_line, "quic_gap_ms").unwrap_or_default(),
        moves[0]["link_ms"]
    );
}
