//! The agent's lifecycle: subscribe to pushes (reconnecting with backoff),
//! catch up on the newest release at each (re)connect, download each new
//! release once, verify it, keep seeding, and report bytes by source.
//!
//! Installed releases are recorded in `STATE_DIR/installed.json`, so a
//! restarted agent does not fetch them again.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};

use ota_tracker::announce::{parse_info_hash, AnnounceEvent};
use ota_tracker::client::{AnnounceParams, TrackerClient};
use ota_tracker::release::{Release, TelemetryReport};

use crate::download::Downloader;

/// Settings of a running agent.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// This device's id (sent in announces and telemetry).
    pub device_id: String,
    /// State folder (downloads, installed list).
    pub state_dir: PathBuf,
    /// Longest a download may take.
    pub download_timeout: Duration,
    /// Fetch the newest release at each (re)connect even without a push.
    pub catch_up: bool,
    /// Show a progress bar on stderr.
    pub progress_bar: bool,
    /// While seeding, re-send the release's report (with the bytes uploaded
    /// so far) this often.
    pub report_interval: Duration,
    /// The device maker's pinned manifest key. With it, only releases with a
    /// manifest that verifies and names this device's channel and model are
    /// downloaded; without it, releases are taken on the tracker's word.
    pub manifest_key: Option<ed25519_dalek::VerifyingKey>,
    /// This device's update channel.
    pub channel: String,
    /// This device's model.
    pub model: String,
    /// Fallback for missed pushes: list releases this often and fetch the
    /// newest one not handled yet. `None` disables polling.
    pub poll_interval: Option<Duration>,
}

/// One installed (verified) release, as kept in `installed.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Installed {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Verified package path.
    pub path: PathBuf,
    /// SHA-256, hex.
    pub sha256: String,
}

/// A running agent.
pub struct Agent {
    tracker: TrackerClient,
    downloader: Downloader,
    settings: AgentSettings,
    attempted: Mutex<HashSet<String>>,
    installed: Mutex<BTreeMap<String, Installed>>,
}

impl Agent {
    /// Builds an agent over a started [`Downloader`], loading `installed.json`.
    pub fn new(tracker: TrackerClient, downloader: Downloader, settings: AgentSettings) -> Arc<Self> {
        let installed: BTreeMap<String, Installed> = std::fs::read(settings.state_dir.join("installed.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Arc::new(Agent {
            tracker,
            downloader,
            settings,
            attempted: Mutex::new(HashSet::new()),
            installed: Mutex::new(installed),
        })
    }

    /// Releases installed so far, by info hash.
    pub fn installed(&self) -> BTreeMap<String, Installed> {
        self.installed.lock().unwrap().clone()
    }

    fn save_installed(&self) -> anyhow::Result<()> {
        let path = self.settings.state_dir.join("installed.json");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&*self.installed.lock().unwrap())?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Starts handling a release unless it was installed or attempted already.
    pub fn consider(self: &Arc<Self>, info_hash: &str) {
        if self.installed.lock().unwrap().contains_key(info_hash)
            || !self.attempted.lock().unwrap().insert(info_hash.to_string())
        {
            return;
        }
        let me = self.clone();
        let ih = info_hash.to_string();
        tokio::spawn(async move {
            if let Err(e) = me.handle_release(&ih).await {
                tracing::error!(info_hash = %ih, error = %format!("{e:#}"), "release not installed");
            }
        });
    }

    /// Downloads, verifies and reports one release. A refused package is
    /// reported with `verified: false` and its error.
    pub async fn handle_release(self: &Arc<Self>, info_hash: &str) -> anyhow::Result<Installed> {
        let release = self.tracker.release(info_hash).await?;
        let expected_sha256 = match self.check_manifest(&release) {
            Ok(sha) => sha,
            Err(e) => {
                tracing::error!(%info_hash, error = %e, "manifest rejected; not downloading");
                let report = TelemetryReport {
                    device: self.settings.device_id.clone(),
                    info_hash: info_hash.to_string(),
                    error: Some(format!("manifest rejected: {e}")),
                    ..Default::default()
                };
                self.send_report(&report).await;
                return Err(anyhow::anyhow!("manifest rejected: {e}"));
            }
        };
        let torrent = self.tracker.torrent(info_hash, &self.settings.device_id).await?;
        tracing::info!(name = %release.name, version = %release.version, %info_hash, "downloading release");
        let bar = self.settings.progress_bar.then(|| {
            let b = indicatif::ProgressBar::new(release.size);
            b.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_message(release.name.clone());
            b
        });
        let tracker = self.tracker.clone();
        let ih = info_hash.to_string();
        let origin_peers = move || {
            let tracker = tracker.clone();
            let ih = ih.clone();
            async move { tracker.release(&ih).await.map(|r| r.origin_peers).unwrap_or_default() }.boxed()
        };
        let result = self
            .downloader
            .fetch(&release, &expected_sha256, torrent, origin_peers, self.settings.download_timeout, |done, _| {
                if let Some(b) = &bar {
                    b.set_position(done);
                }
            })
            .await;
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        let mut report = TelemetryReport {
            device: self.settings.device_id.clone(),
            info_hash: info_hash.to_string(),
            ..Default::default()
        };
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                report.error = Some(format!("{e:#}"));
                self.send_report(&report).await;
                return Err(e);
            }
        };
        report.bytes_from_origin = outcome.bytes_from_origin;
        report.bytes_from_peers = outcome.bytes_from_peers;
        report.bytes_from_lan_peers = outcome.bytes_from_lan_peers;
        report.bytes_from_internet_peers = outcome.bytes_from_internet_peers;
        report.bytes_from_origin_http = outcome.bytes_from_origin_http;
        report.bytes_uploaded = outcome.bytes_uploaded;
        report.duration_ms = outcome.duration_ms;
        report.verified = true;
        let installed = Installed {
            name: release.name.clone(),
            version: release.version.clone(),
            path: outcome.path.clone(),
            sha256: expected_sha256.clone(),
        };
        self.installed.lock().unwrap().insert(info_hash.to_string(), installed.clone());
        self.save_installed()?;
        tracing::info!(
            name = %release.name,
            from_origin = outcome.bytes_from_origin,
            from_peers = outcome.bytes_from_peers,
            ms = outcome.duration_ms,
            "release verified; seeding"
        );
        self.send_report(&report).await;
        // librqbit never sends `completed`: tell the tracker at once that this
        // device is a seeder now, so it is handed out before the next announce.
        let completed = AnnounceParams {
            info_hash: parse_info_hash(info_hash)?,
            peer_id: self.downloader.peer_id(),
            port: self.downloader.port(),
            uploaded: outcome.bytes_uploaded,
            downloaded: release.size,
            left: 0,
            event: AnnounceEvent::Completed,
            device: Some(self.settings.device_id.clone()),
        };
        if let Err(e) = self.tracker.announce(&completed).await {
            tracing::warn!(error = %format!("{e:#}"), "completed announce failed");
        }
        self.spawn_seeding_reports(report);
        Ok(installed)
    }

    /// The SHA-256 the package must have: from the verified manifest when a
    /// key is pinned, else from the release record.
    fn check_manifest(&self, release: &Release) -> Result<String, ota_tracker::manifest::ManifestError> {
        use ota_tracker::manifest::{verify, ManifestError};
        let Some(key) = &self.settings.manifest_key else {
            return Ok(release.sha256.clone());
        };
        let signed = release.manifest.as_ref().ok_or(ManifestError::BadSignature)?;
        let m = verify(signed, key)?;
        m.check_for(&release.info_hash, &self.settings.channel, &self.settings.model)?;
        // Only upgrades: never a version at or below one installed of the same package.
        if let Some(newest) = self
            .installed
            .lock()
            .unwrap()
            .values()
            .filter(|i| i.name == m.name && !ota_tracker::manifest::is_newer_version(&m.version, &i.version))
            .map(|i| i.version.clone())
            .next()
        {
            return Err(ManifestError::NotNewer { offered: m.version, installed: newest });
        }
        Ok(m.sha256)
    }

    /// Re-sends `report` with the current upload counter every
    /// `report_interval` while the release is seeded (until the agent stops).
    fn spawn_seeding_reports(self: &Arc<Self>, mut report: TelemetryReport) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(me.settings.report_interval).await;
                let Some(up) = me.downloader.uploaded(&report.info_hash) else { break };
                if up != report.bytes_uploaded {
                    report.bytes_uploaded = up;
                    me.send_report(&report).await;
                }
            }
        });
    }

    async fn send_report(&self, report: &TelemetryReport) {
        if let Err(e) = self.tracker.report(report).await {
            tracing::warn!(error = %format!("{e:#}"), "telemetry not delivered");
        }
    }

    fn catch_up(self: &Arc<Self>, releases: &[Release]) {
        if let Some(newest) = releases.first() {
            self.consider(&newest.info_hash);
        }
    }

    /// Polls the release list every `poll_interval` (if set) and considers the
    /// newest release, in case a push was missed.
    async fn run_poll_loop(self: Arc<Self>) {
        let Some(every) = self.settings.poll_interval else { return };
        loop {
            tokio::time::sleep(every).await;
            match self.tracker.releases().await {
                Ok(r) => self.catch_up(&r),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "release poll failed"),
            }
        }
    }

    /// Subscribes to the push channel forever, reconnecting with exponential
    /// backoff (0.5 s doubling to 10 s), and polls as a fallback.
    pub async fn run(self: Arc<Self>) {
        tokio::spawn(self.clone().run_poll_loop());
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.tracker.subscribe().await {
                Ok(mut stream) => {
                    tracing::info!(tracker = %self.tracker.base(), "subscribed to pushes");
                    backoff = Duration::from_millis(500);
                    if self.settings.catch_up {
                        match self.tracker.releases().await {
                            Ok(r) => self.catch_up(&r),
                            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot list releases"),
                        }
                    }
                    while let Some(ev) = stream.next().await {
                        match ev {
                            Ok(ev) => {
                                tracing::info!(name = %ev.name, version = %ev.version, "push received");
                                self.consider(&ev.info_hash);
                            }
                            Err(e) => {
                                tracing::warn!(error = %format!("{e:#}"), "push channel error");
                                break;
                            }
                        }
                    }
                    tracing::warn!("push channel closed; reconnecting");
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot subscribe; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Stops the BitTorrent session.
    pub async fn stop(&self) {
        self.downloader.stop().await;
    }
}
