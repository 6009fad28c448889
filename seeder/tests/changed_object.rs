//! A package object overwritten in S3 after it was published (same length,
//! different bytes) must never be served over BitTorrent: the seeder refuses
//! to start seeding an object whose ETag changed since publishing, and the S3
//! storage checks every piece's SHA-1 against the published info dictionary
//! before it caches or serves it; either way the release stops, with the
//! reason in the egress report.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ota_seeder::seeding::SeedSettings;
use ota_testkit::leecher::{have_bytes, leech, leecher_session};
use ota_testkit::package;
use ota_testkit::stack::Stack;

const PIECE: u64 = 256 * 1024;
const SIZE: usize = 2 * 1024 * 1024 + 4321; // 9 pieces, the last one short

/// Waits `for_how_long` (bounded) and returns the leecher's last stats,
/// failing at once if it finishes.
async fn assert_never_finishes(handle: &librqbit::ManagedTorrent, for_how_long: Duration) -> librqbit::TorrentStats {
    let deadline = Instant::now() + for_how_long;
    loop {
        let s = handle.stats();
        assert!(
            !s.finished,
            "leecher finished a package the origin should not have served: {s}"
        );
        if Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn object_changed_after_seeding_started_is_not_served() {
    let t0 = Instant::now();
    let stack = Stack::start().await;
    let original = package(SIZE, 1);
    let published = stack.publish("changed/pkg.bin", &original, PIECE).await;
    let ih = published.release.info_hash;

    // One piece of cache, no read-ahead: almost every piece must come from S3 again.
    let settings = SeedSettings {
        cache_bytes: PIECE,
        read_ahead: 0,
        ..stack.seed_settings()
    };
    let peer = settings.peer_listen;
    let seeder = stack.start_seeding(settings, &ih).await;
    assert_eq!(seeder.counters.hash_mismatches.load(Ordering::Relaxed), 0);

    // Someone overwrites the object in place: same length, every piece different.
    let changed = package(SIZE, 2);
    assert_eq!(changed.len(), original.len());
    stack.put("changed/pkg.bin", &changed).await;

    let leech_dir = stack.dir.path().join("leecher");
    let session = leecher_session(&leech_dir).await;
    let handle = leech(&session, &published.info, peer, &leech_dir.join("out")).await;
    let s = assert_never_finishes(&handle, Duration::from_secs(10)).await;
    let mismatches = seeder.counters.hash_mismatches.load(Ordering::Relaxed);
    eprintln!(
        "{:?}: leecher {s}; seeder mismatches {mismatches}, egress {:?}",
        t0.elapsed(),
        seeder.egress().await.unwrap()
    );
    assert!(mismatches > 0, "the origin detected the changed pieces");
    // At most the one piece still in the origin's cache (verified against the
    // original) can have reached the leecher; librqbit counts only verified pieces.
    assert!(
        matches!(s.state, librqbit::TorrentStatsState::Live),
        "leecher is live: {s}"
    );
    assert!(
        have_bytes(&s) <= PIECE,
        "leecher got {} bytes: more than the one cached piece",
        have_bytes(&s)
    );
    assert!(
        seeder.egress().await.unwrap()[0].bittorrent_bytes <= PIECE,
        "origin uploaded more than the cached piece: {:?}",
        seeder.egress().await.unwrap()
    );
    // The periodic source check stops the release and says why.
    seeder.verify_sources().await;
    assert!(!seeder.is_seeding(&ih));
    let why = seeder.egress().await.unwrap()[0].error.clone().unwrap_or_default();
    assert!(
        why.contains("changed since it was published") || why.contains("fails its SHA-1"),
        "{why}"
    );

    session.stop().await;
    seeder.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn object_changed_before_seeding_started_is_not_served() {
    let stack = Stack::start().await;
    let original = package(SIZE, 3);
    let published = stack.publish("early/pkg.bin", &original, PIECE).await;
    let ih = published.release.info_hash;
    stack.put("early/pkg.bin", &package(SIZE, 4)).await;

    let settings = SeedSettings {
        cache_bytes: 8 << 20,
        read_ahead: 2,
        ..stack.seed_settings()
    };
    let peer = settings.peer_listen;
    let seeder = stack.start_seeder(settings).await;
    // The ETag no longer matches the published one: the release is refused
    // before a single byte is read, and the reason is reported.
    assert_eq!(
        seeder.sync_releases().await.unwrap(),
        0,
        "the origin refuses the changed object"
    );
    assert!(!seeder.is_seeding(&ih));
    let egress = seeder.egress().await.unwrap();
    let why = egress[0].error.clone().unwrap_or_default();
    assert!(why.contains("changed since it was published (ETag"), "{why}");
    assert_eq!(
        seeder.counters.bytes_read.load(Ordering::Relaxed),
        0,
        "nothing was read from the changed object"
    );

    let leech_dir = stack.dir.path().join("leecher");
    let session = leecher_session(&leech_dir).await;
    let handle = leech(&session, &published.info, peer, &leech_dir.join("out")).await;
    let s = assert_never_finishes(&handle, Duration::from_secs(5)).await;
    assert!(
        matches!(s.state, librqbit::TorrentStatsState::Live),
        "leecher is live: {s}"
    );
    assert_eq!(have_bytes(&s), 0, "nothing of the changed object reached the leecher");
    // (A seeder that re-adds releases whose check failed may list none right now.)
    assert_eq!(
        seeder
            .egress()
            .await
            .unwrap()
            .iter()
            .map(|e| e.bittorrent_bytes)
            .sum::<u64>(),
        0
    );

    session.stop().await;
    seeder.stop().await;
    stack.shutdown().await;
}
