//! Downloading one release through librqbit, then verifying it.
//!
//! One librqbit session per agent: TCP peer wire on the configured port,
//! no DHT, no local service discovery, no UPnP (peers come from the tracker
//! only). A finished download is SHA-256 checked against the release; a
//! package that fails is deleted at once and never offered for installation.
//! A verified package stays in the session and keeps seeding.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use librqbit::{AddTorrent, AddTorrentOptions, Session, TorrentStatsState};

use ota_peer::peer_id::{random_peer_id, AGENT_PREFIX};
use ota_peer::PeerSession;
use ota_proto::api::Release;
use ota_proto::{InfoHash, PeerId};

use std::collections::BTreeMap;

use crate::accounting::{per_peer_bytes, split_by_source};
use crate::download_state::SourceTotals;
use crate::http_fallback::{fill_missing, HttpSource, PieceTable, StallWatch};
use crate::verify::verify_package;

/// The user cancelled the download (its data is deleted).
#[derive(Debug, thiserror::Error)]
#[error("cancelled by the user")]
pub struct Cancelled;

/// Progress of a running download, reported every 250 ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchProgress {
    /// Verified bytes on disk.
    pub progress_bytes: u64,
    /// Package size, bytes.
    pub total_bytes: u64,
    /// Verified bytes per second over the last ~3 s.
    pub speed_bps: u64,
    /// Payload bytes received per source, over pauses and earlier runs.
    pub received: SourceTotals,
    /// Payload bytes uploaded during the current live period.
    pub uploaded: u64,
    /// Whether librqbit has the torrent paused.
    pub paused: bool,
}

/// What steers a running [`Downloader::fetch`] (the agent's state for that release).
pub trait FetchControl: Send + Sync {
    /// Whether the download must be paused now (some pause reason holds).
    fn should_pause(&self) -> bool;
    /// Whether the user asked to cancel.
    fn cancel_requested(&self) -> bool;
    /// Called every 250 ms.
    fn on_progress(&self, progress: &FetchProgress);
    /// The origin seeder's peer-wire addresses (`ip:port`), to tell origin
    /// bytes from peer bytes.
    fn origin_peers(&self) -> futures::future::BoxFuture<'static, Vec<String>>;
}

/// Download speed from (time, verified bytes) samples over a sliding window of ~3 s.
#[derive(Debug, Default)]
pub struct SpeedMeter {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl SpeedMeter {
    /// Window length.
    pub const WINDOW: Duration = Duration::from_secs(3);

    /// Adds a sample and returns the speed in bytes/s over the window
    /// (0 until two samples span some time).
    pub fn sample(&mut self, at: Instant, bytes: u64) -> u64 {
        self.samples.push_back((at, bytes));
        while self.samples.len() > 2 && at.duration_since(self.samples[0].0) > Self::WINDOW {
            self.samples.pop_front();
        }
        let (t0, b0) = self.samples[0];
        let dt = at.duration_since(t0).as_secs_f64();
        if dt <= 0.0 {
            return 0;
        }
        (bytes.saturating_sub(b0) as f64 / dt) as u64
    }
}

/// Bytes per source of the torrent's current live period; `None` when not live.
fn live_split(handle: &librqbit::ManagedTorrent, origins: &[String]) -> Option<SourceTotals> {
    let live = handle.live()?;
    let snapshot = serde_json::to_value(
        live.per_peer_stats_snapshot(serde_json::from_value(serde_json::json!({"state": "all"})).unwrap_or_default()),
    )
    .unwrap_or_default();
    let per_peer = per_peer_bytes(&snapshot);
    let split = split_by_source(per_peer.iter().map(|(a, (f, _))| (a.as_str(), *f)), origins);
    Some(SourceTotals {
        origin_bittorrent: split.origin,
        peers: split.peers,
        origin_http: 0,
        lan_peers: split.lan_peers,
        internet_peers: split.internet_peers,
    })
}

/// Result of one finished download.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadOutcome {
    /// Where the verified package is.
    pub path: PathBuf,
    /// Payload bytes from the origin over BitTorrent.
    pub bytes_from_origin: u64,
    /// Payload bytes from other devices.
    pub bytes_from_peers: u64,
    /// Of `bytes_from_peers`, bytes from devices at LAN addresses.
    pub bytes_from_lan_peers: u64,
    /// Of `bytes_from_peers`, bytes from devices at internet addresses.
    pub bytes_from_internet_peers: u64,
    /// Payload bytes from the origin's plain-HTTP path (fallback), verified per piece.
    pub bytes_from_origin_http: u64,
    /// Payload bytes sent to other peers so far.
    pub bytes_uploaded: u64,
    /// Wall time of the download and check, ms.
    pub duration_ms: u64,
}

/// The agent's BitTorrent side.
pub struct Downloader {
    session: Arc<Session>,
    downloads_dir: PathBuf,
    peer_id: PeerId,
    port: u16,
    http_fallback: Option<HttpFallback>,
    http: reqwest::Client,
}

/// HTTP fallback settings of a [`Downloader`].
#[derive(Debug, Clone)]
pub struct HttpFallback {
    /// Fetch missing pieces over HTTP after peers delivered no payload byte for this long.
    pub after: Duration,
    /// This device's id, sent to the origin as `X-Device-Id`.
    pub device: String,
}

impl Downloader {
    /// Starts a librqbit session listening on `peer_listen`, storing
    /// packages under `state_dir/downloads/INFO_HASH/`.
    ///
    /// Errors: the port is taken or the folder cannot be created.
    pub async fn start(state_dir: &Path, peer_listen: SocketAddr) -> anyhow::Result<Self> {
        let downloads_dir = state_dir.join("downloads");
        std::fs::create_dir_all(&downloads_dir)
            .with_context(|| format!("cannot create {}", downloads_dir.display()))?;
        let peer_id = random_peer_id(AGENT_PREFIX);
        let session = PeerSession {
            listen: Some(peer_listen),
            peer_id: Some(peer_id),
            trackers: true,
            upload_limit_bps: None,
            client_name: Some(format!("ota-device-agent {}", env!("CARGO_PKG_VERSION"))),
        }
        .start(downloads_dir.clone())
        .await?;
        Ok(Downloader {
            session,
            downloads_dir,
            peer_id,
            port: peer_listen.port(),
            http_fallback: None,
            http: reqwest::Client::new(),
        })
    }

    /// Turns on the HTTP fallback ([`crate::http_fallback`]): when a running
    /// (unpaused) download gets no payload byte for `fallback.after`, its
    /// missing pieces come from the release's `http_url`, SHA-1 checked.
    pub fn with_http_fallback(mut self, fallback: Option<HttpFallback>) -> Self {
        self.http_fallback = fallback;
        self
    }

    /// Sets the session's upload cap, bytes/s (`None`: unlimited).
    pub fn set_upload_limit(&self, bps: Option<std::num::NonZeroU32>) {
        self.session.ratelimits.set_upload_bps(bps);
    }

    /// Downloads `release` from `torrent` (a `.torrent` whose announce URL
    /// carries this device's id), waits for it to finish, splits the bytes
    /// by source using `control.origin_peers()` (the origin's `ip:port`
    /// peer-wire addresses, asked at the start and the end), and checks that its SHA-256 is `expected_sha256` (from
    /// the verified manifest when there is one).
    ///
    /// Resuming: pieces already on disk under `STATE_DIR/downloads/INFO_HASH/`
    /// (from a pause, a lost link or a killed agent) are hash-checked by
    /// librqbit when the torrent is added and never fetched again.
    /// `earlier` holds the bytes per source counted before this call (an
    /// earlier run); they are added to the outcome.
    ///
    /// `control` is polled every 250 ms: while `should_pause()` holds the
    /// torrent is paused (librqbit keeps its verified pieces; only the
    /// pieces in flight are requested again); `cancel_requested()` deletes the
    /// torrent and its files and fails with [`Cancelled`]; `on_progress` gets
    /// a [`FetchProgress`].
    ///
    /// HTTP fallback (when set with [`Downloader::with_http_fallback`] and the
    /// release has an `http_url`): once, after peers delivered no payload byte
    /// for the configured delay while running, the torrent leaves librqbit
    /// (its file stays), the missing pieces are fetched over HTTP and SHA-1
    /// checked ([`crate::http_fallback::fill_missing`]), and the torrent is
    /// added again: librqbit's initial check finds those pieces.
    ///
    /// Errors: librqbit refuses the torrent, the download is not finished
    /// after `timeout` of unpaused time, the user cancels, the HTTP fallback
    /// fails (a piece failing SHA-1, a full disk), or the package
    /// fails verification — in which case the torrent and its files are
    /// deleted and nothing is kept.
    pub async fn fetch(
        &self,
        release: &Release,
        expected_sha256: &str,
        torrent: Vec<u8>,
        timeout: Duration,
        earlier: SourceTotals,
        control: &dyn FetchControl,
    ) -> anyhow::Result<DownloadOutcome> {
        let started = Instant::now();
        let folder = self.folder(&release.info_hash);
        let add = |torrent: Vec<u8>, paused: bool| {
            let folder = folder.display().to_string();
            async move {
                self.session
                    .add_torrent(
                        AddTorrent::from_bytes(torrent),
                        Some(AddTorrentOptions {
                            overwrite: true,
                            paused,
                            output_folder: Some(folder),
                            ..Default::default()
                        }),
                    )
                    .await
                    .context("librqbit refused the torrent")?
                    .into_handle()
                    .context("torrent added in list-only mode")
            }
        };
        let mut handle = add(torrent.clone(), control.should_pause()).await?;
        let mut id = handle.id();
        let fallback = self.http_fallback.as_ref().zip(release.http_url.as_ref());
        let mut stall = fallback.map(|(f, _)| StallWatch::new(f.after, handle.stats().progress_bytes, Instant::now()));
        let mut origins = control.origin_peers().await;
        // Per-peer counters restart with every live period (after a pause):
        // what earlier periods received is kept in `acc`.
        let mut acc = earlier;
        let mut live_now = SourceTotals::default();
        let mut speed = SpeedMeter::default();
        let mut active = Duration::ZERO;
        let mut last_tick = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let s = handle.stats();
            if let Some(l) = live_split(&handle, &origins) {
                live_now = l;
            }
            if control.cancel_requested() {
                let _ = self.session.delete(id.into(), true).await;
                let _ = std::fs::remove_dir_all(&folder);
                return Err(anyhow::Error::new(Cancelled));
            }
            if let Some(e) = &s.error {
                let _ = self.session.delete(id.into(), true).await;
                let _ = std::fs::remove_dir_all(&folder);
                anyhow::bail!("download failed: {e}");
            }
            let paused = matches!(s.state, TorrentStatsState::Paused);
            let now = Instant::now();
            if !paused {
                active += now - last_tick;
            }
            last_tick = now;
            // While librqbit runs its initial piece check, its
            // `progress_bytes` counts bytes *checked*, not bytes verified:
            // reporting it would show a fresh download as complete (and
            // mark it verifying) before a byte has arrived.
            let verified = if matches!(s.state, TorrentStatsState::Initializing { .. }) { 0 } else { s.progress_bytes };
            control.on_progress(&FetchProgress {
                progress_bytes: verified,
                total_bytes: s.total_bytes,
                speed_bps: speed.sample(now, verified),
                received: acc.plus(&live_now),
                uploaded: s.uploaded_bytes,
                paused,
            });
            if s.finished {
                break;
            }
            if paused {
                // A pause is not a stall: the clock restarts on resume.
                stall = fallback.map(|(f, _)| StallWatch::new(f.after, s.progress_bytes, now));
            } else if let (Some(w), Some((f, url))) = (stall.as_mut(), fallback) {
                if matches!(s.state, TorrentStatsState::Live) && w.stalled(s.progress_bytes, now) {
                    stall = None; // once per call
                    tracing::warn!(info_hash = %release.info_hash, after_s = f.after.as_secs(), "no payload from peers; HTTP fallback");
                    if let Some(l) = live_split(&handle, &origins) {
                        live_now = l;
                    }
                    acc = acc.plus(&live_now);
                    live_now = SourceTotals::default();
                    self.session.delete(id.into(), false).await.context("cannot take the torrent out for the HTTP fallback")?;
                    let src = HttpSource { url: url.clone(), etag: release.etag.clone(), device: f.device.clone() };
                    let filled = match PieceTable::from_torrent(&torrent) {
                        Ok(table) => fill_missing(&self.http, &src, &table, &folder.join(&release.name)).await,
                        Err(e) => Err(e),
                    };
                    match filled {
                        Ok(n) => acc.origin_http += n,
                        Err(e) => {
                            let _ = std::fs::remove_dir_all(&folder);
                            return Err(anyhow::Error::new(e).context("HTTP fallback failed"));
                        }
                    }
                    handle = add(torrent.clone(), control.should_pause()).await?;
                    id = handle.id();
                    continue;
                }
            }
            match (control.should_pause(), s.state) {
                (true, TorrentStatsState::Live) => {
                    if let Some(l) = live_split(&handle, &origins) {
                        live_now = l;
                    }
                    self.session.pause(&handle).await.context("cannot pause")?;
                    acc = acc.plus(&live_now);
                    live_now = SourceTotals::default();
                    tracing::info!(info_hash = %release.info_hash, progress = s.progress_bytes, "download paused");
                }
                (false, TorrentStatsState::Paused) => {
                    self.session.unpause(&handle).await.context("cannot resume")?;
                    tracing::info!(info_hash = %release.info_hash, progress = s.progress_bytes, "download resumed");
                }
                _ => {}
            }
            if active > timeout {
                let _ = self.session.delete(id.into(), true).await;
                let _ = std::fs::remove_dir_all(&folder);
                anyhow::bail!("download did not finish within {} s", timeout.as_secs());
            }
        }
        let stats = handle.stats();
        let path = folder.join(&release.name);
        if let Err(e) = tokio::task::spawn_blocking({
            let path = path.clone();
            let sha = expected_sha256.to_string();
            move || verify_package(&path, &sha)
        })
        .await?
        {
            // Refuse: no copy is kept, and the package is not seeded.
            let _ = self.session.delete(id.into(), true).await;
            let _ = std::fs::remove_dir_all(&folder);
            return Err(anyhow::Error::new(e).context(format!("package {} refused", release.name)));
        }
        let fresh = control.origin_peers().await;
        if !fresh.is_empty() {
            origins = fresh;
        }
        if let Some(l) = live_split(&handle, &origins) {
            live_now = l;
        }
        let total = acc.plus(&live_now);
        Ok(DownloadOutcome {
            path,
            bytes_from_origin: total.origin_bittorrent,
            bytes_from_peers: total.peers,
            bytes_from_lan_peers: total.lan_peers,
            bytes_from_internet_peers: total.internet_peers,
            bytes_from_origin_http: total.origin_http,
            bytes_uploaded: stats.uploaded_bytes,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Seeds again a release verified in an earlier run (after a restart):
    /// checks the package's SHA-256 on disk first, then adds the torrent,
    /// whose piece check finds it complete, so nothing is downloaded.
    ///
    /// Errors: the package is missing or changed (nothing is added), or
    /// librqbit refuses the torrent or does not find it complete within
    /// 120 s (the torrent is removed, the files kept).
    pub async fn seed_verified(&self, release: &Release, sha256: &str, torrent: Vec<u8>) -> anyhow::Result<()> {
        let folder = self.folder(&release.info_hash);
        let path = folder.join(&release.name);
        tokio::task::spawn_blocking({
            let sha = sha256.to_string();
            move || verify_package(&path, &sha)
        })
        .await?
        .with_context(|| format!("package {} on disk cannot be seeded", release.name))?;
        let handle = self
            .session
            .add_torrent(
                AddTorrent::from_bytes(torrent),
                Some(AddTorrentOptions {
                    overwrite: true,
                    output_folder: Some(folder.display().to_string()),
                    ..Default::default()
                }),
            )
            .await
            .context("librqbit refused the torrent")?
            .into_handle()
            .context("torrent added in list-only mode")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = handle.stats();
            if s.finished {
                return Ok(());
            }
            if s.error.is_some() || Instant::now() > deadline || matches!(s.state, TorrentStatsState::Live) && s.progress_bytes < s.total_bytes {
                let _ = self.session.delete(handle.id().into(), false).await;
                anyhow::bail!("librqbit did not find {} complete on disk ({} of {} bytes)", release.name, s.progress_bytes, s.total_bytes);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Error count per peer (`ip:port`) of a release's torrent while it is in
    /// the session: how often librqbit dropped the connection after an
    /// error. A piece failing its SHA-1 is one (librqbit 9.1 disconnects the
    /// peer that sent it and reconnects later with exponential backoff; it
    /// has no per-peer ban).
    pub fn peer_errors(&self, info_hash: &InfoHash) -> BTreeMap<String, u32> {
        let Some(handle) = self.session.get(torrent_id(info_hash)) else { return BTreeMap::new() };
        let Some(live) = handle.live() else { return BTreeMap::new() };
        let snap = serde_json::to_value(
            live.per_peer_stats_snapshot(serde_json::from_value(serde_json::json!({"state": "all"})).unwrap_or_default()),
        )
        .unwrap_or_default();
        snap["peers"]
            .as_object()
            .map(|m| m.iter().map(|(a, p)| (a.clone(), p["counters"]["errors"].as_u64().unwrap_or(0) as u32)).collect())
            .unwrap_or_default()
    }

    /// Stops seeding a release: the torrent leaves the session, its files stay.
    pub async fn stop_seeding(&self, info_hash: &InfoHash) -> anyhow::Result<()> {
        self.session.delete(torrent_id(info_hash), false).await
    }

    /// Bytes uploaded so far for a release (its seeding counter), if present.
    pub fn uploaded(&self, info_hash: &InfoHash) -> Option<u64> {
        self.session.get(torrent_id(info_hash)).map(|h| h.stats().uploaded_bytes)
    }

    /// This agent's peer id (Azureus style, `-OA0100-` + 12 random characters).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Where a release's package lives: `STATE_DIR/downloads/INFO_HASH/`
    /// (the hex info hash).
    pub fn folder(&self, info_hash: &InfoHash) -> PathBuf {
        self.downloads_dir.join(info_hash.to_hex())
    }

    /// The peer-wire port it announces.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the session.
    pub async fn stop(&self) {
        self.session.stop().await;
    }
}

/// librqbit's id of the torrent of `info_hash`.
fn torrent_id(info_hash: &InfoHash) -> librqbit::api::TorrentIdOrHash {
    librqbit::dht::Id20::new(info_hash.0).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_is_bytes_per_second_over_a_sliding_window() {
        let t0 = Instant::now();
        let mut m = SpeedMeter::default();
        assert_eq!(m.sample(t0, 0), 0);
        assert_eq!(m.sample(t0 + Duration::from_secs(1), 1000), 1000);
        assert_eq!(m.sample(t0 + Duration::from_secs(2), 3000), 1500);
        // Older samples fall out of the 3 s window: only the last 3 s count.
        m.sample(t0 + Duration::from_secs(3), 3000);
        m.sample(t0 + Duration::from_secs(4), 3000);
        assert_eq!(m.sample(t0 + Duration::from_secs(5), 3000), 0, "stalled download");
    }
}
