//! A malicious peer: a device that serves corrupt data for every piece
//! (its package file was altered on disk after librqbit checked it), next
//! to a good (rate-limited) origin. The downloading agent's package comes
//! out byte-identical; the pieces the bad peer sent were refused and fetched
//! again (from the origin); librqbit dropped the bad peer's connection
//! (its error counter), never the origin's.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use common::{package, Stack};

const PIECE: u64 = 65_536;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_pieces_from_a_peer_are_refetched_and_the_peer_dropped() {
    // The origin is listed to every device (with the default on-demand
    // policy the tracker withholds it from a device that has a seeding peer).
    let stack = Stack::start_with(ota_tracker::OriginPolicy::Always).await;
    let data = package(6_000_000, 9);
    let release = stack.publish("fw/mal.bin", &data, PIECE, None).await;
    // The origin sends at most 1 MB/s: librqbit keeps about 2 MB of requests
    // in flight per peer, so the fast bad peer gets asked for pieces.
    let seeder = stack.seeder(Some(1_000_000)).await;
    assert!(common::wait_origin(stack.tracker.client(), &release.info_hash, 1, Duration::from_secs(30)).await);

    // Device B gets the package honestly, then its file is altered on disk:
    // one byte flipped in every piece. librqbit does not re-check what it
    // uploads, so B now serves corrupt pieces.
    let b = common::agent(stack.tracker.url(), "dev-bad", &stack.dir.path().join("b"), None).await;
    let b_installed = b.handle_release(&release.info_hash).await.unwrap();
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&b_installed.path)
            .unwrap();
        let mut byte = [0u8; 1];
        for i in 0..data.len().div_ceil(PIECE as usize) {
            let at = i as u64 * PIECE + 100;
            f.seek(SeekFrom::Start(at)).unwrap();
            f.read_exact(&mut byte).unwrap();
            byte[0] ^= 0xff;
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&byte).unwrap();
        }
        f.sync_all().unwrap();
    }
    assert_ne!(std::fs::read(&b_installed.path).unwrap(), data);
    let b_uploaded_before = b.downloader().uploaded(&release.info_hash).unwrap_or(0);
    // B's `completed` announce reaches the tracker before C asks for peers
    // (the tracker's announce interval in tests is 1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Device C downloads with B and the origin as its peers.
    let c_state = stack.dir.path().join("c");
    let c = common::agent(stack.tracker.url(), "dev-victim", &c_state, None).await;
    let c_installed = c.handle_release(&release.info_hash).await.unwrap();
    assert!(
        std::fs::read(&c_installed.path).unwrap() == data,
        "the package stays correct"
    );

    let b_uploaded = b.downloader().uploaded(&release.info_hash).unwrap_or(0) - b_uploaded_before;
    assert!(b_uploaded > 0, "the bad peer did send (corrupt) data");
    let r = &stack.tracker.client().telemetry(&release.info_hash).await.unwrap();
    let r = r.iter().find(|r| r.device == "dev-victim").unwrap();
    assert!(r.verified);
    assert!(r.bytes_from_peers > 0, "bytes from the bad peer were received: {r:?}");
    assert!(
        r.bytes_from_origin >= data.len() as u64 - PIECE,
        "the refused pieces came again from the origin: {r:?}"
    );
    assert!(
        r.bytes_from_origin + r.bytes_from_peers > data.len() as u64,
        "some pieces were fetched twice: {r:?}"
    );

    // librqbit dropped B after a hash failure: B's error counter, not the origin's.
    let origin = stack
        .tracker
        .client()
        .release(&release.info_hash)
        .await
        .unwrap()
        .origin_peers;
    let b_addr = format!("127.0.0.1:{}", b.downloader().port());
    let deadline = Instant::now() + Duration::from_secs(5);
    let errors = loop {
        let e = c.downloader().peer_errors(&release.info_hash);
        if e.get(&b_addr).is_some_and(|n| *n > 0) || Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // (B may also show up under the ephemeral port of a connection it dialled.)
    assert!(
        errors.get(&b_addr).is_some_and(|n| *n > 0),
        "the bad peer {b_addr} was dropped at least once: {errors:?}"
    );
    for o in &origin {
        assert_eq!(
            errors.get(o).copied().unwrap_or(0),
            0,
            "the origin was never dropped: {errors:?}"
        );
    }

    c.stop().await;
    b.stop().await;
    seeder.stop().await;
    stack.tracker.stop().await;
}
