//! Rendezvous for hole punching, the pure part: what one side of an
//! introduction is told about the other ([`introduction`], the candidate
//! order of [`candidates`]) and how often a device may ask for
//! introductions ([`IntroductionLimiter`]). The service
//! (`POST /api/introductions`) looks the two sides up and pushes; the
//! types and the device's checks are in [`ota_proto::rendezvous`].
//!
//! Pure: no I/O, the caller passes the clock.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_proto::direct_paths::DirectPaths;
use ota_proto::rendezvous::{Introduction, MAX_CANDIDATES};
use ota_proto::InfoHash;

/// Introductions one device may ask for per [`INTRODUCTION_WINDOW`].
pub const INTRODUCTIONS_PER_WINDOW: usize = 30;

/// The sliding window of [`INTRODUCTIONS_PER_WINDOW`].
pub const INTRODUCTION_WINDOW: Duration = Duration::from_secs(60);

/// Shortest time between two introductions of the same caller to the same
/// target (a bridge that retries at once gets 429, not a second push).
pub const PAIR_INTERVAL: Duration = Duration::from_secs(2);

/// One side of an introduction as the tracker knows it.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// Its public addresses as the tracker saw them, each with the port it
    /// announced (one per live peer entry of the swarm: at most one per
    /// address family).
    pub public: &'a [SocketAddr],
    /// Its device's last direct-paths report (`PUT /api/paths`).
    pub paths: &'a DirectPaths,
}

impl Side<'_> {
    /// Whether both sides were seen at one public IP (behind one NAT).
    fn shares_public_ip(&self, other: &Side<'_>) -> bool {
        self.public.iter().any(|a| {
            other
                .public
                .iter()
                .any(|b| a.ip().to_canonical() == b.ip().to_canonical())
        })
    }
}

/// Whether `addr` passes [`Introduction::check`] as a candidate (one source
/// of truth for what a device accepts).
fn acceptable(addr: SocketAddr) -> bool {
    Introduction {
        id: 0,
        info_hash: InfoHash([0; 20]),
        candidates: vec![addr],
        fingerprint: ota_proto::rendezvous::CertFingerprint([0; 32]),
        nat: None,
        origin: false,
    }
    .check()
    .is_ok()
}

/// Where side `y` should send to reach side `x`, best first, at most
/// [`MAX_CANDIDATES`], without duplicates and without any address
/// [`Introduction::check`] would refuse (loopback, port 0, …): `x`'s LAN
/// addresses when both were seen at one public IP; then its UPnP-mapped
/// address (`paths.mapped`); then its server-reflexive address
/// (`paths.nat.reflexive`, RFC 8489); then its public addresses as the
/// tracker saw them, with its announced ports.
pub fn candidates(x: &Side<'_>, y: &Side<'_>) -> Vec<SocketAddr> {
    let lan = if x.shares_public_ip(y) { &x.paths.lan[..] } else { &[] };
    let mut out: Vec<SocketAddr> = Vec::with_capacity(MAX_CANDIDATES);
    let ordered = lan
        .iter()
        .copied()
        .chain(x.paths.mapped)
        .chain(x.paths.nat.and_then(|n| n.reflexive))
        .chain(x.public.iter().copied());
    for c in ordered {
        if out.len() == MAX_CANDIDATES {
            break;
        }
        if !out.contains(&c) && acceptable(c) {
            out.push(c);
        }
    }
    out
}

/// Side `x`'s [`Introduction`] for side `y` (number `id`, swarm
/// `info_hash`): [`candidates`]`(x, y)`, `x`'s certificate fingerprint and
/// its NAT kind. `None` when `x` reported no QUIC endpoint or has no
/// acceptable candidate. The result passes [`Introduction::check`].
pub fn introduction(id: u64, info_hash: InfoHash, x: &Side<'_>, y: &Side<'_>) -> Option<Introduction> {
    let quic = x.paths.quic?;
    let intro = Introduction {
        id,
        info_hash,
        candidates: candidates(x, y),
        fingerprint: quic.fingerprint,
        nat: x.paths.nat.map(|n| n.kind),
        origin: false,
    };
    intro.check().is_ok().then_some(intro)
}

/// Which limit refused an introduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    /// The caller had [`INTRODUCTIONS_PER_WINDOW`] in the last
    /// [`INTRODUCTION_WINDOW`].
    #[error("at most {INTRODUCTIONS_PER_WINDOW} introductions per {} s", INTRODUCTION_WINDOW.as_secs())]
    Caller,
    /// The caller asked for the same target less than [`PAIR_INTERVAL`] ago.
    #[error("at most one introduction to the same peer per {} s", PAIR_INTERVAL.as_secs())]
    Pair,
}

/// The introduction rate limits: per calling device, at most
/// [`INTRODUCTIONS_PER_WINDOW`] in any [`INTRODUCTION_WINDOW`] (a sliding
/// window) and one per (caller, target) pair per [`PAIR_INTERVAL`]. Only
/// introductions made count (refused ones do not). Memory: at most
/// [`INTRODUCTIONS_PER_WINDOW`] instants per device that asked in the last
/// window and one per pair of the last [`PAIR_INTERVAL`]; older entries are
/// swept at most once per [`PAIR_INTERVAL`].
#[derive(Debug, Default)]
pub struct IntroductionLimiter {
    /// Caller → the instants of its introductions in the window, oldest first.
    by_caller: HashMap<Arc<str>, VecDeque<Instant>>,
    /// (caller, target) → its last introduction.
    by_pair: HashMap<(Arc<str>, Arc<str>), Instant>,
    last_sweep: Option<Instant>,
}

impl IntroductionLimiter {
    /// No introductions yet.
    pub fn new() -> Self {
        IntroductionLimiter::default()
    }

    /// Whether `caller` may be introduced to `target` at `now`; when it may,
    /// the introduction is counted.
    ///
    /// Errors: the [`Limited`] that refuses it (nothing is counted).
    pub fn allow(&mut self, caller: &Arc<str>, target: &Arc<str>, now: Instant) -> Result<(), Limited> {
        self.sweep(now);
        let pair = (caller.clone(), target.clone());
        if self
            .by_pair
            .get(&pair)
            .is_some_and(|last| now.saturating_duration_since(*last) < PAIR_INTERVAL)
        {
            return Err(Limited::Pair);
        }
        let times = self.by_caller.entry(caller.clone()).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= INTRODUCTION_WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= INTRODUCTIONS_PER_WINDOW {
            return Err(Limited::Caller);
        }
        times.push_back(now);
        self.by_pair.insert(pair, now);
        Ok(())
    }

    /// Entries kept now (callers plus pairs), for tests.
    pub fn entries(&self) -> usize {
        self.by_caller.len() + self.by_pair.len()
    }

    /// Drops what can no longer refuse anything, at most once per
    /// [`PAIR_INTERVAL`].
    fn sweep(&mut self, now: Instant) {
        if !sweep_due(&mut self.last_sweep, now) {
            return;
        }
        self.by_pair
            .retain(|_, last| now.saturating_duration_since(*last) < PAIR_INTERVAL);
        self.by_caller.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.saturating_duration_since(*t) < INTRODUCTION_WINDOW)
        });
    }
}

/// Whether a sweep is due at `now`: none yet, or the last (`last`) at least
/// [`PAIR_INTERVAL`] ago; when due, `last` becomes `now`.
fn sweep_due(last: &mut Option<Instant>, now: Instant) -> bool {
    if last.is_some_and(|t| now.saturating_duration_since(t) < PAIR_INTERVAL) {
        return false;
    }
    *last = Some(now);
    true
}

/// How long the tracker remembers that two devices were introduced, for
/// telling one of them where the other went ([`Acquaintances`]): the
/// bridge's pin lifetime (`BridgeSettings::pin_ttl`, 10 min), after which
/// the pair needs a new introduction anyway.
pub const ACQUAINTANCE_TTL: Duration = Duration::from_secs(600);

/// Most pairs [`Acquaintances`] keeps (about 100 bytes each); beyond it the
/// oldest pair is forgotten.
pub const MAX_ACQUAINTANCES: usize = 100_000;

/// Which devices were introduced to each other in which swarm, in the last
/// [`ACQUAINTANCE_TTL`]: when one of them moves (its direct paths change,
/// issue 16), the tracker pushes the others a new introduction with its
/// new candidates, so that an endpoint-independent NAT with
/// address-dependent filtering on their side (RFC 4787 §5) lets the moved
/// device's migrated QUIC packets in (RFC 9000 §9), and a peer whose QUIC
/// connection went to the old address can dial the new one. Memory: at
/// most [`MAX_ACQUAINTANCES`] pairs. Pure: the caller passes the clock.
#[derive(Debug, Default)]
pub struct Acquaintances {
    /// (lower device id, higher device id, swarm) → last introduction.
    pairs: HashMap<(Arc<str>, Arc<str>, InfoHash), Instant>,
    last_sweep: Option<Instant>,
}

impl Acquaintances {
    /// Nobody introduced yet.
    pub fn new() -> Self {
        Acquaintances::default()
    }

    /// Records that `a` and `b` were introduced in swarm `info_hash` at
    /// `now` (either order; a device is never its own acquaintance).
    pub fn record(&mut self, a: &Arc<str>, b: &Arc<str>, info_hash: InfoHash, now: Instant) {
        if a == b {
            return;
        }
        self.sweep(now);
        if self.pairs.len() >= MAX_ACQUAINTANCES {
            if let Some(oldest) = self.pairs.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                self.pairs.remove(&oldest);
            }
        }
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        self.pairs.insert((lo.clone(), hi.clone(), info_hash), now);
    }

    /// The devices introduced to `device` within [`ACQUAINTANCE_TTL`] of
    /// `now`, each with the swarm, newest first.
    pub fn of(&self, device: &str, now: Instant) -> Vec<(Arc<str>, InfoHash)> {
        let mut out: Vec<(Instant, Arc<str>, InfoHash)> = self
            .pairs
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) < ACQUAINTANCE_TTL)
            .filter_map(|((lo, hi, ih), t)| {
                if &**lo == device {
                    Some((*t, hi.clone(), *ih))
                } else if &**hi == device {
                    Some((*t, lo.clone(), *ih))
                } else {
                    None
                }
            })
            .collect();
        out.sort_by_key(|x| std::cmp::Reverse(x.0));
        out.into_iter().map(|(_, d, ih)| (d, ih)).collect()
    }

    /// Pairs kept now.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no pair is kept.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Drops pairs older than [`ACQUAINTANCE_TTL`], at most once per
    /// [`PAIR_INTERVAL`].
    fn sweep(&mut self, now: Instant) {
        if !sweep_due(&mut self.last_sweep, now) {
            return;
        }
        self.pairs
            .retain(|_, t| now.saturating_duration_since(*t) < ACQUAINTANCE_TTL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_proto::nat_kind::{NatKind, NatReport};
    use ota_proto::rendezvous::{CertFingerprint, QuicPath};

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn paths(lan: &[&str], mapped: Option<&str>, reflexive: Option<&str>, quic: bool) -> DirectPaths {
        DirectPaths {
            lan: lan.iter().map(|s| a(s)).collect(),
            mapped: mapped.map(a),
            mapping_refusal: None,
            nat: reflexive.map(|r| NatReport {
                reflexive: Some(a(r)),
                mapping: None,
                filtering: None,
                kind: NatKind::Unknown,
            }),
            quic: quic.then_some(QuicPath {
                fingerprint: CertFingerprint([3; 32]),
            }),
        }
    }

    #[test]
    fn candidates_lan_first_only_behind_one_public_ip_then_mapped_reflexive_public() {
        let px = paths(
            &["192.168.1.2:40001"],
            Some("11.0.0.5:40001"),
            Some("11.0.0.5:50000"),
            true,
        );
        let py = paths(&["192.168.1.3:40001"], None, None, true);
        let x_public = [a("11.0.0.5:7001")];
        let x = Side {
            public: &x_public,
            paths: &px,
        };
        let same = [a("11.0.0.5:7002")];
        let other = [a("12.0.0.9:7002")];
        let y_home = Side {
            public: &same,
            paths: &py,
        };
        let y_away = Side {
            public: &other,
            paths: &py,
        };
        assert_eq!(
            candidates(&x, &y_home),
            vec![
                a("192.168.1.2:40001"),
                a("11.0.0.5:40001"),
                a("11.0.0.5:50000"),
                a("11.0.0.5:7001")
            ]
        );
        assert_eq!(
            candidates(&x, &y_away),
            vec![a("11.0.0.5:40001"), a("11.0.0.5:50000"), a("11.0.0.5:7001")],
            "LAN addresses only to a device behind the same public IP"
        );
        // The public address is not repeated when it is the reflexive one,
        // and loopback or bridge addresses are never candidates.
        let pz = paths(&[], None, Some("11.0.0.5:7001"), true);
        let z_public = [a("11.0.0.5:7001"), a("127.0.0.1:7001")];
        let z = Side {
            public: &z_public,
            paths: &pz,
        };
        assert_eq!(candidates(&z, &y_away), vec![a("11.0.0.5:7001")]);
        let i = introduction(7, InfoHash([1; 20]), &x, &y_away).unwrap();
        assert_eq!(i.id, 7);
        assert_eq!(i.fingerprint, CertFingerprint([3; 32]));
        assert_eq!(i.nat, Some(NatKind::Unknown));
        assert_eq!(i.check(), Ok(()));
    }

    #[test]
    fn no_introduction_without_quic_or_candidates() {
        let py = paths(&[], None, None, true);
        let y_public = [a("12.0.0.9:7002")];
        let y = Side {
            public: &y_public,
            paths: &py,
        };
        let no_quic = paths(&[], Some("11.0.0.5:40001"), None, false);
        let public = [a("11.0.0.5:7001")];
        let x = Side {
            public: &public,
            paths: &no_quic,
        };
        assert_eq!(introduction(1, InfoHash([1; 20]), &x, &y), None);
        let quic_on_loopback = paths(&[], None, None, true);
        let loopback = [a("127.0.0.2:7001")];
        let x = Side {
            public: &loopback,
            paths: &quic_on_loopback,
        };
        assert_eq!(
            introduction(1, InfoHash([1; 20]), &x, &y),
            None,
            "no acceptable candidate"
        );
    }

    #[test]
    fn candidates_are_capped() {
        let lan: Vec<String> = (1..=4).map(|i| format!("192.168.1.{i}:1")).collect();
        let lan: Vec<&str> = lan.iter().map(String::as_str).collect();
        let px = paths(&lan, Some("11.0.0.5:2"), Some("11.0.0.5:3"), true);
        let public: Vec<SocketAddr> = (4..=9).map(|p| SocketAddr::new([11, 0, 0, 5].into(), p)).collect();
        let x = Side {
            public: &public,
            paths: &px,
        };
        let py = paths(&[], None, None, true);
        let y = Side {
            public: &public[..1],
            paths: &py,
        };
        let c = candidates(&x, &y);
        assert_eq!(c.len(), MAX_CANDIDATES);
        assert_eq!(c[..4], px.lan[..]);
        assert_eq!(c[4..6], [a("11.0.0.5:2"), a("11.0.0.5:3")]);
    }

    #[test]
    fn limits_per_caller_window_and_per_pair() {
        let t0 = Instant::now();
        let mut l = IntroductionLimiter::new();
        let caller: Arc<str> = "a".into();
        let targets: Vec<Arc<str>> = (0..40).map(|i| Arc::from(format!("t{i}"))).collect();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(l.allow(&caller, &targets[0], at(0)), Ok(()));
        assert_eq!(l.allow(&caller, &targets[0], at(1999)), Err(Limited::Pair));
        assert_eq!(l.allow(&caller, &targets[1], at(1999)), Ok(()), "another target");
        assert_eq!(l.allow(&caller, &targets[0], at(2000)), Ok(()));
        // 3 so far; 27 more fill the window, the 31st is refused.
        for (i, t) in targets[2..29].iter().enumerate() {
            assert_eq!(l.allow(&caller, t, at(3000 + i as u64)), Ok(()), "{i}");
        }
        assert_eq!(l.allow(&caller, &targets[30], at(10_000)), Err(Limited::Caller));
        assert_eq!(l.allow(&"b".into(), &targets[30], at(10_000)), Ok(()), "another caller");
        // The first left the window 60 s after it was made.
        assert_eq!(l.allow(&caller, &targets[30], at(59_999)), Err(Limited::Caller));
        assert_eq!(l.allow(&caller, &targets[30], at(60_000)), Ok(()));
        // Old entries are swept.
        assert_eq!(l.allow(&caller, &targets[31], at(200_000)), Ok(()));
        assert_eq!(l.entries(), 2, "one caller and one pair are left");
    }

    #[test]
    fn acquaintances_are_symmetric_per_swarm_and_expire() {
        let (d1, d2, d3): (Arc<str>, Arc<str>, Arc<str>) = ("dev-1".into(), "dev-2".into(), "dev-3".into());
        let (s1, s2) = (InfoHash([1; 20]), InfoHash([2; 20]));
        let t0 = Instant::now();
        let mut a = Acquaintances::new();
        a.record(&d2, &d1, s1, t0);
        a.record(&d1, &d1, s1, t0);
        a.record(&d1, &d3, s2, t0 + Duration::from_secs(5));
        assert_eq!(a.len(), 2, "no pair with itself");
        let t = t0 + Duration::from_secs(10);
        assert_eq!(
            a.of("dev-1", t),
            vec![(d3.clone(), s2), (d2.clone(), s1)],
            "newest first"
        );
        assert_eq!(a.of("dev-2", t), vec![(d1.clone(), s1)]);
        assert!(a.of("dev-4", t).is_empty());
        // A second introduction of the same pair renews it.
        a.record(&d1, &d2, s1, t0 + Duration::from_secs(100));
        assert_eq!(a.len(), 2);
        let late = t0 + ACQUAINTANCE_TTL + Duration::from_secs(50);
        assert_eq!(a.of("dev-1", late), vec![(d2.clone(), s1)], "dev-3's pair expired");
        a.record(&d2, &d3, s1, late);
        assert_eq!(a.len(), 2, "the expired pair was swept");
    }

    #[test]
    fn acquaintances_stay_bounded() {
        let mut a = Acquaintances::new();
        let t0 = Instant::now();
        let hub: Arc<str> = "hub".into();
        for i in 0..(MAX_ACQUAINTANCES + 10) {
            let other: Arc<str> = format!("d{i}").into();
            a.record(&hub, &other, InfoHash([0; 20]), t0 + Duration::from_micros(i as u64));
        }
        assert_eq!(a.len(), MAX_ACQUAINTANCES);
        let of = a.of("hub", t0 + Duration::from_secs(1));
        assert!(!of.iter().any(|(d, _)| &**d == "d0"), "the oldest went first");
        assert_eq!(&*of[0].0, format!("d{}", MAX_ACQUAINTANCES + 9));
    }
}
