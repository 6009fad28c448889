//! The one librqbit 9.1 session builder of the project: the seeder, the
//! device agent, the tests and the benches all start their BitTorrent
//! sessions from [`PeerSession`], so that the settings that matter for
//! distribution (no DHT, no local service discovery, no librqbit UPnP,
//! fast-resume only where asked, the announced port) are decided here once.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use librqbit::{AddTorrent, AddTorrentOptions, ListenerMode, ListenerOptions, ManagedTorrent, Session, SessionOptions};
use ota_proto::PeerId;

/// How a librqbit session is set up.
///
/// - No DHT and no local service discovery (BEP 5, BEP 14): peers come from
///   the tracker's hand-out policy only.
/// - librqbit's own UPnP stays off: it maps TCP only on IGDv1 and never
///   deletes its mappings; the NAT layer of this crate maps ports instead.
/// - No session persistence and no fast-resume unless `fastresume_dir` is
///   set: the agent resumes from its own state file plus librqbit's full
///   piece check at add time (fast-resume checks only a random sample of
///   the pieces its saved bitfield claims). The seeder sets it, since its
///   full check reads every object from S3 ([`crate::fastresume`]).
/// - A listener always announces its own port: librqbit announces 4240 for a
///   loopback listener unless `announce_port` is set.
#[derive(Debug, Clone, Default)]
pub struct PeerSession {
    /// TCP address to accept peer-wire connections on; `None`: no listener
    /// (a leecher that only dials out).
    pub listen: Option<SocketAddr>,
    /// Port announced to trackers when it differs from the listen port
    /// (the external port a UPnP mapping got, see
    /// [`crate::port_mapping`]); `None`: the listen port.
    pub announce_port: Option<u16>,
    /// The session's peer id (BEP 3); `None`: librqbit picks one.
    pub peer_id: Option<PeerId>,
    /// Whether torrents talk to their trackers. `false` keeps the session
    /// off every tracker (it talks only to `initial_peers`):
    /// `AddTorrentOptions::disable_trackers` is not read by librqbit 9.1,
    /// the session-level switch is.
    pub trackers: bool,
    /// Upload cap of the whole session in bytes/s; `None` or 0: unlimited.
    pub upload_limit_bps: Option<u32>,
    /// Client name and version sent in the extended handshake (BEP 10),
    /// e.g. `ota-device-agent 0.1.0`.
    pub client_name: Option<String>,
    /// SOCKS5 proxy for every outgoing peer connection and tracker request
    /// (`socks5://user:pass@127.0.0.1:port`): the QUIC bridge
    /// ([`crate::quic_bridge`]). With a proxy the session dials IPv6 peers
    /// too, since bridge addresses are IPv6 ([`ota_proto::rendezvous`]).
    pub proxy_url: Option<String>,
    /// Folder where librqbit keeps each torrent's verified bitfield, so a
    /// torrent added again after a restart skips the full piece check
    /// ([`crate::fastresume`]; its storage factory must be wrapped in
    /// [`crate::fastresume::Resumable`]). [`Self::start`] removes
    /// librqbit's torrent list from it first. `None`: no fast-resume.
    pub fastresume_dir: Option<std::path::PathBuf>,
}

impl PeerSession {
    /// A session listening on `listen` (TCP only) that talks to trackers.
    pub fn listening(listen: SocketAddr) -> Self {
        PeerSession {
            listen: Some(listen),
            trackers: true,
            ..Default::default()
        }
    }

    /// A session with no listener that talks only to the peers it is given.
    pub fn leecher() -> Self {
        PeerSession::default()
    }

    /// The librqbit options for this session.
    pub fn options(&self) -> SessionOptions {
        let ipv4_only = self.listen.is_some_and(|l| l.is_ipv4()) && self.proxy_url.is_none();
        SessionOptions {
            dht: None,
            disable_local_service_discovery: true,
            disable_trackers: !self.trackers,
            persistence: self
                .fastresume_dir
                .as_ref()
                .map(|d| librqbit::SessionPersistenceConfig::Json {
                    folder: Some(d.clone()),
                }),
            fastresume: self.fastresume_dir.is_some(),
            peer_id: self.peer_id.map(|p| librqbit::dht::Id20::new(p.0)),
            listen: self.listen.map(|listen| ListenerOptions {
                mode: ListenerMode::TcpOnly,
                listen_addr: listen,
                enable_upnp_port_forwarding: false,
                announce_port: Some(self.announce_port.unwrap_or(listen.port())),
                ipv4_only: listen.is_ipv4(),
                ..Default::default()
            }),
            ratelimits: librqbit::limits::LimitsConfig {
                upload_bps: self.upload_limit_bps.and_then(std::num::NonZeroU32::new),
                download_bps: None,
            },
            ipv4_only,
            client_name_and_version: self.client_name.clone(),
            connect: self.proxy_url.as_ref().map(|p| librqbit::ConnectionOptions {
                proxy_url: Some(p.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Starts the session, storing torrents under `dir` unless a torrent
    /// names its own output folder. With `fastresume_dir`, that folder is
    /// prepared first ([`crate::fastresume::prepare_dir`]).
    ///
    /// Errors: the listen port is taken, the fast-resume folder cannot be
    /// prepared, or librqbit cannot start.
    pub async fn start(&self, dir: std::path::PathBuf) -> anyhow::Result<Arc<Session>> {
        if let Some(d) = &self.fastresume_dir {
            let found = crate::fastresume::prepare_dir(d)?;
            tracing::info!(dir = %d.display(), bitfields = found.bitfields, "fast-resume bitfields kept");
        }
        let what = match self.listen {
            Some(l) => format!("cannot start the BitTorrent session on {l}"),
            None => "cannot start the BitTorrent session".to_string(),
        };
        Session::new_with_opts(dir, self.options())
            .await
            .map_err(|e| anyhow::anyhow!("{what}: {e:#}"))
    }
}

/// Adds a `.torrent` (its bytes) to `session`, storing its file under
/// `folder`. Existing data there is kept and checked piece by piece
/// (librqbit's `overwrite`), so a restart or a resumed download never fetches
/// a verified piece again. `options` carries the rest (`paused`,
/// `initial_peers`, `storage_factory`, …); its `overwrite` and
/// `output_folder` are set here.
///
/// Errors: librqbit refuses the torrent (malformed, or already added), or
/// adds it list-only.
pub async fn add_torrent(
    session: &Arc<Session>,
    torrent: Vec<u8>,
    folder: &Path,
    options: AddTorrentOptions,
) -> anyhow::Result<Arc<ManagedTorrent>> {
    session
        .add_torrent(
            AddTorrent::from_bytes(torrent),
            Some(AddTorrentOptions {
                overwrite: true,
                output_folder: Some(folder.display().to_string()),
                ..options
            }),
        )
        .await
        .map_err(|e| anyhow::anyhow!("librqbit refused the torrent: {e:#}"))?
        .into_handle()
        .ok_or_else(|| anyhow::anyhow!("librqbit added the torrent list-only"))
}

/// Options of a torrent that dials these peers at once (and no tracker).
pub fn from_peers(peers: Vec<SocketAddr>) -> AddTorrentOptions {
    AddTorrentOptions {
        disable_trackers: true,
        initial_peers: Some(peers),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_announces_its_own_port_and_nothing_else_is_on() {
        let mut s = PeerSession::listening("127.0.0.1:7001".parse().unwrap());
        s.upload_limit_bps = Some(0);
        let o = s.options();
        let l = o.listen.as_ref().unwrap();
        assert_eq!(l.announce_port, Some(7001));
        assert!(!l.enable_upnp_port_forwarding);
        assert!(o.dht.is_none() && o.disable_local_service_discovery && o.persistence.is_none() && !o.fastresume);
        assert!(!o.disable_trackers && o.ipv4_only);
        assert!(o.ratelimits.upload_bps.is_none(), "0 means unlimited");
        s.fastresume_dir = Some("/tmp/x".into());
        let o = s.options();
        assert!(
            o.fastresume
                && matches!(
                    o.persistence,
                    Some(librqbit::SessionPersistenceConfig::Json { folder: Some(_) })
                )
        );
        let o = PeerSession::leecher().options();
        assert!(o.listen.is_none() && o.disable_trackers && !o.ipv4_only);
    }
}
