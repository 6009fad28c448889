//! Releases: registration, listing per caller, `.torrent` files, pushes,
//! rollout waves, telemetry and the live swarm of one release.

use std::time::Instant;

use ota_proto::api::{NewRelease, PeerInfo, PushEvent, Release, TelemetryReport};
use ota_proto::InfoHash;

use super::{audience_of, ApiError, Caller, PushMsg, Tracker};
use crate::registry::StoredRelease;

/// Most a telemetry byte count may be, as a multiple of the release's size
/// (retries and re-downloads count more than once; uploads serve several
/// peers).
pub const MAX_BYTES_FACTOR: u64 = 16;

/// Longest telemetry error text, in bytes.
pub const MAX_ERROR_LEN: usize = 4096;

/// Refuses a report whose counts no honest device can send for a release of
/// `size` bytes (see [`Tracker::add_telemetry`]).
fn check_report(r: &TelemetryReport, size: u64) -> Result<(), ApiError> {
    let cap = size.saturating_mul(MAX_BYTES_FACTOR).max(1 << 20);
    let counts = [
        ("bytes_from_peers", r.bytes_from_peers),
        ("bytes_from_lan_peers", r.bytes_from_lan_peers),
        ("bytes_from_internet_peers", r.bytes_from_internet_peers),
        ("bytes_from_origin", r.bytes_from_origin),
        ("bytes_from_origin_http", r.bytes_from_origin_http),
        ("bytes_uploaded", r.bytes_uploaded),
    ];
    if let Some((name, v)) = counts.iter().find(|(_, v)| *v > cap) {
        return Err(ApiError::BadRequest(format!(
            "{name} = {v} is more than {MAX_BYTES_FACTOR} × the release size ({size} bytes)"
        )));
    }
    if r.bytes_from_lan_peers.saturating_add(r.bytes_from_internet_peers) > r.bytes_from_peers {
        return Err(ApiError::BadRequest(
            "bytes_from_lan_peers + bytes_from_internet_peers is more than bytes_from_peers".into(),
        ));
    }
    if r.duration_ms > 30 * 24 * 3600 * 1000 {
        return Err(ApiError::BadRequest("duration_ms is more than 30 days".into()));
    }
    if r.error.as_ref().is_some_and(|e| e.len() > MAX_ERROR_LEN) {
        return Err(ApiError::BadRequest(format!(
            "error is longer than {MAX_ERROR_LEN} bytes"
        )));
    }
    if r.nat.as_ref().is_some_and(|n| n.len() > ota_proto::api::MAX_NAT_LEN) {
        return Err(ApiError::BadRequest(format!(
            "nat is longer than {} bytes",
            ota_proto::api::MAX_NAT_LEN
        )));
    }
    Ok(())
}

/// What [`Tracker::set_rollout`] changed; the JSON answer of `POST
/// /api/releases/{info_hash}/rollout`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RolloutChange {
    /// The release.
    pub info_hash: InfoHash,
    /// Its rollout percentage now, 0..=100.
    pub percent: u8,
    /// Its rollout percentage before.
    pub previous_percent: u8,
    /// Push subscribers the release was pushed to (0 unless it was pushed
    /// before and the wave grew).
    pub delivered: usize,
}

impl Tracker {
    /// A stored release by info hash.
    ///
    /// Errors: [`ApiError::NotFound`], or a database failure.
    pub async fn find(&self, info_hash: &InfoHash) -> Result<StoredRelease, ApiError> {
        self.registry
            .get(info_hash)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no release {info_hash}")))
    }

    /// The release, if `caller` may see it.
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Forbidden`] with the
    /// reason for a device it is not offered to.
    pub async fn find_for(&self, caller: &Caller, info_hash: &InfoHash) -> Result<StoredRelease, ApiError> {
        let r = self.find(info_hash).await?;
        if let Caller::Device(d) = caller {
            self.offered(info_hash, d)
                .map_err(|e| ApiError::Forbidden(e.to_string()))?;
        }
        Ok(r)
    }

    /// The release as the API shows it, with the origins live in its swarm.
    fn with_origins(&self, s: StoredRelease) -> Release {
        let mut r = s.release;
        // A QUIC origin is listed at its bridge address too: the address
        // librqbit keys its per-peer counters by when it came over QUIC.
        r.origin_peers = self
            .store
            .origin_peers(&r.info_hash)
            .into_iter()
            .flat_map(|(addr, bridge)| {
                let quic = self.origin_quic(addr).is_some();
                std::iter::once(addr.to_string()).chain(quic.then(|| bridge.to_string()))
            })
            .collect();
        r
    }

    /// The releases offered to `caller` (every release for the admin and
    /// anonymous callers), newest first.
    ///
    /// Errors: a database failure.
    pub async fn releases(&self, caller: &Caller) -> Result<Vec<Release>, ApiError> {
        let all = self.registry.list().await?;
        Ok(all
            .into_iter()
            .filter(|r| match caller {
                Caller::Device(d) => self.offered(&r.release.info_hash, d).is_ok(),
                _ => true,
            })
            .map(|r| self.with_origins(r))
            .collect())
    }

    /// One release for `caller` (see [`Self::find_for`]).
    ///
    /// Errors: as [`Self::find_for`].
    pub async fn release(&self, caller: &Caller, info_hash: &InfoHash) -> Result<Release, ApiError> {
        Ok(self.with_origins(self.find_for(caller, info_hash).await?))
    }

    /// Registers (or re-registers) a release and starts tracking its swarm.
    ///
    /// Errors: [`ApiError::BadRequest`] for an invalid release (see
    /// [`crate::registry::Registry::register`]), or a database failure.
    pub async fn register_release(&self, new: &NewRelease) -> Result<Release, ApiError> {
        let release = self.registry.register(new).await?;
        let ih = release.info_hash;
        self.store.register(ih);
        let stored = self.find(&ih).await?;
        self.audiences
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ih, audience_of(&stored));
        metrics::gauge!("ota_tracker_rollout_percent", "info_hash" => ih.to_hex()).set(release.rollout_percent as f64);
        tracing::info!(info_hash = %ih, name = %release.name, rollout = release.rollout_percent, "release registered");
        Ok(release)
    }

    /// The announce URL written into a `.torrent` for `caller`:
    /// `PUBLIC_URL/announce?token=TOKEN` for a device calling with bearer
    /// token `bearer`; else `PUBLIC_URL/announce`, with `?device=ID`
    /// (percent-encoded) when `device` is given.
    pub fn announce_url(&self, caller: &Caller, bearer: Option<&str>, device: Option<&str>) -> String {
        match (caller, bearer) {
            (Caller::Device(_), Some(token)) => format!("{}/announce?token={token}", self.public_url),
            _ => {
                let mut a = format!("{}/announce", self.public_url);
                if let Some(d) = device {
                    a.push_str("?device=");
                    a.push_str(&ota_proto::announce::encode_binary(d.as_bytes()));
                }
                a
            }
        }
    }

    /// The `.torrent` file (BEP 3) of a release for `caller`, with the
    /// announce URL of [`Self::announce_url`].
    ///
    /// Errors: as [`Self::find_for`].
    pub async fn torrent(
        &self,
        caller: &Caller,
        info_hash: &InfoHash,
        bearer: Option<&str>,
        device: Option<&str>,
    ) -> Result<Vec<u8>, ApiError> {
        let r = self.find_for(caller, info_hash).await?;
        Ok(ota_proto::metainfo::torrent_bytes(
            &self.announce_url(caller, bearer, device),
            &r.info,
        ))
    }

    /// Pushes a release to the subscribers it is offered to; returns how
    /// many subscribers the push bus holds (each filters by its device).
    ///
    /// Errors: [`ApiError::NotFound`], or a database failure.
    pub async fn push_release(&self, info_hash: &InfoHash) -> Result<usize, ApiError> {
        let r = self.find(info_hash).await?.release;
        self.registry.mark_pushed(info_hash).await?;
        self.claim_grant_lease_now(info_hash).await;
        if let Some(a) = self
            .audiences
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(info_hash)
        {
            a.pushed = true;
        }
        let event = PushEvent {
            info_hash: r.info_hash,
            name: r.name,
            version: r.version,
        };
        let delivered = self.send_push(PushMsg {
            event,
            previous_percent: None,
            replicated: false,
        });
        metrics::counter!("ota_tracker_pushes_total").increment(1);
        tracing::info!(%info_hash, delivered, "release pushed");
        Ok(delivered)
    }

    /// Sets (or with `None` clears) a release's origin cost/speed dial
    /// ([`ota_proto::origin_goal`]); the seeder reads it with the release
    /// list and applies it from its next dial round. Returns the release
    /// as the API shows it.
    ///
    /// Errors: [`ApiError::NotFound`], or a database failure.
    pub async fn set_origin_goal(
        &self,
        info_hash: &InfoHash,
        goal: Option<ota_proto::origin_goal::OriginGoal>,
    ) -> Result<Release, ApiError> {
        if !self.registry.set_origin_goal(info_hash, goal).await? {
            return Err(ApiError::NotFound(format!("no release {info_hash}")));
        }
        tracing::info!(%info_hash, goal = ?goal.map(|g| g.to_string()), "origin goal changed");
        Ok(self.with_origins(self.find(info_hash).await?))
    }

    /// Sets a release's rollout percentage. Raising it pushes a pushed
    /// release to the devices it newly includes.
    ///
    /// Errors: [`ApiError::BadRequest`] for a percentage above 100,
    /// [`ApiError::NotFound`], or a database failure.
    pub async fn set_rollout(&self, info_hash: &InfoHash, percent: u8) -> Result<RolloutChange, ApiError> {
        if percent > 100 {
            return Err(ApiError::BadRequest(format!("percent must be 0..=100, got {percent}")));
        }
        let r = self.find(info_hash).await?;
        if !self.registry.set_rollout(info_hash, percent).await? {
            return Err(ApiError::NotFound(format!("no release {info_hash}")));
        }
        let (previous, pushed) = {
            let mut audiences = self.audiences.write().unwrap_or_else(|e| e.into_inner());
            let a = audiences.entry(*info_hash).or_insert_with(|| audience_of(&r));
            let previous = a.percent;
            a.percent = percent;
            (previous, a.pushed)
        };
        metrics::gauge!("ota_tracker_rollout_percent", "info_hash" => info_hash.to_hex()).set(percent as f64);
        let mut delivered = 0;
        if pushed && percent > previous {
            let event = PushEvent {
                info_hash: *info_hash,
                name: r.release.name,
                version: r.release.version,
            };
            delivered = self.send_push(PushMsg {
                event,
                previous_percent: Some(previous),
                replicated: false,
            });
        }
        tracing::info!(%info_hash, percent, previous, "rollout changed");
        Ok(RolloutChange {
            info_hash: *info_hash,
            percent,
            previous_percent: previous,
            delivered,
        })
    }

    /// Stores a telemetry report; a device's report is filed under the
    /// device's own id whatever `report.device` says, and only for a
    /// release offered to it. Every byte count must be at most
    /// [`MAX_BYTES_FACTOR`] × the release's size, the parts of
    /// `bytes_from_peers` (LAN, internet) at most their whole, the error
    /// text at most [`MAX_ERROR_LEN`] bytes.
    ///
    /// Errors: [`ApiError::NotFound`] for an unknown release,
    /// [`ApiError::Forbidden`] for a release not offered to the device,
    /// [`ApiError::BadRequest`] for implausible counts, or a database
    /// failure.
    pub async fn add_telemetry(&self, caller: &Caller, mut report: TelemetryReport) -> Result<(), ApiError> {
        match caller {
            Caller::Device(d) => report.device = d.device_id.to_string(),
            Caller::Origin => return Err(ApiError::ADMIN_REQUIRED),
            Caller::Admin | Caller::Anonymous => {}
        }
        let r = self.find_for(caller, &report.info_hash).await?;
        check_report(&report, r.release.size)?;
        self.registry.add_telemetry(&report).await?;
        metrics::counter!("ota_tracker_telemetry_reports_total").increment(1);
        Ok(())
    }

    /// The latest telemetry report of each device for a release. Reports
    /// name devices: only the admin reads them (also with device
    /// authentication off).
    ///
    /// Errors: [`ApiError::Unauthorized`] for anyone else, or a database
    /// failure.
    pub async fn telemetry(&self, caller: &Caller, info_hash: &InfoHash) -> Result<Vec<TelemetryReport>, ApiError> {
        if !matches!(caller, Caller::Admin) {
            return Err(ApiError::ADMIN_REQUIRED);
        }
        Ok(self.registry.telemetry(info_hash).await?)
    }

    /// The live swarm of a release as the admin API shows it (seeders
    /// first, then by peer id).
    ///
    /// Errors: [`ApiError::NotFound`] for an info hash the tracker does not
    /// track.
    pub fn peers(&self, info_hash: &InfoHash) -> Result<Vec<PeerInfo>, ApiError> {
        let peers = self
            .store
            .peers(info_hash, Instant::now())
            .ok_or_else(|| ApiError::NotFound(format!("no release {info_hash}")))?;
        let devices = self.devices.read().unwrap_or_else(|e| e.into_inner());
        Ok(peers
            .into_iter()
            .map(|p| {
                let tag = &p.peer_id.0[..8];
                let paths = p
                    .device
                    .as_deref()
                    .and_then(|d| devices.current(d))
                    .and_then(|d| d.paths());
                PeerInfo {
                    peer_id: p.peer_id,
                    client: if tag.iter().all(|b| b.is_ascii_graphic()) {
                        String::from_utf8_lossy(tag).into_owned()
                    } else {
                        String::new()
                    },
                    addr: p.addr.to_string(),
                    left: p.left,
                    is_origin: p.is_origin,
                    granted: p.granted,
                    device: p.device,
                    age_ms: p.age.as_millis() as u64,
                    lan: p.lan.map(|a| a.to_string()),
                    reach: (!p.is_origin).then(|| self.connectability.reach(p.addr, p.lan.is_some())),
                    mapped: paths.as_ref().and_then(|x| x.mapped).map(|a| a.to_string()),
                    mapping_refusal: paths.as_ref().and_then(|x| x.mapping_refusal.clone()),
                    nat: paths.as_ref().and_then(|x| x.nat),
                }
            })
            .collect())
    }
}
