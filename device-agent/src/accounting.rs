//! Bytes received per source: origin vs other devices.
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
        }
    }
    out
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
                        (c["fetched_bytes"].as_u64().unwrap_or(0), c["uploaded_bytes"].as_u64().unwrap_or(0)),
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
        assert_eq!(s, SourceBytes { origin: 1000, peers: 500 });
        let none = split_by_source(m.iter().map(|(a, (f, _))| (a.as_str(), *f)), &[]);
        assert_eq!(none, SourceBytes { origin: 0, peers: 1500 });
    }
}
