//! `flash-crowd`: the runner of the main job (see the README).

use clap::{Parser, Subcommand};
use ota_deploy::flash_crowd::{self, FlashCrowdArgs};
use ota_deploy::lab::{self, Lab};
use ota_deploy::topology::Topology;
use ota_deploy::{lab_run, results};

/// flash-crowd: N device agents fetch a real update package from S3 through the
/// tracker, the S3-backed seeder and BitTorrent, on loopback or in the NAT lab
/// (`--topology thesis-lan|internet`, root); prints where the bytes came from
/// and the saving against N plain downloads, and appends a record per run.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: FlashCrowdArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The NAT lab (network namespaces, needs root; see deploy/src/lab).
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Prints the results table (Markdown) of record files: per topology,
    /// scenario and mode the runs, mean saving ± population σ, the 2017
    /// study's saving, origin copies, completion p50/p95 and byte sources.
    Results {
        /// Record files (`--record` of earlier runs).
        #[arg(required = true)]
        records: Vec<std::path::PathBuf>,
    },
}

fn results_command(files: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let mut records = Vec::new();
    for f in files {
        let text = std::fs::read(f).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
        let mut batch: Vec<results::ResultRecord> = serde_json::from_slice(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a JSON array of records: {e}", f.display()))?;
        records.append(&mut batch);
    }
    anyhow::ensure!(!records.is_empty(), "no records in {files:?}");
    print!("{}", results::markdown(&results::rows(&records)));
    Ok(())
}

#[derive(Subcommand)]
enum LabAction {
    /// Builds a demo lab (an internet and one router of each kind with one
    /// host), prints it and leaves it up; remove it with `lab down`.
    Up,
    /// Removes the lab with PREFIX (e.g. ota-1234-0-), or, without one,
    /// every lab whose process is gone (what `lab up` and killed runs leave).
    Down {
        /// A lab prefix, as `lab up` and `lab status` print it.
        prefix: Option<String>,
    },
    /// Lists the lab namespaces (all, or those of PREFIX) and their addresses.
    Status {
        /// A lab prefix.
        prefix: Option<String>,
    },
}

fn lab_command(action: &LabAction) -> anyhow::Result<()> {
    match action {
        LabAction::Up => {
            let mut lab = Lab::new()?;
            let table = lab::demo::build_demo(&mut lab)?;
            let prefix = lab.keep();
            print!("{table}");
            println!("remove with: flash-crowd lab down {prefix}");
        }
        LabAction::Down { prefix } => {
            let prefixes = match prefix {
                Some(p) => vec![p.clone()],
                None => Lab::stale_prefixes()?,
            };
            for p in prefixes {
                let removed = Lab::cleanup_stale(&p)?;
                println!("{p}: removed {} namespaces", removed.len());
            }
        }
        LabAction::Status { prefix } => print!("{}", lab::demo::status(prefix.as_deref())?),
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    ota_common::logging::init_logging("info");
    let cli = Cli::parse();
    if let Some(command) = &cli.command {
        let result = match command {
            Command::Lab { action } => lab_command(action),
            Command::Results { records } => results_command(records),
        };
        if let Err(e) = result {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let args = &cli.args;
    let mut failed = false;
    for run in 1..=args.runs.max(1) {
        let result = match args.topology {
            Topology::Loopback => flash_crowd::run(args).await,
            _ => tokio::task::block_in_place(|| lab_run::run(args, run)),
        };
        match result {
            Ok(summary) => {
                print!("{}", flash_crowd::render(&summary));
                if let Err(e) = save(args, &summary) {
                    eprintln!("error: {e:#}");
                    std::process::exit(1);
                }
            }
            Err(e) => {
                eprintln!("error: run {run}: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}

/// Writes the summary JSON and appends the record, as the flags ask.
fn save(args: &FlashCrowdArgs, summary: &flash_crowd::Summary) -> anyhow::Result<()> {
    if let Some(p) = &args.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(summary)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    if let Some(p) = &args.record {
        flash_crowd::append_record(p, summary)?;
    }
    Ok(())
}
