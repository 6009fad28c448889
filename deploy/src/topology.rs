//! Experiment topologies as plans (pure, no I/O): which home routers a
//! flash crowd has, of which NAT kind, which devices sit behind each and
//! which of them have a forwarded port. [`crate::lab_run`] builds a plan in
//! the NAT lab.
//!
//! - `thesis-lan`: the 2017 Sony Mobile study's setup, five devices on one
//!   access point behind one home router (endpoint-independent mapping,
//!   hairpin NAT on, UPnP off), with the study's scenarios [`Scenario`]:
//!   `ideal` every device's port forwarded, `worst` none, `general` one of
//!   five (the study's "1 device in 5 connectable").
//! - `internet`: N devices, each behind its own router, kinds drawn from a
//!   [`NatMix`] (default [`NatMix::default`], see there for its sources).

use std::fmt;
use std::str::FromStr;

use clap::ValueEnum;
use serde::Serialize;

/// Where a flash crowd runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// Every process on this machine's loopback: every device reaches every
    /// other (the study's ideal case and nothing else); needs no root.
    Loopback,
    /// Five devices behind one home router, as in the 2017 study (NAT lab,
    /// root).
    ThesisLan,
    /// N devices, each behind its own home router of a kind drawn from
    /// `--mix` (NAT lab, root).
    Internet,
}

/// The study's connectivity scenarios of `thesis-lan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Every device connectable (its peer port forwarded): 40.66 % saved in
    /// the study.
    Ideal,
    /// No device connectable: 3.01 % saved in the study.
    Worst,
    /// One device in five connectable: 17.67 % saved in the study.
    General,
}

impl Scenario {
    /// The study's name, as written in records: `ideal`, `worst`, `general`.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Ideal => "ideal",
            Scenario::Worst => "worst",
            Scenario::General => "general",
        }
    }

    /// The saving the 2017 study measured in this scenario, percent.
    pub fn study_saving_pct(&self) -> f64 {
        match self {
            Scenario::Ideal => 40.66,
            Scenario::Worst => 3.01,
            Scenario::General => 17.67,
        }
    }

    /// How many of `devices` are connectable: all, none, or one in five
    /// (at least one).
    pub fn connectable(&self, devices: usize) -> usize {
        match self {
            Scenario::Ideal => devices,
            Scenario::Worst => 0,
            Scenario::General => (devices / 5).max(1).min(devices),
        }
    }
}

/// The kind of one planned home router, in the words of the issue and of
/// RFC 4787 (see `lab::RouterKind` for what each does to packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatKind {
    /// No NAT: the device has a public address.
    Public,
    /// Endpoint-independent mapping with the device's peer port forwarded
    /// (the study's "open port").
    PortForwarded,
    /// Endpoint-independent mapping, address-and-port-dependent filtering,
    /// and a UPnP IGD (miniupnpd) devices may ask for a mapping.
    Upnp,
    /// Endpoint-independent mapping, address-and-port-dependent filtering,
    /// no UPnP (Linux masquerade, the common home router).
    Cone,
    /// Address-and-port-dependent mapping ("symmetric").
    Symmetric,
    /// A cone home router behind a carrier-grade NAT (RFC 6598 shared
    /// addresses between them).
    Cgnat,
}

impl NatKind {
    /// Every kind, in the order of [`NatKind::name`]'s table.
    pub const ALL: [NatKind; 6] = [
        NatKind::Public,
        NatKind::PortForwarded,
        NatKind::Upnp,
        NatKind::Cone,
        NatKind::Symmetric,
        NatKind::Cgnat,
    ];

    /// The name used in `--mix` and records: `public`, `port-forwarded`,
    /// `upnp`, `cone`, `symmetric`, `cgnat`.
    pub fn name(&self) -> &'static str {
        match self {
            NatKind::Public => "public",
            NatKind::PortForwarded => "port-forwarded",
            NatKind::Upnp => "upnp",
            NatKind::Cone => "cone",
            NatKind::Symmetric => "symmetric",
            NatKind::Cgnat => "cgnat",
        }
    }

    /// Whether a device behind it accepts unsolicited inbound connections
    /// on its peer port with nothing but today's BitTorrent (no UPnP
    /// request, no hole punching): public and forwarded ones.
    pub fn connectable(&self) -> bool {
        matches!(self, NatKind::Public | NatKind::PortForwarded)
    }
}

/// Shares of router kinds in an `internet` topology; they sum to 1.
///
/// Written `public=0.05,port-forwarded=0.15,upnp=0.30,cone=0.20,symmetric=0.15,cgnat=0.15`
/// (kinds left out get 0; the shares are normalised to sum 1).
#[derive(Debug, Clone, PartialEq)]
pub struct NatMix {
    shares: Vec<(NatKind, f64)>,
}

impl Default for NatMix {
    /// The default mix, from published measurements rounded to 5 %:
    /// - connectable (public 5 % + port-forwarded 15 %) = 20 %: the 2017
    ///   study's field estimate of one device in five connectable;
    /// - symmetric 15 %: Ford, Srisuresh and Kegel, "Peer-to-Peer
    ///   Communication Across Network Address Translators" (USENIX ATC
    ///   2005) found UDP hole punching working through 82 % of the NATs
    ///   tested, i.e. about 18 % not endpoint-independent;
    /// - CGNAT 15 %: Richter et al., "A Multi-perspective Analysis of
    ///   Carrier-Grade NAT Deployment" (IMC 2016) found CGN in about 17 %
    ///   of the non-cellular access networks they could test (and in most
    ///   cellular ones);
    /// - the remaining 50 % are endpoint-independent home routers, split
    ///   30 % with UPnP enabled (its factory default on most consumer
    ///   routers) and 20 % without.
    fn default() -> Self {
        NatMix {
            shares: vec![
                (NatKind::Public, 0.05),
                (NatKind::PortForwarded, 0.15),
                (NatKind::Upnp, 0.30),
                (NatKind::Cone, 0.20),
                (NatKind::Symmetric, 0.15),
                (NatKind::Cgnat, 0.15),
            ],
        }
    }
}

impl NatMix {
    /// How many of `devices` routers get each kind: the largest-remainder
    /// (Hamilton) apportionment of the shares, ties (remainders within
    /// 1e-9) to the earlier kind in [`NatKind::ALL`] order, so the counts
    /// sum to `devices` exactly.
    pub fn apportion(&self, devices: usize) -> Vec<(NatKind, usize)> {
        let total: f64 = self.shares.iter().map(|(_, s)| s).sum();
        let mut counts: Vec<(NatKind, usize, f64)> = self
            .shares
            .iter()
            .map(|&(k, s)| {
                let exact = s / total * devices as f64;
                (k, exact.floor() as usize, exact - exact.floor())
            })
            .collect();
        let given: usize = counts.iter().map(|c| c.1).sum();
        let mut order: Vec<usize> = (0..counts.len()).collect();
        // Remainders within 1e-9 are ties (0.15 × 50 is 7.4999… in binary).
        let key = |i: usize| (counts[i].2 * 1e9).round() as i64;
        order.sort_by(|&a, &b| key(b).cmp(&key(a)).then(a.cmp(&b)));
        for &i in order.iter().take(devices.saturating_sub(given)) {
            counts[i].1 += 1;
        }
        counts.into_iter().map(|(k, n, _)| (k, n)).collect()
    }
}

impl FromStr for NatMix {
    type Err = String;

    /// Parses `kind=share,...` (see [`NatMix`]). Errors: an unknown kind, a
    /// share that is not a finite number ≥ 0, a kind given twice, or all
    /// shares 0.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut shares = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, share) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected kind=share"))?;
            let kind = NatKind::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .ok_or_else(|| {
                    let names: Vec<_> = NatKind::ALL.iter().map(|k| k.name()).collect();
                    format!("unknown router kind {name:?} (one of {})", names.join(", "))
                })?;
            let share: f64 = share
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: the share is not a number"))?;
            if !share.is_finite() || share < 0.0 {
                return Err(format!("{part:?}: a share is a number ≥ 0"));
            }
            if shares.iter().any(|(k, _)| *k == kind) {
                return Err(format!("{name} given twice"));
            }
            shares.push((kind, share));
        }
        if shares.iter().map(|(_, s)| s).sum::<f64>() <= 0.0 {
            return Err("the mix needs at least one share above 0".into());
        }
        // Keep the canonical kind order so apportionment is stable.
        shares.sort_by_key(|(k, _)| NatKind::ALL.iter().position(|a| a == k));
        Ok(NatMix { shares })
    }
}

impl fmt::Display for NatMix {
    /// `public=0.05,...` with the shares normalised to sum 1; what records
    /// carry as the scenario name of an `internet` run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: f64 = self.shares.iter().map(|(_, s)| s).sum();
        let parts: Vec<String> = self
            .shares
            .iter()
            .filter(|(_, s)| *s > 0.0)
            .map(|(k, s)| format!("{}={:.2}", k.name(), s / total))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// One planned home router and the devices behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterPlan {
    /// What NAT it does.
    pub kind: NatKind,
    /// The devices behind it, by index into [`Plan::devices`], in LAN
    /// order (host 0 first).
    pub devices: Vec<usize>,
    /// Hairpin NAT on (RFC 4787 REQ-9): LAN devices reach each other's
    /// forwarded ports at the router's public address.
    pub hairpin: bool,
}

/// One planned device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DevicePlan {
    /// Device id, `dev-01`, `dev-02`, ...
    pub id: String,
    /// Index of its router in [`Plan::routers`].
    pub router: usize,
    /// Its peer-wire port (TCP): distinct per device so that devices behind
    /// one router keep endpoint-independent mappings (see
    /// `lab::RouterKind::Cone`) and can each have a forward.
    pub peer_port: u16,
    /// Whether its peer port is forwarded by its router (or it is public):
    /// it accepts unsolicited inbound connections.
    pub connectable: bool,
}

/// A whole topology: routers, devices, and the scenario name for records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The home routers.
    pub routers: Vec<RouterPlan>,
    /// The devices, `dev-01` first.
    pub devices: Vec<DevicePlan>,
    /// The scenario as records name it: the study's `ideal`/`worst`/
    /// `general`, or the `internet` mix.
    pub scenario: String,
}

/// First device peer port; device `i` (from 0) listens on `BASE + i`.
pub const PEER_PORT_BASE: u16 = 40_001;

fn device(i: usize, router: usize, connectable: bool) -> DevicePlan {
    DevicePlan {
        id: format!("dev-{:02}", i + 1),
        router,
        peer_port: PEER_PORT_BASE + i as u16,
        connectable,
    }
}

/// `thesis-lan`: `devices` devices (the study had 5) behind one
/// endpoint-independent router with hairpin NAT, the first
/// [`Scenario::connectable`] of them forwarded.
///
/// Errors: no devices, or more than 200 (one LAN).
pub fn thesis_lan(scenario: Scenario, devices: usize) -> Result<Plan, String> {
    if devices == 0 || devices > 200 {
        return Err(format!("thesis-lan takes 1 to 200 devices, not {devices}"));
    }
    let open = scenario.connectable(devices);
    let devices: Vec<DevicePlan> = (0..devices).map(|i| device(i, 0, i < open)).collect();
    Ok(Plan {
        routers: vec![RouterPlan {
            kind: if open > 0 {
                NatKind::PortForwarded
            } else {
                NatKind::Cone
            },
            devices: (0..devices.len()).collect(),
            hairpin: true,
        }],
        devices,
        scenario: scenario.name().to_string(),
    })
}

/// `internet`: `devices` devices, each behind its own router; the kinds
/// are [`NatMix::apportion`]ed and then placed in an order shuffled by
/// `seed` (the same seed gives the same placement).
///
/// Errors: no devices, or more than 2,000 (the lab's router limit).
pub fn internet(devices: usize, mix: &NatMix, seed: u64) -> Result<Plan, String> {
    if devices == 0 || devices > 2000 {
        return Err(format!("internet takes 1 to 2000 devices, not {devices}"));
    }
    let mut kinds: Vec<NatKind> = mix
        .apportion(devices)
        .into_iter()
        .flat_map(|(k, n)| std::iter::repeat_n(k, n))
        .collect();
    shuffle(&mut kinds, seed);
    let routers = kinds
        .iter()
        .enumerate()
        .map(|(i, &kind)| RouterPlan {
            kind,
            devices: vec![i],
            hairpin: false,
        })
        .collect();
    let devices = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| device(i, i, k.connectable()))
        .collect();
    Ok(Plan {
        routers,
        devices,
        scenario: mix.to_string(),
    })
}

/// Fisher–Yates with a SplitMix64 stream from `seed`: deterministic, no
/// dependency on a random-number crate's stream stability.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thesis_lan_scenarios_forward_all_none_or_one_in_five() {
        let count = |s| {
            thesis_lan(s, 5)
                .unwrap()
                .devices
                .iter()
                .filter(|d| d.connectable)
                .count()
        };
        assert_eq!(
            (count(Scenario::Ideal), count(Scenario::Worst), count(Scenario::General)),
            (5, 0, 1)
        );
        let p = thesis_lan(Scenario::General, 5).unwrap();
        assert_eq!(p.routers.len(), 1);
        assert!(p.routers[0].hairpin);
        assert_eq!(p.routers[0].devices, vec![0, 1, 2, 3, 4]);
        assert_eq!(p.scenario, "general");
        let ports: std::collections::HashSet<u16> = p.devices.iter().map(|d| d.peer_port).collect();
        assert_eq!(ports.len(), 5, "distinct peer ports behind one router");
        assert_eq!(thesis_lan(Scenario::Worst, 5).unwrap().routers[0].kind, NatKind::Cone);
        assert!(thesis_lan(Scenario::Ideal, 0).is_err());
    }

    #[test]
    fn the_default_mix_apportions_exactly_and_keeps_one_in_five_connectable() {
        let mix = NatMix::default();
        for n in [1, 3, 7, 20, 50, 333] {
            let counts = mix.apportion(n);
            assert_eq!(counts.iter().map(|c| c.1).sum::<usize>(), n, "n = {n}");
        }
        let at = |n, kind| mix.apportion(n).into_iter().find(|c| c.0 == kind).unwrap().1;
        assert_eq!(at(20, NatKind::Upnp), 6);
        assert_eq!(at(20, NatKind::Public) + at(20, NatKind::PortForwarded), 4);
        // 50 × shares: 2.5, 7.5, 15, 10, 7.5, 7.5; two seats left for four
        // equal remainders go to the earlier kinds.
        let fifty: Vec<usize> = NatKind::ALL.iter().map(|&k| at(50, k)).collect();
        assert_eq!(fifty, vec![3, 8, 15, 10, 7, 7]);
        let plan = internet(50, &mix, 7).unwrap();
        assert_eq!(plan.routers.len(), 50);
        assert_eq!(plan.devices.iter().filter(|d| d.connectable).count(), 11);
        assert!(plan.routers.iter().all(|r| r.devices.len() == 1));
    }

    #[test]
    fn placement_is_deterministic_per_seed_and_differs_between_seeds() {
        let mix = NatMix::default();
        let kinds = |seed| -> Vec<NatKind> {
            internet(20, &mix, seed)
                .unwrap()
                .routers
                .iter()
                .map(|r| r.kind)
                .collect()
        };
        assert_eq!(kinds(1), kinds(1));
        assert_ne!(kinds(1), kinds(2));
    }

    #[test]
    fn mixes_parse_normalise_and_refuse_nonsense() {
        let m: NatMix = "cone=1, symmetric=3".parse().unwrap();
        assert_eq!(m.to_string(), "cone=0.25,symmetric=0.75");
        assert_eq!(m.apportion(4), vec![(NatKind::Cone, 1), (NatKind::Symmetric, 3)]);
        assert_eq!(
            NatMix::default().to_string(),
            "public=0.05,port-forwarded=0.15,upnp=0.30,cone=0.20,symmetric=0.15,cgnat=0.15"
        );
        for bad in [
            "",
            "cone",
            "moon=1",
            "cone=-1",
            "cone=x",
            "cone=1,cone=2",
            "cone=0",
            "cone=inf",
        ] {
            assert!(bad.parse::<NatMix>().is_err(), "{bad:?} accepted");
        }
    }
}
