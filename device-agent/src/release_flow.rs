//! The life of one release on this device as a sans-IO state machine, in
//! the shape of quinn-proto's `Connection`: [`ReleaseFlow`] never touches
//! the network, the disk, librqbit or a clock. It is fed events through its
//! `handle_*` methods (the answer to the last action, a torrent sample, a
//! verdict) and says what to do next through [`ReleaseFlow::poll_action`].
//! The agent ([`crate::agent`]) performs the actions with the tracker
//! client, the librqbit session ([`crate::download`]) and the state files,
//! and feeds the results back, so a test can drive a release through every
//! phase without a network.
//!
//! Phases ([`FlowPhase`]), with the action that leaves each and the event
//! that answers it:
//!
//! | phase | actions | answered by |
//! |---|---|---|
//! | `Offered` | [`Action::FetchRelease`], [`Action::Track`], [`Action::CheckManifest`] | [`ReleaseFlow::handle_release`], [`ReleaseFlow::handle_tracked`], [`ReleaseFlow::handle_manifest`] |
//! | `ManifestChecked` | [`Action::CheckStorage`] | [`ReleaseFlow::handle_policy`] |
//! | `PolicyChecked` | [`Action::FetchTorrent`] | [`ReleaseFlow::handle_torrent`] |
//! | `Downloading` | [`Action::StartDownload`], [`Action::FetchOrigins`], then every [`SAMPLE_INTERVAL`] a sample; [`Action::PauseDownload`], [`Action::ResumeDownload`], [`Action::StartHttpFallback`] | [`ReleaseFlow::handle_started`], [`ReleaseFlow::handle_origins`], [`ReleaseFlow::handle_progress`], [`ReleaseFlow::handle_fallback`], [`ReleaseFlow::handle_download_error`] |
//! | `Verifying` | [`Action::Verify`], [`Action::FetchOrigins`] (fresh origin list for the final count) | [`ReleaseFlow::handle_verified`], [`ReleaseFlow::handle_origins`] |
//! | `Installing` | [`Action::RecordVerified`], [`Action::RunInstallHook`] | [`ReleaseFlow::handle_install`] |
//! | `Seeding` (end) | [`Action::RecordHistory`], [`Action::MarkInstalled`], [`Action::Report`], [`Action::AnnounceCompleted`], [`Action::StartSeeding`] | — |
//! | `Failed`, `Rejected`, `Cancelled` (ends) | [`Action::DeleteDownload`], [`Action::Finish`], [`Action::Report`] | — |
//!
//! [`ReleaseFlow::handle_state_error`] (a state file could not be written)
//! ends any phase at once with no further action.
//!
//! Also here, as pure functions of their inputs: the manifest rule
//! ([`check_manifest`]), the telemetry report constructor
//! ([`telemetry_report`]) and the download speed meter ([`SpeedMeter`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ota_proto::api::{Release, TelemetryReport};
use ota_proto::manifest::ManifestError;
use ota_proto::InfoHash;

use crate::accounting::split_by_source;
use crate::download_state::{Installed, Outcome, Phase, SourceTotals};
use crate::http_fallback::StallWatch;
use crate::policy::Blocked;
use crate::reconnect::ReconnectWatch;

/// How often the driver samples a running download
/// ([`ReleaseFlow::handle_progress`]).
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// The user cancelled the download (its data is deleted).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("cancelled by the user")]
pub struct Cancelled;

/// Where a release is in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowPhase {
    /// Named by a push, a poll, a catch-up or `active.json`; the release
    /// record and its manifest are being fetched and checked.
    Offered,
    /// The manifest (or, with no key pinned, the release record) is accepted;
    /// the storage policy is being checked.
    ManifestChecked,
    /// The release fits; its `.torrent` is being fetched.
    PolicyChecked,
    /// The torrent is in the session (running, paused, or its missing pieces
    /// coming over the HTTP fallback).
    Downloading,
    /// Whole-file SHA-256 check and final byte count.
    Verifying,
    /// Verified; the install hook is running.
    Installing,
    /// Verified (and installed by the hook, if it succeeded); offered to
    /// other devices. An end.
    Seeding,
    /// The release record, the torrent, the download, the check or a state
    /// file failed. An end.
    Failed,
    /// The manifest was refused; nothing was downloaded. An end.
    Rejected,
    /// The user cancelled; the partial data is deleted. An end.
    Cancelled,
}

impl FlowPhase {
    /// Whether the flow is over (it yields no new action after its last ones).
    pub fn is_end(self) -> bool {
        matches!(
            self,
            FlowPhase::Seeding | FlowPhase::Failed | FlowPhase::Rejected | FlowPhase::Cancelled
        )
    }
}

/// What a flow needs to know about the agent.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// This device's id (telemetry reports).
    pub device_id: String,
    /// `STATE_DIR/downloads`: the package lands in
    /// `downloads/INFO_HASH/NAME` (the hex info hash).
    pub downloads_dir: PathBuf,
    /// Longest a download may run, paused time not counted.
    pub download_timeout: Duration,
    /// HTTP fallback after peers delivered no payload byte for this long
    /// (for releases with an `http_url`); `None`: no fallback.
    pub http_fallback_after: Option<Duration>,
    /// Client-server transport: fetch the whole package from the release's
    /// `http_url` as soon as the torrent is added, without waiting for peers
    /// (the `client-server` mode of the flash-crowd experiments; the torrent
    /// is only used afterwards to check the pieces and seed). Needs
    /// `http_fallback_after` set (the fallback on) and an `http_url`.
    pub http_only: bool,
    /// Drop and re-make every peer connection after the download made no
    /// progress for this long ([`crate::reconnect`]); `None`: never.
    pub reconnect_after: Option<Duration>,
    /// Whether an install hook is configured.
    pub install_hook: bool,
}

/// librqbit's state of the torrent, as far as the flow cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorrentState {
    /// The initial piece check is running (its progress counts bytes checked).
    Initializing,
    /// Downloading or seeding.
    Live,
    /// Paused.
    Paused,
    /// Anything else (an error state: see [`Sample::error`]).
    Other,
}

/// One look at a running download, taken every [`SAMPLE_INTERVAL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When it was taken.
    pub now: Instant,
    /// The torrent's state.
    pub state: TorrentState,
    /// librqbit's error, if the torrent failed.
    pub error: Option<String>,
    /// Whether every piece is there and verified (SHA-1).
    pub finished: bool,
    /// librqbit's progress: verified bytes (bytes checked while initializing).
    pub progress_bytes: u64,
    /// Package size, bytes.
    pub total_bytes: u64,
    /// Payload bytes uploaded by the torrent.
    pub uploaded_bytes: u64,
    /// Payload bytes fetched per peer (`ip:port`) in the current live
    /// period; `None` while the torrent is not live.
    pub per_peer: Option<Vec<(String, u64)>>,
    /// Peers (`ip:port`) whose connection is up; `None` while the torrent
    /// is not live.
    pub live_peers: Option<Vec<String>>,
    /// Some pause reason holds (user or policy) in `active.json`.
    pub pause_requested: bool,
    /// The user asked to cancel.
    pub cancel_requested: bool,
}

/// Progress of a running download, for `active.json`, the CLI and the bar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchProgress {
    /// Verified bytes on disk.
    pub progress_bytes: u64,
    /// Package size, bytes.
    pub total_bytes: u64,
    /// Verified bytes per second over the last ~3 s.
    pub speed_bps: u64,
    /// Payload bytes received per source, over pauses and earlier runs.
    pub received: SourceTotals,
    /// Payload bytes uploaded during the current live period.
    pub uploaded: u64,
    /// Whether librqbit has the torrent paused.
    pub paused: bool,
}

impl FetchProgress {
    /// Every byte is on disk: the entry shows `verifying`.
    pub fn complete(&self) -> bool {
        self.total_bytes > 0 && self.progress_bytes >= self.total_bytes
    }
}

/// Result of one finished, verified download.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadOutcome {
    /// Where the verified package is.
    pub path: PathBuf,
    /// Payload bytes from the origin over BitTorrent.
    pub bytes_from_origin: u64,
    /// Payload bytes from other devices.
    pub bytes_from_peers: u64,
    /// Of `bytes_from_peers`, bytes from devices at LAN addresses.
    pub bytes_from_lan_peers: u64,
    /// Of `bytes_from_peers`, bytes from devices at internet addresses.
    pub bytes_from_internet_peers: u64,
    /// Payload bytes from the origin's plain-HTTP path (fallback), verified per piece.
    pub bytes_from_origin_http: u64,
    /// Payload bytes sent to other peers so far.
    pub bytes_uploaded: u64,
    /// Wall time of the download and check, ms.
    pub duration_ms: u64,
}

impl DownloadOutcome {
    /// The bytes received per source.
    pub fn received(&self) -> SourceTotals {
        SourceTotals {
            origin_bittorrent: self.bytes_from_origin,
            peers: self.bytes_from_peers,
            origin_http: self.bytes_from_origin_http,
            lan_peers: self.bytes_from_lan_peers,
            internet_peers: self.bytes_from_internet_peers,
        }
    }
}

/// A change to the release's `active.json` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The manifest is accepted: `manifest_checked`, phase `downloading`.
    ManifestChecked,
    /// Download progress (phase `verifying` once [`FetchProgress::complete`]).
    Progress(FetchProgress),
    /// Verified: the final bytes per source, progress at `size`, speed 0, no
    /// pause reason, and `phase` (`installing` with a hook, else `seeding`).
    Verified {
        /// Bytes received per source.
        received: SourceTotals,
        /// Package size.
        size: u64,
        /// The new phase.
        phase: Phase,
    },
    /// Phase `seeding`.
    Seeding,
}

/// What the agent must do next for the release.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask the tracker for the release record; answer with
    /// [`ReleaseFlow::handle_release`].
    FetchRelease,
    /// Enter the release in `active.json` in phase `checking` (a new entry,
    /// paused when a device policy blocks downloads, or the one an earlier
    /// run left); answer with [`ReleaseFlow::handle_tracked`] and the bytes
    /// that entry counted.
    Track {
        /// Package name.
        name: String,
        /// Version.
        version: String,
        /// Size, bytes.
        size: u64,
    },
    /// Check the release's manifest ([`check_manifest`]); answer with
    /// [`ReleaseFlow::handle_manifest`].
    CheckManifest(Box<Release>),
    /// Change the `active.json` entry (and save it).
    Update(Update),
    /// Check the storage policy for `size` more bytes; answer with
    /// [`ReleaseFlow::handle_policy`].
    CheckStorage {
        /// Package size, bytes.
        size: u64,
    },
    /// Fetch the `.torrent` from the tracker; answer with
    /// [`ReleaseFlow::handle_torrent`].
    FetchTorrent,
    /// Add the torrent to the session (paused while a pause reason holds);
    /// answer with [`ReleaseFlow::handle_started`], or
    /// [`ReleaseFlow::handle_download_error`] when librqbit refuses it.
    StartDownload {
        /// The `.torrent` file.
        torrent: Vec<u8>,
        /// Added again after the HTTP fallback filled the missing pieces
        /// (librqbit's initial check finds them).
        after_fallback: bool,
    },
    /// Ask the tracker for the origin's peer-wire addresses (to tell origin
    /// bytes from peer bytes); answer with [`ReleaseFlow::handle_origins`]
    /// and the torrent's per-peer bytes.
    FetchOrigins,
    /// Pause the torrent (librqbit keeps its verified pieces); on failure
    /// call [`ReleaseFlow::handle_download_error`].
    PauseDownload,
    /// Resume the torrent; on failure call [`ReleaseFlow::handle_download_error`].
    ResumeDownload,
    /// Drop and re-make every peer connection after a stall: pause, then
    /// resume the torrent ([`crate::reconnect`]); on failure call
    /// [`ReleaseFlow::handle_download_error`].
    Reconnect,
    /// Take the torrent out of the session (its file stays; on failure call
    /// [`ReleaseFlow::handle_download_error`]), fetch its missing pieces
    /// over HTTP with SHA-1 checks ([`crate::http_fallback::fill_missing`])
    /// and answer with [`ReleaseFlow::handle_fallback`].
    StartHttpFallback {
        /// The release's `http_url`.
        url: String,
        /// The release's ETag (`If-Match`).
        etag: Option<String>,
        /// The `.torrent` file (piece hashes).
        torrent: Vec<u8>,
        /// The package file.
        file: PathBuf,
        /// The delay without payload that triggered it (for the log).
        after: Duration,
    },
    /// Remove the torrent from the session if it is there and delete the
    /// release's folder: nothing of it is kept.
    DeleteDownload,
    /// SHA-256 check of the package; answer with
    /// [`ReleaseFlow::handle_verified`].
    Verify {
        /// The package file.
        path: PathBuf,
        /// Expected SHA-256, hex.
        sha256: String,
    },
    /// Record the verified release in `installed.json`; when that fails,
    /// call [`ReleaseFlow::handle_state_error`].
    RecordVerified {
        /// The record.
        installed: Installed,
        /// What the download brought.
        outcome: DownloadOutcome,
    },
    /// Run the install hook on the package; answer with
    /// [`ReleaseFlow::handle_install`].
    RunInstallHook {
        /// The verified package.
        path: PathBuf,
    },
    /// Add a line to `history.json` (the entry stays in `active.json`).
    RecordHistory {
        /// How it ended.
        outcome: Outcome,
        /// Detail.
        reason: Option<String>,
        /// Bytes received per source.
        received: SourceTotals,
    },
    /// Mark the release installed ([`crate::agent::Agent::mark_installed`]);
    /// when that fails, call [`ReleaseFlow::handle_state_error`].
    MarkInstalled {
        /// History detail.
        detail: String,
    },
    /// Send a telemetry report.
    Report(Box<TelemetryReport>),
    /// Announce `completed` (librqbit never sends it), so the tracker hands
    /// this device out as a seeder at once.
    AnnounceCompleted {
        /// Bytes uploaded.
        uploaded: u64,
        /// Bytes downloaded (the size).
        downloaded: u64,
    },
    /// Keep seeding, re-sending `report` with the upload counter and
    /// stopping when the seeding rule says so.
    StartSeeding {
        /// The release's report.
        report: Box<TelemetryReport>,
        /// Package size.
        size: u64,
    },
    /// The release is over on this device: out of `active.json`, into
    /// `history.json`.
    Finish {
        /// How it ended.
        outcome: Outcome,
        /// Why.
        reason: String,
    },
}

/// The event the flow waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Release,
    Tracked,
    Manifest,
    Storage,
    Torrent,
    Started,
    Restarted,
    Origins,
    Sample,
    Fallback,
    Verified,
    FinalOrigins,
    Install,
    Nothing,
}

/// Counters of the running download.
#[derive(Debug)]
struct Download {
    /// When the download started (handle_torrent).
    started: Instant,
    /// Origin peer-wire addresses.
    origins: Vec<String>,
    /// Bytes per source of earlier runs and finished live periods.
    acc: SourceTotals,
    /// Bytes per source of the current live period.
    live_now: SourceTotals,
    speed: SpeedMeter,
    /// Unpaused time so far.
    active: Duration,
    last_sample: Instant,
    /// Armed while the HTTP fallback may still trigger.
    stall: Option<StallWatch>,
    /// Armed while the torrent downloads from peers.
    reconnect: Option<ReconnectWatch>,
    /// Bytes from device peers when they last grew, and the verified bytes
    /// then: while an origin link is live, verified bytes growing past it
    /// with no peer bytes is the missing-`have` stall hidden by the origin.
    peer_mark: (u64, u64),
    /// Verified bytes and when they last grew.
    verified_mark: (u64, Instant),
    /// Upload counter at the finishing sample.
    uploaded: u64,
}

/// One release's flow on this device (see the [module docs](self)).
#[derive(Debug)]
pub struct ReleaseFlow {
    info_hash: InfoHash,
    config: FlowConfig,
    phase: FlowPhase,
    wait: Wait,
    actions: VecDeque<Action>,
    release: Option<Release>,
    earlier: SourceTotals,
    sha256: String,
    torrent: Vec<u8>,
    download: Option<Download>,
    outcome: Option<DownloadOutcome>,
    report: Option<TelemetryReport>,
    installed: Option<Installed>,
    end: Option<Result<Installed, String>>,
}

impl ReleaseFlow {
    /// A flow for the release `info_hash`, in phase [`FlowPhase::Offered`];
    /// its first action is [`Action::FetchRelease`].
    pub fn new(info_hash: InfoHash, config: FlowConfig) -> Self {
        ReleaseFlow {
            info_hash,
            config,
            phase: FlowPhase::Offered,
            wait: Wait::Release,
            actions: VecDeque::from([Action::FetchRelease]),
            release: None,
            earlier: SourceTotals::default(),
            sha256: String::new(),
            torrent: Vec::new(),
            download: None,
            outcome: None,
            report: None,
            installed: None,
            end: None,
        }
    }

    /// The release's info hash.
    pub fn info_hash(&self) -> &InfoHash {
        &self.info_hash
    }

    /// The current phase.
    pub fn phase(&self) -> FlowPhase {
        self.phase
    }

    /// The release record, once fetched.
    pub fn release(&self) -> Option<&Release> {
        self.release.as_ref()
    }

    /// The next thing to do, oldest first; `None` when the flow waits for
    /// an event (or is over).
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the flow waits for a [`Sample`] of the running download
    /// (every [`SAMPLE_INTERVAL`], [`ReleaseFlow::handle_progress`]).
    pub fn wants_sample(&self) -> bool {
        self.wait == Wait::Sample
    }

    /// How it ended: the installed (verified) release, or the error text
    /// (also in the history and, from the manifest check on, the telemetry).
    /// `None` while it runs.
    pub fn end(&self) -> Option<&Result<Installed, String>> {
        self.end.as_ref()
    }

    /// Answer to [`Action::FetchRelease`]: the release record, or the
    /// tracker's error (the flow fails; history, no report). A record for
    /// another info hash than the one asked for, or whose name is not a
    /// plain file name ([`check_release_record`]), is refused at once
    /// ([`FlowPhase::Rejected`]: history, report, never started again on its
    /// own), before anything is written.
    pub fn handle_release(&mut self, result: Result<Release, String>) {
        if !self.expect(Wait::Release) {
            return;
        }
        match result {
            Ok(release) if check_release_record(&release, &self.info_hash).is_err() => {
                let e = check_release_record(&release, &self.info_hash).unwrap_err();
                let reason = format!("release record refused: {e}");
                self.push(Action::Finish {
                    outcome: Outcome::Rejected,
                    reason: reason.clone(),
                });
                self.push(Action::Report(Box::new(self.error_report(&reason))));
                self.end_with(FlowPhase::Rejected, reason);
            }
            Ok(release) => {
                self.push(Action::Track {
                    name: release.name.clone(),
                    version: release.version.clone(),
                    size: release.size,
                });
                self.release = Some(release);
                self.wait = Wait::Tracked;
            }
            Err(e) => self.end_quietly(e),
        }
    }

    /// Answer to [`Action::Track`]: the bytes per source the entry counted
    /// before (an earlier run), added to this download's.
    pub fn handle_tracked(&mut self, earlier: SourceTotals) {
        if !self.expect(Wait::Tracked) {
            return;
        }
        self.earlier = earlier;
        let release = self.release.clone().expect("a tracked flow has its release");
        self.push(Action::CheckManifest(Box::new(release)));
        self.wait = Wait::Manifest;
    }

    /// Answer to [`Action::CheckManifest`]: the SHA-256 the package must
    /// have, or why the manifest is refused (the flow ends
    /// [`FlowPhase::Rejected`]: history, report, and the release is never
    /// started again on its own).
    pub fn handle_manifest(&mut self, verdict: Result<String, ManifestError>) {
        if !self.expect(Wait::Manifest) {
            return;
        }
        match verdict {
            Ok(sha256) => {
                self.sha256 = sha256;
                self.phase = FlowPhase::ManifestChecked;
                self.push(Action::Update(Update::ManifestChecked));
                self.push(Action::CheckStorage { size: self.size() });
                self.wait = Wait::Storage;
            }
            Err(e) => {
                let reason = format!("manifest rejected: {e}");
                self.push(Action::Finish {
                    outcome: Outcome::Rejected,
                    reason: reason.clone(),
                });
                self.push(Action::Report(Box::new(self.error_report(&reason))));
                self.end_with(FlowPhase::Rejected, reason);
            }
        }
    }

    /// Answer to [`Action::CheckStorage`]: whether the package fits (else
    /// the flow fails before any byte is fetched: report, history).
    pub fn handle_policy(&mut self, verdict: Result<(), Blocked>) {
        if !self.expect(Wait::Storage) {
            return;
        }
        match verdict {
            Ok(()) => {
                self.phase = FlowPhase::PolicyChecked;
                self.push(Action::FetchTorrent);
                self.wait = Wait::Torrent;
            }
            Err(blocked) => {
                let reason = format!("storage: {blocked}");
                self.push(Action::Report(Box::new(self.error_report(&reason))));
                self.push(Action::Finish {
                    outcome: Outcome::Failed,
                    reason: reason.clone(),
                });
                self.end_with(FlowPhase::Failed, reason);
            }
        }
    }

    /// Answer to [`Action::FetchTorrent`] at `now`: the `.torrent` (the
    /// download starts) or the tracker's error (the flow fails; history, no
    /// report). A torrent that is not the release's ([`check_torrent`]:
    /// another info hash, name or length) fails the flow with a report
    /// before anything is written.
    pub fn handle_torrent(&mut self, now: Instant, result: Result<Vec<u8>, String>) {
        if !self.expect(Wait::Torrent) {
            return;
        }
        let (name, size) = self
            .release
            .as_ref()
            .map(|r| (r.name.clone(), r.size))
            .unwrap_or_default();
        match result {
            Ok(torrent) if check_torrent(&torrent, &self.info_hash, &name, size).is_err() => {
                let e = check_torrent(&torrent, &self.info_hash, &name, size).unwrap_err();
                let reason = format!("torrent refused: {e}");
                self.push(Action::Report(Box::new(self.error_report(&reason))));
                self.push(Action::Finish {
                    outcome: Outcome::Failed,
                    reason: reason.clone(),
                });
                self.end_with(FlowPhase::Failed, reason);
            }
            Ok(torrent) => {
                self.torrent = torrent;
                self.phase = FlowPhase::Downloading;
                self.download = Some(Download {
                    started: now,
                    origins: Vec::new(),
                    acc: self.earlier,
                    live_now: SourceTotals::default(),
                    speed: SpeedMeter::default(),
                    active: Duration::ZERO,
                    last_sample: now,
                    stall: None,
                    reconnect: None,
                    peer_mark: (0, 0),
                    verified_mark: (0, now),
                    uploaded: 0,
                });
                self.push(Action::StartDownload {
                    torrent: self.torrent.clone(),
                    after_fallback: false,
                });
                self.wait = Wait::Started;
            }
            Err(e) => self.end_quietly(e),
        }
    }

    /// Answer to [`Action::StartDownload`] at `now`: the torrent is in the
    /// session. The first time, the origin list is asked for; after the
    /// HTTP fallback, sampling goes on.
    pub fn handle_started(&mut self, now: Instant) {
        match self.wait {
            Wait::Started => {
                let fallback = self.fallback();
                let reconnect = self.reconnect_watch(0, now);
                if let Some(d) = self.download.as_mut() {
                    d.stall = fallback.map(|(after, _)| StallWatch::new(after, 0, now));
                    d.reconnect = reconnect;
                }
                self.push(Action::FetchOrigins);
                self.wait = Wait::Origins;
            }
            Wait::Restarted => self.wait = Wait::Sample,
            _ => {}
        }
    }

    /// Answer to [`Action::FetchOrigins`] at `now`: the origin's peer-wire
    /// addresses (empty when the tracker could not be asked) and the
    /// torrent's per-peer fetched bytes. At the start of the download the
    /// list is taken as is and sampling starts; after verification a
    /// non-empty list replaces the first one, the bytes are counted a last
    /// time and the release is recorded.
    pub fn handle_origins(&mut self, now: Instant, origins: Vec<String>, per_peer: Option<Vec<(String, u64)>>) {
        match self.wait {
            Wait::Origins => {
                if let Some(d) = self.download.as_mut() {
                    d.origins = origins;
                    d.last_sample = now;
                }
                self.wait = Wait::Sample;
                if self.config.http_only {
                    if let Some((after, url)) = self.fallback() {
                        if let Some(d) = self.download.as_mut() {
                            d.stall = None;
                        }
                        self.start_fallback(url, self.package_path(), after);
                    }
                }
            }
            Wait::FinalOrigins => {
                if let Some(d) = self.download.as_mut() {
                    if !origins.is_empty() {
                        d.origins = origins;
                    }
                    if let Some(p) = &per_peer {
                        d.live_now = split(p, &d.origins);
                    }
                }
                self.verified(now);
            }
            _ => {}
        }
    }

    /// A sample of the running download (every [`SAMPLE_INTERVAL`]):
    /// progress, pause and resume, cancel, librqbit's errors, the timeout
    /// on unpaused time, and the HTTP fallback after peers delivered
    /// nothing for the configured delay (once; a pause re-arms it). A
    /// finished torrent goes to [`FlowPhase::Verifying`].
    pub fn handle_progress(&mut self, s: Sample) {
        if !self.expect(Wait::Sample) {
            return;
        }
        let fallback = self.fallback();
        let timeout = self.config.download_timeout;
        let path = self.package_path();
        let fresh_reconnect = self.reconnect_watch(s.progress_bytes, s.now);
        let reconnect_after = self.config.reconnect_after;
        let Some(d) = self.download.as_mut() else { return };
        if let Some(p) = &s.per_peer {
            d.live_now = split(p, &d.origins);
        }
        if s.cancel_requested {
            return self.fail_download(Outcome::Cancelled, Cancelled.to_string(), true);
        }
        if let Some(e) = &s.error {
            return self.fail_download(Outcome::Failed, format!("download failed: {e}"), true);
        }
        let paused = s.state == TorrentState::Paused;
        if !paused {
            d.active += s.now.saturating_duration_since(d.last_sample);
        }
        d.last_sample = s.now;
        // While librqbit runs its initial piece check, its `progress_bytes`
        // counts bytes *checked*, not bytes verified: reporting it would show
        // a fresh download as complete (and mark it verifying) before a byte
        // has arrived.
        let verified = if s.state == TorrentState::Initializing {
            0
        } else {
            s.progress_bytes
        };
        let progress = FetchProgress {
            progress_bytes: verified,
            total_bytes: s.total_bytes,
            speed_bps: d.speed.sample(s.now, verified),
            received: d.acc.plus(&d.live_now),
            uploaded: s.uploaded_bytes,
            paused,
        };
        self.actions.push_back(Action::Update(Update::Progress(progress)));
        if s.finished {
            d.uploaded = s.uploaded_bytes;
            self.phase = FlowPhase::Verifying;
            self.wait = Wait::Verified;
            let sha256 = self.sha256.clone();
            self.push(Action::Verify { path, sha256 });
            return;
        }
        if paused {
            // A pause is not a stall: the clock restarts on resume.
            d.stall = fallback
                .as_ref()
                .map(|(after, _)| StallWatch::new(*after, s.progress_bytes, s.now));
            d.reconnect = fresh_reconnect;
        } else if let (Some(w), Some((after, url))) = (d.stall.as_mut(), fallback) {
            if s.state == TorrentState::Live && w.stalled(s.progress_bytes, s.now) {
                d.stall = None;
                d.acc = d.acc.plus(&d.live_now);
                d.live_now = SourceTotals::default();
                self.start_fallback(url, path, after);
                return;
            }
        }
        // librqbit's missing `have` shows as live connections to devices
        // that deliver nothing. Without a live origin connection that is a
        // stall of the verified bytes. With one, the origin's pieces hide
        // it (a slow origin, held back by its cost/speed dial, keeps every
        // device progressing while the devices never learn of each other's
        // pieces), so the watch follows the bytes from devices, and is due
        // only while the origin delivers (verified bytes grew since the
        // devices last delivered, and within 4 reconnect delays): a stall
        // of both is a network or origin problem, not helped by
        // reconnecting (and a reconnect drops the pieces in flight).
        let (device_links, origin_link) = s.live_peers.as_ref().map_or((false, false), |live| {
            (
                live.iter().any(|a| !d.origins.contains(a)),
                live.iter().any(|a| d.origins.contains(a)),
            )
        });
        let peer_bytes = d.acc.plus(&d.live_now).peers;
        if peer_bytes != d.peer_mark.0 {
            d.peer_mark = (peer_bytes, verified);
        }
        if verified != d.verified_mark.0 {
            d.verified_mark = (verified, s.now);
        }
        let origin_delivers = verified > d.peer_mark.1
            && reconnect_after.is_some_and(|a| s.now.saturating_duration_since(d.verified_mark.1) < a * 4);
        let (measure, eligible) = if origin_link {
            (peer_bytes, device_links && origin_delivers)
        } else {
            (verified, device_links)
        };
        if let (false, TorrentState::Live, Some(w)) = (s.pause_requested, s.state, d.reconnect.as_mut()) {
            if eligible && w.due(measure, s.now) {
                // The live period's per-peer counters end with the connections.
                d.acc = d.acc.plus(&d.live_now);
                d.live_now = SourceTotals::default();
                d.peer_mark.1 = verified;
                self.actions.push_back(Action::Reconnect);
                return;
            }
        }
        match (s.pause_requested, s.state) {
            (true, TorrentState::Live) => {
                d.acc = d.acc.plus(&d.live_now);
                d.live_now = SourceTotals::default();
                self.actions.push_back(Action::PauseDownload);
            }
            (false, TorrentState::Paused) => self.actions.push_back(Action::ResumeDownload),
            _ => {}
        }
        if d.active > timeout {
            self.fail_download(
                Outcome::Failed,
                format!("download did not finish within {} s", timeout.as_secs()),
                true,
            );
        }
    }

    /// Answer to [`Action::StartHttpFallback`]: the verified bytes written
    /// from HTTP (the torrent is added again), or the error (the flow fails
    /// and nothing is kept).
    pub fn handle_fallback(&mut self, result: Result<u64, String>) {
        if !self.expect(Wait::Fallback) {
            return;
        }
        match result {
            Ok(n) => {
                if let Some(d) = self.download.as_mut() {
                    d.acc.origin_http += n;
                }
                self.push(Action::StartDownload {
                    torrent: self.torrent.clone(),
                    after_fallback: true,
                });
                self.wait = Wait::Restarted;
            }
            Err(e) => self.fail_download(Outcome::Failed, format!("HTTP fallback failed: {e}"), true),
        }
    }

    /// An operation on the torrent failed (librqbit refused it, could not
    /// pause or resume it, or take it out for the HTTP fallback): the flow
    /// fails with `reason` (report, history); the files are left as they are.
    pub fn handle_download_error(&mut self, reason: String) {
        if self.phase == FlowPhase::Downloading {
            self.fail_download(Outcome::Failed, reason, false);
        }
    }

    /// Answer to [`Action::Verify`]: the package has the expected SHA-256
    /// (the bytes are counted a last time), or why not (the flow fails and
    /// no copy is kept: it is never offered for installation).
    pub fn handle_verified(&mut self, result: Result<(), String>) {
        if !self.expect(Wait::Verified) {
            return;
        }
        match result {
            Ok(()) => {
                self.push(Action::FetchOrigins);
                self.wait = Wait::FinalOrigins;
            }
            Err(e) => {
                let name = self.release.as_ref().map(|r| r.name.clone()).unwrap_or_default();
                self.fail_download(Outcome::Failed, format!("package {name} refused: {e}"), true);
            }
        }
    }

    /// Answer to [`Action::RunInstallHook`]: the hook's result. Either way
    /// the release seeds; a failure is in the history and the report.
    pub fn handle_install(&mut self, result: Result<(), String>) {
        if !self.expect(Wait::Install) {
            return;
        }
        self.seed(Some(result));
    }

    /// A state file could not be written (`installed.json` for
    /// [`Action::RecordVerified`] or [`Action::MarkInstalled`]): the flow
    /// ends [`FlowPhase::Failed`] at once, the actions still queued are
    /// dropped.
    pub fn handle_state_error(&mut self, reason: String) {
        self.actions.clear();
        self.phase = FlowPhase::Failed;
        self.wait = Wait::Nothing;
        self.end = Some(Err(reason));
    }

    /// Asks for the HTTP fetch of `file`'s missing pieces from `url` and
    /// waits for [`ReleaseFlow::handle_fallback`].
    fn start_fallback(&mut self, url: String, file: PathBuf, after: Duration) {
        let etag = self.release.as_ref().and_then(|r| r.etag.clone());
        self.wait = Wait::Fallback;
        self.push(Action::StartHttpFallback {
            url,
            etag,
            torrent: self.torrent.clone(),
            file,
            after,
        });
    }

    fn expect(&self, wait: Wait) -> bool {
        self.wait == wait
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn size(&self) -> u64 {
        self.release.as_ref().map(|r| r.size).unwrap_or(0)
    }

    /// The fallback delay and URL when the fallback is on and the release has one.
    /// A reconnect watch for a download from peers (none in client-server mode).
    fn reconnect_watch(&self, bytes: u64, now: Instant) -> Option<ReconnectWatch> {
        let after = self.config.reconnect_after.filter(|_| !self.config.http_only)?;
        Some(ReconnectWatch::new(after, bytes, now))
    }

    fn fallback(&self) -> Option<(Duration, String)> {
        self.config
            .http_fallback_after
            .zip(self.release.as_ref().and_then(|r| r.http_url.clone()))
    }

    fn package_path(&self) -> PathBuf {
        let name = self.release.as_ref().map(|r| r.name.as_str()).unwrap_or_default();
        self.config.downloads_dir.join(self.info_hash.to_hex()).join(name)
    }

    fn error_report(&self, reason: &str) -> TelemetryReport {
        TelemetryReport {
            error: Some(report_error(reason)),
            ..telemetry_report(&self.config.device_id, &self.info_hash, &SourceTotals::default())
        }
    }

    /// Ends with no report (release record or torrent unavailable).
    fn end_quietly(&mut self, reason: String) {
        self.push(Action::Finish {
            outcome: Outcome::Failed,
            reason: reason.clone(),
        });
        self.end_with(FlowPhase::Failed, reason);
    }

    fn end_with(&mut self, phase: FlowPhase, reason: String) {
        self.phase = phase;
        self.wait = Wait::Nothing;
        self.end = Some(Err(reason));
    }

    /// The download or its check failed: optionally nothing is kept, then
    /// history and a report with the error.
    fn fail_download(&mut self, outcome: Outcome, reason: String, delete: bool) {
        if delete {
            self.push(Action::DeleteDownload);
        }
        self.push(Action::Finish {
            outcome,
            reason: reason.clone(),
        });
        self.push(Action::Report(Box::new(self.error_report(&reason))));
        let phase = if outcome == Outcome::Cancelled {
            FlowPhase::Cancelled
        } else {
            FlowPhase::Failed
        };
        self.end_with(phase, reason);
    }

    /// Verified and counted at `now`: record it, then install or seed.
    fn verified(&mut self, now: Instant) {
        let Some(d) = self.download.as_ref() else { return };
        let Some(release) = self.release.as_ref() else { return };
        let total = d.acc.plus(&d.live_now);
        let outcome = DownloadOutcome {
            path: self.package_path(),
            bytes_from_origin: total.origin_bittorrent,
            bytes_from_peers: total.peers,
            bytes_from_lan_peers: total.lan_peers,
            bytes_from_internet_peers: total.internet_peers,
            bytes_from_origin_http: total.origin_http,
            bytes_uploaded: d.uploaded,
            duration_ms: now.saturating_duration_since(d.started).as_millis() as u64,
        };
        let received = outcome.received();
        let installed = Installed {
            name: release.name.clone(),
            version: release.version.clone(),
            path: outcome.path.clone(),
            sha256: self.sha256.clone(),
            installed_at_ms: None,
        };
        let size = release.size;
        self.report = Some(TelemetryReport {
            bytes_uploaded: outcome.bytes_uploaded,
            duration_ms: outcome.duration_ms,
            verified: true,
            ..telemetry_report(&self.config.device_id, &self.info_hash, &received)
        });
        self.push(Action::RecordVerified {
            installed: installed.clone(),
            outcome: outcome.clone(),
        });
        self.installed = Some(installed);
        self.outcome = Some(outcome.clone());
        if self.config.install_hook {
            self.phase = FlowPhase::Installing;
            self.push(Action::Update(Update::Verified {
                received,
                size,
                phase: Phase::Installing,
            }));
            self.push(Action::RunInstallHook { path: outcome.path });
            self.wait = Wait::Install;
        } else {
            self.push(Action::Update(Update::Verified {
                received,
                size,
                phase: Phase::Seeding,
            }));
            self.seed(None);
        }
    }

    /// The end of a verified release: history, installed mark, report,
    /// `completed` announce, seeding.
    fn seed(&mut self, hook: Option<Result<(), String>>) {
        let (Some(outcome), Some(installed), Some(mut report)) =
            (self.outcome.clone(), self.installed.clone(), self.report.clone())
        else {
            return;
        };
        let hook_error = match &hook {
            Some(Err(e)) => Some(format!("install hook failed: {e}")),
            _ => None,
        };
        self.push(Action::RecordHistory {
            outcome: if hook_error.is_some() {
                Outcome::Failed
            } else {
                Outcome::Finished
            },
            reason: hook_error.clone(),
            received: outcome.received(),
        });
        if matches!(hook, Some(Ok(()))) {
            self.push(Action::MarkInstalled {
                detail: "install hook succeeded".into(),
            });
        }
        report.error = hook_error.as_deref().map(report_error);
        self.push(Action::Update(Update::Seeding));
        self.push(Action::Report(Box::new(report.clone())));
        let size = self.size();
        self.push(Action::AnnounceCompleted {
            uploaded: outcome.bytes_uploaded,
            downloaded: size,
        });
        self.push(Action::StartSeeding {
            report: Box::new(report),
            size,
        });
        self.phase = FlowPhase::Seeding;
        self.wait = Wait::Nothing;
        self.end = Some(Ok(installed));
    }
}

/// Longest error text sent in a telemetry report, bytes (the tracker
/// refuses reports with more than 4096; the history keeps the whole text).
pub const MAX_REPORT_ERROR_BYTES: usize = 1024;

/// `error` cut to at most [`MAX_REPORT_ERROR_BYTES`] (at a character
/// boundary, `…` marking the cut) for a telemetry report.
pub fn report_error(error: &str) -> String {
    if error.len() <= MAX_REPORT_ERROR_BYTES {
        return error.to_string();
    }
    let mut cut = MAX_REPORT_ERROR_BYTES - '…'.len_utf8();
    while !error.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &error[..cut])
}

/// Splits per-peer fetched bytes into origin, LAN-peer and internet-peer bytes.
fn split(per_peer: &[(String, u64)], origins: &[String]) -> SourceTotals {
    let s = split_by_source(per_peer.iter().map(|(a, b)| (a.as_str(), *b)), origins);
    SourceTotals {
        origin_bittorrent: s.origin,
        peers: s.peers,
        origin_http: 0,
        lan_peers: s.lan_peers,
        internet_peers: s.internet_peers,
    }
}

/// A telemetry report of `device` for `info_hash` with the bytes received
/// per source (origin over BitTorrent, LAN and internet peers, origin over
/// HTTP); the other fields at their defaults. The one constructor of the
/// agent's reports.
pub fn telemetry_report(device: &str, info_hash: &InfoHash, received: &SourceTotals) -> TelemetryReport {
    TelemetryReport {
        device: device.to_string(),
        info_hash: *info_hash,
        bytes_from_origin: received.origin_bittorrent,
        bytes_from_peers: received.peers,
        bytes_from_lan_peers: received.lan_peers,
        bytes_from_internet_peers: received.internet_peers,
        bytes_from_origin_http: received.origin_http,
        ..Default::default()
    }
}

/// Checks a release record from the tracker before any of it is used:
/// it is for `requested` (the info hash the agent asked for, which names
/// the download folder) and its name is a plain file name
/// ([`ota_proto::names::check_file_name`]: not empty, no `/`, no `..`, not
/// absolute, no NUL), so `downloads/INFO_HASH/NAME` stays in its folder.
///
/// Errors: the text of the first rule broken.
pub fn check_release_record(release: &Release, requested: &InfoHash) -> Result<(), String> {
    if release.info_hash != *requested {
        return Err(format!(
            "the tracker answered with release {} for {requested}",
            release.info_hash
        ));
    }
    ota_proto::names::check_file_name(&release.name).map_err(|e| format!("package name: {e}"))
}

/// Checks that `torrent` (from the tracker) is the release's: its info
/// hash (SHA-1 of the info dictionary's raw bytes, as librqbit computes it)
/// is `info_hash`, it is a single-file torrent (no `files`, no symlink)
/// whose file is `name` and `size` bytes long. `name` and `size` are the
/// release's, checked against the signed manifest when a key is pinned.
///
/// Errors: the text of the first mismatch, or why the torrent does not parse.
pub fn check_torrent(torrent: &[u8], info_hash: &InfoHash, name: &str, size: u64) -> Result<(), String> {
    let t = librqbit::torrent_from_bytes(torrent).map_err(|e| format!("not a torrent: {e}"))?;
    let got = InfoHash(t.info_hash.0);
    if got != *info_hash {
        return Err(format!("its info hash is {got}, the release's is {info_hash}"));
    }
    let info = &t.info.data;
    if info.files.is_some() || info.symlink_path.is_some() {
        return Err("not a single-file torrent".into());
    }
    let torrent_name = info
        .name
        .as_ref()
        .map(|n| String::from_utf8_lossy(n.as_ref()).into_owned())
        .unwrap_or_default();
    if torrent_name != name {
        return Err(format!("its file is named {torrent_name:?}, the release's is {name:?}"));
    }
    if info.length != Some(size) {
        return Err(format!(
            "its file is {} bytes, the release's is {size}",
            info.length.unwrap_or(0)
        ));
    }
    Ok(())
}

/// The SHA-256 a release's package must have: from its verified manifest
/// when a key is pinned (signed by `key`, for this release, `channel` and
/// `model`, and newer than any `installed` version of the same package —
/// `installed` lists (name, version)), else from the release record.
///
/// Errors: the manifest is missing, does not verify, is for another
/// release, channel or model, names another package name or size than the
/// record ([`ManifestError::Mismatch`]), or is not an upgrade.
pub fn check_manifest<'a>(
    release: &Release,
    key: Option<&ed25519_dalek::VerifyingKey>,
    channel: &str,
    model: &str,
    installed: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String, ManifestError> {
    use ota_proto::manifest::{is_newer_version, verify};
    let Some(key) = key else {
        return Ok(release.sha256.clone());
    };
    let signed = release.manifest.as_ref().ok_or(ManifestError::BadSignature)?;
    let m = verify(signed, key)?;
    m.check_for(&release.info_hash, channel, model)?;
    // The record's name and size become a path and a length: they must be
    // the signed ones.
    if m.name != release.name {
        return Err(ManifestError::Mismatch {
            field: "name",
            manifest: m.name,
            release: release.name.clone(),
        });
    }
    if m.size != release.size {
        return Err(ManifestError::Mismatch {
            field: "size",
            manifest: m.size.to_string(),
            release: release.size.to_string(),
        });
    }
    // Only upgrades: never a version at or below one installed of the same package.
    if let Some((_, newest)) = installed
        .into_iter()
        .find(|(name, version)| *name == m.name && !is_newer_version(&m.version, version))
    {
        return Err(ManifestError::NotNewer {
            offered: m.version,
            installed: newest.to_string(),
        });
    }
    Ok(m.sha256)
}

/// Download speed from (time, verified bytes) samples over a sliding window of ~3 s.
#[derive(Debug, Default)]
pub struct SpeedMeter {
    samples: VecDeque<(Instant, u64)>,
}

impl SpeedMeter {
    /// Window length.
    pub const WINDOW: Duration = Duration::from_secs(3);

    /// Adds a sample and returns the speed in bytes/s over the window
    /// (0 until two samples span some time).
    pub fn sample(&mut self, at: Instant, bytes: u64) -> u64 {
        self.samples.push_back((at, bytes));
        while self.samples.len() > 2 && at.duration_since(self.samples[0].0) > Self::WINDOW {
            self.samples.pop_front();
        }
        let (t0, b0) = self.samples[0];
        let dt = at.duration_since(t0).as_secs_f64();
        if dt <= 0.0 {
            return 0;
        }
        (bytes.saturating_sub(b0) as f64 / dt) as u64
    }
}

#[cfg(test)]
mod tests {
    //! Releases driven through every phase without a network: each test
    //! plays the agent, answering the flow's actions by hand.

    use super::*;
    use ota_proto::manifest::{generate_signing_key, sign, Manifest};

    /// The test release's `.torrent`: `fw.bin`, 1000 bytes in 256-byte pieces.
    fn torrent() -> Vec<u8> {
        let info = ota_proto::metainfo::InfoDict {
            name: "fw.bin".into(),
            length: 1000,
            piece_length: 256,
            pieces: vec![[7; 20]; 4],
            private: true,
        };
        ota_proto::metainfo::torrent_bytes("http://t/announce", &info.to_bytes())
    }

    /// The test release's info hash (its torrent's).
    #[allow(non_snake_case)]
    fn IH() -> InfoHash {
        let info = ota_proto::metainfo::info_from_torrent(&torrent()).unwrap();
        ota_proto::metainfo::info_hash(&info)
    }
    const ORIGIN: &str = "10.0.0.1:6881";
    const PEER: &str = "192.168.1.7:6881";

    fn config(hook: bool) -> FlowConfig {
        FlowConfig {
            device_id: "dev-1".into(),
            downloads_dir: PathBuf::from("/state/downloads"),
            download_timeout: Duration::from_secs(60),
            http_fallback_after: Some(Duration::from_secs(30)),
            http_only: false,
            reconnect_after: None,
            install_hook: hook,
        }
    }

    fn release(http_url: Option<&str>) -> Release {
        Release {
            name: "fw.bin".into(),
            version: "2.0".into(),
            info_hash: IH(),
            size: 1000,
            piece_length: 256,
            sha256: "cd".repeat(32),
            http_url: http_url.map(String::from),
            source: "s3://ota/fw.bin".into(),
            created_at: 1,
            origin_peers: vec![ORIGIN.into()],
            etag: Some("\"e1\"".into()),
            manifest: None,
            rollout_percent: 100,
            origin_goal: None,
        }
    }

    fn package() -> PathBuf {
        PathBuf::from(format!("/state/downloads/{}/fw.bin", IH().to_hex()))
    }

    fn drain(flow: &mut ReleaseFlow) -> Vec<Action> {
        std::iter::from_fn(|| flow.poll_action()).collect()
    }

    fn live(now: Instant, progress: u64, per_peer: &[(&str, u64)]) -> Sample {
        Sample {
            now,
            state: TorrentState::Live,
            error: None,
            finished: progress >= 1000,
            progress_bytes: progress,
            total_bytes: 1000,
            uploaded_bytes: 0,
            per_peer: Some(per_peer.iter().map(|(a, b)| (a.to_string(), *b)).collect()),
            live_peers: Some(per_peer.iter().map(|(a, _)| a.to_string()).collect()),
            pause_requested: false,
            cancel_requested: false,
        }
    }

    /// Drives a fresh flow to a running download (origins fetched) at `t0`,
    /// with `earlier` bytes from an earlier run; checks each step.
    fn downloading(config: FlowConfig, release: Release, earlier: SourceTotals, t0: Instant) -> ReleaseFlow {
        let mut flow = started(config, release, earlier, t0);
        flow.handle_origins(t0, vec![ORIGIN.into()], None);
        assert!(flow.wants_sample());
        assert!(drain(&mut flow).is_empty());
        flow
    }

    /// A flow whose torrent was just added, waiting for the origins.
    fn started(config: FlowConfig, release: Release, earlier: SourceTotals, t0: Instant) -> ReleaseFlow {
        let mut flow = ReleaseFlow::new(IH(), config);
        assert_eq!(flow.phase(), FlowPhase::Offered);
        assert_eq!(drain(&mut flow), [Action::FetchRelease]);
        flow.handle_release(Ok(release.clone()));
        assert_eq!(
            drain(&mut flow),
            [Action::Track {
                name: "fw.bin".into(),
                version: "2.0".into(),
                size: 1000
            }]
        );
        flow.handle_tracked(earlier);
        assert_eq!(drain(&mut flow), [Action::CheckManifest(Box::new(release))]);
        flow.handle_manifest(Ok("cd".repeat(32)));
        assert_eq!(flow.phase(), FlowPhase::ManifestChecked);
        assert_eq!(
            drain(&mut flow),
            [
                Action::Update(Update::ManifestChecked),
                Action::CheckStorage { size: 1000 }
            ]
        );
        flow.handle_policy(Ok(()));
        assert_eq!(flow.phase(), FlowPhase::PolicyChecked);
        assert_eq!(drain(&mut flow), [Action::FetchTorrent]);
        flow.handle_torrent(t0, Ok(torrent()));
        assert_eq!(flow.phase(), FlowPhase::Downloading);
        assert_eq!(
            drain(&mut flow),
            [Action::StartDownload {
                torrent: torrent(),
                after_fallback: false
            }]
        );
        assert!(!flow.wants_sample());
        flow.handle_started(t0);
        assert_eq!(drain(&mut flow), [Action::FetchOrigins]);
        flow
    }

    fn progress_of(actions: &[Action]) -> FetchProgress {
        match actions.first() {
            Some(Action::Update(Update::Progress(p))) => *p,
            other => panic!("expected a progress update first, got {other:?}"),
        }
    }

    fn report_in(actions: &[Action]) -> &TelemetryReport {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Report(r) => Some(&**r),
                _ => None,
            })
            .expect("a report")
    }

    #[test]
    fn a_release_goes_from_offered_to_seeding() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let earlier = SourceTotals {
            origin_bittorrent: 100,
            ..Default::default()
        };
        let mut flow = downloading(config(false), release(None), earlier, t0);

        let a = {
            flow.handle_progress(live(t0 + s(1), 400, &[(ORIGIN, 200), (PEER, 100)]));
            drain(&mut flow)
        };
        let p = progress_of(&a);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!((p.progress_bytes, p.speed_bps, p.paused), (400, 0, false));
        assert_eq!(
            p.received,
            SourceTotals {
                origin_bittorrent: 300,
                peers: 100,
                lan_peers: 100,
                ..Default::default()
            }
        );
        flow.handle_progress(live(t0 + s(2), 700, &[(ORIGIN, 400), (PEER, 200)]));
        assert_eq!(progress_of(&drain(&mut flow)).speed_bps, 300);

        // Finished: verify, then count with a fresh origin list (the peer
        // turned out to be a second origin).
        let mut done = live(t0 + s(3), 1000, &[(ORIGIN, 500), (PEER, 400)]);
        done.uploaded_bytes = 77;
        flow.handle_progress(done);
        let a = drain(&mut flow);
        assert!(progress_of(&a).complete());
        assert_eq!(
            a[1],
            Action::Verify {
                path: package(),
                sha256: "cd".repeat(32)
            }
        );
        assert_eq!(flow.phase(), FlowPhase::Verifying);
        assert!(!flow.wants_sample());
        flow.handle_verified(Ok(()));
        assert_eq!(drain(&mut flow), [Action::FetchOrigins]);
        flow.handle_origins(
            t0 + s(4),
            vec![ORIGIN.into(), PEER.into()],
            Some(vec![(ORIGIN.into(), 500), (PEER.into(), 450)]),
        );

        let received = SourceTotals {
            origin_bittorrent: 1050,
            ..Default::default()
        };
        let installed = Installed {
            name: "fw.bin".into(),
            version: "2.0".into(),
            path: package(),
            sha256: "cd".repeat(32),
            installed_at_ms: None,
        };
        let outcome = DownloadOutcome {
            path: package(),
            bytes_from_origin: 1050,
            bytes_uploaded: 77,
            duration_ms: 4000,
            ..Default::default()
        };
        let report = TelemetryReport {
            device: "dev-1".into(),
            info_hash: IH(),
            bytes_from_origin: 1050,
            bytes_uploaded: 77,
            duration_ms: 4000,
            verified: true,
            ..Default::default()
        };
        assert_eq!(
            drain(&mut flow),
            [
                Action::RecordVerified {
                    installed: installed.clone(),
                    outcome
                },
                Action::Update(Update::Verified {
                    received,
                    size: 1000,
                    phase: Phase::Seeding
                }),
                Action::RecordHistory {
                    outcome: Outcome::Finished,
                    reason: None,
                    received
                },
                Action::Update(Update::Seeding),
                Action::Report(Box::new(report.clone())),
                Action::AnnounceCompleted {
                    uploaded: 77,
                    downloaded: 1000
                },
                Action::StartSeeding {
                    report: Box::new(report),
                    size: 1000
                },
            ]
        );
        assert_eq!(flow.phase(), FlowPhase::Seeding);
        assert!(flow.phase().is_end());
        assert_eq!(flow.end(), Some(&Ok(installed)));
        // Late events change nothing.
        flow.handle_progress(live(t0 + s(5), 1000, &[]));
        flow.handle_verified(Err("late".into()));
        assert!(drain(&mut flow).is_empty());
        assert_eq!(flow.phase(), FlowPhase::Seeding);
    }

    fn to_installing(t0: Instant) -> ReleaseFlow {
        let mut flow = downloading(config(true), release(None), SourceTotals::default(), t0);
        flow.handle_progress(live(t0, 1000, &[(ORIGIN, 1000)]));
        drain(&mut flow);
        flow.handle_verified(Ok(()));
        drain(&mut flow);
        flow.handle_origins(t0, vec![], None);
        let a = drain(&mut flow);
        assert!(matches!(&a[0], Action::RecordVerified { .. }), "{a:?}");
        assert_eq!(
            a[1],
            Action::Update(Update::Verified {
                received: SourceTotals {
                    origin_bittorrent: 1000,
                    ..Default::default()
                },
                size: 1000,
                phase: Phase::Installing
            })
        );
        assert_eq!(a[2], Action::RunInstallHook { path: package() });
        assert_eq!(a.len(), 3);
        assert_eq!(flow.phase(), FlowPhase::Installing);
        flow
    }

    #[test]
    fn the_install_hook_marks_the_release_installed_or_fails_its_history_line() {
        let t0 = Instant::now();
        let mut ok = to_installing(t0);
        ok.handle_install(Ok(()));
        let a = drain(&mut ok);
        assert!(
            matches!(
                &a[0],
                Action::RecordHistory {
                    outcome: Outcome::Finished,
                    reason: None,
                    ..
                }
            ),
            "{a:?}"
        );
        assert_eq!(
            a[1],
            Action::MarkInstalled {
                detail: "install hook succeeded".into()
            }
        );
        assert_eq!(a[2], Action::Update(Update::Seeding));
        assert!(report_in(&a).verified && report_in(&a).error.is_none());
        assert_eq!(ok.phase(), FlowPhase::Seeding);

        let mut failed = to_installing(t0);
        failed.handle_install(Err("exit status: 3: disk full".into()));
        let a = drain(&mut failed);
        let why = "install hook failed: exit status: 3: disk full".to_string();
        assert!(
            matches!(&a[0], Action::RecordHistory { outcome: Outcome::Failed, reason: Some(r), .. } if *r == why),
            "{a:?}"
        );
        assert!(
            !a.iter().any(|a| matches!(a, Action::MarkInstalled { .. })),
            "not installed"
        );
        let r = report_in(&a);
        assert!(r.verified, "the package itself is fine");
        assert_eq!(r.error.as_deref(), Some(why.as_str()));
        assert!(matches!(a.last(), Some(Action::StartSeeding { report, .. }) if report.error.is_some()));
        assert_eq!(
            failed.phase(),
            FlowPhase::Seeding,
            "a verified package seeds even when its hook fails"
        );

        // installed.json cannot be written: the flow ends there.
        let mut broken = to_installing(t0);
        broken.handle_state_error("cannot write installed.json: No space left on device".into());
        assert!(drain(&mut broken).is_empty());
        assert_eq!(broken.phase(), FlowPhase::Failed);
        broken.handle_install(Ok(()));
        assert!(drain(&mut broken).is_empty());
    }

    #[test]
    fn manifests_are_checked_against_the_pinned_key_channel_model_and_installed_versions() {
        let maker = generate_signing_key();
        let manifest = Manifest {
            name: "fw.bin".into(),
            version: "2.0".into(),
            info_hash: IH(),
            size: 1000,
            sha256: "ef".repeat(32),
            channel: "stable".into(),
            models: vec!["gw-100".into()],
            created_at: 1,
        };
        let signed = Release {
            manifest: Some(sign(&manifest, &maker)),
            ..release(None)
        };
        let key = maker.verifying_key();
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            check_manifest(&release(None), None, "stable", "gw-100", none),
            Ok("cd".repeat(32)),
            "no key: the record's hash"
        );
        assert_eq!(
            check_manifest(&signed, Some(&key), "stable", "gw-100", none),
            Ok("ef".repeat(32)),
            "the manifest's hash"
        );
        assert_eq!(
            check_manifest(&release(None), Some(&key), "stable", "gw-100", none),
            Err(ManifestError::BadSignature)
        );
        let stranger = generate_signing_key().verifying_key();
        assert_eq!(
            check_manifest(&signed, Some(&stranger), "stable", "gw-100", none),
            Err(ManifestError::BadSignature)
        );
        assert!(matches!(
            check_manifest(&signed, Some(&key), "beta", "gw-100", none),
            Err(ManifestError::WrongChannel { .. })
        ));
        assert!(matches!(
            check_manifest(&signed, Some(&key), "stable", "gw-200", none),
            Err(ManifestError::WrongModel { .. })
        ));
        let other = Release {
            info_hash: InfoHash([1; 20]),
            ..signed.clone()
        };
        assert!(matches!(
            check_manifest(&other, Some(&key), "stable", "gw-100", none),
            Err(ManifestError::WrongRelease { .. })
        ));
        let not_newer = check_manifest(
            &signed,
            Some(&key),
            "stable",
            "gw-100",
            [("other.bin", "9.0"), ("fw.bin", "2.0")],
        );
        assert_eq!(
            not_newer.unwrap_err().to_string(),
            "version 2.0 is not newer than the installed 2.0"
        );
        assert!(check_manifest(&signed, Some(&key), "stable", "gw-100", [("fw.bin", "1.9")]).is_ok());
    }

    #[test]
    fn a_refused_manifest_rejects_the_release_before_any_download() {
        let mut flow = ReleaseFlow::new(IH(), config(false));
        drain(&mut flow);
        flow.handle_release(Ok(release(None)));
        drain(&mut flow);
        flow.handle_tracked(SourceTotals::default());
        drain(&mut flow);
        flow.handle_manifest(Err(ManifestError::BadSignature));
        let why = "manifest rejected: manifest signature does not verify with the pinned public key";
        let a = drain(&mut flow);
        assert_eq!(
            a[0],
            Action::Finish {
                outcome: Outcome::Rejected,
                reason: why.into()
            }
        );
        let r = report_in(&a);
        assert_eq!(
            (r.verified, r.error.as_deref(), r.bytes_from_origin),
            (false, Some(why), 0)
        );
        assert_eq!(a.len(), 2);
        assert_eq!(flow.phase(), FlowPhase::Rejected);
        assert_eq!(flow.end(), Some(&Err(why.to_string())));
        flow.handle_policy(Ok(()));
        flow.handle_torrent(Instant::now(), Ok(vec![]));
        assert!(drain(&mut flow).is_empty(), "nothing is fetched after a refusal");
    }

    #[test]
    fn the_storage_policy_refuses_before_the_torrent_is_fetched() {
        let mut flow = ReleaseFlow::new(IH(), config(false));
        drain(&mut flow);
        flow.handle_release(Ok(release(None)));
        flow.handle_tracked(SourceTotals::default());
        flow.handle_manifest(Ok("cd".repeat(32)));
        drain(&mut flow);
        flow.handle_policy(Err(Blocked::NoSpace { needed: 1000, free: 10 }));
        let why = "storage: no space left: the package needs 1000 bytes, 10 bytes are free";
        let a = drain(&mut flow);
        assert_eq!(report_in(&a).error.as_deref(), Some(why));
        assert!(matches!(a[0], Action::Report(_)), "reported, then recorded: {a:?}");
        assert_eq!(
            a[1],
            Action::Finish {
                outcome: Outcome::Failed,
                reason: why.into()
            }
        );
        assert_eq!(flow.phase(), FlowPhase::Failed);
    }

    #[test]
    fn a_sha256_mismatch_keeps_nothing_and_reports_the_error() {
        let t0 = Instant::now();
        let mut flow = downloading(config(false), release(None), SourceTotals::default(), t0);
        flow.handle_progress(live(t0, 1000, &[(ORIGIN, 1000)]));
        drain(&mut flow);
        flow.handle_verified(Err(format!(
            "SHA-256 mismatch: manifest says {}, package is {}",
            "cd".repeat(32),
            "00".repeat(32)
        )));
        let a = drain(&mut flow);
        assert_eq!(a[0], Action::DeleteDownload);
        let Action::Finish {
            outcome: Outcome::Failed,
            reason,
        } = &a[1]
        else {
            panic!("{a:?}")
        };
        assert!(
            reason.starts_with("package fw.bin refused: SHA-256 mismatch"),
            "{reason}"
        );
        let r = report_in(&a);
        assert!(!r.verified && r.error.as_ref() == Some(reason));
        assert!(!a
            .iter()
            .any(|a| matches!(a, Action::RecordVerified { .. } | Action::StartSeeding { .. })));
        assert_eq!(flow.phase(), FlowPhase::Failed);
    }

    #[test]
    fn client_server_transport_fetches_over_http_at_once_and_counts_it_as_origin_http() {
        let t0 = Instant::now();
        let url = "http://origin/packages/fw.bin";
        let http_only = FlowConfig {
            http_only: true,
            reconnect_after: None,
            ..config(false)
        };
        let mut flow = started(http_only.clone(), release(Some(url)), SourceTotals::default(), t0);
        flow.handle_origins(t0, vec![ORIGIN.into()], None);
        assert_eq!(
            drain(&mut flow),
            [Action::StartHttpFallback {
                url: url.into(),
                etag: Some("\"e1\"".into()),
                torrent: torrent(),
                file: package(),
                after: Duration::from_secs(30),
            }],
            "no sample, no wait for peers"
        );
        assert!(!flow.wants_sample());
        flow.handle_fallback(Ok(1000));
        assert_eq!(
            drain(&mut flow),
            [Action::StartDownload {
                torrent: torrent(),
                after_fallback: true
            }]
        );
        // Without an HTTP URL there is nothing to fetch from: peers it is.
        let mut no_url = started(http_only, release(None), SourceTotals::default(), t0);
        no_url.handle_origins(t0, vec![ORIGIN.into()], None);
        assert!(drain(&mut no_url).is_empty());
        assert!(no_url.wants_sample());
    }

    #[test]
    fn no_payload_for_the_fallback_delay_fetches_the_rest_over_http_once() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let url = "http://origin/packages/fw.bin";
        let patient = FlowConfig {
            download_timeout: s(600),
            ..config(false)
        };
        let mut flow = downloading(patient, release(Some(url)), SourceTotals::default(), t0);
        flow.handle_progress(live(t0 + s(1), 256, &[(ORIGIN, 256)]));
        flow.handle_progress(live(t0 + s(30), 256, &[(ORIGIN, 256)]));
        assert_eq!(drain(&mut flow).len(), 2, "29 s without a byte: no fallback yet");
        // A pause restarts the clock.
        let mut pause = live(t0 + Duration::from_millis(30_500), 256, &[(ORIGIN, 256)]);
        pause.pause_requested = true;
        flow.handle_progress(pause);
        assert_eq!(drain(&mut flow)[1], Action::PauseDownload);
        let mut paused = live(t0 + s(31), 256, &[]);
        (paused.state, paused.per_peer) = (TorrentState::Paused, None);
        flow.handle_progress(paused);
        assert_eq!(drain(&mut flow)[1], Action::ResumeDownload);
        flow.handle_progress(live(t0 + s(60), 256, &[(ORIGIN, 0)]));
        assert_eq!(drain(&mut flow).len(), 1, "29 s since the pause");
        flow.handle_progress(live(t0 + s(61), 256, &[(ORIGIN, 0)]));
        let a = drain(&mut flow);
        assert_eq!(
            a[1],
            Action::StartHttpFallback {
                url: url.into(),
                etag: Some("\"e1\"".into()),
                torrent: torrent(),
                file: package(),
                after: s(30),
            }
        );
        assert!(!flow.wants_sample(), "waits for the HTTP pieces");
        flow.handle_fallback(Ok(744));
        assert_eq!(
            drain(&mut flow),
            [Action::StartDownload {
                torrent: torrent(),
                after_fallback: true
            }]
        );
        flow.handle_started(t0 + s(72));
        assert!(drain(&mut flow).is_empty(), "the origin list is not asked again");
        assert!(flow.wants_sample());
        // Once per download: another stall does not fetch over HTTP again.
        flow.handle_progress(live(t0 + s(73), 256, &[]));
        flow.handle_progress(live(t0 + s(105), 256, &[]));
        assert!(drain(&mut flow).iter().all(|a| matches!(a, Action::Update(_))));
        flow.handle_progress(live(t0 + s(106), 1000, &[]));
        drain(&mut flow);
        flow.handle_verified(Ok(()));
        drain(&mut flow);
        flow.handle_origins(t0 + s(107), vec![], Some(vec![]));
        let r = report_in(&drain(&mut flow)).clone();
        assert_eq!(
            (r.bytes_from_origin, r.bytes_from_origin_http, r.verified),
            (256, 744, true),
            "{r:?}"
        );

        // Without an HTTP URL (or with the fallback off) a stall only waits.
        let mut no_url = downloading(config(false), release(None), SourceTotals::default(), t0);
        no_url.handle_progress(live(t0 + s(59), 0, &[]));
        assert!(drain(&mut no_url).iter().all(|a| matches!(a, Action::Update(_))));
        let off = FlowConfig {
            http_fallback_after: None,
            ..config(false)
        };
        let mut no_fallback = downloading(off, release(Some(url)), SourceTotals::default(), t0);
        no_fallback.handle_progress(live(t0 + s(59), 0, &[]));
        assert!(drain(&mut no_fallback).iter().all(|a| matches!(a, Action::Update(_))));
    }

    #[test]
    fn a_stalled_download_reconnects_and_keeps_counting_its_bytes() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let cfg = FlowConfig {
            reconnect_after: Some(s(2)),
            ..config(false)
        };
        let mut flow = downloading(cfg, release(None), SourceTotals::default(), t0);
        flow.handle_progress(live(t0 + s(1), 256, &[(PEER, 256)]));
        flow.handle_progress(live(t0 + Duration::from_millis(2_900), 256, &[(PEER, 256)]));
        assert!(
            drain(&mut flow).iter().all(|a| matches!(a, Action::Update(_))),
            "1.9 s of stall"
        );
        flow.handle_progress(live(t0 + s(3), 256, &[(PEER, 256)]));
        assert_eq!(drain(&mut flow).last(), Some(&Action::Reconnect));
        // The new connections' counters start at 0; the bytes before stay counted.
        flow.handle_progress(live(t0 + s(4), 768, &[(PEER, 512)]));
        flow.handle_progress(live(t0 + s(5), 1000, &[(PEER, 744)]));
        drain(&mut flow);
        flow.handle_verified(Ok(()));
        drain(&mut flow);
        flow.handle_origins(t0 + s(6), vec![ORIGIN.into()], Some(vec![(PEER.into(), 744)]));
        let r = report_in(&drain(&mut flow)).clone();
        assert_eq!((r.bytes_from_peers, r.bytes_from_origin), (1000, 0), "{r:?}");
        // A stall while connected to the origin (a network or origin
        // problem, not librqbit's missing `have`) does not reconnect.
        let cfg = FlowConfig {
            reconnect_after: Some(s(2)),
            ..config(false)
        };
        let mut with_origin = downloading(cfg, release(None), SourceTotals::default(), t0);
        with_origin.handle_progress(live(t0 + s(1), 256, &[(ORIGIN, 256), (PEER, 0)]));
        with_origin.handle_progress(live(t0 + s(9), 256, &[(ORIGIN, 256), (PEER, 0)]));
        assert!(drain(&mut with_origin).iter().all(|a| matches!(a, Action::Update(_))));
        // But while the origin delivers and the devices do not (librqbit's
        // missing `have`, hidden by a slow origin), the devices' silence
        // reconnects, and again only after the origin delivered more.
        let cfg = FlowConfig {
            reconnect_after: Some(s(2)),
            ..config(false)
        };
        let mut slow_origin = downloading(cfg.clone(), release(None), SourceTotals::default(), t0);
        slow_origin.handle_progress(live(t0 + s(1), 256, &[(ORIGIN, 256), (PEER, 0)]));
        assert!(
            drain(&mut slow_origin).iter().all(|a| matches!(a, Action::Update(_))),
            "1 s"
        );
        slow_origin.handle_progress(live(t0 + s(3), 768, &[(ORIGIN, 768), (PEER, 0)]));
        assert_eq!(drain(&mut slow_origin).last(), Some(&Action::Reconnect));
        slow_origin.handle_progress(live(t0 + s(9), 768, &[(ORIGIN, 0), (PEER, 0)]));
        assert!(
            drain(&mut slow_origin).iter().all(|a| matches!(a, Action::Update(_))),
            "no origin progress since the reconnect"
        );
        // Devices that deliver keep the connections.
        let mut served = downloading(cfg, release(None), SourceTotals::default(), t0);
        for (i, b) in [(1u64, 100u64), (2, 200), (3, 300), (4, 400)] {
            served.handle_progress(live(t0 + s(i), 2 * b, &[(ORIGIN, b), (PEER, b)]));
        }
        assert!(drain(&mut served).iter().all(|a| matches!(a, Action::Update(_))));
        // Client-server transport never reconnects.
        let http = FlowConfig {
            reconnect_after: Some(s(2)),
            http_only: true,
            ..config(false)
        };
        assert!(ReleaseFlow::new(IH(), http).reconnect_watch(0, t0).is_none());
    }

    #[test]
    fn a_failed_http_fallback_keeps_nothing() {
        let t0 = Instant::now();
        let mut flow = downloading(config(false), release(Some("http://o/p")), SourceTotals::default(), t0);
        flow.handle_progress(live(t0 + Duration::from_secs(31), 0, &[]));
        assert!(matches!(drain(&mut flow)[1], Action::StartHttpFallback { .. }));
        flow.handle_fallback(Err(
            "piece 0 from HTTP failed its SHA-1 check (got 256 bytes); not written".into(),
        ));
        let a = drain(&mut flow);
        assert_eq!(a[0], Action::DeleteDownload);
        let why = "HTTP fallback failed: piece 0 from HTTP failed its SHA-1 check (got 256 bytes); not written";
        assert_eq!(
            a[1],
            Action::Finish {
                outcome: Outcome::Failed,
                reason: why.into()
            }
        );
        assert_eq!(report_in(&a).error.as_deref(), Some(why));
    }

    #[test]
    fn pause_resume_timeout_and_cancel() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut flow = downloading(config(false), release(None), SourceTotals::default(), t0);
        let mut want_pause = live(t0 + s(10), 300, &[(ORIGIN, 300)]);
        want_pause.pause_requested = true;
        flow.handle_progress(want_pause);
        let a = drain(&mut flow);
        assert_eq!(a[1], Action::PauseDownload);
        // Paused for 5 minutes: the bytes of the live period are kept, the
        // time does not count toward the 60 s timeout.
        let mut paused = live(t0 + s(310), 300, &[]);
        (paused.state, paused.per_peer, paused.pause_requested) = (TorrentState::Paused, None, true);
        flow.handle_progress(paused.clone());
        let a = drain(&mut flow);
        let p = progress_of(&a);
        assert!(p.paused && p.received.origin_bittorrent == 300, "{p:?}");
        assert_eq!(a.len(), 1, "stays paused");
        paused.now = t0 + s(311);
        paused.pause_requested = false;
        flow.handle_progress(paused);
        assert_eq!(drain(&mut flow)[1], Action::ResumeDownload);
        // A new live period: its counters start at 0 and add to the kept ones.
        flow.handle_progress(live(t0 + s(312), 400, &[(ORIGIN, 100)]));
        assert_eq!(progress_of(&drain(&mut flow)).received.origin_bittorrent, 400);
        flow.handle_progress(live(t0 + s(360), 400, &[(ORIGIN, 100)]));
        assert!(
            drain(&mut flow).iter().all(|a| matches!(a, Action::Update(_))),
            "58 s unpaused"
        );
        flow.handle_progress(live(t0 + s(363), 400, &[(ORIGIN, 100)]));
        let a = drain(&mut flow);
        assert_eq!(a[1], Action::DeleteDownload);
        assert_eq!(
            a[2],
            Action::Finish {
                outcome: Outcome::Failed,
                reason: "download did not finish within 60 s".into()
            }
        );
        assert_eq!(flow.phase(), FlowPhase::Failed);

        let mut cancelled = downloading(config(false), release(None), SourceTotals::default(), t0);
        let mut cancel = live(t0 + s(1), 500, &[(ORIGIN, 500)]);
        cancel.cancel_requested = true;
        cancelled.handle_progress(cancel);
        let a = drain(&mut cancelled);
        assert_eq!(a[0], Action::DeleteDownload, "partial data deleted");
        assert_eq!(
            a[1],
            Action::Finish {
                outcome: Outcome::Cancelled,
                reason: "cancelled by the user".into()
            }
        );
        assert_eq!(report_in(&a).error.as_deref(), Some("cancelled by the user"));
        assert_eq!(cancelled.phase(), FlowPhase::Cancelled);
        assert_eq!(cancelled.end(), Some(&Err("cancelled by the user".into())));
    }

    #[test]
    fn the_initial_piece_check_shows_no_verified_bytes() {
        let t0 = Instant::now();
        let mut flow = downloading(config(false), release(None), SourceTotals::default(), t0);
        let mut checking = live(t0, 1000, &[]);
        (checking.state, checking.finished, checking.per_peer) = (TorrentState::Initializing, false, None);
        flow.handle_progress(checking);
        let p = progress_of(&drain(&mut flow));
        assert_eq!(p.progress_bytes, 0);
        assert!(!p.complete(), "not marked verifying before a byte arrived");
    }

    #[test]
    fn tracker_and_librqbit_failures_end_the_flow() {
        let t0 = Instant::now();
        // No release record: history only (nothing to report about).
        let mut flow = ReleaseFlow::new(IH(), config(false));
        drain(&mut flow);
        flow.handle_release(Err("get release: tracker answered 404 Not Found: ".into()));
        assert_eq!(
            drain(&mut flow),
            [Action::Finish {
                outcome: Outcome::Failed,
                reason: "get release: tracker answered 404 Not Found: ".into()
            }]
        );
        assert_eq!(flow.phase(), FlowPhase::Failed);

        // No torrent: the same.
        let mut flow = ReleaseFlow::new(IH(), config(false));
        flow.handle_release(Ok(release(None)));
        flow.handle_tracked(SourceTotals::default());
        flow.handle_manifest(Ok("cd".repeat(32)));
        flow.handle_policy(Ok(()));
        drain(&mut flow);
        flow.handle_torrent(t0, Err("connection refused".into()));
        assert_eq!(
            drain(&mut flow),
            [Action::Finish {
                outcome: Outcome::Failed,
                reason: "connection refused".into()
            }]
        );

        // librqbit refuses the torrent: reported, files left alone.
        let mut flow = ReleaseFlow::new(IH(), config(false));
        flow.handle_release(Ok(release(None)));
        flow.handle_tracked(SourceTotals::default());
        flow.handle_manifest(Ok("cd".repeat(32)));
        flow.handle_policy(Ok(()));
        flow.handle_torrent(t0, Ok(torrent()));
        drain(&mut flow);
        flow.handle_download_error("librqbit refused the torrent: bad bencode".into());
        let a = drain(&mut flow);
        assert_eq!(
            a[0],
            Action::Finish {
                outcome: Outcome::Failed,
                reason: "librqbit refused the torrent: bad bencode".into()
            }
        );
        assert!(matches!(a[1], Action::Report(_)) && a.len() == 2);

        // The torrent fails (a full disk): nothing kept.
        let mut flow = downloading(config(false), release(None), SourceTotals::default(), t0);
        let mut err = live(t0, 300, &[]);
        (err.state, err.error) = (
            TorrentState::Other,
            Some("No space left on device (os error 28)".into()),
        );
        flow.handle_progress(err);
        let a = drain(&mut flow);
        assert_eq!(a[0], Action::DeleteDownload);
        assert_eq!(
            a[1],
            Action::Finish {
                outcome: Outcome::Failed,
                reason: "download failed: No space left on device (os error 28)".into()
            }
        );
    }

    #[test]
    fn a_record_for_another_hash_or_with_a_path_for_a_name_is_rejected_before_anything_is_written() {
        for (name, ih) in [
            ("../x", IH()),
            ("/etc/cron.d/x", IH()),
            ("", IH()),
            ("fw.bin", InfoHash([1; 20])),
        ] {
            let mut flow = ReleaseFlow::new(IH(), config(false));
            drain(&mut flow);
            flow.handle_release(Ok(Release {
                name: name.into(),
                info_hash: ih,
                ..release(None)
            }));
            let a = drain(&mut flow);
            assert_eq!(flow.phase(), FlowPhase::Rejected, "{name:?}");
            assert!(
                matches!(&a[0], Action::Finish { outcome: Outcome::Rejected, reason } if reason.starts_with("release record refused")),
                "{a:?}"
            );
            assert!(
                matches!(a[1], Action::Report(_)) && a.len() == 2,
                "no Track, no download: {a:?}"
            );
        }
    }

    #[test]
    fn a_torrent_of_another_hash_name_or_size_is_refused_before_the_download() {
        let other = |name: &str, length: u64| {
            let info = ota_proto::metainfo::InfoDict {
                name: name.into(),
                length,
                piece_length: 256,
                pieces: vec![[7; 20]; length.div_ceil(256) as usize],
                private: true,
            };
            ota_proto::metainfo::torrent_bytes("http://t/announce", &info.to_bytes())
        };
        assert_eq!(check_torrent(&torrent(), &IH(), "fw.bin", 1000), Ok(()));
        let e = check_torrent(&other("fw.bin", 999), &IH(), "fw.bin", 1000).unwrap_err();
        assert!(e.contains("info hash"), "{e}");
        // The right hash is checked first; name and size of the info dict too.
        let evil = other("../evil", 1000);
        let evil_ih = ota_proto::metainfo::info_hash(&ota_proto::metainfo::info_from_torrent(&evil).unwrap());
        let e = check_torrent(&evil, &evil_ih, "fw.bin", 1000).unwrap_err();
        assert!(e.contains("named \"../evil\""), "{e}");
        let e = check_torrent(&torrent(), &IH(), "fw.bin", 1001).unwrap_err();
        assert!(e.contains("1000 bytes"), "{e}");
        assert!(check_torrent(b"garbage", &IH(), "fw.bin", 1000).is_err());

        let mut flow = ReleaseFlow::new(IH(), config(false));
        flow.handle_release(Ok(release(None)));
        flow.handle_tracked(SourceTotals::default());
        flow.handle_manifest(Ok("cd".repeat(32)));
        flow.handle_policy(Ok(()));
        drain(&mut flow);
        flow.handle_torrent(Instant::now(), Ok(other("fw.bin", 999)));
        let a = drain(&mut flow);
        assert_eq!(flow.phase(), FlowPhase::Failed);
        assert!(matches!(a[0], Action::Report(_)), "{a:?}");
        assert!(
            matches!(&a[1], Action::Finish { reason, .. } if reason.starts_with("torrent refused")),
            "{a:?}"
        );
        assert_eq!(a.len(), 2, "no StartDownload, no DeleteDownload: {a:?}");
    }

    #[test]
    fn report_errors_are_cut_to_the_limit_at_a_character_boundary() {
        assert_eq!(report_error("short"), "short");
        let long = "é".repeat(2000);
        let cut = report_error(&long);
        assert!(
            cut.len() <= MAX_REPORT_ERROR_BYTES && cut.ends_with('…'),
            "{}",
            cut.len()
        );
    }

    #[test]
    fn speed_is_bytes_per_second_over_a_sliding_window() {
        let t0 = Instant::now();
        let mut m = SpeedMeter::default();
        assert_eq!(m.sample(t0, 0), 0);
        assert_eq!(m.sample(t0 + Duration::from_secs(1), 1000), 1000);
        assert_eq!(m.sample(t0 + Duration::from_secs(2), 3000), 1500);
        // Older samples fall out of the 3 s window: only the last 3 s count.
        m.sample(t0 + Duration::from_secs(3), 3000);
        m.sample(t0 + Duration::from_secs(4), 3000);
        assert_eq!(m.sample(t0 + Duration::from_secs(5), 3000), 0, "stalled download");
    }
}
