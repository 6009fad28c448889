//! Money: tiered per-GB CDN prices applied to byte counts (pure, no I/O).
//!
//! A [`PriceTable`] is a list of cumulative per-GB tiers, as CDN price lists
//! (e.g. Amazon CloudFront on-demand data transfer out) are published: "first
//! 10 TB at $0.085/GB, next 40 TB at $0.080/GB, …". It is read from TOML:
//!
//! ```toml
//! bytes_per_gb = 1000000000   # optional; 10^9 (decimal GB) when absent
//! [[tier]]
//! up_to_gb = 10240            # cumulative upper bound of this tier, GB
//! usd_per_gb = 0.085          # USD per GB within this tier
//! [[tier]]
//! usd_per_gb = 0.080          # last tier: no `up_to_gb`, open-ended
//! ```
//!
//! **Units.** Prices are USD per GB. A GB is `bytes_per_gb` bytes, by default
//! 10^9 bytes (decimal GB). If a contract defines a GB as 2^30 bytes (GiB), set
//! `bytes_per_gb = 1073741824` in the table. Tier bounds (`up_to_gb`) are in the
//! same GB; CloudFront writes "10 TB" as 10 240 GB, so that is what the example
//! table uses.
//!
//! **What a cost means.** Tiers apply to the volume of one billing month. The
//! cost of a single run is the cost of its bytes as if they were the month's
//! only traffic (priced from the first tier on); the cost of a scenario is the
//! mean of its runs' costs. The fleet projection ([`FleetParams`]) prices a
//! whole month of fleet traffic, which is where the tiers really matter.
//!
//! The bytes priced are the 2017 Sony Mobile study's `D_cs` (CDN bytes without
//! peer assistance) and `D_p2p` (CDN bytes with it); the money saved is the cost
//! of `D_cs` minus the cost of `D_p2p`, the monetary counterpart of the study's
//! gain `G = D_cs − D_p2p`.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::savings::Report;

/// Bytes in one decimal gigabyte (10^9), the default unit of [`PriceTable`].
pub const DECIMAL_GB_BYTES: u64 = 1_000_000_000;

/// Bytes in one binary gigabyte (GiB, 2^30), for contracts priced per GiB.
pub const BINARY_GB_BYTES: u64 = 1 << 30;

fn default_bytes_per_gb() -> u64 {
    DECIMAL_GB_BYTES
}

/// One price tier: `usd_per_gb` USD per GB for the volume between the previous
/// tier's `up_to_gb` (or 0) and this tier's `up_to_gb` (GB, cumulative monthly
/// volume). The last tier has no bound.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Cumulative upper bound of the tier, GB; `None` only for the last tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_gb: Option<f64>,
    /// Price within the tier, USD per GB.
    pub usd_per_gb: f64,
}

/// A tiered per-GB price list (USD per GB), e.g. CloudFront data transfer out.
/// Build it with [`PriceTable::from_toml_str`] or [`PriceTable::new`], which
/// validate it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// Free-form description of the table (e.g. "CloudFront, North America").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Bytes per GB: 10^9 by default ([`DECIMAL_GB_BYTES`]); 2^30 for GiB
    /// ([`BINARY_GB_BYTES`]).
    #[serde(default = "default_bytes_per_gb")]
    pub bytes_per_gb: u64,
    /// Tiers in increasing order of `up_to_gb`; TOML key `tier` (`[[tier]]`).
    #[serde(rename = "tier")]
    pub tiers: Vec<Tier>,
}

/// Why a price table is unusable.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PriceError {
    /// The TOML text is not a price table (syntax, wrong types, unknown keys).
    #[error("invalid price table: {0}")]
    Toml(String),
    /// No `[[tier]]` at all.
    #[error("price table has no [[tier]]")]
    NoTiers,
    /// `bytes_per_gb = 0`.
    #[error("bytes_per_gb must be positive")]
    ZeroBytesPerGb,
    /// A tier other than the last lacks `up_to_gb`, or the last one has it.
    #[error("tier {tier}: {message}")]
    Tier {
        /// 1-based tier number in file order.
        tier: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Cost of a byte count split by tier, see [`PriceTable::breakdown`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TierCharge {
    /// Volume billed in this tier, GB.
    pub gb: f64,
    /// Price of the tier, USD per GB.
    pub usd_per_gb: f64,
    /// `gb × usd_per_gb`, USD.
    pub usd: f64,
}

impl PriceTable {
    /// Validates and builds a table: at least one tier; every tier but the last
    /// has `up_to_gb` (GB), strictly increasing and positive; the last has none;
    /// prices (USD per GB) are finite and non-negative; `bytes_per_gb > 0`.
    pub fn new(name: Option<String>, bytes_per_gb: u64, tiers: Vec<Tier>) -> Result<Self, PriceError> {
        let table = PriceTable {
            name,
            bytes_per_gb,
            tiers,
        };
        table.validate()?;
        Ok(table)
    }

    /// Parses and validates a TOML price table (see the module docs for the
    /// layout). Errors carry the TOML parser's message with line and column.
    pub fn from_toml_str(text: &str) -> Result<Self, PriceError> {
        let table: PriceTable =
            toml::from_str(text).map_err(|e| PriceError::Toml(e.to_string().trim_end().to_owned()))?;
        table.validate()?;
        Ok(table)
    }

    fn validate(&self) -> Result<(), PriceError> {
        if self.tiers.is_empty() {
            return Err(PriceError::NoTiers);
        }
        if self.bytes_per_gb == 0 {
            return Err(PriceError::ZeroBytesPerGb);
        }
        let last = self.tiers.len() - 1;
        let mut previous = 0.0;
        for (i, tier) in self.tiers.iter().enumerate() {
            let err = |message: String| PriceError::Tier { tier: i + 1, message };
            if !(tier.usd_per_gb.is_finite() && tier.usd_per_gb >= 0.0) {
                return Err(err(format!(
                    "usd_per_gb must be a finite non-negative number, found {}",
                    tier.usd_per_gb
                )));
            }
            match (tier.up_to_gb, i == last) {
                (Some(_), true) => return Err(err("the last tier must not have up_to_gb (it is open-ended)".into())),
                (None, false) => return Err(err("only the last tier may omit up_to_gb".into())),
                (Some(bound), false) => {
                    if !(bound.is_finite() && bound > previous) {
                        return Err(err(format!(
                            "up_to_gb must be finite and greater than the previous bound ({previous} GB), found {bound}"
                        )));
                    }
                    previous = bound;
                }
                (None, true) => {}
            }
        }
        Ok(())
    }

    /// Converts bytes to GB of this table (`bytes / bytes_per_gb`).
    pub fn gb(&self, bytes: f64) -> f64 {
        bytes / self.bytes_per_gb as f64
    }

    /// Volume and charge per tier for `bytes` bytes billed in one month, from the
    /// first tier on; tiers the volume does not reach are left out. Negative or
    /// NaN byte counts count as 0.
    pub fn breakdown(&self, bytes: f64) -> Vec<TierCharge> {
        let total_gb = if bytes > 0.0 { self.gb(bytes) } else { 0.0 };
        let mut charges = Vec::new();
        let mut lower = 0.0;
        for tier in &self.tiers {
            if total_gb <= lower {
                break;
            }
            let upper = tier.up_to_gb.unwrap_or(f64::INFINITY);
            let gb = total_gb.min(upper) - lower;
            charges.push(TierCharge {
                gb,
                usd_per_gb: tier.usd_per_gb,
                usd: gb * tier.usd_per_gb,
            });
            lower = upper;
        }
        charges
    }

    /// Tiered cost in USD of `bytes` bytes billed in one month (sum of
    /// [`PriceTable::breakdown`]). Accepts fractional byte counts (means).
    pub fn cost_usd(&self, bytes: f64) -> f64 {
        self.breakdown(bytes).iter().map(|c| c.usd).sum()
    }
}

/// Fleet for a monthly projection: every device downloads the full package
/// once per release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FleetParams {
    /// Number of devices in the fleet.
    pub devices: u64,
    /// Size of one update package, bytes.
    pub package_bytes: u64,
    /// Releases per month (may be fractional, e.g. 0.5 for bimonthly).
    pub releases_per_month: f64,
}

impl FleetParams {
    /// Monthly CDN bytes without peer assistance:
    /// `devices × package_bytes × releases_per_month` (bytes).
    pub fn monthly_client_server_bytes(&self) -> f64 {
        self.devices as f64 * self.package_bytes as f64 * self.releases_per_month
    }
}

/// A scenario's mean saving applied to a fleet for one month.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FleetProjection {
    /// The scenario's mean saving `W` used for the projection, percent.
    pub mean_saving_pct: f64,
    /// CDN bytes per month without peer assistance (see [`FleetParams`]), bytes.
    pub monthly_client_server_bytes: f64,
    /// CDN bytes per month with peer assistance: `monthly_client_server_bytes × (1 − W/100)`, bytes.
    pub monthly_p2p_bytes: f64,
    /// Bytes saved per month (negative if `W < 0`), bytes.
    pub monthly_saved_bytes: f64,
    /// Tiered monthly cost without peer assistance, USD.
    pub monthly_client_server_usd: f64,
    /// Tiered monthly cost with peer assistance, USD.
    pub monthly_p2p_usd: f64,
    /// Money saved per month, USD.
    pub monthly_saved_usd: f64,
}

/// Monthly bytes and USD of `fleet` without and with peer assistance, given a
/// scenario's mean saving `W` (percent, from the 2017 study's definition).
pub fn project_fleet(prices: &PriceTable, fleet: &FleetParams, mean_saving_pct: f64) -> FleetProjection {
    let cs = fleet.monthly_client_server_bytes();
    let p2p = (cs * (1.0 - mean_saving_pct / 100.0)).max(0.0);
    let (cs_usd, p2p_usd) = (prices.cost_usd(cs), prices.cost_usd(p2p));
    FleetProjection {
        mean_saving_pct,
        monthly_client_server_bytes: cs,
        monthly_p2p_bytes: p2p,
        monthly_saved_bytes: cs - p2p,
        monthly_client_server_usd: cs_usd,
        monthly_p2p_usd: p2p_usd,
        monthly_saved_usd: cs_usd - p2p_usd,
    }
}

/// Cost of one run, each mode priced as the month's only traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunCost {
    /// Scenario name of the run.
    pub scenario: String,
    /// Run identifier.
    pub run: String,
    /// Cost of `D_cs` (client-server CDN bytes), USD.
    pub client_server_usd: f64,
    /// Cost of `D_p2p` (peer-assisted CDN bytes), USD.
    pub p2p_usd: f64,
    /// `client_server_usd − p2p_usd`, USD (negative if peer assistance cost more).
    pub saved_usd: f64,
}

/// Mean cost of a scenario's runs, and its fleet projection if asked for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ScenarioCost {
    /// Scenario name.
    pub name: String,
    /// Mean over runs of the cost of `D_cs`, USD.
    pub mean_client_server_usd: f64,
    /// Mean over runs of the cost of `D_p2p`, USD.
    pub mean_p2p_usd: f64,
    /// Mean over runs of the money saved, USD.
    pub mean_saved_usd: f64,
    /// Monthly projection for the fleet with this scenario's mean saving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetProjection>,
}

/// Costs of a whole savings [`Report`] under one price table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CostReport {
    /// The price table used (USD per GB tiers).
    pub price_table: PriceTable,
    /// The fleet parameters of the projection, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetParams>,
    /// Per-scenario mean costs, in the order of `report.scenarios`.
    pub scenarios: Vec<ScenarioCost>,
    /// Per-run costs, in the order of `report.runs`.
    pub runs: Vec<RunCost>,
}

/// Prices every run and scenario of `report`; with `fleet`, also projects one
/// month of fleet traffic per scenario from its mean saving.
pub fn cost_report(report: &Report, prices: &PriceTable, fleet: Option<&FleetParams>) -> CostReport {
    let runs: Vec<RunCost> = report
        .runs
        .iter()
        .map(|r| {
            let cs = prices.cost_usd(r.client_server_bytes as f64);
            let p2p = prices.cost_usd(r.p2p_bytes as f64);
            RunCost {
                scenario: r.scenario.clone(),
                run: r.run.clone(),
                client_server_usd: cs,
                p2p_usd: p2p,
                saved_usd: cs - p2p,
            }
        })
        .collect();
    let scenarios = report
        .scenarios
        .iter()
        .map(|s| {
            let members: Vec<&RunCost> = runs.iter().filter(|r| r.scenario == s.name).collect();
            let n = members.len().max(1) as f64;
            let mean = |f: fn(&RunCost) -> f64| members.iter().map(|r| f(r)).sum::<f64>() / n;
            ScenarioCost {
                name: s.name.clone(),
                mean_client_server_usd: mean(|r| r.client_server_usd),
                mean_p2p_usd: mean(|r| r.p2p_usd),
                mean_saved_usd: mean(|r| r.saved_usd),
                fleet: fleet.map(|f| project_fleet(prices, f, s.mean_saving_pct)),
            }
        })
        .collect();
    CostReport {
        price_table: prices.clone(),
        fleet: fleet.cloned(),
        scenarios,
        runs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::savings::{summarize, RunRecord};

    const TWO_TIERS: &str = "
        name = \"test\"
        [[tier]]
        up_to_gb = 10240
        usd_per_gb = 0.085
        [[tier]]
        usd_per_gb = 0.080
    ";

    /// Equal within 1e-9 relative (1e-9 absolute near 0).
    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn fifteen_tb_across_two_tiers() {
        let t = PriceTable::from_toml_str(TWO_TIERS).unwrap();
        assert_eq!(t.bytes_per_gb, DECIMAL_GB_BYTES);
        // 15 TB = 15 360 GB (CloudFront's TB = 1024 GB) = 1.536e13 bytes at 10^9 bytes/GB.
        // 10 240 GB × $0.085 = $870.40; 5 120 GB × $0.080 = $409.60; total $1 280.00.
        let bytes = 15_360.0 * 1e9;
        let parts = t.breakdown(bytes);
        assert_eq!(parts.len(), 2);
        assert!(close(parts[0].gb, 10_240.0) && close(parts[0].usd, 870.4));
        assert!(close(parts[1].gb, 5_120.0) && close(parts[1].usd, 409.6));
        assert!(close(t.cost_usd(bytes), 1_280.0));
        // Inside the first tier and edge cases.
        assert!(close(t.cost_usd(1e9), 0.085));
        assert!(close(t.cost_usd(10_240.0 * 1e9), 870.4));
        assert_eq!(t.cost_usd(0.0), 0.0);
        assert_eq!(t.cost_usd(-5.0), 0.0);
        assert!(t.breakdown(0.0).is_empty());
    }

    #[test]
    fn gib_tables_and_the_example_file() {
        let t = PriceTable::from_toml_str(&format!("bytes_per_gb = {BINARY_GB_BYTES}\n{TWO_TIERS}")).unwrap();
        assert!(close(t.cost_usd(2.0 * BINARY_GB_BYTES as f64), 0.17));
        let example = PriceTable::from_toml_str(include_str!("../prices/cloudfront-2026-example.toml")).unwrap();
        assert_eq!(
            example.tiers[0],
            Tier {
                up_to_gb: Some(10_240.0),
                usd_per_gb: 0.085
            }
        );
        assert!(example.tiers.last().unwrap().up_to_gb.is_none());
        assert!(close(example.cost_usd(15_360.0 * 1e9), 1_280.0));
    }

    #[test]
    fn invalid_tables_are_rejected() {
        let err = |text: &str| PriceTable::from_toml_str(text).unwrap_err().to_string();
        assert_eq!(err("name = \"x\"\ntier = []"), "price table has no [[tier]]");
        assert!(err("").contains("missing field `tier`"), "{}", err(""));
        assert_eq!(
            err("[[tier]]\nup_to_gb = 5\nusd_per_gb = 1\n"),
            "tier 1: the last tier must not have up_to_gb (it is open-ended)"
        );
        assert_eq!(
            err("[[tier]]\nusd_per_gb = 1\n[[tier]]\nusd_per_gb = 1\n"),
            "tier 1: only the last tier may omit up_to_gb"
        );
        assert!(err("[[tier]]\nup_to_gb = 5\nusd_per_gb = 1\n[[tier]]\nup_to_gb = 5\nusd_per_gb = 1\n[[tier]]\nusd_per_gb = 1\n")
            .starts_with("tier 2: up_to_gb must be finite and greater than the previous bound (5 GB)"));
        assert!(err("[[tier]]\nusd_per_gb = -1\n").starts_with("tier 1: usd_per_gb must be"));
        assert!(err("[[tier]]\nusd_per_GB = 1\n").contains("unknown field `usd_per_GB`"));
        assert_eq!(
            err("bytes_per_gb = 0\n[[tier]]\nusd_per_gb = 1\n"),
            "bytes_per_gb must be positive"
        );
    }

    #[test]
    fn cost_of_a_scenario_and_fleet_projection() {
        let t = PriceTable::new(
            None,
            DECIMAL_GB_BYTES,
            vec![
                Tier {
                    up_to_gb: Some(10.0),
                    usd_per_gb: 1.0,
                },
                Tier {
                    up_to_gb: None,
                    usd_per_gb: 0.5,
                },
            ],
        )
        .unwrap();
        let rec = |run: &str, cs: u64, p2p: u64| RunRecord {
            scenario: "s".into(),
            run: run.into(),
            client_server_bytes: cs,
            p2p_bytes: p2p,
        };
        // Run 1: D_cs = 20 GB → 10 + 5 = $15; D_p2p = 4 GB → $4; saved $11.
        // Run 2: D_cs = 20 GB → $15; D_p2p = 12 GB → 10 + 1 = $11; saved $4.
        let report = summarize(&[
            rec("1", 20_000_000_000, 4_000_000_000),
            rec("2", 20_000_000_000, 12_000_000_000),
        ])
        .unwrap();
        let fleet = FleetParams {
            devices: 1000,
            package_bytes: 100_000_000,
            releases_per_month: 0.5,
        };
        let c = cost_report(&report, &t, Some(&fleet));
        assert!(
            close(c.runs[0].client_server_usd, 15.0)
                && close(c.runs[0].p2p_usd, 4.0)
                && close(c.runs[0].saved_usd, 11.0)
        );
        assert!(close(c.runs[1].p2p_usd, 11.0) && close(c.runs[1].saved_usd, 4.0));
        let s = &c.scenarios[0];
        assert!(close(s.mean_client_server_usd, 15.0) && close(s.mean_p2p_usd, 7.5) && close(s.mean_saved_usd, 7.5));
        // Mean W = (80 % + 40 %) / 2 = 60 %; fleet: 1000 × 0.1 GB × 0.5 = 50 GB → 10 + 20 = $30;
        // with P2P 20 GB → 10 + 5 = $15.
        let f = s.fleet.as_ref().unwrap();
        assert!(close(f.mean_saving_pct, 60.0));
        assert!(
            close(f.monthly_client_server_bytes, 50e9)
                && close(f.monthly_p2p_bytes, 20e9)
                && close(f.monthly_saved_bytes, 30e9)
        );
        assert!(
            close(f.monthly_client_server_usd, 30.0)
                && close(f.monthly_p2p_usd, 15.0)
                && close(f.monthly_saved_usd, 15.0)
        );
        // A negative saving projects more bytes with P2P than without.
        let worse = project_fleet(&t, &fleet, -10.0);
        assert!(close(worse.monthly_p2p_bytes, 55e9) && close(worse.monthly_saved_usd, -2.5));
    }
}
