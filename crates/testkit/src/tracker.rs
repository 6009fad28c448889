//! An in-process `ota-tracker` on loopback for tests and benches (feature
//! `tracker`): one copy of "open a registry, build a [`Tracker`], bind,
//! serve until told to stop".
//!
//! ```no_run
//! # async fn example() {
//! use ota_testkit::tracker::TestTracker;
//! use ota_tracker::{DeviceAuth, OriginPolicy};
//!
//! // Defaults: a SQLite registry in a fresh temporary folder, a free port
//! // on 127.0.0.1, admin token DEFAULT_ADMIN, origin token DEFAULT_ORIGIN,
//! // device tokens off, the production store settings.
//! let t = TestTracker::start().await;
//! t.client().releases().await.unwrap();
//!
//! let strict = TestTracker::builder()
//!     .device_auth(DeviceAuth::Required)
//!     .origin_policy(OriginPolicy::Always)
//!     .announce_interval(std::time::Duration::from_secs(1))
//!     .start()
//!     .await;
//! strict.stop().await;
//! t.stop().await;
//! # }
//! ```
//!
//! Everything panics on failure: this is test setup.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_client::TrackerClient;
pub use ota_tracker::connectability::ConnectabilityConfig;
use ota_tracker::{DeviceAuth, OriginPolicy, Registry, StoreConfig, Tracker, TrackerSettings};

/// The admin token unless [`TestTrackerBuilder::admin_token`] sets another
/// (at least 16 characters, as the tracker requires).
pub const DEFAULT_ADMIN: &str = "testkit-admin-token";

/// The origin's announce token unless [`TestTrackerBuilder::origin_token`]
/// sets another.
pub const DEFAULT_ORIGIN: &str = "testkit-origin-token";

/// How long [`TestTracker::stop`] waits for the graceful shutdown (which
/// itself gives open requests 2 s, then writes the live peers).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a [`TestTracker`] keeps its registry.
#[derive(Debug, Clone)]
enum Database {
    /// `sqlite://DIR/t.db` in a new temporary folder owned by the tracker.
    Temporary,
    /// `sqlite://DIR/t.db` in this folder (created if missing).
    Dir(PathBuf),
    /// This database URL (SQLite or PostgreSQL).
    Url(String),
}

/// Where a [`TestTracker`] listens.
#[derive(Debug, Clone, Copy)]
enum Listen {
    /// A free port on this address.
    AnyPort(IpAddr),
    /// Exactly this address (e.g. the one a stopped tracker had).
    Addr(SocketAddr),
}

/// Options of a [`TestTracker`]; [`TestTracker::builder`] makes one.
#[derive(Debug, Clone)]
pub struct TestTrackerBuilder {
    database: Database,
    listen: Listen,
    admin_token: String,
    origin_token: String,
    trusted_proxies: Vec<IpAddr>,
    device_auth: DeviceAuth,
    store: StoreConfig,
    connectability: ConnectabilityConfig,
    replica_id: Option<String>,
}

impl Default for TestTrackerBuilder {
    fn default() -> Self {
        TestTrackerBuilder {
            database: Database::Temporary,
            listen: Listen::AnyPort(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            admin_token: DEFAULT_ADMIN.into(),
            origin_token: DEFAULT_ORIGIN.into(),
            trusted_proxies: Vec::new(),
            device_auth: DeviceAuth::Off,
            store: StoreConfig::default(),
            connectability: ConnectabilityConfig::default(),
            replica_id: None,
        }
    }
}

impl TestTrackerBuilder {
    /// Keeps the registry at `sqlite://DIR/t.db` in folder `dir` (created
    /// if missing), so that a later tracker on the same folder finds it.
    /// Default: a new temporary folder, removed with the tracker.
    pub fn db_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.database = Database::Dir(dir.as_ref().to_path_buf());
        self
    }

    /// Uses the database at `url` (`sqlite://…` or `postgres://…`, see
    /// [`Registry::open`]).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database = Database::Url(url.into());
        self
    }

    /// Listens on a free port of `ip` (default 127.0.0.1).
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.listen = Listen::AnyPort(ip);
        self
    }

    /// Listens on exactly `addr` (retrying the bind for up to 5 s, for an
    /// address a stopped tracker just released).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Listen::Addr(addr);
        self
    }

    /// The admin token (default [`DEFAULT_ADMIN`]).
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = token.into();
        self
    }

    /// The origin's announce token (default [`DEFAULT_ORIGIN`]).
    pub fn origin_token(mut self, token: impl Into<String>) -> Self {
        self.origin_token = token.into();
        self
    }

    /// Connecting addresses whose announces' `ip=` is believed (default
    /// none).
    pub fn trusted_proxies(mut self, proxies: Vec<IpAddr>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Connectability checks (default: on, as in production).
    pub fn connectability(mut self, connectability: ConnectabilityConfig) -> Self {
        self.connectability = connectability;
        self
    }

    /// Whether devices need their token (default [`DeviceAuth::Off`]).
    pub fn device_auth(mut self, device_auth: DeviceAuth) -> Self {
        self.device_auth = device_auth;
        self
    }

    /// All peer store settings at once (default [`StoreConfig::default`]);
    /// the setters below change one of them.
    pub fn store(mut self, store: StoreConfig) -> Self {
        self.store = store;
        self
    }

    /// The origin hand-out policy.
    pub fn origin_policy(mut self, policy: OriginPolicy) -> Self {
        self.store.origin_policy = policy;
        self
    }

    /// The announce interval handed to clients, as both `interval` and
    /// `min interval` (whole seconds on the wire).
    pub fn announce_interval(mut self, interval: Duration) -> Self {
        self.store.interval = interval;
        self.store.min_interval = interval;
        self
    }

    /// How often live peers are written to the database.
    pub fn persist_interval(mut self, interval: Duration) -> Self {
        self.store.persist_interval = interval;
        self
    }

    /// Runs as tracker replica `id` on a shared database (`--replica-id`;
    /// default: a single tracker).
    pub fn replica_id(mut self, id: impl Into<String>) -> Self {
        self.replica_id = Some(id.into());
        self
    }

    /// After how long a silent peer is dropped.
    pub fn peer_timeout(mut self, timeout: Duration) -> Self {
        self.store.peer_timeout = timeout;
        self
    }

    /// Opens the registry, binds and starts serving.
    ///
    /// Panics when the database cannot be opened, the address bound, or
    /// the tokens are refused (shorter than 16 characters, or equal).
    pub async fn start(self) -> TestTracker {
        let (dir, url) = match self.database {
            Database::Temporary => {
                let dir = tempfile::Builder::new()
                    .prefix("ota-test-tracker-")
                    .tempdir()
                    .expect("temporary folder");
                let url = sqlite_url(dir.path());
                (Some(dir), url)
            }
            Database::Dir(d) => {
                std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
                (None, sqlite_url(&d))
            }
            Database::Url(url) => (None, url),
        };
        let mut registry = Registry::open(&url)
            .await
            .unwrap_or_else(|e| panic!("tracker registry {url}: {e:#}"));
        if let Some(id) = &self.replica_id {
            registry = registry.with_replica(id);
        }
        let listener = bind(self.listen).await;
        let addr = listener.local_addr().expect("tracker address");
        let url = format!("http://{addr}");
        let settings = TrackerSettings {
            admin_token: self.admin_token.clone(),
            origin_token: Some(self.origin_token.clone()),
            trusted_proxies: self.trusted_proxies,
            public_url: url.clone(),
            store: self.store,
            device_auth: self.device_auth,
            connectability: self.connectability,
        };
        let tracker = Tracker::new(registry, settings)
            .await
            .unwrap_or_else(|e| panic!("start the tracker: {e:#}"));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tracker.clone().serve(listener, async {
            let _ = stop_rx.await;
        }));
        let client = TrackerClient::new(&url, Some(self.admin_token.clone()));
        TestTracker {
            url,
            addr,
            admin_token: self.admin_token,
            origin_token: self.origin_token,
            client,
            tracker,
            stop_tx: Some(stop_tx),
            task: Some(task),
            _dir: dir,
        }
    }
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/t.db", dir.display())
}

async fn bind(listen: Listen) -> tokio::net::TcpListener {
    match listen {
        Listen::AnyPort(ip) => tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .unwrap_or_else(|e| panic!("cannot bind a tracker on {ip}: {e}")),
        Listen::Addr(addr) => {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => return l,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("binding the tracker on {addr}: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("cannot bind a tracker on {addr}: {e}"),
                }
            }
        }
    }
}

/// A tracker serving in this process until [`TestTracker::stop`] (or, at
/// once and without the final write, until dropped).
#[derive(Debug)]
pub struct TestTracker {
    url: String,
    addr: SocketAddr,
    admin_token: String,
    origin_token: String,
    client: TrackerClient,
    tracker: Arc<Tracker>,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestTracker {
    /// Options, starting from the defaults (see the module docs).
    pub fn builder() -> TestTrackerBuilder {
        TestTrackerBuilder::default()
    }

    /// A tracker with the default options.
    pub async fn start() -> TestTracker {
        Self::builder().start().await
    }

    /// Its base URL, `http://IP:PORT` (also its public URL in `.torrent`
    /// files).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its admin token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The token an origin seeder announces with (`origin_token=`).
    pub fn origin_token(&self) -> &str {
        &self.origin_token
    }

    /// A client holding the admin token.
    pub fn client(&self) -> &TrackerClient {
        &self.client
    }

    /// A client without a token (anonymous; refused unless device
    /// authentication is off).
    pub fn anonymous_client(&self) -> TrackerClient {
        TrackerClient::new(&self.url, None)
    }

    /// Registers device `device_id` (channel, model) and returns a client
    /// acting as it (its token on API calls and announces).
    pub async fn device_client(&self, device_id: &str, channel: &str, model: &str) -> TrackerClient {
        let token = self
            .client
            .register_device(device_id, channel, model)
            .await
            .unwrap_or_else(|e| panic!("register device {device_id}: {e:#}"));
        self.anonymous_client().with_device_token(Some(token))
    }

    /// The tracker itself, to call its methods without HTTP.
    pub fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }

    /// Stops gracefully: open requests get 2 s, then the live peers are
    /// written one last time.
    ///
    /// Panics when the server failed, or did not stop within
    /// [`STOP_TIMEOUT`].
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("tracker task");
        match tokio::time::timeout(STOP_TIMEOUT, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("tracker {} failed: {e:#}", self.url),
            Ok(Err(e)) => panic!("tracker {} panicked: {e}", self.url),
            Err(_) => panic!("tracker {} did not stop within {STOP_TIMEOUT:?}", self.url),
        }
    }
}

impl Drop for TestTracker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
