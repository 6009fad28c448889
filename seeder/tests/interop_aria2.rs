//! aria2 1.36 (Debian `aria2`), a widely used BitTorrent client, against the
//! tracker and the S3-backed seeder: it announces with `key` as raw bytes
//! (BEP 3 leaves `key` opaque), is handed the origin, downloads the package
//! byte for byte and leaves. Before `key` was parsed as bytes, every one of
//! its announces was refused with "invalid key: not UTF-8".

use std::process::Stdio;
use std::time::{Duration, Instant};

use ota_testkit::package;
use ota_testkit::stack::Stack;

const PIECE: u64 = 256 * 1024;
const SIZE: usize = 3 * 1024 * 1024 + 777;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aria2_announces_with_a_raw_key_and_downloads_from_the_origin() {
    let aria2 = "/usr/bin/aria2c";
    assert!(
        std::path::Path::new(aria2).exists(),
        "{aria2} is missing: install the Debian package aria2 (bash deploy/test-deps.sh)"
    );
    let stack = Stack::start().await;
    let data = package(SIZE, 7);
    let published = stack.publish("aria2/pkg.bin", &data, PIECE).await;
    let ih = published.release.info_hash;
    let seeder = stack.start_seeding(stack.seed_settings(), &ih).await;

    let torrent = stack.tracker.client().torrent(&ih, "aria2").await.unwrap();
    let dir = stack.dir.path().join("aria2");
    std::fs::create_dir_all(&dir).unwrap();
    let torrent_path = dir.join("pkg.torrent");
    std::fs::write(&torrent_path, &torrent).unwrap();
    let out_dir = dir.join("out");
    let log = dir.join("aria2.log");

    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(aria2)
        .args([
            "--seed-time=0",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--bt-tracker-interval=1",
            "--check-certificate=false",
            "--file-allocation=none",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--log-level=info",
        ])
        .arg(format!("--log={}", log.display()))
        .arg(format!("--dir={}", out_dir.display()))
        .arg(&torrent_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start aria2c");
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait()).await;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let status = match status {
        Ok(s) => s.unwrap(),
        Err(_) => {
            let _ = child.kill().await;
            panic!("aria2c did not finish within 90 s; its log:\n{}", tail(&log_text));
        }
    };
    assert!(
        status.success(),
        "aria2c failed ({status}); its log:\n{}",
        tail(&log_text)
    );
    assert!(
        !log_text.contains("not UTF-8") && !log_text.contains("failure reason"),
        "the tracker refused an announce: {}",
        tail(&log_text)
    );
    let got = std::fs::read(out_dir.join("pkg.bin")).expect("aria2's download");
    assert!(got == data, "aria2's copy differs from the package");
    assert!(t0.elapsed() < Duration::from_secs(90));

    // The origin served the bytes over BitTorrent (its ledger is sampled
    // every second: wait for it, bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let served = loop {
        let served: u64 = seeder.egress().await.unwrap().iter().map(|r| r.bittorrent_bytes).sum();
        if served >= SIZE as u64 || Instant::now() > deadline {
            break served;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(served >= SIZE as u64, "origin served {served} bytes over BitTorrent");
    seeder.stop().await;
    stack.shutdown().await;
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
