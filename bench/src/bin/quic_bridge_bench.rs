//! quic-bridge-bench: BitTorrent throughput between two librqbit sessions
//! over the QUIC bridge (SOCKS5 → pinned QUIC stream → the seeder's
//! listener) against plain TCP between the same two, on loopback, and the
//! CPU seconds per GB received.
//!
//! One process holds both ends: a seeding session listening on loopback,
//! and per run a fresh leeching session that fetches the whole package
//! either straight over TCP or through two bridges
//! ([`ota_peer::one_host::pair`]). Modes alternate run by run. CPU time is
//! the process's user + system time (`getrusage(RUSAGE_SELF)`) over the
//! run, so it counts both ends together (sender and receiver, and for the
//! bridge both bridges and the QUIC crypto). On loopback nothing limits
//! the rate but the CPU, so the ratio is the bridge's CPU ceiling; on a
//! home link slower than that ceiling the two carry the same rate.
//!
//! Prints one JSON object: per mode the median throughput (bytes/s), CPU
//! seconds per GB, and every run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ota_peer::session::{add_torrent, from_peers, PeerSession};
use ota_proto::rendezvous::{bridge_address, BRIDGE_PORT};
use ota_proto::InfoHash;

/// Measures the QUIC bridge against plain TCP on loopback.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Package size, bytes (a generated file).
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    size: u64,
    /// Runs per mode.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the package and the downloads go [default: a temporary folder].
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

#[derive(serde::Serialize)]
struct Run {
    mode: &'static str,
    seconds: f64,
    bytes_per_sec: f64,
    cpu_seconds: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let tmp = tempfile::tempdir()?;
    let dir = cli.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let seed_dir = dir.join("seed");
    std::fs::create_dir_all(&seed_dir)?;
    let file = seed_dir.join("package.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut left = cli.size;
        while left > 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = left.min(8) as usize;
            f.write_all(&x.to_le_bytes()[..n])?;
            left -= n as u64;
        }
    }
    let torrent = librqbit::create_torrent(
        &file,
        Default::default(),
        &librqbit::spawn_utils::BlockingSpawner::new(1),
    )
    .await
    .context("torrent")?;
    let info_hash = InfoHash(torrent.info_hash().0);
    let bytes = torrent.as_bytes()?.to_vec();
    let listen: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut seeder = PeerSession::listening(listen);
    seeder.trackers = false;
    let seeder = seeder.start(dir.join("s")).await?;
    add_torrent(&seeder, bytes.clone(), &seed_dir, Default::default()).await?;

    let mut runs = Vec::new();
    for i in 0..cli.runs * 2 {
        let bridged = i % 2 == 1;
        let out = dir.join(format!("out-{i}"));
        let (peer, bridges) = if bridged {
            let (a, b) = ota_peer::one_host::pair(listen, Default::default()).await?;
            (
                SocketAddr::new(bridge_address(&info_hash, 1).into(), BRIDGE_PORT),
                Some((a, b)),
            )
        } else {
            (listen, None)
        };
        let mut leecher = PeerSession::leecher();
        leecher.proxy_url = bridges.as_ref().map(|(a, _)| a.proxy_url());
        let leecher = leecher.start(dir.join(format!("l-{i}"))).await?;
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let handle = add_torrent(&leecher, bytes.clone(), &out, from_peers(vec![peer])).await?;
        tokio::time::timeout(Duration::from_secs(600), handle.wait_until_completed())
            .await
            .context("download took over 600 s")??;
        let seconds = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let run = Run {
            mode: if bridged { "quic-bridge" } else { "tcp" },
            seconds,
            bytes_per_sec: cli.size as f64 / seconds,
            cpu_seconds: cpu,
        };
        eprintln!(
            "{} {:.1} MB/s, {:.2} CPU s",
            run.mode,
            run.bytes_per_sec / 1e6,
            run.cpu_seconds
        );
        runs.push(run);
        leecher.stop().await;
        if let Some((a, b)) = bridges {
            a.close().await;
            b.close().await;
        }
        let _ = std::fs::remove_dir_all(&out);
    }
    let summary = |mode: &str| {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.mode == mode).collect();
        let gb = cli.size as f64 / 1e9;
        serde_json::json!({
            "median_bytes_per_sec": median(rs.iter().map(|r| r.bytes_per_sec).collect()),
            "median_cpu_seconds_per_gb": median(rs.iter().map(|r| r.cpu_seconds / gb).collect()),
        })
    };
    let (tcp, quic) = (summary("tcp"), summary("quic-bridge"));
    let ratio = quic["median_bytes_per_sec"].as_f64().unwrap() / tcp["median_bytes_per_sec"].as_f64().unwrap();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "size_bytes": cli.size,
            "runs_per_mode": cli.runs,
            "tcp": tcp,
            "quic_bridge": quic,
            "throughput_ratio_quic_to_tcp": ratio,
            "runs": runs,
        }))?
    );
    Ok(())
}
