//! Shared setup of the agent's integration tests, on ota-testkit: its
//! embedded S3 server, its in-process tracker (with the origin policy and
//! listen address a test chooses), its S3-backed seeder with the HTTP path,
//! and agents, all on 127.0.0.1 (or a test's own address).

// Each test binary uses part of it.
#![allow(dead_code, unused_imports)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ota_client::TrackerClient;
use ota_device_agent::agent::{Agent, AgentSettings};
use ota_device_agent::download::{Downloader, HttpFallback};
use ota_proto::api::NewRelease;
use ota_proto::InfoHash;
use ota_seeder::publish::{hash_object, PublishRequest};
use ota_seeder::seeding::{SeedSettings, Seeder};
use ota_testkit::stack::{start_seeder, TestS3, BUCKET};
use ota_tracker::OriginPolicy;

pub(crate) use ota_testkit::net::{free_addr, free_port_on};
pub(crate) use ota_testkit::package;
pub(crate) use ota_testkit::stack::{serve_http, wait_origin, ADMIN, ORIGIN};
pub(crate) use ota_testkit::tracker::TestTracker;

pub(crate) mod fake_tracker;

/// The testkit's in-process tracker for these tests: registry under
/// `db_dir`, listening on a free port of `ip`, 1 s announce interval, device
/// tokens off, admin token [`ADMIN`], origin token [`ORIGIN`] (the testkit's default).
pub(crate) async fn start_tracker(db_dir: &Path, ip: IpAddr, origin_policy: OriginPolicy) -> TestTracker {
    TestTracker::builder()
        .db_dir(db_dir)
        .ip(ip)
        .admin_token(ADMIN)
        .origin_policy(origin_policy)
        .announce_interval(Duration::from_secs(1))
        .start()
        .await
}

/// [`start_tracker`] on 127.0.0.1 with the default origin policy (origin on demand).
pub(crate) async fn loopback_tracker(db_dir: &Path) -> TestTracker {
    start_tracker(db_dir, IpAddr::V4(Ipv4Addr::LOCALHOST), OriginPolicy::default()).await
}

/// The testkit's S3 server and a tracker, under one temporary folder.
pub(crate) struct Stack {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) s3: TestS3,
    pub(crate) tracker: TestTracker,
}

impl Stack {
    pub(crate) async fn start() -> Stack {
        Self::start_with(OriginPolicy::default()).await
    }

    /// S3 and a tracker with the given origin policy.
    pub(crate) async fn start_with(origin_policy: OriginPolicy) -> Stack {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), origin_policy).await
    }

    /// S3 (on loopback) and a tracker listening on `ip` with the given origin policy.
    pub(crate) async fn start_on(ip: IpAddr, origin_policy: OriginPolicy) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let s3 = TestS3::start(&dir.path().join("s3")).await;
        let tracker = start_tracker(&dir.path().join("tracker"), ip, origin_policy).await;
        Stack { dir, s3, tracker }
    }

    /// What [`Self::publish`] publishes: `s3://ota/KEY`, version `1`,
    /// announce URL this stack's tracker, private, unsigned.
    pub(crate) fn publish_request(&self, key: &str, piece_length: u64, http_base: Option<String>) -> PublishRequest {
        PublishRequest {
            location: ota_seeder::origin_store::S3Location {
                bucket: BUCKET.into(),
                key: key.into(),
            },
            version: "1".into(),
            piece_length: Some(piece_length),
            tracker_url: self.tracker.url().to_string(),
            http_base,
            private: true,
            signing: None,
        }
    }

    /// Uploads `data` as `key`, hashes it (piece length `piece_length`,
    /// HTTP path under `http_base` if set) and registers it with the
    /// tracker; returns the registered release.
    pub(crate) async fn publish(
        &self,
        key: &str,
        data: &[u8],
        piece_length: u64,
        http_base: Option<String>,
    ) -> NewRelease {
        let new = self
            .hash(data, &self.publish_request(key, piece_length, http_base))
            .await;
        self.tracker.client().register(&new).await.unwrap();
        new
    }

    /// Uploads `data` to `req.location` and hashes it with `req`; the
    /// release is not registered.
    pub(crate) async fn hash(&self, data: &[u8], req: &PublishRequest) -> NewRelease {
        self.s3.put(&req.location.key, data).await;
        hash_object(&self.s3.client, req).await.unwrap().0
    }

    /// Seeder settings of this stack: the testkit's test settings, the
    /// folder under [`Self::dir`], origin token [`ORIGIN`].
    pub(crate) fn seed_settings(&self, upload_limit_bps: Option<u32>) -> SeedSettings {
        let s = ota_testkit::stack::seed_settings(Default::default(), ORIGIN);
        SeedSettings {
            state_dir: self.dir.path().join(format!("seeder-{}", s.peer_listen.port())),
            upload_limit_bps,
            ..s
        }
    }

    /// Starts the S3-backed seeder and syncs it (it seeds every registered
    /// release; wait for the tracker to list it with [`wait_origin`]).
    pub(crate) async fn seeder(&self, upload_limit_bps: Option<u32>) -> Arc<Seeder> {
        self.seeder_with(self.seed_settings(upload_limit_bps)).await
    }

    /// Starts a seeder with `settings` and syncs it.
    pub(crate) async fn seeder_with(&self, settings: SeedSettings) -> Arc<Seeder> {
        let seeder = start_seeder(&self.s3.client, self.tracker.client(), settings).await;
        seeder.sync_releases().await.unwrap();
        seeder
    }

    /// Starts a seeder with the test settings; the caller syncs it.
    pub(crate) async fn start_seeder_unsynced(&self) -> Arc<Seeder> {
        start_seeder(&self.s3.client, self.tracker.client(), self.seed_settings(None)).await
    }
}

/// Agent settings for tests: no catch-up, no polling, no manifest key.
pub(crate) fn settings(device: &str, state: &Path) -> AgentSettings {
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
        install_hook_timeout: Duration::from_secs(600),
        broker: None,
    }
}

/// An agent talking to `tracker_url`, with the HTTP fallback after `fallback_after` if set.
pub(crate) async fn agent(
    tracker_url: &str,
    device: &str,
    state: &Path,
    fallback_after: Option<Duration>,
) -> Arc<Agent> {
    agent_with(tracker_url, settings(device, state), fallback_after).await
}

/// An agent with the given settings talking to `tracker_url`.
pub(crate) async fn agent_with(
    tracker_url: &str,
    settings: AgentSettings,
    fallback_after: Option<Duration>,
) -> Arc<Agent> {
    let device = settings.device_id.clone();
    let downloader = Downloader::start(&settings.state_dir, free_addr())
        .await
        .unwrap()
        .with_http_fallback(fallback_after.map(|after| HttpFallback {
            after,
            device,
            token: None,
            http_only: false,
        }));
    Agent::new(TrackerClient::new(tracker_url, None), downloader, settings).unwrap()
}

/// `STATE/downloads/INFO_HASH`: where the agent keeps a release's package.
pub(crate) fn download_folder(state: &Path, info_hash: &InfoHash) -> std::path::PathBuf {
    state.join("downloads").join(info_hash.to_hex())
}

/// An agent for the fake tracker: manifest key `key` pinned (if any), HTTP
/// fallback after 1 s with device token `token`, device id `dev-sec`.
pub(crate) async fn agent_for_fake(
    tracker_url: &str,
    state: &Path,
    key: Option<ed25519_dalek::VerifyingKey>,
    token: Option<String>,
) -> Arc<Agent> {
    let mut settings = settings("dev-sec", state);
    settings.manifest_key = key;
    settings.download_timeout = Duration::from_secs(30);
    let downloader = Downloader::start(state, free_addr())
        .await
        .unwrap()
        .with_http_fallback(Some(HttpFallback {
            after: Duration::from_secs(1),
            device: "dev-sec".into(),
            token: token.clone(),
            http_only: false,
        }));
    Agent::new(
        TrackerClient::new(tracker_url, None).with_device_token(token),
        downloader,
        settings,
    )
    .unwrap()
}
