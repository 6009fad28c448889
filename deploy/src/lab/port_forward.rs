//! Port forwards and hairpin NAT on a lab home router, added after the
//! router is built: the study's "open port" for any host behind it, and the
//! loop-back path a home router gives LAN hosts that dial its own public
//! address (RFC 4787 section 6, REQ-9: hairpinning).

use std::net::Ipv4Addr;

use anyhow::Context;

use super::{cmd, Lab, Router, RouterKind};

impl Lab {
    /// Forwards WAN UDP and TCP port `port` of `router` to the same port of
    /// its host number `host` (from 0, [`Router::host_addr`]): nftables
    /// `dnat` for packets to the router's WAN address, so the host accepts
    /// unsolicited inbound traffic on it (the study's "connectable"). With
    /// [`Lab::enable_hairpin`] the forward also works for LAN hosts that dial
    /// the public address.
    ///
    /// Errors: `router` is not a NAT home router of this lab
    /// ([`RouterKind::Public`] forwards everything already;
    /// [`RouterKind::Cgnat`] has no public address of its own to forward),
    /// or `nft` fails.
    pub fn forward_port(&mut self, router: &Router, host: u32, port: u16) -> anyhow::Result<()> {
        let r = self.nat_router(router)?;
        let to = r.host_addr(host);
        let wan = r.wan;
        let rules = format!(
            "add rule ip ota_nat prerouting ip daddr {wan} udp dport {port} dnat to {to}:{port}\n\
             add rule ip ota_nat prerouting ip daddr {wan} tcp dport {port} dnat to {to}:{port}\n"
        );
        cmd::nft_in(&r.ns, &rules).with_context(|| format!("cannot forward port {port} of {}", r.ns))
    }

    /// Turns on hairpin NAT (RFC 4787 section 6, REQ-9) in `router`: a LAN
    /// host that sends to the router's public address and a forwarded port
    /// reaches the host behind the forward, its source rewritten to the
    /// router's LAN address so the answer comes back through the router.
    /// Without it such packets are dropped.
    ///
    /// Errors: as [`Lab::forward_port`].
    pub fn enable_hairpin(&mut self, router: &Router) -> anyhow::Result<()> {
        let r = self.nat_router(router)?;
        let lan = lan_net(r.lan_gateway);
        let rules = format!(
            "add rule ip ota_nat postrouting oifname \"lan\" ip saddr {lan} ct status dnat masquerade\n\
             add rule ip ota_filter forward iifname \"lan\" oifname \"lan\" ct status dnat accept\n"
        );
        cmd::nft_in(&r.ns, &rules).with_context(|| format!("cannot turn on hairpin NAT in {}", r.ns))
    }

    /// The router of this lab named by `router`, if it is a NAT home router
    /// with a WAN address of its own.
    fn nat_router(&self, router: &Router) -> anyhow::Result<Router> {
        let r = self
            .routers
            .iter()
            .find(|r| r.ns == router.ns)
            .context("router is not part of this lab")?;
        anyhow::ensure!(
            !matches!(r.kind, RouterKind::Public | RouterKind::Cgnat),
            "a {} router has no port forwards (public: nothing is filtered; cgnat: the public address is the carrier's)",
            r.kind.name()
        );
        Ok(r.clone())
    }
}

/// The /24 of a LAN whose gateway is `gateway`, as `a.b.c.0/24`.
fn lan_net(gateway: Ipv4Addr) -> String {
    let [a, b, c, _] = gateway.octets();
    format!("{a}.{b}.{c}.0/24")
}
