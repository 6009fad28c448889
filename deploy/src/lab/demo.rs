//! The `flash-crowd lab up|down|status` topology and views: one router of
//! each kind with one host behind it, for people who want to look inside.

use std::fmt::Write;

use super::{cmd, Lab, RouterKind};

/// The port the demo's [`RouterKind::PortForwarded`] router forwards (UDP
/// and TCP), BitTorrent's customary 6881 + 40000.
pub const DEMO_FORWARDED_PORT: u16 = 46_881;

/// Adds the demo topology to `lab`: two internet addresses for servers, and
/// one router of every [`RouterKind`] with one host behind it. Returns a
/// table of what was built (namespace, kind, addresses).
///
/// Errors: building a namespace, link or ruleset fails (see
/// [`Lab::add_router`]).
pub fn build_demo(lab: &mut Lab) -> anyhow::Result<String> {
    let mut out = String::new();
    let servers = [lab.add_internet_address()?, lab.add_internet_address()?];
    let _ = writeln!(out, "lab {}", lab.prefix());
    let _ = writeln!(
        out,
        "internet  {}  servers {}, {} (enter: ip netns exec {} ...)",
        lab.internet_ns(),
        servers[0],
        servers[1],
        lab.internet_ns()
    );
    let kinds = [
        RouterKind::Public,
        RouterKind::PortForwarded {
            port: DEMO_FORWARDED_PORT,
        },
        RouterKind::Cone,
        RouterKind::Upnp,
        RouterKind::Symmetric,
        RouterKind::Cgnat,
    ];
    for kind in kinds {
        let router = lab.add_router(kind)?;
        let host = lab.add_host(&router)?;
        let extra = match kind {
            RouterKind::PortForwarded { port } => format!(", {}:{port} -> {}:{port}", router.public, host.addr),
            RouterKind::Upnp => format!(", UPnP IGD {}", router.upnp_description_url().unwrap_or_default()),
            RouterKind::Cgnat => format!(
                ", the carrier {}'s; router WAN {}",
                router.carrier_ns.as_deref().unwrap_or("?"),
                router.wan
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<15} router {} (public {}{extra})  host {} {}  mapping {:?}, filtering {:?}",
            kind.name(),
            router.ns,
            router.public,
            host.ns,
            host.addr,
            kind.mapping(),
            kind.filtering()
        );
    }
    Ok(out)
}

/// What exists now: every lab namespace (all runs', or those starting with
/// `prefix`) with its IPv4 addresses, and which prefixes are stale (their
/// process is gone).
///
/// Errors: `ip` fails or times out.
pub fn status(prefix: Option<&str>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut namespaces: Vec<String> = Lab::list_all()?
        .into_iter()
        .filter(|n| prefix.is_none_or(|p| n.starts_with(p)))
        .collect();
    namespaces.sort();
    if namespaces.is_empty() {
        out.push_str("no lab namespaces\n");
    }
    for ns in &namespaces {
        let addrs = cmd::ip(&["-n", ns, "-4", "-br", "addr", "show"]).unwrap_or_default();
        let addrs: Vec<String> = addrs
            .lines()
            .filter(|l| !l.starts_with("lo "))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let _ = writeln!(out, "{ns}: {}", addrs.join("; "));
    }
    let stale = Lab::stale_prefixes()?;
    if !stale.is_empty() {
        let _ = writeln!(out, "stale (process gone): {}", stale.join(" "));
    }
    Ok(out)
}
