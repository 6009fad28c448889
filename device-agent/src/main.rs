//! `ota-device-agent`: the device daemon (`run`) and its command-line client
//! (`status`, `pause`, `resume`, `cancel`, `history`, `installed`), which talks
//! to the daemon over its control socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use ota_client::TrackerClient;
use ota_common::config::Switch;
use ota_device_agent::agent::{Agent, AgentSettings};
use ota_device_agent::control_socket::{self, Request};
use ota_device_agent::direct_paths::{self, PathSettings, Paths};
use ota_device_agent::download::{Downloader, HttpFallback};
use ota_device_agent::download_state::ActiveRelease;
use ota_device_agent::hole_punching::HolePunching;
use ota_device_agent::network_watch;
use ota_device_agent::policy::PolicySettings;
use ota_peer::stun_probe::StunServers;
use ota_proto::stun::DEFAULT_STUN_PORT;

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

// Parsed once at start: the size of `RunArgs` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the agent daemon.
    Run(RunArgs),
    /// Show active releases: state, progress bar, speed, bytes per source.
    Status {
        #[command(flatten)]
        socket: SocketArgs,
        /// Print the daemon's JSON answer instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Pause downloading (reason: user); a device policy's pause is separate.
    Pause {
        #[command(flatten)]
        socket: SocketArgs,
        /// Info hash or name@version [default: every unfinished download].
        release: Option<String>,
    },
    /// Lift the user's pause.
    Resume {
        #[command(flatten)]
        socket: SocketArgs,
        /// Info hash or name@version [default: every paused download].
        release: Option<String>,
    },
    /// Stop a download and delete its partial data (recorded in the history).
    Cancel {
        #[command(flatten)]
        socket: SocketArgs,
        /// Info hash or name@version [default: every unfinished download].
        release: Option<String>,
    },
    /// List finished, failed, cancelled, rejected and installed releases.
    History {
        #[command(flatten)]
        socket: SocketArgs,
        /// Print the daemon's JSON answer instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Tell the agent the device's installer installed RELEASE (so seeding may end).
    Installed {
        #[command(flatten)]
        socket: SocketArgs,
        /// Info hash or name@version.
        release: String,
    },
}

/// Where the CLI finds the daemon.
#[derive(Args)]
struct SocketArgs {
    /// State folder of the daemon (its socket is STATE_DIR/agent.sock).
    #[arg(long, env = "OTA_AGENT_STATE_DIR", default_value = "ota-agent-state")]
    state_dir: PathBuf,
    /// Control socket path [default: STATE_DIR/agent.sock].
    #[arg(long, env = "OTA_AGENT_CONTROL_SOCKET")]
    control_socket: Option<PathBuf>,
}

impl SocketArgs {
    fn path(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| control_socket::default_socket_path(&self.state_dir))
    }
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
    /// Take release notices from this MQTT broker
    /// (`mqtt://[USER[:PASSWORD]@]HOST[:PORT]`, plain TCP) instead of the
    /// tracker's event stream; the stream is then held only for
    /// hole-punching introductions. Subscribes (QoS 1) to
    /// `PREFIX/releases/{CHANNEL,*}/{MODEL,*}`. Unset: the event stream.
    #[arg(long, env = "OTA_AGENT_MQTT_URL", value_name = "URL", hide_env_values = true)]
    mqtt_url: Option<ota_proto::release_notice::BrokerAddr>,
    /// Topic prefix of the release notices (the tracker's `--mqtt-prefix`).
    #[arg(long, env = "OTA_AGENT_MQTT_PREFIX", default_value = ota_proto::release_notice::DEFAULT_PREFIX)]
    mqtt_prefix: String,
    /// While seeding, report the bytes uploaded this often, in seconds.
    #[arg(long, env = "OTA_AGENT_REPORT_INTERVAL", default_value_t = 30)]
    report_interval_secs: u64,
    /// Control socket for the CLI (mode 0600) [default: STATE_DIR/agent.sock].
    #[arg(long, env = "OTA_AGENT_CONTROL_SOCKET")]
    control_socket: Option<PathBuf>,
    /// Install hook: shell command run with the verified package path as its
    /// last argument and OTA_RELEASE_NAME, OTA_RELEASE_VERSION, OTA_INFO_HASH
    /// set; exit status 0 marks the release installed, otherwise its stderr
    /// is reported as the error. Without it, the device's installer runs
    /// `ota-device-agent installed RELEASE`.
    #[arg(long, env = "OTA_AGENT_INSTALL_HOOK")]
    install_hook: Option<String>,
    /// Longest the install hook may run, in seconds; past it the hook and
    /// its children are killed and the installation counts as failed.
    #[arg(long, env = "OTA_AGENT_INSTALL_HOOK_TIMEOUT", default_value_t = 600)]
    install_hook_timeout_secs: u64,
    /// When peers deliver no payload byte for this many seconds during a
    /// download, fetch the missing pieces from the release's HTTP URL
    /// (each SHA-1 checked). 0 turns the fallback off.
    #[arg(long, env = "OTA_AGENT_HTTP_FALLBACK_AFTER", default_value_t = 30)]
    http_fallback_after_secs: u64,
    /// Client-server transport: fetch each package over HTTP from the
    /// release's URL at once instead of from peers (what a device without
    /// peer assistance does; the flash-crowd `client-server` mode). The
    /// pieces are SHA-1 checked as with the fallback, then the package is
    /// verified and seeded. Needs the HTTP fallback on.
    #[arg(long, env = "OTA_AGENT_HTTP_ONLY", default_value_t = false)]
    http_only: bool,
    /// Milliseconds without progress after which a download drops and
    /// re-makes its peer connections (works around librqbit never sending
    /// `have` messages to a peer that connected while it held no piece;
    /// the delay doubles while reconnects bring nothing). 0: never.
    #[arg(long, env = "OTA_AGENT_RECONNECT_AFTER_MS", default_value_t = 2000)]
    reconnect_after_ms: u64,
    /// LAN pairing: report this device's LAN address (the interface that
    /// routes to the tracker, with the peer port) so that the tracker hands
    /// it to devices behind the same public address. `off` for plain
    /// BitTorrent behaviour.
    #[arg(long, env = "OTA_AGENT_LAN_PAIRING", value_enum, default_value_t = Switch::On)]
    lan_pairing: Switch,
    /// Map the peer port (TCP and UDP) on the home router over UPnP IGD,
    /// renew the lease, remove the mapping on exit. Only tried from a
    /// private LAN address.
    #[arg(long, env = "OTA_AGENT_UPNP", value_enum, default_value_t = Switch::On)]
    upnp: Switch,
    /// UPnP lease asked for, seconds (renewed at half of it); 0 asks for a
    /// permanent mapping.
    #[arg(long, env = "OTA_AGENT_UPNP_LEASE_SECS", default_value_t = 3600)]
    upnp_lease_secs: u32,
    /// Probe the NAT over STUN from the UDP peer socket at start.
    #[arg(long, env = "OTA_AGENT_STUN", value_enum, default_value_t = Switch::On)]
    stun: Switch,
    /// STUN server for the reflexive address. [default: the tracker's host, port 3478]
    #[arg(long, env = "OTA_AGENT_STUN_SERVER")]
    stun_server: Option<SocketAddr>,
    /// A second STUN server with RFC 5780 behaviour discovery (coturn on
    /// two addresses), for the NAT's mapping and filtering behaviour.
    #[arg(long, env = "OTA_AGENT_STUN_RFC5780_SERVER")]
    stun_rfc5780_server: Option<SocketAddr>,
    /// Hole punching: run the QUIC peer transport on the UDP peer socket
    /// (needs `--stun on`): librqbit's peer connections go through an
    /// in-process SOCKS5 bridge, and peers the tracker hands out as bridge
    /// addresses are reached over a punched, certificate-pinned QUIC path.
    #[arg(long, env = "OTA_AGENT_QUIC", value_enum, default_value_t = Switch::On)]
    quic: Switch,
    /// Follow network changes (interface addresses over netlink, the route
    /// to the tracker): on a new local address, move the QUIC endpoint to a
    /// new socket so that dialed QUIC connections (the origin, peers this
    /// device called) migrate, and report the new direct paths at once.
    #[arg(long, env = "OTA_AGENT_FOLLOW_NETWORK", value_enum, default_value_t = Switch::On)]
    follow_network: Switch,
    #[command(flatten)]
    policy: PolicySettings,
}

#[tokio::main]
async fn main() {
    ota_common::logging::init_logging("info,librqbit=warn");
    if let Err(e) = run().await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = ota_common::config::expand_config_file(std::env::args().collect(), "OTA_AGENT_CONFIG")?;
    let a = match Cli::parse_from(args).command {
        Command::Run(a) => a,
        Command::Status { socket, json } => return cli(&socket, Request::Status, json).await,
        Command::Pause { socket, release } => return cli(&socket, Request::Pause { release }, false).await,
        Command::Resume { socket, release } => return cli(&socket, Request::Resume { release }, false).await,
        Command::Cancel { socket, release } => return cli(&socket, Request::Cancel { release }, false).await,
        Command::History { socket, json } => return cli(&socket, Request::History, json).await,
        Command::Installed { socket, release } => return cli(&socket, Request::Installed { release }, false).await,
    };
    let manifest_key = match &a.manifest_public_key {
        Some(k) => Some(ota_common::keys::load_verifying_key(k)?),
        None => {
            tracing::warn!("no --manifest-public-key pinned: releases are not signature-checked");
            None
        }
    };
    let tracker_addr = direct_paths::tracker_addr(&a.tracker).await;
    let path_settings = PathSettings {
        lan_pairing: a.lan_pairing == Switch::On,
        upnp: a.upnp == Switch::On,
        upnp_lease_secs: a.upnp_lease_secs,
        stun: (a.stun == Switch::On)
            .then(|| {
                let primary = a
                    .stun_server
                    .or(tracker_addr.map(|t| SocketAddr::new(t.ip(), DEFAULT_STUN_PORT)))?;
                Some(StunServers {
                    primary,
                    rfc5780: a.stun_rfc5780_server,
                })
            })
            .flatten(),
        device_id: a.device_id.clone(),
    };
    let paths = Arc::new(Paths::discover(&path_settings, a.peer_listen, tracker_addr).await);
    let tracker = TrackerClient::new(&a.tracker, None).with_device_token(a.device_token.clone());
    let punching = match (a.quic, paths.take_udp()) {
        (Switch::On, Some(udp)) => {
            let nat = paths.status().nat.map(|n| n.kind);
            let p = HolePunching::start(udp, a.peer_listen, &a.state_dir, tracker.clone(), nat).await?;
            paths.set_quic(p.quic_path());
            paths.set_quic_udp(p.bridge.local_udp().ok());
            Some(Arc::new(p))
        }
        (Switch::On, None) => {
            tracing::warn!("no UDP peer socket (is --stun on?): no QUIC transport, no hole punching");
            None
        }
        (Switch::Off, _) => None,
    };
    let downloader = Downloader::start_announcing(
        &a.state_dir,
        a.peer_listen,
        paths.announce_port().await,
        punching.clone(),
    )
    .await?
    .with_http_fallback((a.http_fallback_after_secs > 0).then(|| HttpFallback {
        after: Duration::from_secs(a.http_fallback_after_secs),
        device: a.device_id.clone(),
        token: a.device_token.clone(),
        http_only: a.http_only,
    }));
    let downloader = downloader
        .with_reconnect_after((a.reconnect_after_ms > 0).then(|| Duration::from_millis(a.reconnect_after_ms)));
    downloader.set_upload_limit(a.policy.upload_limit_bps);
    let received = downloader.fetched_counter();
    let socket_path = a
        .control_socket
        .clone()
        .unwrap_or_else(|| control_socket::default_socket_path(&a.state_dir));
    if path_settings.lan_pairing || path_settings.upnp || path_settings.stun.is_some() {
        paths.start_reporting(tracker.clone()).await;
    }
    // Clones share the connection pool that a network change renews.
    let paths_client = tracker.clone();
    let agent = Agent::new(
        tracker,
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
            install_hook: a.install_hook,
            install_hook_timeout: Duration::from_secs(a.install_hook_timeout_secs.max(1)),
            policy: a.policy,
            broker: a.mqtt_url.map(|b| (b, a.mqtt_prefix)),
        },
    )?;
    agent.set_paths(paths.clone());
    let control = control_socket::serve(&socket_path, agent.clone()).await?;
    let watcher = match (a.follow_network, tracker_addr) {
        (Switch::On, Some(t)) => Some(network_watch::spawn(
            t,
            paths_client.clone(),
            punching.as_ref().map(|p| p.bridge.clone()),
            paths.clone(),
            received.clone(),
            path_settings.stun,
        )),
        (Switch::On, None) => {
            tracing::warn!("the tracker's address is unknown: network changes are not followed");
            None
        }
        (Switch::Off, _) => None,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = agent.clone().run() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    control.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    let _ = std::fs::remove_file(&socket_path);
    agent.stop().await;
    if let Some(p) = &punching {
        p.bridge.close().await;
    }
    paths.stop().await;
    Ok(())
}

/// One CLI command: ask the daemon, print its answer (exit 1 on refusal).
async fn cli(socket: &SocketArgs, req: Request, json: bool) -> anyhow::Result<()> {
    let is_status = matches!(req, Request::Status);
    let resp = control_socket::request(&socket.path(), &req).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
    } else if let Some(e) = &resp.error {
        anyhow::bail!("{e}");
    } else if is_status {
        print_status(resp.releases.as_deref().unwrap_or_default());
        if let Some(p) = &resp.paths {
            println!("network: {}", p.summary());
        }
    } else if let Some(h) = &resp.history {
        print!("{}", render_history(h));
    } else if let Some(m) = &resp.message {
        println!("{m}");
    }
    anyhow::ensure!(resp.ok, "{}", resp.error.unwrap_or_default());
    Ok(())
}

fn print_status(releases: &[ActiveRelease]) {
    if releases.is_empty() {
        println!("no active release");
    }
    for r in releases {
        println!("{}  {}  {}", r.label(), r.state_label(), r.info_hash);
        println!("  {}", render_bar(r));
        println!(
            "  speed {}/s  from origin (BitTorrent) {}  from peers {}  from origin (HTTP) {}  uploaded {}",
            indicatif::HumanBytes(r.speed_bps),
            indicatif::HumanBytes(r.received.origin_bittorrent),
            indicatif::HumanBytes(r.received.peers),
            indicatif::HumanBytes(r.received.origin_http),
            indicatif::HumanBytes(r.uploaded),
        );
    }
}

/// Keeps the last frame indicatif draws, so a bar renders the same
/// (statically, once) whether stdout is a terminal or a pipe.
#[derive(Debug, Default, Clone)]
struct LastFrame(std::sync::Arc<std::sync::Mutex<String>>);

impl indicatif::TermLike for LastFrame {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        if !s.trim().is_empty() {
            *self.0.lock().unwrap() = s.to_string();
        }
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `[#####>-----] 12.00 MiB/40.00 MiB (30%)` through indicatif's template engine.
fn render_bar(r: &ActiveRelease) -> String {
    let frame = LastFrame::default();
    let target = indicatif::ProgressDrawTarget::term_like(Box::new(frame.clone()));
    let bar = indicatif::ProgressBar::with_draw_target(Some(r.size.max(1)), target);
    bar.set_style(
        indicatif::ProgressStyle::with_template("[{bar:40}] {bytes}/{total_bytes} ({percent}%)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("#>-"),
    );
    bar.set_position(r.progress_bytes.min(r.size));
    bar.abandon();
    let s = frame.0.lock().unwrap().clone();
    s
}

fn render_history(h: &[ota_device_agent::download_state::HistoryEntry]) -> String {
    if h.is_empty() {
        return "no history yet\n".into();
    }
    let mut out = format!(
        "{:<24} {:<30} {:<10} {:>9} {:>12}  {}\n",
        "ended (UTC)", "release", "outcome", "time s", "received", "reason"
    );
    for e in h {
        let ended = chrono::DateTime::from_timestamp_millis(e.ended_at_ms as i64)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<24} {:<30} {:<10} {:>9.1} {:>12}  {}\n",
            ended,
            format!("{}@{}", e.name, e.version),
            serde_json::to_value(e.outcome)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            e.ended_at_ms.saturating_sub(e.started_at_ms) as f64 / 1000.0,
            indicatif::HumanBytes(e.received.total()).to_string(),
            e.reason.as_deref().unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_bar_renders_statically() {
        let mut r = ActiveRelease::new(ota_proto::InfoHash([0xab; 20]), "pkg", "1", 1000, 0);
        r.progress_bytes = 500;
        let s = render_bar(&r);
        assert!(s.contains("500 B/1000 B"), "{s}");
        assert!(s.contains("(50%)"), "{s}");
        assert!(s.contains("####################"), "{s}");
    }

    #[test]
    fn history_rows_name_the_release_outcome_time_and_reason() {
        use ota_device_agent::download_state::{HistoryEntry, Outcome, SourceTotals};
        let h = vec![HistoryEntry {
            info_hash: ota_proto::InfoHash([0xab; 20]),
            name: "pkg".into(),
            version: "1.2".into(),
            outcome: Outcome::Cancelled,
            reason: Some("cancelled by the user".into()),
            started_at_ms: 1_700_000_000_000,
            ended_at_ms: 1_700_000_002_500,
            received: SourceTotals {
                origin_bittorrent: 2048,
                ..Default::default()
            },
        }];
        let out = render_history(&h);
        assert!(out.contains("2023-11-14 22:13:22"), "{out}");
        assert!(
            out.contains("pkg@1.2") && out.contains("cancelled") && out.contains("2.5"),
            "{out}"
        );
        assert!(
            out.contains("2.00 KiB") && out.contains("cancelled by the user"),
            "{out}"
        );
    }
}
