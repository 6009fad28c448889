//! Two tracker processes on one PostgreSQL (issue 18): the flash-crowd
//! runner splits the device agents between two replicas (`--replica-id`),
//! the seeder announcing to the first; every agent completes with an
//! identical copy, and the origin sends no more copies than the same crowd
//! with one tracker. Needs the workspace binaries (`cargo build
//! --workspace`) and PostgreSQL's server binaries (Debian `postgresql`).

use std::path::Path;

/// Runs the flash crowd with `replicas` trackers on `db`; returns the
/// summary JSON.
fn run(package: &Path, dir: &Path, replicas: usize, db: &str) -> serde_json::Value {
    let summary = dir.join(format!("summary-{replicas}.json"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flash-crowd"))
        .args(["--devices", "6", "--announce-interval", "2", "--package"])
        .arg(package)
        .arg("--summary-json")
        .arg(&summary)
        .args(["--timeout-secs", "150", "--database-url", db])
        .args(["--tracker-replicas", &replicas.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "flash-crowd with {replicas} trackers failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap()
}

#[test]
fn agents_split_over_two_tracker_replicas_complete_with_no_more_origin_copies() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4 * 1024 * 1024 + 4_321;
    let package: Vec<u8> = (0..size as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let pkg = dir.path().join("update-2.0.0.bin");
    std::fs::write(&pkg, &package).unwrap();
    let pg = ota_testkit::pg::PgCluster::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (one_db, two_db) = rt.block_on(async { (pg.create_db("one").await, pg.create_db("two").await) });

    let one = run(&pkg, dir.path(), 1, &one_db);
    let two = run(&pkg, dir.path(), 2, &two_db);
    for s in [&one, &two] {
        let devices = s["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 6, "{s}");
        assert!(devices.iter().all(|d| d["identical"] == true), "{s}");
    }
    let copies = |s: &serde_json::Value| s["origin_egress_copies"].as_f64().unwrap();
    eprintln!(
        "origin copies: one tracker {:.3}, two replicas {:.3}; completion p95 {} ms vs {} ms",
        copies(&one),
        copies(&two),
        one["completion_p95_ms"],
        two["completion_p95_ms"]
    );
    assert_eq!(two["tracker_replicas"], 2);
    assert!(copies(&two) >= 1.0, "the origin sent at least one copy");
    // The same bound as one tracker's crowd, with the slack of one piece-level
    // retransmission (a tenth of a copy): not more copies because of the split.
    assert!(
        copies(&two) <= copies(&one).max(1.0) + 0.1,
        "two replicas: {:.3} origin copies, one tracker: {:.3}",
        copies(&two),
        copies(&one)
    );
}
