//! `ota_peer::port_mapping` against a real UPnP IGD (Debian's miniupnpd in a
//! [`RouterKind::Upnp`] lab router; needs root, deploy/test-deps.sh installs
//! miniupnpd): [`map_ports`] maps TCP and UDP, the lab's internet reaches the
//! host through the mapping and no longer after [`PortMapping::remove`]; a
//! 2 s lease is renewed past its end; stale mappings of the same owner are
//! removed and others' kept; a second host asking for a taken port gets
//! another one; routers without UPnP give [`MappingRefusal::NoGateway`].
//!
//! The [`MappingRefusal::PrivateExternalAddress`] refusal (a UPnP router
//! behind a carrier-grade NAT) is covered by the unit tests of
//! `ota_peer::port_mapping::external_address_usable` only: the lab has no
//! UPnP router behind a CGNAT (its [`RouterKind::Cgnat`] router has no IGD,
//! and miniupnpd refuses to run on a private or shared WAN address anyway).
//!
//! The router's mapping table is read with igd-next's blocking client
//! (`GetGenericPortMappingEntry`, independent of the code under test) from
//! the host's namespace. The async code runs on a current-thread tokio
//! runtime built inside the host's namespace thread ([`in_netns`]), so its
//! sockets belong to that namespace. All traffic stays inside the lab's
//! namespaces; every wait is bounded.

mod common;

use std::future::Future;
use std::io::Read;
use std::net::{SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use common::Entry;
use igd_next::PortMappingProtocol;
use ota_deploy::lab::{in_netns, Host, Lab, Router, RouterKind};
use ota_peer::port_mapping::{description, map_ports, MappingRefusal, PortMapConfig, PortMapping};

/// The SSDP search timeout given to [`map_ports`] and to the table reader.
const SEARCH: Duration = Duration::from_secs(3);
/// How long traffic that should arrive may take (inside one machine).
const ARRIVES: Duration = Duration::from_secs(2);
/// How long to wait for traffic that should not arrive.
const DROPPED: Duration = Duration::from_millis(500);
/// The peer port of the tests, external and internal.
const PORT: u16 = 40_000;

/// A lab with one router of `kind` and `hosts` hosts behind it.
fn lab(kind: RouterKind, hosts: usize) -> (Lab, Router, Vec<Host>) {
    let mut lab = Lab::new().expect("lab (needs root)");
    let router = lab
        .add_router(kind)
        .expect("router (UPnP needs the Debian package miniupnpd)");
    let hosts = (0..hosts).map(|_| lab.add_host(&router).expect("host")).collect();
    (lab, router, hosts)
}

/// A current-thread tokio runtime; build it inside the namespace thread that
/// uses it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs the future `make` builds on a fresh runtime inside `ns`.
fn run_in<T, Fut>(ns: &str, make: impl FnOnce() -> Fut + Send) -> T
where
    T: Send,
    Fut: Future<Output = T>,
{
    in_netns(ns, || runtime().block_on(async { make().await })).expect("enter namespace")
}

/// Logs of the code under test (`RUST_LOG` overrides), once per process.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("ota_peer=info")),
        )
        .with_test_writer()
        .try_init();
}

/// A configuration for `owner` on `host:port` with lease `lease_secs`.
fn config(owner: &str, host: &Host, port: u16, lease_secs: u32) -> PortMapConfig {
    PortMapConfig {
        owner: owner.into(),
        local: SocketAddrV4::new(host.addr, port),
        lease_secs,
        search_timeout: SEARCH,
    }
}

/// The router's mapping table ([`common::upnp_table`]).
fn table(host: &Host) -> Vec<Entry> {
    common::upnp_table(host, SEARCH)
}

/// The table's entries for external port `port`.
fn entries_for(table: &[Entry], port: u16) -> Vec<Entry> {
    table.iter().filter(|e| e.external_port == port).cloned().collect()
}

/// Asserts the table maps `port` for TCP and UDP to `host:internal` with
/// `owner`'s description.
fn assert_mapped(table: &[Entry], port: u16, host: &Host, internal: u16, owner: &str) {
    for protocol in [PortMappingProtocol::TCP, PortMappingProtocol::UDP] {
        let entry = table
            .iter()
            .find(|e| e.external_port == port && e.protocol == protocol)
            .unwrap_or_else(|| panic!("no {protocol} mapping of external port {port} in {table:#?}"));
        assert_eq!(entry.internal_client, host.addr.to_string(), "{entry:?}");
        assert_eq!(entry.internal_port, internal, "{entry:?}");
        assert_eq!(entry.description, description(owner), "{entry:?}");
    }
}

/// Maps `config` from inside `host`'s namespace; returns the runtime the
/// renewal task lives on with the mapping (drive it with [`run_on`]).
fn map_in(host: &Host, config: PortMapConfig) -> (tokio::runtime::Runtime, Result<PortMapping, MappingRefusal>) {
    in_netns(&host.ns, || {
        let rt = runtime();
        let mapping = rt.block_on(map_ports(config));
        (rt, mapping)
    })
    .expect("enter namespace")
}

/// Runs `make`'s future on `rt` inside `host`'s namespace (so new requests
/// to the gateway leave from the host).
fn run_on<T, Fut>(host: &Host, rt: &tokio::runtime::Runtime, make: impl FnOnce() -> Fut + Send) -> T
where
    T: Send,
    Fut: Future<Output = T>,
{
    in_netns(&host.ns, || rt.block_on(async { make().await })).expect("enter namespace")
}

/// Whether `listener` (non-blocking) accepts a connection greeting `hello`
/// within `wait`.
fn tcp_arrives(listener: &TcpListener, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false).expect("blocking");
                stream.set_read_timeout(Some(ARRIVES)).expect("timeout");
                let mut buf = [0u8; 5];
                stream.read_exact(&mut buf).expect("greeting");
                assert_eq!(&buf, b"hello");
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn map_ports_maps_tcp_and_udp_to_the_wan_address_and_remove_deletes_them() {
    logs();
    let (mut lab, router, hosts) = lab(RouterKind::Upnp, 1);
    let host = &hosts[0];
    let server = lab.add_internet_address().expect("internet address");
    let (listener, udp) = in_netns(&host.ns, || {
        let addr = SocketAddrV4::new(host.addr, PORT);
        (TcpListener::bind(addr), UdpSocket::bind(addr))
    })
    .expect("enter namespace");
    let (listener, udp) = (listener.expect("bind TCP"), udp.expect("bind UDP"));
    listener.set_nonblocking(true).expect("nonblocking");

    let (rt, mapping) = map_in(host, config("dev-1", host, PORT, 60));
    let mapping = mapping.expect("map_ports behind a UPnP router");
    assert_eq!(
        mapping.external(),
        SocketAddrV4::new(router.wan, PORT),
        "external address"
    );
    assert_eq!(mapping.lease_secs(), 60);
    let state = mapping.state().borrow().clone();
    assert_eq!(
        (state.external, state.renewals, state.last_error),
        (mapping.external(), 0, None)
    );
    assert_mapped(&table(host), PORT, host, PORT, "dev-1");

    // The lab's internet reaches the host through both mappings.
    let target = mapping.external();
    assert!(
        common::tcp_connect(&lab, target, ARRIVES),
        "TCP to {target} did not connect"
    );
    assert!(tcp_arrives(&listener, ARRIVES), "the host accepted no connection");
    let sender = in_netns(lab.internet_ns(), || UdpSocket::bind((server, 0)))
        .expect("enter namespace")
        .expect("bind UDP on the internet");
    sender.send_to(b"mapped", target).expect("send");
    udp.set_read_timeout(Some(ARRIVES)).expect("timeout");
    let mut buf = [0u8; 64];
    let (n, _) = udp.recv_from(&mut buf).expect("UDP through the mapping");
    assert_eq!(&buf[..n], b"mapped");

    // remove(): both gone from the table, and new connections are dropped.
    let started = Instant::now();
    run_on(host, &rt, || mapping.remove()).expect("remove");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "remove took {:?}",
        started.elapsed()
    );
    let left = entries_for(&table(host), PORT);
    assert!(left.is_empty(), "mappings left after remove: {left:#?}");
    assert!(
        !common::tcp_connect(&lab, target, DROPPED),
        "TCP to {target} connected after remove"
    );
    assert!(!tcp_arrives(&listener, Duration::ZERO));
}

#[test]
fn a_short_lease_is_renewed_and_outlives_itself() {
    logs();
    let (_lab, _router, hosts) = lab(RouterKind::Upnp, 1);
    let host = &hosts[0];
    const LEASE: u32 = 2;

    // Control: a mapping made by hand with the same lease and no renewal.
    let control = PORT + 1;
    common::with_gateway(host, SEARCH, |gateway| {
        let local = SocketAddr::V4(SocketAddrV4::new(host.addr, control));
        gateway
            .add_port(PortMappingProtocol::UDP, control, local, LEASE, "ota lab control")
            .expect("control mapping");
    });

    let (rt, mapping) = map_in(host, config("dev-1", host, PORT, LEASE));
    let mapping = mapping.expect("map_ports with a 2 s lease");
    assert_eq!(mapping.lease_secs(), LEASE);
    let granted = table(host);
    let ours = entries_for(&granted, PORT);
    assert_eq!(ours.len(), 2, "{granted:#?}");
    eprintln!(
        "lease remaining right after mapping, s: {:?}",
        ours.iter().map(|e| e.lease_secs).collect::<Vec<_>>()
    );
    // miniupnpd reports the remaining lease: the 2 s asked for were taken
    // as they are (no minimum lease for UPnP).
    assert!(
        ours.iter().all(|e| (1..=LEASE).contains(&e.lease_secs)),
        "lease granted: {ours:#?}"
    );

    // Past two leases, driving the runtime so the renewal task runs.
    let mut state = mapping.state();
    run_on(host, &rt, || {
        tokio::time::sleep(Duration::from_secs(u64::from(LEASE) * 2 + 1))
    });
    let seen = state.borrow_and_update().clone();
    assert!(seen.renewals >= 1, "no renewal in {}s: {seen:?}", LEASE * 2 + 1);
    assert_eq!(seen.last_error, None, "{seen:?}");
    assert!(seen.last_renewal.is_some());

    let later = table(host);
    assert_mapped(&later, PORT, host, PORT, "dev-1");
    // The unrenewed control mapping with the same lease is gone by now:
    // the lease is enforced, so the renewal is what kept ours.
    assert!(
        entries_for(&later, control).is_empty(),
        "the unrenewed 2 s control mapping outlived 5 s: {later:#?}"
    );

    run_on(host, &rt, || mapping.remove()).expect("remove");
    assert!(entries_for(&table(host), PORT).is_empty());
}

#[test]
fn stale_mappings_of_the_same_owner_are_removed_and_others_kept() {
    logs();
    let (_lab, _router, hosts) = lab(RouterKind::Upnp, 1);
    let host = &hosts[0];
    let (stale, foreign) = (PORT + 1, PORT + 2);
    // What a killed run of dev-1 left (TCP and UDP), and dev-10's mapping.
    common::with_gateway(host, SEARCH, |gateway| {
        for (port, owner) in [(stale, "dev-1"), (foreign, "dev-10")] {
            let local = SocketAddr::V4(SocketAddrV4::new(host.addr, port));
            for protocol in [PortMappingProtocol::TCP, PortMappingProtocol::UDP] {
                gateway
                    .add_port(protocol, port, local, 60, &description(owner))
                    .unwrap_or_else(|e| panic!("hand-made {protocol} {port}: {e}"));
            }
        }
    });
    assert_mapped(&table(host), stale, host, stale, "dev-1");

    let (rt, mapping) = map_in(host, config("dev-1", host, PORT, 60));
    let mapping = mapping.expect("map_ports");
    let after = table(host);
    assert!(
        entries_for(&after, stale).is_empty(),
        "dev-1's stale mapping survived: {after:#?}"
    );
    assert_mapped(&after, foreign, host, foreign, "dev-10");
    assert_mapped(&after, PORT, host, PORT, "dev-1");
    run_on(host, &rt, || mapping.remove()).expect("remove");
}

#[test]
fn a_second_host_asking_for_a_taken_port_gets_another_one() {
    logs();
    let (_lab, router, hosts) = lab(RouterKind::Upnp, 2);
    let (first, second) = (&hosts[0], &hosts[1]);
    let (rt1, one) = map_in(first, config("dev-1", first, PORT, 60));
    let one = one.expect("first host's mapping");
    assert_eq!(one.external().port(), PORT);

    let (rt2, two) = map_in(second, config("dev-2", second, PORT, 60));
    // Measured with miniupnpd 2.3.1: AddPortMapping of the taken port gives
    // 718, AddAnyPortMapping then grants another external port for TCP and
    // UDP is free there too. A gateway without a free port would give
    // PortTaken instead; anything else is a bug.
    match two {
        Ok(two) => {
            let port = two.external().port();
            eprintln!("second host got external port {port} for its local port {PORT}");
            assert_ne!(port, PORT, "two hosts on one external port");
            assert_eq!(*two.external().ip(), router.wan);
            let t = table(second);
            assert_mapped(&t, port, second, PORT, "dev-2");
            assert_mapped(&t, PORT, first, PORT, "dev-1");
            run_on(second, &rt2, || two.remove()).expect("remove second");
        }
        Err(MappingRefusal::PortTaken { port }) => {
            eprintln!("second host: PortTaken");
            assert_eq!(port, PORT);
        }
        Err(e) => panic!("expected another external port or PortTaken for the taken port {PORT}, got {e:?}: {e}"),
    }
    run_on(first, &rt1, || one.remove()).expect("remove first");
}

#[test]
fn routers_without_upnp_give_no_gateway_within_the_search_timeout() {
    logs();
    for kind in [RouterKind::Cone, RouterKind::Cgnat] {
        let (_lab, _router, hosts) = lab(kind, 1);
        let host = &hosts[0];
        let started = Instant::now();
        let result = run_in(&host.ns, || map_ports(config("dev-1", host, PORT, 60)));
        let took = started.elapsed();
        eprintln!(
            "{}: {:?} after {took:?}",
            kind.name(),
            result.as_ref().map(|m| m.external())
        );
        assert!(
            matches!(result, Err(MappingRefusal::NoGateway)),
            "{}: expected NoGateway, got {:?}",
            kind.name(),
            result.map(|m| m.external())
        );
        assert!(
            took <= SEARCH + Duration::from_secs(1),
            "{}: took {took:?}",
            kind.name()
        );
    }
}
