//! The device's STUN probe (`ota_peer::stun_probe::probe`) against every
//! router kind of the NAT lab (needs root, Debian's coturn, and miniupnpd
//! for the UPnP router; CI runs as root, deploy/test-deps.sh installs
//! them). The probe must agree with what the lab declares for the router
//! ([`RouterKind::mapping`], [`RouterKind::filtering`]), which
//! `tests/lab_nat.rs` proves from the outside.
//!
//! Servers in the lab's internet: the primary server (server A) is the
//! tracker's responder *codec* (`ota_proto::stun::respond`) on its own
//! internet address, served by a plain socket loop in this test: the
//! tracker's own socket loop (`ota_tracker::stun::serve`) is not reachable
//! from ota-deploy's dependencies. The RFC 5780 server (server B) is
//! coturn ([`Lab::start_coturn`]: two internet addresses, ports 3478 and
//! 3479). The probe runs in the host's namespace on a current-thread tokio
//! runtime built there, from one socket, as the device agent will. All
//! traffic stays inside the lab's namespaces; every wait is bounded.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_deploy::lab::{in_netns, Filtering, Host, Lab, Mapping, Router, RouterKind, STUN_PORT};
use ota_peer::stun_probe::{probe, StunServers};
use ota_proto::nat_kind::{FilteringBehaviour, MappingBehaviour, NatKind, NatReport};

/// The probe's total budget (its own bound; the lab answers in a few ms).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The host's probe socket port: fixed, so the port kept by masquerade is
/// visible in the report; not the port a [`RouterKind::PortForwarded`]
/// router forwards (which would accept anything).
const PROBE_PORT: u16 = 41_000;
/// The port a [`RouterKind::PortForwarded`] router forwards.
const FORWARDED_PORT: u16 = 42_000;

/// The tracker's responder codec on `addr` in the internet namespace,
/// answering on a thread until dropped.
struct Responder {
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start(lab: &mut Lab) -> Responder {
        let ip = lab.add_internet_address().expect("internet address");
        let addr = SocketAddrV4::new(ip, STUN_PORT);
        let sock = in_netns(lab.internet_ns(), || UdpSocket::bind(addr))
            .expect("enter the internet namespace")
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; ota_proto::stun::MAX_DATAGRAM];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if let Some(reply) = ota_proto::stun::respond(&buf[..n], from).reply() {
                        let _ = sock.send_to(&reply, from);
                    }
                }
            }
        });
        Responder {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the probe from `host`'s namespace (its own tokio runtime there, so
/// the socket belongs to the namespace), from `0.0.0.0:PROBE_PORT`.
fn probe_from(host: &Host, servers: &StunServers) -> NatReport {
    in_netns(&host.ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let sock = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PROBE_PORT))
                .await
                .expect("bind the probe socket");
            probe(&sock, servers, PROBE_TIMEOUT).await
        })
    })
    .expect("enter the host's namespace")
}

/// A lab with the tracker's responder, coturn, and one router of `kind`
/// with one host; the probe's result from that host, port [`PROBE_PORT`].
fn probe_behind(kind: RouterKind) -> (Lab, Router, Host, NatReport) {
    let mut lab = Lab::new().expect("lab (root, iproute2, nftables)");
    let responder = Responder::start(&mut lab);
    let coturn = lab.start_coturn().expect("coturn STUN server (Debian package coturn)");
    let router = lab.add_router(kind).expect("router");
    let host = lab.add_host(&router).expect("host");
    let servers = StunServers {
        primary: SocketAddr::V4(responder.addr),
        rfc5780: Some(SocketAddr::V4(coturn.endpoint())),
    };
    let started = Instant::now();
    let report = probe_from(&host, &servers);
    let took = started.elapsed();
    eprintln!(
        "{} router: {} in {took:?}: {}",
        kind.name(),
        report.kind,
        serde_json::to_string(&report).unwrap()
    );
    assert!(took < PROBE_TIMEOUT + Duration::from_millis(500), "probe took {took:?}");
    drop(responder);
    (lab, router, host, report)
}

/// The lab's declared behaviour in the probe's terms.
fn expected(kind: RouterKind) -> (Option<MappingBehaviour>, FilteringBehaviour, NatKind) {
    let filtering = match kind.filtering() {
        Filtering::EndpointIndependent => FilteringBehaviour::EndpointIndependent,
        Filtering::AddressDependent => FilteringBehaviour::AddressDependent,
        Filtering::AddressAndPortDependent => FilteringBehaviour::AddressAndPortDependent,
    };
    match kind.mapping() {
        // No translation: every server sees the host's own address.
        Mapping::None => (Some(MappingBehaviour::EndpointIndependent), filtering, NatKind::Open),
        Mapping::EndpointIndependent => (
            Some(MappingBehaviour::EndpointIndependent),
            filtering,
            NatKind::EndpointIndependent { filtering },
        ),
        Mapping::AddressDependent => (Some(MappingBehaviour::AddressDependent), filtering, NatKind::Symmetric),
        Mapping::AddressAndPortDependent => (
            Some(MappingBehaviour::AddressAndPortDependent),
            filtering,
            NatKind::Symmetric,
        ),
    }
}

/// Probes behind `kind`, checks the report against the lab's declaration
/// and the reflexive address against the router's public address.
fn check(kind: RouterKind) -> NatReport {
    let (lab, router, host, report) = probe_behind(kind);
    let (mapping, filtering, nat) = expected(kind);
    assert_eq!(report.mapping, mapping, "mapping behind {kind:?}: {report:#?}");
    assert_eq!(
        report.filtering,
        Some(filtering),
        "filtering behind {kind:?}: {report:#?}"
    );
    assert_eq!(report.kind, nat, "kind behind {kind:?}: {report:#?}");
    let reflexive = report.reflexive.expect("a reflexive address");
    let public = if kind == RouterKind::Public {
        host.addr
    } else {
        router.public
    };
    assert_eq!(reflexive.ip(), std::net::IpAddr::V4(public), "{kind:?}: {report:#?}");
    if kind != RouterKind::Symmetric {
        // Masquerade keeps the free source port; no NAT keeps it anyway.
        assert_eq!(reflexive.port(), PROBE_PORT, "{kind:?}: {report:#?}");
    }
    drop(lab);
    report
}

#[test]
fn public_host_is_open() {
    check(RouterKind::Public);
}

#[test]
fn port_forwarded_router_is_a_cone_for_other_ports() {
    check(RouterKind::PortForwarded { port: FORWARDED_PORT });
}

#[test]
fn cone_router_is_endpoint_independent() {
    check(RouterKind::Cone);
}

#[test]
fn upnp_router_is_endpoint_independent() {
    check(RouterKind::Upnp);
}

#[test]
fn symmetric_router_is_symmetric() {
    check(RouterKind::Symmetric);
}

#[test]
fn cgnat_is_what_two_masquerades_give() {
    check(RouterKind::Cgnat);
}

/// A non-STUN datagram and a stray STUN answer from the internet, sent to
/// the host's reflexive address while the probe runs (through the pinhole
/// the probe's own request to the sender opened), are ignored.
#[test]
fn stray_datagrams_on_the_peer_socket_are_ignored() {
    let mut lab = Lab::new().expect("lab (root, iproute2, nftables)");
    let coturn = lab.start_coturn().expect("coturn STUN server (Debian package coturn)");
    let router = lab.add_router(RouterKind::Cone).expect("router");
    let host = lab.add_host(&router).expect("host");
    // A "server" that answers each request first with noise (a QUIC short
    // header, a QUIC Initial-like byte, garbage, an answer to another
    // transaction), then with the real answer.
    let ip = lab.add_internet_address().expect("internet address");
    let addr = SocketAddrV4::new(ip, STUN_PORT);
    let sock = in_netns(lab.internet_ns(), || UdpSocket::bind(addr))
        .expect("enter the internet namespace")
        .expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let noisy = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let mut answered = 0;
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let stray_req = ota_proto::stun::binding_request(stun_rs::TransactionId::default());
            let stray = ota_proto::stun::respond(&stray_req, "192.0.2.1:9".parse().unwrap())
                .reply()
                .unwrap();
            for d in [&[0x41u8; 40][..], &[0xc0; 1200][..], b"hello", &stray[..]] {
                sock.send_to(d, from).expect("send noise");
            }
            if let Some(reply) = ota_proto::stun::respond(&buf[..n], from).reply() {
                sock.send_to(&reply, from).expect("reply");
                answered += 1;
            }
        }
        answered
    });
    let servers = StunServers {
        primary: SocketAddr::V4(addr),
        rfc5780: Some(SocketAddr::V4(coturn.endpoint())),
    };
    let report = probe_from(&host, &servers);
    assert!(noisy.join().expect("noisy server") >= 1, "the noisy server answered");
    assert_eq!(
        report.reflexive,
        Some(SocketAddr::V4(SocketAddrV4::new(router.public, PROBE_PORT))),
        "{report:#?}"
    );
    assert_eq!(report.kind, expected(RouterKind::Cone).2, "{report:#?}");
    drop(lab);
}
