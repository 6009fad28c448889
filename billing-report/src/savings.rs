//! Savings statistics of peer-assisted OTA runs (pure, no I/O).
//!
//! Definitions from the 2017 Sony Mobile study "Peer-assisted OTA updates":
//! per run, `D_cs` = CDN bytes in client-server mode, `D_p2p` = CDN bytes in
//! peer-assisted mode, gain `G = D_cs − D_p2p` (bytes, negative when the
//! peer-assisted run used more CDN bytes) and saving `W = G / D_cs`, expressed
//! here in percent. Per scenario the study reports the mean and the
//! *population* standard deviation of `D_cs`, `D_p2p` and `W`; this module
//! adds a 95 % confidence interval for the mean saving, which (unlike the
//! reported spread) uses the *sample* standard deviation (divisor `n − 1`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One experiment run: CDN bytes served without and with peer assistance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Scenario name (e.g. a flash-crowd configuration); runs are grouped by it.
    pub scenario: String,
    /// Run identifier within the scenario.
    pub run: String,
    /// `D_cs`: bytes served by the CDN in plain client-server mode.
    pub client_server_bytes: u64,
    /// `D_p2p`: bytes served by the CDN in peer-assisted (BitTorrent) mode.
    pub p2p_bytes: u64,
}

/// Gain and saving of one run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunSaving {
    /// Scenario name of the run.
    pub scenario: String,
    /// Run identifier.
    pub run: String,
    /// `D_cs`, bytes.
    pub client_server_bytes: u64,
    /// `D_p2p`, bytes.
    pub p2p_bytes: u64,
    /// `G = D_cs − D_p2p`, bytes; negative when peer assistance cost CDN bytes.
    pub gain_bytes: i128,
    /// `W = G / D_cs`, percent.
    pub saving_pct: f64,
}

/// Per-scenario statistics. Field order is the JSON key order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ScenarioSummary {
    /// Scenario name.
    pub name: String,
    /// Number of runs `n` in the scenario.
    pub runs: usize,
    /// Mean of `D_cs`, bytes.
    pub mean_client_server_bytes: f64,
    /// Mean of `D_p2p`, bytes.
    pub mean_p2p_bytes: f64,
    /// Mean of `W`, percent.
    pub mean_saving_pct: f64,
    /// Population standard deviation (divisor `n`) of `W`, percent, as in the 2017 study.
    pub stdev_saving_pct: f64,
    /// Half-width of the 95 % confidence interval of the mean saving, percent:
    /// `t(n−1) · s / √n` with `s` the *sample* standard deviation (divisor `n − 1`)
    /// of `W`. `None` (JSON `null`) when `n = 1`.
    pub ci95_saving_pct: Option<f64>,
    /// Population standard deviation of `D_cs`, bytes.
    pub stdev_client_server_bytes: f64,
    /// Population standard deviation of `D_p2p`, bytes.
    pub stdev_p2p_bytes: f64,
}

/// Full savings report: per-scenario statistics, per-run gains and the range
/// of scenario mean savings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Report {
    /// Scenario summaries, in order of first appearance in the input.
    pub scenarios: Vec<ScenarioSummary>,
    /// Every run with its gain (bytes) and saving (percent), in input order.
    pub runs: Vec<RunSaving>,
    /// Lowest scenario mean saving, percent.
    pub lowest_mean_saving_pct: f64,
    /// Highest scenario mean saving, percent.
    pub highest_mean_saving_pct: f64,
}

/// Why a report cannot be computed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SavingsError {
    /// The input contained no runs.
    #[error("no runs")]
    NoRuns,
    /// `D_cs = 0`, so the saving `W = G / D_cs` is undefined.
    #[error("scenario {scenario:?} run {run:?}: client_server_bytes is 0, so saving W = G / D_cs is undefined")]
    ZeroClientServerBytes {
        /// Scenario of the offending run.
        scenario: String,
        /// Run identifier of the offending run.
        run: String,
    },
}

/// Two-sided 95 % Student t critical values for 1..=30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// Two-sided 95 % Student t critical value for `df` degrees of freedom
/// (table for 1..=30, normal approximation 1.96 beyond); `None` for `df = 0`.
pub fn t_critical_95(df: usize) -> Option<f64> {
    match df {
        0 => None,
        1..=30 => Some(T95[df - 1]),
        _ => Some(1.96),
    }
}

/// Gain `G = D_cs − D_p2p` (bytes) and saving `W = G / D_cs` (percent) of one run.
///
/// Fails with [`SavingsError::ZeroClientServerBytes`] when `D_cs = 0`.
pub fn run_saving(record: &RunRecord) -> Result<RunSaving, SavingsError> {
    if record.client_server_bytes == 0 {
        return Err(SavingsError::ZeroClientServerBytes {
            scenario: record.scenario.clone(),
            run: record.run.clone(),
        });
    }
    let gain = i128::from(record.client_server_bytes) - i128::from(record.p2p_bytes);
    Ok(RunSaving {
        scenario: record.scenario.clone(),
        run: record.run.clone(),
        client_server_bytes: record.client_server_bytes,
        p2p_bytes: record.p2p_bytes,
        gain_bytes: gain,
        saving_pct: 100.0 * gain as f64 / record.client_server_bytes as f64,
    })
}

/// Mean and sum of squared deviations of `xs` (non-empty).
fn mean_ss(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    (mean, xs.iter().map(|x| (x - mean).powi(2)).sum())
}

/// Mean and population standard deviation (divisor `n`) of `xs` (non-empty).
fn mean_pop_stdev(xs: &[f64]) -> (f64, f64) {
    let (mean, ss) = mean_ss(xs);
    (mean, (ss / xs.len() as f64).sqrt())
}

fn summarize_scenario(name: &str, runs: &[&RunSaving]) -> ScenarioSummary {
    let n = runs.len();
    let col = |f: fn(&RunSaving) -> f64| runs.iter().map(|r| f(r)).collect::<Vec<_>>();
    let (mean_cs, sd_cs) = mean_pop_stdev(&col(|r| r.client_server_bytes as f64));
    let (mean_p2p, sd_p2p) = mean_pop_stdev(&col(|r| r.p2p_bytes as f64));
    let w = col(|r| r.saving_pct);
    let (mean_w, ss_w) = mean_ss(&w);
    let ci = t_critical_95(n - 1).map(|t| t * (ss_w / (n - 1) as f64).sqrt() / (n as f64).sqrt());
    ScenarioSummary {
        name: name.to_owned(),
        runs: n,
        mean_client_server_bytes: mean_cs,
        mean_p2p_bytes: mean_p2p,
        mean_saving_pct: mean_w,
        stdev_saving_pct: (ss_w / n as f64).sqrt(),
        ci95_saving_pct: ci,
        stdev_client_server_bytes: sd_cs,
        stdev_p2p_bytes: sd_p2p,
    }
}

/// Computes per-run gains (bytes) and savings (percent), per-scenario
/// statistics and the lowest/highest scenario mean saving (percent).
///
/// Scenarios keep the order in which they first appear in `records`.
/// Errors: [`SavingsError::NoRuns`] for empty input,
/// [`SavingsError::ZeroClientServerBytes`] for a run with `D_cs = 0`.
pub fn summarize(records: &[RunRecord]) -> Result<Report, SavingsError> {
    if records.is_empty() {
        return Err(SavingsError::NoRuns);
    }
    let runs = records.iter().map(run_saving).collect::<Result<Vec<_>, _>>()?;
    let mut names: Vec<&str> = Vec::new();
    for r in &runs {
        if !names.contains(&r.scenario.as_str()) {
            names.push(&r.scenario);
        }
    }
    let scenarios: Vec<ScenarioSummary> = names
        .iter()
        .map(|name| {
            let members: Vec<&RunSaving> = runs.iter().filter(|r| r.scenario == *name).collect();
            summarize_scenario(name, &members)
        })
        .collect();
    let means = scenarios.iter().map(|s| s.mean_saving_pct);
    let lowest = means.clone().fold(f64::INFINITY, f64::min);
    let highest = means.fold(f64::NEG_INFINITY, f64::max);
    Ok(Report {
        scenarios,
        runs,
        lowest_mean_saving_pct: lowest,
        highest_mean_saving_pct: highest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(scenario: &str, run: &str, cs: u64, p2p: u64) -> RunRecord {
        RunRecord {
            scenario: scenario.into(),
            run: run.into(),
            client_server_bytes: cs,
            p2p_bytes: p2p,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hand_computed_scenario() {
        let report = summarize(&[rec("a", "1", 100, 60), rec("a", "2", 100, 40)]).unwrap();
        assert_eq!(report.runs[0].gain_bytes, 40);
        assert!(close(report.runs[0].saving_pct, 40.0));
        assert!(close(report.runs[1].saving_pct, 60.0));
        let s = &report.scenarios[0];
        assert_eq!((s.name.as_str(), s.runs), ("a", 2));
        assert!(close(s.mean_saving_pct, 50.0));
        assert!(close(s.stdev_saving_pct, 10.0)); // population
        assert!(close(s.mean_client_server_bytes, 100.0));
        assert!(close(s.stdev_client_server_bytes, 0.0));
        assert!(close(s.mean_p2p_bytes, 50.0));
        assert!(close(s.stdev_p2p_bytes, 10.0));
        // sample stdev = sqrt(200 / 1); half-width = 12.706 * s / sqrt(2) = 127.06
        let expected = 12.706 * 200f64.sqrt() / 2f64.sqrt();
        assert!(close(s.ci95_saving_pct.unwrap(), expected));
        assert!(close(expected, 127.06));
    }

    #[test]
    fn negative_gain_single_run_and_range() {
        let report = summarize(&[rec("b", "1", 100, 150), rec("c", "1", 200, 50)]).unwrap();
        assert_eq!(report.runs[0].gain_bytes, -50);
        assert!(close(report.runs[0].saving_pct, -50.0));
        assert_eq!(report.scenarios[0].ci95_saving_pct, None);
        assert!(close(report.scenarios[0].stdev_saving_pct, 0.0));
        assert!(close(report.lowest_mean_saving_pct, -50.0));
        assert!(close(report.highest_mean_saving_pct, 75.0));
    }

    #[test]
    fn scenario_order_is_first_seen() {
        let recs = [rec("z", "1", 10, 5), rec("a", "1", 10, 5), rec("z", "2", 10, 0)];
        let report = summarize(&recs).unwrap();
        let names: Vec<_> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["z", "a"]);
        assert_eq!(report.scenarios[0].runs, 2);
        assert!(close(report.scenarios[0].mean_saving_pct, 75.0));
    }

    #[test]
    fn errors_are_clear() {
        assert_eq!(summarize(&[]).unwrap_err().to_string(), "no runs");
        let err = summarize(&[rec("a", "1", 1, 0), rec("flash", "r7", 0, 3)]).unwrap_err();
        assert!(matches!(err, SavingsError::ZeroClientServerBytes { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("\"flash\"") && msg.contains("\"r7\"") && msg.contains("client_server_bytes is 0"),
            "{msg}"
        );
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let report = summarize(&[rec("x", "1", 1, u64::MAX), rec("x", "2", u64::MAX, 0)]).unwrap();
        assert_eq!(report.runs[0].gain_bytes, 1 - i128::from(u64::MAX));
        assert_eq!(report.runs[1].gain_bytes, i128::from(u64::MAX));
        assert!(close(report.runs[1].saving_pct, 100.0));
    }

    #[test]
    fn t_table() {
        assert_eq!(t_critical_95(0), None);
        assert_eq!(t_critical_95(1), Some(12.706));
        assert_eq!(t_critical_95(30), Some(2.042));
        assert_eq!(t_critical_95(31), Some(1.96));
    }
}
