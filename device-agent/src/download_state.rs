//! Per-release download state and the history of finished releases, kept
//! in the state folder so that a restarted agent (even after `kill -9`)
//! resumes its downloads without a new push.
//!
//! Files (JSON, written to a temporary file, fsynced, then renamed, so a
//! crash never leaves a half-written file):
//! - `STATE_DIR/active.json`: [`ActiveRelease`] by info hash — releases
//!   being downloaded, paused, verified or seeded;
//! - `STATE_DIR/history.json`: [`HistoryEntry`] list, oldest first —
//!   finished, failed, cancelled and rejected releases;
//! - `STATE_DIR/installed.json`: [`Installed`] by info hash — verified
//!   releases (and when the device's installer installed them);
//! - `STATE_DIR/installed.max.json`: [`MaxVersions`] — the highest version
//!   of each package verified, the downgrade guard that survives a lost
//!   `installed.json`.
//!
//! Files are fsynced (file and folder) before and after the rename; the
//! history keeps the newest [`MAX_HISTORY`] entries.
//!
//! Pure apart from [`load_json`] / [`save_json`]: the pause-reason set and
//! the phase logic are unit-tested without I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ota_proto::InfoHash;
use serde::{Deserialize, Serialize};

/// Why a download is paused. Several reasons can hold at once; the
/// download runs only when none does, so a policy resuming its own pause
/// never overrides the user's pause (and the reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PauseReason {
    /// `ota-device-agent pause` from the user.
    User,
    /// A device policy (metered network, battery, storage…) blocks downloading.
    Policy,
}

/// Where a release is in its life on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Release record and manifest being fetched and checked.
    Checking,
    /// Pieces being fetched (or paused: see [`ActiveRelease::paused`]).
    Downloading,
    /// Whole-file SHA-256 check.
    Verifying,
    /// The install hook is running.
    Installing,
    /// Verified; offered to other devices.
    Seeding,
}

/// Bytes received per source, cumulated over pauses and restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceTotals {
    /// Payload bytes from the origin seeder over BitTorrent.
    pub origin_bittorrent: u64,
    /// Payload bytes from other devices over BitTorrent.
    pub peers: u64,
    /// Payload bytes from the origin over plain HTTP (the HTTP fallback).
    pub origin_http: u64,
    /// Of `peers`, bytes from devices at LAN addresses
    /// ([`crate::accounting::is_lan_ip`]).
    #[serde(default)]
    pub lan_peers: u64,
    /// Of `peers`, bytes from devices at internet addresses.
    #[serde(default)]
    pub internet_peers: u64,
}

impl SourceTotals {
    /// Sum of all sources, bytes.
    pub fn total(&self) -> u64 {
        self.origin_bittorrent + self.peers + self.origin_http
    }

    /// Field-wise sum.
    pub fn plus(&self, o: &SourceTotals) -> SourceTotals {
        SourceTotals {
            origin_bittorrent: self.origin_bittorrent + o.origin_bittorrent,
            peers: self.peers + o.peers,
            origin_http: self.origin_http + o.origin_http,
            lan_peers: self.lan_peers + o.lan_peers,
            internet_peers: self.internet_peers + o.internet_peers,
        }
    }
}

/// One release the agent is working on, as persisted in `active.json` and
/// shown by `ota-device-agent status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRelease {
    /// Info hash (40 hex characters in the JSON files).
    pub info_hash: InfoHash,
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Package size, bytes.
    pub size: u64,
    /// Where it is.
    pub phase: Phase,
    /// Whether the signed manifest (or the release record when no key is
    /// pinned) was checked; a resumed download still checks it again.
    pub manifest_checked: bool,
    /// When the download started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// Why it is paused; empty when running.
    pub paused: BTreeSet<PauseReason>,
    /// Verified bytes on disk.
    pub progress_bytes: u64,
    /// Download speed over the last few seconds, bytes/s (not persisted
    /// meaningfully: 0 after a restart).
    pub speed_bps: u64,
    /// Bytes received per source: earlier runs and pauses plus the current one.
    pub received: SourceTotals,
    /// Bytes sent to other peers, this run.
    pub uploaded: u64,
    /// The user asked to cancel it.
    #[serde(default)]
    pub cancel_requested: bool,
}

impl ActiveRelease {
    /// A fresh entry in phase [`Phase::Checking`].
    pub fn new(info_hash: InfoHash, name: &str, version: &str, size: u64, now_ms: u64) -> Self {
        ActiveRelease {
            info_hash,
            name: name.to_string(),
            version: version.to_string(),
            size,
            phase: Phase::Checking,
            manifest_checked: false,
            started_at_ms: now_ms,
            paused: BTreeSet::new(),
            progress_bytes: 0,
            speed_bps: 0,
            received: SourceTotals::default(),
            uploaded: 0,
            cancel_requested: false,
        }
    }

    /// Whether the download must be paused now (any reason holds).
    pub fn should_pause(&self) -> bool {
        !self.paused.is_empty()
    }

    /// The state word `status` prints: `downloading`, `paused(user,policy)`,
    /// `verifying`, `installing`, `seeding`, `checking`.
    pub fn state_label(&self) -> String {
        match self.phase {
            Phase::Downloading if !self.paused.is_empty() => {
                let r: Vec<&str> = self
                    .paused
                    .iter()
                    .map(|r| match r {
                        PauseReason::User => "user",
                        PauseReason::Policy => "policy",
                    })
                    .collect();
                format!("paused({})", r.join(","))
            }
            Phase::Checking => "checking".into(),
            Phase::Downloading => "downloading".into(),
            Phase::Verifying => "verifying".into(),
            Phase::Installing => "installing".into(),
            Phase::Seeding => "seeding".into(),
        }
    }

    /// `name@version`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// One installed (verified) release, as kept in `installed.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Installed {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Verified package path.
    pub path: PathBuf,
    /// SHA-256, hex.
    pub sha256: String,
    /// When the device's installer (install hook or `ota-device-agent
    /// installed`) installed it, ms since the Unix epoch; `None` while only
    /// downloaded and verified.
    #[serde(default)]
    pub installed_at_ms: Option<u64>,
}

/// How a release ended on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Downloaded and verified (and the install hook, if any, succeeded).
    Finished,
    /// Download, verification or the install hook failed.
    Failed,
    /// Cancelled by the user; partial data deleted.
    Cancelled,
    /// The manifest was refused; nothing downloaded.
    Rejected,
    /// Marked installed (by the install hook or `ota-device-agent installed`).
    Installed,
}

/// One line of `history.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Info hash (hex in `history.json`).
    pub info_hash: InfoHash,
    /// Package name (empty when the release record could not be fetched).
    pub name: String,
    /// Version.
    pub version: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Error text or other detail.
    pub reason: Option<String>,
    /// Start, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// End, ms since the Unix epoch.
    pub ended_at_ms: u64,
    /// Bytes received per source.
    pub received: SourceTotals,
}

/// Whether a release must not be started again on its own (catch-up, poll,
/// push): the user cancelled it or its manifest was refused.
pub fn blocks_restart(history: &[HistoryEntry], info_hash: &InfoHash) -> bool {
    history
        .iter()
        .any(|h| h.info_hash == *info_hash && matches!(h.outcome, Outcome::Cancelled | Outcome::Rejected))
}

/// Finds the release a user names on the command line: a 40-hex info hash
/// (any case) or `name@version`, among `candidates` (info hash, name, version).
///
/// Errors: nothing matches, or `name@version` matches several releases.
pub fn resolve_release<'a>(
    spec: &str,
    candidates: impl IntoIterator<Item = (&'a InfoHash, &'a str, &'a str)>,
) -> Result<InfoHash, String> {
    let by_hash = spec.parse::<InfoHash>().ok();
    let mut hits: Vec<InfoHash> = Vec::new();
    for (ih, name, version) in candidates {
        let m = match &by_hash {
            Some(h) => h == ih,
            None => format!("{name}@{version}") == spec,
        };
        if m && !hits.contains(ih) {
            hits.push(*ih);
        }
    }
    match hits.len() {
        0 => Err(format!(
            "no release {spec} known to this agent (give an info hash or name@version)"
        )),
        1 => Ok(hits.remove(0)),
        n => Err(format!("{spec} names {n} releases; give the info hash")),
    }
}

/// Milliseconds since the Unix epoch (wall clock).
pub fn now_ms() -> u64 {
    ota_common::clock::wall_ms().max(0) as u64
}

/// Reads a JSON file; a missing file gives `T::default()`.
///
/// Errors: the file exists but cannot be read or parsed (the agent then
/// refuses to start rather than forget its state).
pub fn load_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> anyhow::Result<T> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| anyhow::anyhow!("{} is not valid: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `value` as pretty JSON to `path` atomically and durably: a
/// temporary file is written and fsynced, renamed over `path`, and the
/// folder is fsynced, so after a crash or power loss `path` holds either
/// the old or the new content, never an empty or partial file.
///
/// Errors: the file or its folder cannot be written or synced.
pub fn save_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(value)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Most history entries kept (`history.json`); older ones are dropped.
pub const MAX_HISTORY: usize = 1000;

/// Most releases remembered as attempted in one run; the oldest are forgotten.
pub const MAX_ATTEMPTED: usize = 1000;

/// Drops the oldest entries of `history` beyond `cap`.
pub fn cap_history(history: &mut Vec<HistoryEntry>, cap: usize) {
    if history.len() > cap {
        let extra = history.len() - cap;
        history.drain(..extra);
    }
}

/// A set of info hashes that keeps at most `cap`, forgetting the oldest
/// inserted first.
#[derive(Debug, Clone)]
pub struct RecentSet {
    cap: usize,
    order: std::collections::VecDeque<InfoHash>,
    set: std::collections::HashSet<InfoHash>,
}

impl RecentSet {
    /// An empty set holding at most `cap` (at least 1) info hashes.
    pub fn new(cap: usize) -> Self {
        RecentSet {
            cap: cap.max(1),
            order: Default::default(),
            set: Default::default(),
        }
    }

    /// Inserts `ih`; returns false when it was there already. Past the
    /// cap, the oldest entry is dropped.
    pub fn insert(&mut self, ih: InfoHash) -> bool {
        if !self.set.insert(ih) {
            return false;
        }
        self.order.push_back(ih);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// Whether `ih` is in the set.
    pub fn contains(&self, ih: &InfoHash) -> bool {
        self.set.contains(ih)
    }

    /// Number of entries (at most the cap).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The highest version of each package ever verified on this device
/// (`STATE_DIR/installed.max.json`, package name → version): kept apart
/// from `installed.json` so that losing or corrupting that file never
/// re-enables a downgrade.
pub type MaxVersions = BTreeMap<String, String>;

/// Raises `max[name]` to `version` when it is newer (or absent).
pub fn raise_max(max: &mut MaxVersions, name: &str, version: &str) {
    match max.get(name) {
        Some(v) if !ota_proto::manifest::is_newer_version(version, v) => {}
        _ => {
            max.insert(name.to_string(), version.to_string());
        }
    }
}

/// The active releases file content.
pub type ActiveMap = BTreeMap<InfoHash, ActiveRelease>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_reasons_are_a_set_and_the_download_runs_only_when_empty() {
        let mut a = ActiveRelease::new(InfoHash([0xab; 20]), "pkg", "1.0", 10, 0);
        a.phase = Phase::Downloading;
        assert!(!a.should_pause());
        assert_eq!(a.state_label(), "downloading");
        a.paused.insert(PauseReason::User);
        a.paused.insert(PauseReason::Policy);
        assert_eq!(a.state_label(), "paused(user,policy)");
        // The policy lifting its block does not resume a user pause.
        a.paused.remove(&PauseReason::Policy);
        assert!(a.should_pause());
        assert_eq!(a.state_label(), "paused(user)");
        a.paused.remove(&PauseReason::User);
        assert!(!a.should_pause());
        a.phase = Phase::Seeding;
        assert_eq!(a.state_label(), "seeding");
    }

    #[test]
    fn releases_are_named_by_hash_or_name_at_version() {
        let ih1 = InfoHash([0xaa; 20]);
        let ih2 = InfoHash([0xbb; 20]);
        let c = [(&ih1, "pkg", "1.0"), (&ih2, "pkg", "2.0")];
        assert_eq!(resolve_release(&"A".repeat(40), c), Ok(ih1));
        assert_eq!(resolve_release("pkg@2.0", c), Ok(ih2));
        assert!(resolve_release("pkg@3.0", c)
            .unwrap_err()
            .contains("no release pkg@3.0"));
        let dup = [(&ih1, "pkg", "1.0"), (&ih2, "pkg", "1.0")];
        assert!(resolve_release("pkg@1.0", dup)
            .unwrap_err()
            .contains("names 2 releases"));
    }

    #[test]
    fn cancelled_and_rejected_releases_are_not_restarted() {
        let e = |ih: u8, outcome| HistoryEntry {
            info_hash: InfoHash([ih; 20]),
            name: "p".into(),
            version: "1".into(),
            outcome,
            reason: None,
            started_at_ms: 0,
            ended_at_ms: 1,
            received: SourceTotals::default(),
        };
        let h = vec![
            e(0xa, Outcome::Cancelled),
            e(0xb, Outcome::Failed),
            e(0xc, Outcome::Rejected),
        ];
        assert!(blocks_restart(&h, &InfoHash([0xa; 20])));
        assert!(
            !blocks_restart(&h, &InfoHash([0xb; 20])),
            "a failed download is retried"
        );
        assert!(blocks_restart(&h, &InfoHash([0xc; 20])));
        assert!(!blocks_restart(&h, &InfoHash([0xd; 20])));
    }

    #[test]
    fn state_files_round_trip_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("active.json");
        let empty: ActiveMap = load_json(&p).unwrap();
        assert!(empty.is_empty());
        let mut m = ActiveMap::new();
        let ih = InfoHash([0xab; 20]);
        let mut a = ActiveRelease::new(ih, "pkg", "1.0", 10, 5);
        a.paused.insert(PauseReason::User);
        a.received.origin_bittorrent = 7;
        m.insert(ih, a);
        save_json(&p, &m).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains(&format!("\"{}\": {{", "ab".repeat(20))),
            "keyed by the hex info hash: {text}"
        );
        let back: ActiveMap = load_json(&p).unwrap();
        assert_eq!(back, m);
        std::fs::write(&p, b"{not json").unwrap();
        assert!(load_json::<ActiveMap>(&p)
            .unwrap_err()
            .to_string()
            .contains("is not valid"));
    }
}
