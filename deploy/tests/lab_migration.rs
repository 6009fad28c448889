//! Connection migration in the NAT lab (issue 16; root, as CI runs; needs
//! the workspace binaries: `cargo build --workspace --bins`).
//!
//! A device behind an endpoint-independent-mapping home router (Linux
//! masquerade, `--mix cone=1`) fetches a package over QUIC through 40 ms
//! round-trip home links. At 30 % the lab cuts its link to router A and
//! brings up a link to router B of the same kind (`--move-at-pct 30`): its
//! address, NAT mapping and default route all change, as when a phone
//! leaves its WiFi. The HTTP fallback is off: every byte comes over
//! BitTorrent, through the move. Two cases:
//!
//! - from the origin (8 Mbit/s origin uplink): the QUIC connection to the
//!   origin migrated rather than being dialed again (one established origin
//!   path in the whole run), a STUN probe from the new socket found router
//!   B's public address, and the seeder's ledger shows exactly one
//!   package's worth of bytes sent, so no piece went to the device twice;
//! - from a peer behind another cone router (`--mover-joins-late`: the peer
//!   got the package first, then the origin was stopped): that peer's NAT
//!   filters by address and port (RFC 4787 §5), so the tracker pushes it a
//!   new introduction with the mover's new reflexive address, the peer
//!   punches towards it, and the punched connection the mover dialed
//!   migrates (one punched path in the whole run); the mover received
//!   exactly one package's worth of bytes, all from the peer.
//!
//! Both: the package is byte-identical, the agent followed the change (one
//! switch logged, the QUIC endpoint rebound to the new address). The
//! detection time and the longest gap in received bytes around the switch
//! are printed (the target for the gap is a median under 100 ms,
//! measured by the benchmark, not here).

mod common;
use common::log_field;

fn agent_log(work: &std::path::Path) -> String {
    std::fs::read_to_string(work.join("logs").join("dev-01.log")).unwrap_or_default()
}

/// What one moving flash crowd left: its run record, the mover's log (and
/// its last lines, newest first), the moves, the work folder.
struct Moved {
    run: serde_json::Value,
    log: String,
    tail: String,
    moves: serde_json::Value,
    work: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A flash crowd of `devices` behind cone routers (40 ms round trips) with
/// a `size`-byte package, the first device moved once at 30 %, the HTTP
/// fallback off, plus the flash-crowd flags `extra`; fails the test when
/// the run fails or the device was not moved exactly once.
fn moving_crowd(devices: u32, size: usize, extra: &[&str]) -> Moved {
    let dir = tempfile::tempdir().unwrap();
    let package = ota_testkit::package::package(size, 16);
    let pkg = dir.path().join("update-5.0.0.bin");
    std::fs::write(&pkg, &package).unwrap();
    let records = dir.path().join("records.json");
    let work = dir.path().join("work");
    let out = common::InternetCrowd {
        devices,
        mix: "cone=1",
        package: &pkg,
        records: &records,
        work: &work,
        timeout_secs: 180,
        extra: &[&["--move-at-pct", "30"], extra].concat(),
        envs: &[("OTA_AGENT_HTTP_FALLBACK_AFTER", "0")],
    }
    .run();
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
    let recs: serde_json::Value = serde_json::from_slice(&std::fs::read(&records).unwrap()).unwrap();
    Moved {
        run: recs[0].clone(),
        log,
        tail,
        moves,
        work,
        _dir: dir,
    }
}

/// The mover's switch: exactly one followed, to the address the lab gave;
/// the QUIC endpoint rebound; bytes arriving around it (the gap measured,
/// printed).
fn assert_one_switch(m: &Moved) {
    let (log, tail) = (&m.log, &m.tail);
    let new_addr = m.moves[0]["addr"].as_str().unwrap_or_default();
    let switches: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("network changed: route to the tracker now leaves from a new address"))
        .collect();
    assert_eq!(switches.len(), 1, "one switch followed:\n{tail}");
    assert_eq!(
        log_field(switches[0], "to").unwrap_or_default(),
        new_addr,
        "the agent saw the address the lab gave it"
    );
    assert!(
        log.contains("QUIC endpoint rebound; dialed connections migrate"),
        "the QUIC endpoint moved:\n{tail}"
    );
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
        m.moves[0]["link_ms"]
    );
}

/// QUIC paths of kind `how` the mover dialed and established.
fn paths_dialed(log: &str, how: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("QUIC path established") && log_field(l, "how").as_deref() == Some(how))
        .count()
}

#[test]
fn a_device_that_changes_router_mid_download_keeps_its_origin_connection() {
    let size = 6 * 1024 * 1024 + 4_321;
    let m = moving_crowd(1, size, &["--origin-uplink-mbit", "8"]);
    let (run, log, tail) = (&m.run, &m.log, &m.tail);
    let device = &run["devices"][0];
    assert_eq!(device["identical"], true, "{device}");
    assert_eq!(device["bytes_from_origin"], size as u64, "{device}");
    assert_eq!(
        run["p2p_bytes"], size as u64,
        "the seeder's ledger: one package's worth sent, no piece twice: {run}"
    );
    assert_one_switch(&m);
    assert_eq!(
        paths_dialed(log, "origin"),
        1,
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
}

#[test]
fn a_device_that_changes_router_mid_download_keeps_its_punched_peer_connection() {
    let size = 12 * 1024 * 1024 + 1_234;
    let m = moving_crowd(2, size, &["--mover-joins-late"]);
    let (run, log, tail) = (&m.run, &m.log, &m.tail);
    let mover = run["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["device"] == "dev-01"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(mover["identical"], true, "{mover}");
    assert_eq!(mover["bytes_from_origin"], 0, "the origin was stopped: {mover}");
    assert_eq!(
        mover["bytes_from_peers"], size as u64,
        "one package's worth from the peer, no piece twice: {mover}"
    );
    assert_one_switch(&m);
    assert_eq!(
        paths_dialed(log, "punched"),
        1,
        "the punched peer connection migrated instead of being dialed again:\n{tail}"
    );
    let tracker = std::fs::read_to_string(m.work.join("logs").join("tracker.log")).unwrap_or_default();
    let reintroduced = tracker
        .lines()
        .find(|l| l.contains("device moved: new introduction pushed to its peer"))
        .unwrap_or_else(|| panic!("the tracker told the peer where the mover went:\n{tracker}"));
    assert_eq!(log_field(reintroduced, "device").as_deref(), Some("dev-01"));
    assert_eq!(log_field(reintroduced, "peer").as_deref(), Some("dev-02"));
    // The candidates pushed to the peer lead with the mover's new
    // reflexive address (router B), as its first probe after the move found.
    let quick = log
        .lines()
        .find(|l| l.contains("STUN reflexive address after the network change"))
        .and_then(|l| log_field(l, "reflexive"))
        .unwrap_or_default();
    let quick = quick.trim_start_matches("Some(").trim_end_matches(')');
    assert!(!quick.is_empty(), "a reflexive address after the move:\n{tail}");
    let pushed = log_field(reintroduced, "candidates").unwrap_or_default();
    assert!(
        pushed.starts_with(&format!("[{quick}")),
        "the push {pushed} leads with {quick}"
    );
}
