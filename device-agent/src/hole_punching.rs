//! The agent's side of hole punching: the QUIC bridge
//! ([`ota_peer::quic_bridge`]) on the UDP peer socket the STUN probe used,
//! its introducer (the tracker's `POST /api/introductions`), and the
//! address resolution that keeps telemetry's LAN/internet split right for
//! peers reached through the bridge.
//!
//! librqbit's `proxy_url` is the bridge; the tracker hands out peers that
//! need a punched path as bridge addresses whose swarm tag names the
//! torrent ([`ota_proto::rendezvous::bridge_swarm_tag`]); the introducer
//! finds the torrent among this session's by that tag.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures::future::BoxFuture;
use ota_client::TrackerClient;
use ota_peer::quic_bridge::{BridgeSettings, Introducer, QuicBridge};
use ota_peer::quic_identity::QuicIdentity;
use ota_proto::rendezvous::{bridge_swarm_tag, Introduction, IntroductionRequest, QuicPath};
use ota_proto::InfoHash;

/// The info hashes this agent downloads or seeds, for the swarm tag of a
/// bridge address. Shared between the agent (which adds releases) and the
/// introducer.
#[derive(Debug, Clone, Default)]
pub struct Swarms(Arc<Mutex<Vec<InfoHash>>>);

impl Swarms {
    /// Adds `info_hash` (once).
    pub fn add(&self, info_hash: InfoHash) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !v.contains(&info_hash) {
            v.push(info_hash);
        }
    }

    /// The info hash whose first 6 bytes are `tag`, if this agent has one.
    pub fn by_tag(&self, tag: [u8; 6]) -> Option<InfoHash> {
        let v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.iter().copied().find(|ih| ih.0[..6] == tag)
    }
}

struct TrackerIntroducer {
    tracker: TrackerClient,
    swarms: Swarms,
}

impl Introducer for TrackerIntroducer {
    fn introduce(&self, peer: Ipv6Addr) -> BoxFuture<'static, anyhow::Result<Introduction>> {
        let (tracker, swarms) = (self.tracker.clone(), self.swarms.clone());
        Box::pin(async move {
            let tag = bridge_swarm_tag(IpAddr::V6(peer)).context("not a bridge address")?;
            let info_hash = swarms
                .by_tag(tag)
                .with_context(|| format!("{peer} names no swarm of this device"))?;
            tracker.introduce(&IntroductionRequest { info_hash, peer }).await
        })
    }
}

/// A running bridge and what the rest of the agent needs from it.
pub struct HolePunching {
    /// The bridge.
    pub bridge: Arc<QuicBridge>,
    /// The swarms the introducer resolves tags in.
    pub swarms: Swarms,
}

impl HolePunching {
    /// Starts the bridge on `udp` (the bound UDP peer socket) in front of
    /// librqbit's listener `peer_listen`, behind a NAT of kind `nat` (the
    /// STUN probe's verdict), with the identity kept in
    /// `state_dir` (`quic-cert.der`, `quic-key.der`). Errors: the identity
    /// cannot be read or written, the bridge cannot start.
    pub async fn start(
        udp: std::net::UdpSocket,
        peer_listen: SocketAddr,
        state_dir: &Path,
        tracker: TrackerClient,
        nat: Option<ota_proto::nat_kind::NatKind>,
    ) -> anyhow::Result<HolePunching> {
        let identity = Arc::new(QuicIdentity::load_or_create(state_dir)?);
        let swarms = Swarms::default();
        let introducer = Arc::new(TrackerIntroducer {
            tracker,
            swarms: swarms.clone(),
        });
        let settings = BridgeSettings {
            nat,
            ..BridgeSettings::new(loopback_of(peer_listen))
        };
        let bridge = QuicBridge::start(udp, identity, settings, introducer).await?;
        Ok(HolePunching { bridge, swarms })
    }

    /// What the device reports in `DirectPaths::quic`.
    pub fn quic_path(&self) -> QuicPath {
        QuicPath {
            fingerprint: self.bridge.fingerprint(),
        }
    }
}

/// The address the bridge dials librqbit's listener `listen` at: the same
/// port on loopback when it listens on every address, else `listen`.
pub fn loopback_of(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], listen.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::from((Ipv6Addr::LOCALHOST, listen.port())),
        _ => listen,
    }
}

/// Rewrites librqbit's peer keys (`ip:port`) that came through the bridge
/// to the real remote address, so that accounting classifies them by
/// where the peer is (pure apart from the bridge's lookup table).
pub fn resolve_peers(bridge: Option<&QuicBridge>, per_peer: Vec<(String, u64)>) -> Vec<(String, u64)> {
    let Some(bridge) = bridge else { return per_peer };
    per_peer
        .into_iter()
        .map(|(addr, bytes)| {
            let real = addr.parse::<SocketAddr>().ok().and_then(|a| bridge.remote_of(a));
            (real.map(|r| r.to_string()).unwrap_or(addr), bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarms_are_found_by_tag_and_the_listener_by_loopback() {
        let s = Swarms::default();
        let mut ih = InfoHash([9; 20]);
        ih.0[..6].copy_from_slice(b"abcdef");
        s.add(ih);
        s.add(ih);
        assert_eq!(s.by_tag(*b"abcdef"), Some(ih));
        assert_eq!(s.by_tag(*b"abcdeg"), None);
        assert_eq!(
            loopback_of("0.0.0.0:7000".parse().unwrap()),
            "127.0.0.1:7000".parse().unwrap()
        );
        assert_eq!(
            loopback_of("10.0.0.2:7000".parse().unwrap()),
            "10.0.0.2:7000".parse().unwrap()
        );
        assert_eq!(
            resolve_peers(None, vec![("1.2.3.4:5".into(), 3)]),
            vec![("1.2.3.4:5".to_string(), 3)]
        );
    }
}
