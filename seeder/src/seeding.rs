//! Seeding every registered release straight from S3 through librqbit.
//!
//! The seeder polls the tracker's release list; each release whose source is
//! an `s3://` object is added to one librqbit session with an
//! [`S3StorageFactory`] and a `.torrent` whose announce URL carries the origin
//! token, so the tracker knows this peer is the origin. DHT, local service
//! discovery and UPnP are off: the origin is reached only through the tracker.
//!
//! Cost at start: librqbit checks every piece of a newly added torrent, so
//! the first time a release is seeded its whole object is read from S3 once
//! (through the piece cache). librqbit keeps the verified bitfield under
//! `STATE_DIR/fastresume` ([`ota_peer::fastresume`]), so a restart reads
//! only librqbit's spot check (at least one piece per release, a few on
//! average) after the ETag still matches; every piece served is SHA-1
//! checked anyway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use librqbit::{AddTorrentOptions, ManagedTorrent, Session};
use serde::Serialize;

use ota_client::TrackerClient;
use ota_peer::fastresume::Resumable;
use ota_peer::peer_id::{random_peer_id, SEEDER_PREFIX};
use ota_peer::PeerSession;
use ota_proto::api::Release;
use ota_proto::metainfo::{torrent_bytes, InfoDict};
use ota_proto::InfoHash;

use crate::ledger::{now_ms, EgressEntry, EgressPath, Ledger, UploadSampler};
use crate::lifecycle::Releases;
use crate::origin_dial::{Allowance, Dial, DialConfig, OriginGoal, SwarmPeer, SwarmSample};
use crate::origin_store::S3Location;
use crate::piece_cache::PieceCache;
use crate::s3_storage::{S3Counters, S3StorageFactory, S3StorageParams};

/// Settings of the seeding service.
#[derive(Debug, Clone)]
pub struct SeedSettings {
    /// Peer-wire TCP listen address, e.g. `127.0.0.1:6881`.
    pub peer_listen: SocketAddr,
    /// librqbit session folder (nothing is written there for S3 releases).
    pub state_dir: PathBuf,
    /// Piece cache cap, bytes.
    pub cache_bytes: u64,
    /// Pieces read ahead after a miss.
    pub read_ahead: u32,
    /// Upload cap of the origin in bytes/s; `None` for no cap.
    pub upload_limit_bps: Option<u32>,
    /// How often to look for new releases.
    pub poll_interval: Duration,
    /// Origin token: the tracker's `--origin-token` (not its admin token),
    /// sent as `origin_token=` in the announce URL (librqbit can carry a
    /// credential only in the URL's query).
    pub origin_token: String,
    /// How often to re-check each seeded object's ETag in S3.
    pub verify_interval: Duration,
    /// How often to sample per-peer upload counters into the ledger.
    pub ledger_interval: Duration,
    /// Most concurrent piece GETs to S3, over all releases.
    pub max_s3_requests: usize,
    /// Keep librqbit's verified bitfields in `state_dir/fastresume`, so a
    /// restart skips the full read of every object ([`ota_peer::fastresume`]).
    pub fastresume: bool,
    /// UDP address of the QUIC listener ([`ota_peer::quic_listener`]), if
    /// any: announced to the tracker (`quic_port`, `quic_pin`), which hands
    /// it to devices that run QUIC, so their connection to the origin can
    /// migrate. Its certificate lives in `state_dir/quic`.
    pub quic_listen: Option<SocketAddr>,
    /// The cost/speed dial ([`crate::origin_dial`]) of releases that carry
    /// none of their own (`Release::origin_goal`, set at the tracker): how
    /// fast the origin may upload while devices leech. `upload_limit_bps`
    /// is its ceiling.
    pub origin_goal: OriginGoal,
    /// The dial's floor (`min_bps`), margin and measuring window; its
    /// `max_bps` is taken from `upload_limit_bps`.
    pub dial: DialConfig,
    /// How often the dial polls the tracker's peer list of each busy release.
    pub dial_interval: Duration,
}

/// Default interval between dial polls.
pub const DEFAULT_DIAL_INTERVAL: Duration = Duration::from_secs(1);

/// Default piece cache cap, bytes (256 MiB).
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// Default count of pieces read ahead after a cache miss.
pub const DEFAULT_READ_AHEAD: u32 = 16;
/// Default interval between looks for new releases.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Default interval between ETag checks of each seeded object.
pub const DEFAULT_VERIFY_INTERVAL: Duration = Duration::from_secs(30);
/// Default interval between ledger samples.
pub const DEFAULT_LEDGER_INTERVAL: Duration = Duration::from_secs(1);
/// Default cap on concurrent piece GETs to S3.
pub const DEFAULT_MAX_S3_REQUESTS: usize = 16;

impl SeedSettings {
    /// Where librqbit keeps the verified bitfields (`state_dir/fastresume`),
    /// if fast-resume is on.
    pub fn fastresume_dir(&self) -> Option<PathBuf> {
        self.fastresume.then(|| self.state_dir.join("fastresume"))
    }

    /// Settings listening on `peer_listen`, with the session folder
    /// `state_dir`, announcing with `origin_token`; everything else is the
    /// `seed` command's default (`DEFAULT_*`, no upload cap). Change fields
    /// with struct update syntax.
    pub fn new(peer_listen: SocketAddr, state_dir: PathBuf, origin_token: &str) -> Self {
        SeedSettings {
            peer_listen,
            state_dir,
            cache_bytes: DEFAULT_CACHE_BYTES,
            read_ahead: DEFAULT_READ_AHEAD,
            upload_limit_bps: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            origin_token: origin_token.into(),
            verify_interval: DEFAULT_VERIFY_INTERVAL,
            ledger_interval: DEFAULT_LEDGER_INTERVAL,
            max_s3_requests: DEFAULT_MAX_S3_REQUESTS,
            fastresume: true,
            quic_listen: None,
            origin_goal: OriginGoal::Fastest,
            dial: DialConfig::default(),
            dial_interval: DEFAULT_DIAL_INTERVAL,
        }
    }
}

/// Egress of one release, in bytes.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ReleaseEgress {
    /// Info hash (hex in JSON).
    pub info_hash: InfoHash,
    /// Package name.
    pub name: String,
    /// Package size, bytes.
    pub size: u64,
    /// Payload bytes sent over BitTorrent.
    pub bittorrent_bytes: u64,
    /// Body bytes sent over the plain-HTTP path.
    pub http_bytes: u64,
    /// Why seeding stopped, if it did.
    pub error: Option<String>,
}

/// The seeding service: one librqbit session, a shared piece cache and S3 counters.
pub struct Seeder {
    session: Arc<Session>,
    s3: aws_sdk_s3::Client,
    tracker: TrackerClient,
    settings: SeedSettings,
    cache: Arc<Mutex<PieceCache>>,
    /// S3 traffic counters.
    pub counters: Arc<S3Counters>,
    /// Every release's lifecycle state ([`crate::lifecycle`]); never locked across an await.
    releases: Mutex<Releases<Arc<ManagedTorrent>>>,
    ledger: Ledger,
    sampler: Mutex<UploadSampler>,
    /// HTTP body bytes not written yet, by (release, peer, second); written
    /// (and emptied) by [`Self::flush_ledger`].
    pending_http: Mutex<HashMap<(InfoHash, String, i64), PendingHttp>>,
    s3_permits: Arc<tokio::sync::Semaphore>,
    /// The QUIC listener, when [`SeedSettings::quic_listen`] is set and
    /// could bind.
    quic: Option<Arc<ota_peer::quic_listener::QuicListener>>,
    /// One dial per release seen busy, and the origin counter it last read.
    dials: Mutex<HashMap<InfoHash, (Dial, u64)>>,
    /// Each release's own dial setting from the tracker's release list
    /// (absent: [`SeedSettings::origin_goal`]).
    goals: Mutex<HashMap<InfoHash, OriginGoal>>,
    /// Time origin of the dials' samples.
    dial_epoch: Instant,
}

impl Seeder {
    /// Starts the librqbit session (listening on `peer_listen`).
    ///
    /// Errors: the port is taken, or the state folder cannot be created.
    pub async fn start(
        s3: aws_sdk_s3::Client,
        tracker: TrackerClient,
        ledger: Ledger,
        settings: SeedSettings,
    ) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&settings.state_dir)
            .with_context(|| format!("cannot create {}", settings.state_dir.display()))?;
        // Install the Prometheus recorder before anything is counted.
        ota_common::metrics::metrics_handle();
        let session = PeerSession {
            peer_id: Some(random_peer_id(SEEDER_PREFIX)),
            announce_port: None,
            upload_limit_bps: settings.upload_limit_bps,
            client_name: Some(format!("ota-seeder {}", env!("CARGO_PKG_VERSION"))),
            fastresume_dir: settings.fastresume_dir(),
            ..PeerSession::listening(settings.peer_listen)
        }
        .start(settings.state_dir.clone())
        .await?;
        let quic = settings.quic_listen.and_then(|listen| {
            let started = ota_peer::quic_identity::QuicIdentity::load_or_create(&settings.state_dir.join("quic"))
                .and_then(|id| ota_peer::quic_listener::QuicListener::start(listen, &id, settings.peer_listen));
            started
                .inspect_err(|e| {
                    tracing::warn!(%listen, error = %format!("{e:#}"), "no QUIC listener: devices reach the origin over TCP only")
                })
                .ok()
        });
        Ok(Arc::new(Seeder {
            quic,
            session,
            s3,
            tracker,
            cache: Arc::new(Mutex::new(PieceCache::new(settings.cache_bytes))),
            s3_permits: Arc::new(tokio::sync::Semaphore::new(settings.max_s3_requests.max(1))),
            settings,
            counters: Arc::default(),
            releases: Mutex::new(Releases::new()),
            ledger,
            sampler: Mutex::new(UploadSampler::default()),
            pending_http: Mutex::default(),
            dials: Mutex::default(),
            goals: Mutex::default(),
            dial_epoch: Instant::now(),
        }))
    }

    /// The QUIC listener's UDP address and certificate pin, if it runs.
    pub fn quic(&self) -> Option<(SocketAddr, ota_proto::rendezvous::CertFingerprint)> {
        let q = self.quic.as_ref()?;
        Some((q.local_addr().ok()?, q.fingerprint()))
    }

    /// The peer-wire listen address (`SeedSettings::peer_listen`).
    pub fn peer_listen(&self) -> SocketAddr {
        self.settings.peer_listen
    }

    /// The S3 client.
    pub fn s3(&self) -> &aws_sdk_s3::Client {
        &self.s3
    }

    /// The tracker client (its base URL is where package requests are
    /// authorised, see [`crate::http_path`]).
    pub fn tracker(&self) -> &TrackerClient {
        &self.tracker
    }

    /// Adds every registered S3 release not seeded yet. Returns how many were added.
    pub async fn sync_releases(&self) -> anyhow::Result<usize> {
        self.drop_incomplete().await;
        let releases = self.tracker.releases().await?;
        *self.goals.lock().unwrap() = releases
            .iter()
            .filter_map(|r| Some((r.info_hash, r.origin_goal?)))
            .collect();
        let mut added = 0;
        for r in releases {
            if !self.releases.lock().unwrap().should_add(&r, Instant::now()) {
                continue;
            }
            match self.add_release(&r).await {
                Ok(()) => added += 1,
                Err(e) => {
                    tracing::error!(info_hash = %r.info_hash, source = %r.source, error = %format!("{e:#}"), "cannot seed release")
                }
            }
        }
        Ok(added)
    }

    async fn add_release(&self, r: &Release) -> anyhow::Result<()> {
        let location: S3Location = r.source.parse()?;
        let torrent = self.tracker.torrent(&r.info_hash, "origin").await?;
        let info = ota_proto::metainfo::info_from_torrent(&torrent)?;
        let ih = ota_proto::metainfo::info_hash(&info);
        if ih != r.info_hash {
            anyhow::bail!(
                "tracker served an info dictionary that does not hash to {}",
                r.info_hash
            );
        }
        let dict = InfoDict::parse(&info)?;
        let (size, etag) = crate::origin_store::head(&self.s3, &location).await?;
        if let Some(reason) = changed_since_publish(r, &location, size, etag.as_deref()) {
            self.releases.lock().unwrap().refused(r.clone(), reason.clone());
            anyhow::bail!(reason);
        }
        let mut announce = format!(
            "{}/announce?origin_token={}",
            self.tracker.base(),
            ota_proto::announce::encode_binary(self.settings.origin_token.as_bytes())
        );
        if let Some((udp, pin)) = self.quic() {
            announce.push_str(&format!("&quic_port={}&quic_pin={pin}", udp.port()));
        }
        let corrupt = Arc::new(Mutex::new(None));
        // With a fast-resume bitfield librqbit spot-checks a few scattered
        // pieces: no read-ahead until the torrent is live.
        let resumed = self
            .settings
            .fastresume_dir()
            .is_some_and(|dir| ota_peer::fastresume::has_bitfield(&dir, &ih));
        let read_ahead_on = Arc::new(AtomicBool::new(!resumed));
        let factory = S3StorageFactory::new(S3StorageParams {
            s3: self.s3.clone(),
            location: location.clone(),
            info_hash: ih,
            length: dict.length,
            piece_length: dict.piece_length,
            pieces: dict.pieces,
            cache: self.cache.clone(),
            counters: self.counters.clone(),
            // Read ahead at most a quarter of the cache, or the read-ahead
            // pieces would evict each other before they are served.
            read_ahead: self
                .settings
                .read_ahead
                .min((self.settings.cache_bytes / 4 / dict.piece_length.max(1)) as u32),
            retries: 5,
            permits: self.s3_permits.clone(),
            corrupt: corrupt.clone(),
            read_ahead_on: read_ahead_on.clone(),
        });
        let handle = ota_peer::add_torrent(
            &self.session,
            torrent_bytes(&announce, &info),
            &self.settings.state_dir.join(r.info_hash.to_hex()),
            AddTorrentOptions {
                storage_factory: Some(librqbit::storage::StorageFactoryExt::boxed(Resumable(factory))),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("release {}", r.info_hash))?;
        if resumed {
            let torrent = handle.clone();
            tokio::spawn(async move {
                // Bounded: a release removed meanwhile never initializes.
                let _ = tokio::time::timeout(Duration::from_secs(600), torrent.wait_until_initialized()).await;
                read_ahead_on.store(true, Ordering::Relaxed);
            });
        }
        tracing::info!(info_hash = %r.info_hash, %location, "seeding release from S3");
        self.releases
            .lock()
            .unwrap()
            .added(r.clone(), location, handle, corrupt);
        Ok(())
    }

    /// Removes from the session every release whose initial check is over but
    /// left pieces missing (S3 failed for longer than the retry budget), so
    /// that a later sync adds it again and re-checks it. librqbit itself never
    /// re-checks: the origin would stay a leecher that cannot write. Re-adds
    /// back off from 1 s to 5 min ([`crate::lifecycle::next_backoff`]).
    async fn drop_incomplete(&self) {
        use librqbit::TorrentStatsState as S;
        let incomplete: Vec<(InfoHash, librqbit::api::TorrentIdOrHash)> = self
            .releases
            .lock()
            .unwrap()
            .seeding()
            .filter_map(|(ih, s)| {
                let st = s.torrent.stats();
                let checked = matches!(st.state, S::Live | S::Paused | S::Error);
                (checked && !st.finished).then(|| (*ih, s.torrent.id().into()))
            })
            .collect();
        for (ih, id) in incomplete {
            tracing::warn!(info_hash = %ih, "release is not fully readable from S3; will add it again");
            if let Err(e) = self.session.delete(id, false).await {
                tracing::warn!(info_hash = %ih, error = %format!("{e:#}"), "cannot remove release");
                continue;
            }
            self.releases.lock().unwrap().recheck_later(&ih, Instant::now());
        }
    }

    /// Stops seeding a release for good (until the seeder restarts) and says why.
    async fn stop_release(&self, info_hash: &InfoHash, reason: String) {
        let Some((location, torrent)) = self.releases.lock().unwrap().stop(info_hash, reason.clone()) else {
            return;
        };
        tracing::error!(%info_hash, %location, %reason, "stopped seeding release");
        if let Err(e) = self.session.pause(&torrent).await {
            tracing::warn!(%info_hash, error = %format!("{e:#}"), "cannot pause torrent");
        }
        self.cache.lock().unwrap().remove_release(info_hash);
    }

    /// Re-checks every seeded release: a piece that failed its SHA-1, or an
    /// object whose ETag or size changed in S3, stops the release. An S3
    /// error only logs (the next check tries again).
    pub async fn verify_sources(&self) {
        let seeded: Vec<(InfoHash, Release, S3Location, Option<String>)> = self
            .releases
            .lock()
            .unwrap()
            .seeding()
            .map(|(ih, s)| {
                (
                    *ih,
                    s.release.clone(),
                    s.location.clone(),
                    s.corrupt.lock().unwrap().clone(),
                )
            })
            .collect();
        for (ih, release, location, corrupt) in seeded {
            if let Some(reason) = corrupt {
                self.stop_release(&ih, reason).await;
                continue;
            }
            match crate::origin_store::head(&self.s3, &location).await {
                Ok((size, etag)) => {
                    if let Some(reason) = changed_since_publish(&release, &location, size, etag.as_deref()) {
                        self.stop_release(&ih, reason).await;
                    }
                }
                Err(e) => tracing::warn!(%location, error = %format!("{e:#}"), "cannot check object"),
            }
        }
    }

    /// Samples librqbit's per-peer upload counters and writes the bytes sent
    /// since the last sample to the ledger, with the HTTP bytes counted
    /// since the last write ([`Self::record_http`]), in one transaction.
    /// The sampler forgets peers that left and releases no longer live.
    ///
    /// Errors: the ledger write failed; the rows of this round are then
    /// lost (the error says how many).
    pub async fn flush_ledger(&self) -> anyhow::Result<()> {
        let snapshots: Vec<(InfoHash, serde_json::Value)> = self
            .releases
            .lock()
            .unwrap()
            .seeding()
            .filter_map(|(ih, s)| {
                let live = s.torrent.live()?;
                let filter = serde_json::from_value(serde_json::json!({"state": "all"})).ok()?;
                Some((*ih, serde_json::to_value(live.per_peer_stats_snapshot(filter)).ok()?))
            })
            .collect();
        let now = now_ms();
        let mut entries: Vec<EgressEntry> = std::mem::take(&mut *self.pending_http.lock().unwrap())
            .into_iter()
            .map(|((info_hash, peer, second), p)| EgressEntry {
                at_ms: second * 1000,
                info_hash,
                path: EgressPath::Http,
                peer,
                device: p.device,
                bytes: p.bytes,
            })
            .collect();
        {
            let mut sampler = self.sampler.lock().unwrap();
            let live: std::collections::HashSet<InfoHash> = snapshots.iter().map(|(ih, _)| *ih).collect();
            sampler.retain_releases(|ih| live.contains(ih));
            for (ih, snap) in snapshots {
                let counters = snap["peers"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(addr, p)| (addr.clone(), p["counters"]["uploaded_bytes"].as_u64().unwrap_or(0)))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                for (peer, bytes) in sampler.deltas(&ih, counters) {
                    // A device that came over QUIC is a loopback address to
                    // librqbit: record its UDP address instead.
                    let peer = match (&self.quic, peer.parse::<SocketAddr>()) {
                        (Some(q), Ok(seen)) => q.remote_of(seen).map_or(peer, |r| r.to_string()),
                        _ => peer,
                    };
                    metrics::counter!("ota_seeder_egress_bytes_total", "path" => "bittorrent").increment(bytes);
                    entries.push(EgressEntry {
                        at_ms: now,
                        info_hash: ih,
                        path: EgressPath::Bittorrent,
                        peer,
                        device: None,
                        bytes,
                    });
                }
            }
        }
        self.ledger
            .record(&entries)
            .await
            .with_context(|| format!("{} ledger rows lost", entries.len()))?;
        Ok(())
    }

    /// Counts one HTTP response's body bytes (sent by `peer`, `ip:port`, for
    /// `device` when the tracker vouched for one) into the ledger row of
    /// its (release, peer, second), written by the next
    /// [`Self::flush_ledger`] (at most the ledger interval later). Never
    /// blocks on the database.
    pub fn record_http(&self, info_hash: &InfoHash, peer: String, device: Option<String>, bytes: u64) {
        metrics::counter!("ota_seeder_egress_bytes_total", "path" => "http").increment(bytes);
        if bytes == 0 {
            return;
        }
        let second = now_ms().div_euclid(1000);
        let mut pending = self.pending_http.lock().unwrap();
        let p = pending.entry((*info_hash, peer, second)).or_default();
        p.bytes += bytes;
        if p.device.is_none() {
            p.device = device;
        }
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Runs the periodic work (ledger sampling, source checks) until the process ends.
    pub async fn run_maintenance_loop(self: Arc<Self>) {
        let mut ledger_tick = tokio::time::interval(self.settings.ledger_interval);
        let mut verify_tick = tokio::time::interval(self.settings.verify_interval);
        loop {
            tokio::select! {
                _ = ledger_tick.tick() => {
                    if let Err(e) = self.flush_ledger().await {
                        tracing::error!(error = %format!("{e:#}"), "ledger write failed");
                    }
                }
                _ = verify_tick.tick() => self.verify_sources().await,
            }
        }
    }

    /// One round of the cost/speed dial ([`crate::origin_dial`]): for each
    /// seeding release that is busy (its dial not idle, or its upload
    /// counter moved: an origin that sends nothing needs no limit), or for
    /// every release with `poll_all` (the loop's first round), reads the
    /// tracker's peer list and the
    /// origin's upload counter, and sets librqbit's session-wide upload
    /// limit to the sum of the releases' allowances (unlimited when one
    /// is; the idle allowance of the goal when none leeches). A tracker
    /// that does not answer within 2 s leaves that release's last
    /// allowance in place. Returns the limit set, bytes/s (`None`: unlimited).
    pub async fn dial_round(&self, poll_all: bool) -> Option<u32> {
        let torrents: Vec<(InfoHash, u64)> = self
            .releases
            .lock()
            .unwrap()
            .seeding()
            .map(|(ih, s)| (*ih, s.torrent.stats().uploaded_bytes))
            .collect();
        let default_goal = self.settings.origin_goal;
        let goals = self.goals.lock().unwrap().clone();
        let goal_of = |ih: &InfoHash| goals.get(ih).copied().unwrap_or(default_goal);
        let config = DialConfig {
            max_bps: self.settings.upload_limit_bps.map(u64::from),
            ..self.settings.dial
        };
        let seeding: std::collections::HashSet<InfoHash> = torrents.iter().map(|(ih, _)| *ih).collect();
        for (ih, uploaded) in torrents {
            let busy = {
                let mut dials = self.dials.lock().unwrap();
                let (dial, last) = dials.entry(ih).or_insert_with(|| (Dial::new(goal_of(&ih), config), 0));
                dial.set_goal(goal_of(&ih));
                let moved = *last != uploaded;
                *last = uploaded;
                moved || poll_all || dial.is_busy()
            };
            if !busy {
                continue;
            }
            let peers = match tokio::time::timeout(Duration::from_secs(2), self.tracker.peers(&ih)).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    tracing::debug!(info_hash = %ih, error = %format!("{e:#}"), "dial: no peer list");
                    continue;
                }
                Err(_) => continue,
            };
            let sample = SwarmSample {
                at: self.dial_epoch.elapsed(),
                peers: peers
                    .iter()
                    .filter(|p| !p.is_origin)
                    .map(|p| SwarmPeer {
                        id: p.peer_id.to_hex(),
                        left: p.left,
                    })
                    .collect(),
                origin_uploaded: uploaded,
            };
            let reading = match self.dials.lock().unwrap().get_mut(&ih) {
                Some((dial, _)) => dial.observe(&sample),
                None => continue,
            };
            tracing::debug!(info_hash = %ih, ?reading, "dial");
        }
        let total = {
            let mut dials = self.dials.lock().unwrap();
            dials.retain(|ih, _| seeding.contains(ih));
            Allowance::total(dials.values().map(|(dial, _)| dial.allowance()))
        }
        .unwrap_or_else(|| Dial::new(default_goal, config).idle_allowance());
        let limit = match total {
            Allowance::Unlimited | Allowance::Idle => None,
            Allowance::Limited(b) => Some(b.clamp(1, u64::from(u32::MAX)) as u32),
        };
        let current = self.session.ratelimits.get_upload_bps().map(|b| b.get());
        if current != limit {
            tracing::info!(default_goal = %default_goal, limit_bps = ?limit, "origin upload limit");
            self.session
                .ratelimits
                .set_upload_bps(limit.and_then(std::num::NonZeroU32::new));
        }
        metrics::gauge!("ota_seeder_origin_limit_bps").set(f64::from(limit.unwrap_or(0)));
        limit
    }

    /// Runs [`Self::dial_round`] every `dial_interval` until the process ends.
    pub async fn run_dial_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.dial_interval);
        let mut first = true;
        loop {
            tick.tick().await;
            self.dial_round(first).await;
            first = false;
        }
    }

    /// Polls the tracker for new releases until the process ends.
    pub async fn run_sync_loop(self: Arc<Self>) {
        loop {
            if let Err(e) = self.sync_releases().await {
                tracing::warn!(error = %format!("{e:#}"), "cannot list releases");
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    /// Whether a release is seeded and its initial check is done.
    pub fn is_seeding(&self, info_hash: &InfoHash) -> bool {
        self.releases
            .lock()
            .unwrap()
            .seeded(info_hash)
            .is_some_and(|s| s.torrent.stats().finished)
    }

    /// The release whose S3 key is `key`, if seeded.
    pub fn release_by_key(&self, key: &str) -> Option<Release> {
        self.releases
            .lock()
            .unwrap()
            .seeding()
            .map(|(_, s)| s)
            .find(|s| s.release.source.parse::<S3Location>().is_ok_and(|l| l.key == key))
            .map(|s| s.release.clone())
    }

    /// Egress per release from the ledger (sampled just now): BitTorrent
    /// payload bytes and HTTP body bytes, with the reason if seeding stopped.
    pub async fn egress(&self) -> anyhow::Result<Vec<ReleaseEgress>> {
        self.flush_ledger().await?;
        let totals: HashMap<InfoHash, crate::ledger::ReleaseTotals> = self
            .ledger
            .totals()
            .await?
            .into_iter()
            .map(|t| (t.info_hash, t))
            .collect();
        let rows = self.releases.lock().unwrap().report(|t| t.stats().error);
        let mut out: Vec<ReleaseEgress> = rows
            .into_iter()
            .map(|(r, error)| {
                let t = totals.get(&r.info_hash).cloned().unwrap_or_default();
                ReleaseEgress {
                    info_hash: r.info_hash,
                    name: r.name.clone(),
                    size: r.size,
                    bittorrent_bytes: t.bittorrent_bytes,
                    http_bytes: t.http_bytes,
                    error,
                }
            })
            .collect();
        out.sort_by_key(|e| e.info_hash);
        Ok(out)
    }

    /// Stops the librqbit session.
    pub async fn stop(&self) {
        if let Some(q) = &self.quic {
            q.close().await;
        }
        self.session.stop().await;
    }
}

/// HTTP bytes of one (release, peer, second) not written to the ledger yet.
#[derive(Debug, Default)]
struct PendingHttp {
    bytes: u64,
    device: Option<String>,
}

/// Why the object no longer is what was published, if it is not: a size or
/// ETag different from the release's, or no ETag to compare (a release
/// registered without one, or S3 answering without one): size alone never
/// decides that an object is unchanged.
fn changed_since_publish(r: &Release, location: &S3Location, size: u64, etag: Option<&str>) -> Option<String> {
    if size != r.size {
        return Some(format!(
            "{location} is {size} bytes but release {} was published at {}; not serving it",
            r.info_hash, r.size
        ));
    }
    match (&r.etag, etag) {
        (None, _) => Some(format!(
            "release {} was registered without an ETag, so a change of {location} could not be seen; \
             publish it again with ota-seeder publish; not serving it",
            r.info_hash
        )),
        (Some(_), None) => Some(format!(
            "S3 answered without an ETag for {location}, so a change could not be seen; not serving it"
        )),
        (Some(published), Some(now)) if published != now => Some(format!(
            "{location} changed since it was published (ETag {published} then, {now} now); not serving it"
        )),
        _ => None,
    }
}
