//! The results table of flash-crowd experiments (pure): records grouped by
//! topology, scenario, mode and device count, with the mean saving and its population
//! standard deviation (as the 2017 study reports them), the study's saving
//! beside ours, the origin egress in package copies, the devices'
//! completion times (p50, p95 over every device of every run) and where
//! the devices' bytes came from. `flash-crowd results` prints it.

use serde::Deserialize;

use crate::flash_crowd::nearest_rank;
use crate::topology::Scenario;

/// The fields of one experiment record this table reads (records of older
/// runners lack some; they count as loopback `p2p`).
#[derive(Debug, Clone, Deserialize)]
pub struct ResultRecord {
    /// Scenario name.
    pub scenario: String,
    /// `D_cs`, bytes.
    pub client_server_bytes: u64,
    /// `D_p2p` (origin egress), bytes.
    pub p2p_bytes: u64,
    /// `loopback`, `thesis-lan` or `internet`.
    #[serde(default = "loopback")]
    pub topology: String,
    /// `p2p`, `bittorrent-baseline` or `client-server`.
    #[serde(default = "p2p")]
    pub mode: String,
    /// The seeder's cost/speed dial (records before it have none: `fastest`).
    #[serde(default = "fastest")]
    pub origin_goal: String,
    /// Package size, bytes.
    #[serde(default)]
    pub package_bytes: u64,
    /// Per device.
    #[serde(default)]
    pub devices: Vec<DeviceBytes>,
}

impl ResultRecord {
    /// The mode as the table shows it: with the origin goal unless that
    /// is `fastest` (e.g. `p2p (within:90)`).
    fn mode_label(&self) -> String {
        if self.origin_goal == "fastest" {
            self.mode.clone()
        } else {
            format!("{} ({})", self.mode, self.origin_goal)
        }
    }
}

/// One device's sources and time, as records carry them (bytes, ms).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeviceBytes {
    /// From the origin over BitTorrent.
    pub bytes_from_origin: u64,
    /// From the origin over HTTP.
    pub bytes_from_origin_http: u64,
    /// From LAN peers.
    pub bytes_from_lan_peers: u64,
    /// From internet peers.
    pub bytes_from_internet_peers: u64,
    /// Push to verified copy.
    pub duration_ms: u64,
}

fn loopback() -> String {
    "loopback".into()
}

fn p2p() -> String {
    "p2p".into()
}

fn fastest() -> String {
    "fastest".into()
}

/// One row of the table: a (topology, scenario, mode) group.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    /// Group key.
    pub topology: String,
    /// Group key.
    pub scenario: String,
    /// Group key.
    pub mode: String,
    /// Runs in the group.
    pub runs: usize,
    /// Devices per run (group key).
    pub devices: usize,
    /// Mean saving, percent.
    pub saving_mean_pct: f64,
    /// Population standard deviation of the saving, percentage points.
    pub saving_sd_pct: f64,
    /// The 2017 study's saving for a study scenario name, percent.
    pub study_pct: Option<f64>,
    /// Mean origin egress in package copies.
    pub origin_copies: f64,
    /// Completion time percentiles over all devices of all runs, ms.
    pub p50_ms: u64,
    /// See `p50_ms`.
    pub p95_ms: u64,
    /// Shares of all received bytes, percent: origin over BitTorrent,
    /// origin over HTTP, LAN peers, internet peers.
    pub shares_pct: [f64; 4],
}

/// Groups `records` by (topology, scenario, mode with its origin goal,
/// device count), in first-seen order.
pub fn rows(records: &[ResultRecord]) -> Vec<ResultRow> {
    let key = |r: &ResultRecord| (r.topology.clone(), r.scenario.clone(), r.mode_label(), r.devices.len());
    let mut keys = Vec::new();
    for r in records {
        if !keys.contains(&key(r)) {
            keys.push(key(r));
        }
    }
    keys.into_iter()
        .map(|(topology, scenario, mode, devices)| {
            let group: Vec<&ResultRecord> = records
                .iter()
                .filter(|r| key(r) == (topology.clone(), scenario.clone(), mode.clone(), devices))
                .collect();
            let savings: Vec<f64> = group
                .iter()
                .map(|r| {
                    100.0 * (r.client_server_bytes as f64 - r.p2p_bytes as f64) / r.client_server_bytes.max(1) as f64
                })
                .collect();
            let n = savings.len() as f64;
            let mean = savings.iter().sum::<f64>() / n;
            let sd = (savings.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
            let copies = group
                .iter()
                .map(|r| r.p2p_bytes as f64 / r.package_bytes.max(1) as f64)
                .sum::<f64>()
                / n;
            let mut times: Vec<u64> = group
                .iter()
                .flat_map(|r| r.devices.iter().map(|d| d.duration_ms))
                .collect();
            times.sort_unstable();
            let mut sums = [0u64; 4];
            for d in group.iter().flat_map(|r| r.devices.iter()) {
                sums[0] += d.bytes_from_origin;
                sums[1] += d.bytes_from_origin_http;
                sums[2] += d.bytes_from_lan_peers;
                sums[3] += d.bytes_from_internet_peers;
            }
            let total = sums.iter().sum::<u64>().max(1) as f64;
            let study_pct = <Scenario as clap::ValueEnum>::from_str(&scenario, false)
                .ok()
                .map(|s| s.study_saving_pct());
            ResultRow {
                runs: group.len(),
                devices,
                saving_mean_pct: mean,
                saving_sd_pct: sd,
                study_pct,
                origin_copies: copies,
                p50_ms: nearest_rank(&times, 50),
                p95_ms: nearest_rank(&times, 95),
                shares_pct: sums.map(|s| 100.0 * s as f64 / total),
                topology,
                scenario,
                mode,
            }
        })
        .collect()
}

/// The table as Markdown.
pub fn markdown(rows: &[ResultRow]) -> String {
    let mut out = String::from(
        "| topology | scenario | mode | runs | devices | saving % (mean ± σ) | study % | origin copies | completion p50 s | p95 s | origin BT % | origin HTTP % | LAN peers % | internet peers % |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let study = r.study_pct.map(|s| format!("{s:.2}")).unwrap_or_else(|| "–".into());
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} ± {:.2} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            r.topology,
            r.scenario,
            r.mode,
            r.runs,
            r.devices,
            r.saving_mean_pct,
            r.saving_sd_pct,
            study,
            r.origin_copies,
            r.p50_ms as f64 / 1000.0,
            r.p95_ms as f64 / 1000.0,
            r.shares_pct[0],
            r.shares_pct[1],
            r.shares_pct[2],
            r.shares_pct[3],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(scenario: &str, mode: &str, p2p_bytes: u64, times: &[u64]) -> ResultRecord {
        ResultRecord {
            scenario: scenario.into(),
            client_server_bytes: 500,
            p2p_bytes,
            topology: "thesis-lan".into(),
            mode: mode.into(),
            origin_goal: "fastest".into(),
            package_bytes: 100,
            devices: times
                .iter()
                .map(|&t| DeviceBytes {
                    bytes_from_origin: 20,
                    bytes_from_lan_peers: 80,
                    duration_ms: t,
                    ..DeviceBytes::default()
                })
                .collect(),
        }
    }

    #[test]
    fn groups_by_topology_scenario_and_mode_with_population_sd_and_pooled_percentiles() {
        let records = vec![
            rec("general", "p2p", 100, &[1000, 2000]),
            rec("general", "p2p", 300, &[3000, 4000]),
            rec("general", "bittorrent-baseline", 400, &[5000, 5000]),
        ];
        let r = rows(&records);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].mode.as_str(), r[0].runs, r[0].devices), ("p2p", 2, 2));
        // Savings 80 % and 40 %: mean 60, population σ 20 (sample σ would be 28.3).
        assert!((r[0].saving_mean_pct - 60.0).abs() < 1e-9);
        assert!((r[0].saving_sd_pct - 20.0).abs() < 1e-9);
        assert_eq!(r[0].study_pct, Some(17.67));
        assert!((r[0].origin_copies - 2.0).abs() < 1e-9);
        assert_eq!((r[0].p50_ms, r[0].p95_ms), (2000, 4000));
        assert!((r[0].shares_pct[0] - 20.0).abs() < 1e-9 && (r[0].shares_pct[2] - 80.0).abs() < 1e-9);
        assert_eq!(r[1].saving_sd_pct, 0.0);
        let md = markdown(&r);
        assert!(
            md.contains("| thesis-lan | general | p2p | 2 | 2 | 60.00 ± 20.00 | 17.67 | 2.00 | 2.0 | 4.0 |"),
            "{md}"
        );
    }

    #[test]
    fn runs_under_another_origin_goal_are_their_own_row() {
        let mut cheap = rec("general", "p2p", 100, &[9000]);
        cheap.origin_goal = "cheapest".into();
        let r = rows(&[rec("general", "p2p", 300, &[1000]), cheap]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].mode, "p2p (cheapest)");
        assert!((r[1].origin_copies - 1.0).abs() < 1e-9 && (r[0].origin_copies - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_mix_scenario_has_no_study_figure_and_old_records_count_as_loopback_p2p() {
        let old: Vec<ResultRecord> = serde_json::from_str(
            r#"[{"scenario":"public=1.00","run":"run-1","client_server_bytes":10,"p2p_bytes":5}]"#,
        )
        .unwrap();
        let r = rows(&old);
        assert_eq!((r[0].topology.as_str(), r[0].mode.as_str()), ("loopback", "p2p"));
        assert_eq!(r[0].study_pct, None);
        assert!(markdown(&r).contains("| – |"));
    }
}
