//! Hole punching over QUIC in the NAT lab (root; CI runs as root; needs
//! the workspace binaries: `cargo build --workspace --bins`).
//!
//! One flash crowd in `--topology internet --mode p2p` with four devices,
//! each behind its own endpoint-independent-mapping router with
//! address-and-port-dependent filtering and no UPnP (`--mix cone=1`, Linux
//! masquerade: the common home router), home WAN links with 20 ms each way
//! (a 40 ms round trip to the internet, through vde wirefilter). No device
//! can accept a TCP connection from the internet, so without punching the
//! only source is the origin. With it, the tracker hands each device the
//! others as bridge addresses, introduces the pairs on demand, and the
//! devices' QUIC bridges punch and carry the peer wire.
//!
//! Asserted: every copy is byte-identical; bytes came from internet peers
//! (possible only over punched paths: no device is reachable otherwise,
//! and none shares a router); the agents logged established QUIC paths,
//! each with its time from the SOCKS5 request to the finished handshake,
//! which the test prints (the p50 target is under 300 ms).

mod common;
use common::log_field;

/// A numeric field of a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    log_field(line, key)?.parse().ok()
}

fn logs_dir_texts(work: &std::path::Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(work.join("logs")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap_or_default()))
        .collect();
    out.sort();
    out
}

fn tails(work: &std::path::Path) -> String {
    let mut out = String::new();
    for (path, text) in logs_dir_texts(work) {
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {path} (last 15 lines)\n"));
        for l in &lines[lines.len().saturating_sub(15)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn devices_behind_cone_nats_punch_quic_paths_and_pieces_flow_over_them() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4 * 1024 * 1024 + 1_234;
    let package: Vec<u8> = (0..size as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let pkg = dir.path().join("update-4.0.0.bin");
    std::fs::write(&pkg, &package).unwrap();
    let records = dir.path().join("records.json");
    let work = dir.path().join("work");
    let out = common::InternetCrowd {
        devices: 4,
        mix: "cone=1",
        package: &pkg,
        records: &records,
        work: &work,
        timeout_secs: 240,
        extra: &[],
        envs: &[],
    }
    .run();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "flash-crowd failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        tails(&work)
    );
    println!("{stdout}");
    let recs: serde_json::Value = serde_json::from_slice(&std::fs::read(&records).unwrap()).unwrap();
    let devices = recs[0]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 4, "{devices:?}");
    println!("{}", serde_json::to_string_pretty(devices).unwrap());
    let ctx = format!("{stdout}\n{}", tails(&work));
    for d in devices {
        assert_eq!(d["identical"], true, "every copy identical: {d}\n{ctx}");
        assert_eq!(d["bytes_from_lan_peers"], 0, "no device shares a router: {d}");
    }
    let from_peers: u64 = devices
        .iter()
        .map(|d| d["bytes_from_internet_peers"].as_u64().unwrap())
        .sum();
    assert!(
        from_peers > 0,
        "pieces flowed between NATed devices, so over punched paths\n{ctx}"
    );

    let mut paths = Vec::new();
    let (mut to_origin, mut reused) = (0, 0);
    for (path, text) in logs_dir_texts(&work) {
        for line in text.lines().filter(|l| l.contains("QUIC path established")) {
            match log_field(line, "how").as_deref() {
                Some("origin") => {
                    to_origin += 1;
                    continue;
                }
                // The other side's connection, punched from there.
                Some("reused") => {
                    reused += 1;
                    continue;
                }
                _ => {}
            }
            let total = field(line, "total_ms").unwrap_or_else(|| panic!("{path}: {line}"));
            paths.push((
                total,
                field(line, "introduction_ms"),
                field(line, "datagrams"),
                field(line, "rtt_ms"),
            ));
        }
    }
    assert!(!paths.is_empty(), "the agents established QUIC paths\n{ctx}");
    // The seeder listens on QUIC: devices reach the origin over QUIC, and
    // its bytes still count as origin bytes (checked above: the peers'
    // bytes are only those of punched paths).
    assert!(to_origin > 0, "the agents reached the origin over QUIC\n{ctx}");
    println!("QUIC connections to the origin: {to_origin}; dials that reused the other side's connection: {reused}");
    paths.sort();
    let p50 = paths[paths.len() / 2].0;
    println!(
        "punched QUIC paths: {} (total_ms, introduction_ms, datagrams sent, rtt_ms): {paths:?}; p50 {p50} ms",
        paths.len()
    );
}
