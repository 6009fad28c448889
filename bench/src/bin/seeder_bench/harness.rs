//! What the sections share: the S3 object, an in-process tracker, a plain
//! librqbit leecher, process memory readings.

use super::*;

pub(crate) fn num_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

pub(crate) fn step(what: &str) {
    eprintln!("[seeder-bench] {what}");
}

/// Writes `size` pseudo-random bytes (ChaCha, seeded) to `path`.
pub(crate) fn write_random(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
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

pub(crate) async fn upload(s3: &aws_sdk_s3::Client, loc: &S3Location, file: &Path) -> anyhow::Result<()> {
    let body = aws_sdk_s3::primitives::ByteStream::from_path(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    origin_store::put(s3, loc, body).await
}

/// A plain streaming GetObject that discards the bytes; returns the byte count.
pub(crate) async fn raw_get(s3: &aws_sdk_s3::Client, loc: &S3Location) -> anyhow::Result<u64> {
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

pub(crate) fn publish_request(loc: &S3Location, tracker_url: &str) -> PublishRequest {
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

/// The in-process tracker every section announces to (announce interval 1 s).
pub(crate) async fn start_tracker(dir: &Path) -> TestTracker {
    TestTracker::builder()
        .db_dir(dir)
        .admin_token(ADMIN)
        .announce_interval(Duration::from_secs(1))
        .start()
        .await
}

/// What one leecher got.
pub(crate) struct Leeched {
    pub(crate) secs: f64,
    pub(crate) fetched: u64,
    pub(crate) path: PathBuf,
}

/// A fresh plain librqbit session (no DHT, no LSD, no trackers, loopback
/// listener) downloads `torrent` from `peer` into `dir`; timed from add to
/// completion. The session is stopped before returning.
pub(crate) async fn leech(
    torrent: Vec<u8>,
    name: &str,
    peer: SocketAddr,
    dir: &Path,
    timeout: Duration,
) -> anyhow::Result<Leeched> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let session = PeerSession {
        trackers: false,
        announce_port: None,
        ..PeerSession::listening(listen)
    }
    .start(dir.to_path_buf())
    .await
    .context("cannot start the leecher session")?;
    let r = async {
        let t = Instant::now();
        let handle = ota_peer::add_torrent(&session, torrent, dir, ota_peer::from_peers(vec![peer]))
            .await
            .context("leecher")?;
        tokio::time::timeout(timeout, handle.wait_until_completed())
            .await
            .with_context(|| {
                format!(
                    "leecher did not finish within {} s ({})",
                    timeout.as_secs(),
                    handle.stats()
                )
            })?
            .context("leecher failed")?;
        let secs = t.elapsed().as_secs_f64();
        let stats = handle.stats();
        let fetched = stats
            .live
            .as_ref()
            .map(|l| l.snapshot.fetched_bytes)
            .unwrap_or(stats.progress_bytes);
        anyhow::Ok(Leeched {
            secs,
            fetched,
            path: dir.join(name),
        })
    }
    .await;
    session.stop().await;
    r
}

pub(crate) async fn sha256_file(path: PathBuf) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        let mut f = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        anyhow::Ok(hex::encode(h.finalize()))
    })
    .await?
}

pub(crate) async fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// VmRSS and VmHWM of a process, MiB.
pub(crate) fn proc_mem_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = s
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb: f64 = line.split_whitespace().nth(1).context("malformed line")?.parse()?;
        Ok(kb / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

pub(crate) async fn seeder_s3_bytes(http: &str) -> Option<u64> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let v: serde_json::Value = c
        .get(format!("http://{http}/api/egress"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["s3_bytes_read"].as_u64()
}

/// Publishes `count` releases of `size` bytes each (`{prefix}-{i:04}.bin`,
/// random bytes seeded with `seed + i`), registered with `tracker`; the local
/// files are removed once uploaded. Returns each release with its info
/// dictionary.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn publish_releases(
    s3: &aws_sdk_s3::Client,
    tracker: &TestTracker,
    dir: &Path,
    prefix: &str,
    count: usize,
    size: u64,
    seed: u64,
    timeout: Duration,
) -> anyhow::Result<Vec<(NewRelease, Vec<u8>)>> {
    std::fs::create_dir_all(dir)?;
    let mut releases = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("{prefix}-{i:04}.bin");
        let file = dir.join(&name);
        write_random(&file, size, seed + i as u64)?;
        let loc = S3Location {
            bucket: BUCKET.into(),
            key: name.clone(),
        };
        upload(s3, &loc, &file).await?;
        std::fs::remove_file(&file)?;
        let (new, info) = tokio::time::timeout(timeout, hash_object(s3, &publish_request(&loc, tracker.url())))
            .await
            .context("hash_object timed out")??;
        tracker.client().register(&new).await?;
        releases.push((new, info));
    }
    Ok(releases)
}

/// A child `ota-seeder seed` process.
pub(crate) struct ChildSeeder {
    pub(crate) pid: u32,
    /// Its peer-wire listen address.
    pub(crate) peer: SocketAddr,
    /// Its HTTP listen address (`ip:port`).
    pub(crate) http: String,
}

/// Spawns `ota-seeder seed` in `procs` with its state under `state_dir`
/// (kept between spawns, so a second spawn is a restart), the given piece
/// cache cap (bytes), the bench's read-ahead and S3 concurrency, 300 ms
/// release polling; its log goes to `log`.
pub(crate) fn spawn_seeder(
    cli: &Cli,
    procs: &mut ProcessGroup,
    s3_server: &S3Server,
    tracker: &TestTracker,
    state_dir: &Path,
    cache_bytes: u64,
    log: &Path,
) -> anyhow::Result<ChildSeeder> {
    let peer: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let http = format!("127.0.0.1:{}", free_port()?);
    let mut env = s3_server.client_env();
    env.push(("OTA_TRACKER_URL".into(), tracker.url().to_string()));
    env.push(("OTA_ADMIN_TOKEN".into(), ADMIN.into()));
    env.push(("OTA_ORIGIN_TOKEN".into(), ORIGIN.into()));
    let s = |v: &str| v.to_string();
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
            state_dir.display().to_string(),
            s("--cache-bytes"),
            cache_bytes.to_string(),
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
        log,
    )?;
    Ok(ChildSeeder { pid, peer, http })
}

/// Tells when a byte counter (the seeder's S3 bytes read) has stood still
/// for a while: feed it each reading.
#[derive(Default)]
pub(crate) struct Settle {
    last: Option<(u64, Instant)>,
}

impl Settle {
    /// Records `value`; returns when it first took that value if it has not
    /// changed for `still` since.
    pub(crate) fn still_since(&mut self, value: u64, still: Duration) -> Option<Instant> {
        match self.last {
            Some((prev, since)) if prev == value => (since.elapsed() >= still).then_some(since),
            _ => {
                self.last = Some((value, Instant::now()));
                None
            }
        }
    }
}

/// Marks in `listed` the releases whose origin the tracker lists now (only
/// those not listed yet are asked): any origin, or with `at` only the origin
/// at that peer address (`ip:port`); returns how many are listed.
pub(crate) async fn count_listed(
    tracker: &TestTracker,
    releases: &[(NewRelease, Vec<u8>)],
    listed: &mut [bool],
    at: Option<&str>,
) -> usize {
    for (i, (new, _)) in releases.iter().enumerate() {
        if !listed[i] {
            listed[i] = tracker.client().release(&new.info_hash).await.is_ok_and(|r| match at {
                Some(addr) => r.origin_peers.iter().any(|p| p == addr),
                None => !r.origin_peers.is_empty(),
            });
        }
    }
    listed.iter().filter(|l| **l).count()
}
