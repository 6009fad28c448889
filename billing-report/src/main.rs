//! `ota-billing-report`: CDN bytes saved by peer-assisted OTA distribution.
//!
//! `ota-billing-report savings --input runs.csv [--input more.json] [--format table|markdown|csv|json]`
//! reports per-scenario gain `G = D_cs − D_p2p` (bytes) and saving
//! `W = G / D_cs` (percent), following the 2017 Sony Mobile study
//! "Peer-assisted OTA updates".

use std::{fs::File, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ota_billing_report::{
    render::{render, Format},
    run_records::{parse_csv, parse_json},
    savings::{run_saving, summarize, RunRecord},
};

#[derive(Parser)]
#[command(name = "ota-billing-report", version, about = "Bytes saved by peer-assisted OTA updates")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-scenario CDN savings: G = D_cs − D_p2p (bytes), W = G / D_cs (percent).
    Savings {
        /// Run records: `.csv` (header scenario,run,client_server_bytes,p2p_bytes),
        /// `.json` (array of records), or `-` for CSV on stdin. Repeatable.
        #[arg(long = "input", required = true, value_name = "PATH")]
        inputs: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
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

fn run(cli: Cli) -> Result<String> {
    let Command::Savings { inputs, format } = cli.command;
    let mut records = Vec::new();
    for path in &inputs {
        let name = if path.as_os_str() == "-" { "<stdin>".into() } else { path.display().to_string() };
        records.extend(load(path).with_context(|| name)?);
    }
    let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let report = summarize(&records).with_context(|| names.join(", "))?;
    Ok(render(&report, format))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
