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
    /// How often the server writes changed live peers to the database
    /// (see [`PeerStore::take_changes`]); the pure store itself never reads it.
    pub persist_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            interval: Duration::from_secs(60),
            min_interval: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(180),
            origin_policy: OriginPolicy::default(),
            max_peers_per_swarm: 50_000,
            persist_interval: Duration::from_secs(5),
        }
    }
}

/// A live peer detached from the monotonic clock: what the server writes to
/// the database, reads back at start and shows on the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// Its swarm.
    pub info_hash: InfoHash,
    /// Its peer id (BEP 3).
    pub peer_id: PeerId,
    /// Where other peers dial it.
    pub addr: SocketAddr,
    /// Bytes it still misses; 0 for a seeder.
    pub left: u64,
    /// Announces in a row without progress (see [`PeerEntry::stalled`]).
    pub stalled: u32,
    /// Whether it announced with a valid origin token.
    pub is_origin: bool,
    /// Whether it holds an origin grant.
    pub granted: bool,
    /// Device id from the announce URL.
    pub device: Option<String>,
    /// Time since its last announce.
    pub age: Duration,
}

/// What changed in the store since the last [`PeerStore::take_changes`]:
/// the rows a database mirror must write so that it holds the live peers and
/// the completed-download counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreChanges {
    /// The mirror must first delete every stored peer: `upserts` then holds
    /// every live peer and `downloaded` every swarm counter (after
    /// [`PeerStore::mark_full_resync`]).
    pub full: bool,
    /// Peers to insert or replace.
    pub upserts: Vec<PeerRecord>,
    /// Peers to delete (stopped or expired), as `(info hash, peer id)`.
    pub removals: Vec<(InfoHash, PeerId)>,
    /// Completed-download counters to store, per swarm.
    pub downloaded: Vec<(InfoHash, u32)>,
}

impl StoreChanges {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.full && self.upserts.is_empty() && self.removals.is_empty() && self.downloaded.is_empty()
    }
}

/// All swarms of the tracker. Only registered info hashes are tracked.
#[derive(Debug, Default)]
pub struct PeerStore {
    swarms: HashMap<InfoHash, Swarm>,
    registered: HashSet<InfoHash>,
    config: StoreConfig,
    /// Peers added, changed or removed since the last `take_changes`.
    dirty: HashSet<(InfoHash, PeerId)>,
    /// Swarms whose `downloaded` counter changed since the last `take_changes`.
    dirty_counters: HashSet<InfoHash>,
    /// The next `take_changes` returns everything.
    full_resync: bool,
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
        for id in expire_swarm(swarm, now, config.peer_timeout) {
            self.dirty.insert((req.info_hash, id));
        }
        if req.event == AnnounceEvent::Stopped {
            if swarm.peers.remove(&req.peer_id).is_some() {
                self.dirty.insert((req.info_hash, req.peer_id));
            }
            return Ok(response(&config, swarm, Vec::new()));
        }
        if !swarm.peers.contains_key(&req.peer_id) && swarm.peers.len() >= config.max_peers_per_swarm {
            return Err(AnnounceError::Invalid("swarm", "peer limit reached".into()));
        }
        let previous = swarm.peers.get(&req.peer_id).cloned();
        let was_leeching = previous.as_ref().is_some_and(|p| p.left > 0);
        if req.event == AnnounceEvent::Completed || (was_leeching && req.left == 0) {
            swarm.downloaded += 1;
            self.dirty_counters.insert(req.info_hash);
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
        self.dirty.insert((req.info_hash, req.peer_id));

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
        for (ih, swarm) in self.swarms.iter_mut() {
            for id in expire_swarm(swarm, now, self.config.peer_timeout) {
                self.dirty.insert((*ih, id));
            }
        }
    }

    /// The live peers of one swarm with their ages at `now`, seeders first,
    /// then by peer id; `None` if the info hash is unregistered. Peers past
    /// the timeout that no announce or [`Self::expire`] dropped yet are left out.
    pub fn peers(&self, info_hash: &InfoHash, now: Instant) -> Option<Vec<PeerRecord>> {
        if !self.registered.contains(info_hash) {
            return None;
        }
        let mut out: Vec<PeerRecord> = self
            .swarms
            .get(info_hash)
            .map(|s| {
                s.peers
                    .iter()
                    .map(|(id, p)| record(info_hash, id, p, now))
                    .filter(|r| r.age <= self.config.peer_timeout)
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|r| (r.left > 0, r.peer_id));
        Some(out)
    }

    /// Puts back a peer read from the database at start, as if it had last
    /// announced `record.age` before `now`, so that expiry continues where it
    /// stopped. Not marked as changed (the database already holds it).
    ///
    /// Returns false, and keeps nothing, when the swarm is unregistered, the
    /// peer is older than the peer timeout, or the swarm is full. When the
    /// monotonic clock started less than `age` ago (a reboot), the peer counts
    /// as seen at `now`.
    pub fn restore(&mut self, record: &PeerRecord, now: Instant) -> bool {
        if !self.registered.contains(&record.info_hash) || record.age > self.config.peer_timeout {
            return false;
        }
        let swarm = self.swarms.entry(record.info_hash).or_default();
        if !swarm.peers.contains_key(&record.peer_id) && swarm.peers.len() >= self.config.max_peers_per_swarm {
            return false;
        }
        swarm.peers.insert(
            record.peer_id,
            PeerEntry {
                addr: record.addr,
                left: record.left,
                stalled: record.stalled,
                last_seen: now.checked_sub(record.age).unwrap_or(now),
                is_origin: record.is_origin,
                device: record.device.clone(),
                granted: record.granted,
            },
        );
        true
    }

    /// Puts back a swarm's completed-download counter read from the database
    /// (BEP 48 `downloaded`). Returns false for an unregistered swarm.
    pub fn restore_downloaded(&mut self, info_hash: &InfoHash, downloaded: u32) -> bool {
        if !self.registered.contains(info_hash) {
            return false;
        }
        self.swarms.entry(*info_hash).or_default().downloaded = downloaded;
        true
    }

    /// Hands out, and forgets, what changed since the last call: peers that
    /// announced (with their ages at `now`), peers that stopped or expired,
    /// and changed counters. A caller whose write fails calls
    /// [`Self::mark_full_resync`] so that nothing is lost.
    pub fn take_changes(&mut self, now: Instant) -> StoreChanges {
        let mut changes = StoreChanges::default();
        if self.full_resync {
            self.full_resync = false;
            self.dirty.clear();
            self.dirty_counters.clear();
            changes.full = true;
            for (ih, swarm) in &self.swarms {
                changes.upserts.extend(swarm.peers.iter().map(|(id, p)| record(ih, id, p, now)));
                changes.downloaded.push((*ih, swarm.downloaded));
            }
            return changes;
        }
        for (ih, id) in self.dirty.drain() {
            match self.swarms.get(&ih).and_then(|s| s.peers.get(&id)) {
                Some(p) => changes.upserts.push(record(&ih, &id, p, now)),
                None => changes.removals.push((ih, id)),
            }
        }
        for ih in self.dirty_counters.drain() {
            if let Some(s) = self.swarms.get(&ih) {
                changes.downloaded.push((ih, s.downloaded));
            }
        }
        changes
    }

    /// Makes the next [`Self::take_changes`] return every live peer and
    /// counter with `full` set, e.g. after a failed database write.
    pub fn mark_full_resync(&mut self) {
        self.full_resync = true;
    }

    /// Live peers across all swarms.
    pub fn peer_count(&self) -> usize {
        self.swarms.values().map(|s| s.peers.len()).sum()
    }
}

/// Drops the peers of one swarm silent for longer than `timeout`; returns their ids.
fn expire_swarm(swarm: &mut Swarm, now: Instant, timeout: Duration) -> Vec<PeerId> {
    let mut gone = Vec::new();
    swarm.peers.retain(|id, p| {
        let live = now.saturating_duration_since(p.last_seen) <= timeout;
        if !live {
            gone.push(*id);
        }
        live
    });
    gone
}

fn record(info_hash: &InfoHash, peer_id: &PeerId, p: &PeerEntry, now: Instant) -> PeerRecord {
    PeerRecord {
        info_hash: *info_hash,
        peer_id: *peer_id,
        addr: p.addr,
        left: p.left,
        stalled: p.stalled,
        is_origin: p.is_origin,
        granted: p.granted,
        device: p.device.clone(),
        age: now.saturating_duration_since(p.last_seen),
    }
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

    #[test]
    fn changes_list_announced_stopped_and_expired_peers_once() {
        let t0 = Instant::now();
        let mut s = PeerStore::new(StoreConfig::default());
        s.register([9; 20]);
        assert!(s.take_changes(t0).is_empty());
        s.announce(&announce(1, 10, AnnounceEvent::Started), addr(1), false, t0).unwrap();
        s.announce(&announce(2, 10, AnnounceEvent::Started), addr(2), false, t0).unwrap();
        let t1 = t0 + Duration::from_secs(5);
        let c = s.take_changes(t1);
        assert!(!c.full);
        assert_eq!(c.upserts.len(), 2);
        assert!(c.upserts.iter().all(|r| r.age == Duration::from_secs(5) && r.left == 10));
        assert!(c.removals.is_empty() && c.downloaded.is_empty());
        assert!(s.take_changes(t1).is_empty(), "changes are handed out once");

        s.announce(&announce(1, 0, AnnounceEvent::None), addr(1), false, t1).unwrap();
        s.announce(&announce(2, 10, AnnounceEvent::Stopped), addr(2), false, t1).unwrap();
        let c = s.take_changes(t1);
        assert_eq!(c.upserts.iter().map(|r| r.peer_id[0]).collect::<Vec<_>>(), vec![1]);
        assert_eq!(c.removals, vec![([9; 20], [2; 20])]);
        assert_eq!(c.downloaded, vec![([9; 20], 1)]);

        s.expire(t1 + Duration::from_secs(181));
        let c = s.take_changes(t1);
        assert_eq!(c.removals, vec![([9; 20], [1; 20])]);

        s.announce(&announce(3, 10, AnnounceEvent::Started), addr(3), false, t1).unwrap();
        s.mark_full_resync();
        let c = s.take_changes(t1);
        assert!(c.full);
        assert_eq!(c.upserts.len(), 1);
        assert_eq!(c.downloaded, vec![([9; 20], 1)]);
    }

    #[test]
    fn restored_peers_keep_their_age_and_policy_state() {
        let t0 = Instant::now() + Duration::from_secs(1000);
        let mut s = PeerStore::new(StoreConfig::default());
        s.register([9; 20]);
        let rec = |n: u8, age: u64| PeerRecord {
            info_hash: [9; 20],
            peer_id: [n; 20],
            addr: addr(n),
            left: if n == 0 { 0 } else { 10 },
            stalled: 1,
            is_origin: n == 0,
            granted: n == 1,
            device: Some(format!("dev-{n}")),
            age: Duration::from_secs(age),
        };
        assert!(s.restore(&rec(0, 10), t0));
        assert!(s.restore(&rec(1, 170), t0));
        assert!(!s.restore(&rec(2, 181), t0), "older than the peer timeout");
        let mut other = rec(3, 0);
        other.info_hash = [8; 20];
        assert!(!s.restore(&other, t0), "unregistered swarm");
        assert!(s.restore_downloaded(&[9; 20], 4));
        assert!(s.take_changes(t0).is_empty(), "restored rows are already stored");
        assert_eq!(s.scrape(&[9; 20]).unwrap(), ScrapeStats { complete: 1, downloaded: 4, incomplete: 1 });
        let listed = s.peers(&[9; 20], t0).unwrap();
        assert_eq!(listed, vec![rec(0, 10), rec(1, 170)]);
        // Peer 1 still holds the origin grant: a new leecher does not get the origin.
        let r = s.announce(&announce(4, 10, AnnounceEvent::Started), addr(4), false, t0).unwrap();
        assert!(r.peers.iter().all(|p| p.addr != addr(0)), "{:?}", r.peers);
        // Expiry continues from the restored age.
        s.expire(t0 + Duration::from_secs(11));
        assert_eq!(s.peers(&[9; 20], t0 + Duration::from_secs(11)).unwrap().len(), 2);
        assert!(s.peers(&[8; 20], t0).is_none());
    }
}
