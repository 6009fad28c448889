//! A whole origin stack on 127.0.0.1 for integration tests (feature
//! `stack`): the embedded S3 server with one bucket ([`TestS3`]), an
//! in-process tracker ([`TestTracker`]), publishing, S3-backed seeders, and
//! waiting helpers.
//! Leechers come from [`crate::leecher`].
//!
//! ```no_run
//! # async fn example() {
//! use ota_seeder::seeding::SeedSettings;
//! use ota_testkit::leecher::{leech, leecher_session};
//! use ota_testkit::package;
//! use ota_testkit::stack::Stack;
//!
//! let stack = Stack::start().await;
//! let published = stack.publish("fw/update.bin", &package(700_000, 1), 256 * 1024).await;
//! let settings = SeedSettings { read_ahead: 0, ..stack.seed_settings() };
//! let peer = settings.peer_listen;
//! let seeder = stack.start_seeding(settings, &published.release.info_hash).await;
//! let session = leecher_session(&stack.dir.path().join("leecher")).await;
//! let torrent = leech(&session, &published.info, peer, &stack.dir.path().join("out")).await;
//! torrent.wait_until_completed().await.unwrap();
//! session.stop().await;
//! seeder.stop().await;
//! stack.shutdown().await;
//! # }
//! ```
//!
//! Everything panics on failure: this is test setup. Every stack uses the
//! same S3 keys ([`ACCESS_KEY`], [`SECRET_KEY`]) and sets them in the
//! process environment (the AWS credential chain reads them there), so
//! tests running in parallel threads of one test binary do not race.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_client::TrackerClient;
use ota_proto::InfoHash;
use ota_seeder::http_path::HttpSettings;
use ota_seeder::ledger::Ledger;
use ota_seeder::origin_store::{self, S3Args, S3Location};
use ota_seeder::publish::{publish, PublishRequest, Published};
use ota_seeder::seeding::{SeedSettings, Seeder};

use crate::net::free_addr;
use crate::s3_server::S3Server;
use crate::tracker::{TestTracker, DEFAULT_ADMIN, DEFAULT_ORIGIN};

/// The tracker's admin token.
pub const ADMIN: &str = DEFAULT_ADMIN;

/// The seeders' origin token (the tracker's `--origin-token`).
pub const ORIGIN: &str = DEFAULT_ORIGIN;
/// S3 access key of every test stack.
pub const ACCESS_KEY: &str = "testkit-access";
/// S3 secret key of every test stack.
pub const SECRET_KEY: &str = "testkit-secret-key";
/// The bucket every stack creates and publishes from.
pub const BUCKET: &str = "ota";

/// The embedded S3 server with bucket [`BUCKET`] and an aws-sdk-s3 client
/// of it, which can be stopped and restarted on the same address (an S3
/// outage).
pub struct TestS3 {
    /// The S3 client (path-style, this server's endpoint).
    pub client: aws_sdk_s3::Client,
    root: PathBuf,
    addr: SocketAddr,
    server: Option<S3Server>,
}

impl TestS3 {
    /// Serves the folder `root` on a free loopback port with the shared
    /// keys, sets the keys in the process environment and creates
    /// [`BUCKET`].
    pub async fn start(root: &Path) -> TestS3 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the S3 server");
        let addr = listener.local_addr().expect("S3 server address");
        let server = Self::serve(root, listener);
        let client = origin_store::client(&S3Args {
            s3_endpoint: Some(server.endpoint()),
            s3_region: "us-east-1".into(),
            s3_path_style: true,
        })
        .await;
        client
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("create the test bucket");
        TestS3 {
            client,
            root: root.to_path_buf(),
            addr,
            server: Some(server),
        }
    }

    fn serve(root: &Path, listener: tokio::net::TcpListener) -> S3Server {
        let server = S3Server::start(root, listener, ACCESS_KEY, SECRET_KEY).expect("start the S3 server");
        for (k, v) in server.client_env() {
            std::env::set_var(k, v);
        }
        server
    }

    /// The endpoint URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Environment for a child process's S3 client (keys, endpoint,
    /// path-style, no instance metadata).
    pub fn client_env(&self) -> Vec<(String, String)> {
        self.server.as_ref().expect("S3 server running").client_env()
    }

    /// Uploads (or overwrites) `key` in [`BUCKET`].
    pub async fn put(&self, key: &str, data: &[u8]) {
        self.client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(data.to_vec().into())
            .send()
            .await
            .expect("put object");
    }

    /// Stops the server; every open connection is cut.
    pub fn stop(&mut self) {
        drop(self.server.take().expect("S3 server running"));
    }

    /// Starts the server again on the same address and folder (retrying the
    /// bind for up to 10 s).
    pub async fn restart(&mut self) {
        assert!(self.server.is_none(), "S3 server still running");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {e}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot rebind S3 on {}: {e}", self.addr),
            }
        };
        self.server = Some(Self::serve(&self.root, listener));
    }
}

/// S3, a tracker and a temporary folder; seeders and leechers are added by
/// the test.
pub struct Stack {
    /// Temporary folder of everything (S3 objects, databases, seeder state);
    /// removed when the stack is dropped.
    pub dir: tempfile::TempDir,
    /// The S3 server and its client (`s3.client`, `s3.endpoint()`).
    pub s3: TestS3,
    /// The tracker (`tracker.url()`, `tracker.client()` with the admin
    /// token, `tracker.admin_token()`): 1 s announce interval, device tokens
    /// off, registry under [`Self::dir`].
    pub tracker: TestTracker,
}

impl Stack {
    /// Starts S3 (bucket [`BUCKET`]) and a tracker (admin token [`ADMIN`], origin token [`ORIGIN`])
    /// under a new temporary folder.
    pub async fn start() -> Stack {
        let dir = tempfile::tempdir().expect("temporary folder");
        let s3 = TestS3::start(&dir.path().join("s3")).await;
        let tracker = TestTracker::builder()
            .db_dir(dir.path().join("tracker"))
            .admin_token(ADMIN)
            .announce_interval(Duration::from_secs(1))
            .start()
            .await;
        Stack { dir, s3, tracker }
    }

    /// `s3://ota/KEY`.
    pub fn location(key: &str) -> S3Location {
        S3Location {
            bucket: BUCKET.into(),
            key: key.into(),
        }
    }

    /// Uploads (or overwrites) an object.
    pub async fn put(&self, key: &str, data: &[u8]) {
        self.s3.put(key, data).await;
    }

    /// What [`Self::publish`] publishes: `s3://ota/KEY`, version `1`,
    /// `piece_length`, announce URL this stack's tracker, private (BEP 27),
    /// no HTTP path, unsigned. Change fields for other publishes.
    pub fn publish_request(&self, key: &str, piece_length: u64) -> PublishRequest {
        PublishRequest {
            location: Self::location(key),
            version: "1".into(),
            piece_length: Some(piece_length),
            tracker_url: self.tracker.url().to_string(),
            http_base: None,
            private: true,
            signing: None,
        }
    }

    /// Uploads `data` as `key` and publishes it ([`Self::publish_request`]):
    /// hashed, `KEY.torrent` stored beside it, registered with the tracker.
    pub async fn publish(&self, key: &str, data: &[u8], piece_length: u64) -> Published {
        self.publish_with(data, &self.publish_request(key, piece_length)).await
    }

    /// Uploads `data` to `req.location` and publishes it with `req`.
    pub async fn publish_with(&self, data: &[u8], req: &PublishRequest) -> Published {
        self.s3
            .client
            .put_object()
            .bucket(&req.location.bucket)
            .key(&req.location.key)
            .body(data.to_vec().into())
            .send()
            .await
            .expect("put object");
        publish(&self.s3.client, self.tracker.client(), req)
            .await
            .expect("publish")
    }

    /// [`seed_settings`] for a seeder of this stack: its folder under
    /// [`Self::dir`], origin token [`ORIGIN`].
    pub fn seed_settings(&self) -> SeedSettings {
        let s = seed_settings(PathBuf::new(), ORIGIN);
        SeedSettings {
            state_dir: self.dir.path().join(format!("seeder-{}", s.peer_listen.port())),
            ..s
        }
    }

    /// Starts a seeder of this stack's S3 and tracker ([`start_seeder`]).
    pub async fn start_seeder(&self, settings: SeedSettings) -> Arc<Seeder> {
        start_seeder(&self.s3.client, self.tracker.client(), settings).await
    }

    /// Starts a seeder ([`Self::start_seeder`]), syncs it once and waits
    /// up to 30 s until `info_hash` has passed its initial check.
    ///
    /// Panics when the sync fails or the release is not seeding by then.
    pub async fn start_seeding(&self, settings: SeedSettings, info_hash: &InfoHash) -> Arc<Seeder> {
        let seeder = self.start_seeder(settings).await;
        seeder.sync_releases().await.expect("sync the seeder's releases");
        assert!(
            wait_seeding(&seeder, info_hash, Duration::from_secs(30)).await,
            "seeder did not pass its initial check of {info_hash} within 30 s: {:?}",
            seeder.egress().await
        );
        seeder
    }

    /// Stops the tracker gracefully ([`TestTracker::stop`]); S3 stops when
    /// the stack is dropped.
    pub async fn shutdown(self) {
        self.tracker.stop().await;
    }
}

/// Seeder settings for tests: a free loopback peer address, the session
/// folder `state_dir`, announcing with `origin_token`; an 8 MiB piece cache,
/// 1 piece of read-ahead, no upload cap, 200 ms release polling, 30 s source
/// checks, 1 s ledger samples, at most 8 concurrent S3 GETs. Change fields
/// with struct update syntax.
pub fn seed_settings(state_dir: PathBuf, origin_token: &str) -> SeedSettings {
    SeedSettings {
        cache_bytes: 8 << 20,
        read_ahead: 1,
        poll_interval: Duration::from_millis(200),
        max_s3_requests: 8,
        ..SeedSettings::new(free_addr(), state_dir, origin_token)
    }
}

/// Starts a seeder with its egress ledger at `STATE_DIR/ledger.db`. The
/// caller syncs it (`sync_releases`) or runs its loops, and stops it.
pub async fn start_seeder(s3: &aws_sdk_s3::Client, tracker: &TrackerClient, settings: SeedSettings) -> Arc<Seeder> {
    std::fs::create_dir_all(&settings.state_dir).expect("seeder folder");
    let ledger = Ledger::open(&format!("sqlite://{}/ledger.db", settings.state_dir.display()))
        .await
        .expect("open the ledger");
    Seeder::start(s3.clone(), tracker.clone(), ledger, settings)
        .await
        .expect("start the seeder")
}

/// Serves the seeder's HTTP path (package, `?torrent`, egress, metrics) on
/// `listener`, with client addresses, until the task is aborted: API token
/// [`ADMIN`], packages checked with the tracker ([`serve_http_with`]).
pub fn serve_http(seeder: Arc<Seeder>, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    serve_http_with(seeder, listener, HttpSettings::new(Some(ADMIN.into())))
}

/// [`serve_http`] with other HTTP settings (API token, package audience).
pub fn serve_http_with(
    seeder: Arc<Seeder>,
    listener: tokio::net::TcpListener,
    settings: HttpSettings,
) -> tokio::task::JoinHandle<()> {
    let app = ota_seeder::http_path::router(seeder, settings).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// Waits (bounded by `within`, polling every 200 ms: the ledger is sampled
/// every second) until the seeder's egress shows at least `bytes` sent over
/// BitTorrent, all releases together; returns the last sum, bytes.
pub async fn wait_served(seeder: &Seeder, bytes: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let served: u64 = seeder
            .egress()
            .await
            .map(|e| e.iter().map(|r| r.bittorrent_bytes).sum())
            .unwrap_or(0);
        if served >= bytes || Instant::now() > deadline {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (bounded by `within`, polling every 50 ms) until `info_hash` has
/// passed the seeder's initial check; returns whether it did. The seeder
/// must have been synced.
pub async fn wait_seeding(seeder: &Seeder, info_hash: &InfoHash, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if seeder.is_seeding(info_hash) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seeder.is_seeding(info_hash)
}

/// Waits (bounded by `within`, polling every 100 ms) until the tracker lists
/// exactly `n` origin peers for `info_hash`; returns whether it did.
pub async fn wait_origin(tracker: &TrackerClient, info_hash: &InfoHash, n: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if tracker
            .release(info_hash)
            .await
            .is_ok_and(|r| r.origin_peers.len() == n)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
