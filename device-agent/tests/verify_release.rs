//! The agent against a real tracker, a real S3-protocol server and the
//! S3-backed seeder, all in this process on loopback: a good release is
//! installed byte for byte; a release whose manifest SHA-256 does not match
//! the package is refused and no copy is kept.

use std::sync::Arc;
use std::time::Duration;

use ota_testkit::s3_server::S3Server;
use ota_device_agent::agent::{Agent, AgentSettings};
use ota_device_agent::download::Downloader;
use ota_seeder::origin_store::{self, S3Args, S3Location};
use ota_seeder::publish::{hash_object, PublishRequest};
use ota_seeder::seeding::{SeedSettings, Seeder};
use ota_client::TrackerClient;
use ota_tracker::peer_store::StoreConfig;
use ota_tracker::registry::Registry;
use ota_tracker::device_auth::DeviceAuth;
use ota_tracker::server::{ServerSettings, Tracker};

const ADMIN: &str = "agent-test-admin";

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn installs_a_good_release_and_refuses_a_tampered_one() {
    let dir = tempfile::tempdir().unwrap();
    // Real S3 protocol server.
    let s3_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s3_server = S3Server::start(&dir.path().join("s3"), s3_listener, "agent-access", "agent-secret-key").unwrap();
    for (k, v) in s3_server.client_env() {
        std::env::set_var(k, v);
    }
    let s3 = origin_store::client(&S3Args { s3_endpoint: Some(s3_server.endpoint()), s3_region: "us-east-1".into(), s3_path_style: true }).await;
    s3.create_bucket().bucket("ota").send().await.unwrap();

    // Tracker.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let registry = Registry::open(&format!("sqlite://{}/t.db", dir.path().display())).await.unwrap();
    let store = StoreConfig { interval: Duration::from_secs(1), min_interval: Duration::from_secs(1), ..StoreConfig::default() };
    let tracker: Arc<Tracker> = Tracker::new(registry, ServerSettings { admin_token: ADMIN.into(), public_url: url.clone(), store, device_auth: DeviceAuth::Off }).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tracker.serve(listener, async {
        let _ = stop_rx.await;
    }));
    let client = TrackerClient::new(&url, Some(ADMIN.into()));

    // Four packages: one published honestly; one whose signed manifest gives
    // a SHA-256 the package does not have; one signed with another key; one
    // whose manifest text was altered after signing.
    let maker = ota_proto::manifest::generate_signing_key();
    let stranger = ota_proto::manifest::generate_signing_key();
    let good: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    let bad: Vec<u8> = (0..600_000u32).map(|i| (i % 241) as u8).collect();
    let other: Vec<u8> = (0..300_000u32).map(|i| (i % 239) as u8).collect();
    let altered: Vec<u8> = (0..200_000u32).map(|i| (i % 233) as u8).collect();
    let same_version: Vec<u8> = (0..100_000u32).map(|i| (i % 229) as u8).collect();
    let mut hashes = Vec::new();
    for (key, data, case) in [("good.bin", &good, 0), ("tampered.bin", &bad, 1), ("stranger.bin", &other, 2), ("altered.bin", &altered, 3), ("again/good.bin", &same_version, 4)] {
        s3.put_object().bucket("ota").key(key).body(data.clone().into()).send().await.unwrap();
        let req = PublishRequest {
            location: S3Location { bucket: "ota".into(), key: key.into() },
            version: "1".into(),
            piece_length: Some(262_144),
            tracker_url: url.clone(),
            http_base: None,
            private: true,
            signing: Some(ota_seeder::publish::ManifestSigning {
                key: if case == 2 { stranger.clone() } else { maker.clone() },
                channel: "stable".into(),
                models: vec!["gw-100".into()],
            }),
        };
        let (mut new, _info) = hash_object(&s3, &req).await.unwrap();
        let signed = new.manifest.clone().unwrap();
        if case == 1 {
            let mut m: ota_proto::manifest::Manifest = serde_json::from_str(&signed.manifest).unwrap();
            m.sha256 = "0".repeat(64);
            new.sha256 = m.sha256.clone();
            new.manifest = Some(ota_proto::manifest::sign(&m, &maker));
        }
        if case == 3 {
            let text = signed.manifest.replace("\"version\":\"1\"", "\"version\":\"9\"");
            assert_ne!(text, signed.manifest);
            new.manifest = Some(ota_proto::manifest::SignedManifest { manifest: text, ..signed });
        }
        client.register(&new).await.unwrap();
        hashes.push(new.info_hash);
    }

    // The S3-backed seeder.
    let ledger = ota_seeder::ledger::Ledger::open(&format!("sqlite://{}/ledger.db", dir.path().display())).await.unwrap();
    let seeder = Seeder::start(
        s3.clone(),
        client.clone(),
        ledger,
        SeedSettings {
            peer_listen: free_addr(),
            state_dir: dir.path().join("seeder"),
            cache_bytes: 8 << 20,
            read_ahead: 1,
            upload_limit_bps: None,
            poll_interval: Duration::from_millis(200),
            origin_token: ADMIN.into(),
            verify_interval: Duration::from_secs(30),
            ledger_interval: Duration::from_secs(1),
            max_s3_requests: 4,
        },
    )
    .await
    .unwrap();
    assert_eq!(seeder.sync_releases().await.unwrap(), 5);
    for ih in &hashes {
        for _ in 0..100 {
            if client.release(ih).await.unwrap().origin_peers.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(client.release(ih).await.unwrap().origin_peers.len(), 1, "origin announced {ih}");
    }

    // The agent.
    let state = dir.path().join("agent");
    let downloader = Downloader::start(&state, free_addr()).await.unwrap();
    let agent = Agent::new(
        TrackerClient::new(&url, None),
        downloader,
        AgentSettings {
            device_id: "dev-test".into(),
            state_dir: state.clone(),
            download_timeout: Duration::from_secs(60),
            catch_up: false,
            progress_bar: false,
            report_interval: Duration::from_secs(1),
            manifest_key: Some(maker.verifying_key()),
            channel: "stable".into(),
            model: "gw-100".into(),
            poll_interval: None,
            policy: Default::default(),
            install_hook: None,
        },
    );
    let installed = agent.handle_release(&hashes[0]).await.unwrap();
    assert_eq!(std::fs::read(&installed.path).unwrap(), good, "byte-identical package");

    let err = format!("{:#}", agent.handle_release(&hashes[1]).await.unwrap_err());
    assert!(err.contains("SHA-256 mismatch"), "{err}");
    assert!(!state.join("downloads").join(&hashes[1]).exists(), "no copy of the refused package is kept");
    // Another good.bin at the installed version is not an upgrade.
    let err = format!("{:#}", agent.handle_release(&hashes[4]).await.unwrap_err());
    assert!(err.contains("version 1 is not newer than the installed 1"), "{err}");
    assert!(!state.join("downloads").join(&hashes[4]).exists());
    for ih in &hashes[2..4] {
        let err = format!("{:#}", agent.handle_release(ih).await.unwrap_err());
        assert!(err.contains("manifest rejected: manifest signature does not verify"), "{err}");
        assert!(!state.join("downloads").join(ih).exists(), "a rejected manifest is never downloaded");
        let r = &client.telemetry(ih).await.unwrap()[0];
        assert!(r.error.as_deref().unwrap_or("").contains("manifest rejected"), "{r:?}");
    }
    assert_eq!(agent.installed().len(), 1);
    assert!(agent.installed().contains_key(&hashes[0]));

    let reports = client.telemetry(&hashes[1]).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert!(!reports[0].verified);
    assert!(reports[0].error.as_deref().unwrap_or("").contains("SHA-256 mismatch"));
    let good_report = &client.telemetry(&hashes[0]).await.unwrap()[0];
    assert!(good_report.verified);
    assert_eq!(good_report.bytes_from_origin + good_report.bytes_from_peers, good.len() as u64);
    assert_eq!(good_report.bytes_from_origin, good.len() as u64, "only the origin was there to serve it");

    // The origin's ledger holds what it sent: the good package once, over BitTorrent.
    let egress = seeder.egress().await.unwrap();
    let good_egress = egress.iter().find(|e| e.info_hash == hashes[0]).unwrap();
    assert_eq!(good_egress.bittorrent_bytes, good.len() as u64);
    assert_eq!(good_egress.http_bytes, 0);

    agent.stop().await;
    seeder.stop().await;
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
