//! Device policies: when the agent may download, how much it may store and
//! upload, and how long it keeps seeding a release.
//!
//! The decisions ([`download_allowed`], [`check_storage`], [`seeding_done`])
//! are pure functions of [`PolicySettings`] and observed [`Conditions`], so
//! every rule is unit-tested without a device. The readers that observe the
//! device ([`read_power`], [`read_default_route_interface`],
//! [`read_up_interfaces`], [`network_unmetered`], [`free_bytes`]) are kept
//! apart and take their paths as arguments (tests use fake folders).
//!
//! Seeding floor (the 2017 study's rule): a release is seeded at least until
//! it is installed (if `seed_until_installed`) and at least until
//! `uploaded / size >= seed_ratio`; it stops after `seed_max_secs` at the
//! latest, whatever the ratio.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Policy settings, from flags, environment variables or the agent's TOML
/// file (keys are the long flag names with `_`, e.g. `min_battery_percent = 30`).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct PolicySettings {
    /// Network interfaces whose networks are unmetered (e.g. `eth0,wlan0`).
    /// When set (or `--unmetered-command` is), downloads start only while the
    /// default-route interface (or, with no default route, every interface
    /// that is up) is one of them.
    #[arg(long, env = "OTA_AGENT_UNMETERED_INTERFACES", value_delimiter = ',')]
    pub unmetered_interfaces: Vec<String>,
    /// A shell command (run with `sh -c`) whose exit status 0 means "the
    /// network is unmetered now"; it wins over `--unmetered-interfaces`.
    /// It gets 10 s to answer; a timeout counts as metered.
    #[arg(long, env = "OTA_AGENT_UNMETERED_COMMAND")]
    pub unmetered_command: Option<String>,
    /// Download only while the battery holds at least this many percent, or
    /// while mains/USB power is online. A device without a battery is not
    /// limited.
    #[arg(long, env = "OTA_AGENT_MIN_BATTERY_PERCENT")]
    pub min_battery_percent: Option<u8>,
    /// Linux power-supply class folder to read battery and AC state from.
    #[arg(long, env = "OTA_AGENT_POWER_SUPPLY_DIR", default_value = "/sys/class/power_supply")]
    pub power_supply_dir: PathBuf,
    /// Most bytes the agent's packages may take on disk, the new one
    /// included; a release that does not fit is refused before it starts.
    #[arg(long, env = "OTA_AGENT_STORAGE_CAP_BYTES")]
    pub storage_cap_bytes: Option<u64>,
    /// Upload cap for seeding, bytes/s (librqbit session rate limit).
    #[arg(long, env = "OTA_AGENT_UPLOAD_LIMIT_BPS")]
    pub upload_limit_bps: Option<NonZeroU32>,
    /// Keep seeding a release until bytes uploaded / package size reaches
    /// this ratio (with no ratio, seed until `--seed-max-secs`, or forever).
    #[arg(long, env = "OTA_AGENT_SEED_RATIO")]
    pub seed_ratio: Option<f64>,
    /// Keep seeding at least until the release is installed (`true` or
    /// `false`; in TOML write `seed_until_installed = "false"` to turn off).
    #[arg(long, env = "OTA_AGENT_SEED_UNTIL_INSTALLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub seed_until_installed: bool,
    /// Stop seeding a release this many seconds after it finished downloading
    /// at the latest, whatever the ratio.
    #[arg(long, env = "OTA_AGENT_SEED_MAX_SECS")]
    pub seed_max_secs: Option<u64>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            unmetered_interfaces: Vec::new(),
            unmetered_command: None,
            min_battery_percent: None,
            power_supply_dir: PathBuf::from("/sys/class/power_supply"),
            storage_cap_bytes: None,
            upload_limit_bps: None,
            seed_ratio: None,
            seed_until_installed: true,
            seed_max_secs: None,
        }
    }
}

impl PolicySettings {
    /// Whether any network rule is configured.
    pub fn restricts_network(&self) -> bool {
        self.unmetered_command.is_some() || !self.unmetered_interfaces.is_empty()
    }

    /// The librqbit session rate limits these settings ask for (upload cap only).
    pub fn session_limits(&self) -> librqbit::limits::LimitsConfig {
        librqbit::limits::LimitsConfig {
            upload_bps: self.upload_limit_bps,
            download_bps: None,
        }
    }
}

/// Battery and external power as read from the power-supply class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerState {
    /// Lowest `capacity` (percent) over the batteries present; `None`: no battery.
    pub battery_percent: Option<u8>,
    /// A `Mains`/`USB` supply reports `online` = 1.
    pub external_power: bool,
}

/// What the agent observed about the device before a download.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Whether the current network is unmetered (`None` when no rule asks).
    pub unmetered: Option<bool>,
    /// Power state.
    pub power: PowerState,
}

/// Why a download may not start now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// The network is metered (or could not be shown unmetered).
    #[error("the network is metered; waiting for an unmetered network")]
    Metered,
    /// The battery is below the minimum and no external power is online.
    #[error("battery at {percent}% is below the minimum {min}% and not charging")]
    LowBattery {
        /// Battery capacity, percent.
        percent: u8,
        /// Configured minimum, percent.
        min: u8,
    },
    /// The package would exceed the storage cap.
    #[error("package of {needed} bytes does not fit the storage cap: {used} of {cap} bytes in use")]
    StorageCap {
        /// Package size, bytes.
        needed: u64,
        /// Bytes the agent's packages use already.
        used: u64,
        /// Configured cap, bytes.
        cap: u64,
    },
    /// The file system has too little free space.
    #[error("no space left: the package needs {needed} bytes, {free} bytes are free")]
    NoSpace {
        /// Package size, bytes.
        needed: u64,
        /// Free bytes on the downloads file system.
        free: u64,
    },
}

impl Blocked {
    /// Whether waiting may lift the block (network, battery), as opposed to
    /// storage, which needs packages removed or a bigger cap.
    pub fn is_transient(&self) -> bool {
        matches!(self, Blocked::Metered | Blocked::LowBattery { .. })
    }
}

/// Whether a download may start under `policy` given `cond`.
///
/// Rules, in order: with a network rule configured the network must be
/// unmetered (`cond.unmetered == Some(true)`); with `min_battery_percent`
/// and a battery present, external power must be online or the battery at
/// least at the minimum.
pub fn download_allowed(policy: &PolicySettings, cond: &Conditions) -> Result<(), Blocked> {
    if policy.restricts_network() && cond.unmetered != Some(true) {
        return Err(Blocked::Metered);
    }
    if let (Some(min), Some(percent)) = (policy.min_battery_percent, cond.power.battery_percent) {
        if percent < min && !cond.power.external_power {
            return Err(Blocked::LowBattery { percent, min });
        }
    }
    Ok(())
}

/// Storage check before a download starts: `needed` bytes (the package)
/// must fit the cap beside `used` bytes of packages already kept, and the
/// file system must have `needed` bytes free (`free = None`: unknown, not
/// checked).
pub fn check_storage(policy: &PolicySettings, needed: u64, used: u64, free: Option<u64>) -> Result<(), Blocked> {
    if let Some(cap) = policy.storage_cap_bytes {
        if used.saturating_add(needed) > cap {
            return Err(Blocked::StorageCap { needed, used, cap });
        }
    }
    if let Some(free) = free {
        if free < needed {
            return Err(Blocked::NoSpace { needed, free });
        }
    }
    Ok(())
}

/// Whether seeding a release may stop now.
///
/// `uploaded` and `size` in bytes, `installed`: the release was installed,
/// `seeding_for`: time since it finished downloading. Stops when
/// `seed_max_secs` has passed (the latest), else only once the floor is met:
/// installed (if `seed_until_installed`) and `uploaded >= seed_ratio * size`.
/// With no ratio and no maximum time it never stops (seed forever).
pub fn seeding_done(policy: &PolicySettings, uploaded: u64, size: u64, installed: bool, seeding_for: Duration) -> bool {
    if let Some(max) = policy.seed_max_secs {
        if seeding_for >= Duration::from_secs(max) {
            return true;
        }
    }
    if policy.seed_until_installed && !installed {
        return false;
    }
    match policy.seed_ratio {
        Some(ratio) => uploaded as f64 >= ratio * size as f64,
        None => false,
    }
}

/// Reads batteries and external supplies from a Linux power-supply class
/// folder (`DIR/NAME/type` = `Battery` | `Mains` | `USB` | …,
/// `DIR/NAME/capacity` percent, `DIR/NAME/online` 0/1). A missing folder
/// reads as "no battery, no external power".
pub fn read_power(dir: &Path) -> PowerState {
    let mut out = PowerState::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).map(|s| s.trim().to_string()).ok();
        match read("type").as_deref() {
            Some("Battery") => {
                if read("present").as_deref() == Some("0") {
                    continue;
                }
                if let Some(c) = read("capacity").and_then(|c| c.parse::<u8>().ok()) {
                    out.battery_percent = Some(out.battery_percent.map_or(c, |b| b.min(c)));
                }
            }
            Some(_) if read("online").as_deref() == Some("1") => out.external_power = true,
            Some(_) | None => {}
        }
    }
    out
}

/// The interface of the default IPv4 route in `/proc/net/route` text
/// (destination `00000000`, flag RTF_UP; the lowest metric wins).
pub fn default_route_interface(route_table: &str) -> Option<String> {
    route_table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (iface, dest, flags, metric) = (f.first()?, f.get(1)?, f.get(3)?, f.get(6)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            (*dest == "00000000" && flags & 1 == 1)
                .then(|| (metric.parse::<u64>().unwrap_or(u64::MAX), iface.to_string()))
        })
        .min()
        .map(|(_, i)| i)
}

/// Reads the default-route interface from a `/proc/net/route` file.
pub fn read_default_route_interface(route_file: &Path) -> Option<String> {
    default_route_interface(&std::fs::read_to_string(route_file).ok()?)
}

/// Interfaces (other than `lo`) whose `operstate` is `up` under a
/// `/sys/class/net`-like folder, sorted.
pub fn read_up_interfaces(net_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(net_dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name() != "lo")
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("operstate"))
                        .map(|s| s.trim() == "up")
                        .unwrap_or(false)
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Pure interface rule: with a default route, its interface must be listed;
/// without one, there must be up interfaces and every one must be listed.
pub fn interfaces_unmetered(unmetered: &[String], default_route: Option<&str>, up: &[String]) -> bool {
    match default_route {
        Some(i) => unmetered.iter().any(|u| u == i),
        None => !up.is_empty() && up.iter().all(|i| unmetered.contains(i)),
    }
}

/// Where the network readers look (`/proc/net/route`, `/sys/class/net` on Linux).
#[derive(Debug, Clone)]
pub struct NetworkPaths {
    /// The IPv4 routing table file.
    pub route_file: PathBuf,
    /// The network interface class folder.
    pub net_dir: PathBuf,
}

impl Default for NetworkPaths {
    fn default() -> Self {
        NetworkPaths {
            route_file: "/proc/net/route".into(),
            net_dir: "/sys/class/net".into(),
        }
    }
}

/// Whether the network is unmetered now under `policy`: `None` when no
/// network rule is configured; else the exit status of
/// `unmetered_command` (0 = unmetered; failing to run or 10 s without an
/// answer = metered), or the interface rule ([`interfaces_unmetered`]).
pub async fn network_unmetered(policy: &PolicySettings, paths: &NetworkPaths) -> Option<bool> {
    if let Some(cmd) = &policy.unmetered_command {
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        return Some(match tokio::time::timeout(Duration::from_secs(10), child).await {
            Ok(Ok(s)) => s.success(),
            Ok(Err(e)) => {
                tracing::warn!(command = %cmd, error = %e, "cannot run the unmetered-network command");
                false
            }
            Err(_) => {
                tracing::warn!(command = %cmd, "unmetered-network command did not answer in 10 s");
                false
            }
        });
    }
    if policy.unmetered_interfaces.is_empty() {
        return None;
    }
    let route = read_default_route_interface(&paths.route_file);
    let up = read_up_interfaces(&paths.net_dir);
    Some(interfaces_unmetered(
        &policy.unmetered_interfaces,
        route.as_deref(),
        &up,
    ))
}

/// Observes the device: network (per `policy`) and power.
pub async fn observe(policy: &PolicySettings, paths: &NetworkPaths) -> Conditions {
    Conditions {
        unmetered: network_unmetered(policy, paths).await,
        power: read_power(&policy.power_supply_dir),
    }
}

/// Free bytes for an unprivileged writer on the file system holding `path`
/// (statvfs `f_bavail * f_frsize`).
///
/// Errors: `path` does not exist or statvfs fails.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Total size in bytes of the regular files under `dir` (recursively); 0 if absent.
pub fn used_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => used_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn pol() -> PolicySettings {
        PolicySettings::default()
    }

    #[test]
    fn no_rules_allow_everything() {
        assert_eq!(download_allowed(&pol(), &Conditions::default()), Ok(()));
        assert!(!pol().restricts_network());
    }

    #[test]
    fn network_rule_needs_an_unmetered_network() {
        let p = PolicySettings {
            unmetered_interfaces: vec!["eth0".into()],
            ..pol()
        };
        let c = |u| Conditions {
            unmetered: u,
            ..Default::default()
        };
        assert_eq!(download_allowed(&p, &c(Some(true))), Ok(()));
        assert_eq!(download_allowed(&p, &c(Some(false))), Err(Blocked::Metered));
        assert_eq!(download_allowed(&p, &c(None)), Err(Blocked::Metered));
        let p = PolicySettings {
            unmetered_command: Some("true".into()),
            ..pol()
        };
        assert_eq!(download_allowed(&p, &c(Some(false))), Err(Blocked::Metered));
        assert!(Blocked::Metered.is_transient());
    }

    #[test]
    fn battery_rule() {
        let p = PolicySettings {
            min_battery_percent: Some(30),
            ..pol()
        };
        let c = |b, ac| Conditions {
            unmetered: None,
            power: PowerState {
                battery_percent: b,
                external_power: ac,
            },
        };
        assert_eq!(
            download_allowed(&p, &c(Some(29), false)),
            Err(Blocked::LowBattery { percent: 29, min: 30 })
        );
        assert_eq!(download_allowed(&p, &c(Some(30), false)), Ok(()));
        assert_eq!(download_allowed(&p, &c(Some(5), true)), Ok(()), "charging");
        assert_eq!(
            download_allowed(&p, &c(None, false)),
            Ok(()),
            "no battery: mains device"
        );
        assert_eq!(
            download_allowed(&pol(), &c(Some(1), false)),
            Ok(()),
            "no minimum configured"
        );
    }

    #[test]
    fn storage_rules() {
        let p = PolicySettings {
            storage_cap_bytes: Some(1000),
            ..pol()
        };
        assert_eq!(check_storage(&p, 600, 400, None), Ok(()));
        assert_eq!(
            check_storage(&p, 601, 400, None),
            Err(Blocked::StorageCap {
                needed: 601,
                used: 400,
                cap: 1000
            })
        );
        assert_eq!(check_storage(&pol(), 10_000, 10_000, Some(10_000)), Ok(()));
        assert_eq!(
            check_storage(&pol(), 10_001, 0, Some(10_000)),
            Err(Blocked::NoSpace {
                needed: 10_001,
                free: 10_000
            })
        );
        assert!(!Blocked::NoSpace { needed: 1, free: 0 }.is_transient());
        assert!(Blocked::StorageCap {
            needed: 1,
            used: 0,
            cap: 0
        }
        .to_string()
        .contains("storage cap"));
    }

    #[test]
    fn seeding_floor_and_ceiling() {
        let s = |secs| Duration::from_secs(secs);
        // Ratio 2, until installed, at most 1 h.
        let p = PolicySettings {
            seed_ratio: Some(2.0),
            seed_max_secs: Some(3600),
            ..pol()
        };
        assert!(!seeding_done(&p, 1999, 1000, true, s(10)), "ratio not reached");
        assert!(seeding_done(&p, 2000, 1000, true, s(10)), "ratio reached and installed");
        assert!(!seeding_done(&p, 5000, 1000, false, s(10)), "not installed yet");
        assert!(seeding_done(&p, 0, 1000, false, s(3600)), "maximum time wins");
        let p = PolicySettings {
            seed_until_installed: false,
            ..p
        };
        assert!(seeding_done(&p, 5000, 1000, false, s(10)));
        // No ratio, no maximum: forever.
        assert!(!seeding_done(&pol(), u64::MAX, 1, true, s(1 << 40)));
        // Ratio 0 with install floor: stop once installed.
        let p = PolicySettings {
            seed_ratio: Some(0.0),
            ..pol()
        };
        assert!(!seeding_done(&p, 0, 1000, false, s(1)));
        assert!(seeding_done(&p, 0, 1000, true, s(1)));
    }

    #[test]
    fn power_supply_folder() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_power(&d.path().join("absent")), PowerState::default());
        let mk = |name: &str, files: &[(&str, &str)]| {
            let p = d.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            for (f, v) in files {
                std::fs::write(p.join(f), format!("{v}\n")).unwrap();
            }
        };
        mk("BAT0", &[("type", "Battery"), ("capacity", "42"), ("present", "1")]);
        mk("AC", &[("type", "Mains"), ("online", "0")]);
        assert_eq!(
            read_power(d.path()),
            PowerState {
                battery_percent: Some(42),
                external_power: false
            }
        );
        mk("BAT1", &[("type", "Battery"), ("capacity", "17")]);
        mk("BAT2", &[("type", "Battery"), ("capacity", "3"), ("present", "0")]);
        mk("AC", &[("type", "Mains"), ("online", "1")]);
        assert_eq!(
            read_power(d.path()),
            PowerState {
                battery_percent: Some(17),
                external_power: true
            }
        );
    }

    #[test]
    fn route_table_and_interfaces() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            wwan0\t00000000\t0100000A\t0003\t0\t0\t700\t00000000\t0\t0\t0\n\
            eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
            wlan0\t00000000\t0101A8C0\t0002\t0\t0\t1\t00000000\t0\t0\t0\n";
        assert_eq!(
            default_route_interface(table).as_deref(),
            Some("eth0"),
            "lowest metric among routes that are up"
        );
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
        let un = vec!["eth0".to_string(), "wlan0".to_string()];
        assert!(interfaces_unmetered(&un, Some("eth0"), &[]));
        assert!(!interfaces_unmetered(&un, Some("wwan0"), &["eth0".into()]));
        assert!(interfaces_unmetered(&un, None, &["eth0".into(), "wlan0".into()]));
        assert!(!interfaces_unmetered(&un, None, &["eth0".into(), "wwan0".into()]));
        assert!(!interfaces_unmetered(&un, None, &[]));

        let d = tempfile::tempdir().unwrap();
        for (i, st) in [("lo", "unknown"), ("eth0", "up"), ("wwan0", "down"), ("wlan0", "up")] {
            std::fs::create_dir_all(d.path().join(i)).unwrap();
            std::fs::write(d.path().join(i).join("operstate"), format!("{st}\n")).unwrap();
        }
        assert_eq!(
            read_up_interfaces(d.path()),
            vec!["eth0".to_string(), "wlan0".to_string()]
        );
        let rf = d.path().join("route");
        std::fs::write(&rf, table).unwrap();
        assert_eq!(read_default_route_interface(&rf).as_deref(), Some("eth0"));
    }

    #[tokio::test]
    async fn unmetered_by_command_or_interfaces() {
        let d = tempfile::tempdir().unwrap();
        let paths = NetworkPaths {
            route_file: d.path().join("route"),
            net_dir: d.path().join("net"),
        };
        assert_eq!(network_unmetered(&pol(), &paths).await, None);
        let p = PolicySettings {
            unmetered_command: Some("exit 0".into()),
            ..pol()
        };
        assert_eq!(network_unmetered(&p, &paths).await, Some(true));
        let p = PolicySettings {
            unmetered_command: Some("exit 3".into()),
            ..pol()
        };
        assert_eq!(network_unmetered(&p, &paths).await, Some(false));
        std::fs::create_dir_all(d.path().join("net/eth0")).unwrap();
        std::fs::write(d.path().join("net/eth0/operstate"), "up\n").unwrap();
        let p = PolicySettings {
            unmetered_interfaces: vec!["eth0".into()],
            ..pol()
        };
        assert_eq!(
            network_unmetered(&p, &paths).await,
            Some(true),
            "no route file: up interfaces decide"
        );
        std::fs::write(
            &paths.route_file,
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\nwwan0\t00000000\t0\t0003\t0\t0\t0\n",
        )
        .unwrap();
        assert_eq!(
            network_unmetered(&p, &paths).await,
            Some(false),
            "default route via wwan0"
        );
    }

    #[test]
    fn disk_readers() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/x"), vec![0u8; 100]).unwrap();
        std::fs::write(d.path().join("a/b/y"), vec![0u8; 23]).unwrap();
        assert_eq!(used_bytes(d.path()), 123);
        assert_eq!(used_bytes(&d.path().join("none")), 0);
        assert!(free_bytes(d.path()).unwrap() > 0);
        assert!(free_bytes(&d.path().join("none")).is_err());
    }

    #[derive(clap::Parser)]
    #[command(args_override_self = true)]
    struct Cli {
        #[command(flatten)]
        p: PolicySettings,
    }

    #[test]
    fn flags_and_toml_keys() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("agent.toml");
        std::fs::write(
            &f,
            "unmetered_interfaces = [\"eth0\", \"wlan0\"]\nmin_battery_percent = 25\nstorage_cap_bytes = 1000000\n\
             upload_limit_bps = 50000\nseed_ratio = 1.5\nseed_until_installed = \"false\"\nseed_max_secs = 600\n",
        )
        .unwrap();
        let args = ota_common::config::expand_config_file(
            vec![
                "x".into(),
                "--config".into(),
                f.display().to_string(),
                "--seed-max-secs".into(),
                "60".into(),
            ],
            "OTA_POLICY_TEST_NO_SUCH_VAR",
        )
        .unwrap();
        let p = Cli::parse_from(args).p;
        assert_eq!(p.unmetered_interfaces, vec!["eth0".to_string(), "wlan0".to_string()]);
        assert_eq!(p.min_battery_percent, Some(25));
        assert_eq!(p.storage_cap_bytes, Some(1_000_000));
        assert_eq!(p.session_limits().upload_bps, NonZeroU32::new(50_000));
        assert_eq!(p.seed_ratio, Some(1.5));
        assert!(!p.seed_until_installed);
        assert_eq!(p.seed_max_secs, Some(60), "flag beats file");
        assert_eq!(Cli::parse_from(["x"]).p, PolicySettings::default());
    }
}
