//! Peer hand-out policy: which peers an announcing device gets, and when
//! the origin (the S3-backed seeder) is among them.
//!
//! New grants stop once a device holds the whole package: from then on the
//! devices serve each other.
//!
//! The 2017 field study listed the origin to every client, so every client
//! pulled the same first pieces from it and the origin sent close to one copy
//! per device. Here the origin is a scarce resource: it is handed to at most
//! `origin_slots` leechers at a time (they become the swarm's first sources),
//! and to a leecher that is starved (its `left` did not shrink over
//! [`STARVED_AFTER`] announces in a row) while no device holds the whole package. Everyone else gets
//! devices only, seeders first: a device seeder also dials the leechers it is
//! handed, so a starved leecher is served by devices as soon as one finishes. With one slot the origin
//! sends close to one copy per swarm, the 1 − 1/N limit.
//!
//! Pure logic: the caller passes the swarm as it is now.

use std::net::SocketAddr;

/// Announces in a row without progress after which a leecher is starved.
pub const STARVED_AFTER: u32 = 2;

/// How the origin is listed to devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginPolicy {
    /// List the origin to every device, like a plain tracker
    /// (the `bittorrent-baseline` mode).
    Always,
    /// List the origin to at most `slots` leechers at a time, and to starved
    /// leechers (the `p2p` mode).
    OnDemand {
        /// Leechers that may hold an origin grant at once (at least 1).
        slots: usize,
    },
}

impl Default for OriginPolicy {
    fn default() -> Self {
        OriginPolicy::OnDemand { slots: 1 }
    }
}

/// A peer of the swarm as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Where to dial it.
    pub addr: SocketAddr,
    /// Its 20-byte peer id.
    pub peer_id: [u8; 20],
    /// Bytes it still misses; 0 for a seeder.
    pub left: u64,
    /// Whether it is the origin seeder.
    pub is_origin: bool,
}

/// The announcing device as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// Its peer id (excluded from its own list).
    pub peer_id: [u8; 20],
    /// Bytes it still misses.
    pub left: u64,
    /// Announces in a row (this one included) at which `left` had not
    /// shrunk since the announce before.
    pub stalled: u32,
    /// Whether it already holds an origin grant.
    pub granted: bool,
}

/// What the policy decided for one announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handout {
    /// Peers to return, origin first when listed.
    pub peers: Vec<Candidate>,
    /// Whether the requester now holds (or keeps) an origin grant.
    pub granted: bool,
}

/// Decides the peer list for one device announce.
///
/// `swarm` holds every live peer including the requester (it is skipped) and
/// the origin(s). `grants_in_use` counts leechers other than the requester
/// that hold an origin grant. At most `numwant` peers are returned: the origin
/// first when listed, then device seeders, then leechers, in `swarm` order
/// (callers shuffle the swarm beforehand if they want randomness).
pub fn hand_out(
    requester: &Requester,
    swarm: &[Candidate],
    grants_in_use: usize,
    policy: OriginPolicy,
    numwant: usize,
) -> Handout {
    let origins = swarm.iter().filter(|c| c.is_origin);
    let devices = swarm
        .iter()
        .filter(|c| !c.is_origin && c.peer_id != requester.peer_id);
    let leeching = requester.left > 0;
    let device_seeder = swarm
        .iter()
        .any(|c| !c.is_origin && c.left == 0 && c.peer_id != requester.peer_id);
    let starved = leeching && !device_seeder && requester.stalled >= STARVED_AFTER;
    let (list_origin, granted) = match policy {
        OriginPolicy::Always => (leeching, false),
        OriginPolicy::OnDemand { slots } => {
            let keep = leeching && requester.granted;
            let new = leeching && !requester.granted && !device_seeder && grants_in_use < slots.max(1);
            (keep || new || starved, keep || new)
        }
    };
    let mut peers: Vec<Candidate> = Vec::new();
    if list_origin {
        peers.extend(origins.cloned());
    }
    let (seeders, leechers): (Vec<_>, Vec<_>) = devices.partition(|c| c.left == 0);
    peers.extend(seeders.into_iter().cloned());
    peers.extend(leechers.into_iter().cloned());
    peers.truncate(numwant);
    Handout { peers, granted }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(n: u8, left: u64, is_origin: bool) -> Candidate {
        Candidate {
            addr: SocketAddr::from(([127, 0, 0, 1], 7000 + n as u16)),
            peer_id: [n; 20],
            left,
            is_origin,
        }
    }

    fn req(n: u8, left: u64, stalled: u32, granted: bool) -> Requester {
        Requester { peer_id: [n; 20], left, stalled, granted }
    }

    fn swarm() -> Vec<Candidate> {
        vec![cand(0, 0, true), cand(1, 50, false), cand(2, 0, false), cand(3, 100, false)]
    }

    #[test]
    fn first_leecher_gets_the_origin_then_others_do_not() {
        let policy = OriginPolicy::OnDemand { slots: 1 };
        let leechers: Vec<Candidate> = swarm().into_iter().filter(|c| c.peer_id[0] != 2).collect();
        let first = hand_out(&req(1, 100, 0, false), &leechers, 0, policy, 50);
        assert!(first.granted);
        assert!(first.peers[0].is_origin);
        // A free slot is not granted while a device (peer 2) is a seeder.
        let free_slot = hand_out(&req(3, 100, 0, false), &swarm(), 0, policy, 50);
        assert!(!free_slot.granted && free_slot.peers.iter().all(|p| !p.is_origin));
        let second = hand_out(&req(3, 100, 0, false), &swarm(), 1, policy, 50);
        assert!(!second.granted);
        assert!(second.peers.iter().all(|p| !p.is_origin));
        // Seeders before leechers, never the requester itself.
        assert_eq!(second.peers.iter().map(|p| p.peer_id[0]).collect::<Vec<_>>(), vec![2, 1]);
    }

    #[test]
    fn a_grant_is_kept_and_a_starved_leecher_gets_the_origin() {
        let policy = OriginPolicy::OnDemand { slots: 1 };
        let kept = hand_out(&req(1, 40, 0, true), &swarm(), 0, policy, 50);
        assert!(kept.granted && kept.peers[0].is_origin);
        // Starved while a device (peer 2) holds the whole package: devices only.
        let served_by_devices = hand_out(&req(3, 100, 2, false), &swarm(), 1, policy, 50);
        assert!(served_by_devices.peers.iter().all(|p| !p.is_origin));
        assert_eq!(served_by_devices.peers[0].peer_id[0], 2);
        // Starved with no device seeder: the origin.
        let no_seeder: Vec<Candidate> = swarm().into_iter().filter(|c| c.peer_id[0] != 2).collect();
        let once = hand_out(&req(3, 100, 1, false), &no_seeder, 1, policy, 50);
        assert!(once.peers.iter().all(|p| !p.is_origin), "one stalled announce is not starvation");
        let starved = hand_out(&req(3, 100, STARVED_AFTER, false), &no_seeder, 1, policy, 50);
        assert!(!starved.granted);
        assert!(starved.peers[0].is_origin);
        let progressing = hand_out(&req(3, 90, 0, false), &no_seeder, 1, policy, 50);
        assert!(progressing.peers.iter().all(|p| !p.is_origin));
    }

    #[test]
    fn seeders_never_get_the_origin_and_numwant_caps() {
        let seeding = hand_out(&req(2, 0, 0, true), &swarm(), 0, OriginPolicy::Always, 50);
        assert!(!seeding.granted);
        assert!(seeding.peers.iter().all(|p| !p.is_origin));
        let capped = hand_out(&req(9, 100, 0, false), &swarm(), 0, OriginPolicy::Always, 2);
        assert_eq!(capped.peers.len(), 2);
        assert!(capped.peers[0].is_origin);
    }
}
