//! The real `ota-device-agent run` and UPnP in the NAT lab (issue #14: the
//! leases, the kill, the refusing router; needs root and Debian's miniupnpd,
//! deploy/test-deps.sh installs it). Needs the workspace binaries: run
//! `cargo build --workspace --bins` first (the agent and the tracker are
//! found beside this test's folder, as `ota_deploy::processes::bin_dir`
//! finds them; a missing one fails the test with that advice).
//!
//! Each test builds a lab with a server host on the lab's internet running
//! `ota-tracker serve` (the device registered over its admin API, so the
//! agent reports its direct paths with its own token) and an agent in a
//! host namespace behind a router:
//! - `a_short_lease_is_renewed_past_its_end`: `--upnp-lease-secs 2`, the
//!   status shows at least two renewals within 8 s and the router still
//!   holds both mappings after the first lease ended; SIGTERM removes them.
//! - `a_killed_agents_mapping_is_removed_at_the_next_start`: `kill -9`
//!   leaves the mappings on the router; the next start (same device id and
//!   port) removes them as stale (its log says so), maps again (fresh
//!   leases, longer than the stale ones' rest), reports it, and exactly TCP
//!   and UDP of this device are left; SIGTERM removes those.
//! - `a_refusing_router_leaves_the_agent_working_with_a_reason`: miniupnpd
//!   restarted with a deny-all permission rule by
//!   [`Lab::set_upnp_permissions`]; the agent runs, its status gives the
//!   IGD's refusal in words, and it reports its LAN address.
//! - `without_an_igd_the_agent_says_no_gateway_answered`: behind
//!   [`RouterKind::Cone`] and [`RouterKind::Cgnat`] the status shows that
//!   no gateway answered, once the search timeout has passed (and at most
//!   [`GIVE_UP_SLACK`] later).
//!
//! The router's table is read with igd-next's blocking client
//! (`GetGenericPortMappingEntry`) from the host's namespace, independent of
//! the agent. The status comes from `ota-device-agent status --json` on the
//! agent's control socket (a path socket, so namespace-independent). Every
//! process started here is killed by PID when its guard drops, also when an
//! assertion fails; every wait is bounded; all traffic stays inside the
//! lab's namespaces.

mod common;

use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::Entry;
use ota_client::TrackerClient;
use ota_deploy::lab::{in_netns, Host, Lab, Router, RouterKind, ServerHost};
use ota_peer::port_mapping::{description, DEFAULT_SEARCH_TIMEOUT};
use serde_json::Value;

/// The agent's peer port (TCP and UDP), external and internal.
const PORT: u16 = 40_100;
/// The tracker's port on its server host.
const TRACKER_PORT: u16 = 7070;
/// How long the tracker may take to listen, and the agent to answer its
/// first status (start, gateway search, control socket) on a busy machine.
const STARTUP: Duration = Duration::from_secs(30);
/// How long after the agent's search timeout its status may come without a
/// gateway (the agent's start and the first status call on a busy machine).
const GIVE_UP_SLACK: Duration = Duration::from_secs(10);
/// The SSDP search timeout of the table reader.
const SEARCH: Duration = Duration::from_secs(3);
/// How long one `status --json` may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a signalled process may take to end.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A process started here, killed (SIGKILL, by PID) and reaped on drop
/// unless it has ended.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Its PID.
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` and waits (bounded) for the exit.
    ///
    /// Panics: it does not end within [`EXIT_TIMEOUT`] (it is then killed).
    fn signal_and_wait(&mut self, signal: i32) -> ExitStatus {
        // SAFETY: kill(2) of our own child, not yet reaped (try_wait below
        // reaps it), so the PID is still its.
        unsafe {
            libc::kill(self.pid(), signal);
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not end within {EXIT_TIMEOUT:?} of signal {signal}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it still runs.
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its stderr so far (its log).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A workspace binary beside this test's folder.
///
/// Panics: it is not built.
fn bin(name: &str) -> PathBuf {
    let path = ota_deploy::processes::bin_dir().expect("bin dir").join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Starts `program args...` inside namespace `ns` (entered with `setns(2)`
/// before `exec`, parent-death signal SIGKILL), stdout discarded, stderr to
/// `log`.
fn spawn_in(ns: &str, name: &str, program: &Path, args: &[String], envs: &[(&str, String)], log: &Path) -> Proc {
    let ns_file = ota_deploy::lab::netns::open(ns).expect("namespace file");
    let fd = ns_file.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    // SAFETY: `child_setup` makes only async-signal-safe calls (prctl,
    // setns) on the child itself; the namespace file stays open until after
    // the spawn.
    unsafe {
        cmd.pre_exec(ota_deploy::lab::netns::child_setup(Some(fd)));
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    drop(ns_file);
    Proc {
        name: name.into(),
        child,
        log: log.into(),
    }
}

/// A lab with a tracker on a server host; routers and hosts are added by
/// the test. The tracker is declared first, so it ends before the lab.
struct Setup {
    _tracker: Proc,
    server: ServerHost,
    admin: String,
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Setup {
    /// A lab and `ota-tracker serve` on its server host, listening.
    fn new() -> Setup {
        bin("ota-device-agent");
        let tracker = bin("ota-tracker");
        let mut lab = Lab::new().expect("lab (needs root)");
        let server = lab.add_server_host(None).expect("server host");
        let dir = tempfile::tempdir().expect("temp dir");
        let admin = format!("admin-{:032x}", rand::random::<u128>());
        let origin = format!("origin-{:032x}", rand::random::<u128>());
        let listen = SocketAddrV4::new(server.addr, TRACKER_PORT);
        let args = [
            "serve",
            "--listen",
            &listen.to_string(),
            "--database-url",
            &format!("sqlite://{}?mode=rwc", dir.path().join("tracker.db").display()),
            "--admin-token",
            &admin,
            "--origin-token",
            &origin,
            "--stun-listen",
            "off",
            "--connectability",
            "off",
            "--worker-threads",
            "1",
        ]
        .map(str::to_string);
        let mut tracker = spawn_in(
            &server.ns,
            "tracker",
            &tracker,
            &args,
            &[],
            &dir.path().join("tracker.log"),
        );
        let deadline = Instant::now() + STARTUP;
        loop {
            assert!(tracker.running(), "the tracker exited:\n{}", tracker.log());
            let up = in_netns(&server.ns, || {
                TcpStream::connect_timeout(&listen.into(), Duration::from_millis(300)).is_ok()
            })
            .expect("enter namespace");
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the tracker did not listen within {STARTUP:?}:\n{}",
                tracker.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Setup {
            _tracker: tracker,
            server,
            admin,
            lab,
            dir,
        }
    }

    /// The tracker's base URL.
    fn tracker_url(&self) -> String {
        format!("http://{}:{TRACKER_PORT}", self.server.addr)
    }

    /// A router of `kind` and one host behind it.
    fn router_and_host(&mut self, kind: RouterKind) -> (Router, Host) {
        let router = self
            .lab
            .add_router(kind)
            .expect("router (UPnP needs the Debian package miniupnpd)");
        let host = self.lab.add_host(&router).expect("host");
        (router, host)
    }

    /// Registers `device` with the tracker's admin API (from the server's
    /// namespace); its token.
    fn register(&self, device: &str) -> String {
        let client = TrackerClient::new(&self.tracker_url(), Some(self.admin.clone()));
        in_netns(&self.server.ns, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(client.register_device(device, "stable", "generic"))
        })
        .expect("enter namespace")
        .expect("register the device")
    }

    /// The control socket of `device`'s agent.
    fn socket(&self, device: &str) -> PathBuf {
        self.dir.path().join(format!("{device}.sock"))
    }

    /// Starts `ota-device-agent run` for `device` (token `token`) in
    /// `host`'s namespace, peer port [`PORT`], UPnP on with lease
    /// `lease_secs`, STUN off; run number `run` names its log.
    fn agent(&self, host: &Host, device: &str, token: &str, lease_secs: u32, run: u32) -> Proc {
        let state = self.dir.path().join(device);
        let args = [
            "run",
            "--device-id",
            device,
            "--state-dir",
            &state.display().to_string(),
            "--control-socket",
            &self.socket(device).display().to_string(),
            "--peer-listen",
            &format!("0.0.0.0:{PORT}"),
            "--no-catch-up",
            "--poll-interval-secs",
            "0",
            "--stun",
            "off",
            "--upnp",
            "on",
            "--upnp-lease-secs",
            &lease_secs.to_string(),
        ]
        .map(str::to_string);
        spawn_in(
            &host.ns,
            &format!("agent {device} run {run}"),
            &bin("ota-device-agent"),
            &args,
            &[
                ("OTA_TRACKER_URL", self.tracker_url()),
                ("OTA_DEVICE_TOKEN", token.to_string()),
                ("RUST_LOG", "info".to_string()),
            ],
            &self.dir.path().join(format!("{device}-{run}.log")),
        )
    }
}

/// `ota-device-agent status --json` on `socket`: the `paths` of the answer,
/// or `None` while the agent does not answer (bounded by
/// [`STATUS_TIMEOUT`]).
fn status(socket: &Path) -> Option<Value> {
    if !socket.exists() {
        return None;
    }
    let mut child = Command::new(bin("ota-device-agent"))
        .args(["status", "--json", "--control-socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ota-device-agent status");
    let deadline = Instant::now() + STATUS_TIMEOUT;
    let code = loop {
        if let Some(code) = child.try_wait().expect("try_wait") {
            break code;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    if !code.success() {
        return None;
    }
    let answer: Value = serde_json::from_str(&out).ok()?;
    Some(answer.get("paths")?.clone())
}

/// Polls `agent`'s status until `done` holds (every 200 ms, at most
/// `within`); the paths that satisfied it.
///
/// Panics: the agent exits, or `within` passes (with the last status and the
/// agent's log).
fn wait_status(agent: &mut Proc, socket: &Path, within: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        assert!(
            agent.running(),
            "{} exited while waiting for {what}:\n{}",
            agent.name,
            agent.log()
        );
        if let Some(paths) = status(socket) {
            if done(&paths) {
                return paths;
            }
            last = Some(paths);
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: not within {within:?}; last status {last:#?}; log of {}:\n{}",
                agent.name,
                agent.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The router's mapping table ([`common::upnp_table`]).
fn table(host: &Host) -> Vec<Entry> {
    common::upnp_table(host, SEARCH)
}

/// The table's entries of `device` (by their description).
fn entries_of(host: &Host, device: &str) -> Vec<Entry> {
    let desc = description(device);
    table(host).into_iter().filter(|e| e.description == desc).collect()
}

/// Asserts `entries` are exactly TCP and UDP of external port [`PORT`] to
/// `host`:[`PORT`].
fn assert_one_mapping(entries: &[Entry], host: &Host) {
    let mut protocols: Vec<String> = entries.iter().map(|e| e.protocol.to_string()).collect();
    protocols.sort();
    assert_eq!(protocols, ["TCP", "UDP"], "{entries:#?}");
    for e in entries {
        assert_eq!(e.external_port, PORT, "{e:?}");
        assert_eq!(e.internal_client, host.addr.to_string(), "{e:?}");
        assert_eq!(e.internal_port, PORT, "{e:?}");
    }
}

/// The status's mapping, if it has one.
fn mapping(paths: &Value) -> Option<&Value> {
    paths.get("mapping").filter(|m| !m.is_null())
}

/// The status's renewal count (0 without a mapping).
fn renewals(paths: &Value) -> u64 {
    mapping(paths).and_then(|m| m["renewals"].as_u64()).unwrap_or(0)
}

/// The status's refusal text, if it has one.
fn refusal(paths: &Value) -> Option<&str> {
    paths.get("mapping_refusal").and_then(Value::as_str)
}

/// Whether the status lists `addr` as its LAN address and the tracker took
/// the report.
fn reports_lan(paths: &Value, addr: SocketAddrV4) -> bool {
    let lan = paths["lan"].as_array().cloned().unwrap_or_default();
    lan.iter().any(|l| l.as_str() == Some(&addr.to_string())) && paths["reported"] == Value::Bool(true)
}

#[test]
fn a_short_lease_is_renewed_past_its_end() {
    let mut setup = Setup::new();
    let (router, host) = setup.router_and_host(RouterKind::Upnp);
    let device = "lease-dev";
    let token = setup.register(device);
    let socket = setup.socket(device);
    let mut agent = setup.agent(&host, device, &token, 2, 1);

    let first = wait_status(&mut agent, &socket, STARTUP, "a UPnP mapping", |p| mapping(p).is_some());
    let mapped_at = Instant::now();
    let external = SocketAddrV4::new(router.public, PORT).to_string();
    assert_eq!(
        mapping(&first).unwrap()["external"],
        Value::String(external),
        "{first:#?}"
    );

    let renewed = wait_status(&mut agent, &socket, Duration::from_secs(8), "two renewals", |p| {
        renewals(p) >= 2
    });
    let after = mapped_at.elapsed();
    eprintln!("renewals {} after {after:?}: {renewed:#?}", renewals(&renewed));
    assert!(mapping(&renewed).unwrap()["last_error"].is_null(), "{renewed:#?}");

    // Past the first 2 s lease (with a margin): only renewals keep it. A
    // renewal late under load may leave the table empty for a moment, so
    // the table is read up to 10 times, 200 ms apart; a mapping there at
    // any of those reads was renewed.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(mapped_at.elapsed()));
    let mut entries = entries_of(&host, device);
    for _ in 0..10 {
        if entries.len() == 2 {
            break;
        }
        eprintln!(
            "{:?} after the mapping: {entries:?}; reading again",
            mapped_at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
        entries = entries_of(&host, device);
    }
    eprintln!("{:?} after the mapping: {entries:#?}", mapped_at.elapsed());
    assert_one_mapping(&entries, &host);
    assert!(entries.iter().all(|e| e.lease_secs <= 2), "{entries:#?}");
    let later = status(&socket).expect("status");
    assert!(renewals(&later) >= renewals(&renewed), "{later:#?}");

    let exit = agent.signal_and_wait(libc::SIGTERM);
    assert!(exit.success(), "{exit}:\n{}", agent.log());
    assert_eq!(entries_of(&host, device), [], "the mapping outlived SIGTERM");
}

#[test]
fn a_killed_agents_mapping_is_removed_at_the_next_start() {
    let mut setup = Setup::new();
    let (_router, host) = setup.router_and_host(RouterKind::Upnp);
    let device = "kill-dev";
    let token = setup.register(device);
    let socket = setup.socket(device);

    let mut first = setup.agent(&host, device, &token, 120, 1);
    wait_status(&mut first, &socket, STARTUP, "a UPnP mapping", |p| mapping(p).is_some());
    assert_one_mapping(&entries_of(&host, device), &host);
    let killed = first.signal_and_wait(libc::SIGKILL);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed),
        Some(libc::SIGKILL)
    );
    // Let the stale lease run down a little, so the new mappings show by
    // their longer remaining lease.
    std::thread::sleep(Duration::from_secs(3));
    let stale = entries_of(&host, device);
    eprintln!("left by kill -9: {stale:#?}");
    assert_one_mapping(&stale, &host);
    let stale_lease = stale.iter().map(|e| e.lease_secs).max().unwrap_or_default();

    let mut second = setup.agent(&host, device, &token, 120, 2);
    let paths = wait_status(&mut second, &socket, STARTUP, "the new UPnP mapping, reported", |p| {
        mapping(p).is_some() && p["reported"] == Value::Bool(true)
    });
    let external = mapping(&paths).unwrap()["external"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(external.ends_with(&format!(":{PORT}")), "{paths:#?}");
    let log = second.log();
    let removed = log.matches("removed a stale mapping of an earlier run").count();
    assert_eq!(removed, 2, "TCP and UDP stale mappings removed; log:\n{log}");
    let now = entries_of(&host, device);
    eprintln!("after the restart: {now:#?}");
    assert_one_mapping(&now, &host);
    assert!(
        now.iter().all(|e| e.lease_secs > stale_lease && e.lease_secs <= 120),
        "fresh leases, longer than the stale {stale_lease} s: {now:#?}"
    );

    let exit = second.signal_and_wait(libc::SIGTERM);
    assert!(exit.success(), "{exit}:\n{}", second.log());
    assert!(second.log().contains("UPnP port mappings removed"), "{}", second.log());
    assert_eq!(entries_of(&host, device), [], "the mapping outlived SIGTERM");
}

#[test]
fn a_refusing_router_leaves_the_agent_working_with_a_reason() {
    let mut setup = Setup::new();
    let (router, host) = setup.router_and_host(RouterKind::Upnp);
    setup
        .lab
        .set_upnp_permissions(&router, true)
        .expect("miniupnpd with deny-all");
    let device = "refused-dev";
    let token = setup.register(device);
    let socket = setup.socket(device);
    let mut agent = setup.agent(&host, device, &token, 120, 1);

    let lan = SocketAddrV4::new(host.addr, PORT);
    let paths = wait_status(&mut agent, &socket, STARTUP, "a refusal and the LAN report", |p| {
        refusal(p).is_some() && reports_lan(p, lan)
    });
    let why = refusal(&paths).unwrap();
    eprintln!("refusal: {why}");
    assert!(mapping(&paths).is_none(), "{paths:#?}");
    assert!(why.contains("refused") && why.contains("AddPortMapping"), "{why}");
    assert!(why.to_lowercase().contains("not authorized"), "{why}");
    assert_eq!(entries_of(&host, device), []);
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.running(), "{}", agent.log());
    assert!(status(&socket).is_some(), "the agent stopped answering");
}

#[test]
fn without_an_igd_the_agent_says_no_gateway_answered() {
    let mut setup = Setup::new();
    let mut agents = Vec::new();
    for kind in [RouterKind::Cone, RouterKind::Cgnat] {
        let (_router, host) = setup.router_and_host(kind);
        let device = format!("{}-dev", kind.name());
        let token = setup.register(&device);
        let started = Instant::now();
        let agent = setup.agent(&host, &device, &token, 120, 1);
        agents.push((kind, host, device, started, agent));
    }
    for (kind, host, device, started, agent) in &mut agents {
        let socket = setup.socket(device);
        let lan = SocketAddrV4::new(host.addr, PORT);
        let paths = wait_status(agent, &socket, STARTUP, "a refusal and the LAN report", |p| {
            refusal(p).is_some() && reports_lan(p, lan)
        });
        let took = started.elapsed();
        let why = refusal(&paths).unwrap();
        eprintln!("{}: refusal after {took:?}: {why}", kind.name());
        assert!(mapping(&paths).is_none(), "{paths:#?}");
        assert!(why.contains("no UPnP gateway answered"), "{}: {why}", kind.name());
        // The search ran its whole timeout before giving up.
        assert!(took >= DEFAULT_SEARCH_TIMEOUT, "{}: {took:?}", kind.name());
        assert!(
            took <= DEFAULT_SEARCH_TIMEOUT + GIVE_UP_SLACK,
            "{}: {took:?}",
            kind.name()
        );
        assert!(agent.running(), "{}", agent.log());
    }
}
