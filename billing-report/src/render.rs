//! Rendering a [`Report`] (optionally with its [`CostReport`]) and an
//! [`EgressReport`] as an aligned table, Markdown, CSV or JSON (pure).
//!
//! Byte columns are CDN bytes (`D_cs`, `D_p2p`), percentage columns are the
//! saving `W = G / D_cs` with `G = D_cs − D_p2p`, as defined by the 2017 Sony
//! Mobile study "Peer-assisted OTA updates". Cost columns are USD under the
//! price table given (see [`crate::cost`]); egress columns are bytes sent as
//! logged by S3 (`bytes_sent`) or CloudFront (`sc-bytes`).

use std::fmt::Write;

use crate::cost::CostReport;
use crate::egress::{EgressReport, LogFormat};
use crate::savings::{Report, ScenarioSummary};

/// Output format of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned plain-text tables (savings: scenarios, runs, saving range; egress: objects, hours, totals).
    Table,
    /// Markdown tables, same content as `table`.
    Markdown,
    /// CSV with full-precision numbers (savings: one row per scenario, empty CI when `n = 1`;
    /// egress: rows `kind,name,requests,bytes`).
    Csv,
    /// Pretty-printed JSON of the whole report (savings: CI `null` when `n = 1`).
    Json,
}

/// Renders `report` in `format`; the result ends with a newline.
pub fn render(report: &Report, format: Format) -> String {
    render_with_cost(report, None, format)
}

/// Renders `report` in `format`, adding cost columns (USD) and, if the cost
/// report has a fleet projection, a fleet table, when `cost` is given. Without
/// `cost` the output is exactly [`render`]'s.
pub fn render_with_cost(report: &Report, cost: Option<&CostReport>, format: Format) -> String {
    match format {
        Format::Table => table_with_cost(report, cost),
        Format::Markdown => markdown_with_cost(report, cost),
        Format::Csv => csv_with_cost(report, cost),
        Format::Json => json_with_cost(report, cost),
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
const SCENARIO_COST_HEADER: [&str; 3] = ["mean cost D_cs (USD)", "mean cost D_p2p (USD)", "mean saved (USD)"];
const RUN_COST_HEADER: [&str; 3] = ["cost D_cs (USD)", "cost D_p2p (USD)", "saved (USD)"];
const FLEET_HEADER: [&str; 8] = [
    "scenario",
    "mean W (%)",
    "bytes/month w/o P2P",
    "bytes/month with P2P",
    "bytes/month saved",
    "USD/month w/o P2P",
    "USD/month with P2P",
    "USD/month saved",
];

fn usd(x: f64) -> String {
    format!("{x:.4}")
}

/// Headers of the scenario and run tables, with cost columns when priced.
fn headers(cost: Option<&CostReport>) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut scenario = SCENARIO_HEADER.to_vec();
    let mut run = RUN_HEADER.to_vec();
    if cost.is_some() {
        scenario.extend(SCENARIO_COST_HEADER);
        run.extend(RUN_COST_HEADER);
    }
    (scenario, run)
}

/// Fleet projection rows (bytes rounded, USD with cents), if projected.
fn fleet_rows(cost: Option<&CostReport>) -> Option<Vec<Vec<String>>> {
    let cost = cost?;
    cost.fleet.as_ref()?;
    Some(
        cost.scenarios
            .iter()
            .filter_map(|s| {
                let f = s.fleet.as_ref()?;
                Some(vec![
                    s.name.clone(),
                    format!("{:.2}", f.mean_saving_pct),
                    format!("{:.0}", f.monthly_client_server_bytes),
                    format!("{:.0}", f.monthly_p2p_bytes),
                    format!("{:.0}", f.monthly_saved_bytes),
                    format!("{:.2}", f.monthly_client_server_usd),
                    format!("{:.2}", f.monthly_p2p_usd),
                    format!("{:.2}", f.monthly_saved_usd),
                ])
            })
            .collect(),
    )
}

/// One-line descriptions of the price table and fleet, when priced.
fn cost_lines(cost: Option<&CostReport>) -> String {
    let Some(cost) = cost else { return String::new() };
    let t = &cost.price_table;
    let mut out = format!(
        "prices: {} ({} tier(s), USD per GB, 1 GB = {} bytes); run costs price each run as a month's only traffic\n",
        t.name.as_deref().unwrap_or("price table"),
        t.tiers.len(),
        t.bytes_per_gb
    );
    if let Some(f) = &cost.fleet {
        let _ = writeln!(
            out,
            "fleet: {} devices x {} bytes x {} releases/month, CDN bytes scaled by each scenario's mean saving W",
            f.devices, f.package_bytes, f.releases_per_month
        );
    }
    out
}

/// Human-readable rows: scenario table and run table (numbers rounded).
fn rows(report: &Report) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    rows_with_cost(report, None)
}

/// [`rows`] plus cost columns (USD, 4 decimals) when priced.
fn rows_with_cost(report: &Report, cost: Option<&CostReport>) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let scenarios = report
        .scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut row = vec![
                s.name.clone(),
                s.runs.to_string(),
                format!("{:.0}", s.mean_client_server_bytes),
                format!("{:.0}", s.stdev_client_server_bytes),
                format!("{:.0}", s.mean_p2p_bytes),
                format!("{:.0}", s.stdev_p2p_bytes),
                format!("{:.2}", s.mean_saving_pct),
                format!("{:.2}", s.stdev_saving_pct),
                s.ci95_saving_pct.map_or("n/a".into(), |c| format!("{c:.2}")),
            ];
            if let Some(c) = cost.and_then(|c| c.scenarios.get(i)) {
                row.extend([
                    usd(c.mean_client_server_usd),
                    usd(c.mean_p2p_usd),
                    usd(c.mean_saved_usd),
                ]);
            }
            row
        })
        .collect();
    let runs = report
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut row = vec![
                r.scenario.clone(),
                r.run.clone(),
                r.client_server_bytes.to_string(),
                r.p2p_bytes.to_string(),
                r.gain_bytes.to_string(),
                format!("{:.2}", r.saving_pct),
            ];
            if let Some(c) = cost.and_then(|c| c.runs.get(i)) {
                row.extend([usd(c.client_server_usd), usd(c.p2p_usd), usd(c.saved_usd)]);
            }
            row
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
            .map(|(i, (c, &w))| {
                if i < left {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    out += &line(
        widths
            .iter()
            .map(|&w| "-".repeat(w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
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

/// [`table`] with cost columns (USD), the fleet projection table and the
/// price/fleet description when `cost` is given.
pub fn table_with_cost(report: &Report, cost: Option<&CostReport>) -> String {
    if cost.is_none() {
        return table(report);
    }
    let (scenario_header, run_header) = headers(cost);
    let (scenarios, runs) = rows_with_cost(report, cost);
    let mut out = format!(
        "{}\n{}\n",
        text_table(&scenario_header, 1, &scenarios),
        text_table(&run_header, 2, &runs),
    );
    if let Some(fleet) = fleet_rows(cost) {
        out += &text_table(&FLEET_HEADER, 1, &fleet);
        out += "\n";
    }
    out + &range_line(report) + &cost_lines(cost)
}

fn md_table(header: &[&str], left: usize, rows: &[Vec<String>]) -> String {
    let esc = |c: &str| c.replace('|', "\\|");
    let mut out = format!("| {} |\n", header.join(" | "));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if i < left { ":---" } else { "---:" })
        .collect();
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

/// [`markdown`] with cost columns (USD), a "Fleet projection" section and the
/// price/fleet description when `cost` is given.
pub fn markdown_with_cost(report: &Report, cost: Option<&CostReport>) -> String {
    if cost.is_none() {
        return markdown(report);
    }
    let (scenario_header, run_header) = headers(cost);
    let (scenarios, runs) = rows_with_cost(report, cost);
    let mut out = format!(
        "## Scenarios\n\n{}\n## Runs\n\n{}\n",
        md_table(&scenario_header, 1, &scenarios),
        md_table(&run_header, 2, &runs),
    );
    if let Some(fleet) = fleet_rows(cost) {
        let _ = write!(
            out,
            "## Fleet projection (per month)\n\n{}\n",
            md_table(&FLEET_HEADER, 1, &fleet)
        );
    }
    out + &range_line(report) + &cost_lines(cost)
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

/// Extra CSV columns of [`csv_with_cost`] when priced: mean cost per run of
/// `D_cs`, of `D_p2p` and their difference, USD.
pub const COST_CSV_COLUMNS: &str = "mean_client_server_usd,mean_p2p_usd,mean_saved_usd";

/// Extra CSV columns of [`csv_with_cost`] with a fleet projection: monthly
/// bytes (bytes) and monthly cost (USD) without and with peer assistance.
pub const FLEET_CSV_COLUMNS: &str = "monthly_client_server_bytes,monthly_p2p_bytes,monthly_saved_bytes,monthly_client_server_usd,monthly_p2p_usd,monthly_saved_usd";

/// [`csv`] plus [`COST_CSV_COLUMNS`] (and [`FLEET_CSV_COLUMNS`] with a fleet
/// projection) when `cost` is given; full-precision numbers.
pub fn csv_with_cost(report: &Report, cost: Option<&CostReport>) -> String {
    let Some(cost) = cost else { return csv(report) };
    let base = csv(report);
    let mut lines = base.lines();
    let mut out = lines.next().unwrap_or(SUMMARY_CSV_HEADER).to_owned() + "," + COST_CSV_COLUMNS;
    if cost.fleet.is_some() {
        out = out + "," + FLEET_CSV_COLUMNS;
    }
    out.push('\n');
    for (line, c) in lines.zip(&cost.scenarios) {
        let _ = write!(
            out,
            "{line},{},{},{}",
            c.mean_client_server_usd, c.mean_p2p_usd, c.mean_saved_usd
        );
        if let Some(f) = &c.fleet {
            let _ = write!(
                out,
                ",{},{},{},{},{},{}",
                f.monthly_client_server_bytes,
                f.monthly_p2p_bytes,
                f.monthly_saved_bytes,
                f.monthly_client_server_usd,
                f.monthly_p2p_usd,
                f.monthly_saved_usd
            );
        }
        out.push('\n');
    }
    out
}

/// [`json`] with cost fields added when `cost` is given (no existing key is
/// removed or reordered): each scenario gains `mean_client_server_usd`,
/// `mean_p2p_usd`, `mean_saved_usd` (USD) and, with a fleet, `fleet` (a
/// [`crate::cost::FleetProjection`]); each run gains `client_server_usd`,
/// `p2p_usd`, `saved_usd` (USD); the top level gains `price_table` (tiers under
/// `tier`, as in the TOML file) and, with a fleet, `fleet` (the
/// [`crate::cost::FleetParams`]).
pub fn json_with_cost(report: &Report, cost: Option<&CostReport>) -> String {
    let Some(cost) = cost else { return json(report) };
    let priced = PricedReport {
        scenarios: report
            .scenarios
            .iter()
            .zip(&cost.scenarios)
            .map(|(base, c)| Priced {
                base,
                cost: ScenarioCostFields {
                    mean_client_server_usd: c.mean_client_server_usd,
                    mean_p2p_usd: c.mean_p2p_usd,
                    mean_saved_usd: c.mean_saved_usd,
                    fleet: c.fleet.as_ref(),
                },
            })
            .collect(),
        runs: report
            .runs
            .iter()
            .zip(&cost.runs)
            .map(|(base, c)| Priced {
                base,
                cost: RunCostFields {
                    client_server_usd: c.client_server_usd,
                    p2p_usd: c.p2p_usd,
                    saved_usd: c.saved_usd,
                },
            })
            .collect(),
        lowest_mean_saving_pct: report.lowest_mean_saving_pct,
        highest_mean_saving_pct: report.highest_mean_saving_pct,
        price_table: &cost.price_table,
        fleet: cost.fleet.as_ref(),
    };
    serde_json::to_string_pretty(&priced).expect("a priced report always serializes") + "\n"
}

/// A report item followed by its cost fields, as one JSON object.
#[derive(serde::Serialize)]
struct Priced<'a, T, C> {
    #[serde(flatten)]
    base: &'a T,
    #[serde(flatten)]
    cost: C,
}

#[derive(serde::Serialize)]
struct ScenarioCostFields<'a> {
    mean_client_server_usd: f64,
    mean_p2p_usd: f64,
    mean_saved_usd: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<&'a crate::cost::FleetProjection>,
}

#[derive(serde::Serialize)]
struct RunCostFields {
    client_server_usd: f64,
    p2p_usd: f64,
    saved_usd: f64,
}

#[derive(serde::Serialize)]
struct PricedReport<'a> {
    scenarios: Vec<Priced<'a, ScenarioSummary, ScenarioCostFields<'a>>>,
    runs: Vec<Priced<'a, crate::savings::RunSaving, RunCostFields>>,
    lowest_mean_saving_pct: f64,
    highest_mean_saving_pct: f64,
    price_table: &'a crate::cost::PriceTable,
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<&'a crate::cost::FleetParams>,
}

fn egress_title(report: &EgressReport) -> &'static str {
    match report.format {
        LogFormat::S3 => "S3 server access log egress (bytes_sent of REST.GET.OBJECT)",
        LogFormat::Cloudfront => "CloudFront standard log egress (sc-bytes per cs-uri-stem)",
        LogFormat::OriginLedger => "origin seeder ledger egress (BitTorrent + HTTP bytes per release info hash)",
    }
}

const OBJECT_HEADER: [&str; 4] = ["object", "requests", "bytes", "GB (10^9 bytes)"];
const HOUR_HEADER: [&str; 4] = ["hour (UTC)", "requests", "bytes", "GB (10^9 bytes)"];

fn gb(bytes: u64) -> String {
    format!("{:.3}", bytes as f64 / 1e9)
}

fn egress_rows(report: &EgressReport) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let objects = report
        .objects
        .iter()
        .map(|o| vec![o.key.clone(), o.requests.to_string(), o.bytes.to_string(), gb(o.bytes)])
        .collect();
    let hours = report
        .hours
        .iter()
        .map(|h| {
            vec![
                h.hour.to_string(),
                h.requests.to_string(),
                h.bytes.to_string(),
                gb(h.bytes),
            ]
        })
        .collect();
    (objects, hours)
}

fn egress_footer(report: &EgressReport) -> String {
    let mut out = format!(
        "total: {} bytes ({} GB) in {} request(s)",
        report.total_bytes,
        gb(report.total_bytes),
        report.total_requests
    );
    if let Some(usd) = report.total_usd {
        let _ = write!(out, ", {usd:.2} USD as one month's traffic");
    }
    let _ = writeln!(
        out,
        "\nlines: {} read, {} ignored, {} malformed",
        report.lines, report.ignored_lines, report.malformed_lines
    );
    if !report.malformed_examples.is_empty() {
        let _ = writeln!(out, "malformed lines (first {}):", report.malformed_examples.len());
        for m in &report.malformed_examples {
            let _ = writeln!(out, "  {m}");
        }
    }
    out
}

/// Renders an egress report in `format`: `table` and `markdown` give an
/// object table, an hour table, totals and malformed-line examples; `csv`
/// gives rows `kind,name,requests,bytes` with kind `object`, `hour` or
/// `total` (plus a `usd` column, filled on the total row, when priced);
/// `json` gives the whole [`EgressReport`].
pub fn render_egress(report: &EgressReport, format: Format) -> String {
    let (objects, hours) = egress_rows(report);
    match format {
        Format::Table => format!(
            "{}\n\n{}\n{}\n{}",
            egress_title(report),
            text_table(&OBJECT_HEADER, 1, &objects),
            text_table(&HOUR_HEADER, 1, &hours),
            egress_footer(report)
        ),
        Format::Markdown => format!(
            "## {}\n\n### Per object\n\n{}\n### Per hour (UTC)\n\n{}\n{}",
            egress_title(report),
            md_table(&OBJECT_HEADER, 1, &objects),
            md_table(&HOUR_HEADER, 1, &hours),
            egress_footer(report)
                .lines()
                .map(|l| match l.strip_prefix("  ") {
                    Some(example) => format!("  - {}\n", example.replace('|', "\\|")),
                    None => format!("- {l}\n"),
                })
                .collect::<String>()
        ),
        Format::Csv => {
            // With a price table, a `usd` column holds the total's cost (other rows empty).
            let (usd_header, usd_empty) = if report.total_usd.is_some() {
                (",usd", ",")
            } else {
                ("", "")
            };
            let mut out = format!("kind,name,requests,bytes{usd_header}\n");
            for o in &report.objects {
                let _ = writeln!(
                    out,
                    "object,{},{},{}{usd_empty}",
                    csv_field(&o.key),
                    o.requests,
                    o.bytes
                );
            }
            for h in &report.hours {
                let _ = writeln!(out, "hour,{},{},{}{usd_empty}", h.hour, h.requests, h.bytes);
            }
            let usd = report.total_usd.map(|u| format!(",{u}")).unwrap_or_default();
            let _ = writeln!(out, "total,,{},{}{usd}", report.total_requests, report.total_bytes);
            out
        }
        Format::Json => serde_json::to_string_pretty(report).expect("an EgressReport always serializes") + "\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::savings::{summarize, RunRecord};

    fn report() -> Report {
        let rec = |s: &str, r: &str, cs, p2p| RunRecord {
            scenario: s.into(),
            run: r.into(),
            client_server_bytes: cs,
            p2p_bytes: p2p,
        };
        summarize(&[
            rec("flash, 100", "1", 100, 60),
            rec("flash, 100", "2", 100, 40),
            rec("solo|x", "1", 1000, 1100),
        ])
        .unwrap()
    }

    fn keys(v: &serde_json::Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn json_shape() {
        let v: serde_json::Value = serde_json::from_str(&render(&report(), Format::Json)).unwrap();
        assert_eq!(
            keys(&v),
            ["highest_mean_saving_pct", "lowest_mean_saving_pct", "runs", "scenarios"]
        );
        let mut scenario_keys = vec![
            "name",
            "runs",
            "mean_client_server_bytes",
            "mean_p2p_bytes",
            "mean_saving_pct",
            "stdev_saving_pct",
            "ci95_saving_pct",
            "stdev_client_server_bytes",
            "stdev_p2p_bytes",
        ];
        scenario_keys.sort_unstable();
        assert_eq!(keys(&v["scenarios"][0]), scenario_keys);
        assert_eq!(
            keys(&v["runs"][0]),
            [
                "client_server_bytes",
                "gain_bytes",
                "p2p_bytes",
                "run",
                "saving_pct",
                "scenario"
            ]
        );
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
        assert!(
            block[2].starts_with("flash, 100") && block[2].ends_with("127.06"),
            "{out}"
        );
        assert!(block[3].ends_with("n/a"));
        let width = |l: &str| l.chars().count();
        assert!(block.iter().all(|l| width(l) == width(block[0])), "{out}");
        assert!(out.ends_with("lowest -10.00%, highest 50.00%\n"));
    }

    #[test]
    fn markdown_tables() {
        let out = render(&report(), Format::Markdown);
        assert!(out.contains("| scenario | runs | mean D_cs (bytes)"));
        assert!(
            out.contains("| solo\\|x | 1 | 1000 | 0 | 1100 | 0 | -10.00 | 0.00 | n/a |"),
            "{out}"
        );
        assert!(out.contains("| flash, 100 | 1 | 100 | 60 | 40 | 40.00 |"), "{out}");
    }
}
