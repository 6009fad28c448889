//! A seeder restart does not read every published object again: librqbit's
//! verified bitfields are kept in `STATE_DIR/fastresume`
//! ([`ota_peer::fastresume`]), so the second start reads only librqbit's
//! spot check, and the restarted origin still serves byte-identical
//! packages (every piece it serves is SHA-1 checked). With fast-resume off
//! the restart reads every object in full, as before. An object changed in
//! S3 while the seeder was down is refused at the restart whatever the
//! bitfield says.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ota_seeder::seeding::SeedSettings;
use ota_testkit::leecher::{leech, leecher_session};
use ota_testkit::net::free_addr;
use ota_testkit::package;
use ota_testkit::stack::{wait_seeding, Stack};

const PIECE: u64 = 256 * 1024;
const PIECES: u64 = 64;
const SIZE: usize = (PIECES * PIECE) as usize - 999; // 64 pieces, the last one short
const RELEASES: usize = 2;

/// Starts a seeder on `settings` (a fresh peer port each time, same state
/// folder), syncs it and waits until every release in `ihs` is seeding;
/// returns it with the S3 bytes its start read and the time that took.
async fn start(
    stack: &Stack,
    settings: &SeedSettings,
    ihs: &[ota_proto::InfoHash],
) -> (std::sync::Arc<ota_seeder::seeding::Seeder>, u64, Duration) {
    let t = Instant::now();
    let seeder = stack
        .start_seeder(SeedSettings {
            peer_listen: free_addr(),
            ..settings.clone()
        })
        .await;
    seeder.sync_releases().await.expect("sync");
    for ih in ihs {
        assert!(
            wait_seeding(&seeder, ih, Duration::from_secs(60)).await,
            "{ih} not seeding within 60 s: {:?}",
            seeder.egress().await
        );
    }
    let read = seeder.counters.bytes_read.load(Ordering::Relaxed);
    (seeder, read, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_reads_only_the_spot_check_and_still_serves_every_byte() {
    let stack = Stack::start().await;
    let mut data = Vec::new();
    let mut published = Vec::new();
    for i in 0..RELEASES {
        let d = package(SIZE, 40 + i as u64);
        published.push(stack.publish(&format!("restart/pkg-{i}.bin"), &d, PIECE).await);
        data.push(d);
    }
    let ihs: Vec<_> = published.iter().map(|p| p.release.info_hash).collect();
    let total = (SIZE * RELEASES) as u64;
    let settings = SeedSettings {
        // Smaller than one object: nothing survives in memory between checks.
        cache_bytes: 4 * PIECE,
        read_ahead: 0,
        ..stack.seed_settings()
    };

    let (first, read, took) = start(&stack, &settings, &ihs).await;
    eprintln!("first start: {read} bytes read from S3 in {took:?}");
    assert!(
        read >= total,
        "the first start checks every piece: {read} of {total} bytes"
    );
    first.stop().await;
    let bitfields = std::fs::read_dir(settings.state_dir.join("fastresume"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "bitv"))
        .count();
    assert_eq!(bitfields, RELEASES, "one verified bitfield per release");

    let (second, read, took) = start(&stack, &settings, &ihs).await;
    eprintln!("restart: {read} bytes read from S3 in {took:?} (spot check)");
    // librqbit's spot check: 1 piece per release plus, of the other 63, the
    // k-th sampled with probability 1/k (about 5.3 pieces on average).
    assert!(
        (PIECE..=2 * 16 * PIECE).contains(&read),
        "the restart read {read} bytes of {total}: not only the spot check"
    );
    // The restarted origin serves every byte (pieces the spot check did not
    // read are SHA-1 checked as they are served).
    for (i, p) in published.iter().enumerate() {
        let dir = stack.dir.path().join(format!("leecher-{i}"));
        let session = leecher_session(&dir).await;
        let handle = leech(&session, &p.info, second.peer_listen(), &dir.join("out")).await;
        tokio::time::timeout(Duration::from_secs(60), handle.wait_until_completed())
            .await
            .expect("leecher finished within 60 s")
            .expect("leecher completed");
        let got = std::fs::read(dir.join("out").join(&p.release.name)).unwrap();
        assert!(got == data[i], "release {i} differs after the restart");
        session.stop().await;
    }
    assert_eq!(second.counters.hash_mismatches.load(Ordering::Relaxed), 0);
    second.stop().await;

    // Changed while the seeder was down: refused whatever the bitfield says.
    stack.put("restart/pkg-0.bin", &package(SIZE, 99)).await;
    let (third, _, _) = start(&stack, &settings, &ihs[1..]).await;
    assert!(!third.is_seeding(&ihs[0]), "a changed object is not seeded");
    let why = third.egress().await.unwrap();
    let why = why.iter().find(|e| e.info_hash == ihs[0]).and_then(|e| e.error.clone());
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("changed since it was published")),
        "{why:?}"
    );
    third.stop().await;

    // Fast-resume off: every object is read again.
    let off = SeedSettings {
        fastresume: false,
        ..settings.clone()
    };
    let (fourth, read, _) = start(&stack, &off, &ihs[1..]).await;
    assert!(
        read >= SIZE as u64,
        "without fast-resume the restart reads the object: {read}"
    );
    fourth.stop().await;
    stack.shutdown().await;
}
