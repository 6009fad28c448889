//! Peer hand-out policy: which peers an announcing device gets, and when
//! the origin (the S3-backed seeder) is among them.
//!
//! New grants stop once a device holds the whole package, for as long as the
//! device seeders evidently serve: from then on the devices serve each other.
//!
//! The 2017 field study listed the origin to every client, so every client
//! pulled the same first pieces from it and the origin sent close to one copy
//! per device. Here the origin is a scarce resource: it is handed to at most
//! `origin_slots` leechers at a time (they become the swarm's first sources),
//! and to a leecher that is starved. Everyone else gets devices only, seeders
//! first: a device seeder also dials the leechers it is handed, so a starved
//! leecher is served by devices as soon as one finishes. With one slot the
//! origin sends close to one copy per swarm, the 1 − 1/N limit.
//!
//! Whether listed device seeders serve is read from the leechers' reported
//! progress (their `left` shrinking), never from the seeders' own claims: a
//! device that was handed the whole package and then vanished without a
//! `stopped` event stays listed until its entry expires, and a plain
//! BitTorrent client (no HTTP fallback) must not wait for that. So:
//!
//! - with no device seeder the requester can reach, a leecher takes a free
//!   grant at once and is starved after [`STARVED_AFTER`] intervals without
//!   progress;
//! - with one, the seeders count as serving while the requester progressed
//!   within the last interval (a leecher on its first announce gets the
//!   benefit of the doubt) or some device of the swarm reported progress
//!   within it. A leecher that saw no progress for [`UNSERVED_AFTER`]
//!   interval, in a swarm where no device progressed either, is not served:
//!   the seeders stop holding back a grant and it is starved, so the origin
//!   comes back on its second announce. In a swarm that does progress, a
//!   leecher the seeders still do not serve is starved after
//!   [`STARVED_DESPITE_SEEDERS_AFTER`] intervals (a device that fakes
//!   progress cannot starve others of the origin for longer).
//!
//! Intervals are time, not announce counts (a client that announces more
//! often than told is not starved sooner), and a span counts as `n`
//! intervals from `1/`[`INTERVAL_TOLERANCE_DIVISOR`] of one interval short of
//! it (a client that re-announces at `interval` has waited one interval).
//!
//! A device the requester cannot dial (the tracker's dial of its public
//! address failed) is left out, unless both run QUIC and the tracker can
//! introduce them for a punched path ([`ota_proto::rendezvous`]): such
//! devices come last, in [`Handout::bridged`], and the caller lists them at
//! their bridge addresses. They never hold back an origin grant (a punch
//! may fail).
//!
//! Pure logic: the caller passes the swarm as it is now, split into origins,
//! device seeders and device leechers, the time since the swarm last
//! progressed, and a random source; the cost of one hand-out is O(numwant),
//! not O(swarm).

use std::time::Duration;

/// Announce intervals without progress after which a leecher is starved
/// while no device seeder it can reach is listed.
pub const STARVED_AFTER: u32 = 2;

/// Announce intervals without progress, of the requester and of every
/// device of its swarm, after which listed device seeders count as not
/// serving it (vanished, unreachable or lying about holding the package):
/// they no longer hold back an origin grant and the requester is starved.
pub const UNSERVED_AFTER: u32 = 1;

/// Announce intervals without progress after which a leecher is starved
/// although device seeders are listed and other devices of the swarm do
/// progress: the seeders serve others but not it, and a device claiming to
/// seed (or faking progress) cannot starve the others of the origin.
pub const STARVED_DESPITE_SEEDERS_AFTER: u32 = 4;

/// A span of time counts as `n` announce intervals once it is at most
/// `interval / INTERVAL_TOLERANCE_DIVISOR` short of `n × interval`: a client
/// starts its timer when it reads the answer and may round to whole
/// seconds, so one that re-announces "at `interval`" has waited one interval.
pub const INTERVAL_TOLERANCE_DIVISOR: u32 = 10;

/// Whether `span` counts as at least `n` intervals of `interval` (see
/// [`INTERVAL_TOLERANCE_DIVISOR`]).
fn spans_intervals(span: Duration, n: u32, interval: Duration) -> bool {
    span + interval / INTERVAL_TOLERANCE_DIVISOR >= interval * n
}

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

/// The swarm split the way the policy reads it: origins, the requester's
/// LAN neighbours, device seeders (`left == 0`) and device leechers, and
/// when the swarm last progressed. `T` is the caller's peer type; the
/// requester may be in any list but `neighbours` (it is skipped).
#[derive(Debug)]
pub struct SwarmParts<'a, 'n, T> {
    /// Peers that announced with a valid origin token.
    pub origins: &'a [T],
    /// Devices behind the requester's public address that it reaches over
    /// their LAN (LAN pairing), already filtered and capped by the caller,
    /// seeders first; all are handed out (after a listed origin), and the
    /// caller's `skip` must reject them in `seeders` and `leechers`.
    pub neighbours: &'n [&'a T],
    /// How many of `neighbours` hold the whole package.
    pub neighbour_seeders: usize,
    /// Devices holding the whole package.
    pub seeders: &'a [T],
    /// Devices still downloading.
    pub leechers: &'a [T],
    /// Time since a device of this swarm (the requester included, never
    /// the origin) last reported progress: an announce whose `left` was
    /// smaller than its previous one, reaching 0 included. `None` when none
    /// did (since the tracker started). Read only while device seeders are
    /// listed: recent progress means they serve.
    pub progress_for: Option<Duration>,
}

impl<T> Clone for SwarmParts<'_, '_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SwarmParts<'_, '_, T> {}

/// Most device seeders looked at to decide whether one the requester can
/// reach exists (the rest may be unreachable or expired): the decision
/// stays O(1) in swarms of unreachable seeders.
pub const SEEDERS_LOOKED_AT: usize = 256;

/// The announcing device as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// Bytes it still misses.
    pub left: u64,
    /// How long its `left` has not shrunk (since its first announce when
    /// it never did). Time, not a count of announces: a client that
    /// announces more often than told (librqbit re-announces on every
    /// resume) is not starved sooner.
    pub stalled_for: Duration,
    /// The announce interval handed out: starvation is measured in these.
    pub interval: Duration,
    /// Whether it already holds an origin grant.
    pub granted: bool,
}

/// What the policy decided for one announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handout<'a, T> {
    /// Peers to return: the origins first when listed, then the LAN
    /// neighbours, then device seeders, then device leechers.
    pub peers: Vec<&'a T>,
    /// Peers to return after `peers`, at their bridge addresses: device
    /// seeders, then device leechers, that `skip` rejected and `bridged`
    /// accepts. `peers` and `bridged` together hold at most `numwant`.
    pub bridged: Vec<&'a T>,
    /// Whether the requester now holds (or keeps) an origin grant.
    pub granted: bool,
}

/// Extra indices drawn per list beyond what is wanted, so that a skipped
/// requester or a not yet swept expired peer rarely shortens the list.
const SAMPLE_SLACK: usize = 4;

/// Appends to `out` up to `want` peers of `list` that `skip` does not reject,
/// drawn uniformly at random without repetition. Cost O(`want`) (plus
/// O(`list.len()`) when the list is at most `want` + [`SAMPLE_SLACK`] long).
fn sample_into<'a, T>(
    list: &'a [T],
    want: usize,
    skip: &impl Fn(&T) -> bool,
    rng: &mut impl rand::Rng,
    out: &mut Vec<&'a T>,
) {
    if want == 0 || list.is_empty() {
        return;
    }
    let target = out.len() + want;
    if list.len() <= want + SAMPLE_SLACK {
        out.extend(list.iter().filter(|p| !skip(p)).take(want));
        return;
    }
    for i in rand::seq::index::sample(rng, list.len(), want + SAMPLE_SLACK) {
        if out.len() >= target {
            break;
        }
        if !skip(&list[i]) {
            out.push(&list[i]);
        }
    }
}

/// Decides the peer list for one device announce.
///
/// `parts` holds the live swarm; `skip` rejects the requester itself, any
/// peer the caller knows to be expired but not yet swept, the neighbours
/// (handed out from their own list) and devices the requester cannot reach
/// (an address the tracker could not dial). `grants_in_use` counts
/// leechers other than the requester that hold an origin grant. At most
/// `numwant` peers are returned: the origins first when listed, then the
/// neighbours, then a uniform random sample of device seeders, then of
/// device leechers, each drawn in O(`numwant`) whatever the swarm size.
/// A device seeder the requester can reach (a neighbour, or one of the
/// first [`SEEDERS_LOOKED_AT`] seeders that `skip` keeps) stops new origin
/// grants while the seeders serve: the requester progressed within the last
/// [`UNSERVED_AFTER`] interval, or the swarm did (`parts.progress_for`),
/// and the requester has not been stalled [`STARVED_DESPITE_SEEDERS_AFTER`]
/// intervals (see the module docs).
///
/// `bridged` accepts the devices that `skip` rejects but that may be
/// handed out at their bridge addresses (the caller's rule: both sides run
/// QUIC, the requester cannot dial it, the tracker can push to it; it must
/// reject whatever `skip` rejects for other reasons). While room is left
/// after the reachable peers, a sample of device seeders, then of device
/// leechers, that `bridged` accepts fills [`Handout::bridged`]. A
/// `bridged` that accepts nothing (`|_| false`) gives the plain hand-out.
#[allow(clippy::too_many_arguments)]
pub fn hand_out<'a, T>(
    requester: &Requester,
    parts: SwarmParts<'a, '_, T>,
    skip: impl Fn(&T) -> bool,
    bridged: impl Fn(&T) -> bool,
    grants_in_use: usize,
    policy: OriginPolicy,
    numwant: usize,
    rng: &mut impl rand::Rng,
) -> Handout<'a, T> {
    let leeching = requester.left > 0;
    // Normally the first seeder already answers; skipped ones are the requester
    // (a seeder is not leeching, so then this is not read) or expired peers.
    let device_seeder =
        leeching && (parts.neighbour_seeders > 0 || parts.seeders.iter().take(SEEDERS_LOOKED_AT).any(|c| !skip(c)));
    let stalled = |n: u32| spans_intervals(requester.stalled_for, n, requester.interval);
    // The swarm is quiet when no device reported progress for a whole interval.
    let swarm_quiet = parts
        .progress_for
        .is_none_or(|d| spans_intervals(d, UNSERVED_AFTER, requester.interval));
    let unserved = (stalled(UNSERVED_AFTER) && swarm_quiet) || stalled(STARVED_DESPITE_SEEDERS_AFTER);
    let seeders_serve = device_seeder && !unserved;
    let starved = leeching
        && if device_seeder {
            unserved
        } else {
            stalled(STARVED_AFTER)
        };
    let (list_origin, granted) = match policy {
        OriginPolicy::Always => (leeching, false),
        OriginPolicy::OnDemand { slots } => {
            let keep = leeching && requester.granted;
            let new = leeching && !requester.granted && !seeders_serve && grants_in_use < slots.max(1);
            (keep || new || starved, keep || new)
        }
    };
    let mut peers: Vec<&'a T> = Vec::with_capacity(numwant.min(64));
    if list_origin {
        peers.extend(parts.origins.iter().filter(|c| !skip(c)).take(numwant));
    }
    let room = numwant - peers.len();
    peers.extend(parts.neighbours.iter().copied().take(room));
    let room = numwant - peers.len();
    sample_into(parts.seeders, room, &skip, rng, &mut peers);
    let room = numwant - peers.len();
    sample_into(parts.leechers, room, &skip, rng, &mut peers);
    let mut bridges: Vec<&'a T> = Vec::new();
    let not_bridged = |p: &T| !bridged(p);
    let room = numwant - peers.len();
    sample_into(parts.seeders, room, &not_bridged, rng, &mut bridges);
    let room = numwant - peers.len() - bridges.len();
    sample_into(parts.leechers, room, &not_bridged, rng, &mut bridges);
    Handout {
        peers,
        bridged: bridges,
        granted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A peer: (id, left, is_origin).
    type P = (u8, u64, bool);

    fn swarm() -> Vec<P> {
        vec![(0, 0, true), (1, 50, false), (2, 0, false), (3, 100, false)]
    }

    /// A requester stalled for `stalled` announce intervals of 10 s.
    fn req(left: u64, stalled: u32, granted: bool) -> Requester {
        let interval = Duration::from_secs(10);
        Requester {
            left,
            stalled_for: interval * stalled,
            interval,
            granted,
        }
    }

    /// `swarm` split into origins, seeders and leechers.
    fn split(swarm: &[P]) -> (Vec<P>, Vec<P>, Vec<P>) {
        let of = |f: fn(&P) -> bool| swarm.iter().copied().filter(f).collect::<Vec<P>>();
        (of(|p| p.2), of(|p| !p.2 && p.1 == 0), of(|p| !p.2 && p.1 > 0))
    }

    /// Runs the policy for requester `id` on `swarm`, in which a device
    /// reported progress just now; returns the handed-out ids (origins
    /// first) and the grant.
    fn run(id: u8, r: Requester, swarm: &[P], grants: usize, policy: OriginPolicy, numwant: usize) -> (Vec<u8>, bool) {
        run_quiet(id, r, swarm, Some(Duration::ZERO), grants, policy, numwant)
    }

    /// [`run`] in a swarm that last progressed `progress_for` ago (`None`: never).
    fn run_quiet(
        id: u8,
        r: Requester,
        swarm: &[P],
        progress_for: Option<Duration>,
        grants: usize,
        policy: OriginPolicy,
        numwant: usize,
    ) -> (Vec<u8>, bool) {
        let (origins, seeders, leechers) = split(swarm);
        let parts = SwarmParts {
            origins: &origins,
            neighbours: &[],
            neighbour_seeders: 0,
            seeders: &seeders,
            leechers: &leechers,
            progress_for,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let h = hand_out(&r, parts, |p| p.0 == id, |_| false, grants, policy, numwant, &mut rng);
        assert!(h.bridged.is_empty());
        (h.peers.iter().map(|p| p.0).collect(), h.granted)
    }

    #[test]
    fn first_leecher_gets_the_origin_then_others_do_not() {
        let policy = OriginPolicy::OnDemand { slots: 1 };
        let leechers: Vec<P> = swarm().into_iter().filter(|c| c.0 != 2).collect();
        let (first, granted) = run(1, req(100, 0, false), &leechers, 0, policy, 50);
        assert!(granted);
        assert_eq!(first, vec![0, 3]);
        // A free slot is not granted while a device (peer 2) is a seeder.
        let (free_slot, granted) = run(3, req(100, 0, false), &swarm(), 0, policy, 50);
        assert!(!granted && !free_slot.contains(&0));
        let (second, granted) = run(3, req(100, 0, false), &swarm(), 1, policy, 50);
        assert!(!granted);
        // Seeders before leechers, never the requester itself.
        assert_eq!(second, vec![2, 1]);
    }

    #[test]
    fn a_grant_is_kept_and_a_starved_leecher_gets_the_origin() {
        let policy = OriginPolicy::OnDemand { slots: 1 };
        let (kept, granted) = run(1, req(40, 0, true), &swarm(), 0, policy, 50);
        assert!(granted && kept[0] == 0);
        // Stalled while a device (peer 2) holds the whole package and the
        // swarm progresses (the seeders serve): devices only.
        let (served_by_devices, _) = run(3, req(100, 2, false), &swarm(), 1, policy, 50);
        assert_eq!(served_by_devices, vec![2, 1]);
        // ... unless the devices have not served it for longer (slow, or lying).
        let (despite, granted) = run(
            3,
            req(100, STARVED_DESPITE_SEEDERS_AFTER, false),
            &swarm(),
            1,
            policy,
            50,
        );
        assert!(!granted);
        assert_eq!(despite, vec![0, 2, 1]);
        // Starved with no device seeder: the origin.
        let no_seeder: Vec<P> = swarm().into_iter().filter(|c| c.0 != 2).collect();
        let (once, _) = run(3, req(100, 1, false), &no_seeder, 1, policy, 50);
        assert!(!once.contains(&0), "one stalled announce is not starvation");
        let (starved, granted) = run(3, req(100, STARVED_AFTER, false), &no_seeder, 1, policy, 50);
        assert!(!granted);
        assert_eq!(starved[0], 0);
        let (progressing, _) = run(3, req(90, 0, false), &no_seeder, 1, policy, 50);
        assert!(!progressing.contains(&0));
    }

    #[test]
    fn seeders_that_serve_nobody_give_the_origin_back_within_one_interval() {
        let policy = OriginPolicy::OnDemand { slots: 1 };
        let interval = Duration::from_secs(10);
        let at = |stalled_for: Duration| Requester {
            left: 100,
            stalled_for,
            interval,
            granted: false,
        };
        // Peer 2 claims to seed, but no device reported progress since
        // (it vanished without `stopped`, or it lies).
        let quiet = Some(interval * 30);
        // First announce: the listed seeder gets the benefit of the doubt.
        let (first, granted) = run_quiet(3, at(Duration::ZERO), &swarm(), quiet, 0, policy, 50);
        assert_eq!((first, granted), (vec![2, 1], false));
        let (never, _) = run_quiet(3, at(Duration::ZERO), &swarm(), None, 0, policy, 50);
        assert_eq!(never, vec![2, 1]);
        // Second announce, one interval later without progress: the seeder
        // does not serve, so it holds back no grant...
        let (second, granted) = run_quiet(3, at(interval), &swarm(), quiet, 0, policy, 50);
        assert_eq!((second, granted), (vec![0, 2, 1], true));
        // ... and with every slot taken the requester is starved: listed, not granted.
        let (taken, granted) = run_quiet(3, at(interval), &swarm(), None, 1, policy, 50);
        assert_eq!((taken, granted), (vec![0, 2, 1], false));
        // An announce a little early (its timer started when it read the
        // answer) still counts as one interval; a client that announces
        // more often than told is not starved sooner.
        let tolerance = interval / INTERVAL_TOLERANCE_DIVISOR;
        let (early, _) = run_quiet(3, at(interval - tolerance), &swarm(), quiet, 1, policy, 50);
        assert_eq!(early[0], 0);
        let (too_early, granted) = run_quiet(
            3,
            at(interval - tolerance - Duration::from_millis(1)),
            &swarm(),
            quiet,
            0,
            policy,
            50,
        );
        assert_eq!((too_early, granted), (vec![2, 1], false));
        // Another device reported progress within the last interval: the
        // seeders serve the swarm, the requester waits for them...
        for recent in [
            Duration::ZERO,
            interval / 2,
            interval - tolerance - Duration::from_millis(1),
        ] {
            let (served, granted) = run_quiet(3, at(interval * 3), &swarm(), Some(recent), 0, policy, 50);
            assert_eq!((served, granted), (vec![2, 1], false), "progress {recent:?} ago");
        }
        // ... but not beyond STARVED_DESPITE_SEEDERS_AFTER intervals.
        let stalled_long = at(interval * STARVED_DESPITE_SEEDERS_AFTER - tolerance);
        let (despite, granted) = run_quiet(3, stalled_long, &swarm(), Some(Duration::ZERO), 0, policy, 50);
        assert_eq!((despite, granted), (vec![0, 2, 1], true));
        // The swarm's progress one whole interval ago is quiet already.
        let (quiet_now, _) = run_quiet(3, at(interval), &swarm(), Some(interval - tolerance), 1, policy, 50);
        assert_eq!(quiet_now[0], 0);
        // A grant holder keeps the origin whatever the seeders do; a seeder
        // never gets it.
        let kept = Requester {
            granted: true,
            ..at(Duration::ZERO)
        };
        assert_eq!(
            run_quiet(1, kept, &swarm(), Some(Duration::ZERO), 0, policy, 50).0[0],
            0
        );
        let seeding = Requester {
            left: 0,
            ..at(interval * 9)
        };
        let (seeder, granted) = run_quiet(2, seeding, &swarm(), None, 0, policy, 50);
        assert_eq!((seeder, granted), (vec![1, 3], false));
    }

    #[test]
    fn bridged_peers_come_after_the_reachable_ones_within_numwant() {
        // Peers 4 (seeder) and 5 (leecher) are unreachable but bridgeable,
        // peer 6 is unreachable and not bridgeable.
        let swarm: Vec<P> = vec![
            (0, 0, true),
            (2, 0, false),
            (4, 0, false),
            (1, 50, false),
            (5, 50, false),
            (6, 50, false),
        ];
        let (origins, seeders, leechers) = split(&swarm);
        let parts = SwarmParts {
            origins: &origins,
            neighbours: &[],
            neighbour_seeders: 0,
            seeders: &seeders,
            leechers: &leechers,
            progress_for: None,
        };
        let unreachable = |p: &P| [4, 5, 6].contains(&p.0);
        let skip = |p: &P| p.0 == 3 || unreachable(p);
        let bridged = |p: &P| p.0 != 3 && [4, 5].contains(&p.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let policy = OriginPolicy::OnDemand { slots: 1 };
        let ids = |v: &[&P]| v.iter().map(|p| p.0).collect::<Vec<_>>();
        let h = hand_out(&req(100, 0, false), parts, skip, bridged, 1, policy, 50, &mut rng);
        assert_eq!(ids(&h.peers), vec![2, 1]);
        assert_eq!(ids(&h.bridged), vec![4, 5], "seeders first, never peer 6");
        let h = hand_out(&req(100, 0, false), parts, skip, bridged, 1, policy, 3, &mut rng);
        assert_eq!(
            (ids(&h.peers), ids(&h.bridged)),
            (vec![2, 1], vec![4]),
            "numwant caps both"
        );
        let h = hand_out(&req(100, 0, false), parts, skip, bridged, 1, policy, 2, &mut rng);
        assert!(h.bridged.is_empty());
        // A bridged seeder does not hold back an origin grant (a punch may fail).
        let only_bridged: Vec<P> = vec![(4, 0, false)];
        let parts = SwarmParts {
            seeders: &only_bridged,
            ..parts
        };
        let h = hand_out(&req(100, 0, false), parts, skip, bridged, 0, policy, 50, &mut rng);
        assert!(h.granted);
        assert_eq!((ids(&h.peers), ids(&h.bridged)), (vec![0, 1], vec![4, 5]));
    }

    #[test]
    fn seeders_never_get_the_origin_and_numwant_caps() {
        let (seeding, granted) = run(2, req(0, 0, true), &swarm(), 0, OriginPolicy::Always, 50);
        assert!(!granted);
        assert_eq!(seeding, vec![1, 3], "leechers only, no origin");
        let (capped, _) = run(9, req(100, 0, false), &swarm(), 0, OriginPolicy::Always, 2);
        assert_eq!(capped.len(), 2);
        assert_eq!(capped[0], 0);
    }

    #[test]
    fn large_swarms_are_sampled_without_repeats_or_the_requester() {
        // 1,000 seeders and 3,000 leechers; the requester is leecher 7.
        let seeders: Vec<u32> = (0..1000).collect();
        let leechers: Vec<u32> = (1000..4000).collect();
        let parts = SwarmParts {
            origins: &[][..],
            neighbours: &[],
            neighbour_seeders: 0,
            seeders: &seeders,
            leechers: &leechers,
            progress_for: None,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut seen_seeders = std::collections::HashSet::new();
        for _ in 0..40 {
            let h = hand_out(
                &req(5, 0, false),
                parts,
                |p| *p == 1007,
                |_| false,
                1,
                OriginPolicy::default(),
                50,
                &mut rng,
            );
            assert_eq!(h.peers.len(), 50);
            let ids: std::collections::HashSet<u32> = h.peers.iter().map(|p| **p).collect();
            assert_eq!(ids.len(), 50, "no peer twice");
            assert!(ids.iter().all(|p| *p < 1000), "seeders fill the list first");
            seen_seeders.extend(ids);
        }
        // 40 draws of 50 out of 1,000: a fixed prefix would show only 50.
        assert!(seen_seeders.len() > 500, "{} distinct seeders", seen_seeders.len());
        // Few seeders: the rest comes from leechers, never the requester.
        let parts = SwarmParts {
            origins: &[][..],
            neighbours: &[],
            neighbour_seeders: 0,
            seeders: &seeders[..3],
            leechers: &leechers,
            progress_for: None,
        };
        let h = hand_out(
            &req(5, 0, false),
            parts,
            |p| *p == 1007,
            |_| false,
            1,
            OriginPolicy::default(),
            200,
            &mut rng,
        );
        assert_eq!(h.peers.len(), 200);
        assert_eq!(h.peers[..3].iter().map(|p| **p).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(h.peers.iter().all(|p| **p != 1007));
    }
}
