//! A real UPnP IGD in the lab (needs root and Debian's miniupnpd; CI runs
//! as root, deploy/test-deps.sh installs miniupnpd): a host behind a
//! [`RouterKind::Upnp`] router finds the gateway with igd-next's SSDP
//! search (multicast `M-SEARCH` on the LAN), reads the external address,
//! maps a TCP and a UDP port, and a server in the lab's internet reaches
//! the host through them; before the mapping and after its removal the
//! same attempts are dropped. A second host asking for the same external
//! port is refused with UPnP error 718 (`ConflictInMappingEntry`). All
//! traffic stays inside the lab's namespaces; every wait is bounded.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::time::Duration;

use igd_next::{AddPortError, Gateway, PortMappingProtocol, SearchOptions};
use ota_deploy::lab::{in_netns, Host, Lab, Router, RouterKind, UPNP_HTTP_PORT};

/// How long the SSDP search may take in all (igd-next's default is 10 s).
const SEARCH: Duration = Duration::from_secs(5);
/// How long traffic that should arrive may take (inside one machine).
const ARRIVES: Duration = Duration::from_secs(2);
/// How long to wait for traffic that should not arrive.
const DROPPED: Duration = Duration::from_millis(500);
/// The lease asked for, seconds: long enough for the test, short enough
/// that a leftover mapping would go soon.
const LEASE_SECS: u32 = 60;
/// The port mapped, external and internal, TCP and UDP.
const PORT: u16 = 40_000;

/// A lab with one UPnP router, two hosts behind it, and an internet address
/// for the server.
fn lab() -> (Lab, Router, Host, Host, Ipv4Addr) {
    let mut lab = Lab::new().expect("lab (needs root)");
    let router = lab
        .add_router(RouterKind::Upnp)
        .expect("UPnP router (Debian package miniupnpd)");
    let host = lab.add_host(&router).expect("host");
    let other = lab.add_host(&router).expect("second host");
    let server = lab.add_internet_address().expect("internet address");
    (lab, router, host, other, server)
}

/// The gateway, found from inside `host`'s namespace by an SSDP search
/// (multicast to 239.255.255.250:1900, out of the host's default route).
fn search(host: &Host) -> Gateway {
    in_netns(&host.ns, || {
        let mut options = SearchOptions::default();
        options.timeout = Some(SEARCH);
        options.single_search_timeout = Some(SEARCH);
        igd_next::search_gateway(options)
    })
    .expect("enter namespace")
    .unwrap_or_else(|e| panic!("no SSDP answer from the UPnP router to {}: {e}", host.ns))
}

/// Adds a mapping of `PORT` (`protocol`) to `host:PORT` from inside `host`'s
/// namespace (the SOAP request's TCP connection is made there).
fn add_mapping(gateway: &Gateway, host: &Host, protocol: PortMappingProtocol) -> Result<(), AddPortError> {
    let local = SocketAddr::V4(SocketAddrV4::new(host.addr, PORT));
    in_netns(&host.ns, || {
        gateway.add_port(protocol, PORT, local, LEASE_SECS, "ota lab test")
    })
    .expect("enter namespace")
}

/// Removes the mapping of `PORT` (`protocol`), from inside `host`'s namespace.
fn remove_mapping(gateway: &Gateway, host: &Host, protocol: PortMappingProtocol) {
    in_netns(&host.ns, || gateway.remove_port(protocol, PORT))
        .expect("enter namespace")
        .unwrap_or_else(|e| panic!("remove {protocol} mapping of {PORT}: {e}"));
}

/// The host side: a TCP listener and a UDP socket on `host:PORT`.
struct Listeners {
    tcp: TcpListener,
    udp: UdpSocket,
}

impl Listeners {
    fn bind(host: &Host) -> Listeners {
        let addr = SocketAddrV4::new(host.addr, PORT);
        let (tcp, udp) =
            in_netns(&host.ns, || (TcpListener::bind(addr), UdpSocket::bind(addr))).expect("enter namespace");
        let tcp = tcp.unwrap_or_else(|e| panic!("bind TCP {addr}: {e}"));
        tcp.set_nonblocking(true).expect("nonblocking");
        Listeners {
            tcp,
            udp: udp.unwrap_or_else(|e| panic!("bind UDP {addr}: {e}")),
        }
    }

    /// Whether a TCP connection is accepted within `wait`; if so, reads
    /// its greeting and checks it.
    fn tcp_arrives(&self, wait: Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.tcp.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).expect("blocking");
                    stream.set_read_timeout(Some(ARRIVES)).expect("timeout");
                    let mut buf = [0u8; 5];
                    stream.read_exact(&mut buf).expect("greeting");
                    assert_eq!(&buf, b"hello");
                    return true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() >= deadline {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// The payload of a datagram arriving within `wait`, if any.
    fn udp_arrives(&self, wait: Duration) -> Option<Vec<u8>> {
        self.udp.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 1500];
        match self.udp.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// From the internet: one datagram from a fresh socket on `server` (so no
/// earlier conntrack entry applies) to `target`.
fn udp_send(lab: &Lab, server: Ipv4Addr, target: SocketAddrV4, payload: &[u8]) {
    let sock = in_netns(lab.internet_ns(), || UdpSocket::bind((server, 0)))
        .expect("enter namespace")
        .expect("bind");
    sock.send_to(payload, target).expect("send");
}

#[test]
fn a_host_maps_tcp_and_udp_ports_with_upnp_and_the_internet_reaches_it() {
    let (lab, router, host, _other, server) = lab();
    let gateway = search(&host);
    assert_eq!(
        gateway.addr,
        SocketAddr::V4(SocketAddrV4::new(router.lan_gateway, UPNP_HTTP_PORT)),
        "the SSDP answer's LOCATION"
    );
    assert_eq!(gateway.root_url, "/rootDesc.xml");
    let external = in_netns(&host.ns, || gateway.get_external_ip())
        .expect("enter namespace")
        .expect("GetExternalIPAddress");
    assert_eq!(external, std::net::IpAddr::V4(router.public));

    let listeners = Listeners::bind(&host);
    let target = SocketAddrV4::new(router.public, PORT);

    // Before the mapping: the router drops both.
    assert!(
        !common::tcp_connect(&lab, target, DROPPED),
        "TCP to {target} connected before any mapping"
    );
    assert!(!listeners.tcp_arrives(Duration::ZERO));
    udp_send(&lab, server, target, b"before");
    assert_eq!(listeners.udp_arrives(DROPPED), None, "UDP arrived before any mapping");

    // With the mappings: both arrive.
    add_mapping(&gateway, &host, PortMappingProtocol::TCP).expect("TCP mapping");
    add_mapping(&gateway, &host, PortMappingProtocol::UDP).expect("UDP mapping");
    assert!(
        common::tcp_connect(&lab, target, ARRIVES),
        "TCP to {target} did not connect through the mapping"
    );
    assert!(listeners.tcp_arrives(ARRIVES), "the host accepted no connection");
    udp_send(&lab, server, target, b"mapped");
    assert_eq!(
        listeners.udp_arrives(ARRIVES).as_deref(),
        Some(&b"mapped"[..]),
        "UDP did not arrive through the mapping"
    );

    // Removed: dropped again (new connections and a new UDP source, so no
    // conntrack entry of the mapped flows applies).
    remove_mapping(&gateway, &host, PortMappingProtocol::TCP);
    remove_mapping(&gateway, &host, PortMappingProtocol::UDP);
    assert!(
        !common::tcp_connect(&lab, target, DROPPED),
        "TCP to {target} connected after the mapping was removed"
    );
    assert!(!listeners.tcp_arrives(Duration::ZERO));
    udp_send(&lab, server, target, b"after");
    assert_eq!(
        listeners.udp_arrives(DROPPED),
        None,
        "UDP arrived after the mapping was removed"
    );
}

#[test]
fn a_port_mapped_by_one_host_is_refused_to_another() {
    let (_lab, _router, host, other, _server) = lab();
    let gateway = search(&host);
    add_mapping(&gateway, &host, PortMappingProtocol::UDP).expect("first host's mapping");
    let gateway_seen_by_other = search(&other);
    let err = add_mapping(&gateway_seen_by_other, &other, PortMappingProtocol::UDP)
        .expect_err("a second host got an external port that is already mapped");
    // UPnP error 718 ConflictInMappingEntry (WANIPConnection:2 section 2.4.16).
    assert!(
        matches!(err, AddPortError::PortInUse),
        "expected PortInUse (718), got {err:?}"
    );
    // The same port on the other protocol is still free for the other host.
    add_mapping(&gateway_seen_by_other, &other, PortMappingProtocol::TCP).expect("the other protocol's mapping");
}

#[test]
fn a_host_cannot_map_a_port_below_1024() {
    let (_lab, _router, host, _other, _server) = lab();
    let gateway = search(&host);
    let local = SocketAddr::V4(SocketAddrV4::new(host.addr, 80));
    let err = in_netns(&host.ns, || {
        gateway.add_port(PortMappingProtocol::TCP, 80, local, LEASE_SECS, "ota lab test")
    })
    .expect("enter namespace")
    .expect_err("port 80 was mapped");
    // UPnP error 606 Action not authorized: outside the allow rule.
    assert!(matches!(err, AddPortError::ActionNotAuthorized), "got {err:?}");
}
