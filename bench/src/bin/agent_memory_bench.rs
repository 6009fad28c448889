//! agent-memory-bench: peak RSS of one `ota-device-agent` process while it
//! downloads a package (default: Debian's chromium .deb) from N seeding
//! peers, all on loopback.
//!
//! The bench process holds an in-process tracker (origin policy: always,
//! announce interval 2 s) and N plain librqbit sessions seeding the package
//! from disk (each with its own `.torrent` from the tracker). The agent is a
//! real process started from the release build; its `VmHWM` (peak resident
//! set, from `/proc/PID/status`) is read every 100 ms until the tracker holds
//! its verified telemetry report. Prints one JSON object.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use librqbit::Session;
use ota_peer::PeerSession;

use ota_deploy::processes::ProcessGroup;
use ota_proto::api::NewRelease;
use ota_proto::metainfo::{info_hash, InfoDict};
use ota_seeder::publish::{piece_length_for, PieceHasher};
use ota_testkit::net::free_port;
use ota_testkit::tracker::TestTracker;
use ota_tracker::{OriginPolicy, StoreConfig};

const ADMIN: &str = "agent-memory-bench";

/// Measures the device agent's peak RSS while downloading from seeding peers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Package to distribute [default: Debian's chromium .deb, fetched with
    /// apt-get download into --cache-dir].
    #[arg(long)]
    package: Option<PathBuf>,
    /// Where the default package is cached.
    #[arg(long, default_value = "deploy/.cache")]
    cache_dir: PathBuf,
    /// Seeding peers.
    #[arg(long, default_value_t = 4)]
    peers: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Extra arguments for `ota-device-agent run` (repeatable, e.g.
    /// `--agent-arg=--upload-limit-bps --agent-arg=1000000`).
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    agent_args: Vec<String>,
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

fn hash_file(path: &Path, piece_length: u64) -> anyhow::Result<(Vec<[u8; 20]>, [u8; 32], u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = PieceHasher::new(piece_length);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

async fn seeding_peer(dir: &Path, package: &Path, name: &str, torrent: Vec<u8>) -> anyhow::Result<Arc<Session>> {
    std::fs::create_dir_all(dir)?;
    let dest = dir.join(name);
    if std::fs::hard_link(package, &dest).is_err() {
        std::fs::copy(package, &dest).context("cannot copy the package")?;
    }
    let port = free_port()?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let session = PeerSession::listening(addr).start(dir.to_path_buf()).await?;
    let handle = ota_peer::add_torrent(&session, torrent, dir, Default::default()).await?;
    tokio::time::timeout(Duration::from_secs(300), handle.wait_until_completed())
        .await
        .context("seeding peer's initial check took over 300 s")??;
    Ok(session)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ota_common::logging::init_logging("warn,librqbit=off,librqbit_core=off");
    let cli = Cli::parse();
    let package = match &cli.package {
        Some(p) => p.clone(),
        None => ota_deploy::package::default_package(&cli.cache_dir)?,
    };
    let work = tempfile::tempdir()?;
    let name = package
        .file_name()
        .and_then(|n| n.to_str())
        .context("package has no file name")?
        .to_string();
    let size = std::fs::metadata(&package)?.len();
    let piece_length = piece_length_for(size);
    let (pieces, sha256, _) = hash_file(&package, piece_length)?;
    let info = InfoDict {
        name: name.clone(),
        length: size,
        piece_length,
        pieces,
        private: true,
    }
    .to_bytes();
    let ih = info_hash(&info);

    let tracker = TestTracker::builder()
        .db_dir(work.path())
        .admin_token(ADMIN)
        .store(StoreConfig {
            interval: Duration::from_secs(2),
            min_interval: Duration::from_secs(1),
            origin_policy: OriginPolicy::Always,
            ..StoreConfig::default()
        })
        .start()
        .await;
    let url = tracker.url().to_string();
    let client = tracker.client().clone();
    client
        .register(&NewRelease {
            name: name.clone(),
            version: "1".into(),
            info_hash: ih,
            size,
            piece_length,
            sha256: hex::encode(sha256),
            info_hex: hex::encode(&info),
            http_url: None,
            source: format!("file://{}", package.display()),
            etag: None,
            manifest: None,
            rollout_percent: None,
            origin_goal: None,
        })
        .await?;

    let mut peers = Vec::new();
    for i in 0..cli.peers {
        let torrent = client.torrent(&ih, &format!("bench-seed-{i}")).await?;
        peers.push(seeding_peer(&work.path().join(format!("seed-{i}")), &package, &name, torrent).await?);
    }
    eprintln!("{} seeding peers ready; starting the agent", peers.len());

    let mut procs = ProcessGroup::default();
    let mut args: Vec<String> = [
        "run",
        "--tracker",
        &url,
        "--device-id",
        "bench-agent",
        "--state-dir",
        &work.path().join("agent").display().to_string(),
        "--peer-listen",
        &format!("127.0.0.1:{}", free_port()?),
        "--http-fallback-after-secs",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(cli.agent_args.iter().cloned());
    let started = Instant::now();
    let pid = procs.spawn("agent", "ota-device-agent", &args, &[], &work.path().join("agent.log"))?;
    let deadline = started + Duration::from_secs(cli.timeout_secs);
    let mut sampled_max_kib = 0;
    let report = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sampled_max_kib = sampled_max_kib.max(status_kib(pid, "VmRSS:").unwrap_or(0));
        if let Err(e) = procs.check_alive() {
            let log = std::fs::read_to_string(work.path().join("agent.log")).unwrap_or_default();
            anyhow::bail!("{e}\n{log}");
        }
        if let Some(r) = client
            .telemetry(&ih)
            .await?
            .into_iter()
            .find(|r| r.device == "bench-agent")
        {
            break r;
        }
        if Instant::now() > deadline {
            anyhow::bail!("the agent did not finish within {} s", cli.timeout_secs);
        }
    };
    let wall = started.elapsed();
    let hwm_kib = status_kib(pid, "VmHWM:").context("cannot read VmHWM")?;
    procs.stop_all(Duration::from_secs(5)).await;
    for p in peers {
        p.stop().await;
    }
    if !report.verified {
        anyhow::bail!("the agent's package did not verify: {:?}", report.error);
    }
    println!(
        "{}",
        serde_json::json!({
            "package": name,
            "size_bytes": size,
            "piece_length": piece_length,
            "peers": cli.peers,
            "agent_peak_rss_mib": (hwm_kib as f64 / 1024.0 * 10.0).round() / 10.0,
            "agent_sampled_max_rss_mib": (sampled_max_kib as f64 / 1024.0 * 10.0).round() / 10.0,
            "download_ms": report.duration_ms,
            "wall_ms": wall.as_millis() as u64,
            "bytes_from_peers": report.bytes_from_peers,
            "bytes_from_origin": report.bytes_from_origin,
        })
    );
    Ok(())
}
