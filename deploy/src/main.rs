//! `flash-crowd`: the runner of the main job (see the README).

use clap::Parser;
use ota_deploy::flash_crowd::{self, FlashCrowdArgs};

/// flash-crowd: N device agents fetch a real update package from S3 through the
/// tracker, the S3-backed seeder and BitTorrent, all on loopback; prints where
/// the bytes came from and the saving against N plain downloads.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    args: FlashCrowdArgs,
}

#[tokio::main]
async fn main() {
    ota_common::logging::init_logging("info");
    let cli = Cli::parse();
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
