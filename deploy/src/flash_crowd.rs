//! The flash-crowd experiment: the embedded S3 server, the tracker, the
//! seeder and N device agents as real processes; publish a package, push
//! it, wait until every agent holds a verified copy, then measure where the
//! bytes came from. On loopback ([`run`]) or, with a [`Placement`], in the
//! NAT lab ([`crate::lab_run`]): the servers in the lab's origin namespace,
//! each device in its own namespace behind a home router.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;

use ota_billing_report::savings::RunRecord;
use ota_client::TrackerClient;
use ota_proto::api::{PeerInfo, Release};
use ota_proto::direct_paths::Reach;

use crate::processes::ProcessGroup;
use crate::topology::{NatKind, NatMix, Topology};
use ota_testkit::net::free_port;
use ota_testkit::s3_server::S3Server;

const BUCKET: &str = "ota-packages";
const ACCESS_KEY: &str = "ota-local-access";
const SECRET_KEY: &str = "ota-local-secret-key";

/// Distribution mode of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Everything this project does: the origin is handed out on demand,
    /// the tracker checks connectability and pairs devices over their LAN,
    /// agents map their port over UPnP and probe their NAT over STUN.
    P2p,
    /// Plain BitTorrent as in the 2017 study: the origin is listed to every
    /// device, every announced address is handed out, no LAN pairing, no
    /// UPnP, no STUN.
    BittorrentBaseline,
    /// No peer assistance: every device fetches the whole package over HTTP
    /// from the origin at once (the agents' `--http-only`), the study's
    /// client-server reference for completion times.
    ClientServer,
}

/// Settings of one flash-crowd run.
#[derive(Debug, Clone, Args)]
pub struct FlashCrowdArgs {
    /// Number of device agents [default: 10 on loopback and in `internet`,
    /// 5 in `thesis-lan` as in the study].
    #[arg(long)]
    pub devices: Option<usize>,
    /// Where the devices are: `loopback` (no root), or the NAT lab's
    /// `thesis-lan` (five devices behind one home router) or `internet`
    /// (each device behind its own router, kinds from `--mix`); the lab
    /// needs root (network namespaces, nftables).
    #[arg(long, value_enum, default_value_t = Topology::Loopback)]
    pub topology: Topology,
    /// Router kinds of the `internet` topology, `kind=share,...` of public,
    /// port-forwarded, upnp, cone, symmetric, cgnat [default: the published
    /// measurements in `topology::NatMix::default`:
    /// public=0.05,port-forwarded=0.15,upnp=0.30,cone=0.20,symmetric=0.15,cgnat=0.15].
    #[arg(long)]
    pub mix: Option<NatMix>,
    /// Seed of the `internet` topology's router placement; run R of
    /// `--runs` uses SEED + R − 1.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Runs in a row, each in a fresh lab (or fresh loopback stack); each
    /// appends its record.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Home uplink (router to internet) rate in the lab, Mbit/s (0:
    /// unshaped). The defaults, 20 up and 100 down, are a mid-tier cable or
    /// fibre-to-the-cabinet plan: uplinks are a fifth of downlinks or less.
    #[arg(long, default_value_t = 20.0)]
    pub home_uplink_mbit: f64,
    /// Home downlink (internet to router) rate in the lab, Mbit/s (0: unshaped).
    #[arg(long, default_value_t = 100.0)]
    pub home_downlink_mbit: f64,
    /// Per-device LAN rate in `thesis-lan`, each way, Mbit/s: 2.4 GHz
    /// 802.11n (2×2, 20 MHz) carries some 50 Mbit/s of TCP in a home
    /// (0: unshaped).
    #[arg(long, default_value_t = 50.0)]
    pub lan_mbit: f64,
    /// The origin's (tracker, seeder) uplink rate in the lab, Mbit/s (0: unshaped).
    #[arg(long, default_value_t = 0.0)]
    pub origin_uplink_mbit: f64,
    /// One-way delay of every home WAN link in the lab, ms (vde
    /// wirefilter; 0: a plain veth).
    #[arg(long, default_value_t = 0)]
    pub wan_delay_ms: u32,
    /// Packet loss of every home WAN link in the lab, percent each way.
    #[arg(long, default_value_t = 0.0)]
    pub wan_loss_pct: f32,
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
    /// The seeder's cost/speed dial (its `--origin-goal`): `fastest`,
    /// `cheapest` or `within:SECS`.
    #[arg(long, default_value = "fastest")]
    pub origin_goal: String,
    /// The dial's floor, bytes/s (the seeder's `--origin-min-rate-bps`).
    #[arg(long, default_value_t = 2 << 20)]
    pub origin_min_rate: u64,
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
    /// Scenario: in `thesis-lan` the study's `ideal` (every device
    /// connectable), `worst` (none) or `general` (one in five) [default:
    /// general]; elsewhere the name written in the record [default:
    /// `loopback`, or the mix for `internet`].
    #[arg(long)]
    pub scenario: Option<String>,
    /// Save the origin's egress ledger (CSV, `ota-seeder ledger` format) to this file.
    #[arg(long)]
    pub ledger_out: Option<PathBuf>,
    /// Lab only: move the first device to a second router of the same kind
    /// (its link cut, then a link to the other router up: a phone leaving
    /// its WiFi) once it holds this share of the package, percent. Needs
    /// `--work-dir`. Moves are written to `moves.json` there.
    #[arg(long)]
    pub move_at_pct: Option<f64>,
    /// With `--move-at-pct`: moves in all, back and forth between the two
    /// routers, while the device is still downloading.
    #[arg(long, default_value_t = 1)]
    pub moves: u32,
    /// With `--moves` above 1: time between moves, ms.
    #[arg(long, default_value_t = 3000)]
    pub move_every_ms: u64,
    /// The first device (the one `--move-at-pct` moves) starts only once
    /// every other device has verified the package; then the seeder is
    /// stopped (its egress and ledger read first) and the release is pushed
    /// again for the late device, which can get it only from the other
    /// devices: the peer cases of connection migration.
    #[arg(long)]
    pub mover_joins_late: bool,
    /// Tracker processes, replicas on one database (`--replica-id r0`,
    /// `r1`, …; persist interval 1 s): device `i` registers with and
    /// announces to replica `i mod N`, the seeder to replica 0. Above 1
    /// needs `--database-url` with a PostgreSQL URL.
    #[arg(long, default_value_t = 1)]
    pub tracker_replicas: usize,
    /// The trackers' database [default: an SQLite file in the work folder].
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// One device's result.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceResult {
    /// Device id.
    pub device: String,
    /// Its router's kind in the lab (`None` on loopback).
    pub nat: Option<NatKind>,
    /// Whether its peer port accepts unsolicited inbound connections
    /// (public or forwarded; `None` on loopback).
    pub connectable: Option<bool>,
    /// Payload bytes received from the origin over BitTorrent.
    pub bytes_from_origin: u64,
    /// Payload bytes received from the origin over HTTP.
    pub bytes_from_origin_http: u64,
    /// Payload bytes received from other devices.
    pub bytes_from_peers: u64,
    /// Of `bytes_from_peers`, from devices at LAN (private) addresses.
    pub bytes_from_lan_peers: u64,
    /// Of `bytes_from_peers`, from devices at internet addresses.
    pub bytes_from_internet_peers: u64,
    /// Payload bytes it sent to other devices.
    pub bytes_uploaded: u64,
    /// From push to verified package, ms.
    pub duration_ms: u64,
    /// Whether its package file is byte-identical to the original.
    pub identical: bool,
    /// How the tracker let other devices reach it at the end of the run
    /// (its swarm view's connectability verdict); `None` when the tracker
    /// did not list it.
    #[serde(default)]
    pub reach: Option<Reach>,
    /// The external address its router mapped for it over UPnP, as its
    /// agent reported.
    #[serde(default)]
    pub mapped: Option<String>,
    /// Why its agent holds no UPnP mapping, as it reported.
    #[serde(default)]
    pub mapping_refusal: Option<String>,
    /// Its NAT as its agent's STUN probe classified it (`open`,
    /// `symmetric`, `endpoint-independent (filtering: ...)`, `unknown`).
    #[serde(default)]
    pub nat_kind: Option<String>,
}

impl DeviceResult {
    /// Takes `reach`, `mapped`, `mapping_refusal` and `nat_kind` from the
    /// swarm view entry of this device (the first, if it is listed more
    /// than once); leaves them `None` when it is not listed.
    pub fn set_direct_paths(&mut self, peers: &[PeerInfo]) {
        if let Some(p) = peers.iter().find(|p| p.device.as_deref() == Some(self.device.as_str())) {
            self.reach = p.reach;
            self.mapped = p.mapped.clone();
            self.mapping_refusal = p.mapping_refusal.clone();
            self.nat_kind = p.nat.map(|n| n.kind.to_string());
        }
    }

    /// The short `reached` column of the table: `public`, `upnp ADDR`
    /// (public over a UPnP mapping), `lan-only`, `unreachable`, `unknown`,
    /// or `-` when the tracker did not list the device.
    pub fn reached(&self) -> String {
        match (self.reach, &self.mapped) {
            (Some(Reach::Public), Some(m)) => format!("upnp {m}"),
            (Some(Reach::Public), None) => "public".into(),
            (Some(Reach::LanOnly), _) => "lan-only".into(),
            (Some(Reach::Unreachable), _) => "unreachable".into(),
            (Some(Reach::Unknown), _) => "unknown".into(),
            (None, _) => "-".into(),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Where it ran.
    pub topology: Topology,
    /// Scenario name as records carry it.
    pub scenario: String,
    /// Mode of the run.
    pub mode: Mode,
    /// The seeder's cost/speed dial (`--origin-goal`).
    pub origin_goal: String,
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
    /// Devices' completion times (push to verified copy), median and 95th
    /// percentile (nearest rank), ms.
    pub completion_p50_ms: u64,
    /// See `completion_p50_ms`.
    pub completion_p95_ms: u64,
    /// Whole run, ms.
    pub wall_ms: u64,
    /// Tracker processes (replicas on one database).
    pub tracker_replicas: usize,
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

/// Where a run's processes are and what the record calls the run.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The address the tracker and the seeder listen on (HTTP and peer
    /// wire); every device must reach it. The runner's own calls go there
    /// too, so the calling thread must be in its network namespace.
    pub server_ip: IpAddr,
    /// The devices, in order.
    pub devices: Vec<PlacedDevice>,
    /// The topology, for the summary and the record.
    pub topology: Topology,
    /// The scenario name, for the summary and the record.
    pub scenario: String,
    /// An RFC 5780 STUN server (the lab's coturn) the agents probe their
    /// NAT with in `p2p` mode, beside the tracker's own responder.
    pub stun_rfc5780: Option<SocketAddr>,
}

/// One device of a [`Placement`].
#[derive(Debug, Clone)]
pub struct PlacedDevice {
    /// Device id (`dev-01`, ...).
    pub id: String,
    /// Network namespace its agent runs in (`None`: the runner's).
    pub netns: Option<String>,
    /// Its agent's peer-wire listen address.
    pub peer_listen: SocketAddr,
    /// Its router's kind, in the lab.
    pub nat: Option<NatKind>,
    /// Whether it accepts unsolicited inbound connections, in the lab.
    pub connectable: Option<bool>,
}

/// `devices` agents on loopback, each on a free port; scenario `scenario`.
///
/// Errors: no free port.
pub fn loopback_placement(devices: usize, scenario: &str) -> anyhow::Result<Placement> {
    let devices = (1..=devices)
        .map(|i| {
            Ok(PlacedDevice {
                id: format!("dev-{i:02}"),
                netns: None,
                peer_listen: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_port()?),
                nat: None,
                connectable: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Placement {
        server_ip: Ipv4Addr::LOCALHOST.into(),
        devices,
        topology: Topology::Loopback,
        scenario: scenario.to_string(),
        stun_rfc5780: None,
    })
}

/// Runs one flash crowd on loopback ([`loopback_placement`]); see
/// [`run_placed`].
pub async fn run(args: &FlashCrowdArgs) -> anyhow::Result<Summary> {
    let devices = args.devices.unwrap_or(10);
    anyhow::ensure!(devices >= 1, "--devices must be at least 1");
    let scenario = args.scenario.clone().unwrap_or_else(|| "loopback".into());
    run_placed(args, &loopback_placement(devices, &scenario)?).await
}

/// Runs one flash crowd with the processes where `placement` says; every
/// process is stopped and the temporary work folder removed whether the
/// run succeeds or fails.
///
/// Errors: the package cannot be read, a process cannot start or exits,
/// a device reports a failure, or `--timeout-secs` passes.
pub async fn run_placed(args: &FlashCrowdArgs, placement: &Placement) -> anyhow::Result<Summary> {
    anyhow::ensure!(!placement.devices.is_empty(), "--devices must be at least 1");
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
    let result = run_in(args, placement, &package, package_bytes, &work, &mut procs).await;
    procs.stop_all(Duration::from_secs(5)).await;
    drop(temp);
    result
}

/// One device agent to start: its id, arguments and environment (the one
/// `--mover-joins-late` holds back waits in one).
struct AgentLaunch {
    id: String,
    agent_args: Vec<String>,
    env: Vec<(String, String)>,
}

impl AgentLaunch {
    /// Starts it in `netns`, its log `ID.log` in `logs`.
    ///
    /// Errors: as [`ProcessGroup::spawn_in`].
    fn spawn(&self, procs: &mut ProcessGroup, netns: Option<&str>, logs: &Path) -> anyhow::Result<u32> {
        procs.spawn_in(
            netns,
            &self.id,
            "ota-device-agent",
            &self.agent_args,
            &self.env,
            &logs.join(format!("{}.log", self.id)),
        )
    }
}

async fn run_in(
    args: &FlashCrowdArgs,
    placement: &Placement,
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

    let server_ip = placement.server_ip;
    let replicas = args.tracker_replicas;
    anyhow::ensure!(
        (1..=16).contains(&replicas),
        "--tracker-replicas must be 1 to 16, got {replicas}"
    );
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None if replicas > 1 => anyhow::bail!("--tracker-replicas above 1 needs --database-url postgres://…"),
        None => format!("sqlite://{}?mode=rwc", work.join("tracker.db").display()),
    };
    let slots = match args.mode {
        Mode::P2p | Mode::ClientServer => 1,
        Mode::BittorrentBaseline => 0,
    };
    let s = |v: &str| v.to_string();
    let mut tracker_urls = Vec::new();
    for r in 0..replicas {
        let listen = SocketAddr::new(server_ip, free_port()?);
        let mut tracker_args = vec![
            s("serve"),
            s("--listen"),
            listen.to_string(),
            s("--database-url"),
            database_url.clone(),
            s("--admin-token"),
            admin.clone(),
            s("--origin-token"),
            origin.clone(),
            s("--announce-interval"),
            args.announce_interval.to_string(),
            s("--origin-slots"),
            slots.to_string(),
            // A plain tracker hands out every address; ours dials them first.
            s("--connectability"),
            s(if args.mode == Mode::P2p { "on" } else { "off" }),
        ];
        let name = if replicas > 1 {
            tracker_args.extend([s("--replica-id"), format!("r{r}"), s("--persist-interval"), s("1")]);
            // One STUN responder, replica 0's on the default port.
            if r > 0 {
                tracker_args.extend([s("--stun-listen"), s("off")]);
            }
            format!("tracker-r{r}")
        } else {
            s("tracker")
        };
        procs.spawn(
            &name,
            "ota-tracker",
            &tracker_args,
            &[],
            &logs.join(format!("{name}.log")),
        )?;
        tracker_urls.push(format!("http://{listen}"));
    }
    let replica_clients: Vec<TrackerClient> = tracker_urls
        .iter()
        .map(|u| TrackerClient::new(u, Some(admin.clone())))
        .collect();
    for (r, c) in replica_clients.iter().enumerate() {
        wait_for(&format!("tracker {r}"), Duration::from_secs(30), procs, || async {
            c.releases().await.ok()
        })
        .await?;
    }
    let tracker_url = tracker_urls[0].clone();
    let tracker = replica_clients[0].clone();
    let all_subscribers = || async {
        let mut n = 0;
        for c in &replica_clients {
            n += c.subscribers().await.ok()?;
        }
        Some(n)
    };

    let mut s3_env = s3.client_env();
    s3_env.push((s("OTA_TRACKER_URL"), tracker_url.clone()));
    s3_env.push((s("OTA_ADMIN_TOKEN"), admin.clone()));
    s3_env.push((s("OTA_ORIGIN_TOKEN"), origin.clone()));
    let seeder_http = SocketAddr::new(server_ip, free_port()?).to_string();
    procs.spawn(
        "seeder",
        "ota-seeder",
        &[
            s("seed"),
            s("--peer-listen"),
            SocketAddr::new(server_ip, free_port()?).to_string(),
            s("--http-listen"),
            seeder_http.clone(),
            s("--state-dir"),
            work.join("seeder").display().to_string(),
            s("--upload-limit-bps"),
            args.origin_upload_limit.to_string(),
            s("--origin-goal"),
            args.origin_goal.clone(),
            s("--origin-min-rate-bps"),
            args.origin_min_rate.to_string(),
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
    let mut late: Option<AgentLaunch> = None;
    for (i, device) in placement.devices.iter().enumerate() {
        let id = device.id.clone();
        // Each device gets its own token from the tracker's admin API (the
        // tracker requires device tokens); the agent's defaults are channel
        // `stable`, model `generic`.
        let replica = i % replicas;
        let token = replica_clients[replica]
            .register_device(&id, "stable", "generic")
            .await?;
        let mut agent_args = vec![
            s("run"),
            s("--device-id"),
            id.clone(),
            s("--state-dir"),
            work.join("agents").join(&id).display().to_string(),
            s("--peer-listen"),
            device.peer_listen.to_string(),
            s("--no-catch-up"),
            s("--poll-interval-secs"),
            s("0"),
            s("--report-interval-secs"),
            s("1"),
            s("--manifest-public-key"),
            public_key.clone(),
        ];
        if args.mode == Mode::ClientServer {
            agent_args.push(s("--http-only"));
        }
        if args.mode == Mode::P2p {
            if let Some(stun) = placement.stun_rfc5780 {
                agent_args.extend([s("--stun-rfc5780-server"), stun.to_string()]);
            }
        } else {
            // Plain BitTorrent as in 2017 (and plain HTTP): no LAN pairing,
            // no UPnP, no STUN.
            agent_args.extend(
                [
                    "--lan-pairing",
                    "off",
                    "--upnp",
                    "off",
                    "--stun",
                    "off",
                    "--quic",
                    "off",
                ]
                .map(s),
            );
        }
        let env = vec![
            (s("OTA_TRACKER_URL"), tracker_urls[replica].clone()),
            (s("OTA_DEVICE_TOKEN"), token),
        ];
        let agent = AgentLaunch { id, agent_args, env };
        if i == 0 && args.mover_joins_late && placement.devices.len() > 1 {
            late = Some(agent);
            continue;
        }
        agent.spawn(procs, device.netns.as_deref(), &logs)?;
    }
    let n = placement.devices.len();
    let first_wave = n - usize::from(late.is_some());
    wait_for("every agent to subscribe", Duration::from_secs(60), procs, || async {
        all_subscribers().await.filter(|c| *c >= first_wave)
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
    // Replica 0 delivers to its own subscribers; the others relay the push
    // to theirs from the database within a persist interval.
    let on_first = (0..n)
        .filter(|i| i % replicas == 0 && !(*i == 0 && n - first_wave == 1))
        .count();
    let delivered = tracker.push(&ih).await?;
    anyhow::ensure!(
        delivered >= on_first,
        "push reached {delivered} of the {on_first} agents of tracker 0"
    );
    // The seeder's API takes the admin token (its --api-token default).
    let seeder_api = |path: &str| {
        reqwest::Client::new()
            .get(format!("http://{seeder_http}{path}"))
            .bearer_auth(&admin)
    };
    // With a late device, what the origin sent before it was stopped.
    let mut stopped_origin: Option<(serde_json::Value, Option<String>)> = None;
    if let Some(late) = late.take() {
        let id = late.id.clone();
        // The others first: once they all verified, the late device starts
        // and the release is pushed again (for it; the others have it).
        wait_for(
            "the other agents to verify the package",
            Duration::from_secs(args.timeout_secs),
            procs,
            || async {
                let reports = tracker.telemetry(&ih).await.ok()?;
                (reports.iter().filter(|r| r.verified).count() >= first_wave).then_some(())
            },
        )
        .await?;
        let egress: serde_json::Value = seeder_api("/api/egress").send().await?.json().await?;
        let ledger = match &args.ledger_out {
            Some(_) => Some(seeder_api("/api/ledger?format=csv").send().await?.text().await?),
            None => None,
        };
        stopped_origin = Some((egress, ledger));
        procs.stop("seeder", Duration::from_secs(5)).await;
        tracing::info!(device = %id, "the others verified, the origin stopped: the late device starts");
        late.spawn(procs, placement.devices[0].netns.as_deref(), &logs)?;
        wait_for(
            "the late agent to subscribe",
            Duration::from_secs(60),
            procs,
            || async { all_subscribers().await.filter(|c| *c >= n) },
        )
        .await?;
        let delivered = tracker.push(&ih).await?;
        anyhow::ensure!(
            delivered > on_first,
            "push reached {delivered} of the {} agents of tracker 0",
            on_first + 1
        );
    }
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
    let peers = swarm_view(&tracker, &ih, placement).await;

    let (egress, stopped_ledger) = match stopped_origin {
        Some((egress, ledger)) => (egress, ledger),
        None => (seeder_api("/api/egress").send().await?.json().await?, None),
    };
    let origin_egress_bytes = egress["releases"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["info_hash"] == ih.to_hex().as_str()))
        .map(|r| r["bittorrent_bytes"].as_u64().unwrap_or(0) + r["http_bytes"].as_u64().unwrap_or(0))
        .context("the seeder does not list the release")?;

    if let Some(path) = &args.ledger_out {
        let csv = match stopped_ledger {
            Some(csv) => csv,
            None => seeder_api("/api/ledger?format=csv").send().await?.text().await?,
        };
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
        let placed = placement.devices.iter().find(|d| d.id == r.device);
        devices.push(DeviceResult {
            device: r.device,
            nat: placed.and_then(|d| d.nat),
            connectable: placed.and_then(|d| d.connectable),
            bytes_from_origin: r.bytes_from_origin,
            bytes_from_origin_http: r.bytes_from_origin_http,
            bytes_from_peers: r.bytes_from_peers,
            bytes_from_lan_peers: r.bytes_from_lan_peers,
            bytes_from_internet_peers: r.bytes_from_internet_peers,
            bytes_uploaded: r.bytes_uploaded,
            duration_ms: r.duration_ms,
            identical,
            reach: None,
            mapped: None,
            mapping_refusal: None,
            nat_kind: None,
        });
        if let Some(d) = devices.last_mut() {
            d.set_direct_paths(&peers);
        }
    }
    let client_server_bytes = package_bytes * n as u64;
    let saving_pct = 100.0 * (client_server_bytes as f64 - origin_egress_bytes as f64) / client_server_bytes as f64;
    devices.sort_by(|a, b| a.device.cmp(&b.device));
    let mut durations: Vec<u64> = devices.iter().map(|d| d.duration_ms).collect();
    durations.sort_unstable();
    Ok(Summary {
        topology: placement.topology,
        scenario: placement.scenario.clone(),
        mode: args.mode,
        origin_goal: args.origin_goal.clone(),
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
        completion_p50_ms: nearest_rank(&durations, 50),
        completion_p95_ms: nearest_rank(&durations, 95),
        wall_ms: started.elapsed().as_millis() as u64,
        tracker_replicas: args.tracker_replicas,
        pids: procs.pids(),
        work_dir: work.to_path_buf(),
    })
}

/// How each device ended up reachable: the tracker's swarm view, read
/// while every process still runs. The tracker forgets an unreachable
/// verdict after its short TTL and says `unknown` while it dials the
/// address again (2 s at most), so a view that has a device `unknown` or
/// missing is read again, for up to 5 s; the last view is returned. Empty
/// when the tracker cannot be asked.
async fn swarm_view(tracker: &TrackerClient, ih: &ota_proto::InfoHash, placement: &Placement) -> Vec<PeerInfo> {
    let settled = |peers: &[PeerInfo]| {
        placement.devices.iter().all(|d| {
            peers
                .iter()
                .any(|p| p.device.as_deref() == Some(d.id.as_str()) && p.reach.is_some_and(|r| r != Reach::Unknown))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tracker.peers(ih).await {
            Ok(peers) if settled(&peers) || Instant::now() > deadline => return peers,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the swarm view; the reached column stays empty");
                return Vec::new();
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `pct`-th percentile of `sorted` by the nearest-rank method (the
/// smallest value with at least `pct` % of the values at or below it); 0
/// for no values.
pub fn nearest_rank(sorted: &[u64], pct: u32) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (pct as usize * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// Renders the summary as the table the runner prints.
pub fn render(s: &Summary) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let mut out = format!(
        "package {} ({:.1} MB, info hash {}), {} devices, topology {:?}, scenario {}, mode {:?}\n\n{:<8} {:<22} {:>9} {:>11} {:>9} {:>10} {:>9} {:>8} {:>9}  {}\n",
        s.package,
        mb(s.package_bytes),
        s.info_hash,
        s.devices.len(),
        s.topology,
        s.scenario,
        s.mode,
        "device",
        "nat",
        "origin BT",
        "origin HTTP",
        "LAN peers",
        "inet peers",
        "uploaded",
        "time s",
        "identical",
        "reached"
    );
    for d in &s.devices {
        let nat = match (d.nat, d.connectable) {
            (Some(k), Some(true)) => format!("{} (open)", k.name()),
            (Some(k), _) => k.name().to_string(),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<8} {:<22} {:>9.1} {:>11.1} {:>9.1} {:>10.1} {:>9.1} {:>8.1} {:>9}  {}\n",
            d.device,
            nat,
            mb(d.bytes_from_origin),
            mb(d.bytes_from_origin_http),
            mb(d.bytes_from_lan_peers),
            mb(d.bytes_from_internet_peers),
            mb(d.bytes_uploaded),
            d.duration_ms as f64 / 1000.0,
            if d.identical { "yes" } else { "NO" },
            d.reached()
        ));
    }
    out.push_str(&format!(
        "(bytes in MB)\n\norigin egress: {:.1} MB = {:.2} package copies\nplain downloads would cost: {:.1} MB ({} copies)\nsaving: {:.1} % (limit 1 - 1/N = {:.1} %)\ncompletion: p50 {:.1} s, p95 {:.1} s\ndistribution time: {:.1} s (push to last verified copy), wall time {:.1} s\n",
        mb(s.origin_egress_bytes),
        s.origin_egress_copies,
        mb(s.client_server_bytes),
        s.devices.len(),
        s.saving_pct,
        s.limit_pct,
        s.completion_p50_ms as f64 / 1000.0,
        s.completion_p95_ms as f64 / 1000.0,
        s.distribution_ms as f64 / 1000.0,
        s.wall_ms as f64 / 1000.0
    ));
    out
}

/// One experiment run as appended to a records file: the billing report's
/// [`RunRecord`] (which ignores the other fields) plus what the run was and
/// per device where the bytes came from.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentRecord {
    /// Scenario, run id, `D_cs` and `D_p2p` (the origin egress).
    #[serde(flatten)]
    pub run: RunRecord,
    /// Where it ran.
    pub topology: Topology,
    /// How the package was distributed.
    pub mode: Mode,
    /// The seeder's cost/speed dial (`fastest`, `cheapest`, `within:SECS`).
    pub origin_goal: String,
    /// Package size, bytes.
    pub package_bytes: u64,
    /// Saving in percent, `(D_cs − D_p2p) / D_cs`.
    pub saving_pct: f64,
    /// Completion times (push to verified copy), ms.
    pub completion_p50_ms: u64,
    /// See `completion_p50_ms`.
    pub completion_p95_ms: u64,
    /// Push to the last verified copy, ms.
    pub distribution_ms: u64,
    /// Per device: origin bytes (BitTorrent, HTTP), LAN and internet peer
    /// bytes, completion time.
    pub devices: Vec<DeviceResult>,
}

/// Appends the run to a JSON array of records (created if missing): an
/// [`ExperimentRecord`] whose run id is `run-K`, K counting the records of
/// the same scenario, topology and mode. Records already in the file are
/// kept as they are.
///
/// Errors: the file is not a JSON array, or cannot be written.
pub fn append_record(path: &Path, s: &Summary) -> anyhow::Result<()> {
    let mut records: Vec<serde_json::Value> = match std::fs::read(path) {
        Ok(b) => {
            serde_json::from_slice(&b).with_context(|| format!("{} is not a JSON array of records", path.display()))?
        }
        Err(_) => Vec::new(),
    };
    let topology = serde_json::to_value(s.topology)?;
    let mode = serde_json::to_value(s.mode)?;
    let same = records
        .iter()
        .filter(|r| {
            r["scenario"] == s.scenario.as_str()
                && (r["topology"] == topology || r.get("topology").is_none())
                && (r["mode"] == mode || r.get("mode").is_none())
                && (r["origin_goal"] == s.origin_goal.as_str() || r.get("origin_goal").is_none())
        })
        .count();
    let record = ExperimentRecord {
        run: RunRecord {
            scenario: s.scenario.clone(),
            run: format!("run-{}", same + 1),
            client_server_bytes: s.client_server_bytes,
            p2p_bytes: s.origin_egress_bytes,
        },
        topology: s.topology,
        mode: s.mode,
        origin_goal: s.origin_goal.clone(),
        package_bytes: s.package_bytes,
        saving_pct: s.saving_pct,
        completion_p50_ms: s.completion_p50_ms,
        completion_p95_ms: s.completion_p95_ms,
        distribution_ms: s.distribution_ms,
        devices: s.devices.clone(),
    };
    records.push(serde_json::to_value(&record)?);
    std::fs::write(path, serde_json::to_vec_pretty(&records)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(nearest_rank(&[], 50), 0);
        assert_eq!(nearest_rank(&[7], 95), 7);
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(
            (nearest_rank(&v, 50), nearest_rank(&v, 95), nearest_rank(&v, 100)),
            (10, 19, 20)
        );
        assert_eq!(nearest_rank(&[1, 2, 3, 4, 5], 50), 3);
    }

    #[test]
    fn reached_column_from_the_swarm_view() {
        let peer = |device: &str, reach, mapped: Option<&str>| -> PeerInfo {
            serde_json::from_value(serde_json::json!({
                "peer_id": "2d4f5441303030302d000000000000000000000a",
                "client": "-OTA0000-",
                "addr": "11.0.1.2:40001",
                "left": 0,
                "is_origin": false,
                "granted": false,
                "device": device,
                "age_ms": 0,
                "reach": reach,
                "mapped": mapped,
                "mapping_refusal": mapped.is_none().then_some("no UPnP gateway answered"),
            }))
            .unwrap()
        };
        let peers = [
            peer("dev-01", "public", None),
            peer("dev-02", "public", Some("11.0.1.1:40003")),
            peer("dev-03", "lan-only", None),
            peer("dev-04", "unreachable", None),
        ];
        let mut d = DeviceResult {
            device: String::new(),
            nat: None,
            connectable: None,
            bytes_from_origin: 0,
            bytes_from_origin_http: 0,
            bytes_from_peers: 0,
            bytes_from_lan_peers: 0,
            bytes_from_internet_peers: 0,
            bytes_uploaded: 0,
            duration_ms: 0,
            identical: true,
            reach: None,
            mapped: None,
            mapping_refusal: None,
            nat_kind: None,
        };
        let mut reached = |id: &str| {
            d.device = id.into();
            d.set_direct_paths(&peers);
            (d.reached(), d.mapping_refusal.clone())
        };
        assert_eq!(reached("dev-01").0, "public");
        assert_eq!(reached("dev-02"), ("upnp 11.0.1.1:40003".into(), None));
        assert_eq!(reached("dev-03").0, "lan-only");
        assert_eq!(
            reached("dev-04"),
            ("unreachable".into(), Some("no UPnP gateway answered".into()))
        );
        let mut gone = DeviceResult {
            device: "dev-09".into(),
            reach: None,
            ..d
        };
        gone.set_direct_paths(&peers);
        assert_eq!(gone.reached(), "-");
    }
}
