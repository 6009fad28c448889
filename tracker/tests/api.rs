//! The tracker over real HTTP on loopback: announce errors, the swarm, the
//! release API, the push channel and persistence across a restart.

use std::sync::Arc;

use futures::StreamExt;
use ota_tracker::announce::{encode_binary, AnnounceEvent};
use ota_tracker::client::{AnnounceParams, TrackerClient};
use ota_tracker::metainfo::{info_hash, InfoDict};
use ota_tracker::peer_store::StoreConfig;
use ota_tracker::registry::Registry;
use ota_tracker::release::NewRelease;
use ota_tracker::server::{ServerSettings, Tracker};

const ADMIN: &str = "test-admin";

struct Running {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn start(db: &str) -> Running {
    let registry = Registry::open(db).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let tracker: Arc<Tracker> = Tracker::new(
        registry,
        ServerSettings { admin_token: ADMIN.into(), public_url: url.clone(), store: StoreConfig::default() },
    )
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tracker.serve(listener, async {
        let _ = rx.await;
    }));
    Running { url, stop: Some(tx), task }
}

fn release() -> (NewRelease, [u8; 20]) {
    let info = InfoDict { name: "pkg.bin".into(), length: 10, piece_length: 262144, pieces: vec![[7; 20]], private: true }.to_bytes();
    let ih = info_hash(&info);
    (
        NewRelease {
            name: "pkg.bin".into(),
            version: "1.0".into(),
            info_hash: hex::encode(ih),
            size: 10,
            piece_length: 262144,
            sha256: "ab".repeat(32),
            info_hex: hex::encode(&info),
            http_url: None,
            source: "s3://b/pkg.bin".into(),
            etag: None,
            manifest: None,
        },
        ih,
    )
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
        encode_binary(&ih),
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
        let (status, body) = get(&format!("{}/announce?{q}", t.url)).await;
        assert_eq!(status, 200, "a failure is still HTTP 200");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("d14:failure reason"), "{text}");
        assert!(text.contains(expect), "{q:.60} -> {text}");
    }
    let (status, body) = get(&format!("{}/scrape?info_hash=%00", t.url)).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("failure reason"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn releases_swarm_push_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/t.db", dir.path().display());
    let t = start(&db).await;
    let admin = TrackerClient::new(&t.url, Some(ADMIN.into()));
    let anon = TrackerClient::new(&t.url, None);
    let (new, ih) = release();

    let err = anon.register(&new).await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    let mut bad = new.clone();
    bad.info_hash = "00".repeat(20);
    assert!(admin.register(&bad).await.unwrap_err().to_string().contains("does not match"));

    let mut pushes = anon.subscribe().await.unwrap();
    for _ in 0..50 {
        if anon.subscribers().await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    admin.register(&new).await.unwrap();
    assert_eq!(admin.push(&new.info_hash).await.unwrap(), 1);
    let ev = tokio::time::timeout(std::time::Duration::from_secs(5), pushes.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ev.info_hash, new.info_hash);

    // The served .torrent carries the device id and keeps the info hash.
    let torrent = anon.torrent(&new.info_hash, "dev-9").await.unwrap();
    assert!(String::from_utf8_lossy(&torrent).contains("/announce?device=dev%2D9"));
    assert_eq!(info_hash(&ota_tracker::metainfo::info_from_torrent(&torrent).unwrap()), ih);

    // An origin announce and two devices.
    let announce = |n: u8, left: u64, origin: bool| {
        let url = t.url.clone();
        async move {
            let mut q = format!(
                "{url}/announce?info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&left={left}",
                encode_binary(&ih),
                encode_binary(&[n; 20]),
                7000 + n as u16
            );
            if origin {
                q.push_str(&format!("&origin_token={ADMIN}"));
            }
            let (_, body) = get(&q).await;
            ota_tracker::announce::decode_announce(&body).unwrap().1
        }
    };
    assert!(announce(0, 0, true).await.is_empty(), "the origin is given no peers");
    let first = announce(1, 10, false).await;
    assert_eq!(first, vec!["127.0.0.1:7000".parse().unwrap()], "first leecher gets the origin");
    let second = announce(2, 10, false).await;
    assert_eq!(second, vec!["127.0.0.1:7001".parse().unwrap()], "second leecher gets the first, not the origin");
    let completed = AnnounceParams {
        info_hash: ih,
        peer_id: [1; 20],
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
    let metrics = reqwest::get(format!("{}/metrics", t.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ota_tracker_announces_total"), "{metrics}");
    t.stop().await;

    // Releases survive a restart.
    let t = start(&db).await;
    let anon = TrackerClient::new(&t.url, None);
    let after = anon.releases().await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].info_hash, new.info_hash);
    // The swarm is still tracked (registered) after the restart.
    let (_, body) = get(&format!(
        "{}/announce?info_hash={}&peer_id={}&port=7003&uploaded=0&downloaded=0&left=10",
        t.url,
        encode_binary(&ih),
        encode_binary(&[3; 20])
    ))
    .await;
    assert!(ota_tracker::announce::decode_announce(&body).is_ok());
    t.stop().await;
}
