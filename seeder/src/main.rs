//! `ota-seeder`: the S3-backed origin's command line (`publish`, `seed`,
//! `ledger`, `keygen`); the work is done by the `ota_seeder` library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use ota_client::TrackerClient;
use ota_seeder::http_path::{self, HttpSettings, PackageAuth};
use ota_seeder::origin_dial::{DialConfig, OriginGoal};
use ota_seeder::origin_store::{self, S3Args, S3Location};
use ota_seeder::publish::{publish, PublishRequest};
use ota_seeder::seeding::{self, SeedSettings, Seeder};

/// ota-seeder: the S3-backed origin of peer-assisted OTA updates.
///
/// Settings come from flags, environment variables, or a TOML file given with
/// `--config FILE` (or OTA_SEEDER_CONFIG) whose keys are the long flag names
/// with `_` (flag > file > environment > default).
#[derive(Parser)]
#[command(version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream an S3 object once, store KEY.torrent beside it and register the release.
    Publish(PublishArgs),
    /// Seed every registered release from S3 and serve the HTTP path.
    Seed(SeedArgs),
    /// Export the egress ledger (every byte the origin sent) as CSV or JSON.
    Ledger {
        /// Ledger database URL.
        #[arg(
            long,
            env = "OTA_SEEDER_LEDGER_URL",
            default_value = "sqlite://ota-seeder-state/ledger.db"
        )]
        ledger_url: String,
        /// Output format: csv or json.
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
    },
    /// Create an ed25519 manifest signing key (hex) and print its public key,
    /// which devices pin (`--manifest-public-key`).
    Keygen {
        /// File to write the secret key to (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct TrackerArgs {
    /// Tracker base URL.
    #[arg(long, env = "OTA_TRACKER_URL", default_value = "http://127.0.0.1:7070")]
    tracker: String,
    /// Tracker admin token, sent only in `Authorization` headers (release
    /// registration); required, no default.
    #[arg(long, env = "OTA_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

#[derive(Args)]
struct PublishArgs {
    /// Object to publish, s3://bucket/key.
    s3_url: String,
    /// Upload this local file to the object first (creating the bucket if needed).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Release version string.
    #[arg(long, default_value = "1")]
    version: String,
    /// Piece length in bytes (default: chosen from the size, 256 KiB to 4 MiB).
    #[arg(long)]
    piece_length: Option<u64>,
    /// Base URL of the seeder's HTTP path, recorded in the release.
    #[arg(long, env = "OTA_SEEDER_HTTP_URL")]
    http_base: Option<String>,
    /// Publish a public torrent (by default the torrent is private, BEP 27:
    /// peers come from the tracker only, no DHT, no peer exchange).
    #[arg(long, default_value_t = false)]
    public: bool,
    /// ed25519 key file (from `ota-seeder keygen`) to sign the release manifest with.
    #[arg(long, env = "OTA_SIGNING_KEY_FILE")]
    signing_key: Option<PathBuf>,
    /// Update channel written in the signed manifest.
    #[arg(long, env = "OTA_CHANNEL", default_value = "stable")]
    channel: String,
    /// Device model the release is for (repeat for several; none means all).
    #[arg(long = "model")]
    models: Vec<String>,
    /// The origin's cost/speed dial for this release: `fastest`,
    /// `cheapest` or `within:SECS` (see `seed --origin-goal`) [default: the
    /// seeder's --origin-goal; unchanged when publishing again].
    #[arg(long, value_parser = parse_goal)]
    origin_goal: Option<OriginGoal>,
    #[command(flatten)]
    tracker: TrackerArgs,
    #[command(flatten)]
    s3: S3Args,
}

#[derive(Args)]
struct SeedArgs {
    /// Peer-wire (BitTorrent TCP) listen address.
    #[arg(long, env = "OTA_SEEDER_PEER_LISTEN", default_value = "127.0.0.1:6881")]
    peer_listen: SocketAddr,
    /// Serve the peer wire over QUIC too (UDP, `--quic-listen`), so that
    /// devices running QUIC reach the origin over a connection that
    /// survives their network changes; the tracker hands it to them.
    #[arg(long, env = "OTA_SEEDER_QUIC", default_value_t = true, action = clap::ArgAction::Set)]
    quic: bool,
    /// UDP address of the QUIC listener [default: --peer-listen's address and port, over UDP].
    #[arg(long, env = "OTA_SEEDER_QUIC_LISTEN")]
    quic_listen: Option<SocketAddr>,
    /// HTTP listen address (package path, egress API).
    #[arg(long, env = "OTA_SEEDER_HTTP_LISTEN", default_value = "127.0.0.1:7080")]
    http_listen: SocketAddr,
    /// State folder of the BitTorrent session.
    #[arg(long, env = "OTA_SEEDER_STATE_DIR", default_value = "ota-seeder-state")]
    state_dir: PathBuf,
    /// Piece cache cap in bytes.
    #[arg(long, env = "OTA_SEEDER_CACHE_BYTES", default_value_t = seeding::DEFAULT_CACHE_BYTES)]
    cache_bytes: u64,
    /// Pieces fetched ahead from S3 after a cache miss (capped at a quarter of the cache).
    #[arg(long, env = "OTA_SEEDER_READ_AHEAD", default_value_t = seeding::DEFAULT_READ_AHEAD)]
    read_ahead: u32,
    /// Upload cap of the origin over BitTorrent, in bytes/s (0: none).
    #[arg(long, env = "OTA_SEEDER_UPLOAD_LIMIT", default_value_t = 0)]
    upload_limit_bps: u32,
    /// The origin's cost/speed dial for releases without one of their own
    /// (`publish --origin-goal`, `POST /api/releases/{ih}/origin-goal`):
    /// `fastest` (no limit), `cheapest` (the floor rate,
    /// --origin-min-rate-bps, while devices leech), or `within:SECS` (each
    /// device done within SECS of its first announce, the origin sending
    /// only what the devices' measured rates leave missing). The limit is
    /// librqbit's session-wide upload limit, the sum over the busy
    /// releases; --upload-limit-bps is the ceiling of all three.
    #[arg(long, env = "OTA_SEEDER_ORIGIN_GOAL", default_value = "fastest", value_parser = parse_goal)]
    origin_goal: OriginGoal,
    /// The dial's floor while devices leech, bytes/s.
    #[arg(long, env = "OTA_SEEDER_ORIGIN_MIN_RATE", default_value_t = DialConfig::default().min_bps)]
    origin_min_rate_bps: u64,
    /// Factor on the rate the dial finds missing for `within:SECS` (≥ 1).
    #[arg(long, env = "OTA_SEEDER_ORIGIN_MARGIN", default_value_t = DialConfig::default().margin)]
    origin_margin: f64,
    /// How often the dial reads the tracker's peer list of each busy release, in ms.
    #[arg(long, env = "OTA_SEEDER_DIAL_MS", default_value_t = seeding::DEFAULT_DIAL_INTERVAL.as_millis() as u64)]
    dial_ms: u64,
    /// How often to look for new releases, in ms.
    #[arg(long, env = "OTA_SEEDER_POLL_MS", default_value_t = seeding::DEFAULT_POLL_INTERVAL.as_millis() as u64)]
    poll_ms: u64,
    /// Egress ledger database URL [default: sqlite://STATE_DIR/ledger.db].
    #[arg(long, env = "OTA_SEEDER_LEDGER_URL")]
    ledger_url: Option<String>,
    /// How often to sample per-peer upload counters into the ledger, in ms.
    #[arg(long, env = "OTA_SEEDER_LEDGER_INTERVAL_MS", default_value_t = seeding::DEFAULT_LEDGER_INTERVAL.as_millis() as u64)]
    ledger_interval_ms: u64,
    /// How often to re-check each seeded object's ETag in S3, in seconds.
    #[arg(long, env = "OTA_SEEDER_VERIFY_INTERVAL", default_value_t = seeding::DEFAULT_VERIFY_INTERVAL.as_secs())]
    verify_interval_secs: u64,
    /// Most concurrent piece GETs to S3.
    #[arg(long, env = "OTA_SEEDER_MAX_S3_REQUESTS", default_value_t = seeding::DEFAULT_MAX_S3_REQUESTS)]
    max_s3_requests: usize,
    /// Keep librqbit's verified bitfields in STATE_DIR/fastresume, so a
    /// restart does not read every published object from S3 again
    /// (librqbit then spot-checks a few pieces per release).
    #[arg(long, env = "OTA_SEEDER_FASTRESUME", default_value_t = true, action = clap::ArgAction::Set)]
    fastresume: bool,
    /// Bearer token of /api/egress, /api/ledger and /metrics [default: the admin token].
    #[arg(long, env = "OTA_SEEDER_API_TOKEN")]
    api_token: Option<String>,
    /// Who may download /packages/*: `required` (whoever the tracker offers
    /// the release to, checked with the request's `Authorization: Bearer
    /// DEVICE_TOKEN`) or `off` (anyone: the plain client-server baseline).
    #[arg(long, env = "OTA_SEEDER_PACKAGE_AUTH", value_enum, default_value_t = PackageAuth::Required)]
    package_auth: PackageAuth,
    /// How long the tracker's verdict on a (token, release) is reused, in seconds.
    #[arg(long, env = "OTA_SEEDER_PACKAGE_AUTH_TTL", default_value_t = http_path::DEFAULT_VERDICT_TTL.as_secs())]
    package_auth_ttl_secs: u64,
    /// Token the origin announces with (`origin_token=` in its announce
    /// URL): the tracker's `--origin-token`, not the admin token; required.
    #[arg(long, env = "OTA_ORIGIN_TOKEN", hide_env_values = true)]
    origin_token: String,
    #[command(flatten)]
    tracker: TrackerArgs,
    #[command(flatten)]
    s3: S3Args,
}

/// Parses `--origin-goal` ([`OriginGoal`]'s `FromStr`).
fn parse_goal(s: &str) -> Result<OriginGoal, String> {
    s.parse()
}

/// Adds `mode=rwc` to a SQLite URL without a mode, so the file is created.
fn sqlite_rwc(url: &str) -> String {
    if !url.starts_with("sqlite:") || url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

fn main() {
    // Pieces are 256 KiB to 4 MiB buffers allocated and freed all the time;
    // served from mmap, freed pieces go back to the OS instead of fragmenting
    // glibc's arenas (measured: peak RSS over the cache cap fell from about
    // +250 MiB to about +60 MiB with 20 releases seeded).
    // SAFETY: mallopt only changes an allocator tunable; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    ota_common::logging::init_logging("info,librqbit=warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = ota_common::config::expand_config_file(std::env::args().collect(), "OTA_SEEDER_CONFIG")?;
    match Cli::parse_from(args).command {
        Command::Publish(a) => {
            let location: S3Location = a.s3_url.parse()?;
            let s3 = origin_store::client(&a.s3).await;
            if let Some(file) = &a.file {
                let body = aws_sdk_s3::primitives::ByteStream::from_path(file)
                    .await
                    .with_context(|| format!("cannot read {}", file.display()))?;
                // Creating an existing bucket fails harmlessly.
                let _ = s3.create_bucket().bucket(&location.bucket).send().await;
                origin_store::put(&s3, &location, body).await?;
            }
            let tracker = TrackerClient::new(&a.tracker.tracker, Some(a.tracker.admin_token.clone()));
            let published = publish(
                &s3,
                &tracker,
                &PublishRequest {
                    location,
                    version: a.version,
                    piece_length: a.piece_length,
                    tracker_url: a.tracker.tracker.clone(),
                    http_base: a.http_base,
                    private: !a.public,
                    signing: match &a.signing_key {
                        Some(p) => Some(ota_seeder::publish::ManifestSigning {
                            key: ota_common::keys::load_signing_key(p)?,
                            channel: a.channel.clone(),
                            models: a.models.clone(),
                        }),
                        None => None,
                    },
                },
            )
            .await?;
            let mut release = published.release;
            if let Some(goal) = a.origin_goal {
                release = tracker.set_origin_goal(&release.info_hash, Some(goal)).await?;
            }
            tracing::info!(info_hash = %release.info_hash, torrent = %published.torrent_location, "published");
            println!("{}", serde_json::to_string_pretty(&release)?);
            Ok(())
        }
        Command::Keygen { out } => {
            use std::io::Write;
            let key = ota_proto::manifest::generate_signing_key();
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .mode(0o600)
                .create_new(true)
                .open(&out)
                .with_context(|| format!("cannot create {} (it must not exist)", out.display()))?;
            writeln!(f, "{}", hex::encode(key.to_bytes()))?;
            println!("{}", hex::encode(key.verifying_key().to_bytes()));
            Ok(())
        }
        Command::Ledger { ledger_url, format } => {
            use futures::TryStreamExt;
            use std::io::Write;
            let ledger = ota_seeder::ledger::Ledger::open(&sqlite_rwc(&ledger_url)).await?;
            let format = if format == "json" {
                ota_seeder::ledger::ExportFormat::Json
            } else {
                ota_seeder::ledger::ExportFormat::Csv
            };
            let mut chunks = std::pin::pin!(ledger.export(format));
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = chunks.try_next().await? {
                out.write_all(&chunk)?;
            }
            out.flush()?;
            Ok(())
        }
        Command::Seed(a) => {
            let http_settings = HttpSettings {
                package_auth: a.package_auth,
                verdict_ttl: Duration::from_secs(a.package_auth_ttl_secs),
                ..HttpSettings::new(a.api_token.clone().or_else(|| Some(a.tracker.admin_token.clone())))
            };
            let s3 = origin_store::client(&a.s3).await;
            std::fs::create_dir_all(&a.state_dir)
                .with_context(|| format!("cannot create {}", a.state_dir.display()))?;
            let ledger_url = a
                .ledger_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}/ledger.db", a.state_dir.display()));
            let ledger = ota_seeder::ledger::Ledger::open(&sqlite_rwc(&ledger_url)).await?;
            let tracker = TrackerClient::new(&a.tracker.tracker, Some(a.tracker.admin_token.clone()));
            let seeder = Seeder::start(
                s3,
                tracker,
                ledger,
                SeedSettings {
                    peer_listen: a.peer_listen,
                    state_dir: a.state_dir,
                    cache_bytes: a.cache_bytes,
                    read_ahead: a.read_ahead,
                    upload_limit_bps: (a.upload_limit_bps > 0).then_some(a.upload_limit_bps),
                    poll_interval: Duration::from_millis(a.poll_ms),
                    origin_token: a.origin_token,
                    verify_interval: Duration::from_secs(a.verify_interval_secs.max(1)),
                    ledger_interval: Duration::from_millis(a.ledger_interval_ms.max(100)),
                    max_s3_requests: a.max_s3_requests,
                    fastresume: a.fastresume,
                    quic_listen: a.quic.then(|| a.quic_listen.unwrap_or(a.peer_listen)),
                    origin_goal: a.origin_goal,
                    dial: DialConfig {
                        min_bps: a.origin_min_rate_bps.max(1),
                        margin: a.origin_margin.max(1.0),
                        ..DialConfig::default()
                    },
                    dial_interval: Duration::from_millis(a.dial_ms.max(100)),
                },
            )
            .await?;
            tokio::spawn(seeder.clone().run_sync_loop());
            tokio::spawn(seeder.clone().run_maintenance_loop());
            tokio::spawn(seeder.clone().run_dial_loop());
            let listener = tokio::net::TcpListener::bind(a.http_listen)
                .await
                .with_context(|| format!("cannot listen on {}", a.http_listen))?;
            tracing::info!(http = %a.http_listen, peers = %a.peer_listen, "seeder running");
            let app =
                http_path::router(seeder.clone(), http_settings).into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                })
                .await?;
            if let Err(e) = seeder.flush_ledger().await {
                tracing::error!(error = %format!("{e:#}"), "last ledger write failed");
            }
            seeder.stop().await;
            Ok(())
        }
    }
}
