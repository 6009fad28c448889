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
use librqbit::{AddTorrent, AddTorrentOptions, ListenerMode, ListenerOptions, Session, SessionOptions};

use ota_tracker::release::Release;

use std::collections::HashMap;

use crate::accounting::{per_peer_bytes, split_by_source};
use crate::http_fallback::{fill_missing, HttpSource, PieceTable, StallWatch};
use crate::verify::verify_package;

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
    peer_id: [u8; 20],
    port: u16,
    http_fallback: Option<HttpFallback>,
    http: reqwest::Client,
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
        let peer_id = random_peer_id(b"-OA0100-");
        let session = Session::new_with_opts(
            downloads_dir.clone(),
            SessionOptions {
                dht: None,
                disable_local_service_discovery: true,
                peer_id: Some(librqbit::dht::Id20::new(peer_id)),
                persistence: None,
                fastresume: false,
                listen: Some(ListenerOptions {
                    mode: ListenerMode::TcpOnly,
                    listen_addr: peer_listen,
                    enable_upnp_port_forwarding: false,
                    // librqbit announces no port for a loopback listener (it falls back to 4240).
                    announce_port: Some(peer_listen.port()),
                    ipv4_only: peer_listen.is_ipv4(),
                    ..Default::default()
                }),
                ipv4_only: peer_listen.is_ipv4(),
                client_name_and_version: Some(format!("ota-device-agent {}", env!("CARGO_PKG_VERSION"))),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("cannot start the BitTorrent session on {peer_listen}"))?;
        Ok(Downloader {
            session,
            downloads_dir,
            peer_id,
            port: peer_listen.port(),
            http_fallback: None,
            http: reqwest::Client::new(),
        })
    }

    /// Turns on the HTTP fallback ([`crate::http_fallback`]): when a
    /// download gets no payload byte for `fallback.after`, its missing
    /// pieces come from the release's `http_url`, SHA-1 checked.
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
    /// by source using `origin_peers`, and checks that its SHA-256 is
    /// `expected_sha256` (from the verified manifest when there is one).
    ///
    /// `on_progress(done_bytes, total_bytes)` is called about every 500 ms.
    ///
    /// Errors: librqbit refuses the torrent, the download does not finish
    /// within `timeout`, the HTTP fallback fails (a piece failing SHA-1, a full
    /// disk), or the package fails verification — in which case
    /// the torrent and its files are deleted and nothing is kept.
    pub async fn fetch(
        &self,
        release: &Release,
        expected_sha256: &str,
        torrent: Vec<u8>,
        origin_peers: impl Fn() -> futures::future::BoxFuture<'static, Vec<String>>,
        timeout: Duration,
        mut on_progress: impl FnMut(u64, u64),
    ) -> anyhow::Result<DownloadOutcome> {
        let started = Instant::now();
        let folder = self.downloads_dir.join(&release.info_hash);
        let add = |torrent: Vec<u8>| {
            let folder = folder.display().to_string();
            async move {
                self.session
                    .add_torrent(
                        AddTorrent::from_bytes(torrent),
                        Some(AddTorrentOptions { overwrite: true, output_folder: Some(folder), ..Default::default() }),
                    )
                    .await
                    .context("librqbit refused the torrent")?
                    .into_handle()
                    .context("torrent added in list-only mode")
            }
        };
        let mut handle = add(torrent.clone()).await?;
        // Per-peer counters of torrent handles dropped for the HTTP fallback.
        let mut earlier_peers: HashMap<String, (u64, u64)> = HashMap::new();
        let mut from_http = 0u64;
        let fallback = self.http_fallback.as_ref().zip(release.http_url.as_ref());
        let wait = async {
            let mut fell_back = false;
            loop {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                let mut watch = StallWatch::new(
                    fallback.map(|(f, _)| f.after).unwrap_or(Duration::MAX),
                    handle.stats().progress_bytes,
                    Instant::now(),
                );
                let stalled = loop {
                    tokio::select! {
                        r = handle.wait_until_completed() => break r.map(|_| false),
                        _ = tick.tick() => {
                            let s = handle.stats();
                            on_progress(s.progress_bytes, s.total_bytes);
                            if fallback.is_some() && !fell_back && watch.stalled(s.progress_bytes, Instant::now()) {
                                break Ok(true);
                            }
                        }
                    }
                };
                if !stalled? {
                    return anyhow::Ok(());
                }
                // Peers delivered nothing for the configured delay: take the
                // torrent out of librqbit (keeping its file), fetch the missing
                // pieces over HTTP, verified, and add it again so librqbit's
                // initial check finds them.
                let (f, url) = fallback.expect("checked");
                fell_back = true;
                tracing::warn!(name = %release.name, after_s = f.after.as_secs(), "no payload from peers; HTTP fallback");
                for (a, c) in peer_bytes(&handle) {
                    let e = earlier_peers.entry(a).or_default();
                    e.0 += c.0;
                    e.1 += c.1;
                }
                self.session.delete(handle.id().into(), false).await.context("cannot pause the torrent")?;
                let table = PieceTable::from_torrent(&torrent)?;
                let src = HttpSource { url: url.clone(), etag: release.etag.clone(), device: f.device.clone() };
                from_http += fill_missing(&self.http, &src, &table, &folder.join(&release.name)).await?;
                handle = add(torrent.clone()).await?;
            }
        };
        let waited = tokio::time::timeout(timeout, wait).await;
        let id = handle.id();
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = self.session.delete(id.into(), true).await;
                let _ = std::fs::remove_dir_all(&folder);
                return Err(e.context("download failed"));
            }
            Err(_) => {
                let _ = self.session.delete(id.into(), true).await;
                let _ = std::fs::remove_dir_all(&folder);
                anyhow::bail!("download did not finish within {} s", timeout.as_secs());
            }
        }
        let stats = handle.stats();
        on_progress(stats.progress_bytes, stats.total_bytes);
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
        let origins = origin_peers().await;
        let mut per_peer = peer_bytes(&handle);
        for (a, c) in earlier_peers {
            let e = per_peer.entry(a).or_default();
            e.0 += c.0;
            e.1 += c.1;
        }
        let split = split_by_source(per_peer.iter().map(|(a, (f, _))| (a.as_str(), *f)), &origins);
        Ok(DownloadOutcome {
            path,
            bytes_from_origin: split.origin,
            bytes_from_peers: split.peers,
            bytes_from_lan_peers: split.lan_peers,
            bytes_from_internet_peers: split.internet_peers,
            bytes_from_origin_http: from_http,
            bytes_uploaded: stats.uploaded_bytes,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Bytes uploaded so far for a release (its seeding counter), if present.
    pub fn uploaded(&self, info_hash: &str) -> Option<u64> {
        let id = librqbit::dht::Id20::from_str(info_hash).ok()?;
        self.session.get(id.into()).map(|h| h.stats().uploaded_bytes)
    }

    /// This agent's 20-byte peer id (Azureus style, `-OA0100-` + 12 random characters).
    pub fn peer_id(&self) -> [u8; 20] {
        self.peer_id
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

use std::str::FromStr;

/// `addr -> (fetched bytes, uploaded bytes)` of a torrent's peers (all states).
fn peer_bytes(handle: &librqbit::ManagedTorrent) -> HashMap<String, (u64, u64)> {
    let snapshot = handle
        .live()
        .map(|l| l.per_peer_stats_snapshot(serde_json::from_value(serde_json::json!({"state": "all"})).unwrap_or_default()))
        .map(|s| serde_json::to_value(&s).unwrap_or_default())
        .unwrap_or_default();
    per_peer_bytes(&snapshot)
}

/// HTTP fallback settings of a [`Downloader`].
#[derive(Debug, Clone)]
pub struct HttpFallback {
    /// Fetch missing pieces over HTTP after peers delivered no payload byte for this long.
    pub after: Duration,
    /// This device's id, sent to the origin as `X-Device-Id`.
    pub device: String,
}

/// An Azureus-style peer id: the 8-byte `prefix` and 12 random alphanumerics.
pub fn random_peer_id(prefix: &[u8; 8]) -> [u8; 20] {
    use rand::Rng;
    const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(prefix);
    let mut rng = rand::thread_rng();
    for b in &mut id[8..] {
        *b = CHARS[rng.gen_range(0..CHARS.len())];
    }
    id
}
