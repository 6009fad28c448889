//! The registry against both databases it supports: SQLite (a temporary
//! file) and PostgreSQL (a throwaway cluster, `ota_testkit::pg`). Each
//! scenario runs on both with the same migrations.

use std::time::Duration;

use ota_proto::api::{NewRelease, TelemetryReport};
use ota_proto::{InfoHash, PeerId};
use ota_tracker::registry::{Backend, DeviceActivity, Registry, RegistryError};
use ota_tracker::swarm::{PeerRecord, StoreChanges};

fn release(info: &[u8]) -> NewRelease {
    NewRelease {
        name: "pkg.bin".into(),
        version: "1".into(),
        info_hash: ota_proto::metainfo::info_hash(info),
        size: 5,
        piece_length: 16384,
        sha256: "ab".repeat(32),
        info_hex: hex::encode(info),
        http_url: None,
        source: "s3://b/k".into(),
        etag: None,
        manifest: None,
        rollout_percent: None,
        origin_goal: None,
    }
}

async fn releases_telemetry_and_devices_persist_across_reopen(url: &str) {
    let info = b"d4:name1:ae".to_vec();
    let ih = ota_proto::metainfo::info_hash(&info);
    let token;
    {
        let reg = Registry::open(url).await.unwrap();
        let r = reg.register(&release(&info)).await.unwrap();
        assert_eq!(r.rollout_percent, 100, "default rollout");
        let mut bad = release(&info);
        bad.info_hash = InfoHash([0; 20]);
        assert!(matches!(reg.register(&bad).await, Err(RegistryError::Invalid(_))));
        let mut over = release(&info);
        over.rollout_percent = Some(101);
        assert!(matches!(reg.register(&over).await, Err(RegistryError::Invalid(_))));
        assert!(reg.set_rollout(&ih, 30).await.unwrap());
        assert!(!reg.set_rollout(&InfoHash([0x11; 20]), 30).await.unwrap());
        // Re-registering without a percentage keeps the wave.
        assert_eq!(reg.register(&release(&info)).await.unwrap().rollout_percent, 30);
        reg.mark_pushed(&ih).await.unwrap();
        for (peers, lan) in [(1, 1), (700, 500)] {
            let t = TelemetryReport {
                device: "d1".into(),
                info_hash: ih,
                bytes_from_peers: peers,
                bytes_from_lan_peers: lan,
                bytes_from_internet_peers: 200,
                bytes_from_origin_http: 33,
                verified: true,
                error: Some("none".into()),
                ..Default::default()
            };
            reg.add_telemetry(&t).await.unwrap();
        }
        token = reg.register_device("d1", "stable", "m1").await.unwrap();
        assert_eq!(token.len(), 64);
        assert!(matches!(
            reg.register_device("d1", "stable", "m1").await,
            Err(RegistryError::Exists(_))
        ));
        assert!(matches!(
            reg.register_device("bad id", "stable", "m1").await,
            Err(RegistryError::Invalid(_))
        ));
        reg.register_device("d2", "beta", "m2").await.unwrap();
        let activity = DeviceActivity {
            last_seen: vec![("d1".into(), 1_700_000_000), ("gone".into(), 5)],
            completions: vec![("d1".into(), ih, 2)],
        };
        reg.save_device_activity(&activity).await.unwrap();
        reg.save_device_activity(&DeviceActivity {
            completions: vec![("d1".into(), ih, 1)],
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(reg.revoke_device("d2").await.unwrap());
        assert!(!reg.revoke_device("d2").await.unwrap());
    }
    let reg = Registry::open(url).await.unwrap();
    let all = reg.list().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].info, info);
    assert!(all[0].pushed);
    assert_eq!(all[0].release.rollout_percent, 30);
    let back = reg.telemetry(&ih).await.unwrap();
    assert_eq!(back.len(), 1, "one row per device: the latest report");
    assert_eq!(
        (
            back[0].bytes_from_peers,
            back[0].bytes_from_lan_peers,
            back[0].bytes_from_internet_peers,
            back[0].bytes_from_origin_http
        ),
        (700, 500, 200, 33)
    );
    assert!(back[0].verified);
    let devices = reg.devices().await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(
        (
            devices[0].device_id.as_str(),
            devices[0].last_seen,
            devices[0].completed
        ),
        ("d1", Some(1_700_000_000), 3)
    );
    assert_eq!(reg.device_completions("d1").await.unwrap(), vec![(ih, 3)]);
    let creds = reg.device_credentials().await.unwrap();
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0].token_sha256, ota_tracker::registry::token_digest(&token));
    assert_eq!((creds[0].channel.as_str(), creds[0].model.as_str()), ("stable", "m1"));
}

const IH: InfoHash = InfoHash([9; 20]);

fn peer(n: u32, age_ms: u64) -> PeerRecord {
    let mut id = [0u8; 20];
    id[..4].copy_from_slice(&n.to_be_bytes());
    PeerRecord {
        info_hash: IH,
        peer_id: PeerId(id),
        addr: format!("[::1]:{}", 7000 + (n % 50_000) as u16).parse().unwrap(),
        left: 10,
        stalled: 2,
        is_origin: n == 0,
        granted: true,
        verified: n.is_multiple_of(2),
        device: Some(format!("d{n}")),
        lan: None,
        age: Duration::from_millis(age_ms),
    }
}

async fn swarms_round_trip_with_ages(url: &str) {
    let reg = Registry::open(url).await.unwrap();
    let first = StoreChanges {
        full: false,
        upserts: vec![peer(0, 1000), peer(1, 0), peer(2, 0)],
        removals: vec![],
        downloaded: vec![(IH, 3)],
    };
    reg.save_swarms(&first, 1_000_000).await.unwrap();
    let second = StoreChanges {
        // A peer listed twice is written once (the last entry).
        upserts: vec![peer(1, 100), peer(1, 500)],
        removals: vec![(IH, peer(2, 0).peer_id)],
        downloaded: vec![(IH, 4)],
        ..Default::default()
    };
    reg.save_swarms(&second, 1_002_000).await.unwrap();
    drop(reg);
    let reg = Registry::open(url).await.unwrap();
    let mut got = reg.load_swarms(1_010_000).await.unwrap();
    got.peers.sort_by_key(|p| p.peer_id);
    assert_eq!(got.peers, vec![peer(0, 11_000), peer(1, 8_500)]);
    assert_eq!(got.downloaded, vec![(IH, 4)]);
    // Batches larger than one statement: 2,500 upserts, then 1,200 removals.
    let many = StoreChanges {
        full: true,
        upserts: (0..2_500).map(|n| peer(n, 0)).collect(),
        ..Default::default()
    };
    reg.save_swarms(&many, 1_010_000).await.unwrap();
    assert_eq!(reg.load_swarms(1_010_000).await.unwrap().peers.len(), 2_500);
    let gone = StoreChanges {
        removals: (0..1_200).map(|n| (IH, peer(n, 0).peer_id)).collect(),
        ..Default::default()
    };
    reg.save_swarms(&gone, 1_010_000).await.unwrap();
    let mut left = reg.load_swarms(1_010_000).await.unwrap().peers;
    left.sort_by_key(|p| p.peer_id);
    assert_eq!(left.len(), 1_300);
    assert_eq!(left[0], peer(1_200, 0));
    let full = StoreChanges {
        full: true,
        upserts: vec![peer(5, 0)],
        ..Default::default()
    };
    reg.save_swarms(&full, 1_010_000).await.unwrap();
    let got = reg.load_swarms(1_010_000).await.unwrap();
    assert_eq!(got.peers, vec![peer(5, 0)]);
}

/// Two replicas on one database: each rewrites and deletes only its own
/// peer rows and reads the other's; origin-grant leases have one holder.
async fn replicas_share_rows_and_one_lease(url: &str) {
    let a = Registry::open(url).await.unwrap().with_replica("a");
    let b = Registry::open(url).await.unwrap().with_replica("b");
    let rows = |ns: std::ops::Range<u32>| StoreChanges {
        upserts: ns.map(|n| peer(n, 0)).collect(),
        ..Default::default()
    };
    a.save_swarms(&rows(0..3), 1_000_000).await.unwrap();
    b.save_swarms(&rows(10..12), 1_000_000).await.unwrap();
    let ids = |v: Vec<PeerRecord>| {
        let mut ids: Vec<u32> = v
            .iter()
            .map(|p| u32::from_be_bytes(p.peer_id.0[..4].try_into().unwrap()))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(a.load_swarms(1_000_000).await.unwrap().peers), vec![0, 1, 2]);
    assert_eq!(ids(a.load_remote_peers(1_000_000, 60_000).await.unwrap()), vec![10, 11]);
    assert_eq!(
        ids(b.load_remote_peers(1_000_000, 60_000).await.unwrap()),
        vec![0, 1, 2]
    );
    assert!(
        a.load_remote_peers(1_100_000, 60_000).await.unwrap().is_empty(),
        "too old"
    );
    // B's full resync leaves A's rows; peer 2 moves to B.
    let full = StoreChanges {
        full: true,
        upserts: vec![peer(10, 0), peer(2, 0)],
        ..Default::default()
    };
    b.save_swarms(&full, 1_000_000).await.unwrap();
    assert_eq!(ids(b.load_remote_peers(1_000_000, 60_000).await.unwrap()), vec![0, 1]);
    assert_eq!(ids(a.load_remote_peers(1_000_000, 60_000).await.unwrap()), vec![2, 10]);
    // B's peer 10 leaves.
    let gone = StoreChanges {
        removals: vec![(IH, peer(10, 0).peer_id)],
        ..Default::default()
    };
    b.save_swarms(&gone, 1_000_000).await.unwrap();
    assert_eq!(ids(a.load_remote_peers(1_000_000, 60_000).await.unwrap()), vec![2]);

    // Leases: A claims first, B waits until A's runs out or A gives it up.
    let other = InfoHash([8; 20]);
    assert_eq!(a.claim_grant_leases(&[IH], 0, 1_000).await.unwrap(), vec![IH]);
    assert!(b.claim_grant_leases(&[IH], 500, 1_000).await.unwrap().is_empty());
    assert_eq!(
        a.claim_grant_leases(&[IH], 900, 1_000).await.unwrap(),
        vec![IH],
        "renewed"
    );
    assert!(b.claim_grant_leases(&[IH], 1_500, 1_000).await.unwrap().is_empty());
    let mut both = b.claim_grant_leases(&[IH, other], 2_000, 1_000).await.unwrap();
    both.sort_by_key(|ih| ih.0);
    assert_eq!(both, vec![other, IH], "expired");
    // B no longer wants IH: it gives it up and A takes it at once.
    assert_eq!(b.claim_grant_leases(&[other], 2_100, 1_000).await.unwrap(), vec![other]);
    assert_eq!(a.claim_grant_leases(&[IH], 2_200, 1_000).await.unwrap(), vec![IH]);
    // One swarm claimed alone leaves the replica's other leases as they are.
    assert!(!a.claim_grant_lease(&other, 2_150, 1_000).await.unwrap(), "B holds it");
    assert!(a.claim_grant_lease(&IH, 2_150, 1_000).await.unwrap());
    assert_eq!(b.claim_grant_leases(&[other], 2_160, 1_000).await.unwrap(), vec![other]);
    b.release_grant_leases().await.unwrap();
    assert_eq!(a.claim_grant_leases(&[IH, other], 2_300, 1_000).await.unwrap().len(), 2);
}

#[tokio::test]
async fn sqlite_registry() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/a.db", dir.path().display());
    assert_eq!(Registry::open(&url).await.unwrap().backend(), Backend::Sqlite);
    releases_telemetry_and_devices_persist_across_reopen(&url).await;
    swarms_round_trip_with_ages(&format!("sqlite://{}/b.db", dir.path().display())).await;
    replicas_share_rows_and_one_lease(&format!("sqlite://{}/c.db", dir.path().display())).await;
}

#[tokio::test]
async fn postgres_registry() {
    let pg = ota_testkit::pg::PgCluster::start();
    let url = pg.create_db("reg_a").await;
    assert_eq!(Registry::open(&url).await.unwrap().backend(), Backend::Postgres);
    releases_telemetry_and_devices_persist_across_reopen(&url).await;
    swarms_round_trip_with_ages(&pg.create_db("reg_b").await).await;
    replicas_share_rows_and_one_lease(&pg.create_db("reg_c").await).await;
}

#[tokio::test]
async fn unknown_database_schemes_are_refused() {
    let e = Registry::open("mysql://x/y").await.unwrap_err().to_string();
    assert!(e.contains("expected sqlite://PATH or postgres://"), "{e}");
}
