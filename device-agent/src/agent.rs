//! The agent's lifecycle: subscribe to pushes (reconnecting with backoff),
//! catch up on the newest release at each (re)connect, download each new
//! release once, verify it, keep seeding, and report bytes by source.
//!
//! Each release's decisions are made by a sans-IO [`ReleaseFlow`];
//! [`Agent::handle_release`] is its driver: it performs the flow's actions
//! (tracker calls, librqbit operations through [`Downloader`], state files,
//! the install hook, reports) and feeds the results back.
//!
//! Verified releases are recorded in `STATE_DIR/installed.json`, so a
//! restarted agent does not fetch them again. Releases in progress are kept
//! in `STATE_DIR/active.json` and resumed at start (see
//! [`crate::download_state`]); finished, failed, cancelled and rejected ones
//! go to `STATE_DIR/history.json`. The agent answers the CLI through
//! [`crate::control_socket`] ([`ControlHandler`] impl below).
//!
//! Plug-in points for device policies: [`Agent::set_policy_block`] pauses
//! and resumes downloads with the reason [`PauseReason::Policy`] (never
//! lifting a user pause), and every seeding stop goes through
//! [`should_stop_seeding`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;

use ota_client::{AnnounceParams, TrackerClient};
use ota_proto::announce::AnnounceEvent;
use ota_proto::api::{Release, TelemetryReport};
use ota_proto::InfoHash;

use crate::control_socket::{ControlHandler, Request, Response};
use crate::download::Downloader;
pub use crate::download_state::Installed;
use crate::download_state::{
    blocks_restart, cap_history, load_json, now_ms, raise_max, resolve_release, save_json, ActiveMap, ActiveRelease,
    HistoryEntry, MaxVersions, Outcome, PauseReason, Phase, RecentSet, SourceTotals, MAX_ATTEMPTED, MAX_HISTORY,
};
use crate::policy::{
    check_storage, download_allowed, free_bytes, seeding_done, used_bytes, NetworkPaths, PolicySettings,
};
use crate::release_flow::{
    check_manifest, check_release_record, check_torrent, telemetry_report, Action, FlowConfig, FlowPhase, ReleaseFlow,
    Update, SAMPLE_INTERVAL,
};

/// Settings of a running agent.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// This device's id (sent in announces and telemetry).
    pub device_id: String,
    /// State folder (downloads, installed list).
    pub state_dir: PathBuf,
    /// Longest a download may take.
    pub download_timeout: Duration,
    /// Fetch the newest release at each (re)connect even without a push.
    pub catch_up: bool,
    /// Show a progress bar on stderr.
    pub progress_bar: bool,
    /// While seeding, re-send the release's report (with the bytes uploaded
    /// so far) this often.
    pub report_interval: Duration,
    /// The device maker's pinned manifest key. With it, only releases with a
    /// manifest that verifies and names this device's channel and model are
    /// downloaded; without it, releases are taken on the tracker's word.
    pub manifest_key: Option<ed25519_dalek::VerifyingKey>,
    /// This device's update channel.
    pub channel: String,
    /// This device's model.
    pub model: String,
    /// Fallback for missed pushes: list releases this often and fetch the
    /// newest one not handled yet. `None` disables polling.
    pub poll_interval: Option<Duration>,
    /// Install hook: a shell command run as `sh -c 'HOOK "$1"' PATH` with
    /// the verified package path as its argument and OTA_RELEASE_NAME,
    /// OTA_RELEASE_VERSION, OTA_INFO_HASH in its environment. Exit status
    /// 0 marks the release installed; otherwise its stderr tail is the
    /// error reported. `None`: the device's installer calls
    /// `ota-device-agent installed RELEASE` itself.
    pub install_hook: Option<String>,
    /// Longest the install hook may run; past it the hook (its whole
    /// process group) is killed and the release's hook counts as failed.
    pub install_hook_timeout: Duration,
    /// Device policies: when downloads may run, storage cap, seeding floor
    /// and ceiling ([`crate::policy`]).
    pub policy: PolicySettings,
    /// Release notices from an MQTT broker instead of the tracker's event
    /// stream: `(broker, topic prefix)`. The event stream is then opened
    /// only for hole-punching introductions (when the QUIC bridge is on).
    pub broker: Option<(ota_proto::release_notice::BrokerAddr, String)>,
}

/// What the seeding-stop rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedingFacts {
    /// The device's installer has installed this release.
    pub installed: bool,
    /// A newer version of the same package is installed.
    pub superseded: bool,
    /// Payload bytes uploaded while seeding, this run.
    pub uploaded: u64,
    /// Package size, bytes.
    pub size: u64,
    /// How long it has been seeded, this run.
    pub seeding_for: Duration,
}

/// Whether to stop seeding a verified release. Every seeding stop goes
/// through here.
///
/// Rule: stop when [`crate::policy::seeding_done`] says so (the floor —
/// installed if `seed_until_installed`, `uploaded >= seed_ratio * size` —
/// is met with a ratio configured, or `seed_max_secs` has passed); without
/// a ratio, an installed release is seeded until a newer version of the
/// package is installed (the floor still applies).
pub fn should_stop_seeding(f: &SeedingFacts, policy: &PolicySettings) -> bool {
    if seeding_done(policy, f.uploaded, f.size, f.installed, f.seeding_for) {
        return true;
    }
    let floor_met = (f.installed || !policy.seed_until_installed)
        && policy.seed_ratio.is_none_or(|r| f.uploaded as f64 >= r * f.size as f64);
    f.superseded && f.installed && floor_met
}

/// A running agent.
pub struct Agent {
    tracker: TrackerClient,
    downloader: Downloader,
    settings: AgentSettings,
    attempted: Mutex<RecentSet>,
    /// Releases whose flow [`Agent::consider`] started and that still run.
    in_flight: Mutex<std::collections::HashSet<InfoHash>>,
    installed: Mutex<BTreeMap<InfoHash, Installed>>,
    max_versions: Mutex<MaxVersions>,
    active: Mutex<ActiveMap>,
    history: Mutex<Vec<HistoryEntry>>,
    policy_blocked: AtomicBool,
    last_saved: Mutex<Option<Instant>>,
    /// The direct paths, once [`Agent::set_paths`] gave them.
    paths: std::sync::OnceLock<Arc<crate::direct_paths::Paths>>,
}

/// Reads a state file; a corrupt one is moved aside to `NAME.corrupt`
/// (nothing is lost) and the agent starts with an empty value.
fn load_or_set_aside<T: serde::de::DeserializeOwned + Default>(path: &Path) -> T {
    match load_json(path) {
        Ok(v) => v,
        Err(e) => {
            let aside = path.with_extension("corrupt");
            tracing::error!(error = %e, moved_to = %aside.display(), "state file unreadable; starting without it");
            let _ = std::fs::rename(path, &aside);
            T::default()
        }
    }
}

/// Loads `installed.json` and `installed.max.json` (the highest version
/// verified per package). A corrupt `installed.json` is set aside when the
/// max file still guards against downgrades; when neither can be read the
/// agent refuses to start (and moves nothing).
fn load_installed(state_dir: &Path) -> anyhow::Result<(BTreeMap<InfoHash, Installed>, MaxVersions)> {
    let path = state_dir.join("installed.json");
    let max_path = state_dir.join("installed.max.json");
    let max: Option<MaxVersions> = match load_json(&max_path) {
        Ok(m) if max_path.exists() => Some(m),
        Ok(_) => None,
        Err(e) => {
            tracing::error!(error = %e, "installed.max.json unreadable");
            None
        }
    };
    let installed: BTreeMap<InfoHash, Installed> = match (load_json(&path), &max) {
        (Ok(i), _) => i,
        (Err(e), Some(_)) => {
            let aside = path.with_extension("corrupt");
            tracing::error!(error = %e, moved_to = %aside.display(),
                "installed.json unreadable; starting without it (installed.max.json still refuses downgrades)");
            let _ = std::fs::rename(&path, &aside);
            BTreeMap::new()
        }
        (Err(e), None) => anyhow::bail!(
            "{e}, and {} is missing or unreadable: the agent cannot tell which versions are installed \
             and would accept downgrades; refusing to start. Restore {} from a backup, or delete it \
             deliberately to start with no installed release",
            max_path.display(),
            path.display()
        ),
    };
    let mut max = max.unwrap_or_default();
    for i in installed.values() {
        raise_max(&mut max, &i.name, &i.version);
    }
    Ok((installed, max))
}

impl Agent {
    /// Builds an agent over a started [`Downloader`], loading
    /// `installed.json`, `installed.max.json`, `active.json` and
    /// `history.json` from the state folder (the history cut to its newest
    /// [`MAX_HISTORY`] entries).
    ///
    /// Errors: `installed.json` is unreadable (empty, corrupt) and
    /// `installed.max.json` is missing or unreadable too, so downgrades
    /// could not be refused.
    pub fn new(tracker: TrackerClient, downloader: Downloader, settings: AgentSettings) -> anyhow::Result<Arc<Self>> {
        let (installed, max_versions) = load_installed(&settings.state_dir)?;
        let mut active: ActiveMap = load_or_set_aside(&settings.state_dir.join("active.json"));
        // Unfinished downloads are resumed from here; seeding from
        // `installed.json` (see `resume_seeding`).
        active.retain(|_, a| a.phase != Phase::Seeding);
        for a in active.values_mut() {
            a.speed_bps = 0;
            a.cancel_requested = false;
            a.paused.remove(&PauseReason::Policy);
        }
        let mut history: Vec<HistoryEntry> = load_or_set_aside(&settings.state_dir.join("history.json"));
        cap_history(&mut history, MAX_HISTORY);
        Ok(Arc::new(Agent {
            tracker,
            downloader,
            settings,
            attempted: Mutex::new(RecentSet::new(MAX_ATTEMPTED)),
            in_flight: Mutex::new(Default::default()),
            installed: Mutex::new(installed),
            max_versions: Mutex::new(max_versions),
            active: Mutex::new(active),
            history: Mutex::new(history),
            policy_blocked: AtomicBool::new(false),
            last_saved: Mutex::new(None),
            paths: std::sync::OnceLock::new(),
        }))
    }

    /// Gives the agent its direct paths, shown by `status` (once; later
    /// calls are ignored).
    pub fn set_paths(&self, paths: Arc<crate::direct_paths::Paths>) {
        let _ = self.paths.set(paths);
    }

    /// The agent's BitTorrent side.
    pub fn downloader(&self) -> &Downloader {
        &self.downloader
    }

    /// Releases in progress (downloading, paused, verifying, seeding), by info hash.
    pub fn active(&self) -> ActiveMap {
        self.active.lock().unwrap().clone()
    }

    /// Finished, failed, cancelled, rejected and installed releases, oldest first.
    pub fn history(&self) -> Vec<HistoryEntry> {
        self.history.lock().unwrap().clone()
    }

    /// Device-policy plug-in: `true` pauses every download with the reason
    /// [`PauseReason::Policy`] (and downloads started later begin paused);
    /// `false` removes that reason. A user pause is left as it is.
    pub fn set_policy_block(&self, blocked: bool) {
        self.policy_blocked.store(blocked, Ordering::SeqCst);
        let mut active = self.active.lock().unwrap();
        for a in active
            .values_mut()
            .filter(|a| matches!(a.phase, Phase::Checking | Phase::Downloading))
        {
            if blocked {
                a.paused.insert(PauseReason::Policy);
            } else {
                a.paused.remove(&PauseReason::Policy);
            }
        }
        drop(active);
        self.save_active();
    }

    fn save_active(&self) {
        let snapshot = self.active.lock().unwrap().clone();
        if let Err(e) = save_json(&self.settings.state_dir.join("active.json"), &snapshot) {
            tracing::warn!(error = %format!("{e:#}"), "cannot save active.json");
        }
        *self.last_saved.lock().unwrap() = Some(Instant::now());
    }

    /// Saves `active.json` at most once a second (progress updates).
    fn save_active_throttled(&self) {
        let due = self
            .last_saved
            .lock()
            .unwrap()
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            self.save_active();
        }
    }

    fn record_history(&self, entry: HistoryEntry) {
        let snapshot = {
            let mut h = self.history.lock().unwrap();
            h.push(entry);
            cap_history(&mut h, MAX_HISTORY);
            h.clone()
        };
        if let Err(e) = save_json(&self.settings.state_dir.join("history.json"), &snapshot) {
            tracing::warn!(error = %format!("{e:#}"), "cannot save history.json");
        }
    }

    /// Ends a release that is not going on: history entry, out of `active.json`.
    fn finish_active(&self, info_hash: &InfoHash, outcome: Outcome, reason: Option<String>) {
        let a = self.active.lock().unwrap().remove(info_hash);
        let (name, version, started, received) = match &a {
            Some(a) => (a.name.clone(), a.version.clone(), a.started_at_ms, a.received),
            None => (String::new(), String::new(), now_ms(), SourceTotals::default()),
        };
        self.record_history(HistoryEntry {
            info_hash: *info_hash,
            name,
            version,
            outcome,
            reason,
            started_at_ms: started,
            ended_at_ms: now_ms(),
            received,
        });
        self.save_active();
    }

    /// Marks a verified release installed by the device's installer: it is
    /// recorded in `installed.json` and the history, and seeding may end
    /// (see [`should_stop_seeding`]).
    ///
    /// Errors: the release is not verified on this device.
    pub fn mark_installed(&self, info_hash: &InfoHash, detail: &str) -> anyhow::Result<Installed> {
        let inst = {
            let mut installed = self.installed.lock().unwrap();
            let i = installed
                .get_mut(info_hash)
                .ok_or_else(|| anyhow::anyhow!("release {info_hash} is not downloaded and verified on this device"))?;
            i.installed_at_ms = Some(now_ms());
            i.clone()
        };
        self.save_installed()?;
        self.record_history(HistoryEntry {
            info_hash: *info_hash,
            name: inst.name.clone(),
            version: inst.version.clone(),
            outcome: Outcome::Installed,
            reason: Some(detail.to_string()),
            started_at_ms: now_ms(),
            ended_at_ms: now_ms(),
            received: SourceTotals::default(),
        });
        Ok(inst)
    }

    /// Seeds again, after a restart, every verified release that
    /// [`should_stop_seeding`] does not retire (the package is SHA-256
    /// checked on disk first).
    pub fn resume_seeding(self: &Arc<Self>) {
        let verified: Vec<(InfoHash, Installed)> = self.installed().into_iter().collect();
        for (ih, inst) in verified {
            if should_stop_seeding(&self.seeding_facts(&ih, 0, 0, Duration::ZERO), &self.settings.policy) {
                continue;
            }
            self.attempted.lock().unwrap().insert(ih);
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.reseed(&ih, &inst).await {
                    tracing::warn!(info_hash = %ih, error = %format!("{e:#}"), "not seeding again");
                }
            });
        }
    }

    /// Seeds a verified release again: its name, version, path and SHA-256
    /// come from `installed.json`; the tracker's record and torrent must
    /// match them ([`check_release_record`], [`check_torrent`]).
    async fn reseed(self: &Arc<Self>, info_hash: &InfoHash, inst: &Installed) -> anyhow::Result<()> {
        let mut release = self.tracker.release(info_hash).await?;
        check_release_record(&release, info_hash).map_err(anyhow::Error::msg)?;
        let size = std::fs::metadata(&inst.path)
            .with_context(|| format!("package {} missing", inst.path.display()))?
            .len();
        release.name = inst.name.clone();
        release.version = inst.version.clone();
        release.size = size;
        let torrent = self.tracker.torrent(info_hash, &self.settings.device_id).await?;
        check_torrent(&torrent, info_hash, &inst.name, size).map_err(|e| anyhow::anyhow!("torrent refused: {e}"))?;
        self.downloader
            .seed_verified(info_hash, &inst.path, &inst.sha256, torrent)
            .await?;
        let received = self
            .history
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|h| h.info_hash == *info_hash && h.outcome != Outcome::Installed)
            .map(|h| h.received)
            .unwrap_or_default();
        let mut a = ActiveRelease::new(*info_hash, &release.name, &release.version, release.size, now_ms());
        a.phase = Phase::Seeding;
        a.manifest_checked = true;
        a.progress_bytes = release.size;
        a.received = received;
        {
            // An entry left by a run that died in its install hook stays
            // (the hook runs again and moves it to seeding).
            let mut active = self.active.lock().unwrap();
            match active.get_mut(info_hash) {
                Some(old) => {
                    old.progress_bytes = release.size;
                    if old.phase != Phase::Installing {
                        old.phase = Phase::Seeding;
                    }
                }
                None => {
                    active.insert(*info_hash, a);
                }
            }
        }
        self.save_active();
        tracing::info!(name = %release.name, version = %release.version, %info_hash, "seeding again after a restart");
        let report = TelemetryReport {
            verified: true,
            ..self.report(info_hash, &received)
        };
        self.spawn_seeding_reports(report, release.size);
        Ok(())
    }

    /// A telemetry report of this device ([`telemetry_report`]).
    fn report(&self, info_hash: &InfoHash, received: &SourceTotals) -> TelemetryReport {
        telemetry_report(&self.settings.device_id, info_hash, received)
    }

    /// Starts again every release `active.json` holds unfinished (after a
    /// restart or `kill -9`), without waiting for a push.
    ///
    /// A release whose install hook was cut short (the agent died in phase
    /// `installing`) gets its hook run again.
    pub fn resume_unfinished(self: &Arc<Self>) {
        let pending: Vec<(InfoHash, Phase)> = self.active.lock().unwrap().iter().map(|(k, a)| (*k, a.phase)).collect();
        for (ih, phase) in pending {
            let hook_cut_short = phase == Phase::Installing
                && self.settings.install_hook.is_some()
                && self
                    .installed
                    .lock()
                    .unwrap()
                    .get(&ih)
                    .is_some_and(|i| i.installed_at_ms.is_none());
            if hook_cut_short {
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.rerun_install_hook(&ih).await {
                        tracing::error!(info_hash = %ih, error = %format!("{e:#}"), "install hook not run again");
                    }
                });
                continue;
            }
            tracing::info!(info_hash = %ih, "resuming an unfinished download");
            self.consider(&ih);
        }
    }

    /// Runs the install hook again for a verified release whose hook was
    /// cut short (after checking the package's SHA-256 again), records the
    /// result in the history and reports it.
    async fn rerun_install_hook(self: &Arc<Self>, info_hash: &InfoHash) -> anyhow::Result<()> {
        let (Some(cmd), Some(inst)) = (
            self.settings.install_hook.clone(),
            self.installed.lock().unwrap().get(info_hash).cloned(),
        ) else {
            anyhow::bail!("no install hook or release {info_hash} not verified");
        };
        tracing::info!(%info_hash, "the install hook was cut short; running it again");
        // The package may have changed on disk since it was verified: check
        // it again, and never hand a changed one to the hook.
        let result = match Downloader::verify(inst.path.clone(), inst.sha256.clone()).await {
            Ok(()) => {
                let hook = HookRelease {
                    name: inst.name.clone(),
                    version: inst.version.clone(),
                    info_hash: *info_hash,
                };
                run_install_hook(&cmd, &hook, &inst.path, self.settings.install_hook_timeout).await
            }
            Err(e) => {
                tracing::error!(%info_hash, error = %e, "package changed since it was verified; install hook not run");
                Err(format!("package changed since it was verified, not installed: {e}"))
            }
        };
        let release = HookRelease {
            name: inst.name.clone(),
            version: inst.version.clone(),
            info_hash: *info_hash,
        };
        let (started_at_ms, received) = self
            .active
            .lock()
            .unwrap()
            .get(info_hash)
            .map(|a| (a.started_at_ms, a.received))
            .unwrap_or((now_ms(), SourceTotals::default()));
        self.record_history(HistoryEntry {
            info_hash: *info_hash,
            name: release.name.clone(),
            version: release.version.clone(),
            outcome: if result.is_ok() {
                Outcome::Finished
            } else {
                Outcome::Failed
            },
            reason: result.as_ref().err().map(|e| format!("install hook failed: {e}")),
            started_at_ms,
            ended_at_ms: now_ms(),
            received,
        });
        let mut report = TelemetryReport {
            verified: true,
            ..self.report(info_hash, &received)
        };
        match result {
            Ok(()) => {
                self.mark_installed(info_hash, "install hook succeeded")?;
            }
            Err(e) => report.error = Some(crate::release_flow::report_error(&format!("install hook failed: {e}"))),
        }
        if let Some(a) = self.active.lock().unwrap().get_mut(info_hash) {
            a.phase = Phase::Seeding;
        }
        self.save_active();
        self.send_report(&report).await;
        Ok(())
    }

    /// Releases installed so far, by info hash.
    pub fn installed(&self) -> BTreeMap<InfoHash, Installed> {
        self.installed.lock().unwrap().clone()
    }

    /// Saves `installed.max.json` (first: it is the downgrade guard) and
    /// `installed.json`, each fsynced ([`save_json`]).
    fn save_installed(&self) -> anyhow::Result<()> {
        let installed = self.installed.lock().unwrap().clone();
        let max = {
            let mut max = self.max_versions.lock().unwrap();
            for i in installed.values() {
                raise_max(&mut max, &i.name, &i.version);
            }
            max.clone()
        };
        save_json(&self.settings.state_dir.join("installed.max.json"), &max)?;
        save_json(&self.settings.state_dir.join("installed.json"), &installed)?;
        Ok(())
    }

    /// Starts handling a release unless it was installed or attempted
    /// already, or the user cancelled it, or its manifest was refused.
    ///
    /// The attempted set keeps the newest [`MAX_ATTEMPTED`] releases; a
    /// release whose flow still runs is never started twice.
    pub fn consider(self: &Arc<Self>, info_hash: &InfoHash) {
        if self.installed.lock().unwrap().contains_key(info_hash)
            || blocks_restart(&self.history.lock().unwrap(), info_hash)
            || self.in_flight.lock().unwrap().contains(info_hash)
            || !self.attempted.lock().unwrap().insert(*info_hash)
        {
            return;
        }
        self.in_flight.lock().unwrap().insert(*info_hash);
        let me = self.clone();
        let ih = *info_hash;
        tokio::spawn(async move {
            if let Err(e) = me.handle_release(&ih).await {
                tracing::error!(info_hash = %ih, error = %format!("{e:#}"), "release not installed");
            }
            me.in_flight.lock().unwrap().remove(&ih);
        });
    }

    /// Downloads, verifies, installs (install hook) and reports one
    /// release, resuming from `active.json` and the data on disk when an
    /// earlier run left it unfinished. A refused package is reported with
    /// `verified: false` and its error; every end is recorded in the history.
    ///
    /// The decisions are the [`ReleaseFlow`]'s; this performs its actions
    /// (tracker, librqbit, state files, install hook) and feeds the results
    /// back, sampling the download every [`SAMPLE_INTERVAL`].
    pub async fn handle_release(self: &Arc<Self>, info_hash: &InfoHash) -> anyhow::Result<Installed> {
        let mut flow = ReleaseFlow::new(*info_hash, self.flow_config());
        let mut run = FlowRun::default();
        let mut tick: Option<tokio::time::Interval> = None;
        loop {
            while let Some(action) = flow.poll_action() {
                self.perform(&mut flow, &mut run, action).await;
            }
            if !flow.wants_sample() {
                break;
            }
            tick.get_or_insert_with(|| tokio::time::interval(SAMPLE_INTERVAL))
                .tick()
                .await;
            let Some(handle) = run.torrent.clone() else {
                flow.handle_download_error("the torrent is not in the session".into());
                continue;
            };
            let (pause, cancel) = self.requests(info_hash);
            flow.handle_progress(self.downloader.sample(&handle, Instant::now(), pause, cancel));
        }
        if let Some(b) = run.bar.take() {
            b.finish_and_clear();
        }
        match flow.end() {
            Some(Ok(installed)) => Ok(run.marked.unwrap_or_else(|| installed.clone())),
            Some(Err(e)) => Err(anyhow::anyhow!("{e}")),
            None => Err(anyhow::anyhow!(
                "release flow of {info_hash} stopped in phase {:?}",
                flow.phase()
            )),
        }
    }

    fn flow_config(&self) -> FlowConfig {
        FlowConfig {
            device_id: self.settings.device_id.clone(),
            downloads_dir: self.downloader.downloads_dir().to_path_buf(),
            download_timeout: self.settings.download_timeout,
            http_fallback_after: self.downloader.http_fallback_after(),
            http_only: self.downloader.http_only(),
            reconnect_after: self.downloader.reconnect_after(),
            install_hook: self.settings.install_hook.is_some(),
        }
    }

    /// The pause (any reason) and cancel requests of a release's entry.
    fn requests(&self, info_hash: &InfoHash) -> (bool, bool) {
        self.active
            .lock()
            .unwrap()
            .get(info_hash)
            .map(|a| (a.should_pause(), a.cancel_requested))
            .unwrap_or((false, false))
    }

    /// Performs one action of `flow` and feeds its result back.
    async fn perform(self: &Arc<Self>, flow: &mut ReleaseFlow, run: &mut FlowRun, action: Action) {
        let ih = *flow.info_hash();
        if !matches!(flow.phase(), FlowPhase::Downloading | FlowPhase::Verifying) {
            if let Some(b) = run.bar.take() {
                b.finish_and_clear();
            }
        }
        match action {
            Action::FetchRelease => flow.handle_release(self.tracker.release(&ih).await.map_err(|e| format!("{e:#}"))),
            Action::Track { name, version, size } => {
                let earlier = {
                    let mut active = self.active.lock().unwrap();
                    let a = active.entry(ih).or_insert_with(|| {
                        let mut a = ActiveRelease::new(ih, &name, &version, size, now_ms());
                        if self.policy_blocked.load(Ordering::SeqCst) {
                            a.paused.insert(PauseReason::Policy);
                        }
                        a
                    });
                    a.phase = Phase::Checking;
                    a.received
                };
                self.save_active();
                flow.handle_tracked(earlier);
            }
            Action::CheckManifest(release) => {
                let verdict = {
                    let installed = self.installed.lock().unwrap();
                    let max = self.max_versions.lock().unwrap();
                    check_manifest(
                        &release,
                        self.settings.manifest_key.as_ref(),
                        &self.settings.channel,
                        &self.settings.model,
                        installed
                            .values()
                            .map(|i| (i.name.as_str(), i.version.as_str()))
                            .chain(max.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
                    )
                };
                if let Err(e) = &verdict {
                    tracing::error!(info_hash = %ih, error = %e, "manifest rejected; not downloading");
                }
                flow.handle_manifest(verdict);
            }
            Action::Update(update) => self.apply(&ih, update, run.bar.as_ref()),
            Action::CheckStorage { size } => {
                let verdict = self.check_storage(&ih, size);
                if let Err(blocked) = &verdict {
                    tracing::error!(info_hash = %ih, error = %blocked, "release does not fit; not downloading");
                }
                flow.handle_policy(verdict);
            }
            Action::FetchTorrent => {
                let torrent = self
                    .tracker
                    .torrent(&ih, &self.settings.device_id)
                    .await
                    .map_err(|e| format!("{e:#}"));
                flow.handle_torrent(Instant::now(), torrent);
            }
            Action::StartDownload {
                torrent,
                after_fallback,
            } => {
                if !after_fallback {
                    if let Some(r) = flow.release() {
                        tracing::info!(name = %r.name, version = %r.version, info_hash = %ih, "downloading release");
                        run.bar = self.settings.progress_bar.then(|| progress_bar(r));
                    }
                }
                let (paused, _) = self.requests(&ih);
                match self.downloader.add(&ih, torrent, paused).await {
                    Ok(handle) => {
                        run.torrent = Some(handle);
                        flow.handle_started(Instant::now());
                    }
                    Err(e) => flow.handle_download_error(format!("{e:#}")),
                }
            }
            Action::FetchOrigins => {
                let origins = self
                    .tracker
                    .release(&ih)
                    .await
                    .map(|r| r.origin_peers)
                    .unwrap_or_default();
                let per_peer = run.torrent.as_deref().and_then(|t| self.downloader.per_peer(t));
                flow.handle_origins(Instant::now(), origins, per_peer);
            }
            Action::PauseDownload => {
                if let Some(h) = &run.torrent {
                    match self.downloader.pause(h).await {
                        Ok(()) => {
                            tracing::info!(info_hash = %ih, progress = h.stats().progress_bytes, "download paused")
                        }
                        Err(e) => flow.handle_download_error(format!("{e:#}")),
                    }
                }
            }
            Action::ResumeDownload => {
                if let Some(h) = &run.torrent {
                    match self.downloader.resume(h).await {
                        Ok(()) => {
                            tracing::info!(info_hash = %ih, progress = h.stats().progress_bytes, "download resumed")
                        }
                        Err(e) => flow.handle_download_error(format!("{e:#}")),
                    }
                }
            }
            Action::Reconnect => {
                if let Some(h) = &run.torrent {
                    let again = match self.downloader.pause(h).await {
                        Ok(()) => self.downloader.resume(h).await,
                        Err(e) => Err(e),
                    };
                    match again {
                        Ok(()) => tracing::info!(
                            info_hash = %ih,
                            progress = h.stats().progress_bytes,
                            "no progress: reconnecting to the peers (fresh bitfields, no backoff)"
                        ),
                        Err(e) => flow.handle_download_error(format!("{e:#}")),
                    }
                }
            }
            Action::StartHttpFallback {
                url,
                etag,
                torrent,
                file,
                after,
            } => {
                tracing::warn!(info_hash = %ih, after_s = after.as_secs(), "no payload from peers; HTTP fallback");
                if let Err(e) = self.downloader.take_out(&ih).await {
                    let e = e.context("cannot take the torrent out for the HTTP fallback");
                    return flow.handle_download_error(format!("{e:#}"));
                }
                run.torrent = None;
                flow.handle_fallback(self.downloader.fill_over_http(url, etag, &torrent, &file).await);
            }
            Action::DeleteDownload => {
                run.torrent = None;
                self.downloader.discard(&ih).await;
            }
            Action::Verify { path, sha256 } => flow.handle_verified(Downloader::verify(path, sha256).await),
            Action::RecordVerified { installed, outcome } => {
                self.installed.lock().unwrap().insert(ih, installed.clone());
                raise_max(
                    &mut self.max_versions.lock().unwrap(),
                    &installed.name,
                    &installed.version,
                );
                if let Err(e) = self.save_installed() {
                    return flow.handle_state_error(format!("{e:#}"));
                }
                tracing::info!(
                    name = %installed.name,
                    from_origin = outcome.bytes_from_origin,
                    from_peers = outcome.bytes_from_peers,
                    ms = outcome.duration_ms,
                    "release verified; seeding"
                );
            }
            Action::RunInstallHook { path } => {
                let (Some(cmd), Some(release)) = (self.settings.install_hook.as_deref(), flow.release()) else {
                    return flow.handle_install(Err("no install hook configured".into()));
                };
                let result = run_install_hook(
                    cmd,
                    &HookRelease::of(release),
                    &path,
                    self.settings.install_hook_timeout,
                )
                .await;
                if let Err(e) = &result {
                    tracing::error!(info_hash = %ih, error = %e, "install hook failed");
                }
                flow.handle_install(result);
            }
            Action::RecordHistory {
                outcome,
                reason,
                received,
            } => {
                let started_at_ms = self
                    .active
                    .lock()
                    .unwrap()
                    .get(&ih)
                    .map(|a| a.started_at_ms)
                    .unwrap_or_else(now_ms);
                let (name, version) = flow
                    .release()
                    .map(|r| (r.name.clone(), r.version.clone()))
                    .unwrap_or_default();
                self.record_history(HistoryEntry {
                    info_hash: ih,
                    name,
                    version,
                    outcome,
                    reason,
                    started_at_ms,
                    ended_at_ms: now_ms(),
                    received,
                });
            }
            Action::MarkInstalled { detail } => match self.mark_installed(&ih, &detail) {
                Ok(i) => run.marked = Some(i),
                Err(e) => flow.handle_state_error(format!("{e:#}")),
            },
            Action::Report(report) => self.send_report(&report).await,
            Action::AnnounceCompleted { uploaded, downloaded } => {
                let completed = AnnounceParams {
                    info_hash: ih,
                    peer_id: self.downloader.peer_id(),
                    port: self.downloader.port(),
                    uploaded,
                    downloaded,
                    left: 0,
                    event: AnnounceEvent::Completed,
                    device: Some(self.settings.device_id.clone()),
                };
                if let Err(e) = self.tracker.announce(&completed).await {
                    tracing::warn!(error = %format!("{e:#}"), "completed announce failed");
                }
            }
            Action::StartSeeding { report, size } => self.spawn_seeding_reports(*report, size),
            Action::Finish { outcome, reason } => self.finish_active(&ih, outcome, Some(reason)),
        }
    }

    /// Applies a flow's change to the release's `active.json` entry and saves it.
    fn apply(&self, info_hash: &InfoHash, update: Update, bar: Option<&indicatif::ProgressBar>) {
        {
            let mut active = self.active.lock().unwrap();
            let Some(a) = active.get_mut(info_hash) else { return };
            match update {
                Update::ManifestChecked => {
                    a.manifest_checked = true;
                    a.phase = Phase::Downloading;
                }
                Update::Progress(p) => {
                    a.progress_bytes = p.progress_bytes;
                    a.speed_bps = if p.paused { 0 } else { p.speed_bps };
                    a.received = p.received;
                    a.uploaded = p.uploaded;
                    if p.complete() {
                        a.phase = Phase::Verifying;
                    }
                    drop(active);
                    if let Some(b) = bar {
                        b.set_position(p.progress_bytes);
                    }
                    return self.save_active_throttled();
                }
                Update::Verified { received, size, phase } => {
                    a.received = received;
                    a.progress_bytes = size;
                    a.speed_bps = 0;
                    a.paused.clear();
                    a.phase = phase;
                }
                Update::Seeding => a.phase = Phase::Seeding,
            }
        }
        self.save_active();
    }

    /// Storage check before a download: the release must fit the storage
    /// cap beside the other packages under `STATE_DIR/downloads`, and the
    /// file system must have room for what is not on disk yet.
    fn check_storage(&self, info_hash: &InfoHash, size: u64) -> Result<(), crate::policy::Blocked> {
        let downloads = self.downloader.downloads_dir();
        let this = used_bytes(&self.downloader.folder(info_hash));
        let others = used_bytes(downloads).saturating_sub(this);
        let free = free_bytes(downloads).ok().map(|f| f.saturating_add(this));
        check_storage(&self.settings.policy, size, others, free)
    }

    /// Re-checks the download policy every `every` and pauses or resumes
    /// downloads with [`PauseReason::Policy`] ([`Agent::set_policy_block`]).
    /// Does nothing when no network or battery rule is configured.
    pub async fn run_policy_loop(self: Arc<Self>, every: Duration) {
        let p = &self.settings.policy;
        if !p.restricts_network() && p.min_battery_percent.is_none() {
            return;
        }
        let paths = NetworkPaths::default();
        let mut last: Option<Result<(), crate::policy::Blocked>> = None;
        loop {
            let cond = crate::policy::observe(p, &paths).await;
            let verdict = download_allowed(p, &cond);
            if last.as_ref() != Some(&verdict) {
                match &verdict {
                    Ok(()) => tracing::info!("download policy allows downloading"),
                    Err(b) => tracing::info!(reason = %b, "download policy pauses downloads"),
                }
                self.set_policy_block(verdict.is_err());
                last = Some(verdict);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Re-sends `report` with the current upload counter every
    /// `report_interval` while the release is seeded, and stops seeding
    /// when [`should_stop_seeding`] says so (or the agent stops).
    fn spawn_seeding_reports(self: &Arc<Self>, mut report: TelemetryReport, size: u64) {
        let me = self.clone();
        let since = Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(me.settings.report_interval).await;
                let Some(up) = me.downloader.uploaded(&report.info_hash) else {
                    break;
                };
                if let Some(a) = me.active.lock().unwrap().get_mut(&report.info_hash) {
                    a.uploaded = up;
                }
                if up != report.bytes_uploaded {
                    report.bytes_uploaded = up;
                    me.send_report(&report).await;
                }
                let facts = me.seeding_facts(&report.info_hash, up, size, since.elapsed());
                if should_stop_seeding(&facts, &me.settings.policy) {
                    tracing::info!(info_hash = %report.info_hash, uploaded = up, "seeding stopped");
                    if let Err(e) = me.downloader.stop_seeding(&report.info_hash).await {
                        tracing::warn!(error = %format!("{e:#}"), "cannot stop seeding");
                    }
                    me.active.lock().unwrap().remove(&report.info_hash);
                    me.save_active();
                    break;
                }
            }
        });
    }

    fn seeding_facts(&self, info_hash: &InfoHash, uploaded: u64, size: u64, seeding_for: Duration) -> SeedingFacts {
        let installed = self.installed.lock().unwrap();
        let this = installed.get(info_hash);
        let superseded = this.is_some_and(|t| {
            installed.iter().any(|(ih, i)| {
                *ih != *info_hash
                    && i.name == t.name
                    && i.installed_at_ms.is_some()
                    && ota_proto::manifest::is_newer_version(&i.version, &t.version)
            })
        });
        SeedingFacts {
            installed: this.is_some_and(|t| t.installed_at_ms.is_some()),
            superseded,
            uploaded,
            size,
            seeding_for,
        }
    }

    /// Sends a telemetry report, with this device's NAT kind from its
    /// STUN probe (when it probed).
    async fn send_report(&self, report: &TelemetryReport) {
        let nat = self
            .paths
            .get()
            .and_then(|p| p.status().nat)
            .map(|n| n.kind.to_string());
        let report = TelemetryReport {
            nat: nat.or_else(|| report.nat.clone()),
            ..report.clone()
        };
        if let Err(e) = self.tracker.report(&report).await {
            tracing::warn!(error = %format!("{e:#}"), "telemetry not delivered");
        }
    }

    fn catch_up(self: &Arc<Self>, releases: &[Release]) {
        if let Some(newest) = releases.first() {
            self.consider(&newest.info_hash);
        }
    }

    /// Polls the release list every `poll_interval` (if set) and considers the
    /// newest release, in case a push was missed.
    async fn run_poll_loop(self: Arc<Self>) {
        let Some(every) = self.settings.poll_interval else {
            return;
        };
        loop {
            tokio::time::sleep(every).await;
            match self.tracker.releases().await {
                Ok(r) => self.catch_up(&r),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "release poll failed"),
            }
        }
    }

    /// At a (re)connection of the push channel or the broker, with
    /// [`AgentSettings::catch_up`]: lists the releases and considers the
    /// newest, in case a push was missed while away.
    async fn catch_up_at_connect(self: &Arc<Self>) {
        if self.settings.catch_up {
            match self.tracker.releases().await {
                Ok(r) => self.catch_up(&r),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot list releases"),
            }
        }
    }

    /// Takes release notices from the MQTT broker forever (see
    /// [`AgentSettings::broker`]): lists the releases at the tracker at
    /// every (re)connection, and considers a notice's release when the
    /// notice's rollout wave includes this device (a hint: the tracker
    /// still decides, and the manifest is still verified).
    async fn run_broker_loop(self: Arc<Self>, broker: ota_proto::release_notice::BrokerAddr, prefix: String) {
        let sub = ota_client::broker::NoticeSubscription {
            addr: broker,
            prefix,
            client_id: format!("ota-device-{}", self.settings.device_id),
            channel: self.settings.channel.clone(),
            model: self.settings.model.clone(),
            keep_alive: Duration::from_secs(30),
        };
        let (mut events, task) = match ota_client::broker::subscribe_notices(sub) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "no release notices from the broker");
                return;
            }
        };
        while let Some(ev) = events.recv().await {
            match ev {
                ota_client::broker::BrokerEvent::Connected => {
                    self.catch_up_at_connect().await;
                }
                ota_client::broker::BrokerEvent::Notice(n) => {
                    if n.wave_includes(&self.settings.device_id) {
                        tracing::info!(name = %n.name, version = %n.version, "release notice received");
                        self.consider(&n.info_hash);
                    } else {
                        tracing::debug!(name = %n.name, percent = n.rollout_percent, "release notice for a wave without this device");
                    }
                }
            }
        }
        task.abort();
    }

    /// Subscribes to the push channel forever, reconnecting with exponential
    /// backoff (0.5 s doubling to 10 s), and polls as a fallback. With a
    /// broker ([`AgentSettings::broker`]) release notices come from there,
    /// and the event stream is held only for introductions.
    pub async fn run(self: Arc<Self>) {
        // Unfinished first: it reads the phases `resume_seeding` replaces.
        self.resume_unfinished();
        self.resume_seeding();
        tokio::spawn(self.clone().run_poll_loop());
        tokio::spawn(self.clone().run_policy_loop(Duration::from_secs(15)));
        if let Some((broker, prefix)) = self.settings.broker.clone() {
            let notices = tokio::spawn(self.clone().run_broker_loop(broker, prefix));
            if self.downloader.punching().is_none() {
                let _ = notices.await;
                return;
            }
        }
        let from_stream = self.settings.broker.is_none();
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.tracker.subscribe().await {
                Ok(mut stream) => {
                    tracing::info!(tracker = %self.tracker.base(), "subscribed to pushes");
                    backoff = Duration::from_millis(500);
                    if from_stream {
                        self.catch_up_at_connect().await;
                    }
                    while let Some(ev) = stream.next().await {
                        match ev {
                            Ok(ota_client::PushMessage::Release(ev)) if from_stream => {
                                tracing::info!(name = %ev.name, version = %ev.version, "push received");
                                self.consider(&ev.info_hash);
                            }
                            Ok(ota_client::PushMessage::Release(_)) => {}
                            Ok(ota_client::PushMessage::Introduce(i)) => match self.downloader.punching() {
                                Some(p) => {
                                    if let Err(e) = p.bridge.on_introduction(&i) {
                                        tracing::warn!(id = i.id, error = %format!("{e:#}"), "introduction refused");
                                    }
                                }
                                None => tracing::debug!(id = i.id, "introduction ignored: no QUIC bridge"),
                            },
                            Err(e) => {
                                tracing::warn!(error = %format!("{e:#}"), "push channel error");
                                break;
                            }
                        }
                    }
                    tracing::warn!("push channel closed; reconnecting");
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot subscribe; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Stops the BitTorrent session.
    pub async fn stop(&self) {
        self.downloader.stop().await;
    }
}

/// What the driver of one [`ReleaseFlow`] holds besides the flow: the
/// torrent in the session, the progress bar, the installed mark.
#[derive(Default)]
struct FlowRun {
    torrent: Option<Arc<librqbit::ManagedTorrent>>,
    bar: Option<indicatif::ProgressBar>,
    marked: Option<Installed>,
}

/// The optional stderr progress bar of a download.
fn progress_bar(release: &Release) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(release.size);
    b.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_message(release.name.clone());
    b
}

/// What the install hook is told about the release (its environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRelease {
    /// Package name (`OTA_RELEASE_NAME`).
    pub name: String,
    /// Version (`OTA_RELEASE_VERSION`).
    pub version: String,
    /// Info hash (`OTA_INFO_HASH`, 40 hex characters).
    pub info_hash: InfoHash,
}

impl HookRelease {
    /// The name, version and info hash of a release record.
    pub fn of(release: &Release) -> Self {
        HookRelease {
            name: release.name.clone(),
            version: release.version.clone(),
            info_hash: release.info_hash,
        }
    }
}

/// Runs the install hook `cmd` as `sh -c 'CMD "$1"' ota-install-hook PATH`
/// with OTA_RELEASE_NAME, OTA_RELEASE_VERSION and OTA_INFO_HASH set, in
/// its own process group, for at most `timeout`.
///
/// Errors (as text for telemetry and history): the shell cannot start, the
/// hook runs longer than `timeout` (its whole process group is killed with
/// SIGKILL), or it exits non-zero (its exit status and the last 500 bytes
/// of its stderr).
pub async fn run_install_hook(
    cmd: &str,
    release: &HookRelease,
    package: &Path,
    timeout: Duration,
) -> Result<(), String> {
    tracing::info!(hook = %cmd, package = %package.display(), timeout_s = timeout.as_secs(), "running the install hook");
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} \"$1\""))
        .arg("ota-install-hook")
        .arg(package)
        .env("OTA_RELEASE_NAME", &release.name)
        .env("OTA_RELEASE_VERSION", &release.version)
        .env("OTA_INFO_HASH", release.info_hash.to_hex())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run the install hook: {e}"))?;
    let mut child = child;
    let pgid = child.id();
    // Only the stderr tail is kept (a chatty hook cannot fill the memory).
    let stderr = child.stderr.take().map(|mut e| {
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = e.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 8192 {
                    tail.drain(..tail.len() - 4096);
                }
            }
            tail
        })
    });
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(r) => r.map_err(|e| format!("cannot run the install hook: {e}"))?,
        Err(_) => {
            if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) with a negative pid signals that process
                // group; it has no memory-safety preconditions.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            return Err(format!(
                "the install hook did not finish within {} s; killed",
                timeout.as_secs()
            ));
        }
    };
    if status.success() {
        return Ok(());
    }
    let stderr = match stderr {
        Some(t) => tokio::time::timeout(Duration::from_secs(1), t)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let err = String::from_utf8_lossy(&stderr);
    let tail: String = {
        let t = err.trim();
        let cut = t.len().saturating_sub(500);
        let cut = (cut..=t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(t.len());
        t[cut..].to_string()
    };
    Err(format!("{status}: {tail}"))
}

impl ControlHandler for Agent {
    fn handle(&self, request: Request) -> Response {
        match request {
            Request::Status => {
                let releases: Vec<ActiveRelease> = self.active.lock().unwrap().values().cloned().collect();
                Response {
                    ok: true,
                    releases: Some(releases),
                    paths: self.paths.get().map(|p| p.status()),
                    ..Default::default()
                }
            }
            Request::History => Response {
                ok: true,
                history: Some(self.history()),
                ..Default::default()
            },
            Request::Pause { release } => self.change_downloads(release.as_deref(), "paused", |a| {
                a.paused.insert(PauseReason::User);
            }),
            Request::Resume { release } => self.change_downloads(release.as_deref(), "resumed", |a| {
                a.paused.remove(&PauseReason::User);
            }),
            Request::Cancel { release } => self.change_downloads(release.as_deref(), "cancelled", |a| {
                a.cancel_requested = true;
            }),
            Request::Installed { release } => {
                let ih = {
                    let installed = self.installed.lock().unwrap();
                    resolve_release(
                        &release,
                        installed
                            .iter()
                            .map(|(ih, i)| (ih, i.name.as_str(), i.version.as_str())),
                    )
                };
                match ih
                    .map_err(anyhow::Error::msg)
                    .and_then(|ih| self.mark_installed(&ih, "reported by the device's installer"))
                {
                    Ok(i) => Response::done(format!("{}@{} marked installed", i.name, i.version)),
                    Err(e) => Response::failed(format!("{e:#}")),
                }
            }
        }
    }
}

impl Agent {
    /// Applies `change` to the named unfinished download (all when `spec`
    /// is `None`) and saves `active.json`.
    fn change_downloads(&self, spec: Option<&str>, verb: &str, change: impl Fn(&mut ActiveRelease)) -> Response {
        let mut active = self.active.lock().unwrap();
        let targets: Vec<InfoHash> = match spec {
            Some(spec) => {
                match resolve_release(
                    spec,
                    active
                        .values()
                        .map(|a| (&a.info_hash, a.name.as_str(), a.version.as_str())),
                ) {
                    Ok(ih) => vec![ih],
                    Err(e) => return Response::failed(e),
                }
            }
            None => active.keys().copied().collect(),
        };
        let mut changed = Vec::new();
        for ih in &targets {
            let Some(a) = active.get_mut(ih) else { continue };
            if !matches!(a.phase, Phase::Checking | Phase::Downloading) {
                if spec.is_some() {
                    return Response::failed(format!(
                        "{} is {} already; only unfinished downloads can be {verb}",
                        a.label(),
                        a.state_label()
                    ));
                }
                continue;
            }
            change(a);
            changed.push(a.label());
        }
        drop(active);
        self.save_active();
        if changed.is_empty() {
            return Response::failed(format!("no unfinished download to be {verb}"));
        }
        Response::done(format!("{verb}: {}", changed.join(", ")))
    }
}

#[cfg(test)]
mod seeding_rule_tests {
    use super::*;

    #[test]
    fn policy_floor_and_supersession() {
        let f = |installed, superseded, uploaded, secs| SeedingFacts {
            installed,
            superseded,
            uploaded,
            size: 1000,
            seeding_for: Duration::from_secs(secs),
        };
        let default = PolicySettings::default();
        assert!(
            !should_stop_seeding(&f(true, false, 0, 10), &default),
            "seeded until superseded"
        );
        assert!(
            !should_stop_seeding(&f(false, true, 0, 10), &default),
            "never before installation"
        );
        assert!(should_stop_seeding(&f(true, true, 0, 10), &default));
        let ratio = PolicySettings {
            seed_ratio: Some(1.0),
            ..Default::default()
        };
        assert!(
            !should_stop_seeding(&f(true, true, 999, 10), &ratio),
            "ratio floor holds even when superseded"
        );
        assert!(
            should_stop_seeding(&f(true, false, 1000, 10), &ratio),
            "ratio met and installed"
        );
        let max = PolicySettings {
            seed_ratio: Some(5.0),
            seed_max_secs: Some(60),
            ..Default::default()
        };
        assert!(should_stop_seeding(&f(false, false, 0, 60), &max), "ceiling wins");
    }
}
