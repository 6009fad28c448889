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
//! Prints a markdown table (or JSON with `--json`). Every child process is
//! stopped by PID and the work folder removed, on success, failure or Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use librqbit::{AddTorrent, AddTorrentOptions, Session};
use ota_peer::PeerSession;
use serde::Serialize;

use ota_deploy::processes::ProcessGroup;
use ota_testkit::net::free_port;
use ota_testkit::s3_server::S3Server;
use ota_seeder::origin_store::{self, S3Args, S3Location};
use ota_seeder::publish::{hash_object, PublishRequest};
use ota_seeder::seeding::{SeedSettings, Seeder};
use ota_client::TrackerClient;
use ota_proto::metainfo::torrent_bytes;
use ota_proto::api::NewRelease;

const BUCKET: &str = "bench";
const ACCESS_KEY: &str = "bench-access";
const SECRET_KEY: &str = "bench-secret-key";
const ADMIN: &str = "bench-admin-token";
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
    /// Sections to run (comma separated: publish, seed, rss).
    #[arg(long, value_delimiter = ',', default_value = "publish,seed,rss")]
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

#[derive(Debug, Clone, Serialize, Default)]
struct PublishResult {
    object_bytes: u64,
    piece_length: u64,
    raw_get_secs: Vec<f64>,
    publish_secs: Vec<f64>,
    raw_get_mb_s: f64,
    publish_mb_s: f64,
    ratio_publish_to_raw: f64,
    /// Piece-sized ranged GETs, one at a time: count, mean / p50 / p90 / max latency, ms.
    probe_gets: usize,
    probe_mean_ms: f64,
    probe_p50_ms: f64,
    probe_p90_ms: f64,
    probe_max_ms: f64,
    /// `PieceHasher` alone over 64 MiB in memory (no I/O), MB/s.
    hasher_only_mb_s: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
struct SeedVariant {
    name: String,
    /// Piece cache cap (S3 variants), bytes.
    cache_bytes: Option<u64>,
    /// From add to "seeding" (initial check done), seconds.
    initial_check_secs: f64,
    /// When the tracker first listed the origin, seconds after add (S3 variants).
    tracker_listed_origin_secs: Option<f64>,
    /// S3 bytes read by the initial check (S3 variants).
    initial_check_s3_bytes: Option<u64>,
    /// From the leecher's add to wait_until_completed, seconds.
    leech_secs: f64,
    /// Bytes the leecher fetched (payload, including any discarded).
    leech_fetched_bytes: u64,
    leech_mb_s: f64,
    /// The leecher's file has the published SHA-256.
    identical: bool,
    /// S3 bytes read while the leecher ran (S3 variants).
    s3_bytes_during_leech: Option<u64>,
    /// S3 bytes read per byte the leecher fetched (S3 variants).
    s3_read_per_byte_served: Option<f64>,
    /// Bytes the seeder's ledger recorded for the release over BitTorrent (S3 variants).
    ledger_bittorrent_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Default)]
struct SeedResult {
    object_bytes: u64,
    variants: Vec<SeedVariant>,
}

#[derive(Debug, Clone, Serialize, Default)]
struct RssResult {
    pid: u32,
    releases: usize,
    release_bytes: u64,
    cache_bytes: u64,
    downloads: usize,
    /// From spawn until every release is listed and the initial checks are over, seconds.
    seed_all_secs: f64,
    /// S3 bytes the child read by then (its initial checks).
    initial_check_s3_bytes: u64,
    rss_seeded_mib: f64,
    hwm_seeded_mib: f64,
    download_secs: f64,
    downloaded_bytes: u64,
    /// S3 bytes the child read during the downloads.
    s3_bytes_during_downloads: u64,
    rss_end_mib: f64,
    hwm_end_mib: f64,
    /// Highest VmRSS seen by a 200 ms sampler during the downloads.
    rss_sampled_max_mib: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
struct Report {
    machine: String,
    worker_threads: usize,
    /// Which S3 server: the project's `S3Server`, or the bench's TCP_NODELAY copy.
    s3_server: String,
    publish: Option<PublishResult>,
    seed: Option<SeedResult>,
    rss: Option<RssResult>,
    wall_secs: f64,
}

fn mb_s(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    bytes as f64 / 1e6 / secs
}

fn main() {
    let cli = Cli::parse();
    // The S3 client takes its credentials from the standard chain: set them
    // before any thread starts.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    ota_common::logging::init_logging("warn,librqbit=error");
    let threads = cli.worker_threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
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
        Ok(report) => {
            let table = render(&cli, &report);
            if cli.json {
                eprint!("{table}");
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
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

async fn run(cli: &Cli, threads: usize) -> anyhow::Result<Report> {
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
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    let mut report = Report { machine: format!("{machine}, {} cores", num_cores()), worker_threads: threads, ..Default::default() };

    let s3_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    report.s3_server = "ota_testkit::s3_server::S3Server (s3s-fs)".into();
    let s3_server = S3Server::start(&work.join("s3"), s3_listener, ACCESS_KEY, SECRET_KEY)?;
    let s3 = origin_store::client(&S3Args {
        s3_endpoint: Some(s3_server.endpoint()),
        s3_region: "us-east-1".into(),
        s3_path_style: true,
    })
    .await;
    s3.create_bucket().bucket(BUCKET).send().await.map_err(|e| anyhow::anyhow!("create bucket: {}", origin_store::describe(&e)))?;
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
        let loc = S3Location { bucket: BUCKET.into(), key: name.into() };
        step("uploading to the embedded S3 server");
        upload(&s3, &loc, &file).await?;

        let tracker = InProcTracker::start(&work.join("tracker-a")).await?;
        let req = publish_request(&loc, &tracker.url);

        let mut published = None;
        if want("publish") {
            let mut r = PublishResult { object_bytes: size, ..Default::default() };
            for i in 0..cli.repeats.max(1) {
                step(&format!("section 1: raw GET and hash_object, run {}/{}", i + 1, cli.repeats.max(1)));
                let t = Instant::now();
                let n = tokio::time::timeout(timeout, raw_get(&s3, &loc)).await.context("raw GET timed out")??;
                r.raw_get_secs.push(t.elapsed().as_secs_f64());
                anyhow::ensure!(n == size, "raw GET read {n} bytes of {size}");
                let t = Instant::now();
                let out = tokio::time::timeout(timeout, hash_object(&s3, &req)).await.context("hash_object timed out")??;
                r.publish_secs.push(t.elapsed().as_secs_f64());
                r.piece_length = out.0.piece_length;
                published = Some(out);
            }
            step(&format!("section 1: {} piece-sized ranged GETs, one at a time", cli.probe_gets));
            let piece = r.piece_length.max(1);
            let pieces = size.div_ceil(piece);
            let mut lat = Vec::new();
            for i in 0..(cli.probe_gets as u64).min(pieces) {
                let start = i * piece;
                let len = piece.min(size - start);
                let t = Instant::now();
                tokio::time::timeout(timeout, origin_store::get_range(&s3, &loc, start, len)).await.context("ranged GET timed out")??;
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
                None => tokio::time::timeout(timeout, hash_object(&s3, &req)).await.context("hash_object timed out")??,
            };
            tracker.client.register(&new).await.context("registering the release")?;
            let torrent = torrent_bytes(&format!("{}/announce", tracker.url), &info);
            let mut seed = SeedResult { object_bytes: size, variants: Vec::new() };
            for (i, cap_mib) in [cli.cache_mib, cli.small_cache_mib].into_iter().enumerate() {
                step(&format!("section 2: S3 seeder with a {cap_mib} MiB cache -> 1 leecher"));
                let v = bench_s3_seeder(cli, &s3, &tracker, &new, &torrent, cap_mib * MIB, &work.join(format!("s3seed-{i}")), timeout).await?;
                seed.variants.push(v);
            }
            step("section 2: librqbit file storage -> 1 leecher");
            seed.variants.push(bench_file_seeder(&new, &torrent, &data_dir, &work.join("fileseed"), timeout).await?);
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
    report.wall_secs = started.elapsed().as_secs_f64();
    drop(s3_server);
    Ok(report)
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

fn step(what: &str) {
    eprintln!("[seeder-bench] {what}");
}

/// Writes `size` pseudo-random bytes (ChaCha, seeded) to `path`.
fn write_random(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

async fn upload(s3: &aws_sdk_s3::Client, loc: &S3Location, file: &Path) -> anyhow::Result<()> {
    let body = aws_sdk_s3::primitives::ByteStream::from_path(file).await.with_context(|| format!("cannot read {}", file.display()))?;
    origin_store::put(s3, loc, body).await
}

/// A plain streaming GetObject that discards the bytes; returns the byte count.
async fn raw_get(s3: &aws_sdk_s3::Client, loc: &S3Location) -> anyhow::Result<u64> {
    let out = s3
        .get_object()
        .bucket(&loc.bucket)
        .key(&loc.key)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GET {loc}: {}", origin_store::describe(&e)))?;
    let mut body = out.body;
    let mut n = 0u64;
    while let Some(chunk) = body.try_next().await.context("reading the body")? {
        n += chunk.len() as u64;
    }
    Ok(n)
}

fn publish_request(loc: &S3Location, tracker_url: &str) -> PublishRequest {
    PublishRequest {
        location: loc.clone(),
        version: "1".into(),
        piece_length: None,
        tracker_url: tracker_url.to_string(),
        http_base: None,
        private: true,
        signing: None,
    }
}

/// An `ota_tracker` server in this process.
struct InProcTracker {
    url: String,
    client: TrackerClient,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcTracker {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        use ota_tracker::peer_store::StoreConfig;
        use ota_tracker::registry::Registry;
        use ota_tracker::device_auth::DeviceAuth;
        use ota_tracker::server::{ServerSettings, Tracker};
        std::fs::create_dir_all(dir)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let registry = Registry::open(&format!("sqlite://{}/tracker.db", dir.display())).await?;
        let store = StoreConfig { interval: Duration::from_secs(1), min_interval: Duration::from_secs(1), ..StoreConfig::default() };
        let tracker = Tracker::new(registry, ServerSettings { admin_token: ADMIN.into(), public_url: url.clone(), store, device_auth: DeviceAuth::Off }).await?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tracker.serve(listener, async {
            let _ = stop_rx.await;
        }));
        let client = TrackerClient::new(&url, Some(ADMIN.into()));
        Ok(InProcTracker { url, client, stop_tx, task })
    }

    async fn stop(self) {
        let _ = self.stop_tx.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// What one leecher got.
struct Leeched {
    secs: f64,
    fetched: u64,
    path: PathBuf,
}

/// A fresh plain librqbit session (no DHT, no LSD, no trackers, loopback
/// listener) downloads `torrent` from `peer` into `dir`; timed from add to
/// completion. The session is stopped before returning.
async fn leech(torrent: Vec<u8>, name: &str, peer: SocketAddr, dir: &Path, timeout: Duration) -> anyhow::Result<Leeched> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let session = PeerSession { trackers: false, ..PeerSession::listening(listen) }
        .start(dir.to_path_buf())
        .await
        .context("cannot start the leecher session")?;
    let r = async {
        let t = Instant::now();
        let handle = session
            .add_torrent(
                AddTorrent::from_bytes(torrent),
                Some(AddTorrentOptions {
                    overwrite: true,
                    disable_trackers: true,
                    initial_peers: Some(vec![peer]),
                    output_folder: Some(dir.display().to_string()),
                    ..Default::default()
                }),
            )
            .await
            .context("leecher refused the torrent")?
            .into_handle()
            .context("list-only")?;
        tokio::time::timeout(timeout, handle.wait_until_completed())
            .await
            .with_context(|| format!("leecher did not finish within {} s ({})", timeout.as_secs(), handle.stats()))?
            .context("leecher failed")?;
        let secs = t.elapsed().as_secs_f64();
        let stats = handle.stats();
        let fetched = stats.live.as_ref().map(|l| l.snapshot.fetched_bytes).unwrap_or(stats.progress_bytes);
        anyhow::Ok(Leeched { secs, fetched, path: dir.join(name) })
    }
    .await;
    session.stop().await;
    r
}

async fn sha256_file(path: PathBuf) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        let mut f = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        anyhow::Ok(hex::encode(h.finalize()))
    })
    .await?
}

async fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn bench_s3_seeder(
    cli: &Cli,
    s3: &aws_sdk_s3::Client,
    tracker: &InProcTracker,
    release: &NewRelease,
    torrent: &[u8],
    cache_bytes: u64,
    dir: &Path,
    timeout: Duration,
) -> anyhow::Result<SeedVariant> {
    std::fs::create_dir_all(dir)?;
    let ledger = ota_seeder::ledger::Ledger::open(&format!("sqlite://{}/ledger.db", dir.display())).await?;
    let peer: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let seeder = Seeder::start(
        s3.clone(),
        tracker.client.clone(),
        ledger,
        SeedSettings {
            peer_listen: peer,
            state_dir: dir.join("state"),
            cache_bytes,
            read_ahead: cli.read_ahead,
            upload_limit_bps: None,
            poll_interval: Duration::from_secs(1),
            origin_token: ADMIN.into(),
            verify_interval: Duration::from_secs(300),
            ledger_interval: Duration::from_secs(1),
            max_s3_requests: cli.max_s3_requests,
        },
    )
    .await?;
    let r = async {
        let ih = release.info_hash.clone();
        let t = Instant::now();
        seeder.sync_releases().await?;
        // Watch when the tracker lists the origin, next to when the check is over.
        let listed = {
            let client = tracker.client.clone();
            let ih = ih.clone();
            tokio::spawn(async move {
                for _ in 0..3000 {
                    if client.release(&ih).await.is_ok_and(|r| r.origin_peers.contains(&peer.to_string())) {
                        return Some(t.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None
            })
        };
        wait_until("the seeder's initial check", timeout, || seeder.is_seeding(&ih)).await?;
        let check_secs = t.elapsed().as_secs_f64();
        let listed_secs = tokio::time::timeout(Duration::from_secs(60), listed).await.ok().and_then(|r| r.ok()).flatten().map(|d| d.as_secs_f64());
        // Let any read-ahead started by the check land before sampling.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = seeder.counters.bytes_read.load(Ordering::Relaxed);
        let l = leech(torrent.to_vec(), &release.name, peer, &dir.join("leecher"), timeout).await?;
        let after = seeder.counters.bytes_read.load(Ordering::Relaxed);
        let identical = sha256_file(l.path.clone()).await? == release.sha256;
        let ledger_bt = seeder.egress().await?.iter().find(|e| e.info_hash == ih).map(|e| e.bittorrent_bytes);
        let _ = std::fs::remove_dir_all(dir.join("leecher"));
        let during = after - before;
        anyhow::Ok(SeedVariant {
            name: format!("S3 Seeder, cache {} MiB", cache_bytes / MIB),
            cache_bytes: Some(cache_bytes),
            initial_check_secs: check_secs,
            tracker_listed_origin_secs: listed_secs,
            initial_check_s3_bytes: Some(before),
            leech_secs: l.secs,
            leech_fetched_bytes: l.fetched,
            leech_mb_s: mb_s(release.size, l.secs),
            identical,
            s3_bytes_during_leech: Some(during),
            s3_read_per_byte_served: Some(during as f64 / l.fetched.max(1) as f64),
            ledger_bittorrent_bytes: ledger_bt,
        })
    }
    .await;
    seeder.stop().await;
    r
}

async fn bench_file_seeder(release: &NewRelease, torrent: &[u8], data_dir: &Path, dir: &Path, timeout: Duration) -> anyhow::Result<SeedVariant> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let peer: SocketAddr = ([127, 0, 0, 1], port).into();
    let session = PeerSession { trackers: false, ..PeerSession::listening(peer) }
        .start(dir.join("state"))
        .await
        .context("cannot start the file seeder session")?;
    let r = async {
        let t = Instant::now();
        let handle = session
            .add_torrent(
                AddTorrent::from_bytes(torrent.to_vec()),
                Some(AddTorrentOptions {
                    overwrite: true,
                    disable_trackers: true,
                    output_folder: Some(data_dir.display().to_string()),
                    ..Default::default()
                }),
            )
            .await
            .context("file seeder refused the torrent")?
            .into_handle()
            .context("list-only")?;
        wait_until("the file seeder's initial check", timeout, || handle.stats().finished).await?;
        let check_secs = t.elapsed().as_secs_f64();
        let l = leech(torrent.to_vec(), &release.name, peer, &dir.join("leecher"), timeout).await?;
        let identical = sha256_file(l.path.clone()).await? == release.sha256;
        let _ = std::fs::remove_dir_all(dir.join("leecher"));
        anyhow::Ok(SeedVariant {
            name: "librqbit file storage".into(),
            initial_check_secs: check_secs,
            leech_secs: l.secs,
            leech_fetched_bytes: l.fetched,
            leech_mb_s: mb_s(release.size, l.secs),
            identical,
            ..Default::default()
        })
    }
    .await;
    session.stop().await;
    r
}

/// VmRSS and VmHWM of a process, MiB.
fn proc_mem_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = s.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb: f64 = line.split_whitespace().nth(1).context("malformed line")?.parse()?;
        Ok(kb / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

async fn seeder_s3_bytes(http: &str) -> Option<u64> {
    let c = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
    let v: serde_json::Value = c.get(format!("http://{http}/api/egress")).send().await.ok()?.json().await.ok()?;
    v["s3_bytes_read"].as_u64()
}

async fn bench_rss(
    cli: &Cli,
    s3: &aws_sdk_s3::Client,
    s3_server: &S3Server,
    dir: &Path,
    procs: &mut ProcessGroup,
    timeout: Duration,
) -> anyhow::Result<RssResult> {
    anyhow::ensure!(cli.releases >= 1 && cli.release_mib >= 1, "--releases and --release-mib must be positive");
    std::fs::create_dir_all(dir)?;
    let tracker = InProcTracker::start(&dir.join("tracker")).await?;
    let r = async {
        let size = cli.release_mib * MIB;
        step(&format!("section 4: publishing {} releases of {} MiB", cli.releases, cli.release_mib));
        let mut releases = Vec::new();
        for i in 0..cli.releases {
            let name = format!("release-{i:02}.bin");
            let file = dir.join(&name);
            write_random(&file, size, 1000 + i as u64)?;
            let loc = S3Location { bucket: BUCKET.into(), key: name.clone() };
            upload(s3, &loc, &file).await?;
            std::fs::remove_file(&file)?;
            let (new, info) = tokio::time::timeout(timeout, hash_object(s3, &publish_request(&loc, &tracker.url))).await.context("hash_object timed out")??;
            tracker.client.register(&new).await?;
            releases.push((new, info));
        }

        step("section 4: starting ota-seeder seed");
        let peer: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let http = format!("127.0.0.1:{}", free_port()?);
        let mut env = s3_server.client_env();
        env.push(("OTA_TRACKER_URL".into(), tracker.url.clone()));
        env.push(("OTA_ADMIN_TOKEN".into(), ADMIN.into()));
        let s = |v: &str| v.to_string();
        let t = Instant::now();
        let pid = procs.spawn(
            "seeder",
            "ota-seeder",
            &[
                s("seed"),
                s("--peer-listen"),
                peer.to_string(),
                s("--http-listen"),
                http.clone(),
                s("--state-dir"),
                dir.join("seeder").display().to_string(),
                s("--cache-bytes"),
                (cli.rss_cache_mib * MIB).to_string(),
                s("--read-ahead"),
                cli.read_ahead.to_string(),
                s("--max-s3-requests"),
                cli.max_s3_requests.to_string(),
                s("--poll-ms"),
                s("300"),
                s("--verify-interval-secs"),
                s("300"),
            ],
            &env,
            &dir.join("seeder.log"),
        )?;
        // Seeded: the tracker lists the origin for every release, and the
        // initial checks are over (every object read from S3 at least once and
        // the S3 counter still for 1 s). librqbit announces only once a
        // torrent is live (section 2 shows the listing and the end of the
        // check coincide); the S3 counter makes the end of the checks explicit.
        let total = size * cli.releases as u64;
        let deadline = Instant::now() + timeout * 2;
        let mut listed = vec![false; releases.len()];
        let mut last: Option<(u64, Instant)> = None;
        let (checked_bytes, seeded_at) = loop {
            procs.check_alive().context("while waiting for the seeder")?;
            anyhow::ensure!(Instant::now() < deadline, "timed out waiting for the seeder to seed {} releases", releases.len());
            for (i, (new, _)) in releases.iter().enumerate() {
                if !listed[i] {
                    listed[i] = tracker.client.release(&new.info_hash).await.is_ok_and(|r| !r.origin_peers.is_empty());
                }
            }
            if let Some(b) = seeder_s3_bytes(&http).await {
                if listed.iter().all(|l| *l) && b >= total {
                    match last {
                        Some((prev, since)) if prev == b && since.elapsed() >= Duration::from_secs(1) => break (b, since),
                        Some((prev, _)) if prev == b => {}
                        _ => last = Some((b, Instant::now())),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let seed_all_secs = seeded_at.duration_since(t).as_secs_f64();
        let (rss_seeded, hwm_seeded) = proc_mem_mib(pid)?;

        let n = cli.downloads.min(releases.len());
        step(&format!("section 4: {n} leechers ({} at once)", cli.parallel_leechers.max(1)));
        let sampler_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = sampler_stop.clone();
            tokio::spawn(async move {
                let mut max = 0f64;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((rss, _)) = proc_mem_mib(pid) {
                        max = max.max(rss);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                max
            })
        };
        let t = Instant::now();
        // Spread the picks over the whole list, so that some are still in the
        // cache after the initial checks and some are not.
        let picks: Vec<usize> = (0..n).map(|k| k * releases.len() / n.max(1)).collect();
        let results: Vec<anyhow::Result<Leeched>> = futures::stream::iter(picks.into_iter().map(|i| {
            let (new, info) = &releases[i];
            let torrent = torrent_bytes(&format!("{}/announce", tracker.url), info);
            let ldir = dir.join(format!("leecher-{i:02}"));
            let name = new.name.clone();
            async move {
                let r = leech(torrent, &name, peer, &ldir, timeout).await;
                let _ = std::fs::remove_dir_all(&ldir);
                r
            }
        }))
        .buffer_unordered(cli.parallel_leechers.max(1))
        .collect()
        .await;
        let download_secs = t.elapsed().as_secs_f64();
        sampler_stop.store(true, Ordering::Relaxed);
        let sampled_max = sampler.await.unwrap_or(0.0);
        let mut downloaded = 0;
        for r in results {
            downloaded += r?.fetched;
        }
        procs.check_alive().context("after the downloads")?;
        let s3_after = seeder_s3_bytes(&http).await.unwrap_or(checked_bytes);
        let (rss_end, hwm_end) = proc_mem_mib(pid)?;
        anyhow::Ok(RssResult {
            pid,
            releases: releases.len(),
            release_bytes: size,
            cache_bytes: cli.rss_cache_mib * MIB,
            downloads: n,
            seed_all_secs,
            initial_check_s3_bytes: checked_bytes,
            rss_seeded_mib: rss_seeded,
            hwm_seeded_mib: hwm_seeded,
            download_secs,
            downloaded_bytes: downloaded,
            s3_bytes_during_downloads: s3_after.saturating_sub(checked_bytes),
            rss_end_mib: rss_end,
            hwm_end_mib: hwm_end,
            rss_sampled_max_mib: sampled_max.max(rss_end),
        })
    }
    .await;
    tracker.stop().await;
    r
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn render(cli: &Cli, r: &Report) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let mib = |b: u64| b as f64 / MIB as f64;
    let mut rows: Vec<[String; 4]> = Vec::new();
    if let Some(p) = &r.publish {
        let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
        let runs = |v: &[f64]| v.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(" / ");
        rows.push([
            "1".into(),
            format!("raw S3 GetObject, stream and discard ({} MiB, best of {})", mib(p.object_bytes), p.raw_get_secs.len()),
            format!("**{:.0} MB/s** ({:.2} s; runs {} s)", p.raw_get_mb_s, best(&p.raw_get_secs), runs(&p.raw_get_secs)),
            String::new(),
        ]);
        rows.push([
            "1".into(),
            format!("publish `hash_object` (SHA-1/piece of {} KiB + SHA-256)", p.piece_length / 1024),
            format!("**{:.0} MB/s** ({:.2} s; runs {} s)", p.publish_mb_s, best(&p.publish_secs), runs(&p.publish_secs)),
            String::new(),
        ]);
        rows.push([
            "1".into(),
            "ratio publish / raw GET".into(),
            format!("**{:.2}**", p.ratio_publish_to_raw),
            format!("≥ 0.8: {}", verdict(p.ratio_publish_to_raw >= 0.8)),
        ]);
        rows.push([
            "1".into(),
            "`PieceHasher` alone, 64 MiB in memory (no I/O)".into(),
            format!("{:.0} MB/s", p.hasher_only_mb_s),
            "ceiling of publish on this CPU (SHA-1 and SHA-256 on one thread)".into(),
        ]);
        if p.probe_gets > 0 {
            rows.push([
                "1".into(),
                format!("ranged GET of one {} KiB piece, one at a time ({} GETs)", p.piece_length / 1024, p.probe_gets),
                format!(
                    "mean **{:.1} ms** (p50 {:.1}, p90 {:.1}, max {:.1} ms) = {:.0} MB/s",
                    p.probe_mean_ms,
                    p.probe_p50_ms,
                    p.probe_p90_ms,
                    p.probe_max_ms,
                    p.piece_length as f64 / 1e3 / p.probe_mean_ms
                ),
                "latency bound of the seeder's S3 path (read-ahead + 1 GETs in flight per reader)".into(),
            ]);
        }
    }
    if let Some(s) = &r.seed {
        let file = s.variants.iter().find(|v| v.cache_bytes.is_none());
        for v in &s.variants {
            let check = match v.initial_check_s3_bytes {
                Some(b) => format!(
                    "initial check {:.2} s ({:.0} MB/s), {:.1} MB read from S3 (\"initial check bytes\"){}",
                    v.initial_check_secs,
                    mb_s(s.object_bytes, v.initial_check_secs),
                    mb(b),
                    v.tracker_listed_origin_secs.map(|l| format!("; tracker listed the origin after {l:.2} s")).unwrap_or_default()
                ),
                None => format!("initial check {:.2} s ({:.0} MB/s) from the local file", v.initial_check_secs, mb_s(s.object_bytes, v.initial_check_secs)),
            };
            rows.push([
                "2".into(),
                format!("{} → 1 loopback leecher ({} MiB)", v.name, mib(s.object_bytes)),
                format!(
                    "**{:.0} MB/s** ({:.2} s, {:.1} MB fetched, SHA-256 {})",
                    v.leech_mb_s,
                    v.leech_secs,
                    mb(v.leech_fetched_bytes),
                    if v.identical { "ok" } else { "MISMATCH" }
                ),
                check,
            ]);
        }
        if let Some(f) = file {
            for v in s.variants.iter().filter(|v| v.cache_bytes.is_some()) {
                let ratio = v.leech_mb_s / f.leech_mb_s;
                rows.push(["2".into(), format!("ratio {} / file storage", v.name), format!("**{ratio:.2}**"), format!("≥ 0.8: {}", verdict(ratio >= 0.8))]);
            }
        }
        for v in s.variants.iter().filter(|v| v.cache_bytes.is_some()) {
            let ratio = v.s3_read_per_byte_served.unwrap_or(0.0);
            rows.push([
                "3".into(),
                format!("S3 bytes read per byte served, {}", v.name),
                format!(
                    "**{ratio:.3}** ({:.1} MB read / {:.1} MB served; ledger {:.1} MB)",
                    mb(v.s3_bytes_during_leech.unwrap_or(0)),
                    mb(v.leech_fetched_bytes),
                    mb(v.ledger_bittorrent_bytes.unwrap_or(0))
                ),
                format!("≤ 1.05: {}", verdict(ratio <= 1.05)),
            ]);
        }
    }
    if let Some(m) = &r.rss {
        let what = format!("`ota-seeder seed` (pid {}), {} releases × {} MiB, cache {} MiB", m.pid, m.releases, mib(m.release_bytes), mib(m.cache_bytes));
        rows.push([
            "4".into(),
            format!("{what}: all seeded ({:.1} s, {:.0} MB read from S3 by the initial checks)", m.seed_all_secs, mb(m.initial_check_s3_bytes)),
            format!("VmRSS **{:.0} MiB**, VmHWM {:.0} MiB", m.rss_seeded_mib, m.hwm_seeded_mib),
            format!("VmHWM − cache cap: {:+.0} MiB", m.hwm_seeded_mib - mib(m.cache_bytes)),
        ]);
        rows.push([
            "4".into(),
            format!(
                "{what}: after {} leechers ({} at once) fetched {:.0} MB in {:.1} s ({:.0} MB/s; {:.0} MB read from S3 meanwhile)",
                m.downloads,
                cli.parallel_leechers.max(1),
                mb(m.downloaded_bytes),
                m.download_secs,
                mb_s(m.downloaded_bytes, m.download_secs),
                mb(m.s3_bytes_during_downloads)
            ),
            format!("VmRSS **{:.0} MiB**, VmHWM **{:.0} MiB** (sampled max RSS {:.0} MiB)", m.rss_end_mib, m.hwm_end_mib, m.rss_sampled_max_mib),
            format!("VmHWM − cache cap: {:+.0} MiB", m.hwm_end_mib - mib(m.cache_bytes)),
        ]);
    }
    let mut out = format!(
        "### ota-seeder bench — {}, {} tokio workers, S3: {}, wall {:.0} s (MB = 10^6 bytes)\n\n| # | measurement | result | target / notes |\n|---|---|---|---|\n",
        r.machine, r.worker_threads, r.s3_server, r.wall_secs
    );
    for row in rows {
        out.push_str(&format!("| {} | {} | {} | {} |\n", row[0], row[1], row[2], row[3]));
    }
    out
}


