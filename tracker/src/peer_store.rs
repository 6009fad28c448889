//! In-memory swarms: the live peers of every registered info hash.
//!
//! Pure state machine: the caller passes the clock (`now`), so expiry tests
//! need no sleeping. One announce updates the announcing peer, asks
//! [`crate::peer_handout`] for its peer list and returns it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::announce::{
    AnnounceError, AnnounceEvent, AnnounceRequest, AnnounceResponse, InfoHash, PeerAddr, PeerId,
    ScrapeStats,
};
use crate::peer_handout::{hand_out, Candidate, OriginPolicy, Requester};

/// One live peer.
#[derive(Debug, Clone)]
pub struct PeerEntry {
    /// Where other peers dial it.
    pub addr: SocketAddr,
    /// Bytes it still misses.
    pub left: u64,
    /// Announces in a row at which `left` had not shrunk (0 once it does).
    pub stalled: u32,
    /// Last announce time.
    pub last_seen: Instant,
    /// Whether it announced with a valid origin token.
    pub is_origin: bool,
    /// Device id from the announce URL.
    pub device: Option<String>,
    /// Whether it holds an origin grant (see [`crate::peer_handout`]).
    pub granted: bool,
}

/// A swarm: its peers and its completed-download counter.
#[derive(Debug, Default, Clone)]
pub struct Swarm {
    /// Live peers by peer id.
    pub peers: HashMap<PeerId, PeerEntry>,
    /// Downloads completed (event `completed`, or a leecher seen reaching `left=0`).
    pub downloaded: u32,
}

impl Swarm {
    fn stats(&self) -> ScrapeStats {
        let complete = self.peers.values().filter(|p| p.left == 0).count() as u32;
        ScrapeStats {
            complete,
            downloaded: self.downloaded,
            incomplete: self.peers.len() as u32 - complete,
        }
    }
}

/// Timing and policy of the peer store.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// Announce interval handed to clients.
    pub interval: Duration,
    /// Minimum announce interval handed to clients (librqbit re-announces at this).
    pub min_interval: Duration,
    /// A peer silent for this long is dropped.
    pub peer_timeout: Duration,
    /// Origin hand-out policy.
    pub origin_policy: OriginPolicy,
    /// Most peers kept per swarm; further new peers are refused.
    pub max_peers_per_swarm: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            interval: Duration::from_secs(60),
            min_interval: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(180),
            origin_policy: OriginPolicy::default(),
            max_peers_per_swarm: 50_000,
        }
    }
}

/// All swarms of the tracker. Only registered info hashes are tracked.
#[derive(Debug, Default)]
pub struct PeerStore {
    swarms: HashMap<InfoHash, Swarm>,
    registered: HashSet<InfoHash>,
    config: StoreConfig,
}

impl PeerStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        PeerStore { config, ..Default::default() }
    }

    /// Starts tracking a release's swarm.
    pub fn register(&mut self, info_hash: InfoHash) {
        self.registered.insert(info_hash);
    }

    /// Whether the info hash is a registered release.
    pub fn is_registered(&self, info_hash: &InfoHash) -> bool {
        self.registered.contains(info_hash)
    }

    /// Handles one announce from `addr` (the client's address as seen by the
    /// server, with the port it announced). `is_origin` says whether the
    /// announce carried a valid origin token.
    ///
    /// Errors: [`AnnounceError::Unregistered`] for an unknown info hash, or
    /// [`AnnounceError::Invalid`] when a new peer would exceed the per-swarm cap.
    pub fn announce(
        &mut self,
        req: &AnnounceRequest,
        addr: SocketAddr,
        is_origin: bool,
        now: Instant,
    ) -> Result<AnnounceResponse, AnnounceError> {
        if !self.registered.contains(&req.info_hash) {
            return Err(AnnounceError::Unregistered(hex::encode(req.info_hash)));
        }
        let config = self.config;
        let swarm = self.swarms.entry(req.info_hash).or_default();
        expire_swarm(swarm, now, config.peer_timeout);
        if req.event == AnnounceEvent::Stopped {
            swarm.peers.remove(&req.peer_id);
            return Ok(response(&config, swarm, Vec::new()));
        }
        if !swarm.peers.contains_key(&req.peer_id) && swarm.peers.len() >= config.max_peers_per_swarm {
            return Err(AnnounceError::Invalid("swarm", "peer limit reached".into()));
        }
        let previous = swarm.peers.get(&req.peer_id).cloned();
        let was_leeching = previous.as_ref().is_some_and(|p| p.left > 0);
        if req.event == AnnounceEvent::Completed || (was_leeching && req.left == 0) {
            swarm.downloaded += 1;
        }
        let granted_before = previous.as_ref().is_some_and(|p| p.granted);
        let entry = PeerEntry {
            addr,
            left: req.left,
            stalled: match &previous {
                Some(p) if req.left > 0 && req.left >= p.left => p.stalled + 1,
                _ => 0,
            },
            last_seen: now,
            is_origin,
            device: req.device.clone().or(previous.and_then(|p| p.device)),
            granted: granted_before,
        };
        swarm.peers.insert(req.peer_id, entry.clone());

        if is_origin {
            // The origin never dials out: devices come to it when the policy says.
            return Ok(response(&config, swarm, Vec::new()));
        }
        let candidates: Vec<Candidate> = swarm
            .peers
            .iter()
            .map(|(id, p)| Candidate { addr: p.addr, peer_id: *id, left: p.left, is_origin: p.is_origin })
            .collect();
        let grants_in_use = swarm
            .peers
            .iter()
            .filter(|(id, p)| p.granted && p.left > 0 && **id != req.peer_id)
            .count();
        let requester = Requester {
            peer_id: req.peer_id,
            left: req.left,
            stalled: entry.stalled,
            granted: granted_before,
        };
        let handout = hand_out(&requester, &candidates, grants_in_use, config.origin_policy, req.numwant);
        if let Some(p) = swarm.peers.get_mut(&req.peer_id) {
            p.granted = handout.granted;
        }
        let peers = handout
            .peers
            .into_iter()
            .map(|c| PeerAddr { peer_id: c.peer_id, addr: c.addr })
            .collect();
        Ok(response(&config, swarm, peers))
    }

    /// Scrape counters for one info hash; `None` if unregistered.
    pub fn scrape(&self, info_hash: &InfoHash) -> Option<ScrapeStats> {
        if !self.registered.contains(info_hash) {
            return None;
        }
        Some(self.swarms.get(info_hash).map(Swarm::stats).unwrap_or_default())
    }

    /// Every registered info hash with its counters.
    pub fn scrape_all(&self) -> Vec<(InfoHash, ScrapeStats)> {
        self.registered.iter().map(|ih| (*ih, self.scrape(ih).unwrap_or_default())).collect()
    }

    /// Addresses of the origin peers currently live in a swarm.
    pub fn origin_peers(&self, info_hash: &InfoHash) -> Vec<SocketAddr> {
        self.swarms
            .get(info_hash)
            .map(|s| s.peers.values().filter(|p| p.is_origin).map(|p| p.addr).collect())
            .unwrap_or_default()
    }

    /// Drops peers silent for longer than the peer timeout, in every swarm.
    pub fn expire(&mut self, now: Instant) {
        for swarm in self.swarms.values_mut() {
            expire_swarm(swarm, now, self.config.peer_timeout);
        }
    }

    /// Live peers across all swarms.
    pub fn peer_count(&self) -> usize {
        self.swarms.values().map(|s| s.peers.len()).sum()
    }
}

fn expire_swarm(swarm: &mut Swarm, now: Instant, timeout: Duration) {
    swarm.peers.retain(|_, p| now.saturating_duration_since(p.last_seen) <= timeout);
}

fn response(config: &StoreConfig, swarm: &Swarm, peers: Vec<PeerAddr>) -> AnnounceResponse {
    let stats = swarm.stats();
    AnnounceResponse {
        interval: config.interval.as_secs() as u32,
        min_interval: config.min_interval.as_secs() as u32,
        complete: stats.complete,
        incomplete: stats.incomplete,
        peers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::DEFAULT_NUMWANT;

    fn announce(n: u8, left: u64, event: AnnounceEvent) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: [9; 20],
            peer_id: [n; 20],
            port: 7000 + n as u16,
            uploaded: 0,
            downloaded: 0,
            left,
            event,
            compact: true,
            no_peer_id: false,
            numwant: DEFAULT_NUMWANT,
            ip: None,
            key: None,
            trackerid: None,
            device: None,
            origin_token: None,
        }
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000 + n as u16))
    }

    #[test]
    fn unregistered_swarms_are_refused() {
        let mut s = PeerStore::new(StoreConfig::default());
        let r = s.announce(&announce(1, 10, AnnounceEvent::Started), addr(1), false, Instant::now());
        assert!(matches!(r, Err(AnnounceError::Unregistered(_))));
    }

    #[test]
    fn swarm_lifecycle_counts_and_expires() {
        let t0 = Instant::now();
        let mut s = PeerStore::new(StoreConfig::default());
        s.register([9; 20]);
        s.announce(&announce(0, 0, AnnounceEvent::Started), addr(0), true, t0).unwrap();
        let first = s.announce(&announce(1, 10, AnnounceEvent::Started), addr(1), false, t0).unwrap();
        assert_eq!(first.peers.iter().map(|p| p.addr).collect::<Vec<_>>(), vec![addr(0)]);
        let second = s.announce(&announce(2, 10, AnnounceEvent::Started), addr(2), false, t0).unwrap();
        assert_eq!(second.peers.iter().map(|p| p.addr).collect::<Vec<_>>(), vec![addr(1)]);
        assert_eq!(s.origin_peers(&[9; 20]), vec![addr(0)]);
        // Peer 1 finishes without sending `completed` (librqbit never does).
        s.announce(&announce(1, 0, AnnounceEvent::None), addr(1), false, t0).unwrap();
        assert_eq!(s.scrape(&[9; 20]).unwrap(), ScrapeStats { complete: 2, downloaded: 1, incomplete: 1 });
        s.announce(&announce(2, 10, AnnounceEvent::Stopped), addr(2), false, t0).unwrap();
        assert_eq!(s.scrape(&[9; 20]).unwrap().incomplete, 0);
        s.expire(t0 + Duration::from_secs(181));
        assert_eq!(s.peer_count(), 0);
    }
}
