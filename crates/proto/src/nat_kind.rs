//! A device's NAT in RFC 4787 terms, from what STUN servers reported
//! (sans-IO): the pure half of the STUN probe in `ota-peer`.
//!
//! The probe sends Binding requests (RFC 8489) from one UDP socket and
//! fills in [`Observations`]; [`classify`] turns them into a [`NatReport`]
//! with the logic of RFC 5780 §4.3 (mapping) and §4.4 (filtering):
//!
//! - mapping: the server-reflexive addresses seen by a server's primary
//!   address (test I), its alternate IP address with the primary port
//!   (test II) and its alternate address and port (test III), plus any
//!   other server: all the same → endpoint-independent; otherwise the two
//!   answers from one IP address with different ports tell
//!   address-dependent (equal) from address-and-port-dependent (different);
//! - filtering: an answer to a CHANGE-REQUEST with "change IP" and "change
//!   port" (from an endpoint the device never sent to) → endpoint-independent;
//!   else an answer to "change port" only (from the contacted IP address) →
//!   address-dependent; neither → address-and-port-dependent.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// RFC 4787 §4.1: how a NAT reuses a mapping (an external address and
/// port) for packets from one internal address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MappingBehaviour {
    /// The same mapping towards every external address and port (RFC 4787
    /// REQ-1); what hole punching needs.
    EndpointIndependent,
    /// The same mapping towards one external IP address, whatever its port.
    AddressDependent,
    /// A new mapping per external address and port.
    AddressAndPortDependent,
}

/// RFC 4787 §5: which external endpoints may send to a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilteringBehaviour {
    /// Any external endpoint may send to the mapping.
    EndpointIndependent,
    /// Only IP addresses the device has sent to, from any port.
    AddressDependent,
    /// Only the exact addresses and ports the device has sent to.
    AddressAndPortDependent,
}

/// A device's NAT in one word, for logs, the tracker and the punch planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatKind {
    /// No NAT: the server-reflexive address is the device's own address.
    /// (A firewall may still filter; see [`NatReport::filtering`].)
    Open,
    /// Endpoint-independent mapping (a "cone" NAT) with this filtering:
    /// hole punching works, and with endpoint-independent filtering the
    /// device is reachable by anyone who knows its reflexive address.
    EndpointIndependent {
        /// RFC 4787 §5 filtering behaviour.
        filtering: FilteringBehaviour,
    },
    /// Address-dependent or address-and-port-dependent mapping: every
    /// destination sees another mapping, so the reflexive address learnt
    /// from a STUN server is useless to a peer.
    Symmetric,
    /// Not enough answers to tell (one server only, lost answers, or an
    /// endpoint-independent mapping whose filtering was not tested).
    Unknown,
}

impl MappingBehaviour {
    /// The RFC 4787 name, kebab-case as in JSON, e.g. `endpoint-independent`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MappingBehaviour::EndpointIndependent => "endpoint-independent",
            MappingBehaviour::AddressDependent => "address-dependent",
            MappingBehaviour::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

impl FilteringBehaviour {
    /// The RFC 4787 name, kebab-case as in JSON, e.g. `address-dependent`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FilteringBehaviour::EndpointIndependent => "endpoint-independent",
            FilteringBehaviour::AddressDependent => "address-dependent",
            FilteringBehaviour::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

impl fmt::Display for MappingBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for FilteringBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for NatKind {
    /// `open`, `endpoint-independent (filtering: address-dependent)`,
    /// `symmetric`, `unknown`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatKind::Open => f.write_str("open"),
            NatKind::EndpointIndependent { filtering } => write!(f, "endpoint-independent (filtering: {filtering})"),
            NatKind::Symmetric => f.write_str("symmetric"),
            NatKind::Unknown => f.write_str("unknown"),
        }
    }
}

/// What STUN servers told one socket; `None` where a test was not run or
/// got no answer. The addresses are XOR-MAPPED-ADDRESS values (RFC 8489
/// §14.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observations {
    /// Server A (the tracker's responder): the reflexive address it saw.
    pub server_a: Option<SocketAddr>,
    /// Server B (an RFC 5780 server on another IP address than A), its
    /// primary address: RFC 5780 §4.3 test I.
    pub server_b: Option<SocketAddr>,
    /// B's alternate IP address (OTHER-ADDRESS's IP) with B's primary port:
    /// RFC 5780 §4.3 test II.
    pub b_alternate_address: Option<SocketAddr>,
    /// B's alternate IP address and alternate port (OTHER-ADDRESS itself):
    /// RFC 5780 §4.3 test III.
    pub b_alternate_address_and_port: Option<SocketAddr>,
    /// Whether B answered a CHANGE-REQUEST with "change IP" and "change
    /// port" set (the answer comes from OTHER-ADDRESS): RFC 5780 §4.4 test II.
    pub change_ip_and_port: Option<bool>,
    /// Whether B answered a CHANGE-REQUEST with only "change port" set (the
    /// answer comes from B's IP address, alternate port): RFC 5780 §4.4
    /// test III.
    pub change_port: Option<bool>,
}

/// The outcome of a STUN probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatReport {
    /// The server-reflexive address (RFC 8489 §2): server A's answer, else
    /// server B's; `None` when no server answered.
    pub reflexive: Option<SocketAddr>,
    /// RFC 4787 §4.1 mapping, when at least two servers on different IP
    /// addresses answered (and, for a dependent mapping, two ports of one
    /// IP address).
    pub mapping: Option<MappingBehaviour>,
    /// RFC 4787 §5 filtering, when the RFC 5780 §4.4 tests ran.
    pub filtering: Option<FilteringBehaviour>,
    /// The summary.
    pub kind: NatKind,
}

/// Classifies the NAT in front of the socket bound to `local` (its concrete
/// address on the device, not `0.0.0.0`) from `observations`, following
/// RFC 5780 §4.3 and §4.4 (see the module docs). Pure; never panics.
pub fn classify(local: SocketAddr, observations: &Observations) -> NatReport {
    let o = observations;
    let reflexive = o.server_a.or(o.server_b);
    let mapping = mapping(o);
    let filtering = match (o.change_ip_and_port, o.change_port) {
        (Some(true), _) => Some(FilteringBehaviour::EndpointIndependent),
        (Some(false), Some(true)) => Some(FilteringBehaviour::AddressDependent),
        (Some(false), Some(false)) => Some(FilteringBehaviour::AddressAndPortDependent),
        _ => None,
    };
    let kind = match (reflexive, mapping.0, filtering) {
        (None, ..) => NatKind::Unknown,
        (Some(r), ..) if r == local => NatKind::Open,
        (_, Some(MappingBehaviour::EndpointIndependent), Some(filtering)) => NatKind::EndpointIndependent { filtering },
        _ if mapping.1 => NatKind::Symmetric,
        _ => NatKind::Unknown,
    };
    NatReport {
        reflexive,
        mapping: mapping.0,
        filtering,
        kind,
    }
}

/// RFC 5780 §4.3 over all answers: the behaviour if it can be told, and
/// whether the mapping is known to depend on the destination.
fn mapping(o: &Observations) -> (Option<MappingBehaviour>, bool) {
    let seen: Vec<SocketAddr> = [
        o.server_a,
        o.server_b,
        o.b_alternate_address,
        o.b_alternate_address_and_port,
    ]
    .into_iter()
    .flatten()
    .collect();
    // Every observation above is towards another IP address than the one
    // before it, except tests II and III (one IP address, two ports).
    let distinct_ips = {
        let mut ips = 0;
        if o.server_a.is_some() {
            ips += 1;
        }
        if o.server_b.is_some() {
            ips += 1;
        }
        if o.b_alternate_address.is_some() || o.b_alternate_address_and_port.is_some() {
            ips += 1;
        }
        ips
    };
    if seen.len() < 2 || distinct_ips < 2 {
        return (None, false);
    }
    if seen.iter().all(|s| *s == seen[0]) {
        return (Some(MappingBehaviour::EndpointIndependent), false);
    }
    match (o.b_alternate_address, o.b_alternate_address_and_port) {
        (Some(ii), Some(iii)) if ii == iii => (Some(MappingBehaviour::AddressDependent), true),
        (Some(_), Some(_)) => (Some(MappingBehaviour::AddressAndPortDependent), true),
        // Dependent, but no two ports of one IP address answered to tell which.
        _ => (None, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const LOCAL: &str = "192.168.1.10:40000";

    fn all_same(seen: &str) -> Observations {
        Observations {
            server_a: Some(a(seen)),
            server_b: Some(a(seen)),
            b_alternate_address: Some(a(seen)),
            b_alternate_address_and_port: Some(a(seen)),
            change_ip_and_port: Some(false),
            change_port: Some(false),
        }
    }

    #[test]
    fn no_answer_is_unknown() {
        let r = classify(a(LOCAL), &Observations::default());
        assert_eq!(r.kind, NatKind::Unknown);
        assert_eq!((r.reflexive, r.mapping, r.filtering), (None, None, None));
    }

    #[test]
    fn one_server_gives_the_address_only() {
        let o = Observations {
            server_a: Some(a("203.0.113.5:40000")),
            ..Default::default()
        };
        let r = classify(a(LOCAL), &o);
        assert_eq!(r.reflexive, Some(a("203.0.113.5:40000")));
        assert_eq!((r.mapping, r.filtering, r.kind), (None, None, NatKind::Unknown));
        // One server that answers on two ports of one address is still one IP.
        let o = Observations {
            b_alternate_address: Some(a("203.0.113.5:40000")),
            b_alternate_address_and_port: Some(a("203.0.113.5:40000")),
            ..Default::default()
        };
        assert_eq!(classify(a(LOCAL), &o).mapping, None);
    }

    #[test]
    fn public_host_is_open() {
        let mut o = all_same(LOCAL);
        o.change_ip_and_port = Some(true);
        let r = classify(a(LOCAL), &o);
        assert_eq!(r.kind, NatKind::Open);
        assert_eq!(r.mapping, Some(MappingBehaviour::EndpointIndependent));
        assert_eq!(r.filtering, Some(FilteringBehaviour::EndpointIndependent));
        // Open even with only the tracker's answer.
        let o = Observations {
            server_a: Some(a(LOCAL)),
            ..Default::default()
        };
        assert_eq!(classify(a(LOCAL), &o).kind, NatKind::Open);
    }

    #[test]
    fn cone_with_each_filtering() {
        let cases = [
            ((Some(true), None), FilteringBehaviour::EndpointIndependent),
            ((Some(false), Some(true)), FilteringBehaviour::AddressDependent),
            ((Some(false), Some(false)), FilteringBehaviour::AddressAndPortDependent),
        ];
        for ((ip_port, port), filtering) in cases {
            let mut o = all_same("203.0.113.5:40000");
            o.change_ip_and_port = ip_port;
            o.change_port = port;
            let r = classify(a(LOCAL), &o);
            assert_eq!(r.mapping, Some(MappingBehaviour::EndpointIndependent));
            assert_eq!(r.filtering, Some(filtering));
            assert_eq!(r.kind, NatKind::EndpointIndependent { filtering });
        }
    }

    #[test]
    fn cone_without_filtering_tests_is_unknown_but_keeps_its_mapping() {
        let o = Observations {
            server_a: Some(a("203.0.113.5:40000")),
            server_b: Some(a("203.0.113.5:40000")),
            ..Default::default()
        };
        let r = classify(a(LOCAL), &o);
        assert_eq!(r.mapping, Some(MappingBehaviour::EndpointIndependent));
        assert_eq!((r.filtering, r.kind), (None, NatKind::Unknown));
        // Change-port result alone says nothing (§4.4 needs test II first).
        let o = Observations {
            change_port: Some(true),
            ..o
        };
        assert_eq!(classify(a(LOCAL), &o).filtering, None);
    }

    #[test]
    fn dependent_mappings_are_symmetric() {
        let mut o = all_same("203.0.113.5:40000");
        o.b_alternate_address = Some(a("203.0.113.5:40001"));
        o.b_alternate_address_and_port = Some(a("203.0.113.5:40001"));
        let r = classify(a(LOCAL), &o);
        assert_eq!(r.mapping, Some(MappingBehaviour::AddressDependent));
        assert_eq!(r.kind, NatKind::Symmetric);
        o.b_alternate_address_and_port = Some(a("203.0.113.5:40002"));
        let r = classify(a(LOCAL), &o);
        assert_eq!(r.mapping, Some(MappingBehaviour::AddressAndPortDependent));
        assert_eq!(r.kind, NatKind::Symmetric);
        assert_eq!(r.reflexive, Some(a("203.0.113.5:40000")));
        // Two servers disagree, no third: dependent, sub-kind unknown.
        let o = Observations {
            server_a: Some(a("203.0.113.5:40000")),
            server_b: Some(a("203.0.113.5:51000")),
            ..Default::default()
        };
        let r = classify(a(LOCAL), &o);
        assert_eq!((r.mapping, r.kind), (None, NatKind::Symmetric));
    }

    #[test]
    fn serde_and_display_use_rfc_4787_names() {
        let kind = NatKind::EndpointIndependent {
            filtering: FilteringBehaviour::AddressAndPortDependent,
        };
        assert_eq!(
            serde_json::to_string(&kind).unwrap(),
            r#"{"endpoint-independent":{"filtering":"address-and-port-dependent"}}"#
        );
        assert_eq!(
            kind.to_string(),
            "endpoint-independent (filtering: address-and-port-dependent)"
        );
        assert_eq!(serde_json::to_string(&NatKind::Symmetric).unwrap(), r#""symmetric""#);
        assert_eq!(NatKind::Open.to_string(), "open");
        assert_eq!(MappingBehaviour::AddressDependent.to_string(), "address-dependent");
        let report = classify(a(LOCAL), &all_same("203.0.113.5:40000"));
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<NatReport>(&json).unwrap(), report);
        assert!(json.contains(r#""mapping":"endpoint-independent""#), "{json}");
    }
}
