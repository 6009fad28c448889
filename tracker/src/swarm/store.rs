//! In-memory swarms: the live peers of every registered info hash.
//!
//! Pure state machine: the caller passes the clock (`now`), so expiry tests
//! need no sleeping. One announce updates the announcing peer, asks
//! [`super::handout`] for its peer list and returns it. The hand-out reads
//! each peer's time without progress (`stalled_since`) and its swarm's time
//! since any device last reported progress, which says whether listed device
//! seeders serve (one may have vanished without a `stopped` event).
//!
//! Layout, for announces that cost O(numwant) whatever the swarm size:
//! - the store is split into [`SHARDS`] shards by info hash, each behind its
//!   own lock, so announces to different swarms rarely wait for each other;
//! - a swarm keeps its origins, device seeders and device leechers in three
//!   vectors (removal by swap with the last element) plus an index from peer
//!   id to position, so the hand-out draws a random sample by index, and
//!   keeps its seeder count and origin-grant count up to date on every change
//!   instead of recounting;
//! - expiry is a periodic sweep ([`PeerStore::expire`], one shard at a time),
//!   not a scan per announce; peers past the timeout that the sweep has not
//!   dropped yet are never handed out nor listed, but still count in the
//!   `complete`/`incomplete` counters until the sweep (the server sweeps
//!   every 10 s) and are dropped at once when their swarm is full;
//! - changed peers carry a flag read by [`PeerStore::take_changes`] (one shard
//!   at a time), so the persistence round never stops the whole store;
//! - a peer takes 112 bytes plus its index slot (and its device id, if any);
//! - peers that reported a LAN address are indexed by their public address
//!   (the one the tracker sees), so the devices behind one router find each
//!   other in O(their number): the tracker hands them each other's LAN
//!   addresses first (LAN pairing), whatever their router forwards;
//! - every peer gets a swarm-local slot number when it first announces (a
//!   per-swarm counter, never reused while the tracker runs), indexed, so a
//!   peer the requester cannot dial but may punch a QUIC path to is handed
//!   out as its bridge address ([`ota_proto::rendezvous::bridge_address`])
//!   and found again by slot when a device asks for an introduction
//!   ([`PeerStore::peer_at_slot`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::handout::{hand_out, OriginPolicy, Requester, SwarmParts};
use ota_proto::announce::{
    AnnounceError, AnnounceEvent, AnnounceRequest, AnnounceResponse, InfoHash, PeerAddr, PeerId, ScrapeStats,
};
use ota_proto::direct_paths::is_lan_candidate;
use ota_proto::rendezvous::{bridge_address, BRIDGE_PORT};

/// Number of independently locked shards of a [`PeerStore`].
pub const SHARDS: usize = 64;

/// Timing and policy of the peer store. [`Default`]: 60 s interval, 30 s
/// minimum interval, 180 s peer timeout, one origin slot, 50,000 peers per
/// swarm, 5 s persist interval.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// Announce interval handed to clients (BEP 3 `interval`, whole seconds
    /// on the wire).
    pub interval: Duration,
    /// Minimum announce interval handed to clients (`min interval`, whole
    /// seconds; librqbit re-announces at this).
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
    /// Device-bound peers (on with device authentication, where the
    /// announce's `device` comes from a verified token): a peer entry
    /// belongs to the device that created it (another device, or the
    /// origin, cannot update or stop it), a device keeps at most one entry
    /// per address family in a swarm (a new peer id replaces the old), and a
    /// device's `left=0` is believed only once the store saw it leeching
    /// first (see [`PeerRecord::verified`]).
    pub device_bound: bool,
    /// Origin grants shared with other tracker replicas: a swarm hands out
    /// new grants only while [`PeerStore::set_grant_leases`] says this
    /// replica holds its lease (grants held, and starved leechers, are
    /// served as before). Off for a single tracker.
    pub shared_grants: bool,
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
            device_bound: false,
            shared_grants: false,
        }
    }
}

/// What the tracker knows about one announce beyond its query
/// ([`PeerStore::announce_with`]). [`Default`]: no LAN address, every
/// address reachable (a plain tracker), no bridge addresses.
#[derive(Clone, Copy)]
pub struct AnnouncePaths<'a> {
    /// The requester's LAN address (of the announce's address family), from
    /// its device's report; kept only if it is a
    /// [`is_lan_candidate`] and the requester is not the origin.
    pub lan: Option<SocketAddr>,
    /// Whether a device's public address (`ip:port` as announced) may be
    /// handed out: the tracker's connectability verdict. Not asked for the
    /// origin nor for LAN neighbours.
    pub reachable: &'a (dyn Fn(SocketAddr) -> bool + Sync),
    /// Whether the requester's device runs a QUIC endpoint (it reported
    /// [`DirectPaths::quic`](ota_proto::direct_paths::DirectPaths::quic)):
    /// only then is it handed bridge addresses.
    pub quic: bool,
    /// Whether the device with this id can be introduced for a punched QUIC
    /// path (it reported `quic` and holds a live push subscription, over
    /// which the tracker pushes the introduction). Asked only for devices
    /// that `reachable` rejected, only when `quic` is set.
    pub bridgeable: &'a (dyn Fn(&str) -> bool + Sync),
    /// Whether the origin peer listed at this (TCP) address runs a QUIC
    /// listener a device may dial: then a QUIC requester gets the origin
    /// as its bridge address instead, so the device's connection to the
    /// origin can migrate (QUIC lets only the client move, RFC 9000 §9).
    pub origin_quic: &'a (dyn Fn(SocketAddr) -> bool + Sync),
}

impl Default for AnnouncePaths<'_> {
    fn default() -> Self {
        AnnouncePaths {
            lan: None,
            reachable: &|_| true,
            quic: false,
            bridgeable: &|_| false,
            origin_quic: &|_| false,
        }
    }
}

impl std::fmt::Debug for AnnouncePaths<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnouncePaths")
            .field("lan", &self.lan)
            .field("quic", &self.quic)
            .finish_non_exhaustive()
    }
}

/// Most peer entries one device keeps in one swarm with
/// [`StoreConfig::device_bound`]: one per address family.
pub const MAX_PEERS_PER_DEVICE: usize = 2;

/// Whether a peer at `peer` may be handed to a requester at `to`: never an
/// unspecified, multicast, broadcast or link-local address, and a loopback
/// address only to a requester that is itself on loopback (a swarm on one
/// host, as in tests). IPv4-mapped IPv6 addresses count as IPv4.
pub fn shareable(peer: IpAddr, to: IpAddr) -> bool {
    let (peer, to) = (peer.to_canonical(), to.to_canonical());
    let link_local = match peer {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if peer.is_unspecified() || peer.is_multicast() || link_local {
        return false;
    }
    !peer.is_loopback() || to.is_loopback()
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
    /// Whole announce intervals since `left` last shrank (since its first
    /// announce when it never did); 0 for a seeder.
    pub stalled: u32,
    /// Whether it announced with a valid origin token.
    pub is_origin: bool,
    /// Whether it holds an origin grant.
    pub granted: bool,
    /// Whether its `left=0` is believed: always without
    /// [`StoreConfig::device_bound`]; with it, only for a device the store
    /// saw leeching in this swarm before it reached 0 (a device claiming to
    /// seed from its first announce is listed, and handed out, as a
    /// leecher, and holds back no origin grant).
    pub verified: bool,
    /// Device id from the announce URL.
    pub device: Option<String>,
    /// Its LAN address, from its device's [`DirectPaths`](ota_proto::direct_paths::DirectPaths)
    /// report when it last announced (not written to the database: a
    /// restored peer has none until it announces again).
    pub lan: Option<SocketAddr>,
    /// Time since its last announce.
    pub age: Duration,
}

/// A live peer as a rendezvous needs it ([`PeerStore::peer_at_slot`],
/// [`PeerStore::device_peers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RendezvousPeer {
    /// Its peer id (BEP 3).
    pub peer_id: PeerId,
    /// Its swarm-local slot number (its bridge address).
    pub slot: u32,
    /// Its public address as the tracker saw it, with its announced port.
    pub addr: SocketAddr,
    /// Its device id (none for the origin, nor for an anonymous peer
    /// without `device=`).
    pub device: Option<String>,
    /// Whether it announced with a valid origin token.
    pub is_origin: bool,
}

impl RendezvousPeer {
    fn of(swarm: &Swarm, p: &Peer) -> RendezvousPeer {
        RendezvousPeer {
            peer_id: p.id,
            slot: p.slot,
            addr: p.addr(),
            device: p.device.as_deref().map(str::to_string),
            is_origin: matches!(swarm.index.get(&p.id), Some(s) if s.kind() == Kind::Origin),
        }
    }
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

/// All swarms of the tracker, in [`SHARDS`] shards with their own locks.
/// Only registered info hashes are tracked. Every method takes `&self`.
#[derive(Debug)]
pub struct PeerStore {
    shards: Box<[Mutex<Shard>]>,
    config: StoreConfig,
    /// Origin of the store's clock: times are kept as signed nanoseconds
    /// from it (see [`Clock`]).
    clock: Clock,
    /// The next `take_changes` returns everything.
    full_resync: AtomicBool,
}

/// Converts `Instant`s to signed nanoseconds since a fixed instant, so that a
/// peer's last announce takes 8 bytes and times before the store was created
/// (restored peers, test clocks) stay exact.
#[derive(Debug, Clone, Copy)]
struct Clock {
    epoch: Instant,
}

impl Clock {
    fn ns(&self, t: Instant) -> i64 {
        match t.checked_duration_since(self.epoch) {
            Some(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            None => -i64::try_from(self.epoch.duration_since(t).as_nanos()).unwrap_or(i64::MAX),
        }
    }
}

/// Age of a peer last seen at `last_ns`, at `now_ns`; zero when the clock went back.
fn age(now_ns: i64, last_ns: i64) -> Duration {
    Duration::from_nanos(now_ns.saturating_sub(last_ns).max(0) as u64)
}

/// One shard: the registered swarms whose info hash maps to it.
#[derive(Debug, Default)]
struct Shard {
    swarms: HashMap<InfoHash, Swarm>,
}

/// Which of a swarm's vectors a peer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Origin = 0,
    Seeder = 1,
    Leecher = 2,
}

impl Kind {
    /// `verified`: whether a `left` of 0 is believed (see [`PeerRecord::verified`]).
    fn of(is_origin: bool, left: u64, verified: bool) -> Kind {
        if is_origin {
            Kind::Origin
        } else if left == 0 && verified {
            Kind::Seeder
        } else {
            Kind::Leecher
        }
    }
}

/// Position of a peer: its vector in the top 2 bits, its index below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot(u32);

impl Slot {
    fn new(kind: Kind, pos: usize) -> Slot {
        debug_assert!(pos < 1 << 30, "swarm larger than 2^30 peers");
        Slot(((kind as u32) << 30) | pos as u32)
    }
    fn kind(self) -> Kind {
        match self.0 >> 30 {
            0 => Kind::Origin,
            1 => Kind::Seeder,
            _ => Kind::Leecher,
        }
    }
    fn pos(self) -> usize {
        (self.0 & ((1 << 30) - 1)) as usize
    }
}

const GRANTED: u8 = 1;
const DIRTY: u8 = 2;
/// Its `left=0` is believed ([`PeerRecord::verified`]).
const VERIFIED: u8 = 4;
/// Written by another tracker replica, merged in by
/// [`PeerStore::merge_remote`]: handed out like any peer, never written back
/// nor deleted from the database by this replica.
const REMOTE: u8 = 8;

/// One live peer, compact (112 bytes).
#[derive(Debug, Clone)]
struct Peer {
    id: PeerId,
    ip: IpAddr,
    port: u16,
    /// Its swarm-local slot number (its bridge address), kept while its
    /// entry lives.
    slot: u32,
    /// Its LAN address (see [`PeerRecord::lan`]).
    lan: Option<SocketAddr>,
    flags: u8,
    /// Since when `left` has not shrunk, in [`Clock`] nanoseconds.
    stalled_since: i64,
    /// Bytes it still misses.
    left: u64,
    /// Last announce, in [`Clock`] nanoseconds.
    last_seen: i64,
    /// Device id from the announce URL.
    device: Option<Box<str>>,
}

impl Peer {
    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
    /// The public address its LAN neighbours share, when it has a LAN address.
    fn home(&self) -> Option<IpAddr> {
        self.lan.map(|_| self.ip.to_canonical())
    }
    fn granted(&self) -> bool {
        self.flags & GRANTED != 0
    }
    fn verified(&self) -> bool {
        self.flags & VERIFIED != 0
    }
    fn remote(&self) -> bool {
        self.flags & REMOTE != 0
    }
    /// Whether it takes one of the origin's grant slots (a leecher holding a grant).
    fn holds_grant(&self) -> bool {
        self.granted() && self.left > 0
    }
}

/// A swarm: its peers by kind, and its counters.
#[derive(Debug, Default)]
struct Swarm {
    index: HashMap<PeerId, Slot>,
    /// Origins, device seeders, device leechers.
    lists: [Vec<Peer>; 3],
    /// Peers for which [`Peer::holds_grant`] is true.
    grants: u32,
    /// Downloads completed (event `completed`, or a leecher seen reaching `left=0`).
    downloaded: u32,
    downloaded_dirty: bool,
    /// Some peer has its DIRTY flag set.
    dirty: bool,
    /// When a device (never the origin) last reported progress, its `left`
    /// smaller than at its previous announce, in [`Clock`] nanoseconds;
    /// `None` until one does (not persisted: a restarted tracker waits for
    /// the next report).
    progress: Option<i64>,
    /// Peers removed since the last `take_changes`.
    removed: Vec<PeerId>,
    /// Peer ids by device id, for peers that carry one.
    owners: HashMap<Box<str>, Vec<PeerId>>,
    /// Peer ids by public address ([`Peer::home`]), for peers with a LAN address.
    homes: HashMap<IpAddr, Vec<PeerId>>,
    /// Peer ids by slot number ([`Peer::slot`]).
    slots: HashMap<u32, PeerId>,
    /// The slot number the next new peer gets.
    next_slot: u32,
    /// This replica holds the swarm's origin-grant lease (read only with
    /// [`StoreConfig::shared_grants`]).
    grant_lease: bool,
}

/// Adds `id` under `key` of a multimap.
fn index_add<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<PeerId>>, key: K, id: PeerId) {
    map.entry(key).or_default().push(id);
}

/// Removes `id` under `key` of a multimap (the key goes with its last id).
fn index_remove<K, Q>(map: &mut HashMap<K, Vec<PeerId>>, key: &Q, id: PeerId)
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(ids) = map.get_mut(key) {
        ids.retain(|i| *i != id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

impl Swarm {
    fn len(&self) -> usize {
        self.index.len()
    }

    /// A slot number no peer of this swarm had yet (wraps only after 2^32
    /// new peers).
    fn take_slot(&mut self) -> u32 {
        let slot = self.next_slot;
        self.next_slot = self.next_slot.wrapping_add(1);
        slot
    }

    /// The live peer of slot `slot`, if any.
    fn at_slot(&self, slot: u32) -> Option<&Peer> {
        self.get(self.slots.get(&slot)?)
    }

    /// Notes `peer` in the device, home and slot indexes.
    fn index(&mut self, peer: &Peer) {
        self.slots.insert(peer.slot, peer.id);
        if let Some(d) = peer.device.as_deref() {
            index_add(&mut self.owners, Box::from(d), peer.id);
        }
        if let Some(h) = peer.home() {
            index_add(&mut self.homes, h, peer.id);
        }
    }

    /// Forgets `peer` in the device, home and slot indexes.
    fn unindex(&mut self, peer: &Peer) {
        if self.slots.get(&peer.slot) == Some(&peer.id) {
            self.slots.remove(&peer.slot);
        }
        if let Some(d) = peer.device.as_deref() {
            index_remove(&mut self.owners, d, peer.id);
        }
        if let Some(h) = peer.home() {
            index_remove(&mut self.homes, &h, peer.id);
        }
    }

    /// The peers with a LAN address behind public address `ip`.
    fn neighbours_of(&self, ip: IpAddr) -> &[PeerId] {
        self.homes.get(&ip.to_canonical()).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The peers of `device` in this swarm.
    fn owned_by(&self, device: &str) -> &[PeerId] {
        self.owners.get(device).map(Vec::as_slice).unwrap_or(&[])
    }

    fn get(&self, id: &PeerId) -> Option<&Peer> {
        let slot = *self.index.get(id)?;
        Some(&self.lists[slot.kind() as usize][slot.pos()])
    }

    fn stats(&self) -> ScrapeStats {
        let complete = self.lists[Kind::Seeder as usize].len()
            + self.lists[Kind::Origin as usize].iter().filter(|p| p.left == 0).count();
        ScrapeStats {
            complete: complete as u32,
            downloaded: self.downloaded,
            incomplete: (self.len() - complete) as u32,
        }
    }

    fn get_mut(&mut self, id: &PeerId) -> Option<&mut Peer> {
        let slot = *self.index.get(id)?;
        Some(&mut self.lists[slot.kind() as usize][slot.pos()])
    }

    fn all(&self) -> impl Iterator<Item = (Kind, &Peer)> {
        [Kind::Origin, Kind::Seeder, Kind::Leecher]
            .into_iter()
            .flat_map(move |k| self.lists[k as usize].iter().map(move |p| (k, p)))
    }

    /// Takes a peer out of its vector; the last one of that vector moves into its place.
    fn detach(&mut self, slot: Slot) -> Peer {
        let list = &mut self.lists[slot.kind() as usize];
        let peer = list.swap_remove(slot.pos());
        if let Some(moved) = list.get(slot.pos()) {
            self.index.insert(moved.id, slot);
        }
        if peer.holds_grant() {
            self.grants -= 1;
        }
        self.unindex(&peer);
        peer
    }

    /// Inserts or replaces a peer, moving it to the vector of `kind`.
    fn put(&mut self, kind: Kind, peer: Peer) {
        if peer.holds_grant() {
            self.grants += 1;
        }
        match self.index.get(&peer.id).copied() {
            Some(slot) if slot.kind() == kind => {
                let old = &mut self.lists[kind as usize][slot.pos()];
                let reindex = old.device != peer.device || old.home() != peer.home() || old.slot != peer.slot;
                let new = reindex.then(|| peer.clone());
                let old = std::mem::replace(old, peer);
                if old.holds_grant() {
                    self.grants -= 1;
                }
                if let Some(new) = new {
                    self.unindex(&old);
                    self.index(&new);
                }
            }
            old => {
                if let Some(slot) = old {
                    self.detach(slot);
                }
                self.index(&peer);
                let list = &mut self.lists[kind as usize];
                self.index.insert(peer.id, Slot::new(kind, list.len()));
                list.push(peer);
            }
        }
    }

    /// Removes a peer; returns whether it was there.
    fn remove(&mut self, id: &PeerId) -> bool {
        match self.index.remove(id) {
            Some(slot) => {
                // Another replica's row is that replica's to delete.
                if !self.detach(slot).remote() {
                    self.removed.push(*id);
                }
                true
            }
            None => false,
        }
    }

    /// Drops the peers last seen before `cutoff_ns` (ns); returns how many.
    fn sweep(&mut self, cutoff_ns: i64) -> usize {
        let mut gone = 0;
        for k in [Kind::Origin, Kind::Seeder, Kind::Leecher] {
            let mut i = 0;
            while i < self.lists[k as usize].len() {
                let p = &self.lists[k as usize][i];
                if p.last_seen < cutoff_ns {
                    let id = p.id;
                    self.remove(&id);
                    gone += 1;
                } else {
                    i += 1;
                }
            }
        }
        gone
    }
}

/// The record of `p` at `now_ns`; its `stalled` counts whole `interval`s
/// from `stalled_since` to its last announce (so a record changes only when
/// the peer announces).
fn record(info_hash: &InfoHash, kind: Kind, p: &Peer, now_ns: i64, interval: Duration) -> PeerRecord {
    let stalled = age(p.last_seen, p.stalled_since).as_nanos() / interval.as_nanos().max(1);
    PeerRecord {
        info_hash: *info_hash,
        peer_id: p.id,
        addr: p.addr(),
        left: p.left,
        stalled: stalled.min(u32::MAX as u128) as u32,
        is_origin: kind == Kind::Origin,
        granted: p.granted(),
        verified: p.verified(),
        device: p.device.as_deref().map(str::to_string),
        lan: p.lan,
        age: age(now_ns, p.last_seen),
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

impl Default for PeerStore {
    fn default() -> Self {
        PeerStore::new(StoreConfig::default())
    }
}

impl PeerStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        PeerStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            config,
            clock: Clock { epoch: Instant::now() },
            full_resync: AtomicBool::new(false),
        }
    }

    /// The locked shard of an info hash (info hashes are SHA-1 digests, so
    /// their first bytes spread evenly).
    fn shard(&self, info_hash: &InfoHash) -> MutexGuard<'_, Shard> {
        let n = u64::from_le_bytes(info_hash.0[..8].try_into().expect("8 bytes")) as usize % SHARDS;
        // A panic while a shard is locked leaves consistent data behind: every
        // mutation completes before anything that can panic.
        self.shards[n].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn each_shard(&self) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn timeout_ns(&self) -> i64 {
        i64::try_from(self.config.peer_timeout.as_nanos()).unwrap_or(i64::MAX)
    }

    /// Starts tracking a release's swarm.
    pub fn register(&self, info_hash: InfoHash) {
        self.shard(&info_hash).swarms.entry(info_hash).or_default();
    }

    /// Whether the info hash is a registered release.
    pub fn is_registered(&self, info_hash: &InfoHash) -> bool {
        self.shard(info_hash).swarms.contains_key(info_hash)
    }

    /// [`Self::announce_with`] without direct paths: no LAN address, and
    /// every public address counts as reachable (a plain tracker).
    ///
    /// Errors: as [`Self::announce_with`].
    pub fn announce(
        &self,
        req: &AnnounceRequest,
        addr: SocketAddr,
        is_origin: bool,
        now: Instant,
    ) -> Result<AnnounceResponse, AnnounceError> {
        self.announce_with(req, addr, is_origin, now, AnnouncePaths::default())
    }

    /// Handles one announce from `addr` (the client's address as seen by the
    /// server, with the port it announced). `is_origin` says whether the
    /// announce carried a valid origin token; `paths` carries the
    /// requester's LAN address and the connectability verdicts.
    ///
    /// The peers handed out, at most `numwant`: the origin when the policy
    /// lists it ([`super::handout`]); then the requester's LAN neighbours
    /// (peers behind the same public address that reported a LAN address)
    /// at their LAN addresses, seeders first; then device seeders and
    /// leechers at their public addresses, only those `paths.reachable`
    /// accepts; last, when the requester runs QUIC (`paths.quic`), devices
    /// that `paths.reachable` rejected but `paths.bridgeable` accepts, as
    /// their bridge address `[fd6f:7461:7270:…:slot]:`[`BRIDGE_PORT`] (IPv6,
    /// so `peers6` in a compact answer, BEP 7). Cost O(numwant +
    /// neighbours), under the lock of the swarm's shard only.
    ///
    /// Errors: [`AnnounceError::Unregistered`] for an unknown info hash, or
    /// [`AnnounceError::Invalid`] when a new peer would exceed the per-swarm cap.
    pub fn announce_with(
        &self,
        req: &AnnounceRequest,
        addr: SocketAddr,
        is_origin: bool,
        now: Instant,
        paths: AnnouncePaths<'_>,
    ) -> Result<AnnounceResponse, AnnounceError> {
        let config = &self.config;
        let now_ns = self.clock.ns(now);
        let timeout_ns = self.timeout_ns();
        let mut shard = self.shard(&req.info_hash);
        let Some(swarm) = shard.swarms.get_mut(&req.info_hash) else {
            return Err(AnnounceError::Unregistered(hex::encode(req.info_hash)));
        };
        if config.device_bound {
            // A peer entry belongs to the device (or the origin: no device) that made it.
            if let Some(p) = swarm.get(&req.peer_id) {
                if p.device.as_deref() != req.device.as_deref() {
                    return Err(AnnounceError::Invalid(
                        "peer_id",
                        "this peer id is announced by another device".into(),
                    ));
                }
            }
        }
        if req.event == AnnounceEvent::Stopped {
            swarm.remove(&req.peer_id);
            return Ok(response(config, swarm, Vec::new()));
        }
        let mut inherited_verified = false;
        if let (true, Some(device), false) = (
            config.device_bound,
            req.device.as_deref(),
            swarm.index.contains_key(&req.peer_id),
        ) {
            // One entry per device and address family: a new peer id replaces the old.
            let family = addr.ip().to_canonical().is_ipv4();
            let owned = swarm.owned_by(device);
            let same_family = |id: &&PeerId| swarm.get(id).is_some_and(|p| p.ip.to_canonical().is_ipv4() == family);
            let mut replaced: Vec<PeerId> = owned.iter().filter(same_family).copied().collect();
            // Never more than the cap, whatever happened before.
            let others = owned
                .iter()
                .filter(|id| !replaced.contains(id))
                .copied()
                .collect::<Vec<_>>();
            let excess = others.len().saturating_sub(MAX_PEERS_PER_DEVICE - 1);
            replaced.extend(others.into_iter().take(excess));
            for id in replaced {
                if let Some(p) = swarm.get(&id) {
                    inherited_verified |= p.verified() && p.left == 0;
                }
                swarm.remove(&id);
            }
        }
        let known_slot = swarm.get(&req.peer_id).map(|p| p.slot);
        let previous = swarm.get_mut(&req.peer_id);
        // A peer past the timeout that the sweep has not dropped yet starts afresh.
        let previous = previous.filter(|p| now_ns.saturating_sub(p.last_seen) <= timeout_ns);
        let (prev_left, prev_stalled_since, granted_before, prev_device, prev_verified) = match previous {
            Some(p) => (
                Some(p.left),
                p.stalled_since,
                p.granted(),
                p.device.take(),
                p.verified(),
            ),
            None => (None, now_ns, false, None, false),
        };
        if !swarm.index.contains_key(&req.peer_id) && swarm.len() >= config.max_peers_per_swarm {
            // Full: drop the expired peers the sweep has not reached yet first.
            swarm.sweep(now_ns.saturating_sub(timeout_ns));
            if swarm.len() >= config.max_peers_per_swarm {
                return Err(AnnounceError::Invalid("swarm", "peer limit reached".into()));
            }
        }
        let was_leeching = prev_left.is_some_and(|l| l > 0);
        if !is_origin && prev_left.is_some_and(|l| req.left < l) {
            swarm.progress = Some(swarm.progress.map_or(now_ns, |p| p.max(now_ns)));
        }
        // Device-bound: a completion counts, and `left=0` is believed, only after
        // the store saw the device leeching (or it was believed before).
        let completes = if config.device_bound {
            was_leeching && req.left == 0
        } else {
            req.event == AnnounceEvent::Completed || (was_leeching && req.left == 0)
        };
        if completes {
            swarm.downloaded += 1;
            swarm.downloaded_dirty = true;
        }
        let verified = !config.device_bound
            || req.device.is_none()
            || (req.left == 0 && (was_leeching || prev_verified || inherited_verified));
        let stalled_since = match prev_left {
            Some(l) if req.left > 0 && req.left >= l => prev_stalled_since,
            _ => now_ns,
        };
        let slot = known_slot.unwrap_or_else(|| swarm.take_slot());
        let peer = Peer {
            id: req.peer_id,
            ip: addr.ip(),
            port: addr.port(),
            slot,
            lan: paths.lan.filter(|l| !is_origin && is_lan_candidate(*l)),
            flags: DIRTY | if granted_before { GRANTED } else { 0 } | if verified { VERIFIED } else { 0 },
            stalled_since,
            left: req.left,
            last_seen: now_ns,
            device: req.device.as_deref().map(Box::from).or(prev_device),
        };
        let own_grant = peer.holds_grant() as u32;
        swarm.put(Kind::of(is_origin, req.left, verified), peer);
        swarm.dirty = true;

        if is_origin {
            // The origin never dials out: devices come to it when the policy says.
            return Ok(response(config, swarm, Vec::new()));
        }
        let requester = Requester {
            // An unbelieved `left=0` gets no origin either: the device claims to need nothing.
            left: req.left,
            stalled_for: age(now_ns, stalled_since),
            interval: config.interval,
            granted: granted_before,
        };
        let requester_ip = addr.ip();
        let stale = |p: &Peer| {
            p.id == req.peer_id || now_ns.saturating_sub(p.last_seen) > timeout_ns || !shareable(p.ip, requester_ip)
        };
        // LAN neighbours: the devices behind the requester's public address,
        // seeders first, at most numwant.
        let mut neighbours: Vec<&Peer> = swarm
            .neighbours_of(requester_ip)
            .iter()
            .filter_map(|id| swarm.get(id))
            .filter(|p| !stale(p) && p.lan.is_some())
            .collect();
        neighbours.sort_by_key(|p| p.left > 0 || !p.verified());
        neighbours.truncate(req.numwant);
        let neighbour_seeders = neighbours.iter().filter(|p| p.left == 0 && p.verified()).count();
        let parts = SwarmParts {
            origins: &swarm.lists[Kind::Origin as usize],
            neighbours: &neighbours,
            neighbour_seeders,
            seeders: &swarm.lists[Kind::Seeder as usize],
            leechers: &swarm.lists[Kind::Leecher as usize],
            progress_for: swarm.progress.map(|p| age(now_ns, p)),
        };
        let is_origin_peer = |p: &Peer| matches!(swarm.index.get(&p.id), Some(s) if s.kind() == Kind::Origin);
        let skip = |p: &Peer| {
            stale(p) || neighbours.iter().any(|n| n.id == p.id) || (!(paths.reachable)(p.addr()) && !is_origin_peer(p))
        };
        // Devices the requester cannot dial but may punch a QUIC path to:
        // both run QUIC, and the tracker can push the introduction to it.
        let bridged = |p: &Peer| {
            paths.quic
                && !stale(p)
                && !is_origin_peer(p)
                && !neighbours.iter().any(|n| n.id == p.id)
                && p.device
                    .as_deref()
                    .is_some_and(|d| Some(d) != req.device.as_deref() && (paths.bridgeable)(d))
                && !(paths.reachable)(p.addr())
        };
        let grants_in_use = if config.shared_grants && !swarm.grant_lease {
            // Another replica grants in this swarm (or none does yet).
            usize::MAX
        } else {
            (swarm.grants - own_grant) as usize
        };
        let handout = hand_out(
            &requester,
            parts,
            skip,
            bridged,
            grants_in_use,
            config.origin_policy,
            req.numwant,
            &mut rand::thread_rng(),
        );
        let peers = handout
            .peers
            .iter()
            .map(|p| PeerAddr {
                peer_id: p.id,
                addr: match p.lan {
                    Some(lan) if neighbours.iter().any(|n| n.id == p.id) => lan,
                    _ if paths.quic && is_origin_peer(p) && (paths.origin_quic)(p.addr()) => {
                        SocketAddr::new(IpAddr::V6(bridge_address(&req.info_hash, p.slot)), BRIDGE_PORT)
                    }
                    _ => p.addr(),
                },
            })
            .chain(handout.bridged.iter().map(|p| PeerAddr {
                peer_id: p.id,
                addr: SocketAddr::new(IpAddr::V6(bridge_address(&req.info_hash, p.slot)), BRIDGE_PORT),
            }))
            .collect();
        let granted = handout.granted;
        if tracing::enabled!(tracing::Level::DEBUG) && handout.peers.iter().any(|p| is_origin_peer(p)) {
            tracing::debug!(
                info_hash = %req.info_hash,
                peer_id = %req.peer_id,
                left = req.left,
                granted,
                lease = swarm.grant_lease,
                grants_in_use,
                "origin listed"
            );
        }
        if granted != granted_before {
            if let Some(p) = swarm.get_mut(&req.peer_id) {
                let before = p.holds_grant();
                p.flags ^= GRANTED;
                let after = p.holds_grant();
                swarm.grants = swarm.grants + after as u32 - before as u32;
            }
        }
        Ok(response(config, swarm, peers))
    }

    /// The live peer of slot `slot` in swarm `info_hash` (the peer a bridge
    /// address stands for): `Ok(None)` when no live peer holds that slot
    /// (never given out, stopped, expired).
    ///
    /// Errors: [`AnnounceError::Unregistered`] for an unknown info hash.
    pub fn peer_at_slot(
        &self,
        info_hash: &InfoHash,
        slot: u32,
        now: Instant,
    ) -> Result<Option<RendezvousPeer>, AnnounceError> {
        let now_ns = self.clock.ns(now);
        let timeout_ns = self.timeout_ns();
        let shard = self.shard(info_hash);
        let swarm = shard
            .swarms
            .get(info_hash)
            .ok_or_else(|| AnnounceError::Unregistered(hex::encode(info_hash)))?;
        Ok(swarm
            .at_slot(slot)
            .filter(|p| now_ns.saturating_sub(p.last_seen) <= timeout_ns)
            .map(|p| RendezvousPeer::of(swarm, p)))
    }

    /// The live peer entries of device `device` in swarm `info_hash` (at
    /// most [`MAX_PEERS_PER_DEVICE`] with device-bound peers; without, as
    /// many as it announced), in no particular order; empty when it holds
    /// none.
    ///
    /// Errors: [`AnnounceError::Unregistered`] for an unknown info hash.
    pub fn device_peers(
        &self,
        info_hash: &InfoHash,
        device: &str,
        now: Instant,
    ) -> Result<Vec<RendezvousPeer>, AnnounceError> {
        let now_ns = self.clock.ns(now);
        let timeout_ns = self.timeout_ns();
        let shard = self.shard(info_hash);
        let swarm = shard
            .swarms
            .get(info_hash)
            .ok_or_else(|| AnnounceError::Unregistered(hex::encode(info_hash)))?;
        Ok(swarm
            .owned_by(device)
            .iter()
            .filter_map(|id| swarm.get(id))
            .filter(|p| now_ns.saturating_sub(p.last_seen) <= timeout_ns)
            .map(|p| RendezvousPeer::of(swarm, p))
            .collect())
    }

    /// Scrape counters for one info hash; `None` if unregistered.
    pub fn scrape(&self, info_hash: &InfoHash) -> Option<ScrapeStats> {
        self.shard(info_hash).swarms.get(info_hash).map(Swarm::stats)
    }

    /// Every registered info hash with its counters.
    pub fn scrape_all(&self) -> Vec<(InfoHash, ScrapeStats)> {
        self.each_shard()
            .flat_map(|s| s.swarms.iter().map(|(ih, sw)| (*ih, sw.stats())).collect::<Vec<_>>())
            .collect()
    }

    /// The origin peers currently live in a swarm: their addresses and
    /// their bridge addresses (`[fd6f:…]:`[`BRIDGE_PORT`], see
    /// [`AnnouncePaths::origin_quic`]).
    pub fn origin_peers(&self, info_hash: &InfoHash) -> Vec<(SocketAddr, SocketAddr)> {
        let bridge = |slot| SocketAddr::new(IpAddr::V6(bridge_address(info_hash, slot)), BRIDGE_PORT);
        self.shard(info_hash)
            .swarms
            .get(info_hash)
            .map(|s| {
                s.lists[Kind::Origin as usize]
                    .iter()
                    .map(|p| (p.addr(), bridge(p.slot)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops peers silent for longer than the peer timeout, in every swarm,
    /// one shard at a time (each shard is locked for one pass over its peers).
    /// Returns the number of peers dropped.
    pub fn expire(&self, now: Instant) -> usize {
        let cutoff = self.clock.ns(now).saturating_sub(self.timeout_ns());
        self.each_shard()
            .map(|mut s| s.swarms.values_mut().map(|sw| sw.sweep(cutoff)).sum::<usize>())
            .sum()
    }

    /// The live peers of one swarm with their ages at `now`, seeders first,
    /// then by peer id; `None` if the info hash is unregistered. Peers past
    /// the timeout that no [`Self::expire`] dropped yet are left out.
    pub fn peers(&self, info_hash: &InfoHash, now: Instant) -> Option<Vec<PeerRecord>> {
        let now_ns = self.clock.ns(now);
        let shard = self.shard(info_hash);
        let swarm = shard.swarms.get(info_hash)?;
        let mut out: Vec<PeerRecord> = swarm
            .all()
            .map(|(k, p)| record(info_hash, k, p, now_ns, self.config.interval))
            .filter(|r| r.age <= self.config.peer_timeout)
            .collect();
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
    pub fn restore(&self, record: &PeerRecord, now: Instant) -> bool {
        if record.age > self.config.peer_timeout {
            return false;
        }
        let mut shard = self.shard(&record.info_hash);
        let Some(swarm) = shard.swarms.get_mut(&record.info_hash) else {
            return false;
        };
        if !swarm.index.contains_key(&record.peer_id) && swarm.len() >= self.config.max_peers_per_swarm {
            return false;
        }
        let seen = now.checked_sub(record.age).unwrap_or(now);
        let (kind, peer) = self.peer_of_record(swarm, record, self.clock.ns(seen), 0);
        swarm.put(kind, peer);
        true
    }

    /// The entry of a record read from the database, last seen at `seen_ns`
    /// ([`Clock`] nanoseconds), with `flags` added; it keeps its slot
    /// number if `swarm` already holds it.
    fn peer_of_record(&self, swarm: &mut Swarm, record: &PeerRecord, seen_ns: i64, flags: u8) -> (Kind, Peer) {
        let verified = record.verified || !self.config.device_bound;
        let known_slot = swarm.get(&record.peer_id).map(|p| p.slot);
        let slot = known_slot.unwrap_or_else(|| swarm.take_slot());
        let stalled_ns = i64::try_from((self.config.interval * record.stalled).as_nanos()).unwrap_or(i64::MAX);
        let peer = Peer {
            id: record.peer_id,
            ip: record.addr.ip(),
            port: record.addr.port(),
            slot,
            lan: None,
            flags: flags | if record.granted { GRANTED } else { 0 } | if verified { VERIFIED } else { 0 },
            stalled_since: seen_ns.saturating_sub(stalled_ns),
            left: record.left,
            last_seen: seen_ns,
            device: record.device.as_deref().map(Box::from),
        };
        (Kind::of(record.is_origin, record.left, verified), peer)
    }

    /// Replaces the peers other tracker replicas announced (as read from the
    /// database by the replica round, ages at `now`) with `records`: they
    /// are handed out, counted in scrapes and hold origin grants like this
    /// replica's own peers, but are never written back nor deleted from the
    /// database here. A record is skipped when this replica heard from the
    /// same peer since (it moved here), when, with device-bound peers,
    /// its device holds a peer of its own here (it moved with a new peer id),
    /// when it is older than the peer timeout, or when the swarm is full or
    /// unregistered. A remote leecher whose `left` shrank since the last
    /// merge counts as progress of its swarm at its announce, and a believed
    /// remote seeder merged for the first time as progress at `now` (the
    /// vanished-seeder rule of [`crate::swarm::handout`] then gives it one
    /// interval to serve this replica's leechers, which could not reach it
    /// before). Returns the number of remote
    /// peers held afterwards. Cost O(records + remote peers held), one
    /// shard locked at a time.
    pub fn merge_remote(&self, records: &[PeerRecord], now: Instant) -> usize {
        let now_ns = self.clock.ns(now);
        let mut by_swarm: HashMap<InfoHash, Vec<&PeerRecord>> = HashMap::new();
        for r in records.iter().filter(|r| r.age <= self.config.peer_timeout) {
            by_swarm.entry(r.info_hash).or_default().push(r);
        }
        let mut held = 0;
        for mut shard in self.each_shard() {
            for (ih, swarm) in shard.swarms.iter_mut() {
                let incoming = by_swarm.remove(ih).unwrap_or_default();
                let fresh: std::collections::HashSet<PeerId> = incoming.iter().map(|r| r.peer_id).collect();
                let gone: Vec<PeerId> = swarm
                    .all()
                    .filter(|(_, p)| p.remote() && !fresh.contains(&p.id))
                    .map(|(_, p)| p.id)
                    .collect();
                for id in gone {
                    swarm.remove(&id);
                }
                for r in incoming {
                    let seen_ns = now_ns.saturating_sub(i64::try_from(r.age.as_nanos()).unwrap_or(i64::MAX));
                    let previous = swarm.get(&r.peer_id).map(|p| (p.remote(), p.last_seen, p.left));
                    if matches!(previous, Some((false, last, _)) if last >= seen_ns) {
                        continue;
                    }
                    let moved_here =
                        self.config.device_bound
                            && r.device.as_deref().is_some_and(|d| {
                                let family = r.addr.ip().to_canonical().is_ipv4();
                                swarm.owned_by(d).iter().filter_map(|id| swarm.get(id)).any(|p| {
                                    !p.remote() && p.id != r.peer_id && p.ip.to_canonical().is_ipv4() == family
                                })
                            });
                    if moved_here || (previous.is_none() && swarm.len() >= self.config.max_peers_per_swarm) {
                        continue;
                    }
                    // Progress of the swarm: a remote leecher's `left` shrank
                    // (when it announced), or a device seeder became known here
                    // (now: this replica's leechers could not be served by a
                    // seeder they were never handed, so it gets the benefit of
                    // the doubt for one interval from now, as a new seeder on
                    // one tracker does; counted once, when first merged).
                    let progressed_at = match previous {
                        _ if r.is_origin => None,
                        Some((true, _, left)) => (r.left < left).then_some(seen_ns),
                        None => (r.left == 0 && r.verified).then_some(now_ns),
                        Some((false, _, _)) => None,
                    };
                    if let Some(at) = progressed_at {
                        swarm.progress = Some(swarm.progress.map_or(at, |p| p.max(at)));
                    }
                    let (kind, peer) = self.peer_of_record(swarm, r, seen_ns, REMOTE);
                    swarm.put(kind, peer);
                    held += 1;
                }
            }
        }
        held
    }

    /// The swarms in which this replica has leechers of its own (not
    /// origins, not remote peers): those whose origin-grant lease it should
    /// claim or renew ([`crate::registry::Registry::claim_grant_leases`]).
    pub fn grant_wanted(&self) -> Vec<InfoHash> {
        self.each_shard()
            .flat_map(|s| {
                s.swarms
                    .iter()
                    .filter(|(_, sw)| sw.lists[Kind::Leecher as usize].iter().any(|p| !p.remote()))
                    .map(|(ih, _)| *ih)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Notes that this replica holds (or not) the origin-grant lease of
    /// one swarm, between two [`Self::set_grant_leases`] (e.g. claimed
    /// when a release is pushed here). Returns whether the swarm is registered.
    pub fn set_grant_lease(&self, info_hash: &InfoHash, held: bool) -> bool {
        match self.shard(info_hash).swarms.get_mut(info_hash) {
            Some(sw) => {
                sw.grant_lease = held;
                true
            }
            None => false,
        }
    }

    /// Sets which swarms' origin-grant leases this replica holds: with
    /// [`StoreConfig::shared_grants`], only those hand out new origin
    /// grants. Returns how many registered swarms hold one.
    pub fn set_grant_leases(&self, held: &std::collections::HashSet<InfoHash>) -> usize {
        self.each_shard()
            .map(|mut s| {
                s.swarms
                    .iter_mut()
                    .map(|(ih, sw)| {
                        sw.grant_lease = held.contains(ih);
                        sw.grant_lease as usize
                    })
                    .sum::<usize>()
            })
            .sum()
    }

    /// Puts back a swarm's completed-download counter read from the database
    /// (BEP 48 `downloaded`). Returns false for an unregistered swarm.
    pub fn restore_downloaded(&self, info_hash: &InfoHash, downloaded: u32) -> bool {
        match self.shard(info_hash).swarms.get_mut(info_hash) {
            Some(s) => {
                s.downloaded = downloaded;
                true
            }
            None => false,
        }
    }

    /// Hands out, and forgets, what changed since the last call: peers that
    /// announced (with their ages at `now`), peers that stopped or expired,
    /// and changed counters. Shards are read one at a time, each locked for
    /// one pass over its changed swarms. A caller whose write fails calls
    /// [`Self::mark_full_resync`] so that nothing is lost.
    pub fn take_changes(&self, now: Instant) -> StoreChanges {
        let now_ns = self.clock.ns(now);
        let mut changes = StoreChanges::default();
        let full = self.full_resync.swap(false, Ordering::SeqCst);
        changes.full = full;
        for mut shard in self.each_shard() {
            for (ih, swarm) in shard.swarms.iter_mut() {
                if full {
                    for list in swarm.lists.iter_mut() {
                        for p in list.iter_mut() {
                            p.flags &= !DIRTY;
                        }
                    }
                    changes.upserts.extend(
                        swarm
                            .all()
                            .filter(|(_, p)| !p.remote())
                            .map(|(k, p)| record(ih, k, p, now_ns, self.config.interval)),
                    );
                    changes.downloaded.push((*ih, swarm.downloaded));
                    swarm.removed.clear();
                    swarm.dirty = false;
                    swarm.downloaded_dirty = false;
                    continue;
                }
                if swarm.dirty {
                    swarm.dirty = false;
                    for (k, list) in [Kind::Origin, Kind::Seeder, Kind::Leecher]
                        .into_iter()
                        .zip(swarm.lists.iter_mut())
                    {
                        for p in list.iter_mut().filter(|p| p.flags & DIRTY != 0) {
                            p.flags &= !DIRTY;
                            changes.upserts.push(record(ih, k, p, now_ns, self.config.interval));
                        }
                    }
                }
                // A peer removed then back again is an upsert only.
                let removed = std::mem::take(&mut swarm.removed);
                changes.removals.extend(
                    removed
                        .into_iter()
                        .filter(|id| !swarm.index.contains_key(id))
                        .map(|id| (*ih, id)),
                );
                if swarm.downloaded_dirty {
                    swarm.downloaded_dirty = false;
                    changes.downloaded.push((*ih, swarm.downloaded));
                }
            }
        }
        changes.removals.sort_unstable();
        changes.removals.dedup();
        changes
    }

    /// Makes the next [`Self::take_changes`] return every live peer and
    /// counter with `full` set, e.g. after a failed database write.
    pub fn mark_full_resync(&self) {
        self.full_resync.store(true, Ordering::SeqCst);
    }

    /// Live peers across all swarms.
    pub fn peer_count(&self) -> usize {
        self.each_shard()
            .map(|s| s.swarms.values().map(Swarm::len).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const IH: InfoHash = InfoHash([9; 20]);

    fn announce(n: u8, left: u64, event: AnnounceEvent) -> AnnounceRequest {
        AnnounceRequest::new(IH, PeerId([n; 20]), 7000 + n as u16, left, event)
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000 + n as u16))
    }

    /// A store with swarm [`IH`] and its origin (peer 0) announced at `t0`.
    fn store_with_origin(t0: Instant) -> PeerStore {
        let s = PeerStore::new(StoreConfig::default());
        s.register(IH);
        s.announce(&announce(0, 0, AnnounceEvent::Started), addr(0), true, t0)
            .unwrap();
        s
    }

    /// Peer `n` (the origin when `origin`) announces `left` bytes `secs`
    /// after `t0` with no event; returns the addresses handed out.
    fn announce_at(s: &PeerStore, t0: Instant, n: u8, left: u64, secs: u64, origin: bool) -> Vec<SocketAddr> {
        s.announce(
            &announce(n, left, AnnounceEvent::None),
            addr(n),
            origin,
            t0 + Duration::from_secs(secs),
        )
        .unwrap()
        .peers
        .iter()
        .map(|p| p.addr)
        .collect()
    }

    #[test]
    fn unregistered_swarms_are_refused() {
        let s = PeerStore::new(StoreConfig::default());
        let r = s.announce(&announce(1, 10, AnnounceEvent::Started), addr(1), false, Instant::now());
        assert!(matches!(r, Err(AnnounceError::Unregistered(_))));
    }

    #[test]
    fn lan_neighbours_first_and_unreachable_addresses_never() {
        let t0 = Instant::now();
        let s = PeerStore::new(StoreConfig::default());
        s.register(IH);
        let wan = |h: u8| -> IpAddr { IpAddr::from([11, 0, h, 1]) };
        let at = |h: u8, n: u8| SocketAddr::new(wan(h), 40_000 + n as u16);
        let lan = |n: u8| -> SocketAddr { SocketAddr::from(([192, 168, 1, n], 40_000 + n as u16)) };
        // Home 1 forwards nothing, home 3 neither; home 2 is reachable.
        let reachable = |a: SocketAddr| a.ip() == wan(2);
        let go = |n: u8, left: u64, home: u8, with_lan: bool| {
            let paths = AnnouncePaths {
                lan: with_lan.then(|| lan(n)),
                reachable: &reachable,
                ..AnnouncePaths::default()
            };
            let r = s
                .announce_with(&announce(n, left, AnnounceEvent::None), at(home, n), false, t0, paths)
                .unwrap();
            r.peers.iter().map(|p| p.addr).collect::<Vec<_>>()
        };
        s.announce(
            &announce(0, 0, AnnounceEvent::Started),
            "11.0.0.10:6881".parse().unwrap(),
            true,
            t0,
        )
        .unwrap();
        let origin: SocketAddr = "11.0.0.10:6881".parse().unwrap();
        assert_eq!(go(1, 10, 1, true), vec![origin], "the first leecher gets the origin");
        assert_eq!(go(2, 10, 1, true), vec![lan(1)], "its LAN neighbour at its LAN address");
        assert_eq!(
            go(4, 10, 2, true),
            Vec::<SocketAddr>::new(),
            "home 1 is not reachable from outside"
        );
        assert_eq!(go(5, 10, 3, false), vec![at(2, 4)], "the reachable device of home 2");
        // Peer 1 finishes: peer 3 of home 1 gets it first (a LAN seeder, so no
        // origin grant either), then peer 2, then peer 4 at its public address.
        assert_eq!(go(1, 0, 1, true), vec![lan(2), at(2, 4)]);
        assert_eq!(go(3, 10, 1, true), vec![lan(1), lan(2), at(2, 4)]);
        // (peer 3's `left` shrinks from here on: a stalled leecher would be
        // starved and get the origin.)
        // A device without a LAN address behind the same router is listed at
        // its public address only if reachable: here not.
        let plain = go(6, 10, 1, false);
        assert!(plain.contains(&lan(1)) && !plain.contains(&at(1, 6)) && !plain.contains(&origin));
        // Peer 2 moves to another network: no longer a neighbour of home 1,
        // and the only seeder (peer 1) is out of its reach, so the free
        // origin slot is its.
        assert_eq!(go(2, 10, 9, true), vec![origin, at(2, 4)]);
        assert!(!go(3, 9, 1, true).contains(&lan(2)));
        // Stopping removes it from the home index.
        s.announce(&announce(1, 0, AnnounceEvent::Stopped), at(1, 1), false, t0)
            .unwrap();
        assert_eq!(go(3, 8, 1, true), vec![at(2, 4)]);
        let mut shard = s.shard(&IH);
        let swarm = shard.swarms.get_mut(&IH).unwrap();
        assert_eq!(swarm.neighbours_of(wan(1)).len(), 1, "only peer 3 is left at home 1");
        assert_eq!(swarm.neighbours_of(wan(9)).len(), 1);
    }

    #[test]
    fn slots_are_never_reused_and_bridge_addresses_go_last_to_quic_requesters() {
        let t0 = Instant::now();
        let s = PeerStore::new(StoreConfig::default());
        s.register(IH);
        let at = |n: u8| SocketAddr::new(IpAddr::from([11, 0, n, 1]), 40_000 + n as u16);
        // Only device 2 is reachable; device 1 can be introduced, device 3 not.
        let reachable = |a: SocketAddr| a == at(2);
        let bridgeable = |d: &str| d == "dev-1";
        let go = |n: u8, quic: bool, event: AnnounceEvent| {
            let mut req = announce(n, 10, event);
            req.device = Some(format!("dev-{n}"));
            let paths = AnnouncePaths {
                lan: None,
                reachable: &reachable,
                quic,
                bridgeable: &bridgeable,
                ..Default::default()
            };
            let r = s.announce_with(&req, at(n), false, t0, paths).unwrap();
            r.peers.iter().map(|p| p.addr).collect::<Vec<_>>()
        };
        let bridge = |slot: u32| SocketAddr::new(IpAddr::V6(bridge_address(&IH, slot)), BRIDGE_PORT);
        for n in 1..=3 {
            go(n, true, AnnounceEvent::Started);
        }
        assert_eq!(go(4, true, AnnounceEvent::Started), vec![at(2), bridge(0)]);
        assert_eq!(go(4, false, AnnounceEvent::None), vec![at(2)], "no QUIC, no bridge");
        assert_eq!(go(1, true, AnnounceEvent::None), vec![at(2)], "never itself");
        let slot_of = |n: u8| s.device_peers(&IH, &format!("dev-{n}"), t0).unwrap()[0].slot;
        assert_eq!((slot_of(1), slot_of(2), slot_of(3), slot_of(4)), (0, 1, 2, 3));
        let p = s.peer_at_slot(&IH, 0, t0).unwrap().unwrap();
        assert_eq!(
            (p.addr, p.device.as_deref(), p.is_origin),
            (at(1), Some("dev-1"), false)
        );
        // A stopped peer frees its slot for nobody: it comes back with a new one.
        go(1, true, AnnounceEvent::Stopped);
        assert_eq!(s.peer_at_slot(&IH, 0, t0).unwrap(), None);
        assert!(s.device_peers(&IH, "dev-1", t0).unwrap().is_empty());
        go(1, true, AnnounceEvent::Started);
        assert_eq!(slot_of(1), 4);
        assert_eq!(go(4, true, AnnounceEvent::None), vec![at(2), bridge(4)]);
        // Expired peers are not found by slot; unknown swarms are an error.
        assert_eq!(s.peer_at_slot(&IH, 4, t0 + Duration::from_secs(181)).unwrap(), None);
        assert!(s.peer_at_slot(&InfoHash([1; 20]), 4, t0).is_err());
        assert!(s.device_peers(&InfoHash([1; 20]), "dev-1", t0).is_err());
    }

    #[test]
    fn starvation_is_time_without_progress_not_a_count_of_announces() {
        let t0 = Instant::now();
        let s = store_with_origin(t0);
        let got = |n: u8, at: u64| announce_at(&s, t0, n, 10, at, false).contains(&addr(0));
        assert!(got(1, 0), "peer 1 takes the origin's slot");
        // Peer 2 re-announces every second (as librqbit does on each resume):
        // four announces without progress are 3 s, not 2 intervals of 60 s.
        for at in 0..4 {
            assert!(!got(2, at), "announce at {at} s");
        }
        // Within a tenth of an interval counts (a client re-announcing at the
        // interval it was told has waited it).
        assert!(!got(2, 113));
        assert!(got(2, 114), "2 intervals without progress: starved");
    }

    #[test]
    fn a_vanished_seeder_holds_back_the_origin_for_one_quiet_interval_only() {
        let t0 = Instant::now();
        let s = store_with_origin(t0);
        let go = |n: u8, left: u64, at: u64| announce_at(&s, t0, n, left, at, false);
        let granted = |n: u8, at: u64| {
            s.peers(&IH, t0 + Duration::from_secs(at))
                .unwrap()
                .iter()
                .any(|r| r.peer_id == PeerId([n; 20]) && r.granted)
        };
        // Device 1 takes the origin's grant, finishes at 60 s and vanishes
        // without `stopped` (its entry lives until 240 s).
        assert_eq!(go(1, 10, 0), vec![addr(0)]);
        go(1, 5, 30);
        go(1, 0, 60);
        // Device 2 joins at 70 s: the seeder looks alive, the origin is not listed.
        assert_eq!(go(2, 10, 70), vec![addr(1)]);
        assert!(!granted(2, 70));
        // More often than told is not one interval yet.
        assert_eq!(go(2, 10, 100), vec![addr(1)]);
        // One interval later nobody has progressed since 60 s: device 1 does
        // not serve, device 2 takes the free grant.
        assert_eq!(go(2, 10, 130), vec![addr(0), addr(1)]);
        assert!(granted(2, 130));
        // It keeps it while it downloads, from the origin (which announces
        // again before its entry expires at 180 s).
        announce_at(&s, t0, 0, 0, 150, true);
        assert_eq!(go(2, 4, 190), vec![addr(0), addr(1)]);

        // A seeder that serves: device 4 progresses every interval, so
        // device 3, stalled, waits for the devices, up to
        // STARVED_DESPITE_SEEDERS_AFTER intervals.
        let s = store_with_origin(t0);
        let go = |n: u8, left: u64, at: u64| announce_at(&s, t0, n, left, at, false).contains(&addr(0));
        assert!(go(1, 10, 0));
        assert!(!go(1, 0, 1), "a seeder never gets the origin");
        assert!(!go(4, 100, 1));
        assert!(!go(3, 100, 2), "first announce: the seeder is believed to serve");
        let origin_alive = |at: u64| announce_at(&s, t0, 0, 0, at, true);
        for k in 1..4 {
            origin_alive(60 * k);
            go(1, 0, 60 * k);
            assert!(!go(4, 100 - k, 60 * k + 1));
            assert!(!go(3, 100, 60 * k + 2), "interval {k}: the swarm progresses");
        }
        origin_alive(230);
        go(1, 0, 230);
        assert!(!go(4, 90, 235));
        assert!(go(3, 100, 236), "4 intervals without progress: starved despite seeders");
    }

    #[test]
    fn swarm_lifecycle_counts_and_expires() {
        let t0 = Instant::now();
        let s = PeerStore::new(StoreConfig::default());
        s.register(IH);
        s.announce(&announce(0, 0, AnnounceEvent::Started), addr(0), true, t0)
            .unwrap();
        let first = s
            .announce(&announce(1, 10, AnnounceEvent::Started), addr(1), false, t0)
            .unwrap();
        assert_eq!(first.peers.iter().map(|p| p.addr).collect::<Vec<_>>(), vec![addr(0)]);
        let second = s
            .announce(&announce(2, 10, AnnounceEvent::Started), addr(2), false, t0)
            .unwrap();
        assert_eq!(second.peers.iter().map(|p| p.addr).collect::<Vec<_>>(), vec![addr(1)]);
        assert_eq!(
            s.origin_peers(&IH).iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![addr(0)]
        );
        // Peer 1 finishes without sending `completed` (librqbit never does).
        s.announce(&announce(1, 0, AnnounceEvent::None), addr(1), false, t0)
            .unwrap();
        assert_eq!(
            s.scrape(&IH).unwrap(),
            ScrapeStats {
                complete: 2,
                downloaded: 1,
                incomplete: 1
            }
        );
        s.announce(&announce(2, 10, AnnounceEvent::Stopped), addr(2), false, t0)
            .unwrap();
        assert_eq!(s.scrape(&IH).unwrap().incomplete, 0);
        s.expire(t0 + Duration::from_secs(181));
        assert_eq!(s.peer_count(), 0);
    }

    #[test]
    fn changes_list_announced_stopped_and_expired_peers_once() {
        let t0 = Instant::now();
        let s = PeerStore::new(StoreConfig::default());
        s.register(IH);
        assert!(s.take_changes(t0).is_empty());
        s.announce(&announce(1, 10, AnnounceEvent::Started), addr(1), false, t0)
            .unwrap();
        s.announce(&announce(2, 10, AnnounceEvent::Started), addr(2), false, t0)
            .unwrap();
        let t1 = t0 + Duration::from_secs(5);
        let c = s.take_changes(t1);
        assert!(!c.full);
        assert_eq!(c.upserts.len(), 2);
        assert!(c
            .upserts
            .iter()
            .all(|r| r.age == Duration::from_secs(5) && r.left == 10));
        assert!(c.removals.is_empty() && c.downloaded.is_empty());
        assert!(s.take_changes(t1).is_empty(), "changes are handed out once");

        s.announce(&announce(1, 0, AnnounceEvent::None), addr(1), false, t1)
            .unwrap();
        s.announce(&announce(2, 10, AnnounceEvent::Stopped), addr(2), false, t1)
            .unwrap();
        let c = s.take_changes(t1);
        assert_eq!(c.upserts.iter().map(|r| r.peer_id.0[0]).collect::<Vec<_>>(), vec![1]);
        assert_eq!(c.removals, vec![(IH, PeerId([2; 20]))]);
        assert_eq!(c.downloaded, vec![(IH, 1)]);

        s.expire(t1 + Duration::from_secs(181));
        let c = s.take_changes(t1);
        assert_eq!(c.removals, vec![(IH, PeerId([1; 20]))]);

        s.announce(&announce(3, 10, AnnounceEvent::Started), addr(3), false, t1)
            .unwrap();
        s.mark_full_resync();
        let c = s.take_changes(t1);
        assert!(c.full);
        assert_eq!(c.upserts.len(), 1);
        assert_eq!(c.downloaded, vec![(IH, 1)]);
    }

    #[test]
    fn restored_peers_keep_their_age_and_policy_state() {
        let t0 = Instant::now() + Duration::from_secs(1000);
        let s = PeerStore::new(StoreConfig::default());
        s.register(IH);
        let rec = |n: u8, age: u64| PeerRecord {
            info_hash: IH,
            peer_id: PeerId([n; 20]),
            addr: addr(n),
            left: if n == 0 { 0 } else { 10 },
            stalled: 1,
            is_origin: n == 0,
            granted: n == 1,
            verified: true,
            device: Some(format!("dev-{n}")),
            lan: None,
            age: Duration::from_secs(age),
        };
        assert!(s.restore(&rec(0, 10), t0));
        assert!(s.restore(&rec(1, 170), t0));
        assert!(!s.restore(&rec(2, 181), t0), "older than the peer timeout");
        let mut other = rec(3, 0);
        other.info_hash = InfoHash([8; 20]);
        assert!(!s.restore(&other, t0), "unregistered swarm");
        assert!(s.restore_downloaded(&IH, 4));
        assert!(s.take_changes(t0).is_empty(), "restored rows are already stored");
        assert_eq!(
            s.scrape(&IH).unwrap(),
            ScrapeStats {
                complete: 1,
                downloaded: 4,
                incomplete: 1
            }
        );
        let listed = s.peers(&IH, t0).unwrap();
        assert_eq!(listed, vec![rec(0, 10), rec(1, 170)]);
        // Peer 1 still holds the origin grant: a new leecher does not get the origin.
        let r = s
            .announce(&announce(4, 10, AnnounceEvent::Started), addr(4), false, t0)
            .unwrap();
        assert!(r.peers.iter().all(|p| p.addr != addr(0)), "{:?}", r.peers);
        // Expiry continues from the restored age.
        s.expire(t0 + Duration::from_secs(11));
        assert_eq!(s.peers(&IH, t0 + Duration::from_secs(11)).unwrap().len(), 2);
        assert!(s.peers(&InfoHash([8; 20]), t0).is_none());
    }

    /// Two stores as two tracker replicas: A holds the origin-grant lease and
    /// the origin, B reads A's peers through [`PeerStore::merge_remote`].
    fn two_replicas(t0: Instant) -> (PeerStore, PeerStore) {
        let config = StoreConfig {
            shared_grants: true,
            ..StoreConfig::default()
        };
        let (a, b) = (PeerStore::new(config), PeerStore::new(config));
        for s in [&a, &b] {
            s.register(IH);
        }
        assert_eq!(a.grant_wanted(), Vec::<InfoHash>::new(), "no leecher yet");
        a.announce(&announce(0, 0, AnnounceEvent::Started), addr(0), true, t0)
            .unwrap();
        a.announce(&announce(1, 10, AnnounceEvent::Started), addr(1), false, t0)
            .unwrap();
        assert_eq!(a.grant_wanted(), vec![IH]);
        assert_eq!(a.set_grant_leases(&HashSet::from([IH])), 1);
        (a, b)
    }

    #[test]
    fn remote_peers_are_handed_out_but_never_written_back() {
        let t0 = Instant::now();
        let (a, b) = two_replicas(t0);
        // Without the lease, A's first leecher got no grant.
        assert_eq!(a.peers(&IH, t0).unwrap().iter().filter(|r| r.granted).count(), 0);
        let got = announce_at(&a, t0, 1, 10, 1, false);
        assert_eq!(got, vec![addr(0)], "with the lease, the origin is granted");
        let t1 = t0 + Duration::from_secs(2);
        b.take_changes(t1);
        assert_eq!(b.merge_remote(&a.peers(&IH, t1).unwrap(), t1), 2);
        assert_eq!(b.scrape(&IH).unwrap().incomplete, 1);
        // B's leecher is handed A's peers, but not the origin: A's leecher
        // holds the one grant slot, and B holds no lease.
        let got = announce_at(&b, t0, 2, 10, 2, false);
        assert_eq!(got, vec![addr(1)]);
        assert!(b.grant_wanted() == vec![IH]);
        let c = b.take_changes(t1);
        assert_eq!(c.upserts.iter().map(|r| r.peer_id.0[0]).collect::<Vec<_>>(), vec![2]);
        b.mark_full_resync();
        let c = b.take_changes(t1);
        assert_eq!(c.upserts.len(), 1, "a full resync leaves remote rows out");
        // A's peers are gone from the database: B drops them, writes no removal.
        assert_eq!(b.merge_remote(&[], t1), 0);
        assert!(b.take_changes(t1).is_empty());
        assert_eq!(b.scrape(&IH).unwrap().incomplete, 1);
        check_swarm(&b, &IH);
    }

    #[test]
    fn only_the_lease_holder_grants_and_remote_grants_take_slots() {
        let t0 = Instant::now();
        let (a, b) = two_replicas(t0);
        let t1 = t0 + Duration::from_secs(1);
        // B holds the lease now, but A's leecher holds the one grant.
        announce_at(&a, t0, 1, 10, 1, false);
        assert_eq!(b.merge_remote(&a.peers(&IH, t1).unwrap(), t1), 2);
        assert_eq!(b.set_grant_leases(&HashSet::from([IH])), 1);
        assert!(!announce_at(&b, t0, 2, 10, 1, false).contains(&addr(0)));
        // A's leecher leaves: B may grant the origin to its own leecher.
        a.announce(&announce(1, 10, AnnounceEvent::Stopped), addr(1), false, t1)
            .unwrap();
        let t2 = t0 + Duration::from_secs(2);
        b.merge_remote(&a.peers(&IH, t2).unwrap(), t2);
        assert!(announce_at(&b, t0, 2, 10, 3, false).contains(&addr(0)));
        // A lost the lease: its new leecher is handed no origin.
        a.set_grant_leases(&HashSet::new());
        a.merge_remote(
            &b.peers(&IH, t2)
                .unwrap()
                .into_iter()
                .filter(|r| r.peer_id.0[0] == 2)
                .collect::<Vec<_>>(),
            t2,
        );
        assert!(!announce_at(&a, t0, 3, 10, 3, false).contains(&addr(0)));
        check_swarm(&a, &IH);
        check_swarm(&b, &IH);
    }

    #[test]
    fn a_seeder_that_completed_on_another_replica_counts_as_progress() {
        let t0 = Instant::now();
        let (a, b) = two_replicas(t0);
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // B's leecher joins; A's leecher completes at 50 s, B reads it at 55 s.
        announce_at(&b, t0, 2, 10, 0, false);
        announce_at(&a, t0, 1, 0, 50, false);
        b.merge_remote(&a.peers(&IH, at(55)).unwrap(), at(55));
        // One interval (60 s) on, B's leecher has not progressed, but a
        // device seeder appeared within it: the seeder is believed to serve
        // and the origin is held back, as on one tracker.
        let got = announce_at(&b, t0, 2, 10, 61, false);
        assert!(got.contains(&addr(1)) && !got.contains(&addr(0)), "{got:?}");
        // Another interval without progress anywhere: the origin comes back.
        announce_at(&a, t0, 1, 0, 110, false);
        b.merge_remote(&a.peers(&IH, at(120)).unwrap(), at(120));
        assert!(announce_at(&b, t0, 2, 10, 122, false).contains(&addr(0)));
    }

    #[test]
    fn a_peer_that_moved_here_is_not_replaced_by_its_old_row() {
        let t0 = Instant::now();
        let (a, b) = two_replicas(t0);
        let t1 = t0 + Duration::from_secs(10);
        let old = a.peers(&IH, t0).unwrap();
        // Peer 1 announces to B after A wrote its row.
        announce_at(&b, t0, 1, 5, 10, false);
        b.merge_remote(&old, t1);
        let listed = b.peers(&IH, t1).unwrap();
        let p1 = listed.iter().find(|r| r.peer_id == PeerId([1; 20])).unwrap();
        assert_eq!((p1.left, p1.age), (5, Duration::ZERO), "B's own, newer entry stays");
        assert_eq!(b.take_changes(t1).upserts.len(), 1, "and is still B's to write");
    }

    /// Checks a swarm's index, vectors and counters against a recount.
    fn check_swarm(s: &PeerStore, ih: &InfoHash) {
        let shard = s.shard(ih);
        let sw = &shard.swarms[ih];
        let mut n = 0;
        for (k, list) in [Kind::Origin, Kind::Seeder, Kind::Leecher]
            .into_iter()
            .zip(sw.lists.iter())
        {
            for (i, p) in list.iter().enumerate() {
                assert_eq!(sw.index[&p.id], Slot::new(k, i));
                assert_eq!(Kind::of(k == Kind::Origin, p.left, p.verified()), k);
                n += 1;
            }
        }
        assert_eq!(n, sw.index.len());
        assert_eq!(sw.grants as usize, sw.all().filter(|(_, p)| p.holds_grant()).count());
        let complete = sw.all().filter(|(_, p)| p.left == 0).count() as u32;
        assert_eq!(sw.stats().complete, complete);
    }

    #[test]
    fn random_announces_keep_index_counters_and_changes_consistent() {
        // A small LCG keeps the sequence reproducible without a seeded RNG type.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        let t0 = Instant::now();
        let config = StoreConfig {
            max_peers_per_swarm: 40,
            ..StoreConfig::default()
        };
        let s = PeerStore::new(config);
        s.register(IH);
        // Model of the live peers: id -> (left, is_origin, last announce second).
        let mut model: HashMap<u8, (u64, bool, u64)> = HashMap::new();
        let mut mirror: HashMap<PeerId, PeerRecord> = HashMap::new();
        let mut sec = 0;
        for step in 0..5000 {
            sec += next(3);
            let now = t0 + Duration::from_secs(sec);
            let id = next(50) as u8;
            let origin = id < 2;
            let event = match next(10) {
                0 => AnnounceEvent::Stopped,
                1 => AnnounceEvent::Completed,
                2 => AnnounceEvent::Started,
                _ => AnnounceEvent::None,
            };
            let left = if origin || next(3) == 0 { 0 } else { next(1000) + 1 };
            let mut req = announce(id, left, event);
            req.numwant = next(60) as usize;
            let live = |m: &(u64, bool, u64)| sec - m.2 <= 180;
            let known = model.get(&id).is_some_and(live);
            let count = model.values().filter(|m| live(m)).count();
            match s.announce(&req, addr(id), origin, now) {
                Ok(r) => {
                    if event == AnnounceEvent::Stopped {
                        model.remove(&id);
                    } else {
                        model.insert(id, (left, origin, sec));
                        if !origin {
                            assert!(r.peers.len() <= req.numwant);
                            let ids: HashSet<PeerId> = r.peers.iter().map(|p| p.peer_id).collect();
                            assert_eq!(ids.len(), r.peers.len(), "no peer twice");
                            for p in &r.peers {
                                let m = model.get(&p.peer_id.0[0]).expect("handed-out peer is known");
                                assert!(p.peer_id.0[0] != id && live(m), "step {step}: stale or self");
                            }
                        }
                    }
                }
                Err(AnnounceError::Invalid("swarm", _)) => assert!(!known && count >= 40),
                Err(e) => panic!("{e}"),
            }
            if next(50) == 0 {
                s.expire(now);
                model.retain(|_, m| live(m));
                assert_eq!(s.peer_count(), model.len());
            }
            check_swarm(&s, &IH);
            if next(20) == 0 {
                let c = s.take_changes(now);
                for (_, id) in &c.removals {
                    mirror.remove(id);
                }
                // The database keeps the time of the last announce, not the age.
                for mut r in c.upserts {
                    r.age = (now - r.age).duration_since(t0);
                    mirror.insert(r.peer_id, r);
                }
                let listed: HashMap<PeerId, PeerRecord> =
                    s.peers(&IH, now).unwrap().into_iter().map(|r| (r.peer_id, r)).collect();
                for (id, r) in &listed {
                    let mut r = r.clone();
                    r.age = (now - r.age).duration_since(t0);
                    assert_eq!(
                        mirror.get(id),
                        Some(&r),
                        "step {step}: the mirror holds every live peer"
                    );
                }
                let stats = s.scrape(&IH).unwrap();
                assert!(stats.complete + stats.incomplete >= listed.len() as u32);
            }
        }
    }
}
