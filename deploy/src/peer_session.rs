//! librqbit session options for the lab's own BitTorrent peers (the
//! benchmarks' seeding peers and leechers).

use std::net::SocketAddr;

use librqbit::{ListenerMode, ListenerOptions, SessionOptions};

/// A librqbit 9.1 session that accepts peers on `listen` (TCP only) and
/// announces that port, with no DHT, no local service discovery, no UPnP and
/// no persistence. librqbit announces port 4240 for a loopback listener
/// unless `announce_port` is set, hence it always is.
///
/// `trackers: false` keeps the session off every tracker (it talks only to
/// peers it is given): `AddTorrentOptions::disable_trackers` is not read by
/// librqbit 9.1, the session-level switch is.
pub fn listening_session_options(listen: SocketAddr, trackers: bool) -> SessionOptions {
    SessionOptions {
        dht: None,
        disable_local_service_discovery: true,
        disable_trackers: !trackers,
        persistence: None,
        fastresume: false,
        listen: Some(ListenerOptions {
            mode: ListenerMode::TcpOnly,
            listen_addr: listen,
            enable_upnp_port_forwarding: false,
            announce_port: Some(listen.port()),
            ipv4_only: listen.is_ipv4(),
            ..Default::default()
        }),
        ipv4_only: listen.is_ipv4(),
        ..Default::default()
    }
}
