//! The tracker over real HTTP on loopback: announce errors, the swarm, the
//! release API, the push channel and persistence across a restart (releases,
//! and the live swarm: peers, their ages, origin grants and counters).

use std::time::Duration;

mod common;

use futures::StreamExt;
use ota_client::{AnnounceParams, TrackerClient};
use ota_proto::announce::{encode_binary, AnnounceEvent};
use ota_proto::api::{NewRelease, TelemetryReport};
use ota_proto::metainfo::{info_hash, InfoDict};
use ota_proto::{InfoHash, PeerId};
use ota_testkit::tracker::{ConnectabilityConfig, TestTracker, TestTrackerBuilder};
use ota_tracker::registry::Registry;
use ota_tracker::DeviceAuth;

const ADMIN: &str = "test-admin-token";
const ORIGIN: &str = ota_testkit::tracker::DEFAULT_ORIGIN;

/// A tracker on `db` with the admin token [`ADMIN`] (device tokens off,
/// connectability checks off: these tests announce peers at addresses
/// nothing listens on and check the hand-out; `tests/direct_paths.rs` covers
/// the checks).
fn tracker(db: &str) -> TestTrackerBuilder {
    TestTracker::builder()
        .database_url(db)
        .admin_token(ADMIN)
        .connectability(ConnectabilityConfig {
            enabled: false,
            ..Default::default()
        })
}

async fn start(db: &str) -> TestTracker {
    tracker(db).start().await
}

fn release() -> (NewRelease, InfoHash) {
    let r = NewRelease {
        version: "1.0".into(),
        ..ota_testkit::release("pkg.bin", 10, 262144)
    };
    let ih = r.info_hash;
    (r, ih)
}

async fn get(url: &str) -> (u16, Vec<u8>) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_announces_get_a_bencoded_failure_reason() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&format!("sqlite://{}/t.db", dir.path().display())).await;
    let (_, ih) = release();
    let good = format!(
        "info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=0&left=10",
        encode_binary(ih.as_ref()),
        encode_binary(b"-XX0001-abcdefghijkl")
    );
    let cases = [
        ("".to_string(), "missing parameter: info_hash"),
        ("info_hash=short".to_string(), "invalid info_hash"),
        (good.replace("port=6881", "port=99999"), "invalid port"),
        (good.replace("&left=10", ""), "missing parameter: left"),
        (format!("{good}&event=exploded"), "invalid event"),
        (good.clone(), "unregistered info hash"),
        (format!("{good}&x={}", "a".repeat(5000)), "longer than"),
    ];
    for (q, expect) in cases {
        let (status, body) = get(&format!("{}/announce?{q}", t.url())).await;
        assert_eq!(status, 200, "a failure is still HTTP 200");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("d14:failure reason"), "{text}");
        assert!(text.contains(expect), "{q:.60} -> {text}");
    }
    let (status, body) = get(&format!("{}/scrape?info_hash=%00", t.url())).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("failure reason"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn releases_swarm_push_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/t.db", dir.path().display());
    let t = start(&db).await;
    let admin = TrackerClient::new(t.url(), Some(ADMIN.into()));
    let anon = TrackerClient::new(t.url(), None);
    let (new, ih) = release();

    let err = anon.register(&new).await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    let mut bad = new.clone();
    bad.info_hash = InfoHash([0; 20]);
    assert!(admin
        .register(&bad)
        .await
        .unwrap_err()
        .to_string()
        .contains("does not match"));

    let mut pushes = anon.subscribe().await.unwrap();
    for _ in 0..50 {
        if admin.subscribers().await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin.register(&new).await.unwrap();
    assert_eq!(admin.push(&new.info_hash).await.unwrap(), 1);
    let ev = tokio::time::timeout(Duration::from_secs(5), pushes.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(ev, ota_client::PushMessage::Release(e) if e.info_hash == new.info_hash));

    // The {info_hash} path segment: 40 hex characters of either case, else 400.
    let (status, body) = get(&format!(
        "{}/api/releases/{}",
        t.url(),
        new.info_hash.to_hex().to_uppercase()
    ))
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = get(&format!("{}/api/releases/not-a-hash", t.url())).await;
    assert_eq!(status, 400);
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("not 40 hex characters"),
        "{err}"
    );
    let (status, _) = get(&format!("{}/api/releases/{}", t.url(), "0".repeat(40))).await;
    assert_eq!(status, 404, "a well-formed unknown info hash");

    // The served .torrent carries the device id and keeps the info hash.
    let torrent = anon.torrent(&new.info_hash, "dev-9").await.unwrap();
    assert!(String::from_utf8_lossy(&torrent).contains("/announce?device=dev%2D9"));
    assert_eq!(
        info_hash(&ota_proto::metainfo::info_from_torrent(&torrent).unwrap()),
        ih
    );

    // An origin announce and two devices.
    let announce = |n: u8, left: u64, origin: bool| {
        let url = t.url().to_string();
        async move {
            let mut q = format!(
                "{url}/announce?info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&left={left}",
                encode_binary(ih.as_ref()),
                encode_binary(&[n; 20]),
                7000 + n as u16
            );
            if origin {
                q.push_str(&format!("&origin_token={ORIGIN}"));
            }
            let (_, body) = get(&q).await;
            ota_proto::announce::decode_announce(&body).unwrap().1
        }
    };
    assert!(announce(0, 0, true).await.is_empty(), "the origin is given no peers");
    let first = announce(1, 10, false).await;
    assert_eq!(
        first,
        vec!["127.0.0.1:7000".parse().unwrap()],
        "first leecher gets the origin"
    );
    let second = announce(2, 10, false).await;
    assert_eq!(
        second,
        vec!["127.0.0.1:7001".parse().unwrap()],
        "second leecher gets the first, not the origin"
    );
    let completed = AnnounceParams {
        info_hash: ih,
        peer_id: PeerId([1; 20]),
        port: 7001,
        uploaded: 0,
        downloaded: 10,
        left: 0,
        event: AnnounceEvent::Completed,
        device: Some("dev-1".into()),
    };
    admin.announce(&completed).await.unwrap();
    let releases = anon.releases().await.unwrap();
    assert_eq!(releases[0].origin_peers, vec!["127.0.0.1:7000".to_string()]);
    let metrics = ota_testkit::http::get_text(&format!("{}/metrics", t.url()), ADMIN).await;
    assert!(metrics.contains("ota_tracker_announces_total"), "{metrics}");
    let addr = t.addr();
    t.stop().await;

    // Releases survive a restart (on the same address).
    let t = tracker(&db).listen(addr).start().await;
    assert_eq!(t.addr(), addr);
    let anon = TrackerClient::new(t.url(), None);
    let after = anon.releases().await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].info_hash, new.info_hash);
    // The swarm is still tracked (registered) after the restart.
    let (_, body) = get(&format!(
        "{}/announce?info_hash={}&peer_id={}&port=7003&uploaded=0&downloaded=0&left=10",
        t.url(),
        encode_binary(ih.as_ref()),
        encode_binary(&[3; 20])
    ))
    .await;
    assert!(ota_proto::announce::decode_announce(&body).is_ok());
    t.stop().await;
}

fn params(ih: InfoHash, n: u8, left: u64, event: AnnounceEvent) -> AnnounceParams {
    common::client_announce(ih, n, left, event, Some(format!("dev-{n}")))
}

/// The swarm as the admin API shows it, without ages, sorted.
fn swarm_view(peers: &[ota_proto::api::PeerInfo]) -> Vec<(PeerId, String, u64, bool, bool, Option<String>)> {
    let mut v: Vec<_> = peers
        .iter()
        .map(|p| {
            (
                p.peer_id,
                p.addr.clone(),
                p.left,
                p.is_origin,
                p.granted,
                p.device.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn live_swarm_survives_a_graceful_restart_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    live_swarm_survives_a_graceful_restart(&format!("sqlite://{}/t.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn live_swarm_survives_a_graceful_restart_postgres() {
    let pg = ota_testkit::pg::PgCluster::start();
    live_swarm_survives_a_graceful_restart(&pg.create_db("restart").await).await;
}

async fn live_swarm_survives_a_graceful_restart(db: &str) {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;
    let db = db.to_string();
    let t = tracker(&db).persist_interval(Duration::from_millis(200)).start().await;
    let admin = TrackerClient::new(t.url(), Some(ADMIN.into()));
    let (new, ih) = release();
    admin.register(&new).await.unwrap();

    // Origin (port 7000, announced with the origin token), then devices 1..=3.
    let (_, body) = get(&format!(
        "{}/announce?info_hash={}&peer_id={}&port=7000&uploaded=0&downloaded=0&left=0&origin_token={ORIGIN}",
        t.url(),
        encode_binary(ih.as_ref()),
        encode_binary(&[0; 20])
    ))
    .await;
    ota_proto::announce::decode_announce(&body).unwrap();
    let first = admin
        .announce(&params(ih, 1, 10, AnnounceEvent::Started))
        .await
        .unwrap()
        .1;
    assert_eq!(
        first,
        vec!["127.0.0.1:7000".parse::<SocketAddr>().unwrap()],
        "device 1 holds the origin grant"
    );
    admin
        .announce(&params(ih, 2, 10, AnnounceEvent::Started))
        .await
        .unwrap();
    admin
        .announce(&params(ih, 3, 10, AnnounceEvent::Started))
        .await
        .unwrap();
    admin
        .announce(&params(ih, 3, 0, AnnounceEvent::Completed))
        .await
        .unwrap();
    // What a new leecher gets before the restart (then it leaves again).
    let probe = |t: &TestTracker| {
        let c = TrackerClient::new(t.url(), None);
        async move {
            let got = c.announce(&params(ih, 9, 10, AnnounceEvent::Started)).await.unwrap().1;
            c.announce(&params(ih, 9, 10, AnnounceEvent::Stopped)).await.unwrap();
            got.into_iter().collect::<BTreeSet<SocketAddr>>()
        }
    };
    let handed_before = probe(&t).await;
    assert_eq!(
        handed_before.len(),
        3,
        "devices 1, 2, 3 (not the origin): {handed_before:?}"
    );
    let scrape_before = admin.scrape(&ih).await.unwrap();
    assert_eq!(
        (
            scrape_before.complete,
            scrape_before.downloaded,
            scrape_before.incomplete
        ),
        (2, 1, 2)
    );
    let peers_before = admin.peers(&new.info_hash).await.unwrap();
    assert_eq!(peers_before.len(), 4);
    assert_eq!(peers_before.iter().filter(|p| p.granted).count(), 1);

    // Periodic writes: without any shutdown, the database catches up within a few intervals.
    let mut stored = 0;
    for _ in 0..50 {
        let reg = Registry::open(&db).await.unwrap();
        stored = reg.load_swarms(0).await.unwrap().peers.len();
        if stored == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 4, "the periodic write did not store the swarm within 5 s");

    let stopped_at = std::time::Instant::now();
    t.stop().await;

    // Restart with a write interval far longer than the test: only the
    // start-up rewrite and the shutdown write happen.
    let t = tracker(&db).persist_interval(Duration::from_secs(3600)).start().await;
    let admin = TrackerClient::new(t.url(), Some(ADMIN.into()));
    assert_eq!(
        admin.scrape(&ih).await.unwrap(),
        scrape_before,
        "same counters after the restart"
    );
    let gap_ms = stopped_at.elapsed().as_millis() as u64;
    let peers_after = admin.peers(&new.info_hash).await.unwrap();
    assert_eq!(
        swarm_view(&peers_after),
        swarm_view(&peers_before),
        "same swarm after the restart"
    );
    for p in &peers_after {
        let before = peers_before.iter().find(|b| b.peer_id == p.peer_id).unwrap();
        assert!(
            p.age_ms + 100 >= before.age_ms + gap_ms,
            "ages go on across the restart: {} ms, then {} ms after {gap_ms} ms",
            before.age_ms,
            p.age_ms
        );
    }
    assert_eq!(
        probe(&t).await,
        handed_before,
        "a new leecher gets the same peers after the restart"
    );
    let releases = admin.releases().await.unwrap();
    assert_eq!(releases[0].origin_peers, vec!["127.0.0.1:7000".to_string()]);
    // A change made now is written only by the graceful shutdown.
    admin.announce(&params(ih, 2, 4, AnnounceEvent::None)).await.unwrap();
    let peers_before = admin.peers(&new.info_hash).await.unwrap();
    t.stop().await;

    let t = start(&db).await;
    let admin = TrackerClient::new(t.url(), Some(ADMIN.into()));
    let peers_after = admin.peers(&new.info_hash).await.unwrap();
    assert_eq!(
        swarm_view(&peers_after),
        swarm_view(&peers_before),
        "the shutdown write kept the last change"
    );
    assert_eq!(
        peers_after.iter().find(|p| p.peer_id == PeerId([2; 20])).unwrap().left,
        4
    );
    t.stop().await;

    // Expiry continues from the stored ages: with a 1 s timeout, a restart
    // after 1.5 s of silence finds an empty swarm (counters stay).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = tracker(&db).peer_timeout(Duration::from_secs(1)).start().await;
    let admin = TrackerClient::new(t.url(), Some(ADMIN.into()));
    assert!(admin.peers(&new.info_hash).await.unwrap().is_empty());
    let s = admin.scrape(&ih).await.unwrap();
    assert_eq!((s.complete, s.downloaded, s.incomplete), (0, 1, 0));
    t.stop().await;
    let reg = Registry::open(&db).await.unwrap();
    assert!(
        reg.load_swarms(0).await.unwrap().peers.is_empty(),
        "expired rows are deleted from the database"
    );
}

/// Waits up to `limit` for the next push on `s`; None when none came.
async fn next_push(
    s: &mut futures::stream::BoxStream<'static, anyhow::Result<ota_client::PushMessage>>,
    limit: std::time::Duration,
) -> Option<InfoHash> {
    match tokio::time::timeout(limit, s.next()).await {
        Ok(Some(Ok(ota_client::PushMessage::Release(ev)))) => Some(ev.info_hash),
        Ok(other) => panic!("push stream ended: {other:?}"),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn device_tokens_and_rollout_waves_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    device_tokens_and_rollout_waves(&format!("sqlite://{}/t.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn device_tokens_and_rollout_waves_postgres() {
    let pg = ota_testkit::pg::PgCluster::start();
    device_tokens_and_rollout_waves(&pg.create_db("devices").await).await;
}

async fn device_tokens_and_rollout_waves(db: &str) {
    use ota_proto::rollout::in_wave;
    let db = db.to_string();
    let t = tracker(&db)
        .persist_interval(Duration::from_millis(200))
        .device_auth(DeviceAuth::Required)
        .start()
        .await;
    let admin = TrackerClient::new(t.url(), Some(ADMIN.into()));
    let anon = TrackerClient::new(t.url(), None);
    let (mut new, ih) = release();
    new.rollout_percent = Some(0);
    assert_eq!(admin.register(&new).await.unwrap().rollout_percent, 0);
    // A second release, signed for channel beta and model m2 only.
    let info_b = InfoDict {
        name: "b.bin".into(),
        length: 10,
        piece_length: 262144,
        pieces: vec![[8; 20]],
        private: true,
    }
    .to_bytes();
    let ih_b = info_hash(&info_b);
    let manifest = serde_json::json!({
        "name": "b.bin", "version": "1", "info_hash": ih_b, "size": 10, "sha256": "cd".repeat(32),
        "channel": "beta", "models": ["m2"], "created_at": 0
    })
    .to_string();
    let rel_b = NewRelease {
        name: "b.bin".into(),
        info_hash: ih_b,
        sha256: "cd".repeat(32),
        info_hex: hex::encode(&info_b),
        manifest: Some(ota_proto::manifest::SignedManifest {
            manifest,
            signature: "00".repeat(64),
        }),
        rollout_percent: None,
        origin_goal: None,
        ..new.clone()
    };
    admin.register(&rel_b).await.unwrap();

    // Device registration: admin only, ids unique, the token shown once.
    assert!(anon
        .register_device("x", "stable", "m1")
        .await
        .unwrap_err()
        .to_string()
        .contains("401"));
    let ids: Vec<String> = (0..16).map(|i| format!("dev-{i}")).collect();
    let mut devs = Vec::new();
    for id in &ids {
        let token = admin.register_device(id, "stable", "m1").await.unwrap();
        devs.push(TrackerClient::new(t.url(), None).with_device_token(Some(token)));
    }
    assert!(admin
        .register_device("dev-0", "stable", "m1")
        .await
        .unwrap_err()
        .to_string()
        .contains("409"));
    let beta = TrackerClient::new(t.url(), None)
        .with_device_token(Some(admin.register_device("beta-1", "beta", "m2").await.unwrap()));
    assert_eq!(admin.devices().await.unwrap().len(), 17);

    // Without a valid token: API 401, announce and scrape refused (HTTP 200, bencoded reason).
    assert!(anon.releases().await.unwrap_err().to_string().contains("401"));
    let forged = TrackerClient::new(t.url(), None).with_device_token(Some("ab".repeat(32)));
    assert!(forged.releases().await.unwrap_err().to_string().contains("401"));
    let e = anon
        .announce(&params(ih, 1, 10, AnnounceEvent::Started))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("device token required"), "{e}");
    let e = forged
        .announce(&params(ih, 1, 10, AnnounceEvent::Started))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown or revoked device token"), "{e}");
    let (status, body) = get(&format!("{}/scrape?info_hash={}", t.url(), encode_binary(ih.as_ref()))).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("device token required"));

    // Channel and model from the manifest: only the beta/m2 device sees release B.
    let listed = |c: &TrackerClient| {
        let c = c.clone();
        async move {
            c.releases()
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.info_hash)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(&devs[0]).await,
        Vec::<InfoHash>::new(),
        "A is at 0 %, B is for beta"
    );
    assert_eq!(listed(&beta).await, vec![ih_b]);
    let e = devs[0].torrent(&ih_b, "").await.unwrap_err().to_string();
    assert!(e.contains("403") && e.contains("channel"), "{e}");
    assert_eq!(listed(&admin).await.len(), 2, "the admin sees every release");

    // Pushes: at 0 % nobody gets A; raising the wave pushes to the devices it adds.
    let mut streams = Vec::new();
    for d in &devs {
        streams.push(d.subscribe().await.unwrap());
    }
    for _ in 0..100 {
        if admin.subscribers().await.unwrap() == devs.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin.push(&new.info_hash).await.unwrap();
    let e = devs[0]
        .announce(&params(ih, 1, 10, AnnounceEvent::Started))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("rollout wave"), "{e}");
    let mut got_first = vec![false; devs.len()];
    for step in [50u8, 100] {
        admin.set_rollout(&new.info_hash, step).await.unwrap();
        for (i, s) in streams.iter_mut().enumerate() {
            let newly = in_wave(&ih, &ids[i], step) && !got_first[i];
            if newly {
                assert_eq!(
                    next_push(s, Duration::from_secs(5)).await,
                    Some(new.info_hash),
                    "{} at {step} %",
                    ids[i]
                );
                got_first[i] = true;
            }
        }
        // No device gets a second push, and none outside the wave.
        for s in streams.iter_mut() {
            assert_eq!(next_push(s, Duration::from_millis(300)).await, None, "at {step} %");
        }
        if step == 50 {
            let inside = ids.iter().filter(|id| in_wave(&ih, id, 50)).count();
            assert!(
                inside > 0 && inside < ids.len(),
                "16 devices split by a 50 % wave: {inside}"
            );
            for (i, d) in devs.iter().enumerate() {
                assert_eq!(
                    listed(d).await.contains(&new.info_hash),
                    in_wave(&ih, &ids[i], 50),
                    "{}",
                    ids[i]
                );
            }
        }
    }
    assert!(got_first.iter().all(|g| *g), "at 100 % every device got the push once");

    // A device announces with its token; the tracker takes the id from it.
    let torrent = devs[3].torrent(&new.info_hash, "ignored").await.unwrap();
    assert!(
        String::from_utf8_lossy(&torrent).contains("/announce?token="),
        "the announce URL carries the token"
    );
    let mut p = params(ih, 3, 10, AnnounceEvent::Started);
    p.device = Some("spoofed".into());
    devs[3].announce(&p).await.unwrap();
    devs[3]
        .announce(&params(ih, 3, 0, AnnounceEvent::Completed))
        .await
        .unwrap();
    let peers = admin.peers(&new.info_hash).await.unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].device.as_deref(), Some("dev-3"));
    assert_eq!(
        devs[3].scrape(&ih).await.unwrap().complete,
        1,
        "a device scrapes with its token"
    );
    // Telemetry is filed under the token's device.
    let report = TelemetryReport {
        device: "spoofed".into(),
        info_hash: new.info_hash,
        verified: true,
        nat: Some("symmetric".into()),
        ..Default::default()
    };
    devs[3].report(&report).await.unwrap();
    let stored = &admin.telemetry(&new.info_hash).await.unwrap()[0];
    assert_eq!(
        (stored.device.as_str(), stored.nat.as_deref()),
        ("dev-3", Some("symmetric"))
    );
    let too_long = TelemetryReport {
        nat: Some("x".repeat(ota_proto::api::MAX_NAT_LEN + 1)),
        ..report.clone()
    };
    assert!(devs[3]
        .report(&too_long)
        .await
        .unwrap_err()
        .to_string()
        .contains("nat is longer"));
    assert!(
        devs[3]
            .telemetry(&new.info_hash)
            .await
            .unwrap_err()
            .to_string()
            .contains("401"),
        "reports are for the admin"
    );
    // Last seen and completions reach the database in the next persistence round.
    let mut dev3 = None;
    for _ in 0..50 {
        dev3 = admin
            .devices()
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.device_id == "dev-3");
        if dev3.as_ref().is_some_and(|d| d.completed == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dev3 = dev3.unwrap();
    assert_eq!(dev3.completed, 1);
    assert!(dev3.last_seen.is_some());
    let metrics = ota_testkit::http::get_text(&format!("{}/metrics", t.url()), ADMIN).await;
    assert!(metrics.contains("ota_tracker_devices_registered"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "ota_tracker_rollout_percent{{info_hash=\"{}\"}} 100",
            new.info_hash
        )),
        "{metrics}"
    );

    // Lowering the wave stops new announces from devices outside it.
    admin.set_rollout(&new.info_hash, 0).await.unwrap();
    let e = devs[3]
        .announce(&params(ih, 3, 0, AnnounceEvent::None))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("rollout wave"), "{e}");
    admin.set_rollout(&new.info_hash, 100).await.unwrap();

    // Revocation: the token stops working at once.
    admin.revoke_device("dev-5").await.unwrap();
    assert!(admin
        .revoke_device("dev-5")
        .await
        .unwrap_err()
        .to_string()
        .contains("404"));
    let e = devs[5]
        .announce(&params(ih, 5, 10, AnnounceEvent::Started))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown or revoked"), "{e}");
    assert!(devs[5].releases().await.unwrap_err().to_string().contains("401"));
    drop(streams);
    t.stop().await;

    // Devices, tokens and waves survive a restart.
    let t = tracker(&db).device_auth(DeviceAuth::Required).start().await;
    let admin = TrackerClient::new(t.url(), Some(ADMIN.into()));
    assert_eq!(admin.devices().await.unwrap().len(), 16);
    let again = TrackerClient::new(t.url(), None).with_device_token(devs[3].device_token().map(String::from));
    assert_eq!(again.release(&new.info_hash).await.unwrap().rollout_percent, 100);
    again.announce(&params(ih, 3, 0, AnnounceEvent::None)).await.unwrap();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_goal_per_release_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    origin_goal_per_release(&format!("sqlite://{}/t.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_goal_per_release_postgres() {
    let pg = ota_testkit::pg::PgCluster::start();
    origin_goal_per_release(&pg.create_db("goal").await).await;
}

/// The origin's cost/speed dial is stored per release: given at
/// registration, changed and cleared through the admin API, kept when the
/// release is registered again without one and across a restart; bad
/// values and callers are refused with a reason.
async fn origin_goal_per_release(db: &str) {
    use ota_proto::origin_goal::OriginGoal;
    let t = start(db).await;
    let admin = TrackerClient::new(t.url(), Some(ADMIN.into()));
    let (mut new, ih) = release();
    assert_eq!(
        admin.register(&new).await.unwrap().origin_goal,
        None,
        "default: the seeder's"
    );
    new.origin_goal = Some(OriginGoal::Cheapest);
    assert_eq!(
        admin.register(&new).await.unwrap().origin_goal,
        Some(OriginGoal::Cheapest)
    );
    new.origin_goal = None;
    assert_eq!(
        admin.register(&new).await.unwrap().origin_goal,
        Some(OriginGoal::Cheapest),
        "re-registering without a goal keeps it"
    );
    let within = OriginGoal::CompleteWithin(Duration::from_secs(600));
    assert_eq!(
        admin.set_origin_goal(&ih, Some(within)).await.unwrap().origin_goal,
        Some(within)
    );
    assert_eq!(admin.release(&ih).await.unwrap().origin_goal, Some(within));
    assert_eq!(admin.releases().await.unwrap()[0].origin_goal, Some(within));

    let url = format!("{}/api/releases/{ih}/origin-goal", t.url());
    let http = reqwest::Client::new();
    let post = |body: &'static str, token: Option<&'static str>| {
        let mut r = http.post(&url).header("content-type", "application/json").body(body);
        if let Some(tok) = token {
            r = r.bearer_auth(tok);
        }
        r.send()
    };
    let bad = post(r#"{"origin_goal":"within:0"}"#, Some(ADMIN)).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert!(
        bad.text().await.unwrap().contains("expected fastest"),
        "the reason is given"
    );
    assert_eq!(
        post(r#"{"origin_goal":"fastest"}"#, None)
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let unknown = format!("{}/api/releases/{}/origin-goal", t.url(), "ab".repeat(20));
    let r = http
        .post(unknown)
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"origin_goal": "fastest"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        admin.release(&ih).await.unwrap().origin_goal,
        Some(within),
        "nothing changed"
    );

    // Kept across a restart; then cleared.
    t.stop().await;
    let t = start(db).await;
    let admin = TrackerClient::new(t.url(), Some(ADMIN.into()));
    assert_eq!(admin.release(&ih).await.unwrap().origin_goal, Some(within));
    assert_eq!(admin.set_origin_goal(&ih, None).await.unwrap().origin_goal, None);
    t.stop().await;
}
