//! The agent's BitTorrent side: the librqbit session and the torrent
//! operations that [`crate::agent`] performs for a
//! [`ReleaseFlow`](crate::release_flow::ReleaseFlow)'s actions (add, sample,
//! pause, resume, take out for the HTTP fallback, discard, verify), plus
//! seeding again after a restart.
//!
//! One librqbit session per agent, built by [`ota_peer::PeerSession`]: TCP
//! peer wire on the configured port, no DHT, no local service discovery, no
//! UPnP (peers come from the tracker only). A finished download is SHA-256
//! checked against the release; a package that fails is deleted at once and
//! never offered for installation. A verified package stays in the session
//! and keeps seeding.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use anyhow::Context;
use librqbit::{AddTorrentOptions, ManagedTorrent, Session, TorrentStatsState};

use ota_peer::peer_id::{random_peer_id, AGENT_PREFIX};
use ota_peer::PeerSession;
use ota_proto::{InfoHash, PeerId};

use crate::accounting::{live_peers, per_peer_bytes};
use crate::http_fallback::{fill_missing, HttpSource, PieceTable};
use crate::release_flow::{Sample, TorrentState};
use crate::verify::verify_package;

/// The agent's BitTorrent side.
pub struct Downloader {
    session: Arc<Session>,
    downloads_dir: PathBuf,
    peer_id: PeerId,
    port: u16,
    http_fallback: Option<HttpFallback>,
    reconnect_after: Option<Duration>,
    http: reqwest::Client,
    punching: Option<Arc<crate::hole_punching::HolePunching>>,
}

/// Default stall after which a download's peer connections are made anew
/// ([`crate::reconnect`]).
pub const DEFAULT_RECONNECT_AFTER: Duration = Duration::from_secs(2);

/// HTTP fallback settings of a [`Downloader`].
#[derive(Debug, Clone)]
pub struct HttpFallback {
    /// Fetch missing pieces over HTTP after peers delivered no payload byte for this long.
    pub after: Duration,
    /// This device's id, sent to the origin as `X-Device-Id` (informative:
    /// the origin takes the device from its token).
    pub device: String,
    /// This device's token, sent to the origin as `Authorization: Bearer
    /// TOKEN` (required by the seeder's `/packages/{key}` when device auth
    /// is on).
    pub token: Option<String>,
    /// Client-server transport: fetch every release over HTTP at once,
    /// without waiting for peers ([`crate::release_flow::FlowConfig::http_only`]).
    pub http_only: bool,
}

impl Downloader {
    /// Starts a librqbit session listening on `peer_listen`, storing
    /// packages under `state_dir/downloads/INFO_HASH/`.
    ///
    /// Errors: the port is taken or the folder cannot be created.
    pub async fn start(state_dir: &Path, peer_listen: SocketAddr) -> anyhow::Result<Self> {
        Self::start_announcing(state_dir, peer_listen, None, None).await
    }

    /// [`Self::start`], announcing `announce_port` to trackers instead of
    /// the listen port when given (the external port of a UPnP mapping).
    ///
    /// Errors: as [`Self::start`].
    pub async fn start_announcing(
        state_dir: &Path,
        peer_listen: SocketAddr,
        announce_port: Option<u16>,
        punching: Option<Arc<crate::hole_punching::HolePunching>>,
    ) -> anyhow::Result<Self> {
        let downloads_dir = state_dir.join("downloads");
        std::fs::create_dir_all(&downloads_dir)
            .with_context(|| format!("cannot create {}", downloads_dir.display()))?;
        let peer_id = random_peer_id(AGENT_PREFIX);
        let session = PeerSession {
            listen: Some(peer_listen),
            announce_port,
            peer_id: Some(peer_id),
            trackers: true,
            upload_limit_bps: None,
            client_name: Some(format!("ota-device-agent {}", env!("CARGO_PKG_VERSION"))),
            proxy_url: punching.as_ref().map(|p| p.bridge.proxy_url()),
            // The agent resumes from its own state file and a full check of
            // its local files (see PeerSession).
            fastresume_dir: None,
        }
        .start(downloads_dir.clone())
        .await?;
        Ok(Downloader {
            session,
            downloads_dir,
            peer_id,
            port: peer_listen.port(),
            http_fallback: None,
            reconnect_after: Some(DEFAULT_RECONNECT_AFTER),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(30))
                .build()
                .context("HTTP client")?,
            punching,
        })
    }

    /// Turns on the HTTP fallback ([`crate::http_fallback`]): when a running
    /// (unpaused) download gets no payload byte for `fallback.after`, its
    /// missing pieces come from the release's `http_url`, SHA-1 checked.
    pub fn with_http_fallback(mut self, fallback: Option<HttpFallback>) -> Self {
        self.http_fallback = fallback;
        self
    }

    /// Sets the stall after which a download's peer connections are made
    /// anew ([`crate::reconnect`]; default [`DEFAULT_RECONNECT_AFTER`];
    /// `None`: never).
    pub fn with_reconnect_after(mut self, after: Option<Duration>) -> Self {
        self.reconnect_after = after;
        self
    }

    /// The reconnect delay, if reconnects are on.
    pub fn reconnect_after(&self) -> Option<Duration> {
        self.reconnect_after
    }

    /// Sets the session's upload cap, bytes/s (`None`: unlimited).
    pub fn set_upload_limit(&self, bps: Option<std::num::NonZeroU32>) {
        self.session.ratelimits.set_upload_bps(bps);
    }

    /// The HTTP fallback delay, when the fallback is on.
    pub fn http_fallback_after(&self) -> Option<Duration> {
        self.http_fallback.as_ref().map(|f| f.after)
    }

    /// Whether every release is fetched over HTTP at once (client-server).
    pub fn http_only(&self) -> bool {
        self.http_fallback.as_ref().is_some_and(|f| f.http_only)
    }

    /// Adds a release's torrent, its files under [`Downloader::folder`]
    /// (pieces already there are hash-checked by librqbit and never fetched
    /// again), paused or not.
    ///
    /// Errors: librqbit refuses the torrent.
    pub(crate) async fn add(
        &self,
        info_hash: &InfoHash,
        torrent: Vec<u8>,
        paused: bool,
    ) -> anyhow::Result<Arc<ManagedTorrent>> {
        if let Some(p) = &self.punching {
            p.swarms.add(*info_hash);
        }
        ota_peer::add_torrent(
            &self.session,
            torrent,
            &self.folder(info_hash),
            AddTorrentOptions {
                paused,
                ..Default::default()
            },
        )
        .await
    }

    /// A [`Sample`] of a running torrent at `now`, with the agent's pause
    /// and cancel requests.
    pub(crate) fn sample(
        &self,
        handle: &ManagedTorrent,
        now: Instant,
        pause_requested: bool,
        cancel_requested: bool,
    ) -> Sample {
        let s = handle.stats();
        // One snapshot serves both the byte counters and the live peers.
        let snapshot = Self::snapshot(handle);
        Sample {
            now,
            state: match s.state {
                TorrentStatsState::Initializing { .. } => TorrentState::Initializing,
                TorrentStatsState::Live => TorrentState::Live,
                TorrentStatsState::Paused => TorrentState::Paused,
                TorrentStatsState::Error => TorrentState::Other,
            },
            error: s.error,
            finished: s.finished,
            progress_bytes: s.progress_bytes,
            total_bytes: s.total_bytes,
            uploaded_bytes: s.uploaded_bytes,
            per_peer: snapshot.as_ref().map(|s| self.resolve(fetched_by_peer(s))),
            live_peers: snapshot.as_ref().map(live_peers),
            pause_requested,
            cancel_requested,
        }
    }

    /// librqbit's per-peer stats snapshot (every peer, any state) as JSON;
    /// `None` when the torrent is not live.
    fn snapshot(handle: &ManagedTorrent) -> Option<serde_json::Value> {
        let live = handle.live()?;
        Some(
            serde_json::to_value(live.per_peer_stats_snapshot(
                serde_json::from_value(serde_json::json!({"state": "all"})).unwrap_or_default(),
            ))
            .unwrap_or_default(),
        )
    }

    /// Payload bytes fetched per peer (`ip:port`) in the torrent's current
    /// live period; `None` when it is not live.
    pub(crate) fn per_peer(&self, handle: &ManagedTorrent) -> Option<Vec<(String, u64)>> {
        Self::snapshot(handle)
            .as_ref()
            .map(|s| self.resolve(fetched_by_peer(s)))
    }

    /// Peers reached through the QUIC bridge keyed by their real address.
    fn resolve(&self, per_peer: Vec<(String, u64)>) -> Vec<(String, u64)> {
        crate::hole_punching::resolve_peers(self.punching.as_ref().map(|p| &*p.bridge), per_peer)
    }

    /// The hole-punching bridge, when the agent runs one.
    pub fn punching(&self) -> Option<&Arc<crate::hole_punching::HolePunching>> {
        self.punching.as_ref()
    }

    /// Pauses a torrent (librqbit keeps its verified pieces; only the pieces
    /// in flight are requested again).
    pub(crate) async fn pause(&self, handle: &Arc<ManagedTorrent>) -> anyhow::Result<()> {
        self.session.pause(handle).await.context("cannot pause")
    }

    /// Resumes a paused torrent.
    pub(crate) async fn resume(&self, handle: &Arc<ManagedTorrent>) -> anyhow::Result<()> {
        self.session.unpause(handle).await.context("cannot resume")
    }

    /// Takes a release's torrent out of the session; its files stay.
    pub(crate) async fn take_out(&self, info_hash: &InfoHash) -> anyhow::Result<()> {
        self.session.delete(torrent_id(info_hash), false).await
    }

    /// Fetches the missing pieces of `file` from `url` over HTTP, each SHA-1
    /// checked against `torrent` ([`crate::http_fallback::fill_missing`]);
    /// returns the bytes written.
    ///
    /// Errors (as text): the torrent does not parse, a request fails, a
    /// piece fails its SHA-1, or the file cannot be written.
    pub(crate) async fn fill_over_http(
        &self,
        url: String,
        etag: Option<String>,
        torrent: &[u8],
        file: &Path,
    ) -> Result<u64, String> {
        let (device, token) = self
            .http_fallback
            .as_ref()
            .map(|f| (f.device.clone(), f.token.clone()))
            .unwrap_or_default();
        let src = HttpSource {
            url,
            etag,
            device,
            token,
        };
        let filled = match PieceTable::from_torrent(torrent) {
            Ok(table) => fill_missing(&self.http, &src, &table, file).await,
            Err(e) => Err(e),
        };
        filled.map_err(|e| format!("{:#}", anyhow::Error::new(e)))
    }

    /// Removes a release's torrent (if in the session) and deletes its
    /// folder: nothing of it is kept.
    pub(crate) async fn discard(&self, info_hash: &InfoHash) {
        let _ = self.session.delete(torrent_id(info_hash), true).await;
        let _ = std::fs::remove_dir_all(self.folder(info_hash));
    }

    /// Checks that `path` has SHA-256 `sha256` (off the async threads).
    ///
    /// Errors (as text): the file cannot be read or its hash differs.
    pub(crate) async fn verify(path: PathBuf, sha256: String) -> Result<(), String> {
        match tokio::task::spawn_blocking(move || verify_package(&path, &sha256)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{:#}", anyhow::Error::new(e))),
            Err(e) => Err(format!("package check did not finish: {e}")),
        }
    }

    /// Seeds again a release verified in an earlier run (after a restart):
    /// checks the package's SHA-256 on disk first, then adds the torrent,
    /// whose piece check finds it complete, so nothing is downloaded.
    ///
    /// `path` is the package as recorded in `installed.json`; it must be
    /// in [`Downloader::folder`] of `info_hash`, and `torrent` must have
    /// been checked against it ([`crate::release_flow::check_torrent`]).
    ///
    /// Errors: the package is not in the release's folder, missing or
    /// changed (nothing is added), or librqbit refuses the torrent or does
    /// not find it complete within 120 s (the torrent is removed, the files
    /// kept).
    pub async fn seed_verified(
        &self,
        info_hash: &InfoHash,
        path: &Path,
        sha256: &str,
        torrent: Vec<u8>,
    ) -> anyhow::Result<()> {
        let folder = self.folder(info_hash);
        anyhow::ensure!(
            path.parent() == Some(folder.as_path()),
            "package {} is not in the release's folder {}",
            path.display(),
            folder.display()
        );
        tokio::task::spawn_blocking({
            let sha = sha256.to_string();
            let path = path.to_path_buf();
            move || verify_package(&path, &sha)
        })
        .await?
        .with_context(|| format!("package {} on disk cannot be seeded", path.display()))?;
        if let Some(p) = &self.punching {
            p.swarms.add(*info_hash);
        }
        let handle = ota_peer::add_torrent(&self.session, torrent, &folder, AddTorrentOptions::default()).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = handle.stats();
            if s.finished {
                return Ok(());
            }
            if s.error.is_some()
                || Instant::now() > deadline
                || matches!(s.state, TorrentStatsState::Live) && s.progress_bytes < s.total_bytes
            {
                let _ = self.session.delete(handle.id().into(), false).await;
                anyhow::bail!(
                    "librqbit did not find {} complete on disk ({} of {} bytes)",
                    path.display(),
                    s.progress_bytes,
                    s.total_bytes
                );
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
        let Some(handle) = self.session.get(torrent_id(info_hash)) else {
            return BTreeMap::new();
        };
        let Some(live) = handle.live() else {
            return BTreeMap::new();
        };
        let snap =
            serde_json::to_value(live.per_peer_stats_snapshot(
                serde_json::from_value(serde_json::json!({"state": "all"})).unwrap_or_default(),
            ))
            .unwrap_or_default();
        snap["peers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(a, p)| (a.clone(), p["counters"]["errors"].as_u64().unwrap_or(0) as u32))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops seeding a release: the torrent leaves the session, its files stay.
    pub async fn stop_seeding(&self, info_hash: &InfoHash) -> anyhow::Result<()> {
        self.session.delete(torrent_id(info_hash), false).await
    }

    /// Bytes uploaded so far for a release (its seeding counter), if present.
    pub fn uploaded(&self, info_hash: &InfoHash) -> Option<u64> {
        self.session
            .get(torrent_id(info_hash))
            .map(|h| h.stats().uploaded_bytes)
    }

    /// A counter of payload bytes received (librqbit's `fetched_bytes`,
    /// counted per block as it arrives, before piece verification) summed
    /// over the torrents still downloading; `None` while none is. What
    /// [`crate::network_watch`] samples for gaps, whatever the transport.
    pub fn fetched_counter(&self) -> crate::network_watch::ReceivedCounter {
        let session = self.session.clone();
        Arc::new(move || {
            session.with_torrents(|torrents| {
                let mut total = None;
                for (_, t) in torrents {
                    let stats = t.stats();
                    if stats.finished {
                        continue;
                    }
                    if let Some(live) = stats.live {
                        *total.get_or_insert(0) += live.snapshot.fetched_bytes;
                    }
                }
                total
            })
        })
    }

    /// This agent's peer id (Azureus style, `-OA0100-` + 12 random characters).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// `STATE_DIR/downloads`, where every release has its folder.
    pub fn downloads_dir(&self) -> &Path {
        &self.downloads_dir
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

/// Payload bytes fetched per peer (`ip:port`) from a per-peer stats snapshot.
fn fetched_by_peer(snapshot: &serde_json::Value) -> Vec<(String, u64)> {
    per_peer_bytes(snapshot)
        .into_iter()
        .map(|(a, (fetched, _))| (a, fetched))
        .collect()
}

/// librqbit's id of the torrent of `info_hash`.
fn torrent_id(info_hash: &InfoHash) -> librqbit::api::TorrentIdOrHash {
    librqbit::dht::Id20::new(info_hash.0).into()
}
