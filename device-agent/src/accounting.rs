//! Bytes received per source: origin vs other devices, and of the device
//! bytes, LAN vs internet peers.
//!
//! Pure: takes the per-peer byte counters librqbit keeps (keyed by the
//! peer's `ip:port` as dialled) and the origin's peer-wire addresses as the
//! tracker lists them. The origin never dials devices (the tracker gives it
//! no peers), so every origin connection is keyed by its listen address.

use std::collections::HashMap;

/// Payload bytes received, split by source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceBytes {
    /// From the origin seeder, bytes.
    pub origin: u64,
    /// From other devices, bytes.
    pub peers: u64,
    /// Of `peers`, bytes from devices at a LAN address ([`is_lan_ip`]).
    pub lan_peers: u64,
    /// Of `peers`, bytes from devices at any other (internet) address.
    pub internet_peers: u64,
}

pub use ota_proto::direct_paths::is_lan_ip;

/// Whether a peer `ip:port` (as librqbit keys peers) is at a LAN address;
/// an address that does not parse counts as internet.
pub fn is_lan_addr(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>()
        .map(|a| is_lan_ip(a.ip()))
        .unwrap_or(false)
}

/// Splits per-peer fetched bytes into origin and peer bytes.
pub fn split_by_source<'a>(
    fetched_by_peer: impl IntoIterator<Item = (&'a str, u64)>,
    origin_addrs: &[String],
) -> SourceBytes {
    let mut out = SourceBytes::default();
    for (addr, bytes) in fetched_by_peer {
        if origin_addrs.iter().any(|o| o == addr) {
            out.origin += bytes;
        } else {
            out.peers += bytes;
            if is_lan_addr(addr) {
                out.lan_peers += bytes;
            } else {
                out.internet_peers += bytes;
            }
        }
    }
    out
}

/// The peers (`ip:port`) of a per-peer stats snapshot (as in
/// [`per_peer_bytes`]) whose connection is up (`"state": "live"`).
pub fn live_peers(snapshot: &serde_json::Value) -> Vec<String> {
    snapshot["peers"]
        .as_object()
        .map(|peers| {
            peers
                .iter()
                .filter(|(_, p)| p["state"] == "live")
                .map(|(a, _)| a.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads `{"peers": {"ip:port": {"counters": {"fetched_bytes": N, "uploaded_bytes": M}}}}`
/// (librqbit's per-peer stats snapshot serialized as JSON) into
/// `addr -> (fetched bytes, uploaded bytes)`.
pub fn per_peer_bytes(snapshot: &serde_json::Value) -> HashMap<String, (u64, u64)> {
    snapshot["peers"]
        .as_object()
        .map(|peers| {
            peers
                .iter()
                .map(|(addr, p)| {
                    let c = &p["counters"];
                    (
                        addr.clone(),
                        (
                            c["fetched_bytes"].as_u64().unwrap_or(0),
                            c["uploaded_bytes"].as_u64().unwrap_or(0),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_bytes_are_told_apart_from_peer_bytes() {
        let snap = serde_json::json!({"peers": {
            "127.0.0.1:6881": {"counters": {"fetched_bytes": 1000, "uploaded_bytes": 0}},
            "127.0.0.1:40001": {"counters": {"fetched_bytes": 300, "uploaded_bytes": 50}},
            "127.0.0.1:40002": {"counters": {"fetched_bytes": 200, "uploaded_bytes": 70}}
        }});
        let m = per_peer_bytes(&snap);
        assert_eq!(m["127.0.0.1:40002"], (200, 70));
        let s = split_by_source(m.iter().map(|(a, (f, _))| (a.as_str(), *f)), &["127.0.0.1:6881".into()]);
        assert_eq!(
            s,
            SourceBytes {
                origin: 1000,
                peers: 500,
                lan_peers: 500,
                internet_peers: 0
            }
        );
        let none = split_by_source(m.iter().map(|(a, (f, _))| (a.as_str(), *f)), &[]);
        assert_eq!(
            none,
            SourceBytes {
                origin: 0,
                peers: 1500,
                lan_peers: 1500,
                internet_peers: 0
            }
        );
        let mixed = split_by_source(
            [
                ("8.8.8.8:6881", 7),
                ("192.168.1.4:6881", 11),
                ("[2001:db8::1]:6881", 13),
                ("[fd00::2]:6881", 17),
                ("bogus", 19),
            ],
            &["8.8.8.8:6881".into()],
        );
        assert_eq!(
            mixed,
            SourceBytes {
                origin: 7,
                peers: 60,
                lan_peers: 28,
                internet_peers: 32
            }
        );
    }

    #[test]
    fn lan_ranges() {
        let lan = [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.9",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.3.4",
            "::1",
            "fc00::1",
            "fdff::1",
            "fe80::1",
            "febf::1",
            "::ffff:192.168.1.1",
        ];
        let internet = [
            "8.8.8.8",
            "172.32.0.1",
            "172.15.255.255",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "2001:db8::1",
            "fec0::1",
            "::ffff:8.8.8.8",
            "1.1.1.1",
        ];
        for a in lan {
            assert!(is_lan_ip(a.parse().unwrap()), "{a} is LAN");
        }
        for a in internet {
            assert!(!is_lan_ip(a.parse().unwrap()), "{a} is internet");
        }
        assert!(is_lan_addr("127.0.0.1:1"));
        assert!(!is_lan_addr("127.0.0.1"), "no port: not a peer address");
    }
}
