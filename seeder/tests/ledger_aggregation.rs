//! Bounded ledger growth: rows aggregate per (release, path, peer, second),
//! old per-request rows are summed into their second by the migration, and
//! the BitTorrent sampler forgets peers that left.

use ota_proto::InfoHash;
use ota_seeder::ledger::{EgressEntry, EgressPath, Ledger, UploadSampler};

const T0: i64 = 1_700_000_000_000;

fn entry(at_ms: i64, peer: &str, path: EgressPath, bytes: u64) -> EgressEntry {
    EgressEntry {
        at_ms,
        info_hash: InfoHash([0x42; 20]),
        path,
        peer: peer.into(),
        device: None,
        bytes,
    }
}

async fn all_rows(l: &Ledger) -> Vec<EgressEntry> {
    l.page(0, i64::MAX).await.unwrap().into_iter().map(|(_, e)| e).collect()
}

#[tokio::test]
async fn ledger_rows_aggregate_per_release_peer_path_and_second() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(&format!("sqlite://{}/l.db", dir.path().display()))
        .await
        .unwrap();
    // 500 requests of one connection within one second, in separate writes.
    for i in 0..500 {
        l.record(&[entry(T0 + i * 2 % 1000, "10.0.0.1:5000", EgressPath::Http, 3)])
            .await
            .unwrap();
    }
    // The next second, another peer, the other path: rows of their own.
    l.record(&[
        entry(T0 + 1000, "10.0.0.1:5000", EgressPath::Http, 7),
        entry(T0 + 10, "10.0.0.2:5000", EgressPath::Http, 1),
        entry(T0 + 10, "10.0.0.1:5000", EgressPath::Bittorrent, 2),
        entry(T0 + 20, "10.0.0.1:5000", EgressPath::Bittorrent, 2),
    ])
    .await
    .unwrap();
    let rows = all_rows(&l).await;
    assert_eq!(
        rows,
        vec![
            entry(T0, "10.0.0.1:5000", EgressPath::Http, 1500),
            entry(T0 + 1000, "10.0.0.1:5000", EgressPath::Http, 7),
            entry(T0, "10.0.0.2:5000", EgressPath::Http, 1),
            entry(T0, "10.0.0.1:5000", EgressPath::Bittorrent, 4),
        ]
    );
    let totals = l.totals().await.unwrap();
    assert_eq!((totals[0].http_bytes, totals[0].bittorrent_bytes), (1508, 4));
}

#[tokio::test]
async fn ledger_migration_sums_old_per_request_rows_into_their_second() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/old.db", dir.path().display());
    // A ledger as the previous version left it: only the first migration.
    let first_only = dir.path().join("migrations");
    std::fs::create_dir_all(&first_only).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0001_egress.sql"),
        first_only.join("0001_egress.sql"),
    )
    .unwrap();
    {
        let pool = ota_common::db::open_sqlite(&url).await.unwrap();
        sqlx::migrate::Migrator::new(first_only.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for (at, peer, bytes) in [
            (T0 + 1, "a", 1),
            (T0 + 999, "a", 2),
            (T0 + 1000, "a", 4),
            (T0 + 5, "b", 8),
        ] {
            sqlx::query(
                "INSERT INTO egress (at_ms, info_hash, path, peer, device, bytes) VALUES (?, ?, 'http', ?, NULL, ?)",
            )
            .bind(at)
            .bind("42".repeat(20))
            .bind(peer)
            .bind(bytes)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
    let l = Ledger::open(&url).await.unwrap();
    assert_eq!(
        all_rows(&l).await,
        vec![
            entry(T0, "a", EgressPath::Http, 3),
            entry(T0 + 1000, "a", EgressPath::Http, 4),
            entry(T0, "b", EgressPath::Http, 8),
        ]
    );
    // And new writes add to the migrated rows.
    l.record(&[entry(T0 + 500, "a", EgressPath::Http, 10)]).await.unwrap();
    assert_eq!(all_rows(&l).await[0], entry(T0, "a", EgressPath::Http, 13));
}

#[test]
fn sampler_forgets_peers_that_left_and_releases_no_longer_live() {
    let mut s = UploadSampler::default();
    let (a, b) = (InfoHash([0xa; 20]), InfoHash([0xb; 20]));
    let peers = |n: usize, bytes: u64| (0..n).map(move |i| (format!("10.0.0.{i}:6881"), bytes));
    assert_eq!(s.deltas(&a, peers(1000, 10)).len(), 1000);
    assert_eq!(s.deltas(&b, peers(5, 10)).len(), 5);
    assert_eq!(s.tracked(), 1005);
    // 990 peers of release a left: only the 10 still there are remembered.
    assert_eq!(s.deltas(&a, peers(10, 15)), peers(10, 5).collect::<Vec<_>>());
    assert_eq!(s.tracked(), 15);
    // A peer that comes back starts from its new counter.
    assert_eq!(s.deltas(&a, peers(11, 15)), vec![("10.0.0.10:6881".to_string(), 15)]);
    // A release with no peers left, or no longer live, is forgotten.
    assert!(s.deltas(&b, peers(0, 0)).is_empty());
    assert_eq!(s.tracked(), 11);
    s.retain_releases(|ih| *ih != a);
    assert_eq!(s.tracked(), 0);
}
