//! The NAT lab: network namespaces on one Linux machine (as root) that
//! stand for an internet and the home routers on it, so that flash crowds,
//! NAT traversal and UPnP can be measured against real Linux NAT instead of
//! loopback.
//!
//! # Layout
//!
//! Every namespace of one [`Lab`] is named `<prefix><name>`, the prefix
//! unique per run ([`Lab::prefix`], `ota-<pid>-<n>-`), so two runs never
//! collide and a run's leftovers can be found again ([`Lab::cleanup_stale`]).
//!
//! - `<prefix>inet`, the internet: a bridge `br0` with address
//!   [`INTERNET_GATEWAY`] that also routes to the [`RouterKind::Public`]
//!   LANs. Servers (tracker, STUN, origin) bind addresses added with
//!   [`Lab::add_internet_address`].
//! - `<prefix>rN`, home router N: interface `wan` (a veth whose peer `rN`
//!   is on `br0`, address [`Router::wan`]), a LAN bridge `lan` and, for
//!   each host M behind it, a veth `hM`; nftables rules for its
//!   [`RouterKind`].
//! - `<prefix>rNhM`, host M behind router N: interface `eth0`, default route
//!   through the router.
//! - `<prefix>cN`, the carrier-grade NAT in front of router N when it is a
//!   [`RouterKind::Cgnat`].
//!
//! A real STUN server (Debian's coturn, STUN only, RFC 5780 on two internet
//! addresses) runs in the internet with [`Lab::start_coturn`].
//!
//! # Addresses
//!
//! The internet is [`INTERNET_NET`], 11.0.0.0/16: public-looking on purpose
//! (miniupnpd refuses to run on a private, shared or documentation WAN
//! address, RFC 6890), taken from a block that is not special-purpose. It
//! exists only inside the lab: no lab namespace has an interface or a route
//! into the host's own namespace, so nothing the lab sends can leave it,
//! and the host never learns routes to it. Inside:
//! 11.0.0.0/20 is the bridge (11.0.0.1 the gateway, 11.0.0.10 and up the
//! internet addresses, 11.0.1.1 and up the router WANs), and
//! 11.0.16.0/24 and up are the public LANs. NATed LANs are
//! 192.168.N.0/24 (N the router's index modulo 256; each router is its own
//! namespace, so equal LANs would not collide either) and the CGNAT links
//! 100.64.N.0/24 in the shared address space 100.64.0.0/10 (RFC 6598).
//!
//! # NAT behaviour
//!
//! Named in RFC 4787 terms (section 4.1 mapping, section 5 filtering), see
//! [`RouterKind`], [`Mapping`] and [`Filtering`]; `deploy/tests/lab_nat.rs`
//! checks each kind from the outside the way RFC 5780 section 4.3/4.4
//! discovers them.
//!
//! # Cleanup
//!
//! Dropping a [`Lab`] kills the processes it started ([`Lab::spawn`]) and
//! any other process left in its namespaces, then deletes its namespaces
//! (their interfaces go with them). The same happens on SIGINT, SIGTERM and
//! SIGHUP (a guard installed by [`Lab::new`]) and, for a run that died
//! harder, with [`Lab::cleanup_stale`]. Only namespaces with the lab's own
//! prefix are ever touched.

mod cmd;
mod coturn;
pub mod demo;
mod guard;
mod link;
pub mod netns;
mod port_forward;
mod servers;
mod upnp;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

pub use coturn::{Coturn, STUN_ALT_PORT, STUN_PORT};
pub use link::{tbf_params, WanLink, HZ, QUEUE_MS};
pub use netns::in_netns;
pub use servers::ServerHost;
pub use upnp::{
    NATPMP_PORT, PCP_MAX_LIFETIME, PCP_MIN_LIFETIME, UPNP_HTTP_PORT, UPNP_MAX_LEASE, UPNP_NFT_TABLE, UPNP_PORTS,
};

/// The lab's internet, 11.0.0.0/16 (address, prefix length): see the module
/// docs for why this block and why it never leaves the lab.
pub const INTERNET_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(11, 0, 0, 0), 16);
/// The internet namespace's own address on its bridge, the default gateway
/// of every router WAN.
pub const INTERNET_GATEWAY: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 1);
/// Prefix length of the internet bridge's subnet, 11.0.0.0/20.
const BRIDGE_PREFIX_LEN: u8 = 20;
/// Every lab prefix starts with this; [`Lab::cleanup_stale`] refuses others.
pub const PREFIX_ROOT: &str = "ota-";

/// RFC 4787 section 4.1: how a NAT reuses an external address and port
/// (a mapping) for packets from one internal address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// No translation at all: the host's own address is what the internet
    /// sees (not a NAT).
    None,
    /// Endpoint-independent mapping (RFC 4787 4.1, REQ-1): the same mapping
    /// for every external destination.
    EndpointIndependent,
    /// Address-dependent mapping: the same mapping for one external IP
    /// address, whatever its port.
    AddressDependent,
    /// Address-and-port-dependent mapping ("symmetric"): a new mapping per
    /// external address and port.
    AddressAndPortDependent,
}

/// RFC 4787 section 5: which external endpoints may send to a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtering {
    /// Endpoint-independent filtering: anyone may send to the mapping (also
    /// used for a public host, which filters nothing).
    EndpointIndependent,
    /// Address-dependent filtering: only addresses the host has sent to.
    AddressDependent,
    /// Address-and-port-dependent filtering: only the exact address and
    /// port the host has sent to ("port-restricted").
    AddressAndPortDependent,
}

/// The kind of a home router; what each does to UDP and TCP, in RFC 4787
/// terms. Every NAT kind drops unsolicited inbound WAN traffic (nothing is
/// rejected, and a dropped packet leaves no conntrack entry, so an early
/// hole punch cannot change a later mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterKind {
    /// No NAT: the hosts have public addresses (a /24 routed to the
    /// router's WAN) and everything is forwarded both ways.
    /// [`Mapping::None`], [`Filtering::EndpointIndependent`].
    Public,
    /// The study's "open port": like [`RouterKind::Cone`], plus WAN UDP and
    /// TCP port `port` forwarded (nftables `dnat`) to the same port of the
    /// router's first host ([`Router::host_addr`]`(0)`), which then accepts
    /// unsolicited inbound traffic on it.
    PortForwarded {
        /// The forwarded port, WAN side and LAN side.
        port: u16,
    },
    /// The common home router, Linux `masquerade`:
    /// [`Mapping::EndpointIndependent`] (conntrack keeps the source port
    /// while it is free, so every destination sees the same mapping) and
    /// [`Filtering::AddressAndPortDependent`] (only replies to a conntrack
    /// entry pass). Measured limit (`tests/lab_nat.rs`): the port is kept
    /// only while the whole 5-tuple is free, so two hosts on the same source
    /// port share one external port towards different servers, and each
    /// gets a new random port towards the other's server; give the hosts
    /// behind one router distinct ports to keep their mappings
    /// endpoint-independent.
    Cone,
    /// A symmetric NAT, `masquerade fully-random`: a random external port
    /// per conntrack entry, so [`Mapping::AddressAndPortDependent`], and
    /// [`Filtering::AddressAndPortDependent`].
    Symmetric,
    /// A [`RouterKind::Cone`] home router whose WAN is on the shared address
    /// space (RFC 6598) behind a carrier-grade NAT (another masquerade,
    /// RFC 6888 REQ-1: endpoint-independent mapping). Through both:
    /// [`Mapping::EndpointIndependent`],
    /// [`Filtering::AddressAndPortDependent`]; the internet sees the
    /// carrier's address ([`Router::public`]).
    Cgnat,
    /// The common home router with a UPnP IGD: [`RouterKind::Cone`]'s
    /// `masquerade` ([`Mapping::EndpointIndependent`],
    /// [`Filtering::AddressAndPortDependent`]) plus Debian's miniupnpd on
    /// the LAN, so hosts can ask for port mappings (SSDP discovery, UPnP
    /// IGD:2 `WANIPConnection:2` at [`Router::upnp_description_url`],
    /// NAT-PMP RFC 6886 and PCP RFC 6887 on [`NATPMP_PORT`]); a mapped
    /// port accepts unsolicited inbound traffic until its lease ends
    /// (limits: [`UPNP_PORTS`], [`UPNP_MAX_LEASE`], secure mode, see the
    /// `upnp` module). Needs the Debian package miniupnpd.
    Upnp,
}

impl RouterKind {
    /// The mapping behaviour an outside observer sees through this router.
    pub fn mapping(&self) -> Mapping {
        match self {
            RouterKind::Public => Mapping::None,
            RouterKind::Symmetric => Mapping::AddressAndPortDependent,
            RouterKind::PortForwarded { .. } | RouterKind::Cone | RouterKind::Cgnat | RouterKind::Upnp => {
                Mapping::EndpointIndependent
            }
        }
    }

    /// The filtering behaviour for ports that are not forwarded.
    pub fn filtering(&self) -> Filtering {
        match self {
            RouterKind::Public => Filtering::EndpointIndependent,
            _ => Filtering::AddressAndPortDependent,
        }
    }

    /// Short name, as in `lab status`: `public`, `port-forwarded`, `cone`,
    /// `symmetric`, `cgnat`, `upnp`.
    pub fn name(&self) -> &'static str {
        match self {
            RouterKind::Public => "public",
            RouterKind::PortForwarded { .. } => "port-forwarded",
            RouterKind::Cone => "cone",
            RouterKind::Symmetric => "symmetric",
            RouterKind::Cgnat => "cgnat",
            RouterKind::Upnp => "upnp",
        }
    }
}

/// One home router of a [`Lab`].
#[derive(Debug, Clone)]
pub struct Router {
    /// Its index in the lab, from 1: the N of `<prefix>rN`.
    pub index: u32,
    /// What it does to traffic.
    pub kind: RouterKind,
    /// Its namespace's name.
    pub ns: String,
    /// Its WAN address: on the internet bridge, or on the carrier's
    /// 100.64.N.0/24 link for [`RouterKind::Cgnat`].
    pub wan: Ipv4Addr,
    /// The address the internet sees for its hosts' traffic: [`Router::wan`],
    /// or the carrier NAT's address for [`RouterKind::Cgnat`]. For
    /// [`RouterKind::Public`] the hosts' own addresses are seen instead.
    pub public: Ipv4Addr,
    /// The carrier NAT's namespace, for [`RouterKind::Cgnat`].
    pub carrier_ns: Option<String>,
    /// The LAN: the router's own address on it (the hosts' gateway), /24.
    pub lan_gateway: Ipv4Addr,
    hosts: u32,
}

impl Router {
    /// The LAN address host number `n` (from 0, in the order
    /// [`Lab::add_host`] adds them) gets: `.10 + n` of the LAN /24.
    pub fn host_addr(&self, n: u32) -> Ipv4Addr {
        let [a, b, c, _] = self.lan_gateway.octets();
        Ipv4Addr::new(a, b, c, (10 + n) as u8)
    }
}

/// One host (a device) behind a [`Router`].
#[derive(Debug, Clone)]
pub struct Host {
    /// Its namespace's name; enter it with [`in_netns`] or run a process in
    /// it with [`Lab::spawn`].
    pub ns: String,
    /// Its address on the router's LAN (interface `eth0`).
    pub addr: Ipv4Addr,
    /// The index of its router ([`Router::index`]).
    pub router: u32,
    /// Its interface to the router's LAN: `eth0`, then `eth1`, ... after
    /// each [`Lab::move_host`].
    pub iface: String,
}

/// The namespaces, links and processes of one lab run; removed on drop.
pub struct Lab {
    prefix: String,
    internet_ns: String,
    /// Namespaces created, in creation order.
    namespaces: Vec<String>,
    routers: Vec<Router>,
    internet_addrs: u32,
    public_lans: u32,
    children: Vec<Child>,
    /// Temp dirs of lab servers (logs), removed after the lab.
    temp_dirs: Vec<tempfile::TempDir>,
    keep: bool,
}

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Builds an empty lab: a fresh prefix `ota-<pid>-<n>-` and the internet
    /// namespace `<prefix>inet` with its bridge. Installs the Ctrl-C guard
    /// (SIGINT, SIGTERM, SIGHUP remove every live lab of the process, then
    /// end it as the signal would have).
    ///
    /// Errors: not root, `ip` or `nft` missing (naming the Debian package,
    /// iproute2 or nftables), or a command failing or timing out
    /// (10 s each); whatever was made is removed again.
    pub fn new() -> anyhow::Result<Lab> {
        cmd::IP.path()?;
        cmd::NFT.path()?;
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            anyhow::bail!("the NAT lab needs root (network namespaces)");
        }
        let existing = list_namespaces()?;
        let prefix = loop {
            let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
            let p = format!("{PREFIX_ROOT}{}-{n}-", std::process::id());
            if !existing.iter().any(|ns| ns.starts_with(&p)) {
                break p;
            }
        };
        guard::register(&prefix);
        let mut lab = Lab {
            internet_ns: format!("{prefix}inet"),
            prefix,
            namespaces: Vec::new(),
            routers: Vec::new(),
            internet_addrs: 0,
            public_lans: 0,
            children: Vec::new(),
            temp_dirs: Vec::new(),
            keep: false,
        };
        let ns = lab.internet_ns.clone();
        lab.add_namespace(&ns)?;
        cmd::ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
        cmd::ip(&["-n", &ns, "link", "set", "br0", "up"])?;
        let gw = format!("{INTERNET_GATEWAY}/{BRIDGE_PREFIX_LEN}");
        cmd::ip(&["-n", &ns, "addr", "add", &gw, "dev", "br0"])?;
        netns::sysctl_net(&ns, "ipv4/ip_forward", "1")?;
        Ok(lab)
    }

    /// This run's prefix, `ota-<pid>-<n>-`; every namespace of the lab
    /// starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The internet namespace's name, `<prefix>inet`.
    pub fn internet_ns(&self) -> &str {
        &self.internet_ns
    }

    /// The routers added so far, in order.
    pub fn routers(&self) -> &[Router] {
        &self.routers
    }

    /// Adds a new address to the internet bridge and returns it
    /// (11.0.0.10, 11.0.0.11, ...): one per server, so servers can be told
    /// apart by address as RFC 5780 needs (a STUN server's two addresses).
    ///
    /// Errors: `ip` fails or times out; more than 240 addresses.
    pub fn add_internet_address(&mut self) -> anyhow::Result<Ipv4Addr> {
        anyhow::ensure!(self.internet_addrs < 240, "at most 240 internet addresses");
        let addr = Ipv4Addr::new(11, 0, 0, 10 + self.internet_addrs as u8);
        self.internet_addrs += 1;
        let cidr = format!("{addr}/{BRIDGE_PREFIX_LEN}");
        cmd::ip(&["-n", &self.internet_ns, "addr", "add", &cidr, "dev", "br0"])?;
        Ok(addr)
    }

    /// Adds a home router of `kind` on the internet (see [`RouterKind`]),
    /// with an empty LAN; add hosts with [`Lab::add_host`].
    ///
    /// Errors: a command fails or times out; more than 2,000 routers or,
    /// for [`RouterKind::Public`], more than 240 public LANs.
    pub fn add_router(&mut self, kind: RouterKind) -> anyhow::Result<Router> {
        self.add_router_with(kind, &WanLink::default())
    }

    /// [`Lab::add_router`] with a WAN `link` of given rates, delay and loss
    /// (see [`WanLink`] and the `link` module). For a
    /// [`RouterKind::Cgnat`] router `link` is the carrier's link to the
    /// internet (its `wan` and `rN`), which only this customer uses; the
    /// home router's own WAN to the carrier stays an unshaped veth.
    ///
    /// Errors: as [`Lab::add_router`]; a rate below 8000 bit/s or a loss
    /// outside 0 to 100 %; `tc`, `vde_switch` or `wirefilter` missing (the
    /// error names the Debian package: iproute2, vde2, vde-wirefilter) or
    /// the vde link carrying nothing within 10 s.
    pub fn add_router_with(&mut self, kind: RouterKind, link: &WanLink) -> anyhow::Result<Router> {
        let index = self.routers.len() as u32 + 1;
        anyhow::ensure!(index <= 2000, "at most 2000 routers");
        let ns = format!("{}r{index}", self.prefix);
        let bridge_addr = Ipv4Addr::new(11, 0, 1 + ((index - 1) / 200) as u8, ((index - 1) % 200) as u8 + 1);
        let lan_gateway = match kind {
            RouterKind::Public => {
                anyhow::ensure!(self.public_lans < 240, "at most 240 public LANs");
                self.public_lans += 1;
                Ipv4Addr::new(11, 0, 15 + self.public_lans as u8, 1)
            }
            _ => Ipv4Addr::new(192, 168, (index % 256) as u8, 1),
        };
        self.add_namespace(&ns)?;
        let (wan, carrier_ns) = if kind == RouterKind::Cgnat {
            // The carrier: on the internet, in front of the home router.
            let carrier = format!("{}c{index}", self.prefix);
            self.add_namespace(&carrier)?;
            self.attach_link(&carrier, index, bridge_addr, link)?;
            let c = (index % 256) as u8;
            let carrier_side = Ipv4Addr::new(100, 64, c, 1);
            let home_wan = Ipv4Addr::new(100, 64, c, 2);
            cmd::ip(&[
                "-n", &carrier, "link", "add", "cust", "type", "veth", "peer", "name", "wan", "netns", &ns,
            ])?;
            cmd::ip(&[
                "-n",
                &carrier,
                "addr",
                "add",
                &format!("{carrier_side}/24"),
                "dev",
                "cust",
            ])?;
            cmd::ip(&["-n", &carrier, "link", "set", "cust", "up"])?;
            cmd::ip(&["-n", &ns, "addr", "add", &format!("{home_wan}/24"), "dev", "wan"])?;
            cmd::ip(&["-n", &ns, "link", "set", "wan", "up"])?;
            cmd::ip(&["-n", &ns, "route", "add", "default", "via", &carrier_side.to_string()])?;
            netns::sysctl_net(&carrier, "ipv4/ip_forward", "1")?;
            cmd::nft_in(&carrier, &nat_ruleset(RouterKind::Cone, "cust", None))?;
            (home_wan, Some(carrier))
        } else {
            self.attach_link(&ns, index, bridge_addr, link)?;
            (bridge_addr, None)
        };
        cmd::ip(&["-n", &ns, "link", "add", "lan", "type", "bridge"])?;
        cmd::ip(&["-n", &ns, "addr", "add", &format!("{lan_gateway}/24"), "dev", "lan"])?;
        cmd::ip(&["-n", &ns, "link", "set", "lan", "up"])?;
        netns::sysctl_net(&ns, "ipv4/ip_forward", "1")?;
        let mut router = Router {
            index,
            kind,
            ns: ns.clone(),
            wan,
            public: bridge_addr,
            carrier_ns,
            lan_gateway,
            hosts: 0,
        };
        if kind == RouterKind::Public {
            let [a, b, c, _] = lan_gateway.octets();
            let net = format!("{a}.{b}.{c}.0/24");
            cmd::ip(&["-n", &self.internet_ns, "route", "add", &net, "via", &wan.to_string()])?;
        } else {
            let forward = match kind {
                RouterKind::PortForwarded { port } => Some((port, router.host_addr(0))),
                _ => None,
            };
            cmd::nft_in(&ns, &nat_ruleset(kind, "lan", forward))?;
            if kind == RouterKind::Upnp {
                self.start_miniupnpd(&router)?;
            }
        }
        router.public = if kind == RouterKind::Cgnat { bridge_addr } else { wan };
        self.routers.push(router.clone());
        Ok(router)
    }

    /// Adds a host behind `router`: namespace `<prefix>rNhM`, address
    /// [`Router::host_addr`]`(M)`, default route through the router.
    ///
    /// Errors: `router` is not of this lab, a command fails or times out,
    /// or the LAN is full (200 hosts).
    pub fn add_host(&mut self, router: &Router) -> anyhow::Result<Host> {
        let r = self
            .routers
            .iter_mut()
            .find(|r| r.ns == router.ns)
            .context("router is not part of this lab")?;
        anyhow::ensure!(r.hosts < 200, "at most 200 hosts per router");
        let m = r.hosts;
        r.hosts += 1;
        let (router_ns, addr, gw) = (r.ns.clone(), r.host_addr(m), r.lan_gateway);
        let ns = format!("{router_ns}h{m}");
        self.add_namespace(&ns)?;
        let port = format!("h{m}");
        cmd::ip(&[
            "-n", &router_ns, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        cmd::ip(&["-n", &router_ns, "link", "set", &port, "master", "lan"])?;
        cmd::ip(&["-n", &router_ns, "link", "set", &port, "up"])?;
        cmd::ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        cmd::ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        cmd::ip(&["-n", &ns, "route", "add", "default", "via", &gw.to_string()])?;
        Ok(Host {
            ns,
            addr,
            router: router.index,
            iface: "eth0".to_string(),
        })
    }

    /// Moves `host` to `to`'s LAN, break before make, as a phone walking
    /// out of the house (issue 16): its link to its router is deleted (the
    /// address and the default route go with it), then a new link
    /// (`eth1`, `eth2`, ...) to `to`'s LAN comes up with the next free
    /// address there ([`Router::host_addr`]) and a default route through
    /// `to`. The host's processes keep running. Returns the host as it is
    /// now, and the time the cut took effect.
    ///
    /// Errors: `to` is not of this lab or is the host's router, its LAN is
    /// full, or a command fails or times out.
    pub fn move_host(&mut self, host: &Host, to: &Router) -> anyhow::Result<(Host, std::time::Instant)> {
        anyhow::ensure!(
            to.index != host.router,
            "{} is already behind router {}",
            host.ns,
            to.index
        );
        let r = self
            .routers
            .iter_mut()
            .find(|r| r.ns == to.ns)
            .context("router is not part of this lab")?;
        anyhow::ensure!(r.hosts < 200, "at most 200 hosts per router");
        let m = r.hosts;
        r.hosts += 1;
        let (router_ns, addr, gw) = (r.ns.clone(), r.host_addr(m), r.lan_gateway);
        let next: u32 = host
            .iface
            .strip_prefix("eth")
            .and_then(|n| n.parse().ok())
            .map_or(1, |n: u32| n + 1);
        let iface = format!("eth{next}");
        // Deleting one end of a veth deletes both.
        cmd::ip(&["-n", &host.ns, "link", "del", &host.iface])?;
        let cut = std::time::Instant::now();
        // The router's port is named after the host's namespace, so that a
        // host moving back and forth never collides with itself.
        let slot = self.namespaces.iter().position(|n| *n == host.ns).unwrap_or(0);
        let port = format!("m{slot}x{next}");
        cmd::ip(&[
            "-n", &router_ns, "link", "add", &port, "type", "veth", "peer", "name", &iface, "netns", &host.ns,
        ])?;
        cmd::ip(&["-n", &router_ns, "link", "set", &port, "master", "lan"])?;
        cmd::ip(&["-n", &router_ns, "link", "set", &port, "up"])?;
        cmd::ip(&["-n", &host.ns, "addr", "add", &format!("{addr}/24"), "dev", &iface])?;
        cmd::ip(&["-n", &host.ns, "link", "set", &iface, "up"])?;
        cmd::ip(&["-n", &host.ns, "route", "add", "default", "via", &gw.to_string()])?;
        Ok((
            Host {
                ns: host.ns.clone(),
                addr,
                router: to.index,
                iface,
            },
            cut,
        ))
    }

    /// Starts `program args...` inside namespace `ns` (one of this lab's),
    /// via `ip netns exec`, with stdin closed and the parent-death signal
    /// set; the lab kills it (by PID) on drop, on Ctrl-C, or with
    /// [`Lab::cleanup_stale`] (any process left in a lab namespace).
    ///
    /// Errors: `ns` is not a namespace of this lab, or the process cannot
    /// start.
    pub fn spawn(&mut self, ns: &str, program: &str, args: &[&str]) -> anyhow::Result<u32> {
        self.spawn_with_output(ns, program, args, Stdio::null(), Stdio::inherit(), Stdio::inherit())
    }

    /// [`Lab::spawn`] of a lab server: stdin closed, stdout and stderr
    /// written to the files `stdout` and `stderr` in `log_dir` (`what`
    /// names the server in errors).
    ///
    /// Errors: a log file cannot be created, or as [`Lab::spawn`].
    fn spawn_logged(
        &mut self,
        ns: &str,
        program: &str,
        args: &[&str],
        log_dir: &std::path::Path,
        what: &str,
    ) -> anyhow::Result<u32> {
        let stdout = std::fs::File::create(log_dir.join("stdout")).with_context(|| format!("{what} stdout file"))?;
        let stderr = std::fs::File::create(log_dir.join("stderr")).with_context(|| format!("{what} stderr file"))?;
        self.spawn_with_output(ns, program, args, Stdio::null(), stdout.into(), stderr.into())
    }

    /// [`Lab::spawn`] with `stdin` (a pipe the lab holds open for programs
    /// that end on EOF of their console, or null) and stdout and stderr
    /// sent to `stdout` and `stderr`.
    fn spawn_with_output(
        &mut self,
        ns: &str,
        program: &str,
        args: &[&str],
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> anyhow::Result<u32> {
        anyhow::ensure!(
            self.namespaces.iter().any(|n| n == ns),
            "{ns} is not a namespace of this lab"
        );
        let ip = cmd::IP.path()?;
        let mut command = Command::new(ip);
        command
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: `child_setup` makes only an async-signal-safe prctl(2)
        // on the child itself (its parent-death signal).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, netns::child_setup(None));
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {program} in {ns}"))?;
        let pid = child.id();
        guard::add_pid(&self.prefix, pid);
        self.children.push(child);
        Ok(pid)
    }

    /// The exit status of the process [`Lab::spawn`] started as `pid`, if
    /// it has ended.
    fn child_exit(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        let child = self.children.iter_mut().find(|c| c.id() == pid)?;
        child.try_wait().ok().flatten()
    }

    /// Keeps the lab after this value is dropped (for `lab up`): nothing is
    /// removed until [`Lab::cleanup_stale`] with the returned prefix.
    pub fn keep(mut self) -> String {
        self.keep = true;
        // A kept lab's servers keep their logs.
        for dir in self.temp_dirs.drain(..) {
            let _ = dir.keep();
        }
        guard::unregister(&self.prefix);
        self.prefix.clone()
    }

    /// Removes every namespace whose name starts with `prefix`, after
    /// killing (SIGTERM, then SIGKILL after 1 s) the processes inside them
    /// (`ip netns pids`, never this process). Returns the namespaces
    /// removed. For leftovers of a run that died (its prefix is in
    /// `ip netns list`), or for `lab down`.
    ///
    /// Errors: `prefix` is not of the form `ota-<pid>-<n>-` (so namespaces
    /// of others are never touched, `ota-12-1-` never matches
    /// `ota-12-10-...`, and no call removes every run's labs at once), or
    /// `ip` fails or times out.
    pub fn cleanup_stale(prefix: &str) -> anyhow::Result<Vec<String>> {
        anyhow::ensure!(
            parse_prefix(prefix).is_some(),
            "a lab prefix is {PREFIX_ROOT}<pid>-<n>-, not {prefix:?}"
        );
        let mut namespaces: Vec<String> = list_namespaces()?
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect();
        // Hosts before routers before carriers and the internet.
        namespaces.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let mut pids = Vec::new();
        for ns in &namespaces {
            pids.extend(namespace_pids(ns));
        }
        stop_pids(&pids);
        let mut errors = Vec::new();
        for ns in &namespaces {
            if let Err(e) = cmd::ip(&["netns", "del", ns]) {
                errors.push(format!("{e:#}"));
            }
        }
        if !errors.is_empty() {
            anyhow::bail!("cannot remove every namespace of {prefix}: {}", errors.join("; "));
        }
        Ok(namespaces)
    }

    /// Prefixes of labs whose process is gone (its PID no longer exists)
    /// but whose namespaces are still there: what a run killed with
    /// SIGKILL leaves; remove each with [`Lab::cleanup_stale`]. (A PID
    /// reused by another process hides its lab until that one ends.)
    ///
    /// Errors: `ip netns list` fails or times out.
    pub fn stale_prefixes() -> anyhow::Result<Vec<String>> {
        let mut prefixes: Vec<String> = Lab::list_all()?
            .iter()
            .filter_map(|ns| {
                let (prefix, pid) = prefix_of(ns)?;
                // SAFETY: kill(2) with signal 0 only checks the PID exists.
                let alive = unsafe { libc::kill(pid as i32, 0) } == 0;
                (!alive).then_some(prefix)
            })
            .collect();
        prefixes.sort();
        prefixes.dedup();
        Ok(prefixes)
    }

    /// The lab namespaces (any run's) that exist now: names starting with
    /// [`PREFIX_ROOT`].
    ///
    /// Errors: `ip netns list` fails or times out.
    pub fn list_all() -> anyhow::Result<Vec<String>> {
        Ok(list_namespaces()?
            .into_iter()
            .filter(|n| n.starts_with(PREFIX_ROOT))
            .collect())
    }

    fn add_namespace(&mut self, ns: &str) -> anyhow::Result<()> {
        cmd::ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        cmd::ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Joins namespace `ns` to the internet bridge: veth `wan` in `ns`,
    /// peer `rN` on `br0`, address `addr`, default route to the gateway.
    fn attach_to_internet(&mut self, ns: &str, index: u32, addr: Ipv4Addr) -> anyhow::Result<()> {
        self.attach_veth(ns, &format!("r{index}"), "wan", addr)
    }

    /// Joins namespace `ns` to the internet bridge by a veth: `dev` in
    /// `ns` with address `addr` and the default route to the gateway, its
    /// peer `port` on `br0`.
    fn attach_veth(&mut self, ns: &str, port: &str, dev: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
        let inet = self.internet_ns.clone();
        cmd::ip(&[
            "-n", &inet, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns,
        ])?;
        cmd::ip(&["-n", &inet, "link", "set", port, "master", "br0"])?;
        cmd::ip(&["-n", &inet, "link", "set", port, "up"])?;
        configure_internet_interface(ns, dev, addr)
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        let pids: Vec<u32> = self.children.iter().map(|c| c.id()).collect();
        stop_pids(&pids);
        for mut c in self.children.drain(..) {
            let _ = c.try_wait();
        }
        // Processes started by others inside our namespaces too, and every
        // namespace with our prefix, even one we failed to record.
        let prefix = self.prefix.clone();
        let result = Lab::cleanup_stale(&prefix).map(|_| ());
        guard::unregister(&prefix);
        self.namespaces.clear();
        result
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(e) = self.teardown() {
            eprintln!("lab: cleanup of {} failed: {e:#}", self.prefix);
        }
    }
}

/// The nftables rules of a NAT router: masquerade (or `fully-random` for
/// [`RouterKind::Symmetric`]) out of `wan`; inbound from `wan` only for
/// conntrack replies and the forwarded port; everything else from `wan`
/// dropped, in `forward` and in `input` (the router itself). Traffic
/// between two ports of the LAN bridge is accepted (not DNATed traffic: a
/// host using the router's public address needs [`Lab::enable_hairpin`]), as a home router's
/// switch and access point pass it: where `br_netfilter` is loaded (as on
/// this machine, `net.bridge.bridge-nf-call-iptables = 1`), bridged IPv4
/// frames cross the `forward` hook with `iifname` and `oifname` the bridge,
/// and the drop policy would cut the hosts of one LAN off from each other.
fn nat_ruleset(kind: RouterKind, lan_if: &str, forward: Option<(u16, Ipv4Addr)>) -> String {
    let masquerade = if kind == RouterKind::Symmetric {
        "masquerade fully-random"
    } else {
        "masquerade"
    };
    let dnat = forward
        .map(|(port, to)| {
            format!(
                "    iifname \"wan\" udp dport {port} dnat to {to}:{port}\n    iifname \"wan\" tcp dport {port} dnat to {to}:{port}\n"
            )
        })
        .unwrap_or_default();
    format!(
        "table ip ota_nat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
{dnat}  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan\" {masquerade}
  }}
}}
table ip ota_filter {{
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname \"{lan_if}\" oifname \"{lan_if}\" ct status ! dnat accept
    iifname \"{lan_if}\" oifname \"wan\" accept
    iifname \"wan\" ct status dnat accept
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"wan\" ct state established,related accept
    iifname \"wan\" drop
  }}
}}
"
    )
}

/// Gives interface `dev` of namespace `ns` the address `addr` on the
/// internet bridge's subnet (/20), brings it up and routes everything
/// through [`INTERNET_GATEWAY`]: the internet side of a router, carrier or
/// server host.
///
/// Errors: `ip` fails or times out.
fn configure_internet_interface(ns: &str, dev: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    let cidr = format!("{addr}/{BRIDGE_PREFIX_LEN}");
    cmd::ip(&["-n", ns, "addr", "add", &cidr, "dev", dev])?;
    cmd::ip(&["-n", ns, "link", "set", dev, "up"])?;
    let gateway = INTERNET_GATEWAY.to_string();
    cmd::ip(&["-n", ns, "route", "add", "default", "via", &gateway])?;
    Ok(())
}

/// The PID in a prefix `ota-<pid>-<n>-`, or `None` if it is not one.
fn parse_prefix(prefix: &str) -> Option<u32> {
    let rest = prefix.strip_prefix(PREFIX_ROOT)?.strip_suffix('-')?;
    let (pid, n) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n)).then(|| pid.parse().ok())?
}

/// The prefix and PID of lab namespace `ns` (`ota-<pid>-<n>-<name>`).
fn prefix_of(ns: &str) -> Option<(String, u32)> {
    let rest = ns.strip_prefix(PREFIX_ROOT)?;
    let mut parts = rest.splitn(3, '-');
    let (pid, n) = (parts.next()?, parts.next()?);
    parts.next()?;
    let prefix = format!("{PREFIX_ROOT}{pid}-{n}-");
    Some((prefix.clone(), parse_prefix(&prefix)?))
}

/// Network namespaces that exist now (`ip netns list`, names only).
fn list_namespaces() -> anyhow::Result<Vec<String>> {
    let out = cmd::ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// PIDs of processes inside namespace `ns`, without this process.
fn namespace_pids(ns: &str) -> Vec<u32> {
    let me = std::process::id();
    cmd::ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p != me)
        .collect()
}

/// SIGTERM to each PID, up to 1 s for them to go, SIGKILL to what is left.
fn stop_pids(pids: &[u32]) {
    let me = std::process::id();
    let pids: Vec<i32> = pids.iter().filter(|&&p| p != me && p != 0).map(|&p| p as i32).collect();
    let alive = |p: i32| {
        // SAFETY: kill(2) with signal 0 only checks the PID exists.
        unsafe { libc::kill(p, 0) == 0 }
    };
    for &p in &pids {
        // SAFETY: kill(2) on a PID the lab started or found in its namespaces.
        unsafe {
            libc::kill(p, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while pids.iter().any(|&p| alive(p) && !is_zombie(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in &pids {
        if alive(p) {
            // SAFETY: as above.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
    }
}

/// Whether `pid` has exited and waits to be reaped (then `kill 0` still
/// succeeds).
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
