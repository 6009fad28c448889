//! Tracker configuration: typed, with defaults, from flags, environment
//! variables (`OTA_TRACKER_*`) and an optional TOML file (`--config`).
//! A flag or variable wins over the file; the file wins over the default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::registry::DeviceAuth;
use crate::swarm::OriginPolicy;
use crate::swarm::StoreConfig;

/// Command-line and environment settings of `ota-tracker serve`.
#[derive(Debug, Clone, Args)]
pub struct TrackerArgs {
    /// TOML file with any of the settings below (keys as the long flags, with `_`).
    #[arg(long, env = "OTA_TRACKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on for HTTP (announce, scrape, API, metrics). [default: 127.0.0.1:7070]
    #[arg(long, env = "OTA_TRACKER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Base URL that devices reach the tracker at, used in served .torrent
    /// announce URLs. [default: http://LISTEN]
    #[arg(long, env = "OTA_TRACKER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Database URL: `sqlite://PATH` (created if missing) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` (PostgreSQL; the database must
    /// exist). Same schema and migrations on both. [default: sqlite://ota-tracker.db?mode=rwc]
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Bearer token for the admin API; the origin also announces with it. [default: dev-admin-token]
    #[arg(long, env = "OTA_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Seconds between announces handed to clients (`interval` and `min interval`). [default: 30]
    #[arg(long, env = "OTA_TRACKER_ANNOUNCE_INTERVAL")]
    pub announce_interval: Option<u64>,
    /// Seconds after which a silent peer is dropped. [default: 3 × announce interval]
    #[arg(long, env = "OTA_TRACKER_PEER_TIMEOUT")]
    pub peer_timeout: Option<u64>,
    /// Leechers that may be handed the origin at once; 0 lists the origin to
    /// every leecher (plain BitTorrent baseline). [default: 1]
    #[arg(long, env = "OTA_TRACKER_ORIGIN_SLOTS")]
    pub origin_slots: Option<usize>,
    /// Seconds between writes of the live peers to the database (they are
    /// also written at graceful shutdown and read back at start). [default: 5]
    #[arg(long, env = "OTA_TRACKER_PERSIST_INTERVAL")]
    pub persist_interval: Option<u64>,
    /// UDP address of the STUN binding responder (RFC 8489) that tells
    /// devices their public address and port; `off` or an empty value
    /// disables it. When the default address is taken the tracker runs
    /// without it (with a warning); an address given here must bind. [default: 0.0.0.0:3478]
    #[arg(long, env = "OTA_TRACKER_STUN_LISTEN")]
    pub stun_listen: Option<String>,
    /// Tokio worker threads serving HTTP and the push channel; 0 = one per
    /// CPU. On a machine shared with other work, 1 thread (like
    /// opentracker's single event loop) serves more short-lived connections
    /// per CPU second (see README, tracker load benchmark). [default: 0]
    #[arg(long, env = "OTA_TRACKER_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Whether devices must announce with their token
    /// (`/announce?token=TOKEN`) and call the API with `Authorization: Bearer
    /// TOKEN`: `required`, or `off` (anyone may announce, device ids come
    /// from `device=`). The origin always announces with the admin token. [default: required]
    #[arg(long, env = "OTA_TRACKER_DEVICE_AUTH", value_enum)]
    pub device_auth: Option<DeviceAuth>,
}

/// The same settings as read from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackerFile {
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    database_url: Option<String>,
    admin_token: Option<String>,
    announce_interval: Option<u64>,
    peer_timeout: Option<u64>,
    origin_slots: Option<usize>,
    persist_interval: Option<u64>,
    stun_listen: Option<String>,
    worker_threads: Option<usize>,
    device_auth: Option<DeviceAuth>,
}

/// Resolved tracker configuration.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Public base URL.
    pub public_url: String,
    /// Database URL.
    pub database_url: String,
    /// Admin bearer token.
    pub admin_token: String,
    /// Peer store timing and origin policy.
    pub store: StoreConfig,
    /// UDP address of the STUN responder; `None` when disabled.
    pub stun_listen: Option<SocketAddr>,
    /// Whether `stun_listen` was set (flag, env or file) rather than defaulted:
    /// then failing to bind it is an error.
    pub stun_listen_explicit: bool,
    /// Device authentication of announces and API calls.
    pub device_auth: DeviceAuth,
    /// Tokio worker threads; `None` = one per CPU.
    pub worker_threads: Option<usize>,
}

use crate::stun::DEFAULT_STUN_LISTEN;

impl TrackerArgs {
    /// Merges flags/env, the TOML file and defaults.
    ///
    /// Errors: an unreadable or invalid TOML file (unknown keys are refused).
    pub fn resolve(&self) -> anyhow::Result<TrackerConfig> {
        let file: TrackerFile = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            None => TrackerFile::default(),
        };
        let listen = self.listen.or(file.listen).unwrap_or(([127, 0, 0, 1], 7070).into());
        let interval = self.announce_interval.or(file.announce_interval).unwrap_or(30).max(1);
        let timeout = self.peer_timeout.or(file.peer_timeout).unwrap_or(interval * 3);
        let slots = self.origin_slots.or(file.origin_slots).unwrap_or(1);
        let persist = self.persist_interval.or(file.persist_interval).unwrap_or(5).max(1);
        let stun_set = self.stun_listen.clone().or(file.stun_listen);
        let stun_listen_explicit = stun_set.is_some();
        let stun_listen = crate::stun::parse_listen(stun_set.as_deref().unwrap_or(DEFAULT_STUN_LISTEN))?;
        Ok(TrackerConfig {
            listen,
            public_url: self
                .public_url
                .clone()
                .or(file.public_url)
                .unwrap_or_else(|| format!("http://{listen}")),
            database_url: self
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or_else(|| "sqlite://ota-tracker.db?mode=rwc".into()),
            admin_token: self
                .admin_token
                .clone()
                .or(file.admin_token)
                .unwrap_or_else(|| "dev-admin-token".into()),
            store: StoreConfig {
                interval: Duration::from_secs(interval),
                min_interval: Duration::from_secs(interval),
                peer_timeout: Duration::from_secs(timeout),
                origin_policy: if slots == 0 {
                    OriginPolicy::Always
                } else {
                    OriginPolicy::OnDemand { slots }
                },
                persist_interval: Duration::from_secs(persist),
                ..StoreConfig::default()
            },
            stun_listen,
            stun_listen_explicit,
            device_auth: self.device_auth.or(file.device_auth).unwrap_or_default(),
            worker_threads: self.worker_threads.or(file.worker_threads).filter(|n| *n > 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrackerArgs,
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "announce_interval = 5\norigin_slots = 0\nadmin_token = \"file\"\ndevice_auth = \"off\"\n").unwrap();
        let cli = Cli::parse_from(["x", "--config", path.to_str().unwrap(), "--admin-token", "flag"]);
        let c = cli.args.resolve().unwrap();
        assert_eq!(c.admin_token, "flag");
        assert_eq!(c.store.interval, Duration::from_secs(5));
        assert_eq!(c.store.peer_timeout, Duration::from_secs(15));
        assert_eq!(c.store.origin_policy, OriginPolicy::Always);
        assert_eq!(c.store.persist_interval, Duration::from_secs(5));
        assert_eq!(c.device_auth, DeviceAuth::Off);
        let c = Cli::parse_from(["x", "--config", path.to_str().unwrap(), "--device-auth", "required"]).args.resolve().unwrap();
        assert_eq!(c.device_auth, DeviceAuth::Required);
        assert_eq!(c.worker_threads, None, "default: one worker per CPU");
        std::fs::write(&path, "worker_threads = 1\n").unwrap();
        assert_eq!(Cli::parse_from(["x", "--config", path.to_str().unwrap()]).args.resolve().unwrap().worker_threads, Some(1));
        let c = Cli::parse_from(["x", "--config", path.to_str().unwrap(), "--worker-threads", "0"]).args.resolve().unwrap();
        assert_eq!(c.worker_threads, None, "0 = one per CPU, and the flag beats the file");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let bad = Cli::parse_from(["x", "--config", path.to_str().unwrap()]).args.resolve();
        assert!(bad.unwrap_err().to_string().contains("no_such_key"));
    }

    #[test]
    fn stun_listen_defaults_and_can_be_turned_off() {
        let c = Cli::parse_from(["x"]).args.resolve().unwrap();
        assert_eq!(c.stun_listen, Some(DEFAULT_STUN_LISTEN.parse().unwrap()));
        assert!(!c.stun_listen_explicit);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "stun_listen = \"off\"\n").unwrap();
        let c = Cli::parse_from(["x", "--config", path.to_str().unwrap()]).args.resolve().unwrap();
        assert_eq!((c.stun_listen, c.stun_listen_explicit), (None, true));
        let c = Cli::parse_from(["x", "--stun-listen", "127.0.0.1:4000"]).args.resolve().unwrap();
        assert_eq!(c.stun_listen, Some("127.0.0.1:4000".parse().unwrap()));
        assert!(Cli::parse_from(["x", "--stun-listen", "nowhere"]).args.resolve().is_err());
    }
}
