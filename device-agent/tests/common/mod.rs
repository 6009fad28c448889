//! Shared setup of the agent's integration tests: an in-process
//! S3-protocol server (s3s-fs), in-process trackers, the S3-backed seeder
//! with its HTTP path, and agents, all on 127.0.0.1.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_testkit::s3_server::S3Server;
use ota_device_agent::agent::{Agent, AgentSettings};
use ota_device_agent::download::{Downloader, HttpFallback};
use ota_seeder::origin_store::{self, S3Args, S3Location};
use ota_seeder::publish::{hash_object, PublishRequest};
use ota_seeder::seeding::{SeedSettings, Seeder};
use ota_client::TrackerClient;
use ota_tracker::peer_handout::OriginPolicy;
use ota_tracker::peer_store::StoreConfig;
use ota_tracker::registry::Registry;
use ota_proto::api::NewRelease;
use ota_tracker::server::{ServerSettings, Tracker};

pub const ADMIN: &str = "agent-test-admin";
pub const BUCKET: &str = "ota";

/// A free loopback TCP address (bound then released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Deterministic test bytes; `seed` changes every byte.
pub fn package(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// An in-process tracker on loopback.
pub struct TestTracker {
    pub url: String,
    pub client: TrackerClient,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestTracker {
    /// A tracker with the default origin policy (origin on demand).
    pub async fn start(db_dir: &Path) -> TestTracker {
        Self::start_with(db_dir, OriginPolicy::default()).await
    }

    /// A tracker on 127.0.0.1 with the given origin policy.
    pub async fn start_with(db_dir: &Path, origin_policy: OriginPolicy) -> TestTracker {
        Self::start_on(db_dir, std::net::Ipv4Addr::LOCALHOST.into(), origin_policy).await
    }

    /// A tracker listening on `ip` (any free port) with the given origin
    /// policy: 1 s announce interval, device tokens off.
    pub async fn start_on(db_dir: &Path, ip: std::net::IpAddr, origin_policy: OriginPolicy) -> TestTracker {
        std::fs::create_dir_all(db_dir).unwrap();
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let registry = Registry::open(&format!("sqlite://{}/t.db", db_dir.display())).await.unwrap();
        let store = StoreConfig {
            interval: Duration::from_secs(1),
            min_interval: Duration::from_secs(1),
            origin_policy,
            ..StoreConfig::default()
        };
        let tracker: Arc<Tracker> =
            Tracker::new(registry, ServerSettings { admin_token: ADMIN.into(), public_url: url.clone(), store, device_auth: ota_tracker::device_auth::DeviceAuth::Off }).await.unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(tracker.serve(listener, async {
            let _ = stop_rx.await;
        }));
        let client = TrackerClient::new(&url, Some(ADMIN.into()));
        TestTracker { url, client, stop_tx: Some(stop_tx), server: Some(server) }
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

/// S3 server and a tracker.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub s3_server: S3Server,
    pub s3: aws_sdk_s3::Client,
    pub tracker: TestTracker,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(OriginPolicy::default()).await
    }

    /// S3 server and a tracker with the given origin policy.
    pub async fn start_with(origin_policy: OriginPolicy) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let s3_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s3_server = S3Server::start(&dir.path().join("s3"), s3_listener, "agent-access", "agent-secret-key").unwrap();
        for (k, v) in s3_server.client_env() {
            std::env::set_var(k, v);
        }
        let s3 =
            origin_store::client(&S3Args { s3_endpoint: Some(s3_server.endpoint()), s3_region: "us-east-1".into(), s3_path_style: true })
                .await;
        s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        let tracker = TestTracker::start_with(&dir.path().join("tracker"), origin_policy).await;
        Stack { dir, s3_server, s3, tracker }
    }

    /// Uploads `data` as `key`, hashes it (piece length `piece_length`) and
    /// registers it with the tracker; returns the registered release.
    pub async fn publish(&self, key: &str, data: &[u8], piece_length: u64, http_base: Option<String>) -> NewRelease {
        self.s3.put_object().bucket(BUCKET).key(key).body(data.to_vec().into()).send().await.unwrap();
        let req = PublishRequest {
            location: S3Location { bucket: BUCKET.into(), key: key.into() },
            version: "1".into(),
            piece_length: Some(piece_length),
            tracker_url: self.tracker.url.clone(),
            http_base,
            private: true,
            signing: None,
        };
        let (new, _info) = hash_object(&self.s3, &req).await.unwrap();
        self.tracker.client.register(&new).await.unwrap();
        new
    }

    /// Starts the S3-backed seeder, syncs it and waits until it seeds every
    /// registered release and the tracker lists it as origin.
    pub async fn seeder(&self, upload_limit_bps: Option<u32>) -> Arc<Seeder> {
        let peer_listen = free_addr();
        let ledger =
            ota_seeder::ledger::Ledger::open(&format!("sqlite://{}/ledger-{}.db", self.dir.path().display(), peer_listen.port()))
                .await
                .unwrap();
        let seeder = Seeder::start(
            self.s3.clone(),
            self.tracker.client.clone(),
            ledger,
            SeedSettings {
                peer_listen,
                state_dir: self.dir.path().join(format!("seeder-{}", peer_listen.port())),
                cache_bytes: 8 << 20,
                read_ahead: 1,
                upload_limit_bps,
                poll_interval: Duration::from_millis(200),
                origin_token: ADMIN.into(),
                verify_interval: Duration::from_secs(30),
                ledger_interval: Duration::from_secs(1),
                max_s3_requests: 4,
            },
        )
        .await
        .unwrap();
        seeder.sync_releases().await.unwrap();
        seeder
    }

    /// Serves the seeder's HTTP path on `listener`.
    pub fn serve_http(seeder: Arc<Seeder>, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let app = ota_seeder::http_path::router(seeder).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
    }
}

/// Waits (bounded by `within`) until the tracker lists `n` origin peers for `info_hash`.
pub async fn wait_origin(client: &TrackerClient, info_hash: &str, n: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if client.release(info_hash).await.unwrap().origin_peers.len() == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Agent settings for tests: no catch-up, no polling, no manifest key.
pub fn settings(device: &str, state: &Path) -> AgentSettings {
    AgentSettings {
        device_id: device.into(),
        state_dir: state.to_path_buf(),
        download_timeout: Duration::from_secs(60),
        catch_up: false,
        progress_bar: false,
        report_interval: Duration::from_secs(1),
        manifest_key: None,
        channel: "stable".into(),
        model: "gw-100".into(),
        poll_interval: None,
        policy: Default::default(),
        install_hook: None,
    }
}

/// An agent talking to `tracker_url`, with the HTTP fallback after `fallback_after` if set.
pub async fn agent(tracker_url: &str, device: &str, state: &Path, fallback_after: Option<Duration>) -> Arc<Agent> {
    let downloader = Downloader::start(state, free_addr())
        .await
        .unwrap()
        .with_http_fallback(fallback_after.map(|after| HttpFallback { after, device: device.into() }));
    Agent::new(TrackerClient::new(tracker_url, None), downloader, settings(device, state))
}
