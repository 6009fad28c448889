//! An S3 outage in the middle of a BitTorrent transfer from the origin: the
//! seeder (one-piece cache, no read-ahead, upload capped so the transfer
//! lasts seconds) must ride out the outage and, once S3 is back on the same
//! address, finish serving the leecher a byte-identical package, without
//! ever serving an unverified piece.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ota_seeder::seeding::SeedSettings;
use ota_testkit::leecher::{have_bytes, leech, leecher_session};
use ota_testkit::package;
use ota_testkit::stack::Stack;

const PIECE: u64 = 256 * 1024;
const SIZE: usize = 3 * 1024 * 1024 + 12_345; // 13 pieces, the last one short

/// A short outage: the storage's retries (5 GETs, backoff from 200 ms)
/// bridge it, so no piece GET fails for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leecher_finishes_byte_identical_across_a_short_s3_outage() {
    let failures = run(Duration::from_secs(2)).await;
    assert_eq!(failures, 0, "a 2 s outage is bridged by the storage's retries");
}

/// An outage longer than the storage's whole retry budget: piece reads fail,
/// librqbit drops the peer, and the swarm must still recover once S3 is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leecher_recovers_after_an_s3_outage_longer_than_the_retry_budget() {
    let failures = run(Duration::from_secs(20)).await;
    assert!(failures > 0, "a 20 s outage outlasts the retry budget");
}

/// Runs one outage of `outage` mid-transfer; returns the seeder's count of
/// piece GETs that failed for good.
async fn run(outage: Duration) -> u64 {
    let t0 = Instant::now();
    let mut stack = Stack::start().await;
    let data = package(SIZE, 42);
    let published = stack.publish("outage/pkg.bin", &data, PIECE).await;
    let ih = published.release.info_hash;

    let settings = SeedSettings {
        cache_bytes: PIECE,
        read_ahead: 0,
        upload_limit_bps: Some(1_000_000),
        ..stack.seed_settings()
    };
    let peer = settings.peer_listen;
    let seeder = stack.start_seeding(settings, &ih).await;
    assert_eq!(seeder.counters.hash_mismatches.load(Ordering::Relaxed), 0);
    let read_after_check = seeder.counters.bytes_read.load(Ordering::Relaxed);
    assert!(
        read_after_check >= SIZE as u64,
        "initial check read the object from S3 ({read_after_check} bytes)"
    );

    let leech_dir = stack.dir.path().join("leecher");
    let session = leecher_session(&leech_dir).await;
    let handle = leech(&session, &published.info, peer, &leech_dir.join("out")).await;

    // Wait until the transfer is well under way, then cut S3.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = handle.stats();
        assert!(
            !s.finished,
            "leecher finished before the outage could start ({} bytes): transfer too fast",
            s.progress_bytes
        );
        assert!(s.error.is_none(), "leecher error: {:?}", s.error);
        if have_bytes(&s) >= 2 * PIECE {
            break;
        }
        assert!(Instant::now() < deadline, "leecher made no progress: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack.s3.stop();
    let at_stop = handle.stats();
    eprintln!(
        "{:?}: S3 stopped with the leecher at {}/{} bytes",
        t0.elapsed(),
        have_bytes(&at_stop),
        at_stop.total_bytes
    );
    assert!(
        !at_stop.finished && have_bytes(&at_stop) < at_stop.total_bytes,
        "outage starts mid-transfer"
    );

    tokio::time::sleep(outage).await;
    let at_restart = handle.stats();
    eprintln!(
        "{:?}: restarting S3 with the leecher at {} bytes",
        t0.elapsed(),
        have_bytes(&at_restart)
    );
    // With one cached piece and no read-ahead the origin cannot finish without S3.
    assert!(
        !at_restart.finished,
        "leecher finished during the outage: the origin served pieces it could not have"
    );
    let read_at_restart = seeder.counters.bytes_read.load(Ordering::Relaxed);
    stack.s3.restart().await;

    let done = tokio::time::timeout(Duration::from_secs(40), handle.wait_until_completed()).await;
    let s = handle.stats();
    eprintln!(
        "{:?}: leecher {s}; seeder S3 counters: read {} failures {} mismatches {}; egress {:?}",
        t0.elapsed(),
        seeder.counters.bytes_read.load(Ordering::Relaxed),
        seeder.counters.failures.load(Ordering::Relaxed),
        seeder.counters.hash_mismatches.load(Ordering::Relaxed),
        seeder.egress().await.unwrap(),
    );
    done.expect("leecher finished within 40 s of S3 coming back")
        .expect("leecher download succeeded");
    let got = std::fs::read(leech_dir.join("out").join("pkg.bin")).unwrap();
    assert!(got == data, "leecher's package is byte-identical");
    assert_eq!(
        seeder.counters.hash_mismatches.load(Ordering::Relaxed),
        0,
        "no piece failed its SHA-1 at the origin"
    );
    assert!(
        seeder.counters.bytes_read.load(Ordering::Relaxed) > read_at_restart,
        "the origin read the rest from the restarted S3 server"
    );
    // librqbit counts a block after its write completes, which may be just
    // after the leecher has it: give the counter a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    let egress = loop {
        let e = seeder.egress().await.unwrap();
        if e[0].bittorrent_bytes >= SIZE as u64 || Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(egress.len(), 1);
    assert!(
        egress[0].error.is_none(),
        "origin torrent not in error: {:?}",
        egress[0].error
    );
    assert!(
        egress[0].bittorrent_bytes >= SIZE as u64,
        "origin counted its upload: {:?}",
        egress[0]
    );
    assert!(seeder.is_seeding(&ih), "origin still seeding after the outage");
    let failures = seeder.counters.failures.load(Ordering::Relaxed);

    session.stop().await;
    seeder.stop().await;
    stack.shutdown().await;
    eprintln!("total {:?}", t0.elapsed());
    failures
}

/// S3 goes away while the origin runs librqbit's initial check of a new
/// release, for longer than the storage's retry budget, then comes back. The
/// origin must end up seeding the release (its sync loop keeps running) and a
/// leecher must get it. (librqbit marks every piece after the first read
/// error as missing and never re-checks; the seeder drops such a release
/// and adds it again with backoff.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_recovers_from_an_s3_outage_during_its_initial_check() {
    let mut stack = Stack::start().await;
    let data = package(SIZE, 43);
    let published = stack.publish("check/pkg.bin", &data, PIECE).await;
    let ih = published.release.info_hash;
    let settings = SeedSettings {
        cache_bytes: 8 << 20,
        read_ahead: 2,
        ..stack.seed_settings()
    };
    let peer = settings.peer_listen;
    let seeder = stack.start_seeder(settings).await;
    assert_eq!(seeder.sync_releases().await.unwrap(), 1);
    stack.s3.stop();
    // The check cannot finish without S3: 13 pieces, none cached yet.
    let read_at_stop = seeder.counters.bytes_read.load(Ordering::Relaxed);
    assert!(
        read_at_stop < SIZE as u64,
        "initial check already done ({read_at_stop} bytes read)"
    );
    let sync = tokio::spawn(seeder.clone().run_sync_loop());
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(!seeder.is_seeding(&ih), "seeding without S3");
    assert!(
        seeder.counters.failures.load(Ordering::Relaxed) > 0,
        "the outage outlasted the retry budget"
    );
    stack.s3.restart().await;

    let deadline = Instant::now() + Duration::from_secs(15);
    while !seeder.is_seeding(&ih) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seeder.is_seeding(&ih),
        "origin seeds the release within 15 s of S3 coming back: {:?}",
        seeder.egress().await.unwrap()
    );

    let leech_dir = stack.dir.path().join("leecher");
    let session = leecher_session(&leech_dir).await;
    let handle = leech(&session, &published.info, peer, &leech_dir.join("out")).await;
    tokio::time::timeout(Duration::from_secs(20), handle.wait_until_completed())
        .await
        .expect("leecher finished within 20 s")
        .expect("leecher download succeeded");
    assert!(
        std::fs::read(leech_dir.join("out").join("pkg.bin")).unwrap() == data,
        "byte-identical"
    );
    assert_eq!(seeder.counters.hash_mismatches.load(Ordering::Relaxed), 0);

    sync.abort();
    session.stop().await;
    seeder.stop().await;
    stack.shutdown().await;
}
