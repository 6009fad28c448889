//! How a device behind each router kind of the NAT lab becomes reachable,
//! and that pieces flow over that path (root; CI runs as root; needs the
//! workspace binaries: `cargo build --workspace --bins`).
//!
//! One flash crowd in `--topology internet --mode p2p`, six devices, the
//! mix `public=1,...,cgnat=1`: equal shares apportion exactly one device to
//! each router kind (`NatMix::apportion`, 6 × 1/6 = 1 with no remainder).
//! Device `dev-0K` sits behind router K, whose WAN address is `11.0.1.K`
//! (`lab::Lab::add_router_with`). A generated 4 MB package. The runner
//! reads the tracker's swarm view before it stops the processes and
//! writes, per device, the tracker's `reach` verdict, the UPnP mapping the
//! agent reported (`mapped`) or why it has none (`mapping_refusal`), and
//! the agent's STUN verdict (`nat_kind`).
//!
//! Asserted per router kind (what four runs before writing this showed,
//! every time):
//! - public: reach `public`, no mapping (none needed: its STUN verdict is
//!   `open`);
//! - port-forwarded: reach `public` (the tracker dialled the forwarded
//!   port), no UPnP mapping (that router has no UPnP: "no UPnP gateway");
//! - upnp: reach `public` and `mapped` on the router's WAN address
//!   `11.0.1.K`: the agent's own mapping is what made it reachable;
//! - cone (no UPnP): not public but `lan-only` (it reported its LAN
//!   address, so devices behind the same router would get it; there are
//!   none), its refusal says no UPnP gateway answered;
//! - symmetric: `lan-only`, STUN verdict `symmetric`;
//! - cgnat: `lan-only`, and a refusal: its home router offers no UPnP, so
//!   the reason is "no UPnP gateway" as for cone (with no gateway to ask,
//!   the agent cannot tell that a carrier NAT sits behind its router; its
//!   STUN verdict is the cone's), and the agent still finishes.
//!
//! Every device ends with a verified, byte-identical copy. Pieces flow over
//! the direct paths: a NATed device (cone, symmetric, cgnat) can only dial
//! out, and the only devices it can dial are the three public ones (at
//! their public, forwarded or UPnP-mapped address; no LAN peers share its
//! router, asserted by 0 LAN bytes), so its bytes from internet peers came
//! over those paths. Asserted per NATed device: some bytes from internet
//! peers, unless it took the whole package from the origin (the origin's one
//! grant may go to it, or it may fall back to HTTP after 30 s on a loaded
//! machine). In the four runs the origin's grant always went to a public
//! device and each NATed device got its whole copy (4.2 to 6.0 MB, some
//! pieces twice) from public peers in 5 to 16 s; they uploaded nothing
//! (not asserted: a public peer may ask them for pieces over the
//! connection they dialled).

use std::process::Command;

/// Runs `flash-crowd` with `args`; its stdout. On failure prints the tail
/// of the tracker log and of every agent log under `work`.
fn flash_crowd(args: &[&str], work: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flash-crowd"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "flash-crowd {args:?} failed:\n{stdout}\n{stderr}\n{}",
        logs(work)
    );
    stdout
}

/// The last lines of every log of the run in `work`, for failure messages.
fn logs(work: &std::path::Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(work.join("logs")) else {
        return out;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {} (last 15 lines)\n", p.display()));
        for l in &lines[lines.len().saturating_sub(15)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn each_router_kind_gives_its_reach_and_pieces_flow_over_the_direct_paths() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4 * 1024 * 1024 + 1_234;
    let package: Vec<u8> = (0..size as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let pkg = dir.path().join("update-3.0.0.bin");
    std::fs::write(&pkg, &package).unwrap();
    let records = dir.path().join("records.json");
    let summary = dir.path().join("summary.json");
    let work = dir.path().join("work");
    let stdout = flash_crowd(
        &[
            "--topology",
            "internet",
            "--mode",
            "p2p",
            "--devices",
            "6",
            "--mix",
            "public=1,port-forwarded=1,upnp=1,cone=1,symmetric=1,cgnat=1",
            "--package",
            pkg.to_str().unwrap(),
            "--record",
            records.to_str().unwrap(),
            "--summary-json",
            summary.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--timeout-secs",
            "240",
        ],
        &work,
    );
    println!("{stdout}");
    assert!(
        stdout.contains("reached"),
        "the table has the reached column:\n{stdout}"
    );

    let recs: serde_json::Value = serde_json::from_slice(&std::fs::read(&records).unwrap()).unwrap();
    let devices = recs[0]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 6, "{devices:?}");
    println!("{}", serde_json::to_string_pretty(devices).unwrap());
    let ctx = format!("{stdout}\n{}", logs(&work));
    let by_kind = |kind: &str| -> &serde_json::Value {
        let found: Vec<_> = devices.iter().filter(|d| d["nat"] == kind).collect();
        assert_eq!(found.len(), 1, "exactly one device behind a {kind} router: {devices:?}");
        found[0]
    };
    for d in devices {
        assert_eq!(d["identical"], true, "every copy identical: {d}\n{ctx}");
    }
    let text = |d: &serde_json::Value, k: &str| d[k].as_str().map(str::to_string);
    let bytes = |d: &serde_json::Value, k: &str| d[k].as_u64().unwrap();

    let public = by_kind("public");
    assert_eq!(text(public, "reach").as_deref(), Some("public"), "{public}\n{ctx}");
    assert_eq!(public["mapped"], serde_json::Value::Null, "no mapping needed: {public}");
    assert_eq!(text(public, "nat_kind").as_deref(), Some("open"), "{public}");

    let forwarded = by_kind("port-forwarded");
    assert_eq!(
        text(forwarded, "reach").as_deref(),
        Some("public"),
        "{forwarded}\n{ctx}"
    );
    assert_eq!(
        forwarded["mapped"],
        serde_json::Value::Null,
        "forwarded, not mapped: {forwarded}"
    );

    let upnp = by_kind("upnp");
    assert_eq!(text(upnp, "reach").as_deref(), Some("public"), "{upnp}\n{ctx}");
    let k: u32 = text(upnp, "device").unwrap()["dev-".len()..].parse().unwrap();
    let mapped: std::net::SocketAddr = text(upnp, "mapped")
        .unwrap_or_else(|| panic!("the agent mapped its port: {upnp}\n{ctx}"))
        .parse()
        .unwrap();
    assert_eq!(
        mapped.ip().to_string(),
        format!("11.0.1.{k}"),
        "mapped on its router's WAN address: {upnp}"
    );
    assert_ne!(mapped.port(), 0);

    let cone = by_kind("cone");
    assert_eq!(text(cone, "reach").as_deref(), Some("lan-only"), "{cone}\n{ctx}");
    let refusal = text(cone, "mapping_refusal").unwrap_or_default();
    assert!(refusal.contains("no UPnP gateway"), "{cone}\n{ctx}");

    let symmetric = by_kind("symmetric");
    assert_eq!(
        text(symmetric, "reach").as_deref(),
        Some("lan-only"),
        "{symmetric}\n{ctx}"
    );
    assert_eq!(text(symmetric, "nat_kind").as_deref(), Some("symmetric"), "{symmetric}");

    let cgnat = by_kind("cgnat");
    assert_eq!(text(cgnat, "reach").as_deref(), Some("lan-only"), "{cgnat}\n{ctx}");
    assert!(
        text(cgnat, "mapping_refusal").is_some(),
        "a clear reason: {cgnat}\n{ctx}"
    );

    assert!(
        text(forwarded, "mapping_refusal")
            .unwrap_or_default()
            .contains("no UPnP gateway"),
        "{forwarded}"
    );
    assert!(
        text(cgnat, "mapping_refusal")
            .unwrap_or_default()
            .contains("no UPnP gateway"),
        "{cgnat}\n{ctx}"
    );

    // Pieces over the direct paths: what a NATed device got from peers
    // came from the public ones, which it dialled.
    for d in [cone, symmetric, cgnat] {
        let from_origin = bytes(d, "bytes_from_origin") + bytes(d, "bytes_from_origin_http");
        assert!(
            bytes(d, "bytes_from_internet_peers") > 0 || from_origin >= size as u64,
            "pieces from the public peers or the whole package from the origin: {d}\n{ctx}"
        );
        assert_eq!(
            bytes(d, "bytes_from_lan_peers"),
            0,
            "no LAN peers behind its own router: {d}"
        );
    }
}
