//! Introductions for hole punching (`POST /api/introductions`): the caller
//! got a bridge address in its announce ([`crate::swarm::store`]), its
//! SOCKS5 bridge asks the tracker to introduce it to the peer behind it;
//! the tracker answers with the target's [`Introduction`] and pushes the
//! caller's to the target's push streams (SSE event `introduce`). The pure
//! part (candidates, rate limits) is [`crate::swarm::rendezvous`].

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;

use ota_proto::announce::AnnounceError;
use ota_proto::nat_kind::NatKind;
use ota_proto::rendezvous::{bridge_slot, bridge_swarm_tag, CertFingerprint, Introduction, IntroductionRequest};

use super::{ApiError, Caller, Tracker};
use crate::swarm::rendezvous::{introduction, Side};
use crate::swarm::RendezvousPeer;

/// Most origin QUIC listeners the tracker remembers (origins are few and
/// authenticated; the bound keeps a leaked origin token from growing it).
pub(crate) const MAX_ORIGIN_QUIC: usize = 64;

impl Tracker {
    /// Records what an authenticated origin announce from `ip` said of its
    /// QUIC listener (`quic_port`, `quic_pin`): `Some` sets it, `None`
    /// (an announce without them, or `stopped`) forgets it. Beyond
    /// [`MAX_ORIGIN_QUIC`] IPs, new ones are not recorded.
    pub(crate) fn note_origin_quic(&self, ip: IpAddr, quic: Option<(u16, CertFingerprint)>) {
        let mut map = self.origin_quic.write().unwrap_or_else(|e| e.into_inner());
        match quic {
            Some(q) if map.len() < MAX_ORIGIN_QUIC || map.contains_key(&ip) => {
                map.insert(ip, q);
            }
            Some(_) => tracing::warn!(%ip, "too many origin QUIC listeners: not recorded"),
            None => {
                map.remove(&ip);
            }
        }
    }

    /// The QUIC listener of the origin peer listed at `origin` (its TCP
    /// peer address): its UDP address (same IP, the announced QUIC port)
    /// and pin, when it announced one that a device would accept as a
    /// candidate ([`Introduction::check`]: not loopback, so origins on
    /// loopback stay TCP-only).
    pub fn origin_quic(&self, origin: SocketAddr) -> Option<(SocketAddr, CertFingerprint)> {
        let (port, pin) = *self
            .origin_quic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&origin.ip())?;
        let udp = SocketAddr::new(origin.ip(), port);
        origin_introduction(0, Default::default(), udp, pin).check().ok()?;
        Some((udp, pin))
    }

    /// Whether device `device_id` can be introduced for a punched QUIC
    /// path: it is registered, reported a QUIC endpoint
    /// ([`DirectPaths::quic`](ota_proto::direct_paths::DirectPaths::quic))
    /// and holds at least one open push stream (over which the tracker
    /// pushes the introduction).
    pub fn bridgeable(&self, device_id: &str) -> bool {
        let quic = self
            .devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .current(device_id)
            .and_then(|d| d.paths())
            .is_some_and(|p| p.quic.is_some());
        quic && self.device_streams(device_id) > 0
    }

    /// [`Self::introduce_at`] now.
    ///
    /// Errors: as [`Self::introduce_at`].
    pub fn introduce(&self, caller: &Caller, request: &IntroductionRequest) -> Result<Introduction, ApiError> {
        self.introduce_at(caller, request, Instant::now())
    }

    /// Introduces the calling device to the peer behind the bridge address
    /// `request.peer` in swarm `request.info_hash`, at `now` (the clock of
    /// the peer timeout and of the rate limits): answers the target's
    /// [`Introduction`] and pushes the caller's to the target's push
    /// streams ([`super::PushItem::Introduce`]); both carry the same `id`, a
    /// tracker-wide counter from 1. Counted in the Prometheus counter
    /// `ota_tracker_introductions_total{outcome}` (`introduced`,
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `rate_limited`).
    ///
    /// Candidates of each side for the other: see
    /// [`crate::swarm::rendezvous::candidates`].
    ///
    /// Errors:
    /// - [`ApiError::Unauthorized`] unless the caller is a device;
    /// - [`ApiError::BadRequest`] when `peer` is not a bridge address of
    ///   this swarm, or stands for the caller's own device;
    /// - [`ApiError::Forbidden`] when the release is not offered to the
    ///   caller or the caller holds no live peer entry in the swarm;
    /// - [`ApiError::NotFound`] for an unknown release, or a slot no live
    ///   peer holds;
    /// - [`ApiError::Conflict`] when the target is not a device that
    ///   reported a QUIC endpoint and holds a push stream, when the caller
    ///   reported no QUIC endpoint, or when either side has no candidate
    ///   address a device would accept;
    /// - [`ApiError::TooMany`] past the rate limits
    ///   ([`crate::swarm::rendezvous::IntroductionLimiter`]).
    pub fn introduce_at(
        &self,
        caller: &Caller,
        request: &IntroductionRequest,
        now: Instant,
    ) -> Result<Introduction, ApiError> {
        let r = self.try_introduce(caller, request, now);
        let outcome = match &r {
            Ok(_) => "introduced",
            Err(ApiError::BadRequest(_)) => "bad_request",
            Err(ApiError::Unauthorized(_)) => "unauthorized",
            Err(ApiError::Forbidden(_)) => "forbidden",
            Err(ApiError::NotFound(_)) => "not_found",
            Err(ApiError::Conflict(_)) => "conflict",
            Err(ApiError::TooMany(_)) => "rate_limited",
            Err(ApiError::Database(_)) => "error",
        };
        metrics::counter!("ota_tracker_introductions_total", "outcome" => outcome).increment(1);
        match &r {
            Ok(i) => tracing::debug!(id = i.id, info_hash = %request.info_hash, peer = %request.peer, "introduced"),
            Err(e) => {
                tracing::debug!(error = %e, info_hash = %request.info_hash, peer = %request.peer, "introduction refused")
            }
        }
        r
    }

    fn try_introduce(
        &self,
        caller: &Caller,
        request: &IntroductionRequest,
        now: Instant,
    ) -> Result<Introduction, ApiError> {
        let Caller::Device(dev) = caller else {
            return Err(ApiError::Unauthorized(
                "only a device asks for introductions (its token)",
            ));
        };
        let ih = request.info_hash;
        let peer = IpAddr::V6(request.peer);
        let slot = bridge_slot(peer)
            .ok_or_else(|| ApiError::BadRequest(format!("{} is not a bridge address", request.peer)))?;
        if bridge_swarm_tag(peer).is_some_and(|tag| tag[..] != ih.0[..6]) {
            return Err(ApiError::BadRequest(format!(
                "{} is a bridge address of another swarm",
                request.peer
            )));
        }
        self.offered(&ih, dev).map_err(|e| ApiError::Forbidden(e.to_string()))?;
        let not_found = |e: AnnounceError| match e {
            AnnounceError::Unregistered(_) => ApiError::NotFound(format!("no release {ih}")),
            other => ApiError::BadRequest(other.to_string()),
        };
        let mine = self.store.device_peers(&ih, &dev.device_id, now).map_err(not_found)?;
        if mine.is_empty() {
            return Err(ApiError::Forbidden(format!(
                "device {} is not a live peer of swarm {ih}",
                dev.device_id
            )));
        }
        let target = self
            .store
            .peer_at_slot(&ih, slot, now)
            .map_err(not_found)?
            .ok_or_else(|| ApiError::NotFound(format!("no live peer at slot {slot} of swarm {ih}")))?;
        if target.is_origin {
            return self.introduce_origin(dev, request, &target, now);
        }
        let target_device = match target.device.as_deref() {
            Some(d) if !target.is_origin => d,
            _ => {
                return Err(ApiError::Conflict(
                    "the peer is not a device with a QUIC endpoint".into(),
                ))
            }
        };
        if target_device == &*dev.device_id {
            return Err(ApiError::BadRequest("a device is not introduced to itself".into()));
        }
        let target_entry = self
            .devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .current(target_device)
            .cloned();
        let target_paths = target_entry
            .and_then(|d| d.paths())
            .filter(|p| p.quic.is_some())
            .ok_or_else(|| ApiError::Conflict(format!("device {target_device} reported no QUIC endpoint")))?;
        if self.device_streams(target_device) == 0 {
            return Err(ApiError::Conflict(format!(
                "device {target_device} holds no push subscription"
            )));
        }
        let my_paths = dev
            .paths()
            .filter(|p| p.quic.is_some())
            .ok_or_else(|| ApiError::Conflict(format!("device {} reported no QUIC endpoint", dev.device_id)))?;
        let my_public: Vec<SocketAddr> = mine.iter().map(|p| p.addr).collect();
        let me = Side {
            public: &my_public,
            paths: &my_paths,
        };
        let target_public = [target.addr];
        let them = Side {
            public: &target_public,
            paths: &target_paths,
        };
        let no_candidates = |who: &str| ApiError::Conflict(format!("device {who} has no address to punch to"));
        let for_caller = introduction(0, ih, &them, &me).ok_or_else(|| no_candidates(target_device))?;
        let for_target = introduction(0, ih, &me, &them).ok_or_else(|| no_candidates(&dev.device_id))?;
        let id = self.admit_introduction(&dev.device_id, target_device.into(), now)?;
        let (for_caller, for_target) = (Introduction { id, ..for_caller }, Introduction { id, ..for_target });
        if self.push_introduction(target_device, for_target) == 0 {
            return Err(ApiError::Conflict(format!(
                "device {target_device} holds no push subscription"
            )));
        }
        self.acquaintances.lock().unwrap_or_else(|e| e.into_inner()).record(
            &dev.device_id,
            &target_device.into(),
            ih,
            now,
        );
        Ok(for_caller)
    }
}

impl Tracker {
    /// After device `dev` reported new direct paths (its previous report
    /// `before`), pushes each device it was introduced to in the last
    /// [`ACQUAINTANCE_TTL`](crate::swarm::rendezvous::ACQUAINTANCE_TTL)
    /// a new [`Introduction`] of `dev` (SSE event `introduce`, a new `id`)
    /// when the candidates that device would get changed: the device moved
    /// to another network (issue 16). The peer punches towards the new
    /// candidates (so its NAT lets the moved device's migrated QUIC packets
    /// in) and can dial them. Nothing is pushed for a first report, an
    /// unchanged one, or a peer without a push stream; at most one push per
    /// pair per [`PAIR_INTERVAL`](crate::swarm::rendezvous::PAIR_INTERVAL)
    /// (the introduction limiter, as `move <peer>`). Counted in
    /// `ota_tracker_reintroductions_total`. Returns the pushes made.
    pub(crate) fn reintroduce_moved(
        &self,
        dev: &crate::registry::DeviceEntry,
        before: Option<&ota_proto::direct_paths::DirectPaths>,
        now: Instant,
    ) -> usize {
        let (Some(before), Some(after)) = (before, dev.paths()) else {
            return 0;
        };
        // The periodic report (every minute per device) changes nothing:
        // no scan of the acquaintances for it.
        if after.quic.is_none() || *before == *after {
            return 0;
        }
        let partners = self
            .acquaintances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .of(&dev.device_id, now);
        let mut pushed = 0;
        for (partner, ih) in partners {
            let Some(partner_paths) = self
                .devices
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .current(&partner)
                .and_then(|d| d.paths())
            else {
                continue;
            };
            let public_of = |device: &str| -> Vec<SocketAddr> {
                self.store
                    .device_peers(&ih, device, now)
                    .map(|peers| peers.iter().map(|p| p.addr).collect())
                    .unwrap_or_default()
            };
            let (my_public, their_public) = (public_of(&dev.device_id), public_of(&partner));
            let them = Side {
                public: &their_public,
                paths: &partner_paths,
            };
            let side = |paths| Side {
                public: &my_public,
                paths,
            };
            let old = introduction(0, ih, &side(before), &them).map(|i| i.candidates);
            let Some(new) = introduction(0, ih, &side(&after), &them) else {
                continue;
            };
            if old.as_ref() == Some(&new.candidates) || self.device_streams(&partner) == 0 {
                continue;
            }
            let Ok(id) = self.admit_introduction(&dev.device_id, format!("move {partner}").into(), now) else {
                continue;
            };
            let candidates = new.candidates.clone();
            if self.push_introduction(&partner, Introduction { id, ..new }) > 0 {
                pushed += 1;
                metrics::counter!("ota_tracker_reintroductions_total").increment(1);
                tracing::info!(id, device = %dev.device_id, peer = %partner, info_hash = %ih, ?candidates, "device moved: new introduction pushed to its peer");
            }
        }
        pushed
    }

    /// Applies the introduction rate limits (per device and per pair) to
    /// `device_id` asking for `target_id` at `now` and, when they allow it,
    /// numbers the introduction.
    ///
    /// Errors: [`ApiError::TooMany`] when a limit is reached.
    fn admit_introduction(
        &self,
        device_id: &std::sync::Arc<str>,
        target_id: std::sync::Arc<str>,
        now: Instant,
    ) -> Result<u64, ApiError> {
        self.introductions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(device_id, &target_id, now)
            .map_err(|e| ApiError::TooMany(e.to_string()))?;
        Ok(self.next_introduction.fetch_add(1, Ordering::Relaxed))
    }

    /// The origin's side of an introduction to its QUIC listener: no push
    /// (the origin accepts any device that can speak the peer wire), the
    /// same rate limits as between devices.
    fn introduce_origin(
        &self,
        dev: &crate::registry::DeviceEntry,
        request: &IntroductionRequest,
        target: &RendezvousPeer,
        now: Instant,
    ) -> Result<Introduction, ApiError> {
        let (udp, pin) = self
            .origin_quic(target.addr)
            .ok_or_else(|| ApiError::Conflict("this origin announced no QUIC listener".into()))?;
        let id = self.admit_introduction(&dev.device_id, format!("origin {udp}").into(), now)?;
        Ok(origin_introduction(id, request.info_hash, udp, pin))
    }
}

/// The introduction of an origin's QUIC listener at `udp` with pin `pin`:
/// one candidate, no NAT ([`NatKind::Open`]), marked `origin`.
fn origin_introduction(id: u64, info_hash: ota_proto::InfoHash, udp: SocketAddr, pin: CertFingerprint) -> Introduction {
    Introduction {
        id,
        info_hash,
        candidates: vec![udp],
        fingerprint: pin,
        nat: Some(NatKind::Open),
        origin: true,
    }
}
