//! Resume cases of the agent daemon, each counting the bytes fetched again.
//!
//! A real tracker, a real S3-protocol server and the S3-backed seeder run in
//! this process (the seeder with an upload cap so the download is slow
//! enough to interrupt); the agent runs as a process
//! (`ota-device-agent run`) and is driven through its CLI over the control
//! socket. The package is ~24 MiB of random bytes with 256 KiB pieces. The
//! origin's egress ledger counts every payload byte it sent for the release;
//! bytes beyond the package size were fetched again. Target: at most one
//! piece per interruption.
//!
//! Cases: pause and resume through the CLI; `kill -9` and restart with the
//! same state folder (no new push: the state folder alone resumes it); link
//! down and up in a network namespace the test creates (needs root, as CI
//! runs); cancel (partial data deleted, not resumed after a restart). The
//! install hook is checked along the way: success, failure, and cut short
//! by `kill -9` (run again after the restart).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_proto::InfoHash;
use ota_seeder::seeding::{SeedSettings, Seeder};
use rand::RngCore;

mod common;
const PIECE: u64 = 256 * 1024;
const SIZE: usize = 24 * 1024 * 1024 + 4321;
/// Origin upload cap, bytes/s: the download takes ~13 s, leaving time to
/// interrupt it mid-way even on a loaded machine.
const UPLOAD_LIMIT: u32 = 2_000_000;

fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ota-device-agent")
}

/// Tracker + S3 + seeder, with one published release.
struct Stack {
    stack: common::Stack,
    seeder: Arc<Seeder>,
    info_hash: InfoHash,
    package: Vec<u8>,
    name: String,
}

fn free_port(ip: IpAddr) -> u16 {
    common::free_port_on(ip).unwrap()
}

impl Stack {
    /// Starts everything with the tracker and the seeder's peer wire on `ip`.
    async fn start(ip: IpAddr) -> Stack {
        let stack = common::Stack::start_on(ip, Default::default()).await;
        let mut package = vec![0u8; SIZE];
        rand::thread_rng().fill_bytes(&mut package);
        let name = "update.bin".to_string();
        let req = ota_seeder::publish::PublishRequest {
            version: "1.0".into(),
            ..stack.publish_request(&name, PIECE, None)
        };
        let new = stack.hash(&package, &req).await;
        stack.tracker.client().register(&new).await.unwrap();
        let info_hash = new.info_hash;

        let settings = SeedSettings {
            peer_listen: SocketAddr::new(ip, free_port(ip)),
            cache_bytes: 64 << 20,
            read_ahead: 4,
            upload_limit_bps: Some(UPLOAD_LIMIT),
            verify_interval: Duration::from_secs(300),
            max_s3_requests: 4,
            ..stack.seed_settings(None)
        };
        let seeder = stack.seeder_with(settings).await;
        assert!(
            common::wait_origin(stack.tracker.client(), &info_hash, 1, Duration::from_secs(60)).await,
            "the origin never announced"
        );
        Stack {
            stack,
            seeder,
            info_hash,
            package,
            name,
        }
    }

    fn tracker(&self) -> &common::TestTracker {
        &self.stack.tracker
    }

    /// Payload bytes the origin sent for the release over BitTorrent.
    async fn egress(&self) -> u64 {
        let e = self.seeder.egress().await.unwrap();
        e.iter()
            .find(|r| r.info_hash == self.info_hash)
            .map(|r| r.bittorrent_bytes)
            .unwrap_or(0)
    }

    async fn push_when_subscribed(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.tracker().client().subscribers().await.unwrap_or(0) < n {
            assert!(Instant::now() < deadline, "the agent never subscribed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(self.tracker().client().push(&self.info_hash).await.unwrap() >= 1);
    }

    /// Waits (bounded) for the agent's telemetry report on the release.
    async fn wait_report(&self, agent: &mut AgentProc, within: Duration) -> ota_proto::api::TelemetryReport {
        let deadline = Instant::now() + within;
        loop {
            if let Some(r) = self
                .tracker()
                .client()
                .telemetry(&self.info_hash)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.verified || r.error.is_some())
            {
                return r;
            }
            agent.assert_alive();
            assert!(
                Instant::now() < deadline,
                "no report within {within:?}; agent log:\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(self) {
        self.seeder.stop().await;
        self.stack.tracker.stop().await;
    }
}

/// The agent process; killed by PID and reaped on drop.
struct AgentProc {
    child: std::process::Child,
    log: PathBuf,
}

impl AgentProc {
    /// `prefix` runs it inside something (e.g. `ip netns exec NS`).
    fn spawn(
        prefix: &[&str],
        state: &Path,
        tracker: &str,
        peer_listen: SocketAddr,
        extra: &[&str],
        log: &Path,
    ) -> AgentProc {
        let (program, pre): (&str, &[&str]) = match prefix.split_first() {
            Some((p, rest)) => (p, rest),
            None => (agent_bin(), &[]),
        };
        let mut cmd = std::process::Command::new(program);
        cmd.args(pre);
        if !prefix.is_empty() {
            cmd.arg(agent_bin());
        }
        cmd.args([
            "run",
            "--device-id",
            "dev-resume",
            "--tracker",
            tracker,
            "--no-catch-up",
            "--poll-interval-secs",
            "0",
        ])
        .args([
            "--report-interval-secs",
            "1",
            "--peer-listen",
            &peer_listen.to_string(),
            "--state-dir",
        ])
        .arg(state)
        .args(extra)
        .env("RUST_LOG", "info,librqbit=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap());
        AgentProc {
            child: cmd.spawn().unwrap(),
            log: log.to_path_buf(),
        }
    }

    fn assert_alive(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("agent exited ({st}); log:\n{}", self.log());
        }
    }

    fn log(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        s.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILL by PID, then reap.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the CLI against the daemon's state folder; returns (success, stdout, stderr).
async fn cli(state: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(agent_bin())
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `status --json` parsed; `None` while the daemon does not answer.
async fn status(state: &Path) -> Option<serde_json::Value> {
    let (ok, out, _) = cli(state, &["status", "--json"]).await;
    ok.then(|| serde_json::from_str(&out).ok()).flatten()
}

/// Waits (bounded) until the release's verified bytes reach `fraction` of the size.
async fn wait_progress(state: &Path, agent: &mut AgentProc, fraction: f64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = status(state).await {
            let p = s["releases"][0]["progress_bytes"].as_u64().unwrap_or(0);
            if p as f64 >= fraction * SIZE as f64 {
                return p;
            }
        }
        agent.assert_alive();
        assert!(
            Instant::now() < deadline,
            "no progress to {fraction}; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_refetch_at_most(egress: u64, interruptions: u64, what: &str) {
    let extra = egress.saturating_sub(SIZE as u64);
    eprintln!("{what}: origin sent {egress} bytes for a {SIZE}-byte package: {extra} bytes fetched again ({interruptions} interruption(s), piece {PIECE})");
    assert!(egress >= SIZE as u64, "{what}: the whole package came from the origin");
    assert!(
        extra <= interruptions * PIECE,
        "{what}: {extra} bytes fetched again, more than {interruptions} piece(s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_and_resume_through_the_cli_fetch_no_verified_piece_twice() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let state = dir.path().join("agent");
    // No daemon yet: the CLI says so.
    let (ok, _, err) = cli(&state, &["status"]).await;
    assert!(!ok && err.contains("is `ota-device-agent run` running"), "{err}");

    let hook_out = dir.path().join("hook.out");
    let hook = dir.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$1 $OTA_RELEASE_NAME $OTA_RELEASE_VERSION $OTA_INFO_HASH\" > {}\n",
            hook_out.display()
        ),
    )
    .unwrap();
    let hook_cmd = format!("sh {}", hook.display());
    let mut agent = AgentProc::spawn(
        &[],
        &state,
        stack.tracker().url(),
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ),
        &["--install-hook", &hook_cmd],
        &dir.path().join("agent.log"),
    );
    stack.push_when_subscribed(1).await;
    wait_progress(&state, &mut agent, 0.3).await;

    let (ok, out, err) = cli(&state, &["pause"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("paused: update.bin@1.0"), "{out}");
    // librqbit pauses within a tick; then the origin sends nothing more.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(&state).await.unwrap();
        if s["releases"][0]["phase"] == "downloading"
            && s["releases"][0]["paused"] == serde_json::json!(["user"])
            && s["releases"][0]["speed_bps"] == 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "never paused: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = stack.egress().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.egress().await, during, "the origin sent bytes while paused");
    assert!(during < SIZE as u64, "paused before the end");
    let (ok, table, _) = cli(&state, &["status"]).await;
    eprintln!("status while paused:\n{table}");
    assert!(
        ok && table.contains("paused(user)") && table.contains("update.bin@1.0"),
        "{table}"
    );
    assert!(
        table.contains('#') && table.contains("MiB/24.00 MiB"),
        "a progress bar: {table}"
    );

    let (ok, out, err) = cli(&state, &["resume"]).await;
    assert!(ok && out.contains("resumed: update.bin@1.0"), "{out}{err}");
    let report = stack.wait_report(&mut agent, Duration::from_secs(120)).await;
    assert!(report.verified && report.error.is_none(), "{report:?}");
    assert!(
        report.bytes_from_origin >= SIZE as u64,
        "bytes before and after the pause are counted: {report:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_refetch_at_most(stack.egress().await, 1, "pause/resume");
    let path = common::download_folder(&state, &stack.info_hash).join(&stack.name);
    assert_eq!(std::fs::read(&path).unwrap(), stack.package);

    // The install hook got the package path and the release in its environment.
    let hook_line = std::fs::read_to_string(&hook_out).unwrap();
    assert_eq!(
        hook_line.trim(),
        format!("{} update.bin 1.0 {}", path.display(), stack.info_hash)
    );
    let (ok, out, _) = cli(&state, &["history", "--json"]).await;
    assert!(ok);
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    let outcomes: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["finished", "installed"]);
    let s = status(&state).await.unwrap();
    assert_eq!(s["releases"][0]["phase"], "seeding");
    drop(agent);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_and_restart_resume_from_the_state_folder() {
    let dir = tempfile::tempdir().unwrap();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let stack = Stack::start(lo).await;
    let state = dir.path().join("agent");
    let listen = SocketAddr::new(lo, free_port(lo));
    let hook = "sh -c 'echo disk full >&2; exit 3'";
    let log = dir.path().join("agent.log");
    let mut agent = AgentProc::spawn(
        &[],
        &state,
        stack.tracker().url(),
        listen,
        &["--install-hook", hook],
        &log,
    );
    stack.push_when_subscribed(1).await;
    let before = wait_progress(&state, &mut agent, 0.25).await;
    agent.kill9();
    assert!(
        state.join("agent.sock").exists(),
        "kill -9 leaves the socket file behind"
    );
    let active: serde_json::Value = serde_json::from_slice(&std::fs::read(state.join("active.json")).unwrap()).unwrap();
    assert_eq!(
        active[stack.info_hash.to_hex().as_str()]["phase"],
        "downloading",
        "{active}"
    );

    // Same state folder, same flags, no push: the state folder alone resumes it.
    let mut agent = AgentProc::spawn(
        &[],
        &state,
        stack.tracker().url(),
        listen,
        &["--install-hook", hook],
        &log,
    );
    let report = stack.wait_report(&mut agent, Duration::from_secs(120)).await;
    assert!(report.verified, "{report:?}");
    let err = report.error.clone().unwrap_or_default();
    assert!(
        err.contains("install hook failed") && err.contains("disk full"),
        "the hook's failure is reported: {err}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let egress = stack.egress().await;
    assert!(before < SIZE as u64, "killed mid-download");
    assert_refetch_at_most(egress, 1, "kill -9/restart");
    let path = common::download_folder(&state, &stack.info_hash).join(&stack.name);
    assert_eq!(std::fs::read(&path).unwrap(), stack.package);
    let (ok, out, _) = cli(&state, &["history"]).await;
    assert!(
        ok && out.contains("failed") && out.contains("install hook failed"),
        "{out}"
    );
    // The device's installer reports success later.
    let (ok, out, err) = cli(&state, &["installed", "update.bin@1.0"]).await;
    assert!(ok && out.contains("update.bin@1.0 marked installed"), "{out}{err}");
    let (ok, _, err) = cli(&state, &["installed", "update.bin@9.9"]).await;
    assert!(!ok && err.contains("no release update.bin@9.9"), "{err}");

    // After another kill -9 and restart the verified release is seeded again
    // (installed, not superseded), with nothing downloaded.
    agent.kill9();
    let mut agent = AgentProc::spawn(&[], &state, stack.tracker().url(), listen, &[], &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seeding = status(&state)
            .await
            .is_some_and(|s| s["releases"][0]["phase"] == "seeding");
        let peers = stack.tracker().client().peers(&stack.info_hash).await.unwrap();
        let announced = peers
            .iter()
            .any(|p| p.device.as_deref() == Some("dev-resume") && p.left == 0 && p.addr == listen.to_string());
        if seeding && announced {
            break;
        }
        agent.assert_alive();
        assert!(
            Instant::now() < deadline,
            "not seeding again: {peers:?}; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stack.egress().await, egress, "nothing fetched to seed again");
    drop(agent);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_deletes_the_partial_data_and_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let stack = Stack::start(lo).await;
    let state = dir.path().join("agent");
    let listen = SocketAddr::new(lo, free_port(lo));
    let log = dir.path().join("agent.log");
    let mut agent = AgentProc::spawn(&[], &state, stack.tracker().url(), listen, &[], &log);
    stack.push_when_subscribed(1).await;
    wait_progress(&state, &mut agent, 0.1).await;
    let (ok, out, err) = cli(&state, &["cancel", &stack.info_hash.to_hex()]).await;
    assert!(ok && out.contains("cancelled: update.bin@1.0"), "{out}{err}");
    let report = stack.wait_report(&mut agent, Duration::from_secs(60)).await;
    assert!(
        !report.verified && report.error.as_deref() == Some("cancelled by the user"),
        "{report:?}"
    );
    assert!(
        !common::download_folder(&state, &stack.info_hash).exists(),
        "partial data deleted"
    );
    let s = status(&state).await.unwrap();
    assert_eq!(s["releases"], serde_json::json!([]));
    let (_, out, _) = cli(&state, &["history", "--json"]).await;
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h["history"][0]["outcome"], "cancelled");
    // A restart and a new push do not start it again.
    drop(agent);
    let mut agent = AgentProc::spawn(&[], &state, stack.tracker().url(), listen, &[], &log);
    // The log is appended to: the second "subscribed" line is the new agent's.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("subscribed to pushes")
        .count()
        < 2
    {
        agent.assert_alive();
        assert!(Instant::now() < deadline, "the restarted agent never subscribed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stack.tracker().client().push(&stack.info_hash).await.unwrap() >= 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    agent.assert_alive();
    assert!(!common::download_folder(&state, &stack.info_hash).exists());
    let (ok, out, _) = cli(&state, &["status"]).await;
    assert!(ok && out.contains("no active release"), "{out}");
    drop(agent);
    stack.stop().await;
}

/// Kills a process by PID (read from a file) on drop.
struct PidFileGuard(PathBuf);

impl Drop for PidFileGuard {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let pid = pid.trim();
            if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                let _ = std::process::Command::new("kill").args(["-9", pid]).output();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_install_hook_cut_short_by_kill_9_runs_again_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let stack = Stack::start(lo).await;
    let state = dir.path().join("agent");
    let listen = SocketAddr::new(lo, free_port(lo));
    let log = dir.path().join("agent.log");
    let (pid_file, mark, done) = (
        dir.path().join("hook.pid"),
        dir.path().join("hook.mark"),
        dir.path().join("hook.done"),
    );
    let _hook_guard = PidFileGuard(pid_file.clone());
    // First run: hangs (until killed); second run: succeeds.
    let hook = dir.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho $$ > {pid}\nif [ -e {mark} ]; then echo \"$1\" > {done}; exit 0; fi\ntouch {mark}\nexec sleep 120\n",
            pid = pid_file.display(),
            mark = mark.display(),
            done = done.display()
        ),
    )
    .unwrap();
    let hook_cmd = format!("sh {}", hook.display());
    let mut agent = AgentProc::spawn(
        &[],
        &state,
        stack.tracker().url(),
        listen,
        &["--install-hook", &hook_cmd],
        &log,
    );
    stack.push_when_subscribed(1).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(mark.exists()
        && status(&state)
            .await
            .is_some_and(|s| s["releases"][0]["phase"] == "installing"))
    {
        agent.assert_alive();
        assert!(
            Instant::now() < deadline,
            "the hook never started; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.kill9();
    // The orphaned hook is killed by PID too.
    drop(PidFileGuard(pid_file.clone()));

    let mut agent = AgentProc::spawn(
        &[],
        &state,
        stack.tracker().url(),
        listen,
        &["--install-hook", &hook_cmd],
        &log,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seeding = status(&state)
            .await
            .is_some_and(|s| s["releases"][0]["phase"] == "seeding");
        if done.exists() && seeding {
            break;
        }
        agent.assert_alive();
        assert!(
            Instant::now() < deadline,
            "the hook did not run again; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let path = common::download_folder(&state, &stack.info_hash).join(&stack.name);
    assert_eq!(
        std::fs::read_to_string(&done).unwrap().trim(),
        path.display().to_string()
    );
    let (_, out, _) = cli(&state, &["history", "--json"]).await;
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    let outcomes: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["finished", "installed"]);
    assert!(
        h["history"][0]["received"]["origin_bittorrent"].as_u64().unwrap() >= SIZE as u64,
        "{h}"
    );
    drop(agent);
    stack.stop().await;
}

/// A network namespace with a veth pair in a private /30: host side
/// `10.213.N.1`, namespace side `10.213.N.2`. Deleted (with the pair) on drop.
struct Netns {
    name: String,
    host_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 `ip` is needed (apt-get install iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn create() -> Netns {
        let pid = std::process::id();
        let n = (pid % 250) as u8;
        let ns = Netns {
            name: format!("ota-resume-{pid}"),
            host_if: format!("otah{}", pid % 100_000),
            host_ip: Ipv4Addr::new(10, 213, n, 1),
            ns_ip: Ipv4Addr::new(10, 213, n, 2),
        };
        let ns_if = format!("otan{}", pid % 100_000);
        ip(&["netns", "add", &ns.name]);
        // From here on, drop cleans up even if a step fails.
        ip(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{}/30", ns.host_ip), "dev", &ns.host_if]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{}/30", ns.ns_ip),
            "dev",
            &ns_if,
        ]);
        ip(&["-n", &ns.name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    fn set_link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pair; the host end is deleted
        // explicitly in case the namespace side never moved there.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn link_down_and_up_in_a_network_namespace_resumes_without_a_restart() {
    let netns = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(IpAddr::V4(netns.host_ip)).await;
    let state = dir.path().join("agent");
    let listen = SocketAddr::new(IpAddr::V4(netns.ns_ip), 46_881);
    let log = dir.path().join("agent.log");
    let mut agent = AgentProc::spawn(
        &["ip", "netns", "exec", &netns.name],
        &state,
        stack.tracker().url(),
        listen,
        &[],
        &log,
    );
    let pid = agent.child.id();
    stack.push_when_subscribed(1).await;
    let before = wait_progress(&state, &mut agent, 0.3).await;

    netns.set_link(false);
    let progress = |s: serde_json::Value| s["releases"][0]["progress_bytes"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early = progress(status(&state).await.unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = progress(status(&state).await.unwrap());
    assert_eq!(early, late, "nothing arrives while the link is down");
    assert!(late < SIZE as u64, "still unfinished while the link is down");
    netns.set_link(true);

    let report = stack.wait_report(&mut agent, Duration::from_secs(150)).await;
    assert!(report.verified && report.error.is_none(), "{report:?}");
    assert_eq!(agent.child.id(), pid, "same process: no restart");
    agent.assert_alive();
    assert!(before < SIZE as u64);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_refetch_at_most(stack.egress().await, 1, "link down/up");
    let path = common::download_folder(&state, &stack.info_hash).join(&stack.name);
    assert_eq!(std::fs::read(&path).unwrap(), stack.package);
    drop(agent);
    stack.stop().await;
    drop(netns);
}
