//! `ota-tracker-load`: a load benchmark for BitTorrent HTTP trackers (BEP 3
//! announces with compact peers), used to compare `ota-tracker` with
//! opentracker on the same machine (see `deploy/bench-tracker.sh`).
//!
//! Modes:
//! - default: timed load against each `--target-url` in turn, same request
//!   mix and seed for every target; prints a markdown table row per target.
//! - `--fill`: announces every (swarm, peer) of the pool exactly once (for
//!   memory measurements), then exits.
//! - `--print-info-hashes`: prints the hex info hashes of the swarms, one a
//!   line (an opentracker whitelist), then exits.
//!
//! The HTTP client is a minimal HTTP/1.1 client over one TCP connection per
//! worker, kept alive across requests (so the tracker is measured, not TCP
//! setup); `--connection-close` opens a connection per request instead,
//! which is what opentracker does anyway (it closes after each reply).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use ota_proto::announce::encode_binary;
use ota_proto::api::NewRelease;
use ota_proto::metainfo::{info_hash, InfoDict};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    /// Announce URL of a tracker, e.g. http://127.0.0.1:7070/announce (a
    /// query such as `?token=HEX` is kept); may be `LABEL=URL`. Repeat for several targets (run one after the other).
    #[arg(long, required_unless_present = "print_info_hashes")]
    target_url: Vec<String>,
    /// Number of swarms (info hashes).
    #[arg(long, default_value_t = 1000)]
    swarms: usize,
    /// Peers in each swarm's pool (distinct peer ids and ports).
    #[arg(long, default_value_t = 100)]
    peers_per_swarm: usize,
    /// Concurrent connections (one worker each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured seconds per target.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Unmeasured seconds of load before the measurement, per target.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Seed of the request mix (same for every target).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Register the swarms as releases first (ota-tracker): admin bearer token.
    #[arg(long)]
    register_admin_token: Option<String>,
    /// Open a new TCP connection for every request (no keep-alive).
    #[arg(long)]
    connection_close: bool,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Hard cap on requests per worker (a bound besides time).
    #[arg(long, default_value_t = 10_000_000)]
    max_requests_per_worker: u64,
    /// Announce each pooled peer once (event=started, numwant=0) and exit.
    #[arg(long)]
    fill: bool,
    /// Only register the swarms (with --register-admin-token), then exit.
    #[arg(long)]
    register_only: bool,
    /// Print the swarms' hex info hashes and exit.
    #[arg(long)]
    print_info_hashes: bool,
    /// Leave out the markdown table header.
    #[arg(long)]
    no_header: bool,
}

/// `&` when the target's announce path already has a query (e.g. a device
/// token, `/announce?token=HEX`), else `?`.
fn query_sep(path: &str) -> char {
    if path.contains('?') {
        '&'
    } else {
        '?'
    }
}

/// splitmix64: a deterministic per-(swarm, peer) hash for the peer pool.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

const SIZE: u64 = 4 * 262_144;

/// The info dictionary of swarm `i`: a tiny single-file torrent.
fn info_dict(seed: u64, i: usize) -> Vec<u8> {
    let pieces = (0..4u64)
        .map(|p| {
            let mut h = [0u8; 20];
            for (k, b) in h.iter_mut().enumerate() {
                *b = mix(seed ^ ((i as u64) << 8) ^ (p << 4) ^ k as u64) as u8;
            }
            h
        })
        .collect();
    InfoDict {
        name: format!("bench-{seed}-{i}.bin"),
        length: SIZE,
        piece_length: 262_144,
        pieces,
        private: false,
    }
    .to_bytes()
}

/// The fixed request pool: info hashes and per-peer identity.
struct Pool {
    seed: u64,
    swarms: Vec<(Vec<u8>, String)>, // (info dict, percent-encoded info hash)
    peers_per_swarm: usize,
    started: Vec<AtomicBool>,
}

impl Pool {
    fn new(seed: u64, swarms: usize, peers_per_swarm: usize) -> anyhow::Result<Self> {
        if peers_per_swarm == 0 || peers_per_swarm > 64_000 {
            bail!("--peers-per-swarm must be 1..=64000 (one distinct port per peer)");
        }
        let swarms: Vec<(Vec<u8>, String)> = (0..swarms)
            .map(|i| {
                let info = info_dict(seed, i);
                let ih = encode_binary(info_hash(&info).as_bytes());
                (info, ih)
            })
            .collect();
        let n = swarms.len() * peers_per_swarm;
        Ok(Pool {
            seed,
            swarms,
            peers_per_swarm,
            started: (0..n).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    /// Query string of one announce by peer `p` of swarm `s`.
    fn query(&self, s: usize, p: usize, numwant: Option<usize>) -> String {
        let idx = s * self.peers_per_swarm + p;
        let h = mix(self.seed ^ (idx as u64).wrapping_mul(0x100_0000_01B3));
        // Distinct ports within a swarm (opentracker keys peers by ip:port).
        let port = 1025 + (p + s * 37) % 64_000;
        let left = if h.is_multiple_of(5) { 0 } else { 1 + (h >> 8) % SIZE };
        let first = !self.started[idx].swap(true, Ordering::Relaxed);
        let mut q = format!(
            "info_hash={}&peer_id=-OL0001-{:012}&port={port}&uploaded=0&downloaded={}&left={left}&compact=1",
            self.swarms[s].1,
            idx,
            SIZE - left
        );
        if first {
            q.push_str("&event=started");
        }
        if let Some(n) = numwant {
            q.push_str(&format!("&numwant={n}"));
        }
        q
    }
}

/// One HTTP/1.1 connection (reopened when the server closes it).
struct Conn {
    addr: SocketAddr,
    host: String,
    close: bool,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    connects: u64,
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr, host: String, close: bool) -> Self {
        Conn {
            addr,
            host,
            close,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            connects: 0,
        }
    }

    async fn get(&mut self, path_query: &str) -> anyhow::Result<Reply> {
        let req = format!(
            "GET {path_query} HTTP/1.1\r\nHost: {}\r\nConnection: {}\r\n\r\n",
            self.host,
            if self.close { "close" } else { "keep-alive" }
        );
        // A reused connection may have been closed by the server meanwhile:
        // retry once on a fresh one.
        for attempt in 0..2 {
            let reused = self.stream.is_some();
            match self.try_get(req.as_bytes()).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.stream = None;
                    if !reused || attempt == 1 {
                        return Err(e);
                    }
                }
            }
        }
        unreachable!()
    }

    async fn try_get(&mut self, req: &[u8]) -> anyhow::Result<Reply> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await.context("connect")?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
            self.connects += 1;
        }
        let s = self.stream.as_mut().expect("connected");
        s.write_all(req).await.context("write")?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > 64 * 1024 {
                bail!("response head too long");
            }
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await.context("read")?;
            if n == 0 {
                bail!("connection closed before a response");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("response head not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.split(' ');
        let version = parts.next().unwrap_or_default().to_string();
        let status: u16 = parts.next().unwrap_or_default().parse().context("status code")?;
        let mut length = None;
        let mut close = self.close || version == "HTTP/1.0";
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = Some(v.parse::<usize>().context("content-length")?);
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("chunked responses are not supported");
                }
            }
        }
        let mut body = self.buf[head_end..].to_vec();
        match length {
            Some(n) => {
                while body.len() < n {
                    let mut chunk = [0u8; 8192];
                    let k = s.read(&mut chunk).await.context("read body")?;
                    if k == 0 {
                        bail!("connection closed inside the body");
                    }
                    body.extend_from_slice(&chunk[..k]);
                }
                body.truncate(n);
            }
            None => {
                s.read_to_end(&mut body).await.context("read body")?;
                close = true;
            }
        }
        if close {
            self.stream = None;
        }
        Ok(Reply { status, body })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Peers in a bencoded announce reply (compact `peers` / `peers6`), or None
/// if it is not a successful announce.
fn peers_in(body: &[u8]) -> Option<usize> {
    if body.first() != Some(&b'd') || find(body, b"14:failure reason").is_some() {
        return None;
    }
    let count = |key: &[u8], width: usize| -> usize {
        find(body, key)
            .and_then(|i| {
                let rest = &body[i + key.len()..];
                let colon = rest.iter().position(|&b| b == b':')?;
                std::str::from_utf8(&rest[..colon]).ok()?.parse::<usize>().ok()
            })
            .map(|n| n / width)
            .unwrap_or(0)
    };
    Some(count(b"5:peers", 6) + count(b"6:peers6", 18))
}

struct Target {
    label: String,
    url: String,
    addr: SocketAddr,
    host: String,
    path: String,
}

fn parse_target(s: &str) -> anyhow::Result<Target> {
    let (label, url) = match s.split_once('=') {
        Some((l, u)) if !l.contains('/') => (l.to_string(), u.to_string()),
        _ => (s.to_string(), s.to_string()),
    };
    let rest = url
        .strip_prefix("http://")
        .context("target URL must start with http://")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/announce".into()));
    let addr: SocketAddr = host
        .parse()
        .with_context(|| format!("target host must be IP:PORT, got {host}"))?;
    if !addr.ip().is_loopback() {
        bail!("only loopback targets are allowed, got {addr}");
    }
    Ok(Target {
        label,
        url: url.clone(),
        addr,
        host: host.to_string(),
        path,
    })
}

async fn register(t: &Target, pool: &Pool, token: &str) -> anyhow::Result<()> {
    let base = t.url.trim_end_matches(&t.path).to_string();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(pool.swarms.iter().enumerate())
        .map(|(i, (info, _))| {
            let client = client.clone();
            let base = base.clone();
            async move {
                let ih = info_hash(info);
                let body = NewRelease {
                    name: format!("bench-{}-{i}.bin", pool.seed),
                    version: "1".into(),
                    info_hash: ih,
                    size: SIZE,
                    piece_length: 262_144,
                    sha256: "ab".repeat(32),
                    info_hex: hex::encode(info),
                    http_url: None,
                    source: format!("s3://bench/{i}"),
                    etag: None,
                    manifest: None,
                    rollout_percent: None,
                    origin_goal: None,
                };
                let r = client
                    .post(format!("{base}/api/releases"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!(
                        "register {i}: HTTP {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
                Ok(())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u32>,
    errors: u64,
    peers: u64,
    ok: u64,
    connects: u64,
    first_error: Option<String>,
}

async fn run_target(args: &Args, t: &Target, pool: Arc<Pool>) -> anyhow::Result<String> {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup_secs);
    let end = measure_from + Duration::from_secs(args.duration_secs);
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let pool = pool.clone();
        let (addr, host, path, close, cap, seed) = (
            t.addr,
            t.host.clone(),
            t.path.clone(),
            args.connection_close,
            args.max_requests_per_worker,
            args.seed,
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(w as u64));
            let mut conn = Conn::new(addr, host, close);
            let mut r = WorkerResult::default();
            for _ in 0..cap {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let s = rng.gen_range(0..pool.swarms.len());
                let p = rng.gen_range(0..pool.peers_per_swarm);
                let q = format!("{path}{}{}", query_sep(&path), pool.query(s, p, None));
                let t0 = Instant::now();
                let res = tokio::time::timeout(Duration::from_secs(10), conn.get(&q)).await;
                let dt = t0.elapsed();
                let measured = t0 >= measure_from && t0 < end;
                let outcome = match res {
                    Ok(Ok(reply)) if reply.status == 200 => peers_in(&reply.body)
                        .ok_or_else(|| String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]).into_owned()),
                    Ok(Ok(reply)) => Err(format!("HTTP {}", reply.status)),
                    Ok(Err(e)) => Err(format!("{e:#}")),
                    Err(_) => {
                        conn.stream = None;
                        Err("timeout".into())
                    }
                };
                if !measured {
                    continue;
                }
                r.latencies_us.push(dt.as_micros().min(u32::MAX as u128) as u32);
                match outcome {
                    Ok(n) => {
                        r.ok += 1;
                        r.peers += n as u64;
                    }
                    Err(e) => {
                        r.errors += 1;
                        if r.first_error.is_none() {
                            r.first_error = Some(e);
                        }
                        if r.errors > 1000 && r.ok == 0 {
                            break; // the target is down; stop hammering it
                        }
                    }
                }
            }
            r.connects = conn.connects;
            r
        }));
    }
    let mut all = WorkerResult::default();
    for task in tasks {
        let r = task.await?;
        all.latencies_us.extend(r.latencies_us);
        all.errors += r.errors;
        all.ok += r.ok;
        all.peers += r.peers;
        all.connects += r.connects;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    all.latencies_us.sort_unstable();
    let n = all.latencies_us.len();
    let pct = |q: f64| -> f64 {
        if n == 0 {
            return f64::NAN;
        }
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        all.latencies_us[i] as f64 / 1000.0
    };
    if let Some(e) = &all.first_error {
        eprintln!("{}: first error: {e}", t.label);
    }
    let rps = n as f64 / args.duration_secs.max(1) as f64;
    let avg_peers = if all.ok > 0 {
        all.peers as f64 / all.ok as f64
    } else {
        0.0
    };
    Ok(format!(
        "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {} | {} |",
        t.label,
        if args.connection_close {
            "new conn/request"
        } else {
            "keep-alive"
        },
        rps,
        pct(0.50),
        pct(0.99),
        pct(1.0),
        all.errors,
        avg_peers,
        n,
        all.connects
    ))
}

async fn fill(args: &Args, t: &Target, pool: Arc<Pool>) -> anyhow::Result<()> {
    let total = pool.swarms.len() * pool.peers_per_swarm;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs.max(1) * 30);
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let pool = pool.clone();
        let (addr, host, path, close, c) = (
            t.addr,
            t.host.clone(),
            t.path.clone(),
            args.connection_close,
            args.concurrency,
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr, host, close);
            let (mut ok, mut err) = (0u64, 0u64);
            let mut first = None;
            for idx in (w..total).step_by(c) {
                if Instant::now() > deadline {
                    break;
                }
                let (s, p) = (idx / pool.peers_per_swarm, idx % pool.peers_per_swarm);
                let q = format!("{path}{}{}", query_sep(&path), pool.query(s, p, Some(0)));
                match tokio::time::timeout(Duration::from_secs(10), conn.get(&q)).await {
                    Ok(Ok(r)) if r.status == 200 && peers_in(&r.body).is_some() => ok += 1,
                    other => {
                        err += 1;
                        conn.stream = None;
                        if first.is_none() {
                            first = Some(match other {
                                Ok(Ok(r)) => String::from_utf8_lossy(&r.body).into_owned(),
                                Ok(Err(e)) => format!("{e:#}"),
                                Err(_) => "timeout".into(),
                            });
                        }
                    }
                }
            }
            (ok, err, first)
        }));
    }
    let (mut ok, mut err) = (0, 0);
    for task in tasks {
        let (o, e, f) = task.await?;
        ok += o;
        err += e;
        if let Some(f) = f {
            eprintln!("fill error: {f}");
        }
    }
    println!(
        "{}: announced {ok} peers ({err} errors) in {:.1} s",
        t.label,
        started.elapsed().as_secs_f64()
    );
    if err > 0 {
        bail!("{err} announces failed");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let pool = Arc::new(Pool::new(args.seed, args.swarms, args.peers_per_swarm)?);
    if args.print_info_hashes {
        for (info, _) in &pool.swarms {
            println!("{}", hex::encode(info_hash(info)));
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async {
        let targets = args.target_url.iter().map(|s| parse_target(s)).collect::<anyhow::Result<Vec<_>>>()?;
        if !args.fill && !args.register_only && !args.no_header {
            println!("| target | connections | requests/s | p50 ms | p99 ms | max ms | errors | peers/response | requests | TCP connects (incl. warm-up) |");
            println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        }
        for t in &targets {
            if let Some(token) = &args.register_admin_token {
                let t0 = Instant::now();
                register(t, &pool, token).await.with_context(|| format!("registering swarms at {}", t.url))?;
                eprintln!("{}: registered {} releases in {:.1} s", t.label, pool.swarms.len(), t0.elapsed().as_secs_f64());
            }
            if args.register_only {
                continue;
            }
            // Each target starts from the same pool state (same mix, same seed).
            for s in &pool.started {
                s.store(false, Ordering::Relaxed);
            }
            if args.fill {
                fill(&args, t, pool.clone()).await?;
            } else {
                println!("{}", run_target(&args, t, pool.clone()).await?);
            }
        }
        Ok(())
    })
}
