//! A device's direct paths: the addresses at which other devices can reach
//! it without the tracker's help (its LAN address, a port its router maps
//! for it over UPnP), what it reports to the tracker (`PUT /api/paths`) and
//! how the tracker judges each address.
//!
//! The tracker pairs devices behind the same public address over their LAN
//! addresses (the 2017 field study's devices never talked over their LAN,
//! although all five sat behind one access point), and hands out a device's
//! public address only once it dialled that address itself (see the
//! tracker's `connectability` module).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Most LAN addresses one report may carry (one per interface and family).
pub const MAX_LAN_ADDRS: usize = 4;

/// Most bytes of a free-text reason in a report.
pub const MAX_REASON_LEN: usize = 300;

/// Whether an address is on a local or carrier network: RFC 1918 private
/// (10/8, 172.16/12, 192.168/16), RFC 6598 shared (100.64/10), loopback
/// (127/8, ::1), link-local (169.254/16, fe80::/10), IPv6 unique local
/// (fc00::/7, RFC 4193). IPv4-mapped IPv6 addresses are judged as IPv4.
pub fn is_lan_ip(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || v4.is_loopback() || v4.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            v6.is_loopback() || (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

/// Whether `addr` may be handed out as a LAN address of a device: a
/// [`is_lan_ip`] address that is neither loopback nor link-local (those do
/// not name one host across a LAN), with a port other than 0.
pub fn is_lan_candidate(addr: SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    addr.port() != 0 && is_lan_ip(ip) && !ip.is_loopback() && !link_local
}

/// What a device reports about its direct paths (`PUT /api/paths`, JSON).
/// Every field is optional; an empty report clears the previous one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectPaths {
    /// Its peer-wire listen addresses on its LAN (`ip:port`), at most
    /// [`MAX_LAN_ADDRS`], each a [`is_lan_candidate`].
    #[serde(default)]
    pub lan: Vec<SocketAddr>,
    /// The external address its router maps to its peer port over UPnP IGD
    /// (TCP and UDP), if it holds a mapping.
    #[serde(default)]
    pub mapped: Option<SocketAddr>,
    /// Why it holds no UPnP mapping (no gateway answered, the router sits
    /// behind a carrier-grade NAT, the port is taken, mapping off), at most
    /// [`MAX_REASON_LEN`] bytes.
    #[serde(default)]
    pub mapping_refusal: Option<String>,
    /// What its STUN probe found from its UDP peer socket: the
    /// server-reflexive address and the NAT's mapping and filtering
    /// behaviour (RFC 4787, RFC 5780).
    #[serde(default)]
    pub nat: Option<crate::nat_kind::NatReport>,
    /// The device's QUIC endpoint on the UDP peer socket, when it runs one
    /// (the hole-punching transport, [`crate::rendezvous`]).
    #[serde(default)]
    pub quic: Option<crate::rendezvous::QuicPath>,
}

/// Why a [`DirectPaths`] report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathsError {
    /// More LAN addresses than [`MAX_LAN_ADDRS`].
    #[error("at most {MAX_LAN_ADDRS} LAN addresses, got {0}")]
    TooManyLanAddrs(usize),
    /// A LAN address that is not private, shared or unique-local, or is
    /// loopback, link-local or port 0.
    #[error("{0} is not a LAN address (RFC 1918, RFC 6598 or RFC 4193, port not 0)")]
    NotLan(SocketAddr),
    /// A mapped address that is itself a LAN address or port 0.
    #[error("{0} is not a public address with a port")]
    NotPublic(SocketAddr),
    /// A reason longer than [`MAX_REASON_LEN`] bytes.
    #[error("mapping_refusal longer than {MAX_REASON_LEN} bytes")]
    ReasonTooLong,
}

impl DirectPaths {
    /// Checks a report from the network.
    ///
    /// Errors: see [`PathsError`].
    pub fn check(&self) -> Result<(), PathsError> {
        if self.lan.len() > MAX_LAN_ADDRS {
            return Err(PathsError::TooManyLanAddrs(self.lan.len()));
        }
        if let Some(bad) = self.lan.iter().find(|a| !is_lan_candidate(**a)) {
            return Err(PathsError::NotLan(*bad));
        }
        if let Some(m) = self.mapped {
            if m.port() == 0 || is_lan_ip(m.ip()) || m.ip().is_unspecified() || m.ip().is_multicast() {
                return Err(PathsError::NotPublic(m));
            }
        }
        if self.mapping_refusal.as_ref().is_some_and(|r| r.len() > MAX_REASON_LEN) {
            return Err(PathsError::ReasonTooLong);
        }
        Ok(())
    }

    /// Its LAN address of the family of `family` (IPv4 or IPv6), if any.
    pub fn lan_for(&self, family: IpAddr) -> Option<SocketAddr> {
        let v4 = family.to_canonical().is_ipv4();
        self.lan.iter().copied().find(|a| a.ip().to_canonical().is_ipv4() == v4)
    }
}

/// How the tracker lets other devices reach a peer (the swarm view's
/// `reached` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reach {
    /// At its public address, which the tracker dialled and found open
    /// (no NAT, a forwarded port or a UPnP mapping), and at its LAN address
    /// by devices behind the same public address.
    Public,
    /// Only at its LAN address, by devices behind the same public address.
    LanOnly,
    /// Not at all: it dials out to reachable peers and the origin.
    Unreachable,
    /// Not known yet (the tracker's dial is under way).
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lan_ranges() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "fd00::1",
        ] {
            assert!(is_lan_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "11.0.0.1",
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_lan_ip(ip.parse().unwrap()), "{ip}");
        }
        assert!(is_lan_ip("::ffff:192.168.0.1".parse().unwrap()));
        assert!(is_lan_candidate(a("192.168.3.2:40001")));
        assert!(is_lan_candidate(a("[fd12::2]:40001")));
        for bad in [
            "127.0.0.1:1",
            "169.254.0.1:1",
            "[fe80::1]:1",
            "192.168.0.1:0",
            "11.0.0.1:1",
        ] {
            assert!(!is_lan_candidate(a(bad)), "{bad}");
        }
    }

    #[test]
    fn reports_are_checked() {
        let ok = DirectPaths {
            lan: vec![a("192.168.1.2:40001"), a("[fd00::2]:40001")],
            mapped: Some(a("11.0.1.1:40001")),
            mapping_refusal: None,
            nat: None,
            quic: None,
        };
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(ok.lan_for("11.0.0.9".parse().unwrap()), Some(a("192.168.1.2:40001")));
        assert_eq!(ok.lan_for("2001:db8::1".parse().unwrap()), Some(a("[fd00::2]:40001")));
        let mut bad = ok.clone();
        bad.lan.push(a("8.8.8.8:1"));
        assert_eq!(bad.check(), Err(PathsError::NotLan(a("8.8.8.8:1"))));
        bad.lan = vec![a("10.0.0.1:1"); 5];
        assert_eq!(bad.check(), Err(PathsError::TooManyLanAddrs(5)));
        let mut bad = ok.clone();
        bad.mapped = Some(a("100.64.0.1:40001"));
        assert!(matches!(bad.check(), Err(PathsError::NotPublic(_))));
        let mut bad = ok;
        bad.mapping_refusal = Some("x".repeat(MAX_REASON_LEN + 1));
        assert_eq!(bad.check(), Err(PathsError::ReasonTooLong));
        let empty: DirectPaths = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, DirectPaths::default());
    }
}
