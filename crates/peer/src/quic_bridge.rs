//! The QUIC peer transport under librqbit: an in-process SOCKS5 server
//! (`fast-socks5`, RFC 1928) that librqbit uses as its `proxy_url`, and a
//! quinn endpoint (client and server) on the UDP peer socket.
//!
//! - A CONNECT to an ordinary address (a peer, the tracker) is dialed over
//!   TCP and spliced, as if there were no proxy.
//! - A CONNECT to a bridge address ([`ota_proto::rendezvous`]) asks the
//!   [`Introducer`] (the tracker) to introduce the two devices, dials QUIC
//!   to the other side's candidates (staggered by [`CANDIDATE_PACING`],
//!   first handshake wins; RFC 8445 §6.1.4.2 paces checks the same way)
//!   with the other side's certificate pinned, opens one bidirectional
//!   stream and splices librqbit's connection onto it. One QUIC connection
//!   per peer carries every stream to it.
//! - The other side learns of the introduction from its push channel and
//!   calls [`QuicBridge::on_introduction`]: it pins the requester's
//!   certificate and sends STUN Binding indications (RFC 8489 §6.1.2,
//!   ICE's keep-alive) to the requester's candidates, so its own NAT lets
//!   the requester's QUIC Initial in. Incoming streams are spliced to
//!   librqbit's own TCP listener on loopback.
//!
//! The bridge remembers, for each address librqbit sees (the bridge
//! address it dialed, or the loopback source of an incoming stream), the
//! real remote UDP address ([`QuicBridge::remote_of`]), so that telemetry
//! can still tell LAN peers from internet peers. Every wait is bounded:
//! the SOCKS5 request ([`SOCKS_REQUEST_TIMEOUT`]), the introduction and
//! QUIC handshake ([`BridgeSettings::connect_timeout`]), the TCP dial.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use fast_socks5::server::{Config as SocksConfig, SimpleUserPassword, Socks5Socket};
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{consts, ReplyError};
use futures::future::BoxFuture;
use ota_proto::nat_kind::NatKind;
use ota_proto::rendezvous::{bridge_slot, Introduction, PunchRole, BIRTHDAY_PORTS, BIRTHDAY_PROBES, PROBED_PORTS};
use serde::Serialize;
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, MessageEncoderBuilder, StunMessageBuilder, TransactionId};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::quic_identity::{client_config, server_config, Pins, QuicIdentity, SERVER_NAME};
use crate::receive_gaps::ReceiveGaps;
use crate::udp_demux::{DemuxSocket, StunDatagram};

/// Time a SOCKS5 client gets to send its greeting and request, seconds.
pub const SOCKS_REQUEST_TIMEOUT: u64 = 10;
/// Delay between starting QUIC handshakes to successive candidates.
pub const CANDIDATE_PACING: Duration = Duration::from_millis(25);
/// When the side being introduced sends its punching packets, from the
/// moment it hears of the introduction: a few sends cover one loss.
pub const PUNCH_SCHEDULE_MS: [u64; 4] = [0, 30, 90, 210];
/// Birthday-socket endpoints kept open at once.
pub const MAX_BIRTHDAY_ENDPOINTS: usize = 64;
/// Probes per batch and the pause between batches in the birthday
/// approach (2,048 probes take about 0.6 s).
pub const PROBE_BATCH: usize = 64;
/// See [`PROBE_BATCH`].
pub const PROBE_PAUSE: Duration = Duration::from_millis(20);
/// How often each birthday socket sends towards the other side.
pub const OPEN_PORTS_EVERY: Duration = Duration::from_millis(250);
/// Sources of STUN datagrams the bridge remembers for the birthday prober.
pub const MAX_HEARD: usize = 1024;
/// Shortest time between two nudges of one dialed connection (a nudge
/// answers a punch heard from the connection's remote, see
/// `State::nudge_dialed_to`).
pub const NUDGE_INTERVAL: Duration = Duration::from_millis(50);
/// Peer addresses the bridge remembers for [`QuicBridge::remote_of`].
pub const MAX_REMOTES: usize = 4096;
/// Bytes buffered per direction when splicing a stream (librqbit sends
/// 16 KiB blocks; a larger buffer keeps a 40 ms path full).
pub const SPLICE_BUFFER: usize = 256 * 1024;

/// Asks the tracker to introduce this device to another
/// (`POST /api/introductions`).
pub trait Introducer: Send + Sync + 'static {
    /// Introduces this device to the peer handed out as bridge address
    /// `peer`; returns the other side's [`Introduction`] (already
    /// `check()`ed by the implementation or not: the bridge checks again).
    fn introduce(&self, peer: Ipv6Addr) -> BoxFuture<'static, anyhow::Result<Introduction>>;
}

/// The certificate fingerprint of the other side of `conn` (the server of
/// a connection this device dialed, the client of one it accepted), from
/// its handshake.
fn peer_fingerprint(conn: &quinn::Connection) -> Option<ota_proto::rendezvous::CertFingerprint> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs
        .first()
        .map(|c| ota_proto::rendezvous::CertFingerprint::of_der(c.as_ref()))
}

/// Removes `map[key]` when it is `conn` itself (not a newer connection
/// under the same key).
fn remove_if_same<K: std::hash::Hash + Eq>(map: &mut HashMap<K, quinn::Connection>, key: &K, conn: &quinn::Connection) {
    if map.get(key).is_some_and(|c| c.stable_id() == conn.stable_id()) {
        map.remove(key);
    }
}

/// Settings of a [`QuicBridge`].
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// Where the SOCKS5 server listens: loopback only.
    pub socks_listen: SocketAddr,
    /// librqbit's own peer listener, reached from loopback: incoming QUIC
    /// streams are spliced there.
    pub peer_listener: SocketAddr,
    /// Bound on introduction plus QUIC handshake for one peer.
    pub connect_timeout: Duration,
    /// Bound on a plain TCP dial for an ordinary address.
    pub tcp_connect_timeout: Duration,
    /// How long an introduced peer's certificate stays pinned.
    pub pin_ttl: Duration,
    /// Accept loopback candidates in introductions: only for several
    /// devices on one host (tests); `false` for a device.
    pub loopback_candidates: bool,
    /// This device's NAT as its STUN probe classified it: picks the
    /// birthday approach against or from a symmetric NAT ([`PunchRole`]).
    pub nat: Option<NatKind>,
}

impl BridgeSettings {
    /// Defaults around librqbit's listener `peer_listener`: SOCKS5 on
    /// `127.0.0.1:0`, 5 s to connect a punched path, 10 s for TCP, pins
    /// for 10 min.
    pub fn new(peer_listener: SocketAddr) -> BridgeSettings {
        BridgeSettings {
            socks_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            peer_listener,
            connect_timeout: Duration::from_secs(5),
            tcp_connect_timeout: Duration::from_secs(10),
            pin_ttl: Duration::from_secs(600),
            loopback_candidates: false,
            nat: None,
        }
    }
}

/// How one QUIC connection to a peer was established (the dialing side).
#[derive(Debug, Clone, Serialize)]
pub struct PathEstablished {
    /// The bridge address librqbit dialed.
    pub peer: Ipv6Addr,
    /// The candidate whose handshake won (for the birthday approach, the
    /// port a probe found).
    pub via: SocketAddr,
    /// How: `origin` (the origin seeder's QUIC listener), `lan` (a LAN
    /// candidate), `direct` (the other side has no NAT),
    /// `punched` (a reflexive or mapped candidate behind a NAT), `birthday`
    /// (one side symmetric).
    pub how: &'static str,
    /// From the SOCKS5 request to the tracker's answer, ms.
    pub introduction_ms: u64,
    /// From the SOCKS5 request to the finished QUIC handshake, ms.
    pub total_ms: u64,
    /// The path's smoothed RTT at the end of the handshake, ms.
    pub rtt_ms: u64,
    /// UDP datagrams this connection had sent when the handshake finished
    /// (Initials and Handshakes, retransmissions included).
    pub datagrams_sent: u64,
}

/// Counters of a bridge (for `status` and metrics).
#[derive(Debug, Default, Serialize, Clone)]
pub struct BridgeStats {
    /// QUIC connections this device dialed and established.
    pub dialed: u64,
    /// Introductions or handshakes that failed or timed out.
    pub failed: u64,
    /// QUIC connections other devices established to this one.
    pub accepted: u64,
    /// Streams spliced, both directions.
    pub streams: u64,
    /// Plain TCP connections relayed for ordinary addresses.
    pub tcp_relayed: u64,
    /// Times the endpoint moved to a new socket ([`QuicBridge::rebind`]).
    pub rebinds: u64,
    /// Dialed connections nudged because their peer punched towards this
    /// device (after this device moved, the tracker has the peer punch).
    pub nudges: u64,
    /// Dialed connections closed because their peer moved.
    pub closed_moved: u64,
    /// The established paths this device dialed, latest last (at most 64).
    pub paths: Vec<PathEstablished>,
}

#[derive(Default)]
struct Counters {
    dialed: AtomicU64,
    failed: AtomicU64,
    accepted: AtomicU64,
    streams: AtomicU64,
    tcp_relayed: AtomicU64,
    rebinds: AtomicU64,
    nudges: AtomicU64,
    closed_moved: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Live connections by the bridge address librqbit dialed.
    connections: HashMap<Ipv6Addr, quinn::Connection>,
    /// One dial at a time per bridge address.
    dialing: HashMap<Ipv6Addr, Arc<tokio::sync::Mutex<()>>>,
    /// What librqbit sees as a peer's address → the real remote address.
    remotes: Remotes,
    paths: Vec<PathEstablished>,
    /// Dialers waiting for a birthday probe's answer, by the peer's IP.
    hits: HashMap<IpAddr, tokio::sync::oneshot::Sender<SocketAddr>>,
    /// When a STUN datagram (a punch or a probe) last came from an IP: a
    /// prober keeps probing until the symmetric side's ports are open
    /// ([`MAX_HEARD`] entries at most).
    heard: HashMap<IpAddr, Instant>,
    /// Endpoints on birthday sockets (at most [`MAX_BIRTHDAY_ENDPOINTS`],
    /// the oldest closed first).
    endpoints: std::collections::VecDeque<quinn::Endpoint>,
    /// While [`QuicBridge::probe_nat`] runs: where STUN datagrams go too.
    stun_tap: Option<tokio::sync::mpsc::Sender<StunDatagram>>,
    /// When each dialed connection (by `stable_id`) was last nudged.
    nudged: HashMap<usize, Instant>,
    /// Live connections other devices dialed, by their certificate
    /// fingerprint: a dial to such a device reuses the connection.
    accepted: HashMap<ota_proto::rendezvous::CertFingerprint, quinn::Connection>,
}

impl State {
    fn keep_endpoint(&mut self, endpoint: quinn::Endpoint) {
        self.endpoints.push_back(endpoint);
        while self.endpoints.len() > MAX_BIRTHDAY_ENDPOINTS {
            if let Some(old) = self.endpoints.pop_front() {
                old.close(0u32.into(), b"too many birthday endpoints");
            }
        }
    }

    /// A punch from `from` where a connection this device dialed goes: the
    /// peer opened its NAT towards this device's (new) address, so send a
    /// packet now rather than at quinn's next probe timeout (RFC 9002 §6.2,
    /// backed off during an outage). The packet is a one-byte QUIC
    /// DATAGRAM (RFC 9221), which the other bridge never reads (quinn drops
    /// unread datagrams past its receive buffer); quinn has no public PING.
    /// At most once per [`NUDGE_INTERVAL`] per connection. Returns how
    /// many connections were nudged.
    fn nudge_dialed_to(&mut self, from: SocketAddr) -> u64 {
        let now = Instant::now();
        let mut n = 0;
        let State {
            connections, nudged, ..
        } = self;
        nudged.retain(|_, at| now.saturating_duration_since(*at) < NUDGE_INTERVAL);
        for c in connections.values() {
            if c.close_reason().is_none() && c.remote_address() == from && !nudged.contains_key(&c.stable_id()) {
                nudged.insert(c.stable_id(), now);
                if let Err(e) = c.send_datagram(bytes::Bytes::from_static(&[0])) {
                    tracing::debug!(%from, error = %e, "cannot nudge the connection");
                } else {
                    n += 1;
                    tracing::debug!(%from, "punch from a dialed peer: connection nudged");
                }
            }
        }
        n
    }

    /// Closes the connections this device dialed to the peer with
    /// certificate `fingerprint` whose remote IP is none of `candidates`'
    /// (a birthday-found port shares the candidates' IP): the peer moved
    /// (its new introduction), and a QUIC client cannot follow a server to
    /// a new address (RFC 9000 §9), so librqbit's connection ends now
    /// instead of at the idle timeout and librqbit dials the bridge address
    /// again, which introduces the two anew. Returns how many.
    fn close_dialed_moved(
        &mut self,
        fingerprint: &ota_proto::rendezvous::CertFingerprint,
        candidates: &[SocketAddr],
    ) -> usize {
        let accepted: Vec<usize> = self.accepted.values().map(|c| c.stable_id()).collect();
        let moved: Vec<Ipv6Addr> = self
            .connections
            .iter()
            // A reused connection the peer dialed migrates with it.
            .filter(|(_, c)| !accepted.contains(&c.stable_id()))
            .filter(|(_, c)| {
                peer_fingerprint(c).as_ref() == Some(fingerprint)
                    && !candidates.iter().any(|a| a.ip() == c.remote_address().ip())
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &moved {
            if let Some(c) = self.connections.remove(peer) {
                tracing::info!(%peer, old = %c.remote_address(), "the peer moved: its connection closed, librqbit dials again");
                c.close(0u32.into(), b"peer moved");
            }
        }
        moved.len()
    }

    fn heard_from(&mut self, ip: IpAddr) {
        if self.heard.len() >= MAX_HEARD {
            self.heard.clear();
        }
        self.heard.insert(ip, Instant::now());
    }
}

/// What librqbit sees as a peer's address (a bridge address, or the
/// loopback source of an incoming stream) → the real remote UDP address;
/// kept after the stream ends (librqbit's counters outlive the
/// connection), the oldest dropped beyond [`MAX_REMOTES`].
#[derive(Default)]
pub(crate) struct Remotes {
    by_seen: HashMap<SocketAddr, SocketAddr>,
    order: std::collections::VecDeque<SocketAddr>,
}

impl Remotes {
    pub(crate) fn remember(&mut self, seen: SocketAddr, remote: SocketAddr) {
        if self.by_seen.insert(seen, remote).is_none() {
            self.order.push_back(seen);
        }
        while self.order.len() > MAX_REMOTES {
            if let Some(old) = self.order.pop_front() {
                self.by_seen.remove(&old);
            }
        }
    }

    pub(crate) fn get(&self, seen: &SocketAddr) -> Option<SocketAddr> {
        self.by_seen.get(seen).copied()
    }
}

/// The bridge (see the module docs). Dropping the last handle does not
/// stop it: call [`QuicBridge::close`].
pub struct QuicBridge {
    endpoint: quinn::Endpoint,
    /// The peer socket now: replaced by [`QuicBridge::rebind`].
    socket: Mutex<Arc<DemuxSocket>>,
    /// Arrivals of bytes on spliced QUIC streams, both directions of
    /// connection (see [`crate::receive_gaps`]).
    gaps: Arc<Mutex<ReceiveGaps>>,
    /// Bumped by [`QuicBridge::rebind`]: plain TCP relays, bound to the old
    /// address, close.
    moves: tokio::sync::watch::Sender<u64>,
    identity: Arc<QuicIdentity>,
    pins: Pins,
    settings: BridgeSettings,
    socks_addr: SocketAddr,
    socks_user: String,
    socks_password: String,
    introducer: Arc<dyn Introducer>,
    /// This device's NAT kind for the punch role: the settings' at start,
    /// then the latest probe's ([`QuicBridge::set_nat`]).
    nat: Mutex<Option<NatKind>>,
    state: Mutex<State>,
    counters: Counters,
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for QuicBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicBridge")
            .field("socks", &self.socks_addr)
            .field("udp", &self.local_udp().ok())
            .finish()
    }
}

impl QuicBridge {
    /// Starts the bridge on the bound UDP peer socket `udp`. STUN
    /// datagrams arriving there are read by the bridge (birthday probes
    /// from peers). Errors: the SOCKS5 listener cannot bind, the socket
    /// cannot be used.
    pub async fn start(
        udp: std::net::UdpSocket,
        identity: Arc<QuicIdentity>,
        settings: BridgeSettings,
        introducer: Arc<dyn Introducer>,
    ) -> anyhow::Result<Arc<QuicBridge>> {
        let (socket, stun) = DemuxSocket::new(udp).context("cannot use the UDP peer socket")?;
        let pins = Pins::default();
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            crate::quic_identity::endpoint_config(),
            Some(server_config(&identity, pins.clone())?),
            socket.clone(),
            Arc::new(quinn::TokioRuntime),
        )
        .context("cannot start the QUIC endpoint")?;
        let listener = TcpListener::bind(settings.socks_listen)
            .await
            .with_context(|| format!("cannot bind the SOCKS5 bridge on {}", settings.socks_listen))?;
        let socks_addr = listener.local_addr()?;
        let secret = || format!("{:032x}", rand::random::<u128>());
        let nat = settings.nat;
        let bridge = Arc::new(QuicBridge {
            endpoint,
            socket: Mutex::new(socket),
            gaps: Arc::default(),
            moves: tokio::sync::watch::Sender::new(0),
            identity,
            pins,
            settings,
            socks_addr,
            socks_user: secret(),
            socks_password: secret(),
            introducer,
            nat: Mutex::new(nat),
            state: Mutex::default(),
            counters: Counters::default(),
            tasks: Mutex::new(JoinSet::new()),
        });
        {
            let mut tasks = bridge.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.spawn(bridge.clone().serve_socks(listener));
            tasks.spawn(bridge.clone().serve_quic(bridge.endpoint.clone()));
            tasks.spawn(bridge.clone().read_stun(stun));
        }
        tracing::info!(socks = %socks_addr, udp = ?bridge.local_udp().ok(), fingerprint = %bridge.identity.fingerprint(), nat = ?bridge.settings.nat, "QUIC bridge up");
        Ok(bridge)
    }

    /// This device's NAT kind as the bridge uses it for its punch role
    /// ([`PunchRole`]).
    pub fn nat(&self) -> Option<NatKind> {
        *self.nat.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets this device's NAT kind (a new STUN probe's, after a network
    /// change): later introductions take their punch role from it.
    pub fn set_nat(&self, kind: Option<NatKind>) {
        *self.nat.lock().unwrap_or_else(|e| e.into_inner()) = kind;
    }

    /// librqbit's `proxy_url` for this bridge:
    /// `socks5://USER:PASSWORD@127.0.0.1:PORT` (random credentials, so
    /// that other local processes cannot use the bridge).
    pub fn proxy_url(&self) -> String {
        format!(
            "socks5://{}:{}@{}",
            self.socks_user, self.socks_password, self.socks_addr
        )
    }

    /// The SOCKS5 server's address, user name and password (what
    /// [`QuicBridge::proxy_url`] encodes), for clients other than librqbit.
    pub fn socks_auth(&self) -> (SocketAddr, &str, &str) {
        (self.socks_addr, &self.socks_user, &self.socks_password)
    }

    /// This device's certificate pin.
    pub fn fingerprint(&self) -> ota_proto::rendezvous::CertFingerprint {
        self.identity.fingerprint()
    }

    /// The UDP peer socket's local address.
    pub fn local_udp(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The socket now, for sending STUN requests from the same 5-tuple.
    pub fn socket(&self) -> Arc<DemuxSocket> {
        self.socket.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Moves the QUIC endpoint to a new UDP socket after a network change
    /// (issue 16): binds a new port on the same IP as now when that is the
    /// unspecified address, else on `local` (the device's new address; the
    /// old one may be gone), keeps the STUN demultiplexing on it, and
    /// rebinds the endpoint (`quinn::Endpoint::rebind_abstract`). Every
    /// connection this device dialed (the origin, the peers it called)
    /// migrates (RFC 9000 §9): quinn sends a PING from the new socket at
    /// once, on a fresh connection ID, and the other side validates the new
    /// path. Connections where this device was the QUIC server do not
    /// survive it (only the client may move), nor do birthday sockets.
    /// Plain TCP connections the bridge relays (to the tracker, to peers
    /// at ordinary addresses) are closed: TCP cannot move, and librqbit
    /// re-dials at once instead of waiting for TCP to give up.
    /// Returns the old and the new local address. Errors: no socket can be
    /// bound or registered; the endpoint then keeps the old one.
    pub fn rebind(&self, local: IpAddr) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        let old = self.endpoint.local_addr().context("the QUIC endpoint's address")?;
        let ip = if old.ip().is_unspecified() { old.ip() } else { local };
        let bind = SocketAddr::new(ip, 0);
        let udp =
            std::net::UdpSocket::bind(bind).with_context(|| format!("cannot bind a new UDP peer socket on {bind}"))?;
        let socket = self
            .socket()
            .rebound(udp)
            .context("cannot use the new UDP peer socket")?;
        let new = quinn::AsyncUdpSocket::local_addr(&*socket)?;
        self.endpoint
            .rebind_abstract(socket.clone())
            .context("cannot rebind the QUIC endpoint")?;
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = socket;
        self.counters.rebinds.fetch_add(1, Ordering::Relaxed);
        self.moves.send_modify(|n| *n += 1);
        tracing::info!(%old, %new, connections = self.endpoint.open_connections(), "QUIC endpoint rebound; dialed connections migrate");
        Ok((old, new))
    }

    /// Probes the NAT in front of the peer socket as it is now (after
    /// [`QuicBridge::rebind`]: the new network's) with `servers`, as
    /// [`crate::stun_probe::probe`] does at start: the answers come off the
    /// demultiplexer while the bridge goes on. One probe at a time; bounded
    /// by `timeout`.
    pub async fn probe_nat(
        &self,
        servers: &crate::stun_probe::StunServers,
        timeout: Duration,
    ) -> ota_proto::nat_kind::NatReport {
        let (tx, rx) = tokio::sync::mpsc::channel(crate::udp_demux::STUN_QUEUE);
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stun_tap = Some(tx);
        let transport = BridgeStun {
            socket: self.socket(),
            answers: tokio::sync::Mutex::new(rx),
        };
        let local = self
            .local_udp()
            .ok()
            .and_then(|b| crate::stun_probe::local_address(b, servers.primary));
        let report = crate::stun_probe::probe_with(&transport, local, servers, timeout).await;
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stun_tap = None;
        report
    }

    /// The longest pause in bytes received over spliced QUIC streams that
    /// overlaps `from..=to` (also one still going on), as
    /// [`ReceiveGaps::longest_overlapping`]; `None` if none.
    pub fn longest_receive_gap(&self, from: Instant, to: Instant) -> Option<Duration> {
        self.gaps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .longest_overlapping(from, to, Instant::now())
    }

    /// The QUIC connections open now, dialed and accepted.
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// The real remote address behind `seen`, the address librqbit has
    /// for a peer (a bridge address, or the loopback source of an incoming
    /// stream); `None` for peers that did not come through the bridge.
    pub fn remote_of(&self, seen: SocketAddr) -> Option<SocketAddr> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.remotes.get(&seen).or_else(|| match seen.ip() {
            IpAddr::V6(v6) => state.connections.get(&v6).map(|c| c.remote_address()),
            IpAddr::V4(_) => None,
        })
    }

    /// A snapshot of the counters and the latest established paths.
    pub fn stats(&self) -> BridgeStats {
        let c = &self.counters;
        BridgeStats {
            dialed: c.dialed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            accepted: c.accepted.load(Ordering::Relaxed),
            streams: c.streams.load(Ordering::Relaxed),
            tcp_relayed: c.tcp_relayed.load(Ordering::Relaxed),
            rebinds: c.rebinds.load(Ordering::Relaxed),
            nudges: c.nudges.load(Ordering::Relaxed),
            closed_moved: c.closed_moved.load(Ordering::Relaxed),
            paths: self.state.lock().unwrap_or_else(|e| e.into_inner()).paths.clone(),
        }
    }

    /// The side being introduced: checks `intro` (hostile input), pins the
    /// requester's certificate for [`BridgeSettings::pin_ttl`] and sends
    /// STUN Binding indications to its candidates on
    /// [`PUNCH_SCHEDULE_MS`]. Errors: a bad introduction (nothing is sent).
    ///
    /// Against or from a symmetric NAT it takes its birthday role
    /// ([`PunchRole`]): probing the requester's public IP, or opening
    /// [`BIRTHDAY_PORTS`] sockets towards it and serving QUIC on the one a
    /// probe reaches.
    pub fn on_introduction(self: &Arc<Self>, intro: &Introduction) -> anyhow::Result<()> {
        self.check(intro).context("bad introduction")?;
        self.pins.allow(intro.fingerprint, self.settings.pin_ttl);
        let candidates = intro.ordered_candidates();
        let closed = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .close_dialed_moved(&intro.fingerprint, &candidates);
        self.counters.closed_moved.fetch_add(closed as u64, Ordering::Relaxed);
        let role = PunchRole::introduced(self.nat(), intro.nat);
        tracing::debug!(
            id = intro.id,
            ?candidates,
            ?role,
            "introduced: punching towards the requester"
        );
        let this = self.clone();
        let (budget, id) = (self.settings.connect_timeout, intro.id);
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).spawn(async move {
            match role {
                PunchRole::Direct => this.punch(&candidates).await,
                PunchRole::Probe => {
                    this.punch(&candidates).await;
                    if let Some(ip) = public_ip(&candidates) {
                        let started = Instant::now();
                        let ready = || {
                            let state = this.state.lock().unwrap_or_else(|e| e.into_inner());
                            state.heard.get(&ip).is_some_and(|at| *at >= started)
                        };
                        this.probe_ports(ip, started + budget, ready).await;
                    }
                }
                PunchRole::OpenPorts => {
                    let Some(ip) = public_ip(&candidates) else { return };
                    let (tx, mut rx) = tokio::sync::mpsc::channel(BIRTHDAY_PORTS);
                    let serving = async {
                        let mut served = 0;
                        while let Some((socket, from)) = rx.recv().await {
                            served += 1;
                            let serve = this.clone();
                            this.tasks.lock().unwrap_or_else(|e| e.into_inner()).spawn(async move {
                                if let Err(e) = serve.serve_birthday_socket(socket, from).await {
                                    tracing::debug!(error = %format!("{e:#}"), "cannot serve the birthday socket");
                                }
                            });
                        }
                        served
                    };
                    let opened = async {
                        if let Err(e) = open_ports(&public(&candidates), ip, tx).await {
                            tracing::debug!(error = %format!("{e:#}"), "birthday ports failed");
                        }
                    };
                    let served = tokio::time::timeout(budget, async {
                        let (_, served) = tokio::join!(opened, serving);
                        served
                    })
                    .await;
                    tracing::debug!(%ip, ?served, "birthday ports closed (Err: the time budget ended first)");
                }
                PunchRole::Hopeless => tracing::debug!(id, "both sides symmetric: no punch"),
            }
        });
        Ok(())
    }

    /// A server endpoint on the birthday socket a probe from `from`
    /// reached; it answers at once so the prober's NAT sees this port.
    async fn serve_birthday_socket(
        self: &Arc<Self>,
        socket: std::net::UdpSocket,
        from: SocketAddr,
    ) -> anyhow::Result<()> {
        let (demux, _stun) = DemuxSocket::new(socket)?;
        demux.send_raw(from, &binding_indication()).await?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            crate::quic_identity::endpoint_config(),
            Some(server_config(&self.identity, self.pins.clone())?),
            demux.clone(),
            Arc::new(quinn::TokioRuntime),
        )?;
        tracing::debug!(%from, local = ?endpoint.local_addr().ok(), "birthday socket serves QUIC");
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keep_endpoint(endpoint.clone());
        let this = self.clone();
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spawn(this.serve_quic(endpoint));
        for at in PUNCH_SCHEDULE_MS.iter().skip(1) {
            tokio::time::sleep(Duration::from_millis(*at)).await;
            let _ = demux.send_raw(from, &binding_indication()).await;
        }
        Ok(())
    }

    /// Sends probes from the peer socket to random ports of `ip`, in
    /// rounds of [`BIRTHDAY_PROBES`] (batches of [`PROBE_BATCH`] every
    /// [`PROBE_PAUSE`]), until `until`, or until `done()` holds at the
    /// start of a round and held at the start of the previous round too:
    /// one whole round then went out while the other side's ports were
    /// open. The other side may open its ports after the first round (it
    /// hears of the introduction later than this side), so a single round
    /// can miss them all.
    async fn probe_ports(&self, ip: IpAddr, until: Instant, done: impl Fn() -> bool) {
        let indication = binding_indication();
        let (mut sent, mut rounds, mut done_before) = (0, 0, false);
        while Instant::now() < until {
            let done_now = done();
            if done_now && done_before {
                break;
            }
            done_before = done_now;
            for _ in 0..BIRTHDAY_PROBES / PROBE_BATCH {
                if Instant::now() >= until {
                    break;
                }
                for _ in 0..PROBE_BATCH {
                    let port = rand::Rng::gen_range(&mut rand::thread_rng(), PROBED_PORTS);
                    let _ = self.socket().send_raw(SocketAddr::new(ip, port), &indication).await;
                }
                sent += PROBE_BATCH;
                tokio::time::sleep(PROBE_PAUSE).await;
            }
            rounds += 1;
        }
        tracing::debug!(%ip, sent, rounds, "birthday probes sent");
    }

    /// Reads the STUN datagrams of the peer socket: a punch packet from a
    /// peer a dialer waits for (birthday approach) is that dialer's hit.
    async fn read_stun(self: Arc<Self>, mut stun: tokio::sync::mpsc::Receiver<StunDatagram>) {
        while let Some((from, bytes)) = stun.recv().await {
            let waiter = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(tap) = &state.stun_tap {
                    // A full tap drops the datagram: STUN retransmits.
                    let _ = tap.try_send((from, bytes));
                }
                state.heard_from(from.ip());
                let nudged = state.nudge_dialed_to(from);
                self.counters.nudges.fetch_add(nudged, Ordering::Relaxed);
                state.hits.remove(&from.ip())
            };
            if let Some(w) = waiter {
                let _ = w.send(from);
            }
        }
    }

    fn check(&self, intro: &Introduction) -> Result<(), ota_proto::rendezvous::IntroductionError> {
        if self.settings.loopback_candidates {
            intro.check_allowing_loopback()
        } else {
            intro.check()
        }
    }

    async fn punch(&self, candidates: &[SocketAddr]) {
        let start = tokio::time::Instant::now();
        for at in PUNCH_SCHEDULE_MS {
            tokio::time::sleep_until(start + Duration::from_millis(at)).await;
            for c in candidates {
                if let Err(e) = self.socket().send_raw(*c, &binding_indication()).await {
                    tracing::debug!(to = %c, error = %e, "punch send failed");
                }
            }
        }
    }

    /// Stops accepting, closes every connection and ends the tasks.
    pub async fn close(&self) {
        self.endpoint.close(0u32.into(), b"closing");
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        tasks.shutdown().await;
    }

    async fn serve_socks(self: Arc<Self>, listener: TcpListener) {
        let mut config: SocksConfig<SimpleUserPassword> =
            SocksConfig::<fast_socks5::server::DenyAuthentication>::default().with_authentication(SimpleUserPassword {
                username: self.socks_user.clone(),
                password: self.socks_password.clone(),
            });
        config
            .set_request_timeout(SOCKS_REQUEST_TIMEOUT)
            .set_execute_command(false)
            .set_dns_resolve(false);
        let config = Arc::new(config);
        let mut conns = JoinSet::new();
        loop {
            let (tcp, from) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "SOCKS5 accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            while conns.try_join_next().is_some() {}
            let (this, config) = (self.clone(), config.clone());
            conns.spawn(async move {
                if let Err(e) = this.socks_connection(tcp, config).await {
                    tracing::debug!(%from, error = %format!("{e:#}"), "SOCKS5 connection failed");
                }
            });
        }
    }

    async fn socks_connection(
        self: &Arc<Self>,
        tcp: TcpStream,
        config: Arc<SocksConfig<SimpleUserPassword>>,
    ) -> anyhow::Result<()> {
        let socks = Socks5Socket::new(tcp, config).upgrade_to_socks5().await?;
        let target = socks.target_addr().cloned().context("no CONNECT target")?;
        let mut client = socks.into_inner();
        match target {
            TargetAddr::Ip(addr) if bridge_slot(addr.ip()).is_some() => {
                let IpAddr::V6(peer) = addr.ip() else {
                    unreachable!("bridge addresses are IPv6")
                };
                let conn = match self.connection_to(peer).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        reply(&mut client, ReplyError::HostUnreachable).await?;
                        return Err(e.context(format!("no QUIC path to {peer}")));
                    }
                };
                let (send, recv) = match conn.open_bi().await {
                    Ok(s) => s,
                    Err(e) => {
                        self.forget(peer, &conn);
                        reply(&mut client, ReplyError::HostUnreachable).await?;
                        return Err(e.into());
                    }
                };
                reply(&mut client, ReplyError::Succeeded).await?;
                self.counters.streams.fetch_add(1, Ordering::Relaxed);
                splice(client, send, recv, Some(self.gaps.clone())).await
            }
            target => {
                let dial = async {
                    match &target {
                        TargetAddr::Ip(a) => TcpStream::connect(*a).await,
                        TargetAddr::Domain(host, port) => TcpStream::connect((host.as_str(), *port)).await,
                    }
                };
                let upstream = match tokio::time::timeout(self.settings.tcp_connect_timeout, dial).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        reply(&mut client, ReplyError::ConnectionRefused).await?;
                        return Err(anyhow::Error::from(e).context(format!("TCP dial of {target}")));
                    }
                    Err(_) => {
                        reply(&mut client, ReplyError::TtlExpired).await?;
                        anyhow::bail!("TCP dial of {target} timed out");
                    }
                };
                let _ = upstream.set_nodelay(true);
                reply(&mut client, ReplyError::Succeeded).await?;
                self.counters.tcp_relayed.fetch_add(1, Ordering::Relaxed);
                let (mut a, mut b) = (client, upstream);
                let mut moves = self.moves.subscribe();
                tokio::select! {
                    r = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, SPLICE_BUFFER, SPLICE_BUFFER) => {
                        r?;
                    }
                    _ = moves.changed() => {
                        tracing::debug!(%target, "network changed: TCP relay closed");
                    }
                }
                Ok(())
            }
        }
    }

    fn forget(&self, peer: Ipv6Addr, conn: &quinn::Connection) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        remove_if_same(&mut state.connections, &peer, conn);
    }

    /// The live connection to bridge address `peer`, or a new one
    /// (introduction, then QUIC to the candidates), within
    /// `connect_timeout`.
    async fn connection_to(self: &Arc<Self>, peer: Ipv6Addr) -> anyhow::Result<quinn::Connection> {
        let lock = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = state.connections.get(&peer).filter(|c| c.close_reason().is_none()) {
                return Ok(c.clone());
            }
            state.dialing.entry(peer).or_default().clone()
        };
        let _one_dial = lock.lock().await;
        if let Some(c) = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connections
            .get(&peer)
        {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let started = Instant::now();
        let conn = tokio::time::timeout(self.settings.connect_timeout, self.dial(peer, started))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "introduction and handshake took over {:?}",
                    self.settings.connect_timeout
                )
            })??;
        self.counters.dialed.fetch_add(1, Ordering::Relaxed);
        let reused = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.connections.insert(peer, conn.clone());
            state.dialing.remove(&peer);
            state.accepted.values().any(|c| c.stable_id() == conn.stable_id())
        };
        if !reused {
            // The other side may open streams on this connection too (its
            // librqbit dialing this device reuses it, see `dial`).
            let this = self.clone();
            let served = conn.clone();
            self.tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .spawn(async move { this.serve_streams(served).await });
        }
        Ok(conn)
    }

    async fn dial(&self, peer: Ipv6Addr, started: Instant) -> anyhow::Result<quinn::Connection> {
        let intro = self.introducer.introduce(peer).await.context("introduction")?;
        self.check(&intro).context("the tracker's introduction")?;
        let introduction_ms = started.elapsed().as_millis() as u64;
        // The peer already dialed this device: its connection carries
        // streams both ways, so one QUIC connection per pair (and when the
        // peer moves, that connection migrates for both directions).
        let accepted = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .accepted
            .get(&intro.fingerprint)
            .filter(|c| c.close_reason().is_none())
            .cloned();
        if let Some(conn) = accepted.filter(|_| !intro.origin) {
            let via = conn.remote_address();
            return self.established(peer, via, "reused", conn, introduction_ms, started);
        }
        let config = client_config(&self.identity, intro.fingerprint)?;
        let role = PunchRole::dialing(self.nat(), intro.nat);
        let candidates = intro.ordered_candidates();
        let (via, conn, how) = match role {
            PunchRole::Direct => {
                let (via, conn) = self.dial_candidates(&config, &candidates).await?;
                let how = if intro.origin {
                    "origin"
                } else if ota_proto::direct_paths::is_lan_candidate(via) {
                    "lan"
                } else if intro.nat == Some(NatKind::Open) {
                    "direct"
                } else {
                    "punched"
                };
                (via, conn, how)
            }
            PunchRole::Hopeless => anyhow::bail!("both sides are behind symmetric NATs: no punched path"),
            PunchRole::Probe => {
                let ip = public_ip(&candidates).context("no public candidate to probe")?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.state.lock().unwrap_or_else(|e| e.into_inner()).hits.insert(ip, tx);
                let probing = async {
                    // Bounded by the caller's connect timeout; the hit ends it.
                    self.probe_ports(ip, started + self.settings.connect_timeout, || false)
                        .await;
                    std::future::pending::<()>().await
                };
                let found = tokio::select! {
                    f = rx => f.context("no birthday hit")?,
                    _ = probing => unreachable!("probing never ends by itself"),
                };
                let conn = self
                    .endpoint
                    .connect_with(config, found, SERVER_NAME)?
                    .await
                    .with_context(|| format!("QUIC to the birthday port {found}"))?;
                (found, conn, "birthday")
            }
            PunchRole::OpenPorts => {
                let ip = public_ip(&candidates).context("no public candidate")?;
                let (tx, mut rx) = tokio::sync::mpsc::channel(1);
                let targets = public(&candidates);
                let (socket, from) = tokio::select! {
                    first = rx.recv() => first.context("birthday sockets ended without a probe")?,
                    opened = open_ports(&targets, ip, tx) => {
                        opened?;
                        anyhow::bail!("birthday sockets ended without a probe")
                    }
                };
                let endpoint = quinn::Endpoint::new(
                    crate::quic_identity::endpoint_config(),
                    None,
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )?;
                self.state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keep_endpoint(endpoint.clone());
                let conn = endpoint
                    .connect_with(config, from, SERVER_NAME)?
                    .await
                    .with_context(|| format!("QUIC from a birthday port to {from}"))?;
                (from, conn, "birthday")
            }
        };
        self.established(peer, via, how, conn, introduction_ms, started)
    }

    /// QUIC handshakes to `candidates` from the peer socket, staggered by
    /// [`CANDIDATE_PACING`]; the first to finish wins.
    async fn dial_candidates(
        &self,
        config: &quinn::ClientConfig,
        candidates: &[SocketAddr],
    ) -> anyhow::Result<(SocketAddr, quinn::Connection)> {
        let attempts = candidates.iter().copied().enumerate().map(|(i, cand)| {
            let (config, endpoint) = (config.clone(), self.endpoint.clone());
            Box::pin(async move {
                tokio::time::sleep(CANDIDATE_PACING * i as u32).await;
                let conn = endpoint
                    .connect_with(config, cand, SERVER_NAME)
                    .with_context(|| format!("QUIC to {cand}"))?
                    .await
                    .with_context(|| format!("QUIC to {cand}"))?;
                anyhow::Ok((cand, conn))
            })
        });
        let (won, _losers) = futures::future::select_ok(attempts).await?;
        Ok(won)
    }

    fn established(
        &self,
        peer: Ipv6Addr,
        via: SocketAddr,
        how: &'static str,
        conn: quinn::Connection,
        introduction_ms: u64,
        started: Instant,
    ) -> anyhow::Result<quinn::Connection> {
        let stats = conn.stats();
        let path = PathEstablished {
            peer,
            via,
            how,
            introduction_ms,
            total_ms: started.elapsed().as_millis() as u64,
            rtt_ms: conn.rtt().as_millis() as u64,
            datagrams_sent: stats.udp_tx.datagrams,
        };
        tracing::info!(%peer, %via, how, introduction_ms, total_ms = path.total_ms, rtt_ms = path.rtt_ms, datagrams = path.datagrams_sent, "QUIC path established");
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.remotes.remember(
            SocketAddr::new(IpAddr::V6(peer), ota_proto::rendezvous::BRIDGE_PORT),
            via,
        );
        if state.paths.len() >= 64 {
            state.paths.remove(0);
        }
        state.paths.push(path);
        Ok(conn)
    }

    async fn serve_quic(self: Arc<Self>, endpoint: quinn::Endpoint) {
        let mut conns = JoinSet::new();
        while let Some(incoming) = endpoint.accept().await {
            while conns.try_join_next().is_some() {}
            let this = self.clone();
            conns.spawn(async move {
                let remote = incoming.remote_address();
                match incoming.await {
                    Ok(conn) => {
                        this.counters.accepted.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%remote, "QUIC connection accepted");
                        let fingerprint = peer_fingerprint(&conn);
                        if let Some(fp) = fingerprint {
                            let mut state = this.state.lock().unwrap_or_else(|e| e.into_inner());
                            state.accepted.retain(|_, c| c.close_reason().is_none());
                            state.accepted.insert(fp, conn.clone());
                        }
                        this.clone().serve_streams(conn.clone()).await;
                        if let Some(fp) = fingerprint {
                            let mut state = this.state.lock().unwrap_or_else(|e| e.into_inner());
                            remove_if_same(&mut state.accepted, &fp, &conn);
                        }
                    }
                    Err(e) => tracing::debug!(%remote, error = %e, "QUIC handshake refused or failed"),
                }
            });
        }
    }

    async fn serve_streams(self: Arc<Self>, conn: quinn::Connection) {
        let this = self.clone();
        splice_incoming(
            conn,
            self.settings.peer_listener,
            self.settings.tcp_connect_timeout,
            Some(self.gaps.clone()),
            move |seen, remote| {
                this.counters.streams.fetch_add(1, Ordering::Relaxed);
                this.state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remotes
                    .remember(seen, remote);
            },
        )
        .await;
    }
}

/// Splices every bidirectional stream the other side opens on `conn` to a
/// new TCP connection to `listener` (librqbit's peer listener; an
/// unspecified IP is dialed on loopback), each dial bounded by
/// `tcp_timeout`. `spliced(seen, remote)` is called for each: `seen` is
/// the TCP connection's local address, the peer address librqbit sees,
/// `remote` the QUIC connection's remote UDP address. Arrivals of bytes
/// are recorded in `gaps`, when given. Ends when the connection does.
pub(crate) async fn splice_incoming(
    conn: quinn::Connection,
    listener: SocketAddr,
    tcp_timeout: Duration,
    gaps: Option<Arc<Mutex<ReceiveGaps>>>,
    spliced: impl Fn(SocketAddr, SocketAddr) + Send + Sync + 'static,
) {
    let listener = loopback_if_unspecified(listener);
    let spliced = Arc::new(spliced);
    let mut streams = JoinSet::new();
    while let Ok((send, recv)) = conn.accept_bi().await {
        while streams.try_join_next().is_some() {}
        let (spliced, remote, gaps) = (spliced.clone(), conn.remote_address(), gaps.clone());
        streams.spawn(async move {
            let tcp = match tokio::time::timeout(tcp_timeout, TcpStream::connect(listener)).await {
                Ok(Ok(t)) => t,
                other => {
                    tracing::warn!(%listener, ?other, "cannot reach librqbit's listener");
                    return;
                }
            };
            let _ = tcp.set_nodelay(true);
            if let Ok(seen) = tcp.local_addr() {
                spliced(seen, remote);
            }
            if let Err(e) = splice(tcp, send, recv, gaps).await {
                tracing::debug!(%remote, error = %e, "incoming stream ended");
            }
        });
    }
}

/// `addr` with an unspecified IP (`0.0.0.0`, `::`) replaced by loopback of
/// the same family: where a listener bound to every address is dialed.
pub(crate) fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    }
}

fn public_ip(candidates: &[SocketAddr]) -> Option<IpAddr> {
    public(candidates).first().map(|c| c.ip())
}

fn public(candidates: &[SocketAddr]) -> Vec<SocketAddr> {
    candidates
        .iter()
        .copied()
        .filter(|c| !ota_proto::direct_paths::is_lan_candidate(*c))
        .collect()
}

/// The symmetric side of the birthday approach: [`BIRTHDAY_PORTS`] sockets,
/// each sending a punch packet to every one of `targets` every
/// [`OPEN_PORTS_EVERY`]. Each socket that a datagram from `from_ip` reaches
/// (a probe, or the other side's QUIC Initial to a port it heard from) is
/// sent on `found` with that datagram's source, the datagram left unread
/// for the QUIC endpoint the receiver puts on it; the other sockets go on.
/// Every socket a datagram reaches is handed over, not only the first: an
/// unrestricted prober hears from all the ports at once and dials the one
/// it heard first, while its random probes hit others. Runs until `found`
/// closes or the caller's timeout. Errors: the sockets cannot be bound.
async fn open_ports(
    targets: &[SocketAddr],
    from_ip: IpAddr,
    found: tokio::sync::mpsc::Sender<(std::net::UdpSocket, SocketAddr)>,
) -> anyhow::Result<()> {
    let bind = if from_ip.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let mut sockets = Vec::with_capacity(BIRTHDAY_PORTS);
    for _ in 0..BIRTHDAY_PORTS {
        sockets.push(tokio::net::UdpSocket::bind(bind).await.context("birthday socket")?);
    }
    let indication = binding_indication();
    let mut tasks = JoinSet::new();
    for s in sockets {
        let (targets, indication, found) = (targets.to_vec(), indication.clone(), found.clone());
        tasks.spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                for t in &targets {
                    let _ = s.send_to(&indication, t).await;
                }
                let deadline = tokio::time::Instant::now() + OPEN_PORTS_EVERY;
                while let Ok(Ok((_, src))) = tokio::time::timeout_at(deadline, s.peek_from(&mut buf)).await {
                    if src.ip() == from_ip {
                        tracing::debug!(local = ?s.local_addr().ok(), %src, "a birthday probe reached an open port");
                        if let Ok(socket) = s.into_std() {
                            let _ = found.send((socket, src)).await;
                        }
                        return;
                    }
                    let _ = s.recv_from(&mut buf).await;
                }
                if found.is_closed() {
                    return;
                }
            }
        });
    }
    drop(found);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// A STUN Binding indication (RFC 8489 §6.1.2): no answer expected; the
/// receiving bridge's demultiplexer takes it off the QUIC socket.
fn binding_indication() -> Vec<u8> {
    let msg = StunMessageBuilder::new(BINDING, MessageClass::Indication)
        .with_transaction_id(TransactionId::default())
        .build();
    let mut buf = [0u8; 64];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &msg)
        .expect("an empty indication fits 64 bytes");
    buf[..n].to_vec()
}

/// Writes the SOCKS5 reply (RFC 1928 §6) with a zero bound address.
async fn reply(client: &mut TcpStream, code: ReplyError) -> anyhow::Result<()> {
    let r = [
        consts::SOCKS5_VERSION,
        code.as_u8(),
        0,
        consts::SOCKS5_ADDR_TYPE_IPV4,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    client.write_all(&r).await.context("SOCKS5 reply")
}

/// Copies both ways between `tcp` and one QUIC stream until both ends
/// are done (a TCP EOF finishes the QUIC send side and the reverse),
/// recording each arrival from the QUIC side in `gaps` when given.
async fn splice(
    mut tcp: TcpStream,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    gaps: Option<Arc<Mutex<ReceiveGaps>>>,
) -> anyhow::Result<()> {
    let mut quic = tokio::io::join(Arrivals { inner: recv, gaps }, send);
    tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut quic, SPLICE_BUFFER, SPLICE_BUFFER).await?;
    Ok(())
}

/// The bridge's socket as a STUN probe's transport: sends from the QUIC
/// 5-tuple, reads what the demultiplexer tapped off for the probe.
struct BridgeStun {
    socket: Arc<DemuxSocket>,
    answers: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<StunDatagram>>,
}

impl crate::stun_probe::StunTransport for BridgeStun {
    async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> std::io::Result<()> {
        self.socket.send_raw(to, datagram).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        let (from, bytes) = self
            .answers
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| std::io::Error::other("the bridge's STUN tap closed"))?;
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok((n, from))
    }
}

/// A reader that records in `gaps` when bytes arrive.
struct Arrivals<R> {
    inner: R,
    gaps: Option<Arc<Mutex<ReceiveGaps>>>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Arrivals<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            if let Some(g) = &self.gaps {
                g.lock().unwrap_or_else(|e| e.into_inner()).record(Instant::now());
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_punch_packet_is_stun_to_the_demultiplexer() {
        let p = binding_indication();
        assert_eq!(
            ota_proto::stun::classify_datagram(p.first().copied()),
            ota_proto::stun::DatagramKind::Stun
        );
        assert_eq!(p.len(), 20, "a bare STUN header");
    }

    /// The symmetric side's ports, on loopback: every port a datagram from
    /// the other side reaches is handed over (not only the first), with
    /// that datagram still unread for the QUIC endpoint put on it.
    #[tokio::test]
    async fn every_birthday_port_reached_is_handed_over_with_its_datagram() {
        let prober = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = prober.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(BIRTHDAY_PORTS);
        let opened = tokio::spawn(async move { open_ports(&[target], target.ip(), tx).await });
        let mut buf = [0u8; 64];
        let mut ports = std::collections::BTreeSet::new();
        while ports.len() < 2 {
            let (_, from) = tokio::time::timeout(Duration::from_secs(5), prober.recv_from(&mut buf))
                .await
                .expect("the birthday ports send to the target")
                .unwrap();
            ports.insert(from);
        }
        for (i, port) in ports.iter().enumerate() {
            prober.send_to(&[0x40 | i as u8; 24], port).await.unwrap();
        }
        let mut handed = Vec::new();
        for _ in 0..2 {
            let (socket, src) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("each reached port is handed over")
                .unwrap();
            assert_eq!(src, target);
            let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
            let (n, from) = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf))
                .await
                .expect("the datagram is still queued on the socket")
                .unwrap();
            assert_eq!((n, from), (24, target), "the datagram is left for the endpoint");
            handed.push(buf[0]);
        }
        handed.sort();
        assert_eq!(handed, vec![0x40, 0x41]);
        drop(rx);
        opened.abort();
    }
}
