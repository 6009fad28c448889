//! The operator's cost/speed dial for one release: how fast the origin may
//! upload over BitTorrent, from the swarm's measured rates (issue 17).
//!
//! The tracker's hand-out decides *who* is handed the origin; this decides
//! *how much* the origin sends. Every origin byte is CDN egress, and a fast
//! origin that every starved device reaches pays for nearly a copy per
//! device (the `internet` lab runs sent 14.92 copies to 20 devices). The
//! dial holds the origin at the lowest rate that still gets every device
//! done by its deadline:
//!
//! - [`OriginGoal::Fastest`]: no limit (today's behaviour).
//! - [`OriginGoal::Cheapest`]: the floor rate ([`DialConfig::min_bps`])
//!   while anyone leeches: the origin seeds about one copy at that rate and
//!   the devices spread it.
//! - [`OriginGoal::CompleteWithin`]`(T)`: each device should be done within
//!   `T` of its first announce. The aggregate download rate the swarm needs
//!   is `Σ left_i / (T − age_i)` over the leechers (each device progressing
//!   evenly towards its own deadline, so late joiners get theirs); the
//!   devices supply `peer = received − origin` (both measured over the last
//!   [`DialConfig::window`]); the origin is allowed
//!   `margin × (needed − peer)`, never below the floor. A leecher past its
//!   deadline lifts the limit (to [`DialConfig::max_bps`], unlimited by
//!   default) until it is done.
//!
//! Pure logic: the caller feeds [`Dial::observe`] one [`SwarmSample`] per
//! poll (the tracker's peer list and the origin's upload counter), with
//! the time as a parameter; nothing here does I/O.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

pub use ota_proto::origin_goal::OriginGoal;

/// The dial's constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DialConfig {
    /// Floor of the origin's rate while anyone leeches, bytes/s (at least 1).
    pub min_bps: u64,
    /// Ceiling, bytes/s; `None` for unlimited.
    pub max_bps: Option<u64>,
    /// Factor on the missing rate (> 1 keeps a reserve for the error of
    /// the estimate).
    pub margin: f64,
    /// Span over which received and origin rates are measured.
    pub window: Duration,
}

impl Default for DialConfig {
    /// 2 MiB/s floor, no ceiling, margin 1.25, 10 s window.
    fn default() -> Self {
        DialConfig {
            min_bps: 2 << 20,
            max_bps: None,
            margin: 1.25,
            window: Duration::from_secs(10),
        }
    }
}

/// One leecher or device seeder as the tracker lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmPeer {
    /// Its peer id, hex (any stable key).
    pub id: String,
    /// Bytes it still misses; 0 for a seeder.
    pub left: u64,
}

/// The swarm at one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmSample {
    /// Time of the poll, on any monotonic clock the caller keeps.
    pub at: Duration,
    /// The devices listed (the origin left out).
    pub peers: Vec<SwarmPeer>,
    /// Bytes the origin uploaded for this release over BitTorrent so far
    /// (a counter that only grows; a smaller value restarts the count).
    pub origin_uploaded: u64,
}

/// What the dial allows the origin for one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Nobody leeches: no rate is needed.
    Idle,
    /// At most this many bytes/s.
    Limited(u64),
    /// No limit.
    Unlimited,
}

impl Allowance {
    /// Sums the allowances of the releases one session uploads for (the
    /// session-wide limit is librqbit's only one it can change while
    /// running): unlimited if any is, `None` when all are idle.
    pub fn total(all: impl IntoIterator<Item = Allowance>) -> Option<Allowance> {
        let mut sum: Option<u64> = None;
        for a in all {
            match a {
                Allowance::Idle => {}
                Allowance::Unlimited => return Some(Allowance::Unlimited),
                Allowance::Limited(b) => sum = Some(sum.unwrap_or(0).saturating_add(b)),
            }
        }
        sum.map(Allowance::Limited)
    }
}

/// The dial's reading at one poll, for logs, metrics and the experiment
/// records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// What the origin is allowed.
    pub allowance: Allowance,
    /// Aggregate rate the leechers need to meet their deadlines, bytes/s
    /// (`CompleteWithin` only, else 0).
    pub needed_bps: f64,
    /// Bytes/s the devices received over the window.
    pub received_bps: f64,
    /// Bytes/s the origin sent over the window.
    pub origin_bps: f64,
    /// Leechers listed.
    pub leechers: usize,
}

/// The per-release dial: remembers when each device was first seen and the
/// last window of samples.
#[derive(Debug)]
pub struct Dial {
    goal: OriginGoal,
    config: DialConfig,
    first_seen: HashMap<String, Duration>,
    last_left: HashMap<String, u64>,
    /// (time, cumulative bytes received by devices, origin counter).
    history: VecDeque<(Duration, u64, u64)>,
    received: u64,
    origin_base: u64,
    origin_last: u64,
    last: Allowance,
}

impl Dial {
    /// A dial for `goal` with no history.
    pub fn new(goal: OriginGoal, config: DialConfig) -> Self {
        Dial {
            goal,
            config,
            first_seen: HashMap::new(),
            last_left: HashMap::new(),
            history: VecDeque::new(),
            received: 0,
            origin_base: 0,
            origin_last: 0,
            last: Allowance::Idle,
        }
    }

    /// The allowance of the last [`Self::observe`] ([`Allowance::Idle`] before the first).
    pub fn allowance(&self) -> Allowance {
        self.last
    }

    /// Whether the last poll saw leechers.
    pub fn is_busy(&self) -> bool {
        self.last != Allowance::Idle
    }

    /// What the goal allows a first leecher before any rate is measured:
    /// unlimited (or the ceiling) for `Fastest`, the floor otherwise. The
    /// seeder applies it while every release is idle, so a new flash crowd
    /// starts under its goal before the next poll.
    pub fn idle_allowance(&self) -> Allowance {
        match self.goal {
            OriginGoal::Fastest => self.unlimited(),
            _ => self.capped(self.floor()),
        }
    }

    /// The floor, bytes/s (at least 1).
    fn floor(&self) -> u64 {
        self.config.min_bps.max(1)
    }

    /// `bps` under the ceiling (never below the floor, unless the ceiling is).
    fn capped(&self, bps: u64) -> Allowance {
        match self.config.max_bps {
            Some(m) => Allowance::Limited(bps.min(m).max(self.floor().min(m))),
            None => Allowance::Limited(bps),
        }
    }

    /// No limit but the ceiling.
    fn unlimited(&self) -> Allowance {
        match self.config.max_bps {
            Some(m) => Allowance::Limited(m),
            None => Allowance::Unlimited,
        }
    }

    /// The goal this dial follows.
    pub fn goal(&self) -> OriginGoal {
        self.goal
    }

    /// Changes the goal; the history stays.
    pub fn set_goal(&mut self, goal: OriginGoal) {
        self.goal = goal;
    }

    /// Takes one poll and says what the origin may send until the next.
    /// Received bytes are the drops in each device's `left` between polls
    /// (a device seen for the first time counts from its first `left`;
    /// one that left the list is forgotten).
    pub fn observe(&mut self, s: &SwarmSample) -> Reading {
        for p in &s.peers {
            self.first_seen.entry(p.id.clone()).or_insert(s.at);
            if let Some(before) = self.last_left.insert(p.id.clone(), p.left) {
                self.received += before.saturating_sub(p.left);
            }
        }
        let listed: std::collections::HashSet<&str> = s.peers.iter().map(|p| p.id.as_str()).collect();
        self.last_left.retain(|id, _| listed.contains(id.as_str()));
        self.first_seen.retain(|id, _| listed.contains(id.as_str()));
        if s.origin_uploaded < self.origin_last {
            // The counter restarted (torrent re-added): continue from here.
            self.origin_base += self.origin_last;
        }
        self.origin_last = s.origin_uploaded;
        let origin_total = self.origin_base + s.origin_uploaded;
        self.history.push_back((s.at, self.received, origin_total));
        while self
            .history
            .front()
            .is_some_and(|(t, _, _)| s.at.saturating_sub(*t) > self.config.window)
            && self.history.len() > 2
        {
            self.history.pop_front();
        }
        let (received_bps, origin_bps) = match (self.history.front(), self.history.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = (b.0 - a.0).as_secs_f64();
                ((b.1 - a.1) as f64 / dt, b.2.saturating_sub(a.2) as f64 / dt)
            }
            _ => (0.0, 0.0),
        };
        let leechers: Vec<&SwarmPeer> = s.peers.iter().filter(|p| p.left > 0).collect();
        let floor = self.floor();
        let mut needed_bps = 0.0;
        let allowance = if leechers.is_empty() {
            Allowance::Idle
        } else {
            match self.goal {
                OriginGoal::Fastest => self.unlimited(),
                OriginGoal::Cheapest => self.capped(floor),
                OriginGoal::CompleteWithin(target) => {
                    let mut late = false;
                    for p in &leechers {
                        let age = s.at.saturating_sub(self.first_seen[&p.id]);
                        match target.checked_sub(age).filter(|r| !r.is_zero()) {
                            Some(rest) => needed_bps += p.left as f64 / rest.as_secs_f64(),
                            None => late = true,
                        }
                    }
                    if late {
                        self.unlimited()
                    } else {
                        let peer_bps = (received_bps - origin_bps).max(0.0);
                        let missing = (needed_bps - peer_bps).max(0.0) * self.config.margin;
                        self.capped((missing as u64).max(floor))
                    }
                }
            }
        };
        self.last = allowance;
        Reading {
            allowance,
            needed_bps,
            received_bps,
            origin_bps,
            leechers: leechers.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    fn sample(at_s: u64, lefts: &[(&str, u64)], origin: u64) -> SwarmSample {
        SwarmSample {
            at: Duration::from_secs(at_s),
            peers: lefts
                .iter()
                .map(|(id, left)| SwarmPeer {
                    id: id.to_string(),
                    left: *left,
                })
                .collect(),
            origin_uploaded: origin,
        }
    }

    fn cfg() -> DialConfig {
        DialConfig {
            min_bps: MB,
            max_bps: None,
            margin: 1.0,
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn an_idle_swarm_needs_nothing_and_seeders_do_not_count() {
        let mut d = Dial::new(OriginGoal::Cheapest, cfg());
        assert_eq!(d.observe(&sample(0, &[], 0)).allowance, Allowance::Idle);
        assert_eq!(d.observe(&sample(1, &[("a", 0)], 0)).allowance, Allowance::Idle);
        assert_eq!(
            d.observe(&sample(2, &[("a", 0), ("b", 5)], 0)).allowance,
            Allowance::Limited(MB)
        );
    }

    #[test]
    fn fastest_is_unlimited_unless_capped() {
        let mut d = Dial::new(OriginGoal::Fastest, cfg());
        assert_eq!(d.observe(&sample(0, &[("a", 5)], 0)).allowance, Allowance::Unlimited);
        let mut d = Dial::new(
            OriginGoal::Fastest,
            DialConfig {
                max_bps: Some(7 * MB),
                ..cfg()
            },
        );
        assert_eq!(
            d.observe(&sample(0, &[("a", 5)], 0)).allowance,
            Allowance::Limited(7 * MB)
        );
    }

    /// A recorded trace shape: 4 devices join with 80 MB each, a 60 s
    /// target. At first nobody has received anything, so the origin must
    /// cover the whole need (4 × 80 MB / 60 s ≈ 5.33 MB/s); once the
    /// devices serve each other at 8 MB/s of which the origin sent 1, the
    /// missing rate falls below the floor.
    #[test]
    fn within_asks_the_origin_only_for_what_the_peers_do_not_supply() {
        let mut d = Dial::new(OriginGoal::CompleteWithin(Duration::from_secs(60)), cfg());
        let ids = ["a", "b", "c", "d"];
        let at0: Vec<(&str, u64)> = ids.iter().map(|i| (*i, 80 * MB)).collect();
        let r = d.observe(&sample(0, &at0, 0));
        assert!((r.needed_bps - 4.0 * 80e6 / 60.0).abs() < 1.0, "{r:?}");
        match r.allowance {
            Allowance::Limited(b) => assert!((5_333_000..5_334_000).contains(&b), "{b}"),
            other => panic!("{other:?}"),
        }
        // 10 s on: each received 20 MB (80 MB in all, 8 MB/s), the origin sent 10 MB.
        let at10: Vec<(&str, u64)> = ids.iter().map(|i| (*i, 60 * MB)).collect();
        let r = d.observe(&sample(10, &at10, 10 * MB));
        assert!(
            (r.received_bps - 8e6).abs() < 1.0 && (r.origin_bps - 1e6).abs() < 1.0,
            "{r:?}"
        );
        // needed: 4 × 60 MB / 50 s = 4.8 MB/s < peers' 7 MB/s: the floor.
        assert_eq!(r.allowance, Allowance::Limited(MB));
    }

    #[test]
    fn a_late_joiner_gets_its_own_deadline_and_a_late_device_lifts_the_limit() {
        let mut d = Dial::new(OriginGoal::CompleteWithin(Duration::from_secs(30)), cfg());
        d.observe(&sample(0, &[("a", 10 * MB)], 0));
        // "b" joins at 20 s: its deadline is 50 s, "a"'s 30 s.
        let r = d.observe(&sample(20, &[("a", 10 * MB), ("b", 30 * MB)], 0));
        assert!((r.needed_bps - (10e6 / 10.0 + 30e6 / 30.0)).abs() < 1.0, "{r:?}");
        // At 30 s "a" is still not done: unlimited until it is.
        let r = d.observe(&sample(30, &[("a", MB), ("b", 30 * MB)], 0));
        assert_eq!(r.allowance, Allowance::Unlimited);
        let r = d.observe(&sample(31, &[("a", 0), ("b", 30 * MB)], 0));
        assert!(matches!(r.allowance, Allowance::Limited(_)), "{r:?}");
        // The ceiling holds even then.
        let mut d = Dial::new(
            OriginGoal::CompleteWithin(Duration::from_secs(5)),
            DialConfig {
                max_bps: Some(3 * MB),
                ..cfg()
            },
        );
        d.observe(&sample(0, &[("a", 10 * MB)], 0));
        assert_eq!(
            d.observe(&sample(9, &[("a", 9 * MB)], 0)).allowance,
            Allowance::Limited(3 * MB)
        );
    }

    #[test]
    fn rates_are_measured_over_the_window_and_a_restarted_counter_is_not_negative() {
        let mut d = Dial::new(OriginGoal::Cheapest, cfg());
        d.observe(&sample(0, &[("a", 100 * MB)], 0));
        d.observe(&sample(5, &[("a", 90 * MB)], 5 * MB));
        // Samples older than the 10 s window fall out: from 15 s to 20 s,
        // 10 MB received, 5 MB of them from the origin.
        d.observe(&sample(15, &[("a", 70 * MB)], 15 * MB));
        let r = d.observe(&sample(20, &[("a", 60 * MB)], 20 * MB));
        assert!((r.received_bps - 2e6).abs() < 1.0, "{r:?}");
        assert!((r.origin_bps - 1e6).abs() < 1.0, "{r:?}");
        // The torrent was re-added: its counter starts again at 0.
        let r = d.observe(&sample(21, &[("a", 59 * MB)], 0));
        assert!(r.origin_bps >= 0.0 && r.origin_bps.is_finite(), "{r:?}");
        // A device that left and came back is counted from its new first sight.
        d.observe(&sample(22, &[], 0));
        let r = d.observe(&sample(23, &[("a", 59 * MB)], 0));
        assert_eq!(r.leechers, 1);
    }

    #[test]
    fn allowances_add_up_for_one_session() {
        use Allowance::*;
        assert_eq!(Allowance::total([Idle, Idle]), None);
        assert_eq!(Allowance::total([Idle, Limited(3), Limited(4)]), Some(Limited(7)));
        assert_eq!(Allowance::total([Limited(3), Unlimited, Idle]), Some(Unlimited));
        assert_eq!(
            Allowance::total([Limited(u64::MAX), Limited(1)]),
            Some(Limited(u64::MAX))
        );
    }
}
