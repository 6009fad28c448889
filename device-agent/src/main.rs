use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use ota_device_agent::agent::{Agent, AgentSettings};
use ota_device_agent::download::Downloader;
use ota_tracker::client::TrackerClient;

/// ota-device-agent: receives OTA update pushes, downloads them peer-assisted, verifies and seeds.
///
/// Settings come from flags, environment variables, or a TOML file given with
/// `--config FILE` (or OTA_AGENT_CONFIG) whose keys are the long flag names
/// with `_` (flag > file > environment > default).
#[derive(Parser)]
#[command(version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent daemon.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Tracker base URL.
    #[arg(long, env = "OTA_TRACKER_URL", default_value = "http://127.0.0.1:7070")]
    tracker: String,
    /// This device's id.
    #[arg(long, env = "OTA_DEVICE_ID")]
    device_id: String,
    /// This device's token from the tracker's admin API (`POST
    /// /api/devices`), 64 hex characters; sent in announce URLs and on API
    /// calls. Required unless the tracker runs with `--device-auth off`.
    #[arg(long, env = "OTA_DEVICE_TOKEN", hide_env_values = true)]
    device_token: Option<String>,
    /// State folder (downloads, installed list).
    #[arg(long, env = "OTA_AGENT_STATE_DIR", default_value = "ota-agent-state")]
    state_dir: PathBuf,
    /// Peer-wire (BitTorrent TCP) listen address.
    #[arg(long, env = "OTA_AGENT_PEER_LISTEN", default_value = "0.0.0.0:6882")]
    peer_listen: SocketAddr,
    /// Longest a download may take, in seconds.
    #[arg(long, env = "OTA_AGENT_DOWNLOAD_TIMEOUT", default_value_t = 3600)]
    download_timeout_secs: u64,
    /// Do not fetch the newest release at start; wait for a push.
    #[arg(long, env = "OTA_AGENT_NO_CATCH_UP", default_value_t = false)]
    no_catch_up: bool,
    /// Show a progress bar on stderr.
    #[arg(long, default_value_t = false)]
    progress: bool,
    /// Pinned ed25519 public key of the device maker (64 hex characters, or a
    /// file holding them). With it, only releases whose signed manifest
    /// verifies are downloaded.
    #[arg(long, env = "OTA_MANIFEST_PUBLIC_KEY")]
    manifest_public_key: Option<String>,
    /// This device's update channel.
    #[arg(long, env = "OTA_CHANNEL", default_value = "stable")]
    channel: String,
    /// This device's model.
    #[arg(long, env = "OTA_DEVICE_MODEL", default_value = "generic")]
    model: String,
    /// Poll the release list this often, in seconds, as a fallback for missed
    /// pushes (0 disables polling).
    #[arg(long, env = "OTA_AGENT_POLL_INTERVAL", default_value_t = 300)]
    poll_interval_secs: u64,
    /// While seeding, report the bytes uploaded this often, in seconds.
    #[arg(long, env = "OTA_AGENT_REPORT_INTERVAL", default_value_t = 30)]
    report_interval_secs: u64,
}

#[tokio::main]
async fn main() {
    ota_tracker::config::init_logging("info,librqbit=warn");
    if let Err(e) = run().await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = ota_tracker::config::expand_config_file(std::env::args().collect(), "OTA_AGENT_CONFIG")?;
    let Cli { command: Command::Run(a) } = Cli::parse_from(args);
    let manifest_key = match &a.manifest_public_key {
        Some(k) => Some(ota_tracker::manifest::load_verifying_key(k)?),
        None => {
            tracing::warn!("no --manifest-public-key pinned: releases are not signature-checked");
            None
        }
    };
    let downloader = Downloader::start(&a.state_dir, a.peer_listen).await?;
    let agent = Agent::new(
        TrackerClient::new(&a.tracker, None).with_device_token(a.device_token),
        downloader,
        AgentSettings {
            device_id: a.device_id,
            state_dir: a.state_dir,
            download_timeout: Duration::from_secs(a.download_timeout_secs),
            catch_up: !a.no_catch_up,
            progress_bar: a.progress,
            report_interval: Duration::from_secs(a.report_interval_secs.max(1)),
            manifest_key,
            channel: a.channel,
            model: a.model,
            poll_interval: (a.poll_interval_secs > 0).then(|| Duration::from_secs(a.poll_interval_secs)),
        },
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = agent.clone().run() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    agent.stop().await;
    Ok(())
}
