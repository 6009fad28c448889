//! The flash-crowd experiment on loopback: the embedded S3 server, the
//! tracker, the seeder and N device agents as real processes; publish a
//! package, push it, wait until every agent holds a verified copy, then
//! measure where the bytes came from.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;

use ota_billing_report::savings::RunRecord;
use ota_client::TrackerClient;
use ota_proto::api::Release;

use crate::processes::ProcessGroup;
use ota_testkit::net::free_port;
use ota_testkit::s3_server::S3Server;

const BUCKET: &str = "ota-packages";
const ACCESS_KEY: &str = "ota-local-access";
const SECRET_KEY: &str = "ota-local-secret-key";

/// Distribution mode of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Everything this project does: the origin is handed out on demand.
    P2p,
    /// Plain BitTorrent as in the 2017 study: the origin is listed to every device.
    BittorrentBaseline,
}

/// Settings of one flash-crowd run.
#[derive(Debug, Clone, Args)]
pub struct FlashCrowdArgs {
    /// Number of device agents.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// Update package to distribute [default: Debian's chromium .deb, fetched
    /// with apt-get download into --cache-dir].
    #[arg(long)]
    pub package: Option<PathBuf>,
    /// Where the default package is cached.
    #[arg(long, default_value = "deploy/.cache")]
    pub cache_dir: PathBuf,
    /// Distribution mode.
    #[arg(long, value_enum, default_value_t = Mode::P2p)]
    pub mode: Mode,
    /// Announce interval handed to agents, seconds.
    #[arg(long, default_value_t = 2)]
    pub announce_interval: u64,
    /// Origin upload cap over BitTorrent, bytes/s (0: none).
    #[arg(long, default_value_t = 0)]
    pub origin_upload_limit: u32,
    /// Piece length in bytes [default: chosen from the size].
    #[arg(long)]
    pub piece_length: Option<u64>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// Work folder (S3 data, databases, agent states, logs) [default: a
    /// temporary folder removed at the end].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Write the run summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Append this run to a JSON array of experiment records (the billing
    /// report's input).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Scenario name written in the record.
    #[arg(long, default_value = "loopback")]
    pub scenario: String,
    /// Save the origin's egress ledger (CSV, `ota-seeder ledger` format) to this file.
    #[arg(long)]
    pub ledger_out: Option<PathBuf>,
}

/// One device's result.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceResult {
    /// Device id.
    pub device: String,
    /// Payload bytes received from the origin over BitTorrent.
    pub bytes_from_origin: u64,
    /// Payload bytes received from other devices.
    pub bytes_from_peers: u64,
    /// Payload bytes it sent to other devices.
    pub bytes_uploaded: u64,
    /// From push to verified package, ms.
    pub duration_ms: u64,
    /// Whether its package file is byte-identical to the original.
    pub identical: bool,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Mode of the run.
    pub mode: Mode,
    /// Package file name.
    pub package: String,
    /// Package size, bytes.
    pub package_bytes: u64,
    /// Info hash, hex.
    pub info_hash: String,
    /// Per device.
    pub devices: Vec<DeviceResult>,
    /// Bytes the origin sent (BitTorrent + HTTP).
    pub origin_egress_bytes: u64,
    /// Origin egress in package copies.
    pub origin_egress_copies: f64,
    /// Bytes N plain downloads would have cost (N × size): D_cs of the 2017 study.
    pub client_server_bytes: u64,
    /// Saving against N plain downloads, percent: (D_cs − D_p2p) / D_cs.
    pub saving_pct: f64,
    /// The limit 1 − 1/N, percent.
    pub limit_pct: f64,
    /// From push to the last verified copy, ms.
    pub distribution_ms: u64,
    /// Whole run, ms.
    pub wall_ms: u64,
    /// PIDs of every process the run started (all stopped at the end).
    pub pids: Vec<u32>,
    /// The work folder (removed at the end unless --work-dir was given).
    pub work_dir: PathBuf,
}

fn files_identical(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, procs: &mut ProcessGroup, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        procs
            .check_alive()
            .with_context(|| format!("while waiting for {what}"))?;
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs one flash crowd; every process is stopped and the temporary work
/// folder removed whether the run succeeds or fails.
pub async fn run(args: &FlashCrowdArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(args.devices >= 1, "--devices must be at least 1");
    let package = match &args.package {
        Some(p) => p.clone(),
        None => crate::package::default_package(&args.cache_dir)?,
    };
    let package_bytes = std::fs::metadata(&package)
        .with_context(|| format!("cannot read package {}", package.display()))?
        .len();
    anyhow::ensure!(package_bytes > 0, "package {} is empty", package.display());
    let (temp, work) = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (None, d.clone())
        }
        None => {
            let t = tempfile::Builder::new().prefix("ota-flash-crowd-").tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let mut procs = ProcessGroup::default();
    let result = run_in(args, &package, package_bytes, &work, &mut procs).await;
    procs.stop_all(Duration::from_secs(5)).await;
    drop(temp);
    result
}

async fn run_in(
    args: &FlashCrowdArgs,
    package: &Path,
    package_bytes: u64,
    work: &Path,
    procs: &mut ProcessGroup,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let admin = format!("admin-{:032x}", rand::random::<u128>());
    let origin = format!("origin-{:032x}", rand::random::<u128>());

    let s3_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let s3 = S3Server::start(&work.join("s3"), s3_listener, ACCESS_KEY, SECRET_KEY)?;
    std::fs::create_dir_all(work.join("s3").join(BUCKET))?;
    tracing::info!(endpoint = %s3.endpoint(), "embedded S3 server (s3s-fs) running");

    let tracker_port = free_port()?;
    let tracker_url = format!("http://127.0.0.1:{tracker_port}");
    let slots = match args.mode {
        Mode::P2p => 1,
        Mode::BittorrentBaseline => 0,
    };
    let s = |v: &str| v.to_string();
    procs.spawn(
        "tracker",
        "ota-tracker",
        &[
            s("serve"),
            s("--listen"),
            format!("127.0.0.1:{tracker_port}"),
            s("--database-url"),
            format!("sqlite://{}?mode=rwc", work.join("tracker.db").display()),
            s("--admin-token"),
            admin.clone(),
            s("--origin-token"),
            origin.clone(),
            s("--announce-interval"),
            args.announce_interval.to_string(),
            s("--origin-slots"),
            slots.to_string(),
        ],
        &[],
        &logs.join("tracker.log"),
    )?;
    let tracker = TrackerClient::new(&tracker_url, Some(admin.clone()));
    wait_for("the tracker", Duration::from_secs(30), procs, || async {
        tracker.releases().await.ok()
    })
    .await?;

    let mut s3_env = s3.client_env();
    s3_env.push((s("OTA_TRACKER_URL"), tracker_url.clone()));
    s3_env.push((s("OTA_ADMIN_TOKEN"), admin.clone()));
    s3_env.push((s("OTA_ORIGIN_TOKEN"), origin.clone()));
    let seeder_http = format!("127.0.0.1:{}", free_port()?);
    procs.spawn(
        "seeder",
        "ota-seeder",
        &[
            s("seed"),
            s("--peer-listen"),
            format!("127.0.0.1:{}", free_port()?),
            s("--http-listen"),
            seeder_http.clone(),
            s("--state-dir"),
            work.join("seeder").display().to_string(),
            s("--upload-limit-bps"),
            args.origin_upload_limit.to_string(),
            s("--poll-ms"),
            s("300"),
        ],
        &s3_env,
        &logs.join("seeder.log"),
    )?;

    // The device maker's manifest key: publish signs with it, agents pin it.
    let signing_key = ota_proto::manifest::generate_signing_key();
    let key_path = work.join("manifest-signing.key");
    std::fs::write(&key_path, hex::encode(signing_key.to_bytes()))?;
    let public_key = hex::encode(signing_key.verifying_key().to_bytes());
    for i in 1..=args.devices {
        let id = format!("dev-{i:02}");
        // Each device gets its own token from the tracker's admin API (the
        // tracker requires device tokens); the agent's defaults are channel
        // `stable`, model `generic`.
        let token = tracker.register_device(&id, "stable", "generic").await?;
        procs.spawn(
            &id,
            "ota-device-agent",
            &[
                s("run"),
                s("--device-id"),
                id.clone(),
                s("--state-dir"),
                work.join("agents").join(&id).display().to_string(),
                s("--peer-listen"),
                format!("127.0.0.1:{}", free_port()?),
                s("--no-catch-up"),
                s("--poll-interval-secs"),
                s("0"),
                s("--report-interval-secs"),
                s("1"),
                s("--manifest-public-key"),
                public_key.clone(),
            ],
            &[
                (s("OTA_TRACKER_URL"), tracker_url.clone()),
                (s("OTA_DEVICE_TOKEN"), token),
            ],
            &logs.join(format!("{id}.log")),
        )?;
    }
    let n = args.devices;
    wait_for("every agent to subscribe", Duration::from_secs(60), procs, || async {
        tracker.subscribers().await.ok().filter(|c| *c >= n)
    })
    .await?;

    // Publish: upload the package to S3 and register it, as a device maker would.
    let name = package
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("package.bin")
        .to_string();
    let summary_path = work.join("published.json");
    let mut publish_args = vec![
        s("publish"),
        format!("s3://{BUCKET}/{name}"),
        s("--file"),
        package.display().to_string(),
        s("--http-base"),
        format!("http://{seeder_http}"),
        s("--signing-key"),
        key_path.display().to_string(),
    ];
    if let Some(pl) = args.piece_length {
        publish_args.extend([s("--piece-length"), pl.to_string()]);
    }
    let publish_started = Instant::now();
    let out = tokio::process::Command::new(crate::processes::bin_dir()?.join("ota-seeder"))
        .args(&publish_args)
        .envs(s3_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(std::fs::File::create(logs.join("publish.log"))?)
        .output()
        .await
        .context("cannot run ota-seeder publish")?;
    if !out.status.success() {
        let log = std::fs::read_to_string(logs.join("publish.log")).unwrap_or_default();
        anyhow::bail!("publish failed ({}): {}", out.status, log.lines().last().unwrap_or(""));
    }
    std::fs::write(&summary_path, &out.stdout)?;
    let release: Release = serde_json::from_slice(&out.stdout).context("publish printed no release")?;
    tracing::info!(info_hash = %release.info_hash, size = release.size, ms = publish_started.elapsed().as_millis() as u64, "published");

    let ih = release.info_hash;
    wait_for("the origin to seed", Duration::from_secs(300), procs, || async {
        tracker.release(&ih).await.ok().filter(|r| !r.origin_peers.is_empty())
    })
    .await?;

    let pushed_at = Instant::now();
    let delivered = tracker.push(&ih).await?;
    anyhow::ensure!(delivered >= n, "push reached {delivered} of {n} agents");
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} devices verified ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(release.name.clone());
    let reports = wait_for(
        "every agent to verify the package",
        Duration::from_secs(args.timeout_secs),
        procs,
        || async {
            let reports = tracker.telemetry(&ih).await.ok()?;
            if let Some(failed) = reports.iter().find(|r| r.error.is_some()) {
                // A failed device is reported at once rather than after the timeout.
                return Some(Err(anyhow::anyhow!(
                    "{} failed: {}",
                    failed.device,
                    failed.error.clone().unwrap_or_default()
                )));
            }
            let verified = reports.iter().filter(|r| r.verified).count();
            bar.set_position(verified as u64);
            (verified >= n).then_some(Ok(reports))
        },
    )
    .await??;
    bar.finish_and_clear();
    let distribution_ms = pushed_at.elapsed().as_millis() as u64;
    // Seeding devices report their upload counters every second; take the latest.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reports = tracker.telemetry(&ih).await.unwrap_or(reports);

    // The seeder's API takes the admin token (its --api-token default).
    let seeder_api = |path: &str| {
        reqwest::Client::new()
            .get(format!("http://{seeder_http}{path}"))
            .bearer_auth(&admin)
    };
    let egress: serde_json::Value = seeder_api("/api/egress").send().await?.json().await?;
    let origin_egress_bytes = egress["releases"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["info_hash"] == ih.to_hex().as_str()))
        .map(|r| r["bittorrent_bytes"].as_u64().unwrap_or(0) + r["http_bytes"].as_u64().unwrap_or(0))
        .context("the seeder does not list the release")?;

    if let Some(path) = &args.ledger_out {
        let csv = seeder_api("/api/ledger?format=csv").send().await?.text().await?;
        std::fs::write(path, csv).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut devices = Vec::new();
    for r in reports {
        let path = work
            .join("agents")
            .join(&r.device)
            .join("downloads")
            .join(ih.to_hex())
            .join(&release.name);
        let identical = files_identical(&path, package).unwrap_or(false);
        devices.push(DeviceResult {
            device: r.device,
            bytes_from_origin: r.bytes_from_origin,
            bytes_from_peers: r.bytes_from_peers,
            bytes_uploaded: r.bytes_uploaded,
            duration_ms: r.duration_ms,
            identical,
        });
    }
    let client_server_bytes = package_bytes * n as u64;
    let saving_pct = 100.0 * (client_server_bytes as f64 - origin_egress_bytes as f64) / client_server_bytes as f64;
    Ok(Summary {
        mode: args.mode,
        package: release.name,
        package_bytes,
        info_hash: ih.to_hex(),
        devices,
        origin_egress_bytes,
        origin_egress_copies: origin_egress_bytes as f64 / package_bytes as f64,
        client_server_bytes,
        saving_pct,
        limit_pct: 100.0 * (1.0 - 1.0 / n as f64),
        distribution_ms,
        wall_ms: started.elapsed().as_millis() as u64,
        pids: procs.pids(),
        work_dir: work.to_path_buf(),
    })
}

/// Renders the summary as the table the runner prints.
pub fn render(s: &Summary) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let mut out = format!(
        "package {} ({:.1} MB, info hash {}), {} devices, mode {:?}\n\n{:<8} {:>14} {:>14} {:>14} {:>10} {:>9}\n",
        s.package,
        mb(s.package_bytes),
        s.info_hash,
        s.devices.len(),
        s.mode,
        "device",
        "from peers MB",
        "from origin MB",
        "uploaded MB",
        "time s",
        "identical"
    );
    for d in &s.devices {
        out.push_str(&format!(
            "{:<8} {:>14.1} {:>14.1} {:>14.1} {:>10.1} {:>9}\n",
            d.device,
            mb(d.bytes_from_peers),
            mb(d.bytes_from_origin),
            mb(d.bytes_uploaded),
            d.duration_ms as f64 / 1000.0,
            if d.identical { "yes" } else { "NO" }
        ));
    }
    out.push_str(&format!(
        "\norigin egress: {:.1} MB = {:.2} package copies\nplain downloads would cost: {:.1} MB ({} copies)\nsaving: {:.1} % (limit 1 - 1/N = {:.1} %)\ndistribution time: {:.1} s (push to last verified copy), wall time {:.1} s\n",
        mb(s.origin_egress_bytes),
        s.origin_egress_copies,
        mb(s.client_server_bytes),
        s.devices.len(),
        s.saving_pct,
        s.limit_pct,
        s.distribution_ms as f64 / 1000.0,
        s.wall_ms as f64 / 1000.0
    ));
    out
}

/// Appends the run to a JSON array of [`RunRecord`]s (created if missing).
pub fn append_record(path: &Path, scenario: &str, s: &Summary) -> anyhow::Result<()> {
    let mut records: Vec<RunRecord> = match std::fs::read(path) {
        Ok(b) => {
            serde_json::from_slice(&b).with_context(|| format!("{} is not a JSON array of records", path.display()))?
        }
        Err(_) => Vec::new(),
    };
    let run = format!("run-{}", records.iter().filter(|r| r.scenario == scenario).count() + 1);
    records.push(RunRecord {
        scenario: scenario.to_string(),
        run,
        client_server_bytes: s.client_server_bytes,
        p2p_bytes: s.origin_egress_bytes,
    });
    std::fs::write(path, serde_json::to_vec_pretty(&records)?)?;
    Ok(())
}
