//! `flash-crowd`: the runner of the main job (see the README).

use clap::{Parser, Subcommand};
use ota_deploy::flash_crowd::{self, FlashCrowdArgs};
use ota_deploy::lab::{self, Lab};

/// flash-crowd: N device agents fetch a real update package from S3 through the
/// tracker, the S3-backed seeder and BitTorrent, all on loopback; prints where
/// the bytes came from and the saving against N plain downloads.
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
    if let Some(Command::Lab { action }) = &cli.command {
        if let Err(e) = lab_command(action) {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    match flash_crowd::run(&cli.args).await {
        Ok(summary) => {
            print!("{}", flash_crowd::render(&summary));
            if let Some(p) = &cli.args.summary_json {
                if let Err(e) = std::fs::write(p, serde_json::to_vec_pretty(&summary).unwrap_or_default()) {
                    eprintln!("error: cannot write {}: {e}", p.display());
                    std::process::exit(1);
                }
            }
            if let Some(p) = &cli.args.record {
                if let Err(e) = flash_crowd::append_record(p, &cli.args.scenario, &summary) {
                    eprintln!("error: {e:#}");
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
