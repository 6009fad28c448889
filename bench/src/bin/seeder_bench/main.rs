//! seeder-bench: a rerunnable benchmark of the origin seeder, all on loopback.
//!
//! 1. Publish throughput: `ota_seeder::publish::hash_object` (one streaming
//!    GET, SHA-1 per piece + SHA-256) against a plain streaming GetObject that
//!    discards the bytes, on the embedded S3 server (s3s-fs). Best of N.
//! 2. Seeding throughput to one loopback librqbit leecher: the S3-backed
//!    `Seeder` (cache cap big and small) against librqbit's own file storage
//!    seeding the same file from a local folder.
//! 3. S3 bytes read per byte served during the leecher's download (the
//!    initial check at add time is reported apart).
//! 4. RSS of the real `ota-seeder seed` process with many releases seeded and
//!    several of them downloaded (VmRSS / VmHWM from /proc/PID/status).
//!
//! 5. Restart cost of the real `ota-seeder seed` with many releases: time
//!    until seeding and S3 bytes read, first start against a restart on the
//!    same state folder (fast-resume).
//!
//! Prints a markdown table (or JSON with `--json`). Every child process is
//! stopped by PID and the work folder removed, on success, failure or Ctrl-C.

mod harness;
mod report;
mod restart;
mod rss;
mod seeding;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use ota_peer::PeerSession;
use serde::Serialize;

use harness::*;
use report::*;
use restart::*;
use rss::*;
use seeding::*;

use ota_deploy::processes::ProcessGroup;
use ota_proto::api::NewRelease;
use ota_proto::metainfo::torrent_bytes;
use ota_seeder::origin_store::{self, S3Args, S3Location};
use ota_seeder::publish::{hash_object, PublishRequest};
use ota_seeder::seeding::{SeedSettings, Seeder};
use ota_testkit::net::free_port;
use ota_testkit::s3_server::S3Server;
use ota_testkit::tracker::TestTracker;

const BUCKET: &str = "bench";
const ACCESS_KEY: &str = "bench-access";
const SECRET_KEY: &str = "bench-secret-key";
const ADMIN: &str = "bench-admin-token";
/// The origin's announce token (the in-process tracker's default).
const ORIGIN: &str = ota_testkit::tracker::DEFAULT_ORIGIN;
const MIB: u64 = 1024 * 1024;

/// seeder-bench: throughput, S3 read amplification and memory of the S3-backed origin.
#[derive(Parser, Debug, Clone)]
#[command(version)]
struct Cli {
    /// Size of the object of sections 1-3, MiB.
    #[arg(long, default_value_t = 256)]
    object_mib: u64,
    /// Repeats of the raw GET and of hash_object (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// Piece cache cap of the first S3 seeder variant, MiB.
    #[arg(long, default_value_t = 256)]
    cache_mib: u64,
    /// Piece cache cap of the second S3 seeder variant (smaller than the object), MiB.
    #[arg(long, default_value_t = 32)]
    small_cache_mib: u64,
    /// Seeder read-ahead, pieces (the `ota-seeder seed` default).
    #[arg(long, default_value_t = 16)]
    read_ahead: u32,
    /// Seeder S3 GET concurrency (the `ota-seeder seed` default).
    #[arg(long, default_value_t = 16)]
    max_s3_requests: usize,
    /// Releases seeded by the child seeder in section 4.
    #[arg(long, default_value_t = 20)]
    releases: usize,
    /// Size of each section-4 release, MiB.
    #[arg(long, default_value_t = 32)]
    release_mib: u64,
    /// Section-4 releases downloaded by leechers (one fresh session each).
    #[arg(long, default_value_t = 8)]
    downloads: usize,
    /// Section-4 leechers running at once.
    #[arg(long, default_value_t = 4)]
    parallel_leechers: usize,
    /// Piece cache cap of the section-4 child seeder, MiB.
    #[arg(long, default_value_t = 256)]
    rss_cache_mib: u64,
    /// Releases published for the restart measurement (section 5).
    #[arg(long, default_value_t = 100)]
    restart_releases: usize,
    /// Size of each section-5 release, MiB.
    #[arg(long, default_value_t = 4)]
    restart_release_mib: u64,
    /// Sections to run (comma separated: publish, seed, rss, restart).
    #[arg(long, value_delimiter = ',', default_value = "publish,seed,rss,restart")]
    sections: Vec<String>,
    /// Timeout of each waiting step (a check, a download), seconds.
    #[arg(long, default_value_t = 180)]
    step_timeout_secs: u64,
    /// Tokio worker threads [default: one per core].
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Work folder, kept afterwards [default: a temporary folder, removed].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Piece-sized ranged GETs, one at a time, timed in section 1.
    #[arg(long, default_value_t = 64)]
    probe_gets: usize,
    /// Print JSON on stdout instead of the markdown table (the table goes to stderr).
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    // The S3 client takes its credentials from the standard chain: set them
    // before any thread starts.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    ota_common::logging::init_logging("warn,librqbit=error");
    let threads = cli
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async {
        tokio::select! {
            r = run(&cli, threads) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Background tasks of stopped sessions must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok((report, restart)) => {
            let mut table = render(&cli, &report);
            if let Some(r) = &restart {
                table.push_str(&render_restart(r));
            }
            if cli.json {
                eprint!("{table}");
                let mut json = serde_json::to_value(&report).unwrap_or_default();
                if let (Some(obj), Some(r)) = (json.as_object_mut(), &restart) {
                    obj.insert("restart".into(), serde_json::to_value(r).unwrap_or_default());
                }
                println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
            } else {
                print!("{table}");
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: &Cli, threads: usize) -> anyhow::Result<(Report, Option<RestartResult>)> {
    let started = Instant::now();
    let (_temp, work) = match &cli.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (None, d.clone())
        }
        None => {
            let t = tempfile::Builder::new().prefix("ota-seeder-bench-").tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mut report = Report {
        machine: format!("{machine}, {} cores", num_cores()),
        worker_threads: threads,
        ..Default::default()
    };

    let s3_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    report.s3_server = "ota_testkit::s3_server::S3Server (s3s-fs)".into();
    let s3_server = S3Server::start(&work.join("s3"), s3_listener, ACCESS_KEY, SECRET_KEY)?;
    let s3 = origin_store::client(&S3Args {
        s3_endpoint: Some(s3_server.endpoint()),
        s3_region: "us-east-1".into(),
        s3_path_style: true,
    })
    .await;
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("create bucket: {}", origin_store::describe(&e)))?;
    let want = |s: &str| cli.sections.iter().any(|x| x == s);
    let timeout = Duration::from_secs(cli.step_timeout_secs);

    if want("publish") || want("seed") {
        let size = cli.object_mib * MIB;
        anyhow::ensure!(size > 0, "--object-mib must be positive");
        let data_dir = work.join("object");
        std::fs::create_dir_all(&data_dir)?;
        let name = "bench-object.bin";
        let file = data_dir.join(name);
        step(&format!("generating {} MiB of random bytes", cli.object_mib));
        write_random(&file, size, 1)?;
        let loc = S3Location {
            bucket: BUCKET.into(),
            key: name.into(),
        };
        step("uploading to the embedded S3 server");
        upload(&s3, &loc, &file).await?;

        let tracker = start_tracker(&work.join("tracker-a")).await;
        let req = publish_request(&loc, tracker.url());

        let mut published = None;
        if want("publish") {
            let mut r = PublishResult {
                object_bytes: size,
                ..Default::default()
            };
            for i in 0..cli.repeats.max(1) {
                step(&format!(
                    "section 1: raw GET and hash_object, run {}/{}",
                    i + 1,
                    cli.repeats.max(1)
                ));
                let t = Instant::now();
                let n = tokio::time::timeout(timeout, raw_get(&s3, &loc))
                    .await
                    .context("raw GET timed out")??;
                r.raw_get_secs.push(t.elapsed().as_secs_f64());
                anyhow::ensure!(n == size, "raw GET read {n} bytes of {size}");
                let t = Instant::now();
                let out = tokio::time::timeout(timeout, hash_object(&s3, &req))
                    .await
                    .context("hash_object timed out")??;
                r.publish_secs.push(t.elapsed().as_secs_f64());
                r.piece_length = out.0.piece_length;
                published = Some(out);
            }
            step(&format!(
                "section 1: {} piece-sized ranged GETs, one at a time",
                cli.probe_gets
            ));
            let piece = r.piece_length.max(1);
            let pieces = size.div_ceil(piece);
            let mut lat = Vec::new();
            for i in 0..(cli.probe_gets as u64).min(pieces) {
                let start = i * piece;
                let len = piece.min(size - start);
                let t = Instant::now();
                tokio::time::timeout(timeout, origin_store::get_range(&s3, &loc, start, len))
                    .await
                    .context("ranged GET timed out")??;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            if !lat.is_empty() {
                r.probe_gets = lat.len();
                r.probe_mean_ms = lat.iter().sum::<f64>() / lat.len() as f64;
                lat.sort_by(|a, b| a.total_cmp(b));
                let q = |f: f64| lat[((lat.len() - 1) as f64 * f).round() as usize];
                r.probe_p50_ms = q(0.5);
                r.probe_p90_ms = q(0.9);
                r.probe_max_ms = q(1.0);
            }
            // The hashing alone, in memory: the ceiling of publish on this CPU.
            let piece_length = r.piece_length.max(1);
            r.hasher_only_mb_s = tokio::task::spawn_blocking(move || {
                let buf = vec![0x5au8; 1 << 20];
                let total = 64u64 << 20;
                let t = Instant::now();
                let mut h = ota_seeder::publish::PieceHasher::new(piece_length);
                for _ in 0..total >> 20 {
                    h.update(&buf);
                }
                let _ = h.finish();
                mb_s(total, t.elapsed().as_secs_f64())
            })
            .await?;
            let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
            r.raw_get_mb_s = mb_s(size, best(&r.raw_get_secs));
            r.publish_mb_s = mb_s(size, best(&r.publish_secs));
            r.ratio_publish_to_raw = r.publish_mb_s / r.raw_get_mb_s;
            report.publish = Some(r);
        }

        if want("seed") {
            let (new, info) = match published {
                Some(p) => p,
                None => tokio::time::timeout(timeout, hash_object(&s3, &req))
                    .await
                    .context("hash_object timed out")??,
            };
            tracker
                .client()
                .register(&new)
                .await
                .context("registering the release")?;
            let torrent = torrent_bytes(&format!("{}/announce", tracker.url()), &info);
            let mut seed = SeedResult {
                object_bytes: size,
                variants: Vec::new(),
            };
            for (i, cap_mib) in [cli.cache_mib, cli.small_cache_mib].into_iter().enumerate() {
                step(&format!("section 2: S3 seeder with a {cap_mib} MiB cache -> 1 leecher"));
                let v = bench_s3_seeder(
                    cli,
                    &s3,
                    &tracker,
                    &new,
                    &torrent,
                    cap_mib * MIB,
                    &work.join(format!("s3seed-{i}")),
                    timeout,
                )
                .await?;
                seed.variants.push(v);
            }
            step("section 2: librqbit file storage -> 1 leecher");
            seed.variants
                .push(bench_file_seeder(&new, &torrent, &data_dir, &work.join("fileseed"), timeout).await?);
            report.seed = Some(seed);
        }
        tracker.stop().await;
        // Free the disk (and page cache) before section 4.
        let _ = std::fs::remove_file(&file);
        let _ = s3.delete_object().bucket(BUCKET).key(name).send().await;
    }

    if want("rss") {
        let mut procs = ProcessGroup::default();
        let r = bench_rss(cli, &s3, &s3_server, &work.join("rss"), &mut procs, timeout).await;
        procs.stop_all(Duration::from_secs(5)).await;
        report.rss = Some(r?);
    }
    let mut restart = None;
    if want("restart") {
        restart = Some(bench_restart(cli, &s3, &s3_server, &work.join("restart"), timeout).await?);
    }
    report.wall_secs = started.elapsed().as_secs_f64();
    drop(s3_server);
    Ok((report, restart))
}
