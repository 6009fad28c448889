//! Connectability checks: before the tracker tells other devices that a
//! device is reachable at its public address, it dials that address itself
//! (a TCP handshake to the announced `ip:port`, closed at once) and keeps
//! the verdict for a while. Addresses it could not reach are not handed to
//! devices that would waste a connection attempt (and, behind a NAT, a
//! conntrack entry) on them; such a device still dials out to the peers it
//! can reach.
//!
//! The 2017 field study's tracker handed every phone the others' addresses
//! at the router's public address, forwarded or not; in this project's lab
//! that was dozens of dials into closed ports per run.
//!
//! [`VerdictCache`] is the pure part (what is known about which address,
//! when a new dial is due), driven by the caller's clock; [`Connectability`]
//! adds the dials (tokio, bounded in number and time).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ota_proto::direct_paths::Reach;

/// Settings of the connectability checks. [`Default`]: on, 2 s dial
/// timeout, a reachable verdict kept 10 min, an unreachable one 20 s, at
/// most 64 dials at once, at most 100,000 addresses remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectabilityConfig {
    /// Whether addresses are checked at all; off, every address counts as
    /// reachable (a plain tracker, the `bittorrent-baseline` mode).
    pub enabled: bool,
    /// How long one dial may take before the address counts as unreachable.
    pub timeout: Duration,
    /// How long a reachable verdict is believed.
    pub reachable_ttl: Duration,
    /// How long an unreachable verdict is believed (short: a device may map
    /// its port over UPnP, or its router may be fixed, a moment later).
    pub unreachable_ttl: Duration,
    /// Most dials under way at once; an address that finds no free slot is
    /// tried at its next announce.
    pub max_in_flight: usize,
    /// Most addresses remembered; past it, expired verdicts are dropped,
    /// then new addresses are not checked until room is made.
    pub max_entries: usize,
}

impl Default for ConnectabilityConfig {
    fn default() -> Self {
        ConnectabilityConfig {
            enabled: true,
            timeout: Duration::from_secs(2),
            reachable_ttl: Duration::from_secs(600),
            unreachable_ttl: Duration::from_secs(20),
            max_in_flight: 64,
            max_entries: 100_000,
        }
    }
}

/// What is known about one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A dial started at `since` is under way; `last` is the verdict of the
    /// dial before it, which holds until this one ends (a re-check does not
    /// make a known address unknown).
    Dialling {
        since: Instant,
        last: Option<(bool, Instant)>,
    },
    /// The last dial, finished at this instant, reached it or not.
    Known { reachable: bool, at: Instant },
}

/// The verdicts, by address. Pure: every method takes the time.
#[derive(Debug)]
pub struct VerdictCache {
    config: ConnectabilityConfig,
    entries: HashMap<SocketAddr, State>,
}

impl VerdictCache {
    /// An empty cache.
    pub fn new(config: ConnectabilityConfig) -> Self {
        VerdictCache {
            config,
            entries: HashMap::new(),
        }
    }

    /// The verdict on `addr` that still holds at `now`: `Some(true)`
    /// reachable, `Some(false)` not, `None` unknown (never dialled, expired
    /// with no re-dial, or a first dial under way). While a re-dial runs the
    /// previous verdict holds.
    pub fn verdict(&self, addr: SocketAddr, now: Instant) -> Option<bool> {
        match self.entries.get(&addr)? {
            State::Known { reachable, at } if now.saturating_duration_since(*at) <= self.ttl(*reachable) => {
                Some(*reachable)
            }
            State::Dialling { since, last } if now.saturating_duration_since(*since) <= self.config.timeout * 2 => {
                last.map(|(reachable, _)| reachable)
            }
            _ => None,
        }
    }

    fn ttl(&self, reachable: bool) -> Duration {
        if reachable {
            self.config.reachable_ttl
        } else {
            self.config.unreachable_ttl
        }
    }

    /// Whether a dial of `addr` should start at `now`, and if so notes it as
    /// under way: no verdict that still holds, no dial under way (a dial
    /// counts as lost after twice the timeout), and room in the cache.
    pub fn begin(&mut self, addr: SocketAddr, now: Instant) -> bool {
        let (due, last) = match self.entries.get(&addr) {
            None => (true, None),
            Some(State::Dialling { since, last }) => {
                (now.saturating_duration_since(*since) > self.config.timeout * 2, *last)
            }
            Some(State::Known { reachable, at }) => (
                now.saturating_duration_since(*at) > self.ttl(*reachable),
                Some((*reachable, *at)),
            ),
        };
        if !due {
            return false;
        }
        if !self.entries.contains_key(&addr) && self.entries.len() >= self.config.max_entries {
            self.evict(now);
            if self.entries.len() >= self.config.max_entries {
                return false;
            }
        }
        self.entries.insert(addr, State::Dialling { since: now, last });
        true
    }

    /// Notes the outcome of a dial that finished at `now`.
    pub fn record(&mut self, addr: SocketAddr, reachable: bool, now: Instant) {
        self.entries.insert(addr, State::Known { reachable, at: now });
    }

    /// Forgets that a dial of `addr` was under way (it could not start).
    pub fn abandon(&mut self, addr: SocketAddr) {
        if let Some(State::Dialling { last, .. }) = self.entries.get(&addr).copied() {
            match last {
                // The earlier verdict is back, as if no re-dial had been tried.
                Some((reachable, at)) => {
                    self.entries.insert(addr, State::Known { reachable, at });
                }
                None => {
                    self.entries.remove(&addr);
                }
            }
        }
    }

    /// Drops every expired verdict and lost dial.
    pub fn evict(&mut self, now: Instant) {
        let lost = self.config.timeout * 2;
        let (r_ttl, u_ttl) = (self.config.reachable_ttl, self.config.unreachable_ttl);
        self.entries.retain(|_, s| match *s {
            State::Dialling { since, .. } => now.saturating_duration_since(since) <= lost,
            State::Known { reachable, at } => {
                now.saturating_duration_since(at) <= if reachable { r_ttl } else { u_ttl }
            }
        });
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The checks of one tracker: the cache and the dials.
#[derive(Debug)]
pub struct Connectability {
    config: ConnectabilityConfig,
    cache: Mutex<VerdictCache>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Connectability {
    /// Checks with `config`.
    pub fn new(config: ConnectabilityConfig) -> Arc<Self> {
        Arc::new(Connectability {
            config,
            cache: Mutex::new(VerdictCache::new(config)),
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
        })
    }

    /// Whether checks are on.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, VerdictCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `addr` may be handed out now: with checks off always; with
    /// checks on only after a dial reached it (within the reachable TTL).
    pub fn reachable(&self, addr: SocketAddr) -> bool {
        !self.config.enabled || self.cache().verdict(addr, Instant::now()) == Some(true)
    }

    /// How a peer at public address `addr`, with a LAN address or not, is
    /// reached (the swarm view's column).
    pub fn reach(&self, addr: SocketAddr, has_lan: bool) -> Reach {
        if !self.config.enabled {
            return Reach::Public;
        }
        match self.cache().verdict(addr, Instant::now()) {
            Some(true) => Reach::Public,
            Some(false) if has_lan => Reach::LanOnly,
            Some(false) => Reach::Unreachable,
            None => Reach::Unknown,
        }
    }

    /// Starts a dial of `addr` in the background when one is due (see
    /// [`VerdictCache::begin`]) and a dial slot is free; returns at once.
    /// Outside a tokio runtime nothing is dialled. The dial is a TCP
    /// handshake bounded by the timeout; the connection is closed at once.
    pub fn check(self: &Arc<Self>, addr: SocketAddr) {
        if !self.config.enabled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.cache().begin(addr, Instant::now()) {
            return;
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.cache().abandon(addr);
            metrics::counter!("ota_tracker_connectability_checks_total", "result" => "no-slot").increment(1);
            return;
        };
        let me = self.clone();
        runtime.spawn(async move {
            let _permit = permit;
            let reachable = matches!(
                tokio::time::timeout(me.config.timeout, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            );
            me.cache().record(addr, reachable, Instant::now());
            let result = if reachable { "reachable" } else { "unreachable" };
            metrics::counter!("ota_tracker_connectability_checks_total", "result" => result).increment(1);
            tracing::debug!(%addr, reachable, "connectability check");
        });
    }

    /// Waits until no dial is under way, at most `limit` (for tests and
    /// for a shutdown that wants the cache settled).
    pub async fn settle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let all = self.config.max_in_flight.max(1) as u32;
        let _ = tokio::time::timeout_at(deadline, self.slots.acquire_many(all)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u16) -> SocketAddr {
        SocketAddr::from(([11, 0, 1, 1], n))
    }

    #[test]
    fn verdicts_expire_and_dials_are_not_repeated() {
        let c = ConnectabilityConfig {
            max_entries: 2,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut v = VerdictCache::new(c);
        assert_eq!(v.verdict(a(1), t0), None);
        assert!(v.begin(a(1), t0));
        assert!(!v.begin(a(1), t0 + Duration::from_secs(1)), "a dial is under way");
        assert_eq!(v.verdict(a(1), t0), None);
        v.record(a(1), true, t0 + Duration::from_secs(1));
        assert_eq!(v.verdict(a(1), t0 + Duration::from_secs(60)), Some(true));
        assert!(!v.begin(a(1), t0 + Duration::from_secs(60)));
        // An unreachable verdict is short-lived.
        assert!(v.begin(a(2), t0));
        v.record(a(2), false, t0);
        assert_eq!(v.verdict(a(2), t0 + Duration::from_secs(19)), Some(false));
        assert!(v.begin(a(2), t0 + Duration::from_secs(21)));
        assert_eq!(
            v.verdict(a(2), t0 + Duration::from_secs(22)),
            Some(false),
            "a re-dial keeps the old verdict"
        );
        // A lost dial (no outcome after twice the timeout) is redone.
        assert!(!v.begin(a(2), t0 + Duration::from_secs(24)));
        assert!(v.begin(a(2), t0 + Duration::from_secs(26)));
        // Full: a new address waits until an old verdict expires.
        assert!(!v.begin(a(3), t0 + Duration::from_secs(26)));
        v.record(a(2), false, t0 + Duration::from_secs(26));
        assert!(
            v.begin(a(3), t0 + Duration::from_secs(50)),
            "a(2) expired and was dropped"
        );
        assert_eq!(v.len(), 2);
        v.abandon(a(3));
        assert_eq!(v.len(), 1);
        assert_eq!(
            v.verdict(a(1), t0 + Duration::from_secs(602)),
            None,
            "reachable verdicts last 10 min"
        );
        assert!(v.begin(a(1), t0 + Duration::from_secs(602)));
    }

    #[tokio::test]
    async fn a_listening_port_is_reachable_and_a_closed_one_is_not() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_addr = open.local_addr().unwrap();
        let closed_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let c = Connectability::new(ConnectabilityConfig::default());
        assert!(!c.reachable(open_addr), "unknown until dialled");
        assert_eq!(c.reach(open_addr, false), Reach::Unknown);
        c.check(open_addr);
        c.check(closed_addr);
        c.settle(Duration::from_secs(5)).await;
        assert!(c.reachable(open_addr));
        assert!(!c.reachable(closed_addr));
        assert_eq!(c.reach(closed_addr, true), Reach::LanOnly);
        assert_eq!(c.reach(closed_addr, false), Reach::Unreachable);
        let off = Connectability::new(ConnectabilityConfig {
            enabled: false,
            ..Default::default()
        });
        assert!(off.reachable(closed_addr));
    }
}
