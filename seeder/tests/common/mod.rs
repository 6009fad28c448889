//! Shared setup of the seeder's integration tests: an in-process S3-protocol
//! server (s3s-fs), an in-process tracker, the S3-backed [`Seeder`] and plain
//! librqbit leechers, all on 127.0.0.1.
//!
//! Every test binary uses the same S3 keys, so tests running in parallel
//! threads may set the (process-wide) AWS environment without racing.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use librqbit::{AddTorrent, AddTorrentOptions, ManagedTorrent, Session};

use ota_client::TrackerClient;
use ota_peer::PeerSession;
use ota_proto::metainfo::torrent_bytes;
use ota_proto::InfoHash;
use ota_seeder::origin_store::{self, S3Args, S3Location};
use ota_seeder::publish::{publish, PublishRequest, Published};
use ota_seeder::seeding::{SeedSettings, Seeder};
use ota_testkit::s3_server::S3Server;
use ota_tracker::peer_store::StoreConfig;
use ota_tracker::registry::Registry;
use ota_tracker::device_auth::DeviceAuth;
use ota_tracker::server::{ServerSettings, Tracker};

pub const ADMIN: &str = "seeder-test-admin";
pub const ACCESS_KEY: &str = "seeder-test-access";
pub const SECRET_KEY: &str = "seeder-test-secret-key";
pub const BUCKET: &str = "ota";

pub use ota_testkit::net::free_addr;

/// Deterministic, piece-distinct test bytes; `seed` changes every byte.
pub fn package(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    (0..len)
        .map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Starts the embedded S3 server on `listener` serving `root`, with the shared keys.
pub fn start_s3_server(root: &Path, listener: tokio::net::TcpListener) -> S3Server {
    let server = S3Server::start(root, listener, ACCESS_KEY, SECRET_KEY).unwrap();
    for (k, v) in server.client_env() {
        std::env::set_var(k, v);
    }
    server
}

/// S3 server, tracker and publishing helpers; seeders and leechers are added by the test.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub s3_root: PathBuf,
    pub s3_addr: SocketAddr,
    pub s3_server: Option<S3Server>,
    pub s3: aws_sdk_s3::Client,
    pub tracker_url: String,
    pub client: TrackerClient,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Stack {
    pub async fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let s3_root = dir.path().join("s3");
        let s3_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s3_addr = s3_listener.local_addr().unwrap();
        let s3_server = start_s3_server(&s3_root, s3_listener);
        let s3 = origin_store::client(&S3Args {
            s3_endpoint: Some(s3_server.endpoint()),
            s3_region: "us-east-1".into(),
            s3_path_style: true,
        })
        .await;
        s3.create_bucket().bucket(BUCKET).send().await.unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tracker_url = format!("http://{}", listener.local_addr().unwrap());
        let registry = Registry::open(&format!("sqlite://{}/t.db", dir.path().display())).await.unwrap();
        let store = StoreConfig { interval: Duration::from_secs(1), min_interval: Duration::from_secs(1), ..StoreConfig::default() };
        let tracker: Arc<Tracker> =
            Tracker::new(registry, ServerSettings { admin_token: ADMIN.into(), public_url: tracker_url.clone(), store, device_auth: DeviceAuth::Off })
                .await
                .unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(tracker.serve(listener, async {
            let _ = stop_rx.await;
        }));
        let client = TrackerClient::new(&tracker_url, Some(ADMIN.into()));
        Stack { dir, s3_root, s3_addr, s3_server: Some(s3_server), s3, tracker_url, client, stop_tx: Some(stop_tx), server: Some(server) }
    }

    pub fn location(key: &str) -> S3Location {
        S3Location { bucket: BUCKET.into(), key: key.into() }
    }

    /// Uploads (or overwrites) an object.
    pub async fn put(&self, key: &str, data: &[u8]) {
        self.s3.put_object().bucket(BUCKET).key(key).body(data.to_vec().into()).send().await.unwrap();
    }

    /// Full publish: hash, store `KEY.torrent`, register with the tracker.
    pub async fn publish(&self, key: &str, piece_length: u64, http_base: Option<String>) -> Published {
        publish(
            &self.s3,
            &self.client,
            &PublishRequest {
                location: Self::location(key),
                version: "1".into(),
                piece_length: Some(piece_length),
                tracker_url: self.tracker_url.clone(),
                http_base,
                private: true,
                signing: None,
            },
        )
        .await
        .unwrap()
    }

    /// Starts a seeder; the caller syncs and waits.
    pub async fn seeder(&self, peer_listen: SocketAddr, cache_bytes: u64, read_ahead: u32, upload_limit_bps: Option<u32>) -> Arc<Seeder> {
        let ledger = ota_seeder::ledger::Ledger::open(&format!(
            "sqlite://{}/ledger-{}.db",
            self.dir.path().display(),
            peer_listen.port()
        ))
        .await
        .unwrap();
        Seeder::start(
            self.s3.clone(),
            self.client.clone(),
            ledger,
            SeedSettings {
                peer_listen,
                state_dir: self.dir.path().join(format!("seeder-{}", peer_listen.port())),
                cache_bytes,
                read_ahead,
                upload_limit_bps,
                poll_interval: Duration::from_millis(200),
                origin_token: ADMIN.into(),
                verify_interval: Duration::from_secs(30),
                ledger_interval: Duration::from_secs(1),
                max_s3_requests: 8,
            },
        )
        .await
        .unwrap()
    }

    /// Stops S3 (every open connection is cut).
    pub fn stop_s3(&mut self) {
        drop(self.s3_server.take().expect("S3 server running"));
    }

    /// Restarts S3 on the same address and folder, with the same keys.
    pub async fn restart_s3(&mut self) {
        assert!(self.s3_server.is_none(), "S3 server still running");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.s3_addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {e}; retrying", self.s3_addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot rebind S3 on {}: {e}", self.s3_addr),
            }
        };
        self.s3_server = Some(start_s3_server(&self.s3_root, listener));
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), s).await;
        }
    }
}

/// Syncs the seeder's releases and waits (bounded) until `info_hash` has
/// passed librqbit's initial check. Returns whether it did within `within`.
pub async fn wait_seeding(seeder: &Seeder, info_hash: &InfoHash, within: Duration) -> bool {
    assert_eq!(seeder.sync_releases().await.unwrap(), 1, "seeder added the release");
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if seeder.is_seeding(info_hash) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seeder.is_seeding(info_hash)
}

/// A plain librqbit leecher: no listener, no DHT, no LSD, no persistence.
pub async fn leecher_session(dir: &Path) -> Arc<Session> {
    std::fs::create_dir_all(dir).unwrap();
    PeerSession::leecher().start(dir.to_path_buf()).await.unwrap()
}

/// Adds the release (by its info dictionary) to `session`, talking to
/// `origin` only (trackers disabled), downloading into `folder`.
pub async fn leech(session: &Arc<Session>, info: &[u8], origin: SocketAddr, folder: &Path) -> Arc<ManagedTorrent> {
    session
        .add_torrent(
            AddTorrent::from_bytes(torrent_bytes("http://127.0.0.1:9/announce", info)),
            Some(AddTorrentOptions {
                overwrite: true,
                disable_trackers: true,
                initial_peers: Some(vec![origin]),
                output_folder: Some(folder.display().to_string()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_handle()
        .expect("a live torrent handle")
}

/// Verified bytes a torrent has. librqbit's `progress_bytes` counts checked
/// bytes while a torrent is still initializing, so only a live (or paused)
/// torrent's progress means pieces held.
pub fn have_bytes(s: &librqbit::TorrentStats) -> u64 {
    match s.state {
        librqbit::TorrentStatsState::Live | librqbit::TorrentStatsState::Paused => s.progress_bytes,
        _ => 0,
    }
}
