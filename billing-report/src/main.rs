//! `ota-billing-report`: CDN bytes and money saved by peer-assisted OTA distribution.
//!
//! ```text
//! ota-billing-report savings --input runs.csv [--input more.json] [--format table|markdown|csv|json]
//!     [--prices prices.toml [--fleet-devices N --package-bytes B --releases-per-month R]]
//!     [--plot-dir DIR [--font FILE.ttf]]
//! ota-billing-report egress (--s3-log PATH... | --cloudfront-log PATH...) [--format table|markdown|csv|json]
//!     [--prices prices.toml]
//! ```
//!
//! `savings` reports per-scenario gain `G = D_cs − D_p2p` (bytes) and saving
//! `W = G / D_cs` (percent), following the 2017 Sony Mobile study
//! "Peer-assisted OTA updates", with costs in USD under a tiered price table.
//! `egress` sums bytes sent per object and per UTC hour from Amazon S3 server
//! access logs or Amazon CloudFront standard access logs.

use std::{
    fs::File,
    io::BufReader,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Parser, Subcommand};
use ota_billing_report::{
    cost::{cost_report, FleetParams, PriceTable},
    egress::{scan_log, EgressTally, LogFormat},
    plot::write_plots,
    render::{render_egress, render_with_cost, Format},
    run_records::{parse_csv, parse_json},
    savings::{run_saving, summarize, RunRecord},
};

/// Set to any value to print the process's peak resident set size
/// (`VmHWM` of `/proc/self/status`, KiB) to stderr on exit (Linux only).
const PEAK_RSS_ENV: &str = "OTA_BILLING_REPORT_PEAK_RSS";

/// Read buffer of access log scans, bytes.
const LOG_READ_BUFFER: usize = 256 * 1024;

#[derive(Parser)]
#[command(
    name = "ota-billing-report",
    version,
    about = "Bytes and money saved by peer-assisted OTA updates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-scenario CDN savings: G = D_cs − D_p2p (bytes), W = G / D_cs (percent), and their cost (USD).
    Savings {
        /// Run records: `.csv` (header scenario,run,client_server_bytes,p2p_bytes),
        /// `.json` (array of records), or `-` for CSV on stdin. Repeatable.
        #[arg(long = "input", required = true, value_name = "PATH")]
        inputs: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// TOML price table (`[[tier]] up_to_gb = …, usd_per_gb = …`); adds cost columns in USD.
        #[arg(long, value_name = "FILE")]
        prices: Option<PathBuf>,
        /// Fleet projection: number of devices (needs --prices, --package-bytes, --releases-per-month).
        #[arg(long, value_name = "N", requires_all = ["prices", "package_bytes", "releases_per_month"])]
        fleet_devices: Option<u64>,
        /// Fleet projection: size of one update package, bytes.
        #[arg(long, value_name = "BYTES", requires = "fleet_devices")]
        package_bytes: Option<u64>,
        /// Fleet projection: releases per month (may be fractional).
        #[arg(long, value_name = "R", requires = "fleet_devices")]
        releases_per_month: Option<f64>,
        /// Write SVG and PNG plots (bytes and saving per run per scenario, mean saving across scenarios) into DIR.
        #[arg(long, value_name = "DIR")]
        plot_dir: Option<PathBuf>,
        /// TrueType/OpenType font for plot labels (default: OTA_BILLING_REPORT_FONT or a system font).
        #[arg(long, value_name = "FILE", requires = "plot_dir")]
        font: Option<PathBuf>,
    },
    /// Bytes sent per object and per UTC hour from S3 server access logs or CloudFront standard logs.
    #[command(group(ArgGroup::new("logs").required(true).args(["s3_logs", "cloudfront_logs", "ledgers"])))]
    Egress {
        /// Amazon S3 server access log file(s), or `-` for stdin; counts `bytes_sent` of REST.GET.OBJECT.
        #[arg(long = "s3-log", value_name = "PATH", num_args = 1..)]
        s3_logs: Vec<PathBuf>,
        /// Amazon CloudFront standard access log file(s), or `-` for stdin; counts `sc-bytes` per `cs-uri-stem`.
        #[arg(long = "cloudfront-log", value_name = "PATH", num_args = 1..)]
        cloudfront_logs: Vec<PathBuf>,
        /// The origin seeder's ledger export (`ota-seeder ledger --format csv`), or `-`; bytes per release.
        #[arg(long = "ledger", value_name = "PATH", num_args = 1..)]
        ledgers: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// TOML price table; adds the cost of the total as one month's traffic (USD).
        #[arg(long, value_name = "FILE")]
        prices: Option<PathBuf>,
    },
}

fn display_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "<stdin>".into()
    } else {
        path.display().to_string()
    }
}

/// Reads one input, choosing the parser by extension; `-` is CSV on stdin.
fn load(path: &PathBuf) -> Result<Vec<RunRecord>> {
    if path.as_os_str() == "-" {
        return Ok(parse_csv(std::io::stdin().lock())?);
    }
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let open = || File::open(path).context("cannot open");
    let records = match ext.as_deref() {
        Some("csv") => parse_csv(open()?)?,
        Some("json") => parse_json(open()?)?,
        _ => bail!("unsupported input type: expected a .csv or .json file, or - for CSV on stdin"),
    };
    // Validate per file so that a zero D_cs error names the file it came from.
    for record in &records {
        run_saving(record)?;
    }
    Ok(records)
}

fn load_prices(path: &Path) -> Result<PriceTable> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read price table", path.display()))?;
    PriceTable::from_toml_str(&text).with_context(|| path.display().to_string())
}

#[allow(clippy::too_many_arguments)]
fn savings(
    inputs: Vec<PathBuf>,
    format: Format,
    prices: Option<PathBuf>,
    fleet_devices: Option<u64>,
    package_bytes: Option<u64>,
    releases_per_month: Option<f64>,
    plot_dir: Option<PathBuf>,
    font: Option<PathBuf>,
) -> Result<String> {
    let mut records = Vec::new();
    for path in &inputs {
        records.extend(load(path).with_context(|| display_name(path))?);
    }
    let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let report = summarize(&records).with_context(|| names.join(", "))?;
    let fleet = match (fleet_devices, package_bytes, releases_per_month) {
        (Some(devices), Some(package_bytes), Some(releases_per_month)) => {
            if !(releases_per_month.is_finite() && releases_per_month >= 0.0) {
                bail!("--releases-per-month must be a finite number >= 0, found {releases_per_month}");
            }
            Some(FleetParams {
                devices,
                package_bytes,
                releases_per_month,
            })
        }
        _ => None,
    };
    let prices = prices.as_deref().map(load_prices).transpose()?;
    let cost = prices.as_ref().map(|p| cost_report(&report, p, fleet.as_ref()));
    if let Some(dir) = &plot_dir {
        let written = write_plots(&report, dir, font.as_deref()).context("plots")?;
        eprintln!("wrote {} plot files to {}", written.len(), dir.display());
    }
    Ok(render_with_cost(&report, cost.as_ref(), format))
}

fn egress(
    s3_logs: Vec<PathBuf>,
    cloudfront_logs: Vec<PathBuf>,
    ledgers: Vec<PathBuf>,
    format: Format,
    prices: Option<PathBuf>,
) -> Result<String> {
    let prices = prices.as_deref().map(load_prices).transpose()?;
    let (log_format, paths) = if !s3_logs.is_empty() {
        (LogFormat::S3, s3_logs)
    } else if !cloudfront_logs.is_empty() {
        (LogFormat::Cloudfront, cloudfront_logs)
    } else {
        (LogFormat::OriginLedger, ledgers)
    };
    let mut tally = EgressTally::new();
    for path in &paths {
        let name = display_name(path);
        if path.as_os_str() == "-" {
            let stdin = std::io::stdin();
            scan_log(
                log_format,
                BufReader::with_capacity(LOG_READ_BUFFER, stdin.lock()),
                &name,
                &mut tally,
            )
        } else {
            let file = File::open(path).with_context(|| format!("{name}: cannot open"))?;
            scan_log(
                log_format,
                BufReader::with_capacity(LOG_READ_BUFFER, file),
                &name,
                &mut tally,
            )
        }
        .with_context(|| format!("{name}: read error"))?;
    }
    let mut report = tally.report(log_format);
    report.total_usd = prices.map(|p| p.cost_usd(report.total_bytes as f64));
    if report.malformed_lines > 0 {
        let first = report
            .malformed_examples
            .first()
            .map(|m| format!("; first: {m}"))
            .unwrap_or_default();
        eprintln!("warning: {} malformed line(s) skipped{first}", report.malformed_lines);
    }
    Ok(render_egress(&report, format))
}

fn run(cli: Cli) -> Result<String> {
    match cli.command {
        Command::Savings {
            inputs,
            format,
            prices,
            fleet_devices,
            package_bytes,
            releases_per_month,
            plot_dir,
            font,
        } => savings(
            inputs,
            format,
            prices,
            fleet_devices,
            package_bytes,
            releases_per_month,
            plot_dir,
            font,
        ),
        Command::Egress {
            s3_logs,
            cloudfront_logs,
            ledgers,
            format,
            prices,
        } => egress(s3_logs, cloudfront_logs, ledgers, format, prices),
    }
}

/// Peak resident set size of this process, KiB (`VmHWM`), on Linux.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> ExitCode {
    let code = match run(Cli::parse()) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    };
    if std::env::var_os(PEAK_RSS_ENV).is_some() {
        match peak_rss_kib() {
            Some(kib) => eprintln!("peak RSS (VmHWM): {kib} kB"),
            None => eprintln!("peak RSS: unavailable (no /proc/self/status)"),
        }
    }
    code
}
