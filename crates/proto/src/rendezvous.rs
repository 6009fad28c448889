//! Rendezvous for hole punching: the stand-in addresses the tracker hands
//! out for peers that need a punched QUIC path, the QUIC identity a device
//! reports, and the introduction both sides of a punch receive.
//!
//! librqbit dials whatever address its tracker gives it and has no hook for
//! another transport (only a SOCKS5 `proxy_url`), so a peer that cannot be
//! dialed over TCP is handed out as a **bridge address**: an IPv6
//! unique-local address (RFC 4193) in [`BRIDGE_PREFIX`] whose next 48 bits
//! are the swarm's tag (the info hash's first 6 bytes: SOCKS5 CONNECT
//! carries no info hash) and whose last 32 bits are the peer's swarm-local
//! slot number. The device's SOCKS5 bridge recognises it ([`bridge_slot`],
//! [`bridge_swarm_tag`]), asks the tracker to introduce the two
//! devices (`POST /api/introductions` with an [`IntroductionRequest`]),
//! gets the other side's [`Introduction`] and dials QUIC; the tracker pushes
//! the requester's [`Introduction`] to the other side (SSE event
//! `introduce`), which sends towards the requester's candidates at once so
//! its NAT lets the QUIC Initial in (RFC 8445 §2.2's simultaneous checks,
//! reduced to one side dialing).
//!
//! Each device pins the other's certificate by [`CertFingerprint`] (no CA,
//! no trust on first use): the tracker only gives out fingerprints that
//! devices with valid tokens reported themselves.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::direct_paths::is_lan_candidate;
use crate::nat_kind::NatKind;
use crate::InfoHash;

/// The first 48 bits of every bridge address: `fd6f:7461:7270::/48`, an
/// RFC 4193 §3.2 locally assigned prefix (`fd`, then the 40-bit global ID
/// `6f:7461:7270`, "ota" "rp"). Never routed: only the device's own SOCKS5
/// bridge sees these addresses.
pub const BRIDGE_PREFIX: [u16; 3] = [0xfd6f, 0x7461, 0x7270];

/// The port in a handed-out bridge address (compact peers need one; the
/// bridge ignores it).
pub const BRIDGE_PORT: u16 = 6881;

/// The most candidates one [`Introduction`] may carry.
pub const MAX_CANDIDATES: usize = 8;

/// The bridge address of swarm-local slot `slot` in swarm `info_hash`:
/// `fd6f:7461:7270:T0T1:T2T3:T4T5:HI:LO` with `T` the info hash's first 6
/// bytes and `slot = HI << 16 | LO`.
pub fn bridge_address(info_hash: &InfoHash, slot: u32) -> Ipv6Addr {
    let [p0, p1, p2] = BRIDGE_PREFIX;
    let t = |i: usize| u16::from_be_bytes([info_hash.0[i], info_hash.0[i + 1]]);
    Ipv6Addr::new(p0, p1, p2, t(0), t(2), t(4), (slot >> 16) as u16, slot as u16)
}

/// The slot a bridge address stands for, or `None` when `ip` is any other
/// address (which the bridge dials directly over TCP).
pub fn bridge_slot(ip: IpAddr) -> Option<u32> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    (s[..3] == BRIDGE_PREFIX).then(|| (u32::from(s[6]) << 16) | u32::from(s[7]))
}

/// The swarm tag of a bridge address: the first 6 bytes of the info hash
/// it was handed out for (`None` for any other address).
pub fn bridge_swarm_tag(ip: IpAddr) -> Option<[u8; 6]> {
    bridge_slot(ip)?;
    let IpAddr::V6(v6) = ip else { return None };
    let o = v6.octets();
    let mut tag = [0u8; 6];
    tag.copy_from_slice(&o[6..12]);
    Some(tag)
}

/// SHA-256 of a DER-encoded X.509 certificate (32 bytes; 64 lowercase hex
/// digits in JSON and in logs). The pin one device holds for another's
/// self-signed QUIC certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertFingerprint(pub [u8; 32]);

impl CertFingerprint {
    /// The fingerprint of the DER certificate `der`.
    pub fn of_der(der: &[u8]) -> CertFingerprint {
        CertFingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

/// Errors parsing a [`CertFingerprint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a certificate fingerprint is 64 hex digits (SHA-256)")]
pub struct BadFingerprint;

impl FromStr for CertFingerprint {
    type Err = BadFingerprint;
    fn from_str(s: &str) -> Result<Self, BadFingerprint> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadFingerprint)?;
        Ok(CertFingerprint(out))
    }
}

impl Serialize for CertFingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CertFingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A device's QUIC endpoint as it reports it in
/// [`DirectPaths::quic`](crate::direct_paths::DirectPaths::quic): the
/// endpoint listens on the UDP peer socket (the same port number as the TCP
/// peer listener, whose reflexive address STUN found).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuicPath {
    /// The fingerprint of the device's self-signed certificate.
    pub fingerprint: CertFingerprint,
}

/// Body of `POST /api/introductions` (device token): introduce the caller
/// to the peer that the tracker handed out as `peer` in swarm `info_hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntroductionRequest {
    /// The swarm both devices are in.
    pub info_hash: InfoHash,
    /// The bridge address the caller's announce got ([`bridge_address`]).
    pub peer: Ipv6Addr,
}

/// One side of an introduction: what the other side needs to reach it. The
/// tracker answers `POST /api/introductions` with the target's, and pushes
/// the requester's to the target (SSE event `introduce`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introduction {
    /// The tracker's number for this introduction (the same on both sides).
    pub id: u64,
    /// The swarm.
    pub info_hash: InfoHash,
    /// Where to send, best first: LAN addresses when both sides share a
    /// public IP, the UPnP-mapped address, the server-reflexive address.
    /// At most [`MAX_CANDIDATES`].
    pub candidates: Vec<SocketAddr>,
    /// The side's certificate pin.
    pub fingerprint: CertFingerprint,
    /// The side's NAT as its STUN probe classified it, when it did.
    #[serde(default)]
    pub nat: Option<NatKind>,
    /// The side is the origin seeder's QUIC listener (public, no NAT: it
    /// is dialed directly and punches nothing back). A label only: the pin
    /// is what the dialer trusts.
    #[serde(default)]
    pub origin: bool,
}

/// Why an [`Introduction`] is rejected by the side that receives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntroductionError {
    /// No candidates, or more than [`MAX_CANDIDATES`].
    #[error("an introduction carries 1 to {MAX_CANDIDATES} candidates, got {0}")]
    CandidateCount(usize),
    /// A candidate with port 0, or an unspecified, multicast or loopback
    /// address.
    #[error("candidate {0} is not a unicast address with a port")]
    BadCandidate(SocketAddr),
}

impl Introduction {
    /// Checks what the receiving device must check before sending anything
    /// to the candidates (the tracker is on the network: its answers are
    /// hostile input too). Pure.
    pub fn check(&self) -> Result<(), IntroductionError> {
        self.check_candidates(false)
    }

    /// [`Introduction::check`] that lets loopback candidates through: only
    /// for several devices on one host (tests), never for a device.
    pub fn check_allowing_loopback(&self) -> Result<(), IntroductionError> {
        self.check_candidates(true)
    }

    fn check_candidates(&self, loopback_ok: bool) -> Result<(), IntroductionError> {
        let n = self.candidates.len();
        if n == 0 || n > MAX_CANDIDATES {
            return Err(IntroductionError::CandidateCount(n));
        }
        for c in &self.candidates {
            let ip = c.ip().to_canonical();
            if c.port() == 0
                || ip.is_unspecified()
                || ip.is_multicast()
                || (ip.is_loopback() && !loopback_ok)
                || bridge_slot(ip).is_some()
            {
                return Err(IntroductionError::BadCandidate(*c));
            }
        }
        Ok(())
    }

    /// The candidates in the order to try them: LAN addresses first (RFC
    /// 8445 §5.1.2's host-before-reflexive preference), then the rest as
    /// given, duplicates dropped.
    pub fn ordered_candidates(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::with_capacity(self.candidates.len());
        let lan = self.candidates.iter().filter(|c| is_lan_candidate(**c));
        let public = self.candidates.iter().filter(|c| !is_lan_candidate(**c));
        for c in lan.chain(public) {
            if !out.contains(c) {
                out.push(*c);
            }
        }
        out
    }
}

/// What one side does to open a path to the other, from both sides' NAT
/// kinds (pure; both sides compute it from the same two kinds, each for
/// itself).
///
/// - Neither side symmetric (or a kind unknown): [`PunchRole::Direct`],
///   both send to the other's candidates; an endpoint-independent mapping
///   keeps the reflexive address STUN learnt (RFC 4787 §4.1).
/// - One side symmetric: the birthday approach (as Tailscale describes it:
///   about 98 % with 256 ports and 1,024 probes). The symmetric side opens
///   [`BIRTHDAY_PORTS`] sockets, each sending to the other's reflexive
///   address, so its NAT holds that many mappings towards it
///   ([`PunchRole::OpenPorts`]); the other side sends up to
///   [`BIRTHDAY_PROBES`] probes to random ports of the symmetric side's
///   public IP ([`PunchRole::Probe`]). A probe that hits one of the
///   mappings passes both NATs; that socket carries the QUIC connection.
///   With P ports open among N = 64,512 and k probes the chance of no hit
///   is (1 − P/N)^k: 1.8 % at k = 1,024, 0.03 % at 2,048.
/// - Both symmetric: [`PunchRole::Hopeless`]; no path is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PunchRole {
    /// Send to the other side's candidates from the one peer socket.
    Direct,
    /// Open [`BIRTHDAY_PORTS`] sockets towards the other side.
    OpenPorts,
    /// Probe random ports of the other side's public IP.
    Probe,
    /// Both sides symmetric: no punched path exists.
    Hopeless,
}

/// Sockets the symmetric side opens in the birthday approach.
pub const BIRTHDAY_PORTS: usize = 256;
/// Most probes the other side sends in the birthday approach.
pub const BIRTHDAY_PROBES: usize = 2048;
/// The ports probed: the unprivileged range Linux masquerade picks from.
pub const PROBED_PORTS: std::ops::RangeInclusive<u16> = 1024..=65535;

impl PunchRole {
    /// This side's role, with `mine` this side's NAT and `theirs` the
    /// other's.
    pub fn for_kinds(mine: Option<NatKind>, theirs: Option<NatKind>) -> PunchRole {
        let sym = |k: Option<NatKind>| k == Some(NatKind::Symmetric);
        match (sym(mine), sym(theirs)) {
            (true, true) => PunchRole::Hopeless,
            (true, false) => PunchRole::OpenPorts,
            (false, true) => PunchRole::Probe,
            (false, false) => PunchRole::Direct,
        }
    }

    /// The dialing side's role ([`Self::for_kinds`]), except towards a
    /// side with no NAT ([`NatKind::Open`]: a public device, the origin
    /// seeder), which is dialed directly from the peer socket whatever this
    /// side's NAT: an open side accepts a QUIC Initial from any source,
    /// and the dialer's own NAT, symmetric or not, lets the answer back in
    /// (RFC 4787 §5: a mapping admits replies from the address it was made
    /// for).
    pub fn dialing(mine: Option<NatKind>, theirs: Option<NatKind>) -> PunchRole {
        if theirs == Some(NatKind::Open) {
            PunchRole::Direct
        } else {
            Self::for_kinds(mine, theirs)
        }
    }

    /// The introduced side's role ([`Self::for_kinds`]), except that a side
    /// with no NAT does not probe a symmetric requester: that requester
    /// dials it directly ([`Self::dialing`]).
    pub fn introduced(mine: Option<NatKind>, theirs: Option<NatKind>) -> PunchRole {
        if mine == Some(NatKind::Open) {
            PunchRole::Direct
        } else {
            Self::for_kinds(mine, theirs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intro(candidates: &[&str]) -> Introduction {
        Introduction {
            id: 1,
            info_hash: InfoHash([7; 20]),
            candidates: candidates.iter().map(|c| c.parse().unwrap()).collect(),
            fingerprint: CertFingerprint([1; 32]),
            nat: None,
            origin: false,
        }
    }

    #[test]
    fn bridge_addresses_round_trip_and_nothing_else_is_one() {
        let ih = InfoHash([0xab; 20]);
        for slot in [0, 1, 0xffff, 0x1_0000, u32::MAX] {
            let ip = IpAddr::V6(bridge_address(&ih, slot));
            assert_eq!(bridge_slot(ip), Some(slot), "{ip}");
            assert_eq!(bridge_swarm_tag(ip), Some([0xab; 6]), "{ip}");
            assert!(crate::direct_paths::is_lan_ip(ip), "a ULA");
        }
        let mut ih = InfoHash([0; 20]);
        ih.0[..6].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            bridge_address(&ih, 0x0102_0304).to_string(),
            "fd6f:7461:7270:102:304:506:102:304"
        );
        for other in ["fd6f:7461:7271::1", "fd00::1", "10.0.0.1", "::1"] {
            assert_eq!(bridge_slot(other.parse().unwrap()), None, "{other}");
            assert_eq!(bridge_swarm_tag(other.parse().unwrap()), None, "{other}");
        }
    }

    #[test]
    fn fingerprints_are_sha256_hex_in_json() {
        let f = CertFingerprint::of_der(b"abc");
        assert_eq!(
            f.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<CertFingerprint>(&json).unwrap(), f);
        assert!(serde_json::from_str::<CertFingerprint>("\"abcd\"").is_err());
        assert!("zz".repeat(32).parse::<CertFingerprint>().is_err());
    }

    #[test]
    fn introductions_are_checked_before_anything_is_sent() {
        assert_eq!(intro(&["11.0.0.5:40001"]).check(), Ok(()));
        assert_eq!(intro(&["127.0.0.1:5"]).check_allowing_loopback(), Ok(()));
        assert_eq!(intro(&[]).check(), Err(IntroductionError::CandidateCount(0)));
        let many: Vec<String> = (1..=9).map(|i| format!("11.0.0.{i}:1")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(intro(&many).check(), Err(IntroductionError::CandidateCount(9)));
        for bad in [
            "0.0.0.0:1",
            "11.0.0.5:0",
            "127.0.0.1:5",
            "224.0.0.1:5",
            "[fd6f:7461:7270::1]:5",
            "[::ffff:127.0.0.1]:5",
        ] {
            assert_eq!(
                intro(&[bad]).check(),
                Err(IntroductionError::BadCandidate(bad.parse().unwrap())),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_symmetric_side_opens_ports_and_the_other_probes() {
        use crate::nat_kind::FilteringBehaviour::AddressAndPortDependent as Apd;
        let cone = Some(NatKind::EndpointIndependent { filtering: Apd });
        let sym = Some(NatKind::Symmetric);
        assert_eq!(PunchRole::for_kinds(cone, cone), PunchRole::Direct);
        assert_eq!(PunchRole::for_kinds(None, Some(NatKind::Open)), PunchRole::Direct);
        assert_eq!(PunchRole::for_kinds(sym, cone), PunchRole::OpenPorts);
        assert_eq!(PunchRole::for_kinds(cone, sym), PunchRole::Probe);
        assert_eq!(PunchRole::for_kinds(Some(NatKind::Unknown), sym), PunchRole::Probe);
        assert_eq!(PunchRole::for_kinds(sym, sym), PunchRole::Hopeless);
        // An open side is dialed directly, and does not probe.
        let open = Some(NatKind::Open);
        assert_eq!(PunchRole::dialing(sym, open), PunchRole::Direct);
        assert_eq!(PunchRole::introduced(open, sym), PunchRole::Direct);
        // A symmetric side introduced to an open requester still opens
        // ports: the open requester cannot guess its mapping.
        assert_eq!(PunchRole::introduced(sym, open), PunchRole::OpenPorts);
        assert_eq!(PunchRole::dialing(open, sym), PunchRole::Probe);
        assert_eq!(PunchRole::dialing(cone, sym), PunchRole::Probe);
        assert_eq!(PunchRole::introduced(sym, cone), PunchRole::OpenPorts);
        // The miss chance the docs give.
        let n = f64::from(*PROBED_PORTS.end() - *PROBED_PORTS.start() + 1);
        let miss = |k: i32| (1.0 - BIRTHDAY_PORTS as f64 / n).powi(k);
        assert!((miss(1024) - 0.018).abs() < 0.001, "{}", miss(1024));
        assert!(miss(BIRTHDAY_PROBES as i32) < 0.0004);
    }

    #[test]
    fn lan_candidates_come_first() {
        let i = intro(&["11.0.0.5:40001", "192.168.1.2:40001", "11.0.0.5:40001", "11.0.0.9:5"]);
        let order: Vec<String> = i.ordered_candidates().iter().map(ToString::to_string).collect();
        assert_eq!(order, ["192.168.1.2:40001", "11.0.0.5:40001", "11.0.0.9:5"]);
    }
}
