//! `ota-tracker serve` settings: one typed clap struct, [`TrackerArgs`],
//! read from flags, environment variables (named in `--help`:
//! `OTA_TRACKER_*`, `DATABASE_URL`, `OTA_ADMIN_TOKEN`, `OTA_ORIGIN_TOKEN`) and an optional TOML
//! file (`--config FILE` or `OTA_TRACKER_CONFIG`) whose keys are the long
//! flag names with `_` (`announce_interval = 5`), the mechanism every binary
//! of the project uses ([`ota_common::config::expand_config_file`]).
//!
//! Precedence: flag > file > environment > default. A file key that is not
//! a setting is refused, naming the key.
//!
//! ```toml
//! listen = "0.0.0.0:7070"
//! public_url = "https://tracker.example.com"
//! database_url = "postgres://ota@db/ota"
//! origin_slots = 1
//! device_auth = "required"
//! ```

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::connectability::ConnectabilityConfig;
use crate::registry::DeviceAuth;
use crate::service::TrackerSettings;
use crate::stun::{parse_listen, DEFAULT_STUN_PORT};

/// `--replica-id` as checked by [`crate::service::replicas::check_replica_id`].
fn parse_replica_id(s: &str) -> Result<String, String> {
    crate::service::replicas::check_replica_id(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}
use crate::swarm::{OriginPolicy, StoreConfig};
pub use ota_common::config::Switch;

/// Environment variable naming the TOML configuration file.
pub const CONFIG_ENV: &str = "OTA_TRACKER_CONFIG";

/// ota-tracker: BitTorrent tracker, release registry and push channel for OTA updates.
///
/// Settings come from flags, environment variables, or a TOML file given with
/// `--config FILE` (or OTA_TRACKER_CONFIG) whose keys are the long flag names
/// with `_` (flag > file > environment > default).
#[derive(Debug, Parser)]
#[command(name = "ota-tracker", version, about, args_override_self = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `ota-tracker`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the tracker server.
    Serve(TrackerArgs),
}

/// The `--stun-listen` value: a UDP address, or `off` / empty for no
/// responder (see [`parse_listen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunListen(pub Option<SocketAddr>);

impl FromStr for StunListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_listen(s).map(StunListen).map_err(|e| e.to_string())
    }
}

/// Settings of `ota-tracker serve`.
#[derive(Debug, Clone, Args)]
pub struct TrackerArgs {
    /// TOML file with any of the settings below (keys as the long flags, with `_`).
    #[arg(long, env = CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on for HTTP (announce, scrape, API, metrics).
    #[arg(long, env = "OTA_TRACKER_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Base URL that devices reach the tracker at, used in served .torrent
    /// announce URLs. [default: http://LISTEN]
    #[arg(long, env = "OTA_TRACKER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Database URL: `sqlite://PATH` (created if missing) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` (PostgreSQL; the database must
    /// exist). Same schema and migrations on both.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://ota-tracker.db?mode=rwc"
    )]
    pub database_url: String,
    /// Bearer token for the admin API (`Authorization: Bearer TOKEN` only),
    /// at least 16 characters; required, there is no default (e.g. `openssl
    /// rand -hex 32`).
    #[arg(long, env = "OTA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Token the origin seeder announces with (`origin_token=` in its
    /// announce URL), at least 16 characters and not the admin token;
    /// without it no origin may announce.
    #[arg(long, env = "OTA_ORIGIN_TOKEN", hide_env_values = true)]
    pub origin_token: Option<String>,
    /// Comma-separated addresses of reverse proxies whose announces' `ip=`
    /// parameter is believed. Empty (default): `ip=` is ignored and a peer
    /// is listed at the address its connection comes from.
    #[arg(
        long,
        env = "OTA_TRACKER_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "IP,..."
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Seconds between announces handed to clients (`interval` and `min
    /// interval`); at least 1.
    #[arg(long, env = "OTA_TRACKER_ANNOUNCE_INTERVAL", default_value_t = 30)]
    pub announce_interval: u64,
    /// Seconds after which a silent peer is dropped. [default: 3 × announce interval]
    #[arg(long, env = "OTA_TRACKER_PEER_TIMEOUT")]
    pub peer_timeout: Option<u64>,
    /// Leechers that may be handed the origin at once; 0 lists the origin to
    /// every leecher (plain BitTorrent baseline).
    #[arg(long, env = "OTA_TRACKER_ORIGIN_SLOTS", default_value_t = 1)]
    pub origin_slots: usize,
    /// Seconds between writes of the live peers to the database (they are
    /// also written at graceful shutdown and read back at start); at least 1.
    /// With replicas, also how often each reads the others' peers.
    #[arg(long, env = "OTA_TRACKER_PERSIST_INTERVAL", default_value_t = 5)]
    pub persist_interval: u64,
    /// This tracker's name among replicas sharing one PostgreSQL database
    /// behind a load balancer (1 to 64 ASCII letters, digits, `-`, `_`,
    /// `.`; unique per replica, e.g. the pod name). Each replica writes its
    /// live peers as its own rows and, every persist interval, reads the
    /// others', hands out only one replica's origin grants per swarm (a
    /// lease in the database) and learns releases and devices registered
    /// through the others (README, "Tracker replicas"). Unset: a single
    /// tracker.
    #[arg(long, env = "OTA_TRACKER_REPLICA_ID", value_parser = parse_replica_id)]
    pub replica_id: Option<String>,
    /// UDP address of the STUN binding responder (RFC 8489) that tells
    /// devices their public address and port; `off` or an empty value
    /// disables it. When the default address is taken the tracker runs
    /// without it (with a warning); an address given here must bind. [default: the --listen IP, port 3478]
    #[arg(long, env = "OTA_TRACKER_STUN_LISTEN", value_name = "ADDR|off")]
    pub stun_listen: Option<StunListen>,
    /// STUN requests answered per second and source IP (a token bucket with
    /// a burst of 4 × this); more are dropped.
    #[arg(long, env = "OTA_TRACKER_STUN_RATE", default_value_t = 10)]
    pub stun_rate: u32,
    /// MQTT broker to publish release notices to as well
    /// (`mqtt://[USER[:PASSWORD]@]HOST[:PORT]`, plain TCP, port 1883 by
    /// default): QoS 1, retained, on `PREFIX/releases/CHANNEL/MODEL`
    /// (README, "Push through an MQTT broker"). Unset: event streams only.
    #[arg(long, env = "OTA_TRACKER_MQTT_URL", value_name = "URL", hide_env_values = true)]
    pub mqtt_url: Option<ota_proto::release_notice::BrokerAddr>,
    /// Topic prefix of the release notices (no `+`, `#` or empty level).
    #[arg(long, env = "OTA_TRACKER_MQTT_PREFIX", default_value = ota_proto::release_notice::DEFAULT_PREFIX)]
    pub mqtt_prefix: String,
    /// MQTT client id; must differ between tracker replicas. [default: ota-tracker- and 8 random hex digits]
    #[arg(long, env = "OTA_TRACKER_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
    /// Tokio worker threads serving HTTP and the push channel; 0 = one per
    /// CPU. On a machine shared with other work, 1 thread (like
    /// opentracker's single event loop) serves more short-lived connections
    /// per CPU second (see README, tracker load benchmark).
    #[arg(long, env = "OTA_TRACKER_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// Whether devices must announce with their token
    /// (`/announce?token=TOKEN`) and call the API with `Authorization: Bearer
    /// TOKEN`: `required`, or `off` (anyone may announce, device ids come
    /// from `device=`). The origin always announces with the origin token.
    #[arg(long, env = "OTA_TRACKER_DEVICE_AUTH", value_enum, default_value_t = DeviceAuth::Required)]
    pub device_auth: DeviceAuth,
    /// Connectability checks: `on` dials a device's announced address (a
    /// TCP handshake) before handing it to other devices, and hands out
    /// only addresses that answered; `off` hands out every address (a
    /// plain tracker, the `bittorrent-baseline` mode).
    #[arg(long, env = "OTA_TRACKER_CONNECTABILITY", value_enum, default_value_t = Switch::On)]
    pub connectability: Switch,
    /// Milliseconds one connectability dial may take before the address
    /// counts as unreachable.
    #[arg(long, env = "OTA_TRACKER_CONNECT_TIMEOUT_MS", default_value_t = 2000)]
    pub connect_timeout_ms: u64,
}

/// The process arguments `args` (program name first) with the TOML file of
/// `--config FILE` (or of [`CONFIG_ENV`]) folded in as leading flags, ready
/// for [`Cli::parse_from`] / [`Cli::try_parse_from`].
///
/// Errors: an unreadable file, invalid TOML, a nested table, or a key that
/// is not a setting of `serve` (the message names it and lists the known
/// keys).
pub fn expand_args(args: Vec<String>) -> anyhow::Result<Vec<String>> {
    if let Some(path) = config_path(&args) {
        check_keys(&path)?;
    }
    ota_common::config::expand_config_file(args, CONFIG_ENV)
}

/// The file [`ota_common::config::expand_config_file`] will read: the last
/// `--config PATH` / `--config=PATH` of `args`, else [`CONFIG_ENV`].
fn config_path(args: &[String]) -> Option<String> {
    let mut path = std::env::var(CONFIG_ENV).ok();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--config" {
            path = it.next().cloned();
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.to_string());
        }
    }
    path
}

/// The TOML keys `serve` accepts: its long flags, with `_` for `-`
/// (neither `config` nor `help`).
fn known_keys() -> BTreeSet<String> {
    let cmd = Cli::command();
    let serve = cmd.find_subcommand("serve").expect("serve subcommand");
    serve
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !matches!(*l, "config" | "help"))
        .map(|l| l.replace('-', "_"))
        .collect()
}

/// Refuses a file with a key that is no setting (a typo would otherwise
/// surface as clap's "unexpected argument '--typo'").
fn check_keys(path: &str) -> anyhow::Result<()> {
    // Unreadable or invalid files are reported by expand_config_file.
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let known = known_keys();
    if let Some(bad) = table.keys().find(|k| !known.contains(k.as_str())) {
        let list: Vec<&str> = known.iter().map(String::as_str).collect();
        anyhow::bail!(
            "config file {path}: unknown key {bad:?} (known keys: {})",
            list.join(", ")
        );
    }
    Ok(())
}

impl TrackerArgs {
    /// The base URL in served `.torrent` files: `--public-url`, else
    /// `http://LISTEN`.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// Peer store timing and origin policy: announce interval (at least
    /// 1 s) as both `interval` and `min interval`, peer timeout (default 3 ×
    /// interval), origin slots (0: [`OriginPolicy::Always`]) and persist
    /// interval (at least 1 s).
    pub fn store_config(&self) -> StoreConfig {
        let interval = self.announce_interval.max(1);
        let timeout = self.peer_timeout.unwrap_or(interval * 3);
        StoreConfig {
            interval: Duration::from_secs(interval),
            min_interval: Duration::from_secs(interval),
            peer_timeout: Duration::from_secs(timeout),
            origin_policy: match self.origin_slots {
                0 => OriginPolicy::Always,
                slots => OriginPolicy::OnDemand { slots },
            },
            persist_interval: Duration::from_secs(self.persist_interval.max(1)),
            ..StoreConfig::default()
        }
    }

    /// The tracker's settings ([`crate::Tracker::new`]), checked
    /// ([`TrackerSettings::validate`]).
    ///
    /// Errors: no admin token (the message says how to set one), or a
    /// token too short, or the origin token equal to the admin token.
    pub fn settings(&self) -> anyhow::Result<TrackerSettings> {
        let s = TrackerSettings {
            admin_token: self.admin_token.clone().unwrap_or_default(),
            origin_token: self.origin_token.clone().filter(|t| !t.is_empty()),
            trusted_proxies: self.trusted_proxies.iter().map(|ip| ip.to_canonical()).collect(),
            public_url: self.public_url(),
            store: self.store_config(),
            device_auth: self.device_auth,
            connectability: ConnectabilityConfig {
                enabled: self.connectability == Switch::On,
                timeout: Duration::from_millis(self.connect_timeout_ms.max(1)),
                ..ConnectabilityConfig::default()
            },
        };
        s.validate()?;
        Ok(s)
    }

    /// The broker publisher's settings, if `--mqtt-url` is set (the prefix
    /// is checked by [`crate::Tracker::spawn_broker_push`]).
    pub fn broker_push(&self) -> Option<crate::service::BrokerPush> {
        let addr = self.mqtt_url.as_ref()?;
        let mut b = crate::service::BrokerPush::new(addr.clone());
        b.prefix = self.mqtt_prefix.clone();
        if let Some(id) = &self.mqtt_client_id {
            b.client_id = id.clone();
        }
        Some(b)
    }

    /// UDP address of the STUN responder; `None` when turned off. Default:
    /// the IP of `--listen`, port [`DEFAULT_STUN_PORT`].
    pub fn stun_listen(&self) -> Option<SocketAddr> {
        match self.stun_listen {
            Some(StunListen(addr)) => addr,
            None => Some(SocketAddr::new(self.listen.ip(), DEFAULT_STUN_PORT)),
        }
    }

    /// Whether the STUN address was set (flag, file or environment) rather
    /// than defaulted: then failing to bind it is an error.
    pub fn stun_listen_explicit(&self) -> bool {
        self.stun_listen.is_some()
    }

    /// Tokio worker threads; `None` = one per CPU (the setting 0).
    pub fn worker_threads(&self) -> Option<usize> {
        Some(self.worker_threads).filter(|n| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Tests that set environment variables, or parse while others may,
    /// take turns (the environment is process-wide).
    static ENV: Mutex<()> = Mutex::new(());

    fn parse(args: &[&str]) -> anyhow::Result<TrackerArgs> {
        let mut full = vec!["ota-tracker".to_string(), "serve".to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        let Cli {
            command: Command::Serve(a),
        } = Cli::try_parse_from(expand_args(full)?)?;
        Ok(a)
    }

    #[test]
    fn flags_beat_file_and_file_beats_environment_and_defaults() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        let file = path.to_str().unwrap();
        std::fs::write(
            &path,
            "announce_interval = 5\norigin_slots = 0\nadmin_token = \"file\"\ndevice_auth = \"off\"\n",
        )
        .unwrap();
        let c = parse(&["--config", file, "--admin-token", "flag"]).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("flag"));
        let s = c.store_config();
        assert_eq!(s.interval, Duration::from_secs(5));
        assert_eq!(s.peer_timeout, Duration::from_secs(15));
        assert_eq!(s.origin_policy, OriginPolicy::Always);
        assert_eq!(s.persist_interval, Duration::from_secs(5));
        assert_eq!(c.device_auth, DeviceAuth::Off);
        assert_eq!(c.public_url(), "http://127.0.0.1:7070");
        let c = parse(&["--config", file, "--device-auth", "required"]).unwrap();
        assert_eq!(c.device_auth, DeviceAuth::Required);
        assert_eq!(c.worker_threads(), None, "default: one worker per CPU");
        std::fs::write(&path, "worker_threads = 1\n").unwrap();
        assert_eq!(parse(&["--config", file]).unwrap().worker_threads(), Some(1));
        let c = parse(&[&format!("--config={file}"), "--worker-threads", "0"]).unwrap();
        assert_eq!(c.worker_threads(), None, "0 = one per CPU, and the flag beats the file");

        // The environment comes after the file, before the defaults.
        std::env::set_var("OTA_TRACKER_ORIGIN_SLOTS", "7");
        std::env::set_var("OTA_TRACKER_PEER_TIMEOUT", "99");
        std::fs::write(&path, "origin_slots = 3\n").unwrap();
        let from_file = parse(&["--config", file]);
        let from_flag = parse(&["--config", file, "--origin-slots", "2"]);
        let from_env = parse(&[]);
        std::env::remove_var("OTA_TRACKER_ORIGIN_SLOTS");
        std::env::remove_var("OTA_TRACKER_PEER_TIMEOUT");
        let from_file = from_file.unwrap().store_config();
        assert_eq!(
            from_file.origin_policy,
            OriginPolicy::OnDemand { slots: 3 },
            "file beats environment"
        );
        assert_eq!(
            from_file.peer_timeout,
            Duration::from_secs(99),
            "environment beats the default"
        );
        assert_eq!(from_flag.unwrap().origin_slots, 2, "flag beats file and environment");
        assert_eq!(from_env.unwrap().origin_slots, 7);
        assert_eq!(parse(&[]).unwrap().origin_slots, 1, "default");

        // Unknown keys are refused, naming the key.
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let e = parse(&["--config", file]).unwrap_err().to_string();
        assert!(
            e.contains("unknown key \"no_such_key\"") && e.contains("announce_interval"),
            "{e}"
        );
        std::fs::write(&path, "announce_interval = \"soon\"\n").unwrap();
        assert!(parse(&["--config", file]).is_err(), "a value of the wrong type");
        assert!(parse(&["--config", "/no/such/file.toml"])
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }

    #[test]
    fn stun_listen_defaults_and_can_be_turned_off() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let c = parse(&[]).unwrap();
        assert_eq!(
            c.stun_listen(),
            Some("127.0.0.1:3478".parse().unwrap()),
            "where HTTP listens"
        );
        let c = parse(&["--listen", "192.0.2.7:80"]).unwrap();
        assert_eq!(c.stun_listen(), Some("192.0.2.7:3478".parse().unwrap()));
        assert!(!c.stun_listen_explicit());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "stun_listen = \"off\"\n").unwrap();
        let c = parse(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!((c.stun_listen(), c.stun_listen_explicit()), (None, true));
        let c = parse(&["--stun-listen", "127.0.0.1:4000"]).unwrap();
        assert_eq!(c.stun_listen(), Some("127.0.0.1:4000".parse().unwrap()));
        assert!(parse(&["--stun-listen", "nowhere"]).is_err());
    }

    #[test]
    fn every_setting_is_a_file_key() {
        let keys = known_keys();
        for k in [
            "listen",
            "public_url",
            "database_url",
            "admin_token",
            "origin_token",
            "trusted_proxies",
            "stun_rate",
            "announce_interval",
            "peer_timeout",
        ] {
            assert!(keys.contains(k), "{k} missing from {keys:?}");
        }
        for k in [
            "origin_slots",
            "persist_interval",
            "stun_listen",
            "worker_threads",
            "device_auth",
            "replica_id",
        ] {
            assert!(keys.contains(k), "{k} missing from {keys:?}");
        }
        assert!(!keys.contains("config") && !keys.contains("help"));
        Cli::command().debug_assert();
    }
}
