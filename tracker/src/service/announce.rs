//! Announces (BEP 3) and scrapes (BEP 48), after the edge has parsed the
//! query: who may announce, the device's audience, the swarm update and the
//! completed-download count.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use ota_common::clock::wall_secs;
use ota_proto::announce::{AnnounceError, AnnounceEvent, AnnounceRequest, AnnounceResponse, ScrapeStats};
use ota_proto::rollout;
use ota_proto::InfoHash;

use super::{Caller, Tracker};
use crate::registry::DeviceAuth;
use crate::swarm::AnnouncePaths;

/// Why an announce or a scrape was refused. The `Display` text is the
/// bencoded `failure reason` (BEP 3) the client gets, with HTTP 200.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No device token while device authentication is required; the
    /// field names the request (`announce` or `scrape`).
    #[error("device token required: {0} with token=HEX in the URL")]
    TokenRequired(&'static str),
    /// A `token=` that no registered device holds (unknown, revoked or
    /// malformed).
    #[error("unknown or revoked device token")]
    UnknownToken,
    /// The release is not offered to this device (rollout wave, channel,
    /// model).
    #[error(transparent)]
    NotOffered(#[from] rollout::Refusal),
    /// A malformed query, an unregistered info hash or a full swarm.
    #[error(transparent)]
    Protocol(#[from] AnnounceError),
}

impl Tracker {
    /// The caller of an announce, from its query: `origin_token=` equal to
    /// the origin token is the origin ([`Caller::Origin`]; the admin token
    /// is never accepted in a query); else `token=` must be a registered
    /// device's token; without either, the caller is anonymous when device
    /// authentication is off.
    ///
    /// Errors: [`Refusal::UnknownToken`] (also for a wrong `origin_token=`),
    /// or [`Refusal::TokenRequired`] without a token while device
    /// authentication is required.
    pub fn announce_caller(&self, origin_token: Option<&str>, token: Option<&str>) -> Result<Caller, Refusal> {
        if let Some(o) = origin_token {
            return if self.is_origin_token(o) {
                Ok(Caller::Origin)
            } else {
                Err(Refusal::UnknownToken)
            };
        }
        match token {
            Some(t) => self.device(t).map(Caller::Device).ok_or(Refusal::UnknownToken),
            None if self.device_auth == DeviceAuth::Required => Err(Refusal::TokenRequired("announce")),
            None => Ok(Caller::Anonymous),
        }
    }

    /// The caller of a scrape: `token=` in the query must be a registered
    /// device's token, `origin_token=` the origin token; without one, the
    /// admin bearer token or (with device authentication off) nothing.
    ///
    /// Errors: [`Refusal::UnknownToken`], or [`Refusal::TokenRequired`].
    pub fn scrape_caller(
        &self,
        token: Option<&str>,
        origin_token: Option<&str>,
        bearer: Option<&str>,
    ) -> Result<Caller, Refusal> {
        if let Some(o) = origin_token {
            return self.announce_caller(Some(o), None);
        }
        match token {
            Some(t) => self.device(t).map(Caller::Device).ok_or(Refusal::UnknownToken),
            None if bearer.is_some_and(|b| self.is_admin_token(b)) => Ok(Caller::Admin),
            None if self.device_auth == DeviceAuth::Required => Err(Refusal::TokenRequired("scrape")),
            None => Ok(Caller::Anonymous),
        }
    }

    /// One announce from `caller` (see [`Self::announce_caller`]), sent from
    /// `remote`: the peer is listed at `remote`, or at the request's `ip=`
    /// when `remote` is a trusted proxy (`--trusted-proxies`) and `ip=` is
    /// neither unspecified nor multicast. A device must be in
    /// the release's audience; its announce carries its device id (whatever
    /// `device=` said), notes it as seen now, and an `event=completed`
    /// counts one completed download for it (written in the next
    /// persistence round). With device authentication its peer entry is
    /// bound to it (see [`crate::StoreConfig::device_bound`]). The origin
    /// ([`Caller::Origin`]) gets no peers; the admin may not announce.
    ///
    /// Direct paths: a device's LAN address (its last
    /// [`Self::report_paths`], of the announce's address family) goes with
    /// its peer entry, so devices behind the same public address are handed
    /// it; with connectability checks on, a device's public address is
    /// handed out only once the tracker's dial reached it, and a dial of
    /// the announcing device's address starts in the background when its
    /// verdict is unknown or expired (see [`crate::connectability`]). A
    /// device that reported a QUIC endpoint is also handed, after the
    /// peers it can dial, devices it cannot dial that run QUIC too and hold
    /// a push stream ([`Self::bridgeable`]), at their bridge addresses
    /// ([`ota_proto::rendezvous::bridge_address`]; introduced by
    /// [`Self::introduce`]).
    ///
    /// Errors: [`Refusal::NotOffered`] for a device outside the release's
    /// audience; [`Refusal::Protocol`] with
    /// [`AnnounceError::Unregistered`] for an unknown info hash, or
    /// [`AnnounceError::Invalid`] when the swarm is full, the peer id belongs
    /// to another device, or the caller is the admin.
    pub fn announce(
        &self,
        mut request: AnnounceRequest,
        caller: &Caller,
        remote: IpAddr,
    ) -> Result<AnnounceResponse, Refusal> {
        let mut completed_by = None;
        if let Caller::Device(dev) = caller {
            self.offered(&request.info_hash, dev)?;
            dev.seen(wall_secs());
            request.device = Some(dev.device_id.to_string());
            if request.event == AnnounceEvent::Completed {
                completed_by = Some(dev.device_id.clone());
            }
        }
        if matches!(caller, Caller::Admin) {
            return Err(AnnounceError::Invalid("caller", "the admin token does not announce".into()).into());
        }
        let is_origin = matches!(caller, Caller::Origin);
        let ip = match request.ip {
            Some(ip)
                if self.trusted_proxies.contains(&remote.to_canonical())
                    && !ip.is_unspecified()
                    && !ip.is_multicast() =>
            {
                ip
            }
            _ => remote,
        };
        let addr = SocketAddr::new(ip, request.port);
        let lan = match caller {
            Caller::Device(dev) => dev.paths().and_then(|p| p.lan_for(ip)),
            _ => None,
        };
        let quic = match caller {
            Caller::Device(dev) => dev.paths().is_some_and(|p| p.quic.is_some()),
            _ => false,
        };
        let conn = &self.connectability;
        let reachable = |a: SocketAddr| conn.reachable(a);
        let bridgeable = |device: &str| self.bridgeable(device);
        if is_origin {
            let quic = request.origin_quic.filter(|_| request.event != AnnounceEvent::Stopped);
            self.note_origin_quic(ip, quic);
        }
        let origin_quic = |origin: SocketAddr| self.origin_quic(origin).is_some();
        let paths = AnnouncePaths {
            lan,
            reachable: &reachable,
            quic,
            bridgeable: &bridgeable,
            origin_quic: &origin_quic,
        };
        let resp = self
            .store
            .announce_with(&request, addr, is_origin, Instant::now(), paths)?;
        if !is_origin && request.event != AnnounceEvent::Stopped {
            // Dialled in the background; the verdict counts from the next
            // hand-out that lists this peer.
            conn.check(addr);
        }
        if let Some(id) = completed_by {
            self.mirror.count_completion(id, request.info_hash);
        }
        Ok(resp)
    }

    /// [`Self::scrape`] as `caller` sees it: a device gets only the releases
    /// offered to it (its channel, model and rollout wave); the admin, the
    /// origin and anonymous callers (device authentication off) every one.
    pub fn scrape_for(&self, caller: &Caller, hashes: &[InfoHash]) -> Vec<(InfoHash, ScrapeStats)> {
        let mut stats = self.scrape(hashes);
        if let Caller::Device(d) = caller {
            stats.retain(|(ih, _)| self.offered(ih, d).is_ok());
        }
        stats
    }

    /// Scrape counters (BEP 48) of the registered releases among `hashes`
    /// (unknown ones are left out), or of every release when `hashes` is
    /// empty.
    pub fn scrape(&self, hashes: &[InfoHash]) -> Vec<(InfoHash, ScrapeStats)> {
        if hashes.is_empty() {
            self.store.scrape_all()
        } else {
            hashes
                .iter()
                .filter_map(|h| self.store.scrape(h).map(|s| (*h, s)))
                .collect()
        }
    }
}
