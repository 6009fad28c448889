//! aria2 1.36 (Debian `aria2`), a widely used BitTorrent client, against the
//! tracker and the S3-backed seeder: it announces with `key` as raw bytes
//! (BEP 3 leaves `key` opaque), receives the peers the tracker hands out —
//! a fake peer the test announced first, which it dials (message stream
//! encryption first, then a plaintext BEP 3 handshake for this info hash),
//! and, once starved while the fake holds the origin grant, the origin —
//! reads the swarm counts of the tracker's answers, downloads the package
//! byte for byte from the origin and leaves. Before `key` was parsed as
//! bytes, every one of its announces was refused with "invalid key: not
//! UTF-8".
//!
//! aria2 cannot scrape: 1.36 has no scrape request at all (its source only
//! names the UDP scrape action, to log "unexpected scrape action reply"), so
//! nothing here checks a scrape; the counts it logs come from announce
//! answers (`complete`, `incomplete`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use ota_client::AnnounceParams;
use ota_proto::announce::AnnounceEvent;
use ota_testkit::child::{require, tail, ChildGuard};
use ota_testkit::fake_peer::{check_handshake, FakePeer};
use ota_testkit::package;
use ota_testkit::stack::{wait_origin, Stack};

const ARIA2: &str = "/usr/bin/aria2c";
const PIECE: u64 = 256 * 1024;
const SIZE: usize = 3 * 1024 * 1024 + 777;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aria2_announces_with_a_raw_key_is_handed_peers_and_downloads_from_the_origin() {
    require(ARIA2, "aria2");
    let stack = Stack::start().await;
    let data = package(SIZE, 7);
    let published = stack.publish("aria2/pkg.bin", &data, PIECE).await;
    let ih = published.release.info_hash;
    let settings = stack.seed_settings();
    let origin = settings.peer_listen;
    let seeder = stack.start_seeding(settings, &ih).await;
    assert!(
        wait_origin(stack.tracker.client(), &ih, 1, Duration::from_secs(10)).await,
        "the origin did not announce"
    );

    // A fake peer joins first, as a leecher: it takes the one origin grant,
    // so aria2 is handed the fake alone until it starves (it re-announces
    // every second: --bt-tracker-interval=1).
    let mut fake = FakePeer::start(1).await;
    let announce = AnnounceParams {
        info_hash: ih,
        peer_id: fake.peer_id,
        port: fake.addr.port(),
        uploaded: 0,
        downloaded: 0,
        left: SIZE as u64,
        event: AnnounceEvent::Started,
        device: None,
    };
    stack.tracker.anonymous_client().announce(&announce).await.unwrap();

    let torrent = stack.tracker.client().torrent(&ih, "aria2").await.unwrap();
    let dir = stack.dir.path().join("aria2");
    std::fs::create_dir_all(&dir).unwrap();
    let torrent_path = dir.join("pkg.torrent");
    std::fs::write(&torrent_path, &torrent).unwrap();
    let out_dir = dir.join("out");
    let log = dir.join("aria2.log");
    let stderr = dir.join("stderr.txt");

    let t0 = Instant::now();
    let mut aria2 = ChildGuard::spawn(
        tokio::process::Command::new(ARIA2)
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
                // debug: the announce answers' `Complete:`/`Incomplete:` lines.
                "--log-level=debug",
            ])
            .arg(format!("--log={}", log.display()))
            .arg(format!("--dir={}", out_dir.display()))
            .arg(&torrent_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
        "aria2c",
        stderr,
    );
    let log_tail = || tail(&std::fs::read_to_string(&log).unwrap_or_default(), 40);

    // It dials the fake peer the tracker handed out, for this torrent.
    let h = fake
        .plaintext_handshake(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}; aria2's log:\n{}", log_tail()));
    check_handshake(&h, &ih, "A2-1-36-");

    let status = aria2.wait_exit(Duration::from_secs(90)).await;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(status) = status else {
        aria2.kill().await;
        panic!("aria2c did not finish within 90 s; its log:\n{}", tail(&log_text, 40));
    };
    assert!(
        status.success(),
        "aria2c failed ({status}); its log:\n{}",
        tail(&log_text, 40)
    );
    assert!(
        !log_text.contains("not UTF-8") && !log_text.contains("failure reason"),
        "the tracker refused an announce: {}",
        tail(&log_text, 40)
    );
    let got = std::fs::read(out_dir.join("pkg.bin")).expect("aria2's download");
    assert!(got == data, "aria2's copy differs from the package");
    assert!(t0.elapsed() < Duration::from_secs(90));

    // It connected to both peers the tracker handed out (the only source of
    // peers: DHT, LPD and PeX are off), and read the swarm counts of the
    // first answer: the origin complete; the fake and aria2 incomplete.
    for peer in [fake.addr, origin] {
        let line = format!(" - Connecting to {}:{}", peer.ip(), peer.port());
        assert!(
            log_text.contains(&line),
            "aria2 never dialed the handed-out peer {peer}: {}",
            tail(&log_text, 40)
        );
    }
    assert!(
        log_text.contains("Complete:1") && log_text.contains("Incomplete:2"),
        "aria2 did not log the first answer's counts (1 complete, 2 incomplete)"
    );

    // The origin served the bytes over BitTorrent (its ledger is sampled
    // every second: wait for it, bounded).
    let served = ota_testkit::stack::wait_served(&seeder, SIZE as u64, Duration::from_secs(10)).await;
    assert!(served >= SIZE as u64, "origin served {served} bytes over BitTorrent");
    // It left: its `stopped` announce removed it from the swarm (the fake
    // and the origin remain).
    let peers = stack.tracker.client().peers(&ih).await.unwrap();
    assert!(
        !peers.iter().any(|p| p.client.starts_with("A2-")),
        "aria2 still listed: {peers:?}"
    );
    seeder.stop().await;
    stack.shutdown().await;
}
