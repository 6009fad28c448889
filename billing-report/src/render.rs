//! Rendering a [`Report`] as an aligned table, Markdown, CSV or JSON (pure).
//!
//! Byte columns are CDN bytes (`D_cs`, `D_p2p`), percentage columns are the
//! saving `W = G / D_cs` with `G = D_cs − D_p2p`, as defined by the 2017 Sony
//! Mobile study "Peer-assisted OTA updates".

use std::fmt::Write;

use crate::savings::{Report, ScenarioSummary};

/// Output format of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned plain-text tables (scenarios, runs, saving range).
    Table,
    /// Markdown tables (scenarios, runs, saving range).
    Markdown,
    /// One CSV row per scenario with full-precision numbers; empty CI when `n = 1`.
    Csv,
    /// Pretty-printed JSON of the whole [`Report`] (CI `null` when `n = 1`).
    Json,
}

/// Renders `report` in `format`; the result ends with a newline.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Table => table(report),
        Format::Markdown => markdown(report),
        Format::Csv => csv(report),
        Format::Json => json(report),
    }
}

const SCENARIO_HEADER: [&str; 9] = [
    "scenario",
    "runs",
    "mean D_cs (bytes)",
    "stdev D_cs (bytes)",
    "mean D_p2p (bytes)",
    "stdev D_p2p (bytes)",
    "mean W (%)",
    "stdev W (%)",
    "95% CI W (±%)",
];
const RUN_HEADER: [&str; 6] = ["scenario", "run", "D_cs (bytes)", "D_p2p (bytes)", "G (bytes)", "W (%)"];

/// Human-readable rows: scenario table and run table (numbers rounded).
fn rows(report: &Report) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let scenarios = report
        .scenarios
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.runs.to_string(),
                format!("{:.0}", s.mean_client_server_bytes),
                format!("{:.0}", s.stdev_client_server_bytes),
                format!("{:.0}", s.mean_p2p_bytes),
                format!("{:.0}", s.stdev_p2p_bytes),
                format!("{:.2}", s.mean_saving_pct),
                format!("{:.2}", s.stdev_saving_pct),
                s.ci95_saving_pct.map_or("n/a".into(), |c| format!("{c:.2}")),
            ]
        })
        .collect();
    let runs = report
        .runs
        .iter()
        .map(|r| {
            vec![
                r.scenario.clone(),
                r.run.clone(),
                r.client_server_bytes.to_string(),
                r.p2p_bytes.to_string(),
                r.gain_bytes.to_string(),
                format!("{:.2}", r.saving_pct),
            ]
        })
        .collect();
    (scenarios, runs)
}

fn range_line(report: &Report) -> String {
    format!(
        "mean saving W across scenarios: lowest {:.2}%, highest {:.2}%\n",
        report.lowest_mean_saving_pct, report.highest_mean_saving_pct
    )
}

/// Aligned text table: the first `left` (text) columns left-aligned, numbers right-aligned.
fn text_table(header: &[&str], left: usize, rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| if i < left { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    out += &line(widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>().iter().map(String::as_str).collect());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Aligned plain-text rendering: scenario table, run table and the saving range.
pub fn table(report: &Report) -> String {
    let (scenarios, runs) = rows(report);
    format!(
        "{}\n{}\n{}",
        text_table(&SCENARIO_HEADER, 1, &scenarios),
        text_table(&RUN_HEADER, 2, &runs),
        range_line(report)
    )
}

fn md_table(header: &[&str], left: usize, rows: &[Vec<String>]) -> String {
    let esc = |c: &str| c.replace('|', "\\|");
    let mut out = format!("| {} |\n", header.join(" | "));
    let align: Vec<&str> = (0..header.len()).map(|i| if i < left { ":---" } else { "---:" }).collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| esc(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// Markdown rendering: scenario table, run table and the saving range.
pub fn markdown(report: &Report) -> String {
    let (scenarios, runs) = rows(report);
    format!(
        "## Scenarios\n\n{}\n## Runs\n\n{}\n{}",
        md_table(&SCENARIO_HEADER, 1, &scenarios),
        md_table(&RUN_HEADER, 2, &runs),
        range_line(report)
    )
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Header of [`csv`] output: bytes columns in bytes, `*_pct` columns in percent.
pub const SUMMARY_CSV_HEADER: &str = "scenario,runs,mean_client_server_bytes,stdev_client_server_bytes,mean_p2p_bytes,stdev_p2p_bytes,mean_saving_pct,stdev_saving_pct,ci95_saving_pct";

/// CSV rendering: [`SUMMARY_CSV_HEADER`] then one row per scenario
/// (shortest round-trip number formatting; empty `ci95_saving_pct` when `n = 1`).
pub fn csv(report: &Report) -> String {
    let mut out = format!("{SUMMARY_CSV_HEADER}\n");
    for s in &report.scenarios {
        let ScenarioSummary { name, runs, .. } = s;
        let ci = s.ci95_saving_pct.map_or(String::new(), |c| c.to_string());
        let _ = writeln!(
            out,
            "{},{runs},{},{},{},{},{},{},{ci}",
            csv_field(name),
            s.mean_client_server_bytes,
            s.stdev_client_server_bytes,
            s.mean_p2p_bytes,
            s.stdev_p2p_bytes,
            s.mean_saving_pct,
            s.stdev_saving_pct,
        );
    }
    out
}

/// JSON rendering of the whole report:
/// `{"scenarios":[...],"runs":[...],"lowest_mean_saving_pct","highest_mean_saving_pct"}`.
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("a Report always serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::savings::{summarize, RunRecord};

    fn report() -> Report {
        let rec = |s: &str, r: &str, cs, p2p| RunRecord { scenario: s.into(), run: r.into(), client_server_bytes: cs, p2p_bytes: p2p };
        summarize(&[rec("flash, 100", "1", 100, 60), rec("flash, 100", "2", 100, 40), rec("solo|x", "1", 1000, 1100)]).unwrap()
    }

    fn keys(v: &serde_json::Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn json_shape() {
        let v: serde_json::Value = serde_json::from_str(&render(&report(), Format::Json)).unwrap();
        assert_eq!(keys(&v), ["highest_mean_saving_pct", "lowest_mean_saving_pct", "runs", "scenarios"]);
        let mut scenario_keys = vec![
            "name", "runs", "mean_client_server_bytes", "mean_p2p_bytes", "mean_saving_pct", "stdev_saving_pct",
            "ci95_saving_pct", "stdev_client_server_bytes", "stdev_p2p_bytes",
        ];
        scenario_keys.sort_unstable();
        assert_eq!(keys(&v["scenarios"][0]), scenario_keys);
        assert_eq!(keys(&v["runs"][0]), ["client_server_bytes", "gain_bytes", "p2p_bytes", "run", "saving_pct", "scenario"]);
        assert_eq!(v["scenarios"][1]["ci95_saving_pct"], serde_json::Value::Null);
        assert_eq!(v["runs"][2]["gain_bytes"], -100);
        assert_eq!(v["lowest_mean_saving_pct"], -10.0);
        assert_eq!(v["highest_mean_saving_pct"], 50.0);
    }

    #[test]
    fn csv_rows() {
        let out = render(&report(), Format::Csv);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], SUMMARY_CSV_HEADER);
        let (head, ci) = lines[1].rsplit_once(',').unwrap();
        assert_eq!(head, "\"flash, 100\",2,100,0,50,10,50,10");
        assert!((ci.parse::<f64>().unwrap() - 127.06).abs() < 1e-9);
        assert_eq!(lines[2], "solo|x,1,1000,0,1100,0,-10,0,");
    }

    #[test]
    fn table_is_aligned() {
        let out = render(&report(), Format::Table);
        let block: Vec<&str> = out.split("\n\n").next().unwrap().lines().collect();
        assert_eq!(block.len(), 4);
        assert!(block[2].starts_with("flash, 100") && block[2].ends_with("127.06"), "{out}");
        assert!(block[3].ends_with("n/a"));
        let width = |l: &str| l.chars().count();
        assert!(block.iter().all(|l| width(l) == width(block[0])), "{out}");
        assert!(out.ends_with("lowest -10.00%, highest 50.00%\n"));
    }

    #[test]
    fn markdown_tables() {
        let out = render(&report(), Format::Markdown);
        assert!(out.contains("| scenario | runs | mean D_cs (bytes)"));
        assert!(out.contains("| solo\\|x | 1 | 1000 | 0 | 1100 | 0 | -10.00 | 0.00 | n/a |"), "{out}");
        assert!(out.contains("| flash, 100 | 1 | 100 | 60 | 40 | 40.00 |"), "{out}");
    }
}
